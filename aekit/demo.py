"""Moved to :mod:`aekit.cli.demo`; this path stays importable as the same module."""

import sys

from .cli import demo as _moved

sys.modules[__name__] = _moved
