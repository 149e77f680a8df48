"""Image layers: convolution, transposed convolution, pooling, upsampling, tied convolution.

Every layer here takes and gives per-example image shapes ``(C, H, W)``.

Padding (``padding=``) is ``'same'`` by default, TensorFlow's rule, so that a
mirrored spec lines up:

* a stride-``s`` ``conv2`` or ``pool`` maps ``H`` to ``ceil(H / s)``;
* a stride-``s`` ``deconv2`` maps ``H`` to ``H * s`` (or to the ``shape`` given in
  its spec, any size whose ``ceil(size / s)`` is ``H``, for odd sizes such as 7);
* a ``tied`` layer after a ``conv2`` maps back to exactly the conv's input shape.

``'valid'`` (no padding) and a non-negative int (the same padding on every side)
are accepted too.  'same' padding that is odd puts the extra row at the end.

Parameter layouts follow torch:

* ``conv2`` ``w``: ``(out_channels, in_channels, k, k)``, ``b``: ``(out_channels,)``;
* ``deconv2`` ``w``: ``(in_channels, out_channels, k, k)``, ``b``: ``(out_channels,)``;
* a tied layer owns only ``b``; it reuses its partner's ``w`` (same storage),
  running the adjoint (transpose) of the partner's linear map.

The maths is in the pure functions :func:`conv_same` and :func:`deconv_same`; the
layer classes hold parameters and shapes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigurationError, unknown_name_error
from ..specs import LayerSpec
from .base import Layer, _init_bias, default_std, random_matrix, register
from .dense import Tied

__all__ = ["Conv2", "Deconv2", "Pool", "TiedConv", "Upsample", "conv_same", "deconv_same"]

Pads = tuple[int, int, int, int]  # F.pad order: (left, right, top, bottom)


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    """``t`` (an image batch or a kernel) in channels-last memory order (NHWC).

    NHWC is the order oneDNN's convolutions work in.

    In NCHW every convolution and its backward pass reorder their operands; in
    NHWC the outputs stay NHWC from layer to layer and the reorders go away.
    A no-op for a tensor already in that order, such as the previous layer's
    output.  With one channel both orders look contiguous, and a convolution
    would pick NCHW: the copy sets the strides explicitly.
    """
    if t.stride(1) == 1 and t.is_contiguous(memory_format=torch.channels_last):
        return t
    try:
        return torch.empty_like(t, memory_format=torch.channels_last).copy_(t)
    except RuntimeError:
        # Inside torch.func's vmap (the contractive penalty's per-example Jacobians) a batched
        # tensor has no channels-last layout: the convolution takes it as it is.
        return t


def conv_same(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, stride: int, pads: Pads) -> torch.Tensor:
    """Zero-pad ``x`` by ``pads`` then convolve.

    Parameters
    ----------
    x : tensor, shape (n, C_in, H, W)
    w : tensor, shape (C_out, C_in, k, k)
    b : tensor, shape (C_out,), or None
    stride : int
    pads : (left, right, top, bottom)
        Negative values crop (used by tied layers mirroring a transposed conv).

    Returns
    -------
    tensor, shape (n, C_out, H_out, W_out)
    """
    x = _channels_last(x)
    left, right, top, bottom = pads
    if stride > 1 and w.shape[2:] == (1, 1):
        # A strided 1x1 kernel reads every stride-th pixel: take those, then convolve with stride 1.
        # The same sums; and oneDNN's own strided 1x1 weight gradient on NHWC input corrupted the
        # heap in torch 2.13 (one thread, few channels), which this path never calls.
        if any(pads):
            x = F.pad(x, pads)
        return F.conv2d(x[:, :, ::stride, ::stride], _channels_last(w), b)
    if left == right >= 0 and top == bottom >= 0:
        # Symmetric: the convolution pads by itself, without a padded copy of x.
        return F.conv2d(x, _channels_last(w), b, stride=stride, padding=(top, left))
    return F.conv2d(F.pad(x, pads), _channels_last(w), b, stride=stride)


def deconv_same(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None,
    stride: int,
    crop: tuple[int, int],
    out_hw: tuple[int, int],
) -> torch.Tensor:
    """Transposed convolution, cropped (or zero-extended) to exactly ``out_hw``.

    The full transposed convolution has size ``(H - 1) * stride + k``; the first
    ``crop`` rows/columns are dropped (the partner conv's leading padding) and the
    result is cut or zero-extended at the end to ``out_hw``.  This is the exact
    adjoint of :func:`conv_same` with leading padding ``crop``.

    Parameters
    ----------
    x : tensor, shape (n, C_in, H, W)
    w : tensor, shape (C_in, C_out, k, k)
    b : tensor, shape (C_out,), or None
    crop : (top, left)
    out_hw : (H_out, W_out)

    Returns
    -------
    tensor, shape (n, C_out, H_out, W_out)
    """
    x = _channels_last(x)
    (top, left), (out_h, out_w) = crop, out_hw
    k_h, k_w = w.shape[2:]
    full_h, full_w = (x.shape[2] - 1) * stride + k_h, (x.shape[3] - 1) * stride + k_w
    if top + out_h <= full_h and left + out_w <= full_w and top >= 0 and left >= 0:
        # A crop only (the usual case): the bias goes into the kernel's own pass, and the crop
        # is a view, with no padded copy and no separate pass to add the bias.
        full = F.conv_transpose2d(x, _channels_last(w), b, stride=stride)
        return full[:, :, top : top + out_h, left : left + out_w]
    full = F.conv_transpose2d(x, _channels_last(w), None, stride=stride)
    full = F.pad(full, (-left, out_w + left - full_w, -top, out_h + top - full_h))
    if b is not None:  # after the zero extension: the extended border gets the bias too
        full = full + b.view(1, -1, 1, 1)
    return full


def _padding(spec: LayerSpec) -> str | int:
    padding = spec.padding
    if isinstance(padding, str) and padding.lower() in ("same", "valid"):
        return padding.lower()
    if hasattr(padding, "__index__") and not isinstance(padding, bool) and int(padding) >= 0:
        return int(padding)
    raise ConfigurationError(
        f"layer {spec.name!r}: padding must be 'same', 'valid' or a non-negative int, got {padding!r}"
    )


def _forward_size(size: int, k: int, s: int, padding: str | int, name: str) -> tuple[int, int, int]:
    """Output size and (leading, trailing) padding of a conv/pool along one axis."""
    if padding == "same":
        out = -(-size // s)
        total = max((out - 1) * s + k - size, 0)
        return out, total // 2, total - total // 2
    pad = 0 if padding == "valid" else int(padding)
    out = (size + 2 * pad - k) // s + 1
    if out < 1:
        raise ConfigurationError(
            f"layer {name!r}: kernel {k} with padding {padding!r} does not fit an input of size {size}"
        )
    return out, pad, pad


def _image_shape(spec: LayerSpec, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ConfigurationError(
            f"{spec.form} layer {spec.name!r} needs an image input shaped (C, H, W), got {tuple(input_shape)}; "
            "declare the input as e.g. (1, 28, 28) or add dict(form='reshape', shape=(C, H, W)) before it"
        )
    return tuple(int(v) for v in input_shape)  # type: ignore[return-value]


def _channels(spec: LayerSpec) -> int:
    if spec.channels is None:
        raise ConfigurationError(
            f"{spec.form} layer {spec.name!r} needs channels=, e.g. dict(form={spec.form!r}, channels=16)"
        )
    return int(spec.channels)


def _fill_weight(layer: Layer, w: nn.Parameter, fan_in: float, fan_out: float, generator: torch.Generator) -> None:
    spec = layer.spec
    std = spec.init_value("std", "w", default_std(spec.activation, max(fan_in, 1.0), max(fan_out, 1.0)))
    with torch.no_grad():
        w.copy_(
            random_matrix(
                tuple(w.shape),
                generator,
                mean=spec.init_value("mean", "w", 0.0),
                std=std,
                sparsity=spec.init_value("sparsity", "w", 0.0),
            )
        )


class _Kernel(Layer):
    """Common repr for the layers with a kernel."""

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, kernel={self.spec.kernel}, stride={self.spec.stride}"


@register("conv2")
class Conv2(_Kernel):
    """2-D convolution: ``w`` (C_out, C_in, k, k), ``b`` (C_out,); input (C_in, H, W)."""

    def __init__(self, spec: LayerSpec, input_shape: tuple[int, ...]):
        super().__init__(spec, input_shape)
        c_in, c_out, k = self.input_shape[0], self.output_shape[0], spec.kernel
        self.w = nn.Parameter(torch.empty(c_out, c_in, k, k))
        self.b = nn.Parameter(torch.zeros(c_out))

    def infer_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The output shape under the spec's padding; records the pads the convolution applies.

        Parameters
        ----------
        input_shape : tuple of int
            Per-example input shape ``(C_in, H, W)``.

        Returns
        -------
        tuple of int
            ``(C_out, ceil(H / stride), ceil(W / stride))`` for 'same' padding.
        """
        spec = self.spec
        _, h, w = _image_shape(spec, input_shape)
        padding = _padding(spec)
        out_h, top, bottom = _forward_size(h, spec.kernel, spec.stride, padding, spec.name)
        out_w, left, right = _forward_size(w, spec.kernel, spec.stride, padding, spec.name)
        self.pads: Pads = (left, right, top, bottom)
        return (_channels(spec), out_h, out_w)

    def reset_parameters(self, generator):
        """Draw ``w`` (C_out, C_in, k, k) and ``b`` (C_out,).

        ``w`` has He or Glorot scaling over the fans unless the spec's init options say otherwise.

        Parameters
        ----------
        generator : torch.Generator
        """
        c_out, c_in, k, _ = self.w.shape
        s2 = self.spec.stride**2
        _fill_weight(self, self.w, c_in * k * k, c_out * k * k / s2, generator)
        with torch.no_grad():
            self.b.copy_(_init_bias(self, c_out, generator))

    def transform(self, x):
        """The convolution of ``x`` with ``w``, plus ``b`` (:func:`conv_same`).

        Parameters
        ----------
        x : tensor, shape (n, C_in, H, W)

        Returns
        -------
        tensor, shape (n, *output_shape)
        """
        return conv_same(x, self.w, self.b, self.spec.stride, self.pads)


@register("deconv2")
class Deconv2(_Kernel):
    """Transposed 2-D convolution: ``w`` (C_in, C_out, k, k), ``b`` (C_out,).

    With ``padding='same'`` the output is ``H * stride``, or the spec's ``shape``
    (``(C, H, W)`` or ``(H, W)``) when given, e.g. 7 from 4 with stride 2.
    """

    def __init__(self, spec: LayerSpec, input_shape: tuple[int, ...]):
        super().__init__(spec, input_shape)
        c_in, c_out, k = self.input_shape[0], self.output_shape[0], spec.kernel
        self.w = nn.Parameter(torch.empty(c_in, c_out, k, k))
        self.b = nn.Parameter(torch.zeros(c_out))

    def infer_shape(self, input_shape):
        """The output shape under the spec's padding (or its ``shape``); records the crop.

        Parameters
        ----------
        input_shape : tuple of int
            Per-example input shape ``(C_in, H, W)``.

        Returns
        -------
        tuple of int
            ``(C_out, H * stride, W * stride)`` for 'same' padding without a ``shape``.
        """
        spec = self.spec
        _, h, w = _image_shape(spec, input_shape)
        k, s, padding = spec.kernel, spec.stride, _padding(spec)
        channels = _channels(spec)
        target = None
        if spec.shape is not None:
            if len(spec.shape) not in (2, 3) or (len(spec.shape) == 3 and spec.shape[0] != channels):
                raise ConfigurationError(
                    f"deconv2 layer {spec.name!r}: shape must be (H, W) or ({channels}, H, W), got {tuple(spec.shape)}"
                )
            target = tuple(spec.shape[-2:])
        sizes, crops = [], []
        for axis, size in enumerate((h, w)):
            if padding == "same":
                out = target[axis] if target else size * s
                back, lead, _ = _forward_size(out, k, s, "same", spec.name)
                if back != size:
                    raise ConfigurationError(
                        f"deconv2 layer {spec.name!r} with stride {s} cannot map size {size} to {out} "
                        f"(a stride-{s} conv maps {out} to {back})"
                    )
            else:
                lead = 0 if padding == "valid" else int(padding)
                out = (size - 1) * s + k - 2 * lead
                if target and target[axis] != out:
                    raise ConfigurationError(
                        f"deconv2 layer {spec.name!r} with padding {padding!r} gives size {out}, "
                        f"but its shape asks for {target[axis]}"
                    )
                if out < 1:
                    raise ConfigurationError(f"deconv2 layer {spec.name!r}: padding {padding!r} leaves no output")
            sizes.append(out)
            crops.append(lead)
        self.crop = (crops[0], crops[1])
        return (channels, sizes[0], sizes[1])

    def reset_parameters(self, generator):
        """Draw ``w`` (C_in, C_out, k, k) and ``b`` (C_out,).

        ``w`` has He or Glorot scaling over the fans unless the spec's init options say otherwise.

        Parameters
        ----------
        generator : torch.Generator
        """
        c_in, c_out, k, _ = self.w.shape
        s2 = self.spec.stride**2
        _fill_weight(self, self.w, c_in * k * k / s2, c_out * k * k, generator)
        with torch.no_grad():
            self.b.copy_(_init_bias(self, c_out, generator))

    def transform(self, x):
        """The transposed convolution of ``x`` with ``w``, plus ``b`` (:func:`deconv_same`).

        Parameters
        ----------
        x : tensor, shape (n, C_in, H, W)

        Returns
        -------
        tensor, shape (n, *output_shape)
        """
        return deconv_same(x, self.w, self.b, self.spec.stride, self.crop, self.output_shape[1:])


class TiedConv(Tied):
    """Decoder layer that runs the adjoint of a ``conv2`` (or ``deconv2``) partner with its kernel.

    After a ``conv2`` it is a transposed convolution back to exactly the conv's
    input shape; after a ``deconv2`` it is a convolution back to the deconv's
    input shape.  It owns only a bias ``b`` (one per output channel); ``w`` is the
    partner's parameter itself (shared storage, gradients from both uses add up).
    """

    def check_partner_output(self, partner: Layer) -> None:
        """Raise unless this layer's input shape is exactly the partner's output shape.

        Parameters
        ----------
        partner : Layer
            The ``conv2`` or ``deconv2`` layer whose kernel this one shares.

        Raises
        ------
        ConfigurationError
            Naming both shapes.
        """
        if tuple(self.input_shape) != tuple(partner.output_shape):
            raise ConfigurationError(
                f"tied layer {self.spec.name!r} takes input of shape {tuple(self.input_shape)}, but its partner "
                f"{partner.name!r} gives {tuple(partner.output_shape)}"
            )

    def infer_shape(self, input_shape):
        """The output shape: the partner's input shape, checked against the spec's ``channels`` and ``size``.

        Parameters
        ----------
        input_shape : tuple of int
            Per-example input shape ``(C_in, H, W)``, the partner's output shape.

        Returns
        -------
        tuple of int
            ``partner.input_shape``.
        """
        partner = self._partner[0]
        shape = tuple(partner.input_shape)
        if self.spec.channels is not None and self.spec.channels != shape[0]:
            raise ConfigurationError(
                f"tied layer {self.spec.name!r} has channels={self.spec.channels}, but its partner "
                f"{partner.name!r} takes {shape[0]} channels"
            )
        if self.spec.size is not None and self.spec.size != math.prod(shape):
            raise ConfigurationError(
                f"tied layer {self.spec.name!r} has size {self.spec.size}, but its partner "
                f"{partner.name!r} takes input of shape {shape} ({math.prod(shape)} values)"
            )
        return shape

    def transform(self, x):
        """The adjoint of the partner's convolution (or transposed convolution) applied to ``x``, plus ``b``.

        Parameters
        ----------
        x : tensor, shape (n, *partner.output_shape)

        Returns
        -------
        tensor, shape (n, *partner.input_shape)
        """
        partner = self.partner
        stride = partner.spec.stride
        if isinstance(partner, Conv2):
            left, _, top, _ = partner.pads
            return deconv_same(x, partner.w, self.b, stride, (top, left), self.output_shape[1:])
        # Adjoint of a cropped transposed conv: re-pad to the full size, then convolve.
        k = partner.w.shape[2]
        top, left = partner.crop
        full_h = (self.output_shape[1] - 1) * stride + k
        full_w = (self.output_shape[2] - 1) * stride + k
        pads = (left, full_w - left - x.shape[3], top, full_h - top - x.shape[2])
        return conv_same(x, partner.w, self.b, stride, pads)

    def extra_repr(self) -> str:
        """The layer's summary and its partner's name, for ``repr``."""
        return f"{super().extra_repr()}, partner={self.partner.name!r}"


# A tied layer after a conv2 or deconv2 runs its adjoint (dense partners get Tied, set in dense.py).
Conv2.tied_class = Deconv2.tied_class = TiedConv


@register("pool")
class Pool(Layer):
    """Max or average pooling over ``kernel`` x ``kernel`` windows.

    The kernel defaults to 2 and the stride to the kernel, so ``dict(form='pool')``
    halves H and W; average pooling counts only real (unpadded) pixels.
    """

    MODES = ("max", "avg")

    def infer_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The output shape; checks the mode and records the stride and the pads.

        Parameters
        ----------
        input_shape : tuple of int
            Per-example input shape ``(C_in, H, W)``.

        Returns
        -------
        tuple of int
            ``(C, ceil(H / stride), ceil(W / stride))`` for 'same' padding.
        """
        spec = self.spec
        if spec.mode not in self.MODES:
            raise unknown_name_error(f"pooling mode of layer {spec.name!r}", str(spec.mode), self.MODES)
        c, h, w = _image_shape(spec, input_shape)
        self.stride = spec.stride if spec.stride != 1 else spec.kernel
        padding = _padding(spec)
        out_h, top, bottom = _forward_size(h, spec.kernel, self.stride, padding, spec.name)
        out_w, left, right = _forward_size(w, spec.kernel, self.stride, padding, spec.name)
        self.pads: Pads = (left, right, top, bottom)
        return (c, out_h, out_w)

    def transform(self, x):
        """Max or average pooling of ``x``; an average counts only real (unpadded) pixels.

        Parameters
        ----------
        x : tensor, shape (n, C, H, W)

        Returns
        -------
        tensor, shape (n, *output_shape)
        """
        k, s = self.spec.kernel, self.stride
        if self.spec.mode == "max":
            if any(self.pads):
                x = F.pad(x, self.pads, value=-math.inf)
            return F.max_pool2d(x, k, s)
        if not any(self.pads):
            return F.avg_pool2d(x, k, s)
        total = F.avg_pool2d(F.pad(x, self.pads), k, s)
        ones = torch.ones(1, 1, *x.shape[2:], dtype=x.dtype, device=x.device)
        return total / F.avg_pool2d(F.pad(ones, self.pads), k, s)

    def extra_repr(self) -> str:
        """The layer's summary with its mode, kernel and stride, for ``repr``."""
        return f"{super().extra_repr()}, mode={self.spec.mode!r}, kernel={self.spec.kernel}, stride={self.stride}"


@register("upsample")
class Upsample(Layer):
    """Repeats each pixel ``scale`` times along H and W (``mode='bilinear'`` interpolates)."""

    MODES = ("nearest", "bilinear")

    def infer_shape(self, input_shape):
        """The output shape; checks and records the mode (``'nearest'`` unless the spec says ``'bilinear'``).

        Parameters
        ----------
        input_shape : tuple of int
            Per-example input shape ``(C_in, H, W)``.

        Returns
        -------
        tuple of int
            ``(C, H * scale, W * scale)``.
        """
        spec = self.spec
        self.mode = "nearest" if spec.mode == "max" else spec.mode  # 'max' is the spec default
        if self.mode not in self.MODES:
            raise unknown_name_error(f"upsampling mode of layer {spec.name!r}", str(spec.mode), self.MODES)
        c, h, w = _image_shape(spec, input_shape)
        return (c, h * spec.scale, w * spec.scale)

    def transform(self, x):
        """``x`` upsampled by ``scale`` along H and W.

        Parameters
        ----------
        x : tensor, shape (n, C, H, W)

        Returns
        -------
        tensor, shape (n, C, H * scale, W * scale)
        """
        if self.mode == "nearest":
            return F.interpolate(x, scale_factor=self.spec.scale, mode="nearest")
        return F.interpolate(x, scale_factor=self.spec.scale, mode="bilinear", align_corners=False)

    def extra_repr(self) -> str:
        """The layer's summary with its scale and mode, for ``repr``."""
        return f"{super().extra_repr()}, scale={self.spec.scale}, mode={self.mode!r}"
