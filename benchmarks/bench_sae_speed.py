"""The training step of a TopK sparse autoencoder: aekit's sparse path against a plain dense reference.

The model is DESIGN.md's SAE: 768 inputs, 16384 latents, ``'topk:32'``, a unit-norm
linear decoder, batches of 1024, Adam (lr 1e-3, torch's fused kernel for both).
Each framework runs in a worker process of its own that builds the model once and
then, on request, times a round of training steps; the rounds alternate between
the frameworks (the order rotates each round) and the figure is the median of the
rounds' tokens per second (a token is one row of the batch).

* ``aekit``: ``StepRunner`` (what ``Autoencoder.train`` runs per batch) with the
  sparse top-k path (:mod:`aekit.model.sparse_decode`) chosen by itself.
* ``aekit, dense path``: the same with ``AEKIT_SPARSE_DECODE=never``.
* ``reference``: OpenAI's recipe written out below in plain PyTorch, dense decoding:
  ``z = topk(relu((x - b_dec) W_enc + b_enc)); x_hat = z W_dec + b_dec``, MSE, the gradient's
  component along each decoder row removed before the step and the rows renormalised
  after; it starts from aekit's own initial weights (same seed).
* with ``AEKIT_SAE_SPEED_EXTERNAL=1``: ``eai-sparsify`` (``SparseCoder``, fvu loss,
  its unit-norm helpers) and ``sae-lens`` (``TopKTrainingSAE``, its default dense
  activations, ``training_forward_pass``), each installed in its own throw-away venv
  under ``$AEKIT_SAE_SPEED_VENVS`` (default ``/tmp/aekit-sae-venvs``) with
  ``torch==2.13.0`` pinned; they are never aekit dependencies.  Their own
  initialisations; Adam as above.

Peak memory increase of a step: each framework in a fresh process with glibc's
mmap threshold pinned at 64 KiB (``MALLOC_MMAP_THRESHOLD_``: a freed tensor leaves
the resident set at once), two warm-up steps, then the gradients are freed, the
kernel's resident-memory high-water mark is reset (``/proc/self/clear_refs``) and
two more steps run: the figure is that high-water mark (``VmHWM``) minus the
resident memory before them (``VmRSS``: parameters and optimizer state), so it
includes the gradients.  It counts every allocation, torch's included (tracemalloc sees none
of them); Linux only.

The data are Gaussian rows (seed 0): a step's cost does not depend on them.
``AEKIT_BENCH_THREADS=N`` sets every worker's torch threads (default: torch's own);
on a machine whose cores other work shares, one thread per worker is the steadier
figure.  ``AEKIT_BENCH_QUICK=1`` runs a small model (256 inputs, 4096 latents, k=16, batch
256, fewer rounds).  Run ``python benchmarks/bench_sae_speed.py``.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
FULL = dict(d=768, latents=16384, k=32, batch=1024, rounds=7, steps=3)
QUICK = dict(d=256, latents=4096, k=16, batch=256, rounds=3, steps=2)
EXTERNAL = {"eai-sparsify": "sparsify", "sae-lens": "sae_lens"}  # package -> module
LR = 1e-3


def config() -> dict:
    """The sizes: full, or quick with ``AEKIT_BENCH_QUICK=1``."""
    return dict(QUICK if os.environ.get("AEKIT_BENCH_QUICK") else FULL)


# ---------------------------------------------------------------------- the frameworks' steps (worker side)
def _adam(params):
    import torch

    try:
        return torch.optim.Adam(params, lr=LR, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=LR, foreach=True)


def _aekit_net(d: int, latents: int, k: int):
    import aekit

    return aekit.Autoencoder(
        [
            d,
            dict(size=latents, activation=f"topk:{k}", name="code"),
            dict(size=d, activation="linear", constraint="unit_norm"),
        ],
        rng=0,
    )


def aekit_step(d: int, latents: int, k: int):
    """aekit's training step (``StepRunner``, as ``train`` runs it); the path follows ``AEKIT_SPARSE_DECODE``."""
    from aekit.objective import Regularizers
    from aekit.train.optimizers import make_optimizer
    from aekit.train.step import StepRunner

    net = _aekit_net(d, latents, k)
    params = list(net.graph.parameters())
    runner = StepRunner(net.objective(Regularizers()), make_optimizer("adam", params, LR, 0.0), batch_size=0)
    return lambda x: runner(x, None), {"torch": _version("torch")}, params


class ReferenceTopKSAE:
    """OpenAI's TopK SAE in plain PyTorch, dense decoding, with a unit-norm decoder (Gao et al. 2024).

    Parameters
    ----------
    w_enc : tensor (d, L)
    b_enc : tensor (L,)
    w_dec : tensor (L, d)
    b_dec : tensor (d,)
    k : int
    """

    def __init__(self, w_enc, b_enc, w_dec, b_dec, k: int):
        import torch

        self.params = [torch.nn.Parameter(t.detach().clone()) for t in (w_enc, b_enc, w_dec, b_dec)]
        self.k = k
        self.optimizer = _adam(self.params)

    def forward(self, x):
        """``x_hat = topk(relu((x - b_dec) W_enc + b_enc)) W_dec + b_dec``, the code dense.

        ``b_dec`` is subtracted before encoding, as in OpenAI's recipe (aekit's default ``pre_bias``).
        """
        import torch

        w_enc, b_enc, w_dec, b_dec = self.params
        pre = torch.relu((x - b_dec) @ w_enc + b_enc)
        values, indices = pre.topk(self.k, dim=1)
        z = torch.zeros_like(pre).scatter(1, indices, values)
        return z @ w_dec + b_dec

    def step(self, x):
        """One Adam step on the MSE, the decoder rows kept at unit norm; returns the loss."""
        import torch

        w_dec = self.params[2]
        self.optimizer.zero_grad(set_to_none=True)
        loss = (self.forward(x) - x).pow(2).mean()
        loss.backward()
        with torch.no_grad():
            unit = w_dec / w_dec.norm(dim=1, keepdim=True)
            w_dec.grad -= (w_dec.grad * unit).sum(dim=1, keepdim=True) * unit
        self.optimizer.step()
        with torch.no_grad():
            w_dec /= w_dec.norm(dim=1, keepdim=True)
        return loss.detach()


def reference_step(d: int, latents: int, k: int):
    """The reference's step, from aekit's initial weights (the same seed)."""
    net = _aekit_net(d, latents, k)
    code, out = net.graph.layers["code"], net.graph.layers["out"]
    model = ReferenceTopKSAE(code.w, code.b, out.w, out.b, k)
    return model.step, {"torch": _version("torch")}, model.params


def sparsify_step(d: int, latents: int, k: int):
    """eai-sparsify's ``SparseCoder``: fvu loss, its gradient projection and renormalisation, Adam."""
    import torch
    from sparsify import SparseCoder, SparseCoderConfig

    torch.manual_seed(0)
    sae = SparseCoder(d, SparseCoderConfig(num_latents=latents, k=k))
    optimizer = _adam(list(sae.parameters()))

    def step(x):
        optimizer.zero_grad(set_to_none=True)
        out = sae(x)
        out.fvu.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        optimizer.step()
        sae.set_decoder_norm_to_unit_norm()
        return out.fvu.detach()

    return step, {"torch": _version("torch"), "eai-sparsify": _version("eai-sparsify")}, list(sae.parameters())


def sae_lens_step(d: int, latents: int, k: int):
    """SAE-Lens' ``TopKTrainingSAE`` with its defaults (dense activations), ``training_forward_pass``, Adam."""
    import torch
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.saes.sae import TrainStepInput

    torch.manual_seed(0)
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d, d_sae=latents, k=k, device="cpu", dtype="float32"))
    optimizer = _adam(list(sae.parameters()))

    def step(x):
        optimizer.zero_grad(set_to_none=True)
        batch = TrainStepInput(
            sae_in=x, coefficients={}, dead_neuron_mask=None, n_training_steps=0, is_logging_step=False
        )
        loss = sae.training_forward_pass(batch).loss
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step, {"torch": _version("torch"), "sae-lens": _version("sae-lens")}, list(sae.parameters())


STEPS = {
    "aekit": aekit_step,
    "aekit-dense": aekit_step,
    "reference": reference_step,
    "eai-sparsify": sparsify_step,
    "sae-lens": sae_lens_step,
}


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def _wait(loss) -> float:
    """A float of a step's loss (aekit's step returns its terms, the total last): the step has finished."""
    return float(loss.reshape(-1)[-1])


def _proc(field: str) -> int:
    """A field of /proc/self/status in bytes (VmRSS, VmHWM)."""
    match = re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text())
    return int(match.group(1)) * 1024 if match else 0


def worker(name: str, d: int, latents: int, k: int, batch: int) -> None:
    """Build ``name``'s step, then answer ``time STEPS`` / ``memory`` / ``quit`` lines on stdin with JSON."""
    import torch

    if os.environ.get("AEKIT_BENCH_THREADS"):
        torch.set_num_threads(int(os.environ["AEKIT_BENCH_THREADS"]))
    step, versions, params = STEPS[name](d, latents, k)
    x = torch.randn(batch, d, generator=torch.Generator().manual_seed(0))
    for _ in range(2):  # warm-up: optimizer state, allocator, first-call costs
        _wait(step(x))
    print(json.dumps({"ready": True, "versions": versions}), flush=True)
    for line in sys.stdin:
        command = line.split()
        if not command or command[0] == "quit":
            break
        if command[0] == "time":
            started = time.perf_counter()
            for _ in range(int(command[1])):
                loss = step(x)
            _wait(loss)  # the last step has finished
            print(json.dumps({"seconds": time.perf_counter() - started}), flush=True)
        elif command[0] == "memory":
            for param in params:  # the baseline: parameters and optimizer state, no gradients
                param.grad = None
            Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current RSS
            before = _proc("VmRSS")
            for _ in range(2):
                _wait(step(x))
            print(json.dumps({"peak_increase": _proc("VmHWM") - before}), flush=True)


# ---------------------------------------------------------------------- the parent side
class Worker:
    """A worker process for one framework (its own Python: a venv's for the external packages)."""

    def __init__(self, name: str, python: str, cfg: dict, env: dict | None = None):
        self.name = name
        args = [python, str(HERE), "--worker", name, *(str(cfg[key]) for key in ("d", "latents", "k", "batch"))]
        environ = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
        if name == "aekit-dense":
            environ["AEKIT_SPARSE_DECODE"] = "never"
        elif name == "aekit":
            environ.pop("AEKIT_SPARSE_DECODE", None)
        self.process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=environ)
        self.versions = self._read()["versions"]

    def _read(self) -> dict:
        assert self.process.stdout is not None
        while True:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"the {self.name} worker stopped (exit code {self.process.wait()})")
            if line.startswith("{"):  # a library may print its own lines (sparsify: "Triton not installed...")
                return json.loads(line)
            print(f"[{self.name}] {line.rstrip()}", file=sys.stderr)

    def ask(self, command: str) -> dict:
        """Send one command, return its JSON answer."""
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        """Stop the worker."""
        try:
            self.ask("quit")
        except (RuntimeError, BrokenPipeError, json.JSONDecodeError):
            pass
        self.process.wait(timeout=60)


def venv_python(package: str) -> str:
    """The Python of ``package``'s throw-away venv, made (torch==2.13.0 first, then the package) if missing."""
    root = Path(os.environ.get("AEKIT_SAE_SPEED_VENVS", "/tmp/aekit-sae-venvs"))
    python = root / package / "bin" / "python"
    if not python.exists():
        root.mkdir(parents=True, exist_ok=True)
        pins = root / "torch-pin.txt"
        pins.write_text("torch==2.13.0\n")
        subprocess.run([sys.executable, "-m", "venv", str(root / package)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "torch==2.13.0"], check=True)
        subprocess.run([*pip, "-c", str(pins), package], check=True)
    return str(python)


def correctness(cfg: dict) -> float:
    """Max |difference| of every parameter after one step of aekit (sparse path) and the reference, same batch."""
    import torch

    from aekit.model.sparse_decode import sparse_mode

    d, latents, k = cfg["d"], cfg["latents"], cfg["k"]
    x = torch.randn(cfg["batch"], d, generator=torch.Generator().manual_seed(0))
    with sparse_mode("always"):
        net = _aekit_net(d, latents, k)
        code, out = net.graph.layers["code"], net.graph.layers["out"]
        reference = ReferenceTopKSAE(code.w, code.b, out.w, out.b, k)
        from aekit.objective import Regularizers
        from aekit.train.optimizers import make_optimizer
        from aekit.train.step import StepRunner

        params = list(net.graph.parameters())
        runner = StepRunner(net.objective(Regularizers()), make_optimizer("adam", params, LR, 0.0), batch_size=0)
        runner(x, None)
    reference.step(x)
    ours = [code.w, code.b, out.w, out.b]
    return max(float((a.detach() - b.detach()).abs().max()) for a, b in zip(ours, reference.params))


def crossover(cfg: dict, ratios: tuple[int, ...] = (2, 4, 8, 16, 32, 64)) -> dict[int, float]:
    """aekit's sparse step's speed-up over its dense one, by latents per active one (``L / k``), in this process.

    At ``cfg``'s d, k and batch; for each ratio a model of ``ratio * k`` latents, both paths alternated
    (median of ``cfg['rounds']`` rounds of ``cfg['steps']`` steps).  Where the speed-up crosses 1 is where
    ``aekit.model.sparse_decode.AUTO_RATIO`` belongs.
    """
    import torch

    x = torch.randn(cfg["batch"], cfg["d"], generator=torch.Generator().manual_seed(0))
    threads = torch.get_num_threads()
    if os.environ.get("AEKIT_BENCH_THREADS"):
        torch.set_num_threads(int(os.environ["AEKIT_BENCH_THREADS"]))
    try:
        return _crossover(cfg, ratios, x)
    finally:
        torch.set_num_threads(threads)


def _crossover(cfg: dict, ratios: tuple[int, ...], x) -> dict[int, float]:
    from aekit.model.sparse_decode import sparse_mode

    d, k = cfg["d"], cfg["k"]
    result = {}
    for ratio in ratios:
        steps = {}
        for mode in ("always", "never"):
            with sparse_mode(mode):
                steps[mode] = aekit_step(d, ratio * k, k)[0]
                for _ in range(2):
                    _wait(steps[mode](x))
        times: dict[str, list[float]] = {"always": [], "never": []}
        for round_ in range(cfg["rounds"]):
            for mode in ("always", "never") if round_ % 2 == 0 else ("never", "always"):
                with sparse_mode(mode):
                    started = time.perf_counter()
                    for _ in range(cfg["steps"]):
                        loss = steps[mode](x)
                    _wait(loss)
                    times[mode].append(time.perf_counter() - started)
        result[ratio] = statistics.median(times["never"]) / statistics.median(times["always"])
    return result


def run(cfg: dict | None = None) -> dict:
    """Tokens/s (median of alternated rounds) and peak memory increase of a step, per framework."""
    cfg = cfg or config()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    names = ["aekit", "reference", "aekit-dense"]
    pythons = {name: sys.executable for name in names}
    if os.environ.get("AEKIT_SAE_SPEED_EXTERNAL"):
        for package in EXTERNAL:
            pythons[package] = venv_python(package)
            names.append(package)
    # Peak memory first, each in a fresh process of its own.
    memory = {}
    for name in names:
        w = Worker(name, pythons[name], cfg, env={"MALLOC_MMAP_THRESHOLD_": "65536"})
        memory[name] = w.ask("memory")["peak_increase"]
        w.close()
    workers = {name: Worker(name, pythons[name], cfg) for name in names}
    seconds: dict[str, list[float]] = {name: [] for name in names}
    try:
        for round_ in range(cfg["rounds"]):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for name in order:
                seconds[name].append(workers[name].ask(f"time {cfg['steps']}")["seconds"])
    finally:
        versions = {name: w.versions for name, w in workers.items()}
        for w in workers.values():
            w.close()
    tokens = {name: cfg["steps"] * cfg["batch"] / statistics.median(s) for name, s in seconds.items()}
    return {
        "config": cfg,
        "tokens_per_second": tokens,
        "speedup_vs_reference": {name: tokens[name] / tokens["reference"] for name in names},
        "aekit_speedup": {name: tokens["aekit"] / tokens[name] for name in names},
        "peak_memory_increase_mb": {name: memory[name] / 2**20 for name in names},
        "seconds": seconds,
        "versions": versions,
        "max_param_difference_after_one_step": correctness(cfg),
        "sparse_over_dense_by_latents_per_active": crossover(cfg),
        "threads": os.environ.get("AEKIT_BENCH_THREADS") or "torch's default",
        "load_average_at_start": load,
    }


def to_markdown(result: dict) -> str:
    """The result as a Markdown table."""
    cfg = result["config"]
    lines = [
        f"TopK SAE training step, d={cfg['d']}, {cfg['latents']} latents, k={cfg['k']}, batch {cfg['batch']}, "
        f"Adam; median of {cfg['rounds']} alternated rounds of {cfg['steps']} steps; torch threads per worker: "
        f"{result['threads']}; load average at start {result['load_average_at_start']}.",
        "",
        "| framework | tokens/s | aekit's speed-up over it | peak memory increase of a step (MB) | versions |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    labels = {
        "aekit": "aekit (sparse top-k path)",
        "aekit-dense": "aekit, dense path (AEKIT_SPARSE_DECODE=never)",
        "reference": "reference: plain PyTorch, dense decode",
        "eai-sparsify": "eai-sparsify SparseCoder",
        "sae-lens": "sae-lens TopKTrainingSAE (default, dense)",
    }
    for name, value in result["tokens_per_second"].items():
        versions = ", ".join(f"{k} {v}" for k, v in result["versions"][name].items())
        lines.append(
            f"| {labels[name]} | {value:,.0f} | {result['aekit_speedup'][name]:.2f}x | "
            f"{result['peak_memory_increase_mb'][name]:,.0f} | {versions} |"
        )
    ratios = result["sparse_over_dense_by_latents_per_active"]
    lines += [
        "",
        f"aekit's sparse step over its dense step, by latents per active one (L / k, k={cfg['k']}, one process, "
        f"the same threads): " + ", ".join(f"{ratio}: {value:.2f}x" for ratio, value in ratios.items()),
        "",
        f"aekit and the reference after one step from the same weights on the same batch: parameters differ by at "
        f"most {result['max_param_difference_after_one_step']:.2e}.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], *(int(v) for v in sys.argv[3:7]))  # type: ignore[call-arg]
    else:
        outcome = run()
        print(to_markdown(outcome))
        print(json.dumps(outcome, indent=1))
