"""End to end: `aekit train --checkpoint` killed with SIGKILL, then `--resume`."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import aekit
from aekit.checkpoint import checkpoint_info

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")

# Replaces os.replace so that the second checkpoint write stops after writing its
# temporary file and before renaming it, with a marker file saying so.
SLOW_WRITER = textwrap.dedent("""
    import os, sys, time
    real_replace, writes = os.replace, []
    def slow_replace(src, dst, *args, **kwargs):
        if str(dst).endswith(".ckpt"):
            writes.append(dst)
            if len(writes) == 2:
                open(os.environ["MARKER"], "w").close()
                time.sleep(600)
        return real_replace(src, dst, *args, **kwargs)
    os.replace = slow_replace
    from aekit.cli import main
    sys.exit(main(sys.argv[1:]))
""")


@pytest.fixture
def data_file(tmp_path, digits):
    path = tmp_path / "data.npy"
    np.save(path, digits[0][:400])  # 100 steps an epoch at batch size 4: quick epochs, still many
    return path


def train_command(data_file, tmp_path, epochs, *extra):
    return [
        "--quiet",
        "train",
        str(data_file),
        "--layers",
        "64,16,64",
        "--output",
        str(tmp_path / "m.aekit"),
        "--checkpoint",
        str(tmp_path / "c.ckpt"),
        "--epochs",
        str(epochs),
        "--batch-size",
        "4",
        "--validate-every",
        "0",
        *extra,
    ]


def start(args, **env):
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **env})


def wait_for(condition, process, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"training ended early (rc={process.returncode}): {err.decode()[-2000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("timed out waiting for the training process")
        time.sleep(0.05)


def kill(process):
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL


def resume(data_file, tmp_path, epochs):
    done = subprocess.run(
        [sys.executable, "-m", "aekit", *train_command(data_file, tmp_path, epochs, "--resume")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return aekit.load(tmp_path / "m.aekit")


def test_sigkill_mid_run_then_resume_continues_the_epochs(data_file, tmp_path):
    ckpt = tmp_path / "c.ckpt"
    process = start([sys.executable, "-m", "aekit", *train_command(data_file, tmp_path, 1000)])
    wait_for(lambda: ckpt.exists() and checkpoint_info(ckpt)["epoch"] >= 1, process)
    kill(process)
    assert not (tmp_path / "m.aekit").exists()  # it really was stopped before the end
    info = checkpoint_info(ckpt)
    done = info["epoch"]
    assert [h["epoch"] for h in info["history"]] == list(range(1, done + 1))

    net = resume(data_file, tmp_path, done + 2)
    assert [h["epoch"] for h in net.history] == list(range(1, done + 3))  # no gaps, no repeats
    assert net.history[:done] == info["history"]
    assert checkpoint_info(ckpt)["epoch"] == done + 2


def test_sigkill_while_writing_a_checkpoint_keeps_the_previous_one(data_file, tmp_path):
    ckpt, marker = tmp_path / "c.ckpt", tmp_path / "writing"
    process = start([sys.executable, "-c", SLOW_WRITER, *train_command(data_file, tmp_path, 1000)], MARKER=str(marker))
    wait_for(marker.exists, process)
    temporary = [p.name for p in tmp_path.iterdir() if p.name.startswith(".c.ckpt.")]
    assert temporary, "the second checkpoint should be half-way (temporary file written, not renamed)"
    kill(process)
    info = checkpoint_info(ckpt)  # the first checkpoint, intact and loadable
    assert info["epoch"] == 1
    aekit.load(ckpt)

    net = resume(data_file, tmp_path, 3)
    assert [h["epoch"] for h in net.history] == [1, 2, 3]
    assert net.history[:1] == info["history"]
