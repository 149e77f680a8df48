"""Moved to :mod:`aekit.data.loaders`; this path stays importable as the same module."""

import sys

from .data import loaders as _moved

sys.modules[__name__] = _moved
