"""Quantizer layers: vector quantization (``form='vq'``) and what every quantizer shares.

A quantizer replaces each vector of its input by a code, and passes gradients straight
through (``d out / d pre`` is the identity).  After a convolution (per-example input
``(C, H, W)``) each spatial position's ``C`` channels are one vector and the codes form an
``(H, W)`` grid; after a dense layer (input ``(F,)``) the vector is cut into ``F / dim`` chunks
of width ``dim``.  The layer's output has its input's shape.

Outputs: ``'name:pre'`` is the continuous input, ``'name:out'`` the quantized one, and
``'name:codes'`` the int64 code indices, shape ``(n, *grid)``.

VQ (``dict(form='vq', codebook=K, ...)``, the maths in :mod:`aekit.model.codebook`):

* ``beta`` -- the commitment term ``beta * mean (z - sg(e))^2`` (``'name.commitment'``), added
  to the objective by the layer;
* ``update='ema'`` (default) -- the codebook is a buffer moved by exponential moving averages
  (``decay``) of the vectors assigned to each code, with Laplace-smoothed counts, after each
  optimizer step; ``update='loss'`` -- the codebook is a parameter trained by the codebook term
  ``mean (sg(z) - e)^2`` (``'name.codebook'``);
* ``init='kmeans'`` (default) -- the codebook starts as k-means of the first training batch's
  vectors; ``'uniform'`` -- uniform in ``[-1/K, 1/K]``, as the paper's code;
* ``dead_codes=THRESHOLD`` -- after each step, every code whose moving-average count of
  assigned vectors (``decay``, per step) is below ``THRESHOLD`` is re-seeded with a vector of
  the batch (0 turns this off);
* ``distance='l2'`` or ``'cosine'`` (vectors and codes compared, and output, as unit vectors);
* ``dim`` -- the chunk width after a dense layer (default: the whole vector).

Every state change (EMA statistics, re-seeding, the usage counter) happens in
:meth:`~VectorQuantizer.after_step`, after the optimizer step, from what the last training
forward pass saw; in a data-parallel run the batch statistics are all-reduced first, so every
process holds the same codebook.  The buffers (codebook, EMA statistics, counters, the random
seed and step count that the re-seeding draws from) are the layer's whole state: a model file or
a checkpoint restores it bit for bit.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import AekitWarning, ConfigurationError
from .. import codebook as cb
from ..specs import FormOptions, LayerSpec
from .base import Layer, LayerOutput, register

__all__ = ["DeadCodeWarning", "Quantizer", "VectorQuantizer"]

QUANTIZER_FORMS = ("vq", "fsq")


class DeadCodeWarning(AekitWarning):
    """A ``dead_codes`` threshold that most codes cannot stay above with the batches given."""


def _number(options: dict[str, Any], key: str, where: str, low: float, high: float, closed: bool = True) -> None:
    value = options.get(key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigurationError(f"{where} {key} must be a finite number, got {value!r}")
    inside = low <= value <= high if closed else low < value < high
    if not inside:
        bounds = f"[{low:g}, {high:g}]" if closed else f"({low:g}, {high:g})"
        raise ConfigurationError(f"{where} {key} must be in {bounds}, got {value!r}")
    options[key] = float(value)


def _positive(options: dict[str, Any], key: str, where: str, minimum: int = 1) -> None:
    value = options.get(key)
    if value is None:
        return
    if isinstance(value, bool) or not hasattr(value, "__index__") or int(value) < minimum:
        raise ConfigurationError(f"{where} {key} must be an integer >= {minimum}, got {value!r}")
    options[key] = int(value)


def _choice(options: dict[str, Any], key: str, where: str, choices: tuple[str, ...]) -> None:
    if key in options and options[key] not in choices:
        raise ConfigurationError(f"{where} {key} must be one of {', '.join(map(repr, choices))}, got {options[key]!r}")


def _check_vq(options: dict[str, Any], where: str) -> dict[str, Any]:
    _positive(options, "codebook", where, 2)
    _positive(options, "dim", where)
    _number(options, "beta", where, 0.0, math.inf)
    _number(options, "decay", where, 0.0, 1.0, closed=False)
    _number(options, "dead_codes", where, 0.0, math.inf)
    _choice(options, "update", where, ("ema", "loss"))
    _choice(options, "init", where, ("kmeans", "uniform"))
    _choice(options, "distance", where, ("l2", "cosine"))
    return options


class Quantizer(Layer):
    """What every quantizer shares: input vectors, the code grid, the usage counter, the step hooks.

    Attributes
    ----------
    width : int
        The width of one quantized vector.
    grid : tuple of int
        Per-example shape of the code indices (``(H, W)`` after a convolution, ``(F / dim,)`` after
        a dense layer).
    hits : tensor of float64, shape (codebook_size,)
        How many training vectors each code received (summed over the processes of a data-parallel
        run at the end of each epoch).
    """

    summed_buffers = ("hits",)
    hits: torch.Tensor

    def __init__(self, spec: LayerSpec, input_shape: tuple[int, ...], dim: int | None):
        super().__init__(spec, input_shape)
        where = f"layer {spec.name!r} ({spec.form})"
        if spec.activation != "linear" or spec.batch_norm:
            raise ConfigurationError(
                f"{where} quantizes its input as it is: it takes no activation and no batch_norm, got "
                f"activation={spec.activation!r}, batch_norm={spec.batch_norm}"
            )
        if len(self.input_shape) == 3:
            channels = self.input_shape[0]
            if dim not in (None, channels):
                raise ConfigurationError(
                    f"{where} after an image layer quantizes the {channels} channels of each position: "
                    f"dim must be None or {channels}, got {dim}"
                )
            self.width, self.grid = channels, tuple(self.input_shape[1:])
        elif len(self.input_shape) == 1:
            features = self.input_shape[0]
            width = features if dim is None else dim
            if features % width:
                raise ConfigurationError(f"{where} dim must divide the input's {features} features, got {dim}")
            self.width, self.grid = width, (features // width,)
        else:
            raise ConfigurationError(
                f"{where} needs an input of shape (features,) or (channels, height, width), got {self.input_shape}"
            )
        self.register_buffer("hits", torch.zeros(self.codebook_size, dtype=torch.float64))
        # What the last training forward pass saw, for after_step: (vectors, code indices).
        self._stash: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def codebook_size(self) -> int:
        """The number of codes."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shapes
    def to_vectors(self, x: torch.Tensor) -> torch.Tensor:
        """Input ``x`` (n, *input_shape) as rows (n * prod(grid), width), in grid order."""
        if len(self.input_shape) == 3:
            return x.permute(0, 2, 3, 1).reshape(-1, self.width)
        return x.reshape(-1, self.width)

    def from_vectors(self, v: torch.Tensor, n: int) -> torch.Tensor:
        """Rows (n * prod(grid), width) back to (n, *output_shape)."""
        if len(self.input_shape) == 3:
            return v.reshape(n, *self.grid, self.width).permute(0, 3, 1, 2)
        return v.reshape(n, *self.output_shape)

    def code_vectors(self, indices: torch.Tensor) -> torch.Tensor:
        """The output vector of each code index, shape (m, width) for indices of shape (m,)."""
        raise NotImplementedError

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """The layer's output for code indices (n, *grid): shape (n, *output_shape).

        Raises
        ------
        ConfigurationError
            For indices of the wrong shape or outside ``[0, codebook_size)``.
        """
        if tuple(indices.shape[1:]) != self.grid:
            raise ConfigurationError(
                f"codes of layer {self.name!r} must have shape (n, {', '.join(map(str, self.grid))}), "
                f"got {tuple(indices.shape)}"
            )
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.codebook_size):
            raise ConfigurationError(
                f"codes of layer {self.name!r} must lie in [0, {self.codebook_size}), got values in "
                f"[{int(indices.min())}, {int(indices.max())}]"
            )
        vectors = self.code_vectors(indices.reshape(-1).long())
        return self.from_vectors(vectors, indices.shape[0])

    # ------------------------------------------------------------------ steps
    @property
    def has_step_hooks(self) -> bool:
        """Always: the usage counter (and a codebook's state) is updated after each step."""
        return True

    def _remember(self, z: torch.Tensor, idx: torch.Tensor) -> None:
        if self.training:
            self._stash = (z.detach(), idx.detach())

    def _take(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        stash, self._stash = self._stash, None
        return stash

    def _count(self, idx: torch.Tensor) -> torch.Tensor:
        """The vectors per code of this process, float32 (K,); added to :attr:`hits`."""
        counts = torch.bincount(idx, minlength=self.codebook_size)
        self.hits += counts.to(torch.float64)
        return counts.float()

    def _all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over the processes of a data-parallel run (itself otherwise)."""
        if self.data_parallel:
            device = tensor.device
            backend = torch.distributed.get_backend()
            tensor = tensor.to(device if backend == "nccl" else "cpu")
            torch.distributed.all_reduce(tensor)
            tensor = tensor.to(device)
        return tensor

    def _broadcast(self, *tensors: torch.Tensor) -> None:
        """Give every process rank 0's values of ``tensors`` (in place); nothing outside a data-parallel run."""
        if not self.data_parallel:
            return
        backend = torch.distributed.get_backend()
        for tensor in tensors:
            if backend == "nccl" or tensor.device.type == "cpu":
                torch.distributed.broadcast(tensor.data, 0)
            else:
                copy = tensor.detach().cpu()
                torch.distributed.broadcast(copy, 0)
                tensor.data.copy_(copy)

    def extra_repr(self) -> str:
        """Name, shapes, codes and grid, for ``repr``."""
        return f"{self.name!r}, {self.input_shape} -> {self.output_shape}, {self.codebook_size} codes, grid {self.grid}"


_VQ_OPTIONS = FormOptions(
    defaults={
        "codebook": 512,
        "beta": 0.25,
        "update": "ema",
        "decay": 0.99,
        "init": "kmeans",
        "dead_codes": 1.0,
        "distance": "l2",
        "dim": None,
    },
    check=_check_vq,
)


@register("vq", _VQ_OPTIONS)
class VectorQuantizer(Quantizer):
    """Vector quantization with a codebook of ``codebook`` codes (see the module docstring).

    Attributes
    ----------
    codebook : tensor, shape (K, width)
        A buffer (``update='ema'``) or a parameter (``update='loss'``).
    ema_count : tensor, shape (K,)
        The moving average of the vectors assigned to each code per step (``N``); the
        dead-code threshold compares against it.
    ema_sum : tensor, shape (K, width)
        The moving average of their sums (``m``; ``update='ema'`` only).
    initialized : tensor of bool, shape ()
        False until k-means has run on the first training batch.
    seed, steps : tensors of int64, shape ()
        The re-seeding draws from a generator seeded by both, so a resumed run draws the same.
    reseeded : tensor of int64, shape ()
        How many codes were re-seeded so far.
    """

    codebook: torch.Tensor
    ema_count: torch.Tensor
    ema_sum: torch.Tensor
    initialized: torch.Tensor
    seed: torch.Tensor
    steps: torch.Tensor
    reseeded: torch.Tensor

    def __init__(self, spec: LayerSpec, input_shape: tuple[int, ...]):
        self.size = int(spec.option("codebook"))
        super().__init__(spec, input_shape, spec.option("dim"))
        self.beta = float(spec.option("beta"))
        self.update = spec.option("update")
        self.decay = float(spec.option("decay"))
        self.threshold = float(spec.option("dead_codes"))
        self.distance = spec.option("distance")
        shape = (self.size, self.width)
        if self.update == "loss":
            self.codebook = nn.Parameter(torch.zeros(shape))
        else:
            self.register_buffer("codebook", torch.zeros(shape))
            self.register_buffer("ema_sum", torch.zeros(shape))
        self.register_buffer("ema_count", torch.ones(self.size))
        self.register_buffer("initialized", torch.tensor(False))
        self.register_buffer("seed", torch.tensor(0, dtype=torch.int64))
        self.register_buffer("steps", torch.tensor(0, dtype=torch.int64))
        self.register_buffer("reseeded", torch.tensor(0, dtype=torch.int64))
        self._warned = False

    @property
    def codebook_size(self) -> int:
        """The number of codes, ``K``."""
        return self.size

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Uniform codes in ``[-1/K, 1/K]`` (k-means replaces them at the first training batch), counts of 1."""
        with torch.no_grad():
            codes = (torch.rand(self.codebook.shape, generator=generator) * 2 - 1) / self.size
            if self.distance == "cosine":
                codes = F.normalize(codes, dim=1)
            self.set_codebook(codes)
            self.seed.fill_(int(torch.randint(2**31, (1,), generator=generator)))
            self.initialized.fill_(self.spec.option("init") != "kmeans")
            self.steps.zero_()
            self.reseeded.zero_()
            self.hits.zero_()

    def set_codebook(self, codes: torch.Tensor, counts: torch.Tensor | None = None) -> None:
        """Replace the codes (and the EMA statistics that go with them: ``N = counts``, ``m = N e``).

        Parameters
        ----------
        codes : tensor, shape (K, width)
        counts : tensor, shape (K,), optional
            The moving-average counts to start from (default 1 per code).
        """
        if tuple(codes.shape) != tuple(self.codebook.shape):
            raise ConfigurationError(
                f"layer {self.name!r} needs codes of shape {tuple(self.codebook.shape)}, got {tuple(codes.shape)}"
            )
        with torch.no_grad():
            self.codebook.copy_(codes)
            self.ema_count.copy_(torch.ones(self.size) if counts is None else counts)
            if self.update == "ema":
                self.ema_sum.copy_(self.codebook * self.ema_count.unsqueeze(1))
            self.initialized.fill_(True)

    def _generator(self) -> torch.Generator:
        # One stream per step, from buffers only: a resumed run re-seeds exactly as an uninterrupted one.
        return torch.Generator().manual_seed((int(self.seed) * 1_000_003 + int(self.steps)) % 2**63)

    def code_vectors(self, indices: torch.Tensor) -> torch.Tensor:
        """The codes of ``indices`` (m,): shape (m, width) (unit vectors with ``distance='cosine'``)."""
        codes = self.codebook.detach()
        if self.distance == "cosine":
            codes = F.normalize(codes, dim=1)
        return codes[indices.to(codes.device)]

    # ------------------------------------------------------------------ forward
    # Eager under torch.compile (compile=True): the forward pass keeps what after_step reads, and
    # the k-means start reads a buffer as a Python bool; the other layers still compile.
    @torch.compiler.disable
    def forward(self, x: torch.Tensor) -> LayerOutput:
        """Quantize ``x`` (n, *input_shape); see the module docstring for the outputs and terms."""
        n = x.shape[0]
        with torch.autocast(x.device.type, enabled=False):  # distances in float32 under any precision
            z = self.to_vectors(x).float()
            if self.distance == "cosine":
                z = F.normalize(z, dim=1)
            if self.training and not bool(self.initialized) and torch.is_grad_enabled():
                self._kmeans_init(z)
            codes = self.codebook if self.distance == "l2" else F.normalize(self.codebook, dim=1)
            idx = cb.nearest_codes(z.detach(), codes.detach(), self.distance)
            q = codes[idx]
            terms = {"commitment": self.beta * (z - q.detach()).square().mean()}
            if self.update == "loss":
                terms["codebook"] = (z.detach() - q).square().mean()
            out = cb.straight_through(z, q)
        self._remember(z, idx)
        pre = x if self.distance == "l2" else self.from_vectors(z, n)
        return LayerOutput(pre, self.from_vectors(out, n), extras={"codes": idx.reshape(n, *self.grid)}, terms=terms)

    def _kmeans_init(self, z: torch.Tensor) -> None:
        centroids, counts = cb.kmeans(z.detach(), self.size, self._generator(), distance=self.distance)
        # A code whose cluster emptied keeps a count of 1, so m / N stays its position.
        self.set_codebook(centroids, counts.clamp_min(1.0))
        self._broadcast(*self._state())

    def _state(self) -> list[torch.Tensor]:
        state = [self.codebook, self.ema_count]
        return [*state, self.ema_sum] if self.update == "ema" else state

    # ------------------------------------------------------------------ after the step
    @torch.no_grad()
    def after_step(self) -> None:
        """EMA statistics, then dead-code re-seeding, from the last training batch (after the optimizer step)."""
        stash = self._take()
        if stash is None:
            return
        z, idx = stash
        local = self._count(idx)
        if self.update == "ema":
            sums = torch.zeros_like(self.ema_sum).index_add_(0, idx, z.float())
            packed = self._all_reduce(torch.cat([local.unsqueeze(1), sums], dim=1))
            counts, sums = packed[:, 0], packed[:, 1:]
            count, total, codes = cb.ema_update(self.ema_count, self.ema_sum, counts, sums, self.decay)
            self.ema_count.copy_(count)
            self.ema_sum.copy_(total)
            self.codebook.copy_(F.normalize(codes, dim=1) if self.distance == "cosine" else codes)
        else:
            counts = self._all_reduce(local)
            self.ema_count.mul_(self.decay).add_(counts, alpha=1.0 - self.decay)
        if self.threshold > 0:
            self._reseed(z, float(counts.sum()))
        self.steps += 1

    def _reseed(self, z: torch.Tensor, batch_vectors: float) -> None:
        """Re-seed every code whose moving-average count is below the threshold with a vector of the batch."""
        if not self._warned and batch_vectors < self.threshold * self.size:
            self._warned = True
            warnings.warn(
                f"layer {self.name!r}: a training batch has {batch_vectors:g} vectors for {self.size} codes, "
                f"fewer than {self.threshold:g} per code (dead_codes={self.threshold:g}), so most codes count as "
                "dead and are re-seeded at every step; use a larger batch_size, a smaller dead_codes or fewer codes",
                DeadCodeWarning,
                stacklevel=2,
            )
        dead = (self.ema_count < self.threshold).nonzero().flatten()
        if dead.numel() == 0:
            return
        distinct = torch.unique(z, dim=0)
        rows = cb.pick_rows(distinct.shape[0], dead.numel(), self._generator()).to(z.device)
        fresh = distinct[rows].to(self.codebook.dtype)
        self.codebook[dead] = fresh
        self.ema_count[dead] = self.threshold
        if self.update == "ema":
            self.ema_sum[dead] = fresh * self.threshold
        self.reseeded += dead.numel()
        # The batch vectors differ between processes: rank 0's choice is everyone's.
        self._broadcast(*self._state())
