"""Issue 19, silent failures in training: each one now warns or raises, naming the rule and the remedy.

* every early stop is an ``EarlyStoppingWarning`` naming the epoch, what was watched (validation or
  training loss), the rule and how to turn it off; ``patience=None`` turns it off;
* ``loss='bce'`` on an output that is not bounded in [0, 1], and data outside the output's range,
  give an ``OutputRangeWarning`` with the remedy;
* a finite loss that grows by orders of magnitude is divergence (restore, raise or warn; the CLI
  exits non-zero with one line);
* ``valid_split`` draws random rows of in-memory data (every class of sorted data is validated) and
  says so when it takes the tail of streamed data.
"""

from __future__ import annotations

import os
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import aekit
from aekit import cli
from aekit.errors import AekitWarning, EarlyStoppingWarning, OutputRangeWarning, TrainingDiverged
from aekit.train.guards import GROWTH_FACTOR, growth_reason
from aekit.train.loop import Trainer, parse_train_arguments


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's 8x8 digits in [0, 1], sorted by class: (x float32 (1797, 64), labels)."""
    x, labels = aekit.datasets.digits()
    order = np.argsort(labels, kind="stable")
    return np.ascontiguousarray(x[order], dtype=np.float32), np.asarray(labels)[order]


def caught(category, call):
    """``call()``'s warnings of ``category`` (every one, however often the same text repeats)."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        call()
    return [str(w.message) for w in seen if issubclass(w.category, category)]


def run_cli(capsys, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    before = Path.cwd()
    os.chdir(cwd)
    try:
        code = cli.main(["--threads", "1", *args])
    finally:
        os.chdir(before)
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, captured.out, captured.err)


def params(net):
    return [p.detach().clone() for p in net.graph.parameters()]


# ---------------------------------------------------------------------- early stopping
def test_an_early_stop_on_the_training_loss_names_the_epoch_the_rule_and_the_way_out(digits):
    x = digits[0][:400]
    net = aekit.Autoencoder([64, (16, "relu"), (64, "linear")], rng=0)
    with pytest.warns(EarlyStoppingWarning) as record:
        net.train(x, learning_rate=0.05, max_epochs=2000, patience=2)
    (message,) = [str(w.message) for w in record if issubclass(w.category, EarlyStoppingWarning)]
    epochs = len(net.history)
    assert epochs < 2000
    assert message.startswith(f"early stopping at epoch {epochs} of max_epochs=2000: the training loss (there are ")
    assert "pass valid= or valid_split= to watch held-out data" in message
    assert "by more than min_improvement=0 (relative) in the last 3 validations, more than patience=2" in message
    assert "pass patience=None (no early stopping; the best parameters are still kept)" in message
    assert "or validate_every=0 (no validation; the last parameters are kept)" in message
    # The best epoch it names is the one of the lowest training loss, and its parameters are kept.
    losses = [h["train"]["loss"] for h in net.history]
    best = int(np.argmin(losses)) + 1
    assert f"did not improve on its best (epoch {best})" in message
    assert f"the parameters of epoch {best} are kept" in message


def test_an_early_stop_on_the_validation_loss_says_so(digits):
    x = digits[0]
    net = aekit.Autoencoder([64, (16, "relu"), (64, "linear")], rng=0)
    messages = caught(
        EarlyStoppingWarning,
        lambda: net.train(x[::2], valid=x[1::2], learning_rate=0.05, max_epochs=300, patience=0, min_improvement=0.05),
    )
    assert len(messages) == 1
    assert messages[0].startswith(f"early stopping at epoch {len(net.history)} of max_epochs=300: the validation loss")
    assert "min_improvement=0.05" in messages[0] and "patience=0" in messages[0]


def test_patience_none_trains_every_epoch_and_keeps_the_best_parameters(digits):
    x = digits[0]
    net = aekit.Autoencoder([64, (16, "relu"), (64, "linear")], rng=0)
    messages = caught(
        AekitWarning,
        lambda: net.train(
            x[::2], valid=x[1::2], learning_rate=0.05, max_epochs=25, patience=None, min_improvement=0.05
        ),
    )
    assert messages == []
    assert len(net.history) == 25
    # The parameters kept are those of the last validation that improved on the best by over 5%.
    best = np.inf
    for h in net.history:
        if not np.isfinite(best) or (best - h["valid"]["loss"]) / best > 0.05:
            best = h["valid"]["loss"]
    assert best > min(h["valid"]["loss"] for h in net.history)  # not simply the lowest: the rule is applied
    assert net.loss(x[1::2]).item() == pytest.approx(best, rel=1e-5)
    # The same run with patience=0 stops early: the option is not vacuous.
    again = aekit.Autoencoder([64, (16, "relu"), (64, "linear")], rng=0)
    assert caught(
        EarlyStoppingWarning,
        lambda: again.train(x[::2], valid=x[1::2], learning_rate=0.05, max_epochs=25, patience=0, min_improvement=0.05),
    )
    assert len(again.history) < 25


def test_patience_none_reaches_the_estimators(digits):
    from aekit.estimator import AutoencoderTransformer

    est = AutoencoderTransformer(hidden=(8,), patience=None, max_epochs=6, learning_rate=0.05, random_state=0)
    assert caught(EarlyStoppingWarning, lambda: est.fit(digits[0][:200])) == []
    assert est.n_iter_ == 6


@pytest.mark.parametrize("bad", [-1, 1.5, "5", True])
def test_patience_must_be_a_count_or_none(bad):
    net = aekit.Autoencoder([4, 2, 4])
    with pytest.raises(aekit.ConfigurationError, match="patience must be an integer >= 0, or None for no early"):
        net.train(np.zeros((8, 4), "float32"), patience=bad)


def test_the_cli_prints_the_early_stop_as_one_warning_line(tmp_path, capsys, digits):
    np.save(tmp_path / "x.npy", digits[0][:400])
    train = ["train", "x.npy", "--layers", "64,16,64", "--lr", "0.05", "--epochs", "2000", "-q"]
    result = run_cli(capsys, tmp_path, *train, "--patience", "2", "-o", "m.aekit")
    assert result.returncode == 0, result.stderr
    epochs = len(aekit.load(str(tmp_path / "m.aekit")).history)
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"aekit: warning: early stopping at epoch {epochs} of max_epochs=2000: the training loss")
    assert line.endswith("or validate_every=0 (no validation; the last parameters are kept)")
    # --patience none (or patience = "none" in a config file) turns early stopping off.
    (tmp_path / "c.toml").write_text('patience = "none"\nepochs = 40\n')
    for extra in (["--patience", "none", "--epochs", "40"], ["--config", "c.toml"]):
        result = run_cli(capsys, tmp_path, *train[:-3], "-q", *extra, "-o", "n.aekit")
        assert result.returncode == 0 and result.stderr == "", result.stderr
        assert len(aekit.load(str(tmp_path / "n.aekit")).history) == 40


# ---------------------------------------------------------------------- output range
def test_bce_on_a_linear_output_warns_with_the_remedy(digits):
    x = digits[0][:300]
    net = aekit.Autoencoder([64, (16, "relu"), (64, "linear")], loss="bce", rng=0)
    messages = caught(OutputRangeWarning, lambda: net.itertrain(x, max_epochs=1))  # at the call, before any epoch
    assert messages == [
        "loss='bce' treats the outputs of layer 'out' as probabilities in [0, 1], but its activation 'linear' has "
        "outputs in (-inf, inf): outputs outside (0, 1) are clipped and get no gradient, so the model learns "
        "little or nothing. Use a 'sigmoid' output (output_activation='sigmoid', or (n, 'sigmoid') as the last "
        "layer) for data in [0, 1], or loss='mse' for a linear output"
    ]
    relu = aekit.Autoencoder([64, (16, "relu"), (64, "relu")], loss="bce", rng=0)
    assert caught(OutputRangeWarning, lambda: relu.train(x, max_epochs=1)) == [
        messages[0].replace("'linear' has outputs in (-inf, inf)", "'relu' has outputs in [0, inf)")
    ]
    # The remedy works: a sigmoid output with bce is not warned about, and learns.
    fixed = aekit.Autoencoder([64, (16, "relu"), (64, "sigmoid")], loss="bce", rng=0)
    assert caught(AekitWarning, lambda: fixed.train(x, max_epochs=20, learning_rate=0.01)) == []
    assert fixed.score(x) > 0.3 > net.score(x)


def test_data_outside_the_output_range_warns_with_the_range_found_and_the_remedy(digits):
    pixels = np.round(digits[0][:300] * 255)  # 0..255, as raw images come
    net = aekit.Autoencoder([64, (16, "relu"), (64, "sigmoid")], rng=0)
    messages = caught(OutputRangeWarning, lambda: net.train(pixels, max_epochs=1))
    assert messages == [
        "the training data span [0, 255], outside the range [0, 1] of the output activation 'sigmoid' of layer "
        "'out': those values can never be reconstructed. Scale the data into [0, 1] (e.g. divide 0..255 pixels "
        "by 255), or use a 'linear' output layer"
    ]
    tanh = aekit.Autoencoder([64, (16, "relu"), (64, "tanh")], rng=0)
    assert (
        "outside the range [-1, 1] of the output activation 'tanh'"
        in caught(OutputRangeWarning, lambda: tanh.train(pixels / 255.0 - 2.0, max_epochs=1))[0]
    )
    # Following either remedy silences it.
    assert caught(AekitWarning, lambda: net.train(pixels / 255.0, max_epochs=1)) == []
    linear = aekit.Autoencoder([64, (16, "relu"), (64, "linear")], rng=0)
    assert caught(AekitWarning, lambda: linear.train(pixels, max_epochs=1, patience=None)) == []


def test_streamed_data_outside_the_output_range_are_caught_in_their_first_block(tmp_path, digits):
    path = tmp_path / "pixels.npy"
    np.save(path, np.round(digits[0][:300] * 255))
    x = aekit.load_data(str(path), mmap=True)
    net = aekit.Autoencoder([64, (16, "relu"), (64, "sigmoid")], rng=0)
    (message,) = caught(OutputRangeWarning, lambda: net.train(x, max_epochs=1))
    assert message.startswith("the values of the first training batch (streamed data) span [0, 255], outside the range")


# ---------------------------------------------------------------------- growth is divergence
def test_a_loss_that_grows_by_orders_of_magnitude_is_divergence(digits):
    x = digits[0]
    net = aekit.Autoencoder([64, (16, "relu"), (64, "linear")], rng=0)
    start = params(net)
    with pytest.raises(TrainingDiverged) as error:
        net.train(x, learning_rate=1e6, max_epochs=5)
    message = str(error.value)
    # The loss stayed finite (it is quoted): only its growth tells that training ran away.
    assert message.startswith("training diverged at epoch 1: the loss grew to ")
    grown = float(message.split("grew to ")[1].split(",")[0])
    assert np.isfinite(grown) and grown > GROWTH_FACTOR
    assert "more than 1e+06 times the loss of the starting parameters" in message
    assert "parameters restored to the best finite ones (epoch 0). Try a smaller learning_rate (now 1e+06)" in message
    assert all(torch.equal(p, q) for p, q in zip(params(net), start))
    assert net.history == []


def test_on_nan_warn_treats_growth_as_it_treats_nan(digits):
    net = aekit.Autoencoder([64, (16, "relu"), (64, "linear")], rng=0)
    start = net.loss(digits[0]).item()
    messages = caught(RuntimeWarning, lambda: net.train(digits[0], learning_rate=100.0, max_epochs=30, on_nan="warn"))
    grew = [m for m in messages if "the loss grew to" in m]
    assert len(grew) >= 2 and all(m.endswith("; halving the learning rate and going on") for m in grew)
    assert "(now 50)" in grew[1]  # halved once after the first
    # The grown losses were finite: without the growth rule they would have been trained on.
    assert all(np.isfinite(float(m.split("grew to ")[1].split(",")[0])) for m in grew)
    # After the halvings it learns: every recorded epoch is finite and below the starting loss.
    assert net.history and all(np.isfinite(h["train"]["loss"]) for h in net.history)
    assert net.history[-1]["train"]["loss"] < 0.5 * start


def test_diverged_epochs_that_use_up_patience_stop_with_a_warning(digits):
    net = aekit.Autoencoder([64, (16, "relu"), (64, "linear")], rng=0)
    start = params(net)
    with pytest.warns(
        EarlyStoppingWarning, match=r"training stopped at epoch 3 of max_epochs=8: the last 3 epochs diverged"
    ):
        net.train(digits[0], learning_rate=1e6, max_epochs=8, on_nan="warn", patience=2)
    assert all(torch.equal(p, q) for p, q in zip(params(net), start))


def test_the_growth_rule():
    assert growth_reason(0.08 * GROWTH_FACTOR * 1.01, 0.08) is not None
    assert growth_reason(0.08 * GROWTH_FACTOR * 0.99, 0.08) is None
    assert growth_reason(5e-3, 0.0) is None  # a start at zero loss: judged at GROWTH_FLOOR, not at 0
    assert growth_reason(10.0, 0.0) is not None
    assert growth_reason(1e7, -3.0) is not None and growth_reason(-1000.0, -3.0) is None  # log-likelihoods
    assert growth_reason(float("nan"), 0.1) is None and growth_reason(1e30, None) is None  # NaN: its own rule


def test_the_cli_exits_non_zero_with_one_line_when_the_loss_grows(tmp_path, capsys, digits):
    np.save(tmp_path / "x.npy", digits[0])
    result = run_cli(capsys, tmp_path, "train", "x.npy", "--layers", "64,16,64", "--lr", "1e6", "-o", "m.aekit")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aekit: error: training diverged at epoch 1: the loss grew to ")
    assert "Try a smaller --learning-rate (now 1e+06)" in lines[0]
    assert not (tmp_path / "m.aekit").exists()


# ---------------------------------------------------------------------- valid_split
def _split(net, x, **options):
    options, _, regs = parse_train_arguments(net, dict(max_epochs=1, **options))
    return Trainer(net, x, None, options, regs)


def test_valid_split_of_data_sorted_by_class_validates_every_class(digits):
    x, labels = digits
    assert (np.diff(labels) >= 0).all()  # sorted: the last 10% are all nines
    tagged = np.column_stack([x, labels / 10.0]).astype(np.float32)  # the label travels with each row
    net = aekit.Autoencoder([65, 8, 65], rng=3)
    trainer = _split(net, tagged, valid_split=0.1)
    valid_labels = np.round(trainer.valid.x[:, -1].numpy() * 10).astype(int)
    train_labels = np.round(trainer.source.x[:, -1].numpy() * 10).astype(int)
    assert len(valid_labels) == round(0.1 * len(x)) and len(train_labels) == len(x) - len(valid_labels)
    assert set(valid_labels) == set(range(10))
    # Close to the class frequencies (a random draw, not a block): no class has fewer than half its share.
    counts = np.bincount(valid_labels, minlength=10)
    assert counts.min() >= 0.5 * len(valid_labels) / 10
    # The same rows for the same rng (a seeded draw), other rows for another.
    again = _split(aekit.Autoencoder([65, 8, 65], rng=3), tagged, valid_split=0.1)
    other = _split(aekit.Autoencoder([65, 8, 65], rng=4), tagged, valid_split=0.1)
    assert torch.equal(again.valid.x, trainer.valid.x) and not torch.equal(other.valid.x, trainer.valid.x)


def test_valid_split_of_streamed_data_says_that_it_takes_the_last_rows(tmp_path, digits):
    path = tmp_path / "x.npy"
    np.save(path, digits[0])
    x = aekit.load_data(str(path), mmap=True)
    net = aekit.Autoencoder([64, 8, 64], rng=0)
    (message,) = caught(AekitWarning, lambda: _split(net, x, valid_split=0.1))
    assert message == (
        "valid_split=0.1 on streamed (memory-mapped) x holds out its last 180 rows (1617:1797), not a random "
        "sample as for in-memory data; if the rows are sorted (by class, by time), shuffle the file once, or "
        "pass valid= explicitly"
    )
    assert caught(AekitWarning, lambda: _split(net, np.asarray(x), valid_split=0.1)) == []  # in memory: random
