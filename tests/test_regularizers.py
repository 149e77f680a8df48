import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

import aekit
from aekit import ConfigurationError
from aekit import regularizers as R


def _double_net(layers, **kw):
    net = aekit.Autoencoder(layers, **kw)
    net.graph.double()
    return net


def test_kl_sparsity_matches_ufldl_formula():
    h = torch.rand(50, 8, dtype=torch.float64)
    rho = 0.05
    rho_hat = h.mean(0).numpy()
    expected = (rho * np.log(rho / rho_hat) + (1 - rho) * np.log((1 - rho) / (1 - rho_hat))).sum()
    assert np.isclose(R.kl_sparsity(h, rho).item(), expected)


def test_kl_sparsity_grad_is_autograds_including_clamped_units():
    h = torch.rand(40, 6, dtype=torch.float64).mul(0.8).add(0.1)
    h[:, 4] = 0.0  # rho_hat clamped at its floor: no gradient there
    h[:, 5] = 1.0  # and at its ceiling
    h.requires_grad_(True)
    (expected,) = torch.autograd.grad(R.kl_sparsity(h, 0.05), h)
    got = R.kl_sparsity_grad(h.detach(), 0.05)
    assert got.shape == (6,)
    torch.testing.assert_close(got.expand_as(h), expected)
    assert got[4] == 0 and got[5] == 0


@pytest.mark.parametrize("power", [1, 2])
def test_gradcheck_weight_and_hidden_penalties(power):
    w = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda t: R.weight_penalty([t], power), (w,))
    h = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda t: R.hidden_penalty(t, power), (h,))
    s = torch.rand(6, 3, dtype=torch.float64).mul(0.8).add(0.1).requires_grad_(True)
    assert gradcheck(lambda t: R.kl_sparsity(t, 0.1), (s,))


@pytest.mark.parametrize(
    "kwargs",
    [dict(weight_l1=0.1), dict(weight_l2=0.1), dict(hidden_l1=0.1), dict(hidden_l2=0.1),
     dict(sparsity_target=0.1, sparsity_weight=3.0), dict(contractive=0.5)],
)
def test_gradcheck_every_regularizer_through_the_network(kwargs):
    net = _double_net([5, (3, "sigmoid"), (5, "tied")])
    regs = R.Regularizers.from_kwargs(code_layer="hid1", **kwargs)
    x = torch.rand(4, 5, dtype=torch.float64)

    class Penalty(torch.nn.Module):
        """The regularizer part of the objective as a module over net.graph's parameters."""

        def __init__(self):
            super().__init__()
            self.graph = net.graph

        def forward(self, batch):
            _, terms = net.loss_terms(batch, None, regs, training=False)
            return terms["loss"] - terms["err"]

    penalty = Penalty()
    names = [n for n, _ in penalty.named_parameters()]
    assert names == ["graph.layers.hid1.w", "graph.layers.hid1.b", "graph.layers.out.b"]
    inputs = tuple(p.detach().clone().requires_grad_(True) for p in penalty.parameters())
    value = lambda *values: torch.func.functional_call(penalty, dict(zip(names, values)), (x,))  # noqa: E731
    assert value(*inputs).item() > 0
    assert gradcheck(value, inputs, eps=1e-6, atol=1e-5)


def test_contractive_equals_the_closed_form_for_a_sigmoid_layer():
    net = _double_net([6, (4, "sigmoid"), (6, "tied")])
    x = torch.rand(10, 6, dtype=torch.float64)
    w = net.find("hid1", "w").detach()
    h = torch.sigmoid(x @ w + net.find("hid1", "b").detach())
    # J_i = diag(h(1-h)) W^T, so ||J||_F^2 = sum_j (h_j(1-h_j))^2 ||W_:j||^2 (Rifai et al. 2011, eq. 3)
    expected = ((h * (1 - h)) ** 2 * (w ** 2).sum(0)).sum(1).mean()
    assert torch.isclose(net._jacobian_norm(x, "hid1"), expected)


def test_hidden_l1_lowers_the_mean_code_activation(digits):
    x, _ = digits
    means = []
    for lam in (0.0, 0.5):
        net = aekit.Autoencoder([64, (32, "relu"), (64, "linear")], rng=1)
        net.train(x, hidden_l1=lam, max_epochs=15, validate_every=0, batch_size=32)
        means.append(np.abs(net.encode(x)).mean())
    assert means[1] < 0.5 * means[0]


def test_pattern_dicts_select_layers_and_params():
    regs = R.Regularizers.from_kwargs(hidden_l1={"hid1": 0.1}, weight_l2={"hid2.w": 0.01})
    assert R.match(regs.hidden_l1, ["hid1", "hid2"]) == {"hid1": 0.1}
    assert R.match(regs.weight_l2, ["hid1.w", "hid2.w"]) == {"hid2.w": 0.01}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(hidden_l1=-1), "hidden_l1 must be a number"),
        (dict(input_dropout=1.5), "input_dropout must be a number in \\[0.0, 0.99\\]"),
        (dict(sparsity_target=1.5), "sparsity_target"),
        (dict(sparsity_weight=3.0), "needs sparsity_target"),
        (dict(weight_l2="a lot"), "weight_l2 must be a number"),
    ],
)
def test_bad_regularizer_values(kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        R.Regularizers.from_kwargs(**kwargs)


def test_noise_is_training_only():
    net = aekit.Autoencoder([8, (4, "linear"), (8, "linear")])
    regs = R.Regularizers.from_kwargs(input_noise=1.0, hidden_dropout=0.5)
    x = torch.rand(16, 8)
    a, _ = net.loss_terms(x, None, regs, training=False)
    b, _ = net.loss_terms(x, None, regs, training=False)
    assert torch.equal(a, b)
    c, _ = net.loss_terms(x, None, regs, training=True)
    assert not torch.equal(a, c)
