"""The UFLDL sparse autoencoder exercise, reproduced with aekit.

Stanford's UFLDL tutorial trains a sparse autoencoder on 10,000 8x8 patches of
whitened natural images and shows that its 25 hidden units become localised,
oriented edge detectors.  Setting (the exercise's defaults):

* data: 10,000 random 8x8 patches; per-patch mean removed, truncated to +/-3
  standard deviations, rescaled to [0.1, 0.9] (UFLDL's ``sampleIMAGES``).
  ``IMAGES.mat`` is not redistributable, so scikit-image's bundled grayscale
  pictures, whitened in the frequency domain with Olshausen & Field's filter
  (the recipe behind ``IMAGES.mat``), stand in: :func:`aekit.datasets.natural_patches`;
* model: ``[64, (25, 'sigmoid'), (64, 'sigmoid')]``, untied weights;
* objective: ``J = mean_i 0.5 ||x_i - y_i||^2 + lambda/2 sum W^2 + beta sum_j KL(rho || rho_hat_j)``
  with rho = 0.01, beta = 3, lambda = 1e-4;
* optimiser: L-BFGS, 400 iterations (aekit: ``algo='lbfgs'``, one full-batch
  iteration per epoch, ``max_epochs=400``).

aekit's ``mse`` is the mean over all ``n * 64`` values, i.e. ``J``'s first term
divided by 32, so the same objective divided by 32 is
``mse + (lambda / 64) * sum W^2 + (beta / 32) * sum KL``: ``sparsity_weight = beta / 32``.
aekit's ``weight_l2`` is theanets 0.7's, the mean of ``W^2`` over each matrix
averaged over the matrices, ``weight_l2 * (1/2) (sum W1^2 / 1600 + sum W2^2 / 1600)``
for the two 64x25 matrices, so ``(lambda / 64) * sum W^2`` is
``weight_l2 = (lambda / 64) * 3200 = 50 * lambda``.  Dividing the objective by a
constant changes neither its minimiser nor L-BFGS's path (with a line search), so
this is UFLDL's problem exactly.

Run ``python examples/ufldl_sparse.py [--output docs/ufldl_features.png]``.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

import aekit
from aekit import visualize

N_PATCHES = 10_000
HIDDEN = 25
RHO, BETA, LAMBDA = 0.01, 3.0, 1e-4
ITERATIONS = 400
PIXELS = 64
WEIGHTS = 2 * PIXELS * HIDDEN  # the encoder's and the decoder's (untied) 64x25 matrices


def ufldl_options(iterations: int = ITERATIONS) -> dict:
    """aekit training options equal to UFLDL's objective divided by ``PIXELS / 2``."""
    scale = PIXELS / 2.0  # mse = (mean_i 0.5 ||x_i - y_i||^2) / scale
    return dict(
        algo="lbfgs",
        max_epochs=iterations,
        # UFLDL's (lambda/2) sum W^2 over the weights, over scale, is a summed strength mu; aekit's weight_l2
        # averages mean W^2 over the 2 matrices of 1600 weights each, so mu * sum W^2 is weight_l2 = mu * 3200.
        weight_l2=(LAMBDA / 2.0) / scale * WEIGHTS,  # = 50 * lambda
        sparsity_target=RHO,
        sparsity_weight=BETA / scale,  # = beta / 32
        validate_every=0,  # UFLDL runs all 400 iterations, no early stopping
    )


def ufldl_objective(net, x: np.ndarray) -> float:
    """UFLDL's ``J`` (sparseAutoencoderCost.m) computed directly, for checking the scaling."""
    import torch

    with torch.no_grad():
        xt = torch.as_tensor(x, dtype=torch.float32)
        out = net.graph(xt)
        h, y = out["hid1:out"], out["out:out"]
        recon = 0.5 * (xt - y).square().sum(dim=1).mean()
        decay = LAMBDA / 2 * (net.find("hid1", "w").square().sum() + net.find("out", "w").square().sum())
        rho_hat = h.mean(dim=0)
        kl = (RHO * torch.log(RHO / rho_hat) + (1 - RHO) * torch.log((1 - RHO) / (1 - rho_hat))).sum()
        return float(recon + decay + BETA * kl)


def train(n: int = N_PATCHES, iterations: int = ITERATIONS, seed: int = 0):
    """Sample the patches and train the UFLDL model; return ``(net, patches, seconds)``."""
    patches = aekit.datasets.natural_patches(n=n, size=8, rng=seed, whiten=True)
    net = aekit.Autoencoder([PIXELS, (HIDDEN, "sigmoid"), (PIXELS, "sigmoid")], rng=seed)
    start = time.perf_counter()
    net.train(patches, **ufldl_options(iterations))
    return net, patches, time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=str(Path(__file__).resolve().parents[1] / "docs" / "ufldl_features.png"))
    parser.add_argument("--iterations", type=int, default=ITERATIONS)
    parser.add_argument("--patches", type=int, default=N_PATCHES)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    net, patches, seconds = train(args.patches, args.iterations)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    features = visualize.feature_images(net, "hid1", kind="encoder")  # (25, 8, 8): W_i / ||W_i||
    visualize.save_tiles(features, args.output, n_cols=5, border=1, zoom=8)
    print(f"trained {len(net.history)} L-BFGS iterations on {len(patches)} patches in {seconds:.1f} s")
    print(
        f"UFLDL objective J = {ufldl_objective(net, patches):.4f} "
        f"(aekit loss x 32 = {net.history[-1]['train']['loss'] * PIXELS / 2:.4f})"
    )
    print(f"mean hidden activation {net.encode(patches).mean():.4f} (target rho = {RHO})")
    print(f"features written to {args.output}")


if __name__ == "__main__":
    main()
