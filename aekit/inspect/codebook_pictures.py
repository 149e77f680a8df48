"""Pictures of a quantizer layer's codes: what each code decodes to, and how often the data use it.

* :func:`save_code_images` -- one tile per code: the decoder's output when every position of the
  code grid holds that code (``decode(full((1, *grid), k), layer)``), labelled with the code's
  index; given data, the codes that no vector of the data chooses are greyed out and marked dead.
* :func:`plot_code_usage` -- the share of the data's vectors that chose each code, code by code,
  unused codes marked in red; the title gives the usage (codes chosen at least once) and the
  perplexity, counted over all of the data given, never per batch.

>>> import numpy as np, aekit, tempfile, os
>>> net = aekit.Autoencoder([16, (4, 'linear'), dict(form='vq', codebook=8, dim=2, name='vq'), 16], rng=0)
>>> folder = tempfile.mkdtemp()
>>> os.path.basename(save_code_images(net, os.path.join(folder, 'codes.png')))
'codes.png'
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.validation import integer
from ..errors import ConfigurationError
from ..model.layers.quantize import Quantizer
from ..quantized import quantizer
from .codebook_checks import code_counts, quantizer_layers
from .grids import DEAD_COLOUR
from .pictures import _data, _figure_bytes, _picture_format, _write, image_shape, save_tiles

if TYPE_CHECKING:
    from ..autoencoder import Autoencoder

__all__ = ["code_images", "plot_code_usage", "save_code_images"]


def _quantizer(net: Autoencoder, layer: str | int | None) -> tuple[str, Quantizer]:
    """The quantizer layer's name and object (default: the first); raises, naming the layer, for another form."""
    quantizers = list(quantizer_layers(net.graph))
    if layer is None and not quantizers:
        raise ConfigurationError("this model has no quantizer layer (vq or fsq) to picture")
    name = quantizers[0] if layer is None else net._layer_name(layer, net.code_layer)
    return name, quantizer(net, name)


def code_images(net: Autoencoder, layer: str | int | None = None, max_codes: int = 256) -> np.ndarray:
    """What each of the first ``max_codes`` codes decodes to: ``decode`` of a grid filled with it.

    Returns
    -------
    ndarray, shape (min(K, max_codes), *output_shape)
    """
    name, chosen = _quantizer(net, layer)
    count = min(chosen.codebook_size, integer("max_codes", max_codes, 1))
    grid = np.broadcast_to(np.arange(count).reshape(count, *([1] * len(chosen.grid))), (count, *chosen.grid))
    return net.decode(np.ascontiguousarray(grid, dtype=np.int64), layer=name)


def save_code_images(
    net: Autoencoder,
    path: str | os.PathLike,
    layer: str | int | None = None,
    x: Any = None,
    max_codes: int = 256,
    n_cols: int | None = None,
) -> str:
    """Write one labelled tile per code (see the module docstring); return ``path``.

    Parameters
    ----------
    layer : str or int, optional
        The quantizer layer (default: the first one).
    x : array-like, optional
        Data in the model's input space: codes that none of its vectors chooses are greyed out.
    max_codes : int
        Picture the first ``max_codes`` codes only (the title says so).
    n_cols : int, optional
        Tiles per row (default: about square).
    """
    name, chosen = _quantizer(net, layer)
    size = chosen.codebook_size
    images = code_images(net, name, max_codes)
    count = len(images)
    dead = None
    if x is not None:
        counts = code_counts(net.encode(_data(net, x), layer=name, codes=True), size)
        dead = counts[:count] == 0
    shown = f"all {size} codes" if count == size else f"first {count} of {size} codes"
    title = f"what each code of {name!r} decodes to ({shown}, the whole grid set to the code)"
    shape = image_shape(images.shape[1:] if images.ndim == 4 else images.shape[1])
    tiles = images.reshape(count, *shape)
    return save_tiles(
        tiles, path, n_cols=n_cols, normalize=None, titles=[str(k) for k in range(count)], dead=dead, title=title
    )


def plot_code_usage(net: Autoencoder, x: Any, path: str | os.PathLike, layer: str | int | None = None) -> str:
    """Write a bar chart of the share of ``x``'s vectors that chose each code; return ``path``."""
    from matplotlib.figure import Figure

    fmt = _picture_format(path)
    name, chosen = _quantizer(net, layer)
    size = chosen.codebook_size
    counts = code_counts(net.encode(_data(net, x), layer=name, codes=True), size)
    share = counts / max(1, counts.sum())
    used = counts > 0
    p = share[used]
    perplexity = float(np.exp(-(p * np.log(p)).sum())) if p.size else float("nan")
    fig = Figure(figsize=(8, 3), dpi=100)
    ax = fig.subplots()
    ax.bar(np.arange(size), share, width=1.0, color="C0")
    if (~used).any():
        unused = np.flatnonzero(~used)
        ax.plot(unused, np.zeros(len(unused)), "|", color=DEAD_COLOUR, markersize=10, label="unused")
        ax.legend(fontsize=8, loc="upper right")
    ax.set_xlim(-0.5, size - 0.5)
    ax.set_xlabel("code")
    ax.set_ylabel("share of the vectors")
    ax.set_title(
        f"usage of {name!r}: {int(used.sum())} of {size} codes ({used.mean():.1%}), perplexity {perplexity:.1f}, "
        f"over {int(counts.sum())} vectors",
        fontsize=9,
    )
    fig.tight_layout()
    return _write(path, _figure_bytes(fig, fmt))
