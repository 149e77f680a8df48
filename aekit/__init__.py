"""aekit: build, train, look inside and debug autoencoders, on PyTorch.

The public surface is exactly what this module re-exports.
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import activations, errors, losses, regularizers, specs
from .errors import (
    AekitError,
    ConfigurationError,
    DataError,
    ModelFileError,
    TrainingDiverged,
)
from .network import Autoencoder
from .saving import load

__all__ = sorted([
    "AekitError",
    "Autoencoder",
    "ConfigurationError",
    "DataError",
    "ModelFileError",
    "TrainingDiverged",
    "__version__",
    "activations",
    "errors",
    "load",
    "losses",
    "regularizers",
    "specs",
])
