"""Moved to :mod:`aekit.data.validation`; this path stays importable as the same module."""

import sys

from .data import validation as _moved

sys.modules[__name__] = _moved
