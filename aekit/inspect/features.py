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

:func:`save_features` and :func:`save_top_inputs` write their pictures as
:mod:`aekit.inspect.pictures` describes, as labelled grids (:mod:`aekit.inspect.grids`): every
tile or row names its unit, units that are dead over the data given (constant output,
:func:`aekit.inspect.measures.dead_units`) are greyed out and marked "dead", and the title says
how many units are shown ("first 16 of 32 units") and how many are dead.
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
from .measures import MAX_SAMPLES, dead_units, sample_rows
from .pictures import _as_images, _data, _labelled_bytes, _normalise_tiles, _picture_format, _prepare_tiles, _write

if TYPE_CHECKING:
    from ..autoencoder import Autoencoder

__all__ = ["feature_images", "save_features", "save_top_inputs", "top_inputs"]


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
    # The weights that are the features themselves: a dense or conv2 layer reading the input (a flat
    # gaussian layer's ``w`` is its mean head, a dense weight).
    dense = module.spec.form == "dense" or (module.spec.form == "gaussian" and len(module.output_shape) == 1)
    filters = (
        weight
        if reads_input and isinstance(weight, torch.nn.Parameter) and (dense or module.spec.form == "conv2")
        else None
    )
    if method == "analytic" and filters is None:
        raise ConfigurationError(
            f"method='analytic' needs a dense or conv2 layer that reads the input; layer {name!r} "
            f"is a {module.spec.form} layer reading {graph.sources.get(name)!r}; use method='ascent'"
        )
    if filters is not None and method != "ascent":
        w = filters.detach().cpu().double()
        if dense:
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
    return _rank(net.encode(_data(net, x), layer=layer), k)


def _rank(h: np.ndarray, k: int) -> np.ndarray:
    h = h.reshape(h.shape[0], h.shape[1], -1).mean(axis=2) if h.ndim > 2 else h
    k = min(integer("k", k, 1), h.shape[0])
    order = np.argsort(-np.nan_to_num(h, nan=-np.inf), axis=0, kind="stable")[:k]
    return order.T.copy()


def _shown(units: int, max_units: int) -> str:
    return f"all {units} units" if units <= max_units else f"first {max_units} of {units} units"


def _dead_over(net, x: Any, name: str, max_samples: int) -> tuple[np.ndarray, int]:
    """The dead units of layer ``name`` over at most ``max_samples`` evenly spaced rows of ``x``; the rows used."""
    data = _data(net, x)
    rows = data[sample_rows(len(data), max_samples)]
    return dead_units(net.encode(rows, layer=name)), len(rows)


def _dead_note(dead: np.ndarray | None, rows: int) -> str:
    if dead is None:
        return ""
    count = int(dead.sum())
    if count == 0:
        return f"; none dead over {rows} rows"
    return f"; {count} of {dead.size} dead over {rows} rows (greyed)"


def _grey_tiles(images: np.ndarray) -> np.ndarray:
    """Images in [0, 1] as grid tiles: (n, H, W), or (n, H, W, 3) for RGB; other channel counts averaged."""
    if images.ndim == 4:
        return images.transpose(0, 2, 3, 1) if images.shape[1] == 3 else images.mean(axis=1)
    return images


def save_features(
    net: Autoencoder,
    path: str | os.PathLike,
    layer: str | int | None = None,
    kind: str = "encoder",
    x: Any = None,
    *,
    max_units: int = 256,
    n_cols: int | None = None,
    zoom: int | None = None,
    normalize: str | None = "tile",
    max_samples: int = MAX_SAMPLES,
    **options: Any,
) -> str:
    """A labelled picture of the features of each unit of ``layer`` (:func:`feature_images`).

    Every tile is labelled with its unit's index; with data ``x``, units whose output is
    constant over it are greyed out and marked "dead" (their features are not features).
    The title says which layer, how many units are shown and how many are dead.

    Parameters
    ----------
    net : Autoencoder
    path : str or path
        Its suffix picks the format.
    layer : str or int, optional
        Default: the first hidden layer for ``kind='encoder'``, the code layer for ``'decoder'``.
    kind : {'encoder', 'decoder'}
    x : array-like, optional
        Data to find the dead units on (at most ``max_samples`` evenly spaced rows, as
        :func:`aekit.diagnose`).
    max_units : int
        Draw the first ``max_units`` units (default 256); the title says when some are left out.
    n_cols, zoom, normalize
        As :func:`~aekit.inspect.pictures.save_tiles`.
    **options
        Passed to :func:`feature_images` (``method``, ``scale``, ...).

    Returns
    -------
    str
        ``path``.
    """
    fmt = _picture_format(path)
    max_units = integer("max_units", max_units, 1)
    max_samples = integer("max_samples", max_samples, 2)
    if layer is None:
        hidden = net.graph.hidden_names
        layer = net.code_layer if kind == "decoder" or not hidden else hidden[0]
    name, _ = _layer(net, layer)
    feats = feature_images(net, name, kind, **options)
    units = feats.shape[0]
    dead, rows = _dead_over(net, x, name, max_samples) if x is not None else (None, 0)
    shown = feats[:max_units]
    tiles = _prepare_tiles(shown)
    per_unit = tiles.shape[0] // shown.shape[0]  # conv kernels over several input channels: a tile each
    unit_of = np.repeat(np.arange(shown.shape[0]), per_unit)
    labels = [
        str(u) if per_unit == 1 else f"{u}.{c}" for u, c in zip(unit_of, np.tile(np.arange(per_unit), len(shown)))
    ]
    mask = None
    if dead is not None:
        mask = dead[unit_of]
        labels = [f"{label} dead" if is_dead else label for label, is_dead in zip(labels, mask)]
    title = f"{kind} features of {name!r}: {_shown(units, max_units)}{_dead_note(dead, rows)}"
    grid = _grey_tiles(_normalise_tiles(tiles, normalize))
    return _write(path, _labelled_bytes(grid, fmt, n_cols=n_cols, zoom=zoom, labels=labels, dead=mask, title=title))


def save_top_inputs(
    net: Autoencoder,
    x: Any,
    path: str | os.PathLike,
    layer: str | int | None = None,
    k: int = 8,
    max_units: int = 16,
    zoom: int | None = None,
) -> str:
    """A picture with one row per unit: the ``k`` inputs that activate it most, best first.

    All tiles share one grey scale, the min and max of ``x``.  Each row is labelled with its
    unit; the rows of units that are dead over ``x`` (constant output: their "top" inputs are
    arbitrary) are greyed out and marked "dead"; the title says how many units are shown.

    Returns
    -------
    str
        ``path``; the grid has ``min(units, max_units)`` rows and ``k`` columns.
    """
    fmt = _picture_format(path)
    data = _data(net, x)
    max_units = integer("max_units", max_units, 1)
    name = net._layer_name(layer, net.code_layer)
    h = net.encode(data, layer=name)
    dead = dead_units(h)
    index = _rank(h, k)
    units, k = index.shape
    index = index[:max_units]
    flat = data.reshape(len(data), -1)
    picks = flat[index.ravel()]
    low, high = float(np.nanmin(flat)), float(np.nanmax(flat))
    scaled = (picks - low) / (high - low if high > low else 1.0)
    images = _grey_tiles(_as_images(scaled, net.graph.input_shape))
    shown = dead[: len(index)]
    row_labels = [f"unit {u} dead" if shown[u] else f"unit {u}" for u in range(len(index))]
    title = f"top {k} inputs of {name!r}, best first: {_shown(units, max_units)}{_dead_note(dead, len(data))}"
    return _write(
        path,
        _labelled_bytes(
            images,
            fmt,
            n_cols=k,
            zoom=zoom,
            dead=np.repeat(shown, k),
            row_labels=row_labels,
            dead_rows=shown,
            title=title,
        ),
    )
