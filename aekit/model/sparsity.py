"""Sparse code activations of sparse autoencoders: ``'topk:K'`` and ``'batchtopk:K'``.

``'topk:K'`` (Makhzani & Frey 2013; Gao et al. 2024) keeps, for each example, the
``K`` largest values of ``relu(x)`` and zeroes the rest: every code has at most
``K`` non-zero values (exactly ``K`` when ``K`` of them are positive).  Gradients
flow to the kept values only.

``'batchtopk:K'`` (Bussmann et al. 2024) keeps the ``K * n`` largest values of
``relu(x)`` over a training batch of ``n`` examples, so that codes share a budget
of ``K`` per example on average.  Inference must not depend on the batch, so the
activation learns a global threshold while training -- the running mean, over
training batches, of the smallest value it kept -- and at inference keeps every
value above it.  The threshold is a buffer: it is saved with the model and
resumes with a checkpoint.

Both read every value of an example (the units of a dense layer, or all of an
image's channels and positions), so they are not elementwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigurationError

__all__ = ["BatchTopK", "TopK", "batch_topk_relu", "topk_relu"]


def topk_relu(x: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` largest values of ``relu(x)`` of each example, the rest zero.

    Parameters
    ----------
    x : tensor, shape (n, ...)
    k : int

    Returns
    -------
    tensor, shape like ``x``
    """
    flat = x.flatten(1)
    if k >= flat.shape[1]:
        return F.relu(x)
    values, index = flat.topk(k, dim=1)
    return torch.zeros_like(flat).scatter(1, index, F.relu(values)).view_as(x)


def batch_topk_relu(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The ``k * n`` largest values of ``relu(x)`` over the batch, and the smallest positive one kept.

    Parameters
    ----------
    x : tensor, shape (n, ...)
    k : int

    Returns
    -------
    codes : tensor, shape like ``x``
    smallest : tensor of shape () or None
        The smallest kept value that is positive (None when none is).
    """
    flat = F.relu(x).flatten()
    budget = k * x.shape[0]
    if budget >= flat.numel():
        positive = flat[flat > 0]
        return F.relu(x), (positive.min().detach() if positive.numel() else None)
    values, index = flat.topk(budget)
    codes = torch.zeros_like(flat).scatter(0, index, values).view_as(x)
    positive = values[values > 0]
    return codes, (positive.min().detach() if positive.numel() else None)


class TopK(nn.Module):
    """``'topk:K'``: see :func:`topk_relu`.

    Parameters
    ----------
    k : int
    """

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Codes of ``x`` (n, ...) with at most ``k`` non-zero values per example."""
        return topk_relu(x, self.k)

    def extra_repr(self) -> str:
        """``k``, for ``repr``."""
        return f"k={self.k}"


class BatchTopK(nn.Module):
    """``'batchtopk:K'``: a budget of ``K`` per example over a training batch, a learned threshold at inference.

    Parameters
    ----------
    k : int

    Attributes
    ----------
    threshold : tensor, shape ()
        The running mean of the smallest kept value over the training batches seen
        (0 before any, which keeps every positive value).
    batches : tensor, shape ()
        How many training batches the threshold averages.
    """

    threshold: torch.Tensor
    batches: torch.Tensor

    def __init__(self, k: int):
        super().__init__()
        self.k = k
        self.register_buffer("threshold", torch.zeros((), dtype=torch.float64))
        self.register_buffer("batches", torch.zeros((), dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Training: the batch's top ``k * n``, updating the threshold; otherwise values above the threshold."""
        if not self.training:
            return torch.where(x > self.threshold.to(x.dtype), x, torch.zeros_like(x)).clamp_min(0)
        codes, smallest = batch_topk_relu(x, self.k)
        if smallest is not None:
            with torch.no_grad():
                self.batches += 1
                self.threshold += (smallest.double() - self.threshold) / self.batches
        return codes

    def extra_repr(self) -> str:
        """``k`` and the threshold, for ``repr``."""
        return f"k={self.k}, threshold={float(self.threshold):.4g}"


def parse_k(family: str, argument: str) -> int:
    """The ``K`` of ``'topk:K'`` / ``'batchtopk:K'``: a positive integer."""
    if not argument.isdigit() or int(argument) < 1:
        raise ConfigurationError(f"activation '{family}:K' needs a positive integer K, got {family}:{argument}")
    return int(argument)


def check_code_size(activation: str, units: int, layer: str) -> None:
    """Refuse a top-k code that keeps every unit: ``K`` must be below the layer's number of units.

    Raises
    ------
    ConfigurationError
        For ``'topk:K'`` or ``'batchtopk:K'`` with ``K >= units`` (the code would not be sparse,
        and the layer trains as a plain relu layer without saying so).
    """
    for part in activation.split("+"):
        family, _, argument = part.partition(":")
        if family.lower() in ("topk", "batchtopk") and argument.isdigit() and int(argument) >= units:
            raise ConfigurationError(
                f"layer {layer!r}: activation {part!r} keeps {argument} of its {units} units, so every unit; "
                f"K must be less than {units} for a sparse code"
            )
