"""Moved to :mod:`aekit.model.layers.conv`; this path stays importable as the same module."""

import sys

from .model.layers import conv as _moved

sys.modules[__name__] = _moved
