"""The ``aekit`` command line, run as a subprocess end to end, and its error handling."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import aekit
from aekit import cli


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    # In-process commands: on a busy 2-core machine two BLAS threads spin on each other.
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # comes with scikit-learn
        yield
        return
    with threadpool_limits(1):
        yield


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m aekit ARGS`` in ``cwd``; one torch thread (tiny models, shared cores)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "aekit", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def call(capsys, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``cli.main(ARGS)`` in this process (cheaper than a subprocess), with the same result shape."""
    before = Path.cwd()
    os.chdir(cwd)
    try:
        code = cli.main(["--threads", "1", *args])
    finally:
        os.chdir(before)
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, captured.out, captured.err)


def assert_one_line_error(result: subprocess.CompletedProcess, code: int | None = None, match: str = "") -> str:
    assert result.returncode != 0, result.stdout
    if code is not None:
        assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("aekit: error: "), lines[0]
    assert "Traceback" not in result.stderr
    assert match in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Digits as .npy and .csv, a bad CSV, and a model trained by the CLI."""
    folder = tmp_path_factory.mktemp("cli")
    x, _ = aekit.datasets.digits()
    np.save(folder / "x.npy", x[:400])
    np.savetxt(folder / "x.csv", x[:40], delimiter=",")
    (folder / "text.csv").write_text("1,2,3\n4,five,6\n")
    result = run("train", "x.npy", "--layers", "64,16,64", "--tied", "--activation", "sigmoid",
                 "--epochs", "4", "--batch-size", "32", "--learning-rate", "0.01", "--valid-split", "0.25",
                 "--hidden-l1", "0.001", "--input-noise", "0.01", "--seed", "3", "--output", "model.aekit",
                 cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder, result


def test_train_writes_a_model_with_the_flags(workdir):
    folder, result = workdir
    net = aekit.load(str(folder / "model.aekit"))
    assert [layer.output_shape[0] for layer in net.layers] == [64, 16, 64]
    assert net.layers[1].spec.activation == "sigmoid" and net.layers[2].spec.form == "tied"
    assert net.seed == 3
    assert len(net.history) == 4 and net.history[-1]["valid"]  # --valid-split validated
    assert "saved model.aekit" in result.stdout
    # Not a terminal: one progress line per epoch on stderr.
    lines = result.stderr.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [f"epoch {i}/4" for i in range(1, 5)]
    assert "valid=" in lines[-1]


def test_encode_decode_score_info(workdir, capsys):
    folder, _ = workdir
    net = aekit.load(str(folder / "model.aekit"))
    x = np.load(folder / "x.npy")
    result = run("encode", "model.aekit", "x.npy", "--output", "codes.npy", cwd=folder)
    assert result.returncode == 0, result.stderr
    codes = np.load(folder / "codes.npy")
    np.testing.assert_allclose(codes, net.encode(x), rtol=1e-6)

    result = call(capsys, "encode", "model.aekit", "x.csv", "--output", "codes.csv", "--layer", "out", cwd=folder)
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(np.loadtxt(folder / "codes.csv", delimiter=","), net.predict(x[:40]), rtol=1e-5,
                               atol=1e-6)

    result = call(capsys, "decode", "model.aekit", "codes.npy", "--output", "recon.npy", cwd=folder)
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(np.load(folder / "recon.npy"), net.predict(x), rtol=1e-5, atol=1e-6)

    result = run("score", "model.aekit", "x.npy", "--output", "errors.csv", cwd=folder)
    assert result.returncode == 0, result.stderr
    r2 = float(result.stdout.split("R^2")[1].split()[0])
    assert r2 == pytest.approx(net.score(x), abs=1e-6)
    errors = np.loadtxt(folder / "errors.csv", delimiter=",")
    np.testing.assert_allclose(errors, ((net.predict(x) - x) ** 2).mean(axis=1), rtol=1e-5)

    result = run("info", "model.aekit", cwd=folder)
    assert result.returncode == 0, result.stderr
    assert "hid1" in result.stdout and "tied" in result.stdout and "shares hid1.w" in result.stdout
    assert f"parameters: {net.num_params}" in result.stdout
    assert "trained 4 epochs" in result.stdout


def test_diagnose_and_report(workdir, capsys):
    folder, _ = workdir
    net = aekit.load(str(folder / "model.aekit"))
    result = call(capsys, "diagnose", "model.aekit", "x.npy", cwd=folder)
    assert result.returncode == 0, result.stderr
    findings = aekit.diagnose(net, np.load(folder / "x.npy"))
    for finding in findings:
        assert f"{finding.code}:" in result.stdout
    if not findings:
        assert "no problems found" in result.stdout
    pytest.importorskip("aekit.report")
    result = call(capsys, "report", "model.aekit", "x.npy", "--output", "report", cwd=folder)
    assert result.returncode == 0, result.stderr
    assert (folder / "report" / "index.html").is_file()


def test_config_file_with_flags_overriding_it(tmp_path, capsys):
    x = aekit.datasets.digits()[0][:100]
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "train.toml").write_text(
        '[train]\nlayers = [64, [8, "tanh"], 64]\nepochs = 5\nlearning-rate = 0.02\nhidden_l1 = 0.01\n'
    )
    result = call(capsys, "train", "x.npy", "--config", "train.toml", "--epochs", "2", "-q", "--output", "m.aekit",
                  cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # --quiet: no progress
    net = aekit.load(str(tmp_path / "m.aekit"))
    assert net.layers[1].spec.activation == "tanh" and net.layers[1].output_shape == (8,)
    assert len(net.history) == 2  # the flag wins over the file
    assert "hidden_l1" in net.history[0]["train"]

    (tmp_path / "bad.toml").write_text("learning_rat = 0.1\n")
    result = call(capsys, "train", "x.npy", "--layers", "64,8,64", "--config", "bad.toml", "--output", "m.aekit",
                  cwd=tmp_path)
    assert_one_line_error(result, 1, "did you mean 'learning_rate'")


# The first five run as subprocesses (exit codes as a shell sees them), the rest in-process.
@pytest.mark.parametrize("case", ["text-csv", "missing-file", "model-as-data", "bad-layers", "unknown-flag",
                                  "wrong-size", "diverged", "bad-option", "missing-layers"])
def test_bad_input_is_one_line_and_keeps_the_old_output(workdir, case, capsys):
    folder, _ = workdir
    target = folder / f"old-{case}.aekit"
    old = (folder / "model.aekit").read_bytes()
    target.write_bytes(old)
    train = ["train", "--output", target.name, "--epochs", "2"]
    args, code, match = {
        "text-csv": (train + ["text.csv", "--layers", "3,2,3"], 1, "'five'"),
        "missing-file": (train + ["nothere.npy", "--layers", "64,8,64"], 1, "does not exist"),
        "model-as-data": (train + ["model.aekit", "--layers", "64,8,64"], 1, "model file"),
        "bad-layers": (train + ["x.npy", "--layers", "64,eight,64"], 1, "--layers"),
        "unknown-flag": (train + ["x.npy", "--layers", "64,8,64", "--hidden-l3", "0.1"], 2, "--hidden-l3"),
        "wrong-size": (train + ["x.npy", "--layers", "63,8,63"], 1, "64 features"),
        "diverged": (train + ["x.npy", "--layers", "64,8,64", "--algo", "sgd", "--learning-rate", "1e6"], 1,
                     "diverged"),
        "bad-option": (train + ["x.npy", "--layers", "64,8,64", "--algo", "adamm"], 1, "did you mean 'adam'"),
        "missing-layers": (train + ["x.npy"], 2, "--layers"),
    }[case]
    subprocess_cases = ("text-csv", "missing-file", "model-as-data", "bad-layers", "unknown-flag")
    result = run(*args, cwd=folder) if case in subprocess_cases else call(capsys, *args, cwd=folder)
    assert_one_line_error(result, code, match)
    assert target.read_bytes() == old


def test_bad_input_to_encode_keeps_the_old_output(workdir, capsys):
    folder, _ = workdir
    (folder / "keep.npy").write_bytes(b"old bytes")
    for args, match in [
        (("encode", "x.npy", "x.npy"), "pass it as data"),  # data given as the model
        (("encode", "model.aekit", "model.aekit"), "pass it as MODEL"),
        (("encode", "model.aekit", "text.csv"), "not a number"),
        (("encode", "model.aekit", "x.npy", "--layer", "hid9"), "did you mean 'hid1'"),
    ]:
        assert_one_line_error(call(capsys, *args, "--output", "keep.npy", cwd=folder), 1, match)
        assert (folder / "keep.npy").read_bytes() == b"old bytes"
    result = call(capsys, "encode", "model.aekit", "x.npy", "--output", "codes.txt", cwd=folder)
    assert_one_line_error(result, 1, ".npy or .csv")
    assert_one_line_error(call(capsys, cwd=folder), 2, "COMMAND")


def test_unexpected_errors_name_the_debug_flag(monkeypatch, capsys, tmp_path):
    def boom(args):
        raise RuntimeError("something\nbroke")

    monkeypatch.setattr(cli, "cmd_info", boom)
    assert cli.main(["info", str(tmp_path / "m.aekit")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "RuntimeError: something broke" in err and "--debug" in err
    with pytest.raises(RuntimeError):
        cli.main(["info", str(tmp_path / "m.aekit"), "--debug"])


def test_every_training_option_has_a_flag():
    from aekit.regularizers import REGULARIZER_KEYS
    from aekit.training import TrainOptions

    parser = cli.build_parser()
    train = next(a for a in parser._actions if a.dest == "command").choices["train"]
    dests = {action.dest for action in train._actions}
    for name in [f.name for f in dataclasses.fields(TrainOptions) if f.name != "monitors"] + list(REGULARIZER_KEYS):
        assert name in dests, name


@pytest.mark.parametrize("text, expected", [
    ("784,64,784", [784, 64, 784]),
    ("784,64:sigmoid,784:tied", [784, (64, "sigmoid"), (784, "tied")]),
    ("1x28x28,32,784:sigmoid", [(1, 28, 28), 32, (784, "sigmoid")]),
])
def test_parse_layers_arg(text, expected):
    assert cli.parse_layers_arg(text) == expected


@pytest.mark.parametrize("text", ["784", "784,,784", "784,-3,784", "784,x,784", "784,64:,784"])
def test_parse_layers_arg_rejects(text):
    with pytest.raises(aekit.ConfigurationError, match="--layers"):
        cli.parse_layers_arg(text)


def test_tied_flag_ties_the_decoder():
    assert cli._tie_decoder([784, 256, 64, 256, (784, "sigmoid")]) == [
        784, 256, 64, (256, "tied"), (784, "sigmoid", "tied")]


def test_demo(tmp_path, capsys):
    result = call(capsys, "demo", "--output", "out", "--epochs", "3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "trained 3 epochs" in result.stdout and "R^2" in result.stdout
    net = aekit.load(str(tmp_path / "out" / "model.aekit"))
    assert len(net.history) == 3
    if (tmp_path / "out" / "index.html").exists():
        assert "report:" in result.stdout
