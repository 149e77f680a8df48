r"""Data-parallel training on ``torch.distributed``.

Launch any training -- the CLI or a script that calls ``net.train`` -- with
``torchrun`` and every process becomes one replica::

    torchrun --standalone --nproc_per_node=4 -m aekit train x.npy --layers 784,64,784 -o model.aekit
    torchrun --nnodes=2 --nproc_per_node=4 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 \
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
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from ..data.shards import ShardedSource
from ..errors import CheckpointError, ConfigurationError, DataError
from ..objective import Objective
from .options import parse_mode
from .strategy import LossFunction, ObjectiveModule, Strategy

if TYPE_CHECKING:
    from ..model.graph import Graph

__all__ = [
    "DataParallel",
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
    """The rank of this process: from the process group, else torchrun's ``RANK``, else 0."""
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


# ---------------------------------------------------------------------- the strategy
def _comm_device(device: torch.device) -> torch.device:
    return device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")


class DataParallel(Strategy):
    """Data-parallel training over the initialised process group (see the module docstring).

    The step and the loop are the single-process ones; this strategy shards the data,
    runs the objective through :class:`~torch.nn.parallel.DistributedDataParallel`
    (or averages the hand-derived step's gradients in one all-reduce), combines the
    monitors, and after each epoch makes the layers' state agree: buffers layers declare
    *summed* (per-process counts) are all-reduced, the others (batch-norm statistics)
    taken from rank 0.
    """

    def __init__(self) -> None:
        self.rank, self.world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        self.device = torch.device("cpu")
        self._ddp: nn.Module | None = None
        self._summed_base: list[torch.Tensor] | None = None
        self._layers: list[Any] = []

    def attach(self, net: Any) -> None:
        """Move a CUDA ``net`` to this process's GPU (torchrun's ``cuda:LOCAL_RANK``); quiet the log off rank 0.

        Parameters
        ----------
        net : Autoencoder
        """
        _place(net)
        self.device = net.device
        if self.rank != 0:
            logging.getLogger("aekit").setLevel(logging.WARNING)

    def prepare(self, source: Any, valid: Any) -> tuple[Any, Any]:
        """The shares of the training and validation sources that this process trains and validates on.

        Parameters
        ----------
        source : TensorSource or StreamingSource
            The whole training data, identical on every process.
        valid : TensorSource or StreamingSource or None
            The whole validation data.

        Returns
        -------
        (ShardedSource, ShardedSource or None)

        Raises
        ------
        DataError
            If there are fewer training examples than processes.
        """
        if len(source) < self.world:
            raise DataError(
                f"x has {len(source)} training examples, fewer than the {self.world} "
                "processes of this data-parallel run"
            )
        return (
            ShardedSource(source, self.rank, self.world),
            None if valid is None else ShardedSource(valid, self.rank, self.world),
        )

    def local_part(self, source: Any) -> tuple[Any, bool]:
        """The part of ``source`` this process evaluates, and whether its means must be combined.

        Parameters
        ----------
        source : ShardedSource, TensorSource or StreamingSource

        Returns
        -------
        (source, bool)
            This process's contiguous rows and True, or the whole data and False (a source
            too small to split, or one that is not sharded).
        """
        if not isinstance(source, ShardedSource):
            return source, False
        return (source.local, True) if source.sharded_eval else (source.base, False)

    # -------------------------------------------------------------- the step
    def wrap(self, objective: Objective) -> LossFunction:
        """A function ``(x, w, scale) -> (scaled total, terms)`` that runs the objective through DDP.

        The :class:`~torch.nn.parallel.DistributedDataParallel` wrapper is built on the first call,
        so that it broadcasts rank 0's parameters after any layerwise pretraining or resume.

        Parameters
        ----------
        objective : Objective

        Returns
        -------
        callable
            Called with ``x`` (n, *input_shape), ``w`` (like ``x``, or None) and ``scale``; returns the
            total loss times ``scale``, shape (), and the unscaled terms by name.
        """
        graph = objective.graph

        def loss(x: torch.Tensor, w: torch.Tensor | None, scale: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            # Built on first use, after any layerwise pretraining and after a resume loaded the same
            # state everywhere (DDP broadcasts rank 0's parameters when it is built).
            if self._ddp is None:
                kwargs: dict[str, Any] = {}
                device = next(graph.parameters()).device
                if device.type == "cuda":
                    kwargs = {"device_ids": [device.index], "output_device": device.index}
                module = ObjectiveModule(objective)
                # DDP copies rank 0's buffers to every process before each forward; buffers that
                # count per-process events must keep each process's own counts (summed later).
                summed = [
                    f"graph.layers.{name}.{key}" for name, layer in graph.layers.items() for key in layer.summed_buffers
                ]
                if summed:
                    nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, summed)
                self._ddp = nn.parallel.DistributedDataParallel(module, **kwargs)
                # Step hooks that update state from a batch (a VQ codebook) all-reduce it while this run lasts.
                self._layers = list(graph.layers.values())
                for layer in self._layers:
                    layer.data_parallel = True
            return self._ddp(x, w, scale)

        return loss

    def average_gradients(self, params: Sequence[torch.Tensor], scale: float) -> None:
        """What DDP does to the gradients of ``loss * scale``, for gradients the hand-derived step wrote.

        Scale them, then average them over the processes, in one all-reduce of one flat buffer.
        """
        grads = cast(list[torch.Tensor], [p.grad for p in params])  # the step wrote every one
        flat = torch.cat([g.reshape(-1) for g in grads]).mul_(scale / self.world)
        device = flat.device
        flat = flat.to(_comm_device(self.device))
        torch.distributed.all_reduce(flat)
        flat = flat.to(device)
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    # -------------------------------------------------------------- monitors and state
    def reduce(self, sums: torch.Tensor, count: float) -> tuple[list[float], float]:
        """All-reduce ``[*sums, count]``; returns the global sums and count (one host sync)."""
        packed = torch.cat(
            [
                sums.detach().reshape(-1).to(torch.float64),
                torch.tensor([float(count)], dtype=torch.float64, device=sums.device),
            ]
        )
        packed = packed.to(_comm_device(self.device))
        torch.distributed.all_reduce(packed)
        values = packed.tolist()
        return values[:-1], values[-1]

    def epoch_means(self, sums: torch.Tensor, count: int) -> list[float]:
        """Means over every process of the per-example sums ``sums`` of ``count`` examples here (one host sync).

        Parameters
        ----------
        sums : tensor, shape (k,)
        count : int

        Returns
        -------
        list of float, length k
        """
        totals, n = self.reduce(sums, count)
        return [v / n for v in totals]

    def sum_tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over every process (a metric's state), on ``tensor``'s device.

        Parameters
        ----------
        tensor : tensor, any shape

        Returns
        -------
        tensor, shape like ``tensor``
        """
        total = tensor.detach().clone().to(_comm_device(self.device))
        torch.distributed.all_reduce(total)
        return total.to(tensor.device)

    def reduce_means(self, means: dict[str, Any], count: float) -> dict[str, float]:
        """Means of ``count`` examples here, combined over every process (weighted by each process's count).

        Parameters
        ----------
        means : dict of str to float or 0-d tensor
        count : float

        Returns
        -------
        dict of str to float
        """
        keys = list(means)
        sums = torch.tensor([float(means[k]) * count for k in keys], dtype=torch.float64)
        totals, n = self.reduce(sums, count)
        return {k: v / n for k, v in zip(keys, totals)}

    def begin_epoch(self, graph: Graph) -> None:
        """Remember the summed buffers' common values: their changes this epoch are added up at its end."""
        self._summed_base = [b.detach().clone() for b in graph.summed_buffers()]

    def sync_state(self, graph: Graph) -> None:
        """Summed buffers: the common start plus every process's change; other buffers: rank 0's."""
        summed = graph.summed_buffers()
        summed_ids = {id(b) for b in summed}
        for buffer, base in zip(summed, self._summed_base or []):
            delta = (buffer - base).to(_comm_device(self.device))
            torch.distributed.all_reduce(delta)
            buffer.copy_(base + delta.to(buffer.device))
            base.copy_(buffer)
        for buffer in graph.buffers():
            if id(buffer) in summed_ids:
                continue
            # Batch-norm statistics drift apart within an epoch (DDP only broadcasts them
            # before each forward); rank 0's are the ones kept.
            if buffer.device.type == "cpu" or torch.distributed.get_backend() == "nccl":
                torch.distributed.broadcast(buffer, 0)
            else:
                copy = buffer.cpu()
                torch.distributed.broadcast(copy, 0)
                buffer.copy_(copy)

    def writes_files(self) -> bool:
        """Whether this process writes checkpoints: rank 0 only."""
        return self.rank == 0

    def agree_on_resume(self, resumed: bool, epoch: int, path: str) -> None:
        """Check that every process resumed the same checkpoint at the same epoch (one all-reduce).

        Parameters
        ----------
        resumed : bool
            Whether this process found and loaded the checkpoint.
        epoch : int
            The epoch it resumed at.
        path : str
            The checkpoint, for the message.

        Raises
        ------
        CheckpointError
            If the processes disagree (the file is not on a file system every host shares).
        """
        state = torch.tensor([int(resumed), epoch], dtype=torch.int64, device=_comm_device(self.device))
        low, high = state.clone(), state.clone()
        torch.distributed.all_reduce(low, op=torch.distributed.ReduceOp.MIN)
        torch.distributed.all_reduce(high, op=torch.distributed.ReduceOp.MAX)
        if not torch.equal(low, high):
            raise CheckpointError(
                f"the processes disagree about checkpoint {path!r} (some found it, "
                "or found another epoch): put it on a file system that every host shares"
            )

    def close(self) -> None:
        """Drop the DDP wrapper now, while the process group is alive.

        DDP holds a reference to the process group, so :func:`shutdown` could not
        join gloo's worker threads while it lives; left to the interpreter's
        final garbage collection, a worker thread still freeing its last
        all-reduce's tensors needs the GIL as the interpreter goes away, and the
        process aborts ("terminate called without an active exception").
        """
        self._ddp = None
        for layer in self._layers:
            layer.data_parallel = False
        self._layers = []
        gc.collect()
