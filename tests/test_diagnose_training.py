"""aekit.diagnose on how a model was trained: too few optimizer steps, a loss still falling, and
one consistent piece of advice on steps and learning rate per diagnosis; diagnose and report
look at the same rows."""

from __future__ import annotations

import copy
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import aekit
from aekit import cli
from aekit.inspect.measures import sample_rows

torch.set_num_threads(1)  # tiny models: threads only contend on a shared CPU

LARGER = re.compile(r"(larger|higher|raise|increase)[^.;:]{0,20}learning_rate")
SMALLER = re.compile(r"(smaller|lower|reduce|decrease)[^.;:]{0,20}learning_rate")


def directions(findings) -> set[str]:
    """The ways the remedies of one diagnosis ask to change the learning rate."""
    found = set()
    for f in findings:
        if LARGER.search(f.remedy):
            found.add("larger")
        if SMALLER.search(f.remedy):
            found.add("smaller")
    return found


def by_code(findings):
    return {f.code: f for f in findings}


def author_blobs() -> np.ndarray:
    """The data of the theanets author's answer ("the features respond to the mean of the data").

    His script: ``np.array([skimage.filters.gaussian_filter(i, sigma).astype('f') for i in
    (np.eye(x*x)*2).reshape(x, x, x*x).transpose()]).reshape(x*x, x*x)[10::27]`` with x=28 and
    sigma=2; skimage's gaussian_filter of the time was scipy.ndimage.gaussian_filter with
    mode='nearest'.
    """
    from scipy.ndimage import gaussian_filter

    x, sigma = 28, 2.0
    images = (np.eye(x * x) * 2).reshape(x, x, x * x).transpose()
    blurred = np.array([gaussian_filter(i, sigma, mode="nearest").astype("f") for i in images])
    return blurred.reshape(x * x, x * x)[10::27]


def digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    order = np.random.default_rng(0).permutation(len(data.target))
    return (data.data[order] / 16.0).astype(np.float32)


# ---------------------------------------------------------------------- the history's steps
def test_history_records_the_optimizer_steps_of_each_epoch():
    x = digits()[:100]
    net = aekit.Autoencoder([64, (8, "sigmoid"), (64, "sigmoid")], rng=0)
    net.train(x, batch_size=32, max_epochs=3, patience=10)
    assert [e["steps"] for e in net.history] == [4, 4, 4]  # ceil(100 / 32)
    net.train(x, batch_size=32, max_epochs=2, valid_split=0.2)
    assert [e["steps"] for e in net.history[3:]] == [3, 3]  # 80 training rows
    net.train(x, algo="lbfgs", max_epochs=2)
    assert [e["steps"] for e in net.history[5:]] == [1, 1]  # one L-BFGS iteration per epoch


# ---------------------------------------------------------------------- the seeds' setups
@pytest.mark.parametrize("source", ["author's script", "aekit.datasets.blobs"])
@pytest.mark.parametrize("weight_l2", [1e-4, 0.0])
def test_blob_data_names_the_few_steps_and_the_falling_loss(source, weight_l2):
    data = author_blobs() if source == "author's script" else aekit.datasets.blobs()
    assert data.shape == (29, 784)
    assert 0.07 < data.max() < (0.25 if source == "author's script" else 0.076)
    net = aekit.Autoencoder([784, 9, 784])
    net.train(data, weight_l2=weight_l2)  # the author's call (theanets' default batch holds all 29 rows)
    epochs = len(net.history)
    assert {e["steps"] for e in net.history} == {1}  # 29 rows in one batch of 64
    findings = aekit.diagnose(net, data)
    found = by_code(findings)
    assert len(directions(findings)) <= 1, [f.remedy for f in findings]
    steps = found["too-few-steps"]
    assert steps.severity == "warning" and steps.value == epochs
    assert f"{epochs} optimizer steps ({epochs} epochs of 1 step)" in steps.message and "1000" in steps.message
    assert f"max_epochs={max(1000, 2 * epochs)}" in steps.remedy and "batch_size" in steps.remedy
    for f in findings:
        if f.code in ("dead-units", "trivial-loss", "mean-features", "collapsed-code"):
            assert "(see too-few-steps)" in f.remedy, f
    if epochs < 100:  # stopped early on a plateau: the few steps and the poor fit are the finding
        assert "its fit is poor" in steps.message and "still-improving" not in found
        return
    falling = found["still-improving"]
    rate = re.search(
        r"fell ([0-9.]+)% per epoch \(least-squares slope (\S+) per epoch on a loss of (\S+)\)", falling.message
    )
    assert rate, falling.message
    losses = np.array([e["train"]["loss"] for e in net.history[-10:]])
    slope = np.polyfit(np.arange(10), losses, 1)[0]
    assert float(rate.group(2)) == pytest.approx(slope, rel=1e-2)
    assert falling.value == pytest.approx(-slope / np.abs(losses).mean(), rel=1e-9)
    assert float(rate.group(1)) == pytest.approx(100 * falling.value, abs=0.006)
    assert "its loss was still falling" in steps.message


def conv_setup():
    """A small conv autoencoder trained 60 steps (6 epochs of 10), its loss falling in a straight line."""
    x = digits()[:640].reshape(-1, 1, 8, 8)
    net = aekit.Autoencoder(
        [
            (1, 8, 8),
            dict(form="conv2", channels=8, kernel=3, stride=2, activation="relu"),
            dict(form="deconv2", channels=1, kernel=3, stride=2, activation="sigmoid", shape=(1, 8, 8)),
        ],
        rng=0,
    )
    net.train(x, batch_size=64, max_epochs=6)
    return net, x


def test_conv_autoencoder_not_learning_is_told_to_train_longer():
    net, x = conv_setup()
    losses = [e["train"]["loss"] for e in net.history]
    assert np.all(np.diff(losses) < 0) and net.score(x) < 0  # still falling, and no fit yet
    findings = aekit.diagnose(net, x)
    found = by_code(findings)
    assert found["too-few-steps"].value == 60
    assert "60 optimizer steps (6 epochs of 10 steps)" in found["too-few-steps"].message
    assert "in 5 of 5 epochs" in found["still-improving"].message
    # The loss fell in every epoch and no unit is dead: more steps, and a larger learning rate is safe.
    assert "max_epochs=100" in found["too-few-steps"].remedy
    assert directions(findings) == {"larger"}
    assert "trivial-loss" in found and "(see too-few-steps)" in found["trivial-loss"].remedy
    # Following the remedy fixes it.
    net.train(x, batch_size=64, max_epochs=100, patience=100)
    after = by_code(aekit.diagnose(net, x))
    assert net.score(x) > 0.8 and not {"too-few-steps", "trivial-loss"} & set(after)


# ---------------------------------------------------------------------- one advice per diagnosis
def with_history(net, losses, steps=100, valid=None):
    fake = copy.deepcopy(net)
    fake.history = [
        {
            "epoch": i + 1,
            "train": {"loss": loss, "err": loss},
            "valid": {} if valid is None else {"loss": valid[i]},
            "steps": steps,
        }
        for i, loss in enumerate(losses)
    ]
    return fake


@pytest.fixture(scope="module")
def settled():
    x = digits()
    net = aekit.Autoencoder([64, (24, "sigmoid"), (64, "sigmoid")], rng=1)
    net.train(x, algo="adam", learning_rate=1e-2, batch_size=128, max_epochs=80)
    return net, x


def test_every_situation_gets_one_direction_for_the_learning_rate(settled):
    net, x = settled
    flat = [0.02] * 20
    rising = [0.02 * 1.05**i for i in range(20)]
    falling = [0.02 * 0.97**i for i in range(20)]
    dead = copy.deepcopy(net)
    with torch.no_grad():
        dead.find("hid1", "b")[:6] = -100.0
    untrained = aekit.Autoencoder([64, (10, "relu"), (64, "linear")], rng=0)
    with torch.no_grad():
        untrained.find("hid1", "b")[:3] = -100.0
    cases = {
        # (model, expected directions, a code expected)
        "settled": (with_history(net, flat), set(), "fit"),
        "rising loss": (with_history(net, rising), {"smaller"}, "fit"),
        "still falling, steady": (with_history(net, falling), {"larger"}, "still-improving"),
        "diverged history": (with_history(net, [*flat[:-1], math.inf]), {"smaller"}, "diverged"),
        "dead units, settled": (with_history(dead, flat), {"smaller"}, "dead-units"),
        "dead units, still falling": (with_history(dead, falling), set(), "still-improving"),
        "dead units, few steps": (with_history(dead, falling, steps=1), set(), "too-few-steps"),
        "untrained, dead and trivial": (untrained, {"smaller"}, "trivial-loss"),
    }
    for name, (model, expected, code) in cases.items():
        findings = aekit.diagnose(model, x)
        assert code in by_code(findings), (name, [f.code for f in findings])
        assert directions(findings) == expected, (name, [(f.code, f.remedy) for f in findings])
    # Dead units while the model is undertrained: more steps, and the learning rate is kept (a larger
    # one would switch more units off), in the finding that holds the advice in full.
    found = by_code(aekit.diagnose(with_history(dead, falling), x))
    assert "Keep the learning_rate" in found["still-improving"].remedy
    assert "the same learning_rate (see still-improving)" in found["dead-units"].remedy


def test_still_improving_needs_a_loss_that_falls_and_a_validation_that_agrees(settled):
    net, x = settled
    falling = [0.02 * 0.97**i for i in range(20)]
    assert "still-improving" in by_code(aekit.diagnose(with_history(net, falling), x))
    # Falling slowly (0.1% per epoch, under the 0.5% bar), or by noise: nothing to report.
    slow = [0.02 * 0.999**i for i in range(20)]
    noisy = [0.02 * (1 + 0.05 * (-1) ** i) for i in range(20)]
    for losses in (slow, noisy):
        assert "still-improving" not in by_code(aekit.diagnose(with_history(net, losses), x))
    assert "still-improving" in by_code(aekit.diagnose(with_history(net, slow), x, improving_rate=5e-4))
    # Training loss falling while the validation loss rises: more epochs would overfit.
    valid = [0.03 * 1.01**i for i in range(20)]
    assert "still-improving" not in by_code(aekit.diagnose(with_history(net, falling, valid=valid), x))
    # A history written before aekit recorded steps: the loss is measured, the steps are not.
    old = with_history(net, falling, steps=1)
    for entry in old.history:
        del entry["steps"]
    assert {"still-improving"} <= set(by_code(aekit.diagnose(old, x))) and "too-few-steps" not in by_code(
        aekit.diagnose(old, x)
    )
    with pytest.raises(aekit.ConfigurationError, match="improving_window must be an integer >= 3"):
        aekit.diagnose(net, x, improving_window=2)


# ---------------------------------------------------------------------- diagnose and report agree
def rare_units_setup():
    """3 relu units, each firing on one row only; two of those rows are among diagnose's 5000 of 6000
    evenly spaced rows but not among 2000 (the sample the report used to take)."""
    n = 6000
    x = np.random.default_rng(0).random((n, 4)).astype(np.float32)
    five, two = set(sample_rows(n, 5000).tolist()), set(sample_rows(n, 2000).tolist())
    rare = sorted(five - two)[:2]
    x[rare[0], 0] = x[rare[1], 1] = 20.0  # units 0 and 1 fire there; unit 2 never does
    net = aekit.Autoencoder([4, (3, "relu"), (4, "linear")], rng=0)
    with torch.no_grad():
        w = net.find("hid1", "w")
        w.zero_()
        w[0, 0] = w[1, 1] = w[2, 2] = 1.0
        net.find("hid1", "b").fill_(-10.0)
    return net, x


def test_diagnose_and_report_count_the_same_dead_units(tmp_path, capsys):
    net, x = rare_units_setup()
    dead = by_code(aekit.diagnose(net, x))["dead-units"]
    assert dead.message.startswith("1 of 3 units") and "(over 5000 evenly spaced rows of the 6000)" in dead.message
    page = Path(aekit.report.write_report(net, x, tmp_path / "report")).read_text(encoding="utf-8")
    assert "1 of 3 units of layer" in page and "5000 evenly spaced rows of the 6000" in page
    # The command line: the same count in both.
    net.save(str(tmp_path / "model.aekit"))
    np.save(tmp_path / "x.npy", x)
    before = Path.cwd()
    os.chdir(tmp_path)
    try:
        assert cli.main(["diagnose", "model.aekit", "x.npy"]) == 0
        printed = capsys.readouterr().out
        assert cli.main(["report", "model.aekit", "x.npy", "--output", "cli-report"]) == 0
    finally:
        os.chdir(before)
    assert "dead-units: 1 of 3 units" in printed
    assert "1 of 3 units of layer" in (tmp_path / "cli-report" / "index.html").read_text(encoding="utf-8")


def test_following_the_blob_remedy_gives_individual_blob_features():
    # The author's call, then exactly what too-few-steps says to do: the model learns one blob per
    # feature instead of a blur, and diagnose has nothing left to warn about.
    data = author_blobs()
    net = aekit.Autoencoder([784, 9, 784])
    net.train(data, weight_l2=1e-4)
    remedy = by_code(aekit.diagnose(net, data))["too-few-steps"].remedy
    epochs = int(re.search(r"max_epochs=(\d+)", remedy).group(1))
    better = aekit.Autoencoder([784, 9, 784])
    better.train(data, weight_l2=1e-4, max_epochs=epochs, patience=None)

    def blobs_found(model):
        w = model.find("hid1", "w").detach().numpy()
        features = w / np.linalg.norm(w, axis=0)
        blobs = data / np.linalg.norm(data, axis=1, keepdims=True)
        cosines = blobs @ features  # (29 blobs, 9 features)
        return len(set(cosines.argmax(axis=0))), cosines.max(axis=0).mean()

    distinct, match = blobs_found(better)
    assert better.score(data) > 0.9 > net.score(data)
    assert distinct >= 8  # (nearly) every feature answers a blob of its own
    assert match > blobs_found(net)[1] + 0.1  # and matches it more closely than before the remedy
    assert not [f for f in aekit.diagnose(better, data) if f.severity != "info"]
