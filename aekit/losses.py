"""Moved to :mod:`aekit.objective.losses`; this path stays importable as the same module."""

import sys

from .objective import losses as _moved

sys.modules[__name__] = _moved
