"""The command line's files: data in (``FILE.npz:NAME`` included), arrays and models out.

Every output is checked before any work starts -- a name that is a folder, a
missing folder, a wrong suffix, or the same file as one of the command's inputs
(which writing would destroy) -- and written atomically.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..autoencoder import load as _load_model
from ..data.loaders import load_data
from ..errors import ConfigurationError, DataError
from ..io.atomic import atomic_write
from ..io.model_file import is_model_file

if TYPE_CHECKING:
    from ..autoencoder import Autoencoder

__all__ = [
    "check_folder_output",
    "check_model_output",
    "check_output",
    "describe_path",
    "is_model_file",
    "load_model",
    "read_data",
    "split_data_arg",
    "write_array",
]

OUTPUT_SUFFIXES = (".npy", ".csv")
# Suffixes of files aekit reads as data: `train` refuses to write a model under such a name.
DATA_SUFFIXES = (
    ".npy",
    ".npz",
    ".safetensors",
    ".csv",
    ".tsv",
    ".txt",
    ".dat",
    ".gz",
    ".idx",
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
)


def split_data_arg(text: str) -> tuple[str, str | None]:
    """``'data.npz:train'`` -> ``('data.npz', 'train')``; any other argument -> ``(text, None)``.

    A file whose own name has the colon wins over the split.
    """
    text = os.fspath(text)
    if ":" in text and not os.path.exists(text):
        head, _, key = text.rpartition(":")
        if key and head.lower().endswith((".npz", ".safetensors")):
            return head, key
    return text, None


def read_data(path: str, flag: str | None = None) -> np.ndarray:
    """Any file :func:`aekit.load_data` reads (npy, npz, csv, idx, image folders); ``FILE.npz:NAME``.

    ``flag`` (e.g. ``'--valid'``) is named in errors about the file.
    """
    file, key = split_data_arg(path)
    try:
        if is_model_file(file):
            raise DataError(f"{file!r} is an aekit model file; pass it as MODEL, not as data")
        x = load_data(file, key=key)
        # load_data gives int64 only for a 1-D idx file: labels, which no command takes as data.
        if x.ndim == 1 and x.dtype == np.int64:
            raise DataError(
                f"{file!r} is an idx labels file (a 1-D array of {len(x)} labels), not data; "
                "pass the matching images file (e.g. *-images-idx3-ubyte.gz)"
            )
        return x
    except DataError as error:
        message = str(error)
        head, _, name = file.rpartition(":")
        if name and not os.path.exists(file) and os.path.isfile(head):
            message += f"; FILE:NAME picks an array of an .npz or .safetensors file only, and {head!r} is not one"
        # The Python keyword has a command-line spelling.
        message = message.replace("pick one with key=", f"pick one as {file}:NAME")
        message = message.replace("(and pick an array with key=)", f"(and pick an array as {file}.npz:NAME)")
        if flag:
            message = f"{flag}: {message}"
            if not os.path.exists(file) and re.fullmatch(r"[0-9.eE+-]+", file) and flag == "--valid":
                message += "; --valid takes a data file (to hold out a fraction of DATA, use --valid-split)"
        if message == str(error):
            raise
        raise DataError(message) from None


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)  # also sees hard links
    except OSError:  # one of them does not exist (yet)
        return os.path.realpath(a) == os.path.realpath(b)


def describe_path(label: str, value: Any) -> str:
    """``--output 'm.npy'``, or ``config key 'checkpoint' in 't.toml' ('m.npy')``."""
    return f"{label} ({value!r})" if label.startswith("config key") else f"{label} {value!r}"


def check_output(
    path: str,
    suffixes: Sequence[str] = OUTPUT_SUFFIXES,
    *,
    flag: str = "--output",
    inputs: Iterable[tuple[str, str | None]] = (),
) -> None:
    """Fail before any work if ``path`` cannot or must not be written.

    Refused: a name ending in a path separator or naming a folder, a wrong suffix, a
    missing folder, and the same file as any of ``inputs`` (pairs of what, path), which
    writing would destroy.
    """
    text = os.fspath(path)
    what = describe_path(flag, text)
    if text.endswith("/") or text.endswith(os.sep) or (os.altsep and text.endswith(os.altsep)):
        raise ConfigurationError(f"{what} ends in a path separator, so it names a folder; expected a file name")
    p = Path(text)
    if p.is_dir():
        raise ConfigurationError(f"{what} is a folder; expected a file name")
    if suffixes and p.suffix.lower() not in suffixes:
        raise ConfigurationError(f"{what} must end in {' or '.join(suffixes)}")
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise ConfigurationError(f"{what}: folder {str(folder)!r} does not exist")
    _check_not_an_input(text, what, inputs)


def _check_not_an_input(path: str, what: str, inputs: Iterable[tuple[str, str | None]]) -> None:
    for source_name, source in inputs:
        if source is None:
            continue
        source_file = split_data_arg(source)[0]
        if _same_file(path, source_file):
            raise ConfigurationError(
                f"{what} is the same file as {describe_path(source_name, source)}; writing it "
                "would destroy that file, so choose another name"
            )


def check_model_output(path: str, flag: str = "--output", inputs: Iterable[tuple[str, str | None]] = ()) -> None:
    """:func:`check_output` for a model or checkpoint file: refuses data suffixes and existing non-model files."""
    check_output(path, suffixes=(), flag=flag, inputs=inputs)
    p = Path(path)
    what = describe_path(flag, os.fspath(path))
    name = p.name.lower()
    suffix = next((s for s in DATA_SUFFIXES if name.endswith(s)), "ubyte" if name.endswith("ubyte") else None)
    if suffix:
        raise ConfigurationError(
            f"{what} ends in {suffix}, the suffix of a data file; expected a model file "
            "name such as model.aekit (so that training never writes over data)"
        )
    if p.is_file() and p.stat().st_size > 0 and not is_model_file(str(p)):
        raise ConfigurationError(
            f"{what} exists and is not an aekit model file; refusing to replace it "
            "(choose another name, or remove the file first)"
        )


def check_folder_output(path: str, inputs: Iterable[tuple[str, str | None]] = (), flag: str = "--output") -> None:
    """The folder a report or the demo is written into: a folder or a new name, not a file or an input."""
    text = os.fspath(path)
    what = describe_path(flag, text)
    if not text:
        raise ConfigurationError(f"{flag} must name a folder, got ''")
    p = Path(text)
    if p.exists() and not p.is_dir():
        raise ConfigurationError(
            f"{what} exists and is not a folder; expected a folder to write into (a new or existing one)"
        )
    _check_not_an_input(text, what, inputs)


def write_array(path: str, array: np.ndarray) -> None:
    """Write ``array`` as .npy or .csv (by suffix), atomically; CSV rows are examples."""
    check_output(path)
    if Path(path).suffix.lower() == ".npy":
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        atomic_write(path, buffer.getvalue())
    else:
        text = io.StringIO()
        flat = array.reshape(array.shape[0], -1) if array.ndim > 1 else array.reshape(-1, 1)
        np.savetxt(text, flat, delimiter=",", fmt="%.9g")
        atomic_write(path, text.getvalue().encode())


def load_model(path: str) -> Autoencoder:
    """The model (or checkpoint) file at ``path``."""
    return _load_model(path)
