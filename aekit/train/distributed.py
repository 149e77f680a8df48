"""Data-parallel training on ``torch.distributed``.

Launch any training -- the CLI or a script that calls ``net.train`` -- with
``torchrun`` and every process becomes one replica::

    torchrun --standalone --nproc_per_node=4 -m aekit train x.npy --layers 784,64,784 -o model.aekit
    torchrun --nnodes=2 --nproc_per_node=4 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 \\
        -m aekit train x.npy --layers 784,64,784 -o model.aekit

``train(distributed='auto')`` (the default) notices the launch from torchrun's
variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``), joins the
process group (gloo on the CPU, nccl on CUDA, where each process takes the GPU
``cuda:LOCAL_RANK``) unless the caller has already done so, and trains with
:class:`~torch.nn.parallel.DistributedDataParallel`.  How it works:

* **One shuffle for all.**  Every process draws the same permutation each
  epoch (the shuffle generator is seeded from the model's ``rng``) and cuts it
  into *global* batches of ``batch_size * world_size`` examples; process ``r``
  takes the ``r``-th contiguous part of each, and reads only those rows (also
  from a memory-mapped file, where each process reads its part of each block).
  ``batch_size`` is therefore **per process**: ``--batch-size 64`` on 4
  processes takes optimizer steps on 256 examples, and reproduces -- up to
  rounding -- a single-process run with ``batch_size=256``.  Global batches
  with fewer examples than processes (at most one per epoch, or per block when
  streaming) are skipped.
* **Exact gradients.**  Each process scales its loss by its share of the
  global batch, so DDP's gradient average is the gradient of the mean loss over
  the whole global batch, as in one process.  Per-batch statistics (the mean
  activation of the KL sparsity penalty, batch norm) are still computed per
  process, as in any data-parallel run.  Dense models that qualify for the
  hand-derived step of :mod:`aekit.fused` take it here too, and their scaled
  gradients are averaged in one all-reduce of one flat buffer, as DDP would.
* **Same decisions everywhere.**  Epoch monitors are all-reduced (sums of
  ``value * count`` and of counts), validation data are split in contiguous
  parts and their monitors all-reduced too, so every process sees the same
  numbers, stops early on the same epoch and rolls back the same way.
* **One writer.**  Rank 0 writes checkpoints (the CLI also writes the model
  file only there); the other ranks log at WARNING.  Checkpoints hold nothing
  that depends on the rank or the number of processes, so a run may resume with
  a different ``--nproc_per_node``: the shard layout is recomputed from the
  epoch's permutation.  Every rank reads the checkpoint when resuming, so on
  several hosts it must live on a shared file system (a rank that sees another
  checkpoint than rank 0 is reported as an error).

In a script, write files from one process only::

    net.train(x, batch_size=64)            # under torchrun: data-parallel
    if aekit.distributed.is_main_process():
        net.save('model.aekit')
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.sources import StreamingSource
from ..errors import CheckpointError, ConfigurationError, DataError
from .loop import TensorSource, _Trainer

__all__ = [
    "DistributedTrainer",
    "ShardedSource",
    "init",
    "is_active",
    "is_main_process",
    "launch_env",
    "parse_mode",
    "rank",
    "shutdown",
    "world_size",
]

log = logging.getLogger(__name__)

_CREATED = False  # True when aekit initialised the process group (and so tears it down)


# ---------------------------------------------------------------------- the launch
def launch_env() -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` from torchrun's variables, or None outside a launch."""
    try:
        rank_, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    except (KeyError, ValueError):
        return None
    try:
        local = int(os.environ.get("LOCAL_RANK", rank_))
    except ValueError:
        local = rank_
    return rank_, world, local


def _initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def is_active() -> bool:
    """True when a process group with more than one process is initialised."""
    return _initialized() and torch.distributed.get_world_size() > 1


def rank() -> int:
    """This process's rank: from the process group, else torchrun's ``RANK``, else 0."""
    if _initialized():
        return torch.distributed.get_rank()
    env = launch_env()
    return env[0] if env else 0


def world_size() -> int:
    """Number of processes: from the process group, else torchrun's ``WORLD_SIZE``, else 1."""
    if _initialized():
        return torch.distributed.get_world_size()
    env = launch_env()
    return env[1] if env else 1


def is_main_process() -> bool:
    """True on rank 0 (and outside any launch): the process that writes files."""
    return rank() == 0


def parse_mode(value: Any) -> bool | str:
    """Normalise the ``distributed`` option: True, False or ``'auto'`` (strings from the CLI too)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return "auto"
        if text in ("true", "yes", "on", "1"):
            return True
        if text in ("false", "no", "off", "0"):
            return False
    raise ConfigurationError(f"distributed must be True, False or 'auto', got {value!r}")


def init(device: torch.device | str = "cpu", backend: str | None = None) -> bool:
    """Join the process group that torchrun describes; True if training is data-parallel.

    Does nothing (and returns whether a group of several processes exists) when
    a process group is already initialised, or when the process was not started
    by torchrun.  The backend defaults to nccl for a CUDA ``device``, else gloo.
    """
    global _CREATED
    if _initialized():
        return is_active()
    env = launch_env()
    if env is None or env[1] < 2:
        return False
    if not torch.distributed.is_available():
        raise ConfigurationError("distributed training needs a PyTorch build with torch.distributed")
    device = torch.device(device)
    if backend is None:
        backend = "nccl" if device.type == "cuda" else "gloo"
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ConfigurationError(
            f"RANK and WORLD_SIZE are set but {', '.join(missing)} are not: "
            "launch with torchrun (e.g. torchrun --standalone --nproc_per_node=2 ...)"
        )
    if device.type == "cuda":
        torch.cuda.set_device(env[2])
    torch.distributed.init_process_group(backend)
    _CREATED = True
    atexit.register(shutdown)
    log.debug("joined the process group: rank %d of %d (%s)", env[0], env[1], backend)
    return is_active()


def shutdown() -> None:
    """Tear down the process group if :func:`init` created it."""
    global _CREATED
    if _CREATED and _initialized():
        torch.distributed.destroy_process_group()
    _CREATED = False


def resolve(mode: Any, device: torch.device) -> bool:
    """Whether a run with ``distributed=mode`` on ``device`` trains data-parallel (initialising if so)."""
    mode = parse_mode(mode)
    if mode is False:
        return False
    active = init(device)
    if mode is True and not active:
        raise ConfigurationError(
            "distributed=True needs several processes: launch with torchrun "
            "(e.g. torchrun --standalone --nproc_per_node=2 ...) or initialise a process group "
            "of more than one process first"
        )
    return active


def _place(net) -> None:
    # Under torchrun each process owns the GPU cuda:LOCAL_RANK; a net built on plain
    # 'cuda' would put every replica on GPU 0.
    if net.device.type != "cuda":
        return
    env = launch_env()
    index = env[2] if env else torch.cuda.current_device()
    target = torch.device("cuda", index)
    if net.device != target:
        net.graph.to(target)
        net.device = target
    torch.cuda.set_device(target)


# ---------------------------------------------------------------------- data shards
def _part(size: int, rank_: int, world: int) -> tuple[int, int]:
    """Rank's contiguous part ``[lo, hi)`` of ``size`` items split as evenly as possible."""
    return rank_ * size // world, (rank_ + 1) * size // world


class ShardedSource:
    """One process's share of a training or validation source.

    ``len()`` is the length of the whole source (so checkpoints do not depend
    on the number of processes).

    Parameters
    ----------
    base : TensorSource or StreamingSource
        The whole data, identical on every process (a memory-mapped file is only
        read where this process's rows lie).
    rank, world : int
        This process's rank and the number of processes.
    """

    def __init__(self, base: TensorSource | StreamingSource, rank: int, world: int):
        if not 0 <= rank < world:
            raise ValueError(f"rank must be in [0, {world}), got {rank}")
        self.base, self.rank, self.world = base, int(rank), int(world)
        n = len(base)
        # Contiguous parts for evaluation; too few rows to split: every rank evaluates all.
        self.sharded_eval = n >= world
        self.local = self._slice(*_part(n, rank, world)) if self.sharded_eval else base

    def __len__(self) -> int:
        return len(self.base)

    def __repr__(self) -> str:
        return f"ShardedSource({self.base!r}, rank={self.rank}, world={self.world})"

    def _slice(self, lo: int, hi: int) -> TensorSource | StreamingSource:
        base = self.base
        if isinstance(base, StreamingSource):
            return base._view(base.start + lo, base.start + hi)
        return TensorSource(base.x[lo:hi], None if base.w is None else base.w[lo:hi])

    def _layout(self, size: int, global_batch: int) -> list[tuple[int, int, int]]:
        """``(lo, hi, g)``: this rank's rows ``[lo, hi)`` of each global batch of ``g`` rows."""
        parts = []
        for start in range(0, size, global_batch):
            g = min(global_batch, size - start)
            if g < self.world:
                continue  # every rank needs at least one row for the step to mean the same everywhere
            lo, hi = _part(g, self.rank, self.world)
            parts.append((start + lo, start + hi, g))
        return parts

    def scaled_batches(
        self, batch_size: int, generator: torch.Generator | None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, float]]:
        """This rank's ``(x, w, scale)`` of every global batch of ``batch_size * world`` rows.

        ``scale = rows here * world / rows in the global batch``: multiplying the
        local mean loss by it makes DDP's gradient average the gradient of the
        global batch's mean loss.
        """
        if isinstance(self.base, StreamingSource):
            yield from self._stream(batch_size * self.world, generator)
        else:
            yield from self._tensor(batch_size * self.world, generator)

    def batches(self, batch_size: int, generator: torch.Generator | None):
        """``(x, w)`` pairs, as :meth:`TensorSource.batches` (see :meth:`scaled_batches`)."""
        for xb, wb, _ in self.scaled_batches(batch_size, generator):
            yield xb, wb

    def _tensor(self, global_batch: int, generator: torch.Generator | None):
        base = self.base
        n = len(base)
        parts = self._layout(n, global_batch)
        if generator is None:
            for lo, hi, g in parts:
                yield base.x[lo:hi], (None if base.w is None else base.w[lo:hi]), (hi - lo) * self.world / g
            return
        # The same single draw as TensorSource.batches, so the global batches are a
        # single-process run's; then gather only this rank's rows, once per epoch.
        perm = torch.randperm(n, generator=generator)
        index = torch.cat([perm[lo:hi] for lo, hi, _ in parts]).to(base.x.device)
        x = base.x.index_select(0, index)
        w = None if base.w is None else base.w.index_select(0, index)
        at = 0
        for lo, hi, g in parts:
            k = hi - lo
            yield x[at : at + k], (None if w is None else w[at : at + k]), k * self.world / g
            at += k

    def _stream(self, global_batch: int, generator: torch.Generator | None):
        src = self.base
        # Same draws, in the same order, as StreamingSource.batches: block phase and
        # order, then one permutation per block.
        for a, b in src._blocks(generator):
            perm = torch.randperm(b - a, generator=generator) if generator is not None else None
            parts = self._layout(b - a, global_batch)
            if not parts:
                continue
            if perm is None:
                for lo, hi, g in parts:
                    xt, wt = src.read(a + lo, a + hi)
                    yield xt, wt, (hi - lo) * self.world / g
                continue
            rows = a + torch.cat([perm[lo:hi] for lo, hi, _ in parts]).numpy()
            xt, wt = _read_rows(src, rows)
            at = 0
            for lo, hi, g in parts:
                k = hi - lo
                yield xt[at : at + k], (None if wt is None else wt[at : at + k]), k * self.world / g
                at += k
            del xt, wt


def _read_rows(src: StreamingSource, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rows ``rows`` (absolute, any order) of a streamed source, checked, in that order."""
    order = np.argsort(rows, kind="stable")
    ascending = rows[order]  # h5py and friends want increasing indices; a memmap reads fewer pages
    back = torch.from_numpy(np.argsort(order, kind="stable"))
    where = f"{src.name} rows {int(ascending[0])}..{int(ascending[-1])}"
    try:
        xt = src.check(np.array(src.data[ascending]), src.name, ascending)
    except DataError as error:
        raise DataError(f"{where}: {error}") from None
    xt = xt.index_select(0, back.to(xt.device))
    wt = None
    if src.w is not None:
        try:
            wt = src.check_weights(np.array(src.w[ascending]), f"{src.name} weights", ascending)
        except DataError as error:
            raise DataError(f"{src.name} weights {where.split(' ', 1)[1]}: {error}") from None
        wt = wt.index_select(0, back.to(wt.device))
    return xt, wt


# ---------------------------------------------------------------------- the trainer
class _Objective(nn.Module):
    """The training loss as a module, so that DDP's forward is what computes it.

    Holds ``net.graph`` as its only child (the parameters DDP synchronises,
    tied weights included once) and calls ``net.loss_terms``, which runs the graph.
    """

    def __init__(self, net, regs):
        super().__init__()
        self.graph = net.graph
        self.net = net  # not a module: a plain attribute
        self.regs = regs

    def forward(self, x: torch.Tensor, w: torch.Tensor | None, scale: float):
        total, terms = self.net.loss_terms(x, w, self.regs, training=True)
        return total * scale, terms


class _RankZeroCheckpointer:
    """Wraps a Checkpointer: rank 0 writes; every rank resumes, and all must agree."""

    def __init__(self, inner):
        self.inner = inner

    def __repr__(self) -> str:
        return f"_RankZeroCheckpointer({self.inner!r})"

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def due(self, epoch: int, final: bool) -> bool:
        return self.inner.due(epoch, final)

    def save(self, trainer) -> None:
        if torch.distributed.get_rank() == 0:
            self.inner.save(trainer)

    def resume(self, trainer) -> bool:
        resumed = self.inner.resume(trainer)
        state = torch.tensor([int(resumed), trainer.epoch], dtype=torch.int64, device=_comm_device(trainer.net))
        low, high = state.clone(), state.clone()
        torch.distributed.all_reduce(low, op=torch.distributed.ReduceOp.MIN)
        torch.distributed.all_reduce(high, op=torch.distributed.ReduceOp.MAX)
        if not torch.equal(low, high):
            raise CheckpointError(
                f"the processes disagree about checkpoint {str(self.inner.path)!r} (some found it, "
                "or found another epoch): put it on a file system that every host shares"
            )
        return resumed


def _comm_device(net) -> torch.device:
    return net.device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")


class DistributedTrainer(_Trainer):
    """A :class:`aekit.training._Trainer` whose steps run through DistributedDataParallel.

    The process group must be initialised (see :func:`init`).
    """

    def __init__(self, net, x: Any, valid: Any, options, regs):
        _place(net)
        self.rank, self.world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        if self.rank != 0:
            logging.getLogger("aekit").setLevel(logging.WARNING)
        super().__init__(net, x, valid, options, regs)
        if len(self.source) < self.world:
            raise DataError(
                f"x has {len(self.source)} training examples, fewer than the {self.world} "
                "processes of this data-parallel run"
            )
        self.source = ShardedSource(self.source, self.rank, self.world)
        if self.valid is not None:
            self.valid = ShardedSource(self.valid, self.rank, self.world)
        self._ddp: nn.Module | None = None
        # The step runner's scaler (None unless fp16): the one aekit.checkpoint saves and restores,
        # so a resumed data-parallel fp16 run keeps its loss scale.
        self._scaler: torch.amp.GradScaler | None = self.stepper.scaler
        log.info(
            "data-parallel training on %d processes (%s): batch_size %d per process, %d per step",
            self.world,
            torch.distributed.get_backend(),
            options.batch_size,
            self.effective_batch_size,
        )

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, rank={self.rank}, world={self.world})"

    @property
    def effective_batch_size(self) -> int:
        """Examples per optimizer step over all processes."""
        return self.options.batch_size * self.world

    # The base class sets ``self.checkpointer``; this routes it through the rank-0 wrapper.
    @property
    def checkpointer(self):
        return self._checkpointer

    @checkpointer.setter
    def checkpointer(self, value) -> None:
        self._checkpointer = None if value is None else _RankZeroCheckpointer(value)

    # -------------------------------------------------------------- communication
    def _wrapped(self) -> nn.Module:
        # Built on first use, after any layerwise pretraining (whose sub-trainers
        # have their own), and after a resume loaded the same state everywhere.
        if self._ddp is None:
            kwargs: dict[str, Any] = {}
            if self.net.device.type == "cuda":
                kwargs = {"device_ids": [self.net.device.index], "output_device": self.net.device.index}
            self._ddp = nn.parallel.DistributedDataParallel(_Objective(self.net, self.regs), **kwargs)
        return self._ddp

    def close(self) -> None:
        """Drop the DDP wrapper now, while the process group is alive.

        DDP holds a reference to the process group, so :func:`shutdown` could not
        join gloo's worker threads while it lives; left to the interpreter's
        final garbage collection, a worker thread still freeing its last
        all-reduce's tensors needs the GIL as the interpreter goes away, and the
        process aborts ("terminate called without an active exception").
        """
        self._ddp = None
        gc.collect()

    def _reduce(self, sums: torch.Tensor, count: float) -> tuple[list[float], float]:
        """All-reduce ``[*sums, count]``; returns the global sums and count (one host sync)."""
        packed = torch.cat(
            [
                sums.detach().reshape(-1).to(torch.float64),
                torch.tensor([float(count)], dtype=torch.float64, device=sums.device),
            ]
        )
        packed = packed.to(_comm_device(self.net))
        torch.distributed.all_reduce(packed)
        values = packed.tolist()
        return values[:-1], values[-1]

    def _reduce_means(self, means: dict[str, Any], count: float) -> dict[str, float]:
        keys = list(means)
        sums = torch.tensor([float(means[k]) * count for k in keys], dtype=torch.float64)
        totals, n = self._reduce(sums, count)
        return {k: v / n for k, v in zip(keys, totals)}

    def _average_gradients(self, scale: float) -> None:
        """What DDP does to the gradients of ``loss * scale``, for gradients the hand-derived step wrote:
        scale them, then average them over the processes, in one all-reduce of one flat buffer.
        """
        grads = [p.grad for p in self.net.params]
        flat = torch.cat([g.reshape(-1) for g in grads]).mul_(scale / self.world)
        device = flat.device
        flat = flat.to(_comm_device(self.net))
        torch.distributed.all_reduce(flat)
        flat = flat.to(device)
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def _sync_buffers(self) -> None:
        # Batch-norm statistics drift apart within an epoch (DDP only broadcasts them
        # before each forward); rank 0's are the ones kept.
        for buffer in self.net.graph.buffers():
            if buffer.device.type == "cpu" or torch.distributed.get_backend() == "nccl":
                torch.distributed.broadcast(buffer, 0)
            else:
                copy = buffer.cpu()
                torch.distributed.broadcast(copy, 0)
                buffer.copy_(copy)

    # -------------------------------------------------------------- steps
    def _train_epoch(self) -> dict[str, float]:
        """One pass through DDP; monitors are means over every process's examples."""
        self.net.graph.train()
        if self.options.algo == "lbfgs":
            return self._lbfgs_epoch()
        ddp, opts = self._wrapped(), self.options
        keys: list[str] | None = None
        total: torch.Tensor | None = None
        count = 0
        generator = self.generator if opts.shuffle else None
        # Mixed precision as in single-process runs (compile is not used here).
        amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(getattr(opts, "precision", "fp32"))
        device_type = self.net.device.type
        if amp is torch.float16 and self._scaler is None:
            self._scaler = torch.amp.GradScaler(device_type)
        scaler = self._scaler
        for xb, wb, scale in self.source.scaled_batches(opts.batch_size, generator):
            values = self.stepper.gradients(xb, wb)  # the hand-derived step, where the model allows it
            if values is not None:
                self._average_gradients(scale)
                self.stepper.update()
                keys = self.stepper.keys
            else:
                self.optimizer.zero_grad(set_to_none=True)
                with torch.autocast(device_type, dtype=amp, enabled=amp is not None):
                    loss, terms = ddp(xb, wb, scale)
                (loss.float() if scaler is None else scaler.scale(loss.float())).backward()
                if scaler is not None and opts.max_gradient_norm is not None:
                    scaler.unscale_(self.optimizer)
                if opts.max_gradient_norm is not None:
                    torch.nn.utils.clip_grad_norm_(self.net.params, opts.max_gradient_norm, foreach=True)
                if scaler is not None:
                    scaler.step(self.optimizer)
                    scaler.update()
                else:
                    self.optimizer.step()
                if keys is None:
                    keys = list(terms)
                values = torch.stack([terms[k].detach().float().reshape(()) for k in keys])
            n = xb.shape[0]
            total = values * n if total is None else total.add_(values, alpha=n)
            count += n
        if keys is None:
            raise DataError(
                f"no training step this epoch: every block of {len(self.source)} rows is smaller "
                f"than the {self.world} processes; use more data or larger streaming blocks"
            )
        self._sync_buffers()
        sums, n = self._reduce(total, count)
        return {k: v / n for k, v in zip(keys, sums)}

    def _lbfgs_epoch(self) -> dict[str, float]:
        local = self.source.local
        if isinstance(local, StreamingSource):
            local.x  # raises the ConfigurationError that explains why L-BFGS cannot stream
        ddp = self._wrapped()
        n = len(local)
        scale = n * self.world / len(self.source) if self.source.sharded_eval else 1.0
        stash: dict[str, float] = {}

        def closure() -> torch.Tensor:
            values = self.stepper.gradients(local.x, local.w)  # the hand-derived step, where it applies
            if values is not None:
                self._average_gradients(scale)
                terms = dict(zip(self.stepper.keys, values))
            else:
                self.optimizer.zero_grad(set_to_none=True)
                loss, terms = ddp(local.x, local.w, scale)
                loss.backward()
            stash.clear()
            if self.source.sharded_eval:
                stash.update(self._reduce_means({k: v.detach() for k, v in terms.items()}, n))
            else:
                stash.update({k: float(v) for k, v in terms.items()})
            # The global loss: every rank's line search must see the same number.
            return torch.tensor(stash["loss"], dtype=torch.float32, device=local.x.device)

        self.optimizer.step(closure)
        self._sync_buffers()
        return dict(stash)

    @torch.no_grad()
    def evaluate(self, source) -> dict[str, float]:
        """Monitors over the whole ``source``: each rank evaluates its part, then all-reduce."""
        if not isinstance(source, ShardedSource):
            return super().evaluate(source)
        if not source.sharded_eval:
            return super().evaluate(source.base)
        return self._reduce_means(super().evaluate(source.local), len(source.local))
