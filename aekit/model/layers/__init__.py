"""Layer forms: the protocol (:mod:`.base`), dense, image and Gaussian latent layers, each in :data:`LAYERS`."""

from . import conv, dense, fsq, gaussian, quantize  # noqa: F401  (imported to register their forms)
from .base import LAYERS, Layer, LayerOutput, build_layer, layer_seed, register

__all__ = ["LAYERS", "Layer", "LayerOutput", "build_layer", "layer_seed", "register"]
