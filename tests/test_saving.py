import json
import os
import pickle
import struct

import numpy as np
import pytest
import torch

import aekit
from aekit import ModelFileError
from aekit.saving import atomic_write, read_model_file


@pytest.fixture
def trained(digits):
    x = digits[0][:300]
    net = aekit.Autoencoder([64, (16, "sigmoid"), (8, "relu"), (16, "tied"), (64, "tied")], loss="bce")
    net.add_loss("mae", weight=0.2)
    net.train(x, max_epochs=2, validate_every=0)
    return net, x


def test_round_trip_predicts_bit_for_bit(trained, tmp_path):
    net, x = trained
    path = tmp_path / "model.aekit"
    net.save(path)
    again = aekit.load(path)
    np.testing.assert_array_equal(again.predict(x), net.predict(x))
    np.testing.assert_array_equal(again.encode(x), net.encode(x))
    assert again.config() == net.config()
    assert again.history == net.history
    assert [(t.name, t.weight) for t in again.losses] == [("bce", 1.0), ("mae", 0.2)]
    # tied weights stay shared after loading
    assert again.graph.layers["out"].partner is again.graph.layers["hid1"]
    assert aekit.Autoencoder.load(path).num_params == net.num_params


def test_file_is_plain_safetensors_with_json_config(trained, tmp_path):
    from safetensors import safe_open

    net, _ = trained
    path = tmp_path / "model.aekit"
    net.save(path)
    with safe_open(str(path), "pt") as handle:
        meta = handle.metadata()
        assert sorted(handle.keys()) == ["hid1.b", "hid1.w", "hid2.b", "hid2.w", "hid3.b", "out.b"]
    assert meta["format"] == "aekit" and meta["format_version"] == "1"
    config = json.loads(meta["config"])
    assert [layer["name"] for layer in config["layers"]] == ["in", "hid1", "hid2", "hid3", "out"]


def test_save_is_atomic(trained, tmp_path, monkeypatch):
    net, _ = trained
    path = tmp_path / "model.aekit"
    aekit.Autoencoder([4, 2, 4]).save(path)
    previous = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        net.save(path)
    assert path.read_bytes() == previous
    assert [p.name for p in tmp_path.iterdir()] == ["model.aekit"]  # no temporary left behind


def test_save_replaces_a_model_but_never_another_file(trained, tmp_path):
    trained, _ = trained
    notes = tmp_path / "notes.txt"
    notes.write_text("a week of results")
    with pytest.raises(ModelFileError, match=r"notes\.txt.*not an aekit model file; refusing to replace it"):
        trained.save(notes)
    assert notes.read_text() == "a week of results"
    # An older model, and an empty file (e.g. made by touch), are replaced.
    model = tmp_path / "m.aekit"
    aekit.Autoencoder([4, 2, 4]).save(model)
    trained.save(model)
    np.testing.assert_array_equal(aekit.load(model).find("hid1", "w").detach(), trained.find("hid1", "w").detach())
    empty = tmp_path / "empty.aekit"
    empty.touch()
    trained.save(empty)
    assert aekit.load(empty).num_params == trained.num_params


def test_atomic_write_into_a_missing_folder(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        atomic_write(tmp_path / "nope" / "m.aekit", b"x")


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_a_pickle_is_refused_and_never_run(tmp_path):
    target = tmp_path / "created-by-pickle"
    path = tmp_path / "evil.aekit"
    path.write_bytes(pickle.dumps(_Evil(str(target))))
    with pytest.raises(ModelFileError, match="looks like a pickle"):
        aekit.load(path)
    assert not target.exists()


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty"),
        (b"\x01\x02", "truncated"),
        (b"PK\x03\x04" + b"\0" * 100, "zip archive"),
        (b"\x93NUMPY" + b"\0" * 100, "pass it as data"),
    ],
)
def test_foreign_files(tmp_path, content, message):
    path = tmp_path / "m.aekit"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match=message):
        aekit.load(path)


def test_missing_truncated_and_tampered_files(trained, tmp_path):
    net, _ = trained
    with pytest.raises(ModelFileError, match="does not exist"):
        aekit.load(tmp_path / "missing.aekit")
    with pytest.raises(ModelFileError, match="is a folder"):
        aekit.load(tmp_path)
    path = tmp_path / "m.aekit"
    net.save(path)
    raw = path.read_bytes()
    (tmp_path / "cut.aekit").write_bytes(raw[: len(raw) - 100])
    with pytest.raises(ModelFileError, match="damaged or truncated"):
        aekit.load(tmp_path / "cut.aekit")
    # a config that no longer matches the tensors
    tensors, meta = read_model_file(path)
    meta["config"]["layers"][2]["size"] = 9
    from aekit.saving import write_model_file

    write_model_file(
        tmp_path / "tampered.aekit", tensors, {k: v for k, v in meta.items() if k in ("config", "history")}
    )
    with pytest.raises(ModelFileError, match="tensor .hid2.w. has shape \\(16, 8\\)"):
        aekit.load(tmp_path / "tampered.aekit")


def test_plain_safetensors_without_aekit_metadata(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ModelFileError, match="not an aekit model"):
        aekit.load(tmp_path / "plain.safetensors")


def test_newer_format_versions_are_refused(trained, tmp_path):
    net, _ = trained
    path = tmp_path / "m.aekit"
    net.save(path)
    raw = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", raw[:8])
    header = raw[8 : 8 + n].replace(b'"format_version":"1"', b'"format_version":"9"')
    path.write_bytes(bytes(raw[:8]) + bytes(header) + bytes(raw[8 + n :]))
    with pytest.raises(ModelFileError, match="format version 9, newer than"):
        aekit.load(path)


def _header(raw: bytes) -> tuple[int, dict]:
    (n,) = struct.unpack("<Q", raw[:8])
    return n, json.loads(raw[8 : 8 + n])


def test_same_model_same_bytes(trained, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save as st_save

    from aekit.preprocessing import StandardScaler
    from aekit.saving import model_metadata, model_tensors

    net, x = trained
    net.set_preprocessing(StandardScaler().fit(x))  # more metadata keys, more tensors
    files = []
    for i in range(6):  # safetensors' own metadata order changed from call to call
        net.save(tmp_path / f"m{i}.aekit")
        files.append((tmp_path / f"m{i}.aekit").read_bytes())
    assert all(raw == files[0] for raw in files)
    # save -> load -> save gives the same bytes again
    aekit.load(tmp_path / "m0.aekit").save(tmp_path / "again.aekit")
    assert (tmp_path / "again.aekit").read_bytes() == files[0]

    # Still the safetensors layout: a header padded to 8 bytes, then the same data and
    # header content as safetensors' own writer gives for the same tensors and metadata.
    n, header = _header(files[0])
    assert n % 8 == 0 and files[0][8:9] == b"{"
    tensors = {k: v.detach().contiguous() for k, v in model_tensors(net).items()}
    meta = {k: json.dumps(v) for k, v in model_metadata(net).items()}
    meta.update(format="aekit", format_version="1", aekit_version=aekit.__version__)
    reference = st_save(tensors, metadata=meta)
    ref_n, ref_header = _header(reference)
    assert header == ref_header
    assert files[0][8 + n :] == reference[8 + ref_n :]
    assert list(header["__metadata__"]) == sorted(meta)
    with safe_open(str(tmp_path / "m0.aekit"), "pt") as handle:
        assert handle.metadata() == meta
        for key, value in tensors.items():
            assert torch.equal(handle.get_tensor(key), value)


def test_files_with_the_metadata_in_any_order_still_load(trained, tmp_path):
    from safetensors.torch import save as st_save

    from aekit.saving import model_metadata, model_tensors

    net, x = trained
    # Files written before the header was put in order: safetensors' own writer, keys unsorted.
    meta = {k: json.dumps(v) for k, v in reversed(model_metadata(net).items())}
    meta.update(aekit_version="0.1.0", format_version="1", format="aekit")
    raw = st_save({k: v.detach().contiguous() for k, v in model_tensors(net).items()}, metadata=meta)
    (tmp_path / "old.aekit").write_bytes(raw)
    np.testing.assert_array_equal(aekit.load(tmp_path / "old.aekit").predict(x), net.predict(x))


def test_every_loss_weight_round_trips(tmp_path):
    net = aekit.Autoencoder([8, (3, "sigmoid"), (8, "sigmoid")], loss="mae", rng=0)
    net.set_loss("bce", weight=0.5)
    net.add_loss("mse", weight=2.0)
    net.save(tmp_path / "m.aekit")
    again = aekit.load(tmp_path / "m.aekit")
    assert [(t.name, t.weight) for t in again.losses] == [("bce", 0.5), ("mse", 2.0)]
    x = np.random.default_rng(0).random((5, 8)).astype(np.float32)
    assert again.loss(x).item() == net.loss(x).item()


def _rewrite_config(net, path, change):
    """Save ``net`` to ``path`` with its config changed by ``change(config)`` (a tampered file)."""
    from aekit.saving import model_metadata, model_tensors, write_model_file

    meta = model_metadata(net)
    change(meta["config"])
    write_model_file(path, model_tensors(net), meta)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c["layers"][1].update(size=-4), r"layers\[1\] \('hid1'\) size must be a positive integer, got -4"),
        (lambda c: c["layers"][1].update(size="4"), r"size must be a positive integer, got '4'"),
        (lambda c: c["layers"][1].update(batch_norm="no"), "batch_norm must be true or false"),
        (lambda c: c["layers"][1].update(name=5), r"layers\[1\] name must be a non-empty string"),
        (lambda c: c["layers"].__setitem__(1, [4, "relu"]), r"layers\[1\] must be a dict, got list"),
        (lambda c: c.update(layers=None), "layers must be a non-empty list"),
        (lambda c: c["layers"][1].update(init={"std": "x"}), "std must be a finite number"),
        (lambda c: c["layers"][1].update(name="in"), "'in' more than once"),
        (lambda c: c.update(losses=[{"weight": 1}]), "losses must be a list of dicts with a 'name'"),
        (lambda c: c.update(losses=[{"name": "mse", "output": "nope"}]), "reads layer 'nope', which does not exist"),
        (lambda c: c.update(weighted="no"), "weighted must be true or false"),
        (lambda c: c.update(hidden_activation="os.system"), "hidden_activation: unknown activation"),
        (lambda c: c.update(dtype="float64"), "unknown model config key 'dtype'"),
    ],
)
def test_tampered_configs_are_one_line_errors_naming_the_problem(tmp_path, change, message):
    net = aekit.Autoencoder([8, (4, "sigmoid"), (8, "tied")])
    path = tmp_path / "m.aekit"
    _rewrite_config(net, path, change)
    with pytest.raises(ModelFileError, match=message) as info:
        aekit.load(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_huge_declared_sizes_are_refused_before_allocating(tmp_path):
    # 10**12 units would need terabytes: the loader must compare shapes before building.
    net = aekit.Autoencoder([8, (4, "sigmoid"), (8, "tied")])
    _rewrite_config(net, tmp_path / "a.aekit", lambda c: c["layers"][1].update(size=10**12))
    with pytest.raises(ModelFileError, match=r"needs \(8, 1000000000000\)"):
        aekit.load(tmp_path / "a.aekit")
    _rewrite_config(net, tmp_path / "b.aekit", lambda c: c["layers"][0].update(shape=[10**6, 10**6], size=10**12))
    with pytest.raises(ModelFileError, match="b.aekit"):
        aekit.load(tmp_path / "b.aekit")


def test_preprocessing_tensors_must_fit_the_model(tmp_path):
    from aekit.preprocessing import MinMaxScaler
    from aekit.saving import model_metadata, model_tensors, write_model_file

    x = np.random.default_rng(0).random((20, 8)).astype(np.float32)
    net = aekit.Autoencoder([8, 4, 8])
    # statistics of 3 features attached to an 8-feature model
    meta = model_metadata(net)
    meta["preprocessing"] = MinMaxScaler().fit(x[:, :3]).get_config()
    tensors = model_tensors(net)
    tensors.update({f"preprocessing.{k}": v for k, v in MinMaxScaler().fit(x[:, :3]).state_tensors().items()})
    write_model_file(tmp_path / "narrow.aekit", tensors, meta)
    with pytest.raises(ModelFileError, match="narrow.aekit.*input has 8"):
        aekit.load(tmp_path / "narrow.aekit")
    # preprocessing tensors without a preprocessing config are not silently dropped
    tensors = {**model_tensors(net), "preprocessing.foo": torch.zeros(1)}
    write_model_file(tmp_path / "extra.aekit", tensors, model_metadata(net))
    with pytest.raises(ModelFileError, match=r"extra.aekit.*\['preprocessing.foo'\]"):
        aekit.load(tmp_path / "extra.aekit")


def test_saving_to_a_folder_is_a_model_file_error(tmp_path, monkeypatch):
    net = aekit.Autoencoder([8, 4, 8])
    (tmp_path / "sub").mkdir()
    with pytest.raises(ModelFileError, match="sub'. it is a folder"):
        net.save(tmp_path / "sub")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelFileError, match="it is a folder"):
        net.save("")

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("tempfile.mkstemp", read_only)
    with pytest.raises(ModelFileError, match="cannot write .*m.aekit.: Permission denied"):
        net.save(tmp_path / "m.aekit")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub"]
