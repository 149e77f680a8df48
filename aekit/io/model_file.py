"""The one-file model format: safetensors weights with the JSON config in its metadata.

A model file never executes code on load (no pickle): the weights are raw
tensors, the architecture is JSON.  Files are written atomically (a temporary
file ``.NAME.XXXXXXXX.tmp`` in the same folder, flushed, fsynced, then renamed
over the target), so a crash never leaves a half-written model in place of a
good one.

A writer killed outright (SIGKILL, power loss) cannot remove its temporary
file.  Each successful write therefore removes the temporary files of *the same
target* that are older than :data:`STALE_TEMP_AGE` (one hour): a live writer's
file is far younger than that, since its modification time moves as it is
written and the whole write takes seconds.  Other files, and temporary files of
other targets, are never touched.  Should a writer stall for longer than that
(a suspended process) and lose its file, its rename fails and it reports the
error; the target itself is never harmed.

Metadata keys: ``format`` (``'aekit'``), ``format_version`` (integer as text),
``aekit_version``, ``config`` (JSON: layers, losses, ...), ``history`` (JSON).
The header lists the metadata keys sorted and the tensors in the order of their
data, so the same model always gives the same bytes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..errors import AekitError, ConfigurationError, ModelFileError, unknown_name_error

__all__ = [
    "FORMAT_VERSION",
    "STALE_TEMP_AGE",
    "atomic_write",
    "is_model_file",
    "load_model",
    "read_model_file",
    "remove_stale_temporaries",
    "save_model",
    "write_model_file",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_MAX_HEADER = 100 * 1024 * 1024
# Seconds after its last modification when another writer's temporary file counts as abandoned.
# Generous on purpose: it must outlast the slowest write + fsync and clock skew on network file systems.
STALE_TEMP_AGE = 3600.0
# tempfile.mkstemp's random part: 8 characters of [a-z0-9_] (see _temporary_pattern).
_TEMP_RANDOM = "[a-z0-9_]{8}"


def _temporary_pattern(name: str) -> re.Pattern[str]:
    """Names :func:`atomic_write` gives the temporary files of target ``name``, and no others."""
    # The random part has a fixed length and alphabet, so the temporary files of another
    # target ("a.ckpt.1" beside "a.ckpt") never match.
    return re.compile(rf"\.{re.escape(name)}\.{_TEMP_RANDOM}\.tmp")


def remove_stale_temporaries(path: str | os.PathLike, min_age: float = STALE_TEMP_AGE) -> list[Path]:
    """Delete temporary files of ``path`` left by writers that died before renaming them.

    Parameters
    ----------
    path : str or path-like
        The target file; only ``.NAME.XXXXXXXX.tmp`` files beside it are candidates.
    min_age : float
        Seconds since a candidate's last modification before it counts as abandoned.
        Younger files may belong to a writer in another process and are kept.

    Returns
    -------
    list of Path
        The files removed.  Failures (a file that vanished, no permission) are
        skipped: cleaning up must never make a write fail.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    pattern = _temporary_pattern(path.name)
    removed: list[Path] = []
    now = time.time()
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        if not pattern.fullmatch(name):
            continue
        candidate = directory / name
        try:
            info = os.lstat(candidate)
            # Plain files only (never follow a link); a future mtime (clock skew) counts as young.
            if not stat.S_ISREG(info.st_mode) or now - info.st_mtime < min_age:
                continue
            os.unlink(candidate)
        except OSError:
            continue  # another writer removed it first, or it is not ours to remove
        log.info("removed %s, a temporary file left by an interrupted write of %s", candidate, path)
        removed.append(candidate)
    return removed


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a mix.

    After the rename, temporary files of ``path`` abandoned by earlier, killed
    writers are removed (see :func:`remove_stale_temporaries`).
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise ModelFileError(f"cannot write {str(path)!r}: folder {str(directory)!r} does not exist")
    if path.is_dir() or not path.name:
        # os.replace would fail with a message naming only the temporary file.
        raise ModelFileError(
            f"cannot write {str(path)!r}: it is a folder; give a file name such as {str(path / 'model.aekit')!r}"
        )
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as error:  # a read-only folder: say which file could not be written
        raise ModelFileError(f"cannot write {str(path)!r}: {error.strerror} in folder {str(directory)!r}") from None
    try:
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    # Only after a successful write: a failing one should change nothing else on disk.
    remove_stale_temporaries(path)


def _umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read it is to set it
    os.umask(mask)
    return mask


def write_model_file(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
    """Serialise tensors plus JSON-able metadata to a safetensors file, atomically."""
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


def model_tensors(net) -> dict[str, torch.Tensor]:
    """The model's parameters and buffers by short name (``'hid1.w'``)."""
    tensors = {k.split(".", 1)[1]: v for k, v in net.graph.state_dict().items()}
    if net.preprocessing is not None:
        tensors.update({f"preprocessing.{k}": v for k, v in net.preprocessing.state_tensors().items()})
    return tensors


def model_metadata(net) -> dict[str, Any]:
    """The JSON-ready description of ``net`` stored beside its tensors."""
    meta: dict[str, Any] = {"config": net.config(), "history": net.history}
    if net.preprocessing is not None:
        meta["preprocessing"] = net.preprocessing.get_config()
    return meta


def save_model(net, path: str | os.PathLike) -> None:
    """Save ``net`` to ``path`` (see the module docstring for the format).

    An existing aekit model file at ``path`` is replaced (atomically); any other
    existing, non-empty file is not, so a mistyped name cannot destroy data or notes.
    """
    p = Path(path)
    if p.is_file() and p.stat().st_size > 0 and not is_model_file(p):
        raise ModelFileError(
            f"cannot save to {str(p)!r}: it exists and is not an aekit model file; refusing to "
            "replace it (choose another name, or remove the file first)"
        )
    write_model_file(path, model_tensors(net), model_metadata(net))


def is_model_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file with a safetensors header that names the aekit format (a model or a
    checkpoint); False for anything else, unreadable files included.
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


def model_from_file_contents(tensors: dict[str, torch.Tensor], meta: dict[str, Any], name: str):
    """Rebuild an Autoencoder from a model file's tensors and metadata, checking both."""
    from ..autoencoder import Autoencoder, Graph
    from ..model.specs import specs_from_config

    config = meta.get("config")
    if not isinstance(config, dict) or "layers" not in config:
        raise ModelFileError(f"model file {name!r} has no model config in its metadata")
    weights = {k: v for k, v in tensors.items() if not k.startswith("preprocessing.")}
    try:
        _check_config(config)
        specs = specs_from_config(config["layers"])
        # The shapes the config asks for, on the meta device: nothing is allocated, so a
        # tampered size (10**12 units) is refused here instead of exhausting memory below.
        with torch.device("meta"):
            expected = {k.split(".", 1)[1]: v for k, v in Graph(specs, 0).state_dict().items()}
        _check_tensors(expected, weights, name)
        losses = config.get("losses") or [{"name": "mse"}]
        first = dict(losses[0])
        name0, weight0 = first.pop("name"), first.pop("weight", 1.0)
        net = Autoencoder(
            specs,
            loss=name0,
            weighted=config.get("weighted", False),
            rng=config.get("rng", 13),
            hidden_activation=config.get("hidden_activation", "relu"),
            output_activation=config.get("output_activation", "linear"),
            **first,
        )
        # Autoencoder() takes the first loss's options but not its weight: set_loss does.
        net.set_loss(name0, weight0, **first)
        for extra in losses[1:]:
            extra = dict(extra)
            net.add_loss(extra.pop("name"), **extra)
        for term in net.losses:  # else the first predict() would fail, far from the file at fault
            for layer in (term.output, term.covar):
                if layer is not None and layer not in net.graph.layers:
                    raise ConfigurationError(f"loss {term.name!r} reads layer {layer!r}, which does not exist")
    except ModelFileError:
        raise
    except (AekitError, TypeError, KeyError, ValueError, AttributeError, IndexError) as error:
        raise ModelFileError(f"model file {name!r} has an invalid model config: {error}") from None
    net.graph.load_state_dict({f"layers.{k}": v for k, v in weights.items()})
    state = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("preprocessing.")}
    if meta.get("preprocessing") is not None:
        from ..data.preprocessing import check_step, from_config

        try:
            step = from_config(meta["preprocessing"], state)
            # Its statistics must fit this model's input, as set_preprocessing demands.
            net.preprocessing = check_step(step, net.graph.input_shape)
            used = set(step.state_tensors())
        except (AekitError, TypeError, KeyError, ValueError, AttributeError, IndexError) as error:
            raise ModelFileError(f"model file {name!r} has an invalid preprocessing step: {error}") from None
    else:
        used = set()
    if set(state) - used:
        raise ModelFileError(
            f"model file {name!r} has preprocessing tensors its config does not use: "
            f"{sorted(f'preprocessing.{k}' for k in set(state) - used)}"
        )
    net.history = meta.get("history") or []
    if not isinstance(net.history, list) or not all(isinstance(record, dict) for record in net.history):
        raise ModelFileError(f"model file {name!r} has an invalid history: expected a list of per-epoch records")
    return net


# The keys Autoencoder.config() writes; any other is refused rather than ignored, since a
# model built without it would differ from the one that was saved.
_CONFIG_KEYS = ("layers", "losses", "weighted", "rng", "hidden_activation", "output_activation")


def _check_config(config: dict[str, Any]) -> None:
    """Raise ConfigurationError for a config whose top-level values have the wrong type."""
    for key in config:
        if key not in _CONFIG_KEYS:
            raise unknown_name_error("model config key", str(key), _CONFIG_KEYS)
    losses = config.get("losses") or []
    if not isinstance(losses, list) or not all(
        isinstance(term, dict) and isinstance(term.get("name"), str) for term in losses
    ):
        raise ConfigurationError(f"losses must be a list of dicts with a 'name', got {losses!r:.80}")
    if not isinstance(config.get("weighted", False), bool):
        raise ConfigurationError(f"weighted must be true or false, got {config['weighted']!r}")
    rng = config.get("rng", 13)
    if not isinstance(rng, int) or isinstance(rng, bool):
        raise ConfigurationError(f"rng must be an int seed, got {rng!r}")
    # hidden_activation and output_activation are checked by Autoencoder() itself.


def _check_tensors(expected: dict[str, torch.Tensor], weights: dict[str, torch.Tensor], name: str) -> None:
    """Raise ModelFileError unless ``weights`` has exactly the names, shapes and dtypes of ``expected``."""
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    if missing or extra:
        raise ModelFileError(
            f"model file {name!r} does not match its config: missing {missing or 'nothing'}, "
            f"unexpected {extra or 'nothing'}"
        )
    for key in expected:  # graph order: the file's own order may vary between runs
        value = weights[key]
        if tuple(value.shape) != tuple(expected[key].shape) or value.dtype != expected[key].dtype:
            raise ModelFileError(
                f"model file {name!r}: tensor {key!r} has shape {tuple(value.shape)} ({value.dtype}), "
                f"but the config needs {tuple(expected[key].shape)} ({expected[key].dtype})"
            )


def load_model(path: str | os.PathLike):
    """Load an :class:`~aekit.Autoencoder` saved with :meth:`Autoencoder.save` (or a training checkpoint)."""
    tensors, meta = read_model_file(path)
    if meta.get("kind") == "checkpoint":
        # A checkpoint holds the model beside the trainer state, under 'model.'.
        tensors = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    return model_from_file_contents(tensors, meta, str(path))


load = load_model
