"""Moved to :mod:`aekit.model.specs`; this path stays importable as the same module."""

import sys

from .model import specs as _moved

sys.modules[__name__] = _moved
