"""Checks that keep a training run from failing silently: set-ups that cannot learn, and runaway losses.

At the start of ``train()`` (:func:`check_output_ranges`), an :class:`~aekit.errors.OutputRangeWarning`
with a remedy when

* ``loss='bce'`` reads an output whose activation is not bounded in [0, 1] (a ``'linear'``
  output): binary cross-entropy takes the outputs as probabilities, clips them into (0, 1), and
  outputs outside that interval get no gradient;
* the training data (the reconstruction targets) lie outside the range of the output activation
  (0..255 pixels into a ``'sigmoid'``): those values can never be reconstructed.  All of in-memory
  data are checked; of streamed data, the first batch read (at the first step).

And an :class:`~aekit.errors.AekitWarning` when ``valid_split`` holds out the last rows of streamed
data (:func:`warn_tail_split`).

After each epoch the loop asks :func:`growth_reason` whether a finite training loss grew by orders
of magnitude: more than :data:`GROWTH_FACTOR` times the loss of the parameters the run started from
(:func:`starting_loss`, on up to :data:`SAMPLE_ROWS` rows spread over in-memory training data, on
the first batch of streamed data, so that no row of a file is read twice).  Such an
epoch is treated as divergence, exactly like a NaN loss.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from ..data.sources import TensorSource
from ..errors import AekitWarning, OutputRangeWarning
from ..model.activations import output_range
from ..model.graph import Graph

__all__ = [
    "GROWTH_FACTOR",
    "GROWTH_FLOOR",
    "SAMPLE_ROWS",
    "check_output_ranges",
    "growth_reason",
    "sample",
    "starting_loss",
    "warn_tail_split",
]

# An epoch whose training loss exceeds the starting loss by this factor has diverged.  No run that
# learns makes its loss a million times worse than at the parameters it started from, while runaway
# learning rates reach 1e20 and more in an epoch: the factor leaves no doubt either way.
GROWTH_FACTOR = 1e6
# The starting loss is compared at least at this magnitude (loss units), so that a start at a loss of
# (almost) zero does not turn every later rounding-level loss into "growth".
GROWTH_FLOOR = 1e-6
# Rows the starting loss is measured on: evenly spaced over in-memory data (sorted data are covered).
SAMPLE_ROWS = 64  # enough for the scale of the loss, and cheap: it runs at every train() call


def growth_reason(loss: float, start: float | None) -> str | None:
    """Why ``loss`` counts as divergence against the ``start``ing loss, or None when it does not.

    The rule: ``loss - start > GROWTH_FACTOR * max(|start|, GROWTH_FLOOR)`` (the absolute value
    and the difference keep it meaningful for losses that can be negative, as log-likelihoods).

    Examples
    --------
    >>> growth_reason(1.75e23, 0.08)
    'the loss grew to 1.75e+23, more than 1e+06 times the loss of the starting parameters (0.08)'
    >>> growth_reason(0.5, 0.08) is None
    True
    """
    if start is None or not math.isfinite(start) or not math.isfinite(loss):
        return None
    if loss - start > GROWTH_FACTOR * max(abs(start), GROWTH_FLOOR):
        return (
            f"the loss grew to {loss:.3g}, more than {GROWTH_FACTOR:g} times the loss of the starting "
            f"parameters ({start:.3g})"
        )
    return None


def sample(source: TensorSource) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Up to :data:`SAMPLE_ROWS` rows of in-memory ``source``, evenly spaced (sorted data are covered)."""
    step = max(1, -(-len(source) // SAMPLE_ROWS))
    return source.x[::step], None if source.w is None else source.w[::step]


def starting_loss(objective: Any, graph: Graph, x: torch.Tensor, w: torch.Tensor | None, needs_grad: bool) -> float:
    """The loss of the current parameters on ``x``: the scale divergence is judged by.

    Without noise or dropout and in eval mode, so that no running state (batch-norm statistics,
    counters) changes and no random number is drawn: training goes on exactly as without it.
    ``needs_grad``: the objective differentiates (the contractive penalty).
    """
    was_training = graph.training
    graph.eval()
    try:
        with torch.enable_grad() if needs_grad else torch.no_grad():
            _, terms = objective(x, w, training=False)
        return float(terms["loss"].detach())
    finally:
        graph.train(was_training)


def _interval(low: float, high: float) -> str:
    left = "(-inf" if low == -math.inf else f"[{low:g}"
    right = "inf)" if high == math.inf else f"{high:g}]"
    return f"{left}, {right}"


def _value_range(x: torch.Tensor, w: torch.Tensor | None) -> tuple[float, float] | None:
    """``(min, max)`` of the values of ``x`` whose weight is positive, or None when there are none.

    Checked data are finite.  No copy of the data is made: with a boolean-indexed copy of the whole
    training set here, the 784-256-784 steps that followed ran about 30% slower on this project's
    2-core machine (42,000 against 57,000 samples/s, measured side by side).
    """
    if x.numel() == 0:
        return None
    if w is None:
        low, high = torch.aminmax(x)
        return float(low), float(high)
    chosen = w > 0
    if not bool(chosen.any()):
        return None
    low = torch.where(chosen, x, torch.full_like(x, math.inf)).min()
    high = torch.where(chosen, x, torch.full_like(x, -math.inf)).max()
    return float(low), float(high)


def check_output_ranges(
    graph: Graph, losses: Sequence[Any], x: torch.Tensor, w: torch.Tensor | None, what: str = "the training data"
) -> None:
    """Warn (:class:`~aekit.errors.OutputRangeWarning`) when a loss or the data cannot fit an output's range.

    Parameters
    ----------
    graph : Graph
    losses : sequence of Loss
        The objective's reconstruction losses; each names the layer it reads.
    x, w : tensor
        The training data, whose values are the reconstruction targets, and their weights (or None).
    what : str
        What ``x`` is, for the message.
    """
    span: tuple[float, float] | None = None
    seen: set[str] = set()
    for loss in losses:
        if loss.output not in graph.layers or loss.output in seen:
            continue
        seen.add(loss.output)
        activation = graph.layers[loss.output].spec.activation
        if not isinstance(activation, str):
            continue
        low, high = output_range(activation)
        # Why a warning and not an error: output_range knows only the built-in activations (one
        # registered by a user reads as unbounded, however it behaves), and models and checkpoints
        # written before this check must keep training.  The message names the remedy;
        # warnings.simplefilter('error', aekit.OutputRangeWarning) makes it an error.
        if loss.name == "bce" and not (low >= 0 and high <= 1):
            warnings.warn(
                f"loss='bce' treats the outputs of layer {loss.output!r} as probabilities in [0, 1], but its "
                f"activation {activation!r} has outputs in {_interval(low, high)}: outputs outside (0, 1) are "
                "clipped and get no gradient, so the model learns little or nothing. Use a 'sigmoid' output "
                "(output_activation='sigmoid', or (n, 'sigmoid') as the last layer) for data in [0, 1], "
                "or loss='mse' for a linear output",
                OutputRangeWarning,
                stacklevel=4,
            )
        if low == -math.inf and high == math.inf:
            continue
        if span is None:
            span = _value_range(x, w)
            if span is None:
                return
        found_low, found_high = span
        tol = 1e-6 * max(1.0, high - low if math.isfinite(high - low) else 1.0)
        if found_low < low - tol or found_high > high + tol:
            warnings.warn(
                f"{what} span [{found_low:.4g}, {found_high:.4g}], outside the range {_interval(low, high)} of "
                f"the output activation {activation!r} of layer {loss.output!r}: those values can never be "
                f"reconstructed. Scale the data into {_interval(low, high)} (e.g. divide 0..255 pixels by 255), "
                "or use a 'linear' output layer",
                OutputRangeWarning,
                stacklevel=4,
            )


def warn_tail_split(fraction: float, start: int, stop: int) -> None:
    """Say that ``valid_split`` took rows ``start:stop``, the tail of streamed data, for validation.

    Streamed data are read block by block, so the validation rows are one contiguous block rather
    than a random sample: on a file sorted by class or time the validation data differ from the
    training data (one class, the latest period), and early stopping watches the wrong thing.
    """
    warnings.warn(
        f"valid_split={fraction:g} on streamed (memory-mapped) x holds out its last {stop - start} rows "
        f"({start}:{stop}), not a random sample as for in-memory data; if the rows are sorted (by class, "
        "by time), shuffle the file once, or pass valid= explicitly",
        AekitWarning,
        stacklevel=5,
    )
