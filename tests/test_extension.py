"""A new layer family is new code plus registry entries: a layer form defined here, in a test, with
its own spec options, an extra output, a loss term it owns, step hooks and a summed counter, goes
through specs, the objective, every training path that applies, the model file and the monitors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import aekit
from aekit.model.layers import LayerOutput, register
from aekit.model.layers.dense import Dense
from aekit.model.specs import FormOptions
from aekit.train.callbacks import Callback


def _check_options(options: dict, where: str) -> dict:
    gain = options.get("gain", 1.0)
    if not isinstance(gain, (int, float)) or gain <= 0:
        raise aekit.ConfigurationError(f"{where} gain must be a positive number, got {gain!r}")
    return options


@register("scaled", FormOptions(defaults={"gain": 1.0, "energy_weight": 0.0}, check=_check_options))
class ScaledDense(Dense):
    """A dense layer whose output is multiplied by ``gain``; it owns an energy penalty and counts firings."""

    summed_buffers = ("fired",)

    def __init__(self, spec, input_shape):
        super().__init__(spec, input_shape)
        self.register_buffer("fired", torch.zeros(self.n_out, dtype=torch.float64))
        self.steps_seen = 0

    def forward(self, x: torch.Tensor) -> LayerOutput:
        record = super().forward(x)
        out = record.out * self.spec.option("gain")
        energy = out.square().flatten(1).sum(dim=1)
        if self.training:
            with torch.no_grad():
                self.fired += (out > 0).flatten(1).sum(dim=0).double()
        return LayerOutput(
            record.pre,
            out,
            extras={"energy": energy},
            terms={"energy": self.spec.option("energy_weight") * energy.mean()},
        )

    @property
    def has_step_hooks(self) -> bool:
        return True

    def after_step(self) -> None:
        self.steps_seen += 1


LAYERS = [6, dict(form="scaled", size=4, activation="relu", gain=2.0, energy_weight=0.01), (6, "linear")]


def data(n: int = 40) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, 6)).astype(np.float32)


def test_the_form_and_its_options_are_specs_like_any_other():
    net = aekit.Autoencoder(LAYERS, rng=0)
    assert net.specs[1].form == "scaled" and net.specs[1].option("gain") == 2.0
    assert net.config()["layers"][1]["options"] == {"energy_weight": 0.01, "gain": 2.0}
    with pytest.raises(aekit.ConfigurationError, match="did you mean 'gain'"):
        aekit.Autoencoder([6, dict(form="scaled", size=4, gian=2.0), 6])
    with pytest.raises(aekit.ConfigurationError, match="gain must be a positive number"):
        aekit.Autoencoder([6, dict(form="scaled", size=4, gain=-1), 6])


def test_the_layer_term_is_part_of_the_objective_and_its_gradient():
    net = aekit.Autoencoder(LAYERS, rng=0)
    x = torch.from_numpy(data())
    total, terms = net.loss_terms(x, None, aekit.regularizers.Regularizers(), training=False)
    assert list(terms) == ["mse", "err", "hid1.energy", "loss"]
    # By hand: the same model in plain torch.
    w1, b1, w2, b2 = (net.find(n, p) for n, p in (("hid1", "w"), ("hid1", "b"), ("out", "w"), ("out", "b")))
    h = 2.0 * torch.relu(x @ w1 + b1)
    want = torch.nn.functional.mse_loss(h @ w2 + b2, x) + 0.01 * h.square().sum(dim=1).mean()
    torch.testing.assert_close(total, want)
    grads = torch.autograd.grad(total, [w1, w2])
    want_grads = torch.autograd.grad(want, [w1, w2])
    for got, expected in zip(grads, want_grads):
        torch.testing.assert_close(got, expected)


def test_extra_outputs_reach_feed_forward():
    net = aekit.Autoencoder(LAYERS, rng=0)
    outputs = net.feed_forward(data(5))
    np.testing.assert_allclose(outputs["hid1:energy"], (outputs["hid1:out"] ** 2).sum(axis=1), rtol=1e-6)


@pytest.mark.parametrize("algo", ["adam", "lbfgs"])
def test_training_runs_the_hooks_reports_the_term_and_counts(algo):
    class Steps(Callback):
        def __init__(self):
            self.gradients = 0

        def on_train_begin(self, trainer):
            trainer.stepper.gradient_hooks.append(self.count)

        def count(self):
            self.gradients += 1

    net = aekit.Autoencoder(LAYERS, rng=0)
    counter = Steps()
    x = data()
    batch = 40 if algo == "lbfgs" else 8
    net.train(x, algo=algo, batch_size=batch, max_epochs=2, validate_every=0, callbacks=[counter])
    layer = net.graph.layers["hid1"]
    steps = 2 * (len(x) // batch) if algo != "lbfgs" else 2
    assert layer.steps_seen == steps
    assert counter.gradients >= steps  # L-BFGS evaluates its closure once per line-search point
    monitors = net.history[-1]["train"]
    assert monitors["loss"] == pytest.approx(monitors["err"] + monitors["hid1.energy"], rel=1e-5)
    if algo == "adam":  # each example seen once per epoch: the counter is the whole data's firings
        assert layer.fired.sum() > 0
        assert float(layer.fired.max()) <= 2 * len(x)


def test_the_layer_round_trips_through_a_model_file(tmp_path):
    net = aekit.Autoencoder(LAYERS, rng=0)
    net.train(data(), batch_size=8, max_epochs=1, validate_every=0)
    net.save(tmp_path / "m.aekit")
    loaded = aekit.load(tmp_path / "m.aekit")
    assert loaded.specs[1].option("gain") == 2.0
    torch.testing.assert_close(loaded.graph.layers["hid1"].fired, net.graph.layers["hid1"].fired)
    np.testing.assert_array_equal(loaded.predict(data(5)), net.predict(data(5)))
