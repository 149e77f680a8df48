"""What the units of a layer learned: feature pictures, and the inputs that drive each unit most.

Feature pictures live in the network's input space, i.e. after the model's
``preprocessing`` (a whitened model shows whitened features).

Definitions used by :func:`feature_images`:

* encoder, dense layer reading the input: the input of norm 1 that maximally
  activates unit ``i`` is ``x = W[:, i] / ||W[:, i]||`` (UFLDL, "Visualizing a
  trained autoencoder"), exact for any increasing activation;
* encoder, convolution reading the input: the kernels, each divided by its norm;
* encoder, deeper layers: the maximising input under ``||x|| <= 1`` found by
  projected gradient ascent on the unit's pre-activation (for image-shaped layers,
  the unit is the channel at the centre position);
* decoder: ``decode(e_i) - decode(0)``, the change of the output when unit ``i``
  of the layer goes from 0 to ``scale`` and all other units stay at 0 (for a linear
  decoder this is the unit's column of the decoder weights).

:func:`save_top_inputs` writes its picture as :mod:`aekit.inspect.pictures` describes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..data.validation import integer, number
from ..errors import ConfigurationError
from .pictures import _as_images, _data, _default_zoom, _mosaic_bytes, _picture_format, _write, tile_mosaic

if TYPE_CHECKING:
    from ..autoencoder import Autoencoder

__all__ = ["feature_images", "save_top_inputs", "top_inputs"]


def _layer(net, layer: str | int | None):
    name = net._layer_name(layer, net.graph.hidden_names[0] if net.graph.hidden_names else net.code_layer)
    if name == net.graph.input_name:
        raise ConfigurationError(f"layer {name!r} is the input; pick a hidden or output layer")
    return name, net.graph.layers[name]


def _unit_selector(shape: tuple[int, ...]) -> tuple[int, Callable[[torch.Tensor], torch.Tensor]]:
    """(number of units, function pre -> (n_units,) activations of unit i on example i)."""
    if len(shape) == 1:
        return shape[0], lambda pre: pre.diagonal()
    channels = shape[0]
    centre = tuple(s // 2 for s in shape[1:])
    index = (torch.arange(channels), torch.arange(channels), *centre)
    return channels, lambda pre: pre[index]


def feature_images(
    net: Autoencoder,
    layer: str | int | None = "hid1",
    kind: str = "encoder",
    *,
    method: str = "auto",
    scale: float = 1.0,
    steps: int = 200,
    learning_rate: float = 0.1,
    rng: int = 0,
) -> np.ndarray:
    """Pictures of the features of each unit of ``layer`` (see the module docstring).

    Parameters
    ----------
    net : Autoencoder
    layer : str or int
        A hidden layer (default ``'hid1'``).
    kind : {'encoder', 'decoder'}
        The input that drives the unit most, or what the unit draws at the output.
    method : {'auto', 'analytic', 'ascent'}
        Encoder only: ``'analytic'`` (``W_i / ||W_i||``, dense or conv layers reading
        the input), ``'ascent'`` (projected gradient ascent, any layer); ``'auto'``
        picks analytic when it applies.
    scale : float
        Decoder only: the value given to the unit (0 elsewhere).
    steps, learning_rate, rng
        Gradient ascent: number of steps, step length (input norm units), seed of the start.

    Returns
    -------
    ndarray, float32
        ``(units, H, W)`` for one-channel inputs, ``(units, C, H, W)`` otherwise;
        conv kernels come as ``(out_channels, k, k)`` or ``(out_channels, in_channels, k, k)``.
    """
    if kind not in ("encoder", "decoder"):
        raise ConfigurationError(f"kind must be 'encoder' or 'decoder', got {kind!r}")
    if method not in ("auto", "analytic", "ascent"):
        raise ConfigurationError(f"method must be 'auto', 'analytic' or 'ascent', got {method!r}")
    name, module = _layer(net, layer)
    graph = net.graph
    reads_input = graph.sources.get(name) == graph.input_name
    scale = number("scale", scale, -math.inf, math.inf)
    if kind == "decoder":
        if name == graph.output_name:
            raise ConfigurationError(f"decoder features need a layer before the output, got {name!r}")
        return _decoder_features(net, name, scale)
    weight = getattr(module, "w", None)
    # The weights that are the features themselves: a dense or conv2 layer reading the input.
    filters = (
        weight
        if reads_input and isinstance(weight, torch.nn.Parameter) and module.spec.form in ("dense", "conv2")
        else None
    )
    if method == "analytic" and filters is None:
        raise ConfigurationError(
            f"method='analytic' needs a dense or conv2 layer that reads the input; layer {name!r} "
            f"is a {module.spec.form} layer reading {graph.sources.get(name)!r}; use method='ascent'"
        )
    if filters is not None and method != "ascent":
        w = filters.detach().cpu().double()
        if module.spec.form == "dense":
            cols = w.t()  # (units, n_in): one filter per unit
            norms = cols.norm(dim=1, keepdim=True).clamp_min(1e-12)
            return _as_images((cols / norms).float().numpy(), graph.input_shape)
        # conv2: torch layout (out_ch, in_ch, k, k)
        norms = w.flatten(1).norm(dim=1).clamp_min(1e-12).reshape(-1, *([1] * (w.dim() - 1)))
        kernels = (w / norms).float().numpy()
        return kernels[:, 0] if kernels.shape[1] == 1 else kernels
    return _ascent_features(
        net,
        name,
        integer("steps", steps, 0),
        number("learning_rate", learning_rate, 0, math.inf),
        integer("rng", rng, 0),
    )


def _ascent_features(net, name: str, steps: int, learning_rate: float, rng: int) -> np.ndarray:
    """Projected gradient ascent on each unit's pre-activation under ``||x|| <= 1``.

    Each step moves every example ``learning_rate`` along its normalised gradient,
    then projects back into the unit ball; for a linear unit the angle to the
    optimum shrinks by about ``1 + learning_rate`` per step.
    """
    graph = net.graph
    n_units, select = _unit_selector(graph.layers[name].output_shape)
    generator = torch.Generator().manual_seed(rng)
    start = torch.randn((n_units, *graph.input_shape), generator=generator, dtype=torch.float32)
    x = (0.01 * start).to(net.device)
    was_training = graph.training
    graph.eval()
    expand = (-1, *([1] * len(graph.input_shape)))
    try:
        for _ in range(steps):
            x.requires_grad_(True)
            pre = graph(x, stop=name)[f"{name}:pre"]
            (grad,) = torch.autograd.grad(select(pre).sum(), x)
            with torch.no_grad():
                step = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).reshape(expand)
                x = x.detach() + learning_rate * step
                x = x / x.flatten(1).norm(dim=1).clamp_min(1.0).reshape(expand)
    finally:
        graph.train(was_training)
    return _as_images(x.detach().cpu().numpy(), graph.input_shape)


@torch.no_grad()
def _decoder_features(net, name: str, scale: float) -> np.ndarray:
    graph = net.graph
    shape = graph.layers[name].output_shape
    n_units, _ = _unit_selector(shape)
    codes = torch.zeros((n_units + 1, *shape), device=net.device)
    units = torch.arange(n_units)
    if len(shape) == 1:
        codes[units + 1, units] = float(scale)
    else:
        centre = tuple(s // 2 for s in shape[1:])
        index = (units + 1, units, *centre)
        codes[index] = float(scale)
    was_training = graph.training
    graph.eval()
    try:
        out = graph.run_from(name, codes)[f"{graph.output_name}:out"].cpu().double()
    finally:
        graph.train(was_training)
    drawn = (out[1:] - out[:1]).float().numpy()
    out_shape = graph.layers[graph.output_name].output_shape
    target = graph.input_shape if math.prod(out_shape) == math.prod(graph.input_shape) else out_shape
    return _as_images(drawn.reshape(n_units, -1), target)


def top_inputs(net: Autoencoder, x: Any, layer: str | int | None = None, k: int = 8) -> np.ndarray:
    """Indices of the ``k`` rows of ``x`` that activate each unit most, best first.

    Returns
    -------
    ndarray of int, shape (units, k)
        Image-shaped layers rank by the channel's mean activation.
    """
    h = net.encode(_data(net, x), layer=layer)
    h = h.reshape(h.shape[0], h.shape[1], -1).mean(axis=2) if h.ndim > 2 else h
    k = min(integer("k", k, 1), h.shape[0])
    order = np.argsort(-np.nan_to_num(h, nan=-np.inf), axis=0, kind="stable")[:k]
    return order.T.copy()


def save_top_inputs(
    net: Autoencoder,
    x: Any,
    path: str | os.PathLike,
    layer: str | int | None = None,
    k: int = 8,
    max_units: int = 16,
) -> str:
    """A picture with one row per unit: the ``k`` inputs that activate it most.

    All tiles share one grey scale, the min and max of ``x``.

    Returns
    -------
    str
        ``path``; the grid has ``min(units, max_units)`` rows and ``k`` columns.
    """
    fmt = _picture_format(path)
    data = _data(net, x)
    index = top_inputs(net, data, layer=layer, k=k)[: integer("max_units", max_units, 1)]
    flat = data.reshape(len(data), -1)
    picks = flat[index.ravel()]
    low, high = float(np.nanmin(flat)), float(np.nanmax(flat))
    scaled = (picks - low) / (high - low if high > low else 1.0)
    images = _as_images(scaled, net.graph.input_shape)
    zoom = _default_zoom(images)
    return _write(path, _mosaic_bytes(tile_mosaic(images, index.shape[1], 1, None), zoom, fmt))
