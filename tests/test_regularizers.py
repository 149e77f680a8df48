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
    [
        dict(weight_l1=0.1),
        dict(weight_l2=0.1),
        dict(hidden_l1=0.1),
        dict(hidden_l2=0.1),
        dict(sparsity_target=0.1, sparsity_weight=3.0),
        dict(contractive=0.5),
    ],
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
    expected = ((h * (1 - h)) ** 2 * (w**2).sum(0)).sum(1).mean()
    assert torch.isclose(net._jacobian_norm(x, "hid1"), expected)


def _jacobian_reference(net, x, layer):
    """Mean ||d layer:out / d x||_F^2 from one full automatic Jacobian per example (the definition)."""

    def code(example):
        return net.graph(example.unsqueeze(0), stop=layer)[f"{layer}:out"].flatten()

    return torch.stack(
        [torch.autograd.functional.jacobian(code, e, create_graph=True).square().sum() for e in x]
    ).mean()


@pytest.mark.parametrize(
    "activation",
    [
        "sigmoid",
        "tanh",
        "relu",
        "softplus",
        "elu",
        "gelu",
        "leaky-relu",
        "linear",
        "rect:minmax",
        "prelu",
        "tanh+prelu",
    ],
)
def test_closed_form_contractive_penalty_equals_the_per_example_jacobians(activation, monkeypatch):
    layers = [(1, 3, 3), (5, activation), (9, "linear")] if activation == "tanh" else [9, (5, activation), (9, "tied")]
    net = _double_net(layers, rng=3)
    x = torch.rand(7, *((1, 3, 3) if activation == "tanh" else (9,)), dtype=torch.float64).mul(2).sub(1)
    params = [p for n, p in net.graph.named_parameters() if n.startswith("layers.hid1.")]
    expected = _jacobian_reference(net, x, "hid1")
    expected_grads = torch.autograd.grad(expected, params, allow_unused=True, materialize_grads=True)
    # The closed form must not build per-example Jacobians at all.
    monkeypatch.setattr(torch.func, "jacrev", lambda *a, **k: pytest.fail("per-example Jacobians were built"))
    got = net._jacobian_norm(x, "hid1")
    assert torch.allclose(got, expected, rtol=1e-10, atol=1e-12)
    for g, e in zip(torch.autograd.grad(got, params, allow_unused=True, materialize_grads=True), expected_grads):
        assert torch.allclose(g, e, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "layers",
    [
        [6, (5, "sigmoid"), (3, "tanh"), (5, "sigmoid"), (6, "linear")],  # two layers, wider than the input
        [6, (4, "softplus"), (3, "prelu"), (4, "relu"), (6, "linear")],  # narrower: through w_1^T w_1
        [(1, 2, 3), (8, "elu"), (5, "gelu"), (2, "tanh"), (5, "linear"), (8, "sigmoid"), (6, "linear")],
    ],
)
def test_closed_form_contractive_penalty_of_deeper_code_layers(layers, monkeypatch):
    net = _double_net(layers, rng=4)
    x = torch.rand(6, *net.graph.input_shape, dtype=torch.float64).mul(2).sub(1)
    layer = net.code_layer
    params = [p for n, p in net.graph.named_parameters() if n.split(".")[1] in ("hid1", "hid2", "hid3")]
    expected = _jacobian_reference(net, x, layer)
    expected_grads = torch.autograd.grad(expected, params, allow_unused=True, materialize_grads=True)
    monkeypatch.setattr(torch.func, "jacrev", lambda *a, **k: pytest.fail("per-example Jacobians were built"))
    got = net._jacobian_norm(x, layer)
    assert torch.allclose(got, expected, rtol=1e-10, atol=1e-12)
    for g, e in zip(torch.autograd.grad(got, params, allow_unused=True, materialize_grads=True), expected_grads):
        assert torch.allclose(g, e, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "layers",
    [
        [6, (4, "softmax"), (6, "linear")],  # units mixed: not elementwise
        [6, dict(size=4, activation="sigmoid", batch_norm=True), (6, "linear")],
        [6, (5, "sigmoid"), (3, "tanh+norm:mean"), (5, "sigmoid"), (6, "linear")],  # a chain, one layer not elementwise
        [6, (5, "prelu"), (3, "softmax"), (5, "sigmoid"), (6, "linear")],  # prelu under vmap (this crashed once)
    ],
)
def test_other_code_layers_keep_the_per_example_jacobians(layers):
    net = _double_net(layers, rng=5)
    net.graph.eval()  # batch norm: running statistics, the same for one example and for many
    x = torch.rand(5, 6, dtype=torch.float64)
    layer = net.code_layer
    assert torch.allclose(net._jacobian_norm(x, layer), _jacobian_reference(net, x, layer), rtol=1e-10)


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_contractive_penalty_of_a_conv_code_layer(padding):
    # Convolutions run channels-last, which torch.func's batched tensors do not have: the per-example
    # Jacobians must still go through (this crashed once).
    layers = [
        (1, 6, 6),
        {"form": "conv2", "channels": 2, "stride": 2, "padding": padding, "activation": "tanh+prelu"},
        "tied",
    ]
    net = _double_net(layers, rng=5)
    x = torch.rand(3, 1, 6, 6, dtype=torch.float64)
    assert torch.allclose(net._jacobian_norm(x, "hid1"), _jacobian_reference(net, x, "hid1"), rtol=1e-10)
    trained = aekit.Autoencoder(layers, rng=5)
    trained.train(x.float().numpy(), contractive=0.1, max_epochs=2, validate_every=0)
    assert trained.history[-1]["train"]["contractive"] > 0


def test_contractive_training_follows_the_reference_objective(monkeypatch):
    # Training with the closed form (the hand-derived step, then autograd's path) matches training
    # whose penalty is the per-example definition, through autograd.
    from aekit.fused import DenseChainStep

    x = np.random.default_rng(0).random((40, 9)).astype(np.float32)
    finals = []
    for path in ("hand-derived", "autograd", "reference"):
        net = aekit.Autoencoder([9, (4, "sigmoid"), (9, "sigmoid")], rng=2)
        if path != "hand-derived":
            monkeypatch.setattr(DenseChainStep, "build", classmethod(lambda cls, *args: None))
        if path == "reference":
            monkeypatch.setattr(
                aekit.objective.jacobian,
                "jacobian_norm",
                lambda graph, batch, layer, net=net: _jacobian_reference(net, batch, layer),
            )
        net.train(x, contractive=0.3, max_epochs=3, batch_size=8, validate_every=0, shuffle=False)
        finals.append(net.find("hid1", "w").detach().clone())
    plain = aekit.Autoencoder([9, (4, "sigmoid"), (9, "sigmoid")], rng=2)
    plain.train(x, max_epochs=3, batch_size=8, validate_every=0, shuffle=False)
    assert (finals[2] - plain.find("hid1", "w")).abs().max() > 1e-3  # the penalty did change the training
    for got in finals[:2]:
        assert torch.allclose(got, finals[2], atol=1e-5)


def test_contractive_training_flattens_the_code_around_held_out_digits(digits):
    # What the penalty is for (Rifai et al. 2011): a code less sensitive to its input, on data it
    # was not trained on, while it still reconstructs.
    x, _ = digits
    held_out = torch.from_numpy(x[1400:])
    jacobians, scores = [], []
    for lam in (0.0, 0.003):
        net = aekit.Autoencoder([64, (32, "sigmoid"), (64, "sigmoid")], rng=1)
        net.train(x[:1400], contractive=lam, max_epochs=15, validate_every=0, batch_size=32)
        with torch.no_grad():
            jacobians.append(float(net._jacobian_norm(held_out, "hid1")))
        scores.append(net.score(x[1400:]))
    assert jacobians[1] < 0.5 * jacobians[0]
    assert scores[1] > 0.5 * scores[0] > 0


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
        (dict(hidden_l1={"hidden1": 0.1}), "hidden_l1 pattern 'hidden1' matches no hidden layer .*did you mean 'hid1'"),
        (
            dict(weight_l2={"hid1.W": 0.1}),
            "weight_l2 pattern 'hid1.W' matches no weight matrix .*did you mean 'hid1.w'",
        ),
        (dict(hidden_dropout={"out": 0.5}), "hidden_dropout pattern 'out' matches no hidden layer"),
        (dict(contractive={"hid9": 1.0}), "contractive pattern 'hid9' matches no hidden layer"),
        (dict(sparsity_target=0.1, sparsity_weight={"hid1": 3.0}), r"outputs in \[0, 1\].*chooses only hid1 \(relu\)"),
    ],
)
def test_patterns_that_choose_nothing_are_refused(kwargs, message):
    # theanets trained on without the penalty; here train() and loss() both refuse, before any step.
    net = aekit.Autoencoder([10, (6, "relu"), (3, "sigmoid"), (10, "linear")], rng=0)
    x = np.random.default_rng(0).random((20, 10)).astype(np.float32)
    before = [p.detach().clone() for p in net.params]
    for call in (lambda: net.train(x, max_epochs=1, **kwargs), lambda: net.loss(x, **kwargs)):
        with pytest.raises(ConfigurationError, match=message):
            call()
    assert all(torch.equal(a, b) for a, b in zip(before, net.params))
    # A pattern that does choose something trains: hid2 is a sigmoid layer.
    if "sparsity_weight" in kwargs:
        net.train(x, max_epochs=1, sparsity_target=0.1, sparsity_weight={"hid2": 3.0})


def test_hidden_penalties_need_a_hidden_layer():
    net = aekit.Autoencoder([10, (10, "linear")])
    with pytest.raises(
        ConfigurationError, match="hidden_l1 pattern '\\*' matches nothing: this Autoencoder has no hidden layer"
    ):
        net.loss(np.ones((4, 10), np.float32), hidden_l1=0.1)


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


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        (dict(input_noise=0.3), 0.09),  # E (x + 0.3 e - x)^2 = 0.3^2
        (dict(hidden_noise=0.3), 0.09),
        (dict(input_dropout=0.25), 1 / 3),  # E (x m / (1 - p) - x)^2 = x^2 p / (1 - p), x = 1
        (dict(hidden_dropout=0.25), 1 / 3),
    ],
)
def test_noise_and_dropout_have_their_stated_statistics(kwargs, expected):
    # An identity chain passes its corruption straight to the output, so the training loss of
    # x = 1 is the corruption's mean square; over 400,000 values its standard error is < 0.5%.
    net = aekit.Autoencoder([4, (4, "linear"), (4, "linear")])
    with torch.no_grad():
        for layer in ("hid1", "out"):
            net.find(layer, "w").copy_(torch.eye(4))
            net.find(layer, "b").zero_()
    x = np.ones((100_000, 4), np.float32)
    assert net.loss(x).item() == 0.0
    assert net.loss(x, **kwargs).item() == pytest.approx(expected, rel=0.02)


# ---------------------------------------------------------------------- the noise functions themselves
N_DRAWS = 200_000  # tolerances below are 5 standard errors of these many draws


@pytest.mark.parametrize("std", [0.1, 2.0])
def test_gaussian_noise_adds_zero_mean_noise_of_the_given_std(std):
    torch.manual_seed(1)
    x = torch.rand(400, 500) * 4 - 2
    before = x.clone()
    noise = (R.gaussian_noise(x, std) - x).double().flatten()
    assert torch.equal(x, before)  # not in place
    n = noise.numel()
    assert n == N_DRAWS
    assert abs(noise.mean().item()) < 5 * std / n**0.5
    assert noise.std().item() == pytest.approx(std, abs=5 * std / (2 * n) ** 0.5)
    # Gaussian, not merely of that variance: 68.27% of draws lie within one std.
    inside = (noise.abs() < std).double().mean().item()
    assert inside == pytest.approx(0.682689, abs=5 * (0.682689 * 0.317311 / n) ** 0.5)
    # Independent of x.
    corr = np.corrcoef(noise.numpy(), x.double().flatten().numpy())[0, 1]
    assert abs(corr) < 5 / n**0.5


@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_dropout_zeros_a_fraction_p_and_rescales_the_rest(p):
    torch.manual_seed(2)
    x = torch.rand(400, 500) + 1.0  # no zeros of its own
    before = x.clone()
    out = R.dropout(x, p)
    assert torch.equal(x, before)
    n = x.numel()
    dropped = out == 0
    assert dropped.double().mean().item() == pytest.approx(p, abs=5 * (p * (1 - p) / n) ** 0.5)
    kept = ~dropped
    torch.testing.assert_close(out[kept], x[kept] / (1 - p), rtol=1e-6, atol=0)
    # So the expectation is kept: E[out - x] = 0, with variance x^2 p / (1 - p) per element.
    diff = (out - x).double()
    se = ((x.double() ** 2).mean().item() * p / (1 - p) / n) ** 0.5
    assert abs(diff.mean().item()) < 5 * se


def test_zero_noise_and_zero_dropout_return_the_input_itself():
    x = torch.rand(7, 3, requires_grad=True)
    assert R.gaussian_noise(x, 0.0) is x
    assert R.gaussian_noise(x, 0) is x
    assert R.dropout(x, 0.0) is x
    assert R.dropout(x, 0) is x
    state = torch.get_rng_state()
    R.gaussian_noise(x, 0.0), R.dropout(x, 0.0)
    assert torch.equal(torch.get_rng_state(), state)  # nothing drawn


def test_noise_and_dropout_masks_follow_torchs_generator():
    x = torch.rand(50, 20) + 1.0
    torch.manual_seed(5)
    a, b = R.gaussian_noise(x, 0.3), R.dropout(x, 0.5)
    torch.manual_seed(5)
    assert torch.equal(R.gaussian_noise(x, 0.3), a) and torch.equal(R.dropout(x, 0.5), b)
    assert not torch.equal(R.gaussian_noise(x, 0.3), a)  # a fresh draw without reseeding
