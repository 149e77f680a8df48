"""Atomic file writes: readers see the old file or the new one, never a mix.

Files are written to a temporary file ``.NAME.XXXXXXXX.tmp`` in the same folder,
flushed, fsynced, then renamed over the target, so a crash never leaves a
half-written file in place of a good one.

A writer killed outright (SIGKILL, power loss) cannot remove its temporary
file.  Each successful write therefore removes the temporary files of *the same
target* that are older than :data:`STALE_TEMP_AGE` (one hour): a live writer's
file is far younger than that, since its modification time moves as it is
written and the whole write takes seconds.  Other files, and temporary files of
other targets, are never touched.  Should a writer stall for longer than that
(a suspended process) and lose its file, its rename fails and it reports the
error; the target itself is never harmed.

"""

from __future__ import annotations

import logging
import os
import re
import stat
import tempfile
import time
from pathlib import Path

from ..errors import ModelFileError

__all__ = ["STALE_TEMP_AGE", "atomic_write", "remove_stale_temporaries"]

log = logging.getLogger(__name__)

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
