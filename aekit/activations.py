"""Moved to :mod:`aekit.model.activations`; this path stays importable as the same module."""

import sys

from .model import activations as _moved

sys.modules[__name__] = _moved
