"""``auxk=COEF``: the auxiliary loss that gives dead latents a gradient (Gao et al. 2024, section A.2).

For each sparse code layer with a dead-latent tracker (:mod:`aekit.model.dead_latents`)
that the output layer decodes:

1. ``e = x - x_hat`` -- the main reconstruction's residual, with ``x_hat`` *detached*
   (the auxiliary loss trains the dead latents, not the live reconstruction);
2. the ``k_aux`` largest pre-activations among the *dead* latents of each example,
   rectified (``k_aux = min(auxk_k, dead latents)``: where fewer are dead, the others
   contribute zeros);
3. ``e_hat`` -- those values decoded through the decoder's weight *without* its output
   bias (the residual has no offset to restore; adding the bias again is the bug of
   sparsify issue #132);
4. ``auxk = COEF * mse(e_hat, e) / mse(mean(e), e) * mse(mean(x), x)``: the squared error
   normalised by the residual's variance over the batch, OpenAI ``sparse_autoencoder``'s
   ``normalized_mse`` (it adds the pre-bias to both sides, which cancels), times the batch's
   variance of ``x`` (detached).  That last factor puts the term in the units of aekit's
   ``mse`` loss: ``loss / var(x)`` is then the paper's ``normalized_mse + COEF * auxk``, so
   COEF weighs the two as the paper's ``1/32`` does, whatever the scale of the data.  Zero
   when no latent is dead (then skipped: whether one is costs one host sync per step).

``auxk_k`` defaults to 512, the paper's ``k_aux`` (a power of two near ``d_model / 2``
for its models); ``dead_after`` (default 10,000,000 examples) says when a latent is
dead.  The term shows in the monitors as ``'auxk'`` (weighted by ``COEF``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ..errors import ConfigurationError
from ..model.graph import Graph
from ..model.sae_recipe import dead_latents, decoder_of, decoder_weight

if TYPE_CHECKING:
    from .objective import PenaltyInput
    from .penalties import Regularizers

__all__ = ["auxk_layers", "auxk_loss", "auxk_term", "check_auxk"]


def auxk_loss(
    pre: torch.Tensor, dead: torch.Tensor, w_dec: torch.Tensor, residual: torch.Tensor, k_aux: int
) -> torch.Tensor:
    """The normalised auxiliary reconstruction of ``residual`` by the top ``k_aux`` dead latents.

    Parameters
    ----------
    pre : tensor, shape (n, latents)
        The code layer's pre-activations.
    dead : tensor, shape (latents,), bool
    w_dec : tensor, shape (latents, d)
        The decoder's direction of each latent.
    residual : tensor, shape (n, d)
        ``x - x_hat``, detached.
    k_aux : int

    Returns
    -------
    tensor, shape ()
        ``mse(e_hat, residual) / mse(mean(residual), residual)``, 0 when no latent is dead.
    """
    k = min(int(k_aux), pre.shape[1])
    values, index = pre.masked_fill(~dead, -math.inf).topk(k, dim=1)
    codes = torch.zeros_like(pre).scatter(1, index, F.relu(values))  # live latents' -inf become 0
    e_hat = codes @ w_dec.to(pre.dtype)
    error = (e_hat - residual).square().mean()
    variance = (residual - residual.mean(dim=0)).square().mean()
    return torch.nan_to_num(error / variance) * dead.any().to(pre.dtype)


def auxk_layers(graph: Graph) -> list[str]:
    """The tracked sparse code layers that the output layer (of the input's size) decodes."""
    names = []
    for name in graph.hidden_names:
        decoder = decoder_of(graph, name)
        if (
            dead_latents(graph.layers[name]) is not None
            and decoder is not None
            and decoder.name == graph.output_name
            and math.prod(decoder.output_shape) == math.prod(graph.input_shape)
        ):
            names.append(name)
    return names


def auxk_term(batch: PenaltyInput) -> torch.Tensor | None:
    """The ``auxk`` term of a batch (None when the keyword is not set)."""
    regs = batch.regs
    if not regs.auxk:
        return None
    graph = batch.graph
    value: torch.Tensor | float = 0.0
    for name in auxk_layers(graph):
        tracker = dead_latents(graph.layers[name])
        decoder = decoder_of(graph, name)
        assert tracker is not None and decoder is not None  # chosen by auxk_layers
        x_hat = batch.outputs[f"{decoder.name}:out"].flatten(1)
        residual = (batch.target.flatten(1) - x_hat).detach()
        dead = tracker.dead_mask(regs.dead_after)
        if not bool(dead.any()):  # one host sync per step; no top-k over every latent while none is dead
            continue
        pre = batch.outputs[f"{name}:pre"].flatten(1)
        target = batch.target.flatten(1)
        scale = (target - target.mean(dim=0)).square().mean().detach()  # the main mse's units (docstring)
        value = value + regs.auxk * scale * auxk_loss(pre, dead, decoder_weight(decoder), residual, regs.auxk_k)
    return torch.as_tensor(value)


def check_auxk(graph: Graph, regs: Regularizers) -> None:
    """Refuse ``auxk`` on a model without a sparse code layer that the output decodes.

    Raises
    ------
    ConfigurationError
    """
    if regs.auxk and not auxk_layers(graph):
        raise ConfigurationError(
            "auxk applies to a dense layer with a sparse code activation ('topk:K', 'batchtopk:K', 'jumprelu') "
            "decoded by the output layer, but this Autoencoder has none"
        )
