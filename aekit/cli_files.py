"""Moved to :mod:`aekit.cli.files`; this path stays importable as the same module."""

import sys

from .cli import files as _moved

sys.modules[__name__] = _moved
