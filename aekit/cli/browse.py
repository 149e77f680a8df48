"""``aekit browse MODEL DATA --output DIR``: write the unit browser, and serve it on localhost with ``--serve``.

The page works from ``file://``; ``--serve`` is for a page too large to open that way comfortably
(or a browser that refuses local scripts): it serves the folder, read-only, on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
from collections.abc import Sequence
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from ..data.loaders import load_data
from ..errors import DataError
from .files import check_folder_output, load_model, read_data, split_data_arg

__all__ = ["cmd_browse", "read_contexts", "read_labels", "serve_folder"]


def read_labels(path: str) -> np.ndarray:
    """Labels, one per row of DATA: a ``.json`` list, or any file :func:`aekit.load_data` reads (idx, npy, csv)."""
    if path.lower().endswith(".json"):
        values = _read_json(path, "--labels")
        return np.asarray([str(v) if isinstance(v, (dict, list)) else v for v in values])
    file, key = split_data_arg(path)
    return np.asarray(load_data(file, key=key)).reshape(-1)


def read_contexts(path: str) -> list[Any]:
    """Contexts, one per row of DATA: a JSON list of texts or of ``[before, token, after]`` triples."""
    return _read_json(path, "--contexts")


def _read_json(path: str, flag: str) -> list[Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            values = json.load(handle)
    except OSError as error:
        raise DataError(f"{flag}: cannot read {path!r}: {error.strerror or error}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{flag}: {path!r} is not UTF-8 JSON ({error})") from None
    if not isinstance(values, list):
        raise DataError(f"{flag}: {path!r} must hold a JSON list with one entry per row, got {type(values).__name__}")
    return values


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Requests are not logged: the terminal shows only the address."""


def serve_folder(folder: str | os.PathLike, port: int = 8000, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """An HTTP server of the files in ``folder`` on ``host:port`` (port 0: any free port); not started.

    Call ``serve_forever()`` on it (and ``server_close()`` after); ``server_address`` gives the port.
    """
    handler = functools.partial(_QuietHandler, directory=str(folder))
    return ThreadingHTTPServer((host, port), handler)


def cmd_browse(args: argparse.Namespace) -> int:
    """``aekit browse``: write :func:`aekit.inspect.browse`'s page into ``--output``; serve it with ``--serve``.

    Parameters
    ----------
    args : argparse.Namespace
        ``model``, ``data``, ``output``, ``labels``, ``contexts``, ``layer``, ``top``, ``title``,
        ``serve`` and ``port``.

    Returns
    -------
    int
        The exit code: 0 (failures raise).
    """
    from ..inspect.browser import browse

    check_folder_output(args.output, [("MODEL", args.model), ("DATA", args.data)])
    net = load_model(args.model)
    args.cli_arrays = {"x": repr(args.data)}
    x = read_data(args.data)
    labels = None if args.labels is None else read_labels(args.labels)
    contexts = None if args.contexts is None else read_contexts(args.contexts)
    page = browse(
        net,
        x,
        args.output,
        labels=labels,
        contexts=contexts,
        layer=args.layer,
        k=args.top,
        title=args.title or f"aekit unit browser: {Path(args.model).name}",
    )
    print(f"wrote the unit browser to {page}")
    if not args.serve:
        return 0
    server = serve_folder(args.output, args.port)
    host, port = str(server.server_address[0]), server.server_address[1]
    print(f"serving {args.output} at http://{host}:{port}/ (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def add_parser(sub: Any, common: Sequence[argparse.ArgumentParser], data_help: str) -> Any:
    """The ``browse`` sub-command's parser (its ``func`` is set by the caller)."""
    p = sub.add_parser("browse", parents=list(common), help="write an interactive page with a card per unit")
    p.add_argument("model", help="model file (or training checkpoint)")
    p.add_argument("data", help=f"data to show the units on: {data_help}")
    p.add_argument(
        "--output", "-o", required=True, help="folder to write index.html and its data into (made if missing)"
    )
    p.add_argument("--labels", help="labels, one per row of DATA: .json list, idx, .npy or .csv")
    p.add_argument(
        "--contexts",
        help="JSON list with one text per row of DATA (or [before, token, after] to highlight the token)",
    )
    p.add_argument("--layer", help="layer whose units to browse (default: the code layer)")
    p.add_argument("--top", type=int, default=10, help="top inputs per unit (default 10)")
    p.add_argument("--title", help="the page's title")
    p.add_argument("--serve", action="store_true", help="then serve the folder on http://127.0.0.1:PORT/")
    p.add_argument("--port", type=int, default=8000, help="port for --serve (default 8000; 0: any free port)")
    return p
