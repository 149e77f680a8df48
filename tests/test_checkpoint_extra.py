"""Checkpoints of fp16 runs (the GradScaler state) and the removal of abandoned temporary files."""

import logging
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import aekit
from aekit import CheckpointError
from aekit.checkpoint import Checkpointer, grad_scaler, read_checkpoint
from aekit.saving import STALE_TEMP_AGE, atomic_write, remove_stale_temporaries, write_model_file

FP16 = dict(batch_size=32, validate_every=0, precision="fp16")


@pytest.fixture
def x(digits):
    # Large inputs make the fp16 gradients overflow at the default loss scale (65536), so the
    # scaler backs off and skips steps in the first epochs: its state then matters on resume.
    return digits[0][:240] * 100


def make():
    return aekit.Autoencoder([64, (16, "sigmoid"), (64, "tied")])


def same_params(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.params, b.params))


@pytest.fixture
def restored_scalers(monkeypatch):
    """The scaler state of every trainer right after Checkpointer.resume returned."""
    seen = []
    original = Checkpointer.resume

    def resume(self, trainer):
        resumed = original(self, trainer)
        scaler = grad_scaler(trainer)
        seen.append(None if scaler is None else scaler.state_dict())
        return resumed

    monkeypatch.setattr(Checkpointer, "resume", resume)
    return seen


def rewrite(path, **changes):
    """Rewrite a checkpoint with some metadata entries changed (None: removed)."""
    tensors, meta = read_checkpoint(path)
    for key in ("format_version", "aekit_version"):
        meta.pop(key)
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    write_model_file(path, tensors, meta)


# ---------------------------------------------------------------------- fp16 scaler state
def test_fp16_resume_restores_the_scaler_and_matches_an_uninterrupted_run(x, tmp_path, restored_scalers):
    epochs, stop_after = 4, 2
    torch.manual_seed(1)
    reference = make()
    reference.train(x, max_epochs=epochs, **FP16)

    path = tmp_path / "fp16.ckpt"
    torch.manual_seed(1)
    for i, _ in enumerate(make().itertrain(x, max_epochs=epochs, checkpoint=path, **FP16), 1):
        if i == stop_after:
            break
    saved = read_checkpoint(path)[1]["grad_scaler"]
    # The test only proves something if the scale left its default value before the checkpoint.
    assert saved["scale"] < torch.amp.GradScaler("cpu").get_scale()
    assert saved["_growth_tracker"] > 0

    torch.manual_seed(12345)
    resumed = make()
    resumed.train(x, max_epochs=epochs, checkpoint=path, resume=True, **FP16)
    assert restored_scalers == [saved]
    assert same_params(resumed, reference)
    assert resumed.history == reference.history


def test_a_non_default_scaler_state_round_trips(x, tmp_path, restored_scalers):
    path = tmp_path / "c.ckpt"
    make().train(x, max_epochs=1, checkpoint=path, **FP16)
    state = {"scale": 512.0, "growth_factor": 4.0, "backoff_factor": 0.25, "growth_interval": 100, "_growth_tracker": 7}
    rewrite(path, grad_scaler=state)
    make().train(x, max_epochs=1, checkpoint=path, resume=True, **FP16)  # resumes, trains no further epoch
    assert restored_scalers == [state]
    assert read_checkpoint(path)[1]["grad_scaler"] == state  # and saved again as it was restored


def test_checkpoints_without_scaler_state_still_resume(x, tmp_path, restored_scalers, caplog):
    fp32, fp16 = tmp_path / "fp32.ckpt", tmp_path / "fp16.ckpt"
    make().train(x, max_epochs=1, checkpoint=fp32, validate_every=0, batch_size=32)
    assert read_checkpoint(fp32)[1]["grad_scaler"] is None
    make().train(x, max_epochs=1, checkpoint=fp16, **FP16)
    rewrite(fp16, grad_scaler=None)  # as written by an aekit that did not store it

    with caplog.at_level(logging.WARNING, logger="aekit.train.checkpoint"):
        make().train(x, max_epochs=2, checkpoint=fp16, resume=True, **FP16)
    assert "no gradient-scaler state" in caplog.text and "restarts at 65536" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="aekit.train.checkpoint"):
        make().train(x, max_epochs=2, checkpoint=fp32, resume=True, **FP16)  # fp32 -> fp16
    assert "precision: checkpoint has 'fp32', this run has 'fp16'" in caplog.text
    assert "no gradient-scaler state" not in caplog.text
    make().train(x, max_epochs=3, checkpoint=fp16, resume=True, validate_every=0, batch_size=32)  # fp16 -> fp32
    assert restored_scalers == [torch.amp.GradScaler("cpu").state_dict()] * 2 + [None]


@pytest.mark.parametrize(
    "entry, merge, message",
    [
        ([1.0], False, r"'grad_scaler' entry is list, expected an object or null"),
        ({"scale": 1.0}, False, r"gradient-scaler state has keys \['scale'\], expected \['_growth_tracker', "),
        (dict(scale=0.0), True, r"gradient-scaler 'scale' is 0.0, expected a positive number"),
        (dict(scale=float("nan")), True, r"gradient-scaler 'scale' is nan, expected a positive number"),
        (dict(_growth_tracker=1.5), True, r"'_growth_tracker' is 1.5, expected a non-negative integer"),
        (dict(growth_interval="10"), True, r"'growth_interval' is '10', expected a non-negative integer"),
        (dict(backoff_factor=-0.5), True, r"'backoff_factor' is -0.5, expected a non-negative number"),
    ],
)
def test_a_damaged_scaler_state_is_refused(x, tmp_path, entry, merge, message):
    path = tmp_path / "c.ckpt"
    make().train(x, max_epochs=1, checkpoint=path, **FP16)
    if merge:
        entry = {**read_checkpoint(path)[1]["grad_scaler"], **entry}
    rewrite(path, grad_scaler=entry)
    net = make()
    before = [p.detach().clone() for p in net.params]
    with pytest.raises(CheckpointError, match=message):
        net.train(x, max_epochs=2, checkpoint=path, resume=True, **FP16)
    assert all(torch.equal(p, q) for p, q in zip(net.params, before))  # refused before restoring anything


# ---------------------------------------------------------------------- abandoned temporary files
def age(path, seconds):
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


def test_a_save_removes_old_temporaries_of_its_own_target_only(x, tmp_path):
    path = tmp_path / "c.ckpt"
    stale = tmp_path / ".c.ckpt.k3x_9q0a.tmp"  # left by a killed writer of c.ckpt
    live = tmp_path / ".c.ckpt.ab12cd34.tmp"  # another process is writing c.ckpt right now
    keep = {
        live,
        tmp_path / ".other.ckpt.k3x_9q0a.tmp",  # another target's
        tmp_path / ".c.ckpt.x.k3x_9q0a.tmp",  # the temporary file of 'c.ckpt.x'
        tmp_path / ".c.ckpt.k3x_9q0a.tmp.notes",  # not the pattern
        tmp_path / ".c.ckpt.K3X_9Q0A.tmp",  # mkstemp never uses capitals
        tmp_path / "c.ckpt.bak",
    }
    for file in {stale, *keep}:
        file.write_bytes(b"partial")
        if file is not live:
            age(file, STALE_TEMP_AGE + 60)
    link = tmp_path / ".c.ckpt.linklink.tmp"  # never followed nor removed
    link.symlink_to(tmp_path / "c.ckpt.bak")
    age(link, STALE_TEMP_AGE + 60)

    make().train(x, max_epochs=1, checkpoint=path, validate_every=0)
    assert not stale.exists()
    assert {p for p in tmp_path.iterdir()} == {path, link, *keep}
    assert all(f.read_bytes() == b"partial" for f in keep)


def test_cleaning_up_never_fails_a_write(tmp_path, monkeypatch):
    target = tmp_path / "m.aekit"
    stale = tmp_path / ".m.aekit.abcdefgh.tmp"
    stale.write_bytes(b"partial")
    age(stale, STALE_TEMP_AGE + 60)
    real_unlink = os.unlink

    def refuse(name, *args, **kwargs):
        if os.fspath(name) == os.fspath(stale):
            raise PermissionError(13, "Permission denied")
        return real_unlink(name, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", refuse)
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new" and stale.exists()
    monkeypatch.undo()
    assert remove_stale_temporaries(target) == [stale] and not stale.exists()
    assert remove_stale_temporaries(tmp_path / "missing-folder" / "m.aekit") == []


KILLED_WRITER = """
import os, signal, sys
import aekit
os.replace = lambda *args: os.kill(os.getpid(), signal.SIGKILL)  # killed after writing, before renaming
aekit.Autoencoder([8, (4, 'relu'), (8, 'tied')]).save(sys.argv[1])
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_the_temporary_file_of_a_killed_writer_goes_at_a_later_save(tmp_path):
    path = tmp_path / "m.aekit"
    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(path)], capture_output=True, timeout=120)
    assert done.returncode == -signal.SIGKILL
    (left,) = tmp_path.iterdir()
    assert left.name.startswith(".m.aekit.") and left.name.endswith(".tmp") and not path.exists()

    net = aekit.Autoencoder([8, (4, "relu"), (8, "tied")])
    net.save(path)
    assert left.exists()  # young: it might belong to a writer that is still running
    age(left, STALE_TEMP_AGE + 1)
    net.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["m.aekit"]
    aekit.load(path)  # the target is a good model file
