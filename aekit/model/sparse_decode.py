"""The sparse fast path of top-k codes: encode to (values, indices), decode the active latents only.

A ``'topk:K'`` code of ``L`` latents has ``K`` non-zero values per example.  The
dense path multiplies the whole ``(n, L)`` code by the decoder's ``(L, d)`` weight,
keeps that code for the backward pass and, in the backward pass, forms the dense
``(n, L)`` gradients of the code and of the pre-activation and multiplies them
again: four matrix products of ``n * L * d`` multiply-adds after the encoder's.
Here a top-k encoder feeding a dense decoder runs as two autograd Functions:

* :class:`TopKEncode`: ``pre = x @ w + b`` (the one unavoidable dense product),
  ``torch.topk`` and ReLU, and it keeps only ``x``, ``w`` and the ``(n, K)``
  indices and values for the backward pass, never the ``(n, L)`` pre-activation.
  Its backward pass writes the weight's gradient from the ``(n, K)`` gradient of
  the values, ``dW[:, j] = sum over the examples that chose j of g * x``, the
  bias' by ``index_add_``.  The pre-activation is also an output (``'name:pre'``):
  when something reads it with a gradient (an auxiliary loss), that dense
  gradient is added, so every result stays exact.
* :class:`SparseDecode`: ``x_hat = sum_j values_j * W_dec[idx_j] + b``
  (``F.embedding_bag`` with per-sample weights); backward: the values' gradient is
  each chosen decoder row dotted with the output's gradient, the weight's
  gradient is ``values * grad_out`` added into the chosen rows (``index_add_``).

On a CPU the sums over the chosen latents go through compressed-sparse-row
products (``torch.sparse.sampled_addmm``) and an ``embedding_bag`` over the
examples sorted by latent, which were the fastest of the forms measured on this
project's CPUs; elsewhere through
``index_add_`` and gathers (the forms of OpenAI's and EleutherAI's kernels).  Both
give the dense path's values (``tests/test_sparse_decode.py`` checks them in
float64 against autograd of the dense path, and ``gradcheck`` each Function).

:class:`aekit.model.graph.Graph` uses the path by itself (see :func:`sparse_pairs`)
when a dense layer whose activation is exactly ``'topk:K'`` feeds a dense decoder
and ``L / K >= AUTO_RATIO``; the code ``'name:out'`` is then made dense only when
something reads it (a penalty, a metric, ``encode``).  The environment variable
``AEKIT_SPARSE_DECODE`` (``'auto'``, ``'always'``, ``'never'``) or
:func:`sparse_mode` forces either path.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from ..errors import ConfigurationError

__all__ = [
    "AUTO_RATIO",
    "MODES",
    "SparseCode",
    "SparseDecode",
    "TopKEncode",
    "code_input_grad",
    "code_weight_grad",
    "decode",
    "gather_dot",
    "get_mode",
    "sparse_mode",
    "sparse_pairs",
    "topk_encode",
]

# Latents per active one from which the sparse path is taken by default.  aekit's sparse training step over its
# dense one at d=768, k=32, batch 1024, one CPU thread (benchmarks/bench_sae_speed.py's crossover): 0.98x at 8,
# 1.26x at 16, 1.58x at 32, 2.13x at 128.
AUTO_RATIO = 16
MODES = ("auto", "always", "never")
_ENV = "AEKIT_SPARSE_DECODE"
_forced: list[str] = []  # sparse_mode's stack; wins over the environment variable
# Devices whose sums over the chosen latents take the CPU forms (a CSR product, a latent-sorted embedding_bag:
# the fastest measured on CPUs); the others take index_add_ and gathers.  Tests empty it to check both on a CPU.
CSR_DEVICES: tuple[str, ...] = ("cpu",)
_CHUNK = 256  # examples per chunk of a gather / index_add: (256 * K, d) temporaries stay small


class SparseCode(NamedTuple):
    """A top-k code as its active latents: row ``i`` has ``values[i, j]`` at latent ``indices[i, j]``.

    Attributes
    ----------
    values : tensor, shape (n, k)
        The kept values (ReLU'd: a value may be 0 when fewer than ``k`` are positive).
    indices : int64 tensor, shape (n, k)
        Their latents, increasing along each row.
    size : int
        The number of latents ``L``.
    """

    values: torch.Tensor
    indices: torch.Tensor
    size: int

    def dense(self) -> torch.Tensor:
        """The code as an ``(n, size)`` tensor, differentiable with respect to ``values``."""
        shape = (self.values.shape[0], self.size)
        return self.values.new_zeros(shape).scatter(1, self.indices, self.values)


def get_mode() -> str:
    """The path chosen now: :func:`sparse_mode`'s if one is active, else ``$AEKIT_SPARSE_DECODE``, else 'auto'."""
    if _forced:
        return _forced[-1]
    mode = os.environ.get(_ENV, "auto").strip().lower() or "auto"
    aliases = {"1": "always", "true": "always", "sparse": "always", "0": "never", "false": "never", "dense": "never"}
    mode = aliases.get(mode, mode)
    if mode not in MODES:
        raise ConfigurationError(f"{_ENV} must be one of 'auto', 'always', 'never', got {mode!r}")
    return mode


@contextlib.contextmanager
def sparse_mode(mode: str) -> Iterator[None]:
    """Within the block, decode top-k codes sparsely ``'always'``, ``'never'``, or as ``'auto'`` decides.

    Parameters
    ----------
    mode : str
        ``'auto'``, ``'always'`` or ``'never'``.
    """
    if mode not in MODES:
        raise ConfigurationError(f"sparse_mode takes 'auto', 'always' or 'never', got {mode!r}")
    _forced.append(mode)
    try:
        yield
    finally:
        _forced.pop()


def wanted(n_latents: int, k: int) -> bool:
    """Whether a top-``k`` code of ``n_latents`` takes the sparse path under the current mode."""
    mode = get_mode()
    return mode == "always" or (mode == "auto" and n_latents >= AUTO_RATIO * k)


def sparse_pairs(
    layers: Any, sources: Mapping[str, str], stop: str | None = None, corrupted: Any = ()
) -> dict[str, str]:
    """The (top-k encoder -> dense decoder) pairs of a graph that take the sparse path now, by encoder name.

    An encoder qualifies when its ``sparse_k`` is set (a dense layer whose activation is
    exactly a stateless ``'topk:K'``, no batch norm), a decoder when it
    ``reads_sparse_codes`` (a dense layer without batch norm); and the mode allows it
    (:func:`wanted`).  Not under ``torch.compile``, autocast or ``torch.func`` transforms
    (dense there), not when the forward pass stops at the encoder (``encode``), not when
    training noise or dropout changes the code the decoder reads.

    Parameters
    ----------
    layers : mapping of str to Layer
    sources : mapping of str to str
        The layer each layer reads, in graph order.
    stop : str, optional
    corrupted : collection of str
        The layers whose outputs are corrupted before the next layer reads them.

    Returns
    -------
    dict of str to str
    """
    autocast = torch.is_autocast_enabled("cpu") or torch.is_autocast_enabled("cuda")
    # torch.func transforms (a contractive penalty's per-example Jacobians) have no rule for these Functions.
    transformed = torch._C._are_functorch_transforms_active()
    if torch.compiler.is_compiling() or autocast or transformed or get_mode() == "never":
        return {}
    pairs = {}
    for name, source in sources.items():
        encoder, decoder = layers[source], layers[name]
        k = getattr(encoder, "sparse_k", None)
        if k is None or source == stop or source in corrupted or source in pairs:
            continue
        if getattr(decoder, "reads_sparse_codes", False) and wanted(int(encoder.output_shape[0]), k):
            pairs[source] = name
    return pairs


# ---------------------------------------------------------------------- pure functions
def _offsets(n: int, k: int, device: torch.device) -> torch.Tensor:
    return torch.arange(0, n * k + 1, k, device=device, dtype=torch.int64)


def _rows_csr(values: torch.Tensor, indices: torch.Tensor, size: int) -> torch.Tensor:
    """The ``(n, size)`` compressed-sparse-row matrix with ``values`` at ``indices`` (sorted along rows)."""
    n, k = indices.shape
    with warnings.catch_warnings():  # "sparse CSR support is in beta": these few products are tested here
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            _offsets(n, k, indices.device),
            indices.reshape(-1),
            values.reshape(-1),
            (n, size),
            check_invariants=False,
        )


def decode(values: torch.Tensor, indices: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_j values[:, j] * w[indices[:, j]] (+ b)``: a code times ``w`` from its active latents.

    Parameters
    ----------
    values, indices : tensors, shape (n, k)
    w : tensor, shape (L, d)
        Row ``l`` is latent ``l``'s decoder direction.
    b : tensor, shape (d,), optional

    Returns
    -------
    tensor, shape (n, d)
    """
    n, k = indices.shape
    out = F.embedding_bag(
        indices.reshape(-1),
        w,
        _offsets(n, k, indices.device)[:-1],
        mode="sum",
        per_sample_weights=values.reshape(-1).to(w.dtype),
    )
    return out if b is None else out.add_(b)


def gather_dot(indices: torch.Tensor, w: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``(w[indices[i, j]] . grad[i])`` for every ``i, j``: the gradient of the values of :func:`decode`.

    Parameters
    ----------
    indices : int64 tensor, shape (n, k), increasing along rows
    w : tensor, shape (L, d)
    grad : tensor, shape (n, d)

    Returns
    -------
    tensor, shape (n, k)
    """
    n, k = indices.shape
    if grad.device.type in CSR_DEVICES:
        pattern = _rows_csr(grad.new_zeros(n, k), indices, w.shape[0])
        return torch.sparse.sampled_addmm(pattern, grad, w.t(), beta=0.0).values().view(n, k)
    out = grad.new_empty(n, k)
    for start in range(0, n, _CHUNK):
        rows = slice(start, start + _CHUNK)
        torch.bmm(w[indices[rows]], grad[rows].unsqueeze(2), out=out[rows].unsqueeze(2))
    return out


def code_weight_grad(
    grad: torch.Tensor, indices: torch.Tensor, inputs: torch.Tensor, size: int, layout: str
) -> torch.Tensor:
    """``sum_i grad[i, j] * inputs[i]`` added into latent ``indices[i, j]``'s row (or column).

    The weight gradient of :func:`decode` (``grad`` the values, ``inputs`` the output's
    gradient, layout ``'rows'``) and of the top-k encoder (``grad`` the gradient of the
    kept pre-activations, ``inputs`` the encoder's input, layout ``'columns'``).

    Parameters
    ----------
    grad : tensor, shape (n, k)
    indices : int64 tensor, shape (n, k), increasing along rows
    inputs : tensor, shape (n, d)
    size : int
        The number of latents ``L``.
    layout : {'rows', 'columns'}
        A result of shape (L, d) or (d, L).

    Returns
    -------
    tensor, shape (L, d) or (d, L)
    """
    n, k = indices.shape
    if inputs.device.type in CSR_DEVICES:
        # Row l of the result is a bag: the inputs of the examples that chose latent l, weighted by grad.
        # Sorted as float64 (exact below 2**53): torch's parallel sort of int64 on a CPU took 100 times longer
        # (170 ms against 1.7 ms for 32768 keys, two threads on a busy machine).
        flat = indices.reshape(-1)
        order = flat.to(torch.float64).sort().indices
        counts = torch.bincount(flat, minlength=size)
        bags = counts.cumsum(0).sub_(counts)  # where each latent's bag starts in the sorted order
        examples = torch.div(order, k, rounding_mode="floor")
        weights = grad.reshape(-1)[order].to(inputs.dtype)
        out = F.embedding_bag(examples, inputs, bags, mode="sum", per_sample_weights=weights)
    else:
        out = inputs.new_zeros(size, inputs.shape[1])
        for start in range(0, n, _CHUNK):
            rows = slice(start, start + _CHUNK)
            parts = (grad[rows].unsqueeze(2) * inputs[rows].unsqueeze(1)).reshape(-1, inputs.shape[1])
            out.index_add_(0, indices[rows].reshape(-1), parts.to(out.dtype))
    # The (d, L) layout of an encoder's weight: one transposing copy (faster, measured, than a dense @ CSR product).
    return out if layout == "rows" else out.t().contiguous()


def code_input_grad(grad: torch.Tensor, indices: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The encoder input's gradient ``sum_j grad[:, j] * w[:, indices[:, j]]``, for ``w`` of shape (d, L).

    Parameters
    ----------
    grad, indices : tensors, shape (n, k)
    w : tensor, shape (d, L)

    Returns
    -------
    tensor, shape (n, d)
    """
    return decode(grad, indices, w.t().contiguous())


def topk_encode(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``pre = x @ w + b``, then the ``k`` largest of each row, ReLU'd, by increasing latent.

    The same choice as :func:`aekit.model.sparsity.topk_relu` (``torch.topk`` of the pre-activation).

    Parameters
    ----------
    x : tensor, shape (n, d)
    w : tensor, shape (d, L)
    b : tensor, shape (L,)
    k : int

    Returns
    -------
    pre : tensor, shape (n, L)
    values : tensor, shape (n, k)
    indices : int64 tensor, shape (n, k)
    """
    pre = torch.addmm(b, x, w)
    values, indices = pre.topk(k, dim=1, sorted=False)
    indices, order = indices.sort(dim=1)  # canonical, and what a CSR matrix wants
    return pre, values.gather(1, order).relu_(), indices


# ---------------------------------------------------------------------- autograd Functions
class TopKEncode(torch.autograd.Function):
    """``(x, w, b, k) -> (values, indices, pre)`` of :func:`topk_encode`, with a sparse backward pass.

    Saved for backward: ``x``, ``w`` and the ``(n, k)`` values and indices; never
    the ``(n, L)`` pre-activation.  ``pre``'s gradient, when it has one, is added
    densely.
    """

    @staticmethod
    def forward(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, k: int, shift: torch.Tensor | None = None) -> Any:
        """See :func:`topk_encode` (values, indices, pre), of ``x - shift`` when a shift (d,) is given."""
        pre, values, indices = topk_encode(x if shift is None else x - shift, w, b, k)
        return values, indices, pre

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
        """Keep the (shifted) input, ``w``, the values and the indices."""
        x, w, _, _, *rest = inputs
        shift = rest[0] if rest else None
        values, indices, _ = output
        ctx.save_for_backward(x if shift is None else x - shift, w, values, indices)
        ctx.mark_non_differentiable(indices)
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx: Any, grad_values: torch.Tensor | None, _: Any, grad_pre: torch.Tensor | None) -> Any:
        """Gradients of ``x``, ``w`` and ``b`` from the values' (sparse) and the pre-activation's (dense)."""
        x, w, values, indices = ctx.saved_tensors
        size = w.shape[1]
        # The bias's gradient also gives the shift's (below): computed when either needs it.
        shifted = len(ctx.needs_input_grad) > 4 and ctx.needs_input_grad[4]
        want_b = ctx.needs_input_grad[2] or shifted
        grad_x = grad_w = grad_b = None
        if grad_values is not None:
            g = grad_values * (values > 0)  # ReLU's derivative, 0 at 0 as torch's
            if ctx.needs_input_grad[0]:
                grad_x = code_input_grad(g, indices, w)
            if ctx.needs_input_grad[1]:
                grad_w = code_weight_grad(g, indices, x, size, "columns")
            if want_b:
                grad_b = g.new_zeros(size).index_add_(0, indices.reshape(-1), g.reshape(-1))
        if grad_pre is not None:
            if ctx.needs_input_grad[0]:
                dense_x = grad_pre @ w.t()
                grad_x = dense_x if grad_x is None else grad_x + dense_x
            if ctx.needs_input_grad[1]:
                dense_w = x.t() @ grad_pre
                grad_w = dense_w if grad_w is None else grad_w + dense_w
            if want_b:
                dense_b = grad_pre.sum(0)
                grad_b = dense_b if grad_b is None else grad_b + dense_b
        # d pre / d shift = -w: summed over the rows, the shift's gradient is -(w @ the bias's gradient),
        # a matrix-vector product; no (n, d) input gradient and no transposed copy of w is needed.
        grad_shift = -(w @ grad_b) if shifted and grad_b is not None else None
        grads = (grad_x, grad_w, grad_b if ctx.needs_input_grad[2] else None, None, grad_shift)
        return grads[: len(ctx.needs_input_grad)]


class SparseDecode(torch.autograd.Function):
    """``(values, indices, w, b) -> values-weighted sum of w's rows at indices, plus b``: :func:`decode`.

    Saved for backward: the ``(n, k)`` values and indices and ``w``.
    """

    @staticmethod
    def forward(values: torch.Tensor, indices: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> Any:
        """See :func:`decode`."""
        return decode(values, indices, w, b)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Any) -> None:
        """Keep the values, the indices and ``w``."""
        values, indices, w, _ = inputs
        ctx.save_for_backward(values, indices, w)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        """Gradients of the values (gathered dot products), ``w`` (index_add_) and ``b``."""
        values, indices, w = ctx.saved_tensors
        grad_values = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_values = gather_dot(indices, w, grad)
        if ctx.needs_input_grad[2]:
            grad_w = code_weight_grad(values, indices, grad, w.shape[0], "rows")
        if ctx.needs_input_grad[3]:
            grad_b = grad.sum(0)
        return grad_values, None, grad_w, grad_b
