"""What the training history says: how many optimizer steps, whether the loss was still falling.

:func:`read_progress` reads ``net.history`` (each epoch's monitors and, since aekit records it, its
optimizer ``steps``).  :func:`decide_pace` turns it, with what the other checks found, into the one
piece of advice on steps and learning rate that every remedy of a diagnosis shares (:class:`Pace`):
a diagnosis never tells one finding to lower the learning rate and the next to raise it.

The rules, in order:

1. training diverged, or the loss rose over the last epochs: a smaller learning rate;
2. too few steps, or the loss still falling: more steps; a larger learning rate as well only when the
   loss fell in every one of the last epochs (the steps are not too large) and no unit is dead or
   saturated (larger steps switch off or saturate more of them); else the same learning rate;
3. otherwise, dead or saturated units: a smaller learning rate; else nothing about it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .findings import Finding

__all__ = ["GOOD_FIT", "MIN_STEPS", "Pace", "Progress", "decide_pace", "read_progress", "training_findings"]

# Below this many optimizer steps a model rarely learns more than the data mean.
MIN_STEPS = 1000
# A reconstruction R^2 below this is a poor fit (the 'fit' finding's "more would help").
GOOD_FIT = 0.5


@dataclasses.dataclass(frozen=True)
class Progress:
    """The training history, measured.

    Attributes
    ----------
    epochs : int
        Epochs in the history.
    steps : int or None
        Optimizer steps over all of them; None when some epoch did not record its ``steps``.
    step_counts : tuple of int
        The distinct per-epoch step counts recorded.
    window : int
        The last epochs the slope was fitted on (0 when fewer than 3 finite losses).
    slope : float
        Least-squares slope of the training loss over the window, per epoch.
    loss : float
        The mean training loss over the window.
    rate : float
        ``-slope / loss``: the relative fall of the loss per epoch (negative when it rose).
    falls : int
        Epochs of the window in which the loss fell (out of ``window - 1``).
    valid_stalled : bool
        Validation losses recorded over the window did not fall (more training would overfit).
    threshold : float
        The rate above which the loss counts as still falling.
    err_rate : float or None
        The same rate for the reconstruction error ``err``, when it differs from the loss
        (penalties are part of the loss).
    """

    epochs: int
    steps: int | None
    step_counts: tuple[int, ...]
    window: int
    slope: float
    loss: float
    rate: float
    falls: int
    valid_stalled: bool
    threshold: float
    err_rate: float | None = None

    @property
    def improving(self) -> bool:
        """The loss fell faster than the threshold, in at least half the epochs, and validation agrees."""
        return (
            self.window >= 3
            and self.rate > self.threshold
            and 2 * self.falls >= self.window - 1
            and not self.valid_stalled
        )

    @property
    def steady(self) -> bool:
        """The loss fell in every epoch of the window."""
        return self.window >= 3 and self.falls == self.window - 1

    @property
    def rising(self) -> bool:
        """The loss rose faster than the threshold, in more than half the epochs."""
        return self.window >= 3 and self.rate < -self.threshold and 2 * self.falls < self.window - 1

    def describe_steps(self) -> str:
        """``'100 optimizer steps (100 epochs of 1 step)'`` and the like."""
        if self.steps is None:
            return f"{self.epochs} epoch{'s' if self.epochs != 1 else ''}"
        counts = self.step_counts
        per = (
            f" of {counts[0]} step{'s' if counts[0] != 1 else ''}"
            if len(counts) == 1
            else f" of {min(counts)} to {max(counts)} steps"
        )
        return f"{self.steps} optimizer steps ({self.epochs} epoch{'s' if self.epochs != 1 else ''}{per})"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def read_progress(history: Sequence[Any] | None, window: int, threshold: float) -> Progress | None:
    """Measure ``net.history``; None when there is none.

    Parameters
    ----------
    history : list of dict
        ``{'epoch', 'train', 'valid', 'steps'}`` entries (``steps`` may be missing: older models).
    window : int
        Fit the slope over at most this many last epochs.
    threshold : float
        The relative fall per epoch above which the loss counts as still falling.
    """
    entries = [e for e in (history or []) if isinstance(e, dict)]
    if not entries:
        return None
    counts = [c for c in (e.get("steps") for e in entries) if isinstance(c, int) and not isinstance(c, bool) and c >= 0]
    known = len(counts) == len(entries)  # histories written before aekit recorded steps have none
    steps = sum(counts) if known else None
    step_counts = tuple(sorted(set(counts))) if known else ()
    last = entries[-window:]
    losses = [_number((e.get("train") or {}).get("loss")) for e in last]
    series = np.asarray([v if v is not None else math.nan for v in losses], dtype=np.float64)
    size, slope, level, rate, falls, stalled, err_rate = 0, 0.0, math.nan, 0.0, 0, False, None
    if len(series) >= 3 and np.isfinite(series).all():
        size = len(series)
        slope, level, rate = _trend(series)
        falls = int(np.sum(np.diff(series) < 0))
        errs = [_number((e.get("train") or {}).get("err")) for e in last]
        err_series = np.asarray([v if v is not None else math.nan for v in errs], dtype=np.float64)
        if np.isfinite(err_series).all() and not np.allclose(err_series, series, rtol=1e-9, atol=0.0):
            err_rate = _trend(err_series)[2]
        # The validation loss is repeated between validations: compare the distinct values.
        valid = [_number((e.get("valid") or {}).get("loss")) for e in last]
        points = [v for i, v in enumerate(valid) if v is not None and (i == 0 or v != valid[i - 1])]
        stalled = len(points) >= 2 and math.isfinite(points[-1]) and points[-1] >= points[0]
    return Progress(len(entries), steps, step_counts, size, slope, level, rate, falls, stalled, threshold, err_rate)


def _trend(series: np.ndarray) -> tuple[float, float, float]:
    """``(slope, level, rate)``: least-squares slope per epoch, mean ``|value|``, and ``-slope / level``."""
    slope = float(np.polyfit(np.arange(len(series), dtype=np.float64), series, 1)[0])
    level = float(np.abs(series).mean())
    return slope, level, -slope / level if level > 0 else 0.0


@dataclasses.dataclass(frozen=True)
class Pace:
    """The advice on steps and learning rate that every remedy of one diagnosis shares.

    Attributes
    ----------
    longer : bool
        Train for more optimizer steps.
    direction : {'lower', 'higher'} or None
        Change the learning rate this way, or leave it.
    reason : str
        Why (the measured fact behind the direction).
    see : str or None
        The code of the finding whose remedy gives the advice in full.
    full : str
        The advice in full, for the findings about training itself.
    """

    longer: bool = False
    direction: str | None = None
    reason: str = ""
    see: str | None = None
    full: str = ""

    def short(self) -> str:
        """The advice in one sentence, for the remedies of the other findings ('' when there is none)."""
        see = f" (see {self.see})" if self.see else ""
        if self.longer:
            rate = {"higher": "a larger learning_rate", "lower": "a smaller learning_rate"}.get(
                self.direction or "", "the same learning_rate"
            )
            return f"Train for more optimizer steps, with {rate}{see}."
        if self.direction == "lower":
            return (
                f"Use a smaller learning_rate{see}: {self.reason}."
                if self.reason
                else f"Use a smaller learning_rate{see}."
            )
        return ""


def decide_pace(
    progress: Progress | None,
    *,
    diverged: bool,
    longer: bool,
    troubled_units: int,
    see: str | None,
    min_steps: int = MIN_STEPS,
) -> Pace:
    """The one :class:`Pace` of a diagnosis (see the module docstring for the rules).

    Parameters
    ----------
    progress : Progress or None
    diverged : bool
        NaN or Inf in the parameters or the history.
    longer : bool
        ``too-few-steps`` or ``still-improving`` was found.
    troubled_units : int
        Dead or saturated units found.
    see : str or None
        The finding that carries the advice in full.
    min_steps : int
        The bar of ``too-few-steps``, for the suggested number of epochs.
    """
    if diverged:
        return Pace(False, "lower", "training diverged", "diverged")
    window = progress.window if progress is not None else 0
    if progress is not None and progress.rising:
        direction, reason = "lower", f"the loss rose over the last {window} epochs"
    elif longer and progress is not None:
        if progress.steady and not troubled_units:
            direction, reason = "higher", f"the loss fell in every one of the last {window} epochs"
        elif troubled_units:
            direction = None
            reason = f"{troubled_units} units are dead or saturated, and larger steps switch off or saturate more"
        else:
            direction, reason = None, f"the loss did not fall in every one of the last {window} epochs"
    elif troubled_units:
        direction = "lower"
        reason = f"{troubled_units} units are dead or saturated, which large steps cause and cannot undo"
    else:
        return Pace()
    full = ""
    if longer and progress is not None:
        full = (
            f"Train for more optimizer steps: e.g. max_epochs={_suggest_epochs(progress, min_steps)} (a larger "
            "patience too if early stopping ended the run), or a smaller batch_size for more steps per epoch; "
            "calling net.train again goes on from the current parameters."
        )
        if direction == "higher":
            full += (
                f" {reason[0].upper()}{reason[1:]}, so the steps are not too large: a larger learning_rate "
                "(e.g. 3x) would speed training up."
            )
        elif direction == "lower":
            full += f" Use a smaller learning_rate (e.g. 3x smaller): {reason}."
        else:
            full += f" Keep the learning_rate: {reason}."
    return Pace(longer and progress is not None, direction, reason, see if longer else None, full)


def _suggest_epochs(progress: Progress, min_steps: int) -> int:
    """Epochs that give at least ``min_steps`` steps and 10x the steps taken so far."""
    if progress.steps:
        per_epoch = progress.steps / progress.epochs
        return max(2 * progress.epochs, math.ceil(max(min_steps, 10 * progress.steps) / per_epoch))
    return 10 * progress.epochs


def training_findings(
    progress: Progress | None, r2: float | None, min_steps: int, good_fit: float = GOOD_FIT
) -> tuple[bool, bool]:
    """Whether ``too-few-steps`` and ``still-improving`` apply (their findings need the :class:`Pace`)."""
    if progress is None:
        return False, False
    poor = r2 is not None and r2 < good_fit
    few = progress.steps is not None and progress.steps < min_steps and (progress.improving or poor)
    return few, progress.improving


def steps_finding(
    progress: Progress, r2: float | None, min_steps: int, pace: Pace, good_fit: float = GOOD_FIT
) -> Finding:
    """``too-few-steps``: fewer than ``min_steps`` optimizer steps, with the loss still falling or a poor fit."""
    assert progress.steps is not None  # training_findings said it applies
    why = []
    if progress.improving:
        why.append(f"its loss was still falling ({progress.rate:.2%} per epoch over the last {progress.window})")
    if r2 is not None and r2 < good_fit:
        why.append(f"its fit is poor (R^2 = {r2:.3f})")
    return Finding(
        "too-few-steps",
        "warning",
        f"The model took only {progress.describe_steps()}, fewer than the {min_steps} an autoencoder usually needs, "
        f"and {' and '.join(why)}.",
        pace.full,
        float(progress.steps),
    )


def improving_finding(
    progress: Progress, r2: float | None, few: bool, pace: Pace, good_fit: float = GOOD_FIT
) -> Finding:
    """``still-improving``: the training loss was still falling at the end (a warning with a poor fit or few steps)."""
    poor = r2 is not None and r2 < good_fit
    return Finding(
        "still-improving",
        "warning" if poor or few else "info",
        f"The training loss was still falling when training stopped: over the last {progress.window} epochs it fell "
        f"{progress.rate:.2%} per epoch (least-squares slope {progress.slope:.3g} per epoch on a loss of "
        f"{progress.loss:.4g}), in {progress.falls} of {progress.window - 1} epochs"
        + (
            f"; the reconstruction error (err) changed by {-progress.err_rate * 100:+.2g}% per epoch: the fall is "
            "in the penalty terms."
            if progress.err_rate is not None and progress.err_rate < progress.threshold
            else "."
        ),
        pace.full if pace.see == "still-improving" else pace.short(),
        progress.rate,
    )
