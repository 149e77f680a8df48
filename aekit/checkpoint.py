"""Moved to :mod:`aekit.train.checkpoint`; this path stays importable as the same module."""

import sys

from .train import checkpoint as _moved

sys.modules[__name__] = _moved
