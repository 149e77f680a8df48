"""Shared fixtures: small data sets and the optional MNIST files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
MNIST_DIR = DATA_DIR / "mnist"


def read_idx_images(path: Path) -> np.ndarray:
    """Original MNIST idx.gz images as float32 rows in [0, 1]."""
    raw = gzip.open(path).read()
    return np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 784).astype(np.float32) / 255.0


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def mnist():
    """(train, test) MNIST image rows, or skip when ../shared/data is absent."""
    train = MNIST_DIR / "train-images-idx3-ubyte.gz"
    test = MNIST_DIR / "t10k-images-idx3-ubyte.gz"
    if not (train.exists() and test.exists()):
        pytest.skip("MNIST not found in ../shared/data")
    return read_idx_images(train), read_idx_images(test)


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's 8x8 digits scaled to [0, 1]: (x float32 (1797, 64), labels)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return (data.data / 16.0).astype(np.float32), data.target


@pytest.fixture
def rng():
    return np.random.default_rng(0)
