"""Data-parallel scaling: training samples/s with 1 and 2 processes (torchrun, gloo, CPU).

Every configuration trains the same model on the same data with the same
*global* batch (``batch_size * processes``), so the runs take the same steps and
end with the same loss; only the wall time differs.  Each run is launched as
``python -m torch.distributed.run --standalone --nproc_per_node=P`` of this file
in worker mode; rank 0 times ``net.train`` (data loading and process start-up
excluded) and writes the figures to a JSON file.

Configurations: 1 process x 1 thread, 1 process x T threads (T = CPU cores, up
to 2) and P processes x 1 thread.  Data: MNIST training images when
``../shared/data/mnist`` exists, else a synthetic low-rank 784-feature set.

Run ``python benchmarks/bench_distributed.py [--n 20000] [--epochs 2]``; ``run()``
returns the figures and ``to_markdown(result)`` renders them.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MNIST = HERE.parent.parent / "shared" / "data" / "mnist" / "train-images-idx3-ubyte.gz"
LAYERS = [784, (256, "sigmoid"), (784, "tied")]
GLOBAL_BATCH = 128


def load_data(n: int) -> tuple[np.ndarray, str]:
    if MNIST.exists():
        raw = gzip.open(MNIST).read()
        x = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 784)[:n].astype(np.float32) / 255.0
        return x, f"MNIST training images ({len(x)})"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 32)) @ rng.normal(size=(32, 784)) / 8 + 0.05 * rng.normal(size=(n, 784))
    return x.astype(np.float32), f"synthetic low-rank data ({n} x 784)"


def worker(data: str, out: str, epochs: int, threads: int) -> None:
    """One process of a run (under torchrun when there are several)."""
    import torch

    import aekit

    torch.set_num_threads(threads)
    x = np.load(data)
    world = aekit.distributed.world_size()
    net = aekit.Autoencoder(LAYERS, rng=1)
    # Untimed warm-up step: joins the process group and builds the DDP wrapper's first buckets.
    net.train(x[:GLOBAL_BATCH], batch_size=GLOBAL_BATCH // world, max_epochs=1, validate_every=0)
    net = aekit.Autoencoder(LAYERS, rng=1)
    start, cpu = time.perf_counter(), time.process_time()
    train, _ = net.train(
        x, batch_size=GLOBAL_BATCH // world, max_epochs=epochs, validate_every=0, algo="adam", learning_rate=1e-3
    )
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    # CPU time of all ranks: the work per sample, which load on the shared cores does not inflate much.
    total_cpu = torch.tensor([cpu], dtype=torch.float64)
    if aekit.distributed.is_active():
        torch.distributed.all_reduce(total_cpu)
    if aekit.distributed.is_main_process():
        result = {
            "processes": world,
            "threads": threads,
            "seconds": seconds,
            "samples_per_s": len(x) * epochs / seconds,
            "loss": train["loss"],
            "cpu_ms_per_1k": 1e6 * float(total_cpu) / (len(x) * epochs),
        }
        Path(out).write_text(json.dumps(result))


def launch(data: Path, processes: int, threads: int, epochs: int, folder: Path) -> dict:
    out = folder / f"result-{processes}x{threads}.json"
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore")
    args = [__file__, "--worker", str(data), str(out), str(epochs), str(threads)]
    if processes > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *args]
    else:
        cmd = [sys.executable, *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


def run(n: int = 20000, epochs: int = 2, processes: int = 2) -> dict:
    """Samples/s of each configuration, and the speed-up over 1 process x 1 thread."""
    x, source = load_data(n)
    cores = os.cpu_count() or 1
    configs = [(1, 1), (1, min(processes, cores)), (processes, 1)]
    configs = list(dict.fromkeys(configs))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        np.save(folder / "x.npy", x)
        runs = [launch(folder / "x.npy", p, t, epochs, folder) for p, t in configs]
    base = runs[0]["samples_per_s"]
    for r in runs:
        r["speedup"] = r["samples_per_s"] / base
    return {
        "data": source,
        "samples": len(x),
        "epochs": epochs,
        "global_batch": GLOBAL_BATCH,
        "model": "784-256-784 tied, sigmoid",
        "cores": cores,
        "load": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "runs": runs,
    }


def to_markdown(result: dict) -> str:
    lines = [
        "### Data-parallel training (torchrun, gloo, CPU)",
        "",
        f"{result['model']} autoencoder, Adam, {result['epochs']} epochs over {result['data']}, "
        f"global batch {result['global_batch']} (per process: {result['global_batch']} / processes); "
        f"{result['cores']} logical cores on this machine.",
        "",
        "| processes x threads | samples/s | speed-up | CPU ms per 1000 samples (all processes) | final loss |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in result["runs"]:
        lines.append(
            f"| {r['processes']} x {r['threads']} | {r['samples_per_s']:,.0f} | {r['speedup']:.2f} | "
            f"{r['cpu_ms_per_1k']:,.0f} | {r['loss']:.6f} |"
        )
    if result.get("load"):
        lines += [
            "",
            f"Load average when it finished: {', '.join(f'{v:.2f}' for v in result['load'])} "
            "(the cores are shared with other work, so the figures are noisy).",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":
        data, out, epochs, threads = argv[1:5]
        sys.path.insert(0, str(HERE.parent))
        worker(data, out, int(epochs), int(threads))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args(argv)
    print(to_markdown(run(args.n, args.epochs, args.processes)))


if __name__ == "__main__":
    main()
