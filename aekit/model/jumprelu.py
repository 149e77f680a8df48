"""The ``'jumprelu'`` code activation: a learned per-unit threshold (Rajamanoharan et al. 2024).

"Jumping Ahead: Improving Reconstruction Fidelity with JumpReLU Sparse Autoencoders"
(arXiv:2407.14435) defines, for a pre-activation ``z`` and a per-unit threshold
``theta > 0``::

    JumpReLU(z) = z * H(z - theta)          H: the Heaviside step

and trains ``theta`` through *pseudo-derivatives* that replace the step's zero
derivative by a rectangle kernel ``K(u) = 1{-1/2 < u < 1/2}`` of bandwidth ``eps``:

* ``d JumpReLU / d z = H(z - theta)`` (exact away from the jump);
* ``d JumpReLU / d theta := -(theta / eps) * K((z - theta) / eps)``;
* the L0 penalty ``sum_j H(z_j - theta_j)`` (:func:`step`, which the ``jumprelu_l0``
  train keyword adds up) has ``d H / d theta := -(1 / eps) * K((z - theta) / eps)``
  and no gradient with respect to ``z``.

These are the paper's equations 11-12 (and its pseudo-code, appendix J).  ``theta``
is stored as ``log_threshold`` (``theta = exp(log_threshold)``), so it stays positive
and Adam's steps are relative; the gradient with respect to ``log_threshold`` is
``theta`` times the one above (the chain rule, done by autograd).

Defaults, as in the paper: bandwidth ``eps = 0.001`` and an initial threshold of
``0.001``.  Both are in the units of the pre-activation: for data of another scale
give the bandwidth as ``'jumprelu:EPS'`` (the threshold then starts at ``EPS`` too).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..errors import ConfigurationError

__all__ = ["DEFAULT_BANDWIDTH", "JumpReLU", "jumprelu", "parse_bandwidth", "rectangle", "step"]

DEFAULT_BANDWIDTH = 0.001  # the paper's epsilon (and its initial threshold)


def rectangle(u: torch.Tensor) -> torch.Tensor:
    """The rectangle kernel ``K(u) = 1`` for ``-1/2 < u < 1/2``, else 0 (same dtype as ``u``)."""
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, theta: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(z, theta)
        ctx.bandwidth = bandwidth
        return z * (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        z, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_z = grad * (z > theta).to(grad.dtype)
        # -(theta/eps) K((z - theta)/eps), summed over every example (theta is shared by the batch)
        local = -(theta / eps) * rectangle((z - theta) / eps) * grad
        return grad_z, local.sum_to_size(theta.shape), None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, theta: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(z, theta)
        ctx.bandwidth = bandwidth
        return (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        z, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        local = -(1.0 / eps) * rectangle((z - theta) / eps) * grad
        return torch.zeros_like(z), local.sum_to_size(theta.shape), None  # the paper: no L0 gradient to the encoder


def jumprelu(z: torch.Tensor, theta: torch.Tensor, bandwidth: float = DEFAULT_BANDWIDTH) -> torch.Tensor:
    """``z * H(z - theta)`` with the paper's pseudo-derivative for ``theta``.

    Parameters
    ----------
    z : tensor, shape (n, units) or (n, C, H, W)
        Pre-activations.
    theta : tensor, shape (units,) or (C, 1, 1)
        Positive thresholds, one per unit (per channel for images), broadcast against ``z``.
    bandwidth : float
        The rectangle kernel's width ``eps``.

    Returns
    -------
    tensor, shape (n, units)
    """
    return _JumpReLU.apply(z, theta, bandwidth)


def step(z: torch.Tensor, theta: torch.Tensor, bandwidth: float = DEFAULT_BANDWIDTH) -> torch.Tensor:
    """``H(z - theta)``: 1 where a unit is active; its pseudo-derivative trains ``theta`` only.

    Parameters
    ----------
    z : tensor, shape (n, units)
    theta : tensor, shape (units,)
    bandwidth : float

    Returns
    -------
    tensor, shape (n, units)
        ``.sum(dim=1)`` is each example's L0.
    """
    return _Step.apply(z, theta, bandwidth)


def parse_bandwidth(argument: str) -> float:
    """The ``EPS`` of ``'jumprelu:EPS'``: a positive finite number."""
    try:
        value = float(argument)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ConfigurationError(f"activation 'jumprelu:EPS' needs a positive bandwidth EPS, got jumprelu:{argument}")
    return value


class JumpReLU(nn.Module):
    """``'jumprelu'`` / ``'jumprelu:EPS'``: see the module docstring.

    Parameters
    ----------
    size : int
        Number of units (one threshold each).
    bandwidth : float
        ``eps`` of the pseudo-derivatives; also the initial threshold.

    Attributes
    ----------
    log_threshold : parameter, shape (size,)
        ``log(theta)``: trained, saved with the model, restored by checkpoints.
    """

    def __init__(self, size: int, bandwidth: float = DEFAULT_BANDWIDTH):
        super().__init__()
        self.bandwidth = float(bandwidth)
        self.log_threshold = nn.Parameter(torch.full((size,), math.log(self.bandwidth)))

    @property
    def threshold(self) -> torch.Tensor:
        """``theta = exp(log_threshold)``, shape (size,)."""
        return self.log_threshold.exp()

    def _theta(self, z: torch.Tensor) -> torch.Tensor:
        # Per unit of a dense code, per channel of an image code: (C, 1, 1) against (n, C, H, W).
        return self.threshold.to(z.dtype).view(-1, *([1] * (z.dim() - 2)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``z * H(z - theta)`` for ``z`` of shape (n, size) or (n, size, H, W)."""
        return jumprelu(z, self._theta(z), self.bandwidth)

    def l0(self, z: torch.Tensor) -> torch.Tensor:
        """Each example's number of active values, shape (n,), with the pseudo-derivative for ``theta``."""
        return step(z, self._theta(z), self.bandwidth).flatten(1).sum(dim=1)

    def extra_repr(self) -> str:
        """Size and bandwidth, for ``repr``."""
        return f"size={self.log_threshold.numel()}, bandwidth={self.bandwidth:g}"
