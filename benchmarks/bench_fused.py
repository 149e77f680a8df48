"""The hand-derived dense step (``aekit.fused``) against autograd's path, on regularized models.

Denoising, sparse and dropout autoencoders take the same hand-derived step as
plain ones.  For each of them, one epoch of the MNIST 784-256-784 sigmoid model
(MSE, Adam 1e-3, batch 128) is trained twice per round, once with the
hand-derived step and once through autograd (``Autoencoder.loss_terms`` plus
``backward``, what aekit runs when the step does not apply), taking turns which
goes first; the figures are medians over the rounds.  Both draw the same noise,
so they train the same model; the test MSE of the last round is reported for both.

Without ``../shared/data/mnist`` the data are uniform noise shaped like MNIST.
Run ``python benchmarks/bench_fused.py``; ``run()`` returns the figures.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

import aekit
from aekit.fused import DenseChainStep

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_speed import BATCH, load_data  # noqa: E402 - the same data as the speed benchmark

SAMPLES, ROUNDS = 10_000, 5
MODELS = {
    "denoising (input_noise=0.3)": dict(input_noise=0.3),
    "sparse, UFLDL (sparsity_target=0.05, sparsity_weight=3)": dict(sparsity_target=0.05, sparsity_weight=3.0),
    "dropout (input_dropout=0.2, hidden_dropout=0.5)": dict(input_dropout=0.2, hidden_dropout=0.5),
}


@contextlib.contextmanager
def autograd_only() -> Iterator[None]:
    """Training inside this block takes autograd's path: no model qualifies for the hand-derived step."""
    original = DenseChainStep.__dict__["build"]
    DenseChainStep.build = classmethod(lambda cls, net, regs: None)
    try:
        yield
    finally:
        DenseChainStep.build = original


def one_epoch(x: np.ndarray, test: np.ndarray, regularizers: dict, fused: bool) -> tuple[float, float]:
    """Seconds for one epoch, and the test MSE after it."""
    net = aekit.Autoencoder([784, (256, "sigmoid"), (784, "sigmoid")], rng=7)
    with contextlib.nullcontext() if fused else autograd_only():
        started = time.perf_counter()
        net.train(x, batch_size=BATCH, max_epochs=1, validate_every=0, learning_rate=1e-3, **regularizers)
        seconds = time.perf_counter() - started
    return seconds, float(((net.predict(test) - test) ** 2).mean())


def run(samples: int = SAMPLES, rounds: int = ROUNDS) -> dict:
    x, test, source = load_data(samples)
    x = x[:samples]
    one_epoch(x[:4 * BATCH], test, {}, True)  # untimed warm-up: torch.optim's first import of torch._dynamo
    models = {}
    for name, regularizers in MODELS.items():
        seconds: dict[str, list[float]] = {"fused": [], "autograd": []}
        errors: dict[str, float] = {}
        for round_index in range(rounds):
            for who in (["fused", "autograd"] if round_index % 2 == 0 else ["autograd", "fused"]):
                took, errors[who] = one_epoch(x, test, regularizers, who == "fused")
                seconds[who].append(took)
        rates = {who: samples / statistics.median(v) for who, v in seconds.items()}
        models[name] = {"rates": rates, "speedup": rates["fused"] / rates["autograd"], "test_mse": errors,
                        "round_speedups": [a / f for f, a in zip(seconds["fused"], seconds["autograd"])]}
    return {"data": source, "samples": samples, "rounds": rounds, "models": models}


def to_markdown(result: dict) -> str:
    lines = [
        "### Regularized dense models: the hand-derived step vs autograd's path",
        "",
        f"784-256-784 sigmoid, MSE, Adam 1e-3, batch {BATCH}, one epoch on {result['samples']:,} samples of "
        f"{result['data']}; medians of {result['rounds']} alternated rounds.",
        "",
        "| model | hand-derived step, samples/s | autograd, samples/s | speed-up (rounds) | test MSE step / autograd |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, f in result["models"].items():
        ratios = f["round_speedups"]
        lines.append(f"| {name} | {f['rates']['fused']:,.0f} | {f['rates']['autograd']:,.0f} | "
                     f"{f['speedup']:.2f}x ({min(ratios):.2f}x to {max(ratios):.2f}x) | "
                     f"{f['test_mse']['fused']:.5f} / {f['test_mse']['autograd']:.5f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(to_markdown(run()))
