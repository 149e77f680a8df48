"""constraint='unit_norm': the maths against an explicit projector, every step path, a plain PyTorch
reference of the same constrained training, and the model file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import aekit
from aekit.model.constraints import normalize_rows_, remove_parallel_gradient
from aekit.train.fused import DenseChainStep

SAE = [16, (32, "relu"), dict(size=16, activation="linear", constraint="unit_norm")]


def data(n: int = 96, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 5)) @ rng.normal(size=(5, 16))).astype(np.float32)


def row_norms(net: aekit.Autoencoder) -> np.ndarray:
    return net.find("out", "w").detach().double().norm(dim=1).numpy()


def test_the_projection_is_the_orthogonal_projector_of_each_row():
    rng = np.random.default_rng(1)
    w = torch.from_numpy(rng.normal(size=(7, 5)))
    g = torch.from_numpy(rng.normal(size=(7, 5)))
    got = remove_parallel_gradient(w, g).numpy()
    for i in range(7):
        u = w[i].numpy() / np.linalg.norm(w[i].numpy())
        projector = np.eye(5) - np.outer(u, u)  # I - u u^T, independently of the library's formula
        np.testing.assert_allclose(got[i], projector @ g[i].numpy(), rtol=1e-12, atol=1e-12)
        assert abs(got[i] @ w[i].numpy()) < 1e-12
    normalize_rows_(w)
    np.testing.assert_allclose(w.norm(dim=1).numpy(), 1.0, rtol=1e-15)


def test_a_constrained_decoder_starts_with_unit_rows_and_keeps_its_config():
    net = aekit.Autoencoder(SAE, rng=0)
    np.testing.assert_allclose(row_norms(net), 1.0, rtol=1e-6)
    assert net.specs[-1].constraint == "unit_norm"
    assert net.config()["layers"][-1]["constraint"] == "unit_norm"
    plain = aekit.Autoencoder([16, (32, "relu"), (16, "linear")], rng=0)
    assert not np.allclose(row_norms(plain), 1.0, rtol=1e-3)  # the constraint is what normalises


@pytest.mark.parametrize(
    "path",
    [
        dict(),  # the hand-derived step with the lean fused Adam update
        dict(algo="sgd", learning_rate=0.05),
        dict(algo="lbfgs", batch_size=96),
        dict(precision="bf16"),
        dict(max_gradient_norm=0.5, hidden_l1=1e-3),
        dict(input_dropout=0.1),
    ],
    ids=["fused-adam", "sgd", "lbfgs", "bf16", "clipped-l1", "dropout"],
)
def test_every_step_path_keeps_unit_rows(path):
    net = aekit.Autoencoder(SAE, rng=0)
    before = net.find("out", "w").detach().clone()
    options = dict(batch_size=16, max_epochs=3, validate_every=0) | path
    net.train(data(), **options)
    assert not torch.equal(before, net.find("out", "w"))  # it trained
    np.testing.assert_allclose(row_norms(net), 1.0, rtol=1e-5)


def test_the_autograd_path_also_projects(monkeypatch):
    # Without the hand-derived step, a composed activation forces autograd's path.
    monkeypatch.setattr(DenseChainStep, "build", classmethod(lambda cls, *args: None))
    net = aekit.Autoencoder(SAE, rng=0)
    net.train(data(), batch_size=16, max_epochs=2, validate_every=0)
    np.testing.assert_allclose(row_norms(net), 1.0, rtol=1e-5)


def _reference_run(
    net: aekit.Autoencoder, x: np.ndarray, lr: float, batch: int, epochs: int, constrained: bool = True
) -> torch.Tensor:
    """The same constrained SAE trained by hand in plain PyTorch: SGD, MSE, no shuffling."""
    w1 = net.find("hid1", "w").detach().clone().requires_grad_()
    b1 = net.find("hid1", "b").detach().clone().requires_grad_()
    w2 = net.find("out", "w").detach().clone().requires_grad_()
    b2 = net.find("out", "b").detach().clone().requires_grad_()
    optimizer = torch.optim.SGD([w1, b1, w2, b2], lr=lr)
    xt = torch.from_numpy(x)
    for _ in range(epochs):
        for start in range(0, len(xt), batch):
            xb = xt[start : start + batch]
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(torch.relu(xb @ w1 + b1) @ w2 + b2, xb)
            loss.backward()
            if not constrained:
                optimizer.step()
                continue
            with torch.no_grad():  # the decoder rows' gradients, minus their radial part
                unit = w2 / w2.norm(dim=1, keepdim=True)
                w2.grad -= (w2.grad * unit).sum(dim=1, keepdim=True) * unit
            optimizer.step()
            with torch.no_grad():
                w2 /= w2.norm(dim=1, keepdim=True)
    return w2.detach()


@pytest.mark.parametrize("fused", [True, False], ids=["hand-derived", "autograd"])
def test_training_equals_a_plain_pytorch_reference(fused, monkeypatch):
    if not fused:
        monkeypatch.setattr(DenseChainStep, "build", classmethod(lambda cls, *args: None))
    x = data()
    net = aekit.Autoencoder(SAE, rng=3)
    want = _reference_run(net, x, lr=0.05, batch=16, epochs=3)
    net.train(
        x, algo="sgd", momentum=0.0, learning_rate=0.05, batch_size=16, max_epochs=3, validate_every=0, shuffle=False
    )
    torch.testing.assert_close(net.find("out", "w").detach(), want, rtol=1e-5, atol=1e-6)
    # And the constraint changed the training: the same run without it ends elsewhere.
    free = _reference_run(aekit.Autoencoder(SAE, rng=3), x, lr=0.05, batch=16, epochs=3, constrained=False)
    assert (free - want).abs().max() > 1e-3


def test_the_constraint_is_saved_and_resumes_in_a_model_file(tmp_path):
    net = aekit.Autoencoder(SAE, rng=0)
    net.train(data(), batch_size=16, max_epochs=1, validate_every=0)
    net.save(tmp_path / "sae.aekit")
    loaded = aekit.load(tmp_path / "sae.aekit")
    assert loaded.specs[-1].constraint == "unit_norm"
    np.testing.assert_array_equal(loaded.predict(data(8)), net.predict(data(8)))
    loaded.train(data(), batch_size=16, max_epochs=1, validate_every=0, learning_rate=0.1)
    np.testing.assert_allclose(row_norms(loaded), 1.0, rtol=1e-5)


@pytest.mark.parametrize(
    "layers, message",
    [
        ([16, (32, "relu"), dict(size=16, constraint="unit_nrom")], "did you mean 'unit_norm'"),
        ([16, (32, "relu"), dict(form="tied", constraint="unit_norm")], "applies to dense layers"),
        ([(1, 4, 4), dict(form="conv2", channels=2, constraint="unit_norm"), dict(form="tied")], "dense layers"),
    ],
)
def test_bad_constraints_are_named(layers, message):
    with pytest.raises(aekit.ConfigurationError, match=message):
        aekit.Autoencoder(layers)


def test_torch_optim_step_hooks_run_on_the_fused_adam_path():
    # A hook registered the torch.optim way is honoured even where aekit skips optimizer.step().
    from aekit.train.callbacks import Callback

    calls = []

    class Hook(Callback):
        def on_train_begin(self, trainer):
            trainer.optimizer.register_step_post_hook(lambda optimizer, args, kwargs: calls.append(1))

    net = aekit.Autoencoder(SAE, rng=0)
    net.train(data(), batch_size=16, max_epochs=2, validate_every=0, callbacks=[Hook()])
    assert len(calls) == 2 * 96 // 16
