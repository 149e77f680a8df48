"""Pictures of a variational autoencoder's latent space: samples, the 2-D manifold, KL bars, interpolations.

Each function writes one picture as :mod:`aekit.inspect.pictures` describes and returns its path:

* :func:`plot_samples` -- decoder means of draws ``z ~ N(0, I)`` of the prior;
* :func:`plot_manifold` -- for a 2-D latent, the decoder means on a grid of prior quantiles
  (Kingma and Welling 2014, figure 4), titled with the quantile range;
* :func:`plot_kl` -- each latent's mean KL to the prior (nats), active latents (Burda et al.'s
  definition) in colour and inactive ones grey, titled with the count and the total;
* :func:`plot_interpolations` -- rows of decoder means along the line between the posterior
  means of pairs of examples, the end tiles labelled with the rows of ``x``.

Pictures of image-shaped outputs only (a flat output of a square number of values counts);
:func:`vae_sections` adds them to :func:`aekit.inspect.report.write_report`'s page.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from statistics import NormalDist
from typing import Any

import numpy as np

from ..data.validation import integer
from ..errors import ConfigurationError
from .grids import DEAD_COLOUR
from .pictures import _as_images, _figure_bytes, _labelled_bytes, _normalise_tiles, _picture_format, _write
from .variational import latent_stats

__all__ = ["plot_interpolations", "plot_kl", "plot_manifold", "plot_samples", "vae_sections"]


def _tiles(net: Any, values: np.ndarray) -> np.ndarray:
    """Decoder outputs as tiles (n, H, W) or (n, H, W, 3) in [0, 1].

    Values already in [0, 1] (pixel probabilities) are drawn as they are, others on one grey
    scale from their min to their max.
    """
    out_shape = net.graph.layers[net.graph.output_name].output_shape
    images = _as_images(values.reshape(values.shape[0], -1), out_shape)
    if images.ndim == 4 and images.shape[1] != 3:
        images = images[:, 0]  # several channels that are not RGB: the first
    bounded = values.size and values.min() >= 0 and values.max() <= 1
    tiles = _normalise_tiles(images, None if bounded else "global")
    return tiles.transpose(0, 2, 3, 1) if tiles.ndim == 4 else tiles


def plot_samples(net: Any, path: str | os.PathLike, n: int = 32, seed: int = 0, layer: Any = None) -> str:
    """Decoder means of ``n`` draws of the prior ``N(0, I)`` (seeded), as a grid of tiles.

    Returns
    -------
    str
        ``path``.
    """
    n = integer("n", n, 1)
    fmt = _picture_format(path)
    tiles = _tiles(net, net.sample(n, layer=layer, seed=seed))
    title = f"decoder means of {n} draws z ~ N(0, I) of layer {net._latent(layer)!r} (seed {seed})"
    return _write(path, _labelled_bytes(tiles, fmt, n_cols=min(n, 8), title=title))


def plot_manifold(net: Any, path: str | os.PathLike, n: int = 15, layer: Any = None) -> str:
    """For a 2-D latent: decoder means on an ``n`` x ``n`` grid of prior quantiles 0.05 .. 0.95.

    Raises
    ------
    ConfigurationError
        If the latent is not 2-D.
    """
    n = integer("n", n, 2)
    name = net._latent(layer)
    shape = net.graph.layers[name].output_shape
    if shape != (2,):
        raise ConfigurationError(f"a manifold picture needs a 2-D latent, layer {name!r} has shape {shape}")
    fmt = _picture_format(path)
    quantiles = np.array([NormalDist().inv_cdf(p) for p in np.linspace(0.05, 0.95, n)], dtype=np.float32)
    z = np.stack(np.meshgrid(quantiles, quantiles[::-1]), axis=-1).reshape(-1, 2)
    tiles = _tiles(net, net.decode(z, layer=name))
    title = f"decoder means over the prior quantiles 0.05..0.95 of z1 (across) and z2 (up), layer {name!r}"
    return _write(path, _labelled_bytes(tiles, fmt, n_cols=n, title=title))


def plot_kl(net: Any, x: Any, path: str | os.PathLike, layer: Any = None, active_threshold: float = 0.01) -> str:
    """Bars of each latent's mean KL to the prior over ``x`` (nats); inactive latents grey."""
    from matplotlib.figure import Figure

    fmt = _picture_format(path)
    name = net._latent(layer)
    xt = net._check(x)
    stats = latent_stats(net, xt, name, active_threshold)
    fig = Figure(figsize=(max(6.0, 0.12 * stats.kl.size + 2), 3.4), dpi=100)
    ax = fig.subplots()
    colours = ["tab:blue" if a else DEAD_COLOUR for a in stats.active]
    ax.bar(np.arange(stats.kl.size), stats.kl, color=colours)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(f"latent of {name!r}")
    ax.set_ylabel("mean KL to N(0, 1), nats")
    ax.set_title(
        f"{int(stats.active.sum())} of {stats.kl.size} latents active, total KL {stats.total_kl:.2f} nats\n"
        f"(grey: inactive, Var_x E[z] <= {active_threshold:g})",
        fontsize=9,
    )
    fig.tight_layout()
    return _write(path, _figure_bytes(fig, fmt))


def plot_interpolations(
    net: Any, x: Any, path: str | os.PathLike, pairs: int = 4, steps: int = 8, layer: Any = None
) -> str:
    """Rows of decoder means between the posterior means of examples ``2i`` and ``2i + 1`` of ``x``."""
    pairs, steps = integer("pairs", pairs, 1), integer("steps", steps, 2)
    data = np.asarray(x)
    pairs = min(pairs, len(data) // 2)
    if pairs < 1:
        raise ConfigurationError(f"interpolations need at least 2 examples, got {len(data)}")
    fmt = _picture_format(path)
    a, b = data[0 : 2 * pairs : 2], data[1 : 2 * pairs : 2]
    lines = net.interpolate(a, b, steps=steps, layer=layer)  # (pairs, steps, ...)
    tiles = _tiles(net, lines.reshape(pairs * steps, -1))
    labels = [
        (
            f"row {2 * (i // steps)}"
            if i % steps == 0
            else f"row {2 * (i // steps) + 1}"
            if i % steps == steps - 1
            else ""
        )
        for i in range(pairs * steps)
    ]
    title = f"decoder means along straight lines between posterior means ({steps} steps)"
    return _write(path, _labelled_bytes(tiles, fmt, n_cols=steps, labels=labels, title=title))


def vae_sections(net: Any, sample: np.ndarray, attempt: Callable[[str, str, Callable[[str], Any]], str]) -> list[str]:
    """The report's "Latent space" section for a model with gaussian layers (empty otherwise)."""
    if not net.latent_layers:
        return []
    name = net.latent_layers[0]
    out = [
        "<h2>Latent space</h2>",
        attempt(
            "latent_kl.png",
            f"Mean KL to the prior of each latent of {name!r} (nats); inactive latents (Burda et al.: "
            "Var_x E_q[z] <= 0.01) grey.",
            lambda p: plot_kl(net, sample, p),
        ),
        attempt(
            "samples.png",
            "Decoder means of draws from the prior N(0, I): what the model generates.",
            lambda p: plot_samples(net, p),
        ),
        attempt(
            "interpolations.png",
            "Decoder means along straight lines between the posterior means of pairs of examples.",
            lambda p: plot_interpolations(net, sample, p),
        ),
    ]
    if net.graph.layers[name].output_shape == (2,):
        out.append(
            attempt(
                "manifold.png",
                "The 2-D latent: decoder means on a grid of prior quantiles (z1 across, z2 up).",
                lambda p: plot_manifold(net, p),
            )
        )
    return out
