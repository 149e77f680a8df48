"""Optimizers by name (theanets' algorithms on ``torch.optim``) and a lean fused Adam update."""

from __future__ import annotations

from typing import cast

import torch

__all__ = ["ALGORITHMS", "DEFAULT_LEARNING_RATE", "MOMENTUM_ALGORITHMS", "FusedAdamUpdate", "make_optimizer"]

ALGORITHMS = ("sgd", "nag", "rmsprop", "adam", "adagrad", "adadelta", "rprop", "lbfgs")
MOMENTUM_ALGORITHMS = ("sgd", "nag", "rmsprop")
DEFAULT_LEARNING_RATE = {
    "sgd": 1e-2,
    "nag": 1e-2,
    "rmsprop": 1e-3,
    "adam": 1e-3,
    "adagrad": 1e-2,
    "adadelta": 1.0,
    "rprop": 1e-2,
    "lbfgs": 1.0,
}


def make_optimizer(algo: str, params: list[torch.nn.Parameter], lr: float, momentum: float) -> torch.optim.Optimizer:
    """The ``torch.optim`` optimizer for ``algo``, fused where the build supports it."""
    if algo == "adam":
        try:
            return torch.optim.Adam(params, lr=lr, fused=True)
        except (RuntimeError, TypeError, ValueError):
            return torch.optim.Adam(params, lr=lr, foreach=True)
    if algo in ("sgd", "nag"):
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=algo == "nag" and momentum > 0)
    if algo == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=momentum if momentum < 1 else 0.0)
    if algo == "adagrad":
        return torch.optim.Adagrad(params, lr=lr)
    if algo == "adadelta":
        return torch.optim.Adadelta(params, lr=lr)
    if algo == "rprop":
        return torch.optim.Rprop(params, lr=lr)
    # One iteration per epoch; max_eval must be explicit: torch derives it as max_iter * 5 // 4 = 1,
    # which leaves the strong-Wolfe line search no evaluations, and L-BFGS then stalls for good.
    return torch.optim.LBFGS(params, lr=lr, max_iter=1, max_eval=25, history_size=20, line_search_fn="strong_wolfe")


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
        """The fast update for ``optimizer``, or None unless it is a plain fused ``torch.optim.Adam``.

        Plain means one parameter group, scalar hyper-parameters, and none of amsgrad, maximize,
        differentiable, capturable, decoupled weight decay or foreach.

        Parameters
        ----------
        optimizer : torch.optim.Optimizer

        Returns
        -------
        FusedAdamUpdate or None
        """
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

    def _hooked(self) -> bool:
        # Step hooks registered with torch.optim (on this optimizer, or for all optimizers) run in
        # optimizer.step(): with any of them, take that path so that none is skipped.
        from torch.optim import optimizer as torch_optimizer

        return bool(
            getattr(self.optimizer, "_optimizer_step_pre_hooks", None)
            or getattr(self.optimizer, "_optimizer_step_post_hooks", None)
            or getattr(torch_optimizer, "_global_optimizer_pre_hooks", None)
            or getattr(torch_optimizer, "_global_optimizer_post_hooks", None)
        )

    def __call__(self) -> None:
        """One Adam step, as ``optimizer.step()`` would take it (torch.optim's step hooks included).

        The first call (and any after the optimizer's state was cleared or replaced, or with a
        parameter that has no gradient) goes through ``optimizer.step()`` itself.
        """
        params = self.params
        if self._hooked() or self._state is None or not self._current() or any(p.grad is None for p in params):
            self.optimizer.step()
            self._state = self._gather()
            return
        exp_avgs, exp_avg_sqs, steps = self._state
        group = self.group
        beta1, beta2 = group["betas"]
        torch._foreach_add_(steps, 1)
        torch._fused_adam_(
            params,
            cast(list[torch.Tensor], [p.grad for p in params]),  # none is None: checked above
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
