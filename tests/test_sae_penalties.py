"""decoder_weighted_l1: the ReLU SAE's L1 penalty against a hand-written PyTorch reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import aekit
from aekit import ConfigurationError
from aekit.objective import Regularizers


def data(n=128, d=16, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 4)) @ rng.normal(size=(4, d)) + 0.1 * rng.normal(size=(n, d))).astype(np.float32)


def reference_loss(x, w_enc, b_enc, w_dec, b_dec, coef):
    """A plain ReLU SAE, as SAELens writes it: mse + coef * mean_i sum_j |z_ij| ||W_dec[j]||."""
    z = torch.relu(x @ w_enc + b_enc)
    x_hat = z @ w_dec + b_dec
    mse = ((x_hat - x) ** 2).mean()
    sparsity = (z * w_dec.norm(dim=1)).abs().sum(dim=1).mean()
    return mse + coef * sparsity, coef * sparsity


def test_value_and_gradients_match_a_plain_pytorch_relu_sae():
    net = aekit.Autoencoder([16, (32, "relu"), (16, "linear")], rng=0)
    with torch.no_grad():
        net.graph.layers["out"].w.mul_(torch.linspace(0.2, 3.0, 32)[:, None])  # decoder rows of many norms
    x = torch.from_numpy(data())
    total, terms = net.loss_terms(x, None, Regularizers.from_kwargs(decoder_weighted_l1=0.05), training=True)
    total.backward()
    params = {k: v.detach().clone().requires_grad_() for k, v in net.graph.named_parameters()}
    want, penalty = reference_loss(
        x,
        params["layers.hid1.w"],
        params["layers.hid1.b"],
        params["layers.out.w"],
        params["layers.out.b"],
        0.05,
    )
    want.backward()
    torch.testing.assert_close(terms["decoder_weighted_l1"].detach(), penalty.detach())
    torch.testing.assert_close(total.detach(), want.detach())
    for name, p in net.graph.named_parameters():
        torch.testing.assert_close(p.grad, params[name].grad, msg=name)


def test_a_tied_decoder_weighs_by_its_partners_columns():
    net = aekit.Autoencoder([16, (32, "relu"), (16, "tied")], rng=0)
    x = torch.from_numpy(data())
    _, terms = net.loss_terms(x, None, Regularizers.from_kwargs(decoder_weighted_l1=1.0), training=False)
    w = net.graph.layers["hid1"].w.detach()
    z = torch.relu(x @ w + net.graph.layers["hid1"].b.detach())
    torch.testing.assert_close(terms["decoder_weighted_l1"].detach(), (z * w.norm(dim=0)).sum(dim=1).mean())


def test_training_takes_autograds_path_and_gets_sparser():
    x = data(512)
    kwargs = dict(batch_size=64, max_epochs=10, validate_every=0, learning_rate=1e-2)
    plain = aekit.Autoencoder([16, (32, "relu"), (16, "linear")], rng=0)
    plain.train(x, **kwargs)
    sparse = aekit.Autoencoder([16, (32, "relu"), (16, "linear")], rng=0)
    trainer_steps = []
    for train_mon, _ in sparse.itertrain(x, decoder_weighted_l1=0.1, **kwargs):
        trainer_steps.append(train_mon)
    assert "decoder_weighted_l1" in trainer_steps[-1]
    l0 = [aekit.evaluate(n, x, metrics=["l0"])["l0"] for n in (plain, sparse)]
    assert l0[1] < 0.8 * l0[0], l0  # measured: 15.7 without, 10.6 with


def test_the_hand_derived_step_declines_the_penalty():
    from aekit.fused import DenseChainStep
    from aekit.train.step import StepRunner

    net = aekit.Autoencoder([16, (32, "relu"), (16, "linear")], rng=0)
    objective = net.objective(Regularizers.from_kwargs(decoder_weighted_l1=0.01))
    runner = StepRunner(objective, torch.optim.Adam(net.graph.parameters()))
    runner(torch.from_numpy(data(8)), None)
    assert runner.fast is None and "decoder_weighted_l1" in runner.keys
    assert DenseChainStep.build(net.objective(Regularizers())) is not None  # without it, the fast step


def test_decoder_weighted_l1_needs_a_decoded_layer():
    net = aekit.Autoencoder([16, (32, "relu"), (16, "linear")], rng=0)
    with pytest.raises(ConfigurationError, match="decoder_weighted_l1 pattern 'code' matches no hidden layer"):
        net.train(data(8), decoder_weighted_l1={"code": 0.1}, max_epochs=1)


def test_multik_decodes_four_times_the_budget_with_the_same_decoder():
    layers = [16, dict(size=40, activation="topk:3", name="code"), dict(size=16, constraint="unit_norm")]
    net = aekit.Autoencoder(layers, rng=0)
    with torch.no_grad():
        net.graph.layers["out"].b.copy_(torch.linspace(-1, 1, 16))
    x = data(32)
    _, terms = net.loss_terms(torch.from_numpy(x), None, Regularizers.from_kwargs(multik=0.125), training=False)
    outputs = net.feed_forward(x)
    pre = outputs["code:pre"]
    codes = np.zeros_like(pre)
    for i, row in enumerate(pre):  # a plain reference: the 12 largest, rectified
        keep = np.argsort(row)[-12:]
        codes[i, keep] = np.maximum(row[keep], 0)
    x_hat = codes @ net.graph.layers["out"].w.detach().numpy() + net.graph.layers["out"].b.detach().numpy()
    assert float(terms["multik"].detach()) == pytest.approx(0.125 * ((x_hat - x) ** 2).mean(), rel=1e-5)
    history = [m for m, _ in net.itertrain(x, multik=0.125, max_epochs=2, validate_every=0)]
    assert history[-1]["multik"] < history[0]["multik"]
    with pytest.raises(ConfigurationError, match="multik applies to a dense 'topk:K' layer"):
        aekit.Autoencoder([16, (40, "relu"), (16, "linear")]).train(x, multik=0.1, max_epochs=1)
