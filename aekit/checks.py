"""Checks of arguments: one-line :class:`~aekit.errors.ConfigurationError` (options) or
:class:`~aekit.errors.DataError` (arrays) messages that name the argument, what it must be and
what came."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import ConfigurationError, DataError

__all__ = ["as_array", "as_labels", "integer", "number"]


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
    """:func:`as_array` of labels; objects (mixed types, None) become text, so that they can be
    compared and sorted."""
    labels = as_array(key, value)
    return labels if labels.dtype.kind in "biufUS" else labels.astype(str)
