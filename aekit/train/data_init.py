"""Data-dependent starts of layers, done once before the first step of a fresh model.

Today: the output bias of the SAE recipe (:mod:`aekit.model.sae_recipe`), started at
the geometric median (or mean) of up to :data:`~aekit.model.sae_recipe.INIT_ROWS`
rows of the training data.  Every process of a data-parallel run reads the same rows
of the whole (not yet sharded) data, so the replicas start alike.
"""

from __future__ import annotations

from typing import Any

import torch

from ..data.sources import StreamingSource
from ..model import sae_recipe
from ..model.graph import Graph

__all__ = ["first_rows", "start_from_data"]


def first_rows(source: Any, limit: int) -> torch.Tensor:
    """Up to ``limit`` checked rows of a training source, shape (m, *input_shape).

    Evenly spaced rows of in-memory data (sorted data are covered); the first rows of
    streamed data (one contiguous read).
    """
    if isinstance(source, StreamingSource):
        return source.read(source.start, min(source.stop, source.start + limit))[0]
    step = max(1, -(-len(source) // limit))
    return source.x[::step]


def start_from_data(graph: Graph, source: Any) -> None:
    """Give the layers that wait for it their data-dependent start (no-op when none waits)."""
    if sae_recipe.needs_data(graph):
        sae_recipe.initialize_from_data(graph, first_rows(source, sae_recipe.INIT_ROWS))
