"""The hand-derived dense step (aekit.fused) against autograd on the same model."""

import numpy as np
import pytest
import torch

import aekit
from aekit import fused
from aekit import regularizers as reg
from aekit.fused import DenseChainStep


def batch(n=37, d=12, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).random((n, d), dtype=np.float32))


def autograd_reference(net, x, regs, w=None):
    """Terms (dict) and gradients (one per parameter) from Autoencoder.loss_terms + backward."""
    for p in net.params:
        p.grad = None
    total, terms = net.loss_terms(x, w, regs, training=True)
    total.backward()
    grads = [p.grad.clone() for p in net.params]
    for p in net.params:
        p.grad = None
    return {k: float(v.detach()) for k, v in terms.items()}, grads


def count_step_calls(monkeypatch) -> list[int]:
    """The batch sizes the hand-derived step is called on from now on (it still runs)."""
    calls: list[int] = []
    original = DenseChainStep.__call__

    def counted(self, xb, wb=None):
        calls.append(xb.shape[0])
        return original(self, xb, wb)

    monkeypatch.setattr(DenseChainStep, "__call__", counted)
    return calls


CASES = [
    # (layers, loss, regularizer keywords)
    ([12, (5, "sigmoid"), (12, "sigmoid")], "mse", {}),
    ([12, (5, "relu"), (12, "linear")], "mse", {}),
    ([12, (7, "tanh"), (3, "linear"), (7, "tanh"), (12, "sigmoid")], "mse", {}),
    ([12, (5, "sigmoid"), (12, "tied")], "mse", {}),  # tied: linear output sharing W^T
    ([12, (6, "relu"), (4, "sigmoid"), (6, "tied"), (12, "tied")], "mae", {}),
    ([12, (5, "logistic"), (12, "sigmoid")], "bce", {}),
    ([12, (5, "rect:max"), {"size": 12, "form": "tied", "activation": "sigmoid"}], "bce", {}),
    ([12, (8, "relu"), (12, "linear")], "mse", {"hidden_l1": 0.1}),
    ([12, (8, "sigmoid"), (12, "tied")], "mse", {"hidden_l2": 0.3, "weight_l2": 1e-2}),
    (
        [12, (8, "tanh"), (4, "relu"), (8, "tanh"), (12, "linear")],
        "mse",
        {"weight_l1": {"hid1.w": 0.01, "*.w": 0.002}, "hidden_l1": {"hid2": 0.05}, "hidden_l2": {"hid1": 0.0}},
    ),
    ([12, (8, "softplus"), (4, "elu"), (8, "leaky-relu"), (12, "linear")], "mse", {"hidden_l1": 0.05}),
    # Strengths on theanets 0.7's scale (means per matrix / layer, averaged): strong enough to matter,
    # and patterns that choose several matrices (layers) of different sizes.
    ([12, (8, "relu"), (12, "linear")], "mse", {"weight_l1": 0.5, "weight_l2": 2.0}),
    (
        [12, (6, "tanh"), (4, "relu"), (6, "tanh"), (12, "linear")],
        "mse",
        {"weight_l2": {"out.w": 0.5, "hid*.w": 1.5}, "weight_l1": 0.3, "hidden_l1": 0.4, "hidden_l2": {"hid?": 0.2}},
    ),
    ([12, (6, "lrelu"), (12, "softplus")], "mae", {}),
    # Images into a dense first layer: flattened, as the layer flattens them.
    ([(1, 3, 4), (6, "sigmoid"), (12, "sigmoid")], "mse", {"input_dropout": 0.2}),
    ([(3, 2, 2), (5, "relu"), (12, "tied")], "mae", {"weight_l2": 1e-2}),
    # gelu keeps its pre-activation; with bce the output's logits are that same buffer's copy.
    ([12, (6, "gelu"), (4, "sigmoid"), (6, "gelu"), (12, "sigmoid")], "bce", {"hidden_l1": 0.1}),
    ([12, (6, "gelu"), {"size": 12, "form": "tied", "activation": "gelu"}], "mse", {"hidden_dropout": 0.3}),
    ([12, (6, "rect:minmax"), (4, "rect:min"), (12, "rect:minmax")], "mae", {"hidden_l2": 0.1}),
    # Denoising and sparse models: the same draws as autograd's path (seeded alike below).
    ([12, (5, "relu"), (12, "linear")], "mse", {"input_noise": 0.1}),
    ([12, (5, "sigmoid"), {"size": 12, "form": "tied", "activation": "sigmoid"}], "bce", {"input_dropout": 0.3}),
    ([12, (5, "relu"), (12, "linear")], "mse", {"input_noise": 0.2, "input_dropout": 0.25, "hidden_l1": 0.1}),
    (
        [12, (6, "relu"), (4, "sigmoid"), (6, "tied"), (12, "tied")],
        "mse",
        {"hidden_dropout": {"hid1": 0.5}, "hidden_noise": {"hid2": 0.3}, "hidden_l2": 0.2},
    ),
    ([12, (8, "tanh"), (12, "linear")], "mae", {"hidden_noise": 0.1, "hidden_dropout": 0.2, "hidden_l1": 0.05}),
    ([12, (5, "sigmoid"), (12, "linear")], "mse", {"sparsity_target": 0.1}),
    # Sparsity only where the output lies in [0, 1] (relu and tanh layers are skipped, as in loss_terms).
    (
        [12, (8, "sigmoid"), (4, "relu"), (8, "tanh"), (12, "sigmoid")],
        "bce",
        {"sparsity_target": 0.05, "sparsity_weight": 3.0, "weight_l2": 1e-3, "input_noise": 0.05},
    ),
    ([12, (8, "relu"), (12, "linear")], "mse", {"sparsity_target": 0.2}),  # no layer in range: a zero term
    ([12, (6, "sigmoid"), (12, "sigmoid")], "mse", {"sparsity_target": 0.3, "hidden_dropout": 0.4}),
    # prelu: its learnable leak per unit gets a gradient too.
    ([12, (6, "prelu"), (12, "linear")], "mse", {}),
    (
        [12, (6, "prelu"), (4, "sigmoid"), {"size": 6, "form": "tied", "activation": "prelu"}, (12, "tied")],
        "mae",
        {"hidden_l1": 0.1},
    ),
    ([12, (6, "prelu"), (12, "sigmoid")], "bce", {"contractive": 0.3, "input_noise": 0.0}),
    # Contractive autoencoders: the closed-form penalty on the first layer, its pre-activation kept.
    ([12, (5, "sigmoid"), (12, "sigmoid")], "mse", {"contractive": 0.5}),
    ([12, (5, "relu"), (12, "tied")], "mae", {"contractive": 0.3, "hidden_l1": 0.1, "weight_l2": 1e-2}),
    ([(1, 3, 4), (6, "tanh"), (12, "linear")], "mse", {"contractive": 0.2, "hidden_dropout": 0.3}),
    ([12, (6, "gelu"), (12, "sigmoid")], "bce", {"contractive": 0.4, "sparsity_target": 0.1}),
    ([12, (6, "softplus"), (4, "sigmoid"), (6, "tied"), (12, "tied")], "mse", {"contractive": {"hid1": 0.3}}),
    ([12, (6, "elu"), (12, "linear")], "mse", {"contractive": {"hid9": 0.3}}),  # matches no layer: a zero term
    # A linear first layer: its slope is the constant 1, so the penalty has no gradient through pre.
    ([12, (5, "linear"), (12, "sigmoid")], "mse", {"contractive": 0.3}),
]


@pytest.mark.parametrize("layers, loss, kwargs", CASES)
def test_terms_and_gradients_match_autograd(layers, loss, kwargs):
    net = aekit.Autoencoder(layers, loss=loss, rng=5)
    regs = reg.Regularizers.from_kwargs(code_layer=net.code_layer, **kwargs)
    step = DenseChainStep.build(net.objective(regs))
    assert step is not None
    for n in (37, 5):  # a second batch size: fresh buffers
        x = batch(n).reshape(n, *net.graph.input_shape)
        torch.manual_seed(n)
        expected, grads = autograd_reference(net, x, regs)
        assert step.keys == list(expected)
        torch.manual_seed(n)  # the same noise and dropout draws
        values = step(x)
        assert values.shape == (len(step.keys),)
        np.testing.assert_allclose(values.numpy(), [expected[k] for k in step.keys], rtol=2e-5, atol=1e-7)
        for p, g in zip(net.params, grads):
            np.testing.assert_allclose(p.grad.numpy(), g.numpy(), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize(
    "layers, loss, kwargs",
    [
        ([12, (5, "sigmoid"), (12, "sigmoid")], "mse", {}),
        ([12, (5, "relu"), (12, "tied")], "mae", {"hidden_l1": 0.1}),
        ([(1, 3, 4), (6, "tanh"), (12, "sigmoid")], "bce", {"input_noise": 0.1}),
    ],
)
def test_weighted_losses_match_autograd(layers, loss, kwargs):
    net = aekit.Autoencoder(layers, loss=loss, rng=5, weighted=True)
    regs = reg.Regularizers.from_kwargs(code_layer=net.code_layer, **kwargs)
    step = DenseChainStep.build(net.objective(regs))
    x = batch(21).reshape(21, *net.graph.input_shape)
    w = batch(21, seed=1).reshape(x.shape)
    w[w < 0.3] = 0.0  # values left out of the loss entirely
    for weights in (w, torch.zeros_like(w)):  # all zero: the sum of weights is clamped, as in aekit.losses
        torch.manual_seed(0)
        expected, grads = autograd_reference(net, x, regs, weights)
        torch.manual_seed(0)
        values = step(x, weights)
        np.testing.assert_allclose(values.numpy(), [expected[k] for k in step.keys], rtol=2e-5, atol=1e-7)
        for p, g in zip(net.params, grads):
            np.testing.assert_allclose(p.grad.numpy(), g.numpy(), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize(
    "layers, losses, kwargs",
    [
        ([12, (5, "sigmoid"), (12, "sigmoid")], [("mse", 1.0), ("mae", 0.1)], {}),
        # the cross-entropy's gradient is taken with respect to the logits, the others' through the sigmoid
        ([12, (5, "relu"), (12, "sigmoid")], [("bce", 1.0), ("mse", 0.5)], {"hidden_l1": 0.1}),
        (
            [12, (6, "tanh"), {"size": 12, "form": "tied", "activation": "sigmoid"}],
            [("mae", 2.0), ("bce", 0.3), ("mse", 0.7)],
            {"input_noise": 0.1, "weight_l2": 1e-2},
        ),
        ([12, (6, "relu"), (12, "linear")], [("mse", 0.5), ("mae", 0.0)], {}),
    ],
)
@pytest.mark.parametrize("weighted", [False, True])
def test_several_losses_match_autograd(layers, losses, kwargs, weighted):
    net = aekit.Autoencoder(layers, loss=losses[0][0], rng=5, weighted=weighted)
    net.set_loss(*losses[0])
    for name, weight in losses[1:]:
        net.add_loss(name, weight=weight)
    regs = reg.Regularizers.from_kwargs(code_layer=net.code_layer, **kwargs)
    step = DenseChainStep.build(net.objective(regs))
    assert step is not None and step.keys[: len(losses) + 1] == [*(name for name, _ in losses), "err"]
    for n in (37, 5):
        x = batch(n)
        w = batch(n, seed=2) if weighted else None
        torch.manual_seed(n)
        expected, grads = autograd_reference(net, x, regs, w)
        assert step.keys == list(expected)
        torch.manual_seed(n)
        values = step(x, w)
        np.testing.assert_allclose(values.numpy(), [expected[k] for k in step.keys], rtol=2e-5, atol=1e-7)
        for p, g in zip(net.params, grads):
            np.testing.assert_allclose(p.grad.numpy(), g.numpy(), rtol=1e-4, atol=1e-7)


def test_losses_the_step_does_not_combine_go_through_autograd():
    for second in ("mse", "kl"):  # the same loss twice (one term name), or a loss it does not cover
        net = aekit.Autoencoder([12, (5, "sigmoid"), (12, "sigmoid")], rng=5)
        net.add_loss(second, weight=0.1)
        assert DenseChainStep.build(net.objective(reg.Regularizers.from_kwargs(code_layer="hid1"))) is None


@pytest.mark.parametrize(
    "layers, loss, kwargs",
    [
        ([12, (5, "relu+norm:z"), (12, "linear")], "mse", {}),
        ([12, (5, "prelu+norm:z"), (12, "linear")], "mse", {}),
        ([12, {"size": 5, "activation": "relu", "batch_norm": True}, (12, "linear")], "mse", {}),
        ([12, (5, "relu"), (12, "linear")], "bce", {}),  # bce on a linear output: clamped, autograd
        ([12, (5, "relu"), (12, "linear")], "kl", {}),
        # Contractive penalties the closed form does not cover: a deeper code layer, or input corruption
        # (the Jacobian is taken at the clean input, which the corrupted forward pass does not run).
        ([12, (7, "tanh"), (3, "sigmoid"), (7, "tanh"), (12, "linear")], "mse", {"contractive": 0.1}),
        ([12, (5, "sigmoid"), (12, "linear")], "mse", {"contractive": 0.1, "input_noise": 0.1}),
        ([12, (5, "sigmoid"), (12, "linear")], "mse", {"contractive": 0.1, "input_dropout": 0.1}),
        ([(1, 4, 4), {"form": "conv2", "channels": 2, "stride": 2}, "flatten", (16, "sigmoid")], "mse", {}),
        ([(1, 4, 4), (6, "sigmoid"), {"form": "reshape", "shape": (1, 2, 3)}, (16, "sigmoid")], "mse", {}),
    ],
)
def test_models_the_step_does_not_cover_go_through_autograd(layers, loss, kwargs):
    net = aekit.Autoencoder(layers, loss=loss, rng=5)
    regs = reg.Regularizers.from_kwargs(code_layer=net.code_layer, **kwargs)
    assert DenseChainStep.build(net.objective(regs)) is None


@pytest.mark.parametrize(
    "regularizers",
    [
        dict(hidden_l1=0.01),
        # A denoising, sparse model: the epoch-seeded noise makes both runs draw the same corruption.
        dict(input_noise=0.2, input_dropout=0.1, hidden_dropout=0.2, sparsity_target=0.1, sparsity_weight=0.5),
    ],
)
def test_training_takes_the_fast_step_and_matches_autograd_training(monkeypatch, regularizers):
    x = np.random.default_rng(1).random((300, 20), dtype=np.float32)
    layers = [20, (8, "sigmoid"), (20, "sigmoid")]
    options = dict(batch_size=32, max_epochs=3, validate_every=0, learning_rate=3e-3, **regularizers)
    calls = count_step_calls(monkeypatch)
    fast = aekit.Autoencoder(layers, rng=2)
    fast.train(x, **options)
    assert sum(calls) == 3 * 300  # every example of every epoch, the short last batches included
    monkeypatch.setattr(DenseChainStep, "build", classmethod(lambda cls, *args: None))
    slow = aekit.Autoencoder(layers, rng=2)
    slow.train(x, **options)
    for a, b in zip(fast.params, slow.params):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-4, atol=1e-5)
    for h_fast, h_slow in zip(fast.history, slow.history):
        assert h_fast["train"].keys() == h_slow["train"].keys()
        for key in h_fast["train"]:
            assert h_fast["train"][key] == pytest.approx(h_slow["train"][key], rel=1e-4)


def test_activation_table_derivatives_are_those_of_autograd():
    pre = torch.linspace(-3, 3, 41, dtype=torch.float64).requires_grad_()
    upstream = torch.rand(41, dtype=torch.float64)
    for name, (activate, derivative) in fused.ACTIVATIONS.items():
        out = aekit.activations.get(name)(pre)
        (expected,) = torch.autograd.grad(out, pre, upstream)
        inplace = pre.detach().clone()
        activate(inplace)
        np.testing.assert_allclose(inplace.numpy(), out.detach().numpy(), err_msg=name)
        got = upstream if derivative is None else derivative(upstream, inplace, torch.empty_like(upstream))
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-12, err_msg=name)
    # The clamps' bounds exactly: the gradient passes there, as torch.clamp's does.
    pre = torch.cat([pre.detach(), torch.tensor([0.0, 1.0], dtype=torch.float64)]).requires_grad_()
    upstream = torch.rand(43, dtype=torch.float64)
    for name, (activate, derivative) in fused.PRE_ACTIVATIONS.items():
        out = aekit.activations.get(name)(pre)
        (expected,) = torch.autograd.grad(out, pre, upstream)
        written = torch.empty_like(upstream)
        activate(pre.detach(), written)
        np.testing.assert_allclose(written.numpy(), out.detach().numpy(), err_msg=name)
        got = derivative(upstream, pre.detach(), torch.empty_like(upstream))
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-12, err_msg=name)


def test_lbfgs_closure_takes_the_fast_step_and_matches_autograd(monkeypatch):
    # UFLDL's sparse autoencoder (sigmoid, weight decay, KL sparsity) trained full-batch with L-BFGS:
    # the closure's gradients come from the hand-derived step.
    x = np.random.default_rng(3).random((400, 16), dtype=np.float32)
    options = dict(
        algo="lbfgs", max_epochs=15, validate_every=0, weight_l2=1e-4, sparsity_target=0.05, sparsity_weight=0.1
    )
    calls = count_step_calls(monkeypatch)
    fast = aekit.Autoencoder([16, (6, "sigmoid"), (16, "sigmoid")], rng=4)
    fast.train(x, **options)
    assert len(calls) >= 15 and set(calls) == {400}  # every evaluation, line search included, on the whole set
    monkeypatch.setattr(DenseChainStep, "build", classmethod(lambda cls, *args: None))
    slow = aekit.Autoencoder([16, (6, "sigmoid"), (16, "sigmoid")], rng=4)
    slow.train(x, **options)
    assert fast.history[0]["train"] == pytest.approx(slow.history[0]["train"], rel=1e-5)
    assert fast.history[-1]["train"]["loss"] == pytest.approx(slow.history[-1]["train"]["loss"], rel=1e-3)
    assert fast.history[-1]["train"]["loss"] < 0.7 * fast.history[0]["train"]["loss"]
