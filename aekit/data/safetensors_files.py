"""Activation files in the safetensors format (``.safetensors``), as sparse-autoencoder work stores them.

A file may hold several tensors (activations beside token ids, positions ...):
``key=`` picks one, and a file with a single 2-D-or-more tensor needs none.
With ``mmap=True`` the tensor is not read at once: :class:`SafetensorsArray` reads
the rows it is sliced for, so training streams a file larger than memory block by
block (see :class:`aekit.data.sources.StreamingSource`).  Nothing in the file is
executed: safetensors holds raw tensors and a JSON header.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open

from ..errors import DataError

__all__ = ["SafetensorsArray", "load_safetensors"]


class SafetensorsArray:
    """One tensor of a ``.safetensors`` file, read lazily: ``shape``, ``dtype``, ``len`` and row slicing.

    Parameters
    ----------
    path : Path
    key : str
    """

    def __init__(self, path: Path, key: str):
        self.path, self.key = path, key
        with safe_open(str(path), framework="numpy") as handle:
            view = handle.get_slice(key)
            self.shape: tuple[int, ...] = tuple(int(n) for n in view.get_shape())
            self.dtype = np.dtype(_NUMPY_DTYPES.get(view.get_dtype(), "V"))

    def __repr__(self) -> str:
        return f"SafetensorsArray({str(self.path)!r}, key={self.key!r}, shape={self.shape}, dtype={self.dtype})"

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        """The number of dimensions."""
        return len(self.shape)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """The whole tensor, read at once (``np.asarray(lazy)``)."""
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)

    def __getitem__(self, index: Any) -> np.ndarray:
        """The rows ``index`` (a slice, an int or an increasing array of row numbers), read from the file."""
        with safe_open(str(self.path), framework="numpy") as handle:
            view = handle.get_slice(self.key)
            if isinstance(index, slice):
                return np.asarray(view[index])
            rows = np.asarray(index)
            if rows.ndim == 0:
                row = int(rows) + (self.shape[0] if int(rows) < 0 else 0)
                if not 0 <= row < self.shape[0]:
                    raise IndexError(f"row {int(rows)} is out of range for {self.shape[0]} rows")
                return np.asarray(view[row : row + 1])[0]
            if not rows.size:
                return np.asarray(view[0:0])
            # One contiguous read of the rows' span, then the rows (callers pass them in increasing order).
            low, high = int(rows.min()), int(rows.max()) + 1
            return np.asarray(view[low:high])[rows - low]


# safetensors' dtype names -> NumPy's (bfloat16 has no NumPy dtype: refused with a message).
_NUMPY_DTYPES = {
    "F16": "float16",
    "F32": "float32",
    "F64": "float64",
    "I8": "int8",
    "I16": "int16",
    "I32": "int32",
    "I64": "int64",
    "U8": "uint8",
    "U16": "uint16",
    "U32": "uint32",
    "U64": "uint64",
    "BOOL": "bool",
}


def _pick(path: Path, key: str | None) -> tuple[str, dict[str, tuple[list[int], str]]]:
    try:
        with safe_open(str(path), framework="numpy") as handle:
            tensors = {k: (handle.get_slice(k).get_shape(), handle.get_slice(k).get_dtype()) for k in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise DataError(f"{str(path)!r} is not a readable .safetensors file: {error}") from None
    if not tensors:
        raise DataError(f"{str(path)!r} is a .safetensors file with no tensors")
    described = ", ".join(f"{k!r} {tuple(shape)}" for k, (shape, _) in tensors.items())
    if key is None:
        candidates = [k for k, (shape, _) in tensors.items() if len(shape) >= 2]
        if len(candidates) != 1:
            raise DataError(f"{str(path)!r} holds several tensors ({described}); pick one with key=")
        key = candidates[0]
    if key not in tensors:
        raise DataError(f"{str(path)!r} has no tensor named {key!r}; it holds {described}")
    if tensors[key][1] not in _NUMPY_DTYPES or tensors[key][1] == "BOOL":
        raise DataError(f"{str(path)!r}: tensor {key!r} has dtype {tensors[key][1]}, but aekit needs real numbers")
    return key, tensors


def load_safetensors(path: Path, key: str | None, mmap: bool) -> np.ndarray | SafetensorsArray:
    """The tensor ``key`` of a ``.safetensors`` file: a NumPy array, or a lazy :class:`SafetensorsArray`.

    Parameters
    ----------
    path : Path
    key : str, optional
        Needed when the file holds more than one tensor of 2 or more dimensions.
    mmap : bool
        Return a :class:`SafetensorsArray` that reads rows on demand instead of the whole tensor.

    Raises
    ------
    DataError
        A damaged file, an unknown or ambiguous key, a tensor that is not real numbers.
    """
    key, _ = _pick(path, key)
    if mmap:
        return SafetensorsArray(path, key)
    try:
        with safe_open(str(path), framework="numpy") as handle:
            return np.asarray(handle.get_tensor(key))
    except (SafetensorError, OSError, ValueError) as error:
        raise DataError(f"{str(path)!r} is not a readable .safetensors file: {error}") from None
