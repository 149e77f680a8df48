"""Checks of arguments, each failing with one line that names the argument, what it must be and what came.

Options fail with :class:`~aekit.errors.ConfigurationError`, arrays with :class:`~aekit.errors.DataError`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import ConfigurationError, DataError

__all__ = ["as_array", "as_float32", "as_labels", "integer", "number", "seed_from"]


def integer(key: str, value: Any, low: int) -> int:
    """``value`` as an int >= ``low`` (an int-like value, not a bool or a float)."""
    if not hasattr(value, "__index__") or isinstance(value, bool) or value < low:
        raise ConfigurationError(f"{key} must be an integer >= {low}, got {value!r}")
    return int(value)


def number(key: str, value: Any, low: float, high: float, open_low: bool = False) -> float:
    """``value`` as a finite float in [``low``, ``high``] (``(low, high]`` with ``open_low``)."""
    ok = isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = math.isfinite(value) and (value > low if open_low else value >= low) and value <= high
    if not ok:
        bracket = "(" if open_low else "["
        raise ConfigurationError(f"{key} must be a number in {bracket}{low}, {high}], got {value!r}")
    return value


def as_array(key: str, value: Any) -> np.ndarray:
    """``np.asarray(value)``, or a DataError where that fails (ragged lists, bytes that are not text)."""
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as error:
        raise DataError(f"{key} must be a rectangular array ({error})") from None


def as_labels(key: str, value: Any) -> np.ndarray:
    """:func:`as_array` of labels; objects (mixed types, None) become text, so that they can be sorted.

    Numbers, booleans and strings stay as they are; an object array (mixed types, None) is
    converted to strings, so that the labels can be compared and sorted.
    """
    labels = as_array(key, value)
    return labels if labels.dtype.kind in "biufUS" else labels.astype(str)


def as_float32(key: str, array: np.ndarray) -> np.ndarray:
    """``array`` (any real dtype and shape) as a contiguous float32 array of finite values.

    A DataError names the first bad value: NaN or infinite, or finite but beyond
    float32's range (1e40 in a float64 file), which the conversion would make infinite.
    """
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported below, by value
        converted = np.ascontiguousarray(array, dtype=np.float32)
    finite = np.isfinite(converted)
    if not finite.all():
        bad = np.argwhere(~finite)[0]
        where = f"row {bad[0]}, column {bad[1] if len(bad) > 1 else 0}"
        value = array[tuple(bad)]
        if np.isfinite(value):  # finite as given, infinite as float32
            raise DataError(f"{key} holds values too large for float32 (first at {where}: {value}); rescale the data")
        raise DataError(f"{key} holds NaN or infinite values (first at {where}: {value})")
    return converted


def seed_from(rng: Any) -> int:
    """An int seed from ``rng``: an int, a NumPy ``Generator``/``RandomState``, or None (a fresh one)."""
    if rng is None:  # as scikit-learn's random_state=None: a fresh seed from the operating system
        return int(np.random.SeedSequence().generate_state(1)[0] % 2**31)
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return int(rng)
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(2**31))
    if isinstance(rng, np.random.RandomState):
        return int(rng.randint(2**31))
    raise ConfigurationError(f"rng must be an int seed, a NumPy random generator or None, got {rng!r}")
