"""The top-k SAE recipe: tied init, a pre-encoder bias tied to the decoder's, a data-dependent start, switches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import aekit
from aekit import ConfigurationError
from aekit.model.sparsity import topk_relu


def sae(**code_options):
    return aekit.Autoencoder(
        [
            24,
            dict(size=48, activation="topk:4", name="code", **code_options),
            dict(size=24, activation="linear", constraint="unit_norm"),
        ],
        rng=0,
    )


def acts(n=300, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 24)) + 2.0
    x[:5] += 50.0  # a few outliers: the geometric median barely moves, the mean does
    return x.astype(np.float32)


def test_the_recipe_is_the_default_for_a_topk_code_and_a_unit_norm_decoder():
    net = sae()
    code, out = net.graph.layers["code"], net.graph.layers["out"]
    assert (code.sae_recipe.pre_bias, code.sae_recipe.tied_init, code.sae_recipe.bias_init) == (True, True, "median")
    torch.testing.assert_close(code.w, out.w.t(), rtol=0, atol=0)  # the encoder starts as the decoder's transpose
    torch.testing.assert_close(out.w.norm(dim=1), torch.ones(48))
    # The forward pass is a plain PyTorch SAE with the pre-encoder bias tied to the decoder's.
    with torch.no_grad():
        out.b.copy_(torch.linspace(-1, 1, 24))
        x = torch.from_numpy(acts(20))
        z = topk_relu((x - out.b) @ code.w + code.b, 4)
        want = z @ out.w + out.b
    torch.testing.assert_close(torch.from_numpy(net.encode(x.numpy())), z)
    torch.testing.assert_close(torch.from_numpy(net.predict(x.numpy())), want)
    # Not the default elsewhere: a ReLU code, or a decoder without the constraint.
    relu = aekit.Autoencoder([24, (48, "relu"), dict(size=24, activation="linear", constraint="unit_norm")], rng=0)
    assert relu.graph.layers["hid1"].sae_recipe is None
    plain = aekit.Autoencoder([24, (48, "topk:4"), (24, "linear")], rng=0)
    assert plain.graph.layers["hid1"].sae_recipe is None
    assert "hid1.recipe_initialized" not in plain.graph.state_dict()


def weiszfeld_optimality(x, m):
    # The geometric median's first-order condition: the unit vectors from it to the points sum to zero.
    d = x - m
    return np.linalg.norm((d / np.linalg.norm(d, axis=1, keepdims=True)).sum(axis=0)) / len(x)


def test_the_output_bias_starts_at_the_geometric_median_once(tmp_path):
    x = acts()
    net = sae()
    net.train(x, max_epochs=0)  # only the start: no step
    b = net.graph.layers["out"].b.detach().double().numpy()
    assert weiszfeld_optimality(x.astype(np.float64), b) < 1e-4
    assert np.abs(b - x.mean(axis=0)).max() > 0.5  # not the mean, which the outliers pull away
    assert bool(net.graph.layers["code"].recipe_initialized)
    net.train(x, max_epochs=2, validate_every=0, learning_rate=1e-2)
    trained = net.graph.layers["out"].b.detach().clone()
    assert not torch.equal(trained, torch.from_numpy(b).float())
    net.train(x + 10, max_epochs=0)  # a second train() does not start it again
    torch.testing.assert_close(net.graph.layers["out"].b.detach(), trained, rtol=0, atol=0)
    net.save(tmp_path / "m.aekit")
    loaded = aekit.load(tmp_path / "m.aekit")
    loaded.train(x + 10, max_epochs=0)  # nor does a loaded model's
    torch.testing.assert_close(loaded.graph.layers["out"].b.detach(), trained, rtol=0, atol=0)
    loaded.graph.reset_parameters(0)  # a re-initialised model starts from its data again
    assert not bool(loaded.graph.layers["code"].recipe_initialized)


def test_each_part_is_switchable_and_saved(tmp_path):
    x = acts()
    mean = sae(bias_init="mean")
    mean.train(x, max_epochs=0)
    np.testing.assert_allclose(mean.graph.layers["out"].b.detach().numpy(), x.mean(axis=0), rtol=1e-5)

    off = sae(recipe=False)
    code, out = off.graph.layers["code"], off.graph.layers["out"]
    assert code.sae_recipe is None and not code.pre_bias_of
    assert not torch.equal(code.w, out.w.t())
    off.train(x, max_epochs=0)
    assert torch.count_nonzero(out.b) == 0

    some = sae(pre_bias=False, bias_init="zero")
    assert (some.graph.layers["code"].sae_recipe.pre_bias, some.graph.layers["code"].sae_recipe.tied_init) == (
        False,
        True,
    )
    some.save(tmp_path / "m.aekit")
    config = some.config()["layers"][1]
    assert config["options"] == {"bias_init": "zero", "pre_bias": False}
    loaded = aekit.load(tmp_path / "m.aekit")
    assert loaded.graph.layers["code"].sae_recipe == some.graph.layers["code"].sae_recipe


def test_a_part_forced_on_needs_its_wiring_and_values_are_checked():
    forced = aekit.Autoencoder(
        [24, dict(size=48, activation="relu", pre_bias=True), dict(size=24, activation="linear")], rng=0
    )
    assert forced.graph.layers["hid1"].sae_recipe.pre_bias
    assert not forced.graph.layers["hid1"].sae_recipe.tied_init  # only what was asked for
    with pytest.raises(ConfigurationError, match="pre_bias=True needs a dense code layer"):
        aekit.Autoencoder([24, dict(size=48, pre_bias=True), (12, "relu"), (24, "linear")])
    with pytest.raises(ConfigurationError, match="bias_init must be one of"):
        sae(bias_init="median-ish")
    with pytest.raises(ConfigurationError, match="pre_bias must be 'auto', True or False"):
        sae(pre_bias="yes")


def test_a_forced_pre_bias_takes_autograds_path_not_the_hand_derived_step():
    from aekit.fused import DenseChainStep
    from aekit.objective import Regularizers

    layers = [24, dict(size=8, activation="relu", pre_bias=True), dict(size=24, activation="linear")]
    net = aekit.Autoencoder(layers, rng=0)
    assert DenseChainStep.build(net.objective(Regularizers())) is None
    with torch.no_grad():
        net.graph.layers["out"].b.fill_(3.0)
    x = acts(64)
    pre = torch.from_numpy(x - 3.0) @ net.graph.layers["hid1"].w + net.graph.layers["hid1"].b
    torch.testing.assert_close(torch.from_numpy(net.feed_forward(x)["hid1:pre"]), pre.detach())


def test_streamed_data_start_the_bias_from_their_first_rows(tmp_path):
    x = acts(5000)
    x[4096:] += 100.0  # rows past the first 4096 must not count
    stored = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=x.shape)
    stored[:] = x
    net = sae(bias_init="mean")
    net.train(np.load(tmp_path / "x.npy", mmap_mode="r"), max_epochs=0)
    np.testing.assert_allclose(net.graph.layers["out"].b.detach().numpy(), x[:4096].mean(axis=0), rtol=1e-5)
