"""Pictures from arrays: image shapes, tile mosaics, and picture files written atomically.

Every function of :mod:`aekit.inspect` that writes a picture writes one file, atomically,
and returns its path.  The path's suffix picks the format: ``.png``, ``.jpg``/``.jpeg``,
``.tif``/``.tiff``, ``.gif``, ``.webp``, ``.pdf``, ``.svg``, ``.eps`` or ``.ps`` (PNG when
there is no suffix); any other suffix, or a folder that does not exist, is a
:class:`~aekit.ConfigurationError` raised before anything is computed.

matplotlib is imported lazily, inside the functions, and only through its
object-oriented API (``matplotlib.figure.Figure``, ``matplotlib.image.imsave``):
pyplot's global state and the user's interactive backend are never touched, so
these functions are safe on headless machines and in notebooks alike.

Tile size: unless ``zoom`` is given, a tile is drawn at least ``MIN_TILE_PIXELS`` = 64
pixels on its longer side (each image pixel a square of an integer size: 8x8 tiles at
64 px, 28x28 at 84 px), less only where the picture would pass 4096 pixels on a side
(:func:`aekit.inspect.grids.default_zoom`).  Pictures of units label every tile with its
unit and grey out dead units (:mod:`aekit.inspect.grids`).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..data.validation import as_array, integer
from ..errors import ConfigurationError, DataError
from ..io.atomic import atomic_write
from .grids import MIN_TILE_PIXELS, default_zoom, grid_canvas, grid_figure, tile_layout

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["MIN_TILE_PIXELS", "image_shape", "save_tiles", "tile_mosaic"]


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


def _data(net: Any, x: Any, max_rows: int | None = None) -> np.ndarray:
    """``x`` (array or tensor) as an array of examples in rows, the first ``max_rows`` of them."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = as_array("x", x)
    if arr.ndim < 2 or arr.shape[0] == 0:
        raise DataError(f"x must hold examples in rows, got shape {arr.shape}")
    return arr if max_rows is None else arr[:max_rows]


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


def _default_zoom(images: np.ndarray, rows: int = 1, cols: int = 1) -> int:
    """The default zoom of tiles of ``images`` (..., H, W) in a grid (see the module docstring)."""
    return default_zoom(images.shape[-2:], rows, cols)


def _labelled_bytes(
    tiles: np.ndarray,
    fmt: str,
    *,
    n_cols: int | None = None,
    zoom: Any = None,
    labels: Sequence[str] | None = None,
    dead: Any = None,
    row_labels: Sequence[str] | None = None,
    dead_rows: Any = None,
    title: str | None = None,
) -> bytes:
    """A labelled grid (:mod:`aekit.inspect.grids`) of ``tiles`` (values in [0, 1]) as a file of format ``fmt``.

    ``tiles`` is (n, H, W) grey or (n, H, W, 3) colour.
    """
    shape = tiles.shape[1:3]
    rows, cols = _grid(len(tiles), n_cols)
    zoom = integer("zoom", default_zoom(shape, rows, cols) if zoom is None else zoom, 1)
    layout = tile_layout(len(tiles), shape, cols, zoom, row_labels=row_labels, title=title, labels=labels is not None)
    _check_pixels(layout.width * layout.height)
    canvas = grid_canvas(tiles, layout, zoom, dead)
    fig = grid_figure(canvas, layout, labels, dead=dead, row_labels=row_labels, dead_rows=dead_rows, title=title)
    return _figure_bytes(fig, fmt)


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


def _figure_bytes(fig: Figure, fmt: str) -> bytes:
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
    *,
    dead: Any = None,
    title: str | None = None,
) -> str:
    """Write a grid of image tiles to a picture file (see :func:`tile_mosaic`).

    Parameters
    ----------
    images : array, shape (n, H, W), (n, C, H, W) or (n, features)
    path : str or path
        Its suffix picks the format (see the module docstring).
    n_cols, border, normalize
        As :func:`tile_mosaic` (a labelled grid has its own spacing: ``border`` is for bare mosaics).
    titles : sequence of str, optional
        One caption per tile, written above it.
    zoom : int, optional
        Integer upscaling of each image pixel (default: the module docstring's rule, tiles
        at least 64 px).  A bare mosaic (no ``titles``, ``dead`` or ``title``) is exactly
        ``zoom`` times :func:`tile_mosaic`'s size.
    dead : sequence of bool, optional
        Tiles of dead units: drawn greyed out, their caption (the tile's index when there are
        no ``titles``) marked "dead" in red.
    title : str, optional
        A line above the grid (e.g. "first 16 of 32 units").

    Returns
    -------
    str
        ``path``.
    """
    fmt = _picture_format(path)
    imgs = _prepare_tiles(images)
    if titles is None and dead is None and title is None:
        if zoom is None:
            zoom = _default_zoom(imgs, *_grid(imgs.shape[0], n_cols))
        return _write(path, _mosaic_bytes(tile_mosaic(imgs, n_cols, border, normalize), zoom, fmt))
    n = imgs.shape[0]
    if titles is not None:
        try:
            titles = [str(caption) for caption in titles]
        except TypeError:
            raise ConfigurationError(f"titles must be a sequence of one caption per image, got {titles!r}") from None
        if len(titles) != n:
            raise ConfigurationError(f"titles must have one entry per image ({n}), got {len(titles)}")
    mask = None
    if dead is not None:
        mask = np.asarray(dead, dtype=bool).reshape(-1)
        if mask.shape != (n,):
            raise ConfigurationError(f"dead must have one entry per image ({n}), got {mask.size}")
    labels = list(titles) if titles is not None else [str(k) for k in range(n)]
    if mask is not None:
        labels = [f"{label} dead" if is_dead else label for label, is_dead in zip(labels, mask)]
    tiles = _normalise_tiles(imgs, normalize)
    if tiles.ndim == 4:
        tiles = tiles.transpose(0, 2, 3, 1)
    return _write(
        path,
        _labelled_bytes(tiles, fmt, n_cols=n_cols, zoom=zoom, labels=labels, dead=mask, title=title),
    )
