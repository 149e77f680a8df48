"""A hand-derived training step for dense autoencoders: the fast path of training.

Most autoencoders people train are a chain of dense layers (some tied) with
elementwise activations (linear, sigmoid, tanh, relu, leaky-relu, elu, softplus,
whose derivatives follow from their outputs; gelu, prelu and the clamps rect:min
and rect:minmax, whose pre-activations are kept), a mean squared, absolute or
cross-entropy error (or a weighted sum of them) and perhaps L1/L2 penalties,
UFLDL's KL sparsity penalty, a contractive penalty on a first hidden layer (in
closed form), and denoising corruption (Gaussian noise and dropout on the input
or hidden layers).  For these
the backward pass is short enough to write out: :class:`DenseChainStep` runs the
forward pass into preallocated buffers, in place where it can, and writes each
gradient straight into the parameter's ``.grad`` with one matrix product
(``out=``), with no autograd graph, no large temporary tensors per step and no
gradient zeroing.  On this project's two CPU cores it took the 784-256-784
sigmoid autoencoder from 15.8k to 19.9k samples/s in the speed benchmark
(``BENCHMARKS.md``, separate runs); the matrix products are the same as autograd's.

The step is used automatically by :class:`aekit.train.step.StepRunner` whenever
:func:`DenseChainStep.build` accepts the model and its regularizers (float32,
not compiled; images into a dense first layer included, flattened as that
layer flattens them; weighted losses included); anything else -- convolutions,
batch norm, contractive penalties on deeper layers or with input corruption,
other losses (kl, gll, one loss twice), other activations (softmax,
normalisations, compositions) --
goes through autograd as before.  The tests check its gradients against autograd
for every supported activation, loss and penalty.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F

from ..model.activations import LEAKY_RELU_SLOPE, output_range
from ..model.layers.dense import Dense, Tied
from ..objective import penalties as reg
from ..objective.losses import _EPS as LOSS_EPS
from ..objective.losses import _reduce as reduce_loss
from ..objective.objective import Objective

__all__ = ["ACTIVATIONS", "LOSSES", "PRE_ACTIVATIONS", "DenseChainStep"]

# Each activation applied in place, and its derivative from the *output*, so the
# pre-activation need not be kept: ``derivative(grad, out, result)`` writes
# d loss / d pre into ``result`` (which may be ``grad`` itself).
_aten = torch.ops.aten
_mse_backward = _aten.mse_loss_backward.grad_input
ACTIVATIONS: dict[str, tuple[Callable, Callable | None]] = {
    "linear": (lambda t: None, None),
    "sigmoid": (torch.sigmoid_, lambda g, out, r: _aten.sigmoid_backward.grad_input(g, out, grad_input=r)),
    "tanh": (torch.tanh_, lambda g, out, r: _aten.tanh_backward.grad_input(g, out, grad_input=r)),
    "relu": (torch.relu_, lambda g, out, r: _aten.threshold_backward.grad_input(g, out, 0.0, grad_input=r)),
}
ACTIVATIONS["logistic"] = ACTIVATIONS["sigmoid"]
ACTIVATIONS["rect:max"] = ACTIVATIONS["relu"]


def _softplus_derivative(grad: torch.Tensor, out: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
    # softplus' = sigmoid(pre) = 1 - exp(-out); expm1 keeps it accurate where out is small.
    factor = torch.neg(out).expm1_().neg_()
    return torch.mul(grad, factor, out=result)


# Softplus at torch's default threshold (20: linear above it, as F.softplus); ELU with alpha 1;
# both derivatives from the output, which determines the pre-activation's sign (elu_backward
# and leaky_relu_backward take the result for exactly this).
ACTIVATIONS["softplus"] = (lambda t: _aten.softplus.out(t, 1, 20, out=t), _softplus_derivative)
ACTIVATIONS["elu"] = (F.elu_, lambda g, out, r: _aten.elu_backward.grad_input(g, 1.0, 1, 1, True, out, grad_input=r))
ACTIVATIONS["leaky-relu"] = (
    lambda t: F.leaky_relu_(t, LEAKY_RELU_SLOPE),
    lambda g, out, r: _aten.leaky_relu_backward.grad_input(g, out, LEAKY_RELU_SLOPE, True, grad_input=r),
)
# Activations whose derivative needs the pre-activation: it is kept in a buffer of its own.
# ``activate(pre, out)`` writes the output; ``derivative(grad, pre, result)`` as above.
# The clamps pass the gradient where min <= pre <= max, bounds included, as torch.clamp does (the
# output cannot tell pre == 1 from pre > 1).
PRE_ACTIVATIONS: dict[str, tuple[Callable, Callable]] = {
    "gelu": (
        lambda pre, out: _aten.gelu.out(pre, approximate="none", out=out),
        lambda g, pre, r: _aten.gelu_backward.grad_input(g, pre, approximate="none", grad_input=r),
    ),
    "rect:min": (
        lambda pre, out: torch.clamp(pre, max=1.0, out=out),
        lambda g, pre, r: torch.mul(g, pre.le(1.0), out=r),
    ),
    "rect:minmax": (
        lambda pre, out: torch.clamp(pre, 0.0, 1.0, out=out),
        lambda g, pre, r: torch.mul(g, pre.ge(0.0).logical_and_(pre.le(1.0)), out=r),
    ),
}
LOSSES = ("mse", "mae", "bce")


def _prelu(leak: torch.Tensor) -> tuple[Callable, Callable]:
    """``(activate, derivative)`` of theanets' prelu with the per-unit ``leak`` (units,), as in :data:`PRE_ACTIVATIONS`.

    The derivative also writes ``leak.grad``.  As ``F.prelu``: ``pre`` where ``pre > 0``, else ``leak * pre``;
    at ``pre == 0`` the input's gradient is ``leak * g`` and the leak's is 0.
    """

    def activate(pre: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        torch.mul(pre, leak, out=out)
        return torch.where(pre > 0, pre, out, out=out)

    def derivative(g: torch.Tensor, pre: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        # The leak's gradient first: ``result`` may be ``g`` itself.
        torch.sum(g * pre.clamp(max=0.0), 0, out=leak.grad)
        return torch.where(pre > 0, g, g * leak, out=result)

    return activate, derivative


class _Link:
    """One dense or tied layer of the chain, with what its backward pass needs."""

    def __init__(self, layer: Dense | Tied, hidden_l1: float | None, hidden_l2: float | None):
        self.name = layer.name
        self.tied = isinstance(layer, Tied)
        self.w = cast(Dense, layer.partner).w if isinstance(layer, Tied) else layer.w  # tied: (n_out, n_in)
        self.b = layer.b
        self.act_name = layer.activation.parts[0]
        self.leak = layer.activation.leak if self.act_name == "prelu" else None  # prelu's learnable leak
        self.keeps_pre = self.act_name in PRE_ACTIVATIONS or self.leak is not None
        if self.leak is None:
            self.activate, self.derivative = (PRE_ACTIVATIONS if self.keeps_pre else ACTIVATIONS)[self.act_name]
        else:
            self.activate, self.derivative = _prelu(self.leak)
        self.size = layer.b.shape[0]
        self.activation = layer.activation  # the module, for the contractive penalty's f'(pre)
        self.hidden_l1, self.hidden_l2 = hidden_l1, hidden_l2
        # Training noise on this (hidden) layer's output, and its KL sparsity weight (beta).
        self.noise, self.dropout, self.sparsity = 0.0, 0.0, 0.0
        # The contractive weight of a first layer (its pre-activation is then kept).
        self.contractive = 0.0
        self.is_last = False  # set by DenseChainStep.build
        self.accumulate_w = False  # tied weight already written by a later layer: add, do not overwrite

    def __repr__(self) -> str:
        return f"_Link({self.name}:{self.size} {self.act_name}{' tied' if self.tied else ''})"

    @property
    def params(self) -> list[torch.nn.Parameter]:
        """The parameters whose gradients this link writes (a tied link: not its partner's W)."""
        own = [self.b] if self.tied else [self.w, self.b]
        return own if self.leak is None else [*own, self.leak]


class DenseChainStep:
    """Forward, loss, penalties and exact gradients of a dense chain, without autograd.

    Build it with :meth:`build`; calling it on a batch writes every parameter's
    ``.grad`` (the optimizer steps afterwards) and returns the loss terms.

    Parameters
    ----------
    links : list of _Link
        The layers from the first hidden one to the output.
    losses : list of (str, float)
        Each loss on the output and its weight in the total: ``'mse'``, ``'mae'``
        or ``'bce'`` (the last only with a sigmoid output, computed from the
        pre-activation), at most once each; the names are also the terms' names.
    weight_penalties : list of (parameter, power, coefficient)
        The ``weight_l1`` (power 1) and ``weight_l2`` (power 2) terms ``c * sum |w|**power`` (``weight_coefficients``).
    keys : list of str
        The names of the returned terms, in order.
    input_noise, input_dropout : float
        Gaussian noise std and dropout probability on the input (denoising).
    sparsity_target : float
        UFLDL's rho, for the links with a KL sparsity weight.
    """

    def __init__(
        self,
        links: list[_Link],
        losses: list[tuple[str, float]],
        weight_penalties: list[tuple[torch.nn.Parameter, int, float]],
        keys: list[str],
        input_noise: float = 0.0,
        input_dropout: float = 0.0,
        sparsity_target: float = 0.05,
    ):
        self.links = links
        self.losses = losses
        self.bce = any(name == "bce" for name, _ in losses)  # its gradient is with respect to the logits
        self.weight_penalties = weight_penalties
        self.keys = keys
        self.input_noise, self.input_dropout = input_noise, input_dropout
        self.sparsity_target = sparsity_target
        self._buffers: dict[tuple, _Workspace] = {}
        self._ones: dict[tuple, torch.Tensor] = {}

    def __repr__(self) -> str:
        chain = " -> ".join(
            f"{link.name}:{link.size} {link.act_name}{' tied' if link.tied else ''}" for link in self.links
        )
        return f"DenseChainStep({chain}; terms {', '.join(self.keys)})"

    def _one(self, x: torch.Tensor) -> torch.Tensor:
        """A 0-d tensor 1 like ``x``: the ``grad_output`` of the MSE backward (made once per device)."""
        key = (x.device, x.dtype)
        one = self._ones.get(key)
        if one is None:
            one = self._ones[key] = torch.ones((), device=x.device, dtype=x.dtype)
        return one

    # ------------------------------------------------------------------ eligibility
    @classmethod
    def build(cls, objective: Objective) -> DenseChainStep | None:
        """The fast step for ``objective`` (its graph, losses and keywords), or None where autograd is needed."""
        graph, regs = objective.graph, objective.regs
        if regs.binarize or regs.importance_samples > 1:
            return None  # the data are resampled (or repeated) inside the Objective: autograd's path
        names = list(graph.layers)
        # An image-shaped input is fine: the first (dense) layer flattens it, and so does the step.
        if names[-1] != graph.output_name:
            return None
        losses = objective.losses
        loss_names = [term.name for term in losses]
        if (
            len(set(loss_names)) != len(loss_names)
            or set(loss_names) - set(LOSSES)
            or any(term.output != graph.output_name for term in losses)
        ):
            return None
        hidden_l1 = reg.hidden_coefficients(regs.hidden_l1, graph.hidden_names, regs.scale)
        hidden_l2 = reg.hidden_coefficients(regs.hidden_l2, graph.hidden_names, regs.scale)
        links = []
        known = {*ACTIVATIONS, *PRE_ACTIVATIONS, "prelu"}
        for previous, name in zip(names, names[1:]):
            layer = graph.layers[name]
            if (
                type(layer) not in (Dense, Tied)
                or graph.sources[name] != previous
                or layer.norm is not None
                or len(layer.activation.parts) != 1
                or layer.activation.parts[0] not in known
                or bool(getattr(layer, "pre_bias_of", None))  # the SAE recipe's input shift: autograd's path
            ):
                return None
            links.append(_Link(cast(Dense | Tied, layer), hidden_l1.get(name), hidden_l2.get(name)))  # checked above
        links[-1].is_last = True
        if regs.contractive:
            # The closed form of aekit.objective.jacobian.jacobian_norm, at the clean input: only on the first
            # layer (on the input) and without input corruption; anything else is autograd's job.
            chosen = reg.match(regs.contractive, graph.hidden_names)
            if regs.input_noise or regs.input_dropout or set(chosen) - {links[0].name} or links[0].tied:
                return None
            links[0].contractive = chosen.get(links[0].name, 0.0)
        # Noise, dropout and sparsity exactly where the Objective applies them: hidden
        # layers only, sparsity only on those whose output lies in [0, 1].
        noise = reg.match(regs.hidden_noise, graph.hidden_names)
        drop = reg.match(regs.hidden_dropout, graph.hidden_names)
        sparse = reg.match(regs.sparsity, graph.hidden_names)
        for link in links:
            link.noise, link.dropout = noise.get(link.name, 0.0), drop.get(link.name, 0.0)
            low, high = output_range(graph.layers[link.name].spec.activation)
            link.sparsity = sparse.get(link.name, 0.0) if low >= 0 and high <= 1 else 0.0
        seen: set[int] = set()
        for link in reversed(links):  # the backward order: the first to write a weight overwrites it
            link.accumulate_w = id(link.w) in seen
            seen.add(id(link.w))
        params = [p for link in links for p in link.params]
        if {id(p) for p in params} != {id(p) for p in graph.parameters()} or not all(p.requires_grad for p in params):
            return None
        if "bce" in loss_names and links[-1].act_name not in ("sigmoid", "logistic"):
            return None  # clamped probabilities: leave them to autograd
        # The weight penalties and term names exactly as the Objective makes them.
        weights = {n.split(".", 1)[1]: p for n, p in graph.named_parameters() if p.dim() > 1}
        penalties, keys = [], [*loss_names, "err"]
        for key, power in (("weight_l1", 1), ("weight_l2", 2)):
            if getattr(regs, key):
                keys.append(key)
                chosen = reg.weight_coefficients(getattr(regs, key), weights, regs.scale)
                penalties += [(weights[n], power, float(c)) for n, c in chosen.items() if c]
        for key, table in (
            ("hidden_l1", hidden_l1),
            ("hidden_l2", hidden_l2),
            ("sparsity", regs.sparsity),
            ("contractive", regs.contractive),
        ):
            if table:
                keys.append(key)
        keys.append("loss")
        return cls(
            links,
            [(term.name, term.weight) for term in losses],
            penalties,
            keys,
            input_noise=regs.input_noise,
            input_dropout=regs.input_dropout,
            sparsity_target=regs.sparsity_target,
        )

    # ------------------------------------------------------------------ the step
    def _workspace(self, x: torch.Tensor) -> _Workspace:
        """The buffers of a batch of ``x``'s size: reused every step, so no allocation per step."""
        key = (x.shape[0], x.device, x.dtype)
        space = self._buffers.get(key)
        if space is None:
            if len(self._buffers) > 4:
                self._buffers.clear()  # batch sizes change rarely (the short last batch)
            space = self._buffers[key] = _Workspace(x, self)
        return space

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
        """One forward and backward pass on ``x``, (n, n_in) or (n, C, H, W); returns the terms, shape (len(keys),).

        Images go into a dense first layer.  Every parameter's ``.grad`` is overwritten (not accumulated).
        Noise and dropout draw from torch's global generator in the order autograd's path draws them (input
        noise, input dropout, then each hidden layer's noise and dropout), so both paths see the same corruption.
        """
        x = x.reshape(x.shape[0], -1)  # images (n, C, H, W) into a dense first layer: rows, as it flattens them
        space = self._workspace(x)
        for link in self.links:  # created once; zero_grad(set_to_none=True) elsewhere may drop them
            for param in (link.w, *link.params):
                if param.grad is None:
                    param.grad = torch.empty_like(param)
        inputs, posts = self._forward(x, space)
        values = self._losses(x, w, space)
        err = values[0]
        if len(values) > 1 or self.losses[0][1] != 1:
            err = cast(torch.Tensor, sum(value * weight for value, (_, weight) in zip(values, self.losses)))
        hidden_terms = self._backward(space, inputs, posts)
        for param, power, lam in self.weight_penalties:
            cast(torch.Tensor, param.grad).add_(param.sign() if power == 1 else param, alpha=lam * power)
        if len(self.keys) == len(values) + 2:  # [losses..., 'err', 'loss']: no penalties
            return torch.stack([*values, err, err])
        penalties = self._penalty_terms(hidden_terms, x)
        total = err
        for term in penalties:
            total = total + term
        return torch.stack([*values, err, *penalties, total])

    def _forward(self, x: torch.Tensor, space: _Workspace) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Run the chain on ``x`` (n, n_in) into ``space``; return each layer's input and (corrupted) output.

        Each layer computes pre = a @ W + b and activates it in place; training noise
        goes into a separate buffer where needed, as the derivative wants the clean
        activation.
        """
        a = space.corrupt(x, self.input_noise, self.input_dropout, space.x_in, space.x_mask)
        inputs, posts = [], []
        for index, (link, out, kept) in enumerate(zip(self.links, space.outs, space.pres)):
            inputs.append(a)
            pre = out if kept is None else kept
            torch.addmm(link.b, a, link.w.t() if link.tied else link.w, out=pre)
            if link.is_last and self.bce:
                cast(torch.Tensor, space.logits).copy_(pre)
            if link.keeps_pre:
                link.activate(pre, out)
            else:
                if pre is not out:  # kept for the contractive penalty
                    out.copy_(pre)
                link.activate(out)
            a = space.corrupt(out, link.noise, link.dropout, space.posts[index], space.masks[index])
            posts.append(a)
        return inputs, posts

    def _losses(self, x: torch.Tensor, w: torch.Tensor | None, space: _Workspace) -> list[torch.Tensor]:
        """Each loss (before its weight), in ``self.losses`` order.

        The weighted gradients of the MSE and MAE terms with respect to the output are
        summed into the output's gradient buffer; the cross-entropy's, with respect to
        the logits, goes into the same buffer when it is the only loss and into
        ``space.logit_grad`` otherwise (the backward pass adds it after the sigmoid's
        derivative).
        """
        out, grad = space.outs[-1], space.grads[-1]
        w = None if w is None else w.reshape(x.shape)
        values, written = [], False
        for name, weight in self.losses:
            if name == "bce" and len(self.losses) > 1:
                into = cast(torch.Tensor, space.logit_grad)
            elif written:  # a second loss on the output: computed aside, then added
                into = cast(torch.Tensor, space.scratch)
            else:
                into, written = grad, True
            if w is None:
                values.append(self._loss(name, weight, out, x, space.logits, into))
            else:
                values.append(self._weighted_loss(name, weight, out, x, w, space.logits, into))
            if into is space.scratch:
                grad.add_(into)
        return values

    def _loss(
        self,
        name: str,
        weight: float,
        out: torch.Tensor,
        x: torch.Tensor,
        logits: torch.Tensor | None,
        into: torch.Tensor,
    ) -> torch.Tensor:
        """The mean loss ``name`` of ``out`` (n, units) against ``x``.

        Its gradient times ``weight`` goes into ``into`` (for bce: with respect to the logits).
        """
        count = into.numel()
        if name == "mse":
            # One pass for the gradient, 2 (out - x) / count (the same floats as subtracting and
            # then scaling), and the error read back from it: sum (out - x)^2 = |grad|^2 count^2 / 4.
            _mse_backward(self._one(x), out, x, 1, grad_input=into)
            flat = into.view(-1)
            value = torch.dot(flat, flat).mul_(count / 4)
            if weight != 1:
                into.mul_(weight)
        elif name == "mae":
            torch.sub(out, x, out=into)
            value = into.abs().sum().div_(count)
            into.sign_().mul_(weight / count)
        else:  # d/dlogits of the mean cross-entropy: (sigmoid(logits) - x) / count
            torch.sub(out, x, out=into)
            value = F.binary_cross_entropy_with_logits(cast(torch.Tensor, logits), x)
            into.mul_(weight / count)
        return value

    @staticmethod
    def _weighted_loss(
        name: str,
        weight: float,
        out: torch.Tensor,
        x: torch.Tensor,
        w: torch.Tensor,
        logits: torch.Tensor | None,
        into: torch.Tensor,
    ) -> torch.Tensor:
        """The weighted loss ``sum(w * err) / sum(w)``, as :mod:`aekit.losses` reduces it.

        Its gradient times ``weight`` is written into ``into`` (for bce: with respect to the logits).
        """
        torch.sub(out, x, out=into)  # out - x; for bce sigmoid(logits) - x, the logits' gradient
        if name == "mse":
            value = reduce_loss(into.square(), w)
            into.mul_(2)
        elif name == "mae":
            value = reduce_loss(into.abs(), w)
            into.sign_()
        else:
            value = reduce_loss(F.binary_cross_entropy_with_logits(cast(torch.Tensor, logits), x, reduction="none"), w)
        into.mul_(w).mul_(weight).div_(w.sum().clamp_min(LOSS_EPS))
        return value

    def _backward(
        self, space: _Workspace, inputs: list[torch.Tensor], posts: list[torch.Tensor]
    ) -> dict[str, list[torch.Tensor]]:
        """Write every ``.grad`` from the output's gradient in ``space``, last layer first.

        Each gradient is written once (a tied weight: twice, added).  Returns the hidden penalties' values.
        """
        links, outs, grads = self.links, space.outs, space.grads
        hidden_terms: dict[str, list[torch.Tensor]] = {
            key: [] for key in ("hidden_l1", "hidden_l2", "sparsity", "contractive")
        }
        contractive = None
        if links[0].contractive:  # from the first layer's kept pre-activation
            contractive = self._contractive(links[0], cast(torch.Tensor, space.pres[0]), hidden_terms)
        for index in range(len(links) - 1, -1, -1):
            link, out, grad = links[index], outs[index], grads[index]
            if not link.is_last:  # grad is d loss / d (corrupted) output
                self._hidden_penalties(link, posts[index], grad, hidden_terms)
                if link.dropout:
                    grad.mul_(cast(torch.Tensor, space.masks[index]))  # additive noise passes the gradient as it is
            logits_only = link.is_last and self.bce and len(self.losses) == 1  # grad is d loss / d pre already
            if link.derivative is not None and not logits_only:
                # In place: d loss / d pre, from the output (or the kept pre-activation).
                link.derivative(grad, space.pres[index] if link.keeps_pre else out, grad)
            if link.is_last and self.bce and not logits_only:
                grad.add_(cast(torch.Tensor, space.logit_grad))
            if index == 0 and contractive is not None:
                grad.add_(contractive[0])
            if index > 0:
                # The input's gradient first, while ``grad`` is still in cache from the pass that
                # wrote it: 2-4% faster per step than after the (larger) weight gradient in
                # alternated runs of the 784-256-784 model.  W itself is not updated until the
                # optimizer steps, so the order does not change any value.
                torch.mm(grad, link.w if link.tied else link.w.t(), out=grads[index - 1])
            a = inputs[index]
            if link.tied:  # the partner's W (n_out, n_in) gets g^T a
                left, right = grad.t(), a
            else:  # dW = a^T g, shape (n_in, n_out)
                left, right = a.t(), grad
            if link.accumulate_w:
                cast(torch.Tensor, link.w.grad).addmm_(left, right)
            else:
                torch.mm(left, right, out=link.w.grad)
            torch.sum(grad, 0, out=link.b.grad)
        if contractive is not None:
            cast(torch.Tensor, links[0].w.grad).add_(contractive[1])
            if links[0].leak is not None:  # prelu: the slope below zero is the leak itself
                cast(torch.Tensor, links[0].leak.grad).add_(contractive[2])
        return hidden_terms

    @staticmethod
    def _contractive(
        link: _Link, pre: torch.Tensor, hidden_terms: dict[str, list[torch.Tensor]]
    ) -> tuple[torch.Tensor, ...]:
        """The contractive penalty of the first layer in closed form, and its gradients.

        As :func:`aekit.regularizers.dense_jacobian_norm`; records its value and returns its gradients with
        respect to the pre-activation (n, units), to W (n_in, units) and, for prelu, to the leak (units,).
        A small autograd graph: f'' comes from the activation's own derivative, for every supported activation.
        """
        with torch.enable_grad():
            pre = pre.detach().requires_grad_(True)
            w = link.w.detach().requires_grad_(True)
            slope = torch.func.jvp(link.activation, (pre,), (torch.ones_like(pre),))[1]
            value = link.contractive * reg.dense_jacobian_norm(slope, w)
            # A linear layer's slope is the constant 1: the value does not depend on pre (zero gradient).
            grads = torch.autograd.grad(
                value, (pre, w) if link.leak is None else (pre, w, link.leak), allow_unused=True, materialize_grads=True
            )
        hidden_terms["contractive"].append(value.detach())
        return grads

    def _hidden_penalties(
        self, link: _Link, out: torch.Tensor, grad: torch.Tensor, hidden_terms: dict[str, list[torch.Tensor]]
    ) -> None:
        """Add the hidden_l1/l2 and sparsity gradients to ``grad`` (d loss / d out) in place; record their values."""
        count = out.numel()
        if link.hidden_l1 is not None:
            hidden_terms["hidden_l1"].append(link.hidden_l1 * reg.hidden_penalty(out, 1))
            if link.hidden_l1:
                grad.add_(out.sign(), alpha=link.hidden_l1 / count)
        if link.hidden_l2 is not None:
            hidden_terms["hidden_l2"].append(link.hidden_l2 * reg.hidden_penalty(out, 2))
            if link.hidden_l2:
                grad.add_(out, alpha=2 * link.hidden_l2 / count)
        if link.sparsity:
            rho = self.sparsity_target
            hidden_terms["sparsity"].append(link.sparsity * reg.kl_sparsity(out, rho))
            grad.add_(reg.kl_sparsity_grad(out, rho), alpha=link.sparsity)

    def _penalty_terms(self, hidden_terms: dict[str, list[torch.Tensor]], x: torch.Tensor) -> list[torch.Tensor]:
        """The penalty terms in ``self.keys`` order (between 'err' and 'loss')."""
        extra = []
        for key in self.keys[len(self.losses) + 1 : -1]:  # after the losses and 'err', before 'loss'
            parts = hidden_terms.get(key)
            if parts is None:  # weight_l1 / weight_l2
                power = 1 if key == "weight_l1" else 2
                parts = [c * reg.weight_norm(param, p) for param, p, c in self.weight_penalties if p == power]
            extra.append(torch.stack(parts).sum() if parts else torch.zeros((), device=x.device))
        return extra


class _Workspace:
    """The buffers of one batch size.

    Per layer an output, a gradient, and where needed the pre-activation (gelu), a corrupted output and a
    dropout mask (training noise); the output's logits (bce); the corrupted input.  A buffer not needed is
    None, and is read only under the options that allocate it (the step's ``cast`` calls say so).
    """

    def __init__(self, x: torch.Tensor, step: DenseChainStep):
        n = x.shape[0]
        links = step.links
        self.outs = [x.new_empty(n, link.size) for link in links]
        self.grads = [x.new_empty(n, link.size) for link in links]
        self.pres = [x.new_empty(n, link.size) if (link.keeps_pre or link.contractive) else None for link in links]
        self.posts = [x.new_empty(n, link.size) if (link.noise or link.dropout) else None for link in links]
        self.masks = [x.new_empty(n, link.size) if link.dropout else None for link in links]
        self.logits = x.new_empty(n, links[-1].size) if step.bce else None
        several = len(step.losses) > 1  # the second loss's gradient, and the cross-entropy's, go aside
        self.scratch = x.new_empty(n, links[-1].size) if several else None
        self.logit_grad = x.new_empty(n, links[-1].size) if (several and step.bce) else None
        corrupted = step.input_noise or step.input_dropout
        self.x_in = torch.empty_like(x) if corrupted else None
        self.x_mask = torch.empty_like(x) if step.input_dropout else None

    def __repr__(self) -> str:
        return f"_Workspace(batch of {self.outs[0].shape[0]}, layers {[t.shape[1] for t in self.outs]})"

    @staticmethod
    def corrupt(
        t: torch.Tensor, noise: float, dropout: float, result: torch.Tensor | None, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """``t`` with Gaussian noise and dropout, into ``result``; ``t`` itself when neither applies.

        The same draws and floats as :func:`aekit.regularizers.gaussian_noise`
        (``t + std * randn_like(t)``) and ``F.dropout`` (a Bernoulli(1 - p) mask
        divided by 1 - p, multiplied in), one after the other.
        """
        if not (noise or dropout):
            return t
        assert result is not None  # allocated where noise or dropout apply
        if noise:
            result.normal_().mul_(noise).add_(t)
        if dropout:
            assert mask is not None  # allocated where dropout applies
            mask.bernoulli_(1 - dropout).div_(1 - dropout)
            torch.mul(result if noise else t, mask, out=result)
        return result
