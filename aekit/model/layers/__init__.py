"""Layer forms: the protocol (:mod:`.base`), dense layers and image layers; each registers itself in :data:`LAYERS`."""

from . import conv, dense, fsq, quantize  # noqa: F401  (imported to register their forms)
from .base import LAYERS, Layer, LayerOutput, build_layer, layer_seed, register

__all__ = ["LAYERS", "Layer", "LayerOutput", "build_layer", "layer_seed", "register"]
