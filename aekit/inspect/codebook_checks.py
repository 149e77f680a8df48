"""The checks of :func:`aekit.diagnose` for quantizer layers (vq, fsq): codebook collapse, dead codes, commitment drift.

``codebook-collapse``
    A quantizer uses few of its codes on the data: an error under :data:`COLLAPSE_ERROR` (10%)
    of the codes, a warning under :data:`COLLAPSE_WARNING` (50%).
``dead-codes`` (warning)
    More usage than that, but at least :data:`DEAD_CODES_FRACTION` (5%) of the codes are chosen by
    no vector of the data.
``commitment-drift`` (warning)
    A VQ layer's commitment term (``'name.commitment'`` in the training monitors) grew over the
    last epochs to more than :data:`DRIFT_GROWTH` (2) times its lowest value: the encoder's
    outputs move away from the codes faster than the codebook follows them.

Usage is counted over the rows examined (all of them, or the diagnosis's sample), never per batch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..model.layers.quantize import Quantizer
from .findings import Finding

__all__ = [
    "COLLAPSE_ERROR",
    "COLLAPSE_WARNING",
    "DEAD_CODES_FRACTION",
    "DRIFT_GROWTH",
    "check_codebooks",
    "check_commitment_drift",
    "code_counts",
    "levels_used",
    "quantizer_layers",
]

COLLAPSE_ERROR = 0.1
COLLAPSE_WARNING = 0.5
DEAD_CODES_FRACTION = 0.05
DRIFT_GROWTH = 2.0
DRIFT_WINDOW = 3  # epochs of growth that make a drift (a single bad epoch is noise)


def code_counts(codes: np.ndarray, size: int) -> np.ndarray:
    """How many vectors chose each code: int64 (size,), from code indices of any shape."""
    return np.bincount(np.asarray(codes).astype(np.int64).reshape(-1), minlength=size)


def _perplexity(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def levels_used(counts: np.ndarray, levels: Sequence[int]) -> list[int]:
    """For an FSQ layer: how many of its levels each channel takes over the codes chosen (``counts`` > 0)."""
    used = np.flatnonzero(counts)
    out, step = [], 1
    for level in levels:
        out.append(len(np.unique((used // step) % level)))
        step *= int(level)
    return out


def _remedy(layer: Quantizer, counts: np.ndarray) -> str:
    if layer.spec.form == "fsq":
        levels = [int(v) for v in layer.spec.option("levels")]
        taken = levels_used(counts, levels)
        short = [f"channel {c} takes {t} of its {L}" for c, (t, L) in enumerate(zip(taken, levels)) if t < L]
        detail = (
            f" ({'; '.join(short)} levels: it sits where tanh saturates and its gradient vanishes)" if short else ""
        )
        return (
            "FSQ has no codebook to re-seed: the encoder's outputs cover only part of the grid of levels"
            f"{detail}. Use fewer levels where channels are short of them, train longer, or check that the "
            "layer before the quantizer is linear (activation='linear') so its outputs can take both signs."
        )
    threshold = float(layer.spec.option("dead_codes"))
    steps = []
    if threshold <= 0:
        steps.append("re-seed unused codes from the data (dead_codes=1.0)")
    if layer.spec.option("init") != "kmeans":
        steps.append("start the codebook from the data (init='kmeans')")
    if layer.spec.option("update") != "ema":
        steps.append("move the codebook by moving averages (update='ema')")
    if not steps:
        # Everything that revives codes is on: an unused code is re-seeded once its moving-average
        # count decays under the threshold, after about log(count / threshold) / (1 - decay) steps.
        steps.append(
            f"train for more steps (unused codes are re-seeded once their moving-average count falls under "
            f"dead_codes={threshold:g})"
        )
    steps.append(f"or use fewer codes (codebook={max(2, layer.codebook_size // 4)})")
    text = "; ".join(steps)
    return text[0].upper() + text[1:] + "."


def check_codebooks(quantizers: Mapping[str, Quantizer], outputs: Mapping[str, np.ndarray], note: str) -> list[Finding]:
    """``codebook-collapse`` and ``dead-codes`` for each quantizer layer.

    Parameters
    ----------
    quantizers : dict of str to Quantizer
        The model's quantizer layers by name.
    outputs : dict of str to ndarray
        The graph's outputs on the rows examined; ``'name:codes'`` holds the code indices.
    note : str
        Said after the figures when the rows are a sample (see :func:`~aekit.inspect.measures.sample_note`).
    """
    findings: list[Finding] = []
    for name, layer in quantizers.items():
        counts = code_counts(outputs[f"{name}:codes"], layer.codebook_size)
        size = layer.codebook_size
        used = int((counts > 0).sum())
        usage = used / size
        figures = (
            f"layer {name!r} chose {used} of its {size} codes ({usage:.1%}) over the {int(counts.sum())} "
            f"vectors of the data{note}; perplexity {_perplexity(counts):.1f}."
        )
        if usage < COLLAPSE_WARNING:
            severity = "error" if usage < COLLAPSE_ERROR else "warning"
            message = f"Codebook collapse: {figures}"
            findings.append(Finding("codebook-collapse", severity, message, _remedy(layer, counts), usage, name))
        elif 1 - usage >= DEAD_CODES_FRACTION:
            message = f"Dead codes: {size - used} codes are chosen by no vector; {figures}"
            findings.append(Finding("dead-codes", "warning", message, _remedy(layer, counts), 1 - usage, name))
    return findings


def check_commitment_drift(quantizers: Mapping[str, Quantizer], history: Sequence[Mapping[str, Any]]) -> list[Finding]:
    """``commitment-drift`` for each VQ layer whose commitment term grew over the last epochs."""
    findings: list[Finding] = []
    for name in quantizers:
        key = f"{name}.commitment"
        series = [float(entry["train"][key]) for entry in history if key in (entry.get("train") or {})]
        series = [v for v in series if math.isfinite(v)]
        if len(series) < DRIFT_WINDOW + 1:
            continue
        low = min(series)
        tail = series[-(DRIFT_WINDOW + 1) :]
        rising = all(b > a for a, b in zip(tail, tail[1:]))
        if low > 0 and rising and series[-1] > DRIFT_GROWTH * low:
            findings.append(
                Finding(
                    "commitment-drift",
                    "warning",
                    f"The commitment term of layer {name!r} grew for the last {DRIFT_WINDOW} epochs, to "
                    f"{series[-1]:.4g}, {series[-1] / low:.1f} times its lowest ({low:.4g}): the encoder's outputs "
                    "move away from their codes.",
                    "Let the codebook follow faster (a smaller decay, e.g. decay=0.9, with update='ema'), "
                    "compare unit vectors (distance='cosine'), tie the encoder to its codes (a larger beta), "
                    "or lower the learning_rate.",
                    series[-1] / low,
                    name,
                )
            )
    return findings


def quantizer_layers(graph: Any) -> dict[str, Quantizer]:
    """The quantizer layers of ``graph`` by name."""
    return {name: layer for name, layer in graph.layers.items() if isinstance(layer, Quantizer)}
