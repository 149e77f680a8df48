"""What a training run does for the dead-latent trackers of sparse code layers.

At the start of each ``train()``: each tracker (:mod:`aekit.model.dead_latents`) gets
the run's ``dead_after`` threshold and the strategy's sum over processes, so that its
per-step update adds every process's examples and ORs their fired masks.  A run with
``auxk`` whose threshold no latent can reach in this run is warned about: its auxiliary
loss would stay zero.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from ..errors import AekitWarning
from ..model.graph import Graph
from ..model.sae_recipe import dead_latents
from ..objective.penalties import Regularizers

__all__ = ["DeadLatentWarning", "attach"]


class DeadLatentWarning(AekitWarning):
    """``auxk`` is set, but no latent can count as dead within this run (``dead_after`` too large)."""


def attach(
    graph: Graph,
    regs: Regularizers,
    sum_over_processes: Callable[[torch.Tensor], torch.Tensor],
    examples_per_epoch: int,
    epochs: int,
) -> None:
    """Give every tracker of ``graph`` the run's threshold and reduction; warn where ``auxk`` cannot act.

    Parameters
    ----------
    graph : Graph
    regs : Regularizers
        The run's keywords (``dead_after``, ``auxk``).
    sum_over_processes : callable
        The strategy's ``sum_tensor``.
    examples_per_epoch : int
        Training examples of one epoch over all processes.
    epochs : int
        ``max_epochs`` of the run.
    """
    trackers = [t for t in (dead_latents(layer) for layer in graph.layers.values()) if t is not None]
    for tracker in trackers:
        tracker.dead_after.fill_(regs.dead_after)
        tracker.sum_over_processes = sum_over_processes
    if regs.auxk and trackers:
        most = max(int(t.since_fired.max()) for t in trackers) + examples_per_epoch * epochs
        if most <= regs.dead_after:
            warnings.warn(
                f"auxk={regs.auxk:g} has nothing to act on: a latent is dead after dead_after={regs.dead_after} "
                f"training examples without firing, but this run sees {examples_per_epoch * epochs} "
                f"({epochs} epochs of {examples_per_epoch}); give a smaller dead_after",
                DeadLatentWarning,
                stacklevel=4,
            )
