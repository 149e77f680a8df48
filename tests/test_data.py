"""File loaders (aekit.load_data) and training streamed from memory-mapped arrays."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import aekit
from aekit.errors import ConfigurationError, DataError
from aekit.loaders import read_idx
from aekit.streaming import StreamingSource, is_streamable

MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def write_idx(path, array, compress=False):
    codes = {np.uint8: 0x08, np.int32: 0x0C, np.float32: 0x0D}
    code = codes[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    (gzip.open if compress else open)(path, "wb").write(raw)


# ------------------------------------------------------------------ npy / npz
def test_npy_roundtrip_is_float32(tmp_path, rng):
    x = rng.random((20, 5))
    np.save(tmp_path / "x.npy", x)
    out = aekit.load_data(tmp_path / "x.npy")
    assert out.dtype == np.float32 and out.shape == (20, 5)
    np.testing.assert_array_equal(out, x.astype(np.float32))


def test_npy_mmap_is_a_read_only_memmap(tmp_path, rng):
    x = rng.random((30, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = aekit.load_data(tmp_path / "x.npy", mmap=True)
    assert isinstance(out, np.memmap) and not out.flags.writeable
    np.testing.assert_array_equal(out, x)
    with pytest.raises(DataError, match="mmap=True needs"):
        aekit.load_data(_write_csv(tmp_path, "1,2\n3,4\n"), mmap=True)


def test_npz_picks_an_array_by_key(tmp_path, rng):
    a, b = rng.random((4, 3)), rng.random((5, 2))
    np.savez(tmp_path / "d.npz", train=a, test=b)
    np.testing.assert_allclose(aekit.load_data(tmp_path / "d.npz", key="test"), b, rtol=1e-6)
    with pytest.raises(DataError, match="several arrays.*key="):
        aekit.load_data(tmp_path / "d.npz")
    with pytest.raises(DataError, match="no array named 'valid'.*'train'"):
        aekit.load_data(tmp_path / "d.npz", key="valid")
    np.savez_compressed(tmp_path / "one.npz", only=a)
    np.testing.assert_allclose(aekit.load_data(tmp_path / "one.npz"), a, rtol=1e-6)


# ------------------------------------------------------------------ csv / tsv
def _write_csv(tmp_path, text, name="t.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_csv_with_and_without_header(tmp_path):
    expected = np.array([[1, 2.5, -3], [4, 5, 6e-3]], np.float32)
    with_header = aekit.load_data(_write_csv(tmp_path, "a,b,c\n1,2.5,-3\n4,5,6e-3\n"))
    without = aekit.load_data(_write_csv(tmp_path, "1,2.5,-3\n4,5,6e-3\n\n", "n.csv"))
    np.testing.assert_array_equal(with_header, expected)
    np.testing.assert_array_equal(without, expected)
    tsv = aekit.load_data(_write_csv(tmp_path, "x\ty\n1\t2\n3\t4\n", "t.tsv"))
    np.testing.assert_array_equal(tsv, [[1, 2], [3, 4]])
    cols = aekit.load_data(_write_csv(tmp_path, "label,p1,p2\n7,0.1,0.2\n3,0.3,0.4\n", "l.csv"), usecols=[1, 2])
    np.testing.assert_allclose(cols, [[0.1, 0.2], [0.3, 0.4]])


def test_csv_bad_cell_is_reported_with_line_and_column(tmp_path):
    path = _write_csv(tmp_path, "a,b,c\n1,2,3\n4,oops,6\n")
    with pytest.raises(DataError, match=r"line 3, column 2 is not a number: 'oops'") as info:
        aekit.load_data(path)
    assert str(path) in str(info.value)


def test_csv_ragged_and_nan(tmp_path):
    with pytest.raises(DataError, match="ragged: line 3 has 2 columns"):
        aekit.load_data(_write_csv(tmp_path, "1,2,3\n4,5,6\n7,8\n"))
    with pytest.raises(DataError, match=r"NaN or infinite values \(first at row 1, column 2"):
        aekit.load_data(_write_csv(tmp_path, "1,2,3\n4,5,nan\n", "nan.csv"))
    with pytest.raises(DataError, match="header but no data rows"):
        aekit.load_data(_write_csv(tmp_path, "a,b,c\n", "h.csv"), header=True)


def test_csv_row_longer_than_the_first_is_ragged(tmp_path):
    # A row with an extra cell is as ragged as one with a missing cell, also when usecols= picks
    # columns; reading only the first row's width would drop the extra cell without a word.
    path = _write_csv(tmp_path, "1,2\n3,4,5\n6,7\n")
    for usecols in (None, [0, 1]):
        with pytest.raises(DataError, match="ragged: line 2 has 3 columns, the first data line has 2"):
            aekit.load_data(path, usecols=usecols)
    np.testing.assert_array_equal(
        aekit.load_data(_write_csv(tmp_path, "1,2,3\n4,5,6\n", "w.csv"), usecols=[2, 0]), [[3, 1], [6, 4]]
    )


def test_csv_missing_value_in_the_first_row_is_not_a_header(tmp_path):
    # An empty cell is a missing value: the row it is in is reported, not dropped as a header.
    with pytest.raises(DataError, match="line 1, column 2 is empty"):
        aekit.load_data(_write_csv(tmp_path, "1,,3\n4,5,6\n"))
    with pytest.raises(DataError, match="line 3, column 1 is empty"):
        aekit.load_data(_write_csv(tmp_path, "a,b\n1,2\n,4\n", "m.csv"))
    # pandas' header line for an index column starts with an empty cell: still a header.
    pandas = aekit.load_data(_write_csv(tmp_path, ",0,1\n0,0.5,1.5\n1,2.5,3.5\n", "p.csv"))
    np.testing.assert_array_equal(pandas, [[0, 0.5, 1.5], [1, 2.5, 3.5]])
    named = aekit.load_data(_write_csv(tmp_path, "a,,c\n1,2,3\n", "n.csv"))
    np.testing.assert_array_equal(named, [[1, 2, 3]])


@pytest.mark.parametrize("sep", [";", "\t"])
def test_csv_with_semicolons_or_tabs(tmp_path, sep):
    # Excel writes ';' where the comma is the decimal mark; some tools write tabs into a .csv.
    text = sep.join("abc") + "\n" + sep.join(["1", "2.5", "3"]) + "\n4" + sep + "5" + sep + "6\n"
    np.testing.assert_array_equal(aekit.load_data(_write_csv(tmp_path, text)), [[1, 2.5, 3], [4, 5, 6]])
    # A single column has no separator at all: still one column.
    np.testing.assert_array_equal(aekit.load_data(_write_csv(tmp_path, "x\n1\n2\n", "one.csv")), [[1], [2]])


# ------------------------------------------------------------------ idx
@pytest.mark.parametrize("compress", [False, True])
def test_idx_images_and_labels(tmp_path, rng, compress):
    images = rng.integers(0, 256, size=(6, 4, 5), dtype=np.uint8)
    labels = rng.integers(0, 10, size=6).astype(np.uint8)
    suffix = ".gz" if compress else ""
    write_idx(tmp_path / f"img-idx3-ubyte{suffix}", images, compress)
    write_idx(tmp_path / f"lab-idx1-ubyte{suffix}", labels, compress)
    x = aekit.load_data(tmp_path / f"img-idx3-ubyte{suffix}")
    assert x.dtype == np.float32 and x.shape == (6, 4, 5)
    np.testing.assert_allclose(x, images / 255.0, rtol=1e-6)
    raw = aekit.load_data(tmp_path / f"img-idx3-ubyte{suffix}", scale=False)
    np.testing.assert_array_equal(raw, images)
    y = aekit.load_data(tmp_path / f"lab-idx1-ubyte{suffix}")
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, labels)


def test_idx_float_payload_is_not_scaled(tmp_path, rng):
    data = rng.random((3, 2, 2)).astype(np.float32)
    write_idx(tmp_path / "f.idx", data)
    np.testing.assert_array_equal(aekit.load_data(tmp_path / "f.idx"), data)


def test_idx_truncated_and_bad_magic(tmp_path, rng):
    images = rng.integers(0, 256, size=(6, 4, 5), dtype=np.uint8)
    write_idx(tmp_path / "img.idx", images)
    raw = (tmp_path / "img.idx").read_bytes()
    (tmp_path / "short.idx").write_bytes(raw[:-7])
    with pytest.raises(DataError, match="short.idx' is truncated: the header promises shape"):
        aekit.load_data(tmp_path / "short.idx")
    (tmp_path / "bad.idx").write_bytes(b"\x01\x02\x03\x04" + raw[4:])
    with pytest.raises(DataError, match="bad magic number"):
        aekit.load_data(tmp_path / "bad.idx")
    gz = gzip.compress(raw)
    (tmp_path / "cut-idx3-ubyte.gz").write_bytes(gz[: len(gz) // 2])
    with pytest.raises(DataError, match="cut-idx3-ubyte.gz.*cannot be read"):
        aekit.load_data(tmp_path / "cut-idx3-ubyte.gz")


@pytest.mark.parametrize("name", ["cut.gz", "cut-idx3-ubyte.gz", "cut.idx.gz", "cut.npy.gz", "cut.csv.gz", "data.gz"])
@pytest.mark.parametrize("keep", ["12 bytes", "half"])
def test_a_damaged_gz_file_is_named_whatever_its_name(tmp_path, rng, name, keep):
    # A truncated .gz (or junk named .gz) is a DataError naming the file, whichever reader meets
    # it first: the one that sniffs a file without a telling suffix, or the format's own.
    images = rng.integers(0, 256, size=(50, 8, 8), dtype=np.uint8)
    write_idx(tmp_path / "img.idx", images)
    payload = (tmp_path / "img.idx").read_bytes()
    if ".npy" in name:
        np.save(tmp_path / "x.npy", images.reshape(50, -1).astype(np.float32))
        payload = (tmp_path / "x.npy").read_bytes()
    elif ".csv" in name:
        payload = "\n".join(",".join(map(str, row)) for row in images.reshape(50, -1)).encode()
    gz = gzip.compress(payload)
    path = tmp_path / name
    path.write_bytes(b"not gzip at all" if name == "data.gz" else gz[: 12 if keep == "12 bytes" else len(gz) // 2])
    with pytest.raises(DataError) as caught:
        aekit.load_data(path)
    message = str(caught.value)
    assert repr(str(path)) in message and "\n" not in message, message
    assert any(words in message for words in ("cannot be read", "not a readable", "truncated")), message


def test_mnist_idx_from_shared_data():
    path = MNIST_DIR / "t10k-images-idx3-ubyte.gz"
    if not path.exists():
        pytest.skip("MNIST not found in ../shared/data")
    x = aekit.load_data(path)
    assert x.shape == (10000, 28, 28) and x.dtype == np.float32
    assert x.min() == 0.0 and x.max() == 1.0
    reference = np.frombuffer(gzip.open(path).read(), np.uint8, offset=16).reshape(-1, 28, 28)
    np.testing.assert_allclose(x, reference / 255.0, rtol=1e-6)
    labels = read_idx(MNIST_DIR / "t10k-labels-idx1-ubyte.gz")
    assert labels.shape == (10000,) and set(np.unique(labels)) == set(range(10))


# ------------------------------------------------------------------ images
def test_image_folder_gray_and_rgb(tmp_path, rng):
    from PIL import Image

    gray = rng.integers(0, 256, size=(3, 6, 7), dtype=np.uint8)
    folder = tmp_path / "gray"
    folder.mkdir()
    for i, img in enumerate(gray):
        Image.fromarray(img, mode="L").save(folder / f"{i}.png")
    (folder / "notes.txt").write_text("not an image")
    x = aekit.load_data(folder)
    assert x.shape == (3, 6, 7) and x.dtype == np.float32
    np.testing.assert_allclose(x, gray / 255.0, rtol=1e-6)

    rgb = rng.integers(0, 256, size=(2, 6, 7, 3), dtype=np.uint8)
    folder = tmp_path / "rgb"
    folder.mkdir()
    for i, img in enumerate(rgb):
        Image.fromarray(img, mode="RGB").save(folder / f"{i}.png")
    x = aekit.load_data(folder)
    assert x.shape == (2, 3, 6, 7)
    np.testing.assert_allclose(x, rgb.transpose(0, 3, 1, 2) / 255.0, rtol=1e-6)
    # color='gray' converts as Pillow's convert('L') (ITU-R 601-2 luma), in file-name order; the
    # JPEG is compared with its own decoded pixels, as the file holds them after compression.
    Image.fromarray(rgb[0], mode="RGB").save(folder / "z.jpg", quality=95)
    gray_x = aekit.load_data(folder, color="gray")
    assert gray_x.shape == (3, 6, 7)
    expected = [np.asarray(Image.open(folder / name).convert("L")) / 255.0 for name in ("0.png", "1.png", "z.jpg")]
    np.testing.assert_allclose(gray_x, np.stack(expected), atol=1e-6)
    luma = (rgb[0] @ np.array([0.299, 0.587, 0.114])) / 255.0
    np.testing.assert_allclose(gray_x[0], luma, atol=1 / 255)
    decoded = np.asarray(Image.open(folder / "z.jpg").convert("RGB")).transpose(2, 0, 1) / 255.0
    np.testing.assert_allclose(aekit.load_data(folder, color="rgb")[2], decoded, atol=1e-6)


def test_image_folder_of_mixed_sizes_is_refused(tmp_path):
    from PIL import Image

    Image.new("L", (4, 4)).save(tmp_path / "a.png")
    Image.new("L", (5, 4)).save(tmp_path / "b.png")
    with pytest.raises(DataError, match="must share one size: 'a.png' is 4x4, 'b.png' is 5x4"):
        aekit.load_data(tmp_path)


def test_image_folder_of_16_bit_and_float_images(tmp_path):
    from PIL import Image

    deep = np.array([[0, 1000], [32768, 65535]], dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "a.png")  # a 16-bit grayscale PNG
    assert Image.open(tmp_path / "a.png").mode.startswith("I")
    x = aekit.load_data(tmp_path)
    assert x.shape == (1, 2, 2) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], deep / 65535.0, rtol=1e-6)  # in [0, 1], as 8-bit images are
    np.testing.assert_array_equal(aekit.load_data(tmp_path, scale=False)[0], deep)
    # As colour (asked for, or beside an RGB image), the gray values are repeated, not clipped to 255.
    rgb = aekit.load_data(tmp_path, color="rgb")
    assert rgb.shape == (1, 3, 2, 2)
    np.testing.assert_allclose(rgb[0], np.repeat(deep[None] / 65535.0, 3, axis=0), rtol=1e-6)
    Image.new("RGB", (2, 2), (255, 0, 0)).save(tmp_path / "b.png")
    both = aekit.load_data(tmp_path)
    np.testing.assert_allclose(both[0, 1], deep / 65535.0, rtol=1e-6)
    np.testing.assert_array_equal(both[1, :, 0, 0], [1, 0, 0])
    # A float image keeps its values.
    floats = tmp_path / "f"
    floats.mkdir()
    Image.fromarray(np.array([[0.25, 0.5]], dtype=np.float32)).save(floats / "a.tif")
    np.testing.assert_array_equal(aekit.load_data(floats), [[[0.25, 0.5]]])


def test_image_folder_skips_hidden_files_and_names_subfolders(tmp_path):
    from PIL import Image

    Image.new("L", (3, 2), 51).save(tmp_path / "a.png")
    (tmp_path / "._a.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS metadata, not an image
    x = aekit.load_data(tmp_path)
    assert x.shape == (1, 2, 3)
    np.testing.assert_allclose(x, 0.2)
    nested = tmp_path / "by_class"
    (nested / "cats").mkdir(parents=True)
    (nested / "dogs").mkdir()
    Image.new("L", (3, 2)).save(nested / "cats" / "c.png")
    with pytest.raises(DataError, match=r"holds no images .*; its subfolders \('cats', 'dogs'\) are not read"):
        aekit.load_data(nested)


# ------------------------------------------------------------------ bad files
def test_bad_files_get_data_errors_naming_the_path(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        aekit.load_data(tmp_path / "missing.npy")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty.csv' is empty"):
        aekit.load_data(tmp_path / "empty.csv")
    np.save(tmp_path / "good.npy", np.zeros((100, 10)))
    raw = (tmp_path / "good.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(raw[:-50])
    with pytest.raises(DataError, match="cut.npy' is not a readable .npy"):
        aekit.load_data(tmp_path / "cut.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="obj.npy"):
        aekit.load_data(tmp_path / "obj.npy")
    np.save(tmp_path / "str.npy", np.array([["a", "b"]]))
    with pytest.raises(DataError, match="str.npy': the array has dtype <U1"):
        aekit.load_data(tmp_path / "str.npy")
    np.save(tmp_path / "inf.npy", np.array([[1.0, 2.0], [np.inf, 0.0]]))
    with pytest.raises(DataError, match=r"inf.npy' holds NaN or infinite values \(first at row 1, column 0"):
        aekit.load_data(tmp_path / "inf.npy")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(DataError, match="junk.npz' is not a readable .npz"):
        aekit.load_data(tmp_path / "junk.npz")
    # An .npz archive under an .npy name (np.load goes by the content), whole or broken.
    np.savez(tmp_path / "archive.npz", a=np.zeros((3, 2)))
    (tmp_path / "archive.npy").write_bytes((tmp_path / "archive.npz").read_bytes())
    with pytest.raises(DataError, match="archive.npy' is an .npz archive, not an .npy file; name it .npz"):
        aekit.load_data(tmp_path / "archive.npy")
    header = raw.replace(b"{'descr'", b"{{'descr'", 1)  # the header no longer parses as a literal
    (tmp_path / "header.npy").write_bytes(header)
    for mmap in (False, True):
        with pytest.raises(DataError, match="header.npy' is not a readable .npy file: its header is damaged"):
            aekit.load_data(tmp_path / "header.npy", mmap=mmap)
    (tmp_path / "broken.npy").write_bytes((tmp_path / "archive.npz").read_bytes()[:-30])
    with pytest.raises(DataError, match="broken.npy' is not a readable .npy file"):
        aekit.load_data(tmp_path / "broken.npy")


def test_values_beyond_float32_are_reported_as_too_large(tmp_path, recwarn):
    # 1e40 is a finite number in the file; calling it NaN or infinite would send the user looking
    # for a value that is not there.
    np.save(tmp_path / "big.npy", np.array([[1.0, 2.0], [3.0, -1e40]]))
    with pytest.raises(DataError, match=r"big.npy' holds values too large for float32 \(first at row 1, column 1"):
        aekit.load_data(tmp_path / "big.npy")
    with pytest.raises(DataError, match=r"big.csv' holds values too large for float32 \(first at row 0, column 0"):
        aekit.load_data(_write_csv(tmp_path, "1e39,2\n3,4\n", "big.csv"))
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    with pytest.raises(DataError, match="NaN or infinite values"):
        aekit.load_data(_write_csv(tmp_path, "1,inf\n3,4\n", "inf.csv"))
    # Values that fit float32 only after rounding are fine, in text and in float64 files.
    np.testing.assert_allclose(aekit.load_data(_write_csv(tmp_path, "3e38,-3e38\n", "edge.csv")), [[3e38, -3e38]])


def test_idx_header_with_huge_dimensions_is_a_data_error(tmp_path):
    # 2**31 cubed overflows int64 to 0, which matched the empty payload: a raw ValueError followed.
    (tmp_path / "huge-idx3-ubyte").write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", 2**31, 2**31, 2**31))
    with pytest.raises(DataError, match=r"huge-idx3-ubyte' is truncated: the header promises shape \(2147483648,"):
        aekit.load_data(tmp_path / "huge-idx3-ubyte")


def test_npy_file_under_an_npz_name(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 3)))
    (tmp_path / "x.npz").write_bytes((tmp_path / "x.npy").read_bytes())
    with pytest.raises(DataError, match="x.npz' is an .npy file, not an .npz archive; name it .npy"):
        aekit.load_data(tmp_path / "x.npz")


def test_bad_arguments_get_configuration_errors_naming_them(tmp_path):
    path = _write_csv(tmp_path, "1,2,3\n4,5,6\n")
    for kwargs, name in [
        ({"usecols": ["a"]}, "usecols"),
        ({"usecols": [1.5]}, "usecols"),
        ({"usecols": []}, "usecols"),
        ({"usecols": "0"}, "usecols"),
        ({"delimiter": ""}, "delimiter"),
        ({"delimiter": ", "}, "delimiter"),
    ]:
        with pytest.raises(ConfigurationError, match=f"load_data: {name} must be"):
            aekit.load_data(path, **kwargs)
    for bad in (None, 3):
        with pytest.raises(ConfigurationError, match=f"path must be a file or folder path.*got .*{bad}"):
            aekit.load_data(bad)
    np.testing.assert_array_equal(aekit.load_data(str(path).encode(), usecols=(np.int64(2),)), [[3], [6]])
    np.testing.assert_array_equal(aekit.load_data(path, usecols=np.array([2, 0])), [[3, 1], [6, 4]])


@pytest.mark.parametrize("mmap", [False, True])
def test_npy_without_examples_or_features_is_refused(tmp_path, mmap):
    np.save(tmp_path / "rows.npy", np.zeros((0, 4), np.float32))
    np.save(tmp_path / "cols.npy", np.zeros((3, 0), np.float32))
    with pytest.raises(DataError, match=r"rows.npy' holds no examples \(shape \(0, 4\)\)"):
        aekit.load_data(tmp_path / "rows.npy", mmap=mmap)
    with pytest.raises(DataError, match=r"cols.npy' holds examples without any features \(shape \(3, 0\)\)"):
        aekit.load_data(tmp_path / "cols.npy", mmap=mmap)


# ------------------------------------------------------------------ streaming
class RowStore:
    """An h5py-like array: shape, dtype and row slicing only (no __array__)."""

    def __init__(self, array):
        self._array = array
        self.shape, self.dtype = array.shape, array.dtype
        self.slices = []

    def __getitem__(self, index):
        self.slices.append(index)
        return self._array[index]


def test_streaming_source_covers_every_row_once_per_epoch(rng):
    x = np.arange(1000 * 3, dtype=np.float32).reshape(1000, 3)
    store = RowStore(x)
    assert is_streamable(store) and not is_streamable(x) and not is_streamable([[1.0]])
    source = StreamingSource(store, block_bytes=100 * 3 * 4)  # 100 rows a block
    assert len(source) == 1000 and source.block_rows == 100
    gen = torch.Generator().manual_seed(0)
    first = torch.cat([xb for xb, _ in source.batches(32, gen)])
    second = torch.cat([xb for xb, _ in source.batches(32, gen)])
    for epoch in (first, second):
        assert sorted(epoch[:, 0].tolist()) == sorted(x[:, 0].tolist())  # a permutation of all rows
    assert not torch.equal(first, second)  # re-mixed every epoch
    assert not torch.equal(first, torch.from_numpy(x))
    ordered = torch.cat([xb for xb, _ in source.batches(32, None)])
    np.testing.assert_array_equal(ordered.numpy(), x)
    assert max(xb.shape[0] for xb, _ in source.batches(32, gen)) == 32
    head, tail = source.split_tail(150)
    assert (len(head), len(tail)) == (850, 150)
    np.testing.assert_array_equal(torch.cat([b for b, _ in tail.batches(64, None)]).numpy(), x[850:])


def test_training_from_memmap_matches_in_memory_quality(tmp_path, digits):
    x = digits[0][:800]
    np.save(tmp_path / "digits.npy", x)
    mapped = aekit.load_data(tmp_path / "digits.npy", mmap=True)
    options = dict(algo="adam", batch_size=32, learning_rate=5e-3, max_epochs=6, valid_split=0.1)
    streamed = aekit.Autoencoder([64, (16, "sigmoid"), (64, "tied")], rng=3)
    memory = aekit.Autoencoder([64, (16, "sigmoid"), (64, "tied")], rng=3)
    before = streamed.score(x)
    _, valid_stream = streamed.train(mapped, **options)
    _, valid_memory = memory.train(x, **options)
    assert streamed.score(x) > before + 0.3
    assert streamed.score(x) == pytest.approx(memory.score(x), abs=0.05)
    assert valid_stream["loss"] == pytest.approx(valid_memory["loss"], rel=0.25)
    assert len(streamed.history) == len(memory.history)


def test_streaming_uses_small_blocks_and_a_tail_for_validation(digits, monkeypatch):
    import aekit.streaming as streaming

    monkeypatch.setattr(streaming, "DEFAULT_BLOCK_BYTES", 64 * 4 * 100)  # 100 rows a block
    x = digits[0][:600]
    store = RowStore(x)
    net = aekit.Autoencoder([64, (8, "relu"), 64], rng=1)
    net.train(store, valid_split=0.25, max_epochs=2, batch_size=50)
    spans = [(s.start, s.stop) for s in store.slices]
    assert all(stop - start <= 100 for start, stop in spans)  # never more than one block in memory
    # Validation is the contiguous 150-row tail; training never reads it.
    tail = [span for span in spans if span[0] >= 450]
    assert sum(stop - start for start, stop in tail) == 150 * 2  # once per epoch
    assert all(stop <= 450 or start >= 450 for start, stop in spans)


def test_streaming_reports_bad_rows_and_lbfgs(tmp_path):
    x = np.ones((300, 4), np.float32)
    x[257, 2] = np.nan
    np.save(tmp_path / "bad.npy", x)
    mapped = aekit.load_data(tmp_path / "bad.npy", mmap=True)  # not scanned up front
    net = aekit.Autoencoder([4, 2, 4])
    with pytest.raises(DataError, match=r"x rows \d+:\d+: .*NaN or infinite values \(first in row 257\)$"):
        net.train(mapped, max_epochs=1, validate_every=0)
    np.save(tmp_path / "good.npy", np.ones((30, 4), np.float32))
    with pytest.raises(ConfigurationError, match="lbfgs"):
        net.train(aekit.load_data(tmp_path / "good.npy", mmap=True), algo="lbfgs", max_epochs=1)


def test_weighted_streaming(tmp_path, rng):
    x = rng.random((200, 6)).astype(np.float32)
    w = rng.random((200, 6)).astype(np.float32)
    w[:100, 3:] = 0.0  # weights that differ from row to row: a misaligned block of w would show
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "w.npy", w)
    xm = aekit.load_data(tmp_path / "x.npy", mmap=True)
    wm = np.load(tmp_path / "w.npy", mmap_mode="r")
    streamed, memory, unweighted = (aekit.Autoencoder([6, (3, "linear"), 6], weighted=True, rng=2) for _ in range(3))
    options = dict(max_epochs=3, validate_every=0, shuffle=False)
    train, _ = streamed.train([xm, wm], **options)
    memory_train, _ = memory.train([x, w], **options)
    unweighted.train([x, np.ones_like(w)], **options)
    # In the same batch order, streaming x and w block by block trains exactly as in memory...
    assert train == memory_train
    for got, expected in zip(streamed.params, memory.params):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    # ...and the weights do change the result.
    assert not torch.equal(streamed.find("out", "w"), unweighted.find("out", "w"))
    with pytest.raises(DataError, match="weights must be shaped like x"):
        StreamingSource(xm, wm[:, :3])


@pytest.mark.parametrize("block_bytes", [6 * 4 * 50, None])  # 50-row blocks, and one block
def test_streamed_negative_weight_names_its_row_in_the_whole_array(tmp_path, rng, monkeypatch, block_bytes):
    import aekit.streaming as streaming

    if block_bytes is not None:
        monkeypatch.setattr(streaming, "DEFAULT_BLOCK_BYTES", block_bytes)
    x = rng.random((200, 6)).astype(np.float32)
    w = np.ones_like(x)
    w[173, 4] = -0.5
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "w.npy", w)
    xm, wm = (np.load(tmp_path / f"{name}.npy", mmap_mode="r") for name in ("x", "w"))
    message = r"x weights must be >= 0, got a minimum of -0.5 \(first in row 173\)$"
    net = aekit.Autoencoder([6, (3, "linear"), 6], weighted=True, rng=2)
    with pytest.raises(DataError, match=r"^x weights rows \d+:\d+: " + message):
        net.train([xm, wm], max_epochs=1, validate_every=0)
    with pytest.raises(DataError, match=r"^x weights rows \d+:\d+: " + message):  # the default weights check
        for _ in StreamingSource(xm, wm).batches(32, torch.Generator().manual_seed(0)):
            pass
    # score reads w block by block too; its message is the in-memory one.
    for given in (w, wm):
        with pytest.raises(DataError, match=r"^w must be >= 0, got a minimum of -0.5 \(first in row 173\)$"):
            net.score(x, given)
