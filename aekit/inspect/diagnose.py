"""A diagnosis of autoencoders that do not learn: findings about a model, its training and its data.

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
``dead-latents``, ``dense-latents``
    For a sparse dictionary code (``topk``, ``batchtopk``, ``jumprelu``), latents that never
    fire over every row of ``x`` (a warning from ``dead_latents_warning`` = 1% of the
    latents, an error from ``dead_latents_error`` = 10%), and latents that fire on more than
    ``dense_density`` (50%) of the rows (:mod:`aekit.inspect.sparse_checks`).  These layers
    take these checks instead of ``dead-units``, which reads a sample.
``saturated-units``
    Bounded units (sigmoid, tanh, ...) within ``saturation_margin`` of their bounds
    on at least ``saturation_fraction`` of inputs.  Units whose bounds are (0, 1)
    that only sit near 0 are "off", as sparse units should be, and are not counted.
``trivial-loss``
    Reconstruction R^2 (``net.score``) at most ``trivial_r2``: no better than
    predicting the mean (a warning only, on fewer than ``MIN_FIT_ROWS`` = 10 rows).
``too-few-steps`` (warning)
    The model took fewer than ``min_steps`` optimizer steps (counted from ``net.history``,
    where each epoch records its ``steps``), and its loss was still falling or its fit is
    poor (R^2 below 0.5).
``still-improving``
    The training loss was still falling at the end: the least-squares slope of the last
    ``improving_window`` epochs' losses, relative to the loss, is a fall of more than
    ``improving_rate`` per epoch, in at least half of those epochs (and the validation
    loss, where recorded, fell too).  A warning with a poor fit or too few steps, else info.
``unshuffled-data``
    Row order correlated with content: lag-1 autocorrelation of a content
    statistic (row mean, first two principal components) above
    ``order_correlation``, or labels ``y`` in runs far longer than chance.
``fit`` (info)
    The reconstruction R^2, always reported when finite.
``codebook-collapse``, ``dead-codes``, ``commitment-drift``
    Quantizer layers (vq, fsq) that use few of their codes on the data, codes no vector chooses,
    a commitment term that keeps growing: see :mod:`aekit.inspect.codebook_checks`.
``posterior-collapse``, ``inactive-latents``, ``kl-dominates``, ``logvar-range``
    A variational autoencoder's gaussian layers (:mod:`aekit.inspect.variational`): no
    active latent (Burda et al.'s definition) or a total KL below 0.1 nats; some latents
    inactive (info); a KL term that outweighs the reconstruction; log-variances held by
    the clip.  Gaussian layers are left out of the unit checks above.

Every remedy about the learning rate and the number of steps comes from one decision per
diagnosis (:mod:`aekit.inspect.progress`): more steps when the model is undertrained, with a
larger learning rate only when the loss fell steadily and no unit is dead or saturated; a
smaller learning rate after divergence, a rising loss, or (training settled) dead or
saturated units.  So no two findings of a diagnosis ask for opposite changes.

The rows examined are :func:`~aekit.inspect.measures.sample_rows` (``max_samples``
evenly spaced rows), the same as :func:`aekit.report.write_report`'s; messages whose figure
depends on them say so when they are a sample.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..data.checks import to_numpy
from ..data.sources import is_streamable
from ..data.validation import as_array, as_labels, integer, number
from ..errors import DataError
from ..model.activations import output_range
from .checks import (
    check_collapse,
    check_dead,
    check_fit,
    check_mean,
    check_order,
    check_output_range,
    check_saturated,
    fit_r2,
)
from .codebook_checks import check_codebooks, check_commitment_drift, quantizer_layers
from .findings import Finding, sort_findings
from .measures import MAX_SAMPLES, sample_note, sample_rows, unit_columns
from .progress import (
    GOOD_FIT,
    MIN_STEPS,
    decide_pace,
    improving_finding,
    read_progress,
    steps_finding,
    training_findings,
)
from .sparse_checks import sparse_code_layers, sparse_findings
from .variational import check_latents, vae_layers

if TYPE_CHECKING:
    from ..autoencoder import Autoencoder

__all__ = ["Finding", "diagnose"]

# Layers that only move or pick values of the layer before them: with a linear
# activation they have no units of their own, so a dead or saturated "unit" there
# is a unit of an earlier layer (already reported) or a position of a constant
# input region (MNIST's empty border after a flatten), not a fault of the model.
PASS_THROUGH_FORMS = ("flatten", "reshape", "pool", "upsample")

# The findings whose remedies carry the diagnosis's advice on steps and learning rate.
_PACED = ("collapsed-code", "mean-features", "dead-units", "dead-latents", "saturated-units", "trivial-loss")


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


def diagnose(
    net: Autoencoder,
    x: Any,
    y: Any = None,
    *,
    max_samples: int = MAX_SAMPLES,
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
    min_steps: int = MIN_STEPS,
    improving_rate: float = 0.005,
    improving_window: int = 10,
    dead_latents_warning: float = 0.01,
    dead_latents_error: float = 0.1,
    dense_density: float = 0.5,
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
        At most this many evenly spaced rows are used (default 5000, as
        :func:`aekit.report.write_report`).
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
    min_steps : int
        ``too-few-steps`` below this many optimizer steps (1000).
    improving_rate, improving_window : float, int
        ``still-improving`` when the training loss of the last ``improving_window``
        (10) epochs falls by more than ``improving_rate`` (0.005, i.e. 0.5%) of
        itself per epoch (least-squares slope).
    dead_latents_warning, dead_latents_error : float
        Fractions of a sparse code's latents, dead over all of ``x``, that make a
        ``dead-latents`` warning (0.01) or error (0.1).
    dense_density : float
        ``dense-latents`` for latents firing on more than this fraction of ``x`` (0.5).

    Returns
    -------
    list of Finding
        Errors first, then warnings, then infos; empty codes are never returned.
    """
    max_samples = integer("max_samples", max_samples, 2)
    min_steps = integer("min_steps", min_steps, 0)
    improving_window = integer("improving_window", improving_window, 3)
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
        ("improving_rate", improving_rate, 0, inf),
        ("dead_latents_warning", dead_latents_warning, 0, 1),
        ("dead_latents_error", dead_latents_error, 0, 1),
        ("dense_density", dense_density, 0, 1),
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
    rows = sample_rows(shape[0], max_samples)
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
    note = sample_note(len(rows), shape[0])
    findings: list[Finding] = []

    findings += check_order(raw, None if labels is None else labels[rows], order_correlation, label_runs)

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
        return sort_findings(findings)  # nothing else can be measured on NaN weights

    target = to_numpy(xt).astype(np.float64).reshape(len(raw), -1)
    outputs = _forward(net, xt)
    graph = net.graph
    out_name = graph.output_name
    recon = outputs[f"{out_name}:out"].reshape(len(raw), -1)
    same_shape = recon.shape == target.shape

    if same_shape:
        findings += check_output_range(graph, target, out_name)

    model: list[Finding] = []  # the findings whose remedies take the advice on steps and learning rate
    code = net.code_layer
    quantizers = quantizer_layers(graph)  # their codes are judged by usage, not as units (below)
    latents = vae_layers(net)  # a gaussian layer's means are judged by check_latents, not as units
    if code != graph.input_name and code != out_name and code not in quantizers and code not in latents:
        model += check_collapse(outputs[f"{code}:out"], code, collapse_ratio)
    if same_shape:
        model += check_mean(net, target, recon, mean_variance_ratio, mean_offset, mean_cosine)
    specs = {spec.name: spec for spec in net.specs}
    sparse = sparse_code_layers(net)
    sparse_found, troubled = sparse_findings(net, x, shape[0], dead_latents_warning, dead_latents_error, dense_density)
    model += sparse_found
    for name in graph.hidden_names:
        spec = specs[name]
        if name in sparse:
            continue  # read over all of x by the sparse checks, above
        if (
            name in quantizers
            or name in latents
            or (spec.form in PASS_THROUGH_FORMS and output_range(spec.activation) == (-math.inf, math.inf))
        ):
            continue
        values = unit_columns(outputs[f"{name}:out"])
        layer_findings = check_dead(values, name, dead_tolerance, dead_error_fraction, note)
        layer_findings += check_saturated(
            graph.layers[name],
            values,
            name,
            saturation_margin,
            saturation_fraction,
            saturated_units_warning,
            saturated_units_error,
        )
        troubled += max((round((f.value or 0.0) * values.shape[1]) for f in layer_findings), default=0)
        model += layer_findings
    findings += check_latents(net, xt, note)
    r2 = fit_r2(net, raw) if same_shape else None
    fit = check_fit(r2, len(raw), trivial_r2, bool(getattr(net, "history", None)), note) if same_shape else []

    findings += check_codebooks(quantizers, outputs, note)
    findings += check_commitment_drift(quantizers, getattr(net, "history", None) or [])
    progress = None if bad_epochs else read_progress(getattr(net, "history", None), improving_window, improving_rate)
    few, improving = training_findings(progress, r2, min_steps)
    pace = decide_pace(
        progress,
        diverged=bool(bad_epochs),
        longer=few or improving,
        troubled_units=troubled,
        see="too-few-steps" if few else "still-improving" if improving else None,
        min_steps=min_steps,
    )
    advice = pace.short()
    for finding in model + fit:
        if advice and finding.code in _PACED:
            finding = dataclasses.replace(finding, remedy=f"{finding.remedy} {advice}")
        elif advice and finding.code == "fit":  # "None needed" for the fit, but the training has advice
            good = r2 is not None and r2 >= GOOD_FIT
            finding = dataclasses.replace(finding, remedy=advice if good else f"{finding.remedy} {advice}")
        findings.append(finding)
    if progress is not None and few:
        findings.append(steps_finding(progress, r2, min_steps, pace))
    if progress is not None and improving:
        findings.append(improving_finding(progress, r2, few, pace))
    return sort_findings(findings)
