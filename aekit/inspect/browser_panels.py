"""The per-unit panels of the unit browser, in a registry that other model families extend.

A panel is a function ``panel(ctx) -> list[dict] | None``: given a :class:`PanelContext` (the
model, the layer browsed, its units, whether the data are images), it returns one JSON-ready dict
per unit, or None when it does not apply to this model.  The page draws every panel of a unit's
card in the order of :data:`PANELS`; the dicts take one of the kinds the page knows:

* ``{"title": str, "kind": "images", "images": [picture, ...], "captions": [str, ...]}``, where a
  picture is :func:`picture` of a 2-D (grey) or ``(3, H, W)`` (colour) array;
* ``{"title": str, "kind": "text", "text": str}``;
* ``{"title": str, "kind": "bars", "names": [str, ...], "values": [float, ...]}``.

Every string is shown as text (the page never parses a panel's strings as HTML).  A family with
something of its own to show -- a VAE's latent traversals, what each code of a VQ layer decodes
to -- registers one function::

    from aekit.inspect.browser_panels import PANELS

    @PANELS.register("traversal")
    def traversal(ctx):
        if not has_gaussian_layer(ctx.net):
            return None
        return [{"title": "traversal", "kind": "images", "images": [...], "captions": [...]}
                for unit in range(ctx.units)]

The built-in panels are the unit's encoder picture (the input that drives it most) and decoder
picture (what it draws at the output), for image data (:mod:`aekit.inspect.features`), and, for
a VAE's gaussian layer, the latent's traversal: the decoder's output as the latent goes from -3
to +3 with the others at the data's average posterior mean; for a quantizer layer (vq, fsq),
whose units are its codes, what each code decodes to.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import AekitError
from ..registry import Registry
from .features import feature_images
from .pictures import _as_images, _normalise_tiles

if TYPE_CHECKING:
    from ..autoencoder import Autoencoder

__all__ = ["PANELS", "PanelContext", "picture"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class PanelContext:
    """What a panel function is given.

    Attributes
    ----------
    net : Autoencoder
    layer : str
        The layer browsed.
    units : int
        Its number of units (channels for image-shaped layers).
    images : bool
        Whether the model's inputs are pictures (so pictures of units make sense).
    sample : ndarray
        Evenly spaced rows of the data (at most ``MAX_SAMPLES``), in the model's input shape.
    """

    net: Autoencoder
    layer: str
    units: int
    images: bool
    sample: np.ndarray


PanelFunction = Callable[[PanelContext], "list[dict[str, Any]] | None"]
PANELS: Registry[PanelFunction] = Registry("browser panel")


def picture(values: Any) -> dict[str, Any]:
    """A picture for the page: values in [0, 1] as 8-bit pixels, base64, with their shape.

    Parameters
    ----------
    values : array-like, shape (H, W) or (3, H, W)
        Grey or RGB values in [0, 1] (clipped).

    Returns
    -------
    dict
        ``{"h": H, "w": W, "c": 1 or 3, "data": base64 of the H*W*c bytes, row by row}``.

    Examples
    --------
    >>> picture(np.array([[0.0, 1.0]]))
    {'h': 1, 'w': 2, 'c': 1, 'data': 'AP8='}
    """
    a = np.asarray(values, dtype=np.float64)
    if a.ndim == 3 and a.shape[0] == 3:
        a = a.transpose(1, 2, 0)
    elif a.ndim == 3:
        a = a.mean(axis=0)
    pixels = np.round(np.clip(np.nan_to_num(a), 0.0, 1.0) * 255).astype(np.uint8)
    channels = 3 if pixels.ndim == 3 else 1
    return {
        "h": int(pixels.shape[0]),
        "w": int(pixels.shape[1]),
        "c": channels,
        "data": base64.b64encode(np.ascontiguousarray(pixels).tobytes()).decode("ascii"),
    }


def _tiles(features: np.ndarray) -> list[list[dict[str, Any]]]:
    """Per unit, its feature as pictures: one per input channel unless it has 1 or 3 channels."""
    per_unit: list[list[np.ndarray]] = []
    for feature in features:
        if feature.ndim == 3 and feature.shape[0] != 3:
            per_unit.append(list(feature))
        else:
            per_unit.append([feature])
    flat = np.stack([tile for tiles in per_unit for tile in tiles])
    scaled = _normalise_tiles(flat, "tile")
    out: list[list[dict[str, Any]]] = []
    at = 0
    for tiles in per_unit:
        out.append([picture(scaled[at + i]) for i in range(len(tiles))])
        at += len(tiles)
    return out


def _feature_panel(kind: str, title: str, caption: str) -> PanelFunction:
    def panel(ctx: PanelContext) -> list[dict[str, Any]] | None:
        if not ctx.images:
            return None
        try:
            # Encoder pictures by gradient ascent would cost `steps` passes per unit: only the analytic ones.
            method = "analytic" if kind == "encoder" else "auto"
            features = feature_images(ctx.net, ctx.layer, kind, method=method)
        except (AekitError, ValueError, RuntimeError) as error:
            log.info("browser: %s pictures of %r skipped: %s", kind, ctx.layer, error)
            return None
        if len(features) != ctx.units:
            return None
        return [
            {"title": title, "kind": "images", "images": tiles, "captions": [caption] * len(tiles)}
            for tiles in _tiles(features)
        ]

    return panel


PANELS.register(
    "encoder",
    _feature_panel("encoder", "encoder picture", "the norm-1 input that drives the unit most"),
)
PANELS.register(
    "decoder",
    _feature_panel("decoder", "decoder picture", "what the unit draws: decode(e_i) - decode(0)"),
)


# A gaussian latent's traversal: the values given to the latent, in standard deviations of the prior.
TRAVERSAL = (-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0)


def _traversal_panel(ctx: PanelContext) -> list[dict[str, Any]] | None:
    """For a VAE's gaussian layer: what the decoder draws as one latent moves through ``TRAVERSAL``.

    The other latents stay at the average posterior mean of the sampled rows, so each row of
    pictures shows what that one latent changes (an inactive latent's row does not change).
    """
    net = ctx.net
    if not ctx.images or ctx.layer not in getattr(net, "latent_layers", ()):
        return None
    base = np.asarray(net.encode(ctx.sample, layer=ctx.layer), dtype=np.float64).mean(axis=0)
    if base.ndim != 1 or base.shape[0] != ctx.units:
        return None  # a per-position (conv) latent: no single direction per unit
    steps = len(TRAVERSAL)
    z = np.repeat(base[None], ctx.units * steps, axis=0).reshape(ctx.units, steps, -1)
    z[np.arange(ctx.units), :, np.arange(ctx.units)] = TRAVERSAL
    drawn = net.decode(z.reshape(ctx.units * steps, -1).astype(np.float32), layer=ctx.layer)
    images = _normalise_tiles(_as_images(drawn, net.graph.input_shape), "global")
    captions = [f"z{u} = {t:+g}" for u in range(ctx.units) for t in TRAVERSAL]
    return [
        {
            "title": "latent traversal",
            "kind": "images",
            "images": [picture(images[u * steps + i]) for i in range(steps)],
            "captions": captions[u * steps : (u + 1) * steps],
        }
        for u in range(ctx.units)
    ]


PANELS.register("traversal", _traversal_panel)


def _code_panel(ctx: PanelContext) -> list[dict[str, Any]] | None:
    """For a quantizer layer browsed code by code: what the code decodes to (a grid filled with it)."""
    size = getattr(ctx.net.graph.layers[ctx.layer], "codebook_size", None)
    if not ctx.images or size is None or int(size) != ctx.units:
        return None
    from .codebook_pictures import code_images  # the quantizer pictures, only for models that have one

    drawn = code_images(ctx.net, ctx.layer, max_codes=ctx.units)
    images = _normalise_tiles(_as_images(drawn, ctx.net.graph.input_shape), None)
    return [
        {"title": "code decodes to", "kind": "images", "images": [picture(image)], "captions": [f"code {u}"]}
        for u, image in enumerate(images)
    ]


PANELS.register("code", _code_panel)
