"""One optimisation step, the same on every path: eager, mixed precision, compiled, hand-derived.

:class:`StepRunner` is built once per training run and called once per batch.
Every step goes through the same stages::

    forward + objective -> backward -> gradient hooks -> clipping -> optimizer -> post-step hooks

Gradient hooks run after the gradients exist and before anything reads them
(a layer's :meth:`~aekit.model.layers.Layer.before_step`, e.g. the unit-norm
projection, then the hooks users add); post-step hooks run after the update
(a layer's :meth:`~aekit.model.layers.Layer.after_step`: renormalising, state
updates; then users' hooks).  The hand-derived step and the fused Adam update
go through the same stages, and so does each L-BFGS evaluation
(:meth:`StepRunner.gradients`, then :meth:`StepRunner.after_update`).  The step
returns the loss terms stacked into one detached float32 vector, so the caller
can accumulate epoch means on the device without a host sync.

* ``precision='bf16'|'fp16'`` runs the forward pass and the loss under
  ``torch.autocast`` (parameters and optimizer state stay float32); fp16 adds a
  ``GradScaler`` so that small gradients do not underflow.
* Dense autoencoders (dense and tied layers, elementwise activations, MSE/MAE/
  cross-entropy or a weighted sum of them, plain or weighted, L1/L2, sparsity and
  first-layer contractive penalties, noise and dropout) in float32 take the
  hand-derived step of :mod:`aekit.fused`: the same matrix products without
  autograd's overhead.  L-BFGS closures take it too (:meth:`StepRunner.gradients`).
* ``compile=True`` compiles forward + loss (and, through AOTAutograd, the
  backward) with ``torch.compile`` for full batches; a short last batch runs
  eagerly, so there is no recompilation for it.  If the compiler is missing or
  fails, training goes on eagerly after one logged warning.  ``compile='auto'``
  compiles on CUDA only: on a CPU the compile time (tens of seconds) rarely pays
  back for the small matrices of a typical autoencoder.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import torch

from ..errors import ConfigurationError
from ..objective import Objective
from .fused import DenseChainStep
from .optimizers import FusedAdamUpdate
from .strategy import SingleProcess, Strategy

__all__ = ["COMPILE_CHOICES", "PRECISIONS", "FusedAdamUpdate", "StepRunner", "check_compile", "check_precision"]

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
_PRECISION_ALIASES = {
    "float32": "fp32",
    "32": "fp32",
    "bfloat16": "bf16",
    "float16": "fp16",
    "half": "fp16",
    "16": "fp16",
}
COMPILE_CHOICES = (False, True, "auto")


def check_precision(value: Any) -> str:
    """The canonical precision name (``'fp32'``, ``'bf16'`` or ``'fp16'``) for ``value``."""
    key = str(value).lower()
    key = _PRECISION_ALIASES.get(key, key)
    if key not in PRECISIONS:
        raise ConfigurationError(f"precision must be 'fp32', 'bf16' or 'fp16', got {value!r}")
    return key


def check_compile(value: Any) -> bool | str:
    """``compile`` must be True, False or ``'auto'``."""
    if value is True or value is False or value == "auto":
        return value
    raise ConfigurationError(f"compile must be True, False or 'auto', got {value!r}")


class StepRunner:
    """Zero the gradients, run forward + objective + backward, hooks, clip, and step the optimizer.

    Parameters
    ----------
    objective : Objective
        What is minimised (its graph holds the parameters).
    optimizer : torch.optim.Optimizer
    max_gradient_norm : float, optional
    precision : str
        ``'fp32'``, ``'bf16'`` or ``'fp16'`` (autocast).
    compile : bool or 'auto'
    batch_size : int
        Batches of exactly this size go through the compiled function.
    strategy : Strategy, optional
        How the run is spread over processes (default: this one only).

    Attributes
    ----------
    gradient_hooks, post_step_hooks : list of callable
        Called with no arguments after the gradients are complete (before clipping)
        and after the optimizer step; they start with the layers' own hooks.
    scaler : torch.amp.GradScaler or None
        The loss scaler of an fp16 run (None otherwise).  Its state (scale, growth
        tracker) is part of a training checkpoint: :mod:`aekit.train.checkpoint`
        saves and restores it.
    """

    def __init__(
        self,
        objective: Objective,
        optimizer: torch.optim.Optimizer,
        *,
        max_gradient_norm: float | None = None,
        precision: str = "fp32",
        compile: bool | str = False,
        batch_size: int = 64,
        strategy: Strategy | None = None,
    ):
        self.objective = objective
        self.strategy = strategy if strategy is not None else SingleProcess()
        self.optimizer = optimizer
        graph = objective.graph
        self.params = list(graph.parameters())
        self.max_gradient_norm = max_gradient_norm
        self.device_type = next(iter(self.params), torch.empty(0)).device.type
        self.amp_dtype = PRECISIONS[check_precision(precision)]
        self.scaler: torch.amp.GradScaler | None = None
        if self.amp_dtype is torch.float16:
            self.scaler = torch.amp.GradScaler(self.device_type)
        self.batch_size = batch_size
        self.keys: list[str] | None = None
        self.gradient_hooks: list[Callable[[], None]] = [layer.before_step for layer in graph.hooked_layers]
        self.post_step_hooks: list[Callable[[], None]] = [layer.after_step for layer in graph.hooked_layers]
        self.loss = self.strategy.wrap(objective)  # (x, w, scale) -> (scaled total, terms)
        want = check_compile(compile)
        if want == "auto":
            want = self.device_type == "cuda"
        want = bool(want) and self.strategy.world == 1  # a data-parallel step runs eagerly
        self._compiled: Callable[[torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor]] | None = None
        self._compile_pending = want
        self.compile_seconds: float | None = None
        # The autograd-free step, where the model allows it (decided once the term names are known, from
        # the objective as it is then: resuming a checkpoint may set its penalty scale after this point).
        self.fast: DenseChainStep | None = None
        self._update_params = FusedAdamUpdate.build(optimizer) if self.amp_dtype is None else None
        self._fast_allowed = not want and self.amp_dtype is None

    def __repr__(self) -> str:
        path = "hand-derived" if self.fast is not None else "autograd"
        if self.keys is None and self._fast_allowed:
            path = "hand-derived or autograd (chosen at the first batch)"
        precision = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]
        return (
            f"StepRunner({path} step, {type(self.optimizer).__name__}, precision={precision!r}, "
            f"compile={self._compiled is not None or self._compile_pending})"
        )

    # ------------------------------------------------------------------ the objective
    def _objective(
        self, xb: torch.Tensor, wb: torch.Tensor | None, scale: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Total loss (times ``scale``) and the detached float32 vector of its terms (in ``self.keys`` order)."""
        if self.amp_dtype is not None:
            with torch.autocast(self.device_type, dtype=self.amp_dtype):
                total, terms = self.loss(xb, wb, scale)
        else:
            total, terms = self.loss(xb, wb, scale)
        assert self.keys is not None  # learnt on the first batch (_choose), before any step
        values = torch.stack([terms[k].detach().float().reshape(()) for k in self.keys])
        return total.float(), values

    def _first_keys(self, xb: torch.Tensor, wb: torch.Tensor | None) -> None:
        # The term names depend on the regularizers only; learn them once, without
        # a backward pass, so the compiled function can return a plain tensor.
        # fork_rng: this probe must not consume the noise/dropout draws, or a run resumed from a
        # checkpoint (which probes again) would no longer match an uninterrupted one bit for bit.
        # Buffers (batch-norm running statistics) are put back for the same reason; the whole
        # batch is used because batch norm cannot normalise a single example.
        cuda = [xb.device.index or 0] if xb.device.type == "cuda" else []
        buffers = [(b, b.clone()) for b in self.objective.graph.buffers()]
        with torch.no_grad(), torch.random.fork_rng(devices=cuda):
            _, terms = self.objective(xb, wb, training=True)
            for buffer, saved in buffers:
                buffer.copy_(saved)
        self.keys = list(terms)

    def _try_compile(self) -> None:
        self._compile_pending = False
        try:
            self._compiled = torch.compile(self._objective, dynamic=False)
        except Exception as error:  # noqa: BLE001 - any compiler failure means: run eagerly
            log.warning("torch.compile is unavailable (%s: %s); training eagerly", type(error).__name__, error)
            self._compiled = None

    # ------------------------------------------------------------------ one step
    def _choose(self, xb: torch.Tensor, wb: torch.Tensor | None) -> None:
        """On the first batch: learn the term names, and take the hand-derived step if it gives the same."""
        self._first_keys(xb, wb)
        candidate = DenseChainStep.build(self.objective) if self._fast_allowed else None
        if candidate is not None and candidate.keys == self.keys:
            self.fast = candidate
            log.debug("training with the hand-derived dense step (aekit.train.fused)")

    def gradients(self, xb: torch.Tensor, wb: torch.Tensor | None, scale: float = 1.0) -> torch.Tensor:
        """Every parameter's ``.grad`` for the objective on a batch, hooks applied; no optimizer step.

        The objective of an L-BFGS closure.  Returns the detached, unscaled loss terms,
        shape (len(keys),); the gradients are those of ``loss * scale``, averaged over
        the processes of a data-parallel run.
        """
        if self.keys is None:
            self._choose(xb, wb)
        if self.fast is not None:
            values = self.fast(xb, wb)  # writes every .grad: no zero_grad needed
            self.strategy.average_gradients(self.params, scale)
        else:
            self.optimizer.zero_grad(set_to_none=True)
            total, values = self._objective(xb, wb, scale)
            total.backward()
        self.run_gradient_hooks()
        return values

    def __call__(self, xb: torch.Tensor, wb: torch.Tensor | None, scale: float = 1.0) -> torch.Tensor:
        """One optimizer step on a batch; returns the detached loss terms, shape (len(keys),).

        ``scale`` is this process's share of a data-parallel global batch (1 otherwise).
        """
        if self.keys is None:
            self._choose(xb, wb)
        if self.fast is not None:
            values = self.fast(xb, wb)  # writes every .grad: no zero_grad needed
            self.strategy.average_gradients(self.params, scale)
            self.update()
            return values
        if self._compile_pending:
            self._try_compile()
        self.optimizer.zero_grad(set_to_none=True)
        total: torch.Tensor | None = None  # set with values when the compiled step ran
        if self._compiled is not None and xb.shape[0] == self.batch_size:
            started = time.perf_counter() if self.compile_seconds is None else None
            try:
                total, values = self._compiled(xb, wb)
                self._backward(total)
            except Exception as error:  # noqa: BLE001 - compilation happens lazily, at the first call
                log.warning(
                    "torch.compile failed (%s: %s); training eagerly",
                    type(error).__name__,
                    str(error).splitlines()[0] if str(error) else "",
                )
                self._compiled = None
                self.optimizer.zero_grad(set_to_none=True)
                total = None
            if started is not None and total is not None:
                self.compile_seconds = time.perf_counter() - started
                log.info("compiled the training step in %.1f s", self.compile_seconds)
        if total is None:
            total, values = self._objective(xb, wb, scale)
            self._backward(total)
        self.update()
        return values

    def _backward(self, total: torch.Tensor) -> None:
        if self.scaler is not None:
            self.scaler.scale(total).backward()
        else:
            total.backward()

    def run_gradient_hooks(self) -> None:
        """Call every gradient hook (the gradients are complete and unscaled)."""
        for hook in self.gradient_hooks:
            hook()

    def after_update(self) -> None:
        """Call every post-step hook (the parameters have just been updated)."""
        for hook in self.post_step_hooks:
            hook()

    def update(self) -> None:
        """Gradient hooks, clipping, the optimizer step, then the post-step hooks.

        Clipping is ``max_gradient_norm``'s; the optimizer steps through the fp16 loss scaler when
        there is one.
        """
        if self.scaler is not None:
            if self.max_gradient_norm is not None or self.gradient_hooks:
                self.scaler.unscale_(self.optimizer)  # hooks and clipping see true gradients
            self.run_gradient_hooks()
            if self.max_gradient_norm is not None:
                torch.nn.utils.clip_grad_norm_(self.params, self.max_gradient_norm, foreach=True)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.after_update()
            return
        self.run_gradient_hooks()
        if self.max_gradient_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.max_gradient_norm, foreach=True)
        if self._update_params is not None:
            self._update_params()
        else:
            self.optimizer.step()
        self.after_update()
