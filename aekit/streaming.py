"""Moved to :mod:`aekit.data.sources`; this path stays importable as the same module."""

import sys

from .data import sources as _moved

sys.modules[__name__] = _moved
