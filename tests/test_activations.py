import pytest
import torch

from aekit import ConfigurationError, activations


@pytest.mark.parametrize("name", [n for n in activations.names()])
def test_every_activation_runs_and_keeps_shape(name):
    x = torch.randn(5, 7)
    y = activations.get(name, 7)(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


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
