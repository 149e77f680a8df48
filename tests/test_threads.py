"""The thread policy: one CPU thread for small steps, torch's setting for large ones, put back after."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import aekit
from aekit.train.callbacks import Callback
from aekit.train.threads import AUTO_SINGLE_THREAD_FLOPS, step_flops


class SeenThreads(Callback):
    def __init__(self):
        self.threads = []

    def on_epoch_end(self, trainer, train_monitors, valid_monitors):
        self.threads.append(torch.get_num_threads())


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_step_flops_counts_the_matrix_products():
    net = aekit.Autoencoder([64, (9, "sigmoid"), (64, "sigmoid")])
    # forward: 2 * batch * (64*9 + 9*64) multiply-adds, backward twice that
    assert step_flops(net.graph, (64,), 32) == 3 * 2 * 32 * (64 * 9 + 9 * 64)


@pytest.mark.parametrize(
    "layers, threads, expected",
    [
        ([64, (9, "sigmoid"), (64, "tied")], "auto", 1),  # the README's theanets model: tiny steps
        ([784, (256, "sigmoid"), (784, "sigmoid")], "auto", 2),  # 3e8 FLOPs a step: both threads
        ([64, (9, "sigmoid"), (64, "tied")], None, 2),  # torch's setting left alone
        ([64, (9, "sigmoid"), (64, "tied")], 2, 2),
    ],
)
def test_the_policy_and_that_it_is_put_back(two_threads, layers, threads, expected):
    net = aekit.Autoencoder(layers, rng=0)
    seen = SeenThreads()
    x = np.random.default_rng(0).random((256, layers[0])).astype(np.float32)
    net.train(x, batch_size=128, max_epochs=1, validate_every=0, threads=threads, callbacks=[seen])
    assert seen.threads == [expected]
    assert torch.get_num_threads() == 2
    assert (step_flops(net.graph, (layers[0],), 128) < AUTO_SINGLE_THREAD_FLOPS) == (layers[0] == 64)


def test_the_same_run_whatever_torch_thread_setting(two_threads):
    # threads='auto' depends on the model only: a run started with 2 threads equals one started with 1.
    x = np.random.default_rng(0).random((200, 64)).astype(np.float32)
    a = aekit.Autoencoder([64, (9, "sigmoid"), (64, "tied")], rng=0)
    a.train(x, max_epochs=2, validate_every=0)
    torch.set_num_threads(1)
    b = aekit.Autoencoder([64, (9, "sigmoid"), (64, "tied")], rng=0)
    b.train(x, max_epochs=2, validate_every=0)
    torch.testing.assert_close(a.find("hid1", "w"), b.find("hid1", "w"), rtol=0, atol=0)


def test_bad_thread_settings_are_named():
    net = aekit.Autoencoder([4, 2, 4])
    with pytest.raises(aekit.ConfigurationError, match="threads must be 'auto', None or a positive integer"):
        net.train(np.zeros((4, 4), np.float32), threads=0)
