"""aekit.diagnose: each fault, built on purpose, is found; a well-trained model has no errors."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from aekit.diagnose import Finding
from recording import RecordingArray

import aekit

torch.set_num_threads(1)  # tiny models: threads only contend on a shared CPU


@pytest.fixture(scope="module")
def data():
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    return (digits.data[order] / 16.0).astype(np.float32), digits.target[order]


@pytest.fixture(scope="module")
def good(data):
    x, _ = data
    net = aekit.Autoencoder([64, (24, "sigmoid"), (64, "sigmoid")], rng=1)
    # 80 epochs of 15 steps: past too-few-steps' 1000 steps, with R^2 about 0.9.
    net.train(x, algo="adam", learning_rate=1e-2, batch_size=128, max_epochs=80)
    return net


def codes(findings):
    return {f.code for f in findings}


def errors(findings):
    return {f.code for f in findings if f.severity == "error"}


def broken(net, layer, param, fn):
    bad = copy.deepcopy(net)
    with torch.no_grad():
        fn(bad.find(layer, param))
    return bad


def test_well_trained_model_has_no_errors_or_warnings(good, data):
    x, y = data
    findings = aekit.diagnose(good, x, y)
    assert [f for f in findings if f.severity != "info"] == []
    fit = [f for f in findings if f.code == "fit"]
    assert len(fit) == 1 and fit[0].value == pytest.approx(good.score(x))
    assert fit[0].value > 0.6


def test_findings_are_frozen_and_carry_remedies(good, data):
    x, _ = data
    bad = broken(good, "hid1", "w", lambda w: w.zero_())
    findings = aekit.diagnose(bad, x)
    assert findings and all(isinstance(f, Finding) for f in findings)
    with pytest.raises(dataclasses.FrozenInstanceError):
        findings[0].code = "x"
    for f in findings:
        assert f.severity in ("error", "warning", "info") and f.message and f.remedy
    severities = [("error", "warning", "info").index(f.severity) for f in findings]
    assert severities == sorted(severities)
    with pytest.raises(aekit.ConfigurationError, match="severity"):
        Finding("x", "fatal", "m", "r")


def test_zeroed_encoder_collapses_the_code(good, data):
    x, _ = data
    findings = aekit.diagnose(broken(good, "hid1", "w", lambda w: w.zero_()), x)
    assert {"collapsed-code", "dead-units", "trivial-loss"} <= errors(findings)
    collapsed = next(f for f in findings if f.code == "collapsed-code")
    assert collapsed.value < 1e-6 and collapsed.layer == "hid1"
    assert "hidden_l1" in collapsed.remedy


def test_features_set_to_the_data_mean(good, data):
    x, _ = data
    mean = x.mean(axis=0)

    def to_mean(w):  # every encoder filter is the (scaled) data mean
        w.copy_(torch.tensor(np.tile(mean[:, None], (1, w.shape[1])) / np.linalg.norm(mean)))

    findings = aekit.diagnose(broken(good, "hid1", "w", to_mean), x)
    assert "mean-features" in errors(findings)
    f = next(f for f in findings if f.code == "mean-features")
    assert "hidden units" in f.remedy and "hidden_l1" in f.remedy


def test_reconstructions_equal_to_the_mean(data):
    x, _ = data
    net = aekit.Autoencoder([64, (8, "relu"), (64, "linear")], rng=0)
    with torch.no_grad():
        net.find("out", "w").zero_()
        net.find("out", "b").copy_(torch.tensor(x.mean(axis=0)))
    findings = aekit.diagnose(net, x)
    assert {"mean-features", "trivial-loss"} <= errors(findings)
    mean_finding = next(f for f in findings if f.code == "mean-features")
    assert mean_finding.value == pytest.approx(0.0, abs=1e-9)
    trivial = next(f for f in findings if f.code == "trivial-loss")
    assert trivial.value == pytest.approx(0.0, abs=1e-6)  # the mean has R^2 = 0 by definition


def test_dead_relu_units(good, data):
    x, _ = data
    net = aekit.Autoencoder([64, (10, "relu"), (64, "linear")], rng=0)
    with torch.no_grad():
        net.find("hid1", "b")[:3] = -100.0  # three units never switch on
    findings = aekit.diagnose(net, x)
    dead = next(f for f in findings if f.code == "dead-units")
    assert dead.severity == "warning" and dead.value == pytest.approx(0.3)
    assert "units 0, 1, 2" in dead.message and "learning_rate" in dead.remedy
    with torch.no_grad():
        net.find("hid1", "b")[:] = -100.0
    assert "dead-units" in errors(aekit.diagnose(net, x))


def test_saturated_sigmoids(good, data):
    x, _ = data
    findings = aekit.diagnose(broken(good, "hid1", "w", lambda w: w.mul_(50.0)), x)
    sat = next(f for f in findings if f.code == "saturated-units")
    assert sat.severity == "error" and sat.value >= 0.5 and sat.layer == "hid1"


def test_sparse_units_that_are_mostly_off_are_not_saturated(data):
    x, _ = data
    net = aekit.Autoencoder([64, (16, "sigmoid"), (64, "linear")], rng=0)
    with torch.no_grad():
        net.find("hid1", "b").fill_(-6.0)  # mostly near 0, but not stuck at the top
    assert "saturated-units" not in codes(aekit.diagnose(net, x))


def test_tanh_saturation(data):
    x, _ = data
    net = aekit.Autoencoder([64, (16, "tanh"), (64, "linear")], rng=0)
    with torch.no_grad():
        net.find("hid1", "w").mul_(100.0)
    assert "saturated-units" in codes(aekit.diagnose(net, x))


def test_data_outside_the_output_range(good, data):
    x, _ = data
    findings = aekit.diagnose(good, x * 255.0)
    rng_finding = next(f for f in findings if f.code == "output-range")
    assert rng_finding.severity == "error" and rng_finding.layer == "out"
    assert "[0, 1]" in rng_finding.message and "255" in rng_finding.remedy
    assert "output-range" not in codes(aekit.diagnose(good, x))
    linear = aekit.Autoencoder([64, (8, "relu"), (64, "linear")])
    assert "output-range" not in codes(aekit.diagnose(linear, x * 255.0))


def test_nan_weights_and_history(good, data):
    x, _ = data
    bad = broken(good, "hid1", "w", lambda w: w.__setitem__((0, 0), float("nan")))
    findings = aekit.diagnose(bad, x)
    assert codes(findings) == {"diverged"}
    assert "hid1.w" in findings[0].message and "learning_rate" in findings[0].remedy
    history = copy.deepcopy(good)
    history.history = history.history + [{"epoch": 99, "train": {"loss": float("inf")}, "valid": {}}]
    assert "diverged" in errors(aekit.diagnose(history, x))


def test_sorted_data(good, data):
    x, y = data
    order = np.argsort(y, kind="stable")
    by_content = aekit.diagnose(good, x[order])
    unshuffled = next(f for f in by_content if f.code == "unshuffled-data")
    assert unshuffled.severity == "warning" and unshuffled.value > 0.5
    by_label = aekit.diagnose(good, x[order], y[order])
    assert "labels" in next(f for f in by_label if f.code == "unshuffled-data").message
    # a shuffled order is not reported, with or without labels
    assert "unshuffled-data" not in codes(aekit.diagnose(good, x, y))


def test_untrained_model_is_no_better_than_the_mean(data):
    x, _ = data
    fresh = aekit.Autoencoder([64, (24, "sigmoid"), (64, "sigmoid")], rng=1)
    assert "trivial-loss" in errors(aekit.diagnose(fresh, x))


def test_thresholds_are_parameters(good, data):
    x, _ = data
    # with an absurd R^2 bar even the good model is "trivial"
    assert "trivial-loss" in codes(aekit.diagnose(good, x, trivial_r2=0.999))
    with pytest.raises(aekit.DataError, match="labels"):
        aekit.diagnose(good, x, np.zeros(3))
    # Each option is checked: one-line errors naming it, before any work.
    for option, value, message in (
        ("max_samples", "", "max_samples must be an integer >= 2, got ''"),
        ("max_samples", 1, "max_samples must be an integer >= 2, got 1"),
        ("collapse_ratio", -0.1, r"collapse_ratio must be a number in \[0, inf\], got -0.1"),
        ("saturation_fraction", 1.5, r"saturation_fraction must be a number in \[0, 1\], got 1.5"),
        ("mean_cosine", float("nan"), r"mean_cosine must be a number in \[-1, 1\], got nan"),
        ("label_runs", None, r"label_runs must be a number in \[0, 1\], got None"),
    ):
        with pytest.raises(aekit.ConfigurationError, match=message):
            aekit.diagnose(good, x, **{option: value})
    with pytest.raises(aekit.DataError, match="x must be a rectangular array"):
        aekit.diagnose(good, [[0.0, 1.0], [2.0]])


def test_conv_model_is_diagnosed(data):
    pytest.importorskip("aekit.conv")
    x, _ = data
    net = aekit.Autoencoder(
        [(1, 8, 8), dict(form="conv2", channels=4, kernel=3, stride=2, activation="relu"), "flatten", (64, "sigmoid")],
        rng=0,
    )
    with torch.no_grad():
        net.find("hid1", "b")[:] = -100.0
    findings = aekit.diagnose(net, x[:200])
    assert "dead-units" in errors(findings)


def test_streamable_data_is_sampled_not_read_whole(good, data, tmp_path):
    x, y = data
    store = RecordingArray(x)
    findings = aekit.diagnose(good, store, y, max_samples=500)
    assert len(store.rows) == 500  # the sampled rows only, each once
    assert findings == aekit.diagnose(good, x, y, max_samples=500)
    np.save(tmp_path / "x.npy", x)
    mapped = aekit.load_data(tmp_path / "x.npy", mmap=True)
    assert aekit.diagnose(good, mapped, y, max_samples=500) == findings
    with pytest.raises(aekit.DataError, match="y has 3 labels, but x has 1797 examples"):
        aekit.diagnose(good, store, y[:3])


def test_pass_through_layers_are_not_reported_as_dead(data):
    pytest.importorskip("aekit.conv")
    x, _ = data
    images = x[:300].reshape(-1, 1, 8, 8).copy()
    images[:, :, :3, :] = 0.0  # an empty top border, as in MNIST: conv positions there are constant
    net = aekit.Autoencoder(
        [
            (1, 8, 8),
            dict(form="conv2", channels=4, kernel=3, stride=2, activation="sigmoid"),
            "flatten",
            (64, "sigmoid"),
        ],
        rng=0,
    )
    assert "dead-units" not in codes(aekit.diagnose(net, images))  # the flatten's constant positions
    # A dead conv channel is reported once, on the conv, not again on the pool and upsample after it.
    net = aekit.Autoencoder(
        [
            (1, 8, 8),
            dict(form="conv2", channels=4, kernel=3, activation="relu"),
            dict(form="pool", kernel=2),
            dict(form="upsample", scale=2),
            dict(form="conv2", channels=1, kernel=3, activation="sigmoid"),
        ],
        rng=0,
    )
    with torch.no_grad():
        net.find("hid1", "b")[0] = -100.0
    dead = [f for f in aekit.diagnose(net, images) if f.code == "dead-units"]
    assert [(f.layer, f.value) for f in dead] == [("hid1", 0.25)]


def test_data_without_variance_is_a_data_error_not_a_model_fault(good, data):
    x, _ = data
    # Constant data made every unit "dead", the code "collapsed" and the fit "trivial": all errors
    # blaming the model for data with nothing to learn.
    with pytest.raises(aekit.DataError, match="all 1797 rows of x are identical"):
        aekit.diagnose(good, np.full_like(x, 0.5))
    with pytest.raises(aekit.DataError, match="all 2 rows of x are identical"):
        aekit.diagnose(good, np.stack([x[0], x[0]]))
    with pytest.raises(aekit.DataError, match="all 100 rows sampled from the 1797 of x are identical"):
        aekit.diagnose(good, np.zeros_like(x), max_samples=100)
    with pytest.raises(aekit.DataError, match="NaN"):  # NaN is not mistaken for constant data
        aekit.diagnose(good, np.where(np.arange(64) == 3, np.nan, 0.5) * np.ones_like(x))
    # Constant columns (the digits' corners are always 0) are fine, and so are two different rows.
    assert not {"collapsed-code", "dead-units"} & codes(aekit.diagnose(good, x[:2]))


def test_trivial_loss_on_a_handful_of_rows_is_only_a_warning(good, data):
    x, _ = data
    # The mean of two rows is a baseline a good model cannot beat when the rows barely differ.
    pair = np.stack([x[0], np.clip(x[0] + 0.05, 0, 1)])
    assert good.score(pair) < 0
    tiny = next(f for f in aekit.diagnose(good, pair) if f.code == "trivial-loss")
    assert tiny.severity == "warning" and "only 2 rows" in tiny.message and "worse than" in tiny.message
    assert "fit" in codes(aekit.diagnose(good, x[:10]))
    fresh = aekit.Autoencoder([64, (24, "sigmoid"), (64, "sigmoid")], rng=1)
    trivial = next(f for f in aekit.diagnose(fresh, x) if f.code == "trivial-loss")
    assert trivial.severity == "error" and "worse than predicting the mean" in trivial.message
    assert "rows" not in trivial.message
