"""Variational autoencoder on dynamically binarized MNIST: aekit against a plain PyTorch VAE.

The one-stochastic-layer model of Burda et al. 2015 (784-200-200-z50 tanh encoder, the
mirror decoder, Bernoulli output), trained on the 60,000 MNIST training images resampled
as ``x ~ Bernoulli(pixel)`` at every batch, Adam (learning rate 1e-3), batches of 100:

* **aekit**: ``aekit.Autoencoder([...dict(form='gaussian', size=50)...], loss='bce')``,
  ``train(binarize='dynamic', ...)``.
* **plain PyTorch**: the same model written out here with ``nn.Linear`` layers and the
  textbook loss (the summed Bernoulli log-likelihood and the summed KL, averaged over
  the batch), its own training loop and its own importance-weighted estimator.  It starts
  from aekit's initial weights and reads the batches in aekit's order (the same seed):
  what differs is the code, not the luck of the draw.

Both are scored on the 10,000 test images, binarized once with a fixed seed: the
importance-weighted NLL with k=1000 samples (Burda et al.'s estimator), the number of
active units (Burda et al.'s definition: the variance over the data of the posterior mean
is above 0.01) and seconds per epoch, measured side by side (the epochs alternate between
the two).  A third run with ``beta=784`` (the mean-reconstruction / summed-KL slip) shows
what :func:`aekit.diagnose` says about posterior collapse.

Sizes (environment variables): ``AEKIT_BENCH_VAE_EPOCHS`` (30), ``AEKIT_BENCH_VAE_TEST``
(test images scored, 10000), ``AEKIT_BENCH_VAE_K`` (1000), ``AEKIT_BENCH_VAE_TRAIN``
(training images, 60000), ``AEKIT_BENCH_VAE_COLLAPSE_EPOCHS`` (the beta=784 run, 5);
``AEKIT_BENCH_VAE_PICTURES`` names a folder for pictures of the trained model (prior samples, KL bars),
``AEKIT_BENCH_VAE_SAVE`` a file to save it in.
Run ``python benchmarks/bench_vae.py`` (Markdown on stdout).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import aekit
from aekit.train.loop import noise_seed

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "mnist"
PUBLISHED_NLL = 86.76  # Burda et al. 2015, table 1: VAE, one stochastic layer, k=5000, 3280 epochs
SEED = 0
LATENT = 50


def _env(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def layers() -> list:
    return [
        784,
        (200, "tanh"),
        (200, "tanh"),
        dict(form="gaussian", size=LATENT, name="z"),
        (200, "tanh"),
        (200, "tanh"),
        (784, "sigmoid"),
    ]


# ---------------------------------------------------------------------------- the plain PyTorch VAE
class PlainVAE(nn.Module):
    """Burda et al.'s one-layer VAE written out: encoder, mean and log-variance heads, decoder."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(784, 200), nn.Tanh(), nn.Linear(200, 200), nn.Tanh())
        self.mean = nn.Linear(200, LATENT)
        self.logvar = nn.Linear(200, LATENT)
        self.dec = nn.Sequential(nn.Linear(LATENT, 200), nn.Tanh(), nn.Linear(200, 200), nn.Tanh(), nn.Linear(200, 784))

    def copy_from(self, net: aekit.Autoencoder) -> None:
        """Start from aekit's initial weights (aekit's ``w`` is (n_in, n_out), nn.Linear's the transpose)."""
        pairs = [
            (self.enc[0], "hid1", "w", "b"),
            (self.enc[2], "hid2", "w", "b"),
            (self.mean, "z", "w", "b"),
            (self.logvar, "z", "w_logvar", "b_logvar"),
            (self.dec[0], "hid4", "w", "b"),
            (self.dec[2], "hid5", "w", "b"),
            (self.dec[4], "out", "w", "b"),
        ]
        with torch.no_grad():
            for linear, name, w, b in pairs:
                linear.weight.copy_(getattr(net.graph.layers[name], w).t())
                linear.bias.copy_(getattr(net.graph.layers[name], b))

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.enc(x)
        return self.mean(h), self.logvar(h)

    def negative_elbo(self, x: torch.Tensor) -> torch.Tensor:
        """Mean over the batch of ``-log p(x|z) + KL(q(z|x) || N(0, I))`` with one reparameterised sample."""
        mean, logvar = self.posterior(x)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        logits = self.dec(z)
        rec = nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1)
        kl = 0.5 * (mean.square() + logvar.exp() - 1 - logvar).sum(1)
        return (rec + kl).mean()

    @torch.no_grad()
    def nll(self, x: torch.Tensor, k: int, seed: int, chunk: int = 10) -> np.ndarray:
        """Burda et al.'s estimator ``-log (1/k) sum_i p(x, z_i) / q(z_i|x)``, float64 log-sum-exp."""
        gen = torch.Generator().manual_seed(seed)
        out = []
        for start in range(0, x.shape[0], chunk):
            xb = x[start : start + chunk]
            mean, logvar = self.posterior(xb)
            std = torch.exp(0.5 * logvar)
            eps = torch.randn((xb.shape[0], k, LATENT), generator=gen)
            z = mean[:, None] + std[:, None] * eps
            logits = self.dec(z.reshape(-1, LATENT)).reshape(xb.shape[0], k, 784)
            log_px = (
                -nn.functional.binary_cross_entropy_with_logits(logits, xb[:, None].expand_as(logits), reduction="none")
                .double()
                .sum(2)
            )
            z, eps = z.double(), eps.double()
            log_pz = (-0.5 * (math.log(2 * math.pi) + z.square())).sum(2)
            log_qz = (-0.5 * (math.log(2 * math.pi) + logvar.double()[:, None] + eps.square())).sum(2)
            log_w = log_px + log_pz - log_qz
            out.append(-(torch.logsumexp(log_w, 1) - math.log(k)))
        return torch.cat(out).numpy()


def plain_epoch(model: PlainVAE, opt, x: torch.Tensor, order: torch.Generator, epoch: int) -> float:
    """One epoch in aekit's order: its permutation of the rows, its per-epoch seed of the noise."""
    model.train()
    perm = torch.randperm(x.shape[0], generator=order)
    total = 0.0
    with torch.random.fork_rng():
        torch.manual_seed(noise_seed(SEED, epoch))
        for start in range(0, x.shape[0], 100):
            xb = torch.bernoulli(x[perm[start : start + 100]])
            loss = model.negative_elbo(xb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * xb.shape[0]
    return total / x.shape[0]


def active_units(means: np.ndarray, threshold: float = 0.01) -> int:
    """Burda et al.'s active units: ``Cov_x(E_q[z_j]) > 0.01``."""
    return int((means.astype(np.float64).var(axis=0) > threshold).sum())


# ---------------------------------------------------------------------------- run
def run() -> dict:
    epochs = _env("AEKIT_BENCH_VAE_EPOCHS", 30)
    n_test = _env("AEKIT_BENCH_VAE_TEST", 10_000)
    k = _env("AEKIT_BENCH_VAE_K", 1000)
    n_train = _env("AEKIT_BENCH_VAE_TRAIN", 60_000)
    collapse_epochs = _env("AEKIT_BENCH_VAE_COLLAPSE_EPOCHS", 5)
    train, _ = aekit.datasets.mnist(DATA, "train")
    test, _ = aekit.datasets.mnist(DATA, "test")
    train = train[:n_train]
    test = (np.random.default_rng(SEED).random(test.shape) < test).astype(np.float32)[:n_test]
    xt = torch.as_tensor(train)

    net = aekit.Autoencoder(layers(), loss="bce", rng=SEED)
    plain = PlainVAE()
    plain.copy_from(net)
    opt = torch.optim.Adam(plain.parameters(), lr=1e-3)
    order = torch.Generator().manual_seed(SEED + 1)  # aekit's: seed + 1 + epochs already trained
    options = dict(
        binarize="dynamic", batch_size=100, learning_rate=1e-3, max_epochs=epochs, validate_every=0, threads=None
    )
    aekit_seconds, plain_seconds, history = [], [], []
    started = time.perf_counter()
    epoch = 0
    for train_mon, _ in net.itertrain(train, **options):
        aekit_seconds.append(time.perf_counter() - started)
        epoch += 1
        started = time.perf_counter()
        plain_loss = plain_epoch(plain, opt, xt, order, epoch)
        plain_seconds.append(time.perf_counter() - started)
        history.append((epoch, -train_mon["elbo"], plain_loss))
        started = time.perf_counter()

    tt = torch.as_tensor(test)
    started = time.perf_counter()
    nll_aekit = net.nll(test, k=k, seed=SEED)
    nll_aekit_seconds = time.perf_counter() - started
    plain.eval()
    started = time.perf_counter()
    nll_plain = plain.nll(tt, k=k, seed=SEED)
    nll_plain_seconds = time.perf_counter() - started
    with torch.no_grad():
        plain_means = plain.posterior(tt)[0].numpy()
    findings = aekit.diagnose(net, test)
    pictures = os.environ.get("AEKIT_BENCH_VAE_PICTURES")  # a folder: the README's pictures of this model
    if os.environ.get("AEKIT_BENCH_VAE_SAVE"):  # a file: the trained model, to look at it again
        net.save(os.environ["AEKIT_BENCH_VAE_SAVE"])
    if pictures:
        from aekit.inspect import latent_pictures

        latent_pictures.plot_samples(net, Path(pictures) / "vae_samples.png", n=32, seed=SEED)
        latent_pictures.plot_kl(net, test[:5000], Path(pictures) / "vae_kl.png")

    collapsed = aekit.Autoencoder(layers(), loss="bce", rng=SEED)
    collapsed.train(train, **{**options, "max_epochs": collapse_epochs}, beta=784.0)
    collapsed_findings = aekit.diagnose(collapsed, test)
    collapsed_nll = collapsed.nll(test[: min(n_test, 1000)], k=min(k, 100), seed=SEED)
    return {
        "epochs": epochs,
        "n_train": int(len(train)),
        "n_test": int(len(test)),
        "k": k,
        "nll_aekit": float(nll_aekit.mean()),
        "nll_plain": float(nll_plain.mean()),
        "nll_seconds": (nll_aekit_seconds, nll_plain_seconds),
        "elbo_aekit": float(net.elbo(test, seed=SEED).mean()),
        "active_aekit": active_units(net.encode(test)),
        "active_plain": active_units(plain_means),
        "kl_aekit": float(net.kl_per_latent(test).sum()),
        "seconds_per_epoch": (statistics.median(aekit_seconds), statistics.median(plain_seconds)),
        "history": history,
        "findings": [(f.severity, f.code, f.message) for f in findings],
        "collapse_epochs": collapse_epochs,
        "collapsed_findings": [(f.severity, f.code, f.message) for f in collapsed_findings],
        "collapsed_nll": float(collapsed_nll.mean()),
        "collapsed_k": min(k, 100),
        "collapsed_n": int(len(collapsed_nll)),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def to_markdown(result: dict) -> str:
    a, p = result["seconds_per_epoch"]
    na, np_ = result["nll_seconds"]
    vae_codes = ("posterior-collapse", "inactive-latents", "kl-dominates", "logvar-range")
    lines = [
        "## Variational autoencoder: Burda et al.'s one-layer VAE on dynamically binarized MNIST",
        "",
        f"784-200-200-z50 tanh encoder, mirror decoder, Bernoulli output; {result['n_train']} training "
        f"images binarized anew at every batch, Adam 1e-3, batches of 100, {result['epochs']} epochs "
        f"(torch {result['torch']}, {result['threads']} threads, CPU). Test: {result['n_test']} images "
        f"binarized once (seed 0), importance-weighted NLL with k={result['k']}.",
        "",
        "| | aekit | plain PyTorch (same start, same batches) |",
        "| --- | --- | --- |",
        f"| test NLL, nats (k={result['k']}) | {result['nll_aekit']:.2f} | {result['nll_plain']:.2f} |",
        f"| active units (of 50) | {result['active_aekit']} | {result['active_plain']} |",
        f"| seconds per epoch (median, alternating) | {a:.2f} | {p:.2f} |",
        f"| seconds for the test NLL | {na:.1f} | {np_:.1f} |",
        "",
        f"aekit's test ELBO: {result['elbo_aekit']:.2f} nats; total KL {result['kl_aekit']:.2f} nats. "
        f"NLL difference aekit - plain: {result['nll_aekit'] - result['nll_plain']:+.2f} nats. "
        f"Published, fully trained (Burda et al. 2015, k=5000, 3280 epochs): {PUBLISHED_NLL} nats.",
        "",
        "Diagnosis of this model (VAE findings): "
        + (
            "; ".join(f"{s} {c}: {m}" for s, c, m in result["findings"] if c in vae_codes)
            or "no posterior-collapse finding"
        ),
        "",
        f"The same model trained {result['collapse_epochs']} epochs with `beta=784` (a mean reconstruction "
        f"next to a summed KL): NLL {result['collapsed_nll']:.2f} nats (k={result['collapsed_k']}, first "
        f"{result['collapsed_n']} test images); diagnosis: "
        + "; ".join(f"{s} {c}: {m}" for s, c, m in result["collapsed_findings"] if c in vae_codes),
        "",
        "| epoch | aekit -ELBO (train, nats) | plain -ELBO (train, nats) |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {e} | {ae:.2f} | {pl:.2f} |" for e, ae, pl in result["history"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(to_markdown(run()))
