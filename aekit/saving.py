"""The old home of model files, kept importable.

The format lives in :mod:`aekit.io` and building a model from a file in
:mod:`aekit.autoencoder` (``Autoencoder.from_config``).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from .autoencoder import Autoencoder, load
from .io.atomic import STALE_TEMP_AGE, atomic_write, remove_stale_temporaries
from .io.model_file import FORMAT_VERSION, is_model_file, read_model_file, write_model_file

__all__ = [
    "FORMAT_VERSION",
    "STALE_TEMP_AGE",
    "atomic_write",
    "is_model_file",
    "load",
    "load_model",
    "model_from_file_contents",
    "model_metadata",
    "model_tensors",
    "read_model_file",
    "remove_stale_temporaries",
    "save_model",
    "write_model_file",
]

load_model = load


def model_tensors(net: Autoencoder) -> dict[str, torch.Tensor]:
    """``net.state_tensors()``: the model's parameters and buffers by short name."""
    return net.state_tensors()


def model_metadata(net: Autoencoder) -> dict[str, Any]:
    """``net.file_metadata()``: the JSON-ready description stored beside the tensors."""
    return net.file_metadata()


def save_model(net: Autoencoder, path: str | os.PathLike) -> None:
    """``net.save(path)``."""
    net.save(path)


def model_from_file_contents(tensors: dict[str, torch.Tensor], meta: dict[str, Any], name: str) -> Autoencoder:
    """``Autoencoder.from_file_contents(tensors, meta, name)``."""
    return Autoencoder.from_file_contents(tensors, meta, name)
