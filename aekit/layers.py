"""The old home of the layer classes, kept importable: see :mod:`aekit.model.layers`."""

from .model.layers.base import (  # noqa: F401
    LAYER_CLASSES,
    LAYERS,
    Input,
    Layer,
    LayerOutput,
    build_layer,
    default_std,
    layer_seed,
    random_matrix,
    register,
)
from .model.layers.dense import Dense, Flatten, Reshape, Tied  # noqa: F401

__all__ = [
    "LAYERS",
    "LAYER_CLASSES",
    "Dense",
    "Flatten",
    "Input",
    "Layer",
    "LayerOutput",
    "Reshape",
    "Tied",
    "build_layer",
    "default_std",
    "layer_seed",
    "random_matrix",
    "register",
]
