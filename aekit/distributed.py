"""Moved to :mod:`aekit.train.distributed`; this path stays importable as the same module."""

import sys

from .train import distributed as _moved

sys.modules[__name__] = _moved
