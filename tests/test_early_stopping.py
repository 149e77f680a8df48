"""Early stopping: patience, the relative ``min_improvement`` and the restored best parameters.

aekit's rule (theanets' and Keras'): a validation counts as progress when the loss
falls below the best *accepted* loss by more than ``min_improvement`` times that
best loss; ``patience`` validations in a row without progress are tolerated, the
next one stops training, and the parameters of the last accepted validation are
restored.  The expected stopping epochs below are worked out by hand from the
validation losses of one uninterrupted reference run.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import aekit

MAX_EPOCHS = 60
LAYERS = [12, (4, "tanh"), 12]
TRAIN = dict(algo="adam", learning_rate=0.01, batch_size=32, max_epochs=MAX_EPOCHS)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(240, 3))
    x = (z @ rng.normal(size=(3, 12)) + 0.1 * rng.normal(size=(240, 12))).astype(np.float32)
    return x[:160], x[160:]


@pytest.fixture(scope="module")
def reference(data):
    """Validation losses of every epoch of a run that never stops early."""
    train, valid = data
    net = aekit.Autoencoder(LAYERS, rng=5)
    losses = [v["loss"] for _, v in net.itertrain(train, valid=valid, patience=MAX_EPOCHS, **TRAIN)]
    assert len(losses) == MAX_EPOCHS
    return losses


def stopping_point(losses, patience, min_improvement, relative=True):
    """(stop index, best index), 1-based over ``losses``; stop is None when it never stops."""
    best, best_index, stale = math.inf, 0, 0
    for i, loss in enumerate(losses, 1):
        margin = min_improvement * best if relative else min_improvement
        if best == math.inf or best - loss > margin:
            best, best_index, stale = loss, i, 0
        else:
            stale += 1
            if stale > patience:
                return i, best_index
    return None, best_index


def run(data, **kwargs):
    """Train with early stopping; returns (net, per-epoch validation losses, per-epoch parameters)."""
    train, valid = data
    net = aekit.Autoencoder(LAYERS, rng=5)
    losses, states = [], []
    for _, valid_mon in net.itertrain(train, valid=valid, **TRAIN, **kwargs):
        losses.append(valid_mon.get("loss"))
        states.append([p.detach().clone() for p in net.params])
    return net, losses, states


@pytest.mark.parametrize(
    "patience, min_improvement, every",
    [
        (1, 0.04, 1),
        (0, 0.02, 1),
        (0, 0.06, 2),  # patience counts validations, not epochs
    ],
)
def test_training_stops_where_the_relative_rule_says(data, reference, patience, min_improvement, every):
    validated = reference[every - 1 :: every]  # the epochs every, 2 * every, ...
    stop, best = stopping_point(validated, patience, min_improvement)
    assert stop is not None, "the scenario must stop early"
    stop_epoch, best_epoch = stop * every, best * every
    # Without min_improvement, or read as an absolute margin, the same losses stop elsewhere:
    # the scenario does tell the relative rule from the others.
    assert stopping_point(validated, patience, 0.0) != (stop, best)
    assert stopping_point(validated, patience, min_improvement, relative=False) != (stop, best)

    net, losses, states = run(data, patience=patience, min_improvement=min_improvement, validate_every=every)
    assert len(losses) == len(net.history) == stop_epoch
    validated_here = losses[every - 1 :: every]
    np.testing.assert_allclose(validated_here, validated[:stop], rtol=1e-6)  # the same run, cut short
    # The losses this run recorded lead to the same decision.
    assert stopping_point(validated_here, patience, min_improvement) == (stop, best)
    # The restored parameters are those of the last accepted validation, bit for bit ...
    for restored, kept in zip(net.params, states[best_epoch - 1]):
        assert torch.equal(restored.detach(), kept)
    assert not all(torch.equal(p.detach(), s) for p, s in zip(net.params, states[-1]))
    # ... and their loss on the validation data is that epoch's recorded validation loss.
    assert net.loss(data[1]).item() == pytest.approx(reference[best_epoch - 1], rel=1e-5)


def test_an_unreachable_min_improvement_keeps_the_first_validation(data, reference):
    # A relative fall of more than 100% is impossible for a positive loss: only the first
    # validation is ever accepted, so training stops after patience + 1 further validations
    # although the loss goes on falling, and epoch 1's parameters come back.
    assert all(b < a for a, b in zip(reference[:5], reference[1:5]))
    net, losses, states = run(data, patience=3, min_improvement=1.0)
    assert len(losses) == 5
    np.testing.assert_allclose(losses, reference[:5], rtol=1e-6)
    for restored, kept in zip(net.params, states[0]):
        assert torch.equal(restored.detach(), kept)
    assert net.loss(data[1]).item() == pytest.approx(reference[0], rel=1e-5)


def test_progress_must_exceed_min_improvement_strictly(data, reference):
    # The runs are deterministic, so epoch 2 falls from epoch 1 by exactly ``fall`` again:
    # min_improvement == fall is not progress (the rule is "more than"), one float below it is.
    first, second = reference[0], reference[1]
    fall = (first - second) / first
    net, losses, _ = run(data, patience=0, min_improvement=fall)
    assert losses[:2] == reference[:2]
    assert len(losses) == 2  # epoch 2 was no progress: patience 0 stops there
    assert net.loss(data[1]).item() == pytest.approx(first, rel=1e-5)
    net, losses, _ = run(data, patience=0, min_improvement=math.nextafter(fall, 0.0))
    expected, _ = stopping_point(reference, 0, math.nextafter(fall, 0.0))
    assert expected > 2 and len(losses) == expected
