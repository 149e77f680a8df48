"""A diagnosis of autoencoders that do not learn: findings about a model and its data.

``diagnose(net, x)`` runs a fixed set of checks and returns a list of
:class:`Finding` objects, errors first.  Each has a stable ``code``, a
``severity`` (``'error'``, ``'warning'`` or ``'info'``), a ``message`` that gives
the figure behind it, a ``remedy`` in plain words, and the measured ``value``.

Checks and their codes (thresholds are keyword arguments of :func:`diagnose`):

``diverged``
    NaN or Inf in the parameters or in the training history.
``output-range``
    Data outside the output activation's range (0..255 into a sigmoid).
``collapsed-code``
    Codes barely vary across inputs: ``sqrt(mean_j var_j(z)) / rms(z) < collapse_ratio``.
``mean-features``
    The model only copies the data mean: reconstructions vary less than
    ``mean_variance_ratio`` of the data's variance and their average is the data
    mean; or all first-layer features point along the data mean (mean cosine
    above ``mean_cosine``).
``dead-units``
    Hidden units whose output is constant over the data (range <= ``dead_tolerance``);
    layers that only pass values on (flatten, reshape, pool, upsample) are skipped.
``saturated-units``
    Bounded units (sigmoid, tanh, ...) within ``saturation_margin`` of their bounds
    on at least ``saturation_fraction`` of inputs.  Units whose bounds are (0, 1)
    that only sit near 0 are "off", as sparse units should be, and are not counted.
``trivial-loss``
    Reconstruction R^2 (``net.score``) at most ``trivial_r2``: no better than
    predicting the mean (a warning only, on fewer than ``MIN_FIT_ROWS`` = 10 rows).
``unshuffled-data``
    Row order correlated with content: lag-1 autocorrelation of a content
    statistic (row mean, first two principal components) above
    ``order_correlation``, or labels ``y`` in runs far longer than chance.
``fit`` (info)
    The reconstruction R^2, always reported when finite.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..data.checks import to_numpy
from ..data.sources import is_streamable
from ..data.validation import as_array, as_labels, integer, number
from ..errors import ConfigurationError, DataError
from ..model.activations import output_range

if TYPE_CHECKING:
    from ..autoencoder import Autoencoder

__all__ = ["Finding", "diagnose"]

log = logging.getLogger(__name__)

SEVERITIES = ("error", "warning", "info")

# Layers that only move or pick values of the layer before them: with a linear
# activation they have no units of their own, so a dead or saturated "unit" there
# is a unit of an earlier layer (already reported) or a position of a constant
# input region (MNIST's empty border after a flatten), not a fault of the model.
PASS_THROUGH_FORMS = ("flatten", "reshape", "pool", "upsample")

# Fewer rows than this make R^2 too noisy to call a model trivial with certainty.
MIN_FIT_ROWS = 10


@dataclasses.dataclass(frozen=True)
class Finding:
    """One result of :func:`diagnose`.

    Attributes
    ----------
    code : str
        Stable identifier, e.g. ``'dead-units'``.
    severity : str
        ``'error'`` (the model cannot work this way), ``'warning'`` or ``'info'``.
    message : str
        What was measured, with the figure.
    remedy : str
        What to change, naming the options that help.
    value : float or None
        The measured figure behind the finding.
    layer : str or None
        The layer concerned, when there is one.
    """

    code: str
    severity: str
    message: str
    remedy: str
    value: float | None = None
    layer: str | None = None

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ConfigurationError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")

    def __str__(self) -> str:
        return f"[{self.severity}] {self.code}: {self.message} Remedy: {self.remedy}"


def _subsample(n: int, max_samples: int) -> np.ndarray:
    # Evenly spaced rows keep the data's order (the order check needs it).
    if n <= max_samples:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_samples).round().astype(np.int64))


def _finite_params(net) -> tuple[bool, list[str]]:
    bad = [name.split(".", 1)[1] for name, p in net.graph.named_parameters() if not torch.isfinite(p).all()]
    return not bad, bad


def _history_bad(net) -> list[int]:
    epochs = []
    for entry in getattr(net, "history", []) or []:
        values = [*(entry.get("train") or {}).values(), *(entry.get("valid") or {}).values()]
        if any(isinstance(v, (int, float)) and not math.isfinite(v) for v in values):
            epochs.append(int(entry.get("epoch", 0)))
    return epochs


@torch.no_grad()
def _forward(net, xt: torch.Tensor) -> dict[str, np.ndarray]:
    graph = net.graph
    was_training = graph.training
    graph.eval()
    try:
        parts: dict[str, list[np.ndarray]] = {}
        for start in range(0, xt.shape[0], 4096):
            for key, value in graph(xt[start : start + 4096]).items():
                parts.setdefault(key, []).append(to_numpy(value).astype(np.float64))
        return {k: np.concatenate(v) for k, v in parts.items()}
    finally:
        graph.train(was_training)


def _units(values: np.ndarray) -> np.ndarray:
    """(n, units) with image-shaped layers as (n*positions, channels)."""
    if values.ndim <= 2:
        return values.reshape(values.shape[0], -1)
    return np.moveaxis(values.reshape(values.shape[0], values.shape[1], -1), 1, 2).reshape(-1, values.shape[1])


def _autocorrelation(series: np.ndarray) -> float:
    s = series - series.mean()
    denom = float(s @ s)
    return float(s[1:] @ s[:-1]) / denom if denom > 0 else 0.0


def diagnose(
    net: Autoencoder,
    x: Any,
    y: Any = None,
    *,
    max_samples: int = 5000,
    collapse_ratio: float = 1e-2,
    mean_variance_ratio: float = 0.05,
    mean_offset: float = 0.5,
    mean_cosine: float = 0.95,
    dead_tolerance: float = 1e-6,
    dead_error_fraction: float = 0.5,
    saturation_margin: float = 0.02,
    saturation_fraction: float = 0.95,
    saturated_units_warning: float = 0.1,
    saturated_units_error: float = 0.5,
    trivial_r2: float = 0.05,
    order_correlation: float = 0.2,
    label_runs: float = 0.5,
) -> list[Finding]:
    """Check a model and its data for the usual reasons an autoencoder does not learn.

    Parameters
    ----------
    net : Autoencoder
    x : array-like, shape (n, features) or (n, *input_shape)
        Data in the order the model was (or will be) trained on, before the
        model's preprocessing.
    y : array-like, shape (n,), optional
        Labels; sorted or long runs of equal labels are reported as unshuffled data.
    max_samples : int
        At most this many evenly spaced rows are used (default 5000).
    collapse_ratio : float
        ``collapsed-code`` when the code's spread across inputs, relative to its
        root-mean-square, is below this (default 0.01).
    mean_variance_ratio, mean_offset : float
        ``mean-features`` when the reconstructions' total variance is below
        ``mean_variance_ratio`` (0.05) of the data's and their average lies within
        ``mean_offset`` (0.5) data standard deviations of the data mean.
    mean_cosine : float
        ``mean-features`` also when the first layer's features' mean cosine
        similarity with the data mean exceeds this (0.95).
    dead_tolerance : float
        A unit whose output range over the data is at most this is dead (1e-6).
    dead_error_fraction : float
        Dead units are an error from this fraction of a layer on (0.5), else a warning.
    saturation_margin, saturation_fraction : float
        A bounded unit is saturated when within ``saturation_margin`` (0.02) of the
        range of a bound on at least ``saturation_fraction`` (0.95) of inputs.
    saturated_units_warning, saturated_units_error : float
        Fractions of a layer's units that make a warning (0.1) or an error (0.5).
    trivial_r2 : float
        ``trivial-loss`` when R^2 is at most this (0.05).
    order_correlation : float
        ``unshuffled-data`` when a content statistic's lag-1 autocorrelation
        along the rows exceeds this (0.2) and 5/sqrt(n).
    label_runs : float
        With ``y``: report when the fraction of neighbours with equal labels is
        more than ``label_runs`` (0.5) of the way from chance to 1.

    Returns
    -------
    list of Finding
        Errors first, then warnings, then infos; empty codes are never returned.
    """
    max_samples = integer("max_samples", max_samples, 2)
    inf = math.inf
    for key, value, low, high in (
        ("collapse_ratio", collapse_ratio, 0, inf),
        ("mean_variance_ratio", mean_variance_ratio, 0, inf),
        ("mean_offset", mean_offset, 0, inf),
        ("mean_cosine", mean_cosine, -1, 1),
        ("dead_tolerance", dead_tolerance, 0, inf),
        ("dead_error_fraction", dead_error_fraction, 0, 1),
        ("saturation_margin", saturation_margin, 0, 1),
        ("saturation_fraction", saturation_fraction, 0, 1),
        ("saturated_units_warning", saturated_units_warning, 0, 1),
        ("saturated_units_error", saturated_units_error, 0, 1),
        ("trivial_r2", trivial_r2, -inf, 1),
        ("order_correlation", order_correlation, -1, 1),
        ("label_runs", label_runs, 0, 1),
    ):
        number(key, value, low, high)
    if isinstance(x, (list, tuple)) and getattr(net, "weighted", False) and len(x) == 2:
        x = x[0]
    if is_streamable(x):
        # A memmap or an on-disk dataset (h5py, zarr): read only the sampled rows
        # (increasing, as h5py wants them), never the whole array.
        shape = tuple(x.shape)
    else:
        x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else as_array("x", x)
        shape = x.shape
    if len(shape) < 2 or shape[0] < 2:
        raise DataError(f"diagnose needs x with at least 2 examples in rows, got shape {shape}")
    rows = _subsample(shape[0], max_samples)
    raw = np.asarray(x[rows])
    # The model's own checks first (features, shape, finiteness): data that do not fit the
    # model is the more basic fault.  This is the network's input (after its preprocessing).
    xt = net._check(raw)
    if raw.size and (raw == raw[:1]).all():
        # Data with no variation leave nothing to learn and nothing to measure: every
        # unit is "dead", every code "collapsed" and R^2 undefined, which would blame
        # the model for what is wrong with the data.
        which = (
            f"all {shape[0]} rows of x"
            if len(rows) == shape[0]
            else f"all {len(rows)} rows sampled from the {shape[0]} of x"
        )
        raise DataError(
            f"diagnose needs examples that differ, but {which} are identical: the data have no "
            "variance to learn (check how they were loaded and scaled)"
        )
    labels = None if y is None else as_labels("y", y).reshape(-1)
    if labels is not None and labels.shape[0] != shape[0]:
        raise DataError(f"y has {labels.shape[0]} labels, but x has {shape[0]} examples")
    findings: list[Finding] = []

    findings += _check_order(raw, None if labels is None else labels[rows], order_correlation, label_runs)

    ok, bad_params = _finite_params(net)
    bad_epochs = _history_bad(net)
    if not ok or bad_epochs:
        what = []
        if bad_params:
            what.append(f"parameters {', '.join(bad_params)} hold NaN or Inf")
        if bad_epochs:
            what.append(f"the training history has NaN/Inf losses at epoch(s) {bad_epochs[:5]}")
        findings.append(
            Finding(
                "diverged",
                "error",
                "Training diverged: " + "; ".join(what) + ".",
                "Lower learning_rate (e.g. by 10x), set max_gradient_norm=1.0, scale the inputs to unit range "
                "(aekit.preprocessing), and retrain from a fresh model.",
                float(len(bad_params)),
                bad_params[0].split(".")[0] if bad_params else None,
            )
        )
    if not ok:
        return _sorted(findings)  # nothing else can be measured on NaN weights

    target = to_numpy(xt).astype(np.float64).reshape(len(raw), -1)
    outputs = _forward(net, xt)
    graph = net.graph
    out_name = graph.output_name
    recon = outputs[f"{out_name}:out"].reshape(len(raw), -1)
    same_shape = recon.shape == target.shape

    if same_shape:
        findings += _check_output_range(graph, target, out_name)

    code = net.code_layer
    if code != graph.input_name and code != out_name:
        findings += _check_collapse(outputs[f"{code}:out"], code, collapse_ratio)
    if same_shape:
        findings += _check_mean(net, target, recon, mean_variance_ratio, mean_offset, mean_cosine)
    specs = {spec.name: spec for spec in net.specs}
    for name in graph.hidden_names:
        spec = specs[name]
        if spec.form in PASS_THROUGH_FORMS and output_range(spec.activation) == (-math.inf, math.inf):
            continue
        values = _units(outputs[f"{name}:out"])
        findings += _check_dead(values, name, dead_tolerance, dead_error_fraction)
        findings += _check_saturated(
            graph.layers[name],
            values,
            name,
            saturation_margin,
            saturation_fraction,
            saturated_units_warning,
            saturated_units_error,
        )
    if same_shape:
        findings += _check_fit(net, raw, trivial_r2)
    return _sorted(findings)


def _sorted(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: SEVERITIES.index(f.severity))


# ---------------------------------------------------------------------------- checks
def _check_order(raw: np.ndarray, labels: np.ndarray | None, threshold: float, label_runs: float) -> list[Finding]:
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


def _check_output_range(graph, target: np.ndarray, out_name: str) -> list[Finding]:
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


def _check_collapse(codes: np.ndarray, name: str, ratio: float) -> list[Finding]:
    z = codes.reshape(codes.shape[0], -1)
    z = z[np.isfinite(z).all(axis=1)]
    if len(z) < 2:
        return []
    spread = math.sqrt(float(z.var(axis=0).mean()))
    rms = math.sqrt(float(np.mean(z**2)))
    relative = spread / rms if rms > 0 else 0.0
    if relative >= ratio:
        return []
    return [
        Finding(
            "collapsed-code",
            "error",
            f"The codes of layer {name!r} barely change from one input to the next: their spread across inputs "
            f"is {relative:.2e} of their size (rms {rms:.3g}), so the decoder gets the same code for every input.",
            "Check that the encoder weights are not zero or tiny (re-initialise), lower hidden_l1/weight_l1/"
            "sparsity_weight if they crush the code, scale the inputs, and try a larger learning_rate or more "
            "epochs; with relu units, try 'sigmoid' or a smaller learning_rate.",
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


def _check_mean(net, target, recon, var_ratio, offset_limit, cos_limit) -> list[Finding]:
    mean = target.mean(axis=0)
    data_var = float(target.var(axis=0).sum())
    if data_var <= 0:
        return []
    ratio = float(recon.var(axis=0).sum()) / data_var
    offset = float(np.linalg.norm(recon.mean(axis=0) - mean)) / math.sqrt(data_var)
    remedy = (
        "The model learned only the average input. Add capacity or freedom to the code: more hidden "
        "units, a lower hidden_l1/weight_l1/sparsity_weight/weight_l2 (a strong penalty makes copying "
        "the mean optimal), a larger learning_rate or more epochs, and inputs scaled to unit range; "
        "subtracting the mean (aekit.preprocessing) removes the easy answer."
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


def _check_dead(values: np.ndarray, name: str, tolerance: float, error_fraction: float) -> list[Finding]:
    finite = np.where(np.isfinite(values), values, np.nan)
    spans = np.nanmax(finite, axis=0) - np.nanmin(finite, axis=0)
    dead = np.flatnonzero(~(spans > tolerance))
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
            f"every input (units {listed}): they carry no information.",
            "With relu units, lower the learning_rate, try 'leaky-relu' or 'elu', or start the biases above 0 "
            "(mean_b=0.01); lower hidden_l1/weight_l1 or sparsity_weight if they switch units off; scale the "
            "inputs; fewer hidden units would do the same work.",
            fraction,
            name,
        )
    ]


def _check_saturated(layer, values, name, margin, fraction, warn_at, error_at) -> list[Finding]:
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
            "Scale the inputs to unit range (aekit.preprocessing), use smaller initial weights (std=...), a smaller "
            "learning_rate, or weight_l2 to keep weights small; relu units do not saturate.",
            share,
            name,
        )
    ]


def _check_fit(net, raw: np.ndarray, trivial: float) -> list[Finding]:
    try:
        r2 = float(net.score(raw))
    except (DataError, ValueError) as error:
        log.debug("score failed in diagnose: %s", error)
        return []
    if not math.isfinite(r2):
        return []
    if r2 <= trivial:
        # R^2 compares with the mean of the rows measured, a baseline that fits a handful of
        # rows unfairly well (a good digits model scores -0.6 on some pairs of rows): on so
        # few rows a low figure is a warning, not proof that the model learned nothing.
        few = raw.shape[0] < MIN_FIT_ROWS
        return [
            Finding(
                "trivial-loss",
                "warning" if few else "error",
                f"The reconstruction explains R^2 = {r2:.3f} of the data's variance: "
                f"{'worse than' if r2 < 0 else 'no better than'} predicting the mean of each feature"
                + (f" (measured on only {raw.shape[0]} rows, too few for a reliable figure)." if few else "."),
                "Train longer or with a larger learning_rate, lower hidden_l1/weight_l1/weight_l2/sparsity_weight, "
                "add hidden units, check the output activation's range against the data, and scale the inputs.",
                r2,
            )
        ]
    return [
        Finding(
            "fit",
            "info",
            f"The reconstruction explains R^2 = {r2:.3f} of the data's variance.",
            "None needed." if r2 > 0.5 else "More hidden units or epochs would help.",
            r2,
        )
    ]
