"""aekit: build, train, look inside and debug autoencoders, on PyTorch.

The public surface is exactly what this module re-exports.
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import activations, conv, errors, losses, regularizers, specs
from .errors import (
    AekitError,
    CheckpointError,
    ConfigurationError,
    DataError,
    ModelFileError,
    TrainingDiverged,
)
from . import report, visualize
from .diagnose import Finding, diagnose
from . import datasets, preprocessing
from . import distributed
from .loaders import load_data
from .network import Autoencoder
from .saving import load
from .streaming import StreamingSource

__all__ = sorted([
    "AekitError",
    "Autoencoder",
    "AutoencoderOutlierDetector",
    "AutoencoderTransformer",
    "CheckpointError",
    "ConfigurationError",
    "DataError",
    "Finding",
    "ModelFileError",
    "StreamingSource",
    "TrainingDiverged",
    "__version__",
    "activations",
    "conv",
    "datasets",
    "diagnose",
    "distributed",
    "errors",
    "load",
    "load_data",
    "losses",
    "preprocessing",
    "regularizers",
    "report",
    "specs",
    "visualize",
])


def __dir__() -> list[str]:
    # The lazily loaded scikit-learn adapters are public too: list them for completion and help().
    return sorted({*globals(), *__all__})


def __getattr__(name: str):
    # The scikit-learn adapters load on first use: scikit-learn is an optional dependency.
    if name in ("AutoencoderOutlierDetector", "AutoencoderTransformer"):
        from . import estimator

        return getattr(estimator, name)
    raise AttributeError(f"module 'aekit' has no attribute {name!r}")
