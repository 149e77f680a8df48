"""Moved to :mod:`aekit.data.datasets`; this path stays importable as the same module."""

import sys

from .data import datasets as _moved

sys.modules[__name__] = _moved
