"""The fast training paths compute what a plain PyTorch loop computes.

* one aekit epoch equals a hand-written epoch over the same permutation;
* mixed precision (bf16 / fp16 autocast) runs and lands near the fp32 result;
* a failing ``torch.compile`` falls back to eager training with a warning;
* ``compile=True`` gives the eager losses (set ``AEKIT_TEST_COMPILE=1``: compiling
  takes tens of seconds on a small CPU, too long for every test run).
"""

from __future__ import annotations

import copy
import logging
import os

import numpy as np
import pytest
import torch

import aekit
from aekit.errors import ConfigurationError
from aekit.steps import StepRunner


def _data(n: int = 50, d: int = 20, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, d), dtype=np.float32)


def _net(d: int = 20) -> aekit.Autoencoder:
    return aekit.Autoencoder([d, (8, "sigmoid"), (d, "sigmoid")], rng=3)


def test_one_epoch_equals_plain_pytorch_with_the_same_permutation():
    x = _data()
    net = _net()
    w1, b1 = net.find("hid1", "w").detach().clone(), net.find("hid1", "b").detach().clone()
    w2, b2 = net.find("out", "w").detach().clone(), net.find("out", "b").detach().clone()
    # The permutation aekit draws for its first epoch (see _Trainer.generator).
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(net.seed + 1))
    train, _ = net.train(x, batch_size=16, max_epochs=1, validate_every=0, learning_rate=1e-2)

    params = [p.requires_grad_() for p in (w1, b1, w2, b2)]
    optimizer = torch.optim.Adam(params, lr=1e-2, foreach=False)
    xs = torch.from_numpy(x)[perm]
    total, count = 0.0, 0
    for start in range(0, len(xs), 16):
        xb = xs[start : start + 16]
        optimizer.zero_grad()
        out = torch.sigmoid(torch.sigmoid(xb @ w1 + b1) @ w2 + b2)
        loss = ((out - xb) ** 2).mean()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(xb)
        count += len(xb)
    assert train["loss"] == pytest.approx(total / count, rel=1e-5)
    for name, ref in (("hid1.w", w1), ("hid1.b", b1), ("out.w", w2), ("out.b", b2)):
        layer, param = name.split(".")
        torch.testing.assert_close(net.find(layer, param).detach(), ref.detach(), rtol=1e-4, atol=1e-6)


def test_epoch_monitor_is_size_weighted_mean_over_batches():
    # 50 samples in batches of 16: the last batch has 2; the epoch loss weighs it by 2.
    x = _data()
    net = _net()
    train, _ = net.train(x, batch_size=16, max_epochs=1, validate_every=0, learning_rate=1e-12)
    # With a negligible learning rate the epoch mean equals the loss of the start model.
    assert train["loss"] == pytest.approx(float(((net.predict(x) - x) ** 2).mean()), rel=1e-4)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_autocast_trains_close_to_fp32(precision):
    x = _data(200, 20)
    ref = _net().train(x, batch_size=32, max_epochs=3, validate_every=0, learning_rate=1e-2)[0]["loss"]
    net = _net()
    got = net.train(x, batch_size=32, max_epochs=3, validate_every=0, learning_rate=1e-2, precision=precision)[0][
        "loss"
    ]
    assert np.isfinite(got)
    assert got == pytest.approx(ref, rel=0.05)
    assert net.find("hid1", "w").dtype == torch.float32  # parameters stay float32


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_autocast_contractive_training_lands_near_fp32(precision):
    # The closed-form penalty mixes an autocast (half) slope with the float32 weights.
    x = _data(64, 20)
    kwargs = dict(batch_size=32, max_epochs=2, validate_every=0, contractive=0.1)
    ref = _net().train(x, **kwargs)[0]
    got = _net().train(x, precision=precision, **kwargs)[0]
    assert got["contractive"] > 0
    assert got["contractive"] == pytest.approx(ref["contractive"], rel=0.05)
    assert got["loss"] == pytest.approx(ref["loss"], rel=0.05)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_clips_the_true_gradient_norm(precision):
    # One SGD step of learning rate 1 moves the parameters by the clipped gradient: its norm is
    # max_gradient_norm only if fp16's loss scale was divided out before clipping (clipping the
    # scaled gradient would give a step 65536 times too small).
    x = _data(64, 20)
    net = _net()
    before = [p.detach().clone() for p in net.params]
    net.train(
        x,
        algo="sgd",
        learning_rate=1.0,
        momentum=0.0,
        batch_size=64,
        max_epochs=1,
        shuffle=False,
        validate_every=0,
        precision=precision,
        max_gradient_norm=0.01,
    )
    step = torch.cat([(p.detach() - b).flatten() for p, b in zip(net.params, before)])
    assert step.norm().item() == pytest.approx(0.01, rel=1e-3)


@pytest.mark.parametrize("key,value", [("precision", "fp8"), ("compile", "yes"), ("compile", 1.5)])
def test_bad_speed_options_are_refused(key, value):
    with pytest.raises(ConfigurationError, match=key):
        _net().train(_data(), max_epochs=1, **{key: value})


@pytest.mark.parametrize("alias,name", [("bfloat16", "bf16"), ("float16", "fp16"), ("float32", "fp32")])
def test_precision_aliases_train_as_their_names(alias, name):
    by_alias, by_name = _net(), _net()
    by_alias.train(_data(), max_epochs=1, validate_every=0, precision=alias)
    by_name.train(_data(), max_epochs=1, validate_every=0, precision=name)
    for a, b in zip(by_alias.params, by_name.params):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    if name != "fp32":  # and the low precision really is used
        reference = _net()
        reference.train(_data(), max_epochs=1, validate_every=0)
        assert not torch.equal(reference.find("hid1", "w"), by_name.find("hid1", "w"))


def test_compile_failure_falls_back_to_eager(monkeypatch, caplog):
    x = _data(64, 20)
    ref = _net().train(x, batch_size=16, max_epochs=2, validate_every=0)[0]

    def broken(fn, **kwargs):
        def call(*args):
            raise RuntimeError("no compiler here")

        return call

    monkeypatch.setattr(torch, "compile", broken)
    with caplog.at_level(logging.WARNING, logger="aekit.train.step"):
        got = _net().train(x, batch_size=16, max_epochs=2, validate_every=0, compile=True)[0]
    assert any("training eagerly" in r.message for r in caplog.records)
    assert got["loss"] == pytest.approx(ref["loss"], rel=1e-6)


def test_compile_auto_stays_eager_on_cpu():
    net = _net()
    regs = aekit.regularizers.Regularizers()
    runner = StepRunner(net.objective(regs), torch.optim.Adam(net.params), compile="auto")
    assert runner._compile_pending is (net.device.type == "cuda")


@pytest.mark.skipif(os.environ.get("AEKIT_TEST_COMPILE") != "1", reason="set AEKIT_TEST_COMPILE=1 (slow compile)")
def test_compiled_step_matches_eager_losses():
    x = _data(96, 20)
    eager = [m["loss"] for m, _ in _net().itertrain(x, batch_size=32, max_epochs=3, validate_every=0)]
    compiled = [m["loss"] for m, _ in _net().itertrain(x, batch_size=32, max_epochs=3, validate_every=0, compile=True)]
    np.testing.assert_allclose(compiled, eager, rtol=1e-4)


def test_fused_adam_update_matches_optimizer_step_and_keeps_its_state():
    from aekit.steps import FusedAdamUpdate

    torch.manual_seed(0)
    ref = [torch.randn(6, 4, requires_grad=True), torch.randn(4, requires_grad=True)]
    mine = [p.detach().clone().requires_grad_() for p in ref]
    opt_ref = torch.optim.Adam(ref, lr=1e-2, fused=True)
    opt_mine = torch.optim.Adam(mine, lr=1e-2, fused=True)
    update = FusedAdamUpdate.build(opt_mine)
    assert update is not None
    for step in range(5):
        grads = [torch.randn_like(p) for p in ref]
        for p, q, g in zip(ref, mine, grads):
            p.grad, q.grad = g.clone(), g.clone()
        opt_ref.step()
        update()
        if step == 2:  # a resume replaces the state tensors: the update must follow them
            opt_mine.load_state_dict(copy.deepcopy(opt_ref.state_dict()))
    for p, q in zip(ref, mine):
        assert torch.equal(p, q)
    for a, b in zip(opt_ref.state_dict()["state"].values(), opt_mine.state_dict()["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in ("step", "exp_avg", "exp_avg_sq"))
    # Only a plain fused single-group Adam qualifies.
    assert FusedAdamUpdate.build(torch.optim.Adam(ref, amsgrad=True, fused=True)) is None
    assert FusedAdamUpdate.build(torch.optim.Adam(ref, foreach=True)) is None
    assert FusedAdamUpdate.build(torch.optim.SGD(ref, lr=0.1)) is None


def test_all_finite_agrees_with_isfinite_including_overflowing_sums():
    from aekit.data import all_finite

    big = torch.full((4,), 3e38)  # finite values whose float32 sum overflows
    cases = [
        torch.rand(50),
        big,
        torch.tensor([1.0, float("nan")]),
        torch.tensor([float("inf"), -float("inf")]),
        torch.tensor([-float("inf")]),
        torch.empty(0),
        torch.arange(5),
    ]
    for t in cases:
        expected = bool(torch.isfinite(t).all()) if t.is_floating_point() else True
        assert all_finite(t) is expected
