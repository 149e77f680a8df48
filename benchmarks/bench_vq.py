"""Vector-quantized autoencoders on MNIST: aekit's VQ layer against a plain PyTorch VQ-VAE, collapse, FSQ.

The model is DESIGN.md's::

    (1, 28, 28) -> conv 16 (stride 2, relu) -> conv 32 (stride 2, relu) -> conv 8 (1x1, linear)
    -> vq (128 codes, beta 0.25, EMA codebook, k-means start, dead codes re-seeded under 1.0)
    -> deconv 32 (relu) -> deconv 16 (stride 2, relu) -> deconv 1 (stride 2, sigmoid)

so each image becomes a 7x7 grid of code indices.  Trained 5 epochs on the first 12,000 training
images (Adam 1e-3, batch 64), scored on the 10,000 test images: codebook usage (the fraction of
the 128 codes chosen at least once over the test set), perplexity (``exp`` of the entropy of the
test set's code frequencies; reported, not gated) and reconstruction MSE.

The baseline is a plain PyTorch VQ-VAE written below: the same layers (``nn.Conv2d`` /
``nn.ConvTranspose2d``), the same loss (MSE + 0.25 commitment), the EMA codebook of the VQ-VAE
paper (decay 0.99, Laplace-smoothed counts) updated in the forward pass as such code usually
does, started from 128 random encoder outputs of the first batch, with no dead-code re-seeding.
Time per epoch is measured apart: one epoch on 3,000 images each, aekit and the baseline taking
turns (the order reverses every round); medians.

Collapse: the same aekit model with every code started equal, at ``(3, ..., 3)``, outside the
region of the encoder's outputs (their norms stay under about 4.5, this point's is 8.5), and
``dead_codes=0``: the first step moves code 0 (ties go to the lowest index) into the data, and
the other 127 stay out of reach.  (Codes started equal *inside* the data split off one by one as
vectors land nearest to them: from the origin, 16% of the codes were in use after one epoch on 2,000
images, so that start is no collapse.)  The same start with ``dead_codes=1.0`` must recover.
FSQ: levels (8, 5, 5, 5) after a 4-channel 1x1 conv, 1000 codes, no codebook parameters.

Needs ``../shared/data/mnist``; skips with a message otherwise.  ``VQ_BENCH_QUICK=1`` runs a small
version (2,000 training and test images, 2 epochs) that checks the code, not the figures.
Run ``python benchmarks/bench_vq.py``; ``run()`` returns the figures.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import aekit

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
QUICK = os.environ.get("VQ_BENCH_QUICK", "") not in ("", "0")
N_TRAIN, N_TEST, EPOCHS = (2_000, 2_000, 2) if QUICK else (12_000, 10_000, 5)
COLLAPSE_EPOCHS = 1 if QUICK else 2
# FSQ's usage grows with training (measured on the same 12,000 images: 22% of its 1000 codes after
# 5 epochs, 78% after 15, 96.5% after 30), so it trains longer than the VQ model.
FSQ_EPOCHS = 2 if QUICK else 30
BATCH, LR, K, BETA, DECAY = 64, 1e-3, 128, 0.25, 0.99
SPEED_N, SPEED_ROUNDS = (1_000, 1) if QUICK else (3_000, 3)
TARGETS = {"usage": 0.95, "mse": 0.025, "collapsed": 0.10, "recovered": 0.90, "fsq_usage": 0.90}

ENCODER = [
    (1, 28, 28),
    dict(form="conv2", channels=16, stride=2),
    dict(form="conv2", channels=32, stride=2),
]
DECODER = [
    dict(form="deconv2", channels=32, stride=1),
    dict(form="deconv2", channels=16, stride=2),
    dict(form="deconv2", channels=1, stride=2, activation="sigmoid"),
]


def vq_layers(**options) -> list:
    """DESIGN.md's VQ model, with ``options`` changing the vq layer's."""
    vq = dict(form="vq", codebook=K, beta=BETA, update="ema", init="kmeans", dead_codes=1.0, name="vq")
    vq.update(options)
    return [*ENCODER, dict(form="conv2", channels=8, kernel=1, activation="linear"), vq, *DECODER]


FSQ_LAYERS = [
    *ENCODER,
    dict(form="conv2", channels=4, kernel=1, activation="linear"),
    dict(form="fsq", levels=(8, 5, 5, 5), name="fsq"),
    *DECODER,
]


def load_mnist() -> tuple[np.ndarray, np.ndarray] | None:
    """(x_train, x_test) as (n, 1, 28, 28) float32 in [0, 1], or None when the files are absent."""
    names = ["train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"]
    if not all((DATA / n).exists() for n in names):
        return None
    train, _ = aekit.datasets.mnist(path=str(DATA), split="train")
    test, _ = aekit.datasets.mnist(path=str(DATA), split="test")
    return train[:N_TRAIN].reshape(-1, 1, 28, 28), test[:N_TEST].reshape(-1, 1, 28, 28)


# ---------------------------------------------------------------------- the baseline
class PlainVQVAE(nn.Module):
    """The same VQ-VAE written directly in PyTorch, with the paper's EMA codebook (the baseline)."""

    def __init__(self, codes: int = K, dim: int = 8, decay: float = DECAY, eps: float = 1e-5):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, dim, 1),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(dim, 32, 3, stride=1, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(32, 16, 3, stride=2, padding=1, output_padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(16, 1, 3, stride=2, padding=1, output_padding=1),
            nn.Sigmoid(),
        )
        self.decay, self.eps = decay, eps
        self.register_buffer("embed", torch.zeros(codes, dim))
        self.register_buffer("cluster_size", torch.ones(codes))
        self.register_buffer("embed_avg", torch.zeros(codes, dim))

    def init_codes(self, x: torch.Tensor, generator: torch.Generator) -> None:
        """Codes = random encoder outputs of ``x`` (the usual data start)."""
        with torch.no_grad():
            flat = self.encoder(x).permute(0, 2, 3, 1).reshape(-1, self.embed.shape[1])
            self.embed.copy_(flat[torch.randperm(len(flat), generator=generator)[: len(self.embed)]])
            self.embed_avg.copy_(self.embed)

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.embed.t() + self.embed.pow(2).sum(1)
        idx = dist.argmin(1)
        q = self.embed[idx]
        if self.training:
            with torch.no_grad():
                counts = torch.bincount(idx, minlength=len(self.embed)).float()
                sums = torch.zeros_like(self.embed).index_add_(0, idx, flat)
                self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
                self.embed_avg.mul_(self.decay).add_(sums, alpha=1 - self.decay)
                total = self.cluster_size.sum()
                smoothed = (self.cluster_size + self.eps) / (total + len(self.embed) * self.eps) * total
                self.embed.copy_(self.embed_avg / smoothed.unsqueeze(1))
        commitment = F.mse_loss(flat, q.detach())
        q = flat + (q - flat).detach()
        return q.reshape(n, h, w, d).permute(0, 3, 1, 2), commitment, idx.reshape(n, h, w)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q, commitment, _ = self.quantize(self.encoder(x))
        return self.decoder(q), commitment


def _train_plain(model: PlainVQVAE, x: np.ndarray, epochs: int) -> float:
    """The baseline's own loop (Adam, shuffled batches, MSE + beta * commitment); returns its seconds."""
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    xtr = torch.from_numpy(x)
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    model.train()
    model.init_codes(xtr[:BATCH], generator)
    for _ in range(epochs):
        for idx in torch.randperm(len(xtr), generator=generator).split(BATCH):
            batch = xtr[idx]
            recon, commitment = model(batch)
            loss = F.mse_loss(recon, batch) + BETA * commitment
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return time.perf_counter() - start


# ---------------------------------------------------------------------- figures
def usage_and_perplexity(codes: np.ndarray, size: int) -> tuple[float, float]:
    """The fraction of codes used and the perplexity of their frequencies, over all of ``codes``."""
    counts = np.bincount(codes.reshape(-1), minlength=size)
    p = counts[counts > 0] / counts.sum()
    return float((counts > 0).mean()), float(np.exp(-(p * np.log(p)).sum()))


def _train_aekit(layers: list, x: np.ndarray, epochs: int, start_codes: torch.Tensor | None = None):
    net = aekit.Autoencoder(layers, rng=0)
    if start_codes is not None:
        net.graph.layers["vq"].set_codebook(start_codes)
    started = time.perf_counter()
    net.train(x, algo="adam", learning_rate=LR, batch_size=BATCH, max_epochs=epochs, validate_every=0)
    return net, time.perf_counter() - started


def _aekit_row(name: str, net, seconds: float, xt: np.ndarray, layer: str) -> dict:
    figures = aekit.evaluate(net, xt, metrics=["mse", f"usage:{layer}", f"perplexity:{layer}"])
    size = net.graph.layers[layer].codebook_size
    return {
        "model": name,
        "usage": figures[f"usage:{layer}"],
        "perplexity": figures[f"perplexity:{layer}"],
        "codes": size,
        "test_mse": figures["mse"],
        "seconds": seconds,
        "reseeded": int(getattr(net.graph.layers[layer], "reseeded", 0)),
    }


def _plain_row(xt: np.ndarray, x: np.ndarray) -> dict:
    torch.manual_seed(0)
    model = PlainVQVAE()
    seconds = _train_plain(model, x, EPOCHS)
    model.eval()
    with torch.no_grad():
        test = torch.from_numpy(xt)
        q, _, idx = model.quantize(model.encoder(test))
        mse = float(torch.mean((model.decoder(q) - test) ** 2))
    usage, perplexity = usage_and_perplexity(idx.numpy(), K)
    return {
        "model": "plain PyTorch VQ-VAE (EMA, data start, no re-seeding)",
        "usage": usage,
        "perplexity": perplexity,
        "codes": K,
        "test_mse": mse,
        "seconds": seconds,
        "reseeded": 0,
    }


def speed_rounds(x: np.ndarray, rounds: int = SPEED_ROUNDS) -> dict:
    """Seconds for one epoch on ``x``, aekit and the plain VQ-VAE taking turns; medians and per-round ratios."""

    def aekit_epoch() -> float:
        return _train_aekit(vq_layers(), x, 1)[1]

    def plain_epoch() -> float:
        torch.manual_seed(0)
        return _train_plain(PlainVQVAE(), x, 1)

    contenders = {"aekit": aekit_epoch, "plain": plain_epoch}
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    for round_index in range(rounds):
        names = list(contenders) if round_index % 2 == 0 else list(contenders)[::-1]
        for name in names:
            seconds[name].append(contenders[name]())
    return {
        "n": len(x),
        "rounds": rounds,
        "median": {name: statistics.median(v) for name, v in seconds.items()},
        "round_ratios": [a / p for a, p in zip(seconds["aekit"], seconds["plain"])],
    }


def run() -> dict:
    """Train every model; return the figures, or ``{'skipped': reason}`` without MNIST."""
    data = load_mnist()
    if data is None:
        return {"skipped": f"MNIST not found in {DATA}"}
    x, xt = data
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # untimed: the first optimizer imports torch._dynamo
    net, seconds = _train_aekit(vq_layers(), x, EPOCHS)
    rows = [_aekit_row("aekit vq (k-means start, dead codes re-seeded)", net, seconds, xt, "vq"), _plain_row(xt, x)]
    equal = torch.full((K, 8), 3.0)
    collapsed_net, s1 = _train_aekit(vq_layers(init="uniform", dead_codes=0.0), x, COLLAPSE_EPOCHS, equal)
    recovered_net, s2 = _train_aekit(vq_layers(init="uniform", dead_codes=1.0), x, COLLAPSE_EPOCHS, equal)
    collapse = [
        _aekit_row("equal codes, dead_codes=0", collapsed_net, s1, xt, "vq"),
        _aekit_row("equal codes, dead_codes=1.0", recovered_net, s2, xt, "vq"),
    ]
    findings = [f.code for f in aekit.diagnose(collapsed_net, xt) if f.severity == "error"]
    fsq_net, s3 = _train_aekit(FSQ_LAYERS, x, FSQ_EPOCHS)
    fsq = _aekit_row("aekit fsq (8, 5, 5, 5)", fsq_net, s3, xt, "fsq")
    ours, low, high = rows[0], collapse[0], collapse[1]
    checks = {
        "usage": ours["usage"] >= TARGETS["usage"],
        "mse": ours["test_mse"] <= TARGETS["mse"],
        "collapsed": low["usage"] < TARGETS["collapsed"] and "codebook-collapse" in findings,
        "recovered": high["usage"] >= TARGETS["recovered"],
        "fsq": fsq["usage"] >= TARGETS["fsq_usage"] and fsq["test_mse"] <= TARGETS["mse"],
    }
    return {
        "rows": rows,
        "collapse": collapse,
        "collapse_errors": findings,
        "fsq": fsq,
        "speed": speed_rounds(x[:SPEED_N]),
        "n_train": len(x),
        "n_test": len(xt),
        "epochs": EPOCHS,
        "collapse_epochs": COLLAPSE_EPOCHS,
        "fsq_epochs": FSQ_EPOCHS,
        "threads": torch.get_num_threads(),
        "quick": QUICK,
        "checks": checks,
        "passes": all(checks.values()),
    }


def _row(row: dict) -> str:
    return (
        f"| {row['model']} | {row['usage']:.1%} of {row['codes']} | {row['perplexity']:.1f} | "
        f"{row['test_mse']:.4f} | {row['seconds']:.1f} | {row['reseeded']} |"
    )


def to_markdown(result: dict) -> str:
    title = "### Vector-quantized autoencoders on MNIST"
    if "skipped" in result:
        return f"{title}\n\nskipped: {result['skipped']}"
    head = [
        "| model | test usage | test perplexity | test MSE | train time (s) | codes re-seeded |",
        "|---|---|---|---|---|---|",
    ]
    lines = [
        title,
        "",
        f"7x7 codes, {K}-code VQ (DESIGN.md's model), {result['epochs']} epochs on {result['n_train']:,} images "
        f"(Adam {LR:g}, batch {BATCH}), usage and perplexity over {result['n_test']:,} test images, "
        f"{result['threads']} torch threads{' (QUICK mode)' if result['quick'] else ''}",
        "",
        *head,
        *[_row(row) for row in result["rows"]],
        "",
        f"Collapse: every code started at (3, ..., 3), {result['collapse_epochs']} epochs; diagnose's errors on the "
        f"collapsed model: {', '.join(result['collapse_errors']) or 'none'}",
        "",
        *head,
        *[_row(row) for row in result["collapse"]],
        "",
        f"FSQ, levels (8, 5, 5, 5) after a 4-channel 1x1 conv, 1000 codes, {result['fsq_epochs']} epochs "
        "(its usage grows with training: 22% after 5 epochs, 78% after 15):",
        "",
        *head,
        _row(result["fsq"]),
        "",
    ]
    speed = result["speed"]
    median = speed["median"]
    lines += [
        f"Time per epoch, {speed['rounds']} alternated rounds of one epoch on {speed['n']:,} images (medians): "
        f"aekit {median['aekit']:.2f} s, plain PyTorch VQ-VAE {median['plain']:.2f} s "
        f"(aekit / plain {median['aekit'] / median['plain']:.2f}; per round "
        f"{min(speed['round_ratios']):.2f} to {max(speed['round_ratios']):.2f}).",
        "",
        f"acceptance (usage >= {TARGETS['usage']:.0%}, MSE <= {TARGETS['mse']}; collapsed usage < "
        f"{TARGETS['collapsed']:.0%} with a codebook-collapse error, recovered >= {TARGETS['recovered']:.0%}; "
        f"FSQ usage >= {TARGETS['fsq_usage']:.0%}, MSE <= {TARGETS['mse']}): "
        + ", ".join(f"{k} {'pass' if v else 'FAIL'}" for k, v in result["checks"].items()),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(to_markdown(run()))
