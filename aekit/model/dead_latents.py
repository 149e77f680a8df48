"""A rolling tracker of dead latents: training examples since each latent last fired.

Every dense layer whose activation is a sparse code (``'topk:K'``, ``'batchtopk:K'``,
``'jumprelu'``) holds one, as its ``dead_latents`` submodule
(:func:`aekit.model.sae_recipe.link` attaches it).  After each optimizer step,

* ``since_fired += examples in the step`` (summed over the processes of a
  data-parallel run), and
* ``since_fired[j] = 0`` for each latent ``j`` that was non-zero for some example of
  the step (on some process: the "fired" masks are OR-ed),

as in OpenAI's ``sparse_autoencoder`` and EleutherAI's ``sparsify``.  A latent is
*dead* once ``since_fired > dead_after``: the ``dead_after`` train option (default
10,000,000 examples, the paper's "not activated in 10 million tokens", Gao et al.
2024), stored in the tracker at each ``train()`` so that a later look (``diagnose``)
judges with the threshold the training used.

Both counters are int64 buffers: exact, saved in model files and checkpoints, so a
resumed run goes on bit for bit.  The fired mask of a step is taken from the last
training forward pass before the step (an L-BFGS step evaluates one batch several
times: it is counted once).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["DEFAULT_DEAD_AFTER", "DeadLatents"]

DEFAULT_DEAD_AFTER = 10_000_000  # examples (tokens) without firing: Gao et al. 2024


class DeadLatents(nn.Module):
    """Examples since each latent last fired, and the threshold past which it is dead.

    Parameters
    ----------
    size : int
        Number of latents.

    Attributes
    ----------
    since_fired : tensor, shape (size,), int64
    dead_after : tensor, shape (), int64
    sum_over_processes : callable or None
        Set by the training loop: sums a tensor over the processes of a data-parallel run.
    """

    since_fired: torch.Tensor
    dead_after: torch.Tensor

    def __init__(self, size: int):
        super().__init__()
        self.register_buffer("since_fired", torch.zeros(size, dtype=torch.int64))
        self.register_buffer("dead_after", torch.tensor(DEFAULT_DEAD_AFTER, dtype=torch.int64))
        self.sum_over_processes: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._pending: torch.Tensor | None = None  # (size + 1,): the last forward's fired mask, then its examples

    def hook(self, module: nn.Module, args: Any, output: Any) -> None:
        """A forward hook of the code layer: remember which latents fired in a training forward pass."""
        if module.training:
            self.observe(output.out)

    @torch.no_grad()
    def observe(self, codes: torch.Tensor) -> None:
        """Remember which latents of ``codes`` (n, size) are non-zero, to be counted at the next step."""
        codes = codes.detach().flatten(1)
        fired = (codes != 0).any(dim=0).to(torch.float64)
        self._pending = torch.cat([fired, fired.new_full((1,), codes.shape[0])])

    @torch.no_grad()
    def observe_active(self, values: torch.Tensor, indices: torch.Tensor) -> None:
        """The same as :meth:`hook` for a code given by its active latents (the sparse top-k path).

        Parameters
        ----------
        values, indices : tensor, shape (n, k)
            Each example's kept values and their latents; a kept value of 0 did not fire.
        """
        fired = torch.zeros(self.since_fired.shape[0] + 1, dtype=torch.float64, device=values.device)
        fired[indices[values.detach() != 0]] = 1.0
        fired[-1] = values.shape[0]
        self._pending = fired

    @torch.no_grad()
    def commit(self) -> None:
        """Count the last step's examples and reset the latents that fired (after each optimizer step)."""
        if self._pending is None:
            return
        counts, self._pending = self._pending, None
        if self.sum_over_processes is not None:
            counts = self.sum_over_processes(counts)
        self.since_fired.add_(counts[-1].to(self.since_fired.device, torch.int64))
        self.since_fired.masked_fill_(counts[:-1].to(self.since_fired.device) > 0, 0)

    def dead_mask(self, dead_after: int | None = None) -> torch.Tensor:
        """Which latents are dead, shape (size,), bool: ``since_fired > dead_after`` (default: the stored threshold)."""
        limit = self.dead_after if dead_after is None else dead_after
        return self.since_fired > limit

    @property
    def dead_fraction(self) -> float:
        """The fraction of latents dead by the stored threshold."""
        return float(self.dead_mask().double().mean())

    def extra_repr(self) -> str:
        """Size, threshold and the dead count, for ``repr``."""
        return f"size={self.since_fired.numel()}, dead_after={int(self.dead_after)}, dead={int(self.dead_mask().sum())}"
