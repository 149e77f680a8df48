"""Sparsity penalties of sparse autoencoders, as registered ``train()`` keywords.

* ``jumprelu_l0=COEF`` -- the L0 penalty of JumpReLU SAEs (Rajamanoharan et al. 2024,
  eq. 10): ``COEF * mean_i sum_j H(z_ij - theta_j)`` over the pre-activations ``z``
  of each chosen layer whose activation is ``'jumprelu'``, with the paper's
  pseudo-derivative for the thresholds (:func:`aekit.model.jumprelu.step`): the
  thresholds rise where that pays, and the code gets sparse.  Without it a JumpReLU
  layer has no reason to be sparse.
* ``decoder_weighted_l1=COEF`` -- the L1 penalty of ReLU SAEs (Anthropic, "Towards
  Monosemanticity" 2023 and its April 2024 update; SAELens' standard SAE):
  ``COEF * mean_i sum_j |z_ij| * ||d_j||`` with ``d_j`` the decoder's direction of
  latent ``j`` (row ``j`` of the reading dense layer's ``w``, column ``j`` of a tied
  layer's partner weight).  Weighting by the decoder norm stops the model from
  shrinking codes while it grows the decoder, so it needs no unit-norm constraint.

* ``multik=COEF`` -- Multi-TopK (Gao et al. 2024, section 5.3; OpenAI's ``multik``):
  ``COEF * mse(decoder(topk_{4K}(z)), x)`` for each ``'topk:K'`` layer that the output
  layer decodes, the same code with four times the budget decoded by the same decoder
  (its bias and activation included); the paper uses ``COEF = 1/8`` next to its main
  loss.  Training for both budgets keeps the code usable at other sparsities.

The first two take a number (every hidden layer the penalty applies to) or a dict of glob
patterns, as ``hidden_l1`` does; each chosen layer adds its term (a sum over layers,
not a mean).  The scale is aekit's: the reconstruction ``mse`` is a mean over the
values of an example, while the papers' squared error is a sum over them, so a
paper's coefficient ``lam`` on ``D`` inputs is ``lam / D`` here.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from ..errors import ConfigurationError
from ..model.graph import Graph
from ..model.jumprelu import JumpReLU
from ..model.sae_recipe import decoder_of, decoder_weight
from ..model.sparsity import topk_relu
from . import penalties as reg

if TYPE_CHECKING:
    from .objective import PenaltyInput

__all__ = [
    "MULTIK_FACTOR",
    "check_sae_targets",
    "decoder_weighted_l1",
    "decoder_weighted_l1_term",
    "jumprelu_l0_term",
    "jumprelu_of",
    "multik_layers",
    "multik_term",
]

MULTIK_FACTOR = 4  # Multi-TopK's second budget: 4 K (Gao et al. 2024)


def jumprelu_of(graph: Graph, name: str) -> JumpReLU | None:
    """The JumpReLU module of layer ``name`` when its activation is ``'jumprelu'`` alone (else None)."""
    activation = graph.layers[name].activation
    if len(activation.parts) != 1 or "0" not in activation.modules_by_part:
        return None
    module = activation.modules_by_part["0"]
    return module if isinstance(module, JumpReLU) else None


def decoder_weighted_l1(z: torch.Tensor, w_dec: torch.Tensor) -> torch.Tensor:
    """``mean_i sum_j |z_ij| * ||w_dec[j]||``.

    Parameters
    ----------
    z : tensor, shape (n, latents)
        Codes.
    w_dec : tensor, shape (latents, n_out)
        Each latent's decoder direction, one per row.

    Returns
    -------
    tensor, shape ()
    """
    return (z.abs() * w_dec.norm(dim=1).to(z.dtype)).sum(dim=1).mean()


def _jumprelu_layers(graph: Graph) -> list[str]:
    return [n for n in graph.hidden_names if jumprelu_of(graph, n) is not None]


def _decoded_layers(graph: Graph) -> list[str]:
    return [n for n in graph.hidden_names if decoder_of(graph, n) is not None]


def jumprelu_l0_term(batch: PenaltyInput) -> torch.Tensor | None:
    """The ``jumprelu_l0`` term of a batch (None when the keyword is not set)."""
    if not batch.regs.jumprelu_l0:
        return None
    graph = batch.graph
    value: torch.Tensor | float = 0.0
    for name, coef in reg.match(batch.regs.jumprelu_l0, _jumprelu_layers(graph)).items():
        module = jumprelu_of(graph, name)
        assert module is not None  # chosen among the JumpReLU layers
        value = value + coef * module.l0(batch.outputs[f"{name}:pre"]).mean()
    return torch.as_tensor(value)


def decoder_weighted_l1_term(batch: PenaltyInput) -> torch.Tensor | None:
    """The ``decoder_weighted_l1`` term of a batch (None when the keyword is not set)."""
    if not batch.regs.decoder_weighted_l1:
        return None
    graph = batch.graph
    value: torch.Tensor | float = 0.0
    for name, coef in reg.match(batch.regs.decoder_weighted_l1, _decoded_layers(graph)).items():
        decoder = decoder_of(graph, name)
        assert decoder is not None  # chosen among the decoded layers
        z = batch.outputs[f"{name}:out"].flatten(1)
        value = value + coef * decoder_weighted_l1(z, decoder_weight(decoder))
    return torch.as_tensor(value)


def multik_layers(graph: Graph) -> dict[str, int]:
    """The ``'topk:K'`` layers (and their ``K``) that the output layer (of the input's size) decodes."""
    out = {}
    for name in graph.hidden_names:
        parts = graph.layers[name].activation.parts
        decoder = decoder_of(graph, name)
        if (
            len(parts) == 1
            and parts[0].startswith("topk:")
            and decoder is not None
            and decoder.name == graph.output_name
            and math.prod(decoder.output_shape) == math.prod(graph.input_shape)
        ):
            out[name] = int(parts[0].split(":")[1])
    return out


def multik_term(batch: PenaltyInput) -> torch.Tensor | None:
    """The ``multik`` term of a batch (None when the keyword is not set)."""
    if not batch.regs.multik:
        return None
    graph = batch.graph
    value: torch.Tensor | float = 0.0
    for name, k in multik_layers(graph).items():
        decoder = decoder_of(graph, name)
        assert decoder is not None  # chosen by multik_layers
        codes = topk_relu(batch.outputs[f"{name}:pre"], MULTIK_FACTOR * k)
        x_hat = decoder(codes).out.flatten(1)
        value = value + batch.regs.multik * (x_hat - batch.target.flatten(1)).square().mean()
    return torch.as_tensor(value)


def check_sae_targets(graph: Graph, regs: reg.Regularizers) -> None:
    """Refuse an SAE keyword that chooses no layer of ``graph``.

    Raises
    ------
    ConfigurationError
        Naming the keyword, the pattern and the layers it could have chosen.
    """
    for key, names, kind in (
        ("jumprelu_l0", _jumprelu_layers(graph), "hidden layer with activation 'jumprelu'"),
        ("decoder_weighted_l1", _decoded_layers(graph), "hidden layer read by one dense or tied decoder layer"),
    ):
        for pattern in getattr(regs, key):
            if not reg.match({pattern: 1.0}, names):
                chosen = f"; expected one of {', '.join(map(repr, names))}" if names else ""
                raise ConfigurationError(f"{key} pattern {pattern!r} matches no {kind} of this Autoencoder{chosen}")
    if regs.multik and not multik_layers(graph):
        raise ConfigurationError(
            "multik applies to a dense 'topk:K' layer decoded by the output layer, but this Autoencoder has none"
        )
