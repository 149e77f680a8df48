"""The layer protocol: a thin ``nn.Module`` shell that holds parameters and knows its shapes.

A layer maps a batch to a :class:`LayerOutput` record: the pre-activation, the
activated output, any extra named outputs, and the loss terms the layer owns
(the objective adds those up; layers never import it).  Around each optimizer
step a layer may act on its parameters and state: :meth:`Layer.before_step`
(after backward: e.g. project the gradients of a constrained weight) and
:meth:`Layer.after_step` (after the update: e.g. renormalise, update running
state).  Buffers named in :attr:`Layer.summed_buffers` are per-process counts
that data-parallel training sums over the processes instead of taking one
process's copy.

Parameters are named ``w`` and ``b``; a dense ``w`` has shape ``(n_in, n_out)``
as in theanets.  Initialisation is its own method (:meth:`Layer.reset_parameters`).

New forms register themselves in :data:`LAYERS` with :func:`register`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from ...errors import ConfigurationError, DataError
from ...registry import Registry
from .. import activations
from ..sparsity import check_code_size
from ..specs import FORMS, FormOptions, LayerSpec, register_form

__all__ = [
    "LAYERS",
    "LAYER_CLASSES",
    "Layer",
    "LayerOutput",
    "build_layer",
    "default_std",
    "layer_seed",
    "random_matrix",
    "register",
]

LAYERS: Registry[type[Layer]] = Registry("layer form")
LAYER_CLASSES = LAYERS  # the name older code used


def register(form: str, options: FormOptions | None = None) -> Callable[[type[Layer]], type[Layer]]:
    """Class decorator: make ``form`` in layer specs build this class.

    Parameters
    ----------
    form : str
        The name layer specs use (``dict(form='vq', ...)``).
    options : FormOptions, optional
        The form's own spec options, their defaults and their check; layer specs and
        model files then accept them with no other edit.
    """

    def wrap(cls: type[Layer]) -> type[Layer]:
        if options is not None or form not in FORMS:
            register_form(form, options)
        LAYERS.register(form, cls)
        cls.form = form
        return cls

    return wrap


class LayerOutput(NamedTuple):
    """What a layer's forward pass returns.

    Attributes
    ----------
    pre : tensor, shape (n, *output_shape)
        The pre-activation (``'name:pre'``).
    out : tensor, shape (n, *output_shape)
        The activated output (``'name:out'``), which the next layer reads.
    extras : dict of str to tensor
        Further named outputs (``'name:key'``), e.g. a latent layer's log-variance.
    terms : dict of str to tensor
        Loss terms the layer owns, each a scalar already weighted; the objective
        adds them to the total as ``'name.key'``.
    """

    pre: torch.Tensor
    out: torch.Tensor
    extras: Mapping[str, torch.Tensor] = MappingProxyType({})
    terms: Mapping[str, torch.Tensor] = MappingProxyType({})


def _numel(shape: tuple[int, ...]) -> int:
    return int(math.prod(shape))


def default_std(activation: str, fan_in: float, fan_out: float) -> float:
    """Initial weight std that keeps signals in range for ``activation``.

    He (Kaiming) for rectifiers, Glorot for saturating and linear units, so that
    sigmoid layers start in their sensitive region instead of saturated.
    """
    last = activation.split("+")[0]
    if last in ("relu", "rect:max", "leaky-relu", "prelu", "elu", "gelu", "softplus"):
        return math.sqrt(2.0 / fan_in)
    return math.sqrt(2.0 / (fan_in + fan_out))


def random_matrix(
    shape: tuple[int, ...],
    generator: torch.Generator,
    mean: float = 0.0,
    std: float = 0.0,
    sparsity: float = 0.0,
    diagonal: float | None = None,
) -> torch.Tensor:
    """Theanets' ``random_matrix``: Gaussian entries, a fraction zeroed, or a scaled identity."""
    if diagonal is not None and diagonal != 0.0:
        rows, cols = shape[0], _numel(shape[1:])
        return (diagonal * torch.eye(rows, cols)).reshape(shape)
    values = mean + std * torch.randn(shape, generator=generator)
    if sparsity > 0:
        if not 0 <= sparsity < 1:
            raise ConfigurationError(f"sparsity must be in [0, 1), got {sparsity}")
        values[torch.rand(shape, generator=generator) < sparsity] = 0.0
    return values


class Layer(nn.Module):
    """Base class: holds the spec, the input and output shapes, and the activation.

    Parameters
    ----------
    spec : LayerSpec
        The canonical description of this layer.
    input_shape : tuple of int
        Per-example shape of the incoming tensor.
    """

    form = "layer"
    # The class of a 'tied' layer that mirrors this one (set where it exists), built as (spec, input_shape, partner).
    tied_class: Callable[[LayerSpec, tuple[int, ...], Layer], Layer]
    takes_constraints = False  # whether constraint= applies to this form
    # Buffers that count per-process events (e.g. how often a unit fired): data-parallel
    # training sums their changes over the processes instead of keeping one process's copy.
    summed_buffers: tuple[str, ...] = ()
    # True while the data-parallel strategy trains this layer: step hooks that update running state
    # from a batch (a VQ codebook's moving averages) then all-reduce what they read.
    data_parallel = False

    def __init__(self, spec: LayerSpec, input_shape: tuple[int, ...]):
        super().__init__()
        self.spec = spec
        self.name = spec.name
        self.input_shape = tuple(input_shape)
        self.output_shape = self.infer_shape(self.input_shape)
        self.activation = activations.get(spec.activation, self.output_shape[0])
        # batch_norm=True normalises the pre-activation (per channel for images);
        # its running statistics are buffers, so they train, save and load with the weights.
        self.norm = _batch_norm(self.output_shape) if spec.batch_norm else None

    def infer_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Per-example output shape for ``input_shape``."""
        return input_shape

    def reset_parameters(self, generator: torch.Generator) -> None:
        """(Re)initialise parameters from ``generator``; no-op for parameter-free layers."""

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """The pre-activation for a batch ``x`` of shape (n, *input_shape)."""
        return x

    def forward(self, x: torch.Tensor) -> LayerOutput:
        """The :class:`LayerOutput` for a batch ``x`` of shape (n, *input_shape)."""
        pre = self.transform(x)
        if self.norm is not None:
            if self.norm.training and pre.numel() == pre.shape[1]:
                # torch's own message ("Expected more than 1 value per channel") names no layer or remedy.
                raise DataError(
                    f"layer {self.name!r} has batch_norm, which needs at least 2 values per unit "
                    f"in a training batch, but got a batch of 1 example; use a batch_size that "
                    f"leaves no batch of 1 example, or more data"
                )
            pre = self.norm(pre)
        return LayerOutput(pre, self.activation(pre))

    @property
    def has_step_hooks(self) -> bool:
        """True when :meth:`before_step` or :meth:`after_step` does something for this layer."""
        return False

    def before_step(self) -> None:
        """Act on this layer's gradients after backward, before the optimizer step (default: nothing)."""

    def after_step(self) -> None:
        """Act on this layer's parameters and state after the optimizer step (default: nothing)."""

    @property
    def needs_batches_of_two(self) -> bool:
        """True when a training batch of one example has one value per unit of this layer's batch norm."""
        return self.norm is not None and _numel(self.output_shape) == self.output_shape[0]

    def extra_repr(self) -> str:
        """Name, shapes and activation, for ``repr``."""
        return f"{self.name!r}, {self.input_shape} -> {self.output_shape}, activation={self.spec.activation!r}"


def _batch_norm(shape: tuple[int, ...]) -> nn.Module:
    if len(shape) == 3:
        return nn.BatchNorm2d(shape[0])
    return nn.BatchNorm1d(_numel(shape))


def _init_bias(layer: Layer, size: int, generator: torch.Generator) -> torch.Tensor:
    # Biases start at zero unless mean_b / std_b ask otherwise.
    return random_matrix(
        (size,),
        generator,
        mean=layer.spec.init_value("mean", "b", 0.0),
        std=layer.spec.init_value("std", "b", 0.0),
    )


def layer_seed(seed: int, index: int) -> int:
    """A distinct, reproducible seed per layer, so no two layers start alike."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def build_layer(spec: LayerSpec, input_shape: tuple[int, ...], built: dict[str, Layer]) -> Layer:
    """Instantiate the layer class registered for ``spec.form``.

    Parameters
    ----------
    spec : LayerSpec
    input_shape : tuple of int
        Per-example shape of this layer's input.
    built : dict
        Layers built so far by name (tied layers look up their partner here).
    """
    if spec.constraint is not None and (spec.form not in LAYERS or not LAYERS[spec.form].takes_constraints):
        # A tied layer's weight belongs to its partner: constrain the partner instead.
        raise ConfigurationError(
            f"layer {spec.name!r}: constraint={spec.constraint!r} applies to dense layers, not to {spec.form!r} layers"
        )
    if spec.form == "tied":
        if spec.partner not in built:
            raise ConfigurationError(f"tied layer {spec.name!r} names partner {spec.partner!r}, which does not exist")
        partner = built[spec.partner]
        # A partner names the class that mirrors it (dense: Tied, conv layers: TiedConv).
        return partner.tied_class(spec, input_shape, partner)
    if spec.form not in LAYERS:
        raise ConfigurationError(f"layer {spec.name!r}: form {spec.form!r} is not available")
    layer = LAYERS[spec.form](spec, input_shape)
    check_code_size(spec.activation, _numel(layer.output_shape), spec.name)
    return layer


@register("input")
class Input(Layer):
    """The input layer: holds the per-example input shape, no parameters."""

    def __init__(self, spec: LayerSpec, input_shape: tuple[int, ...] | None = None):
        # An input spec has a shape (parse_layers sets it); a damaged config without one raises TypeError here.
        super().__init__(spec, tuple(spec.shape))  # type: ignore[arg-type]
