"""'topk:K' and 'batchtopk:K' code activations: against NumPy references, autograd, and the model file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import aekit
from aekit.model.sparsity import batch_topk_relu, topk_relu


def acts(n: int = 64, d: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def test_topk_keeps_the_k_largest_positive_values_of_each_example():
    x = torch.from_numpy(acts().astype(np.float64))
    got = topk_relu(x, 5).numpy()
    want = np.zeros_like(x.numpy())
    for i, row in enumerate(x.numpy()):
        keep = np.argsort(row)[-5:]  # a plain reference: sort, keep the five largest, rectify
        want[i, keep] = np.maximum(row[keep], 0)
    np.testing.assert_array_equal(got, want)
    assert ((got != 0).sum(axis=1) <= 5).all()


def test_topk_gradients_match_autograd_and_flow_to_kept_values_only():
    x = torch.from_numpy(acts(8, 12).astype(np.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: topk_relu(t, 3), (x,))
    (grad,) = torch.autograd.grad(topk_relu(x, 3).sum(), x)
    kept = topk_relu(x, 3).detach() != 0
    torch.testing.assert_close(grad, kept.double())


def test_a_topk_code_has_exactly_k_non_zeros():
    x = acts(200, 16) + 3.0  # every pre-activation positive: exactly k kept
    net = aekit.Autoencoder([16, (64, "topk:7"), (16, "linear")], rng=0)
    net.train(x, max_epochs=2, validate_every=0)
    codes = net.encode(x)
    assert ((codes != 0).sum(axis=1) == 7).all()
    assert aekit.evaluate(net, x, metrics=["l0"])["l0"] == 7.0


def test_batchtopk_spends_k_per_example_over_a_batch_and_learns_its_threshold():
    x = torch.from_numpy(acts(32, 24).astype(np.float64))
    codes, smallest = batch_topk_relu(x, 4)
    assert (codes != 0).sum() == 4 * 32
    kept = np.sort(np.maximum(x.numpy().ravel(), 0))[-4 * 32 :]
    assert float(smallest) == kept[kept > 0].min()
    np.testing.assert_array_equal(np.sort(codes.numpy().ravel())[-4 * 32 :], kept)

    net = aekit.Autoencoder([24, (48, "batchtopk:4"), (24, "linear")], rng=0)
    data = acts(256, 24)
    net.train(data, batch_size=64, max_epochs=1, validate_every=0, shuffle=False, algo="sgd", learning_rate=1e-9)
    module = net.graph.layers["hid1"].activation.modules_by_part["0"]
    # The threshold is the mean over the four training batches of the smallest value kept (the
    # learning rate is too small to move the weights, so the batches can be recomputed here).
    graph = net.graph.eval()  # in eval mode a forward pass leaves the threshold alone
    smallest = []
    with torch.no_grad():
        for start in range(0, 256, 64):
            pre = graph(torch.from_numpy(data[start : start + 64]), stop="hid1")["hid1:pre"].double()
            smallest.append(float(batch_topk_relu(pre, 4)[1]))
    assert float(module.threshold) == pytest.approx(np.mean(smallest), rel=1e-6)
    assert int(module.batches) == 4
    # Inference keeps exactly the values above the threshold, whatever the batch.
    codes = net.encode(data)
    pre = net.feed_forward(data)["hid1:pre"]
    np.testing.assert_array_equal(codes != 0, pre > float(module.threshold))
    np.testing.assert_array_equal(net.encode(data[:3]), codes[:3])
    assert abs((codes != 0).sum(axis=1).mean() - 4) < 1.5  # about k per example on the training data


def test_the_threshold_is_saved_and_resumes(tmp_path):
    net = aekit.Autoencoder([24, (48, "batchtopk:4"), (24, "linear")], rng=0)
    net.train(acts(256, 24), batch_size=64, max_epochs=2, validate_every=0)
    net.save(tmp_path / "m.aekit")
    loaded = aekit.load(tmp_path / "m.aekit")
    for key, value in net.graph.state_dict().items():
        torch.testing.assert_close(loaded.graph.state_dict()[key], value, rtol=0, atol=0)
    np.testing.assert_array_equal(loaded.encode(acts(10, 24)), net.encode(acts(10, 24)))


def test_topk_in_a_conv_layer_counts_every_value_of_an_image():
    net = aekit.Autoencoder([(1, 8, 8), dict(form="conv2", channels=4, activation="topk:10"), dict(form="tied")])
    codes = net.encode(np.random.default_rng(0).random((5, 1, 8, 8)).astype(np.float32) + 1)
    assert codes.shape == (5, 4, 8, 8) and ((codes != 0).reshape(5, -1).sum(axis=1) <= 10).all()


@pytest.mark.parametrize(
    "activation, message",
    [
        ("topk:0", "needs a positive integer K"),
        ("topk:x", "needs a positive integer K"),
        ("batchtopk:-2", "needs a positive integer K"),
        ("tpok:3", "unknown activation"),
    ],
)
def test_bad_sparse_activations_are_named(activation, message):
    with pytest.raises(aekit.ConfigurationError, match=message):
        aekit.Autoencoder([8, (16, activation), 8])


def test_a_topk_code_that_keeps_every_unit_is_refused():
    from aekit.errors import ConfigurationError

    for activation in ("topk:4", "batchtopk:9"):
        with pytest.raises(ConfigurationError, match="K must be less than 4"):
            aekit.Autoencoder([8, (4, activation), 8])
    aekit.Autoencoder([8, (4, "topk:3"), 8])  # one unit left out is a sparse code
