"""Inference on memory-mapped (streamable) data: block by block, equal to the in-memory results."""

from __future__ import annotations

import numpy as np
import pytest

import aekit
import aekit.model.inference as inference
import aekit.streaming as streaming
from aekit.errors import DataError
from aekit.preprocessing import Whitener

FEATURES = 64
BLOCK_ROWS = 100


class RecordingArray:
    """An h5py-like array (shape, dtype, row slices; no __array__) that records every slice read."""

    def __init__(self, array: np.ndarray):
        self._array, self.shape, self.dtype = array, array.shape, array.dtype
        self.spans: list[tuple[int, int]] = []

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: slice) -> np.ndarray:
        assert isinstance(index, slice) and index.step is None, f"expected a row slice, got {index!r}"
        start, stop, _ = index.indices(self.shape[0])
        self.spans.append((start, stop))
        return self._array[index]

    def rows_read(self) -> list[int]:
        return [row for start, stop in self.spans for row in range(start, stop)]


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of BLOCK_ROWS float32 rows of FEATURES values, so a few hundred rows span several blocks."""
    monkeypatch.setattr(streaming, "DEFAULT_BLOCK_BYTES", FEATURES * 4 * BLOCK_ROWS)


@pytest.fixture
def mapped(tmp_path, digits):
    x = digits[0][:450]
    np.save(tmp_path / "x.npy", x)
    return x, np.load(tmp_path / "x.npy", mmap_mode="r")


def dense_net(preprocess: bool, x: np.ndarray) -> aekit.Autoencoder:
    net = aekit.Autoencoder([FEATURES, (16, "sigmoid"), (FEATURES, "tied")], rng=3)
    if preprocess:
        net.set_preprocessing(Whitener("zca", epsilon=0.1).fit(x))
    return net


@pytest.mark.parametrize("preprocess", [False, True], ids=["raw", "zca"])
def test_streamed_results_equal_in_memory(small_blocks, mapped, preprocess):
    x, xm = mapped
    assert isinstance(xm, np.memmap)
    net = dense_net(preprocess, x)
    # The whitening matrix product may round differently on a block than on the whole array.
    tol = dict(rtol=1e-6, atol=1e-6) if preprocess else dict(rtol=0, atol=0)
    np.testing.assert_allclose(net.encode(xm), net.encode(x), **tol)
    np.testing.assert_allclose(net.encode(xm, layer="out"), net.encode(x, layer="out"), **tol)
    np.testing.assert_allclose(net.predict(xm), net.predict(x), **tol)
    streamed, memory = net.feed_forward(xm), net.feed_forward(x)
    assert list(streamed) == list(memory)
    for key in memory:
        np.testing.assert_allclose(streamed[key], memory[key], **tol, err_msg=key)
    assert net.score(xm) == pytest.approx(net.score(x), rel=1e-9, abs=1e-9)
    w = np.random.default_rng(1).random(x.shape).astype(np.float32)
    w[:, 5] = 0.0  # a feature with no weight at all
    assert net.score(xm, w) == pytest.approx(net.score(x, w), rel=1e-9, abs=1e-9)
    assert net.score(xm, RecordingArray(w)) == pytest.approx(net.score(x, w), rel=1e-9, abs=1e-9)
    codes = net.encode(x)
    np.testing.assert_allclose(net.decode(RecordingArray(codes)), net.decode(codes), **tol)


def test_blocks_aligned_to_batches_give_identical_outputs(small_blocks, mapped, monkeypatch):
    monkeypatch.setattr(inference, "INFERENCE_BATCH", 32)  # blocks of 100 rows shrink to 96 = 3 batches
    x, xm = mapped
    net = dense_net(False, x)
    store = RecordingArray(xm)
    np.testing.assert_array_equal(net.predict(store), net.predict(x))
    assert {stop - start for start, stop in store.spans if stop > start} == {96, 450 - 4 * 96}


@pytest.mark.parametrize("method", ["encode", "predict", "feed_forward", "score"])
def test_streaming_reads_each_row_once_in_bounded_blocks(small_blocks, mapped, method):
    x, xm = mapped
    store = RecordingArray(xm)
    getattr(dense_net(True, x), method)(store)
    assert max(stop - start for start, stop in store.spans) <= BLOCK_ROWS  # never the whole array
    assert store.rows_read() == list(range(len(x)))  # every row exactly once, in order


def test_streamed_images_match_in_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(streaming, "DEFAULT_BLOCK_BYTES", 64 * 4 * 40)  # 40 images a block
    images = np.random.default_rng(0).random((130, 1, 8, 8)).astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "flat.npy", images.reshape(130, -1))
    conv = dict(form="conv2", channels=4, kernel=3, stride=2, activation="relu")
    deconv = dict(form="deconv2", channels=1, kernel=3, stride=2, activation="sigmoid", shape=(1, 8, 8))
    net = aekit.Autoencoder([(1, 8, 8), conv, deconv], rng=0)
    for name in ("images.npy", "flat.npy"):  # (n, C, H, W) or flat rows for the declared shape
        store = RecordingArray(np.load(tmp_path / name, mmap_mode="r"))
        np.testing.assert_array_equal(net.predict(store), net.predict(images))
        np.testing.assert_array_equal(net.encode(store), net.encode(images))
        assert max(stop - start for start, stop in store.spans) <= 40
    assert net.score(np.load(tmp_path / "images.npy", mmap_mode="r")) == pytest.approx(net.score(images), rel=1e-9)


def test_nan_in_a_late_block_raises_the_in_memory_error_type(small_blocks, tmp_path):
    x = np.random.default_rng(0).random((450, FEATURES)).astype(np.float32)
    x[437, 9] = np.nan
    np.save(tmp_path / "bad.npy", x)
    xm = np.load(tmp_path / "bad.npy", mmap_mode="r")
    net = dense_net(False, x)
    for method in ("encode", "predict", "feed_forward", "score"):
        with pytest.raises(DataError) as memory:
            getattr(net, method)(x)
        with pytest.raises(type(memory.value), match=r"^x rows 400:450: x holds NaN or infinite values") as streamed:
            getattr(net, method)(xm)
        assert "\n" not in str(streamed.value)
        # The row is counted in the user's array, as in memory, not from the start of the block.
        assert "(first in row 437)" in str(memory.value) and str(streamed.value).endswith("(first in row 437)")


def test_bad_shapes_fail_before_any_row_is_read(small_blocks, tmp_path):
    net = dense_net(False, np.zeros((2, FEATURES), np.float32))
    for bad, message in [
        (np.zeros((300, FEATURES - 1), np.float32), "x has 63 features, but this Autoencoder expects 64 (layer 'in')"),
        (np.zeros((0, FEATURES), np.float32), "x is empty: it has 0 examples"),
        (np.array([["a"] * FEATURES] * 3), "x must hold real numbers, got an array of dtype <U1"),
    ]:
        store = RecordingArray(bad)
        with pytest.raises(DataError) as streamed:
            net.predict(store)
        assert str(streamed.value) == message
        with pytest.raises(DataError, match="^" + message.replace("(", r"\(").replace(")", r"\)") + "$"):
            net.predict(bad)  # the same message as the in-memory path
        assert all(stop == start for start, stop in store.spans)  # only the empty header slice
    with pytest.raises(DataError, match=r"^w must be shaped like x \(450 rows of 64 values\), got shape \(450, 3\)$"):
        net.score(RecordingArray(np.zeros((450, FEATURES), np.float32)), np.ones((450, 3)))
