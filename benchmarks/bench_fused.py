"""The hand-derived dense step (``aekit.fused``) against autograd's path, on regularized models.

Denoising, sparse and dropout autoencoders take the same hand-derived step as
plain ones.  For each of them, one epoch of the MNIST 784-256-784 sigmoid model
(MSE, Adam 1e-3, batch 128) is trained twice per round, once with the
hand-derived step and once through autograd (``Autoencoder.loss_terms`` plus
``backward``, what aekit runs when the step does not apply), taking turns which
goes first; the figures are medians over the rounds.  Both draw the same noise,
so they train the same model; the test MSE of the last round is reported for both.

A contractive penalty on a code layer that is one dense layer on the input is
computed in closed form (by the hand-derived step, and by autograd's path alike).
A second table compares that closed form with the general per-example Jacobians
that any other code layer takes, both through autograd (one epoch on fewer
samples: the per-example path is about a hundred times slower).

Without ``../shared/data/mnist`` the data are uniform noise shaped like MNIST.
Run ``python benchmarks/bench_fused.py``; ``run()`` returns the figures.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

import aekit
from aekit.fused import DenseChainStep

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_speed import BATCH, load_data  # noqa: E402 - the same data as the speed benchmark

SAMPLES, ROUNDS = 10_000, 5
CONTRACTIVE = dict(contractive=0.1)
CONTRACTIVE_SAMPLES, CONTRACTIVE_ROUNDS = 512, 3
MODELS = {
    "denoising (input_noise=0.3)": dict(input_noise=0.3),
    "sparse, UFLDL (sparsity_target=0.05, sparsity_weight=3)": dict(sparsity_target=0.05, sparsity_weight=3.0),
    "dropout (input_dropout=0.2, hidden_dropout=0.5)": dict(input_dropout=0.2, hidden_dropout=0.5),
    "contractive (contractive=0.1)": CONTRACTIVE,
}


@contextlib.contextmanager
def autograd_only() -> Iterator[None]:
    """Training inside this block takes autograd's path: no model qualifies for the hand-derived step."""
    original = DenseChainStep.__dict__["build"]
    DenseChainStep.build = classmethod(lambda cls, *args: None)
    try:
        yield
    finally:
        DenseChainStep.build = original


@contextlib.contextmanager
def per_example_jacobians() -> Iterator[None]:
    """Inside this block the contractive penalty takes the general per-example Jacobians (autograd's path)."""
    from aekit.objective import jacobian

    original = jacobian.jacobian_norm
    jacobian.jacobian_norm = jacobian.per_example_jacobian_norm
    try:
        with autograd_only():
            yield
    finally:
        jacobian.jacobian_norm = original


# A training path: a context manager factory; training inside its block takes that path.
TrainingPath = Callable[[], contextlib.AbstractContextManager]


def one_epoch(x: np.ndarray, test: np.ndarray, regularizers: dict, path: TrainingPath) -> tuple[float, float]:
    """Seconds for one epoch trained inside ``path()``, and the test MSE after it."""
    net = aekit.Autoencoder([784, (256, "sigmoid"), (784, "sigmoid")], rng=7)
    with path():
        started = time.perf_counter()
        net.train(x, batch_size=BATCH, max_epochs=1, validate_every=0, learning_rate=1e-3, **regularizers)
        seconds = time.perf_counter() - started
    return seconds, float(((net.predict(test) - test) ** 2).mean())


def run(samples: int = SAMPLES, rounds: int = ROUNDS) -> dict:
    x, test, source = load_data(samples)
    x = x[:samples]
    # Untimed warm-ups: torch.optim's first import of torch._dynamo, and torch.func's first jvp,
    # each cost a second or so.
    for regularizers in ({}, CONTRACTIVE):
        one_epoch(x[: 4 * BATCH], test, regularizers, contextlib.nullcontext)
    models = {name: alternate(x, test, regularizers, rounds) for name, regularizers in MODELS.items()}
    contractive = alternate(
        x[:CONTRACTIVE_SAMPLES], test, CONTRACTIVE, CONTRACTIVE_ROUNDS, autograd_only, per_example_jacobians
    )
    return {"data": source, "samples": samples, "rounds": rounds, "models": models, "contractive": contractive}


def alternate(
    x: np.ndarray,
    test: np.ndarray,
    regularizers: dict,
    rounds: int,
    fast_path: TrainingPath = contextlib.nullcontext,
    slow_path: TrainingPath = autograd_only,
) -> dict:
    """Rates (samples/s, medians), speed-ups and test MSE of the fast and the slow path, taking turns."""
    seconds: dict[str, list[float]] = {"fast": [], "slow": []}
    errors: dict[str, float] = {}
    for round_index in range(rounds):
        for who in ["fast", "slow"] if round_index % 2 == 0 else ["slow", "fast"]:
            took, errors[who] = one_epoch(x, test, regularizers, fast_path if who == "fast" else slow_path)
            seconds[who].append(took)
    rates = {who: len(x) / statistics.median(v) for who, v in seconds.items()}
    return {
        "rates": rates,
        "speedup": rates["fast"] / rates["slow"],
        "test_mse": errors,
        "round_speedups": [s / f for f, s in zip(seconds["fast"], seconds["slow"])],
    }


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
        lines.append(_row(name, f))
    c = result["contractive"]
    lines += [
        "",
        f"Contractive autoencoder (contractive={CONTRACTIVE['contractive']}, the same model; one epoch on "
        f"{CONTRACTIVE_SAMPLES} samples, medians of {CONTRACTIVE_ROUNDS} alternated rounds): the penalty in "
        "closed form against one automatic Jacobian per example (what a deeper code layer takes), "
        "both through autograd's path.",
        "",
        "| model | closed form, samples/s | per-example Jacobians, samples/s | speed-up (rounds) "
        "| test MSE closed / per-example |",
        "| --- | ---: | ---: | ---: | ---: |",
        _row(f"contractive={CONTRACTIVE['contractive']}", c),
    ]
    return "\n".join(lines)


def _row(name: str, f: dict) -> str:
    ratios = f["round_speedups"]
    return (
        f"| {name} | {f['rates']['fast']:,.0f} | {f['rates']['slow']:,.0f} | "
        f"{f['speedup']:.2f}x ({min(ratios):.2f}x to {max(ratios):.2f}x) | "
        f"{f['test_mse']['fast']:.5f} / {f['test_mse']['slow']:.5f} |"
    )


if __name__ == "__main__":
    print(to_markdown(run()))
