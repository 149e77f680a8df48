"""``aekit.inspect.browse(net, x, 'browser/')``: an interactive page to look inside every unit of a model.

The folder holds ``index.html``, the page's script and style, and its data as ``data/*.js`` files:

* ``data/summary.js``: the model, the diagnosis, the metrics of :func:`aekit.evaluate` and, per
  unit, its firing density, largest and mean activation and whether it is dead (columns of
  numbers, a few bytes per unit);
* ``data/units_NNNN.js``: the cards of ``shard`` units each (top inputs or text contexts, the
  activation histogram, the mean activation per label, the panels of
  :mod:`aekit.inspect.browser_panels`), loaded only when one of their units is opened.

The page needs no network: the data files are scripts that hand their JSON to the page
(``window.aekitData(...)``), which works from ``file://`` where ``fetch`` of local files does not.
Every string of the data (contexts, labels, names) is drawn with ``textContent``, never parsed
as HTML, and the JSON escapes ``<``, ``>`` and ``&``, so a context such as
``<img src=x onerror=alert(1)>`` shows as text and runs nothing.  The unit list draws only the
rows in view, so a dictionary of 16,384 units opens and filters at once.

The figures come from one streamed pass over all of ``x`` (:func:`aekit.inspect.unit_scan.scan_units`);
the diagnosis and the pictures use at most ``max_samples`` evenly spaced rows, as
:func:`aekit.diagnose` does.
"""

from __future__ import annotations

import html
import json
import logging
import math
import os
import shutil
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.validation import integer
from ..errors import AekitError, DataError
from ..io.atomic import atomic_write
from .browser_panels import PANELS, PanelContext, picture
from .diagnose import diagnose
from .evaluation import evaluate
from .measures import MAX_SAMPLES, sample_rows
from .pictures import image_shape
from .unit_scan import UnitScan, scan_units

if TYPE_CHECKING:
    from ..autoencoder import Autoencoder

__all__ = ["browse", "is_image_shape", "script_json"]

log = logging.getLogger(__name__)

ASSETS = ("browser.js", "browser.css")
# At most this many values per layer in the diagnosis (16M: 1,024 rows of a 16,384-unit layer).
DIAGNOSE_VALUES = 1 << 24


def script_json(value: Any) -> str:
    r"""``value`` as JSON that is also safe inside an HTML ``<script>``: ``<``, ``>``, ``&`` escaped.

    Examples
    --------
    >>> script_json({"text": "</script><img src=x onerror=alert(1)>"})
    '{"text": "\\u003c/script\\u003e\\u003cimg src=x onerror=alert(1)\\u003e"}'
    """
    text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    for raw, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(raw, escaped)
    return text


def is_image_shape(shape: Sequence[int]) -> bool:
    """Whether examples of ``shape`` look like pictures: ``(C, H, W)``, ``(H, W)``, or a flat square size.

    Examples
    --------
    >>> is_image_shape((784,)), is_image_shape((1, 28, 28)), is_image_shape((384,)), is_image_shape((192,))
    (True, True, False, True)
    """
    dims = tuple(int(s) for s in shape)
    if len(dims) in (2, 3):
        return True
    if len(dims) != 1 or dims[0] < 16:
        return False
    picture_shape = image_shape(dims[0])
    return picture_shape[-1] == picture_shape[-2]


def _finite(value: Any, digits: int = 6) -> float | None:
    value = float(value)
    return float(f"{value:.{digits}g}") if math.isfinite(value) else None


def _column(values: np.ndarray, digits: int = 5) -> list[float | None]:
    return [_finite(v, digits) for v in np.asarray(values, dtype=np.float64)]


def _read_rows(x: Any, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` of ``x`` (array, tensor, memmap or lazy file tensor), in the order given."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    unique, inverse = np.unique(rows, return_inverse=True)
    try:
        # Arrays, memmaps and lazy .safetensors tensors take increasing row numbers.
        return np.asarray(x[unique])[inverse]
    except (TypeError, IndexError, ValueError):  # h5py-like data that reads one row at a time
        return np.stack([np.asarray(x[int(r)]) for r in unique])[inverse]


def _as_contexts(contexts: Any, n: int) -> list[Any] | None:
    if contexts is None:
        return None
    items = list(contexts)
    if len(items) != n:
        raise DataError(f"contexts must have one entry per row of x ({n}), got {len(items)}")
    for i, item in enumerate(items[:1000]):
        ok = isinstance(item, str) or (
            isinstance(item, (list, tuple)) and len(item) == 3 and all(isinstance(s, str) for s in item)
        )
        if not ok:
            raise DataError(
                f"contexts[{i}] must be a text or a [before, token, after] triple of texts, got {type(item).__name__}"
            )
    return items


def _histogram(scan: UnitScan, unit: int) -> dict[str, Any]:
    def side(counts: np.ndarray, top: float) -> dict[str, Any]:
        used = np.flatnonzero(counts)
        last = int(used[-1]) + 1 if used.size else 0
        return {"counts": counts[:last].tolist(), "top": _finite(top), "bins": int(len(counts))}

    zeros = scan.n_rows - int(scan.hist_pos[unit].sum()) - int(scan.hist_neg[unit].sum())
    return {
        "pos": side(scan.hist_pos[unit], scan.pos_top[unit]),
        "neg": side(scan.hist_neg[unit], scan.neg_top[unit]),
        "zeros": zeros,
    }


def _top_pictures(net: Autoencoder, x: Any, scan: UnitScan) -> list[list[dict[str, Any]]]:
    """Per unit, its top inputs as pictures, all on one grey scale (that of the rows shown)."""
    rows = scan.top.indices
    data = _read_rows(x, rows.ravel()).astype(np.float64)
    flat = data.reshape(len(data), -1)
    finite = flat[np.isfinite(flat)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    scaled = (flat - low) / (high - low if high > low else 1.0)
    pictures = scaled.reshape(len(data), *image_shape(net.graph.input_shape))
    shown = [picture(p) for p in pictures]
    k = rows.shape[1]
    return [shown[u * k : (u + 1) * k] for u in range(rows.shape[0])]


def _unit_card(
    scan: UnitScan,
    unit: int,
    contexts: list[Any] | None,
    labels: np.ndarray | None,
    label_names: list[str] | None,
    pictures: list[list[dict[str, Any]]] | None,
    panels: list[list[dict[str, Any]]],
) -> dict[str, Any]:
    top = []
    for j, (row, value) in enumerate(zip(scan.top.indices[unit], scan.top.values[unit])):
        if not math.isfinite(float(value)):
            continue
        entry: dict[str, Any] = {"row": int(row), "value": _finite(value)}
        if contexts is not None:
            entry["context"] = (
                list(contexts[int(row)]) if not isinstance(contexts[int(row)], str) else contexts[int(row)]
            )
        if labels is not None:
            entry["label"] = str(labels[int(row)])
        if pictures is not None:
            entry["image"] = pictures[unit][j]
        top.append(entry)
    card: dict[str, Any] = {
        "id": unit,
        "top": top,
        "hist": _histogram(scan, unit),
        "panels": [panel[unit] for panel in panels],
    }
    if scan.label_means is not None and label_names is not None:
        card["labels"] = {"names": label_names, "means": _column(scan.label_means[unit])}
    return card


def _model_rows(net: Autoencoder) -> list[list[str]]:
    return [
        [
            layer.name,
            layer.spec.form,
            "x".join(map(str, layer.output_shape)),
            layer.spec.activation if layer.spec.form != "input" else "",
        ]
        for layer in net.layers
    ]


def browse(
    net: Autoencoder,
    x: Any,
    out_dir: str | os.PathLike,
    labels: Any = None,
    contexts: Any = None,
    *,
    layer: str | int | None = None,
    k: int = 10,
    images: bool | None = None,
    title: str = "aekit unit browser",
    max_samples: int = MAX_SAMPLES,
    shard: int = 256,
) -> str:
    """Write the unit browser of ``layer`` into ``out_dir`` (see the module docstring); return ``index.html``.

    Parameters
    ----------
    net : Autoencoder
    x : array-like, shape (n, features) or (n, *input_shape)
        Data as the model takes it; a memmap or lazy ``.safetensors`` tensor is streamed.
    out_dir : str or path
        Created if missing; the page's files in it are replaced.
    labels : array-like, shape (n,), optional
        Class labels: each card shows which labels excite the unit, and the label of each top input.
    contexts : sequence, optional
        One entry per row of ``x``: a text, or a ``[before, token, after]`` triple of texts whose
        token is highlighted (e.g. :func:`aekit.data.contexts.token_contexts`).
    layer : str or int, optional
        The layer whose units are browsed (default: the code layer).
    k : int
        Top inputs per unit.
    images : bool, optional
        Show inputs and units as pictures; default: when the input is picture-shaped
        (:func:`is_image_shape`) and no contexts are given.
    title : str
    max_samples : int
        Rows for the diagnosis and the pictures (evenly spaced, as :func:`aekit.diagnose`); fewer
        for wide layers, so that no layer has more than ``DIAGNOSE_VALUES`` outputs in it (the page
        says how many).  The unit figures are always over all rows.
    shard : int
        Units per data file loaded on demand.

    Returns
    -------
    str
        The path of ``index.html``.

    Examples
    --------
    >>> import numpy as np, aekit, tempfile, os
    >>> net = aekit.Autoencoder([16, (4, 'relu'), (16, 'linear')], rng=0)
    >>> x = np.random.default_rng(0).random((40, 16)).astype('float32')
    >>> page = browse(net, x, tempfile.mkdtemp())
    >>> os.path.basename(page)
    'index.html'
    """
    k = integer("k", k, 1)
    shard = integer("shard", shard, 1)
    max_samples = integer("max_samples", max_samples, 2)
    n = len(x)
    if n < 2:
        raise DataError(f"browse needs x with at least 2 examples in rows, got {n}")
    context_list = _as_contexts(contexts, n)
    label_array = None if labels is None else np.asarray(labels).reshape(-1)
    scan = scan_units(net, x, layer, k=k, labels=label_array)
    name = scan.layer
    units = scan.top.indices.shape[0]
    # The diagnosis holds every layer's outputs for its rows: fewer rows for wide layers.
    widest = max(math.prod(layer.output_shape) for layer in net.layers)
    diagnosed = sample_rows(n, min(max_samples, max(256, DIAGNOSE_VALUES // widest)))
    sample = _read_rows(x, diagnosed)
    show_images = is_image_shape(net.graph.input_shape) and context_list is None if images is None else bool(images)
    findings = diagnose(net, sample, None if label_array is None else label_array[diagnosed])
    try:
        metrics = evaluate(net, x)
    except (AekitError, ValueError, RuntimeError) as error:  # a model whose output is not a reconstruction
        log.info("browser: metrics skipped: %s", error)
        metrics = {}

    ctx = PanelContext(net=net, layer=name, units=units, images=show_images, sample=sample)
    panels = []
    panel_names = []
    for panel_name, function in PANELS.items():
        made = function(ctx)
        if made is not None and len(made) == units:
            panels.append(made)
            panel_names.append(panel_name)
    pictures = _top_pictures(net, x, scan) if show_images else None
    label_names = None if scan.label_values is None else [str(v) for v in scan.label_values]

    folder = Path(out_dir)
    data_dir = folder / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    for old in data_dir.glob("units_*.js"):  # a page written before for another model
        old.unlink()
    n_shards = max(1, math.ceil(units / shard))
    for s in range(n_shards):
        cards = [
            _unit_card(scan, u, context_list, label_array, label_names, pictures, panels)
            for u in range(s * shard, min(units, (s + 1) * shard))
        ]
        atomic_write(data_dir / f"units_{s:04d}.js", f"aekitData('shard', {s}, {script_json(cards)});\n".encode())

    summary = {
        "title": title,
        "model": repr(net),
        "layers": _model_rows(net),
        "layer": name,
        "n_rows": scan.n_rows,
        "input_shape": list(net.graph.input_shape),
        "units": units,
        "k": int(scan.top.indices.shape[1]),
        "shard": shard,
        "images": show_images,
        "contexts": context_list is not None,
        "labels": label_names,
        "panels": panel_names,
        "metrics": {key: _finite(value) for key, value in metrics.items()},
        "sample_rows": len(sample),
        "findings": [
            {"code": f.code, "severity": f.severity, "message": f.message, "remedy": f.remedy} for f in findings
        ],
        "density": _column(scan.density),
        "max": _column(scan.maximum),
        "mean": _column(scan.mean),
        "dead": [int(d) for d in scan.dead],
    }
    atomic_write(data_dir / "summary.js", f"aekitData('summary', 0, {script_json(summary)});\n".encode())
    assets = resources.files("aekit.inspect") / "browser_assets"
    for asset in ASSETS:
        with resources.as_file(assets / asset) as source:
            shutil.copyfile(source, folder / asset)
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title>"
        '<link rel="stylesheet" href="browser.css"></head><body>'
        '<div id="app"><p id="loading">Loading the unit browser… (it needs JavaScript)</p></div>'
        '<script src="browser.js"></script><script src="data/summary.js"></script>'
        "</body></html>\n"
    )
    path = folder / "index.html"
    atomic_write(path, page.encode("utf-8"))
    return str(path)
