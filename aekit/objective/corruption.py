"""Training-time corruption of inputs and hidden outputs: Gaussian noise and dropout.

Both apply only while training (the objective never corrupts validation or
inference); their draws come from torch's global generator, which the training
loop seeds per epoch so that a run is reproducible and resumable bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

__all__ = ["corruptions", "dropout", "gaussian_noise"]


def gaussian_noise(x: torch.Tensor, std: float) -> torch.Tensor:
    """``x`` plus zero-mean Gaussian noise of standard deviation ``std``; same shape as ``x``."""
    return x + std * torch.randn_like(x) if std > 0 else x


def dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Zero each element with probability ``p``; rescale survivors by ``1/(1-p)``; same shape as ``x``."""
    return torch.nn.functional.dropout(x, p, training=True) if p > 0 else x


def corruptions(
    noise: Mapping[str, float], drop: Mapping[str, float]
) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """Per-layer functions for :meth:`aekit.model.graph.Graph.forward`: noise first, then dropout.

    Parameters
    ----------
    noise, drop : dict of str to float
        Noise standard deviation and dropout probability by layer name.
    """
    out: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
    for name in dict.fromkeys([*noise, *drop]):

        def corrupt(h: torch.Tensor, std: float = noise.get(name, 0.0), p: float = drop.get(name, 0.0)) -> torch.Tensor:
            if std:
                h = gaussian_noise(h, std)
            if p:
                h = dropout(h, p)
            return h

        out[name] = corrupt
    return out
