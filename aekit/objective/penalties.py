"""Regularizers and training noise, as pure functions plus one parsed options object.

Keyword conventions (``net.train(x, hidden_l1=0.1, ...)``).  The four norm penalties
mean what they meant in theanets 0.7, whose ``theanets/regularizers.py`` (v0.7.0 to
v0.7.3) computes, for the parameters or outputs a regularizer matches, and adds
``r.weight * r.loss(...)`` to the loss (``theanets/graph.py``)::

    # WeightL2 (weight_l2, weight_decay)
    return sum((v * v).mean() for v in variables) / len(variables)
    # WeightL1 (weight_l1, weight_sparsity)
    return sum(abs(v).mean() for v in variables) / len(variables)
    # HiddenL1 (hidden_l1, hidden_sparsity)
    return sum(abs(h).mean() for h in hiddens) / len(hiddens)

with ``variables`` the matching parameters of more than one dimension and
``hiddens`` the matching hidden outputs (all hidden layers by default).  So:

* ``weight_l1``, ``weight_l2`` -- ``lam * (1/K) sum_k mean |W_k|`` /
  ``lam * (1/K) sum_k mean W_k**2`` over the K weight matrices (``'*.w'``; biases are
  never penalised): the mean over each matrix, averaged over the matrices.
* ``hidden_l1``, ``hidden_l2`` -- ``lam * (1/L) sum_l mean |h_l|`` /
  ``lam * (1/L) sum_l mean h_l**2`` over the batch's outputs of the L hidden layers
  (every layer but the input and the output).  theanets 0.7 has no ``hidden_l2``;
  it is defined as ``hidden_l1`` is, with squares.
* ``sparsity_target`` (UFLDL's rho) and ``sparsity_weight`` (beta) -- ``beta *
  sum_j KL(rho || rho_hat_j)`` with ``rho_hat_j`` the batch-mean activation of unit j
  of each hidden layer whose output lies in [0, 1] (UFLDL's sum over units, added
  over the layers).
* ``contractive`` -- ``lam * mean_i ||J(x_i)||_F**2``, the squared Frobenius norm
  of the Jacobian of the code (middle) layer with respect to each input example
  (Rifai et al. 2011), computed exactly per example: in closed form when the code
  layer ends a chain of dense layers from the input (:func:`dense_jacobian_norm`,
  :func:`chain_jacobian_norm`), through per-example automatic Jacobians otherwise.
  (theanets 0.7's ``Contractive`` squares the gradient of the batch-mean output
  instead, a different quantity: there is no scale of it to match.)
* ``input_noise``, ``input_dropout``, ``hidden_noise``, ``hidden_dropout`` --
  Gaussian noise std / dropout probability, applied during training only.
* ``beta``, ``kl_warmup``, ``free_bits``, ``capacity``, ``importance_samples``,
  ``binarize`` -- the KL term of variational autoencoders and their training data
  (:mod:`aekit.objective.likelihood`).

Sparse autoencoders add ``jumprelu_l0``, ``decoder_weighted_l1`` and ``multik`` (see
:mod:`aekit.objective.sae_penalties`) and ``auxk`` with its ``auxk_k`` and ``dead_after``
(see :mod:`aekit.objective.auxk`).

Any of the layer-wise options may be a dict of glob patterns instead of a number:
``hidden_l1={'hid1': 0.1, 'hid2': 0.01}`` or ``weight_l2={'hid*.w': 1e-4}``.  Each
pattern is a term of its own, as a theanets regularizer with that pattern: its
strength times the mean over the matrices (layers) it chooses; a name belongs to the
first pattern that matches it.  So ``weight_l2={'hid1.w': a, 'out.w': b}`` is
``a * mean W_hid1**2 + b * mean W_out**2``.

Summed forms.  Keras's ``kernel_regularizer=l2(mu)`` (``mu * sum W**2`` for each
kernel, next to a mean squared error like aekit's ``mse``), aekit 0.1's
``weight_l2=mu`` and UFLDL's ``lambda/2 * sum W**2`` sum over the weights instead.
(UFLDL's reconstruction term is ``mean_i 0.5 ||x_i - y_i||**2``, aekit's ``mse``
that divided by D/2 for D inputs, so its ``mu`` is ``lambda / D``.)  As
``mu * sum W_k**2 == (mu * n_k) * mean W_k**2`` for a matrix of ``n_k`` weights, the
same penalty here is one pattern per matrix, ``weight_l2={'hid1.w': mu * n_hid1,
'out.w': mu * n_out}``, or ``weight_l2=mu * K * n`` when all K matrices hold n
weights (likewise for L1).  A summed ``hidden_l1=lam`` over L layers is
``hidden_l1=lam * L`` here.

Checkpoints written by aekit 0.1 (``checkpoint_version`` 1) used the summed forms;
a run resumed from one keeps them (``Regularizers.scale == 'sum'``, see
:mod:`aekit.train.checkpoint`), so it trains with the strength it was written with.
"""

from __future__ import annotations

import fnmatch
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ..data.validation import integer, number
from ..errors import ConfigurationError
from ..model.dead_latents import DEFAULT_DEAD_AFTER
from .corruption import dropout, gaussian_noise  # their old home; re-exported

__all__ = [
    "PENALTY_SCALES",
    "REGULARIZER_KEYS",
    "SAE_KEYS",
    "Regularizers",
    "chain_jacobian_norm",
    "dense_jacobian_norm",
    "dropout",
    "gaussian_noise",
    "hidden_coefficients",
    "hidden_penalty",
    "kl_sparsity",
    "kl_sparsity_grad",
    "match",
    "weight_coefficients",
    "weight_norm",
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
    # sparse autoencoders (aekit.objective.sae_penalties, aekit.objective.auxk)
    "jumprelu_l0",
    "decoder_weighted_l1",
    "auxk",
    "auxk_k",
    "dead_after",
    "multik",
    # Variational autoencoders (see aekit.objective.likelihood).
    "beta",
    "kl_warmup",
    "free_bits",
    "capacity",
    "importance_samples",
    "binarize",
)

# The sparse-autoencoder keywords (their models are built from layer lists, not by the scikit-learn estimators).
SAE_KEYS = ("jumprelu_l0", "decoder_weighted_l1", "auxk", "auxk_k", "dead_after", "multik")

# Defaults of the auxiliary loss (Gao et al. 2024): the k_aux dead latents that reconstruct the
# residual, and how many training examples without firing make a latent dead (the paper's 10M tokens).
AUXK_K = 512
DEAD_AFTER = DEFAULT_DEAD_AFTER


# How weight_l1/l2 and hidden_l1/l2 reduce: 'mean' is theanets 0.7's (this version's);
# 'sum' is aekit 0.1's, kept only so that its checkpoints resume with their own strengths.
PENALTY_SCALES = ("mean", "sum")


def weight_penalty(weights: Iterable[torch.Tensor], power: int) -> torch.Tensor:
    """The weight penalty of theanets 0.7: the mean of ``|w|`` (power 1) or ``w**2`` (power 2) of each tensor, averaged.

    ``sum(abs(v).mean() for v in variables) / len(variables)`` in theanets'
    ``WeightL1.loss`` (``(v * v).mean()`` in ``WeightL2.loss``); zero for no tensors.
    The training objective computes the same through :func:`weight_coefficients`.
    """
    means = [w.abs().mean() if power == 1 else w.square().mean() for w in weights]
    return torch.stack(means).mean() if means else torch.zeros(())


def weight_norm(w: torch.Tensor, power: int) -> torch.Tensor:
    """``sum |w|`` (power 1) or ``sum w**2`` (power 2) of one tensor: what a weight coefficient multiplies."""
    return w.abs().sum() if power == 1 else w.square().sum()


def _owners(patterns: Mapping[str, float], names: Iterable[str]) -> dict[str, str]:
    # Each chosen name -> the first pattern that matches it (see match()).
    out: dict[str, str] = {}
    for name in names:
        for pattern in patterns:
            if fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(f"{name}:out", pattern):
                out[name] = pattern
                break
    return out


def _check_scale(scale: str) -> None:
    if scale not in PENALTY_SCALES:
        raise ConfigurationError(f"penalty scale must be one of {PENALTY_SCALES}, got {scale!r}")


def weight_coefficients(
    patterns: Mapping[str, float], weights: Mapping[str, torch.Tensor], scale: str = "mean"
) -> dict[str, float]:
    """Each chosen weight tensor's factor ``c``: its part of the penalty is ``c * weight_norm(w, power)``.

    With ``scale='mean'`` (theanets 0.7) a pattern of strength ``lam`` that chooses K
    tensors gives each ``c = lam / (K * w.numel())``, which adds up to ``lam *``
    :func:`weight_penalty` of those tensors; with ``'sum'`` (aekit 0.1) ``c = lam``.

    Parameters
    ----------
    patterns : dict of str to float
        Glob pattern -> strength (a parsed ``weight_l1`` / ``weight_l2``).
    weights : dict of str to tensor
        The candidate tensors by name (``'hid1.w'``).
    scale : {'mean', 'sum'}

    Returns
    -------
    dict of str to float
        The chosen names (a name belongs to the first pattern it matches) and their factors.
    """
    _check_scale(scale)
    owners = _owners(patterns, weights)
    if scale == "sum":
        return {name: patterns[pattern] for name, pattern in owners.items()}
    counts = Counter(owners.values())
    return {name: patterns[p] / (counts[p] * weights[name].numel()) for name, p in owners.items()}


def hidden_coefficients(patterns: Mapping[str, float], names: Iterable[str], scale: str = "mean") -> dict[str, float]:
    """Each chosen hidden layer's factor ``c``: its part of the penalty is ``c * hidden_penalty(h, power)``.

    With ``scale='mean'`` (theanets 0.7's ``sum(abs(h).mean() for h in hiddens) /
    len(hiddens)``) a pattern of strength ``lam`` that chooses L layers gives each
    ``c = lam / L``; with ``'sum'`` (aekit 0.1) ``c = lam``.
    """
    _check_scale(scale)
    owners = _owners(patterns, names)
    if scale == "sum":
        return {name: patterns[pattern] for name, pattern in owners.items()}
    counts = Counter(owners.values())
    return {name: patterns[p] / counts[p] for name, p in owners.items()}


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
    return {name: pattern_weights[pattern] for name, pattern in _owners(pattern_weights, names).items()}


def _variational(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The variational keywords checked (None means the default, as on the command line)."""
    out: dict[str, Any] = {}
    for key, low in (("beta", 0.0), ("free_bits", 0.0), ("capacity", 0.0)):
        if kwargs.get(key) is not None:
            out[key] = number(key, kwargs[key], low, math.inf)
    for key, low in (("kl_warmup", 0), ("importance_samples", 1)):
        if kwargs.get(key) is not None:
            out[key] = integer(key, kwargs[key], low)
    binarize = kwargs.get("binarize")
    if binarize is not None and binarize is not False:
        if binarize not in ("dynamic",):
            raise ConfigurationError(f"binarize must be 'dynamic' or None, got {binarize!r}")
        out["binarize"] = binarize
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
    """Parsed regularizer and noise options (see the module docstring for meanings).

    ``scale`` says how ``weight_l1``/``weight_l2``/``hidden_l1``/``hidden_l2`` reduce:
    ``'mean'`` (theanets 0.7's, what ``train()`` keywords mean) or ``'sum'`` (aekit
    0.1's, set only on a run resumed from one of its checkpoints).
    """

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
    jumprelu_l0: dict[str, float] = field(default_factory=dict)
    decoder_weighted_l1: dict[str, float] = field(default_factory=dict)
    auxk: float = 0.0
    auxk_k: int = AUXK_K
    dead_after: int = DEAD_AFTER
    multik: float = 0.0
    scale: str = "mean"
    # Variational autoencoders (aekit.objective.likelihood): the KL term's weight and shape.
    beta: float = 1.0
    kl_warmup: int = 0
    free_bits: float = 0.0
    capacity: float | None = None
    importance_samples: int = 1
    binarize: str | None = None

    def __post_init__(self) -> None:
        _check_scale(self.scale)

    def per_name(self, weights: Mapping[str, torch.Tensor], hidden: Iterable[str]) -> dict[str, dict[str, float]]:
        """The ``weight_l1/l2``, ``hidden_l1/l2`` keywords that give these penalties in the ``'mean'`` scale.

        One pattern per chosen matrix (layer), its strength the factor of
        :func:`weight_coefficients` times the matrix's size (of
        :func:`hidden_coefficients`): how the keywords of a run in the ``'sum'`` scale
        read today.  Keys that are not set are left out.
        """
        hidden = list(hidden)
        out: dict[str, dict[str, float]] = {}
        for key in ("weight_l1", "weight_l2"):
            if getattr(self, key):
                coefs = weight_coefficients(getattr(self, key), weights, self.scale)
                out[key] = {name: c * weights[name].numel() for name, c in coefs.items()}
        for key in ("hidden_l1", "hidden_l2"):
            if getattr(self, key):
                out[key] = hidden_coefficients(getattr(self, key), hidden, self.scale)
        return out

    @property
    def uses_randomness(self) -> bool:
        """True when training draws random numbers (noise or dropout)."""
        return bool(
            self.binarize
            or self.input_noise
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
            jumprelu_l0=_pattern_weights("jumprelu_l0", kwargs.get("jumprelu_l0"), "*", inf),
            decoder_weighted_l1=_pattern_weights("decoder_weighted_l1", kwargs.get("decoder_weighted_l1"), "*", inf),
            auxk=number("auxk", kwargs.get("auxk") or 0.0, 0.0, inf),
            auxk_k=integer("auxk_k", AUXK_K if kwargs.get("auxk_k") is None else kwargs["auxk_k"], 1),
            multik=number("multik", kwargs.get("multik") or 0.0, 0.0, inf),
            dead_after=integer(
                "dead_after", DEAD_AFTER if kwargs.get("dead_after") is None else kwargs["dead_after"], 0
            ),
            **_variational(kwargs),
        )

    @property
    def needs_hidden(self) -> bool:
        """True when some term reads hidden activations."""
        return bool(self.hidden_l1 or self.hidden_l2 or self.sparsity)
