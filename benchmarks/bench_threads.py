"""The README's theanets snippet on a busy machine: the thread policy against one and two threads.

Every core is kept busy by a spinning competitor process (``while True: pass``)
while the snippet (digits, 64-9-64, ``weight_l2=1e-4``, ``max_updates=20``) trains
three ways, alternated over rounds: ``threads='auto'`` (aekit's default, see
``aekit.train.threads``), one thread (``threads=1``), and torch's own setting
(``threads=None``: two threads on this machine).  The same three on the idle
machine (competitors stopped) show what the policy costs when nothing competes.

Acceptance (issue 19): with both cores busy, the default's time within 1.5x of
one thread's.

Run ``python benchmarks/bench_threads.py``; ``run()`` returns the figures.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

import torch
from sklearn.datasets import load_digits

import aekit

SETTINGS = {"auto (default)": "auto", "1 thread": 1, "torch's setting": None}


def _snippet(threads: int | str | None) -> float:
    data = (load_digits().data / 16.0).astype("float32")
    started = time.perf_counter()
    net = aekit.Autoencoder([64, 9, 64])
    net.train(data, weight_l2=0.0001, max_updates=20, threads=threads)
    return time.perf_counter() - started


def _rounds(rounds: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in SETTINGS}
    for index in range(rounds):
        names = list(SETTINGS) if index % 2 == 0 else list(reversed(SETTINGS))
        for name in names:
            times[name].append(_snippet(SETTINGS[name]))
    return {name: statistics.median(values) for name, values in times.items()}


def run(rounds: int = 3) -> dict:
    """Median seconds per setting, busy (a spinning competitor per core) and idle."""
    torch_threads = torch.get_num_threads()
    _snippet("auto")  # warm-up: imports, first optimizer
    idle = _rounds(rounds)
    competitors = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    try:
        time.sleep(1.0)
        busy = _rounds(rounds)
    finally:
        for process in competitors:
            process.kill()
            process.wait()
    ratio = busy["auto (default)"] / busy["1 thread"]
    return {
        "torch_threads": torch_threads,
        "cores": os.cpu_count(),
        "rounds": rounds,
        "idle": idle,
        "busy": busy,
        "busy_ratio_default_to_one": ratio,
        "pass": ratio <= 1.5,
    }


def to_markdown(result: dict) -> str:
    """The report section."""
    lines = [
        "### The theanets snippet on a busy machine (thread policy)",
        "",
        f"README's theanets snippet (digits, 64-9-64, weight_l2=1e-4, 20 epochs); torch's own setting is "
        f"{result['torch_threads']} threads on {result['cores']} cores; medians of {result['rounds']} alternated "
        "rounds. Busy: one spinning competitor process per core.",
        "",
        "| setting | idle machine (s) | both cores busy (s) |",
        "| --- | ---: | ---: |",
    ]
    for name in SETTINGS:
        lines.append(f"| {name} | {result['idle'][name]:.2f} | {result['busy'][name]:.2f} |")
    lines += [
        "",
        f"acceptance (busy: default within 1.5x of one thread): {result['busy_ratio_default_to_one']:.2f}x, "
        f"{'pass' if result['pass'] else 'FAIL'}",
    ]
    return "\n".join(lines)


def main() -> None:
    print(to_markdown(run()))


if __name__ == "__main__":
    main()
