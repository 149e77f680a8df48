"""Plots of a model on its data: reconstructions, training curves, codes and activation histograms.

Each function writes one picture as :mod:`aekit.inspect.pictures` describes (the path's
suffix picks the format; written atomically; matplotlib's object-oriented API only) and
returns its path.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.validation import as_labels, integer
from ..errors import DataError
from .pictures import (
    _as_images,
    _data,
    _default_zoom,
    _figure_bytes,
    _mosaic_bytes,
    _picture_format,
    _write,
    tile_mosaic,
)

if TYPE_CHECKING:
    from ..autoencoder import Autoencoder

__all__ = ["plot_activations", "plot_codes", "plot_history", "plot_reconstructions"]


def plot_reconstructions(
    net: Autoencoder, x: Any, path: str | os.PathLike, n: int = 10, zoom: int | None = None
) -> str:
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


def plot_history(net: Autoencoder, path: str | os.PathLike, keys: Sequence[str] = ("loss", "err")) -> str:
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
    drawn: list[float] = []
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
    net: Autoencoder,
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
    net: Autoencoder,
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
