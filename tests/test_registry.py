"""One Registry for every name list: aliases, case, did-you-mean, no silent replacement; and the
callback protocol of a training run."""

from __future__ import annotations

import numpy as np
import pytest

import aekit
from aekit.model.activations import ACTIVATIONS
from aekit.model.layers import LAYERS
from aekit.model.specs import FORMS
from aekit.objective import LOSSES, PENALTIES
from aekit.objective.metrics import METRICS
from aekit.preprocessing import STEPS
from aekit.registry import Registry
from aekit.train.callbacks import Callback


def test_lookup_by_alias_and_case_and_the_standard_error():
    reg = Registry("colour")
    reg.register("red", 1, aliases=("crimson",))
    assert reg.get("RED") == reg.get("Crimson") == 1
    assert "red" in reg and "crimson" not in reg and list(reg) == ["red"]
    assert reg.names() == ["crimson", "red"]
    with pytest.raises(aekit.ConfigurationError, match="unknown colour 'rde'; did you mean 'red'"):
        reg.get("rde")
    with pytest.raises(aekit.ConfigurationError, match="expected one of 'crimson', 'red'"):
        reg.get("zzzzzz")


def test_names_are_never_replaced_silently():
    reg = Registry("colour")
    reg.register("red", 1)
    with pytest.raises(aekit.ConfigurationError, match="already registered"):
        reg.register("red", 2)
    with pytest.raises(aekit.ConfigurationError, match="already registered"):
        reg.register("blue", 3, aliases=("red",))
    reg.register("red", 4, replace=True)
    assert reg["red"] == 4


def test_every_name_list_is_a_registry():
    for registry, name in [
        (ACTIVATIONS, "relu"),
        (LOSSES, "mse"),
        (PENALTIES, "hidden_l1"),
        (LAYERS, "dense"),
        (FORMS, "conv2"),
        (METRICS, "fvu"),
        (STEPS, "standard"),
    ]:
        assert isinstance(registry, Registry) and name in registry


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_train_begin(self, trainer):
        self.events.append("begin")

    def on_epoch_end(self, trainer, train_monitors, valid_monitors):
        self.events.append(("epoch", trainer.epoch, "loss" in train_monitors))

    def on_train_end(self, trainer):
        self.events.append("end")


def test_callbacks_see_each_epoch_and_the_end_also_after_a_break():
    x = np.random.default_rng(0).random((32, 6)).astype(np.float32)
    net = aekit.Autoencoder([6, (3, "sigmoid"), (6, "tied")], rng=0)
    recorder = Recorder()
    for epoch, _ in enumerate(net.itertrain(x, max_epochs=5, validate_every=0, callbacks=[recorder]), 1):
        if epoch == 2:
            break
    assert recorder.events == ["begin", ("epoch", 1, True), ("epoch", 2, True), "end"]
    assert len(net.history) == 2  # the History callback ran before the epoch was yielded


def test_a_callback_can_stop_training():
    class StopAtTwo(Callback):
        def on_epoch_end(self, trainer, train_monitors, valid_monitors):
            trainer.stopping = trainer.epoch >= 2

    x = np.random.default_rng(0).random((32, 6)).astype(np.float32)
    net = aekit.Autoencoder([6, (3, "sigmoid"), (6, "tied")], rng=0)
    net.train(x, max_epochs=10, validate_every=0, callbacks=[StopAtTwo()])
    assert len(net.history) == 2


def test_callbacks_must_be_callbacks():
    net = aekit.Autoencoder([6, (3, "sigmoid"), (6, "tied")], rng=0)
    with pytest.raises(aekit.ConfigurationError, match="callbacks must be a list"):
        net.train(np.zeros((4, 6), np.float32), callbacks=[print])
