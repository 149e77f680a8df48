"""MNIST conv autoencoder with a 32-unit dense code: aekit against plain PyTorch.

Both models have the same shape::

    (1, 28, 28) -> conv 16 (stride 2, relu) -> conv 32 (stride 2, relu) -> flatten
    -> dense 32 (linear code) -> dense 1568 (relu) -> reshape (32, 7, 7)
    -> deconv 16 (stride 2, relu) -> deconv 1 (stride 2, sigmoid)

and are trained 4 epochs on the first 12,000 training images with Adam
(learning rate 1e-3, batches of 64, shuffled), then scored on the 10,000 test
images: reconstruction MSE, and the accuracy of a nearest-class-centroid
classifier (scikit-learn ``NearestCentroid``, fit on the train codes, scored on
the test codes) -- codes that are the same for every input score about 10%.

The baseline is plain PyTorch (``nn.Conv2d``/``nn.ConvTranspose2d`` with
``padding=1, output_padding=1``, torch's default init, its own loop).  Speed is
also measured apart from quality: one epoch on 3,000 images per contender,
aekit, the plain loop and the plain loop in channels-last memory order taking
turns for 5 rounds (:func:`speed_rounds`).

Needs ``../shared/data/mnist`` (original idx.gz files); skips with a message
otherwise.  Run ``python benchmarks/bench_conv.py``; ``run()`` returns the figures.
"""

from __future__ import annotations

import gzip
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import aekit

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
N_TRAIN, EPOCHS, BATCH, LR, CODE = 12_000, 4, 64, 1e-3, 32
SPEED_N, SPEED_ROUNDS = 3_000, 5
TARGET_MSE, TARGET_ACC = 0.035, 0.5

LAYERS = [
    (1, 28, 28),
    dict(form="conv2", channels=16, stride=2),
    dict(form="conv2", channels=32, stride=2),
    "flatten",
    dict(size=CODE, activation="linear", name="code"),
    dict(size=32 * 7 * 7),
    dict(form="reshape", shape=(32, 7, 7)),
    dict(form="deconv2", channels=16, stride=2),
    dict(form="deconv2", channels=1, stride=2, activation="sigmoid"),
]


def _images(name: str) -> np.ndarray:
    raw = gzip.open(DATA / name).read()
    return np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 1, 28, 28).astype(np.float32) / 255.0


def _labels(name: str) -> np.ndarray:
    return np.frombuffer(gzip.open(DATA / name).read(), np.uint8, offset=8).astype(np.int64)


def load_mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """(x_train, y_train, x_test, y_test), or None when the files are absent."""
    names = [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]
    if not all((DATA / n).exists() for n in names):
        return None
    return (_images(names[0])[:N_TRAIN], _labels(names[1])[:N_TRAIN], _images(names[2]), _labels(names[3]))


class TorchConvAE(nn.Module):
    """The same model written directly in PyTorch (the baseline)."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(32 * 7 * 7, CODE),
        )
        self.decoder = nn.Sequential(
            nn.Linear(CODE, 32 * 7 * 7),
            nn.ReLU(),
            nn.Unflatten(1, (32, 7, 7)),
            nn.ConvTranspose2d(32, 16, 3, stride=2, padding=1, output_padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(16, 1, 3, stride=2, padding=1, output_padding=1),
            nn.Sigmoid(),
        )

    def forward(self, x):
        return self.decoder(self.encoder(x))


def _centroid_accuracy(train_codes, y_train, test_codes, y_test) -> float:
    from sklearn.neighbors import NearestCentroid

    return float(NearestCentroid().fit(train_codes, y_train).score(test_codes, y_test))


def _run_aekit(x, y, xt, yt) -> dict:
    start = time.perf_counter()
    net = aekit.Autoencoder(LAYERS, rng=0)
    net.train(x, algo="adam", learning_rate=LR, batch_size=BATCH, max_epochs=EPOCHS, validate_every=0)
    seconds = time.perf_counter() - start
    mse = float(np.mean((net.predict(xt) - xt) ** 2))
    acc = _centroid_accuracy(net.encode(x, layer="code"), y, net.encode(xt, layer="code"), yt)
    return {"model": "aekit", "test_mse": mse, "centroid_acc": acc, "seconds": seconds, "params": net.num_params}


def _aekit_init(model: TorchConvAE) -> None:
    """Give ``model`` aekit's initial scale: the same per-layer weight std (He for relu layers,
    Glorot otherwise), Gaussian, and zero biases, instead of torch's smaller uniform default."""
    net = aekit.Autoencoder(LAYERS, rng=0)
    stds = [float(layer.w.detach().std()) for layer in net.layers[1:] if getattr(layer, "w", None) is not None]
    modules = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.ConvTranspose2d))]
    with torch.no_grad():
        for module, std in zip(modules, stds, strict=True):
            module.weight.normal_(0.0, std)
            module.bias.zero_()


def _train_plain(model: TorchConvAE, x: np.ndarray, epochs: int, channels_last: bool = False) -> float:
    """The baseline's own loop (Adam, shuffled batches, MSE); returns its seconds."""
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    xtr = torch.from_numpy(x)
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xtr), generator=generator).split(BATCH):
            batch = xtr[idx]
            if channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            loss = torch.mean((model(batch) - batch) ** 2)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return time.perf_counter() - start


def _run_torch(x, y, xt, yt, aekit_init: bool = False) -> dict:
    torch.manual_seed(0)
    model = TorchConvAE()
    if aekit_init:
        _aekit_init(model)
    seconds = _train_plain(model, x, EPOCHS)
    model.eval()
    with torch.no_grad():
        xtr, test = torch.from_numpy(x), torch.from_numpy(xt)
        mse = float(torch.mean((model(test) - test) ** 2))
        codes, test_codes = model.encoder(xtr).numpy(), model.encoder(test).numpy()
    acc = _centroid_accuracy(codes, y, test_codes, yt)
    params = sum(p.numel() for p in model.parameters())
    name = "plain PyTorch, aekit's initial weights scale" if aekit_init else "plain PyTorch"
    return {"model": name, "test_mse": mse, "centroid_acc": acc, "seconds": seconds, "params": params}


def speed_rounds(x: np.ndarray, rounds: int = SPEED_ROUNDS) -> dict:
    """Seconds for one epoch on ``x``: aekit, the plain loop, and the plain loop in channels-last
    memory order, taking turns (the order reverses every round); medians and per-round ratios."""

    def aekit_epoch() -> float:
        net = aekit.Autoencoder(LAYERS, rng=0)
        start = time.perf_counter()
        net.train(x, algo="adam", learning_rate=LR, batch_size=BATCH, max_epochs=1, validate_every=0)
        return time.perf_counter() - start

    def plain_epoch(channels_last: bool) -> float:
        torch.manual_seed(0)
        return _train_plain(TorchConvAE(), x, 1, channels_last)

    contenders = {
        "aekit": aekit_epoch,
        "plain": lambda: plain_epoch(False),
        "plain, channels-last": lambda: plain_epoch(True),
    }
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    for round_index in range(rounds):
        names = list(contenders) if round_index % 2 == 0 else list(contenders)[::-1]
        for name in names:
            seconds[name].append(contenders[name]())
    return {
        "n": len(x),
        "rounds": rounds,
        "median": {name: statistics.median(v) for name, v in seconds.items()},
        "round_speedups": [p / a for a, p in zip(seconds["aekit"], seconds["plain"])],
    }


def run() -> dict:
    """Train both models; return their figures, or ``{'skipped': reason}`` without MNIST."""
    data = load_mnist()
    if data is None:
        return {"skipped": f"MNIST not found in {DATA}"}
    x, y, xt, yt = data
    # Untimed: the first torch.optim optimizer of a process imports torch._dynamo (about 2 s),
    # which would otherwise be charged to whichever model trains first.
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    rows = [_run_aekit(x, y, xt, yt), _run_torch(x, y, xt, yt), _run_torch(x, y, xt, yt, aekit_init=True)]
    ours = rows[0]
    return {
        "rows": rows,
        "speed": speed_rounds(x[:SPEED_N]),
        "n_train": len(x),
        "n_test": len(xt),
        "epochs": EPOCHS,
        "threads": torch.get_num_threads(),
        "passes": ours["test_mse"] < TARGET_MSE and ours["centroid_acc"] > TARGET_ACC,
    }


def to_markdown(result: dict) -> str:
    if "skipped" in result:
        return f"### Convolutional autoencoder on MNIST\n\nskipped: {result['skipped']}"
    lines = [
        "### Convolutional autoencoder on MNIST",
        "",
        f"MNIST conv autoencoder, {CODE}-unit code, {result['epochs']} epochs on {result['n_train']} images "
        f"(Adam {LR:g}, batch {BATCH}), {result['n_test']} test images, {result['threads']} torch threads",
        "",
        "| model | test MSE | nearest-centroid acc. on codes | train time (s) | params |",
        "|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['model']} | {row['test_mse']:.4f} | {row['centroid_acc']:.3f} | "
            f"{row['seconds']:.1f} | {row['params']} |"
        )
    lines += [
        "",
        "Train time is one run each, in this order. The third row is the plain model started at "
        "aekit's initial scale (He-normal weights for relu layers, Glorot for the others, zero biases) "
        "instead of torch's smaller uniform default, to tell "
        "the initialisation's share of a test-MSE gap between the first two rows from the training's.",
        "",
    ]
    speed = result["speed"]
    median = speed["median"]
    lines += [
        f"Speed, {speed['rounds']} alternated rounds of one epoch on {speed['n']:,} images (medians): "
        f"aekit {median['aekit']:.3f} s, plain PyTorch {median['plain']:.3f} s "
        f"({median['plain'] / median['aekit']:.2f}x aekit's speed-up; per round "
        f"{min(speed['round_speedups']):.2f}x to {max(speed['round_speedups']):.2f}x), "
        f"plain PyTorch converted to channels-last by hand {median['plain, channels-last']:.3f} s.",
        "",
        f"acceptance (aekit MSE < {TARGET_MSE}, accuracy > {TARGET_ACC}): {'pass' if result['passes'] else 'FAIL'}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(to_markdown(run()))
