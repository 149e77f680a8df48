"""Moved to :mod:`aekit.objective.penalties`; this path stays importable as the same module."""

import sys

from .objective import penalties as _moved

sys.modules[__name__] = _moved
