"""Plots of a model on its data: reconstructions, training curves, codes and activation histograms.

Each function writes one picture as :mod:`aekit.inspect.pictures` describes (the path's
suffix picks the format; written atomically; matplotlib's object-oriented API only) and
returns its path.  What each picture says, so that it cannot mislead:

* reconstructions: the rows are labelled "input" and "reconstruction";
* training curves: monitors with equal values (``loss`` and ``err`` without penalties) are
  one curve, labelled ``loss = err``;
* codes: the title gives the codes' spread across inputs relative to their size
  (:func:`aekit.inspect.measures.code_spread`); a collapsed code (below ``COLLAPSE_RATIO``,
  as :func:`aekit.diagnose`) is marked in red and drawn at the scale of the codes' size, where
  it is a dot rather than a cloud;
* activation histograms: the title says how many units are shown ("first 25 of 32 units"),
  and dead units (constant output) are grey, titled "dead".
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.validation import as_labels, integer
from ..errors import DataError
from .grids import DEAD_COLOUR
from .measures import COLLAPSE_RATIO, code_spread, dead_units, unit_columns
from .pictures import _as_images, _data, _figure_bytes, _labelled_bytes, _picture_format, _write

if TYPE_CHECKING:
    from ..autoencoder import Autoencoder

__all__ = ["plot_activations", "plot_codes", "plot_history", "plot_reconstructions"]


def plot_reconstructions(
    net: Autoencoder, x: Any, path: str | os.PathLike, n: int = 10, zoom: int | None = None
) -> str:
    """Inputs (the row labelled "input") above their reconstructions (labelled "reconstruction").

    Both rows share one grey scale (the inputs' min and max), so a washed-out or
    mean-like reconstruction is visible as such; each column is labelled with its row of ``x``.

    Parameters
    ----------
    x : array, shape (n_examples, features) or (n_examples, *input_shape)
    n : int
        How many examples (the first ``n``).
    zoom : int, optional
        Pixels per image pixel (default: the rule of :mod:`aekit.inspect.pictures`).

    Returns
    -------
    str
        ``path``; the picture holds 2 labelled rows of ``n`` tiles.
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
    both = np.clip((np.concatenate([top, bottom]) - low) / span, 0.0, 1.0)
    both = np.nan_to_num(both, nan=0.0)
    if both.ndim == 4:
        both = both.transpose(0, 2, 3, 1) if both.shape[1] == 3 else both.mean(axis=1)
    labels = [str(i) for i in range(len(top))] + [""] * len(top)
    return _write(
        path,
        _labelled_bytes(
            both,
            fmt,
            n_cols=len(top),
            zoom=zoom,
            labels=labels,
            row_labels=["input", "reconstruction"],
            title=f"{len(top)} examples (columns): inputs and their reconstructions, on one grey scale",
        ),
    )


def _curves(history: list[Any], part: str, keys: Sequence[str]) -> list[tuple[str, list[Any], list[Any]]]:
    """The curves of ``part`` to draw: ``(label, epochs, values)``, monitors with equal values merged."""
    curves: list[tuple[str, list[Any], list[Any]]] = []
    for key in keys:
        points = [(h["epoch"], h[part][key]) for h in history if key in (h.get(part) or {})]
        if not points:
            continue
        epochs, values = (list(v) for v in zip(*points))
        for k, (label, drawn_epochs, drawn) in enumerate(curves):
            if drawn_epochs == epochs and np.array_equal(np.asarray(drawn), np.asarray(values), equal_nan=True):
                curves[k] = (f"{label} = {key}", drawn_epochs, drawn)
                break
        else:
            curves.append((f"{part} {key}", epochs, values))
    return curves


def plot_history(net: Autoencoder, path: str | os.PathLike, keys: Sequence[str] = ("loss", "err")) -> str:
    """Training and validation curves from ``net.history`` (log scale when positive).

    Monitors whose values are equal at every epoch (``loss`` and ``err`` when there is no
    penalty) are drawn as one curve labelled ``'train loss = err'``, and the title says so.

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
    merged = []
    for part, style in (("train", "-"), ("valid", "--")):
        for label, epochs, values in _curves(history, part, keys):
            ax.plot(epochs, values, style, label=label)
            drawn.extend(values)
            if " = " in label:
                merged.append(label.split(" ", 1)[1])
    if not drawn:
        ax.text(0.5, 0.5, "no training history", ha="center", va="center", transform=ax.transAxes)
    else:
        finite = np.asarray([v for v in drawn if np.isfinite(v)])
        if finite.size and finite.min() > 0 and finite.max() / finite.min() > 20:
            ax.set_yscale("log")
        ax.legend()
    ax.set_xlabel("epoch")
    ax.set_ylabel("value")
    ax.set_title("training curves" + (f" ({'; '.join(sorted(set(merged)))}: equal values)" if merged else ""))
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

    The title gives the codes' spread across inputs relative to their size; a collapsed
    code (relative spread below ``COLLAPSE_RATIO``) is titled so in red and drawn on axes
    that span the codes' size (``rms * sqrt(units)``), where it shows as the dot it is.

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
    _, rms, relative = code_spread(z)
    collapsed = relative < COLLAPSE_RATIO
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
    spread = f"spread across inputs {relative:.2g} of the codes' size (rms {rms:.3g})"
    if collapsed:
        ax.set_title(f"COLLAPSED CODE: {spread}\n{title}", color=DEAD_COLOUR, fontsize=10)
        _show_scale(ax, points, rms * math.sqrt(z.shape[1]))
    else:
        ax.set_title(f"{title}\n{spread}", fontsize=10)
    fig.tight_layout()
    return _write(path, _figure_bytes(fig, fmt))


def _show_scale(ax: Any, points: np.ndarray, size: float) -> None:
    """Axes that span at least ``size`` either side of the points' centre: a collapsed code is a dot, not a cloud."""
    finite = points[np.isfinite(points).all(axis=1)]
    if not len(finite) or not math.isfinite(size) or size <= 0:
        return
    centre = (finite.max(axis=0) + finite.min(axis=0)) / 2
    half = max(size, float((finite.max(axis=0) - finite.min(axis=0)).max()) / 2)
    ax.set_xlim(centre[0] - half, centre[0] + half)
    ax.set_ylim(centre[1] - half, centre[1] + half)


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
        Draw the first ``max_units`` units only; the title says "first N of M units" then.
        Dead units (constant over ``x``) are drawn grey and titled "dead".

    Returns
    -------
    str
        ``path``.
    """
    from matplotlib.figure import Figure

    fmt = _picture_format(path)
    h = unit_columns(net.encode(_data(net, x), layer=layer))
    dead = dead_units(h)
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
        axes[j].hist(values, bins=bins, color="0.7" if dead[j] else "C0")
        if dead[j]:
            axes[j].set_title(f"unit {j} dead", fontsize=7, color=DEAD_COLOUR)
        else:
            axes[j].set_title(f"unit {j}", fontsize=7)
        axes[j].tick_params(labelsize=6)
    name = net._layer_name(layer, net.code_layer)
    shown = f"all {h.shape[1]} units" if units == h.shape[1] else f"first {units} of {h.shape[1]} units"
    count = int(dead.sum())
    dead_text = f"; {count} of {h.shape[1]} dead (constant, grey)" if count else ""
    fig.suptitle(f"activations of {name!r}: {shown}{dead_text}", fontsize=9)
    fig.tight_layout()
    return _write(path, _figure_bytes(fig, fmt))
