"""The UFLDL example: its options are UFLDL's objective over 32, and L-BFGS keeps improving it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

import aekit

pytest.importorskip("skimage")
torch.set_num_threads(1)  # tiny models: threads only contend on a shared CPU

ROOT = Path(__file__).resolve().parents[1]


def _load(relative: str, name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def small_run():
    example = _load("examples/ufldl_sparse.py", "ufldl_sparse")
    net, patches, _ = example.train(n=2000, iterations=80, seed=0)
    return example, net, patches


def test_aekit_loss_is_ufldl_objective_over_32(small_run):
    example, net, patches = small_run
    total = net.loss(
        patches,
        **{
            k: v for k, v in example.ufldl_options().items() if k in ("weight_l2", "sparsity_target", "sparsity_weight")
        },
    )
    assert float(total.detach()) * 32 == pytest.approx(example.ufldl_objective(net, patches), rel=1e-4)


def test_lbfgs_keeps_improving_past_the_mean_solution(small_run):
    _, net, patches = small_run
    losses = [h["train"]["loss"] for h in net.history]
    assert len(losses) == 80
    # The trivial answer (outputs = data mean, units off) costs about the data variance per value;
    # L-BFGS must go well below it (it stalled there when its line search had no evaluations).
    trivial = float(patches.var(axis=0).mean())
    assert losses[-1] < 0.9 * trivial
    assert losses[-1] < losses[40] < losses[10]
    assert net.score(patches) > 0.15
    assert not [f for f in aekit.diagnose(net, patches) if f.severity == "error"]


def test_features_are_more_oriented_than_random_filters(small_run):
    _, net, _ = small_run
    bench = _load("benchmarks/bench_ufldl.py", "bench_ufldl")
    learned = aekit.visualize.feature_images(net, "hid1")
    rand = np.random.default_rng(0).normal(size=(25, 8, 8))
    conc = [bench.orientation_concentration(f)[0] for f in learned]
    base = [bench.orientation_concentration(f)[0] for f in rand]
    assert np.mean(conc) > np.mean(base) + 0.1


def test_gabor_fit_recovers_a_gabor_and_rejects_noise():
    bench = _load("benchmarks/bench_ufldl.py", "bench_ufldl")
    yy, xx = np.mgrid[0:8, 0:8].astype(float)
    gabor = bench._gabor(np.array([1.0, 3.5, 4.0, 0.6, 1.5, 2.5, 0.18, 0.3, 0.0]), yy, xx)
    assert bench.gabor_r2(gabor) > 0.99
    conc, angle = bench.orientation_concentration(gabor)
    assert conc > 0.5 and abs(angle - 0.6) < 0.2
    noise = np.random.default_rng(1).normal(size=(8, 8))
    assert bench.gabor_r2(noise) < 0.6
