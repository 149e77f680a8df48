"""The old home of training checkpoints, kept importable: see :mod:`aekit.train.checkpoint`.

``load_checkpoint_model`` builds a model, so it lives with the model class in
:mod:`aekit.autoencoder`; everything else is :mod:`aekit.train.checkpoint`'s.
"""

from .autoencoder import load_checkpoint_model
from .train.checkpoint import *  # noqa: F403
from .train.checkpoint import Checkpointer, checkpoint_info, grad_scaler, read_checkpoint

__all__ = ["Checkpointer", "checkpoint_info", "grad_scaler", "load_checkpoint_model", "read_checkpoint"]
