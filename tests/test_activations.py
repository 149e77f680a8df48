"""aekit.activations against the documented formulas, written out in NumPy (float64)."""

import math

import numpy as np
import pytest
import torch

from aekit import ConfigurationError, activations

_erf = np.vectorize(math.erf)
_EPS = 1e-8  # the documented guard of the norm:* divisions


def _axes(x):
    return tuple(range(1, x.ndim))  # per example: every axis but the first


def _softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)  # over features, or channels for images


def _std(x):
    return np.sqrt(((x - x.mean(axis=_axes(x), keepdims=True)) ** 2).mean(axis=_axes(x), keepdims=True))


REFERENCES = {
    "linear": lambda x: x,
    "identity": lambda x: x,
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "logistic": lambda x: 1 / (1 + np.exp(-x)),
    "tanh": lambda x: (np.exp(x) - np.exp(-x)) / (np.exp(x) + np.exp(-x)),
    "relu": lambda x: np.maximum(x, 0),
    "rect:max": lambda x: np.maximum(x, 0),
    "rect:min": lambda x: np.minimum(x, 1),  # theanets: clipped above at 1
    "rect:minmax": lambda x: np.minimum(np.maximum(x, 0), 1),
    "softplus": lambda x: np.log1p(np.exp(x)),
    "softmax": _softmax,
    # theanets' leak below zero, 0.1 (also the initial leak of prelu)
    "leaky-relu": lambda x: np.where(x > 0, x, 0.1 * x),
    "lrelu": lambda x: np.where(x > 0, x, 0.1 * x),
    "leaky_relu": lambda x: np.where(x > 0, x, 0.1 * x),
    "prelu": lambda x: np.where(x > 0, x, 0.1 * x),
    "elu": lambda x: np.where(x > 0, x, np.exp(x) - 1),
    "gelu": lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2))),  # x * Phi(x), the exact form
    "norm:mean": lambda x: x - x.mean(axis=_axes(x), keepdims=True),
    "norm:max": lambda x: x / (np.abs(x).max(axis=_axes(x), keepdims=True) + _EPS),
    "norm:std": lambda x: x / (_std(x) + _EPS),
    "norm:z": lambda x: (x - x.mean(axis=_axes(x), keepdims=True)) / (_std(x) + _EPS),
}


def _inputs(shape):
    # Wide values (softplus and sigmoid far out, rect:min above 1) and exact zeros (the kinks).
    x = np.random.default_rng(0).normal(scale=4.0, size=shape).astype(np.float32)
    x.flat[:3] = [0.0, 30.0, -30.0]
    return x


def test_every_registered_name_has_a_reference():
    assert sorted(REFERENCES) == activations.names()


@pytest.mark.parametrize("shape", [(5, 7), (3, 4, 2, 3)], ids=["dense", "image"])
@pytest.mark.parametrize("name", activations.names())
def test_every_activation_matches_its_formula(name, shape):
    x = _inputs(shape)
    y = activations.get(name, shape[1])(torch.from_numpy(x))
    assert y.shape == x.shape
    np.testing.assert_allclose(y.detach().numpy(), REFERENCES[name](x.astype(np.float64)), rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize(
    "name",
    [
        "relu+norm:z",
        "tanh+softmax",
        "norm:mean+sigmoid",
        "prelu+rect:min",
        "softplus+norm:max+elu",
        "leaky-relu+norm:std+rect:minmax",
    ],
)
def test_compositions_apply_their_parts_left_to_right(name):
    x = _inputs((6, 9))
    expected = x.astype(np.float64)
    for part in name.split("+"):
        expected = REFERENCES[part](expected)
    y = activations.get(name, 9)(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(y, expected, rtol=2e-6, atol=2e-6)


def test_prelu_leaks_per_unit_and_per_channel():
    act = activations.get("prelu", 3)
    with torch.no_grad():
        act.leak.copy_(torch.tensor([0.0, 0.5, 2.0]))
    leak = np.array([0.0, 0.5, 2.0])
    dense = _inputs((4, 3))
    np.testing.assert_allclose(
        act(torch.from_numpy(dense)).detach().numpy(), np.where(dense > 0, dense, leak * dense), rtol=1e-6
    )
    image = _inputs((2, 3, 4, 5))  # one leak per channel
    np.testing.assert_allclose(
        act(torch.from_numpy(image)).detach().numpy(),
        np.where(image > 0, image, leak[:, None, None] * image),
        rtol=1e-6,
    )


def test_known_values():
    x = torch.tensor([[-2.0, 0.0, 0.5, 3.0]])
    assert torch.allclose(activations.get("relu")(x), torch.tensor([[0.0, 0.0, 0.5, 3.0]]))
    assert torch.allclose(activations.get("rect:minmax")(x), torch.tensor([[0.0, 0.0, 0.5, 1.0]]))
    assert torch.allclose(activations.get("rect:min")(x), torch.tensor([[-2.0, 0.0, 0.5, 1.0]]))
    assert torch.allclose(activations.get("logistic")(x), torch.sigmoid(x))
    assert torch.allclose(activations.get("softmax")(x).sum(), torch.tensor(1.0))


def test_norm_activations_are_per_example():
    x = torch.randn(4, 10) * 5 + 3
    z = activations.get("norm:z")(x)
    assert torch.allclose(z.mean(dim=1), torch.zeros(4), atol=1e-5)
    assert torch.allclose(z.std(dim=1, unbiased=False), torch.ones(4), atol=1e-4)
    assert torch.allclose(activations.get("norm:max")(x).abs().amax(dim=1), torch.ones(4), atol=1e-5)
    assert torch.allclose(activations.get("norm:mean")(x).mean(dim=1), torch.zeros(4), atol=1e-5)


def test_composition_applies_left_to_right():
    x = torch.randn(3, 6)
    composed = activations.get("relu+norm:max")(x)
    assert torch.allclose(composed, activations.get("norm:max")(torch.relu(x)))


def test_prelu_has_a_learnable_leak_per_unit():
    act = activations.get("prelu", 6)
    assert act.leak.shape == (6,)
    y = act(torch.full((2, 6), -1.0))
    assert torch.allclose(y, torch.full((2, 6), -0.1))


def test_unknown_activation_names_the_nearest():
    with pytest.raises(ConfigurationError, match="did you mean 'sigmoid'"):
        activations.get("sigmod")
    with pytest.raises(ConfigurationError, match="did you mean 'tanh'"):
        activations.get("relu+tahn")


def test_output_ranges():
    assert activations.output_range("sigmoid") == (0.0, 1.0)
    assert activations.output_range("relu+tanh") == (-1.0, 1.0)
    assert activations.output_range("linear")[0] == float("-inf")
