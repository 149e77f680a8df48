"""Labelled grids of tiles: every tile named, dead units greyed, rows labelled, a title.

The pictures of units (feature pictures, top inputs, reconstructions) are grids of small
images.  Drawn as a bare mosaic they mislead: a dead unit's tile, contrast-stretched, looks
like a feature, nothing says which unit a tile is, and nothing says that units were left out.
A labelled grid is laid out in pixels (:func:`tile_layout`), so a tile keeps its exact pixels
(each image pixel a ``zoom`` x ``zoom`` square), and drawn with matplotlib's object-oriented API
(:func:`grid_figure`):

* a band of ``LABEL_PX`` pixels above each row of tiles holds each tile's label (its unit);
* a dead tile (:func:`grey_out`) is drawn at low contrast on light grey, and its label, in red,
  says "dead";
* row labels, when given, sit in a band on the left (e.g. "input" / "reconstruction");
* a title, when given, in a band of ``TITLE_PX`` pixels on top (e.g. "first 16 of 32 units").

Default zoom (:func:`default_zoom`): the smallest integer that makes a tile at least
``MIN_TILE_PIXELS`` = 64 pixels on its longer side (8x8 tiles 64 px, 28x28 tiles 84 px), lowered
(never below 1) while the picture would be more than ``MAX_PICTURE_SIDE`` = 4096 pixels on a side.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "MAX_PICTURE_SIDE",
    "MIN_TILE_PIXELS",
    "TileLayout",
    "default_zoom",
    "grey_out",
    "grid_canvas",
    "grid_figure",
    "tile_layout",
]

MIN_TILE_PIXELS = 64
MAX_PICTURE_SIDE = 4096
LABEL_PX = 14  # the band above each row of tiles that holds their labels
GAP_PX = 4  # between tiles, and around the grid
TITLE_PX = 24  # the band that holds the title
CHAR_PX = 7  # the width of a character of a row label (8-point text at 100 dpi, with room)
DPI = 100
DEAD_COLOUR = "#c62828"
# A dead tile keeps a hint of its picture: values mapped from [0, 1] into [0.75, 0.85].
DEAD_LEVEL, DEAD_CONTRAST = 0.8, 0.1


def default_zoom(tile_shape: Sequence[int], rows: int = 1, cols: int = 1) -> int:
    """The zoom of the module docstring's rule, for a grid of ``rows`` x ``cols`` tiles of ``(H, W)``.

    Examples
    --------
    >>> default_zoom((8, 8)), default_zoom((28, 28)), default_zoom((100, 100)), default_zoom((8, 8), 1, 100)
    (8, 3, 1, 4)
    """
    h, w = (int(s) for s in tile_shape[-2:])
    zoom = max(1, math.ceil(MIN_TILE_PIXELS / max(h, w)))
    side = max(rows * (h + 1), cols * (w + 1))  # image pixels per side, a 1-pixel gap per tile
    return max(1, min(zoom, MAX_PICTURE_SIDE // max(side, 1)))


@dataclasses.dataclass(frozen=True)
class TileLayout:
    """Where each tile of a labelled grid lies, in pixels of the written picture.

    Attributes
    ----------
    n, rows, cols : int
        Tiles, and the grid's rows and columns (tile ``k`` is at row ``k // cols``).
    tile_h, tile_w : int
        A tile's size in pixels (zoom included).
    left, top : int
        Pixels of the row-label band on the left and of the title band on top.
    label_h : int
        Pixels of the label band above each row of tiles (0 without tile labels).
    min_width : int
        The width the title needs.
    """

    n: int
    rows: int
    cols: int
    tile_h: int
    tile_w: int
    left: int
    top: int
    label_h: int
    min_width: int = 0

    @property
    def width(self) -> int:
        """The picture's width in pixels."""
        return max(self.left + self.cols * (self.tile_w + GAP_PX) + GAP_PX, self.min_width)

    @property
    def height(self) -> int:
        """The picture's height in pixels."""
        return self.top + self.rows * (self.label_h + self.tile_h + GAP_PX) + GAP_PX

    def box(self, k: int) -> tuple[int, int, int, int]:
        """``(top, left, bottom, right)`` of tile ``k``: its pixels are ``picture[top:bottom, left:right]``."""
        r, c = divmod(k, self.cols)
        top = self.top + GAP_PX + r * (self.label_h + self.tile_h + GAP_PX) + self.label_h
        left = self.left + GAP_PX + c * (self.tile_w + GAP_PX)
        return top, left, top + self.tile_h, left + self.tile_w


def tile_layout(
    n: int,
    tile_shape: Sequence[int],
    n_cols: int | None = None,
    zoom: int = 1,
    *,
    row_labels: Sequence[str] | None = None,
    title: str | None = None,
    labels: bool = True,
) -> TileLayout:
    """The :class:`TileLayout` of ``n`` tiles of ``tile_shape`` (``(H, W)``), ``n_cols`` per row (None: square-ish)."""
    cols = int(math.ceil(math.sqrt(n))) if n_cols is None else int(n_cols)
    cols = max(1, min(cols, n))
    rows = int(math.ceil(n / cols))
    h, w = (int(s) for s in tile_shape[-2:])
    left = (CHAR_PX * max(len(label) for label in row_labels) + 2 * GAP_PX) if row_labels else 0
    top = TITLE_PX if title else 0
    min_width = CHAR_PX * len(title) + 2 * GAP_PX if title else 0
    return TileLayout(n, rows, cols, h * zoom, w * zoom, left, top, LABEL_PX if labels else 0, min_width)


def grey_out(tiles: np.ndarray) -> np.ndarray:
    """Tiles (values in [0, 1]) as a dead unit's: light grey at low contrast (``[0.75, 0.85]``)."""
    return DEAD_LEVEL + DEAD_CONTRAST * (np.asarray(tiles, dtype=np.float64) - 0.5)


def grid_canvas(
    tiles: np.ndarray, layout: TileLayout, zoom: int, dead: Sequence[bool] | np.ndarray | None = None
) -> np.ndarray:
    """The picture's pixels, (height, width, 3) in [0, 1]: tiles on white, dead ones greyed out.

    ``tiles`` holds values in [0, 1], (n, H, W) grey or (n, H, W, 3) colour.
    """
    canvas = np.ones((layout.height, layout.width, 3))
    dead_mask = np.zeros(layout.n, dtype=bool) if dead is None else np.asarray(dead, dtype=bool)
    for k in range(layout.n):
        tile = np.clip(np.asarray(tiles[k], dtype=np.float64), 0.0, 1.0)
        if dead_mask[k]:
            tile = grey_out(tile)
        if tile.ndim == 2:
            tile = np.repeat(tile[..., None], 3, axis=2)
        tile = np.repeat(np.repeat(tile, zoom, axis=0), zoom, axis=1)
        top, left, bottom, right = layout.box(k)
        canvas[top:bottom, left:right] = tile
    return canvas


def grid_figure(
    canvas: np.ndarray,
    layout: TileLayout,
    labels: Sequence[str] | None = None,
    *,
    dead: Any = None,
    row_labels: Sequence[str] | None = None,
    dead_rows: Any = None,
    title: str | None = None,
) -> Figure:
    """A figure of exactly the canvas's pixels, with the labels written in their bands.

    Labels of dead tiles (and row labels of dead rows) are red.  The figure keeps ``layout``
    as its ``tile_layout`` attribute (where each tile is, for whoever checks the picture).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(layout.width / DPI, layout.height / DPI), dpi=DPI)
    fig.tile_layout = layout  # type: ignore[attr-defined]
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.imshow(canvas, interpolation="nearest", extent=(0, layout.width, layout.height, 0))
    ax.set_xlim(0, layout.width)
    ax.set_ylim(layout.height, 0)
    ax.axis("off")
    dead_mask = np.zeros(layout.n, dtype=bool) if dead is None else np.asarray(dead, dtype=bool)
    for k, label in enumerate(labels or []):
        top, left, _, _ = layout.box(k)
        colour = DEAD_COLOUR if dead_mask[k] else "black"
        ax.text(left, top - 2, label, fontsize=7, color=colour, ha="left", va="bottom", clip_on=False)
    row_dead = np.zeros(layout.rows, dtype=bool) if dead_rows is None else np.asarray(dead_rows, dtype=bool)
    for r, label in enumerate(row_labels or []):
        top, _, bottom, _ = layout.box(r * layout.cols)
        colour = DEAD_COLOUR if row_dead[r] else "black"
        ax.text(layout.left - GAP_PX, (top + bottom) / 2, label, fontsize=8, color=colour, ha="right", va="center")
    if title:
        ax.text(GAP_PX, TITLE_PX / 2, title, fontsize=9, ha="left", va="center")
    return fig
