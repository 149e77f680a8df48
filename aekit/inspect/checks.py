"""The checks of :func:`aekit.diagnose` on a model's outputs and its data, one function per finding.

Each returns a list of :class:`~aekit.inspect.findings.Finding` (empty when all is well).  Their
remedies name what to change in the model, the penalties and the data; advice on the learning rate
and the number of steps is the diagnosis's :class:`~aekit.inspect.progress.Pace`, added by
:func:`aekit.diagnose` so that every remedy of one diagnosis agrees.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from ..errors import DataError
from ..model.activations import output_range
from .findings import Finding
from .measures import code_spread, dead_units
from .progress import GOOD_FIT

__all__ = [
    "MIN_FIT_ROWS",
    "check_collapse",
    "check_dead",
    "check_fit",
    "fit_r2",
    "check_mean",
    "check_order",
    "check_output_range",
    "check_saturated",
]

log = logging.getLogger(__name__)

# Fewer rows than this make R^2 too noisy to call a model trivial with certainty.
MIN_FIT_ROWS = 10


def _autocorrelation(series: np.ndarray) -> float:
    s = series - series.mean()
    denom = float(s @ s)
    return float(s[1:] @ s[:-1]) / denom if denom > 0 else 0.0


def check_order(raw: np.ndarray, labels: np.ndarray | None, threshold: float, label_runs: float) -> list[Finding]:
    """``unshuffled-data``: labels in long runs, or a content statistic autocorrelated along the rows."""
    remedy = (
        "Shuffle the rows once before training (x = x[np.random.permutation(len(x))]), before any split "
        "into training and validation data; aekit re-mixes batches every epoch unless shuffle=False, "
        "but a validation set sliced off the end of sorted data, or shuffle=False, sees a biased sample."
    )
    n = raw.shape[0]
    if labels is not None and n > 2:
        same = float(np.mean(labels[1:] == labels[:-1]))
        _, counts = np.unique(labels, return_counts=True)
        chance = float(((counts / n) ** 2).sum())
        if chance < 1 and same > chance + label_runs * (1 - chance):
            return [
                Finding(
                    "unshuffled-data",
                    "warning",
                    f"The labels come in runs: {same:.0%} of neighbouring rows share a label, against "
                    f"{chance:.0%} in a shuffled order.",
                    remedy,
                    same,
                )
            ]
    if n < 20:
        return []
    flat = raw.reshape(n, -1).astype(np.float64)
    flat = np.where(np.isfinite(flat), flat, 0.0)
    stats = {"row mean": flat.mean(axis=1)}
    centred = flat - flat.mean(axis=0)
    if centred.shape[1] > 1 and np.any(centred):
        _, _, vt = np.linalg.svd(centred[: min(n, 2000)], full_matrices=False)
        for k in range(min(2, vt.shape[0])):
            stats[f"principal component {k + 1}"] = centred @ vt[k]
    name, corr = max(((k, _autocorrelation(v)) for k, v in stats.items()), key=lambda kv: kv[1])
    if corr > max(threshold, 5.0 / math.sqrt(n)):
        return [
            Finding(
                "unshuffled-data",
                "warning",
                f"The row order follows the content: the {name} of consecutive rows has autocorrelation "
                f"{corr:.2f} (about 0 +/- {1 / math.sqrt(n):.2f} in a shuffled order).",
                remedy,
                corr,
            )
        ]
    return []


def check_output_range(graph, target: np.ndarray, out_name: str) -> list[Finding]:
    """``output-range``: data values the output activation can never produce."""
    activation = graph.layers[out_name].spec.activation
    low, high = output_range(activation)
    finite = target[np.isfinite(target)]
    if finite.size == 0 or (low == -math.inf and high == math.inf):
        return []
    tol = 1e-6 * max(1.0, high - low if math.isfinite(high - low) else 1.0)
    outside = float(np.mean((finite < low - tol) | (finite > high + tol)))
    if outside == 0:
        return []
    severity = "error" if outside > 0.01 else "warning"
    return [
        Finding(
            "output-range",
            severity,
            f"{outside:.1%} of the data values lie outside the range of the output activation {activation!r} "
            f"[{low:g}, {high:g}]: the data span [{finite.min():.4g}, {finite.max():.4g}], so those values can "
            "never be reconstructed.",
            f"Scale the data into [{low:g}, {high:g}] (e.g. divide 0..255 pixels by 255, or use "
            "aekit.preprocessing scaling saved with the model), or use a 'linear' output layer.",
            outside,
            out_name,
        )
    ]


def check_collapse(codes: np.ndarray, name: str, ratio: float) -> list[Finding]:
    """``collapsed-code``: the code's spread across inputs is below ``ratio`` of its size."""
    if len(codes) < 2 or np.isfinite(codes.reshape(len(codes), -1)).all(axis=1).sum() < 2:
        return []
    _, rms, relative = code_spread(codes)
    if relative >= ratio:
        return []
    return [
        Finding(
            "collapsed-code",
            "error",
            f"The codes of layer {name!r} barely change from one input to the next: their spread across inputs "
            f"is {relative:.2e} of their size (rms {rms:.3g}), so the decoder gets the same code for every input.",
            "Check that the encoder weights are not zero or tiny (re-initialise), lower hidden_l1/weight_l1/"
            "sparsity_weight if they crush the code, and scale the inputs; with relu units, try 'leaky-relu' "
            "or 'sigmoid'.",
            relative,
            name,
        )
    ]


def _first_features(net) -> np.ndarray | None:
    graph = net.graph
    for name in graph.hidden_names:
        layer = graph.layers[name]
        if graph.sources.get(name) == graph.input_name and layer.spec.form == "dense":
            return layer.w.detach().cpu().double().numpy().T  # (units, n_in)
    return None


def check_mean(net, target, recon, var_ratio, offset_limit, cos_limit) -> list[Finding]:
    """``mean-features``: reconstructions are the data mean, or every first-layer feature points along it."""
    mean = target.mean(axis=0)
    data_var = float(target.var(axis=0).sum())
    if data_var <= 0:
        return []
    ratio = float(recon.var(axis=0).sum()) / data_var
    offset = float(np.linalg.norm(recon.mean(axis=0) - mean)) / math.sqrt(data_var)
    remedy = (
        "The model learned only the average input. Add capacity or freedom to the code: more hidden "
        "units, a lower hidden_l1/weight_l1/sparsity_weight/weight_l2 (a strong penalty makes copying "
        "the mean optimal), and inputs scaled to unit range; subtracting the mean (aekit.preprocessing) "
        "removes the easy answer."
    )
    if ratio < var_ratio and offset < offset_limit:
        return [
            Finding(
                "mean-features",
                "error",
                f"Reconstructions of different inputs are nearly identical: they vary {ratio:.1%} as much as the data "
                f"and their average lies {offset:.2f} data standard deviations from the data mean, i.e. the model "
                "outputs the data mean.",
                remedy,
                ratio,
            )
        ]
    features = _first_features(net)
    norm_mean = float(np.linalg.norm(mean))
    if features is not None and norm_mean > 0 and features.shape[0] > 1:
        norms = np.linalg.norm(features, axis=1)
        live = norms > 0
        if live.sum() > 1:
            cos = np.abs(features[live] @ mean) / (norms[live] * norm_mean)
            if float(cos.mean()) > cos_limit:
                return [
                    Finding(
                        "mean-features",
                        "error",
                        f"The first layer's {int(live.sum())} features all look like the data mean (mean |cosine| "
                        f"with it {float(cos.mean()):.3f}): every unit responds to overall brightness only.",
                        remedy,
                        float(cos.mean()),
                    )
                ]
    return []


def check_dead(values: np.ndarray, name: str, tolerance: float, error_fraction: float, note: str = "") -> list[Finding]:
    """``dead-units``: units whose output is constant over the rows (:func:`~aekit.inspect.measures.dead_units`).

    ``values`` is (rows, units); ``note`` says how the rows were sampled (see ``sample_note``).
    """
    dead = np.flatnonzero(dead_units(values, tolerance))
    if dead.size == 0:
        return []
    fraction = dead.size / values.shape[1]
    severity = "error" if fraction >= error_fraction else "warning"
    listed = ", ".join(map(str, dead[:10])) + (", ..." if dead.size > 10 else "")
    return [
        Finding(
            "dead-units",
            severity,
            f"{dead.size} of {values.shape[1]} units of layer {name!r} ({fraction:.0%}) give the same output for "
            f"every input{note} (units {listed}): they carry no information.",
            "With relu units, try 'leaky-relu' or 'elu', or start the biases above 0 (mean_b=0.01); lower "
            "hidden_l1/weight_l1 or sparsity_weight if they switch units off; scale the inputs; fewer hidden "
            "units would do the same work.",
            fraction,
            name,
        )
    ]


def check_saturated(layer, values, name, margin, fraction, warn_at, error_at) -> list[Finding]:
    """``saturated-units``: bounded units near a bound on most inputs ((0, 1) units at 0 are "off", not stuck)."""
    low, high = output_range(layer.spec.activation)
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low or layer.spec.activation.endswith("softmax"):
        return []
    width = margin * (high - low)
    near_low = values <= low + width
    near_high = values >= high - width
    stuck = (near_low | near_high).mean(axis=0) >= fraction
    if low == 0.0:
        # (0, 1) units sitting at 0 are "off", as sparse codes want; saturation means reaching the top.
        stuck &= near_high.mean(axis=0) >= 1.0 - fraction
    share = float(stuck.mean())
    if share < warn_at:
        return []
    severity = "error" if share >= error_at else "warning"
    return [
        Finding(
            "saturated-units",
            severity,
            f"{int(stuck.sum())} of {values.shape[1]} {layer.spec.activation} units of layer {name!r} ({share:.0%}) "
            f"sit within {margin:.0%} of their bounds on at least {fraction:.0%} of inputs, where their gradient "
            "vanishes.",
            "Scale the inputs to unit range (aekit.preprocessing), use smaller initial weights (std=...), or "
            "weight_l2 to keep weights small; relu units do not saturate.",
            share,
            name,
        )
    ]


def fit_r2(net, raw: np.ndarray) -> float | None:
    """The reconstruction R^2 of ``net`` on ``raw`` (``net.score``); None when it cannot be measured."""
    try:
        r2 = float(net.score(raw))
    except (DataError, ValueError) as error:
        log.debug("score failed in diagnose: %s", error)
        return None
    return r2 if math.isfinite(r2) else None


def check_fit(r2: float | None, rows: int, trivial: float, trained: bool, note: str = "") -> list[Finding]:
    """``trivial-loss`` when R^2 <= ``trivial`` (a warning only on fewer than ``MIN_FIT_ROWS`` rows), else ``fit``.

    ``trained``: the model has a training history (an untrained model is told to train first).
    """
    if r2 is None:
        return []
    if r2 <= trivial:
        # R^2 compares with the mean of the rows measured, a baseline that fits a handful of
        # rows unfairly well (a good digits model scores -0.6 on some pairs of rows): on so
        # few rows a low figure is a warning, not proof that the model learned nothing.
        few = rows < MIN_FIT_ROWS
        return [
            Finding(
                "trivial-loss",
                "warning" if few else "error",
                f"The reconstruction explains R^2 = {r2:.3f} of the data's variance{note}: "
                f"{'worse than' if r2 < 0 else 'no better than'} predicting the mean of each feature"
                + (f" (measured on only {rows} rows, too few for a reliable figure)." if few else "."),
                ("" if trained else "Train the model: it has no training history. ")
                + "Lower hidden_l1/weight_l1/weight_l2/sparsity_weight, add hidden units, check the output "
                "activation's range against the data, and scale the inputs.",
                r2,
            )
        ]
    return [
        Finding(
            "fit",
            "info",
            f"The reconstruction explains R^2 = {r2:.3f} of the data's variance{note}.",
            "None needed." if r2 >= GOOD_FIT else "More hidden units would help.",
            r2,
        )
    ]
