"""Where training batches come from: tensors in memory, or arrays streamed from disk in blocks.

:class:`TensorSource` holds checked tensors on the training device.
:class:`StreamingSource` has the same interface as :class:`TensorSource`
(``len(source)`` and ``source.batches(batch_size, generator)``), but it holds
only a reference to an array-like -- an ``np.memmap`` from
``aekit.load_data(path, mmap=True)`` or ``np.load(path, mmap_mode='r')``, an
h5py dataset, anything with ``shape`` and row slicing -- and reads it one
contiguous block of rows at a time.  Memory use is bounded by the block size
(``block_bytes``, 32 MiB by default, a few copies of it while converting) and
does not grow with the data set.

Shuffling.  Random single-row reads would thrash a disk, so samples are mixed
in two stages every epoch: the block boundaries move by a random offset and the
blocks are visited in a random order; inside each block the rows are permuted.
Two rows more than a block apart never share a batch in the same epoch, which
is the usual price of streaming; for data stored sorted by class, shuffle the
file once on disk.

Each block is checked and preprocessed (:class:`~aekit.data.checks.InputChecker`: shape, finiteness, the
attached preprocessing step) when it is read, so a NaN in row 10**9 is reported
when training reaches it, with its row number.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import ConfigurationError, DataError
from .checks import check_weights

__all__ = ["DEFAULT_BLOCK_BYTES", "StreamingSource", "TensorSource", "is_streamable"]

DEFAULT_BLOCK_BYTES = 32 * 1024 * 1024


def is_streamable(x: Any) -> bool:
    """True for data that :class:`StreamingSource` should read lazily.

    That is an ``np.memmap``, or an array-like that is neither a NumPy array, a
    tensor nor a list, but has a ``shape`` and supports row slicing (h5py,
    zarr, dask-like objects).
    """
    if isinstance(x, np.memmap):
        return True
    if isinstance(x, (np.ndarray, torch.Tensor, list, tuple, str, bytes, dict)) or x is None:
        return False
    shape = getattr(x, "shape", None)
    return isinstance(shape, tuple) and len(shape) >= 1 and hasattr(x, "__getitem__")


class StreamingSource:
    """Rows of a large array-like, read block by block and checked on the way.

    Parameters
    ----------
    x : array-like, shape (n, *features)
        An ``np.memmap`` or any object with ``shape`` and ``x[a:b]`` row slicing.
    w : array-like or None, shape like ``x``
        Per-element weights, read with the same blocks.
    check : callable, optional
        ``check(block, name, rows) -> tensor`` applied to each block of ``x``
        (normally ``InputChecker.data``, which validates, preprocesses and moves the
        block to the model's device); ``rows`` are the block's row numbers in
        ``x``, for error messages.  Default: a float32 CPU tensor.
    check_weights : callable, optional
        Same for blocks of ``w``; it must reject negative weights (the default
        does).
    start, stop : int, optional
        The range of rows used (for a validation tail).
    block_bytes : int, optional
        Target size of one block read from ``x`` (default :data:`DEFAULT_BLOCK_BYTES`).
    name : str
        Used in error messages.
    """

    def __init__(
        self,
        x: Any,
        w: Any = None,
        check: Callable[[Any, str, Sequence[int]], torch.Tensor] | None = None,
        check_weights: Callable[[Any, str, Sequence[int]], torch.Tensor] | None = None,
        start: int = 0,
        stop: int | None = None,
        block_bytes: int | None = None,
        name: str = "x",
    ):
        shape = tuple(getattr(x, "shape", ()))
        if len(shape) < 2:
            raise DataError(f"{name} must be at least 2-D (examples, features) to stream, got shape {shape}")
        if w is not None and tuple(getattr(w, "shape", ())) != shape:
            raise DataError(f"{name} weights must be shaped like {name} {shape}, got {tuple(getattr(w, 'shape', ()))}")
        self.data, self.w = x, w
        self.check = check or _default_check
        self.check_weights = check_weights or _default_weights_check
        self.name = name
        self.start = int(start)
        self.stop = int(shape[0] if stop is None else stop)
        if not 0 <= self.start <= self.stop <= shape[0]:
            raise DataError(f"rows {self.start}:{self.stop} are outside {name}'s {shape[0]} rows")
        itemsize = np.dtype(getattr(x, "dtype", np.float32)).itemsize
        row_bytes = max(1, math.prod(shape[1:]) * max(itemsize, 4))
        block_bytes = DEFAULT_BLOCK_BYTES if block_bytes is None else int(block_bytes)
        self.block_rows = max(1, block_bytes // row_bytes)

    def __len__(self) -> int:
        return self.stop - self.start

    def __repr__(self) -> str:
        return (
            f"StreamingSource({type(self.data).__name__} shape={tuple(self.data.shape)}, "
            f"rows {self.start}:{self.stop}, block_rows={self.block_rows})"
        )

    @property
    def x(self) -> Any:
        """Not available: a streamed source never holds all of x (raises :class:`~aekit.ConfigurationError`)."""
        # Code written for TensorSource (full-batch L-BFGS) reaches for .x: say why it cannot.
        raise ConfigurationError(
            "algo='lbfgs' uses the whole data set as one batch, which a memory-mapped (streamed) x cannot be; "
            "use a minibatch algorithm such as 'adam', or load x into memory with np.asarray(x)"
        )

    def split_tail(self, n_tail: int) -> tuple[StreamingSource, StreamingSource]:
        """``(head, tail)``: the last ``n_tail`` rows become a separate source (validation)."""
        cut = self.stop - int(n_tail)
        head = self._view(self.start, cut)
        tail = self._view(cut, self.stop)
        return head, tail

    def _view(self, start: int, stop: int) -> StreamingSource:
        view = object.__new__(StreamingSource)
        view.__dict__.update(self.__dict__)
        view.start, view.stop = start, stop
        return view

    def read(self, a: int, b: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Rows ``a:b`` (absolute indices) as checked tensors."""
        # A private copy: a memmap slice is a read-only view of the file, which torch warns about.
        block = np.array(self.data[a:b])
        rows = range(a, b)
        try:
            xt = self.check(block, self.name, rows)
        except DataError as error:
            raise DataError(f"{self.name} rows {a}:{b}: {error}") from None
        wt = None
        if self.w is not None:
            try:
                wt = self.check_weights(np.array(self.w[a:b]), f"{self.name} weights", rows)
            except DataError as error:
                raise DataError(f"{self.name} weights rows {a}:{b}: {error}") from None
        return xt, wt

    def _blocks(self, generator: torch.Generator | None) -> list[tuple[int, int]]:
        n, rows = len(self), self.block_rows
        if n == 0:
            return []
        if generator is None or n <= rows:
            edges = list(range(0, n, rows)) + [n]
        else:
            # A random phase moves the block boundaries, so that the same rows do
            # not share a block (and hence batches) every epoch.
            offset = int(torch.randint(rows, (1,), generator=generator))
            edges = [0] + list(range(offset, n, rows)) + [n]
            edges = sorted(set(edges))
        blocks = [(self.start + a, self.start + b) for a, b in zip(edges[:-1], edges[1:])]
        if generator is not None:
            order = torch.randperm(len(blocks), generator=generator).tolist()
            blocks = [blocks[i] for i in order]
        return blocks

    def batches(
        self, batch_size: int, generator: torch.Generator | None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """Batches of at most ``batch_size`` rows, block by block (shuffled when ``generator`` is given).

        Batches never straddle two blocks, so a few batches per epoch (one per
        block) can be smaller than ``batch_size``.
        """
        for a, b in self._blocks(generator):
            xt, wt = self.read(a, b)
            if generator is not None:
                perm = torch.randperm(b - a, generator=generator).to(xt.device)
                xt = xt.index_select(0, perm)
                wt = wt.index_select(0, perm) if wt is not None else None
            for s in range(0, b - a, batch_size):
                yield xt[s : s + batch_size], (wt[s : s + batch_size] if wt is not None else None)
            del xt, wt


def _default_check(block: Any, name: str, rows: Sequence[int]) -> torch.Tensor:
    return torch.as_tensor(np.asarray(block, dtype=np.float32))


def _default_weights_check(block: Any, name: str, rows: Sequence[int]) -> torch.Tensor:
    return check_weights(_default_check(block, name, rows), name, rows)


class TensorSource:
    """Training data held as tensors on the training device.

    Parameters
    ----------
    x : tensor, shape (n, *input_shape)
    w : tensor or None, shape like ``x``
    """

    def __init__(self, x: torch.Tensor, w: torch.Tensor | None = None):
        self.x = x
        self.w = w

    def __repr__(self) -> str:
        weights = "" if self.w is None else ", weighted"
        return f"TensorSource({len(self)} examples of shape {tuple(self.x.shape[1:])}{weights}, {self.x.device})"

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def batches(
        self, batch_size: int, generator: torch.Generator | None, *, reuse: bool = False
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """Batches of one fresh permutation (in order, as slices, when generator is None).

        Parameters
        ----------
        batch_size : int
        generator : torch.Generator or None
            Draws the permutation; None: no shuffle.
        reuse : bool
            Gather each shuffled batch into the same buffer, overwriting the previous
            batch (use each batch before asking for the next).  Without it the whole
            permuted data set is copied once per epoch, which for data held in memory
            means a second copy of it; with it, training needs one batch more.
        """
        x, w = self.x, self.w
        n = len(self)
        perm = None if generator is None else torch.randperm(n, generator=generator).to(x.device)
        if perm is not None and reuse:
            yield from self._gathered(perm, batch_size)
            return
        if perm is not None:
            x = x.index_select(0, perm)
            w = w.index_select(0, perm) if w is not None else None
        for start in range(0, n, batch_size):
            yield x[start : start + batch_size], (w[start : start + batch_size] if w is not None else None)

    def _gathered(self, perm: torch.Tensor, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """The batches of ``perm``, each gathered into the same (one-batch) buffer."""
        x, w = self.x, self.w
        rows = min(batch_size, len(self))
        x_buffer = x.new_empty((rows, *x.shape[1:]))
        w_buffer = None if w is None else w.new_empty((rows, *w.shape[1:]))
        for start in range(0, len(self), batch_size):
            index = perm[start : start + batch_size]
            k = index.shape[0]
            xb = torch.index_select(x, 0, index, out=x_buffer[:k])
            wb = None if w is None or w_buffer is None else torch.index_select(w, 0, index, out=w_buffer[:k])
            yield xb, wb
