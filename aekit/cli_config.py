"""Moved to :mod:`aekit.cli.config`; this path stays importable as the same module."""

import sys

from .cli import config as _moved

sys.modules[__name__] = _moved
