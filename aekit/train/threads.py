"""How many CPU threads a training run uses: one for small models, torch's setting otherwise.

On a CPU, torch splits each operation over ``torch.get_num_threads()`` threads.
For the small matrix products of a small autoencoder the split costs more than
it gains, and on a machine whose cores are busy with other work the threads
wait for each other: the README's theanets example (64-9-64 digits) took 27-30 s
with torch's default two threads against about 2 s with one while another
process kept both cores busy.

``train(threads='auto')`` (the default) therefore trains with one thread when a
step costs less than :data:`AUTO_SINGLE_THREAD_FLOPS` floating-point operations
(forward and backward, counted once per run with torch's FLOP counter on one
batch), and with torch's own setting above it.  ``threads=N`` trains with ``N``
threads; ``threads=None`` leaves torch's setting alone.  The setting is put back
when training ends.  The choice depends only on the model and the batch size,
never on timing, so a run and its resumption use the same threads and the same
arithmetic.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..errors import ConfigurationError

__all__ = ["AUTO_SINGLE_THREAD_FLOPS", "check_threads", "step_flops", "training_threads"]

log = logging.getLogger(__name__)

# Below this many FLOPs per training step (about 784-16-784 at batch 256) a second thread
# rarely pays on an idle machine and costs an order of magnitude on a busy one.
AUTO_SINGLE_THREAD_FLOPS = 50e6


def check_threads(value: Any) -> int | str | None:
    """``threads`` must be ``'auto'``, None or a positive int (the command line's text forms too)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    elif isinstance(value, str) and value.strip().lower() in ("auto", "none"):
        value = None if value.strip().lower() == "none" else "auto"
    if value is None or value == "auto":
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ConfigurationError(f"threads must be 'auto', None or a positive integer, got {value!r}")


@torch.no_grad()
def step_flops(graph: torch.nn.Module, input_shape: tuple[int, ...], batch_size: int) -> float:
    """FLOPs of one training step (forward, and backward counted as twice the forward) on a batch.

    Parameters
    ----------
    graph : Graph
    input_shape : tuple of int
        The per-example input shape.
    batch_size : int
    """
    device = next(iter(graph.parameters()), torch.empty(0)).device
    was_training = graph.training
    graph.eval()  # no batch-norm statistics are updated by the count
    try:
        # One example, times the batch: in eval mode every layer's work is per example, and the
        # count itself then costs next to nothing.
        with FlopCounterMode(display=False) as counter:
            graph(torch.zeros((1, *input_shape), device=device))
    finally:
        graph.train(was_training)
    return 3.0 * batch_size * counter.get_total_flops()


@contextlib.contextmanager
def training_threads(
    setting: int | str | None, graph: torch.nn.Module, input_shape: tuple[int, ...], batch_size: int
) -> Iterator[int]:
    """Train inside this block with the threads ``setting`` asks for (see the module docstring).

    Yields
    ------
    int
        The number of threads in use.
    """
    before = torch.get_num_threads()
    wanted = before
    device = next(iter(graph.parameters()), torch.empty(0)).device
    if setting == "auto" and device.type == "cpu" and before > 1:
        flops = step_flops(graph, input_shape, batch_size)
        if flops < AUTO_SINGLE_THREAD_FLOPS:
            wanted = 1
            log.info("training with 1 CPU thread: a step is %.3g FLOPs (threads='auto'; threads=N overrides)", flops)
    elif isinstance(setting, int):
        wanted = setting
    if wanted != before:
        torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
