"""Regularizer strengths mean what they meant in theanets 0.7; aekit 0.1's checkpoints keep their sums.

theanets 0.7 (``theanets/regularizers.py``) adds ``weight * loss`` with, for the matched tensors,
``WeightL1``: ``sum(abs(v).mean() for v in variables) / len(variables)``, ``WeightL2``: the same with
``(v * v).mean()``, ``HiddenL1``: ``sum(abs(h).mean() for h in hiddens) / len(hiddens)``.  The
references below are written out here from those lines, not taken from aekit.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import aekit
from aekit import CheckpointError, ConfigurationError
from aekit.fused import DenseChainStep
from aekit.io.model_file import read_model_file, write_model_file
from aekit.objective import penalties as R
from aekit.train.checkpoint import checkpoint_info

LEGACY = Path(__file__).parent / "data" / "legacy"


def _codes_spread(net, x):
    return net.encode(x).std(axis=0)


@pytest.mark.parametrize("data", ["digits", "mnist"])
def test_theanets_weight_l1_no_longer_kills_every_unit(data, request):
    # The case: a theanets script's weight_l1=0.5 on 784-9-784 (and the 64-9-64 analogue). The
    # same strength summed over all weights, as aekit 0.1 read it, is 2 * 784 * 9 = 14,112 times stronger
    # (one pattern per matrix, mu * n: the conversion of a summed form) and switches every unit off.
    x = request.getfixturevalue(data)[0][:2000]
    d = x.shape[1]
    results = {}
    for name, kwargs in {
        "none": {},
        "theanets": {"weight_l1": 0.5},
        "summed": {"weight_l1": {"hid1.w": 0.5 * d * 9, "out.w": 0.5 * 9 * d}},
    }.items():
        net = aekit.Autoencoder([d, 9, d], rng=0)
        net.train(x, batch_size=64, max_epochs=20, validate_every=0, patience=100, **kwargs)
        results[name] = (_codes_spread(net, x), net.score(x))
    spread, r2 = results["theanets"]
    assert (spread > 0.01).sum() >= 5, spread
    assert r2 > 0.6 * results["none"][1] and r2 > 0.2
    spread, r2 = results["summed"]
    assert (spread < 0.01).all(), spread  # every unit constant over the data: dead
    assert r2 < 0.05


def _net():
    net = aekit.Autoencoder([12, (6, "relu"), (4, "tanh"), (6, "sigmoid"), (12, "linear")], rng=3)
    with torch.no_grad():
        for p in net.params:
            if p.dim() == 1:
                p.fill_(0.1)
    return net


def _x(n=23):
    return torch.from_numpy(np.random.default_rng(1).random((n, 12), dtype=np.float32))


def test_penalty_values_and_gradients_are_theanets_on_both_paths():
    # Hand computation of theanets 0.7's formulas on a small untied model (4 matrices of 72, 24, 24 and
    # 72 weights, 3 hidden layers), against the objective (autograd's path) and the hand-derived step.
    net, x = _net(), _x()
    kwargs = dict(weight_l1=0.5, weight_l2=0.3, hidden_l1=0.2, hidden_l2=0.1)
    regs = R.Regularizers.from_kwargs(**kwargs)
    weights = [net.find(name, "w").detach() for name in ("hid1", "hid2", "hid3", "out")]
    outs = net.feed_forward(x.numpy())
    hidden = [torch.from_numpy(outs[f"{name}:out"]) for name in ("hid1", "hid2", "hid3")]
    expected = {
        "weight_l1": 0.5 * sum(w.abs().mean() for w in weights) / len(weights),
        "weight_l2": 0.3 * sum((w * w).mean() for w in weights) / len(weights),
        "hidden_l1": 0.2 * sum(h.abs().mean() for h in hidden) / len(hidden),
        "hidden_l2": 0.1 * sum((h * h).mean() for h in hidden) / len(hidden),
    }
    _, terms = net.loss_terms(x, None, regs, training=True)
    step = DenseChainStep.build(net.objective(regs))
    assert step is not None
    values = dict(zip(step.keys, step(x)))
    for key, value in expected.items():
        torch.testing.assert_close(terms[key].detach(), value, rtol=1e-5, atol=0, msg=key)
        torch.testing.assert_close(values[key], value, rtol=1e-5, atol=0, msg=key)
    assert float(expected["weight_l1"]) == pytest.approx(0.5 * float(R.weight_penalty(weights, 1)), rel=1e-6)

    # The weight penalties' gradients: lam * sign(W) / (K n) and lam * 2 W / (K n), K = 4 matrices.
    fused_with = [p.grad.clone() for p in net.params]
    plain = DenseChainStep.build(net.objective(R.Regularizers.from_kwargs(hidden_l1=0.2, hidden_l2=0.1)))
    plain(x)
    for p, with_penalty in zip(net.params, fused_with):
        if p.dim() < 2:
            torch.testing.assert_close(with_penalty, p.grad)
            continue
        want = 0.5 * p.detach().sign() / (4 * p.numel()) + 0.3 * 2 * p.detach() / (4 * p.numel())
        torch.testing.assert_close(with_penalty - p.grad, want, rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("scale", ["mean", "sum"])
def test_the_hand_derived_step_matches_autograd_in_both_scales(scale):
    net, x = _net(), _x()
    regs = dataclasses.replace(
        R.Regularizers.from_kwargs(weight_l1={"out.w": 0.2, "*.w": 0.4}, weight_l2=0.05, hidden_l1=0.3), scale=scale
    )
    total, terms = net.loss_terms(x, None, regs, training=True)
    total.backward()
    grads = [p.grad.clone() for p in net.params]
    step = DenseChainStep.build(net.objective(regs))
    values = step(x)
    assert step.keys == list(terms)
    torch.testing.assert_close(values, torch.stack([terms[k].detach().float() for k in step.keys]), rtol=2e-5, atol=0)
    for p, g in zip(net.params, grads):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-7)


def test_summed_forms_convert_one_pattern_per_matrix():
    # Keras's l2(mu) on each kernel (mu * sum W^2), aekit 0.1's weight_l2=mu, and a summed hidden_l1 over L
    # layers: one pattern per matrix with mu * n (mu * K * n for K equal matrices), hidden_l1 = lam * L.
    net, x = _net(), _x().numpy()
    mu = 1e-3
    weights = {name: net.find(name, "w").detach() for name in ("hid1", "hid2", "hid3", "out")}
    plain = net.loss(x).detach()
    keras = sum(mu * w.square().sum() for w in weights.values())
    converted = net.loss(x, weight_l2={f"{n}.w": mu * w.numel() for n, w in weights.items()}).detach() - plain
    torch.testing.assert_close(converted, keras, rtol=1e-5, atol=0)
    # The library's own conversion (what a resumed aekit 0.1 checkpoint's note prints) says the same.
    summed = dataclasses.replace(R.Regularizers.from_kwargs(weight_l2=mu, hidden_l1=0.1), scale="sum")
    per_name = summed.per_name({f"{n}.w": w for n, w in weights.items()}, ["hid1", "hid2", "hid3"])
    assert per_name["weight_l2"] == pytest.approx({f"{n}.w": mu * w.numel() for n, w in weights.items()})
    assert per_name["hidden_l1"] == {"hid1": 0.1, "hid2": 0.1, "hid3": 0.1}
    with torch.no_grad():
        total, _ = net.loss_terms(torch.from_numpy(x), None, summed, training=False)
        today = net.loss(x, weight_l2=per_name["weight_l2"], hidden_l1=0.1 * 3)
    torch.testing.assert_close(today, total, rtol=1e-6, atol=0)


def test_the_scale_is_checked():
    with pytest.raises(ConfigurationError, match="penalty scale must be one of"):
        R.Regularizers(scale="median")


# ---------------------------------------------------------------------- checkpoints of aekit 0.1
def _summed_scale(monkeypatch):
    """Make train() read its keywords as aekit 0.1 did (a run in the 'sum' scale from its start)."""
    original = R.Regularizers.from_kwargs.__func__

    def summed(cls, code_layer="*", **kwargs):
        return dataclasses.replace(original(cls, code_layer, **kwargs), scale="sum")

    monkeypatch.setattr(R.Regularizers, "from_kwargs", classmethod(summed))


def _as_written_by_aekit_0_1(path):
    """Rewrite a checkpoint as aekit 0.1 wrote it: checkpoint_version 1, no penalty_scale."""
    tensors, meta = read_model_file(path)
    for key in ("format", "format_version", "aekit_version", "penalty_scale"):
        meta.pop(key, None)
    meta["checkpoint_version"] = 1
    write_model_file(path, tensors, meta)


LAYERS = [64, (16, "relu"), (8, "sigmoid"), (16, "tied"), (64, "tied")]
KEYWORDS = dict(algo="adam", batch_size=32, validate_every=0, weight_l2=1e-3, weight_l1=1e-4, hidden_l1=1e-2)


def test_resuming_an_old_checkpoint_keeps_its_summed_strengths(digits, tmp_path, monkeypatch, caplog):
    x = digits[0][:256]
    path = tmp_path / "old.ckpt"
    with monkeypatch.context() as patch:
        _summed_scale(patch)
        old_run = aekit.Autoencoder(LAYERS, rng=5)
        old_run.train(x, max_epochs=4, **KEYWORDS)  # uninterrupted, in aekit 0.1's scale
        aekit.Autoencoder(LAYERS, rng=5).train(x, max_epochs=2, checkpoint=path, **KEYWORDS)
    _as_written_by_aekit_0_1(path)
    assert checkpoint_info(path)["penalty_scale"] == "sum"

    resumed = aekit.Autoencoder(LAYERS, rng=5)
    with caplog.at_level(logging.INFO, logger="aekit.train.checkpoint"):
        resumed.train(x, max_epochs=4, checkpoint=path, resume=True, **KEYWORDS)
    # The same keywords train on with the strengths the checkpoint was written with, bit for bit.
    for p, q in zip(resumed.params, old_run.params):
        assert torch.equal(p, q)
    assert resumed.history == old_run.history
    notes = [r for r in caplog.records if "penalty scale 'sum'" in r.getMessage()]
    assert len(notes) == 1 and notes[0].levelno == logging.WARNING
    message = notes[0].getMessage()
    # Today's equivalent: one pattern per matrix, mu * n; hidden_l1 once per hidden layer.
    assert f"'hid1.w': {1e-3 * 64 * 16:.6g}" in message and f"'hid2.w': {1e-3 * 16 * 8:.6g}" in message
    assert "hidden_l1={'hid1': 0.01, 'hid2': 0.01, 'hid3': 0.01}" in message
    # The checkpoint it wrote says so, so that resuming it again keeps the scale too.
    assert checkpoint_info(path)["penalty_scale"] == "sum"
    assert read_model_file(path)[1]["checkpoint_version"] == 2

    # Read in today's scale the same keywords would have trained differently.
    today = aekit.Autoencoder(LAYERS, rng=5)
    today.train(x, max_epochs=4, **KEYWORDS)
    assert not all(torch.equal(p, q) for p, q in zip(today.params, old_run.params))


def test_the_legacy_fixture_reads_as_summed_and_resumes_without_a_warning(tmp_path, caplog):
    # tests/data/legacy/run.ckpt used hidden_l1 on its one hidden layer: the same in both scales, so the
    # note is informational (test_legacy_files.py checks the resumed run bit for bit).
    assert checkpoint_info(LEGACY / "run.ckpt")["penalty_scale"] == "sum"
    path = tmp_path / "run.ckpt"
    shutil.copyfile(LEGACY / "run.ckpt", path)
    net = aekit.Autoencoder([12, (6, "relu"), (12, "tied")], rng=7)
    with caplog.at_level(logging.INFO, logger="aekit.train.checkpoint"):
        net.train(
            np.load(LEGACY / "ckpt_data.npy"),
            max_epochs=4,
            checkpoint=path,
            resume=True,
            algo="adam",
            learning_rate=3e-3,
            batch_size=16,
            input_noise=0.05,
            hidden_l1=1e-3,
        )
    notes = [r for r in caplog.records if "penalty scale" in r.getMessage()]
    assert len(notes) == 1 and notes[0].levelno == logging.INFO


def test_an_unknown_penalty_scale_is_refused(digits, tmp_path):
    path = tmp_path / "c.ckpt"
    aekit.Autoencoder([64, (8, "sigmoid"), (64, "tied")]).train(digits[0][:64], max_epochs=1, checkpoint=path)
    tensors, meta = read_model_file(path)
    for key in ("format", "format_version", "aekit_version"):
        meta.pop(key, None)
    meta["penalty_scale"] = "median"
    write_model_file(path, tensors, meta)
    with pytest.raises(CheckpointError, match="damaged: its penalty_scale is 'median'"):
        checkpoint_info(path)
