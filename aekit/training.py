"""Moved to :mod:`aekit.train.loop`; this path stays importable as the same module."""

import sys

from .train import loop as _moved

sys.modules[__name__] = _moved
