"""Layers: thin ``nn.Module`` shells that hold parameters and know their shapes.

Each layer maps a batch to ``(pre, out)``: the pre-activation and the activated
output, so the network can expose both as ``'name:pre'`` and ``'name:out'``.
Parameters are named ``w`` and ``b``; a dense ``w`` has shape ``(n_in, n_out)``
as in theanets.  Initialisation is its own method (:meth:`Layer.reset_parameters`).

New forms register themselves in :data:`LAYER_CLASSES` with :func:`register`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ...errors import ConfigurationError, DataError
from .. import activations
from ..specs import LayerSpec

__all__ = ["LAYER_CLASSES", "Dense", "Flatten", "Layer", "Reshape", "Tied", "build_layer", "register"]

LAYER_CLASSES: dict[str, type[Layer]] = {}


def register(form: str):
    """Class decorator: make ``form`` in layer specs build this class."""

    def wrap(cls):
        LAYER_CLASSES[form] = cls
        cls.form = form
        return cls

    return wrap


def _numel(shape: tuple[int, ...]) -> int:
    return int(math.prod(shape))


def default_std(activation: str, fan_in: int, fan_out: int) -> float:
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

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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
        return pre, self.activation(pre)

    @property
    def needs_batches_of_two(self) -> bool:
        """True when a training batch of one example has one value per unit of this layer's batch norm."""
        return self.norm is not None and _numel(self.output_shape) == self.output_shape[0]

    def extra_repr(self) -> str:
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


@register("dense")
class Dense(Layer):
    """Fully connected layer: ``pre = x @ w + b`` with ``w`` of shape (n_in, n_out).

    An image-shaped input is flattened first.
    """

    def __init__(self, spec: LayerSpec, input_shape: tuple[int, ...]):
        super().__init__(spec, input_shape)
        self.n_in = _numel(self.input_shape)
        self.n_out = self.output_shape[0]
        self.w = nn.Parameter(torch.empty(self.n_in, self.n_out))
        self.b = nn.Parameter(torch.zeros(self.n_out))

    def infer_shape(self, input_shape):
        return (int(self.spec.size),)

    def reset_parameters(self, generator):
        std = self.spec.init_value("std", "w", default_std(self.spec.activation, self.n_in, self.n_out))
        with torch.no_grad():
            self.w.copy_(
                random_matrix(
                    (self.n_in, self.n_out),
                    generator,
                    mean=self.spec.init_value("mean", "w", 0.0),
                    std=std,
                    sparsity=self.spec.init_value("sparsity", "w", 0.0),
                    diagonal=self.spec.init_value("diagonal", "w", None),
                )
            )
            self.b.copy_(_init_bias(self, self.n_out, generator))

    def transform(self, x):
        if x.dim() > 2:
            x = x.flatten(1)
        return torch.addmm(self.b, x, self.w)


@register("tied")
class Tied(Layer):
    """Decoder layer that reuses its partner's weight, transposed: ``pre = x @ w_partner.T + b``.

    The partner is held outside the module tree, so its weight is shared (never
    copied) and counted once in ``parameters()``.
    """

    def __init__(self, spec: LayerSpec, input_shape: tuple[int, ...], partner: Layer):
        self._partner = (partner,)  # a tuple hides it from nn.Module registration
        super().__init__(spec, input_shape)
        if not hasattr(partner, "w"):
            raise ConfigurationError(f"tied layer {spec.name!r} needs a partner with weights, got {partner.name!r}")
        self.check_partner_output(partner)
        self.b = nn.Parameter(torch.zeros(self.output_shape[0]))

    def check_partner_output(self, partner: Layer) -> None:
        """Raise unless this layer's input is what ``partner`` produces (a size check for dense)."""
        if _numel(self.input_shape) != _numel(partner.output_shape):
            raise ConfigurationError(
                f"tied layer {self.spec.name!r} takes {_numel(self.input_shape)} inputs, but its partner "
                f"{partner.name!r} has {partner.output_shape[0]} outputs"
            )

    @property
    def partner(self) -> Layer:
        return self._partner[0]

    def infer_shape(self, input_shape):
        partner = self._partner[0]
        size = _numel(partner.input_shape)
        if self.spec.size is not None and self.spec.size != size:
            raise ConfigurationError(
                f"tied layer {self.spec.name!r} has size {self.spec.size}, but its partner "
                f"{partner.name!r} takes {size} inputs"
            )
        return (size,)

    def reset_parameters(self, generator):
        with torch.no_grad():
            self.b.copy_(_init_bias(self, self.b.shape[0], generator))

    def transform(self, x):
        if x.dim() > 2:
            x = x.flatten(1)
        return torch.addmm(self.b, x, self.partner.w.t())


@register("flatten")
class Flatten(Layer):
    """Flattens (n, C, H, W) to (n, C*H*W)."""

    def infer_shape(self, input_shape):
        return (_numel(input_shape),)

    def transform(self, x):
        return x.flatten(1)


@register("reshape")
class Reshape(Layer):
    """Reshapes each example to ``spec.shape`` (e.g. (32, 7, 7))."""

    def infer_shape(self, input_shape):
        shape = self.spec.shape
        if shape is None:
            raise ConfigurationError(f"reshape layer {self.spec.name!r} needs a shape")
        if _numel(shape) != _numel(input_shape):
            raise ConfigurationError(
                f"reshape layer {self.spec.name!r} cannot reshape {input_shape} "
                f"({_numel(input_shape)} values) to {tuple(shape)} ({_numel(shape)} values)"
            )
        return tuple(shape)

    def transform(self, x):
        return x.reshape(x.shape[0], *self.output_shape)


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
    if spec.form == "tied":
        if spec.partner not in built:
            raise ConfigurationError(f"tied layer {spec.name!r} names partner {spec.partner!r}, which does not exist")
        partner = built[spec.partner]
        # A partner names the class that mirrors it (conv layers: TiedConv).
        return getattr(partner, "tied_class", Tied)(spec, input_shape, partner)
    cls = LAYER_CLASSES.get(spec.form)
    if cls is None:
        raise ConfigurationError(f"layer {spec.name!r}: form {spec.form!r} is not available")
    return cls(spec, input_shape)


@register("input")
class Input(Layer):
    """The input layer: holds the per-example input shape, no parameters."""

    def __init__(self, spec: LayerSpec, input_shape: tuple[int, ...] | None = None):
        super().__init__(spec, tuple(spec.shape))


# The image layers live in their own module and register themselves here.
from . import conv as _conv  # noqa: E402,F401  (import for its side effect: fills LAYER_CLASSES)
