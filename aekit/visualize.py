"""Moved to :mod:`aekit.inspect.features`; this path stays importable as the same module."""

import sys

from .inspect import features as _moved

sys.modules[__name__] = _moved
