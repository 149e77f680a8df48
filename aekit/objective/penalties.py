"""Regularizers and training noise, as pure functions plus one parsed options object.

Keyword conventions (``net.train(x, hidden_l1=0.1, ...)``):

* ``weight_l1``, ``weight_l2`` -- ``lam * sum |w|`` / ``lam * sum w**2`` over the
  weight matrices (``'*.w'``; biases are never penalised).
* ``hidden_l1``, ``hidden_l2`` -- ``lam * mean |h|`` / ``lam * mean h**2`` of the
  hidden layers' outputs (every layer but the input and the output).
* ``sparsity_target`` (UFLDL's rho) and ``sparsity_weight`` (beta) -- ``beta *
  sum_j KL(rho || rho_hat_j)`` with ``rho_hat_j`` the batch-mean activation of unit j
  of each hidden layer whose output lies in [0, 1].
* ``contractive`` -- ``lam * mean_i ||J(x_i)||_F**2``, the squared Frobenius norm
  of the Jacobian of the code (middle) layer with respect to each input example
  (Rifai et al. 2011), computed exactly per example: in closed form when the code
  layer ends a chain of dense layers from the input (:func:`dense_jacobian_norm`,
  :func:`chain_jacobian_norm`), through per-example automatic Jacobians otherwise.
* ``input_noise``, ``input_dropout``, ``hidden_noise``, ``hidden_dropout`` --
  Gaussian noise std / dropout probability, applied during training only.

Any of the layer-wise options may be a dict of glob patterns instead of a number:
``hidden_l1={'hid1': 0.1, 'hid2': 0.01}`` or ``weight_l2={'hid*.w': 1e-4}``.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ..data.validation import number
from ..errors import ConfigurationError
from .corruption import dropout, gaussian_noise  # their old home; re-exported

__all__ = [
    "REGULARIZER_KEYS",
    "Regularizers",
    "chain_jacobian_norm",
    "dense_jacobian_norm",
    "dropout",
    "gaussian_noise",
    "hidden_penalty",
    "kl_sparsity",
    "kl_sparsity_grad",
    "match",
    "weight_penalty",
]

REGULARIZER_KEYS = (
    "weight_l1",
    "weight_l2",
    "hidden_l1",
    "hidden_l2",
    "sparsity_target",
    "sparsity_weight",
    "contractive",
    "input_noise",
    "input_dropout",
    "hidden_noise",
    "hidden_dropout",
)


def weight_penalty(weights: Iterable[torch.Tensor], power: int) -> torch.Tensor:
    """``sum |w|`` (power 1) or ``sum w**2`` (power 2) over all given tensors."""
    total = None
    for w in weights:
        term = w.abs().sum() if power == 1 else w.square().sum()
        total = term if total is None else total + term
    return total if total is not None else torch.zeros(())


def hidden_penalty(h: torch.Tensor, power: int) -> torch.Tensor:
    """Mean ``|h|`` or ``h**2`` over a batch of activations (n, ...)."""
    return h.abs().mean() if power == 1 else h.square().mean()


RHO_HAT_CLAMP = 1e-6  # rho_hat is kept in [eps, 1 - eps], where both logarithms are finite


def kl_sparsity(h: torch.Tensor, rho: float) -> torch.Tensor:
    """UFLDL sparsity penalty ``sum_j KL(rho || rho_hat_j)`` for activations in [0, 1].

    Parameters
    ----------
    h : tensor, shape (n, units) or (n, C, H, W)
        Activations; ``rho_hat`` is their mean over the batch (and over space for images).
    rho : float
        Target mean activation, in (0, 1).
    """
    dims = [0, *range(2, h.dim())]
    rho_hat = h.mean(dim=dims).clamp(RHO_HAT_CLAMP, 1 - RHO_HAT_CLAMP)
    return (rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))).sum()


def kl_sparsity_grad(h: torch.Tensor, rho: float) -> torch.Tensor:
    """The gradient of :func:`kl_sparsity` with respect to each row of dense activations ``h`` (n, units).

    ``d/d h_ij = ((1 - rho) / (1 - rho_hat_j) - rho / rho_hat_j) / n``, the same for
    every row, zero where the clamp holds ``rho_hat_j``.

    Returns
    -------
    tensor, shape (units,)
        Add it to each row of the gradient with respect to ``h``.
    """
    rho_hat = h.mean(dim=0)
    inside = (rho_hat >= RHO_HAT_CLAMP) & (rho_hat <= 1 - RHO_HAT_CLAMP)
    rho_hat = rho_hat.clamp(RHO_HAT_CLAMP, 1 - RHO_HAT_CLAMP)
    return ((1 - rho) / (1 - rho_hat) - rho / rho_hat).mul_(inside).div_(h.shape[0])


def dense_jacobian_norm(slope: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Mean over examples of ``||d h / d x||_F^2`` for a dense layer ``h = f(x @ w + b)``.

    With an elementwise ``f`` the Jacobian of one example is ``diag(f'(pre)) w^T``, so
    its squared Frobenius norm is ``sum_j f'(pre_j)^2 sum_i w_ij^2`` (Rifai et al.
    2011, section 4): one pass over the batch and one over ``w``, instead of a
    (units, features) Jacobian per example.

    Parameters
    ----------
    slope : tensor, shape (n, n_out)
        ``f'(pre)`` for each example and unit.
    w : tensor, shape (n_in, n_out)

    Returns
    -------
    tensor, shape ()
    """
    # A product, not mv: under autocast slope may be bf16/fp16 while w is float32.
    return (slope.square() * w.square().sum(dim=0)).sum(dim=1).mean()


def chain_jacobian_norm(slopes: list[torch.Tensor], weights: list[torch.Tensor]) -> torch.Tensor:
    """Mean over examples of ``||d h_k / d x||_F^2`` for a chain of dense layers ``h_i = f_i(h_{i-1} @ w_i + b_i)``.

    One example's Jacobian is ``D_k w_k^T D_{k-1} ... w_2^T D_1 w_1^T`` with ``D_i =
    diag(f_i'(pre_i))``.  It is built from the code end as ``B = D_k w_k^T ... D_1``
    (code, h_1) per example, a few batched matrix products; the last factor enters
    through the Gram matrix ``w_1^T w_1`` when ``h_1`` is narrower than the input,
    as ``||B w_1^T||^2 = trace(B w_1^T w_1 B^T)``.  One layer: :func:`dense_jacobian_norm`.

    Parameters
    ----------
    slopes : list of tensor, shapes (n, h_i)
        ``f_i'(pre_i)`` of each layer, input side first.
    weights : list of tensor, shapes (h_{i-1}, h_i)
        Each layer's ``w``, input side first (``h_0`` is the number of inputs).

    Returns
    -------
    tensor, shape ()
    """
    if len(weights) == 1:
        return dense_jacobian_norm(slopes[0], weights[0])
    b = slopes[-1][:, :, None] * weights[-1].t()[None] * slopes[-2][:, None, :]
    for i in range(len(weights) - 2, 0, -1):
        b = (b @ weights[i].t()) * slopes[i - 1][:, None, :]
    first = weights[0]
    if first.shape[1] < first.shape[0]:
        return ((b @ (first.t() @ first)) * b).sum(dim=(1, 2)).mean()
    return (b @ first.t()).square().sum(dim=(1, 2)).mean()


def match(pattern_weights: Mapping[str, float], names: Iterable[str]) -> dict[str, float]:
    """Map each name to the weight of the first glob pattern it matches.

    A pattern matches a layer name (``'hid1'``), its output (``'hid1:out'``) or a
    parameter name (``'hid1.w'``).
    """
    out: dict[str, float] = {}
    for name in names:
        for pattern, weight in pattern_weights.items():
            if fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(f"{name}:out", pattern):
                out[name] = weight
                break
    return out


def _pattern_weights(key: str, value: Any, default_pattern: str, high: float) -> dict[str, float]:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        out = {}
        for pattern, weight in value.items():
            if not isinstance(pattern, str):
                raise ConfigurationError(f"{key} keys must be glob patterns (str), got {pattern!r}")
            out[pattern] = number(f"{key}[{pattern!r}]", weight, 0.0, high)
        return {p: w for p, w in out.items() if w > 0}
    weight = number(key, value, 0.0, high)
    return {default_pattern: weight} if weight > 0 else {}


@dataclass
class Regularizers:
    """Parsed regularizer and noise options (see the module docstring for meanings)."""

    weight_l1: dict[str, float] = field(default_factory=dict)
    weight_l2: dict[str, float] = field(default_factory=dict)
    hidden_l1: dict[str, float] = field(default_factory=dict)
    hidden_l2: dict[str, float] = field(default_factory=dict)
    sparsity: dict[str, float] = field(default_factory=dict)
    sparsity_target: float = 0.05
    contractive: dict[str, float] = field(default_factory=dict)
    input_noise: float = 0.0
    input_dropout: float = 0.0
    hidden_noise: dict[str, float] = field(default_factory=dict)
    hidden_dropout: dict[str, float] = field(default_factory=dict)

    @property
    def uses_randomness(self) -> bool:
        """True when training draws random numbers (noise or dropout)."""
        return bool(
            self.input_noise
            or self.input_dropout
            or any(self.hidden_noise.values())
            or any(self.hidden_dropout.values())
        )

    @classmethod
    def from_kwargs(cls, code_layer: str = "*", **kwargs: Any) -> Regularizers:
        """Validate and normalise the regularizer keywords of ``train``/``loss``.

        Parameters
        ----------
        code_layer : str
            Default pattern of the contractive penalty (the code layer's name).
        """
        inf = math.inf
        rho = kwargs.get("sparsity_target")
        beta = kwargs.get("sparsity_weight")
        sparsity: dict[str, float] = {}
        if rho is not None:
            rho = number("sparsity_target", rho, 0.0, 1.0)
            if not 0 < rho < 1:
                raise ConfigurationError(f"sparsity_target must be in (0, 1), got {rho}")
            sparsity = _pattern_weights("sparsity_weight", 1.0 if beta is None else beta, "*", inf)
        elif beta is not None:
            raise ConfigurationError("sparsity_weight needs sparsity_target (UFLDL's rho), got none")
        return cls(
            weight_l1=_pattern_weights("weight_l1", kwargs.get("weight_l1"), "*.w", inf),
            weight_l2=_pattern_weights("weight_l2", kwargs.get("weight_l2"), "*.w", inf),
            hidden_l1=_pattern_weights("hidden_l1", kwargs.get("hidden_l1"), "*", inf),
            hidden_l2=_pattern_weights("hidden_l2", kwargs.get("hidden_l2"), "*", inf),
            sparsity=sparsity,
            sparsity_target=rho if rho is not None else 0.05,
            contractive=_pattern_weights("contractive", kwargs.get("contractive"), code_layer, inf),
            input_noise=number("input_noise", kwargs.get("input_noise") or 0.0, 0.0, inf),
            input_dropout=number("input_dropout", kwargs.get("input_dropout") or 0.0, 0.0, 0.99),
            hidden_noise=_pattern_weights("hidden_noise", kwargs.get("hidden_noise"), "*", inf),
            hidden_dropout=_pattern_weights("hidden_dropout", kwargs.get("hidden_dropout"), "*", 0.99),
        )

    @property
    def needs_hidden(self) -> bool:
        """True when some term reads hidden activations."""
        return bool(self.hidden_l1 or self.hidden_l2 or self.sparsity)
