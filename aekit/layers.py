"""Moved to :mod:`aekit.model.layers.dense`; this path stays importable as the same module."""

import sys

from .model.layers import dense as _moved

sys.modules[__name__] = _moved
