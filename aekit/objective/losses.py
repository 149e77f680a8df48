"""Reconstruction losses: pure functions plus a name registry.

Every function reduces to a scalar: the mean over all elements, or, with a
weight array ``w`` shaped like the target, ``sum(w * err) / sum(w)`` (theanets'
``weighted=True``).  :class:`Loss` binds a function to the network outputs it
reads, with a weight for mixing several losses (``net.add_loss``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..errors import ConfigurationError
from ..registry import Registry

__all__ = ["LOSSES", "Loss", "bce", "bce_with_logits", "gll", "kl", "mae", "mse", "names"]

_EPS = 1e-7


def _reduce(err: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if weight is None:
        return err.mean()
    return (weight * err).sum() / weight.sum().clamp_min(_EPS)


def mse(output: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error; ``output`` and ``target`` of shape (n, ...)."""
    if weight is None:
        return F.mse_loss(output, target)  # one fused kernel forward and backward
    return _reduce((output - target).square(), weight)


def mae(output: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute error."""
    if weight is None:
        return F.l1_loss(output, target)
    return _reduce((output - target).abs(), weight)


def bce(output: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy of probabilities ``output`` in (0, 1) against targets in [0, 1]."""
    p = output.clamp(_EPS, 1 - _EPS)
    return _reduce(-(target * torch.log(p) + (1 - target) * torch.log1p(-p)), weight)


def bce_with_logits(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy computed from sigmoid pre-activations (numerically stable, faster)."""
    return _reduce(F.binary_cross_entropy_with_logits(logits, target, reduction="none"), weight)


def kl(output: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """KL divergence ``sum_j t_j log(t_j / o_j)`` of target from output distributions.

    Summed over the features of each example, averaged over examples (weighted by
    the mean weight of each example when ``weight`` is given).
    """
    t = target.clamp_min(0)
    per_element = t * (torch.log(t + _EPS) - torch.log(output.clamp_min(_EPS)))
    per_example = per_element.flatten(1).sum(dim=1)
    if weight is None:
        return per_example.mean()
    w = weight.flatten(1).mean(dim=1)
    return (w * per_example).sum() / w.sum().clamp_min(_EPS)


def gll(
    mean: torch.Tensor, target: torch.Tensor, var: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Negative Gaussian log-likelihood with diagonal covariance.

    ``0.5 * sum_j [log(2 pi) + log var_j + (t_j - mu_j)^2 / var_j]`` per example,
    averaged over examples.  The log-determinant of a diagonal covariance is
    ``sum_j log var_j`` (theanets took the log of the sum instead).
    """
    var = var.clamp_min(_EPS)
    per_element = 0.5 * (math.log(2 * math.pi) + torch.log(var) + (target - mean).square() / var)
    per_example = per_element.flatten(1).sum(dim=1)
    if weight is None:
        return per_example.mean()
    w = weight.flatten(1).mean(dim=1)
    return (w * per_example).sum() / w.sum().clamp_min(_EPS)


LOSSES: Registry[Callable[..., torch.Tensor]] = Registry("loss")
LOSSES.register("mse", mse, aliases=("mean_squared_error",))
LOSSES.register("mae", mae, aliases=("mean_absolute_error",))
LOSSES.register("bce", bce, aliases=("xe", "binary_crossentropy", "cross_entropy"))
LOSSES.register("kl", kl, aliases=("kl_divergence",))
LOSSES.register("gll", gll)


def names() -> list[str]:
    """Registered loss names, aliases included."""
    return LOSSES.names()


class Loss:
    """A named loss bound to the network outputs it reads, with a mixing weight.

    Parameters
    ----------
    name : str
        ``'mse'``, ``'mae'``, ``'bce'``, ``'kl'`` or ``'gll'``.
    weight : float
        Multiplier of this term in the total loss.
    output : str
        Layer whose ``:out`` is compared with the target (default ``'out'``).
    covar : str, optional
        For ``gll``: the layer whose ``:out`` is the per-feature variance
        (give it a positive activation such as ``softplus``).
    """

    def __init__(self, name: str, weight: float = 1.0, output: str = "out", covar: str | None = None):
        if not isinstance(name, str):
            raise ConfigurationError(f"loss must be a name such as 'mse', got {name!r}")
        key = LOSSES.canonical(name)
        try:
            weight = float(weight)
        except (TypeError, ValueError):
            raise ConfigurationError(f"loss weight must be a number, got {weight!r}") from None
        if not math.isfinite(weight) or weight < 0:
            raise ConfigurationError(f"loss weight must be finite and >= 0, got {weight}")
        if key == "gll" and covar is None:
            raise ConfigurationError("loss 'gll' needs covar=<layer name>, the layer whose output is the variance")
        self.name = key
        self.weight = weight
        self.output = output
        self.covar = covar

    def __call__(
        self,
        outputs: dict[str, torch.Tensor],
        target: torch.Tensor,
        sample_weight: torch.Tensor | None = None,
        logits_ok: bool = False,
    ) -> torch.Tensor:
        """Evaluate on a ``feed_forward``-style dict of outputs."""
        out = outputs[f"{self.output}:out"]
        if out.shape != target.shape and out.numel() == target.numel():
            # A flat output reconstructing an image input (or the reverse): compare value by value.
            target = target.reshape(out.shape)
            if sample_weight is not None:
                sample_weight = sample_weight.reshape(out.shape)
        if self.name == "bce" and logits_ok:
            return bce_with_logits(outputs[f"{self.output}:pre"], target, sample_weight)
        if self.name == "gll":
            if f"{self.covar}:out" not in outputs:
                raise ConfigurationError(f"loss 'gll' names covar={self.covar!r}, which is not a layer")
            return gll(out, target, outputs[f"{self.covar}:out"], sample_weight)
        return LOSSES[self.name](out, target, sample_weight)

    def to_dict(self) -> dict:
        """A JSON-ready dict of this term: its name, weight, output layer and covar layer."""
        return {"name": self.name, "weight": self.weight, "output": self.output, "covar": self.covar}

    def __repr__(self) -> str:
        extra = f", covar={self.covar!r}" if self.covar else ""
        return f"Loss({self.name!r}, weight={self.weight}, output={self.output!r}{extra})"
