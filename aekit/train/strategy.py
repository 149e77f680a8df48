"""How a training run is spread over processes: the single-process strategy and its protocol.

The step (:mod:`aekit.train.step`) and the loop (:mod:`aekit.train.loop`) are
written once; what changes with data parallelism is asked of a strategy:

* :meth:`Strategy.prepare` -- cut the data sources into this process's share;
* :meth:`Strategy.wrap` -- the module whose forward computes the (scaled) loss,
  e.g. a ``DistributedDataParallel`` that averages gradients in backward;
* :meth:`Strategy.average_gradients` -- the same average for gradients the
  hand-derived step wrote without autograd;
* :meth:`Strategy.epoch_means` and :meth:`Strategy.reduce_means` -- monitors over every process;
* :meth:`Strategy.sync_state` -- layer state after an epoch: buffers declared
  *summed* (per-process counts) are all-reduced, other buffers (batch-norm
  statistics) taken from one process;
* :meth:`Strategy.writes_files` -- whether this process writes checkpoints.

:class:`SingleProcess` does nothing in each; :class:`aekit.train.distributed.DataParallel`
is the data-parallel one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..objective import Objective

if TYPE_CHECKING:
    from ..model.graph import Graph

__all__ = ["ObjectiveModule", "SingleProcess", "Strategy"]

LossFunction = Callable[[torch.Tensor, "torch.Tensor | None", float], "tuple[torch.Tensor, dict[str, torch.Tensor]]"]


class ObjectiveModule(nn.Module):
    """The training objective as a module, so that a wrapper's forward (DDP's) is what computes it.

    Holds the objective's graph as its only child (the parameters a wrapper
    synchronises, tied weights included once).

    Parameters
    ----------
    objective : Objective
    """

    def __init__(self, objective: Objective):
        super().__init__()
        self.graph = objective.graph
        self.objective = objective  # not a module: a plain attribute

    def forward(
        self, x: torch.Tensor, w: torch.Tensor | None, scale: float = 1.0
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The total loss times ``scale`` (a process's share of a global batch) and the unscaled terms."""
        total, terms = self.objective(x, w, training=True)
        return (total if scale == 1.0 else total * scale), terms


class Strategy:
    """The protocol (and the single-process behaviour): see the module docstring."""

    rank = 0
    world = 1

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, world={self.world})"

    def attach(self, net: Any) -> None:
        """Get ready to train ``net`` (a data-parallel run puts it on this process's device)."""

    def prepare(self, source: Any, valid: Any) -> tuple[Any, Any]:
        """The training and validation sources of this process (default: all of them)."""
        return source, valid

    def local_part(self, source: Any) -> tuple[Any, bool]:
        """The part of ``source`` this process evaluates, and whether its means must be combined."""
        return source, False

    def wrap(self, objective: Objective) -> LossFunction:
        """A function ``(x, w, scale) -> (scaled total, terms)`` that runs the objective in training mode."""
        module = ObjectiveModule(objective)
        return module.forward

    def average_gradients(self, params: Sequence[torch.Tensor], scale: float) -> None:
        """Average the ``.grad`` of ``params`` of ``loss * scale`` over processes (single process: nothing)."""

    def epoch_means(self, sums: torch.Tensor, count: int) -> list[float]:
        """Means of the per-example sums ``sums`` (shape (k,)) of ``count`` examples here.

        Taken over every process (one host sync).
        """
        return (sums / count).tolist()

    def sum_tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over every process (a metric's state); single process: itself."""
        return tensor

    def reduce_means(self, means: dict[str, Any], count: float) -> dict[str, float]:
        """Means of ``count`` examples here, combined over every process."""
        return {k: float(v) for k, v in means.items()}

    def begin_epoch(self, graph: Graph) -> None:
        """Called before an epoch's first step, when every process holds the same state."""

    def sync_state(self, graph: Graph) -> None:
        """Make the layers' state the same on every process after an epoch (single process: nothing)."""

    def writes_files(self) -> bool:
        """Whether this process writes checkpoints."""
        return True

    def agree_on_resume(self, resumed: bool, epoch: int, path: str) -> None:
        """Check that every process resumed the same checkpoint (single process: nothing)."""

    def close(self) -> None:
        """Release what the strategy holds (communication wrappers)."""


class SingleProcess(Strategy):
    """Training in this process only."""
