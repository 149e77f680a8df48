"""Sparse-autoencoder wiring: which layer decodes a code, and each latent's decoder direction."""

from __future__ import annotations

from typing import cast

import torch

from .graph import Graph
from .layers import Layer
from .layers.dense import Dense, Tied

__all__ = ["decoder_of", "decoder_weight"]


def decoder_of(graph: Graph, name: str) -> Dense | Tied | None:
    """The one dense or tied layer that reads layer ``name``'s output, or None (no reader, several, another form)."""
    readers = [graph.layers[n] for n, source in graph.sources.items() if source == name]
    if len(readers) != 1 or type(readers[0]) not in (Dense, Tied):
        return None
    return readers[0]  # type: ignore[return-value]  # checked just above


def decoder_weight(decoder: Layer) -> torch.Tensor:
    """Each latent's decoder direction, one per row: shape (latents, n_out).

    A dense decoder's ``w`` (its rows, as ``constraint='unit_norm'`` keeps them); a tied
    decoder's partner weight transposed.
    """
    if isinstance(decoder, Tied):
        return cast(torch.Tensor, decoder.partner.w).t()
    return cast(torch.Tensor, decoder.w)
