"""Moved to :mod:`aekit.train.step`; this path stays importable as the same module."""

import sys

from .train import step as _moved

sys.modules[__name__] = _moved
