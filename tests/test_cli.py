"""The ``aekit`` command line, run as a subprocess end to end, and its error handling."""

from __future__ import annotations

import dataclasses
import gzip
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import aekit
from aekit import cli
from aekit.cli import commands


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
    return subprocess.run(
        [sys.executable, "-m", "aekit", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


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
    result = run(
        "train",
        "x.npy",
        "--layers",
        "64,16,64",
        "--tied",
        "--activation",
        "sigmoid",
        "--epochs",
        "4",
        "--batch-size",
        "32",
        "--learning-rate",
        "0.01",
        "--valid-split",
        "0.25",
        "--hidden-l1",
        "0.001",
        "--input-noise",
        "0.01",
        "--seed",
        "3",
        "--output",
        "model.aekit",
        cwd=folder,
    )
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
    np.testing.assert_allclose(
        np.loadtxt(folder / "codes.csv", delimiter=","), net.predict(x[:40]), rtol=1e-5, atol=1e-6
    )

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
    result = call(
        capsys, "train", "x.npy", "--config", "train.toml", "--epochs", "2", "-q", "--output", "m.aekit", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # --quiet: no progress
    net = aekit.load(str(tmp_path / "m.aekit"))
    assert net.layers[1].spec.activation == "tanh" and net.layers[1].output_shape == (8,)
    assert len(net.history) == 2  # the flag wins over the file
    assert "hidden_l1" in net.history[0]["train"]

    (tmp_path / "bad.toml").write_text("learning_rat = 0.1\n")
    result = call(
        capsys, "train", "x.npy", "--layers", "64,8,64", "--config", "bad.toml", "--output", "m.aekit", cwd=tmp_path
    )
    assert_one_line_error(result, 2, "did you mean 'learning_rate'")


# The first five run as subprocesses (exit codes as a shell sees them), the rest in-process.
@pytest.mark.parametrize(
    "case",
    [
        "text-csv",
        "missing-file",
        "model-as-data",
        "bad-layers",
        "unknown-flag",
        "wrong-size",
        "diverged",
        "bad-option",
        "missing-layers",
    ],
)
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
        "bad-layers": (train + ["x.npy", "--layers", "64,eight,64"], 2, "--layers"),
        "unknown-flag": (train + ["x.npy", "--layers", "64,8,64", "--hidden-l3", "0.1"], 2, "--hidden-l3"),
        "wrong-size": (train + ["x.npy", "--layers", "63,8,63"], 1, "64 features"),
        "diverged": (
            train + ["x.npy", "--layers", "64,8,64", "--algo", "sgd", "--learning-rate", "1e6"],
            1,
            "diverged",
        ),
        "bad-option": (
            train + ["x.npy", "--layers", "64,8,64", "--algo", "adamm"],
            2,
            "--algo: unknown training algorithm 'adamm'; did you mean 'adam'",
        ),
        "missing-layers": (train + ["x.npy"], 2, "--layers"),
    }[case]
    subprocess_cases = ("text-csv", "missing-file", "model-as-data", "bad-layers", "unknown-flag")
    result = run(*args, cwd=folder) if case in subprocess_cases else call(capsys, *args, cwd=folder)
    assert_one_line_error(result, code, match)
    assert target.read_bytes() == old


def test_bad_input_to_encode_keeps_the_old_output(workdir, capsys):
    folder, _ = workdir
    (folder / "keep.npy").write_bytes(b"old bytes")
    for args, code, match in [
        (("encode", "x.npy", "x.npy"), 1, "pass it as data"),  # data given as the model
        (("encode", "model.aekit", "model.aekit"), 1, "pass it as MODEL"),
        (("encode", "model.aekit", "text.csv"), 1, "not a number"),
        (
            ("encode", "model.aekit", "x.npy", "--layer", "hid9"),
            2,
            "--layer: unknown layer 'hid9'; did you mean 'hid1'",
        ),
    ]:
        assert_one_line_error(call(capsys, *args, "--output", "keep.npy", cwd=folder), code, match)
        assert (folder / "keep.npy").read_bytes() == b"old bytes"
    result = call(capsys, "encode", "model.aekit", "x.npy", "--output", "codes.txt", cwd=folder)
    assert_one_line_error(result, 2, ".npy or .csv")
    assert_one_line_error(call(capsys, cwd=folder), 2, "COMMAND")


def test_unexpected_errors_name_the_debug_flag(monkeypatch, capsys, tmp_path):
    def boom(args):
        raise RuntimeError("something\nbroke")

    # the parser looks each command up on aekit.cli.commands
    monkeypatch.setattr(commands, "cmd_info", boom)
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
    python_only = ("monitors", "callbacks")  # options that hold Python objects have no flag
    for name in [f.name for f in dataclasses.fields(TrainOptions) if f.name not in python_only] + list(
        REGULARIZER_KEYS
    ):
        assert name in dests, name


@pytest.mark.parametrize(
    "text, expected",
    [
        ("784,64,784", [784, 64, 784]),
        ("784,64:sigmoid,784:tied", [784, (64, "sigmoid"), (784, "tied")]),
        ("1x28x28,32,784:sigmoid", [(1, 28, 28), 32, (784, "sigmoid")]),
    ],
)
def test_parse_layers_arg(text, expected):
    assert cli.parse_layers_arg(text) == expected


@pytest.mark.parametrize("text", ["784", "784,,784", "784,-3,784", "784,x,784", "784,64:,784"])
def test_parse_layers_arg_rejects(text):
    with pytest.raises(aekit.ConfigurationError, match="--layers"):
        cli.parse_layers_arg(text)


def test_tied_flag_ties_the_decoder():
    assert commands._tie_decoder([784, 256, 64, 256, (784, "sigmoid")]) == [
        784,
        256,
        64,
        (256, "tied"),
        (784, "sigmoid", "tied"),
    ]


def test_demo(tmp_path, capsys):
    result = call(capsys, "demo", "--output", "out", "--epochs", "3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "trained 3 epochs" in result.stdout and "R^2" in result.stdout
    net = aekit.load(str(tmp_path / "out" / "model.aekit"))
    assert len(net.history) == 3
    if (tmp_path / "out" / "index.html").exists():
        assert "report:" in result.stdout


# ---------------------------------------------------------------------- outputs never replace inputs
@pytest.mark.parametrize(
    "case",
    [
        "train-data",
        "train-data-other-spelling",
        "train-hard-link",
        "train-valid",
        "train-config",
        "train-checkpoint-is-data",
        "train-output-is-checkpoint",
        "score-data",
        "encode-data",
        "decode-data",
        "encode-model",
    ],
)
def test_an_output_that_is_an_input_is_refused(tmp_path, capsys, case):
    x = aekit.datasets.digits()[0][:60]
    np.save(tmp_path / "data.npy", x)
    np.save(tmp_path / "codes.npy", np.zeros((5, 8), np.float32))
    (tmp_path / "t.toml").write_text("epochs = 1\n")
    net = aekit.Autoencoder([64, 8, 64], rng=0)
    net.save(str(tmp_path / "m.npy"))  # a model under a data suffix: only the same-file check can save it
    train = ["train", "data.npy", "--layers", "64,8,64", "--epochs", "1"]
    if case == "train-hard-link":
        os.link(tmp_path / "data.npy", tmp_path / "link.aekit")
    args = {
        "train-data": train + ["-o", "data.npy"],
        "train-data-other-spelling": train + ["-o", str(tmp_path / "." / "data.npy")],
        "train-hard-link": train + ["-o", "link.aekit"],
        "train-valid": train + ["-o", "m.aekit", "--valid", "m.aekit"],
        "train-config": train + ["-o", "t.toml", "--config", "t.toml"],
        "train-checkpoint-is-data": train + ["-o", "m.aekit", "--checkpoint", "data.npy"],
        "train-output-is-checkpoint": train + ["-o", "run.ckpt", "--checkpoint", "run.ckpt"],
        "score-data": ["score", "m.npy", "data.npy", "-o", "data.npy"],
        "encode-data": ["encode", "m.npy", "data.npy", "-o", "data.npy"],
        "decode-data": ["decode", "m.npy", "codes.npy", "-o", "codes.npy"],
        "encode-model": ["encode", "m.npy", "data.npy", "-o", "m.npy"],
    }[case]
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    line = assert_one_line_error(call(capsys, *args, cwd=tmp_path), 2, "is the same file as")
    assert "--output" in line or "--checkpoint" in line
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing written, nothing changed


def test_train_writes_models_only_over_models(tmp_path, capsys):
    np.save(tmp_path / "data.npy", aekit.datasets.digits()[0][:60])
    np.save(tmp_path / "other.npy", np.ones((3, 3)))
    (tmp_path / "notes").write_text("my notes\n")
    train = ["train", "data.npy", "--layers", "64,8,64", "--epochs", "1", "-q"]
    for output, match in [
        ("other.npy", "suffix of a data file"),
        ("new.csv", "suffix of a data file"),
        ("notes", "not an aekit model file"),
    ]:
        line = assert_one_line_error(call(capsys, *train, "-o", output, cwd=tmp_path), 2, f"--output '{output}'")
        assert match in line
    assert_one_line_error(
        call(capsys, *train, "-o", "m.aekit", "--checkpoint", "notes", cwd=tmp_path),
        2,
        "--checkpoint 'notes' exists and is not an aekit model file",
    )
    assert (tmp_path / "notes").read_text() == "my notes\n" and not (tmp_path / "new.csv").exists()
    assert np.load(tmp_path / "other.npy").tolist() == np.ones((3, 3)).tolist()
    # An existing model is what -o is for: it is replaced.
    aekit.Autoencoder([64, 4, 64], rng=0).save(str(tmp_path / "m.aekit"))
    assert call(capsys, *train, "-o", "m.aekit", cwd=tmp_path).returncode == 0
    assert aekit.load(str(tmp_path / "m.aekit")).layers[1].output_shape == (8,)


@pytest.mark.parametrize(
    "args",
    [
        ["train", "data.npy", "--layers", "64,8,64", "--epochs", "1", "-o", "out/"],
        ["train", "data.npy", "--layers", "64,8,64", "--epochs", "1", "-o", "model.aekit", "--checkpoint", "ck/"],
        ["encode", "m.aekit", "data.npy", "-o", "out/"],
        ["score", "m.aekit", "data.npy", "-o", "out/"],
    ],
)
def test_a_file_output_ending_in_a_separator_is_refused(tmp_path, capsys, args):
    np.save(tmp_path / "data.npy", aekit.datasets.digits()[0][:60])
    aekit.Autoencoder([64, 8, 64], rng=0).save(str(tmp_path / "m.aekit"))
    assert_one_line_error(call(capsys, *args, cwd=tmp_path), 2, "ends in a path separator")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npy", "m.aekit"]  # no file 'out', no folder


# ---------------------------------------------------------------------- config values
@pytest.mark.parametrize(
    "line, match",
    [
        ('tied = "false"', "config key 'tied' in 'c.toml' must be true or false, got 'false'"),
        ('epochs = "ten"', "config key 'epochs' in 'c.toml' must be a whole number, got 'ten'"),
        ("epochs = 2.5", "config key 'epochs' in 'c.toml' must be a whole number, got 2.5"),
        ("epochs = -3", "config key 'epochs' in 'c.toml' must be an integer >= 0, got -3"),
        ("learning-rate = true", "config key 'learning-rate' in 'c.toml' must be a number, got True"),
        ("seed = 1.5", "config key 'seed' in 'c.toml' must be a whole number"),
        ('on_nan = "ignore"', "config key 'on_nan' in 'c.toml' must be one of \"raise\", \"warn\", got 'ignore'"),
        ("activation = 3", "config key 'activation' in 'c.toml' must be a string, got 3"),
        ('algo = "adamw"', "config key 'algo' in 'c.toml': unknown training algorithm 'adamw'"),
        ("layers = 64", "config key 'layers' in 'c.toml' must be a list of layers or a string"),
        ("layers = [64]", "config key 'layers' in 'c.toml' must be a list of at least two layers"),
        ('layers = "64,,64"', "config key 'layers' in 'c.toml' must be a comma-separated list"),
        ('compile = "yes"', "config key 'compile' in 'c.toml' must be true, false or \"auto\""),
        ("resume = true", "config key 'resume' in 'c.toml' needs --checkpoint PATH"),
    ],
)
def test_config_values_are_checked_like_their_flags(tmp_path, capsys, line, match):
    np.save(tmp_path / "x.npy", aekit.datasets.digits()[0][:50])
    layers = "" if line.startswith("layers") else 'layers = "64,8,64"\n'
    (tmp_path / "c.toml").write_text(f"[train]\n{layers}{line}\n")
    result = call(capsys, "train", "x.npy", "--config", "c.toml", "-o", "m.aekit", cwd=tmp_path)
    assert_one_line_error(result, 2, match)
    assert not (tmp_path / "m.aekit").exists()


def test_config_booleans_mean_what_they_say(tmp_path, capsys):
    np.save(tmp_path / "x.npy", aekit.datasets.digits()[0][:50])
    for tied, form in (("false", "dense"), ("true", "tied")):
        (tmp_path / "c.toml").write_text(
            f'layers = "64,8,64"\ntied = {tied}\nepochs = 1\nlearning_rate = 1\nshuffle = false\n'
        )
        # A flag given on the command line replaces the file's value, and the error names the flag.
        result = call(
            capsys,
            "train",
            "x.npy",
            "--config",
            "c.toml",
            "--learning-rate",
            "0.01",
            "-q",
            "-o",
            "m.aekit",
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        assert aekit.load(str(tmp_path / "m.aekit")).layers[2].spec.form == form
    result = call(capsys, "train", "x.npy", "--config", "c.toml", "--epochs", "-1", "-o", "m.aekit", cwd=tmp_path)
    assert_one_line_error(result, 2, "--epochs must be an integer >= 0, got -1")


# ---------------------------------------------------------------------- info
def test_info_reads_checkpoints(tmp_path, capsys):
    np.save(tmp_path / "x.npy", aekit.datasets.digits()[0][:80])
    result = call(
        capsys,
        "train",
        "x.npy",
        "--layers",
        "64,8,64",
        "--epochs",
        "3",
        "--valid-split",
        "0.25",
        "-q",
        "-o",
        "m.aekit",
        "--checkpoint",
        "run.ckpt",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    from aekit.checkpoint import checkpoint_info

    state = checkpoint_info(tmp_path / "run.ckpt")
    result = call(capsys, "info", "run.ckpt", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "training checkpoint" in out and "hid1" in out
    assert f"checkpoint after epoch {state['epoch']} (best: epoch {state['best_epoch']}" in out
    net = aekit.load(str(tmp_path / "run.ckpt"))
    assert f"parameters: {net.num_params}" in out and "trained 3 epochs" in out
    history = [line for line in out.splitlines() if line.strip().startswith("epoch ")]
    assert [line.split(":")[0].strip() for line in history] == ["epoch 1", "epoch 2", "epoch 3"]
    assert all("valid=" in line for line in history)


def test_info_shows_a_long_history_in_a_few_lines(tmp_path, capsys):
    net = aekit.Autoencoder([6, 2, 6], rng=0)
    net.train(np.random.default_rng(0).random((40, 6)).astype(np.float32), max_epochs=30, validate_every=0)
    net.save(str(tmp_path / "m.aekit"))
    out = call(capsys, "info", "m.aekit", cwd=tmp_path).stdout
    rows = [line.strip() for line in out.splitlines() if line.strip().startswith("epoch ")]
    assert 2 <= len(rows) <= 10 and rows[0].startswith("epoch 1:") and rows[-1].startswith("epoch 30:")
    assert f"loss={net.history[-1]['train']['loss']:.6g}" in rows[-1] and "    ..." in out


# ---------------------------------------------------------------------- .npz arrays
def test_npz_arrays_are_picked_with_a_colon(tmp_path, capsys):
    x = aekit.datasets.digits()[0][:60]
    np.savez(tmp_path / "d.npz", train=x, other=x[:10] * 0)
    result = call(capsys, "train", "d.npz", "--layers", "64,8,64", "--epochs", "1", "-o", "m.aekit", cwd=tmp_path)
    assert_one_line_error(result, 1, "pick one as d.npz:NAME")
    result = call(
        capsys,
        "train",
        "d.npz:train",
        "--layers",
        "64,8,64",
        "--epochs",
        "1",
        "-q",
        "-o",
        "m.aekit",
        "--valid",
        "d.npz:other",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    net = aekit.load(str(tmp_path / "m.aekit"))
    assert call(capsys, "encode", "m.aekit", "d.npz:train", "-o", "c.npy", cwd=tmp_path).returncode == 0
    np.testing.assert_allclose(np.load(tmp_path / "c.npy"), net.encode(x), rtol=1e-6)
    result = call(capsys, "encode", "m.aekit", "d.npz:nope", "-o", "c.npy", cwd=tmp_path)
    assert_one_line_error(result, 1, "no array named 'nope'")
    result = call(capsys, "train", "d.npz:train", "--layers", "64,8,64", "-o", "d.npz", cwd=tmp_path)
    assert_one_line_error(result, 2, "is the same file as DATA 'd.npz:train'")
    assert np.load(tmp_path / "d.npz")["train"].shape == x.shape


def test_an_idx_labels_file_or_a_colon_on_a_non_npz_is_named_as_data(tmp_path, capsys):
    labels = bytes([0, 0, 8, 1, 0, 0, 0, 5]) + bytes([3, 1, 4, 1, 5])
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(labels)
    np.save(tmp_path / "x.npy", np.zeros((5, 4), np.float32))
    result = call(capsys, "train", "train-labels-idx1-ubyte", "--layers", "1,2,1", "-o", "m.aekit", cwd=tmp_path)
    assert_one_line_error(
        result,
        1,
        "'train-labels-idx1-ubyte' is an idx labels file (a 1-D array of 5 labels), "
        "not data; pass the matching images file",
    )
    result = call(
        capsys,
        "train",
        "x.npy",
        "--layers",
        "4,2,4",
        "--valid",
        "train-labels-idx1-ubyte",
        "-o",
        "m.aekit",
        cwd=tmp_path,
    )
    assert_one_line_error(result, 1, "--valid: 'train-labels-idx1-ubyte' is an idx labels file")
    result = call(capsys, "train", "x.npy:train", "--layers", "4,2,4", "-o", "m.aekit", cwd=tmp_path)
    assert_one_line_error(
        result, 1, "FILE:NAME picks an array of an .npz or .safetensors file only, and 'x.npy' is not one"
    )
    assert not (tmp_path / "m.aekit").exists()


# ---------------------------------------------------------------------- report and demo
def test_report_and_demo_check_their_folder_first(workdir, tmp_path, capsys):
    folder, _ = workdir
    pytest.importorskip("aekit.report")
    np.save(tmp_path / "wide.npy", np.zeros((10, 100), np.float32))
    (tmp_path / "afile").write_text("keep\n")
    model = str(folder / "model.aekit")
    result = call(capsys, "report", model, "wide.npy", "-o", "rep", cwd=tmp_path)
    assert_one_line_error(result, 1, "'wide.npy' has 100 features, but this Autoencoder expects 64")
    assert not (tmp_path / "rep").exists()
    for args in (["report", model, str(folder / "x.npy"), "-o", "afile"], ["demo", "-o", "afile"]):
        assert_one_line_error(call(capsys, *args, cwd=tmp_path), 2, "--output 'afile' exists and is not a folder")
    assert (tmp_path / "afile").read_text() == "keep\n"
    result = call(capsys, "report", model, str(folder / "x.npy"), "-o", "rep/", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "rep" / "index.html").is_file()
    for epochs in ("0", "-2"):
        result = call(capsys, "demo", "--epochs", epochs, "-o", "demo", cwd=tmp_path)
        assert_one_line_error(result, 2, f"--epochs must be an integer >= 1, got {epochs}")
    assert not (tmp_path / "demo").exists()
    (tmp_path / "d2").mkdir()
    (tmp_path / "d2" / "model.aekit").write_text("not a model\n")
    assert_one_line_error(call(capsys, "demo", "-o", "d2", cwd=tmp_path), 2, "not an aekit model")


# ---------------------------------------------------------------------- progress
def test_layerwise_progress_names_the_pretraining_stages(tmp_path, capsys):
    np.save(tmp_path / "x.npy", aekit.datasets.digits()[0][:60])
    result = call(
        capsys,
        "train",
        "x.npy",
        "--layers",
        "64,32,8,32,64",
        "--layerwise",
        "--epochs",
        "2",
        "-o",
        "m.aekit",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    heads = [line.split(": loss")[0] for line in result.stderr.strip().splitlines()]
    assert heads == ["pretraining hid1: epoch 1/2", "pretraining hid1: epoch 2/2", "epoch 1/2", "epoch 2/2"]
    assert len(aekit.load(str(tmp_path / "m.aekit")).history) == 2
    # -v shows the library's log too; the stage watch must not swallow it.
    result = call(
        capsys,
        "-v",
        "train",
        "x.npy",
        "--layers",
        "64,32,8,32,64",
        "--algo",
        "layerwise",
        "--epochs",
        "1",
        "-o",
        "m.aekit",
        cwd=tmp_path,
    )
    assert "aekit: INFO: layerwise: pretraining" in result.stderr
    assert "pretraining hid1: epoch 1/1" in result.stderr


# ---------------------------------------------------------------------- messages and exit codes
@pytest.mark.parametrize(
    "extra, match",
    [
        (["--epochs", "-3"], "--epochs must be an integer >= 0, got -3"),
        (["--batch-size", "0"], "--batch-size must be an integer >= 1, got 0"),
        (["--lr", "-0.1"], "--learning-rate must be a number in (0.0, inf], got -0.1"),
        (["--checkpoint-every", "0", "--checkpoint", "c.ckpt"], "--checkpoint-every must be an integer >= 1"),
        (["--resume"], "--resume needs --checkpoint PATH"),
        (["--algo", "adamw"], "--algo: unknown training algorithm 'adamw'"),
        (["--loss", "mse2"], "--loss: unknown loss 'mse2'"),
        (["--activation", "relux"], "--activation: unknown activation 'relux'"),
        (["--device", "gpu"], "--device must be"),
        (["--precision", "fp8"], "--precision must be 'fp32', 'bf16' or 'fp16', got 'fp8'"),
        (["--distributed", "maybe"], "--distributed must be"),
        (["--valid-split", "2"], "--valid-split must be a number in [0.0, 0.99], got 2.0"),
        (["--hidden-l1", "-1"], "--hidden-l1 must be a number"),
        (["--sparsity-weight", "1"], "--sparsity-weight needs --sparsity-target"),
        (["--momentum", "0.5"], "--momentum applies to algo"),
        (["--valid", "x.npy", "--valid-split", "0.1"], "--valid and --valid-split exclude each other"),
        (["--layers", "64,,64"], "--layers must be a comma-separated list"),
        (["--layers", "64,8:relux,64"], "--layers: unknown activation 'relux'"),
        (["--config", "nothere.toml"], "config file 'nothere.toml' does not exist"),
        (["--epochs", "ten"], "--epochs"),  # argparse's own error
    ],
)
def test_bad_option_values_exit_2_naming_the_flag(workdir, capsys, extra, match):
    folder, _ = workdir
    args = ["train", "x.npy", "--layers", "64,8,64", "-o", "never.aekit", *extra]
    assert_one_line_error(call(capsys, *args, cwd=folder), 2, match)
    assert not (folder / "never.aekit").exists() and not (folder / "c.ckpt").exists()


@pytest.mark.parametrize(
    "args, code, match",
    [
        (
            ["encode", "model.aekit", "wide.npy", "-o", "c.npy"],
            1,
            "'wide.npy' has 100 features, but this Autoencoder expects 64 (layer 'in')",
        ),
        (["decode", "model.aekit", "wide.npy", "-o", "c.npy"], 1, "'wide.npy' has 100 features"),
        (["score", "model.aekit", "wide.npy"], 1, "'wide.npy' has 100 features"),
        (
            ["train", "x.npy", "--layers", "64,8,64", "--valid", "wide.npy", "-o", "never.aekit"],
            1,
            "--valid 'wide.npy' has 100 features",
        ),
        (
            ["train", "x.npy", "--layers", "64,8,64", "--valid", "0.1", "-o", "never.aekit"],
            1,
            "--valid: data file '0.1' does not exist; --valid takes a data file",
        ),
        (["encode", "model.aekit", "x.npy", "--layer", "7", "-o", "c.npy"], 2, "--layer must be in [-3, 3), got 7"),
        (["encode", "model.aekit", "x.npy", "--sample", "--layer", "out", "-o", "c.npy"], 2, "--sample needs"),
        (
            [
                "train",
                "x.npy",
                "--layers",
                "64,8,64",
                "-o",
                "never.aekit",
                "--algo",
                "sgd",
                "--lr",
                "1e9",
                "--epochs",
                "2",
            ],
            1,
            "Try a smaller --learning-rate",
        ),
    ],
)
def test_errors_name_the_file_or_flag(workdir, capsys, args, code, match):
    folder, _ = workdir
    if not (folder / "wide.npy").exists():
        np.save(folder / "wide.npy", np.zeros((10, 100), np.float32))
    assert_one_line_error(call(capsys, *args, cwd=folder), code, match)
    assert not (folder / "never.aekit").exists() and not (folder / "c.npy").exists()


@pytest.mark.parametrize("name", ["cut-idx3-ubyte.gz", "cut.gz", "tiny.gz"])
@pytest.mark.parametrize("command", ["train", "encode"])
def test_a_truncated_gz_is_one_line_naming_the_file(workdir, capsys, name, command):
    # An idx.gz cut in half (or cut inside its first block), under a telling name or none.
    folder, _ = workdir
    images = (np.load(folder / "x.npy")[:100].reshape(100, 8, 8) * 255).astype(np.uint8)
    idx = b"\0\0\x08\x03" + struct.pack(">3I", 100, 8, 8) + images.tobytes()
    gz = gzip.compress(idx)
    (folder / name).write_bytes(gz[:12] if name == "tiny.gz" else gz[: len(gz) // 2])
    args = (
        ["train", name, "--layers", "64,8,64", "-o", "never.aekit"]
        if command == "train"
        else ["encode", "model.aekit", name, "-o", "c.npy"]
    )
    line = assert_one_line_error(call(capsys, *args, cwd=folder), 1, f"'{name}'")
    assert "unexpected" not in line and "EOFError" not in line, line
    assert not (folder / "never.aekit").exists() and not (folder / "c.npy").exists()


@pytest.mark.parametrize(
    "args, match",
    [
        (
            ["train", "x.npy", "--hiden-l1", "0.1", "--layers", "64,8,64", "-o", "never.aekit"],
            "unrecognized arguments: --hiden-l1 0.1; did you mean --hidden-l1? (see 'aekit train --help')",
        ),
        (
            ["train", "x.npy", "--layers", "64,8,64", "-o", "never.aekit", "--wieght-l2=0.1", "--bach-size", "8"],
            "did you mean --weight-l2 for --wieght-l2, --batch-size for --bach-size?",
        ),
        (["encode", "model.aekit", "x.npy", "-o", "c.npy", "--layr", "hid1"], "did you mean --layer? (see 'aekit enc"),
        (["train", "x.npy", "--layers", "64,8,64", "-o", "never.aekit", "--zzzzqq"], "arguments: --zzzzqq (see"),
    ],
)
def test_misspelt_flags_get_a_did_you_mean(workdir, capsys, args, match):
    folder, _ = workdir
    line = assert_one_line_error(call(capsys, *args, cwd=folder), 2, match)
    assert ("did you mean" in line) == ("zzzzqq" not in line)
    assert not (folder / "never.aekit").exists() and not (folder / "c.npy").exists()


def test_help_describes_every_argument():
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in commands.items():
        for action in sub._actions:
            assert action.help and "TrainOptions" not in action.help, (name, action.dest)
    train = {a.dest: a for a in commands["train"]._actions}
    assert "layerwise" in train["algo"].help
    for dest, words in (
        ("precision", ("fp32", "bf16", "fp16", "default")),
        ("compile", ("default", "auto")),
        ("distributed", ("auto", "true", "false", "default")),
    ):
        assert all(word in train[dest].help for word in words), dest


# ---------------------------------------------------------------------- every option reaches the library
# The model a flag trains must be the model the same keyword trains through the Python API: same
# parameters bit for bit and the same history (training on CPU is deterministic for a given seed).
_MODEL_KWARGS = ("layers", "loss", "hidden_activation", "output_activation", "rng")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """100 training and 30 validation examples of 16 features in [0, 1], as .npy files."""
    folder = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    x, v = rng.random((100, 16)).astype(np.float32), rng.random((30, 16)).astype(np.float32)
    np.save(folder / "x.npy", x)
    np.save(folder / "v.npy", v)
    return folder, x, v


def _api_model(kwargs: dict, x: np.ndarray, v: np.ndarray):
    """What ``aekit train`` should build and train for these keywords (its defaults: seed 13, 2 epochs)."""
    import torch

    kwargs = {"layers": "16,8,16", "rng": 13, "max_epochs": 2, **kwargs}
    model = {k: kwargs.pop(k) for k in _MODEL_KWARGS if k in kwargs}
    net = aekit.Autoencoder(cli.parse_layers_arg(model.pop("layers")), **model)
    valid = v if kwargs.pop("valid", None) else None
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as the CLI runs under --threads 1
    try:
        net.train(x, valid, **kwargs)
    finally:
        torch.set_num_threads(before)
    return net


def _same_model(a, b) -> bool:
    pa, pb = dict(a.graph.named_parameters()), dict(b.graph.named_parameters())
    return pa.keys() == pb.keys() and all(torch_equal(pa[k], pb[k]) for k in pa) and a.history == b.history


def torch_equal(a, b) -> bool:
    import torch

    return a.dtype == b.dtype and a.shape == b.shape and bool(torch.equal(a, b))


# (flags of the option, its keywords), (flags of the context it needs, their keywords)
_OPTION_CASES = [
    pytest.param(["--learning-rate", "0.05"], {"learning_rate": 0.05}, [], {}, id="learning-rate"),
    pytest.param(["--lr", "0.05"], {"learning_rate": 0.05}, [], {}, id="lr"),
    pytest.param(["--batch-size", "10"], {"batch_size": 10}, [], {}, id="batch-size"),
    pytest.param(["--no-shuffle"], {"shuffle": False}, [], {}, id="no-shuffle"),
    pytest.param(["--seed", "5"], {"rng": 5}, [], {}, id="seed"),
    pytest.param(["--algo", "sgd"], {"algo": "sgd"}, [], {}, id="algo"),
    pytest.param(["--momentum", "0.5"], {"momentum": 0.5}, ["--algo", "sgd"], {"algo": "sgd"}, id="momentum"),
    pytest.param(["--max-gradient-norm", "0.01"], {"max_gradient_norm": 0.01}, [], {}, id="max-gradient-norm"),
    pytest.param(["--loss", "mae"], {"loss": "mae"}, [], {}, id="loss"),
    pytest.param(["--activation", "tanh"], {"hidden_activation": "tanh"}, [], {}, id="activation"),
    pytest.param(["--output-activation", "sigmoid"], {"output_activation": "sigmoid"}, [], {}, id="output-activation"),
    pytest.param(["--tied"], {"layers": "16,8,16:tied"}, [], {}, id="tied"),
    pytest.param(
        ["--layerwise"], {"layerwise": True}, ["--layers", "16,8,4,8,16"], {"layers": "16,8,4,8,16"}, id="layerwise"
    ),
    pytest.param(
        ["--algo", "layerwise"],
        {"algo": "layerwise"},
        ["--layers", "16,8,4,8,16"],
        {"layers": "16,8,4,8,16"},
        id="algo-layerwise",
    ),
    # Early stopping: no epoch improves the validation loss by half, so training stops early.
    pytest.param(
        ["--min-improvement", "0.5"],
        {"min_improvement": 0.5},
        ["--epochs", "8", "--valid-split", "0.2"],
        {"max_epochs": 8, "valid_split": 0.2},
        id="min-improvement",
    ),
    pytest.param(
        ["--patience", "1"],
        {"patience": 1},
        ["--epochs", "8", "--valid-split", "0.2", "--min-improvement", "0.5"],
        {"max_epochs": 8, "valid_split": 0.2, "min_improvement": 0.5},
        id="patience",
    ),
    pytest.param(
        ["--validate-every", "2"],
        {"validate_every": 2},
        ["--epochs", "3", "--valid-split", "0.2"],
        {"max_epochs": 3, "valid_split": 0.2},
        id="validate-every",
    ),
    pytest.param(["--valid-split", "0.2"], {"valid_split": 0.2}, [], {}, id="valid-split"),
    pytest.param(["--valid", "v.npy"], {"valid": True}, [], {}, id="valid"),
    pytest.param(["--hidden-l1", "0.1"], {"hidden_l1": 0.1}, [], {}, id="hidden-l1"),
    pytest.param(["--hidden-l2", "0.1"], {"hidden_l2": 0.1}, [], {}, id="hidden-l2"),
    pytest.param(["--weight-l1", "0.01"], {"weight_l1": 0.01}, [], {}, id="weight-l1"),
    pytest.param(["--weight-l2", "0.01"], {"weight_l2": 0.01}, [], {}, id="weight-l2"),
    pytest.param(
        ["--sparsity-target", "0.1", "--sparsity-weight", "1"],
        {"sparsity_target": 0.1, "sparsity_weight": 1.0},
        ["--activation", "sigmoid"],
        {"hidden_activation": "sigmoid"},
        id="sparsity",
    ),
    pytest.param(
        ["--contractive", "0.1"],
        {"contractive": 0.1},
        ["--activation", "sigmoid"],
        {"hidden_activation": "sigmoid"},
        id="contractive",
    ),
    pytest.param(["--input-noise", "0.1"], {"input_noise": 0.1}, [], {}, id="input-noise"),
    pytest.param(["--input-dropout", "0.2"], {"input_dropout": 0.2}, [], {}, id="input-dropout"),
    pytest.param(["--hidden-noise", "0.1"], {"hidden_noise": 0.1}, [], {}, id="hidden-noise"),
    pytest.param(["--hidden-dropout", "0.2"], {"hidden_dropout": 0.2}, [], {}, id="hidden-dropout"),
    pytest.param(["--precision", "bf16"], {"precision": "bf16"}, [], {}, id="precision-bf16"),
]


@pytest.mark.parametrize("flags, kwargs, context_flags, context", _OPTION_CASES)
def test_each_train_option_reaches_the_library(tiny, capsys, flags, kwargs, context_flags, context):
    folder, x, v = tiny
    name = "m-" + "".join(c for c in "".join(flags) if c.isalnum()) + ".aekit"
    args = ["train", "x.npy", "--layers", "16,8,16", "--epochs", "2", "-q", "-o", name, *context_flags, *flags]
    result = call(capsys, *args, cwd=folder)
    assert result.returncode == 0, result.stderr
    net = aekit.load(str(folder / name))
    expected = _api_model({**context, **kwargs}, x, v)
    assert _same_model(net, expected), "the CLI's model differs from the API's with the same keywords"
    # Not vacuous: without the option the API trains another model.
    assert not _same_model(net, _api_model(context, x, v)), "the option changes nothing"
    if "valid" in kwargs:
        # The history's validation loss is the loss on --valid's data (the last epoch is the best here).
        last = net.history[-1]["valid"]["loss"]
        assert last == min(h["valid"]["loss"] for h in net.history)
        assert last == pytest.approx(net.loss(v).detach().item(), rel=1e-6)
    if "patience" in kwargs or "min_improvement" in kwargs:
        assert len(net.history) < 8  # stopped early


def test_checkpoint_every_writes_every_n_epochs_and_at_the_end(tiny, capsys, monkeypatch):
    from aekit.checkpoint import Checkpointer, checkpoint_info

    folder, x, _ = tiny
    written: list[int] = []
    save = Checkpointer.save

    def spy(self, trainer):
        written.append(trainer.epoch)
        save(self, trainer)

    monkeypatch.setattr(Checkpointer, "save", spy)
    for every, expected in ((None, [1, 2, 3, 4, 5]), ("2", [2, 4, 5])):
        written.clear()
        extra = ["--checkpoint-every", every] if every else []
        result = call(
            capsys,
            "train",
            "x.npy",
            "--layers",
            "16,8,16",
            "--epochs",
            "5",
            "-q",
            "-o",
            "ck.aekit",
            "--checkpoint",
            f"run{every}.ckpt",
            *extra,
            cwd=folder,
        )
        assert result.returncode == 0, result.stderr
        assert written == expected
        assert checkpoint_info(folder / f"run{every}.ckpt")["epoch"] == 5


@pytest.fixture(scope="module")
def sigmoid_model(tiny):
    """A saved 16-8-4-8-16 model with sigmoid hidden layers (codes in [0, 1])."""
    folder, x, _ = tiny
    net = aekit.Autoencoder([16, (8, "sigmoid"), (4, "sigmoid"), (8, "sigmoid"), 16], rng=2)
    net.train(x, max_epochs=1)
    net.save(str(folder / "sig.aekit"))
    return folder, x


def test_encode_sample_draws_bernoulli_codes(sigmoid_model, capsys):
    folder, x = sigmoid_model
    many = np.repeat(x[:2], 2000, axis=0)
    np.save(folder / "many.npy", many)
    result = call(capsys, "encode", "sig.aekit", "many.npy", "--sample", "-o", "bits.npy", cwd=folder)
    assert result.returncode == 0, result.stderr
    bits = np.load(folder / "bits.npy")
    assert set(np.unique(bits)) <= {0.0, 1.0}
    np.testing.assert_array_equal(bits, aekit.load(str(folder / "sig.aekit")).encode(many, sample=True))
    probs = aekit.load(str(folder / "sig.aekit")).encode(x[:2])
    # 2000 draws each: the standard error of a mean is at most 0.011.
    np.testing.assert_allclose(bits.reshape(2, 2000, -1).mean(axis=1), probs, atol=0.05)
    assert not np.allclose(probs, np.round(probs))  # the probabilities are not already bits


@pytest.mark.parametrize("layer", ["hid1", "1", "hid3", "-2"])
def test_encode_and_decode_layer(sigmoid_model, capsys, layer):
    folder, x = sigmoid_model
    net = aekit.load(str(folder / "sig.aekit"))
    key = int(layer) if layer.lstrip("-").isdigit() else layer
    result = call(capsys, "encode", "sig.aekit", "x.npy", "--layer", layer, "-o", f"z{layer}.npy", cwd=folder)
    assert result.returncode == 0, result.stderr
    codes = np.load(folder / f"z{layer}.npy")
    np.testing.assert_array_equal(codes, net.encode(x, layer=key))
    assert codes.shape == (100, 8)  # not the default code layer (hid2, 4 units)
    result = call(capsys, "decode", "sig.aekit", f"z{layer}.npy", "--layer", layer, "-o", f"r{layer}.npy", cwd=folder)
    assert result.returncode == 0, result.stderr
    recon = np.load(folder / f"r{layer}.npy")
    np.testing.assert_array_equal(recon, net.decode(codes, layer=key))
    if layer in ("hid1", "1"):
        np.testing.assert_allclose(recon, net.predict(x), rtol=1e-5, atol=1e-6)


def test_verbose_logs_to_stderr(tiny, capsys):
    folder, _, _ = tiny
    train = ["train", "x.npy", "--layers", "16,8,16", "--epochs", "1", "-q", "-o", "v.aekit"]
    assert call(capsys, *train, cwd=folder).stderr == ""
    result = call(capsys, "-v", *train, cwd=folder)
    assert result.returncode == 0, result.stderr
    assert "aekit: INFO: training Autoencoder" in result.stderr and "100 examples from x.npy" in result.stderr
    result = call(capsys, *train, "--verbose", cwd=folder)  # after the command too
    assert "aekit: INFO: training" in result.stderr


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code in (0, None)
    assert capsys.readouterr().out.strip() == f"aekit {aekit.__version__}"
