"""File loaders: .npy, .npz, .csv/.tsv, idx (MNIST) and folders of images.

:func:`load_data` picks the reader from the path and returns float32 arrays:

* tables (.npy, .npz, .csv, .tsv): shape (n, features) -- or whatever shape the
  array was saved with for .npy/.npz;
* idx files (``*-idx3-ubyte[.gz]``): shape (n, H, W), pixel bytes divided by 255
  (``scale=False`` keeps 0..255); a one-dimensional idx file (labels) comes back
  as int64 of shape (n,);
* a folder of PNG/JPEG images of one size: (n, H, W) for grayscale or
  (n, 3, H, W) for colour, 8-bit pixels divided by 255 and 16-bit ones by 65535.

``mmap=True`` memory-maps a .npy instead of reading it: the result is an
``np.memmap`` in the file's own dtype, which :meth:`Autoencoder.train` streams
block by block (see :mod:`aekit.streaming`).

Every problem with a file (missing, empty, truncated, ragged, non-numeric,
NaN/Inf, wrong dtype) is a :class:`~aekit.errors.DataError` naming the path and
what is wrong.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import os
import struct
import tokenize
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import ConfigurationError, DataError
from .safetensors_files import load_safetensors
from .validation import as_float32

__all__ = ["IMAGE_SUFFIXES", "load_data", "read_idx"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")

# idx type codes (Yann LeCun's format description) -> big-endian NumPy dtypes.
_IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def load_data(
    path: str | os.PathLike,
    *,
    key: str | None = None,
    mmap: bool = False,
    delimiter: str | None = None,
    header: bool | None = None,
    usecols: Sequence[int] | None = None,
    scale: bool = True,
    color: str = "auto",
) -> np.ndarray:
    """Read a data file (or a folder of images) into a float32 array.

    Parameters
    ----------
    path : str or path-like
        ``.npy``, ``.npz``, ``.safetensors``, ``.csv``, ``.tsv`` (also ``.txt``), an idx file
        (``.idx``, ``*-ubyte``, optionally ``.gz``) or a folder of images.
    key : str, optional
        The array to take from a ``.npz`` or ``.safetensors`` file holding several.
    mmap : bool
        Memory-map a ``.npy`` (read-only) instead of reading it, or read a ``.safetensors``
        tensor's rows only when they are sliced (``aekit.data.safetensors_files``); the array keeps
        the file's dtype and is not checked for NaN here (training checks each
        block it reads).
    delimiter : str, optional
        Column separator of a text table (default: tab for .tsv, ``','`` for .csv
        -- or ``';'`` or tab where its first line has no comma but one of those --,
        sniffed otherwise).
    header : bool, optional
        Whether a text table's first line is a header; by default a first line
        with a non-numeric cell, followed by a numeric line, is one.
    usecols : sequence of int, optional
        Columns of a text table to keep (e.g. to drop a label column).
    scale : bool
        Scale pixel data to [0, 1]: 8-bit idx files and images are divided by 255,
        16-bit images by 65535; float images keep their values.
    color : {'auto', 'gray', 'rgb'}
        For image folders: ``'auto'`` gives grayscale when every image is
        grayscale, colour otherwise.

    Returns
    -------
    ndarray, float32
        (n, features) for tables, (n, H, W) for idx and grayscale images,
        (n, 3, H, W) for colour images, int64 (n,) for idx label files.

    Raises
    ------
    DataError
        If the file is missing, empty, truncated, ragged, not numeric or not finite.
    ConfigurationError
        If ``path``, ``delimiter`` or ``usecols`` is not of the documented kind.
    """
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigurationError(
            f"load_data: path must be a file or folder path (str or path-like), got {type(path).__name__} {path!r}"
        )
    if delimiter is not None and not (isinstance(delimiter, str) and len(delimiter) == 1):
        raise ConfigurationError(f"load_data: delimiter must be one character, got {delimiter!r}")
    if usecols is not None:
        # Any iterable of ints (a list, a range, an integer array); never a float, silently cut.
        try:
            cols = None if isinstance(usecols, (str, bytes)) else list(usecols)
        except TypeError:
            cols = None
        if not cols or not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in cols):
            raise ConfigurationError(
                f"load_data: usecols must be a non-empty sequence of column numbers (int), got {usecols!r}"
            )
        usecols = cols
    p = Path(path)
    if p.is_dir():
        if mmap:
            raise DataError(f"{str(p)!r}: mmap=True needs a .npy file, got a folder of images")
        return _load_images(p, scale=scale, color=color)
    if not p.exists():
        raise DataError(f"data file {str(p)!r} does not exist")
    if not p.is_file():
        raise DataError(f"{str(p)!r} is not a regular file")
    if p.stat().st_size == 0:
        raise DataError(f"data file {str(p)!r} is empty (0 bytes)")
    kind = _kind(p)
    if kind == "safetensors":
        tensor = load_safetensors(p, key, mmap)
        if mmap:
            return tensor  # type: ignore[return-value]  # rows are read on demand: a streamable array-like
        return _finish(np.asarray(tensor), p)
    if mmap and kind != "npy":
        raise DataError(f"{str(p)!r}: mmap=True needs an uncompressed .npy file, got a {kind} file")
    if kind == "npy":
        array = _load_npy(p, mmap)
        if mmap:
            return array
    elif kind == "npz":
        array = _load_npz(p, key)
    elif kind == "idx":
        raw = read_idx(p)
        if raw.ndim == 1:  # labels
            return raw.astype(np.int64)
        array = raw.astype(np.float32)
        if scale and raw.dtype == np.uint8:
            array /= 255.0
    else:
        array = _load_table(p, delimiter=delimiter, header=header, usecols=usecols)
    return _finish(array, p)


def _kind(p: Path) -> str:
    name = p.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if name.endswith(".npy"):
        return "npy"
    if name.endswith(".npz"):
        return "npz"
    if name.endswith(".safetensors"):
        return "safetensors"
    if name.endswith(".idx") or "-idx" in name or name.endswith("ubyte"):
        return "idx"
    if name.endswith((".csv", ".tsv", ".txt", ".dat")):
        return "text"
    # No telling suffix: look at the first bytes (of the decompressed stream, for .gz).
    try:
        with _open(p) as handle:
            head = handle.read(8)
    except (OSError, EOFError, zlib.error) as error:
        # gzip raises EOFError on a stream cut short, BadGzipFile (OSError) on junk: name the file.
        damaged = " (truncated or not gzip)" if p.name.lower().endswith(".gz") else ""
        raise DataError(f"data file {str(p)!r} cannot be read{damaged}: {error}") from None
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"PK\x03\x04"):
        return "npz"
    if len(head) >= 4 and head[:2] == b"\0\0" and head[2] in _IDX_TYPES:
        return "idx"
    return "text"


def _open(p: Path):
    if p.name.lower().endswith(".gz"):
        return gzip.open(p, "rb")
    return open(p, "rb")


def _check_dtype(array: np.ndarray, p: Path, what: str = "array") -> None:
    if (
        array.dtype == object
        or not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_)
        or np.issubdtype(array.dtype, np.complexfloating)
    ):
        raise DataError(f"{str(p)!r}: the {what} has dtype {array.dtype}, but aekit needs real numbers")


def _load_npy(p: Path, mmap: bool) -> np.ndarray:
    try:
        if p.name.lower().endswith(".gz"):
            if mmap:
                raise DataError(f"{str(p)!r}: a compressed .npy cannot be memory-mapped")
            with gzip.open(p, "rb") as handle:
                array = np.load(io.BytesIO(handle.read()), allow_pickle=False)
        elif mmap:
            array = np.load(p, mmap_mode="r", allow_pickle=False)
        else:
            # Our own handle, closed whatever happens: numpy leaves its own open when a file is damaged.
            with open(p, "rb") as handle:
                array = np.load(handle, allow_pickle=False)
                if not isinstance(array, np.ndarray):  # an .npz archive by its content
                    array.close()
                    raise DataError(
                        f"{str(p)!r} is an .npz archive, not an .npy file; name it .npz (and pick an array with key=)"
                    )
    except DataError:
        raise
    except ValueError as error:
        # numpy says "cannot reshape array of size ..." for a truncated file and
        # "Object arrays cannot be loaded when allow_pickle=False" for objects.
        raise DataError(
            f"{str(p)!r} is not a readable .npy file (truncated or holds Python objects): {error}"
        ) from None
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as error:  # BadZipFile: a broken .npz inside
        raise DataError(f"{str(p)!r} is not a readable .npy file: {error}") from None
    except (SyntaxError, tokenize.TokenError) as error:  # numpy parses the header as a Python literal
        raise DataError(f"{str(p)!r} is not a readable .npy file: its header is damaged ({error})") from None
    if not isinstance(array, np.ndarray):  # np.load recognises an .npz archive by its content
        array.close()
        raise DataError(f"{str(p)!r} is an .npz archive, not an .npy file; name it .npz (and pick an array with key=)")
    _check_dtype(array, p)
    if array.ndim == 0:
        raise DataError(f"{str(p)!r} holds a single number, not an array of examples")
    _check_not_empty(array, p)
    if mmap and array.ndim == 1:
        raise DataError(f"{str(p)!r} holds a 1-D array of shape {array.shape}; save examples as rows (n, features)")
    return array


def _load_npz(p: Path, key: str | None) -> np.ndarray:
    try:
        with open(p, "rb") as handle:  # our own handle, closed whatever happens (see _load_npy)
            archive = np.load(handle, allow_pickle=False)
            if isinstance(archive, np.ndarray):  # np.load goes by the content: an .npy under an .npz name
                raise DataError(f"{str(p)!r} is an .npy file, not an .npz archive; name it .npy")
            with archive:
                names = list(archive.files)
                if not names:
                    raise DataError(f"{str(p)!r} is an .npz archive with no arrays")
                if key is None:
                    if len(names) > 1:
                        raise DataError(
                            f"{str(p)!r} holds several arrays ({', '.join(map(repr, names))}); pick one with key="
                        )
                    key = names[0]
                if key not in names:
                    raise DataError(f"{str(p)!r} has no array named {key!r}; it holds {', '.join(map(repr, names))}")
                array = archive[key]
    except DataError:
        raise
    except (ValueError, OSError, EOFError, zlib.error, KeyError) as error:
        raise DataError(
            f"{str(p)!r} is not a readable .npz archive (truncated or holds Python objects): {error}"
        ) from None
    except Exception as error:  # zipfile.BadZipFile and friends
        raise DataError(f"{str(p)!r} is not a readable .npz archive: {error}") from None
    _check_dtype(array, p, f"array {key!r}")
    return array


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an idx file (the MNIST format), gzip-compressed or not, in its own dtype.

    Returns
    -------
    ndarray, shape given by the file's header, e.g. (60000, 28, 28) uint8.
    """
    p = Path(path)
    try:
        with _open(p) as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise DataError(f"idx file {str(p)!r} does not exist") from None
    except (OSError, EOFError, zlib.error) as error:
        # gzip raises EOFError on a truncated stream, BadGzipFile (OSError) on junk.
        raise DataError(f"idx file {str(p)!r} cannot be read (truncated or not gzip): {error}") from None
    if len(raw) < 4:
        raise DataError(f"idx file {str(p)!r} is too short ({len(raw)} bytes) to hold a header")
    zero, code, ndim = raw[0] << 8 | raw[1], raw[2], raw[3]
    if zero != 0 or code not in _IDX_TYPES or ndim == 0:
        raise DataError(f"{str(p)!r} is not an idx file: bad magic number {raw[:4].hex()}")
    start = 4 + 4 * ndim
    if len(raw) < start:
        raise DataError(f"idx file {str(p)!r} is truncated inside its header")
    shape = struct.unpack(f">{ndim}I", raw[4:start])
    dtype = _IDX_TYPES[code]
    # Python integers: a corrupt header's dimensions (up to 2**32 - 1 each) overflow int64,
    # which np.prod would wrap around to a size that can match the file.
    expected = math.prod(shape) * dtype.itemsize
    got = len(raw) - start
    if got != expected:
        problem = "truncated" if got < expected else "longer than its header says"
        raise DataError(
            f"idx file {str(p)!r} is {problem}: the header promises shape {shape} "
            f"({expected} bytes of data), the file holds {got}"
        )
    return np.frombuffer(raw, dtype, offset=start).reshape(shape).astype(dtype.newbyteorder("="))


def _parse_float(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _load_table(p: Path, delimiter: str | None, header: bool | None, usecols: Sequence[int] | None) -> np.ndarray:
    try:
        with _open(p) as handle:
            text = handle.read().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(f"{str(p)!r} is not a UTF-8 text table ({error.reason} at byte {error.start})") from None
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{str(p)!r} cannot be read: {error}") from None
    lines = text.splitlines()
    # Blank lines (a trailing newline, a blank line at the end) carry no rows.
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    if not numbered:
        raise DataError(f"text table {str(p)!r} has no rows")
    if delimiter is None:
        name = p.name.lower().removesuffix(".gz")
        first = numbered[0][1]
        if name.endswith(".tsv"):
            delimiter = "\t"
        elif name.endswith(".csv") and ("," in first or not ("\t" in first or ";" in first)):
            delimiter = ","
        else:
            # Also a .csv without a comma on its first line: Excel in many locales writes
            # semicolons (the comma is their decimal mark), and some tools write tabs.
            delimiter = next((d for d in (",", "\t", ";") if d in first), None)
    data_lines = [line for _, line in numbered]
    line_numbers = [n for n, _ in numbered]
    first = _split(data_lines[0], delimiter)
    if header is None:
        second = _split(data_lines[1], delimiter) if len(data_lines) > 1 else []
        header = _looks_like_header(first) and all(_parse_float(c) is not None for c in second)
    if header:
        data_lines, line_numbers = data_lines[1:], line_numbers[1:]
    if not data_lines:
        raise DataError(f"text table {str(p)!r} has a header but no data rows")
    width = len(_split(data_lines[0], delimiter))
    cols = list(range(width)) if usecols is None else [int(c) for c in usecols]
    for c in cols:
        if not -width <= c < width:
            raise DataError(f"usecols names column {c}, but {str(p)!r} has {width} columns")
    cols = [c % width for c in cols]
    try:
        # The fast path (C parser); on any failure the slow path below says where.  Every
        # column is read, then the wanted ones taken: with usecols= loadtxt ignores the
        # cells past the last column it reads, so a row longer than the first would pass.
        # float64: a value beyond float32's range stays finite here, so _finish can say so.
        table = np.loadtxt(
            data_lines,
            delimiter=delimiter,
            dtype=np.float64,
            ndmin=2,
            quotechar='"' if delimiter else None,
            comments=None,
        )
        if table.shape[1] == width:
            return table if usecols is None else table[:, cols]
    except ValueError:
        pass
    out = np.empty((len(data_lines), len(cols)), dtype=np.float64)
    for r, (text_line, line) in enumerate(zip(data_lines, line_numbers)):
        row = _split(text_line, delimiter)
        if len(row) != width:
            raise DataError(
                f"text table {str(p)!r} is ragged: line {line} has {len(row)} columns, the first data line has {width}"
            )
        for c in cols:
            value = _parse_float(row[c])
            if value is None and not row[c].strip():
                raise DataError(
                    f"text table {str(p)!r}: the cell at line {line}, column {c + 1} "
                    "is empty (a missing value); fill or drop it"
                )
            if value is None:
                raise DataError(
                    f"text table {str(p)!r}: the cell at line {line}, column {c + 1} is not a number: {row[c]!r}"
                )
            out[r, cols.index(c)] = value
    return out


def _looks_like_header(cells: list[str]) -> bool:
    """Whether a table's first line, split into ``cells``, reads as column names.

    A cell of text makes it one.  An empty cell does not: in a data row it is a
    missing value, to be reported rather than dropped with the row -- except the
    empty first cell of the line pandas writes for an index column (``,0,1,2``).
    """
    if any(cell.strip() and _parse_float(cell) is None for cell in cells):
        return True
    return (
        len(cells) > 1
        and not cells[0].strip()
        and [cell.strip() for cell in cells[1:]] == [str(i) for i in range(len(cells) - 1)]
    )


def _split(line: str, delimiter: str | None) -> list[str]:
    if delimiter is None:
        return line.split()
    return next(csv.reader([line], delimiter=delimiter))


def _load_images(folder: Path, scale: bool, color: str) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is in the 'images' extra
        raise DataError("reading a folder of images needs Pillow: pip install 'aekit[images]'") from None
    if color not in ("auto", "gray", "rgb"):
        raise DataError(f"color must be 'auto', 'gray' or 'rgb', got {color!r}")
    # Hidden files are skipped: macOS leaves a '._name.png' (not an image) beside each image
    # it copies to a foreign disk or into a zip.
    files = sorted(
        f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".") and f.is_file()
    )
    if not files:
        subfolders = [f.name for f in folder.iterdir() if f.is_dir() and not f.name.startswith(".")]
        hint = (
            f"; its subfolders ({', '.join(map(repr, sorted(subfolders)[:3]))}"
            f"{', ...' if len(subfolders) > 3 else ''}) are not read, pass one of them"
            if subfolders
            else ""
        )
        raise DataError(f"folder {str(folder)!r} holds no images ({', '.join(IMAGE_SUFFIXES)}){hint}")
    images = []
    for f in files:
        try:
            with Image.open(f) as img:
                img.load()
                images.append(img.copy())
        except Exception as error:  # PIL raises many kinds (UnidentifiedImageError, OSError, SyntaxError)
            raise DataError(f"image {str(f)!r} cannot be read: {error}") from None
    if color == "auto":
        color = "gray" if all(img.mode in ("L", "1", "LA") or _is_wide_gray(img.mode) for img in images) else "rgb"
    size = images[0].size
    arrays = []
    for f, img in zip(files, images):
        if img.size != size:
            raise DataError(
                f"images in {str(folder)!r} must share one size: {files[0].name!r} is "
                f"{size[0]}x{size[1]}, {f.name!r} is {img.size[0]}x{img.size[1]}"
            )
        arrays.append(_image_array(img, color, scale))
    return np.stack(arrays)


def _is_wide_gray(mode: str) -> bool:
    # Pillow's 16-bit ('I;16', 'I;16B', ...), 32-bit integer ('I') and float ('F') grayscale modes.
    return mode == "F" or mode.startswith("I")


def _image_array(img, color: str, scale: bool) -> np.ndarray:
    """One Pillow image as float32: shape (H, W) for ``color='gray'``, (3, H, W) for ``'rgb'``.

    With ``scale``, 8-bit images are divided by 255 and 16-bit (and 32-bit integer) ones
    by 65535, so that both come out in [0, 1]; float images keep their values.
    """
    if _is_wide_gray(img.mode):
        # convert('L') or convert('RGB') would clip these to 0..255: take the values as they are.
        a = np.asarray(img, dtype=np.float32)
        if scale and img.mode != "F":
            a = a / 65535.0
        return a if color == "gray" else np.repeat(a[None], 3, axis=0)
    a = np.asarray(img.convert("L" if color == "gray" else "RGB"), dtype=np.float32)
    if scale:
        a /= 255.0
    return a if color == "gray" else a.transpose(2, 0, 1)


def _check_not_empty(array: np.ndarray, p: Path) -> None:
    # Also for a memmap, which load_data returns without _finish.
    if array.shape[0] == 0:
        raise DataError(f"{str(p)!r} holds no examples (shape {array.shape})")
    if array.size == 0:
        raise DataError(f"{str(p)!r} holds examples without any features (shape {array.shape})")


def _finish(array: np.ndarray, p: Path) -> np.ndarray:
    array = np.asarray(array)
    _check_dtype(array, p)
    if array.ndim == 0:
        raise DataError(f"{str(p)!r} holds no examples (shape {array.shape})")
    _check_not_empty(array, p)
    if array.ndim == 1:
        array = array.reshape(-1, 1)
    return as_float32(repr(str(p)), array)
