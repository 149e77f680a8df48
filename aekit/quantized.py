"""The façade's code indices of quantizer layers (vq, fsq): ``encode(..., codes=True)``, ``decode(indices)``.

Kept out of :mod:`aekit.autoencoder` (one concept per module): the façade calls these functions.

>>> import numpy as np, aekit
>>> net = aekit.Autoencoder([8, (4, 'linear'), dict(form='vq', codebook=16, dim=2, name='vq'), 8], rng=0)
>>> idx = net.encode(np.ones((3, 8), 'float32'), layer='vq', codes=True)
>>> idx.dtype, idx.shape
(dtype('int64'), (3, 2))
>>> net.decode(idx, layer='vq').shape
(3, 8)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .data.checks import to_numpy
from .errors import ConfigurationError, DataError
from .model.layers.quantize import Quantizer

if TYPE_CHECKING:
    from .autoencoder import Autoencoder

__all__ = ["code_indices", "codebook_vectors", "is_code_array", "quantizer", "vectors_from_codes"]


def quantizer(net: Autoencoder, name: str) -> Quantizer:
    """The quantizer layer ``name`` of ``net``.

    Raises
    ------
    ConfigurationError
        When ``name`` is another kind of layer.
    """
    layer = net.graph.layers[name]
    if not isinstance(layer, Quantizer):
        quantizers = [n for n, other in net.graph.layers.items() if isinstance(other, Quantizer)]
        raise ConfigurationError(
            f"codes=True reads the code indices of a quantizer layer (vq or fsq), but layer {name!r} is a "
            f"{layer.spec.form!r} layer; quantizer layers: {quantizers or 'none'}"
        )
    return layer


def code_indices(net: Autoencoder, x: Any, name: str) -> np.ndarray:
    """The int64 code indices of ``x`` at quantizer layer ``name``, shape (n, *grid) (e.g. (n, 7, 7))."""
    quantizer(net, name)
    x, _ = net._split(x)
    return net._run(net._inputs(x), lambda b: net.graph(b, stop=name)[f"{name}:codes"])


def is_code_array(net: Autoencoder, z: Any, name: str) -> bool:
    """Whether ``z`` holds code indices for layer ``name``: an integer array given to a quantizer layer."""
    if not isinstance(net.graph.layers[name], Quantizer):
        return False
    if isinstance(z, torch.Tensor):
        return not (z.is_floating_point() or z.is_complex() or z.dtype == torch.bool)
    dtype = getattr(z, "dtype", None)
    if dtype is None:
        try:
            dtype = np.asarray(z).dtype
        except (TypeError, ValueError):
            return False
    return np.issubdtype(dtype, np.integer)


def vectors_from_codes(net: Autoencoder, z: Any, name: str) -> np.ndarray:
    """The output of quantizer layer ``name`` for code indices ``z`` (n, *grid): float32 (n, *output_shape).

    Raises
    ------
    DataError
        For indices of the wrong shape or out of range.
    """
    layer = quantizer(net, name)
    indices = torch.as_tensor(np.asarray(z.cpu() if isinstance(z, torch.Tensor) else z), dtype=torch.int64)
    try:
        with torch.no_grad():
            return to_numpy(layer.lookup(indices.to(net.device))).astype(np.float32)
    except ConfigurationError as error:
        raise DataError(str(error)) from None


def codebook_vectors(net: Autoencoder, name: str) -> np.ndarray:
    """Every code's output vector of quantizer layer ``name``, float32 (K, width), in index order."""
    layer = quantizer(net, name)
    with torch.no_grad():
        return to_numpy(layer.code_vectors(torch.arange(layer.codebook_size))).astype(np.float32)
