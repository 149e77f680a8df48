"""One optimisation step, fast: eager, mixed precision, or compiled with ``torch.compile``.

:class:`StepRunner` is built once per training run (``_Trainer``) and called once
per batch.  It returns the loss terms stacked into one detached float32 vector,
so the caller can accumulate epoch means on the device without a host sync.

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
from typing import Any

import torch

from ..errors import ConfigurationError
from .fused import DenseChainStep

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


class FusedAdamUpdate:
    """``optimizer.step()`` of a fused ``torch.optim.Adam``, minus its per-call Python bookkeeping.

    ``Optimizer.step`` regroups the parameters, their gradients and their state
    on every call (about 0.2 ms on a CPU, 3-4% of a 784-256-784 step); the
    update itself is one ``torch._fused_adam_`` kernel.  This calls that kernel on
    the optimizer's own state tensors, gathered once, so ``optimizer.state_dict()``
    and checkpoints see every update.  The first call, and any call after the
    state was replaced (a resume loads new tensors), goes through
    ``optimizer.step()``.  :meth:`build` returns None for anything but a fused,
    single-group Adam with plain options.
    """

    def __init__(self, optimizer: torch.optim.Adam):
        self.optimizer = optimizer
        self.group = optimizer.param_groups[0]
        self.params: list[torch.Tensor] = list(self.group["params"])
        self._state: tuple[list[torch.Tensor], ...] | None = None
        self._live: dict | None = None  # the optimizer.state object self._state was gathered from

    def __repr__(self) -> str:
        return f"FusedAdamUpdate({len(self.params)} parameters, lr={self.group['lr']:g})"

    @classmethod
    def build(cls, optimizer: torch.optim.Optimizer) -> FusedAdamUpdate | None:
        if type(optimizer) is not torch.optim.Adam or len(optimizer.param_groups) != 1:
            return None
        group = optimizer.param_groups[0]
        plain = all(
            not group.get(k)
            for k in ("amsgrad", "maximize", "differentiable", "capturable", "decoupled_weight_decay", "foreach")
        )
        scalars = not any(isinstance(v, torch.Tensor) for v in (group["lr"], *group["betas"]))
        if not (group.get("fused") and plain and scalars and hasattr(torch, "_fused_adam_")):
            return None
        return cls(optimizer)

    def _gather(self) -> tuple[list[torch.Tensor], ...] | None:
        state = self._live = self.optimizer.state
        try:
            per_param = [state[p] for p in self.params]
            return (
                [s["exp_avg"] for s in per_param],
                [s["exp_avg_sq"] for s in per_param],
                [s["step"] for s in per_param],
            )
        except KeyError:  # not initialised yet
            return None

    def _current(self) -> bool:
        # The optimizer's state is either cleared (after a divergence) or replaced as a whole
        # (load_state_dict makes a new dict): checking the dict and one entry catches both.
        if self._state is None:
            return False
        live = self.optimizer.state
        first = live.get(self.params[0]) if live is self._live else None
        return first is not None and first.get("exp_avg") is self._state[0][0]

    def __call__(self) -> None:
        params = self.params
        if not self._current() or any(p.grad is None for p in params):
            self.optimizer.step()
            self._state = self._gather()
            return
        exp_avgs, exp_avg_sqs, steps = self._state
        group = self.group
        beta1, beta2 = group["betas"]
        torch._foreach_add_(steps, 1)
        torch._fused_adam_(
            params,
            [p.grad for p in params],
            exp_avgs,
            exp_avg_sqs,
            [],
            steps,
            amsgrad=False,
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=False,
        )


class StepRunner:
    """Zero the gradients, run forward + loss + backward, clip, and step the optimizer.

    Parameters
    ----------
    net : Autoencoder
    regs : Regularizers
    optimizer : torch.optim.Optimizer
    max_gradient_norm : float, optional
    precision : str
        ``'fp32'``, ``'bf16'`` or ``'fp16'`` (autocast).
    compile : bool or 'auto'
    batch_size : int
        Batches of exactly this size go through the compiled function.

    Attributes
    ----------
    scaler : torch.amp.GradScaler or None
        The loss scaler of an fp16 run (None otherwise).  Its state (scale, growth
        tracker) is part of a training checkpoint: :mod:`aekit.checkpoint` saves and
        restores it, and the data-parallel trainer steps with this same object.
    """

    def __init__(
        self,
        net,
        regs,
        optimizer: torch.optim.Optimizer,
        *,
        max_gradient_norm: float | None = None,
        precision: str = "fp32",
        compile: bool | str = False,
        batch_size: int = 64,
    ):
        self.net = net
        self.regs = regs
        self.optimizer = optimizer
        self.params = net.params
        self.max_gradient_norm = max_gradient_norm
        self.device_type = net.device.type
        self.amp_dtype = PRECISIONS[check_precision(precision)]
        self.scaler: torch.amp.GradScaler | None = None
        if self.amp_dtype is torch.float16:
            self.scaler = torch.amp.GradScaler(self.device_type)
        self.batch_size = batch_size
        self.keys: list[str] | None = None
        want = check_compile(compile)
        if want == "auto":
            want = self.device_type == "cuda"
        self._compiled = None
        self._compile_pending = bool(want)
        self.compile_seconds: float | None = None
        # The autograd-free step, where the model allows it (decided once the term names are known).
        self.fast: DenseChainStep | None = None
        self._update_params = FusedAdamUpdate.build(optimizer) if self.amp_dtype is None else None
        self._fast_candidate = None if (want or self.amp_dtype is not None) else DenseChainStep.build(net, regs)

    def __repr__(self) -> str:
        path = "hand-derived" if (self.fast or self._fast_candidate) is not None else "autograd"
        precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.amp_dtype, "fp32")
        return (
            f"StepRunner({path} step, {type(self.optimizer).__name__}, precision={precision!r}, "
            f"compile={self._compiled is not None or self._compile_pending})"
        )

    # ------------------------------------------------------------------ the objective
    def _objective(self, xb: torch.Tensor, wb: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Total loss and the detached float32 vector of its terms (in ``self.keys`` order)."""
        if self.amp_dtype is not None:
            with torch.autocast(self.device_type, dtype=self.amp_dtype):
                total, terms = self.net.loss_terms(xb, wb, self.regs, training=True)
        else:
            total, terms = self.net.loss_terms(xb, wb, self.regs, training=True)
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
        buffers = [(b, b.clone()) for b in self.net.graph.buffers()]
        with torch.no_grad(), torch.random.fork_rng(devices=cuda):
            _, terms = self.net.loss_terms(xb, wb, self.regs, training=True)
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
        if self._fast_candidate is not None and self._fast_candidate.keys == self.keys:
            self.fast = self._fast_candidate
            log.debug("training with the hand-derived dense step (aekit.fused)")
        self._fast_candidate = None

    def gradients(self, xb: torch.Tensor, wb: torch.Tensor | None) -> torch.Tensor | None:
        """Every parameter's ``.grad`` written by the hand-derived step, and the loss terms, shape
        (len(keys),); None (nothing done) where the model needs autograd.  No optimizer step: this
        is the objective of an L-BFGS closure.
        """
        if self.keys is None:
            self._choose(xb, wb)
        return None if self.fast is None else self.fast(xb, wb)

    def __call__(self, xb: torch.Tensor, wb: torch.Tensor | None) -> torch.Tensor:
        """One optimizer step on a batch; returns the detached loss terms, shape (len(keys),)."""
        if self.keys is None:
            self._choose(xb, wb)
        if self.fast is not None:
            values = self.fast(xb, wb)  # writes every .grad: no zero_grad needed
            self.update()
            return values
        if self._compile_pending:
            self._try_compile()
        self.optimizer.zero_grad(set_to_none=True)
        total = values = None
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
                total = values = None
            if started is not None and total is not None:
                self.compile_seconds = time.perf_counter() - started
                log.info("compiled the training step in %.1f s", self.compile_seconds)
        if total is None:
            total, values = self._objective(xb, wb)
            self._backward(total)
        self.update()
        return values

    def _backward(self, total: torch.Tensor) -> None:
        if self.scaler is not None:
            self.scaler.scale(total).backward()
        else:
            total.backward()

    def update(self) -> None:
        """Clip the gradients (``max_gradient_norm``) and step the optimizer (through the loss scaler in fp16)."""
        if self.scaler is not None:
            if self.max_gradient_norm is not None:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.params, self.max_gradient_norm, foreach=True)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            return
        if self.max_gradient_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.max_gradient_norm, foreach=True)
        if self._update_params is not None:
            self._update_params()
        else:
            self.optimizer.step()
