"""Reading ../shared/data/minilm-acts for the browser tests and benchmark (the library never needs it).

The folder's README says how a row's context is built: the rows of document ``d`` are
``documents[d]['start'] .. start + n_tokens - 1`` of ``tokens.json``, and a token's context is
its document's tokens within 8 positions; :func:`aekit.data.contexts.token_contexts` builds them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import aekit
from aekit.data.contexts import token_contexts

FOLDER = Path(__file__).resolve().parents[2] / "shared" / "data" / "minilm-acts"


def available() -> bool:
    return (FOLDER / "acts.safetensors").is_file() and (FOLDER / "tokens.json").is_file()


def contexts(window: int | None = None) -> list[list[str]]:
    """``[before, token, after]`` for every row of acts.safetensors (the folder's ±8-token contexts)."""
    meta = json.loads((FOLDER / "tokens.json").read_text(encoding="utf-8"))
    docs = meta["documents"]
    return token_contexts(
        meta["tokens"],
        [d["start"] for d in docs],
        [d["n_tokens"] for d in docs],
        window=meta.get("context", 8) if window is None else window,
    )


def acts(rows: int | None = None, mmap: bool = False):
    """The activations: the first ``rows`` as a float32 array, or all of them lazily with ``mmap``."""
    x = aekit.load_data(str(FOLDER / "acts.safetensors"), key="acts", mmap=mmap or rows is not None)
    if rows is None:
        return x
    return np.asarray(x[:rows], dtype=np.float32)
