"""What :func:`aekit.diagnose` says about the Gaussian latents of a variational autoencoder.

Measured on the (sampled, preprocessed) data, for each gaussian layer:

* **active units** (Burda et al. 2015): latent ``j`` is active when the variance over the
  data of its posterior mean, ``Var_x(E_q[z_j | x])``, exceeds ``active_threshold`` (0.01);
  an inactive latent's posterior is the same for every input, so it carries no information;
* **KL per latent**, ``mean_x KL(q(z_j|x) || N(0, 1))`` in nats, and their sum, the total KL
  per example (an upper bound on the mutual information between x and z);
* the share of log-variances at a bound of the layer's ``logvar_range``.

Findings:

``posterior-collapse`` (error)
    No active latent, or a total KL below ``min_kl`` (0.1 nats): the decoder ignores z and
    the model is a density of x alone.
``inactive-latents`` (info)
    Some latents are inactive: normal in a VAE whose latent is larger than the data need
    (Burda et al. report about 20 of 50 active on MNIST).
``kl-dominates`` (warning)
    In the last epoch of training the weighted KL term was more than ``kl_share`` (0.5) of
    the training loss: the prior pull outweighs the reconstruction (a large ``beta``).
``logvar-range`` (warning)
    More than ``bound_fraction`` (5%) of a latent's log-variances sit within 0.5 of a
    bound of ``logvar_range``: the clip, not the data, sets those variances.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data.checks import to_numpy
from ..objective.likelihood import latent_layers, nats_scale
from .findings import Finding

__all__ = ["LatentStats", "check_latents", "latent_stats"]


@dataclass
class LatentStats:
    """The posterior of a gaussian layer over a data set.

    Attributes
    ----------
    layer : str
    variance : ndarray, shape (size,)
        ``Var_x`` of each latent's posterior mean (flattened latents).
    kl : ndarray, shape (size,)
        Mean KL of each latent to the prior, nats.
    at_bound : ndarray, shape (size,)
        Fraction of each latent's log-variances within 0.5 of a bound.
    active_threshold : float
    """

    layer: str
    variance: np.ndarray
    kl: np.ndarray
    at_bound: np.ndarray
    active_threshold: float = 0.01

    @property
    def active(self) -> np.ndarray:
        """Boolean mask of the active latents (Burda et al.'s definition)."""
        return self.variance > self.active_threshold

    @property
    def total_kl(self) -> float:
        """The summed KL per example, nats."""
        return float(self.kl.sum())


@torch.no_grad()
def latent_stats(net: Any, xt: torch.Tensor, layer: str, active_threshold: float = 0.01) -> LatentStats:
    """:class:`LatentStats` of ``layer`` over the checked, preprocessed rows ``xt``."""
    graph = net.graph
    was_training = graph.training
    graph.eval()
    means, logvars = [], []
    try:
        for start in range(0, xt.shape[0], 4096):
            outputs = graph(xt[start : start + 4096], stop=layer)
            mean = to_numpy(outputs[f"{layer}:mean"]).astype(np.float64)
            means.append(mean.reshape(mean.shape[0], -1))
            logvars.append(to_numpy(outputs[f"{layer}:logvar"]).astype(np.float64).reshape(means[-1].shape))
    finally:
        graph.train(was_training)
    mean, logvar = np.concatenate(means), np.concatenate(logvars)  # (n, latents), flattened
    low, high = graph.layers[layer].logvar_range
    kl = (0.5 * (mean**2 + np.exp(logvar) - 1.0 - logvar)).mean(axis=0)
    at_bound = ((logvar < low + 0.5) | (logvar > high - 0.5)).mean(axis=0)
    return LatentStats(layer, mean.var(axis=0), kl, at_bound, active_threshold)


def _kl_weight(net: Any) -> float | None:
    """The KL weight of the last training epoch, read from the history's monitors (None if absent)."""
    history = getattr(net, "history", None) or []
    train = (history[-1].get("train") or {}) if history else {}
    if "kl" not in train or not train.get("kl_nats"):
        return None
    return float(train["kl"]) * nats_scale(net.graph, net.losses) / float(train["kl_nats"])


def _per_latent(stats: LatentStats) -> str:
    kl = stats.kl
    order = np.argsort(-kl)[:3]
    top = ", ".join(f"z{j} {kl[j]:.2f}" for j in order)
    return f"KL per latent: max {kl.max():.3g}, median {np.median(kl):.3g} nats (largest: {top})"


def check_latents(
    net: Any,
    xt: torch.Tensor,
    note: str = "",
    *,
    active_threshold: float = 0.01,
    min_kl: float = 0.1,
    kl_share: float = 0.5,
    bound_fraction: float = 0.05,
) -> list[Finding]:
    """The variational findings (see the module docstring) of every gaussian layer of ``net``."""
    findings: list[Finding] = []
    weight = _kl_weight(net)
    scale_hint = (
        f" The last epoch trained with a KL weight of {weight:.4g} (beta): with beta = the number of values "
        "per example, a summed KL sits beside a per-value reconstruction; aekit's beta=1 is the ELBO."
        if weight is not None and weight > 1.5
        else ""
    )
    for name in latent_layers(net.graph):
        stats = latent_stats(net, xt, name, active_threshold)
        size = stats.kl.size
        n_active = int(stats.active.sum())
        figures = (
            f"{n_active} of {size} latents of layer {name!r} are active (Var_x E_q[z_j] > {active_threshold:g}); "
            f"total KL {stats.total_kl:.3g} nats per example; {_per_latent(stats)}{note}."
        )
        if n_active == 0 or stats.total_kl < min_kl:
            findings.append(
                Finding(
                    "posterior-collapse",
                    "error",
                    f"Posterior collapse: {figures} The decoder ignores z: every input gets the prior.",
                    "Train with beta=1 (the ELBO) or lower, kl_warmup=N steps (the KL weight rises from 0), "
                    "free_bits=0.1..0.5 nats per latent, or a weaker decoder (fewer or narrower layers)." + scale_hint,
                    float(stats.total_kl),
                    name,
                )
            )
        elif n_active < size:
            findings.append(
                Finding(
                    "inactive-latents",
                    "info",
                    f"{size - n_active} latents are inactive: {figures}",
                    "None needed: a VAE switches off the latents the data do not need (Burda et al. report "
                    "about 20 of 50 active on MNIST); a smaller size gives the same likelihood, and "
                    "free_bits or kl_warmup keep more latents in use.",
                    float(n_active),
                    name,
                )
            )
        stuck = np.flatnonzero(stats.at_bound > bound_fraction)
        if stuck.size:
            low, high = net.graph.layers[name].logvar_range
            findings.append(
                Finding(
                    "logvar-range",
                    "warning",
                    f"{stuck.size} latents of layer {name!r} have more than {bound_fraction:.0%} of their "
                    f"log-variances within 0.5 of the bounds of logvar_range [{low:g}, {high:g}] "
                    f"(latents {', '.join(f'z{j}' for j in stuck[:8])}{', ...' if stuck.size > 8 else ''}): "
                    "the clip, not the data, sets those variances.",
                    "Widen logvar_range in the layer spec (dict(form='gaussian', logvar_range=[-30, 10])) if the "
                    "posteriors are truly that narrow or wide; a variance at the upper bound often means "
                    "a learning rate too high for the log-variance head (try max_gradient_norm).",
                    float(stuck.size),
                    name,
                )
            )
    findings += _kl_dominates(net, kl_share, weight)
    return findings


def _kl_dominates(net: Any, kl_share: float, weight: float | None) -> list[Finding]:
    history = getattr(net, "history", None) or []
    train = (history[-1].get("train") or {}) if history else {}
    loss, kl = train.get("loss"), train.get("kl")
    if not latent_layers(net.graph) or loss is None or kl is None or not loss > 0:
        return []
    share = float(kl) / float(loss)
    if not share > kl_share or not math.isfinite(share):
        return []
    beta = f" (KL weight {weight:.4g})" if weight is not None else ""
    return [
        Finding(
            "kl-dominates",
            "warning",
            f"The weighted KL term{beta} was {share:.0%} of the training loss in the last epoch: the pull "
            "to the prior outweighs the reconstruction.",
            "Lower beta (beta=1 is the ELBO), or warm it up with kl_warmup; a capacity target "
            "(capacity=C nats) keeps the KL near C instead of pushing it to zero.",
            share,
            None,
        )
    ]


def vae_layers(net: Any) -> Sequence[str]:
    """The gaussian layers of ``net`` (the generic unit checks leave them to this module)."""
    return latent_layers(net.graph)
