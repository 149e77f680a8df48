"""Latent firing densities over a data set, their log-density histogram, and its picture.

A unit's *firing density* is the fraction of the examples of ``x`` on which its output is
non-zero, counted over every row (streamed for large data), never over a sample or a batch.
Sparse-autoencoder papers read dictionaries by the histogram of ``log10(density)``: a healthy
top-k dictionary of ``n`` latents with ``k`` active sits around ``log10(k / n)``; a spike at the
far left is latents that almost never fire, dead latents (density 0) have no logarithm and are
counted apart, and latents far to the right (firing on most inputs) are "dense".
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.validation import integer
from ..objective.reconstruction import Density
from .evaluation import run_metrics
from .grids import DEAD_COLOUR
from .pictures import _figure_bytes, _picture_format, _write

if TYPE_CHECKING:
    from ..autoencoder import Autoencoder

__all__ = ["DensityHistogram", "density_histogram", "firing_densities", "plot_densities"]


def firing_densities(net: Autoencoder, x: Any, layer: str | None = None) -> np.ndarray:
    """Each unit's firing density over every row of ``x``.

    Parameters
    ----------
    net : Autoencoder
    x : array-like or streamable, shape (n, *input_shape)
        Data as the model takes it (memory-mapped data is read block by block).
    layer : str, optional
        The layer (default the model's code layer).

    Returns
    -------
    ndarray, shape (units,)
        The fraction of rows on which each unit (value of the flattened output) is non-zero.
    """
    name = net._layer_name(layer, net.code_layer)
    metric = Density(name)
    run_metrics(net, x, {"density": metric})
    return metric.per_unit()


class DensityHistogram:
    """Counts of units per bin of ``log10(density)``, with the dead units (density 0) counted apart.

    Attributes
    ----------
    counts : ndarray of int, shape (bins,)
    edges : ndarray, shape (bins + 1,)
        Bin edges in ``log10(density)``.
    dead : int
        Units that never fired (not in ``counts``: they have no logarithm).
    units : int
    """

    def __init__(self, counts: np.ndarray, edges: np.ndarray, dead: int, units: int):
        self.counts, self.edges, self.dead, self.units = counts, edges, dead, units

    def __repr__(self) -> str:
        return f"DensityHistogram(units={self.units}, dead={self.dead}, bins={len(self.counts)})"


def density_histogram(densities: Any, bins: int = 40, low: float | None = None) -> DensityHistogram:
    """The histogram of ``log10(density)`` of the units that fired, and the count of those that did not.

    Parameters
    ----------
    densities : array-like, shape (units,)
        Firing densities in [0, 1] (:func:`firing_densities`).
    bins : int
        Number of equal bins in ``log10(density)`` between ``low`` and 0.
    low : float, optional
        The left edge; default the smallest log10 density seen (at most -1), rounded down.
    """
    bins = integer("bins", bins, 1)
    d = np.asarray(densities, dtype=np.float64).reshape(-1)
    alive = d[d > 0]
    logs = np.log10(alive)
    if low is None:
        low = float(np.floor(min(logs.min(), -1.0))) if alive.size else -1.0
    counts, edges = np.histogram(np.clip(logs, low, 0.0), bins=bins, range=(low, 0.0))
    return DensityHistogram(counts, edges, int(d.size - alive.size), int(d.size))


def plot_densities(
    densities: Any, path: str | os.PathLike, title: str = "latent firing densities", bins: int = 40
) -> str:
    """Draw the log-density histogram; the dead units are a bar of their own in the dead-unit colour, labelled "dead".

    Parameters
    ----------
    densities : array-like, shape (units,)
    path : str or path
        The picture file (its suffix picks the format).

    Returns
    -------
    str
        ``path``.
    """
    from matplotlib.figure import Figure

    fmt = _picture_format(path)
    hist = density_histogram(densities, bins)
    fig = Figure(figsize=(6, 3.5), dpi=100)
    ax = fig.subplots()
    width = hist.edges[1] - hist.edges[0]
    ax.bar(hist.edges[:-1], hist.counts, width=width, align="edge", color="tab:blue", label="fired")
    dead_at = hist.edges[0] - 2 * width
    ax.bar([dead_at], [hist.dead], width=width, align="edge", color=DEAD_COLOUR, label=f"dead ({hist.dead})")
    ax.set_xlabel("log10(firing density)  (dead: never fired)")
    ax.set_ylabel("units")
    ax.set_title(f"{title}: {hist.units} units, {hist.dead} dead")
    ax.legend()
    fig.tight_layout()
    return _write(path, _figure_bytes(fig, fmt))
