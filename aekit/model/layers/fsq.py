"""Finite scalar quantization (``dict(form='fsq', levels=(8, 5, 5, 5))``): codes with no codebook parameters.

Each vector of ``len(levels)`` channels (the channels of a position after a convolution, or
chunks of ``len(levels)`` features after a dense layer) has each channel bounded by a tanh to
its number of levels and rounded, with straight-through gradients; the output is the rounded
level scaled to [-1, 1].  The code of a vector is its levels read as digits of the mixed radix
``levels``, so ``prod(levels)`` codes exist (1000 for ``(8, 5, 5, 5)``).  See
:func:`aekit.model.codebook.fsq_quantize` for the maths, computed in float32 under any autocast so
that the indices always lie in range.

FSQ needs no commitment or codebook term, and has no codebook to collapse; its usage counter
(``hits``) is its only state.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ...errors import ConfigurationError
from .. import codebook as cb
from ..specs import FormOptions, LayerSpec
from .base import LayerOutput, register
from .quantize import Quantizer

__all__ = ["FiniteScalarQuantizer"]


def _check_fsq(options: dict[str, Any], where: str) -> dict[str, Any]:
    levels = options.get("levels")
    if (
        not isinstance(levels, (list, tuple))
        or not levels
        or any(isinstance(v, bool) or not hasattr(v, "__index__") or int(v) < 2 for v in levels)
    ):
        raise ConfigurationError(f"{where} levels must be a non-empty tuple of integers >= 2, got {levels!r}")
    options["levels"] = tuple(int(v) for v in levels)
    if math.prod(options["levels"]) > 2**20:
        # Each code has a usage counter: a million codes is already beyond FSQ's published sizes (2**16).
        raise ConfigurationError(f"{where} levels make more than 2**20 codes, got {options['levels']!r}")
    return options


@register("fsq", FormOptions(defaults={"levels": (8, 5, 5, 5)}, check=_check_fsq))
class FiniteScalarQuantizer(Quantizer):
    """Finite scalar quantization (see the module docstring)."""

    def __init__(self, spec: LayerSpec, input_shape: tuple[int, ...]):
        self.levels = tuple(int(v) for v in spec.option("levels"))
        # After a dense layer the levels set the chunk width; after a conv the channels must match them.
        super().__init__(spec, input_shape, len(self.levels) if len(input_shape) == 1 else None)
        if self.width != len(self.levels):
            raise ConfigurationError(
                f"layer {spec.name!r} (fsq) has {len(self.levels)} levels, one per channel, but its input has "
                f"{self.width} channels; give the layer before it {len(self.levels)} channels"
            )

    @property
    def codebook_size(self) -> int:
        """``prod(levels)``."""
        return math.prod(self.levels)

    def code_vectors(self, indices: torch.Tensor) -> torch.Tensor:
        """The values in [-1, 1] of code ``indices`` (m,): shape (m, len(levels))."""
        return cb.fsq_values(indices, self.levels)

    # Eager under torch.compile (compile=True): the forward pass keeps what after_step reads, and
    # the k-means start reads a buffer as a Python bool; the other layers still compile.
    @torch.compiler.disable
    def forward(self, x: torch.Tensor) -> LayerOutput:
        """Quantize ``x`` (n, *input_shape); ``'name:codes'`` holds the indices, shape (n, *grid)."""
        n = x.shape[0]
        with torch.autocast(x.device.type, enabled=False):
            values, digits = cb.fsq_quantize(self.to_vectors(x), self.levels)
            idx = cb.fsq_indices(digits, self.levels)
        self._remember(values, idx)
        return LayerOutput(x, self.from_vectors(values, n), extras={"codes": idx.reshape(n, *self.grid)})

    @torch.no_grad()
    def after_step(self) -> None:
        """Count the last training batch's codes in :attr:`hits`."""
        stash = self._take()
        if stash is not None:
            self._count(stash[1])
