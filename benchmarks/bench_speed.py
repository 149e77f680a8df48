"""Training speed: aekit against a hand-written PyTorch loop, scikit-learn, and the sgemm peak.

For each dense model (784-256-784 sigmoid, and the deep 784-1000-500-250-30
mirrored one) the same model is trained by

* aekit: ``Autoencoder(...).train(x, batch_size=128, max_epochs=E, validate_every=0)``
  (Adam, learning rate 1e-3, MSE);
* a plain PyTorch loop: ``nn.Sequential(Linear, Sigmoid, ...)``, ``nn.MSELoss``,
  ``torch.optim.Adam(params)`` with default settings, and index slicing
  ``x[perm[i:i + 128]]`` with a fresh ``torch.randperm`` per epoch (no DataLoader);

starting from the same initial weights (copied from aekit's), alternating which
runs first in each round, in one process.  Figures are medians over rounds of
samples per second.  The speed-up is given two ways: the ratio of the two
medians, and the median of each round's own ratio, each with a 95% percentile
bootstrap interval over the rounds (a round's two runs are back to back, so load that comes and
goes on a shared machine disturbs that figure least).  GFLOP/s counts the multiply-adds of the matrix products
(forward, weight gradients, input gradients except for the first layer) and is
compared with the best rate of a 2048 x 2048 ``torch.mm`` measured here.

scikit-learn's ``MLPRegressor`` (fit x -> x, one hidden layer of 256 logistic
units, Adam, batch 128) runs on fewer samples; its output layer is linear.

The time to the first training step is measured in a fresh interpreter: import
aekit, build the 784-256-784 model, train one batch (no compilation).

Run ``python benchmarks/bench_speed.py``; ``run()`` returns the figures and
``to_markdown`` formats them.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import aekit
from aekit import datasets

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
BATCH = 128
DENSE = {
    "784-256-784 sigmoid": [784, 256, 784],
    "784-1000-500-250-30 mirrored (sigmoid, linear code)": [784, 1000, 500, 250, 30, 250, 500, 1000, 784],
}


def load_data(n: int) -> tuple[np.ndarray, np.ndarray, str]:
    """``n`` training and 2000 test images in [0, 1]: MNIST when present, else uniform noise."""
    if (MNIST / "train-images-idx3-ubyte.gz").exists():
        train, _ = datasets.mnist(MNIST)
        test, _ = datasets.mnist(MNIST, split="test")
        return train[:n], test[:2000], f"MNIST ({MNIST})"
    rng = np.random.default_rng(0)
    return (
        rng.random((n, 784), dtype=np.float32),
        rng.random((2000, 784), dtype=np.float32),
        "uniform random data shaped like MNIST (MNIST not found)",
    )


def _activations(sizes: list[int]) -> list[str]:
    # Sigmoid everywhere except a linear code layer in deep models (Hinton & Salakhutdinov 2006).
    middle = len(sizes) // 2
    return ["linear" if (len(sizes) > 3 and i == middle) else "sigmoid" for i in range(1, len(sizes))]


def build_aekit(sizes: list[int]) -> aekit.Autoencoder:
    acts = _activations(sizes)
    return aekit.Autoencoder([sizes[0], *[(s, a) for s, a in zip(sizes[1:], acts)]], rng=7)


def build_plain(net: aekit.Autoencoder, sizes: list[int]) -> torch.nn.Sequential:
    """The plain model with aekit's initial weights (nn.Linear stores w transposed)."""
    modules: list[torch.nn.Module] = []
    for layer, act in zip(net.layers[1:], _activations(sizes)):
        linear = torch.nn.Linear(layer.n_in, layer.n_out)
        with torch.no_grad():
            linear.weight.copy_(layer.w.detach().t())
            linear.bias.copy_(layer.b.detach())
        modules.append(linear)
        if act == "sigmoid":
            modules.append(torch.nn.Sigmoid())
    return torch.nn.Sequential(*modules)


def plain_loop(model: torch.nn.Sequential, x: torch.Tensor, epochs: int, seed: int = 0) -> None:
    """The hand-written baseline: Adam defaults, MSELoss, a fresh randperm per epoch, index slicing."""
    optimizer = torch.optim.Adam(model.parameters())
    loss_fn = torch.nn.MSELoss()
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=generator)
        for start in range(0, x.shape[0], BATCH):
            xb = x[perm[start : start + BATCH]]
            optimizer.zero_grad()
            loss = loss_fn(model(xb), xb)
            loss.backward()
            optimizer.step()


def flops_per_sample(sizes: list[int]) -> int:
    """Multiply-add FLOPs of one training step per sample (no input gradient for the first layer)."""
    total = 0
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        total += (4 if i == 0 else 6) * a * b
    return total


def sgemm_peak(n: int = 2048, repeats: int = 5) -> float:
    """Best GFLOP/s of an n x n float32 ``torch.mm`` with the current thread settings."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best / 1e9


def bootstrap_interval(
    aekit_rates: list[float], plain_rates: list[float], stat, level: float = 0.95, draws: int = 10000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat(aekit_rates, plain_rates)``, resampling whole rounds
    (each round's pair of runs together) with replacement."""
    a, p = np.asarray(aekit_rates, dtype=float), np.asarray(plain_rates, dtype=float)
    picks = np.random.default_rng(seed).integers(0, len(a), size=(draws, len(a)))
    stats = [stat(a[rows], p[rows]) for rows in picks]
    tail = (1 - level) / 2
    return float(np.quantile(stats, tail)), float(np.quantile(stats, 1 - tail))


def ratio_of_medians(a: np.ndarray, p: np.ndarray) -> float:
    return float(np.median(a) / np.median(p))


def median_of_ratios(a: np.ndarray, p: np.ndarray) -> float:
    return float(np.median(a / p))


def compare_dense(sizes: list[int], x: np.ndarray, test: np.ndarray, epochs: int, rounds: int) -> dict:
    xt, tt = torch.from_numpy(x), torch.from_numpy(test)
    # One untimed warm-up of each: the first torch.optim optimizer of a process imports
    # torch._dynamo (about 2 s), which would otherwise be charged to whoever runs first
    # (the time to the first step is measured on its own, in a fresh interpreter).
    warm = build_aekit(sizes)
    warm.train(x[: 4 * BATCH], batch_size=BATCH, max_epochs=1, validate_every=0)
    plain_loop(build_plain(warm, sizes), xt[: 4 * BATCH], 1)
    rates: dict[str, list[float]] = {"aekit": [], "plain": []}
    errors: dict[str, float] = {}
    for round_index in range(rounds):
        order = ["aekit", "plain"] if round_index % 2 == 0 else ["plain", "aekit"]
        for who in order:
            net = build_aekit(sizes)
            if who == "aekit":
                started = time.perf_counter()
                net.train(x, batch_size=BATCH, max_epochs=epochs, validate_every=0, learning_rate=1e-3)
                seconds = time.perf_counter() - started
                errors["aekit"] = float(((net.predict(test) - test) ** 2).mean())
            else:
                model = build_plain(net, sizes)
                started = time.perf_counter()
                plain_loop(model, xt, epochs)
                seconds = time.perf_counter() - started
                with torch.inference_mode():
                    errors["plain"] = float(((model(tt) - tt) ** 2).mean())
            rates[who].append(len(x) * epochs / seconds)
    flops = flops_per_sample(sizes)
    medians = {k: statistics.median(v) for k, v in rates.items()}
    return {
        "rates": rates,
        "median": medians,
        "gflops": {k: v * flops / 1e9 for k, v in medians.items()},
        "speedup": medians["aekit"] / medians["plain"],
        "speedup_interval": bootstrap_interval(rates["aekit"], rates["plain"], ratio_of_medians),
        # Each round's own ratio too: the two contenders of a round ran back to back, so
        # this is the figure least disturbed by load that comes and goes.
        "round_speedups": [a / p for a, p in zip(rates["aekit"], rates["plain"])],
        "round_speedup_interval": bootstrap_interval(rates["aekit"], rates["plain"], median_of_ratios),
        "test_mse": errors,
        "mse_ratio": errors["aekit"] / errors["plain"],
    }


def compiled_rate(sizes: list[int], x: np.ndarray, epochs: int) -> dict:
    """aekit with ``compile=True``: compile time (first step) and the rate of the later epochs."""
    net = build_aekit(sizes)
    rates = []
    started = time.perf_counter()
    for _ in net.itertrain(x, batch_size=BATCH, max_epochs=epochs + 1, validate_every=0, compile=True):
        now = time.perf_counter()
        rates.append(len(x) / (now - started))
        started = now
    return {"first_epoch_rate": rates[0], "later_rate": statistics.median(rates[1:])}


def sklearn_rate(x: np.ndarray) -> dict:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor

    model = MLPRegressor(
        hidden_layer_sizes=(256,),
        activation="logistic",
        solver="adam",
        batch_size=BATCH,
        learning_rate_init=1e-3,
        max_iter=1,
        shuffle=True,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        started = time.perf_counter()
        model.fit(x, x)
        seconds = time.perf_counter() - started
    return {"samples": len(x), "rate": len(x) / seconds}


FIRST_STEP = """
import time
t0 = time.perf_counter()
import numpy as np
import aekit
t1 = time.perf_counter()
net = aekit.Autoencoder([784, (256, 'sigmoid'), (784, 'sigmoid')])
x = np.random.default_rng(0).random((128, 784), dtype=np.float32)
net.train(x, batch_size=128, max_epochs=1, validate_every=0)
t2 = time.perf_counter()
print(t1 - t0, t2 - t0)
"""


def first_step_seconds() -> dict:
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", FIRST_STEP], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    import_s, step_s = map(float, out.stdout.split())
    return {"import_s": import_s, "first_step_s": step_s, "process_wall_s": wall}


def run(
    n: int = 20000,
    epochs: int = 2,
    rounds: int = 21,
    deep_rounds: int = 9,
    deep_n: int = 10000,
    sklearn_n: int = 5000,
    compile: bool = True,
) -> dict:
    """Every figure of this benchmark as a dict (see :func:`to_markdown`)."""
    x, test, source = load_data(max(n, deep_n, sklearn_n))
    result: dict = {
        "data": source,
        "threads": torch.get_num_threads(),
        "batch_size": BATCH,
        "epochs": epochs,
        "rounds": {"shallow": rounds, "deep": deep_rounds},
        "first_step": first_step_seconds(),
        "peak_gflops": sgemm_peak(),
        "models": {},
    }
    for name, sizes in DENSE.items():
        count = n if len(sizes) == 3 else deep_n
        figures = compare_dense(sizes, x[:count], test, epochs, rounds if len(sizes) == 3 else deep_rounds)
        figures["samples"] = count
        figures["flops_per_sample"] = flops_per_sample(sizes)
        result["models"][name] = figures
    result["sklearn"] = sklearn_rate(x[:sklearn_n])
    if compile:
        try:
            result["compiled"] = compiled_rate(DENSE["784-256-784 sigmoid"], x[:n], epochs)
        except Exception as error:  # noqa: BLE001 - report, do not hide the other figures
            result["compiled"] = {"error": f"{type(error).__name__}: {error}"}
    result["peak_gflops_after"] = sgemm_peak()
    return result


def to_markdown(result: dict) -> str:
    peak = max(result["peak_gflops"], result["peak_gflops_after"])
    lines = [
        "### Training speed: aekit vs a plain PyTorch loop (dense autoencoders, MSE, Adam, batch 128)",
        "",
        f"Data: {result['data']}. Torch threads: {result['threads']}. {result['epochs']} epochs per run; "
        f"figures are **medians of {result['rounds']['shallow']} alternated rounds** "
        f"({result['rounds']['deep']} for the deep model; aekit and the plain loop take "
        "turns going first, in one process, from the same initial weights). Two speed-ups: the ratio of "
        "the two medians, and the median of each round's own ratio (its two runs were back to back, so "
        "load that comes and goes on this shared machine disturbs it least), each with a 95% bootstrap "
        "interval (rounds resampled). The plain loop is "
        "`nn.Sequential(Linear, Sigmoid, ...)` + `nn.MSELoss` + `torch.optim.Adam` (defaults) with a fresh "
        "`torch.randperm` per epoch and index slicing (no DataLoader).",
        "",
        f"Measured float32 matmul peak (2048x2048 `torch.mm`, best of 5, before / after): "
        f"{result['peak_gflops']:.1f} / {result['peak_gflops_after']:.1f} GFLOP/s.",
        "",
        "| model | samples | aekit samples/s | plain loop samples/s | speed-up: ratio of medians (95% interval) "
        "| speed-up: median of rounds (95% interval) | aekit GFLOP/s (% of peak) "
        "| plain GFLOP/s (% of peak) | test MSE aekit / plain |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, f in result["models"].items():
        ga, gp = f["gflops"]["aekit"], f["gflops"]["plain"]
        lines.append(
            f"| {name} | {f['samples']:,} | {f['median']['aekit']:,.0f} | {f['median']['plain']:,.0f} | "
            f"{f['speedup']:.2f}x ({f['speedup_interval'][0]:.2f}x to {f['speedup_interval'][1]:.2f}x) | "
            f"{statistics.median(f['round_speedups']):.2f}x "
            f"({f['round_speedup_interval'][0]:.2f}x to {f['round_speedup_interval'][1]:.2f}x) | "
            f"{ga:.1f} ({100 * ga / peak:.0f}%) | {gp:.1f} ({100 * gp / peak:.0f}%) | "
            f"{f['test_mse']['aekit']:.5f} / {f['test_mse']['plain']:.5f} ({100 * (f['mse_ratio'] - 1):+.1f}%) |"
        )
    lines.append("")
    for name, f in result["models"].items():
        rounds = ", ".join(f"{a:,.0f}/{p:,.0f}" for a, p in zip(f["rates"]["aekit"], f["rates"]["plain"]))
        ratios = f["round_speedups"]
        lines.append(
            f"- {name}: every round, aekit/plain samples/s: {rounds}; the rounds' own speed-ups "
            f"{min(ratios):.2f}x to {max(ratios):.2f}x, median {statistics.median(ratios):.2f}x"
        )
    sk = result["sklearn"]
    dense = result["models"]["784-256-784 sigmoid"]["median"]["aekit"]
    lines += [
        f"- scikit-learn `MLPRegressor` (784-256-784 logistic hidden, linear output, Adam, batch 128, "
        f"{sk['samples']:,} samples, one epoch): {sk['rate']:,.0f} samples/s "
        f"(aekit is {dense / sk['rate']:.1f}x faster).",
    ]
    comp = result.get("compiled")
    if comp:
        if "error" in comp:
            lines.append(f"- aekit `compile=True`: failed here ({comp['error']}).")
        else:
            lines.append(
                f"- aekit `compile=True` (784-256-784): first epoch, compile included, "
                f"{comp['first_epoch_rate']:,.0f} samples/s; later epochs {comp['later_rate']:,.0f} samples/s."
            )
    fs = result["first_step"]
    lines.append(
        f"- Time to the first training step in a fresh interpreter (import aekit + build + one batch, no "
        f"compilation): {fs['first_step_s']:.2f} s (import alone {fs['import_s']:.2f} s; whole process "
        f"{fs['process_wall_s']:.2f} s). Most of the time after the import is torch itself importing "
        "`torch._dynamo` when the first `torch.optim` optimizer is built; a plain PyTorch loop pays the same."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=21, help="alternated rounds, 784-256-784 model")
    parser.add_argument("--deep-rounds", type=int, default=9, help="alternated rounds, deep model")
    parser.add_argument("--no-compile", action="store_true", help="skip the compile=True figure")
    args = parser.parse_args()
    print(to_markdown(run(args.samples, args.epochs, args.rounds, args.deep_rounds, compile=not args.no_compile)))


if __name__ == "__main__":
    main()
