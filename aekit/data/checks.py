"""Array checks at the boundary: everything a user passes in is checked here once.

:func:`check_array` turns NumPy arrays, tensors or nested lists into float tensors
of shape (n, *input_shape), with one clear :class:`~aekit.errors.DataError`
message for each way an array can be wrong.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import DataError

__all__ = ["all_finite", "check_array", "check_weights", "first_row", "split_data", "to_numpy"]


def _describe(x: Any) -> str:
    shape = getattr(x, "shape", None)
    return f"{type(x).__name__} of shape {tuple(shape)}" if shape is not None else type(x).__name__


def real_array(x: Any, name: str = "x") -> np.ndarray:
    """``x`` as a NumPy array of real numbers (booleans allowed), any shape.

    Raises
    ------
    DataError
        If ``x`` is ragged, or holds objects, strings or complex numbers.
    """
    try:
        array = np.asarray(x)
    except (ValueError, TypeError) as error:
        raise DataError(f"{name} must be a rectangular numeric array ({error})") from None
    if (
        array.dtype == object
        or not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_)
        or np.issubdtype(array.dtype, np.complexfloating)
    ):
        raise DataError(f"{name} must hold real numbers, got an array of dtype {array.dtype}")
    return array


def _data_shape(part: Any) -> tuple[int, ...] | None:
    """The shape of array-like ``part`` (None if it has none: a number, a ragged list, ...)."""
    shape = getattr(part, "shape", None)
    if shape is None and isinstance(part, (list, tuple)):
        try:
            shape = np.shape(part)
        except ValueError:  # ragged: check_array names the argument
            return None
    try:
        return None if shape is None else tuple(int(size) for size in shape)
    except TypeError:
        return None


def split_data(
    data: Any,
    name: str = "x",
    *,
    weighted: bool = False,
    weights: bool = False,
    example_shape: Sequence[int] | None = None,
) -> tuple[Any, Any]:
    """``(x, w)`` from the forms of data that aekit takes: ``x``, ``[x]`` or ``[x, w]``.

    theanets passes data sets as lists of arrays: ``train([x])``, ``predict([x])``,
    ``train([x, w])`` for a weighted model.  A list or tuple of one or two array-likes
    of 2 or more dimensions is such a list; anything else is the data itself (a list of
    numbers or of rows, and a list of examples of ``example_shape``, such as one image
    ``[img]``, are data).  Called once, where data enter the library.

    Parameters
    ----------
    data : array-like, or list of array-likes
    name : str
        The argument's name, for error messages.
    weighted : bool
        Whether the model is weighted (``[x, w]`` is its form of data with weights).
    weights : bool
        Whether the caller takes weights (training, ``score``, ``loss``).
    example_shape : sequence of int, optional
        The shape of one example: an item of this shape is an example, not a data set.

    Returns
    -------
    x : array-like
    w : array-like or None
        The weights of ``[x, w]`` (only where ``weighted`` and ``weights``).

    Raises
    ------
    DataError
        For ``[x, w]`` where the model or the caller takes no weights.
    """
    if not isinstance(data, (list, tuple)) or len(data) not in (1, 2):
        return data, None
    examples = set()  # the shapes of one example: as declared, and without its leading axes of 1
    shape = tuple(int(size) for size in example_shape or ())
    while shape:
        examples.add(shape)
        shape = shape[1:] if shape[0] == 1 and len(shape) > 1 else ()
    shapes = [_data_shape(part) for part in data]
    if not all(shape is not None and len(shape) >= 2 and shape not in examples for shape in shapes):
        return data, None
    if len(data) == 1:
        return data[0], None
    if weighted and weights:
        return data[0], data[1]
    if weights:
        raise DataError(
            f"{name} is a pair of arrays, as [x, w] for a weighted Autoencoder, but this "
            f"Autoencoder has weighted=False; pass x alone, or build it with weighted=True"
        )
    raise DataError(f"{name} is a pair of arrays, as [x, w]; this call takes {name} alone (or [{name}])")


def check_array(
    x: Any,
    input_shape: tuple[int, ...],
    name: str = "x",
    layer: str = "in",
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    allow_empty: bool = False,
    check_finite: bool = True,
    rows: Sequence[int] | None = None,
) -> torch.Tensor:
    """Validate ``x`` and return it as a tensor of shape (n, *input_shape).

    Parameters
    ----------
    x : array-like, shape (n, features) or (n, *input_shape)
        The data.  Flat rows are reshaped to the declared image shape.
    input_shape : tuple of int
        The per-example shape the model expects.
    name, layer : str
        Used in error messages (``x has 783 features, but this Autoencoder
        expects 784 (layer 'in')``).
    rows : sequence of int, optional
        The row number of each of ``x``'s rows in the data the user gave, for
        error messages about a block of a larger, streamed array (default: 0,
        1, ...).

    Raises
    ------
    DataError
        If ``x`` is not numeric, not finite, empty, of the wrong rank or size.
    """
    if isinstance(x, torch.Tensor):
        tensor = x.detach()
        if tensor.is_complex() or tensor.dtype == torch.bool:
            raise DataError(f"{name} must hold real numbers, got a tensor of dtype {tensor.dtype}")
    else:
        if isinstance(x, (str, bytes, dict)) or x is None:
            raise DataError(f"{name} must be a 2-D numeric array, got {_describe(x)}")
        array = real_array(x, name)
        if not array.dtype.isnative:  # torch reads native byte order only (e.g. '>f4' from a file)
            array = array.astype(array.dtype.newbyteorder("="))
        array = np.ascontiguousarray(array)
        if not array.flags.writeable:  # a memmap opened read-only: torch warns about sharing it
            array = array.copy()
        tensor = torch.from_numpy(array)
    n_features = math.prod(input_shape)
    if tensor.dim() < 2:
        raise DataError(f"{name} must be 2-D (examples, features), got {tensor.dim()}-D shape {tuple(tensor.shape)}")
    if tensor.shape[0] == 0 and not allow_empty:
        raise DataError(f"{name} is empty: it has 0 examples")
    example_shape = tuple(tensor.shape[1:])
    if example_shape != tuple(input_shape):
        flat = math.prod(example_shape)
        if flat != n_features:
            if tensor.dim() == 2 or len(input_shape) == 1:
                raise DataError(
                    f"{name} has {flat} features, but this Autoencoder expects {n_features} (layer {layer!r})"
                )
            raise DataError(
                f"{name} has examples of shape {example_shape}, but this Autoencoder expects "
                f"{tuple(input_shape)} (layer {layer!r})"
            )
        squeezed = tuple(input_shape)
        while len(squeezed) > 1 and squeezed[0] == 1:
            squeezed = squeezed[1:]
        if len(input_shape) > 1 and tensor.dim() > 2 and example_shape != squeezed:
            # Same size, other layout (e.g. channels-last (H, W, C)): reshaping would scramble the pixels.
            hint = (
                "; for channels-last images move the channels first, e.g. np.moveaxis(x, -1, 1)"
                if example_shape == (*input_shape[1:], input_shape[0])
                else ""
            )
            raise DataError(
                f"{name} has examples of shape {example_shape}, but this Autoencoder expects "
                f"{tuple(input_shape)} or flat rows of {n_features} (layer {layer!r}){hint}"
            )
        # Flat rows for a declared image shape (or images without their channel axis of 1), or
        # images for a flat input.
        tensor = tensor.reshape(tensor.shape[0], *input_shape)
    converted = tensor.to(device=device, dtype=dtype)
    if check_finite and not all_finite(converted):
        bad = first_row(~torch.isfinite(converted), rows)
        if all_finite(tensor):  # finite as given: the values overflow the model's dtype
            raise DataError(
                f"{name} holds values too large for {str(dtype).replace('torch.', '')} "
                f"(first in row {bad}); rescale the data"
            )
        raise DataError(f"{name} holds NaN or infinite values (first in row {bad})")
    return converted


def check_weights(weights: torch.Tensor, name: str = "w", rows: Sequence[int] | None = None) -> torch.Tensor:
    """``weights`` (a checked, finite tensor of per-value weights) if none is negative.

    Raises
    ------
    DataError
        ``w must be >= 0, got a minimum of -0.5 (first in row 17)``; ``rows``
        as in :func:`check_array`.
    """
    negative = weights < 0
    if negative.any():
        raise DataError(
            f"{name} must be >= 0, got a minimum of {weights.min().item():g} (first in row {first_row(negative, rows)})"
        )
    return weights


def first_row(mask: torch.Tensor, rows: Sequence[int] | None = None) -> int:
    """The number of the first row of ``mask`` (shape (n, ...)) with a True value.

    ``rows`` maps each row to its number in the user's data (a block of a
    streamed array); by default the rows count from 0.
    """
    bad = int(mask.flatten(1).any(dim=1).nonzero()[0, 0].item())
    return bad if rows is None else int(rows[bad])


def all_finite(tensor: torch.Tensor) -> bool:
    """True if no value of ``tensor`` is NaN or infinite (one host sync).

    A NaN or infinite value always makes the sum NaN or infinite, so a finite sum
    proves every value finite, at a fraction of the cost of an elementwise
    ``isfinite`` pass; only a non-finite sum (NaN, infinity, or finite values
    whose sum overflowed) is checked value by value.
    """
    if not tensor.is_floating_point() or tensor.numel() == 0:
        return True
    if bool(torch.isfinite(tensor.sum())):
        return True
    return bool(torch.isfinite(tensor).all())


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """Detach, move to the CPU and convert to NumPy."""
    return t.detach().cpu().numpy()


@dataclass(frozen=True)
class InputChecker:
    """Checks (and preprocesses) the data of one model, written once for every caller.

    Training, inference, scoring and diagnosis all turn user data into tensors with this
    object, so every path gives the same one-line errors.

    Parameters
    ----------
    shape : tuple of int
        The per-example input shape the model expects.
    layer : str
        The input layer's name (for messages).
    device : torch.device
        Where checked tensors go.
    preprocessing : object, optional
        A fitted :mod:`aekit.preprocessing` step applied to data (never to weights or codes).
    """

    shape: tuple[int, ...]
    layer: str
    device: torch.device
    preprocessing: Any = None

    def data(self, x: Any, name: str = "x", transform: bool = True, rows: Sequence[int] | None = None) -> torch.Tensor:
        """``x`` checked (:func:`check_array`), preprocessed if ``transform``: shape (n, *shape).

        ``rows`` numbers the rows in messages (a block of a streamed array).
        """
        tensor = check_array(x, self.shape, name=name, layer=self.layer, device=self.device, rows=rows)
        return self.preprocess(tensor, name) if transform else tensor

    def weights(self, w: Any, name: str = "w", rows: Sequence[int] | None = None) -> torch.Tensor:
        """Per-value weights ``w``, shaped like the input, finite and >= 0, as a tensor (n, *shape)."""
        return check_weights(self.data(w, name=name, transform=False, rows=rows), name, rows)

    def preprocess(self, tensor: torch.Tensor, name: str = "x") -> torch.Tensor:
        """Apply the preprocessing step to a checked tensor of data (``name`` 'x' or 'valid' only)."""
        if self.preprocessing is not None and name in ("x", "valid"):
            tensor = self.preprocessing.transform_tensor(tensor)
        return tensor
