"""Train one epoch from a memory-mapped .npy larger than 1 GB; memory must not grow with the data.

The data (low-rank signal plus noise, float32) are written block by block to a
temporary folder with ``np.lib.format.open_memmap``, opened with
``aekit.load_data(path, mmap=True)`` and trained for one epoch.  A thread samples
``RssAnon`` from ``/proc/self/status`` every 20 ms: anonymous memory (the
process's own allocations), as opposed to ``RssFile``, the page cache of the
mapped file that the kernel reclaims at will.  The folder is deleted afterwards.

Run ``python benchmarks/bench_streaming.py [--gib 1.0]``; ``run()`` returns the figures.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

import aekit

FEATURES = 256
LIMIT_BYTES = 1 << 30  # the acceptance bound on peak anonymous memory


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


class _Sampler(threading.Thread):
    def __init__(self, every: float = 0.02):
        super().__init__(daemon=True)
        self.every, self.peak_anon, self.peak_file = every, 0, 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            time.sleep(self.every)

    def sample(self) -> None:
        self.peak_anon = max(self.peak_anon, _status_kib("RssAnon") * 1024)
        self.peak_file = max(self.peak_file, _status_kib("RssFile") * 1024)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        self.sample()


def _write(path: Path, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(16, FEATURES)).astype(np.float32) / 4
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, FEATURES))
    chunk = 65536
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        codes = rng.normal(size=(n, 16)).astype(np.float32)
        out[start : start + n] = codes @ basis + 0.05 * rng.normal(size=(n, FEATURES)).astype(np.float32)
        out.flush()
    del out


def run(gib: float = 1.0, batch_size: int = 1024) -> dict:
    """Write ``gib`` GiB, train one epoch streamed from it, return the figures."""
    rows = int(gib * (1 << 30)) // (FEATURES * 4)
    folder = Path(tempfile.mkdtemp(prefix="aekit-bench-stream-"))
    try:
        path = folder / "big.npy"
        t0 = time.perf_counter()
        _write(path, rows)
        write_s = time.perf_counter() - t0
        size = path.stat().st_size
        x = aekit.load_data(path, mmap=True)
        net = aekit.Autoencoder([FEATURES, (32, "linear"), (FEATURES, "tied")], rng=1)
        baseline_anon = _status_kib("RssAnon") * 1024
        sampler = _Sampler()
        sampler.start()
        t0 = time.perf_counter()
        try:
            train, _ = net.train(x, max_epochs=1, batch_size=batch_size, learning_rate=1e-3, validate_every=0)
        finally:
            sampler.stop()
        train_s = time.perf_counter() - t0
        del x
        return {
            "file_bytes": size,
            "rows": rows,
            "features": FEATURES,
            "batch_size": batch_size,
            "write_seconds": write_s,
            "train_seconds": train_s,
            "rows_per_second": rows / train_s,
            "mb_per_second": size / train_s / 1e6,
            "rss_anon_before_bytes": baseline_anon,
            "peak_rss_anon_bytes": sampler.peak_anon,
            "peak_rss_file_bytes": sampler.peak_file,
            "final_loss": train["loss"],
            "under_limit": sampler.peak_anon < LIMIT_BYTES,
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def to_markdown(result: dict) -> str:
    mib = 1 << 20
    lines = [
        "### Streaming from a memory-mapped .npy (one epoch)",
        "",
        "| figure | value |",
        "| --- | ---: |",
        f"| data file | {result['file_bytes'] / mib:,.0f} MiB ({result['rows']:,} x {result['features']} float32) |",
        f"| batch size | {result['batch_size']} |",
        f"| training time | {result['train_seconds']:.1f} s ({result['rows_per_second']:,.0f} rows/s, "
        f"{result['mb_per_second']:.0f} MB/s) |",
        f"| RssAnon before training | {result['rss_anon_before_bytes'] / mib:,.0f} MiB |",
        f"| peak RssAnon while training | {result['peak_rss_anon_bytes'] / mib:,.0f} MiB "
        f"({'below' if result['under_limit'] else 'ABOVE'} the 1 GiB bound) |",
        f"| peak RssFile (page cache of the map, reclaimable) | {result['peak_rss_file_bytes'] / mib:,.0f} MiB |",
        f"| training loss after the epoch | {result['final_loss']:.4g} |",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0, help="size of the data file in GiB (default 1)")
    parser.add_argument("--batch-size", type=int, default=1024)
    args = parser.parse_args()
    print(to_markdown(run(args.gib, args.batch_size)))


if __name__ == "__main__":
    main()
