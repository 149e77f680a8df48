"""The checks of :func:`aekit.diagnose` for sparse dictionaries: dead latents and dense latents.

A *sparse code layer* is one whose activation is a dictionary code (``topk:K``,
``batchtopk:K``, ``jumprelu``).  Its units are latents that should each fire on a small
fraction of the data.  Both checks read each latent's firing density over **every** row of
``x`` (:func:`~aekit.inspect.densities.firing_densities`, streamed), not a sample: a latent
that fires on one example in 50,000 is rare, not dead.

``dead-latents``
    Latents that fired on no example of ``x``: a warning from ``dead_latents_warning`` (1%)
    of the dictionary, an error from ``dead_latents_error`` (10%).
``dense-latents`` (warning)
    Latents that fire on more than ``dense_density`` (50%) of the examples: a direction the
    dictionary uses for almost everything, usually the data's mean or a bias it could not
    put in the output bias.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .densities import firing_densities
from .findings import Finding

if TYPE_CHECKING:
    from ..autoencoder import Autoencoder

__all__ = ["SPARSE_CODES", "check_dead_latents", "check_dense_latents", "sparse_code_layers", "sparse_findings"]

# Activation families whose units are dictionary latents.
SPARSE_CODES = ("topk", "batchtopk", "jumprelu")

DEAD_REMEDY = (
    "Dead latents waste the dictionary. Train with auxk=1/32 (the auxiliary loss lets dead latents "
    "reconstruct the residual); keep the published initialisation (encoder = decoder transpose, "
    "output bias at the data's mean, subtracted before encoding), or centre the data; lower "
    "learning_rate; a smaller dictionary, or a larger k, gives each latent more examples."
)
DENSE_REMEDY = (
    "A latent that fires on most inputs is usually the data's mean: keep the output bias (and its "
    "subtraction before encoding) so the mean has a place of its own, or centre the data; with "
    "JumpReLU or an L1 penalty, raise the sparsity coefficient."
)


def sparse_code_layers(net: Autoencoder) -> list[str]:
    """The hidden layers whose activation is a dictionary code (``topk``, ``batchtopk``, ``jumprelu``)."""
    hidden = set(net.graph.hidden_names)
    return [
        spec.name
        for spec in net.specs
        if spec.name in hidden and spec.activation.split("+")[-1].split(":")[0].lower() in SPARSE_CODES
    ]


def _listed(units: np.ndarray) -> str:
    return ", ".join(map(str, units[:10])) + (", ..." if units.size > 10 else "")


def check_dead_latents(densities: np.ndarray, name: str, rows: int, warning: float, error: float) -> list[Finding]:
    """``dead-latents``: latents with firing density 0 over ``rows`` examples."""
    dead = np.flatnonzero(densities == 0)
    fraction = dead.size / max(densities.size, 1)
    if dead.size == 0 or fraction < warning:
        return []
    return [
        Finding(
            "dead-latents",
            "error" if fraction >= error else "warning",
            f"{dead.size} of {densities.size} latents of layer {name!r} ({fraction:.1%}) never fired on the "
            f"{rows:,} examples of x (latents {_listed(dead)}).",
            DEAD_REMEDY,
            fraction,
            name,
        )
    ]


def check_dense_latents(densities: np.ndarray, name: str, limit: float) -> list[Finding]:
    """``dense-latents``: latents that fire on more than ``limit`` of the examples."""
    dense = np.flatnonzero(densities > limit)
    if dense.size == 0:
        return []
    top = dense[np.argsort(-densities[dense])]
    return [
        Finding(
            "dense-latents",
            "warning",
            f"{dense.size} of {densities.size} latents of layer {name!r} fire on more than {limit:.0%} of the "
            f"examples (latents {_listed(top)}; the densest fires on {densities[top[0]]:.0%}).",
            DENSE_REMEDY,
            dense.size / densities.size,
            name,
        )
    ]


def sparse_findings(
    net: Autoencoder, x: Any, rows: int, dead_warning: float, dead_error: float, dense_density: float
) -> tuple[list[Finding], int]:
    """Both checks for every sparse code layer of ``net``, over every row of ``x``.

    Returns
    -------
    findings : list of Finding
    dead : int
        The number of dead latents reported (dense latents are not "dead or saturated" units
        for the diagnosis's advice on the learning rate).
    """
    findings: list[Finding] = []
    dead = 0
    for name in sparse_code_layers(net):
        densities = firing_densities(net, x, name)
        found = check_dead_latents(densities, name, rows, dead_warning, dead_error)
        dead += int((densities == 0).sum()) if found else 0
        findings += found + check_dense_latents(densities, name, dense_density)
    return findings, dead
