"""More exact reconstruction and code metrics, the figures sparse-autoencoder work reports.

Registered in :data:`aekit.objective.metrics.METRICS` beside ``mse``/``fvu``/``r2``; the
definitions (``x`` the target, ``x_hat`` the reconstruction, ``r = x - x_hat``, sums over
every example ``i`` and feature ``j`` of the data, ``bar`` a per-feature mean over the data):

``explained_variance``
    ``1 - sum_ij (r_ij - rbar_j)^2 / sum_ij (x_ij - xbar_j)^2``: the variance of the
    residual over the variance of the data, both around their per-feature means.  This is
    scikit-learn's ``explained_variance_score(x, x_hat, multioutput='variance_weighted')``;
    unlike ``r2 = 1 - fvu`` it forgives a constant offset of the reconstruction.  (SAELens
    reports a per-batch average of a per-token ratio under this name; that figure depends
    on the batch size, this one does not.)
``cosine``
    The mean over examples of ``x_i . x_hat_i / (|x_i| |x_hat_i|)`` (0 for an example where
    either norm is 0).
``l2_ratio``
    The mean over examples of ``|x_hat_i| / |x_i|`` (examples with ``|x_i| = 0`` left out):
    below 1 when the code shrinks the reconstruction (the L1 penalty's bias).
``density`` (of a layer, default the code layer)
    The mean over the layer's units of each unit's firing density, the fraction of examples
    on which it is non-zero; :meth:`Density.per_unit` gives the densities themselves
    (for the log-density histogram of :func:`aekit.inspect.densities.density_histogram`).

With per-value weights, ``explained_variance`` weighs each value as ``fvu`` does;
``cosine`` and ``l2_ratio`` are per-example geometry and ignore weights.
"""

from __future__ import annotations

import numpy as np
import torch

from .metrics import METRICS, Metric, MetricBatch, _flat, _Ratio, centred_sum_of_squares, layer_codes

__all__ = ["Cosine", "Density", "ExplainedVariance", "L2Ratio"]


class ExplainedVariance(Metric):
    """``1 - var(x - x_hat) / var(x)``, each summed over features around per-feature means."""

    name = "explained_variance"

    def update(self, batch: MetricBatch) -> None:
        """Add the batch's per-feature sums of w, w r, w r^2, w x and w x^2 to the state.

        Parameters
        ----------
        batch : MetricBatch
            The batch's target and weights, shape (n, *input_shape), and the graph's outputs.
        """
        target, recon, weight = _flat(batch)
        resid = target - recon
        parts = [weight, weight * resid, weight * resid.square(), weight * target, weight * target.square()]
        self._add(torch.cat([p.sum(0) for p in parts]))

    def compute(self) -> float:
        """The explained variance over every batch seen (constant data: 1 if the residual is constant, else -inf).

        Returns
        -------
        float
            NaN before any batch.
        """
        if self._sums is None:
            return float("nan")
        w, wr, wrr, wx, wxx = self._sums.reshape(5, -1)
        resid_var = centred_sum_of_squares(w, wr, wrr)
        total_var = centred_sum_of_squares(w, wx, wxx)
        if total_var > 0:
            return 1.0 - resid_var / total_var
        return 1.0 if resid_var == 0 else -float("inf")


class Cosine(_Ratio):
    """Mean over examples of the cosine of ``x`` and ``x_hat``."""

    name = "cosine"

    def update(self, batch: MetricBatch) -> None:
        """Add the batch's sum of per-example cosines and its number of examples to the state.

        Parameters
        ----------
        batch : MetricBatch
            The batch's target, shape (n, *input_shape), and the graph's outputs.
        """
        target, recon, _ = _flat(batch)
        norms = target.norm(dim=1) * recon.norm(dim=1)
        cos = torch.where(norms > 0, (target * recon).sum(1) / norms.clamp_min(1e-300), torch.zeros_like(norms))
        self._add(torch.stack([cos.sum(), torch.tensor(float(cos.shape[0]), dtype=torch.float64)]))


class L2Ratio(_Ratio):
    """Mean over examples (with ``|x| > 0``) of ``|x_hat| / |x|``."""

    name = "l2_ratio"

    def update(self, batch: MetricBatch) -> None:
        """Add the batch's sum of per-example norm ratios and its count of non-zero examples to the state.

        Parameters
        ----------
        batch : MetricBatch
            The batch's target, shape (n, *input_shape), and the graph's outputs.
        """
        target, recon, _ = _flat(batch)
        x_norm = target.norm(dim=1)
        keep = x_norm > 0
        ratio = recon.norm(dim=1)[keep] / x_norm[keep]
        self._add(torch.stack([ratio.sum(), keep.sum().to(torch.float64)]))


class Density(Metric):
    """Per-unit firing densities of a layer (fraction of examples where a unit is non-zero); their mean."""

    name = "density"
    needs_layer = True

    def update(self, batch: MetricBatch) -> None:
        """Add the batch's per-unit counts of non-zero values, then its number of examples, to the state.

        Parameters
        ----------
        batch : MetricBatch
            The graph's outputs for the batch; the layer's ``'name:out'`` has shape (n, *layer_shape).
        """
        codes = layer_codes(self, batch)
        counts = (codes != 0).sum(0).to(torch.float64)
        self._add(torch.cat([counts, torch.tensor([float(codes.shape[0])], dtype=torch.float64)]))

    def per_unit(self) -> np.ndarray:
        """Each unit's firing density over every example seen, shape (units,) (empty before any batch)."""
        if self._sums is None or self._sums[-1] == 0:
            return np.zeros(0)
        return (self._sums[:-1] / self._sums[-1]).numpy()

    def compute(self) -> float:
        """The mean of the per-unit densities (the layer's L0 over its number of units).

        Returns
        -------
        float
            NaN before any batch.
        """
        densities = self.per_unit()
        return float(densities.mean()) if densities.size else float("nan")


for _metric in (ExplainedVariance, Cosine, L2Ratio, Density):
    METRICS.register(_metric.name, _metric)
