"""Dense layers: fully connected, tied (sharing a partner's weight), and the shape changers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ...errors import ConfigurationError
from ..constraints import CONSTRAINTS
from ..sparse_decode import SparseCode, SparseDecode, TopKEncode
from ..sparsity import TopK
from ..specs import LayerSpec
from .base import Layer, LayerOutput, _init_bias, _numel, default_std, random_matrix, register

if TYPE_CHECKING:
    from ..sae_recipe import Recipe

__all__ = ["Dense", "Flatten", "Reshape", "Tied"]


def _rows(x: torch.Tensor) -> torch.Tensor:
    """A batch as the (n, n_in) rows a dense weight multiplies: an image batch flattened."""
    return x.flatten(1) if x.dim() > 2 else x


@register("dense")
class Dense(Layer):
    """Fully connected layer: ``pre = x @ w + b`` with ``w`` of shape (n_in, n_out).

    An image-shaped input is flattened first.  ``constraint='unit_norm'`` keeps each
    row of ``w`` at norm 1 (see :mod:`aekit.model.constraints`).
    """

    takes_constraints = True
    # Set when the graph is built, by the SAE recipe (aekit.model.sae_recipe): its resolved parts, and the
    # decoder whose output bias this (code) layer subtracts from its input.
    sae_recipe: Recipe | None = None
    pre_bias_of: tuple[Dense, ...] = ()

    def __init__(self, spec: LayerSpec, input_shape: tuple[int, ...]):
        super().__init__(spec, input_shape)
        self.n_in = _numel(self.input_shape)
        self.n_out = self.output_shape[0]
        self.w = nn.Parameter(torch.empty(self.n_in, self.n_out))
        self.b = nn.Parameter(torch.zeros(self.n_out))
        self.constraint = None if spec.constraint is None else CONSTRAINTS.get(spec.constraint)()

    @property
    def has_step_hooks(self) -> bool:
        """True when a weight constraint acts around each optimizer step, or a dead-latent tracker after it."""
        return self.constraint is not None or "dead_latents" in self._modules

    def before_step(self) -> None:
        """Project the weight's gradient as the constraint asks (after backward, before the update)."""
        if self.constraint is not None:
            self.constraint.project_gradient(self.w)

    def after_step(self) -> None:
        """Put the weight back on the constraint's set (after the update)."""
        if self.constraint is not None:
            self.constraint.apply(self.w)
        tracker = self._modules.get("dead_latents")  # a sparse code's (aekit.model.dead_latents)
        if tracker is not None:
            tracker.commit()  # type: ignore[operator]

    def infer_shape(self, input_shape):
        """The output shape: ``(size,)``, whatever the input's shape.

        Parameters
        ----------
        input_shape : tuple of int
            Per-example shape of the input (an image shape is flattened).

        Returns
        -------
        tuple of int
        """
        return (int(self.spec.size),)

    def reset_parameters(self, generator):
        """Draw ``w`` (n_in, n_out) and ``b`` (n_out,) as the spec's init options ask, then apply the constraint.

        Parameters
        ----------
        generator : torch.Generator
        """
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
        if self.constraint is not None:
            self.constraint.apply(self.w)  # a constrained weight starts on its constraint set

    def transform(self, x):
        """The pre-activation ``x @ w + b``.

        Parameters
        ----------
        x : tensor, shape (n, n_in) or (n, C, H, W)
            An image batch is flattened first.

        Returns
        -------
        tensor, shape (n, n_out)
        """
        return torch.addmm(self.b, self.encoder_input(x), self.w)

    def encoder_input(self, x: torch.Tensor) -> torch.Tensor:
        """The rows this layer multiplies by ``w``: ``x`` (n, n_in), an image batch flattened.

        Both the dense path (:meth:`transform`) and the sparse one (:meth:`encode_sparse`) read
        their input through here, so a shift of the input belongs here.
        """
        x = _rows(x)
        if self.pre_bias_of:  # the SAE recipe's pre-encoder bias: the decoder's output bias, subtracted
            x = x - self.pre_bias_of[0].b
        return x

    # ------------------------------------------------------------------ the sparse path of top-k codes
    @property
    def sparse_k(self) -> int | None:
        """``K`` when this layer can give its code as a :class:`~aekit.model.sparse_decode.SparseCode`.

        That is when its activation is exactly a stateless ``'topk:K'`` and there is no batch
        norm, overridden :meth:`transform` or ``forward``, or summed state; None otherwise (the dense path).
        """
        parts = self.activation.parts
        if self.norm is not None or len(parts) != 1 or not self._plain_forward:
            return None
        module = self.activation.modules_by_part["0"] if "0" in self.activation.modules_by_part else None
        if type(module) is not TopK or next(module.buffers(), None) is not None:
            return None
        return module.k

    @property
    def reads_sparse_codes(self) -> bool:
        """True when :meth:`decode_sparse` gives what :meth:`forward` gives on the dense code."""
        return self.norm is None and self._plain_forward

    @property
    def _plain_forward(self) -> bool:
        # The sparse methods give Layer.forward's values with Dense.transform: a subclass (or a later change)
        # that does more in forward, or that counts per-process state, takes the dense path until it says how.
        cls = type(self)
        return cls.transform is Dense.transform and cls.forward is Layer.forward and not self.summed_buffers

    def encode_sparse(self, x: torch.Tensor) -> tuple[torch.Tensor, SparseCode]:
        """The pre-activation (n, n_out) and the top-``K`` code of ``x`` as its active latents.

        The same values as :meth:`forward` (see :mod:`aekit.model.sparse_decode`).
        """
        k = self.sparse_k
        assert k is not None  # the graph asks only layers that have one
        if self.pre_bias_of:  # the SAE recipe's pre-encoder bias, given apart: its gradient is a matrix-vector product
            values, indices, pre = TopKEncode.apply(_rows(x), self.w, self.b, k, self.pre_bias_of[0].b)
        else:
            values, indices, pre = TopKEncode.apply(self.encoder_input(x), self.w, self.b, k)
        tracker = self._modules.get("dead_latents")  # fed by a forward hook on the dense path
        if tracker is not None and self.training:
            tracker.observe_active(values, indices)  # type: ignore[operator]
        return pre, SparseCode(values, indices, self.n_out)

    def decode_sparse(self, code: SparseCode) -> LayerOutput:
        """What :meth:`forward` returns for ``code.dense()``, from the active latents only."""
        pre = SparseDecode.apply(code.values, code.indices, self.w, self.b)
        return LayerOutput(pre, self.activation(pre))


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
        """The layer whose weight this one shares (held outside the module tree)."""
        return self._partner[0]

    def infer_shape(self, input_shape):
        """The output shape: the partner's input size, ``(n_in,)``.

        Parameters
        ----------
        input_shape : tuple of int
            Per-example shape of the input.

        Returns
        -------
        tuple of int
        """
        partner = self._partner[0]
        size = _numel(partner.input_shape)
        if self.spec.size is not None and self.spec.size != size:
            raise ConfigurationError(
                f"tied layer {self.spec.name!r} has size {self.spec.size}, but its partner "
                f"{partner.name!r} takes {size} inputs"
            )
        return (size,)

    def reset_parameters(self, generator):
        """Draw the bias ``b`` (n_in,) only: the weight is the partner's.

        Parameters
        ----------
        generator : torch.Generator
        """
        with torch.no_grad():
            self.b.copy_(_init_bias(self, self.b.shape[0], generator))

    def transform(self, x):
        """The pre-activation ``x @ w_partner.T + b``.

        Parameters
        ----------
        x : tensor, shape (n, n_out of the partner) or (n, C, H, W)
            An image batch is flattened first.

        Returns
        -------
        tensor, shape (n, n_in of the partner)
        """
        return torch.addmm(self.b, _rows(x), self.partner.w.t())


@register("flatten")
class Flatten(Layer):
    """Flattens (n, C, H, W) to (n, C*H*W)."""

    def infer_shape(self, input_shape):
        """The output shape: ``(C*H*W,)`` for an input of shape ``(C, H, W)``.

        Parameters
        ----------
        input_shape : tuple of int

        Returns
        -------
        tuple of int
        """
        return (_numel(input_shape),)

    def transform(self, x):
        """``x`` flattened to rows.

        Parameters
        ----------
        x : tensor, shape (n, C, H, W)

        Returns
        -------
        tensor, shape (n, C*H*W)
        """
        return x.flatten(1)


@register("reshape")
class Reshape(Layer):
    """Reshapes each example to ``spec.shape`` (e.g. (32, 7, 7))."""

    def infer_shape(self, input_shape):
        """The output shape: the spec's ``shape``, which must hold as many values as ``input_shape``.

        Parameters
        ----------
        input_shape : tuple of int

        Returns
        -------
        tuple of int
        """
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
        """Each example of ``x`` reshaped to the spec's shape.

        Parameters
        ----------
        x : tensor, shape (n, *input_shape)

        Returns
        -------
        tensor, shape (n, *shape)
        """
        return x.reshape(x.shape[0], *self.output_shape)


# Every form a dense 'tied' layer can mirror by default; conv layers name TiedConv instead.
Layer.tied_class = Tied
