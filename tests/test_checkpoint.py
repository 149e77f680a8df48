"""Checkpoints, resume, divergence and determinism (library side; the CLI crash tests are in test_crash.py)."""

import logging
import os
import pickle

import numpy as np
import pytest
import torch

import aekit
from aekit import CheckpointError, ConfigurationError, ModelFileError, TrainingDiverged
from aekit.checkpoint import checkpoint_info, load_checkpoint_model, read_checkpoint


@pytest.fixture
def x(digits):
    return digits[0][:240]


def make(layers=None, **kwargs):
    return aekit.Autoencoder(layers or [64, (16, "sigmoid"), (64, "tied")], **kwargs)


def same_params(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.params, b.params))


@pytest.mark.parametrize(
    "options",
    [
        # noise is seeded per epoch; valid_split uses the seed; early-stopping state matters
        dict(algo="adam", input_noise=0.1, valid_split=0.2, patience=50),
        dict(algo="nag", momentum=0.9, hidden_dropout=0.2, validate_every=0),
        dict(algo="rmsprop", validate_every=2, weight_l2=1e-3),
        dict(algo="lbfgs", validate_every=0),
    ],
    ids=["adam-noise-valid", "nag-dropout-novalid", "rmsprop-every2", "lbfgs"],
)
def test_resume_is_bit_identical_to_an_uninterrupted_run(x, tmp_path, options):
    epochs, stop_after = 6, 3
    options = dict(batch_size=32, **options)
    torch.manual_seed(1)
    reference = make()
    reference.train(x, max_epochs=epochs, **options)

    path = tmp_path / "run.ckpt"
    torch.manual_seed(1)
    first = make()
    for i, _ in enumerate(first.itertrain(x, max_epochs=epochs, checkpoint=path, **options), 1):
        if i == stop_after:
            break  # an interruption after the checkpoint of epoch 3 was written
    assert checkpoint_info(path)["epoch"] == stop_after

    torch.manual_seed(12345)  # the resumed run must not depend on the global generator's state
    resumed = make()
    resumed.train(x, max_epochs=epochs, checkpoint=path, resume=True, **options)
    assert same_params(resumed, reference)
    assert resumed.history == reference.history
    assert [h["epoch"] for h in resumed.history] == list(range(1, epochs + 1))
    assert checkpoint_info(path)["epoch"] == epochs


def test_checkpoint_every_and_the_final_epoch(x, tmp_path):
    path = tmp_path / "c.ckpt"
    seen = []
    for _ in make().itertrain(x, max_epochs=7, checkpoint=path, checkpoint_every=3, validate_every=0):
        seen.append(checkpoint_info(path)["epoch"] if path.exists() else None)
    assert seen == [None, None, 3, 3, 3, 6, 7]  # every 3 epochs, and the last one


def test_resume_after_finishing_trains_on_when_max_epochs_grows(x, tmp_path):
    path = tmp_path / "c.ckpt"
    reference = make()
    reference.train(x, max_epochs=5, validate_every=0)
    net = make()
    net.train(x, max_epochs=2, checkpoint=path, validate_every=0)
    again = make()
    again.train(x, max_epochs=5, checkpoint=path, resume=True, validate_every=0)
    assert same_params(again, reference)
    assert [h["epoch"] for h in again.history] == [1, 2, 3, 4, 5]


def test_checkpoint_contents_and_loading_the_model_from_it(x, tmp_path):
    path = tmp_path / "c.ckpt"
    net = make()
    net.train(x, max_epochs=2, checkpoint=path, validate_every=0)
    tensors, meta = read_checkpoint(path)
    assert meta["kind"] == "checkpoint" and meta["checkpoint_version"] == 2
    assert meta["penalty_scale"] == "mean"  # theanets 0.7's weight_l1/l2, hidden_l1/l2 (version 2 on)
    assert {"model.hid1.w", "rng.generator", "rng.torch", "optim.0.exp_avg"} <= set(tensors)
    assert meta["trainer"]["epoch"] == 2 and meta["data"]["n_train"] == len(x)
    for loaded in (aekit.load(path), load_checkpoint_model(path)):
        np.testing.assert_array_equal(loaded.predict(x), net.predict(x))
        assert loaded.history == net.history


@pytest.mark.parametrize(
    "change, message",
    [
        (
            dict(layers=[64, (12, "sigmoid"), (64, "tied")]),
            r"model differs.*layer 'hid1'.*size: checkpoint has 16, this run has 12",
        ),
        (dict(layers=[64, (16, "relu"), (64, "tied")]), r"activation: checkpoint has 'sigmoid', this run has 'relu'"),
        (dict(n=200), r"data differ.*n_train: checkpoint has 240, this run has 200"),
        (dict(algo="sgd"), r"algo='adam', this run uses algo='sgd'"),
    ],
)
def test_resume_refuses_a_different_model_data_or_algorithm(x, tmp_path, change, message):
    path = tmp_path / "c.ckpt"
    make().train(x, max_epochs=1, checkpoint=path, validate_every=0)
    net = make(change.get("layers"))
    data = x[: change.get("n", len(x))]
    with pytest.raises(CheckpointError, match=message):
        net.train(data, max_epochs=3, checkpoint=path, resume=True, validate_every=0, algo=change.get("algo", "adam"))
    assert isinstance(CheckpointError("x"), ModelFileError)


def test_changed_options_are_used_and_logged(x, tmp_path, caplog):
    path = tmp_path / "c.ckpt"
    make().train(x, max_epochs=1, checkpoint=path, validate_every=0, learning_rate=1e-3)
    start = aekit.load(path)  # the parameters after epoch 1
    net = make()
    trainer_lr = []
    with caplog.at_level(logging.WARNING, logger="aekit.train.checkpoint"):
        for _ in net.itertrain(x, max_epochs=2, checkpoint=path, resume=True, validate_every=0, learning_rate=5e-3):
            trainer_lr.append(True)
    assert "learning_rate: checkpoint has 0.001, this run has 0.005" in caplog.text
    assert len(trainer_lr) == 1  # one more epoch, not two
    # Used, not only logged: from the same checkpoint (Adam's moments restored), the epoch at
    # 5e-3 moves the parameters several times as far (3.9 here) as the epoch at the saved 1e-3;
    # had the saved rate been kept, the two runs would be identical (ratio 1).
    kept = make()
    kept.train(x, max_epochs=2, checkpoint=tmp_path / "c2.ckpt", validate_every=0, learning_rate=1e-3)
    moved = [
        torch.cat([(p - q).detach().flatten() for p, q in zip(n.params, start.params)]).norm() for n in (net, kept)
    ]
    assert 3.0 < (moved[0] / moved[1]).item() < 6.0


def test_resume_without_a_file_starts_fresh_and_says_so(x, tmp_path, caplog):
    path = tmp_path / "not-yet.ckpt"
    reference = make()
    reference.train(x, max_epochs=2, validate_every=0)
    net = make()
    with caplog.at_level(logging.INFO, logger="aekit.train.checkpoint"):
        net.train(x, max_epochs=2, checkpoint=path, resume=True, validate_every=0)
    assert "no checkpoint at" in caplog.text and "starting from scratch" in caplog.text
    assert same_params(net, reference) and path.exists()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(resume=True), "resume=True needs checkpoint=PATH"),
        (dict(checkpoint=3), "checkpoint must be a file path, got int"),
        (dict(checkpoint="c", checkpoint_every=0), "checkpoint_every must be an integer >= 1"),
        (dict(checkpoint="c", resume="yes"), "resume must be True or False"),
        (dict(checkpont="c"), "did you mean 'checkpoint'"),
    ],
)
def test_bad_checkpoint_options(x, kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        make().train(x, **kwargs)


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_bad_checkpoint_files_are_refused_and_never_run(x, tmp_path):
    target = tmp_path / "created-by-pickle"
    path = tmp_path / "c.ckpt"
    path.write_bytes(pickle.dumps(_Evil(str(target))))
    with pytest.raises(CheckpointError, match=r"checkpoint .*c.ckpt.* looks like a pickle"):
        make().train(x, checkpoint=path, resume=True)
    assert not target.exists()
    with pytest.raises(CheckpointError, match="looks like a pickle"):
        aekit.checkpoint.checkpoint_info(path)

    model = tmp_path / "m.aekit"
    make().save(model)
    with pytest.raises(CheckpointError, match="is an aekit model file, not a training checkpoint"):
        make().train(x, checkpoint=model, resume=True)

    make().train(x, max_epochs=1, checkpoint=path, validate_every=0)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="damaged or truncated"):
        make().train(x, checkpoint=path, resume=True)
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="is empty"):
        make().train(x, checkpoint=path, resume=True)


def test_a_crash_while_writing_keeps_the_previous_checkpoint(x, tmp_path, monkeypatch):
    path = tmp_path / "c.ckpt"
    net = make()
    run = net.itertrain(x, max_epochs=5, checkpoint=path, validate_every=0)
    next(run)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies between writing the temporary file and renaming it

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        next(run)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.ckpt"]  # the temporary file is removed
    assert checkpoint_info(path)["epoch"] == 1
    resumed = make()
    resumed.train(x, max_epochs=3, checkpoint=path, resume=True, validate_every=0)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]


# ---------------------------------------------------------------------- divergence
def finite(net):
    return all(bool(torch.isfinite(p).all()) for p in net.params)


@pytest.mark.parametrize("validate_every", [0, 1])
def test_a_huge_learning_rate_stops_with_finite_parameters_and_a_clear_message(x, validate_every):
    net = make([64, (32, "relu"), (64, "linear")])
    with pytest.raises(TrainingDiverged, match=r"training diverged at epoch \d+.*restored.*smaller learning_rate"):
        net.train(x, algo="sgd", learning_rate=1e6, max_epochs=5, validate_every=validate_every)
    assert finite(net)
    assert np.isfinite(net.predict(x)).all()


def test_parameters_that_blow_up_on_the_last_step_are_rolled_back(x):
    # One batch per epoch: the loss is computed before the step that makes the weights infinite.
    net = make([64, (32, "relu"), (64, "linear")])
    start = [p.detach().clone() for p in net.params]
    with pytest.raises(TrainingDiverged, match="epoch 1: the parameters became NaN or infinite"):
        net.train(x * 1000, algo="sgd", learning_rate=1e38, batch_size=len(x), max_epochs=1, validate_every=0)
    assert all(torch.equal(p, q) for p, q in zip(net.params, start))


def test_on_nan_warn_halves_the_learning_rate_and_goes_on(x):
    net = make([64, (32, "linear"), (64, "linear")])
    with pytest.warns(RuntimeWarning, match="halving the learning rate and going on") as caught:
        net.train(x, algo="sgd", learning_rate=2.0, max_epochs=12, patience=20, on_nan="warn", validate_every=0)
    halvings = sum("halving" in str(w.message) for w in caught)
    assert finite(net)
    assert len(net.history) == 12 - halvings  # every finite epoch is recorded, the diverged ones are not
    assert all(np.isfinite(h["train"]["loss"]) for h in net.history)


# ---------------------------------------------------------------------- determinism
def test_the_same_seed_and_data_give_bit_identical_models(x):
    options = dict(max_epochs=3, batch_size=16, input_noise=0.1, hidden_dropout=0.1, valid_split=0.1)
    torch.manual_seed(0)
    a = make(rng=7)
    a.train(x, **options)
    torch.manual_seed(0)
    b = make(rng=7)
    b.train(x, **options)
    assert same_params(a, b) and a.history == b.history
    c = make(rng=8)
    torch.manual_seed(0)
    c.train(x, **options)
    assert not same_params(a, c)


def test_resume_with_batch_norm_is_bit_identical(x, tmp_path):
    # Running statistics are buffers: saved, restored, and untouched by the step runner's probe.
    layers = [64, dict(size=16, activation="relu", batch_norm=True), (64, "linear")]
    options = dict(batch_size=32, validate_every=0, input_dropout=0.1)
    torch.manual_seed(3)
    reference = make(layers)
    reference.train(x, max_epochs=4, **options)
    path = tmp_path / "bn.ckpt"
    torch.manual_seed(3)
    make(layers).train(x, max_epochs=2, checkpoint=path, **options)
    resumed = make(layers)
    resumed.train(x, max_epochs=4, checkpoint=path, resume=True, **options)
    for (name, a), (_, b) in zip(reference.graph.state_dict().items(), resumed.graph.state_dict().items()):
        assert torch.equal(a, b), name
