"""'jumprelu': the paper's pseudo-derivatives in float64, the L0 penalty, training, saving and resuming."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import aekit
from aekit import ConfigurationError
from aekit.model.jumprelu import jumprelu, rectangle, step

EPS = 0.1


def paper_grads(z, theta, g, eps):
    """Rajamanoharan et al. 2024, eqs. 11-12, written out with NumPy: (dz, dtheta) of sum(g * JumpReLU)."""
    active = (z > theta).astype(float)
    kernel = ((z - theta) / eps > -0.5) & ((z - theta) / eps < 0.5)
    return g * active, (-(theta / eps) * kernel * g).sum(axis=0)


def test_forward_is_z_times_the_step_and_backward_is_the_papers_pseudo_derivative():
    rng = np.random.default_rng(0)
    z = rng.uniform(-0.5, 1.0, size=(40, 6))
    theta = rng.uniform(0.2, 0.5, size=6)
    z[:6, :] = theta + rng.uniform(-0.04, 0.04, size=(6, 6))  # some values inside the kernel's window
    g = rng.normal(size=z.shape)
    zt = torch.tensor(z, requires_grad=True)
    tt = torch.tensor(theta, requires_grad=True)
    out = jumprelu(zt, tt, EPS)
    np.testing.assert_array_equal(out.detach().numpy(), z * (z > theta))
    out.backward(torch.tensor(g))
    dz, dtheta = paper_grads(z, theta, g, EPS)
    np.testing.assert_allclose(zt.grad.numpy(), dz, rtol=1e-12)
    np.testing.assert_allclose(tt.grad.numpy(), dtheta, rtol=1e-12)
    assert np.abs(dtheta).max() > 0  # the window held some values


def test_the_step_gradient_reaches_theta_only_and_gradcheck_holds_away_from_the_jump():
    rng = np.random.default_rng(1)
    z = torch.tensor(rng.uniform(-1, 1, size=(30, 5)), requires_grad=True)
    theta = torch.tensor(rng.uniform(0.1, 0.3, size=5), requires_grad=True)
    step(z, theta, EPS).sum().backward()
    assert torch.count_nonzero(z.grad) == 0
    kernel = rectangle((z.detach() - theta.detach()) / EPS)
    torch.testing.assert_close(theta.grad, -(kernel / EPS).sum(dim=0))
    # With respect to z, JumpReLU is z itself or 0: autograd's finite differences agree away from the jump.
    far = torch.where((z - theta).abs() < 1e-3, z + 0.01, z).detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: jumprelu(t, theta.detach(), EPS), (far,))


def test_threshold_is_log_parameterised_and_a_trained_parameter_of_the_model():
    net = aekit.Autoencoder([8, (16, "jumprelu"), (8, "linear")], rng=0)
    module = net.graph.layers["hid1"].activation.modules_by_part["0"]
    torch.testing.assert_close(module.threshold, torch.full((16,), 0.001))
    names = [n for n, _ in net.graph.named_parameters()]
    assert "layers.hid1.activation.modules_by_part.0.log_threshold" in names
    assert aekit.Autoencoder([8, (16, "jumprelu:0.05"), (8, "linear")]).specs[1].activation == "jumprelu:0.05"
    with pytest.raises(ConfigurationError, match="positive bandwidth"):
        aekit.Autoencoder([8, (16, "jumprelu:-1"), (8, "linear")])


def sparse_data(n=512, d=16, seed=0):
    # Each example mixes a few of 32 directions: a sparse code explains it.
    rng = np.random.default_rng(seed)
    atoms = rng.normal(size=(32, d))
    codes = rng.uniform(0.5, 1.5, size=(n, 32)) * (rng.random((n, 32)) < 0.1)
    return (codes @ atoms).astype(np.float32)


def test_the_l0_penalty_matches_its_definition_and_makes_the_code_sparse():
    x = sparse_data()
    kwargs = dict(batch_size=64, max_epochs=15, validate_every=0, learning_rate=3e-2)
    plain = aekit.Autoencoder([16, (64, "jumprelu:0.05"), (16, "linear")], rng=0)
    plain.train(x, **kwargs)
    sparse = aekit.Autoencoder([16, (64, "jumprelu:0.05"), (16, "linear")], rng=0)
    terms = sparse.loss_terms(torch.from_numpy(x), None, _regs(jumprelu_l0=0.03), training=False)[1]
    module = sparse.graph.layers["hid1"].activation.modules_by_part["0"]
    pre = sparse.feed_forward(x)["hid1:pre"]
    want = 0.03 * (pre > module.threshold.detach().numpy()).sum(axis=1).mean()
    assert float(terms["jumprelu_l0"].detach()) == pytest.approx(want, rel=1e-5)
    history = list(sparse.itertrain(x, jumprelu_l0=0.03, **kwargs))
    assert "jumprelu_l0" in history[-1][0]
    l0_plain = aekit.evaluate(plain, x, metrics=["l0"])["l0"]
    figures = aekit.evaluate(sparse, x, metrics=["l0", "fvu"])
    assert figures["l0"] < 0.5 * l0_plain, (l0_plain, figures)  # measured: 29.4 without, 11.6 with
    assert figures["fvu"] < 0.1  # and it still reconstructs (measured: 0.043)
    assert float(module.threshold.detach().min()) > 0.05  # the thresholds moved up from where they started


def _regs(**kwargs):
    from aekit.objective import Regularizers

    return Regularizers.from_kwargs(**kwargs)


def test_jumprelu_l0_needs_a_jumprelu_layer():
    net = aekit.Autoencoder([8, (16, "relu"), (8, "linear")], rng=0)
    with pytest.raises(ConfigurationError, match="jumprelu_l0 pattern '\\*' matches no hidden layer"):
        net.train(np.zeros((8, 8), np.float32), jumprelu_l0=0.1, max_epochs=1)


def test_thresholds_are_saved_and_a_checkpoint_resumes_bit_for_bit(tmp_path):
    x = sparse_data(256)
    kwargs = dict(batch_size=64, validate_every=0, learning_rate=1e-2, jumprelu_l0=0.01)
    whole = aekit.Autoencoder([16, (32, "jumprelu:0.05"), (16, "linear")], rng=3)
    whole.train(x, max_epochs=4, **kwargs)
    first = aekit.Autoencoder([16, (32, "jumprelu:0.05"), (16, "linear")], rng=3)
    for i, _ in enumerate(first.itertrain(x, max_epochs=4, checkpoint=tmp_path / "c.ckpt", **kwargs), 1):
        if i == 2:
            break
    resumed = aekit.Autoencoder([16, (32, "jumprelu:0.05"), (16, "linear")], rng=3)
    resumed.train(x, max_epochs=4, checkpoint=tmp_path / "c.ckpt", resume=True, **kwargs)
    for key, value in whole.graph.state_dict().items():
        torch.testing.assert_close(resumed.graph.state_dict()[key], value, rtol=0, atol=0, msg=key)
    whole.save(tmp_path / "m.aekit")
    loaded = aekit.load(tmp_path / "m.aekit")
    theta = "layers.hid1.activation.modules_by_part.0.log_threshold"
    torch.testing.assert_close(loaded.graph.state_dict()[theta], whole.graph.state_dict()[theta], rtol=0, atol=0)
    assert not math.isclose(float(whole.graph.state_dict()[theta][0]), math.log(0.05))  # it trained
    np.testing.assert_array_equal(loaded.encode(x), whole.encode(x))
