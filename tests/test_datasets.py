"""aekit.datasets: embedded sets, MNIST-family readers and their checked downloads."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

import aekit
from aekit import datasets
from aekit.errors import ConfigurationError, DataError

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


def _needs(name: str) -> Path:
    folder = DATA_DIR / name
    if not (folder / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"{name} not found in ../shared/data")
    return folder


def test_digits_is_sklearn_digits_scaled():
    from sklearn.datasets import load_digits

    x, labels = datasets.digits()
    assert x.shape == (1797, 64) and x.dtype == np.float32 and labels.shape == (1797,)
    assert x.min() == 0.0 and x.max() == 1.0
    np.testing.assert_allclose(x * 16, load_digits().data, atol=1e-5)


def test_blobs_are_blurred_one_hots_on_a_diagonal_stripe():
    from scipy.ndimage import gaussian_filter

    x = datasets.blobs()
    positions = list(range(10, 784, 27))
    assert x.shape == (len(positions), 784) == (29, 784) and x.dtype == np.float32
    for row, position in zip(x, positions):
        one_hot = np.zeros((28, 28))
        one_hot.flat[position] = 1
        np.testing.assert_allclose(row, gaussian_filter(one_hot, sigma=2).ravel(), atol=1e-7)
        peak = np.unravel_index(np.argmax(row), (28, 28))
        assert np.abs(np.subtract(peak, divmod(position, 28))).max() <= 1  # the blob sits at its one-hot
    np.testing.assert_allclose(x.sum(axis=1), 1.0, atol=1e-5)  # blurring keeps the mass (reflect mode)


def test_natural_patches_are_normalised_and_reproducible():
    p = datasets.natural_patches(n=500, size=8, rng=0)
    assert p.shape == (500, 64) and p.dtype == np.float32
    assert p.min() >= 0.1 - 1e-6 and p.max() <= 0.9 + 1e-6
    np.testing.assert_array_equal(p, datasets.natural_patches(n=500, size=8, rng=0))
    assert not np.array_equal(p, datasets.natural_patches(n=500, size=8, rng=1))
    raw = datasets.natural_patches(n=300, size=6, rng=0, whiten=False)
    assert raw.shape == (300, 36)

    # Whitening decorrelates neighbouring pixels of natural images.
    def neighbour(a):
        a = a.reshape(-1, 8, 8) if a.shape[1] == 64 else a.reshape(-1, 6, 6)
        return np.corrcoef(a[:, :, :-1].ravel(), a[:, :, 1:].ravel())[0, 1]

    assert neighbour(p) < neighbour(datasets.natural_patches(n=500, size=8, rng=0, whiten=False))


def test_mnist_and_fashion_from_a_folder():
    folder = _needs("mnist")
    x, labels = datasets.mnist(path=folder, split="test")
    assert x.shape == (10000, 784) and x.dtype == np.float32 and labels.dtype == np.int64
    assert 0.0 <= x.min() and x.max() == 1.0
    np.testing.assert_array_equal(np.bincount(labels), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
    reference = np.frombuffer(gzip.open(folder / "t10k-images-idx3-ubyte.gz").read(), np.uint8, offset=16)
    np.testing.assert_allclose(x.ravel(), reference / 255.0, rtol=1e-6)
    fashion = _needs("fashion-mnist")
    fx, flabels = datasets.fashion_mnist(path=fashion, split="test")
    assert fx.shape == (10000, 784)
    np.testing.assert_array_equal(np.bincount(flabels), [1000] * 10)


def test_missing_files_say_how_to_get_them(tmp_path):
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz is not in .*download=True"):
        datasets.mnist(split="test", cache_dir=tmp_path)
    with pytest.raises(ConfigurationError, match="unknown split of mnist 'tst'; did you mean 'test'"):
        datasets.mnist(split="tst", cache_dir=tmp_path)
    with pytest.raises(DataError, match="is not a folder"):
        datasets.mnist(path=tmp_path / "nowhere")
    with pytest.raises(ConfigurationError, match="mnist: path must be a folder path .*, got 3"):
        datasets.mnist(path=3)
    with pytest.raises(ConfigurationError, match=r"fashion-mnist: cache_dir must be a folder path .*, got \['a'\]"):
        datasets.fashion_mnist(cache_dir=["a"])


def test_default_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("AEKIT_DATA", str(tmp_path))
    assert datasets.cache_dir() == tmp_path
    monkeypatch.delenv("AEKIT_DATA")
    assert datasets.cache_dir() == Path.home() / ".cache" / "aekit"


def test_download_checks_sums_and_caches(tmp_path, monkeypatch):
    folder = _needs("mnist")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(folder / name, mirror / name)
    monkeypatch.setitem(datasets.MIRRORS, "mnist", ["http://127.0.0.1:9/", mirror.as_uri() + "/"])
    cache = tmp_path / "cache"
    x, labels = datasets.mnist(split="test", download=True, cache_dir=cache)
    assert x.shape == (10000, 784) and (cache / "mnist" / "t10k-labels-idx1-ubyte.gz").exists()
    # Now cached: no network needed.
    monkeypatch.setitem(datasets.MIRRORS, "mnist", ["http://127.0.0.1:9/"])
    np.testing.assert_array_equal(datasets.mnist(split="test", cache_dir=cache)[1], labels)


def test_download_refuses_a_tampered_file(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\0\0\x08\x03" + bytes(12)))
    monkeypatch.setitem(datasets.MIRRORS, "mnist", [mirror.as_uri() + "/"])
    with pytest.raises(DataError, match="checksum mismatch"):
        datasets.mnist(split="test", download=True, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "mnist" / "t10k-images-idx3-ubyte.gz").exists()


def test_offline_download_is_a_clear_data_error(tmp_path, monkeypatch):
    monkeypatch.setitem(datasets.MIRRORS, "fashion-mnist", ["http://127.0.0.1:9/", "https://nonexistent.invalid/"])
    with pytest.raises(DataError) as info:
        datasets.fashion_mnist(split="train", download=True, cache_dir=tmp_path)
    message = str(info.value)
    assert "could not download train-images-idx3-ubyte.gz" in message
    assert "127.0.0.1:9" in message and "copy the original idx.gz files into" in message
    assert info.value.__cause__ is None and info.value.__context__ is None  # no urllib traceback chained


def test_top_level_names():
    # The public surface is __init__'s sorted __all__, every name importable (DESIGN.md).
    assert aekit.datasets is datasets and aekit.load_data is aekit.loaders.load_data
    assert aekit.__all__ == sorted(aekit.__all__)
    assert {"datasets", "load_data", "preprocessing", "StreamingSource"} <= set(aekit.__all__)
    assert all(getattr(aekit, name) is not None for name in aekit.__all__)
    assert set(aekit.__all__) <= set(dir(aekit))


# ---------------------------------------------------------------------- MNIST-format files written here
def _write_idx(path: Path, array: np.ndarray, compress: bool = True) -> None:
    """An idx file as LeCun's: two zero bytes, type 0x08 (ubyte), ndim, big-endian uint32 sizes, data."""
    assert array.dtype == np.uint8
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    raw = header + array.tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


def _tiny_set(folder: Path, prefix: str, n: int, seed: int, compress: bool = True):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[-1, -1, -1] = 0, 255  # both ends of the scale
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    _write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, compress)
    _write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, compress)
    return images, labels


@pytest.mark.parametrize("loader", [datasets.mnist, datasets.fashion_mnist])
def test_mnist_family_reads_the_train_files_of_a_folder(tmp_path, loader):
    images, labels = _tiny_set(tmp_path, "train", 5, seed=1)
    _tiny_set(tmp_path, "t10k", 3, seed=2)  # the test split lies beside it and must not be read
    x, y = loader(tmp_path, split="train")
    assert x.shape == (5, 784) and x.dtype == np.float32
    assert y.shape == (5,) and y.dtype == np.int64
    # Row i is image i in row-major pixel order, scaled from 0..255 to [0, 1].
    np.testing.assert_allclose(x, images.reshape(5, 784) / 255.0, rtol=1e-7, atol=0)
    assert x.min() == 0.0 and x.max() == 1.0
    np.testing.assert_array_equal(y, labels.astype(np.int64))
    np.testing.assert_array_equal(np.rint(x[2].reshape(28, 28) * 255).astype(np.uint8), images[2])


def test_mnist_family_reads_uncompressed_files_and_the_test_split(tmp_path):
    images, labels = _tiny_set(tmp_path, "t10k", 4, seed=3, compress=False)
    x, y = datasets.mnist(str(tmp_path), split="test")
    np.testing.assert_allclose(x, images.reshape(4, 784) / 255.0, rtol=1e-7, atol=0)
    np.testing.assert_array_equal(y, labels)


def test_mnist_family_refuses_images_and_labels_that_do_not_match(tmp_path):
    _tiny_set(tmp_path, "train", 5, seed=4)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(4, np.uint8))
    with pytest.raises(DataError, match=r"do not match: images \(5, 28, 28\), labels \(4,\)"):
        datasets.fashion_mnist(tmp_path, split="train")
