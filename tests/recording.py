"""Test helper: an on-disk-like array (h5py, zarr) that records the rows read from it."""

from __future__ import annotations

import numpy as np


class RecordingArray:
    """A read-only array-like (streamed like a memmap: shape, dtype and indexing, no ``__array__``)
    that records the rows read from it, by slices or by lists of rows."""

    def __init__(self, array: np.ndarray):
        self.array, self.shape, self.dtype, self.rows = array, array.shape, array.dtype, []

    def __getitem__(self, index):
        self.rows.extend(np.arange(len(self.array))[index].tolist())
        return self.array[index]
