"""aekit: build, train, look inside and debug autoencoders, on PyTorch.

The public surface is exactly what this module re-exports.  The package is laid out
by stage of the data flow (see docs/architecture.md): ``data`` -> ``model`` ->
``objective`` -> ``train`` -> the :class:`Autoencoder` facade, with ``io`` for files,
``inspect`` for looking inside and ``cli`` for the command line.  The module paths of
earlier versions (``aekit.network``, ``aekit.training``, ...) still import.
"""

from __future__ import annotations

import sys

from . import errors, visualize
from ._version import __version__
from .autoencoder import Autoencoder, load
from .data import datasets, preprocessing
from .data.loaders import load_data
from .data.sources import StreamingSource
from .errors import (
    AekitError,
    AekitWarning,
    CheckpointError,
    ConfigurationError,
    DataError,
    EarlyStoppingWarning,
    ModelFileError,
    OutputRangeWarning,
    TrainingDiverged,
)
from .inspect import diagnose as _diagnose_module
from .inspect import report
from .inspect.diagnose import Finding, diagnose
from .inspect.evaluation import evaluate
from .model import activations, specs
from .model.layers import conv
from .objective import losses
from .objective import penalties as regularizers
from .train import distributed

# ``aekit.diagnose`` is the function; its old module path is registered here rather than in an
# alias file, because importing such a file would rebind the package attribute to the module.
sys.modules.setdefault(__name__ + ".diagnose", _diagnose_module)

__all__ = [
    "AekitError",
    "AekitWarning",
    "Autoencoder",
    "AutoencoderOutlierDetector",
    "AutoencoderTransformer",
    "CheckpointError",
    "ConfigurationError",
    "DataError",
    "EarlyStoppingWarning",
    "Finding",
    "ModelFileError",
    "OutputRangeWarning",
    "StreamingSource",
    "TrainingDiverged",
    "__version__",
    "activations",
    "conv",
    "datasets",
    "diagnose",
    "distributed",
    "errors",
    "evaluate",
    "load",
    "load_data",
    "losses",
    "preprocessing",
    "regularizers",
    "report",
    "specs",
    "visualize",
]


def __dir__() -> list[str]:
    # The lazily loaded scikit-learn adapters are public too: list them for completion and help().
    return sorted({*globals(), *__all__})


def __getattr__(name: str) -> object:
    # The scikit-learn adapters load on first use: scikit-learn is an optional dependency.
    if name in ("AutoencoderOutlierDetector", "AutoencoderTransformer"):
        from . import estimator

        return getattr(estimator, name)
    raise AttributeError(f"module 'aekit' has no attribute {name!r}")
