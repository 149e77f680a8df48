"""Image patches for patch-based models: sampled patches, UFLDL's normalisation, whitened images.

:func:`extract_patches` samples square windows of images (UFLDL's ``sampleIMAGES``) and
:func:`normalize_patches` applies UFLDL's per-patch normalisation; :func:`whiten_images`
flattens the spectrum of natural images as Olshausen and Field did.  The functions are
also public as ``aekit.preprocessing.extract_patches`` and so on.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import ConfigurationError, DataError

__all__ = ["extract_patches", "normalize_patches", "whiten_images"]


def _generator(rng: Any) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def extract_patches(images: Any, size: int = 8, n: int = 10000, rng: Any = 0, normalize: bool = True) -> np.ndarray:
    """Sample ``n`` square patches at random places of random images (UFLDL's ``sampleIMAGES``).

    Parameters
    ----------
    images : array-like, shape (m, H, W), (H, W) or (m, C, H, W); or a list of images of different sizes
    size : int
        Patch side in pixels.
    n : int
        Number of patches.
    rng : int or numpy Generator
    normalize : bool
        UFLDL's normalisation: remove each patch's mean, truncate to +/-3
        standard deviations (of all patches), rescale to [0.1, 0.9] -- a range
        that suits sigmoid outputs.

    Returns
    -------
    ndarray, float32, shape (n, size * size) or (n, C * size * size)
        Rows reshape to (size, size) or (C, size, size) images.
    """
    if not isinstance(size, int) or size < 1 or not isinstance(n, int) or n < 1:
        raise ConfigurationError(f"size and n must be positive integers, got size={size!r}, n={n!r}")
    gen = _generator(rng)
    if isinstance(images, (list, tuple)) and images and all(np.ndim(i) >= 2 for i in images):
        # Images of different sizes: draw each patch's image, then sample inside each.
        parts = [_image_stack(img) for img in images]
        counts = np.bincount(gen.integers(len(parts), size=n), minlength=len(parts))
        patches = np.concatenate([_sample(part, size, int(c), gen) for part, c in zip(parts, counts) if c])
        patches = patches[gen.permutation(n)]
    else:
        patches = _sample(_image_stack(images), size, n, gen)
    if normalize:
        patches = normalize_patches(patches)
    return patches.astype(np.float32)


def normalize_patches(patches: Any) -> np.ndarray:
    """UFLDL's patch normalisation: per-patch mean removed, +/-3 std truncated, rescaled to [0.1, 0.9].

    Parameters
    ----------
    patches : array-like, shape (n, pixels)

    Returns
    -------
    ndarray, float64, shape (n, pixels)
    """
    patches = np.array(patches, dtype=np.float64).reshape(len(patches), -1)
    patches -= patches.mean(axis=1, keepdims=True)
    limit = 3.0 * patches.std()
    if limit > 0:
        patches = np.clip(patches, -limit, limit) / limit
    return (patches + 1.0) * 0.4 + 0.1


def _image_stack(images: Any) -> np.ndarray:
    array = np.asarray(images)
    if array.dtype == object or not np.issubdtype(array.dtype, np.number) and array.dtype != np.bool_:
        raise DataError(f"images must be numeric, got dtype {array.dtype}")
    if array.ndim == 2:
        array = array[None]
    if array.ndim not in (3, 4):
        raise DataError(f"images must have shape (m, H, W), (H, W) or (m, C, H, W), got {array.shape}")
    return array


def _sample(array: np.ndarray, size: int, n: int, gen: np.random.Generator) -> np.ndarray:
    height, width = array.shape[-2:]
    if size > height or size > width:
        raise DataError(f"patches of {size}x{size} do not fit in images of {height}x{width}")
    which = gen.integers(array.shape[0], size=n)
    rows = gen.integers(height - size + 1, size=n)
    cols = gen.integers(width - size + 1, size=n)
    windows = np.lib.stride_tricks.sliding_window_view(array, (size, size), axis=(-2, -1))
    if array.ndim == 3:
        patches = windows[which, rows, cols]  # (n, size, size)
    else:
        patches = windows[which, :, rows, cols]  # (n, C, size, size)
    return patches.reshape(n, -1).astype(np.float64)


def whiten_images(images: Any, f0: float = 0.4) -> np.ndarray:
    """Whiten natural images in the frequency domain (Olshausen & Field's recipe behind UFLDL's IMAGES.mat).

    Each image is filtered with ``|f| exp(-(|f| / (f0 * N))^4)`` -- flattening
    the 1/f amplitude spectrum of natural scenes, with a low-pass roll-off --
    then scaled to variance 0.1.

    Parameters
    ----------
    images : array-like, shape (m, H, W) or (H, W)
    f0 : float
        Cut-off as a fraction of the image size.

    Returns
    -------
    ndarray, float32, shape (m, H, W)
    """
    array = np.asarray(images, dtype=np.float64)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise DataError(f"images must have shape (m, H, W) or (H, W), got {array.shape}")
    out = np.empty_like(array)
    h, w = array.shape[1:]
    fy = np.fft.fftfreq(h)[:, None] * h
    fx = np.fft.fftfreq(w)[None, :] * w
    radius = np.sqrt(fx**2 + fy**2)
    cutoff = f0 * min(h, w)
    filt = radius * np.exp(-((radius / cutoff) ** 4))
    for i, img in enumerate(array):
        white = np.real(np.fft.ifft2(np.fft.fft2(img - img.mean()) * filt))
        std = white.std()
        out[i] = white * (math.sqrt(0.1) / std) if std > 0 else white
    return out.astype(np.float32)
