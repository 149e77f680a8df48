"""Measures that the diagnosis and the pictures share, so that they always agree.

* which rows are looked at: :func:`sample_rows` (``MAX_SAMPLES`` evenly spaced rows, the data's
  order kept), used by :func:`aekit.diagnose` and :func:`aekit.report.write_report` alike;
* which units are dead: :func:`dead_units` (a unit whose output range over the rows is at most
  ``DEAD_TOLERANCE``; image-shaped layers count channels over all positions);
* how much codes vary: :func:`code_spread` (``sqrt(mean_j var_j(z)) / rms(z)``; a code is collapsed
  below ``COLLAPSE_RATIO``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "COLLAPSE_RATIO",
    "DEAD_TOLERANCE",
    "MAX_SAMPLES",
    "code_spread",
    "dead_units",
    "sample_note",
    "sample_rows",
    "unit_columns",
]

# The rows a diagnosis and a report look at: at most this many, evenly spaced.
MAX_SAMPLES = 5000
# A unit whose output range over the rows is at most this is dead.
DEAD_TOLERANCE = 1e-6
# A code whose spread across inputs is below this fraction of its size is collapsed.
COLLAPSE_RATIO = 1e-2


def sample_rows(n: int, max_samples: int = MAX_SAMPLES) -> np.ndarray:
    """The indices of at most ``max_samples`` evenly spaced rows of ``n``, first and last included.

    Evenly spaced rows keep the data's order (the order check needs it) and are the same on every call.

    Examples
    --------
    >>> sample_rows(10, 4).tolist(), sample_rows(3, 5).tolist()
    ([0, 3, 6, 9], [0, 1, 2])
    """
    if n <= max_samples:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_samples).round().astype(np.int64))


def sample_note(used: int, total: int) -> str:
    """``''`` when every row was used, else a parenthesis that says how many were.

    Examples
    --------
    >>> sample_note(5000, 60000), sample_note(40, 40)
    (' (over 5000 evenly spaced rows of the 60000)', '')
    """
    return "" if used >= total else f" (over {used} evenly spaced rows of the {total})"


def unit_columns(values: Any) -> np.ndarray:
    """A layer's outputs as (examples, units); image-shaped layers as (examples * positions, channels)."""
    values = np.asarray(values)
    if values.ndim <= 2:
        return values.reshape(values.shape[0], -1)
    return np.moveaxis(values.reshape(values.shape[0], values.shape[1], -1), 1, 2).reshape(-1, values.shape[1])


def dead_units(values: Any, tolerance: float = DEAD_TOLERANCE) -> np.ndarray:
    """A boolean mask of the units whose output is constant over the rows (range <= ``tolerance``).

    ``values`` is a layer's outputs, (examples, units) or (examples, channels, ...); a unit that
    is never finite is dead too.

    Examples
    --------
    >>> dead_units(np.array([[0.0, 1.0, 2.0], [0.0, 3.0, 2.0]])).tolist()
    [True, False, True]
    """
    columns = unit_columns(values).astype(np.float64)
    finite = np.where(np.isfinite(columns), columns, np.nan)
    if finite.shape[0] == 0:
        return np.zeros(finite.shape[1], dtype=bool)
    # fmax/fmin skip NaN (a column of NaN gives NaN, hence dead) without numpy's all-NaN warning.
    spans = np.fmax.reduce(finite, axis=0) - np.fmin.reduce(finite, axis=0)
    return ~(spans > tolerance)


def code_spread(codes: Any) -> tuple[float, float, float]:
    """``(spread, rms, spread / rms)`` of codes: how much they vary across inputs against their size.

    ``spread = sqrt(mean_j var_j(z))`` (the standard deviation across inputs, averaged over units as
    a variance) and ``rms = sqrt(mean(z ** 2))``; rows with a non-finite value are left out.  The
    ratio is 0 for codes that are all 0.

    Examples
    --------
    >>> code_spread(np.array([[1.0, 1.0], [1.0, 1.0]]))
    (0.0, 1.0, 0.0)
    """
    z = np.asarray(codes, dtype=np.float64)
    z = z.reshape(z.shape[0], -1)
    z = z[np.isfinite(z).all(axis=1)]
    if len(z) < 2:
        return 0.0, 0.0, 0.0
    spread = math.sqrt(float(z.var(axis=0).mean()))
    rms = math.sqrt(float(np.mean(z**2)))
    return spread, rms, spread / rms if rms > 0 else 0.0
