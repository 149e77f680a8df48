"""``aekit evaluate MODEL DATA``: the metrics of :func:`aekit.evaluate`, one per line (or as JSON)."""

from __future__ import annotations

import argparse
import json
import math

from ..errors import ConfigurationError
from ..io.atomic import atomic_write
from .files import check_output, load_model, read_data

__all__ = ["cmd_evaluate", "parse_metric_names"]


def parse_metric_names(text: str | None) -> list[str] | None:
    """``'fvu,l0:code'`` -> ``['fvu', 'l0:code']``; None stays None (the model's default metrics)."""
    if text is None:
        return None
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise ConfigurationError(f"--metrics must be comma-separated metric names such as fvu,l0; got {text!r}")
    return names


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``aekit evaluate``: print each metric over all of DATA; ``--output FILE.json`` writes them too.

    Parameters
    ----------
    args : argparse.Namespace
        ``model``, ``data``, ``metrics`` (comma-separated names, optional) and ``output`` (optional).

    Returns
    -------
    int
        The exit code: 0 (failures raise).
    """
    from ..inspect.evaluation import evaluate

    names = parse_metric_names(args.metrics)
    if args.output:
        check_output(args.output, (".json",), inputs=[("MODEL", args.model), ("DATA", args.data)])
    net = load_model(args.model)
    args.cli_arrays = {"x": repr(args.data)}
    x = read_data(args.data)
    figures = evaluate(net, x, metrics=names)
    width = max(map(len, figures))
    for name, value in figures.items():
        print(f"{name:<{width}}  {value:.6g}")
    print(f"over all {x.shape[0]:,} examples of {args.data}")
    if args.output:
        clean = {k: (v if math.isfinite(v) else str(v)) for k, v in figures.items()}
        atomic_write(args.output, (json.dumps(clean, indent=2) + "\n").encode())
        print(f"wrote {args.output}")
    return 0
