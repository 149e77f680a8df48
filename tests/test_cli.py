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
    assert_one_line_error(result, 2, "did you mean 'learning_rate'")


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
        "bad-layers": (train + ["x.npy", "--layers", "64,eight,64"], 2, "--layers"),
        "unknown-flag": (train + ["x.npy", "--layers", "64,8,64", "--hidden-l3", "0.1"], 2, "--hidden-l3"),
        "wrong-size": (train + ["x.npy", "--layers", "63,8,63"], 1, "64 features"),
        "diverged": (train + ["x.npy", "--layers", "64,8,64", "--algo", "sgd", "--learning-rate", "1e6"], 1,
                     "diverged"),
        "bad-option": (train + ["x.npy", "--layers", "64,8,64", "--algo", "adamm"], 2,
                       "--algo: unknown training algorithm 'adamm'; did you mean 'adam'"),
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
        (("encode", "model.aekit", "x.npy", "--layer", "hid9"), 2,
         "--layer: unknown layer 'hid9'; did you mean 'hid1'"),
    ]:
        assert_one_line_error(call(capsys, *args, "--output", "keep.npy", cwd=folder), code, match)
        assert (folder / "keep.npy").read_bytes() == b"old bytes"
    result = call(capsys, "encode", "model.aekit", "x.npy", "--output", "codes.txt", cwd=folder)
    assert_one_line_error(result, 2, ".npy or .csv")
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


# ---------------------------------------------------------------------- outputs never replace inputs
@pytest.mark.parametrize("case", ["train-data", "train-data-other-spelling", "train-hard-link", "train-valid",
                                  "train-config", "train-checkpoint-is-data", "train-output-is-checkpoint",
                                  "score-data", "encode-data", "decode-data", "encode-model"])
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
    for output, match in [("other.npy", "suffix of a data file"), ("new.csv", "suffix of a data file"),
                          ("notes", "not an aekit model file")]:
        line = assert_one_line_error(call(capsys, *train, "-o", output, cwd=tmp_path), 2, f"--output '{output}'")
        assert match in line
    assert_one_line_error(call(capsys, *train, "-o", "m.aekit", "--checkpoint", "notes", cwd=tmp_path), 2,
                          "--checkpoint 'notes' exists and is not an aekit model file")
    assert (tmp_path / "notes").read_text() == "my notes\n" and not (tmp_path / "new.csv").exists()
    assert np.load(tmp_path / "other.npy").tolist() == np.ones((3, 3)).tolist()
    # An existing model is what -o is for: it is replaced.
    aekit.Autoencoder([64, 4, 64], rng=0).save(str(tmp_path / "m.aekit"))
    assert call(capsys, *train, "-o", "m.aekit", cwd=tmp_path).returncode == 0
    assert aekit.load(str(tmp_path / "m.aekit")).layers[1].output_shape == (8,)


@pytest.mark.parametrize("args", [
    ["train", "data.npy", "--layers", "64,8,64", "--epochs", "1", "-o", "out/"],
    ["train", "data.npy", "--layers", "64,8,64", "--epochs", "1", "-o", "model.aekit", "--checkpoint", "ck/"],
    ["encode", "m.aekit", "data.npy", "-o", "out/"],
    ["score", "m.aekit", "data.npy", "-o", "out/"],
])
def test_a_file_output_ending_in_a_separator_is_refused(tmp_path, capsys, args):
    np.save(tmp_path / "data.npy", aekit.datasets.digits()[0][:60])
    aekit.Autoencoder([64, 8, 64], rng=0).save(str(tmp_path / "m.aekit"))
    assert_one_line_error(call(capsys, *args, cwd=tmp_path), 2, "ends in a path separator")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npy", "m.aekit"]  # no file 'out', no folder


# ---------------------------------------------------------------------- config values
@pytest.mark.parametrize("line, match", [
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
])
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
        (tmp_path / "c.toml").write_text(f'layers = "64,8,64"\ntied = {tied}\nepochs = 1\nlearning_rate = 1\n'
                                         "shuffle = false\n")
        # A flag given on the command line replaces the file's value, and the error names the flag.
        result = call(capsys, "train", "x.npy", "--config", "c.toml", "--learning-rate", "0.01", "-q",
                      "-o", "m.aekit", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert aekit.load(str(tmp_path / "m.aekit")).layers[2].spec.form == form
    result = call(capsys, "train", "x.npy", "--config", "c.toml", "--epochs", "-1", "-o", "m.aekit", cwd=tmp_path)
    assert_one_line_error(result, 2, "--epochs must be an integer >= 0, got -1")


# ---------------------------------------------------------------------- info
def test_info_reads_checkpoints(tmp_path, capsys):
    np.save(tmp_path / "x.npy", aekit.datasets.digits()[0][:80])
    result = call(capsys, "train", "x.npy", "--layers", "64,8,64", "--epochs", "3", "--valid-split", "0.25", "-q",
                  "-o", "m.aekit", "--checkpoint", "run.ckpt", cwd=tmp_path)
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
    result = call(capsys, "train", "d.npz:train", "--layers", "64,8,64", "--epochs", "1", "-q", "-o", "m.aekit",
                  "--valid", "d.npz:other", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    net = aekit.load(str(tmp_path / "m.aekit"))
    assert call(capsys, "encode", "m.aekit", "d.npz:train", "-o", "c.npy", cwd=tmp_path).returncode == 0
    np.testing.assert_allclose(np.load(tmp_path / "c.npy"), net.encode(x), rtol=1e-6)
    result = call(capsys, "encode", "m.aekit", "d.npz:nope", "-o", "c.npy", cwd=tmp_path)
    assert_one_line_error(result, 1, "no array named 'nope'")
    result = call(capsys, "train", "d.npz:train", "--layers", "64,8,64", "-o", "d.npz", cwd=tmp_path)
    assert_one_line_error(result, 2, "is the same file as DATA 'd.npz:train'")
    assert np.load(tmp_path / "d.npz")["train"].shape == x.shape


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
    result = call(capsys, "train", "x.npy", "--layers", "64,32,8,32,64", "--layerwise", "--epochs", "2",
                  "-o", "m.aekit", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    heads = [line.split(": loss")[0] for line in result.stderr.strip().splitlines()]
    assert heads == ["pretraining hid1: epoch 1/2", "pretraining hid1: epoch 2/2", "epoch 1/2", "epoch 2/2"]
    assert len(aekit.load(str(tmp_path / "m.aekit")).history) == 2
    # -v shows the library's log too; the stage watch must not swallow it.
    result = call(capsys, "-v", "train", "x.npy", "--layers", "64,32,8,32,64", "--algo", "layerwise",
                  "--epochs", "1", "-o", "m.aekit", cwd=tmp_path)
    assert "aekit: INFO: layerwise: pretraining" in result.stderr
    assert "pretraining hid1: epoch 1/1" in result.stderr


# ---------------------------------------------------------------------- messages and exit codes
@pytest.mark.parametrize("extra, match", [
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
])
def test_bad_option_values_exit_2_naming_the_flag(workdir, capsys, extra, match):
    folder, _ = workdir
    args = ["train", "x.npy", "--layers", "64,8,64", "-o", "never.aekit", *extra]
    assert_one_line_error(call(capsys, *args, cwd=folder), 2, match)
    assert not (folder / "never.aekit").exists() and not (folder / "c.ckpt").exists()


@pytest.mark.parametrize("args, code, match", [
    (["encode", "model.aekit", "wide.npy", "-o", "c.npy"], 1,
     "'wide.npy' has 100 features, but this Autoencoder expects 64 (layer 'in')"),
    (["decode", "model.aekit", "wide.npy", "-o", "c.npy"], 1, "'wide.npy' has 100 features"),
    (["score", "model.aekit", "wide.npy"], 1, "'wide.npy' has 100 features"),
    (["train", "x.npy", "--layers", "64,8,64", "--valid", "wide.npy", "-o", "never.aekit"], 1,
     "--valid 'wide.npy' has 100 features"),
    (["train", "x.npy", "--layers", "64,8,64", "--valid", "0.1", "-o", "never.aekit"], 1,
     "--valid: data file '0.1' does not exist; --valid takes a data file"),
    (["encode", "model.aekit", "x.npy", "--layer", "7", "-o", "c.npy"], 2, "--layer must be in [-3, 3), got 7"),
    (["encode", "model.aekit", "x.npy", "--sample", "--layer", "out", "-o", "c.npy"], 2, "--sample needs"),
    (["train", "x.npy", "--layers", "64,8,64", "-o", "never.aekit", "--algo", "sgd", "--lr", "1e9",
      "--epochs", "2"], 1, "Try a smaller --learning-rate"),
])
def test_errors_name_the_file_or_flag(workdir, capsys, args, code, match):
    folder, _ = workdir
    if not (folder / "wide.npy").exists():
        np.save(folder / "wide.npy", np.zeros((10, 100), np.float32))
    assert_one_line_error(call(capsys, *args, cwd=folder), code, match)
    assert not (folder / "never.aekit").exists() and not (folder / "c.npy").exists()


def test_help_describes_every_argument():
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in commands.items():
        for action in sub._actions:
            assert action.help and "TrainOptions" not in action.help, (name, action.dest)
    train = {a.dest: a for a in commands["train"]._actions}
    assert "layerwise" in train["algo"].help
    for dest, words in (("precision", ("fp32", "bf16", "fp16", "default")), ("compile", ("default", "auto")),
                        ("distributed", ("auto", "true", "false", "default"))):
        assert all(word in train[dest].help for word in words), dest
