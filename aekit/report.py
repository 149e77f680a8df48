"""Moved to :mod:`aekit.inspect.report`; this path stays importable as the same module."""

import sys

from .inspect import report as _moved

sys.modules[__name__] = _moved
