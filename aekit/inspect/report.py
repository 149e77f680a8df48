"""One HTML page that shows what a model learned and what may be wrong with it.

``write_report(net, x, 'report/')`` writes ``report/index.html`` and its PNGs
beside it (features, decoder features, reconstructions, training curves, codes,
activation histograms, top inputs per unit) plus the diagnosis.  The page has no
scripts, styles or links outside the folder, so the folder can be zipped, mailed
or opened offline.  Every file is written atomically.

The diagnosis and the pictures look at the same rows: at most ``max_samples`` (5000, the
default of :func:`aekit.diagnose` too) evenly spaced rows of ``x``
(:func:`aekit.inspect.measures.sample_rows`), and the page says how many.  So the page
counts the same dead units as ``aekit diagnose`` on the same data, and greys out exactly
those in its pictures.
"""

from __future__ import annotations

import html
import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.validation import as_array, integer
from ..errors import AekitError, DataError
from ..io.atomic import atomic_write
from .codebook_checks import quantizer_layers
from .codebook_pictures import plot_code_usage, save_code_images
from .diagnose import Finding, diagnose
from .features import save_features, save_top_inputs
from .latent_pictures import vae_sections
from .measures import MAX_SAMPLES, sample_rows
from .plots import plot_activations, plot_codes, plot_history, plot_reconstructions

if TYPE_CHECKING:
    from ..autoencoder import Autoencoder

__all__ = ["write_report"]

log = logging.getLogger(__name__)

_STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 980px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.8em; border-bottom: 1px solid #ccc; }
figure { margin: 0.8em 0; } figcaption { color: #555; font-size: 0.9em; }
img { max-width: 100%; image-rendering: pixelated; border: 1px solid #ddd; }
.finding { padding: 0.5em 0.8em; margin: 0.5em 0; border-left: 5px solid #999; background: #f7f7f7; }
.error { border-color: #c62828; } .warning { border-color: #ef8f00; } .info { border-color: #2e7d32; }
code, pre { background: #f0f0f0; padding: 0 0.2em; } td, th { padding: 0.2em 0.8em; text-align: left; }
"""


def _figure(src: str, caption: str) -> str:
    return (
        f'<figure><img src="{html.escape(src)}" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _finding_html(finding: Finding) -> str:
    value = "" if finding.value is None or not math.isfinite(finding.value) else f" (value {finding.value:.4g})"
    return (
        f'<div class="finding {finding.severity}"><b>{html.escape(finding.severity)}</b> '
        f"<code>{html.escape(finding.code)}</code>{html.escape(value)}: {html.escape(finding.message)}"
        f"<br><i>Remedy:</i> {html.escape(finding.remedy)}</div>"
    )


def _codebook_sections(net: Autoencoder, sample: np.ndarray, attempt: Any) -> list[str]:
    """The pictures of each quantizer layer (vq, fsq): what each code decodes to, and the data's usage."""
    out = []
    for name in quantizer_layers(net.graph):
        out.append(f"<h2>Codebook of {html.escape(name)}</h2>")
        out.append(
            attempt(
                f"codebook_{name}.png",
                f"What each code of {name!r} decodes to (every position of the code grid set to it); codes "
                "that no vector of the rows chooses are greyed out.",
                lambda p, name=name: save_code_images(net, p, name, sample),
            )
        )
        out.append(
            attempt(
                f"usage_{name}.png",
                f"The share of the rows' vectors that chose each code of {name!r}, over all of them; unused codes "
                "in red.",
                lambda p, name=name: plot_code_usage(net, sample, p, name),
            )
        )
    return out


def _rows_text(used: int, total: int) -> str:
    return f"all {total} rows" if used >= total else f"{used} evenly spaced rows of the {total}"


def write_report(
    net: Autoencoder,
    x: Any,
    output_dir: str | os.PathLike,
    labels: Any = None,
    *,
    title: str = "aekit model report",
    max_samples: int = MAX_SAMPLES,
    diagnose_options: dict[str, Any] | None = None,
) -> str:
    """Write ``index.html`` and its pictures into ``output_dir``; return the page's path.

    Parameters
    ----------
    net : Autoencoder
    x : array-like, shape (n, features) or (n, *input_shape)
        Data to look at, in the model's input space before preprocessing.
    output_dir : str or path
        Created if missing.
    labels : array-like, shape (n,), optional
        Colour the code plot and check the label order.
    title : str
    max_samples : int
        The diagnosis and the pictures use the same rows: at most this many, evenly spaced
        (default 5000, as :func:`aekit.diagnose`).
    diagnose_options : dict, optional
        Threshold keywords passed to :func:`aekit.diagnose`.

    Returns
    -------
    str
        The path of ``index.html``.  A picture that cannot be drawn for this
        model (e.g. decoder features of a layer that cannot be decoded from) is
        left out with a note; the rest of the page is still written.
    """
    data = x.detach().cpu().numpy() if hasattr(x, "detach") else as_array("x", x)
    if data.ndim < 2 or len(data) < 2:
        raise DataError(f"a report needs x with at least 2 examples in rows, got shape {data.shape}")
    rows = sample_rows(len(data), integer("max_samples", max_samples, 2))
    sample = data[rows]
    y = None if labels is None else as_array("labels", labels).reshape(-1)
    # The diagnosis checks the data against the model: the folder is made only once it has passed.
    findings = diagnose(net, data, y, max_samples=max_samples, **(diagnose_options or {}))
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    sections: list[str] = []
    notes: list[str] = []

    def attempt(name: str, caption: str, draw) -> str:
        try:
            draw(str(folder / name))
            return _figure(name, caption)
        except (AekitError, ValueError, RuntimeError, np.linalg.LinAlgError) as error:
            log.info("report: %s skipped: %s", name, error)
            notes.append(f"{name}: {error}")
            return f"<p><i>{html.escape(caption)}: not available for this model ({html.escape(str(error))}).</i></p>"

    counts = {s: sum(f.severity == s for f in findings) for s in ("error", "warning", "info")}
    summary = ", ".join(f"{n} {s}{'s' if n != 1 else ''}" for s, n in counts.items())
    sections.append("<h2>Diagnosis</h2>")
    sections.append(f"<p>{html.escape(summary)}, measured on {_rows_text(len(sample), len(data))}.</p>")
    sections.extend(_finding_html(f) for f in findings)
    if not any(f.severity != "info" for f in findings):
        sections.append("<p>No problems found.</p>")

    sections.append("<h2>Model</h2>")
    layer_rows = "".join(
        f"<tr><td>{html.escape(layer.name)}</td><td>{html.escape(layer.spec.form)}</td>"
        f"<td>{html.escape('x'.join(map(str, layer.output_shape)))}</td>"
        f"<td>{html.escape(layer.spec.activation if layer.spec.form != 'input' else '')}</td></tr>"
        for layer in net.layers
    )
    sections.append(
        f"<p><code>{html.escape(repr(net))}</code></p>"
        f"<table><tr><th>layer</th><th>form</th><th>shape</th><th>activation</th></tr>{layer_rows}</table>"
    )

    hidden = net.graph.hidden_names
    first = hidden[0] if hidden else None
    if first is not None:
        sections.append("<h2>Features</h2>")
        sections.append(
            attempt(
                "features_encoder.png",
                f"Encoder features of {first!r}: the norm-1 input that activates each unit most (contrast per "
                "tile), labelled with the unit; dead units (constant over the rows) greyed out.",
                lambda p: save_features(net, p, first, "encoder", sample),
            )
        )
        code = net.code_layer
        sections.append(
            attempt(
                "features_decoder.png",
                f"Decoder features of {code!r}: what each unit draws at the output (decode(e_i) - decode(0)); "
                "dead units greyed out.",
                lambda p: save_features(net, p, code, "decoder", sample),
            )
        )
    sections.append("<h2>Reconstructions</h2>")
    sections.append(
        attempt(
            "reconstructions.png",
            "Inputs (the row labelled input) and their reconstructions, on one grey scale.",
            lambda p: plot_reconstructions(net, sample, p, n=12),
        )
    )
    sections.append("<h2>Training curves</h2>")
    if net.history:
        sections.append(
            attempt(
                "history.png",
                "Loss per epoch (training solid, validation dashed; equal monitors drawn once, e.g. loss = err).",
                lambda p: plot_history(net, p),
            )
        )
    else:
        sections.append("<p><i>This model has no training history.</i></p>")
    sections.append("<h2>Codes</h2>")
    sections.append(
        attempt(
            "codes.png",
            "Codes of the data in 2-D (principal components when the code is wider)"
            + (", coloured by label" if y is not None else "")
            + "; the title gives their spread relative to their size and marks a collapsed code.",
            lambda p: plot_codes(net, sample, p, labels=None if y is None else y[rows]),
        )
    )
    sections.extend(vae_sections(net, sample, attempt))  # samples, KL bars, interpolations of a VAE
    sections.append(
        attempt(
            "activations.png",
            f"Histograms of the activations of {net.code_layer!r}, unit by unit (dead units grey).",
            lambda p: plot_activations(net, sample, p),
        )
    )
    sections.extend(_codebook_sections(net, sample, attempt))
    if first is not None:
        sections.append(
            attempt(
                "top_inputs.png",
                f"For each unit of {first!r} (rows): the inputs that activate it most; dead units greyed out.",
                lambda p: save_top_inputs(net, sample, p, layer=first),
            )
        )

    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f"<p>{len(data)} examples of shape {html.escape(str(tuple(data.shape[1:])))}; the diagnosis and the "
        f"pictures use {html.escape(_rows_text(len(sample), len(data)))}.</p>"
        + "\n".join(sections)
        + "</body></html>\n"
    )
    path = folder / "index.html"
    atomic_write(path, page.encode("utf-8"))
    return str(path)
