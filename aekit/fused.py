"""Moved to :mod:`aekit.train.fused`; this path stays importable as the same module."""

import sys

from .train import fused as _moved

sys.modules[__name__] = _moved
