"""The sparse fast path of top-k codes (aekit.model.sparse_decode) against the dense path and plain PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import aekit
from aekit.errors import ConfigurationError
from aekit.model import sparse_decode as sd
from aekit.model.sparsity import topk_relu
from aekit.objective import Regularizers

N, D, L, K = 9, 6, 48, 4


@pytest.fixture(params=["csr", "index_add"])
def route(request, monkeypatch):
    """Both forms of the sums over chosen latents: CSR products (CPU) and index_add_/gathers (other devices)."""
    if request.param == "index_add":
        monkeypatch.setattr(sd, "CSR_DEVICES", ())
    return request.param


def _tensors(seed=0):
    g = torch.Generator().manual_seed(seed)

    def make(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)

    return make(N, D), make(D, L), make(L), make(L, D), make(D)


def test_functions_pass_gradcheck(route):
    x, we, be, wd, bd = _tensors()
    assert torch.autograd.gradcheck(lambda x, w, b: sd.TopKEncode.apply(x, w, b, K)[0], (x, we, be))
    # The pre-activation's dense gradient is added to the values' sparse one.
    assert torch.autograd.gradcheck(
        lambda x, w, b: [t for i, t in enumerate(sd.TopKEncode.apply(x, w, b, K)) if i != 1], (x, we, be)
    )
    values, indices, _ = sd.TopKEncode.apply(x, we, be, K)
    values = values.detach().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v, w, b: sd.SparseDecode.apply(v, indices, w, b), (values, wd, bd))


def test_encode_decode_equals_dense_autograd_in_float64(route):
    """Outputs and every gradient equal those of plain PyTorch (topk_relu, dense products) to rounding."""
    x, we, be, wd, bd = _tensors(1)
    grad_out = torch.randn(N, D, dtype=torch.float64)

    def loss(out, pre, code):
        # The reconstruction, a penalty on the code, and one on the pre-activation (an auxiliary loss's way).
        return (out * grad_out).sum() + code.abs().sum() + 0.1 * (pre**2).sum()

    values, indices, pre = sd.TopKEncode.apply(x, we, be, K)
    code = sd.SparseCode(values, indices, L)
    out = sd.SparseDecode.apply(values, indices, wd, bd)
    sparse_grads = torch.autograd.grad(loss(out, pre, code.dense()), (x, we, be, wd, bd))

    pre_ref = x @ we + be
    code_ref = topk_relu(pre_ref, K)
    out_ref = code_ref @ wd + bd
    dense_grads = torch.autograd.grad(loss(out_ref, pre_ref, code_ref), (x, we, be, wd, bd))

    assert torch.equal(code.dense(), code_ref)
    assert (indices.diff(dim=1) > 0).all()  # increasing along rows
    torch.testing.assert_close(out, out_ref, rtol=0, atol=1e-12)
    for got, want in zip(sparse_grads, dense_grads):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_zero_values_pass_no_gradient():
    """Fewer than K positive pre-activations: the kept zeros (ReLU at 0) get no gradient, as torch's relu."""
    x = torch.zeros(2, 3, dtype=torch.float64)
    w = torch.zeros(3, 10, dtype=torch.float64, requires_grad=True)
    b = torch.tensor([1.0, 2.0] + [-1.0] * 8, dtype=torch.float64, requires_grad=True)
    values, indices, _ = sd.TopKEncode.apply(x, w, b, 4)
    (grad_b,) = torch.autograd.grad(values.sum(), b)
    assert grad_b.tolist() == [2.0, 2.0] + [0.0] * 8


def _sae(latents=L, k=K, **decoder):
    return aekit.Autoencoder(
        [D, dict(size=latents, activation=f"topk:{k}", name="code"), dict(size=D, activation="linear", **decoder)],
        rng=3,
    )


def _terms_and_grads(net, x, mode, regs):
    net.graph.zero_grad(set_to_none=True)
    with sd.sparse_mode(mode):
        total, terms = net.objective(regs)(x, None, training=True)
    total.backward()
    return terms, {n: p.grad.clone() for n, p in net.graph.named_parameters()}


@pytest.mark.parametrize("regs", [Regularizers(), Regularizers.from_kwargs(hidden_l1=0.5, weight_l2=0.01)])
def test_the_model_s_objective_is_the_dense_one(regs):
    """The whole objective (losses, penalties that read the code) and every gradient, both paths, float64."""
    net = _sae(constraint="unit_norm")
    net.graph.double()
    x = torch.randn(N, D, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    sparse_terms, sparse_grads = _terms_and_grads(net, x, "always", regs)
    dense_terms, dense_grads = _terms_and_grads(net, x, "never", regs)
    assert list(sparse_terms) == list(dense_terms)
    for key in dense_terms:
        torch.testing.assert_close(sparse_terms[key], dense_terms[key], rtol=0, atol=1e-12)
    for name in dense_grads:
        torch.testing.assert_close(sparse_grads[name], dense_grads[name], rtol=0, atol=1e-12)


def test_training_and_inference_match_the_dense_path_and_keep_the_constraint():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, D)).astype(np.float32)
    results = {}
    for mode in ("always", "never"):
        with sd.sparse_mode(mode):
            net = _sae(constraint="unit_norm")
            net.train(x, batch_size=32, max_epochs=2)
            results[mode] = (net.predict(x), net.encode(x), net.score(x), aekit.evaluate(net, x), net)
    sparse, dense = results["always"], results["never"]
    np.testing.assert_allclose(sparse[0], dense[0], atol=1e-4)
    np.testing.assert_allclose(sparse[1], dense[1], atol=1e-4)
    assert sparse[2] == pytest.approx(dense[2], abs=1e-5)
    assert sparse[3]["l0"] == dense[3]["l0"] == K
    assert ((sparse[1] != 0).sum(axis=1) == K).all()
    w = sparse[4].find("out", "w").detach()
    torch.testing.assert_close(w.norm(dim=1), torch.ones(L), atol=1e-5, rtol=0)


def test_the_dense_code_is_made_only_when_read():
    net = _sae()
    x = torch.randn(5, D)
    with sd.sparse_mode("always"), torch.no_grad():
        outputs = net.graph(x)
        assert "code" in outputs.codes and dict.__getitem__(outputs, "code:out") is not None
        raw = dict.__getitem__(outputs, "code:out")
        assert not isinstance(raw, torch.Tensor)  # not made yet
        for reader in (lambda o: dict(o), lambda o: {**o}, lambda o: dict(o.items()), lambda o: o.copy()):
            assert all(isinstance(v, torch.Tensor) for v in reader(outputs).values())
        assert isinstance(outputs.get("code:out"), torch.Tensor)
        with sd.sparse_mode("never"):
            dense = net.graph(x)
        for key in dense:
            torch.testing.assert_close(outputs[key], dense[key])


def test_which_models_take_the_sparse_path(monkeypatch):
    layers_of = lambda net: net.graph.layers  # noqa: E731
    net = _sae()
    sources = net.graph.sources
    with sd.sparse_mode("auto"):
        assert sd.sparse_pairs(layers_of(net), sources) == ({"code": "out"} if L >= sd.AUTO_RATIO * K else {})
        wide = _sae(latents=sd.AUTO_RATIO * K)
        assert sd.sparse_pairs(wide.graph.layers, wide.graph.sources) == {"code": "out"}
        narrow = _sae(latents=sd.AUTO_RATIO * K - 1)
        assert sd.sparse_pairs(narrow.graph.layers, narrow.graph.sources) == {}
    with sd.sparse_mode("always"):
        assert sd.sparse_pairs(layers_of(net), sources, stop="code") == {}  # encode: no decoder runs
        assert sd.sparse_pairs(layers_of(net), sources, corrupted=("code",)) == {}  # hidden noise/dropout
        batch = aekit.Autoencoder([D, dict(size=L, activation=f"batchtopk:{K}", name="code"), (D, "linear")])
        assert sd.sparse_pairs(batch.graph.layers, batch.graph.sources) == {}
        composed = aekit.Autoencoder([D, dict(size=L, activation=f"topk:{K}+norm:max", name="code"), (D, "linear")])
        assert sd.sparse_pairs(composed.graph.layers, composed.graph.sources) == {}
        tied = aekit.Autoencoder([D, dict(size=L, activation=f"topk:{K}", name="code"), (D, "tied")])
        assert sd.sparse_pairs(tied.graph.layers, tied.graph.sources) == {}
    with sd.sparse_mode("never"):
        assert sd.sparse_pairs(layers_of(net), sources) == {}
    for value, expected in (("never", {}), ("dense", {}), ("always", {"code": "out"}), ("1", {"code": "out"})):
        monkeypatch.setenv("AEKIT_SPARSE_DECODE", value)
        assert sd.sparse_pairs(layers_of(net), sources) == expected
    monkeypatch.setenv("AEKIT_SPARSE_DECODE", "sometimes")
    with pytest.raises(ConfigurationError, match="AEKIT_SPARSE_DECODE must be one of"):
        sd.get_mode()
    with pytest.raises(ConfigurationError, match="sparse_mode takes"):
        with sd.sparse_mode("maybe"):
            pass


def test_a_layer_that_does_more_in_forward_takes_the_dense_path():
    """A subclass (a later change) with its own forward or transform is not bypassed by the sparse methods."""
    net = _sae()
    code = net.graph.layers["code"]

    class Counting(type(code)):  # type: ignore[misc]
        def forward(self, x):
            return super().forward(x)

    with sd.sparse_mode("always"):
        assert sd.sparse_pairs(net.graph.layers, net.graph.sources) == {"code": "out"}
        code.__class__ = Counting
        assert sd.sparse_pairs(net.graph.layers, net.graph.sources) == {}


def test_torch_func_transforms_take_the_dense_path():
    """Per-example Jacobians (a contractive penalty's) through a sparse pair: dense there, same values."""
    net = _sae()
    x = torch.randn(3, D)

    def output(example):
        return net.graph(example.unsqueeze(0))["out:out"].flatten()

    with sd.sparse_mode("always"):
        jac = torch.func.vmap(torch.func.jacrev(output))(x)
    with sd.sparse_mode("never"):
        want = torch.func.vmap(torch.func.jacrev(output))(x)
    torch.testing.assert_close(jac, want)


def test_a_shift_given_apart_has_the_gradient_of_subtracting_it():
    # The SAE recipe's pre-encoder bias: TopKEncode(x, w, b, k, shift) is TopKEncode(x - shift, w, b, k), and the
    # shift's gradient (a matrix-vector product) is that of the subtraction, with and without a gradient on pre.
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(9, 6, dtype=torch.float64, generator=gen)
    w = torch.randn(6, 20, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(20, dtype=torch.float64, generator=gen, requires_grad=True)
    shift = torch.randn(6, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w, b, s: sd.TopKEncode.apply(x, w, b, 4, s)[0], (w, b, shift))
    assert torch.autograd.gradcheck(lambda w, b, s: sd.TopKEncode.apply(x, w, b, 4, s)[2], (w, b, shift))
    values, _, pre = sd.TopKEncode.apply(x, w, b, 4, shift)
    got = torch.autograd.grad(values.square().sum() + pre.sum(), (w, b, shift))
    values, _, pre = sd.TopKEncode.apply(x - shift, w, b, 4)
    want = torch.autograd.grad(values.square().sum() + pre.sum(), (w, b, shift))
    for g, h in zip(got, want):
        torch.testing.assert_close(g, h, rtol=1e-12, atol=1e-12)
