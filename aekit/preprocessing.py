"""Moved to :mod:`aekit.data.preprocessing`; this path stays importable as the same module."""

import sys

from .data import preprocessing as _moved

sys.modules[__name__] = _moved
