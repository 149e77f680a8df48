import numpy as np
import pytest
import torch

import aekit
from aekit import ConfigurationError, DataError


@pytest.fixture
def small():
    return np.random.default_rng(0).random((40, 12)).astype(np.float32)


def test_shapes_of_every_output(small):
    net = aekit.Autoencoder([12, (6, "relu"), (3, "sigmoid"), (6, "tied"), (12, "tied")])
    assert net.code_layer == "hid2"
    assert net.encode(small).shape == (40, 3)
    assert net.encode(small, layer="hid1").shape == (40, 6)
    assert net.encode(small, layer=1).shape == (40, 6)
    assert net.decode(net.encode(small)).shape == (40, 12)
    outputs = net.feed_forward(small)
    assert sorted(outputs) == sorted(
        ["in:out"] + [f"{n}:{k}" for n in ("hid1", "hid2", "hid3", "out") for k in ("pre", "out")]
    )
    np.testing.assert_allclose(outputs["out:out"], net.predict(small), rtol=1e-6)
    np.testing.assert_allclose(net.decode(outputs["hid2:out"]), net.predict(small), rtol=1e-5, atol=1e-6)


def test_tied_weights_are_shared_not_copied():
    net = aekit.Autoencoder([12, (6, "relu"), (12, "tied")])
    w = net.find("hid1", "w")
    assert w.shape == (12, 6)
    assert net.num_params == 12 * 6 + 6 + 12
    with torch.no_grad():
        w.zero_()
    out = net.feed_forward(np.ones((2, 12), np.float32))
    np.testing.assert_allclose(out["out:out"], 0.0)
    with pytest.raises(ConfigurationError, match="shares 'hid1'.w"):
        net.find("out", "w")


def test_layers_are_not_seeded_alike_and_biases_start_at_zero():
    net = aekit.Autoencoder([10, (10, "tanh"), (10, "tanh"), 10])
    w1, w2 = net.find("hid1", "w"), net.find("hid2", "w")
    assert not torch.allclose(w1, w2)
    for layer in ("hid1", "hid2", "out"):
        assert torch.count_nonzero(net.find(layer, "b")) == 0
    again = aekit.Autoencoder([10, (10, "tanh"), (10, "tanh"), 10])
    assert torch.equal(again.find("hid1", "w"), w1)


def test_init_keys():
    net = aekit.Autoencoder([50, dict(size=40, std=0.0, mean=2.0, mean_b=1.0), dict(size=50, diagonal=1.0)])
    assert torch.all(net.find("hid1", "w") == 2.0) and torch.all(net.find("hid1", "b") == 1.0)
    assert torch.equal(net.find("out", "w"), torch.eye(40, 50))
    sparse = aekit.Autoencoder([100, dict(size=100, sparsity=0.9)])
    zeros = (sparse.find("out", "w") == 0).float().mean().item()
    assert 0.85 < zeros < 0.95


def test_score_is_sklearn_r2(small):
    from sklearn.metrics import r2_score

    net = aekit.Autoencoder([12, (6, "relu"), 12])
    expected = r2_score(small, net.predict(small), multioutput="variance_weighted")
    assert np.isclose(net.score(small), expected, atol=1e-6)


def test_score_refuses_bad_weights_with_a_data_error(small):
    net = aekit.Autoencoder([12, (6, "relu"), 12])
    ones = np.ones_like(small)
    assert net.score(small, ones) == pytest.approx(net.score(small))
    bad_shape, negative, not_finite = ones[:, :5], -ones, ones.copy()
    not_finite[3, 4] = np.nan
    for w, message in ((bad_shape, "w"), (negative, "w must be >= 0"), (not_finite, "w")):
        with pytest.raises(DataError, match=message) as caught:
            net.score(small, w)
        assert "\n" not in str(caught.value)


def test_sampled_codes_are_binary(small):
    net = aekit.Autoencoder([12, (6, "sigmoid"), 12])
    codes = net.encode(small, sample=True)
    assert set(np.unique(codes)) <= {0.0, 1.0}
    # Bernoulli draws with the encoder's probabilities: over 4000 copies of each example the mean
    # of the samples is the probability (the standard error is at most 0.008; 0.04 is 5 of it).
    copies = net.encode(np.tile(small, (4000, 1)), sample=True).reshape(4000, *small.shape[:1], 6)
    np.testing.assert_allclose(copies.mean(axis=0), net.encode(small), atol=0.04)
    with pytest.raises(ConfigurationError, match="sample=True needs codes in \\[0, 1\\]"):
        aekit.Autoencoder([12, (6, "linear"), 12]).encode(small - 5, sample=True)


def test_inputs_may_be_tensors_and_lists(small):
    net = aekit.Autoencoder([12, 4, 12])
    a = net.predict(small)
    np.testing.assert_array_equal(net.predict(torch.from_numpy(small)), a)
    np.testing.assert_allclose(net.predict(small.tolist()), a, rtol=1e-6)
    assert isinstance(net.encode(small), np.ndarray)


@pytest.mark.parametrize(
    "x, error, message",
    [
        (np.zeros((5, 11)), DataError, "x has 11 features, but this Autoencoder expects 12 \\(layer 'in'\\)"),
        (np.zeros(12), DataError, "x must be 2-D"),
        (np.zeros((0, 12)), DataError, "x is empty"),
        (np.array([["a"] * 12]), DataError, "x must hold real numbers"),
        (np.full((3, 12), np.nan), DataError, "NaN or infinite values \\(first in row 0\\)"),
        ([[1, 2], [3]], DataError, "rectangular"),
        ("data.csv", DataError, "2-D numeric array"),
        (np.zeros((2, 12), dtype=complex), DataError, "real numbers"),
    ],
)
def test_malformed_arrays_get_the_documented_error(x, error, message):
    net = aekit.Autoencoder([12, 4, 12])
    with pytest.raises(error, match=message):
        net.predict(x)
    with pytest.raises(error, match=message):
        net.train(x, max_epochs=1)


def test_devices_are_cpu_cuda_or_auto():
    layers = [4, (2, "relu"), (4, "linear")]
    assert aekit.Autoencoder(layers, device="auto").device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    for device in ("meta", "nope", 1.5):
        with pytest.raises(aekit.ConfigurationError, match="device must be 'auto', 'cpu' or 'cuda"):
            aekit.Autoencoder(layers, device=device)
    # A GPU this machine does not have: the documented error, not torch's AssertionError.
    missing = f"cuda:{torch.cuda.device_count()}"
    with pytest.raises(aekit.ConfigurationError, match=f"device '{missing}' asked for, but this machine has"):
        aekit.Autoencoder(layers, device=missing)


def test_unknown_layer_names():
    net = aekit.Autoencoder([12, 4, 12])
    with pytest.raises(ConfigurationError, match="did you mean 'hid1'"):
        net.encode(np.zeros((2, 12)), layer="hid")
    with pytest.raises(ConfigurationError, match="layer index"):
        net.find(7, "w")


def test_add_layer_builds_a_graph_and_keeps_values(small):
    net = aekit.Autoencoder([12, (6, "relu")], output_activation="relu")
    w = net.find("out", "w").detach().clone()
    net.add_layer(dict(size=12, activation="linear", form="tied"), is_output=False)
    assert [layer.name for layer in net.layers] == ["in", "out", "hid2"]
    assert torch.equal(net.find("out", "w"), w)
    net2 = aekit.Autoencoder([12])
    net2.add_layer(6, activation="sigmoid")
    net2.add_layer((12, "tied"), is_output=True)
    assert [layer.name for layer in net2.layers] == ["in", "hid1", "out"]
    assert net2.predict(small).shape == (40, 12)


def test_add_loss_and_set_loss(small):
    net = aekit.Autoencoder([12, (6, "sigmoid"), (12, "sigmoid")], loss="mse")
    net.add_loss("mae", weight=0.1)
    assert [(t.name, t.weight) for t in net.losses] == [("mse", 1.0), ("mae", 0.1)]
    x = torch.from_numpy(small)
    y = torch.from_numpy(net.predict(small))
    expected = torch.nn.functional.mse_loss(y, x) + 0.1 * torch.nn.functional.l1_loss(y, x)
    assert torch.isclose(net.loss(small), expected, rtol=1e-5)
    net.set_loss("bce")
    expected = torch.nn.functional.binary_cross_entropy(y, x)
    assert torch.isclose(net.loss(small), expected, rtol=1e-4)


def test_loss_adds_regularizers_and_is_differentiable(small):
    net = aekit.Autoencoder([12, (6, "relu"), 12])
    plain = net.loss(small)
    penalised = net.loss(small, weight_l2=0.1)
    assert penalised > plain
    penalised.backward()
    w = net.find("hid1", "w")
    # d/dW of the mean squared error plus 0.1 * (mean W_hid1^2 + mean W_out^2) / 2 (theanets 0.7's
    # weight_l2, the mean over each matrix averaged over the 2 matrices): the plain loss's plus 0.1 W / 72.
    expected = torch.autograd.grad(net.loss(small), w)[0] + 0.1 * 2 * w.detach() / (2 * w.numel())
    torch.testing.assert_close(w.grad, expected)
    with pytest.raises(ConfigurationError, match="did you mean 'weight_l2'"):
        net.loss(small, weight_l22=0.1)


def test_penalty_values_follow_their_formulas(small):
    # Each penalty against theanets 0.7's formula, computed here from the weights and feed_forward:
    # weight_l1/l2 the mean |W| / W^2 of each weight matrix, averaged over the matrices (biases are never
    # penalised), hidden_l1/l2 the mean |h| / h^2 of each hidden layer's output averaged over the hidden
    # layers (never the output layer's).
    net = aekit.Autoencoder([12, (6, "relu"), (4, "tanh"), (12, "sigmoid")], rng=3)
    with torch.no_grad():
        for layer in ("hid1", "hid2", "out"):
            net.find(layer, "b").fill_(0.5)  # a non-zero bias would show up in a wrong weight penalty
    weights = [net.find(layer, "w").detach() for layer in ("hid1", "hid2", "out")]
    outs = net.feed_forward(small)
    hidden = [torch.from_numpy(outs[f"{name}:out"]) for name in ("hid1", "hid2")]
    plain = net.loss(small)
    expected = {
        "weight_l1": sum(w.abs().mean() for w in weights) / 3,
        "weight_l2": sum(w.square().mean() for w in weights) / 3,
        "hidden_l1": sum(h.abs().mean() for h in hidden) / 2,
        "hidden_l2": sum(h.square().mean() for h in hidden) / 2,
    }
    for key, value in expected.items():
        penalised = net.loss(small, **{key: 0.25})
        torch.testing.assert_close(penalised - plain, 0.25 * value, rtol=1e-5, atol=1e-6, msg=key)
    # A per-layer dict chooses the layers: only hid2's weights here.
    only_hid2 = net.loss(small, weight_l2={"hid2.w": 0.5}) - plain
    torch.testing.assert_close(only_hid2, 0.5 * weights[1].square().mean(), rtol=1e-5, atol=1e-6)
    # Each pattern is a term of its own, averaged over the matrices (layers) it chooses, as a theanets
    # regularizer with that pattern; a name belongs to the first pattern that matches it.
    two = net.loss(small, weight_l1={"out.w": 0.5, "*.w": 0.25}) - plain
    want = 0.5 * weights[2].abs().mean() + 0.25 * (weights[0].abs().mean() + weights[1].abs().mean()) / 2
    torch.testing.assert_close(two, want, rtol=1e-5, atol=1e-6)
    two = net.loss(small, hidden_l2={"hid1": 0.5, "hid2": 0.25}) - plain
    torch.testing.assert_close(two, 0.5 * hidden[0].square().mean() + 0.25 * hidden[1].square().mean())


def test_gll_with_a_variance_layer(small):
    net = aekit.Autoencoder(
        [12, (6, "relu"), dict(size=12, name="out"), dict(size=12, name="var", inputs="hid1", activation="softplus")],
        loss="gll",
        covar="var",
    )
    assert net.graph.output_name == "out"
    # The loss is scipy's Gaussian negative log-likelihood of x under N(out, var), summed over
    # features and averaged over examples.
    scipy_stats = pytest.importorskip("scipy.stats")
    outs = net.feed_forward(small)
    mean, var = outs["out:out"].astype(np.float64), outs["var:out"].astype(np.float64)
    expected = -scipy_stats.norm.logpdf(small, loc=mean, scale=np.sqrt(var)).sum(axis=1).mean()
    assert float(net.loss(small).detach()) == pytest.approx(expected, rel=1e-5)
    before = float(net.loss(small).detach())
    net.train(small, max_epochs=5, validate_every=0, learning_rate=1e-2)
    assert float(net.loss(small).detach()) < before


def test_repr_names_layers():
    text = repr(aekit.Autoencoder([784, (64, "relu"), (784, "tied")]))
    assert "hid1:64 relu" in text and "out:784 linear tied" in text and "params=" in text


def test_image_layouts_other_than_declared_or_flat_are_refused():
    # The contract: images come as (n, C, H, W) or flat (n, C*H*W); (n, H, W) when C is 1.
    # Any other layout of the same size (channels-last above all) would be reshaped into
    # scrambled pixels, so it is refused with the remedy.
    rng = np.random.default_rng(0)
    net = aekit.Autoencoder(
        [(3, 8, 8), dict(form="conv2", channels=4, kernel=3, stride=2, activation="relu"), dict(form="tied")], rng=0
    )
    images = rng.random((5, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(net.predict(images.reshape(5, -1)), net.predict(images))
    with pytest.raises(
        DataError,
        match=r"^x has examples of shape \(8, 8, 3\), but this Autoencoder expects "
        r"\(3, 8, 8\) or flat rows of 192 \(layer 'in'\); for channels-last "
        r"images move the channels first",
    ):
        net.predict(np.moveaxis(images, 1, -1))
    with pytest.raises(DataError, match=r"^x has examples of shape \(8, 24\)"):
        net.predict(images.reshape(5, 8, 24))
    gray = aekit.Autoencoder([(1, 8, 8), (10, "relu"), (64, "sigmoid")], rng=0)
    np.testing.assert_array_equal(gray.predict(images[:, 0]), gray.predict(images[:, :1]))


def test_misleading_inputs_get_their_own_messages(small):
    net = aekit.Autoencoder([12, (6, "relu"), 12])
    with pytest.raises(DataError, match=r"^x holds values too large for float32 \(first in row 1\); rescale"):
        net.encode(np.vstack([small[:1], np.full((1, 12), 1e300)]))
    with pytest.raises(DataError, match=r"^x holds NaN or infinite values \(first in row 0\)$"):
        net.encode(np.full((1, 12), np.inf))
    with pytest.raises(
        DataError,
        match=r"^x is a pair of arrays, as \[x, w\] for a weighted Autoencoder, but "
        r"this Autoencoder has weighted=False",
    ):
        net.train([small, np.ones_like(small)], max_epochs=1)


def test_layer_suffixes_other_than_out_are_refused(small):
    net = aekit.Autoencoder([12, (6, "sigmoid"), 12])
    np.testing.assert_array_equal(net.encode(small, layer="hid1:out"), net.encode(small, layer="hid1"))
    for layer in ("hid1:pre", "hid1:bogus"):
        with pytest.raises(ConfigurationError, match=f"layer must be a layer name such as 'hid1'.*got '{layer}'"):
            net.encode(small, layer=layer)


def test_loss_checks_its_weights_as_train_does(small):
    net = aekit.Autoencoder([12, 6, 12], weighted=True)
    with pytest.raises(DataError, match=r"^w must be >= 0, got a minimum of -1 \(first in row 0\)$"):
        net.loss(small, -np.ones_like(small))


def test_misspelt_constructor_keywords_are_named():
    with pytest.raises(
        ConfigurationError, match="unknown keyword argument of Autoencoder\\(\\) 'weigthed'; did you mean 'weighted'"
    ):
        aekit.Autoencoder([10, 4, 10], weigthed=True)


def test_sampled_codes_are_fresh_each_call_and_reproducible_by_rng(small):
    first, second = (aekit.Autoencoder([12, (6, "sigmoid"), 12], rng=5) for _ in range(2))
    draws = [first.encode(small, sample=True) for _ in range(2)]
    assert not np.array_equal(draws[0], draws[1])
    np.testing.assert_array_equal([second.encode(small, sample=True) for _ in range(2)], draws)
    assert aekit.Autoencoder([12, 6, 12], rng=None).seed != aekit.Autoencoder([12, 6, 12], rng=None).seed


# ---------------------------------------------------------------------- decode from any layer
def _tied_12_6_3_6_12():
    net = aekit.Autoencoder(
        [
            12,
            (6, "relu"),
            (3, "sigmoid"),
            dict(size=6, form="tied", activation="tanh"),
            dict(size=12, form="tied", activation="linear"),
        ],
        rng=3,
    )
    # Non-zero biases, so that a decoder which skipped or repeated a layer would show.
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in ("hid1", "hid2", "hid3", "out"):
            b = net.find(layer, "b")
            b.copy_(0.5 * torch.randn(b.shape, generator=gen))
    return net


def _numpy_decoder(net, z, start):
    """The layers after ``start`` in float64 numpy, from the model's parameters."""
    w1, w2 = (net.find(n, "w").detach().double().numpy() for n in ("hid1", "hid2"))
    b = {n: net.find(n, "b").detach().double().numpy() for n in ("hid1", "hid2", "hid3", "out")}
    steps = [
        ("hid1", lambda h: np.maximum(h @ w1 + b["hid1"], 0.0)),
        ("hid2", lambda h: 1.0 / (1.0 + np.exp(-(h @ w2 + b["hid2"])))),
        ("hid3", lambda h: np.tanh(h @ w2.T + b["hid3"])),  # tied to hid2
        ("out", lambda h: h @ w1.T + b["out"]),
    ]  # tied to hid1
    names = ["in"] + [name for name, _ in steps]
    h = np.asarray(z, np.float64)
    for _name, step in steps[names.index(start) :]:
        h = step(h)
    return h


def test_decode_from_a_layer_other_than_the_code_layer_inverts_encode_there(small):
    net = _tied_12_6_3_6_12()
    assert net.code_layer == "hid2"
    reconstruction = net.predict(small)
    for layer in ("hid1", "hid3", 1, 3, "hid1:out"):
        codes = net.encode(small, layer=layer)
        np.testing.assert_allclose(net.decode(codes, layer=layer), reconstruction, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.decode(small, layer="in"), reconstruction, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layer, width", [("in", 12), ("hid1", 6), ("hid2", 3), ("hid3", 6)])
def test_decode_from_any_layer_runs_the_later_layers_only(layer, width):
    net = _tied_12_6_3_6_12()
    z = np.random.default_rng(2).normal(size=(25, width)).astype(np.float32)  # any values, not codes of an x
    np.testing.assert_allclose(net.decode(z, layer=layer), _numpy_decoder(net, z, layer), rtol=1e-5, atol=1e-6)


def test_decode_checks_the_width_of_the_layer_it_starts_from():
    net = _tied_12_6_3_6_12()
    with pytest.raises(DataError, match=r"z has 3 features, but this Autoencoder expects 6 \(layer 'hid3'\)"):
        net.decode(np.zeros((2, 3), np.float32), layer="hid3")
    np.testing.assert_array_equal(net.decode(np.full((2, 12), 0.25, np.float32), layer="out"), 0.25)


def test_default_activations_are_checked_even_when_unused():
    # Every layer names its own activation, but add_layer() would use the defaults later.
    with pytest.raises(ConfigurationError, match="hidden_activation: unknown activation 'rleu'; did you mean 'relu'"):
        aekit.Autoencoder([8, (4, "relu"), (8, "linear")], hidden_activation="rleu")
    with pytest.raises(ConfigurationError, match="output_activation: activation must be a non-empty string"):
        aekit.Autoencoder([8, (4, "relu"), (8, "linear")], output_activation=5)
