"""Stateful metrics: figures over a whole epoch or data set, never averages of per-batch figures.

A :class:`Metric` is reset, updated with batch after batch, then computed.  Its
state is a few float64 sums (:meth:`Metric.state`), so that a data-parallel run
adds the states of its processes (an all-reduce) and gets the figure of the
whole data set; a per-batch mean of, say, the fraction of dead units would be
meaningless (a unit dead in every batch may fire in the data set).

The definitions, exact (``x`` the target, ``x_hat`` the reconstruction, sums over
every value of every example of the data; ``xbar_j`` the data mean of feature j):

``mse``
    ``sum (x - x_hat)^2 / (n * d)``: the mean squared error per value.
``fvu``
    Fraction of variance unexplained, ``sum (x - x_hat)^2 / sum_j sum_i (x_ij - xbar_j)^2``:
    the squared error over the total variance around the per-feature means (the
    "normalised MSE" of sparse-autoencoder papers when the total is taken around
    the per-feature means; 0 is perfect, 1 is no better than the data mean).
``r2``
    ``1 - fvu``, the R^2 of :meth:`aekit.Autoencoder.score` (scikit-learn's
    ``r2_score(..., multioutput='variance_weighted')``).
``l0`` (of a layer, default the code layer)
    The mean over examples of the number of non-zero values of the layer's output.
``dead_fraction`` (of a layer, default the code layer)
    The fraction of the layer's units that are zero on every example of the data.
``usage`` (of a quantizer layer, default the first one)
    The fraction of the ``K`` codes chosen at least once over the data (``'name:codes'``).
``perplexity`` (of a quantizer layer, default the first one)
    ``exp(-sum_k p_k log p_k)`` with ``p_k`` the share of all the data's vectors that chose code
    ``k``: the number of equally used codes with the same entropy (``K`` at best).  Counted over
    the whole data, never averaged over batches: a batch of ``b`` vectors cannot show more than
    ``b`` codes, so a per-batch figure depends on the batch size.
``kl`` (of a gaussian layer, default the code layer)
    The mean over examples of ``KL(q(z|x) || N(0, I))`` in nats, summed over the latents.
``active_units`` (of a gaussian layer, default the code layer)
    Burda et al. 2015's active units: latents whose posterior mean varies over the data,
    ``Var_x E_q[z_j|x] > 0.01`` (the population variance over every example).

With per-value weights ``w`` (a weighted model), ``mse``, ``fvu`` and ``r2`` weigh
each value by ``w``, as :meth:`~aekit.Autoencoder.score` does.

Metric names are registered in :data:`METRICS`; ``'l0:hid2'`` names the layer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ConfigurationError, unknown_name_error
from ..registry import Registry

__all__ = [
    "METRICS",
    "FVU",
    "L0",
    "MSE",
    "R2",
    "CodeUsage",
    "ActiveUnits",
    "DeadFraction",
    "KL",
    "Metric",
    "Perplexity",
    "MetricBatch",
    "build_metrics",
    "centred_sum_of_squares",
    "compute_all",
    "layer_codes",
    "update_all",
]


@dataclass
class MetricBatch:
    """What a metric sees of one batch.

    Attributes
    ----------
    outputs : dict of str to tensor
        The graph's outputs (``'name:out'``, ...), computed in eval mode.
    target : tensor, shape (n, *input_shape)
    weight : tensor or None, shape like ``target``
    output : str
        The name of the reconstruction layer.
    """

    outputs: dict[str, torch.Tensor]
    target: torch.Tensor
    weight: torch.Tensor | None
    output: str


class Metric:
    """Base class: ``reset``, ``update`` per batch, ``compute`` at the end; ``state`` for all-reduce.

    Parameters
    ----------
    layer : str, optional
        The layer a per-layer metric reads (None: the model's code layer).
    """

    name = "metric"
    needs_layer = False

    def __init__(self, layer: str | None = None):
        self.layer = layer
        self._sums: torch.Tensor | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.layer!r})" if self.needs_layer else f"{type(self).__name__}()"

    def reset(self) -> None:
        """Forget every batch seen."""
        self._sums = None

    def _add(self, values: torch.Tensor) -> None:
        values = values.detach().to(torch.float64)
        self._sums = values if self._sums is None else self._sums + values

    def update(self, batch: MetricBatch) -> None:
        """Add a batch's sums to the state."""
        raise NotImplementedError

    def state(self) -> torch.Tensor | None:
        """The float64 sums of every batch seen (None before any): processes' states add up."""
        return self._sums

    def load_state(self, sums: torch.Tensor) -> None:
        """Replace the state by ``sums`` (the all-reduced sums of every process)."""
        self._sums = sums

    def compute(self) -> float:
        """The figure over every batch seen (NaN before any)."""
        raise NotImplementedError

    def bind(self, layer: Any) -> None:
        """Learn what the metric needs of its layer (the layer object); default: nothing."""

    @classmethod
    def default_layer(cls, layers: Mapping[str, Any], code_layer: str) -> str:
        """The layer a per-layer metric reads when its name gives none: the code layer."""
        return code_layer


def _flat(batch: MetricBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    target = batch.target.flatten(1).to(torch.float64)
    recon = batch.outputs[f"{batch.output}:out"].flatten(1).to(torch.float64)
    weight = torch.ones_like(target) if batch.weight is None else batch.weight.flatten(1).to(torch.float64)
    return target, recon, weight


def centred_sum_of_squares(w: torch.Tensor, wx: torch.Tensor, wxx: torch.Tensor) -> float:
    """``sum_j sum_i w_ij (x_ij - xbar_j)^2`` from the per-feature sums of w, w x and w x^2, shape (d,) each.

    float64 keeps the cancellation in ``sum(w x^2) - (sum w x)^2 / sum w`` harmless for data in any usual range.
    """
    return float((wxx - wx.square() / w.clamp_min(1e-300)).clamp_min(0).sum())


def layer_codes(metric: Metric, batch: MetricBatch) -> torch.Tensor:
    """The metric's layer's output for the batch, (n, units): each example's values flattened."""
    return batch.outputs[f"{metric.layer}:out"].flatten(1)


class _Ratio(Metric):
    """A metric whose state is ``[numerator, denominator]`` and whose figure is their ratio."""

    def compute(self) -> float:
        """The ratio of the two sums over every batch seen.

        Returns
        -------
        float
            NaN before any batch (or with a zero denominator).
        """
        if self._sums is None or self._sums[1] == 0:
            return float("nan")
        return float(self._sums[0] / self._sums[1])


class MSE(_Ratio):
    """``sum w (x - x_hat)^2 / sum w`` over every value of the data."""

    name = "mse"

    def update(self, batch: MetricBatch) -> None:
        """Add the batch's weighted squared error and total weight to the state.

        Parameters
        ----------
        batch : MetricBatch
            The batch's target and weights, shape (n, *input_shape), and the graph's outputs.
        """
        target, recon, weight = _flat(batch)
        self._add(torch.stack([(weight * (target - recon).square()).sum(), weight.sum()]))


class FVU(Metric):
    """Squared error over the total variance around the per-feature (weighted) means."""

    name = "fvu"

    def update(self, batch: MetricBatch) -> None:
        """Add the batch's weighted squared error and per-feature sums of w, w x and w x^2 to the state.

        Parameters
        ----------
        batch : MetricBatch
            The batch's target and weights, shape (n, *input_shape), and the graph's outputs.
        """
        target, recon, weight = _flat(batch)
        # Per-feature sums of w, w x and w x^2 give the variance around the data's means; float64
        # keeps the cancellation in sum(w x^2) - (sum w x)^2 / sum w harmless for data in any usual range.
        self._add(
            torch.cat(
                [
                    (weight * (target - recon).square()).sum().reshape(1),
                    weight.sum(0),
                    (weight * target).sum(0),
                    (weight * target.square()).sum(0),
                ]
            )
        )

    def _parts(self) -> tuple[float, float]:
        assert self._sums is not None
        d = (self._sums.numel() - 1) // 3
        sse, w, wx, wxx = self._sums[0], self._sums[1 : 1 + d], self._sums[1 + d : 1 + 2 * d], self._sums[1 + 2 * d :]
        return float(sse), centred_sum_of_squares(w, wx, wxx)

    def compute(self) -> float:
        """The fraction of variance unexplained over every batch seen (constant data: 0 if exact, else inf).

        Returns
        -------
        float
            NaN before any batch.
        """
        if self._sums is None:
            return float("nan")
        sse, sst = self._parts()
        if sst > 0:
            return sse / sst
        return 0.0 if sse == 0 else float("inf")


class R2(FVU):
    """``1 - fvu`` (for constant data: 1 if the reconstruction is exact, else 0, as ``score``)."""

    name = "r2"

    def compute(self) -> float:
        """``1 - fvu`` over every batch seen (constant data: 1 if exact, else 0).

        Returns
        -------
        float
            NaN before any batch.
        """
        if self._sums is None:
            return float("nan")
        sse, sst = self._parts()
        if sst > 0:
            return 1.0 - sse / sst
        return 1.0 if sse == 0 else 0.0


class L0(_Ratio):
    """Mean number of non-zero values per example of a layer's output."""

    name = "l0"
    needs_layer = True

    def update(self, batch: MetricBatch) -> None:
        """Add the batch's count of non-zero values and of examples to the state.

        Parameters
        ----------
        batch : MetricBatch
            The graph's outputs for the batch; the layer's ``'name:out'`` has shape (n, *layer_shape).
        """
        codes = layer_codes(self, batch)
        self._add(
            torch.stack([(codes != 0).sum().to(torch.float64), torch.tensor(codes.shape[0], dtype=torch.float64)])
        )


class DeadFraction(Metric):
    """Fraction of a layer's units (values of its flattened output) that are zero on every example."""

    name = "dead_fraction"
    needs_layer = True

    def update(self, batch: MetricBatch) -> None:
        """Add the batch's per-unit counts of non-zero values to the state.

        Parameters
        ----------
        batch : MetricBatch
            The graph's outputs for the batch; the layer's ``'name:out'`` has shape (n, *layer_shape).
        """
        codes = layer_codes(self, batch)
        self._add((codes != 0).sum(0).to(torch.float64))  # per-unit firing counts

    def compute(self) -> float:
        """The fraction of units that were zero on every example seen.

        Returns
        -------
        float
            NaN before any batch.
        """
        if self._sums is None:
            return float("nan")
        return float((self._sums == 0).to(torch.float64).mean())


class CodeUsage(Metric):
    """The fraction of a quantizer's codes chosen at least once over the data."""

    name = "usage"
    needs_layer = True

    def __init__(self, layer: str | None = None):
        super().__init__(layer)
        self.size: int | None = None

    def bind(self, layer: Any) -> None:
        """Read the number of codes of the quantizer ``layer``.

        Raises
        ------
        ConfigurationError
            When ``layer`` is no quantizer (it has no ``codebook_size``).
        """
        size = getattr(layer, "codebook_size", None)
        if size is None:
            raise ConfigurationError(
                f"metric {self.name!r} reads a quantizer layer (vq or fsq), but {self.layer!r} is a "
                f"{getattr(getattr(layer, 'spec', None), 'form', type(layer).__name__)!r} layer"
            )
        self.size = int(size)

    @classmethod
    def default_layer(cls, layers: Mapping[str, Any], code_layer: str) -> str:
        """The first quantizer layer (else the code layer, which :meth:`bind` then refuses)."""
        return next((name for name, layer in layers.items() if hasattr(layer, "codebook_size")), code_layer)

    def update(self, batch: MetricBatch) -> None:
        """Add the batch's count of vectors per code to the state.

        Parameters
        ----------
        batch : MetricBatch
            The graph's outputs; ``'name:codes'`` holds int64 code indices, shape (n, *grid).
        """
        if self.size is None:
            raise ConfigurationError(f"metric {self.name!r} was not bound to its layer {self.layer!r}")
        codes = batch.outputs[f"{self.layer}:codes"].reshape(-1).long()
        self._add(torch.bincount(codes, minlength=self.size).to(torch.float64))

    def compute(self) -> float:
        """The fraction of codes with at least one vector (NaN before any batch)."""
        if self._sums is None:
            return float("nan")
        return float((self._sums > 0).to(torch.float64).mean())


class Perplexity(CodeUsage):
    """``exp`` of the entropy of the data's code frequencies (see the module docstring)."""

    name = "perplexity"

    def compute(self) -> float:
        """The perplexity over every vector seen (NaN before any batch)."""
        if self._sums is None or self._sums.sum() == 0:
            return float("nan")
        p = self._sums / self._sums.sum()
        p = p[p > 0]
        return float(torch.exp(-(p * p.log()).sum()))


def _posterior(metric: Metric, batch: MetricBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """A gaussian layer's posterior means and log-variances, (n, latents) float64."""
    key = f"{metric.layer}:mean"
    if key not in batch.outputs:
        raise ConfigurationError(f"metric {metric.name!r} reads a gaussian layer, and {metric.layer!r} is not one")
    mean = batch.outputs[key].flatten(1).to(torch.float64)
    return mean, batch.outputs[f"{metric.layer}:logvar"].flatten(1).to(torch.float64)


class KL(_Ratio):
    """Mean over examples of a gaussian layer's ``KL(q(z|x) || N(0, I))``, nats (summed over latents)."""

    name = "kl"
    needs_layer = True

    def update(self, batch: MetricBatch) -> None:
        """Add the batch's summed KL and its number of examples to the state.

        Parameters
        ----------
        batch : MetricBatch
            The graph's outputs, with the layer's ``'name:mean'`` and ``'name:logvar'``, (n, *latent_shape).
        """
        mean, logvar = _posterior(self, batch)
        kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar)
        self._add(torch.stack([kl.sum(), torch.tensor(mean.shape[0], dtype=torch.float64)]))


class ActiveUnits(Metric):
    """Burda et al.'s active units of a gaussian layer: latents with ``Var_x E_q[z_j|x] > 0.01``."""

    name = "active_units"
    needs_layer = True
    threshold = 0.01

    def update(self, batch: MetricBatch) -> None:
        """Add the batch's count and per-latent sums of the posterior mean and its square to the state.

        Parameters
        ----------
        batch : MetricBatch
            The graph's outputs, with the layer's ``'name:mean'``, shape (n, *latent_shape).
        """
        mean, _ = _posterior(self, batch)
        count = torch.tensor([mean.shape[0]], dtype=torch.float64)
        self._add(torch.cat([count, mean.sum(0), mean.square().sum(0)]))

    def compute(self) -> float:
        """The number of active latents over every example seen (the population variance).

        Returns
        -------
        float
            NaN before any batch.
        """
        if self._sums is None:
            return float("nan")
        n, d = self._sums[0], (self._sums.numel() - 1) // 2
        first, second = self._sums[1 : 1 + d] / n, self._sums[1 + d :] / n
        return float(((second - first.square()) > self.threshold).sum())


METRICS: Registry[type[Metric]] = Registry("metric")
for _metric in (MSE, FVU, R2, L0, DeadFraction, CodeUsage, Perplexity, KL, ActiveUnits):
    METRICS.register(_metric.name, _metric)


def build_metrics(
    names: Sequence[str], layers: Sequence[str] | Mapping[str, Any], code_layer: str
) -> dict[str, Metric]:
    """Metric objects for ``names`` (``'fvu'``, ``'l0'``, ``'l0:hid2'``, ...), keyed by the name given.

    Parameters
    ----------
    names : sequence of str
    layers : sequence of str, or dict of str to layer
        The model's layer names (a per-layer metric must name one of them); given the layers
        themselves, each metric reads what it needs of its layer (a quantizer's number of codes).
    code_layer : str
        The layer a per-layer metric reads when its name gives none.

    Raises
    ------
    ConfigurationError
        For an unknown metric or layer, or a layer given to a metric that takes none.
    """
    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        raise ConfigurationError(f"metrics must be a list of metric names such as ['fvu', 'l0'], got {names!r}")
    out: dict[str, Metric] = {}
    for name in names:
        if not isinstance(name, str):
            raise ConfigurationError(f"metrics must be a list of metric names, got {name!r} in {names!r}")
        base, _, layer = name.partition(":")
        cls = METRICS.get(base)
        if layer and not cls.needs_layer:
            raise ConfigurationError(f"metric {base!r} takes no layer, got {name!r}")
        if layer and layer not in layers:
            raise unknown_name_error(f"layer of metric {name!r}", layer, layers)
        if not cls.needs_layer:
            out[name] = cls()
            continue
        if isinstance(layers, Mapping):
            chosen = layer or cls.default_layer(layers, code_layer)
            metric = cls(chosen)
            metric.bind(layers[chosen])
        else:
            metric = cls(layer or code_layer)
        out[name] = metric
    return out


def compute_all(metrics: dict[str, Metric]) -> dict[str, float]:
    """``{name: metric.compute()}``."""
    return {name: metric.compute() for name, metric in metrics.items()}


def update_all(metrics: dict[str, Metric], batch: MetricBatch) -> None:
    """Update every metric with ``batch``."""
    for metric in metrics.values():
        metric.update(batch)
