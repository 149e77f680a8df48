"""The one-file model format: safetensors weights with the JSON config in its metadata.

A model file never executes code on load (no pickle): the weights are raw
tensors, the architecture is JSON.  Files are written atomically (a temporary
file ``.NAME.XXXXXXXX.tmp`` in the same folder, flushed, fsynced, then renamed
over the target), so a crash never leaves a half-written model in place of a
good one.

Metadata keys: ``format`` (``'aekit'``), ``format_version`` (integer as text),
``aekit_version``, ``config`` (JSON: layers, losses, ...), ``history`` (JSON).
The header lists the metadata keys sorted and the tensors in the order of their
data, so the same model always gives the same bytes.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..errors import ModelFileError
from .atomic import atomic_write

__all__ = ["FORMAT_VERSION", "is_model_file", "read_model_file", "write_model_file"]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_MAX_HEADER = 100 * 1024 * 1024


def write_model_file(
    path: str | os.PathLike,
    tensors: dict[str, torch.Tensor],
    metadata: dict[str, Any],
    *,
    replace_only_models: bool = False,
) -> None:
    """Serialise tensors plus JSON-able metadata to a safetensors file, atomically.

    Parameters
    ----------
    path : str or path-like
    tensors : dict of str to tensor
    metadata : dict of str to JSON-able value
        Each value is stored as JSON text under its key.
    replace_only_models : bool
        Refuse (:class:`~aekit.errors.ModelFileError`) to replace an existing,
        non-empty file that is not an aekit model file.
    """
    p = Path(path)
    if replace_only_models and p.is_file() and p.stat().st_size > 0 and not is_model_file(p):
        raise ModelFileError(
            f"cannot save to {str(p)!r}: it exists and is not an aekit model file; refusing to "
            "replace it (choose another name, or remove the file first)"
        )
    meta = {"format": "aekit", "format_version": str(FORMAT_VERSION)}
    from .._version import __version__

    meta["aekit_version"] = __version__
    meta.update({k: json.dumps(v) for k, v in metadata.items()})
    contiguous = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write(path, _canonical_header(st_save(contiguous, metadata=meta)))


def _canonical_header(raw: bytes) -> bytes:
    """The safetensors bytes ``raw`` with their JSON header written in one fixed order.

    safetensors keeps the metadata in a Rust hash map, whose order changes from call to
    call, so the same model gave different bytes on every save.  The header is written
    again with the metadata keys sorted and the tensors in the order of their data;
    the data bytes are untouched and the file stays plain safetensors: a little-endian
    u64 length, the JSON header padded with spaces to a multiple of 8 bytes (so the
    data stays aligned), then the data.
    """
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    meta = header.pop("__metadata__", None)
    ordered: dict[str, Any] = {} if meta is None else {"__metadata__": dict(sorted(meta.items()))}
    # Empty tensors share an offset with their neighbour: the name breaks the tie.
    ordered.update(sorted(header.items(), key=lambda item: (item[1]["data_offsets"], item[0])))
    text = json.dumps(ordered, separators=(",", ":")).encode("ascii")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + raw[8 + length :]


def read_model_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and check a file written by :func:`write_model_file`.

    Returns
    -------
    tensors : dict of str to tensor
    metadata : dict
        The decoded JSON metadata (``format_version`` as an int).

    Raises
    ------
    ModelFileError
        Missing, empty, truncated, foreign (pickle, zip, ...) or newer-format files.
    """
    name = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ModelFileError(f"model file {name!r} does not exist") from None
    except IsADirectoryError:
        raise ModelFileError(f"model file {name!r} is a folder, not a file") from None
    except OSError as error:
        raise ModelFileError(f"cannot read model file {name!r}: {error.strerror}") from None
    if not raw:
        raise ModelFileError(f"model file {name!r} is empty")
    if len(raw) < 8:
        raise ModelFileError(f"model file {name!r} is truncated ({len(raw)} bytes)")
    (header_len,) = struct.unpack("<Q", raw[:8])
    if header_len > min(len(raw) - 8, _MAX_HEADER) or raw[8:9] != b"{":
        kind = _guess_kind(raw)
        raise ModelFileError(f"model file {name!r} is not an aekit model file ({kind})")
    try:
        header = json.loads(raw[8 : 8 + header_len])
        meta = header.get("__metadata__") or {}
        tensors = st_load(raw)
    except (SafetensorError, ValueError, UnicodeDecodeError, AttributeError) as error:
        raise ModelFileError(f"model file {name!r} is damaged or truncated: {error}") from None
    if meta.get("format") != "aekit":
        raise ModelFileError(f"model file {name!r} is a safetensors file but not an aekit model (no aekit metadata)")
    try:
        version = int(meta.get("format_version", "0"))
        decoded = {k: json.loads(v) for k, v in meta.items() if k not in ("format", "format_version", "aekit_version")}
    except (ValueError, TypeError) as error:
        raise ModelFileError(f"model file {name!r} has unreadable metadata: {error}") from None
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"model file {name!r} has format version {version}, newer than this aekit reads ({FORMAT_VERSION}); "
            "upgrade aekit"
        )
    decoded["format_version"] = version
    decoded["aekit_version"] = meta.get("aekit_version", "unknown")
    return tensors, decoded


def _guess_kind(raw: bytes) -> str:
    if raw[:1] == b"\x80":
        return "it looks like a pickle, which aekit never loads"
    if raw[:4] == b"PK\x03\x04":
        return "it looks like a zip archive (e.g. a torch.save file), which aekit never loads"
    if raw[:6] == b"\x93NUMPY":
        return "it is a NumPy .npy file; pass it as data, not as a model"
    return "no safetensors header"


def is_model_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file with a safetensors header that names the aekit format.

    True for a model or a checkpoint; False for anything else, unreadable files included.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                return False
            size = int.from_bytes(head, "little")
            if not 0 < size < 100 * 1024 * 1024:
                return False
            header = handle.read(size)
    except OSError:
        return False
    return header[:1] == b"{" and b'"format":"aekit"' in header.replace(b" ", b"")
