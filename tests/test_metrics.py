"""Stateful metrics and aekit.evaluate: whole-data figures against NumPy and scikit-learn references,
independent of how the data are cut into batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import explained_variance_score, r2_score

import aekit
from aekit.objective.metrics import METRICS, MetricBatch, build_metrics, compute_all, update_all


def model_and_data():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(300, 5)) @ rng.normal(size=(5, 12)) + 3.0).astype(np.float32)
    net = aekit.Autoencoder([12, (8, "relu"), (12, "linear")], rng=1)
    net.train(x, max_epochs=3, batch_size=32, validate_every=0)
    return net, x


def by_hand(net, x):
    outputs = net.feed_forward(x)
    recon, codes = outputs["out:out"].astype(np.float64), outputs["hid1:out"]
    err = ((x - recon) ** 2).sum()
    sst = ((x - x.mean(axis=0)) ** 2).sum()
    return {
        "mse": err / x.size,
        "fvu": err / sst,
        "r2": r2_score(x, recon, multioutput="variance_weighted"),
        "l0": (codes != 0).sum(axis=1).mean(),
        "dead_fraction": ((codes != 0).sum(axis=0) == 0).mean(),
        "explained_variance": explained_variance_score(x, recon, multioutput="variance_weighted"),
        "cosine": np.mean([a @ b / np.linalg.norm(a) / np.linalg.norm(b) for a, b in zip(x.astype(np.float64), recon)]),
        "l2_ratio": np.mean(np.linalg.norm(recon, axis=1) / np.linalg.norm(x.astype(np.float64), axis=1)),
    }


def test_density_is_each_units_firing_fraction():
    from aekit.inspect.densities import density_histogram, firing_densities

    net, x = model_and_data()
    codes = net.feed_forward(x)["hid1:out"]
    want = (codes != 0).mean(axis=0)
    got = firing_densities(net, x)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert aekit.evaluate(net, x, metrics=["density"])["density"] == pytest.approx(want.mean(), rel=1e-12)
    hist = density_histogram(np.r_[got, 0.0, 0.0], bins=5)
    assert hist.dead == (want == 0).sum() + 2 and hist.counts.sum() + hist.dead == want.size + 2


def test_evaluate_matches_independent_references():
    net, x = model_and_data()
    with torch.no_grad():
        net.graph.layers["hid1"].b[:3] = -1e3  # three units that never fire: dead_fraction 3/8
    got = aekit.evaluate(net, x)
    want = by_hand(net, x)
    assert sorted(got) == sorted(want)
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-6, abs=1e-9), key
    assert got["dead_fraction"] >= 3 / 8  # the three silenced units, and any other the data never fire
    assert got["r2"] == pytest.approx(net.score(x), rel=1e-9)


@pytest.mark.parametrize("batch", [1, 7, 300])
def test_figures_do_not_depend_on_the_batches(batch):
    net, x = model_and_data()
    # Every metric but those of quantizer layers (tests/test_quantize.py) and gaussian layers (test_vae.py),
    # which this dense model has none of, and the per-unit density (tested below).
    skip = ("usage", "perplexity", "kl", "active_units", "density")
    names = [name for name in METRICS if name not in skip]
    metrics = build_metrics(names, list(net.graph.layers), net.code_layer)
    graph = net.graph.eval()
    with torch.no_grad():
        for start in range(0, len(x), batch):
            xb = torch.from_numpy(x[start : start + batch])
            update_all(metrics, MetricBatch(dict(graph(xb)), xb, None, "out"))
    got = compute_all(metrics)
    want = by_hand(net, x)
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-6, abs=1e-9), key


def test_weighted_figures_weigh_each_value():
    net, x = model_and_data()
    w = np.random.default_rng(2).random(x.shape)
    recon = net.predict(x).astype(np.float64)
    got = aekit.evaluate(net, x, w=w, metrics=["mse", "r2"])
    assert got["mse"] == pytest.approx((w * (x - recon) ** 2).sum() / w.sum(), rel=1e-6)
    assert got["r2"] == pytest.approx(net.score(x, w), rel=1e-6)


def test_metrics_are_training_monitors_over_the_validation_data():
    net, x = model_and_data()
    net.train(x[:240], x[240:], max_epochs=1, metrics=["fvu", "l0:hid1"])
    valid = net.history[-1]["valid"]
    figures = aekit.evaluate(net, x[240:], metrics=["fvu", "l0:hid1"])
    assert valid["fvu"] == pytest.approx(figures["fvu"], rel=1e-6)
    assert valid["l0:hid1"] == pytest.approx(figures["l0:hid1"], rel=1e-9)


@pytest.mark.parametrize(
    "metrics, message",
    [
        (["fvv"], "unknown metric 'fvv'; did you mean 'fvu'"),
        (["l0:hdi1"], "did you mean 'hid1'"),
        (["fvu:hid1"], "takes no layer"),
        ("fvu", "must be a list"),
    ],
)
def test_bad_metric_names_are_named(metrics, message):
    net, x = model_and_data()
    with pytest.raises(aekit.ConfigurationError, match=message):
        aekit.evaluate(net, x, metrics=metrics)
