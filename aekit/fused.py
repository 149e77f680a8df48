"""A hand-derived training step for dense autoencoders: the fast path of training.

Most autoencoders people train are a chain of dense layers (some tied) with
elementwise activations, a mean squared (or absolute, or cross-entropy) error
and perhaps L1/L2 penalties.  For these the backward pass is short enough to
write out: :class:`DenseChainStep` runs the forward pass into preallocated
buffers, in place where it can, and writes each gradient straight into the
parameter's ``.grad`` with one matrix product (``out=``), with no autograd
graph, no temporary tensors per step and no gradient zeroing.  On two CPU cores
this trains the 784-256-784 sigmoid autoencoder about 1.4x faster than the same
step through autograd (see ``BENCHMARKS.md``); the matrix products are the same.

The step is used automatically by :class:`aekit.steps.StepRunner` whenever
:func:`DenseChainStep.build` accepts the model and its regularizers (float32,
not compiled); anything else -- convolutions, batch norm, noise, dropout,
sparsity, contractive penalties, weighted losses, other activations --
goes through autograd as before.  The tests check its gradients against autograd
for every supported activation, loss and penalty.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F

from . import regularizers as reg
from .layers import Dense, Tied

__all__ = ["ACTIVATIONS", "LOSSES", "DenseChainStep"]

log = logging.getLogger(__name__)

# Each activation applied in place, and its derivative from the *output*, so
# the pre-activation need not be kept (one buffer per layer).
_aten = torch.ops.aten
ACTIVATIONS: dict[str, tuple[Callable, Callable | None]] = {
    "linear": (lambda t: None, None),
    "sigmoid": (torch.sigmoid_, lambda g, out: _aten.sigmoid_backward(g, out)),
    "logistic": (torch.sigmoid_, lambda g, out: _aten.sigmoid_backward(g, out)),
    "tanh": (torch.tanh_, lambda g, out: _aten.tanh_backward(g, out)),
    "relu": (torch.relu_, lambda g, out: _aten.threshold_backward(g, out, 0.0)),
    "rect:max": (torch.relu_, lambda g, out: _aten.threshold_backward(g, out, 0.0)),
}
LOSSES = ("mse", "mae", "bce")


class _Link:
    """One dense or tied layer of the chain, with what its backward pass needs."""

    def __init__(self, layer: Dense | Tied, hidden_l1: float | None, hidden_l2: float | None):
        self.name = layer.name
        self.tied = isinstance(layer, Tied)
        self.w = layer.partner.w if self.tied else layer.w  # tied: the partner's (n_out, n_in) weight
        self.b = layer.b
        self.act_name = layer.activation.parts[0]
        self.activate, self.derivative = ACTIVATIONS[self.act_name]
        self.size = layer.b.shape[0]
        self.hidden_l1, self.hidden_l2 = hidden_l1, hidden_l2


class DenseChainStep:
    """Forward, loss, penalties and exact gradients of a dense chain, without autograd.

    Build it with :meth:`build`; calling it on a batch writes every parameter's
    ``.grad`` (the optimizer steps afterwards) and returns the loss terms.

    Parameters
    ----------
    links : list of _Link
        The layers from the first hidden one to the output.
    loss : str
        ``'mse'``, ``'mae'`` or ``'bce'`` (the last only with a sigmoid output,
        computed from the pre-activation); also the term's name.
    loss_weight : float
        Its weight in the total loss.
    weight_penalties : list of (parameter, power, lambda)
        ``weight_l1`` (power 1) and ``weight_l2`` (power 2) terms.
    keys : list of str
        The names of the returned terms, in order.
    """

    def __init__(self, links: list[_Link], loss: str, loss_weight: float,
                 weight_penalties: list[tuple[torch.nn.Parameter, int, float]], keys: list[str]):
        self.links = links
        self.loss, self.loss_weight = loss, loss_weight
        self.weight_penalties = weight_penalties
        self.keys = keys
        self._buffers: dict[tuple[int, torch.device], list[torch.Tensor]] = {}

    # ------------------------------------------------------------------ eligibility
    @classmethod
    def build(cls, net, regs: reg.Regularizers) -> DenseChainStep | None:
        """The fast step for ``net`` trained with ``regs``, or None where autograd is needed."""
        graph = net.graph
        names = list(graph.layers)
        if len(graph.input_shape) != 1 or net.weighted or names[-1] != graph.output_name:
            return None
        if (regs.input_noise or regs.input_dropout or regs.hidden_noise or regs.hidden_dropout or regs.sparsity
                or regs.contractive):
            return None
        losses = net._losses
        if len(losses) != 1 or losses[0].name not in LOSSES or losses[0].output != graph.output_name:
            return None
        hidden_l1 = reg.match(regs.hidden_l1, graph.hidden_names)
        hidden_l2 = reg.match(regs.hidden_l2, graph.hidden_names)
        links = []
        for previous, name in zip(names, names[1:]):
            layer = graph.layers[name]
            if (type(layer) not in (Dense, Tied) or graph.sources[name] != previous or layer.norm is not None
                    or len(layer.activation.parts) != 1 or layer.activation.parts[0] not in ACTIVATIONS):
                return None
            links.append(_Link(layer, hidden_l1.get(name), hidden_l2.get(name)))
        params = [p for link in links for p in ((link.b,) if link.tied else (link.w, link.b))]
        if {id(p) for p in params} != {id(p) for p in net.params} or not all(p.requires_grad for p in params):
            return None
        loss = losses[0].name
        if loss == "bce" and links[-1].act_name not in ("sigmoid", "logistic"):
            return None  # clamped probabilities: leave them to autograd
        # The weight penalties and term names exactly as Autoencoder.loss_terms makes them.
        weights = {n.split(".", 1)[1]: p for n, p in graph.named_parameters() if p.dim() > 1}
        penalties, keys = [], [loss, "err"]
        for key, power in (("weight_l1", 1), ("weight_l2", 2)):
            if getattr(regs, key):
                keys.append(key)
                chosen = reg.match(getattr(regs, key), weights)
                penalties += [(weights[n], power, float(lam)) for n, lam in chosen.items() if lam]
        for key, table in (("hidden_l1", hidden_l1), ("hidden_l2", hidden_l2)):
            if table:
                keys.append(key)
        keys.append("loss")
        return cls(links, loss, losses[0].weight, penalties, keys)

    # ------------------------------------------------------------------ the step
    def _outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        # One activation buffer per layer, plus the output's pre-activation (bce) and
        # the output gradient, reused every step: no allocation, and warm in the cache.
        key = (x.shape[0], x.device, x.dtype)
        if key not in self._buffers:
            if len(self._buffers) > 4:
                self._buffers.clear()  # batch sizes change rarely (the short last batch)
            sizes = [link.size for link in self.links] + [self.links[-1].size] * 2
            self._buffers[key] = [x.new_empty(x.shape[0], s) for s in sizes]
        return self._buffers[key]

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
        """One forward and backward pass on ``x`` of shape (n, n_in); returns the terms, shape (len(keys),)."""
        links = self.links
        buffers = self._outputs(x)
        outs, pre_last, grad_buffer = buffers[:len(links)], buffers[-2], buffers[-1]
        # Forward: pre = a @ W + b, activated in place.
        a = x
        for link, out in zip(links, outs):
            torch.addmm(link.b, a, link.w.t() if link.tied else link.w, out=out)
            if link is links[-1] and self.loss == "bce":
                pre_last.copy_(out)
            link.activate(out)
            a = out
        # The loss and its gradient with respect to the output (or, for bce, its logits).
        y = outs[-1]
        count = y.numel()
        diff = torch.sub(y, x, out=grad_buffer)
        scale = self.loss_weight / count
        if self.loss == "mse":
            value = torch.dot(diff.view(-1), diff.view(-1)) / count
            grad, grad_is_pre = diff.mul_(2 * scale), False
        elif self.loss == "mae":
            value = diff.abs().sum() / count
            grad, grad_is_pre = diff.sign_().mul_(scale), False
        else:  # bce from logits: d/dpre = (sigmoid(pre) - x) / count
            value = F.binary_cross_entropy_with_logits(pre_last, x)
            grad, grad_is_pre = diff.mul_(scale), True
        terms = [value, value * self.loss_weight]
        # Backward through the chain, writing each gradient once (tied weights: twice, added).
        written: set[int] = set()
        hidden_terms = {"hidden_l1": None, "hidden_l2": None}
        for index in range(len(links) - 1, -1, -1):
            link, out = links[index], outs[index]
            a = x if index == 0 else outs[index - 1]
            if index < len(links) - 1:
                grad = self._hidden_penalties(link, out, grad, hidden_terms)
            if not grad_is_pre and link.derivative is not None:
                grad = link.derivative(grad, out)
            grad_is_pre = False
            self._weight_grad(link, a, grad, written)
            _set_grad(link.b, lambda g: torch.sum(grad, 0, out=g))
            if index > 0:
                grad = grad @ (link.w if link.tied else link.w.t())
        for param, power, lam in self.weight_penalties:
            param.grad.add_(param.sign() if power == 1 else param, alpha=lam * power)
        penalties = self._penalty_terms(hidden_terms, x)
        total = terms[1]
        for term in penalties:
            total = total + term
        return torch.stack([*terms, *penalties, total])

    def _hidden_penalties(self, link: _Link, out: torch.Tensor, grad: torch.Tensor,
                          hidden_terms: dict[str, torch.Tensor | None]) -> torch.Tensor:
        """Add the hidden_l1/l2 gradients to ``grad`` (d loss / d out) and record their values."""
        count = out.numel()
        for key, lam in (("hidden_l1", link.hidden_l1), ("hidden_l2", link.hidden_l2)):
            if lam is None:
                continue  # not a penalised layer
            value = (out.abs().sum() if key == "hidden_l1" else torch.dot(out.view(-1), out.view(-1))) / count
            term = lam * value
            hidden_terms[key] = term if hidden_terms[key] is None else hidden_terms[key] + term
            if lam:
                grad = grad + (out.sign() if key == "hidden_l1" else out) * (lam * (1 if key == "hidden_l1" else 2)
                                                                             / count)
        return grad

    def _penalty_terms(self, hidden_terms: dict[str, torch.Tensor | None], x: torch.Tensor) -> list[torch.Tensor]:
        extra = []
        for key in self.keys[2:-1]:
            if key in ("weight_l1", "weight_l2"):
                power = 1 if key == "weight_l1" else 2
                value = torch.zeros((), device=x.device)
                for param, p, lam in self.weight_penalties:
                    if p == power:
                        flat = param.detach().view(-1)
                        value = value + lam * (flat.abs().sum() if p == 1 else torch.dot(flat, flat))
                extra.append(value)
            else:
                term = hidden_terms[key]
                extra.append(term if term is not None else torch.zeros((), device=x.device))
        return extra

    @staticmethod
    def _weight_grad(link: _Link, a: torch.Tensor, grad: torch.Tensor, written: set[int]) -> None:
        # Dense: dW = a^T g, shape (n_in, n_out).  Tied: the partner's W (n_out, n_in) gets g^T a.
        left, right = (grad.t(), a) if link.tied else (a.t(), grad)
        if id(link.w) in written:
            link.w.grad.addmm_(left, right)
        else:
            _set_grad(link.w, lambda g: torch.mm(left, right, out=g))
            written.add(id(link.w))


def _set_grad(param: torch.nn.Parameter, write: Callable[[torch.Tensor], object]) -> None:
    """Write a gradient into ``param.grad`` (created once; zero_grad(set_to_none) may have dropped it)."""
    if param.grad is None:
        param.grad = torch.empty_like(param)
    write(param.grad)
