"""Named data sets: the embedded digits, MNIST, Fashion-MNIST, natural-image patches and blobs.

Nothing here needs the network unless asked: :func:`digits` ships with
scikit-learn, :func:`natural_patches` uses the images bundled with
scikit-image, :func:`blobs` is computed.  :func:`mnist` and
:func:`fashion_mnist` read the original idx.gz files from a folder (``path``,
or the cache folder ``~/.cache/aekit/<name>``; set ``AEKIT_DATA`` to move the
cache) and only download them with ``download=True``, checking each file's
published SHA-256 and MD5 sums before it is stored.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigurationError, DataError, unknown_name_error
from .loaders import read_idx

__all__ = ["blobs", "cache_dir", "digits", "fashion_mnist", "mnist", "natural_patches"]

log = logging.getLogger(__name__)

# (file name, sha256, md5) of the files their authors published.
_FILES = {
    "mnist": {
        "train-images": (
            "train-images-idx3-ubyte.gz",
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        ),
        "train-labels": (
            "train-labels-idx1-ubyte.gz",
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "d53e105ee54ea40749a09fcbcd1e9432",
        ),
        "test-images": (
            "t10k-images-idx3-ubyte.gz",
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "9fb629c4189551a2d022fa330f9573f3",
        ),
        "test-labels": (
            "t10k-labels-idx1-ubyte.gz",
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            "ec29112dd5afa0611ce80d1b7f02629c",
        ),
    },
    "fashion-mnist": {
        "train-images": (
            "train-images-idx3-ubyte.gz",
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        ),
        "train-labels": (
            "train-labels-idx1-ubyte.gz",
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "25c81989df183df01b3e8a0aad5dffbe",
        ),
        "test-images": (
            "t10k-images-idx3-ubyte.gz",
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "bef4ecab320f06d8554ea6380940ec79",
        ),
        "test-labels": (
            "t10k-labels-idx1-ubyte.gz",
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            "bb300cfdad3c16e7a12a480ee83cd310",
        ),
    },
}

# Tried in order; the files are identical everywhere (the checksums say so).
MIRRORS = {
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/"],
    "fashion-mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
}

_TIMEOUT = 30.0


def cache_dir() -> Path:
    """The default data folder: ``$AEKIT_DATA`` or ``~/.cache/aekit``."""
    root = os.environ.get("AEKIT_DATA")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "aekit"


# ------------------------------------------------------------------ embedded
def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 handwritten digits (the embedded default data set).

    Returns
    -------
    x : ndarray, float32, shape (1797, 64)
        Pixel values scaled from 0..16 to [0, 1].
    labels : ndarray, int64, shape (1797,)
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - scikit-learn is in the 'sklearn' extra
        raise DataError("digits() needs scikit-learn: pip install 'aekit[sklearn]'") from None
    data = load_digits()
    return (data.data / 16.0).astype(np.float32), data.target.astype(np.int64)


def blobs() -> np.ndarray:
    """Gaussian blobs along a diagonal stripe of 28x28 images (the classic theanets example).

    One-hot images at pixels 10, 37, 64, ... (every 27th of the 784, from the
    10th), each blurred with a Gaussian of sigma 2 pixels.

    Returns
    -------
    ndarray, float32, shape (29, 784)
    """
    from scipy.ndimage import gaussian_filter

    positions = np.arange(10, 784, 27)
    flat = np.zeros((len(positions), 784))
    flat[np.arange(len(positions)), positions] = 1.0
    images = flat.reshape(-1, 28, 28)
    blurred = np.stack([gaussian_filter(img, sigma=2) for img in images])
    return blurred.reshape(len(positions), 784).astype(np.float32)


# Grayscale images bundled with scikit-image (no download needed).
_SKIMAGE_IMAGES = ("camera", "moon", "grass", "gravel", "brick", "coins")


def natural_patches(n: int = 10000, size: int = 8, rng: Any = 0, whiten: bool = True) -> np.ndarray:
    """Patches of natural images, UFLDL-style, from scikit-image's bundled grayscale pictures.

    The images (camera, moon, grass, gravel, brick, coins) are optionally
    whitened in the frequency domain (:func:`aekit.preprocessing.whiten_images`,
    the recipe of UFLDL's ``IMAGES.mat``), then ``n`` patches are sampled and
    normalised to [0.1, 0.9] (:func:`aekit.preprocessing.extract_patches`).

    Returns
    -------
    ndarray, float32, shape (n, size * size)
    """
    from .patches import extract_patches, whiten_images

    try:
        import skimage.data as skdata
    except ImportError:  # pragma: no cover - scikit-image is in the 'images' extra
        raise DataError("natural_patches() needs scikit-image: pip install 'aekit[images]'") from None
    images = []
    for name in _SKIMAGE_IMAGES:
        try:
            img = np.asarray(getattr(skdata, name)(), dtype=np.float64) / 255.0
        except Exception as error:  # a build without the file would try to download it
            log.warning("natural_patches: skipping skimage.data.%s (%s)", name, error)
            continue
        images.append(whiten_images(img)[0] if whiten else img)
    if not images:
        raise DataError("natural_patches(): none of scikit-image's bundled images could be read")
    return extract_patches(images, size=size, n=n, rng=rng)


# ------------------------------------------------------------------ MNIST family
def mnist(
    path: str | os.PathLike | None = None,
    split: str = "train",
    download: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """MNIST handwritten digits from the original idx files.

    Parameters
    ----------
    path : str or path-like, optional
        A folder holding ``train-images-idx3-ubyte.gz`` etc. (gzipped or not).
        Default: ``<cache_dir>/mnist``.
    split : {'train', 'test'}
    download : bool
        Fetch missing files into ``<cache_dir>/mnist`` (checksums verified).
    cache_dir : str or path-like, optional
        Default: :func:`cache_dir` (``$AEKIT_DATA`` or ``~/.cache/aekit``).

    Returns
    -------
    x : ndarray, float32, shape (60000 or 10000, 784), in [0, 1]
    labels : ndarray, int64, shape (n,)
    """
    return _idx_dataset("mnist", path, split, download, cache_dir)


def fashion_mnist(
    path: str | os.PathLike | None = None,
    split: str = "train",
    download: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Zalando's Fashion-MNIST, same layout and arguments as :func:`mnist`."""
    return _idx_dataset("fashion-mnist", path, split, download, cache_dir)


def _idx_dataset(name: str, path, split: str, download: bool, root) -> tuple[np.ndarray, np.ndarray]:
    if split not in ("train", "test"):
        raise unknown_name_error(f"split of {name}", str(split), ("train", "test"))
    for key, value in (("path", path), ("cache_dir", root)):
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise ConfigurationError(f"{name}: {key} must be a folder path (str or path-like), got {value!r}")
    if path is not None:
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise DataError(f"{name}: path {str(folder)!r} is not a folder")
    else:
        folder = (Path(root).expanduser() if root is not None else cache_dir()) / name
    arrays = []
    for part in ("images", "labels"):
        filename, sha256, md5 = _FILES[name][f"{split}-{part}"]
        file = _find(folder, filename)
        if file is None:
            if not download:
                raise DataError(
                    f"{name}: {filename} is not in {str(folder)!r}; pass download=True to fetch it "
                    f"(about 10-30 MB, checksums verified), or path= a folder holding the original idx files"
                )
            if path is not None:
                folder = (Path(root).expanduser() if root is not None else cache_dir()) / name
            file = _download(name, filename, sha256, md5, folder)
        arrays.append(read_idx(file))
    images, labels = arrays
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{name} files in {str(folder)!r} do not match: images {images.shape}, labels {labels.shape}")
    x = images.reshape(len(images), -1).astype(np.float32) / 255.0
    return x, labels.astype(np.int64)


def _find(folder: Path, filename: str) -> Path | None:
    for candidate in (folder / filename, folder / filename.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _download(name: str, filename: str, sha256: str, md5: str, folder: Path) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"{name}: cannot create the cache folder {str(folder)!r}: {error}") from None
    failures = []
    for mirror in MIRRORS[name]:
        url = mirror + filename
        log.info("downloading %s", url)
        try:
            with urllib.request.urlopen(url, timeout=_TIMEOUT) as response:  # noqa: S310 - fixed https/http URLs
                data = response.read()
        except (TimeoutError, urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
            reason = getattr(error, "reason", None) or error
            failures.append(f"{url}: {reason}")
            continue
        got_sha, got_md5 = hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest()  # noqa: S324
        if got_sha != sha256 or got_md5 != md5:
            failures.append(f"{url}: checksum mismatch (sha256 {got_sha[:16]}..., expected {sha256[:16]}...)")
            continue
        target = folder / filename
        tmp = folder / f".{filename}.part"
        try:
            tmp.write_bytes(data)
            os.replace(tmp, target)
        except OSError as error:
            raise DataError(f"{name}: cannot write {str(target)!r}: {error}") from None
        return target
    raise DataError(
        f"{name}: could not download {filename} ({'; '.join(failures)}). Without network access, copy the "
        f"original idx.gz files into {str(folder)!r} or pass path= a folder holding them"
    )
