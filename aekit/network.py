"""Moved to :mod:`aekit.autoencoder`; this path stays importable as the same module."""

import sys

from . import autoencoder as _moved

sys.modules[__name__] = _moved
