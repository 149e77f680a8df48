"""Activation functions by name, theanets style.

``get(name, size)`` returns a ``torch.nn.Module``.  Names compose with ``+``:
``'relu+norm:z'`` applies ``relu`` first, then ``norm:z`` (theanets' order).

Per-example normalisations (``norm:mean``, ``norm:max``, ``norm:std``, ``norm:z``)
work over every axis but the first, so they apply to dense and image tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigurationError
from ..registry import Registry
from .jumprelu import DEFAULT_BANDWIDTH, JumpReLU, parse_bandwidth
from .sparsity import BatchTopK, TopK, parse_k

__all__ = ["ACTIVATIONS", "ELEMENTWISE", "Activation", "get", "names", "output_range"]

_EPS = 1e-8
LEAKY_RELU_SLOPE = 0.1  # the slope of 'leaky-relu' below zero, as in theanets


def _example_axes(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(1, x.dim()))


def _norm_mean(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean(dim=_example_axes(x), keepdim=True)


def _norm_max(x: torch.Tensor) -> torch.Tensor:
    return x / (x.abs().amax(dim=_example_axes(x), keepdim=True) + _EPS)


def _norm_std(x: torch.Tensor) -> torch.Tensor:
    return x / (x.std(dim=_example_axes(x), keepdim=True, unbiased=False) + _EPS)


def _norm_z(x: torch.Tensor) -> torch.Tensor:
    return _norm_std(_norm_mean(x))


def _softmax(x: torch.Tensor) -> torch.Tensor:
    # Over features for dense tensors, over channels for images.
    return torch.softmax(x, dim=1)


# One registry of every activation; ``prelu`` is listed with no function because it has a
# learnable parameter and is applied by :class:`Activation` itself.
ACTIVATIONS: Registry[Callable[[torch.Tensor], torch.Tensor] | None] = Registry("activation")
for _name, _function, _aliases in (
    ("linear", lambda x: x, ("identity",)),
    ("sigmoid", torch.sigmoid, ()),
    ("logistic", torch.sigmoid, ()),
    ("tanh", torch.tanh, ()),
    ("relu", F.relu, ()),
    ("rect:max", F.relu, ()),
    ("rect:min", lambda x: torch.clamp(x, max=1.0), ()),
    ("rect:minmax", lambda x: torch.clamp(x, 0.0, 1.0), ()),
    ("softplus", F.softplus, ()),
    ("softmax", _softmax, ()),
    ("leaky-relu", lambda x: F.leaky_relu(x, LEAKY_RELU_SLOPE), ("lrelu", "leaky_relu")),
    ("prelu", None, ()),
    ("elu", F.elu, ()),
    ("gelu", F.gelu, ()),
    ("norm:mean", _norm_mean, ()),
    ("norm:max", _norm_max, ()),
    ("norm:std", _norm_std, ()),
    ("norm:z", _norm_z, ()),
):
    ACTIVATIONS.register(_name, _function, aliases=_aliases)
_FUNCTIONS = ACTIVATIONS  # the name older code used

# The names that act on each value alone, so that a dense layer with them has a diagonal
# Jacobian with respect to its pre-activation (softmax and the normalisations mix units).
ELEMENTWISE = frozenset(n for n in ACTIVATIONS if n != "softmax" and not n.startswith("norm:"))

# The range each activation's output lies in; used to tell data that an output
# layer can never reproduce (diagnosis) and to pick losses from logits.
_RANGES: dict[str, tuple[float, float]] = {
    "sigmoid": (0.0, 1.0),
    "logistic": (0.0, 1.0),
    "tanh": (-1.0, 1.0),
    "relu": (0.0, math.inf),
    "rect:max": (0.0, math.inf),
    "rect:min": (-math.inf, 1.0),
    "rect:minmax": (0.0, 1.0),
    "softplus": (0.0, math.inf),
    "softmax": (0.0, 1.0),
    "elu": (-1.0, math.inf),
}


def names() -> list[str]:
    """All activation names, sorted (aliases included)."""
    return ACTIVATIONS.names()


# Activations with an argument and a module of their own: 'topk:32', 'batchtopk:32' (aekit.model.sparsity).
PARAMETRIC: Registry[type[nn.Module]] = Registry("parametric activation")
PARAMETRIC.register("topk", TopK)
PARAMETRIC.register("batchtopk", BatchTopK)

# Activations with a learned per-unit parameter, built with the layer's size and an optional argument:
# 'jumprelu' / 'jumprelu:EPS' (aekit.model.jumprelu).
SIZED: Registry[Callable[[int, str], nn.Module]] = Registry("sized activation")
SIZED.register(
    "jumprelu", lambda size, argument: JumpReLU(size, parse_bandwidth(argument) if argument else DEFAULT_BANDWIDTH)
)


def _build_part(part: str, size: int) -> nn.Module | None:
    # The module of one part of an activation, or None for a plain function.
    family, _, argument = part.partition(":")
    if family in SIZED:
        return SIZED[family](size, argument)
    if family in PARAMETRIC and argument:
        return PARAMETRIC[family](int(argument))
    return None


def _canonical_part(part: str) -> str:
    part = part.strip()
    family, _, argument = part.partition(":")
    if family.lower() in SIZED:
        return f"{family.lower()}:{parse_bandwidth(argument):g}" if argument else family.lower()
    if argument and family.lower() in PARAMETRIC and part.lower() not in ACTIVATIONS:
        return f"{family.lower()}:{parse_k(family.lower(), argument)}"
    return ACTIVATIONS.canonical(part)


def _canonical(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"activation must be a non-empty string, got {name!r}")
    return "+".join(_canonical_part(part) for part in name.split("+"))


class Activation(nn.Module):
    """An elementwise (or per-example) nonlinearity, possibly composed of several.

    Parameters
    ----------
    name : str
        Registered name or ``'a+b'`` composition.
    size : int
        Number of units (features or channels); only ``prelu`` uses it, for its
        learnable per-unit leak.
    """

    def __init__(self, name: str, size: int = 1):
        super().__init__()
        self.name = _canonical(name)
        self.parts = self.name.split("+")
        if "prelu" in self.parts:
            # One learnable leak per unit (per channel for images), as theanets' prelu.
            self.leak = nn.Parameter(torch.full((size,), 0.1))
        # The parts that are modules (their state, such as batchtopk's threshold, is saved with the model).
        built = {str(i): _build_part(part, size) for i, part in enumerate(self.parts)}
        self.modules_by_part = nn.ModuleDict({i: module for i, module in built.items() if module is not None})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply each part of the activation to ``x``, left to right.

        Parameters
        ----------
        x : tensor, shape (n, units) or (n, C, H, W)
            The pre-activation; prelu's leak is per unit (per channel for images).

        Returns
        -------
        tensor, shape like ``x``
        """
        for i, part in enumerate(self.parts):
            if str(i) in self.modules_by_part:
                x = self.modules_by_part[str(i)](x)
            elif part == "prelu":
                # F.prelu's own formula, written out: its vmap rule mixes the batch and channel
                # dimensions, which broke the per-example Jacobians of a contractive penalty.
                leak = self.leak.view(-1, *([1] * (x.dim() - 2)))  # per channel: (C, 1, 1) for images
                x = torch.where(x > 0, x, x * leak)
            else:
                x = ACTIVATIONS[part](x)  # type: ignore[misc]  # only prelu has no function
        return x

    @property
    def is_sigmoid(self) -> bool:
        """True when the whole activation is a logistic sigmoid (losses can use logits)."""
        return self.parts in (["sigmoid"], ["logistic"])

    def extra_repr(self) -> str:
        """The activation's name, for ``repr``."""
        return repr(self.name)


def get(name: str, size: int = 1) -> Activation:
    """Return the activation module registered under ``name``.

    Raises
    ------
    ConfigurationError
        If the name (or one part of a composition) is unknown.
    """
    return Activation(name, size)


def output_range(name: str) -> tuple[float, float]:
    """The (low, high) range of an activation's output; the last part decides."""
    last = _canonical(name).split("+")[-1]
    if last.split(":")[0] in PARAMETRIC or last.split(":")[0] in SIZED:
        return (0.0, math.inf)  # top-k and JumpReLU codes are rectified
    return _RANGES.get(last, (-math.inf, math.inf))
