"""One process's share of the data in data-parallel training: global batches cut into parts.

Every process draws the same permutation each epoch and cuts it into *global*
batches of ``batch_size * world_size`` examples; process ``r`` takes the
``r``-th contiguous part of each, and reads only those rows (also from a
memory-mapped file).  Global batches with fewer examples than processes are
skipped.  See :mod:`aekit.train.distributed`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from ..errors import DataError
from .sources import StreamingSource, TensorSource

__all__ = ["ShardedSource"]


def _part(size: int, rank_: int, world: int) -> tuple[int, int]:
    """Rank's contiguous part ``[lo, hi)`` of ``size`` items split as evenly as possible."""
    return rank_ * size // world, (rank_ + 1) * size // world


class ShardedSource:
    """One process's share of a training or validation source.

    ``len()`` is the length of the whole source (so checkpoints do not depend
    on the number of processes).

    Parameters
    ----------
    base : TensorSource or StreamingSource
        The whole data, identical on every process (a memory-mapped file is only
        read where this process's rows lie).
    rank, world : int
        This process's rank and the number of processes.
    """

    def __init__(self, base: TensorSource | StreamingSource, rank: int, world: int):
        if not 0 <= rank < world:
            raise ValueError(f"rank must be in [0, {world}), got {rank}")
        self.base, self.rank, self.world = base, int(rank), int(world)
        n = len(base)
        # Contiguous parts for evaluation; too few rows to split: every rank evaluates all.
        self.sharded_eval = n >= world
        self.local = self._slice(*_part(n, rank, world)) if self.sharded_eval else base

    def __len__(self) -> int:
        return len(self.base)

    def __repr__(self) -> str:
        return f"ShardedSource({self.base!r}, rank={self.rank}, world={self.world})"

    def _slice(self, lo: int, hi: int) -> TensorSource | StreamingSource:
        base = self.base
        if isinstance(base, StreamingSource):
            return base._view(base.start + lo, base.start + hi)
        return TensorSource(base.x[lo:hi], None if base.w is None else base.w[lo:hi])

    def _layout(self, size: int, global_batch: int) -> list[tuple[int, int, int]]:
        """``(lo, hi, g)``: this rank's rows ``[lo, hi)`` of each global batch of ``g`` rows."""
        parts = []
        for start in range(0, size, global_batch):
            g = min(global_batch, size - start)
            if g < self.world:
                continue  # every rank needs at least one row for the step to mean the same everywhere
            lo, hi = _part(g, self.rank, self.world)
            parts.append((start + lo, start + hi, g))
        return parts

    def scaled_batches(
        self, batch_size: int, generator: torch.Generator | None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, float]]:
        """The ``(x, w, scale)`` of this rank for every global batch of ``batch_size * world`` rows.

        ``scale = rows here * world / rows in the global batch``: multiplying the
        local mean loss by it makes DDP's gradient average the gradient of the
        global batch's mean loss.
        """
        if isinstance(self.base, StreamingSource):
            yield from self._stream(self.base, batch_size * self.world, generator)
        else:
            yield from self._tensor(batch_size * self.world, generator)

    def batches(self, batch_size: int, generator: torch.Generator | None):
        """``(x, w)`` pairs, as :meth:`TensorSource.batches` (see :meth:`scaled_batches`)."""
        for xb, wb, _ in self.scaled_batches(batch_size, generator):
            yield xb, wb

    def _tensor(self, global_batch: int, generator: torch.Generator | None):
        base = self.base
        n = len(base)
        parts = self._layout(n, global_batch)
        if generator is None:
            for lo, hi, g in parts:
                yield base.x[lo:hi], (None if base.w is None else base.w[lo:hi]), (hi - lo) * self.world / g
            return
        # The same single draw as TensorSource.batches, so the global batches are a
        # single-process run's; then gather only this rank's rows, once per epoch.
        perm = torch.randperm(n, generator=generator)
        index = torch.cat([perm[lo:hi] for lo, hi, _ in parts]).to(base.x.device)
        x = base.x.index_select(0, index)
        w = None if base.w is None else base.w.index_select(0, index)
        at = 0
        for lo, hi, g in parts:
            k = hi - lo
            yield x[at : at + k], (None if w is None else w[at : at + k]), k * self.world / g
            at += k

    def _stream(self, src: StreamingSource, global_batch: int, generator: torch.Generator | None):
        # Same draws, in the same order, as StreamingSource.batches: block phase and
        # order, then one permutation per block.
        for a, b in src._blocks(generator):
            perm = torch.randperm(b - a, generator=generator) if generator is not None else None
            parts = self._layout(b - a, global_batch)
            if not parts:
                continue
            if perm is None:
                for lo, hi, g in parts:
                    xt, wt = src.read(a + lo, a + hi)
                    yield xt, wt, (hi - lo) * self.world / g
                continue
            rows = a + torch.cat([perm[lo:hi] for lo, hi, _ in parts]).numpy()
            xt, wt = _read_rows(src, rows)
            at = 0
            for lo, hi, g in parts:
                k = hi - lo
                yield xt[at : at + k], (None if wt is None else wt[at : at + k]), k * self.world / g
                at += k
            del xt, wt


def _read_rows(src: StreamingSource, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rows ``rows`` (absolute, any order) of a streamed source, checked, in that order."""
    order = np.argsort(rows, kind="stable")
    ascending = rows[order]  # h5py and friends want increasing indices; a memmap reads fewer pages
    back = torch.from_numpy(np.argsort(order, kind="stable"))
    where = f"{src.name} rows {int(ascending[0])}..{int(ascending[-1])}"
    numbers = ascending.tolist()  # the row numbers for messages, a sequence of ints as the checks take
    try:
        xt = src.check(np.array(src.data[ascending]), src.name, numbers)
    except DataError as error:
        raise DataError(f"{where}: {error}") from None
    xt = xt.index_select(0, back.to(xt.device))
    wt = None
    if src.w is not None:
        try:
            wt = src.check_weights(np.array(src.w[ascending]), f"{src.name} weights", numbers)
        except DataError as error:
            raise DataError(f"{src.name} weights {where.split(' ', 1)[1]}: {error}") from None
        wt = wt.index_select(0, back.to(wt.device))
    return xt, wt
