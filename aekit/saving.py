"""Moved to :mod:`aekit.io.model_file`; this path stays importable as the same module."""

import sys

from .io import model_file as _moved

sys.modules[__name__] = _moved
