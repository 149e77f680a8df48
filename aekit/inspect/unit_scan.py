"""One streamed pass over the data that keeps, per unit, what a unit browser shows.

:func:`top_activations` gives the rows of ``x`` that activate each unit of a layer most (the
"feature view" of sparse autoencoders over token activations); :func:`scan_units` gives that
and, from the same pass, each unit's firing count, range, mean, a histogram of its non-zero
activations and, for labelled data, its mean activation per label.

Neither ever holds an ``(n, units)`` array: the data is read block by block (a memmap or a lazy
``.safetensors`` tensor streams, as :meth:`aekit.Autoencoder.encode` reads it), each block is
encoded in chunks of at most ``CHUNK_VALUES`` activations, and every figure is a running one:

* the top ``k`` per unit: the chunk's values are stacked under the ``k`` kept so far and
  ``torch.topk`` keeps the ``k`` largest (so memory is ``O(k * units + chunk)``, and the result is
  the exact top ``k`` values over all rows, listed by value and by row among equal values; which
  rows are kept when several share the k-th value is not specified);
* the histograms: ``bins`` equal bins over ``[0, 2**e]`` for the positive values of each unit
  and another for the negative ones, where ``2**e`` is the smallest power of two at or above the
  largest magnitude seen.  When a chunk brings a larger value, ``e`` grows and the counts are merged
  by the power of two, bin ``j`` into bin ``j // 2**(e' - e)``: each old bin lies inside one new
  bin, so the result is exactly the histogram of all values over the final bins.  Zeros are
  counted apart (for sparse codes they are almost every value).

A unit's activation on an example is its output for dense layers; for image-shaped layers
``(C, H, W)`` the units are the channels and a channel's activation is its mean over the
positions, as :func:`aekit.inspect.features.top_inputs` ranks them.  A unit *fires* on an
example when its activation is not zero (exact for ReLU, top-k and JumpReLU codes); it is
*dead* when its activation is constant over all rows (range at most
:data:`~aekit.inspect.measures.DEAD_TOLERANCE`, the rule of :func:`aekit.diagnose`).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..data.validation import integer
from ..errors import ConfigurationError, DataError
from .measures import DEAD_TOLERANCE

if TYPE_CHECKING:
    from ..autoencoder import Autoencoder

__all__ = ["CHUNK_VALUES", "TopActivations", "UnitScan", "scan_units", "top_activations"]

# At most this many activations (rows x units) are encoded at once: 16 MB of float32.
CHUNK_VALUES = 1 << 22
# More distinct labels than this are not class labels.
MAX_LABELS = 1000
# A histogram's exponent before its unit has seen a value.
_UNSET = -(1 << 20)


@dataclasses.dataclass
class TopActivations:
    """The rows that activate each unit most, best first (:func:`top_activations`).

    Attributes
    ----------
    layer : str
        The layer's name.
    indices : ndarray of int64, shape (units, k)
        Row numbers of ``x``, best first; ``k`` is at most the number of rows.
    values : ndarray of float32, shape (units, k)
        The unit's activation on those rows.
    contexts : list of lists, or None
        ``contexts[u][j]`` is ``contexts[indices[u, j]]`` of the input, when contexts were given.
    """

    layer: str
    indices: np.ndarray
    values: np.ndarray
    contexts: list[list[Any]] | None = None


@dataclasses.dataclass
class UnitScan:
    """Per-unit figures of one layer over all rows of the data (:func:`scan_units`).

    Attributes
    ----------
    layer : str
    n_rows : int
    top : TopActivations
    fired : ndarray of int64, shape (units,)
        Rows on which the unit's activation is not zero.
    minimum, maximum, mean : ndarray of float64, shape (units,)
        Over all rows (NaN rows are left out of the mean and range).
    hist_pos, hist_neg : ndarray of int64, shape (units, bins)
        Counts of the positive values (and of the negative values' magnitudes) in ``bins`` equal
        bins from 0 to ``pos_top`` (``neg_top``); all zero when the unit had none.
    pos_top, neg_top : ndarray of float64, shape (units,)
        The upper edge of each unit's histogram (a power of two; 0 when it had no such value).
    label_values : ndarray or None, shape (labels,)
        The distinct labels, sorted.
    label_means : ndarray of float64 or None, shape (units, labels)
        The unit's mean activation over the rows of each label.
    label_counts : ndarray of int64 or None, shape (labels,)
    """

    layer: str
    n_rows: int
    top: TopActivations
    fired: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray
    mean: np.ndarray
    hist_pos: np.ndarray
    hist_neg: np.ndarray
    pos_top: np.ndarray
    neg_top: np.ndarray
    label_values: np.ndarray | None = None
    label_means: np.ndarray | None = None
    label_counts: np.ndarray | None = None

    @property
    def density(self) -> np.ndarray:
        """The fraction of rows on which each unit fires, shape (units,)."""
        return self.fired / max(self.n_rows, 1)

    @property
    def dead(self) -> np.ndarray:
        """Units whose activation is constant over all rows (range at most ``DEAD_TOLERANCE``)."""
        return ~((self.maximum - self.minimum) > DEAD_TOLERANCE)


class _Histogram:
    """Exact running histograms of non-negative values per unit over ``[0, 2**exponent]``."""

    def __init__(self, units: int, bins: int):
        self.bins = bins
        self.counts = torch.zeros(units, bins, dtype=torch.int64)
        self.exponent = torch.full((units,), _UNSET, dtype=torch.int64)
        self._bin = torch.arange(bins, dtype=torch.int64)

    def update(self, values: torch.Tensor, units: torch.Tensor) -> None:
        """Count ``values`` (m,), all > 0, of the units ``units`` (m,)."""
        if values.numel() == 0:
            return
        values = values.double()
        peak = torch.zeros(self.exponent.shape, dtype=torch.float64).scatter_reduce_(0, units, values, "amax")
        # frexp: peak = m * 2**e with m in [0.5, 1): 2**(e-1) when m is 0.5 (peak a power of 2), else 2**e.
        mantissa, needed = torch.frexp(peak)
        needed = torch.where(mantissa == 0.5, needed - 1, needed).to(torch.int64)
        grow = (peak > 0) & (needed > self.exponent)
        if bool(grow.any()):
            old = self.exponent[grow]
            shift = torch.where(old == _UNSET, torch.zeros_like(old), (needed[grow] - old).clamp(max=62))
            merged = torch.zeros_like(self.counts[grow])
            merged.scatter_add_(1, self._bin[None, :] >> shift[:, None], self.counts[grow])
            self.counts[grow] = merged
            self.exponent[grow] = needed[grow]
        top = torch.ldexp(torch.ones(values.shape, dtype=torch.float64), self.exponent[units])
        index = (values / top * self.bins).floor().clamp(0, self.bins - 1).to(torch.int64) + units * self.bins
        self.counts.view(-1).index_add_(0, index, torch.ones_like(index))

    def top(self) -> np.ndarray:
        unset = self.exponent == _UNSET
        edge = torch.ldexp(torch.ones(self.exponent.shape, dtype=torch.float64), self.exponent.clamp(min=-1074))
        return torch.where(unset, torch.zeros_like(edge), edge).numpy()


def _merge_top(values: torch.Tensor, rows: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest of ``values`` (m, units) per unit with their ``rows``, best first, equals by row.

    ``torch.topk`` keeps the k largest (a full sort of a chunk would cost six times its encoding:
    the chunk's own top k are taken first, and merged here with the k kept so far); the k kept are
    then ordered by value, and by row among equal values, with two stable sorts of the small
    (k, units) result.
    """
    keep = min(k, values.shape[0])
    best = values.topk(keep, dim=0).indices
    top_values, top_rows = values.gather(0, best), rows.gather(0, best)
    by_row = top_rows.argsort(dim=0, stable=True)
    top_values, top_rows = top_values.gather(0, by_row), top_rows.gather(0, by_row)
    by_value = top_values.argsort(dim=0, descending=True, stable=True)
    return top_values.gather(0, by_value), top_rows.gather(0, by_value)


def _unit_values(out: torch.Tensor) -> torch.Tensor:
    """A layer's output as (rows, units): channels averaged over positions for image-shaped layers."""
    return out.flatten(2).mean(dim=2) if out.dim() > 2 else out.reshape(out.shape[0], -1)


def _code_shares(codes: torch.Tensor, size: int) -> torch.Tensor:
    """A quantizer's code indices (rows, *grid) as (rows, codes): the share of each row's vectors with each code."""
    flat = codes.reshape(codes.shape[0], -1).long()
    counts = torch.zeros(flat.shape[0], size, dtype=torch.float32).scatter_add_(
        1, flat, torch.ones(flat.shape, dtype=torch.float32)
    )
    return counts / flat.shape[1]


def _label_codes(labels: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(distinct labels, per-row index into them) for ``labels`` of ``n`` rows."""
    y = np.asarray(labels).reshape(-1)
    if len(y) != n:
        raise DataError(f"labels must have one label per row of x ({n}), got {len(y)}")
    values, codes = np.unique(y, return_inverse=True)
    if len(values) > MAX_LABELS:
        raise DataError(f"labels must be class labels (at most {MAX_LABELS} distinct values), got {len(values)}")
    return values, codes.reshape(-1)


def scan_units(
    net: Autoencoder,
    x: Any,
    layer: str | int | None = None,
    *,
    k: int = 10,
    labels: Any = None,
    bins: int = 64,
) -> UnitScan:
    """Per-unit top activations, firing counts, ranges and histograms of ``layer``, in one streamed pass.

    Parameters
    ----------
    net : Autoencoder
    x : array-like, shape (n, features) or (n, *input_shape)
        Data as the model takes it; a memmap or lazy ``.safetensors`` tensor is read block by block.
    layer : str or int, optional
        A hidden layer (default: the code layer).
    k : int
        How many top rows to keep per unit (at most ``n``).
    labels : array-like, shape (n,), optional
        Class labels: the mean activation of each unit per label is kept too.
    bins : int
        Histogram bins per sign.

    Returns
    -------
    UnitScan
    """
    k = integer("k", k, 1)
    bins = integer("bins", bins, 2)
    name = net._layer_name(layer, net.code_layer)
    if name == net.graph.input_name:
        raise ConfigurationError(f"layer {name!r} is the input; pick a hidden or output layer")
    net._check_outputs_exist()
    shape = net.graph.layers[name].output_shape
    # A quantizer layer's units are its codes: a row "activates" a code by the share of its vectors that chose it.
    codebook = getattr(net.graph.layers[name], "codebook_size", None)
    units = int(codebook) if codebook else int(shape[0]) if len(shape) > 1 else int(np.prod(shape))
    chunk_rows = max(1, CHUNK_VALUES // max(1, int(np.prod(shape))))
    x, _ = net._split(x)
    n = len(x)
    label_values, label_codes = _label_codes(labels, n) if labels is not None else (None, None)
    n_labels = 0 if label_values is None else len(label_values)

    top_values = torch.full((0, units), -torch.inf)
    top_rows = torch.zeros((0, units), dtype=torch.int64)
    fired = torch.zeros(units, dtype=torch.int64)
    total = torch.zeros(units, dtype=torch.float64)
    finite = torch.zeros(units, dtype=torch.int64)
    low = torch.full((units,), torch.inf, dtype=torch.float64)
    high = torch.full((units,), -torch.inf, dtype=torch.float64)
    pos_hist, neg_hist = _Histogram(units, bins), _Histogram(units, bins)
    label_sums = torch.zeros(units, n_labels, dtype=torch.float64)
    graph = net.graph
    was_training = graph.training
    graph.eval()
    row = 0
    try:
        for batch in net._inputs(x):
            for start in range(0, batch.shape[0], chunk_rows):
                part = batch[start : start + chunk_rows]
                with torch.inference_mode():
                    outputs = graph(part, stop=name)
                    if codebook:
                        h = _code_shares(outputs[f"{name}:codes"].cpu(), units)
                    else:
                        h = _unit_values(outputs[f"{name}:out"]).float().cpu()
                rows = torch.arange(row, row + h.shape[0], dtype=torch.int64)
                row += h.shape[0]
                # Sparse codes are mostly zeros: every figure but the top k is read from the non-zeros.
                at_row, at_unit = (h != 0).nonzero(as_tuple=True)
                value = h[at_row, at_unit].double()
                has_zero = torch.bincount(at_unit, minlength=units) < h.shape[0]
                finite += h.shape[0]
                ok = torch.isfinite(value)
                if not bool(ok.all()):
                    finite -= torch.bincount(at_unit[~ok], minlength=units)
                    at_row, at_unit, value = at_row[ok], at_unit[ok], value[ok]
                fired += torch.bincount(at_unit, minlength=units)
                total.index_add_(0, at_unit, value)
                low = torch.minimum(low, torch.full_like(low, torch.inf).scatter_reduce_(0, at_unit, value, "amin"))
                high = torch.maximum(high, torch.full_like(high, -torch.inf).scatter_reduce_(0, at_unit, value, "amax"))
                low = torch.where(has_zero, low.clamp(max=0.0), low)
                high = torch.where(has_zero, high.clamp(min=0.0), high)
                positive = value > 0
                pos_hist.update(value[positive], at_unit[positive])
                neg_hist.update(-value[~positive], at_unit[~positive])
                if label_codes is not None:
                    codes = torch.as_tensor(label_codes[rows.numpy()])[at_row]
                    label_sums.view(-1).index_add_(0, at_unit * n_labels + codes, value)
                # NaN ranks last.  The chunk's own top k first, then merged with the k kept.
                ranked = h if bool(ok.all()) else torch.where(torch.isnan(h), -torch.inf, h)
                best = ranked.topk(min(k, h.shape[0]), dim=0).indices
                top_values, top_rows = _merge_top(
                    torch.cat([top_values, ranked.gather(0, best)]), torch.cat([top_rows, rows[best]]), k
                )
    finally:
        graph.train(was_training)
    label_counts = None if label_codes is None else np.bincount(label_codes, minlength=n_labels).astype(np.int64)
    label_means = None
    if label_counts is not None:
        label_means = label_sums.numpy() / np.maximum(label_counts, 1)[None, :]
    top = TopActivations(name, top_rows.t().contiguous().numpy(), top_values.t().contiguous().numpy())
    return UnitScan(
        layer=name,
        n_rows=row,
        top=top,
        fired=fired.numpy(),
        minimum=low.numpy(),
        maximum=high.numpy(),
        mean=(total / finite.clamp(min=1)).numpy(),
        hist_pos=pos_hist.counts.numpy(),
        hist_neg=neg_hist.counts.numpy(),
        pos_top=pos_hist.top(),
        neg_top=neg_hist.top(),
        label_values=label_values,
        label_means=label_means,
        label_counts=label_counts,
    )


def _contexts_for(contexts: Any, indices: np.ndarray, n: int) -> list[list[Any]]:
    if len(contexts) != n:
        raise DataError(f"contexts must have one entry per row of x ({n}), got {len(contexts)}")
    return [[contexts[int(i)] for i in row] for row in indices]


def top_activations(
    net: Autoencoder,
    x: Any,
    layer: str | int | None = None,
    k: int = 10,
    contexts: Any = None,
) -> TopActivations:
    """The ``k`` rows of ``x`` that activate each unit of ``layer`` most, with their activations.

    Streamed and chunked (see the module docstring): 100,000 rows of a 16,384-unit dictionary
    never make an ``(n, units)`` array.

    Parameters
    ----------
    net : Autoencoder
    x : array-like, shape (n, features) or (n, *input_shape)
    layer : str or int, optional
        Default: the code layer.
    k : int
    contexts : sequence, optional
        One entry per row of ``x`` (e.g. the text around a token): returned beside each top row.

    Returns
    -------
    TopActivations
        ``indices`` and ``values`` of shape (units, min(k, n)), best first.

    Examples
    --------
    >>> import numpy as np, aekit
    >>> net = aekit.Autoencoder([4, (3, 'relu'), (4, 'linear')], rng=0)
    >>> x = np.random.default_rng(0).normal(size=(50, 4)).astype('float32')
    >>> top = top_activations(net, x, k=2)
    >>> top.indices.shape, bool((top.values[:, 0] >= top.values[:, 1]).all())
    ((3, 2), True)
    """
    scan = scan_units(net, x, layer, k=k)
    top = scan.top
    if contexts is not None:
        top.contexts = _contexts_for(contexts, top.indices, scan.n_rows)
    return top
