"""Activation files in safetensors format: load_data reads them whole or row by row, training and
inference stream them, the command line picks a tensor with FILE:NAME."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import aekit
from aekit.data.safetensors_files import SafetensorsArray
from aekit.data.sources import is_streamable

MINILM = Path(__file__).resolve().parents[2] / "shared" / "data" / "minilm-acts" / "acts.safetensors"


@pytest.fixture
def acts_file(tmp_path):
    rng = np.random.default_rng(0)
    acts = (rng.normal(size=(300, 24)) @ rng.normal(size=(24, 24))).astype(np.float16)
    path = tmp_path / "acts.safetensors"
    save_file({"acts": acts, "token_id": np.arange(300, dtype=np.int32)}, str(path))
    return path, acts


def test_the_one_matrix_is_read_as_float32(acts_file):
    path, acts = acts_file
    x = aekit.load_data(path)
    assert x.dtype == np.float32 and x.shape == (300, 24)
    np.testing.assert_array_equal(x, acts.astype(np.float32))
    np.testing.assert_array_equal(aekit.load_data(path, key="acts"), x)


def test_keys_are_named_in_errors(tmp_path, acts_file):
    path, acts = acts_file
    with pytest.raises(aekit.DataError, match="has no tensor named 'act'; it holds 'acts' \\(300, 24\\)"):
        aekit.load_data(path, key="act")
    both = tmp_path / "both.safetensors"
    save_file({"a": acts, "b": acts}, str(both))
    with pytest.raises(aekit.DataError, match="holds several tensors .* pick one with key="):
        aekit.load_data(both)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(path.read_bytes()[:100])
    with pytest.raises(aekit.DataError, match="broken.safetensors"):
        aekit.load_data(broken)


def test_mmap_reads_rows_on_demand_and_streams_like_the_array(acts_file):
    path, acts = acts_file
    lazy = aekit.load_data(path, mmap=True)
    assert isinstance(lazy, SafetensorsArray) and is_streamable(lazy) and lazy.shape == (300, 24)
    np.testing.assert_array_equal(lazy[10:20], acts[10:20])
    np.testing.assert_array_equal(lazy[np.array([3, 7, 250])], acts[[3, 7, 250]])
    net = aekit.Autoencoder([24, (48, "topk:8"), dict(size=24, activation="linear", constraint="unit_norm")], rng=0)
    before = net.score(aekit.load_data(path))
    net.train(lazy, max_epochs=3, batch_size=32, validate_every=0)
    x = aekit.load_data(path)
    np.testing.assert_array_equal(net.predict(lazy), net.predict(x))  # the streamed path, bit for bit
    assert aekit.evaluate(net, lazy) == aekit.evaluate(net, x)  # read block by block, the same figures
    assert net.score(x) > before
    np.testing.assert_array_equal(np.asarray(lazy), acts)
    with pytest.raises(IndexError):
        lazy[300]


def test_the_command_line_picks_a_tensor(tmp_path, acts_file):
    path, _ = acts_file
    out = tmp_path / "sae.aekit"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "aekit",
            "train",
            f"{path}:acts",
            "--layers",
            "24,48,24",
            "--epochs",
            "1",
            "--output",
            str(out),
            "-q",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert aekit.load(out).num_params > 0


@pytest.mark.skipif(not MINILM.exists(), reason="../shared/data/minilm-acts is absent")
def test_the_minilm_activations_load():
    x = aekit.load_data(MINILM, key="acts")
    assert x.shape == (100116, 384) and x.dtype == np.float32 and np.isfinite(x).all()
    assert aekit.load_data(MINILM, mmap=True).shape == (100116, 384)  # the one 2-D tensor, chosen alone
