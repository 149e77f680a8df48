"""How edge-like are the features of the UFLDL sparse autoencoder? Against random filters.

Trains the model of ``examples/ufldl_sparse.py`` (10,000 whitened 8x8 natural
patches, 25 sigmoid units, rho=0.01, beta=3, lambda=1e-4, 400 L-BFGS
iterations) and scores each encoder filter ``W_i / ||W_i||`` with two measures
of "edge detector" (Gabor-likeness), next to the same measures on random
Gaussian filters (the untrained model's filters are of this kind):

* **Gabor fit R^2** -- the fraction of the filter's variance explained by the best
  2-D Gabor function ``A exp(-(u^2/2sx^2 + v^2/2sy^2)) cos(2 pi f u + phi) + c``
  (``u, v`` rotated by theta about a centre ``(x0, y0)``; 9 parameters against 64
  pixels), fitted by least squares from 8 starts.  Localised, oriented edges fit
  well; noise does not.
* **Orientation concentration** -- the fraction of the filter's spectral energy
  (mean removed, zero-padded to 32x32) whose orientation lies within +/-11.25
  degrees of the best orientation, i.e. in the best 1/8 of orientations.  A filter
  with no preferred orientation scores about 1/8 plus chance; an edge scores high.

Run ``python benchmarks/bench_ufldl.py`` (Markdown on stdout); ``run()`` returns
the figures.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch

import aekit

ROOT = Path(__file__).resolve().parents[1]
PAD = 32
HALF_BAND = math.pi / 16  # +/- 11.25 degrees: one eighth of all orientations


def _example():
    spec = importlib.util.spec_from_file_location("ufldl_sparse", ROOT / "examples" / "ufldl_sparse.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------- metrics
def _spectrum(filt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Power and orientation (in [0, pi)) of each non-DC frequency of a zero-padded filter."""
    f = filt - filt.mean()
    power = np.abs(np.fft.fft2(f, s=(PAD, PAD))) ** 2
    ky = np.fft.fftfreq(PAD)[:, None] * np.ones((1, PAD))
    kx = np.fft.fftfreq(PAD)[None, :] * np.ones((PAD, 1))
    angle = np.mod(np.arctan2(ky, kx), math.pi)
    keep = (kx != 0) | (ky != 0)
    return power[keep], angle[keep]


def orientation_concentration(filt: np.ndarray) -> tuple[float, float]:
    """(fraction of spectral energy within +/-11.25 deg of the best orientation, that orientation)."""
    power, angle = _spectrum(filt)
    total = power.sum()
    if total <= 0:
        return 0.0, 0.0
    best, best_angle = 0.0, 0.0
    for alpha in np.linspace(0, math.pi, 64, endpoint=False):
        dist = np.abs(np.mod(angle - alpha + math.pi / 2, math.pi) - math.pi / 2)
        share = power[dist <= HALF_BAND].sum() / total
        if share > best:
            best, best_angle = float(share), float(alpha)
    return best, best_angle


def _gabor(params: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    amp, x0, y0, theta, sx, sy, freq, phase, offset = params
    u = (xx - x0) * math.cos(theta) + (yy - y0) * math.sin(theta)
    v = -(xx - x0) * math.sin(theta) + (yy - y0) * math.cos(theta)
    envelope = np.exp(-(u**2 / (2 * sx**2) + v**2 / (2 * sy**2)))
    return amp * envelope * np.cos(2 * math.pi * freq * u + phase) + offset


def gabor_r2(filt: np.ndarray) -> float:
    """Fraction of the filter's variance explained by the best-fitting 2-D Gabor function."""
    from scipy.optimize import least_squares

    h, w = filt.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    target = filt.astype(np.float64)
    ss_tot = float(((target - target.mean()) ** 2).sum())
    if ss_tot <= 0:
        return 0.0
    energy = (target - target.mean()) ** 2
    cy, cx = (energy * yy).sum() / energy.sum(), (energy * xx).sum() / energy.sum()
    _, peak = orientation_concentration(filt)
    scale = float(np.abs(target).max())
    lower = [-np.inf, -1.0, -1.0, -np.inf, 0.5, 0.5, 0.0, -np.inf, -np.inf]
    upper = [np.inf, w, h, np.inf, 2.0 * w, 2.0 * h, 0.5, np.inf, np.inf]
    best = np.inf
    for dtheta in (0.0, math.pi / 2):
        for freq in (0.08, 0.2):
            for phase in (0.0, math.pi / 2):
                start = [scale, cx, cy, peak + dtheta, 2.0, 2.0, freq, phase, target.mean()]
                fit = least_squares(
                    lambda p: (_gabor(p, yy, xx) - target).ravel(), start, bounds=(lower, upper), max_nfev=200
                )
                best = min(best, float((fit.fun**2).sum()))
    return 1.0 - best / ss_tot


def score_filters(filters: np.ndarray) -> dict[str, float]:
    """Mean and median of both measures over ``filters`` (n, 8, 8)."""
    r2 = np.array([gabor_r2(f) for f in filters])
    conc = np.array([orientation_concentration(f)[0] for f in filters])
    return {
        "gabor_r2_mean": float(r2.mean()),
        "gabor_r2_median": float(np.median(r2)),
        "gabor_r2_above_0.7": float((r2 > 0.7).mean()),
        "orientation_mean": float(conc.mean()),
        "orientation_median": float(np.median(conc)),
    }


# ---------------------------------------------------------------------------- run
def run(n_patches: int = 10_000, iterations: int = 400, n_random: int = 50, seed: int = 0) -> dict:
    """Train the UFLDL model, score its filters and random ones; return the figures."""
    example = _example()
    net, patches, seconds = example.train(n_patches, iterations, seed)
    filters = aekit.visualize.feature_images(net, "hid1", kind="encoder")  # (25, 8, 8)
    rng = np.random.default_rng(seed + 1)
    random_filters = rng.normal(size=(n_random, 8, 8))
    random_filters /= np.linalg.norm(random_filters.reshape(n_random, -1), axis=1)[:, None, None]
    start = time.perf_counter()
    learned = score_filters(filters)
    baseline = score_filters(random_filters)
    findings = aekit.diagnose(net, patches)
    return {
        "patches": int(len(patches)),
        "iterations": len(net.history),
        "train_seconds": seconds,
        "score_seconds": time.perf_counter() - start,
        "ufldl_objective": example.ufldl_objective(net, patches),
        "mean_activation": float(net.encode(patches).mean()),
        "r2": float(net.score(patches)),
        "learned": learned,
        "random": baseline,
        "n_random": n_random,
        "findings": [(f.severity, f.code) for f in findings],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
    }


def to_markdown(result: dict) -> str:
    learned, rand = result["learned"], result["random"]
    rows = [
        ("Gabor fit R^2, mean", "gabor_r2_mean"),
        ("Gabor fit R^2, median", "gabor_r2_median"),
        ("share of filters with Gabor R^2 > 0.7", "gabor_r2_above_0.7"),
        ("orientation concentration, mean", "orientation_mean"),
        ("orientation concentration, median", "orientation_median"),
    ]
    lines = [
        "## UFLDL sparse autoencoder: edge-like features",
        "",
        f"{result['patches']} whitened 8x8 natural-image patches, 25 sigmoid units, rho=0.01, beta=3, "
        f"lambda=1e-4, {result['iterations']} L-BFGS iterations in {result['train_seconds']:.1f} s "
        f"(torch {result['torch']}, {result['threads']} threads, CPU); filters scored in "
        f"{result['score_seconds']:.0f} s.",
        f"UFLDL objective J = {result['ufldl_objective']:.4f}; mean hidden activation "
        f"{result['mean_activation']:.4f} (target 0.01); reconstruction R^2 = {result['r2']:.3f}.",
        f"Diagnosis: {', '.join(f'{s} {c}' for s, c in result['findings']) or 'nothing found'}.",
        "",
        f"| measure | learned filters (25) | random Gaussian filters ({result['n_random']}) |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {label} | {learned[key]:.3f} | {rand[key]:.3f} |" for label, key in rows]
    lines += [
        "",
        "Orientation concentration: share of spectral energy within +/-11.25 degrees of the "
        "best orientation (1/8 of all orientations; no preference gives about 0.125 plus chance). "
        "Gabor fit R^2: variance explained by the best 2-D Gabor (9 parameters, 64 pixels).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=int, default=10_000)
    parser.add_argument("--iterations", type=int, default=400)
    parser.add_argument("--random", type=int, default=50)
    args = parser.parse_args(argv)
    print(to_markdown(run(args.patches, args.iterations, args.random)))


if __name__ == "__main__":
    main()
