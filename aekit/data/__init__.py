"""Data: checks, sources (in memory, streamed), loaders, datasets and preprocessing.

This package is also the old module ``aekit.data``: its array checks stay importable from here.
"""

from .checks import all_finite, check_array, check_weights, first_row, to_numpy

__all__ = ["all_finite", "check_array", "check_weights", "first_row", "to_numpy"]
