"""Pictures of what an autoencoder learned: feature tiles, reconstructions, curves, codes.

Every plotting function writes one picture, atomically, and returns its path.
The path's suffix picks the format: ``.png``, ``.jpg``/``.jpeg``, ``.tif``/``.tiff``,
``.gif``, ``.webp``, ``.pdf``, ``.svg``, ``.eps`` or ``.ps`` (PNG when there is no
suffix); any other suffix, or a folder that does not exist, is a
:class:`~aekit.ConfigurationError` raised before anything is computed.

matplotlib is imported lazily, inside the functions, and only through its
object-oriented API (``matplotlib.figure.Figure``, ``matplotlib.image.imsave``):
pyplot's global state and the user's interactive backend are never touched, so
these functions are safe on headless machines and in notebooks alike.

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
"""

from __future__ import annotations

import io
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.validation import as_array, as_labels, integer, number
from ..errors import ConfigurationError, DataError
from ..io.model_file import atomic_write

__all__ = [
    "feature_images",
    "image_shape",
    "plot_activations",
    "plot_codes",
    "plot_history",
    "plot_reconstructions",
    "save_tiles",
    "save_top_inputs",
    "tile_mosaic",
    "top_inputs",
]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- shapes
def image_shape(shape: int | Sequence[int]) -> tuple[int, ...]:
    """The picture shape for an example of ``shape``.

    ``(C, H, W)`` stays as is (``(H, W)`` when ``C == 1``).  A flat size ``n``
    becomes a square when it is one (784 -> 28x28), ``(3, s, s)`` when ``n = 3 s^2``
    (RGB patches), else the squarest factorisation ``h x w`` with ``h <= w``.

    Examples
    --------
    >>> image_shape(64), image_shape(784), image_shape(192), image_shape(10), image_shape((1, 8, 8))
    ((8, 8), (28, 28), (3, 8, 8), (2, 5), (8, 8))
    """
    try:
        dims = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
    except (TypeError, ValueError, OverflowError):
        raise ConfigurationError(f"shape must be a size or (C, H, W), got {shape!r}") from None
    if any(d < 1 for d in dims):
        raise ConfigurationError(f"shape must be a size or (C, H, W) of positive sizes, got {shape!r}")
    if len(dims) == 3:
        return dims[1:] if dims[0] == 1 else dims
    if len(dims) == 2:
        return dims
    if len(dims) != 1:
        raise ConfigurationError(f"shape must be a size or (C, H, W), got {shape!r}")
    n = dims[0]
    side = math.isqrt(n)
    if side * side == n:
        return (side, side)
    if n % 3 == 0 and math.isqrt(n // 3) ** 2 == n // 3:
        side = math.isqrt(n // 3)
        return (3, side, side)
    h = max(d for d in range(1, side + 1) if n % d == 0)
    return (h, n // h)


def _as_images(values: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Reshape (units, *anything) rows to (units, *image_shape(shape))."""
    return np.asarray(values, dtype=np.float32).reshape(values.shape[0], *image_shape(shape))


# ---------------------------------------------------------------------------- features
def _layer(net, layer: str | int | None):
    name = net._layer_name(layer, net.graph.hidden_names[0] if net.graph.hidden_names else net.code_layer)
    if name == net.graph.input_name:
        raise ConfigurationError(f"layer {name!r} is the input; pick a hidden or output layer")
    return name, net.graph.layers[name]


def _unit_selector(shape: tuple[int, ...]):
    """(number of units, function pre -> (n_units,) activations of unit i on example i)."""
    if len(shape) == 1:
        return shape[0], lambda pre: pre.diagonal()
    channels = shape[0]
    centre = tuple(s // 2 for s in shape[1:])
    return channels, lambda pre: pre[(torch.arange(channels), torch.arange(channels), *centre)]


def feature_images(
    net,
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
    analytic = reads_input and isinstance(weight, torch.nn.Parameter) and module.spec.form in ("dense", "conv2")
    if method == "analytic" and not analytic:
        raise ConfigurationError(
            f"method='analytic' needs a dense or conv2 layer that reads the input; layer {name!r} "
            f"is a {module.spec.form} layer reading {graph.sources.get(name)!r}; use method='ascent'"
        )
    if analytic and method != "ascent":
        w = weight.detach().cpu().double()
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
        codes[(units + 1, units, *centre)] = float(scale)
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


# ---------------------------------------------------------------------------- tiles
def _normalise_tiles(images: np.ndarray, normalize: str | None) -> np.ndarray:
    """Map tiles to [0, 1]; ``images`` is (n, H, W) or (n, 3, H, W)."""
    imgs = images.astype(np.float64)
    finite = np.isfinite(imgs)
    imgs = np.where(finite, imgs, 0.0)
    colour = imgs.ndim == 4
    if normalize == "tile":
        axes = tuple(range(1, imgs.ndim))
        if colour:  # UFLDL display_color_network: per-tile min-max
            low = imgs.min(axis=axes, keepdims=True)
            span = imgs.max(axis=axes, keepdims=True) - low
            return np.where(span > 0, (imgs - low) / np.where(span > 0, span, 1), 0.5)
        # UFLDL display_network: remove the global mean, scale each tile by its max |value|
        imgs = imgs - imgs.mean()
        peak = np.abs(imgs).max(axis=axes, keepdims=True)
        return 0.5 + 0.5 * imgs / np.where(peak > 0, peak, 1)
    if normalize == "global":
        low, high = imgs.min(), imgs.max()
        return (imgs - low) / (high - low) if high > low else np.full_like(imgs, 0.5)
    if normalize is None:
        return np.clip(imgs, 0.0, 1.0)
    raise ConfigurationError(f"normalize must be 'tile', 'global' or None, got {normalize!r}")


# The largest picture written, in pixels (zoom included): 32M, a 5,700-pixel square.  Beyond it a
# mistaken n_cols or zoom would fill the memory before anything is drawn.
MAX_PIXELS = 1 << 25


def _grid(n: int, n_cols: Any) -> tuple[int, int]:
    """(rows, cols) of a grid of ``n`` tiles with ``n_cols`` columns (None: square-ish)."""
    cols = int(math.ceil(math.sqrt(n))) if n_cols is None else integer("n_cols", n_cols, 1)
    return int(math.ceil(n / cols)), cols


def _prepare_tiles(images: Any) -> np.ndarray:
    try:
        imgs = np.asarray(images, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise DataError(f"images must be an array of real numbers ({error})") from None
    if imgs.size == 0:
        raise DataError(f"images must hold at least one image of at least one pixel, got shape {imgs.shape}")
    if imgs.ndim == 2:
        imgs = _as_images(imgs, imgs.shape[1])
    if imgs.ndim == 4 and imgs.shape[1] == 1:
        imgs = imgs[:, 0]
    elif imgs.ndim == 4 and imgs.shape[1] != 3:
        # Any other channel count: one grey tile per channel, unit by unit.
        imgs = imgs.reshape(-1, *imgs.shape[2:])
    if imgs.ndim not in (3, 4) or imgs.shape[0] == 0:
        raise DataError(
            f"images must be (n, H, W), (n, C, H, W) or (n, features) with n >= 1, got shape {tuple(np.shape(images))}"
        )
    return imgs


def tile_mosaic(
    images: Any,
    n_cols: int | None = None,
    border: int = 1,
    normalize: str | None = "tile",
) -> np.ndarray:
    """Arrange images in a grid, as UFLDL's ``display_network``.

    Parameters
    ----------
    images : array, shape (n, H, W), (n, C, H, W) or (n, features)
        Flat rows are reshaped with :func:`image_shape`.
    n_cols : int, optional
        Tiles per row (default: a square-ish grid).
    border : int
        Pixels of black between and around tiles.
    normalize : {'tile', 'global', None}
        ``'tile'``: each tile's contrast on its own (global mean removed, then
        divided by the tile's max ``|value|``; colour tiles: per-tile min-max);
        ``'global'``: one min-max for all; None: values already in [0, 1].

    Returns
    -------
    ndarray, shape (rows*(H+border)+border, cols*(W+border)+border) or (..., 3), in [0, 1]
    """
    imgs = _normalise_tiles(_prepare_tiles(images), normalize)
    if imgs.ndim == 4:
        imgs = imgs.transpose(0, 2, 3, 1)  # channels last for the picture
    n = imgs.shape[0]
    rows, cols = _grid(n, n_cols)
    h, w = imgs.shape[1:3]
    b = integer("border", border, 0)
    _check_pixels((rows * (h + b) + b) * (cols * (w + b) + b))
    mosaic = np.zeros((rows * (h + b) + b, cols * (w + b) + b, *imgs.shape[3:]))
    for k in range(n):
        r, c = divmod(k, cols)
        top, left = b + r * (h + b), b + c * (w + b)
        mosaic[top : top + h, left : left + w] = imgs[k]
    return mosaic


def _default_zoom(images: np.ndarray) -> int:
    """The zoom that makes tiles of ``images`` (..., H, W) at least 32 pixels on their longer side."""
    return max(1, int(math.ceil(32 / max(images.shape[-2:]))))


def _check_pixels(count: int) -> None:
    if count > MAX_PIXELS:
        raise ConfigurationError(
            f"the picture would have {count:,} pixels, more than {MAX_PIXELS:,}; "
            "ask for fewer columns, a smaller border or zoom, or fewer images"
        )


# Suffix -> format name, for the formats that both matplotlib.image.imsave (pixel mosaics,
# through Pillow) and Figure.savefig (plots) write without extra software: not pgf (needs
# LaTeX), svgz, raw and rgba (imsave cannot), nor avif (only some Pillow builds).
_FORMATS = {
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".gif": "gif",
    ".webp": "webp",
    ".pdf": "pdf",
    ".svg": "svg",
    ".eps": "eps",
    ".ps": "ps",
}


def _picture_format(path: Any) -> str:
    """The format to write ``path`` in, from its suffix; checked before any work is done.

    Raises
    ------
    ConfigurationError
        An unsupported suffix, a folder that does not exist, or a path that is a folder.
    """
    try:
        target = Path(os.fspath(path))
    except TypeError:
        raise ConfigurationError(f"path must be a file path, got {path!r}") from None
    suffix = target.suffix.lower()
    if suffix and suffix not in _FORMATS:
        raise ConfigurationError(
            f"path {str(target)!r} has suffix {target.suffix!r}; expected one of "
            f"{', '.join(map(repr, sorted(_FORMATS)))}, or none for PNG"
        )
    folder = target.parent
    if not folder.is_dir():
        raise ConfigurationError(f"path {str(target)!r}: folder {str(folder)!r} does not exist")
    if target.is_dir():
        raise ConfigurationError(f"path {str(target)!r} is a folder, not a file")
    return _FORMATS.get(suffix, "png")


def _mosaic_bytes(picture: np.ndarray, zoom: Any, fmt: str) -> bytes:
    """``picture`` (values in [0, 1], grey or RGB) as a file of format ``fmt``, each pixel ``zoom`` x ``zoom``."""
    from matplotlib import image as mpimg

    zoom = integer("zoom", zoom, 1)
    _check_pixels(picture.shape[0] * picture.shape[1] * zoom * zoom)

    if zoom > 1:
        picture = np.repeat(np.repeat(picture, zoom, axis=0), zoom, axis=1)
    buffer = io.BytesIO()
    if picture.ndim == 2:
        mpimg.imsave(buffer, picture, cmap="gray", vmin=0.0, vmax=1.0, format=fmt)
    else:
        mpimg.imsave(buffer, np.clip(picture, 0.0, 1.0), format=fmt)
    return buffer.getvalue()


def _figure_bytes(fig, fmt: str) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=fig.dpi)
    return buffer.getvalue()


def _write(path: str | os.PathLike, data: bytes) -> str:
    atomic_write(path, data)
    return str(path)


def save_tiles(
    images: Any,
    path: str | os.PathLike,
    n_cols: int | None = None,
    border: int = 1,
    normalize: str | None = "tile",
    titles: Sequence[str] | None = None,
    zoom: int | None = None,
) -> str:
    """Write a grid of image tiles to a picture file (see :func:`tile_mosaic`).

    Parameters
    ----------
    images : array, shape (n, H, W), (n, C, H, W) or (n, features)
    path : str or path
        Its suffix picks the format (see the module docstring).
    n_cols, border, normalize
        As :func:`tile_mosaic`.
    titles : sequence of str, optional
        One caption per tile; the picture is then drawn as a matplotlib figure.
    zoom : int, optional
        Integer upscaling of the pixel mosaic (default: tiles at least 32 px high).
        Without titles a raster picture is exactly ``zoom`` times the mosaic's size.

    Returns
    -------
    str
        ``path``.
    """
    fmt = _picture_format(path)
    imgs = _prepare_tiles(images)
    if zoom is None:
        zoom = _default_zoom(imgs)
    if titles is None:
        return _write(path, _mosaic_bytes(tile_mosaic(imgs, n_cols, border, normalize), zoom, fmt))
    from matplotlib.figure import Figure

    try:
        titles = [str(title) for title in titles]
    except TypeError:
        raise ConfigurationError(f"titles must be a sequence of one caption per image, got {titles!r}") from None
    if len(titles) != imgs.shape[0]:
        raise ConfigurationError(f"titles must have one entry per image ({imgs.shape[0]}), got {len(titles)}")
    tiles = _normalise_tiles(imgs, normalize)
    if tiles.ndim == 4:
        tiles = tiles.transpose(0, 2, 3, 1)
    rows, cols = _grid(len(tiles), n_cols)
    _check_pixels(130 * cols * 150 * rows)  # the figure's size at 100 dpi
    fig = Figure(figsize=(1.3 * cols, 1.5 * rows), dpi=100)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, tile, title in zip(axes, tiles, titles):
        ax.imshow(tile, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(str(title), fontsize=7)
    fig.tight_layout()
    return _write(path, _figure_bytes(fig, fmt))


# ---------------------------------------------------------------------------- plots
def _data(net, x: Any, max_rows: int | None = None) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = as_array("x", x)
    if arr.ndim < 2 or arr.shape[0] == 0:
        raise DataError(f"x must hold examples in rows, got shape {arr.shape}")
    return arr if max_rows is None else arr[:max_rows]


def plot_reconstructions(net, x: Any, path: str | os.PathLike, n: int = 10, zoom: int | None = None) -> str:
    """Inputs (top row) above their reconstructions (bottom row), one picture.

    Both rows share one grey scale (the inputs' min and max), so a washed-out or
    mean-like reconstruction is visible as such.

    Parameters
    ----------
    x : array, shape (n_examples, features) or (n_examples, *input_shape)
    n : int
        How many examples (the first ``n``).

    Returns
    -------
    str
        ``path``; the picture holds 2 rows of ``n`` tiles.
    """
    fmt = _picture_format(path)
    inputs = _data(net, x, integer("n", n, 1))
    outputs = net.predict(inputs)
    shape = net.graph.input_shape
    top = _as_images(inputs.reshape(len(inputs), -1), shape)
    if outputs.reshape(len(outputs), -1).shape[1] != top.reshape(len(top), -1).shape[1]:
        raise DataError(f"reconstructions have shape {outputs.shape[1:]}, unlike the inputs {inputs.shape[1:]}")
    bottom = _as_images(outputs.reshape(len(outputs), -1), shape)
    low, high = float(np.nanmin(top)), float(np.nanmax(top))
    span = high - low if high > low else 1.0
    both = (np.concatenate([top, bottom]) - low) / span
    if zoom is None:
        zoom = _default_zoom(both)
    return _write(path, _mosaic_bytes(tile_mosaic(both, len(top), 1, None), zoom, fmt))


def plot_history(net, path: str | os.PathLike, keys: Sequence[str] = ("loss", "err")) -> str:
    """Training and validation curves from ``net.history`` (log scale when positive).

    Parameters
    ----------
    keys : sequence of str
        Monitor names to draw (those present in the history).

    Returns
    -------
    str
        ``path``.
    """
    from matplotlib.figure import Figure

    fmt = _picture_format(path)
    history = list(getattr(net, "history", []) or [])
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.subplots()
    drawn = []
    for part, style in (("train", "-"), ("valid", "--")):
        for key in keys:
            points = [(h["epoch"], h[part][key]) for h in history if key in (h.get(part) or {})]
            if points:
                epochs, values = zip(*points)
                ax.plot(epochs, values, style, label=f"{part} {key}")
                drawn.extend(values)
    if not drawn:
        ax.text(0.5, 0.5, "no training history", ha="center", va="center", transform=ax.transAxes)
    else:
        finite = np.asarray([v for v in drawn if np.isfinite(v)])
        if finite.size and finite.min() > 0 and finite.max() / finite.min() > 20:
            ax.set_yscale("log")
        ax.legend()
    ax.set_xlabel("epoch")
    ax.set_ylabel("value")
    ax.set_title("training curves")
    fig.tight_layout()
    return _write(path, _figure_bytes(fig, fmt))


def _pca2(z: np.ndarray) -> tuple[np.ndarray, str]:
    if z.shape[1] == 1:
        return np.column_stack([z[:, 0], np.zeros(len(z))]), "code (1 unit)"
    if z.shape[1] == 2:
        return z, "code units 1 and 2"
    centred = z - z.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T, f"PCA of the {z.shape[1]}-unit code"


def plot_codes(
    net,
    x: Any,
    path: str | os.PathLike,
    labels: Any = None,
    layer: str | int | None = None,
    max_points: int = 5000,
) -> str:
    """Scatter the codes of ``x`` in 2-D, coloured by ``labels`` (PCA when wider than 2).

    Parameters
    ----------
    x : array, shape (n, features)
    labels : array, shape (n,), optional
    layer : str or int, optional
        Default: the code (middle) layer.

    Returns
    -------
    str
        ``path``.
    """
    from matplotlib.figure import Figure

    fmt = _picture_format(path)
    data = _data(net, x, integer("max_points", max_points, 1))
    z = net.encode(data, layer=layer).reshape(len(data), -1).astype(np.float64)
    points, title = _pca2(z)
    fig = Figure(figsize=(6, 5), dpi=100)
    ax = fig.subplots()
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=6, alpha=0.6)
    else:
        y = as_labels("labels", labels)
        if y.ndim != 1 or len(y) < len(data):
            raise DataError(
                f"labels must be 1-D with one label per example of x ({len(data)} or more), got shape {y.shape}"
            )
        y = y[: len(data)]
        classes, codes = np.unique(y, return_inverse=True)
        if len(classes) <= 20:
            for k, cls in enumerate(classes):
                pick = y == cls
                ax.scatter(
                    points[pick, 0],
                    points[pick, 1],
                    s=6,
                    alpha=0.7,
                    label=str(cls),
                    color=f"C{k % 10}" if len(classes) <= 10 else None,
                )
            ax.legend(markerscale=2, fontsize=7, loc="best")
        else:
            shade = y.astype(float) if y.dtype.kind in "biuf" else codes  # many names: coloured by rank
            scatter = ax.scatter(points[:, 0], points[:, 1], s=6, c=shade, cmap="viridis")
            fig.colorbar(scatter, ax=ax)
    ax.set_title(title)
    fig.tight_layout()
    return _write(path, _figure_bytes(fig, fmt))


def plot_activations(
    net,
    x: Any,
    path: str | os.PathLike,
    layer: str | int | None = None,
    max_units: int = 25,
    bins: int = 30,
) -> str:
    """One histogram per unit of the activations of ``layer`` over ``x``.

    Parameters
    ----------
    layer : str or int, optional
        Default: the code (middle) layer.  Image-shaped layers show channels.
    max_units : int
        Draw the first ``max_units`` units only.

    Returns
    -------
    str
        ``path``.
    """
    from matplotlib.figure import Figure

    fmt = _picture_format(path)
    h = net.encode(_data(net, x), layer=layer)
    h = h.reshape(h.shape[0], h.shape[1], -1).transpose(0, 2, 1).reshape(-1, h.shape[1]) if h.ndim > 2 else h
    units = min(h.shape[1], integer("max_units", max_units, 1))
    cols = int(math.ceil(math.sqrt(units)))
    rows = int(math.ceil(units / cols))
    fig = Figure(figsize=(1.8 * cols, 1.4 * rows + 0.4), dpi=100)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax in axes[units:]:
        ax.axis("off")
    for j in range(units):
        values = h[:, j]
        values = values[np.isfinite(values)]
        axes[j].hist(values, bins=bins, color="C0")
        axes[j].set_title(f"unit {j}", fontsize=7)
        axes[j].tick_params(labelsize=6)
    name = net._layer_name(layer, net.code_layer)
    fig.suptitle(f"activations of {name!r}", fontsize=9)
    fig.tight_layout()
    return _write(path, _figure_bytes(fig, fmt))


def top_inputs(net, x: Any, layer: str | int | None = None, k: int = 8) -> np.ndarray:
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
    net,
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
