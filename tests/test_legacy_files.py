"""Files written by the old aekit (0ff98ae, before the re-layering) keep working, bit for bit.

The files in ``tests/data/legacy/`` were written by the old version with
``tests/data/legacy/make_legacy.py`` (its docstring says how); they hold a dense model with a
StandardScaler attached, a conv model with batch norm, an Adam run's checkpoint after epoch 3, the
input rows used and what the old code computed from them.  Here the current code reads them and must
compute the same numbers exactly: the same float32 operations in the same order on the same torch
build give the same bits, so any difference is a change in behaviour, not round-off to tolerate.
(Both sides run on one CPU thread so that no reduction depends on the thread count; the pinned torch
2.13.0 CPU build is the one the files were written with.)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import aekit
import aekit.checkpoint
import aekit.train.checkpoint

LEGACY = Path(__file__).parent / "data" / "legacy"

# The checkpointed run, as make_legacy.py ran it (cross-checked against ckpt_resumed.json below).
CKPT_LAYERS = [12, (6, "relu"), (12, "tied")]
CKPT_SEED = 7
CKPT_EPOCHS = 3
CKPT_OPTIONS = dict(algo="adam", learning_rate=3e-3, batch_size=16, input_noise=0.05, hidden_l1=1e-3)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def legacy(name: str) -> np.ndarray:
    return np.load(LEGACY / name)


def record() -> dict:
    return json.loads((LEGACY / "ckpt_resumed.json").read_text())


def test_the_fixtures_are_the_old_versions_and_small():
    assert record()["written_by"]["aekit_commit"] == "0ff98ae"
    total = sum(f.stat().st_size for f in LEGACY.iterdir())
    assert total < 200_000, f"tests/data/legacy holds {total} bytes; keep fixtures small"


def test_dense_model_file_with_preprocessing():
    net = aekit.load(LEGACY / "dense.aekit")
    assert isinstance(net.preprocessing, aekit.preprocessing.StandardScaler)
    assert tuple(net.graph.input_shape) == (64,)
    x = legacy("dense_x.npy")
    np.testing.assert_array_equal(net.predict(x), legacy("dense_predict.npy"))
    np.testing.assert_array_equal(net.encode(x), legacy("dense_encode.npy"))


def test_conv_model_file_with_batch_norm():
    net = aekit.load(str(LEGACY / "conv.aekit"))
    state = net.graph.state_dict()
    # The running statistics came from the old run's 2 epochs of 8 batches: they must be read, not reset.
    tracked = [k for k in state if k.endswith("num_batches_tracked")]
    assert tracked and all(int(state[k]) == 16 for k in tracked), {k: int(state[k]) for k in tracked}
    assert not any(torch.equal(state[k], torch.zeros_like(state[k])) for k in state if k.endswith("running_mean"))
    x = legacy("conv_x.npy")
    np.testing.assert_array_equal(net.predict(x), legacy("conv_predict.npy"))
    np.testing.assert_array_equal(net.encode(x), legacy("conv_encode.npy"))


def test_checkpoint_info_reads_the_old_checkpoint():
    # The old module path still offers what it did.
    assert aekit.checkpoint.checkpoint_info is aekit.train.checkpoint.checkpoint_info
    info = aekit.checkpoint.checkpoint_info(LEGACY / "run.ckpt")
    expected = record()["checkpoint_info"]
    assert {k: info[k] for k in expected} == expected
    assert info["epoch"] == CKPT_EPOCHS


@pytest.mark.parametrize(
    "load", [aekit.checkpoint.load_checkpoint_model, aekit.load], ids=["load_checkpoint_model", "aekit.load"]
)
def test_checkpoint_model_predicts_as_the_old_one(load):
    net = load(LEGACY / "run.ckpt")
    data = legacy("ckpt_data.npy")
    np.testing.assert_array_equal(net.predict(data), legacy("ckpt_predict.npy"))
    np.testing.assert_array_equal(net.encode(data), legacy("ckpt_encode.npy"))


def test_resuming_the_old_checkpoint_continues_the_old_run_bit_for_bit(tmp_path):
    saved = record()
    assert saved["layers"] == json.loads(json.dumps(CKPT_LAYERS)) and saved["rng"] == CKPT_SEED
    assert saved["options"] == CKPT_OPTIONS and saved["checkpoint_epochs"] == CKPT_EPOCHS
    path = tmp_path / "run.ckpt"
    shutil.copyfile(LEGACY / "run.ckpt", path)  # resuming rewrites the checkpoint: never the fixture
    data = legacy("ckpt_data.npy")
    net = aekit.Autoencoder(CKPT_LAYERS, rng=CKPT_SEED)
    monitors = net.train(data, max_epochs=saved["resume_max_epochs"], checkpoint=path, resume=True, **CKPT_OPTIONS)

    old = np.load(LEGACY / "ckpt_resumed.npz")
    old_state = {k[len("state.") :]: old[k] for k in old.files if k.startswith("state.")}
    state = {k: v.detach().cpu().numpy() for k, v in net.graph.state_dict().items()}
    assert sorted(state) == sorted(old_state)
    for key in old_state:
        np.testing.assert_array_equal(state[key], old_state[key], err_msg=key)
    assert json.loads(json.dumps(list(monitors))) == saved["monitors"]
    # Epochs trained now also record their optimizer steps (the old ones keep what they had).
    resumed = [entry for entry in net.history if "steps" in entry]
    assert [entry["epoch"] for entry in resumed] == list(range(saved["checkpoint_epochs"] + 1, len(net.history) + 1))
    assert [{k: v for k, v in e.items() if k != "steps"} for e in json.loads(json.dumps(net.history))] == saved[
        "history"
    ]
    np.testing.assert_array_equal(net.predict(data), old["predict"])
    np.testing.assert_array_equal(net.encode(data), old["encode"])
    assert aekit.train.checkpoint.checkpoint_info(path)["epoch"] == saved["resume_max_epochs"]
