"""Data-parallel training: shards, DDP == one process on the global batch, torchrun end to end, resume.

Two gloo processes on this machine stand in for a cluster.  The references are
single-process runs with the same *global* batch size (``batch_size * 2``):
aekit's data-parallel runs draw the same permutation and take the same steps,
so parameters must agree up to float rounding.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from recording import RecordingArray

import aekit
from aekit import ConfigurationError, DataError, distributed
from aekit.data import check_array
from aekit.distributed import ShardedSource
from aekit.model.layers import register
from aekit.model.layers.dense import Dense
from aekit.streaming import StreamingSource
from aekit.training import TensorSource

WORLD = 2
LAYERS = [24, (6, "sigmoid"), (24, "tied")]


@register("counted")
class CountedDense(Dense):
    """A dense layer that counts, per unit, the training examples it fired on: a per-process count
    that data-parallel training must sum over the processes (not copy from rank 0)."""

    summed_buffers = ("fired",)

    def __init__(self, spec, input_shape):
        super().__init__(spec, input_shape)
        self.register_buffer("fired", torch.zeros(self.n_out, dtype=torch.float64))

    def forward(self, x):
        record = super().forward(x)
        if self.training:
            with torch.no_grad():
                self.fired += (record.out > 0.5).sum(dim=0).double()
        return record


METRICS = ["fvu", "r2", "mse", "l0", "dead_fraction"]


def data(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 4))
    return (z @ rng.normal(size=(4, 24)) + 0.1 * rng.normal(size=(n, 24))).astype(np.float32)


def make(layers=LAYERS, **kwargs) -> aekit.Autoencoder:
    return aekit.Autoencoder(layers, rng=7, **kwargs)


SAE = [24, dict(size=32, activation="topk:3", name="code"), dict(size=24, activation="linear", constraint="unit_norm")]

# The scenarios, run by both ranks in the workers and by one process as the reference.
SCENARIOS = {
    # one step on a 32-example global batch: sgd, tied weights, weight and activity penalties
    # (these first three take the hand-derived step, its gradients averaged like DDP's)
    "one-step": dict(
        n=32, algo="sgd", learning_rate=0.05, max_epochs=1, validate_every=0, weight_l2=1e-3, hidden_l1=1e-2
    ),
    # a short last global batch (50 = 3 * 16 + 2), adam, validation data and early stopping
    "epochs-valid": dict(n=50, algo="adam", learning_rate=1e-2, max_epochs=4, patience=1, valid=True),
    # memory-mapped style streaming source
    "stream": dict(n=40, algo="adam", learning_rate=1e-2, max_epochs=2, validate_every=0, stream=True),
    # a model the hand-derived step does not cover (a composed activation, which also takes the
    # contractive penalty's per-example Jacobians): DDP's own autograd path
    "autograd": dict(
        n=32,
        algo="adam",
        learning_rate=1e-2,
        max_epochs=2,
        validate_every=0,
        contractive=0.01,
        layers=[24, (6, "sigmoid+norm:mean"), (24, "tied")],
    ),
    # full-batch L-BFGS: the line search must see the global loss on every rank
    "lbfgs": dict(n=40, algo="lbfgs", max_epochs=3, validate_every=0),
    # a unit-norm decoder (hand-derived step): the projection and renormalisation on every rank
    "unit-norm": dict(
        n=32,
        algo="adam",
        learning_rate=1e-2,
        max_epochs=2,
        validate_every=0,
        layers=[24, (6, "relu"), dict(size=24, activation="linear", constraint="unit_norm")],
    ),
    # a layer with a summed buffer (DDP's autograd path) and whole-data metrics of the validation data
    "summed-state": dict(
        n=40,
        algo="adam",
        learning_rate=1e-2,
        max_epochs=2,
        valid=True,
        metrics=METRICS,
        layers=[24, dict(form="counted", size=6, activation="sigmoid"), (24, "linear")],
    ),
    # a top-k SAE with its recipe (output bias from the data): the dead-latent tracker adds every
    # process's examples and ORs their fired masks at each step
    "sae-tracker": dict(n=48, algo="adam", learning_rate=1e-2, max_epochs=3, validate_every=0, layers=SAE),
    # and with auxk, whose normalisation by the residual's variance is per process, as in sparsify and
    # OpenAI's code: a different objective from one process's on the global batch (compared for replicas only)
    "sae-auxk": dict(
        n=48, algo="adam", learning_rate=1e-2, max_epochs=3, validate_every=0, auxk=0.5, dead_after=20, layers=SAE
    ),
}
PER_PROCESS_OBJECTIVE = {"sae-auxk"}
PER_RANK_BATCH = 8


def test_the_scenarios_cover_both_training_paths():
    from aekit.fused import DenseChainStep
    from aekit.regularizers import REGULARIZER_KEYS, Regularizers

    def step(name):
        net = make(SCENARIOS[name].get("layers", LAYERS))
        kwargs = {k: v for k, v in SCENARIOS[name].items() if k in REGULARIZER_KEYS}
        return DenseChainStep.build(net.objective(Regularizers.from_kwargs(code_layer=net.code_layer, **kwargs)))

    assert step("one-step") is not None
    assert step("autograd") is None


def run_scenario(name: str, batch_size: int, distributed_mode, record: list | None = None) -> aekit.Autoencoder:
    options = dict(SCENARIOS[name])
    n = options.pop("n")
    x = data(n)
    valid = data(21, seed=1) if options.pop("valid", False) else None
    if options.pop("stream", False):
        x = RecordingArray(x)
        if record is not None:
            record.append(x)
    net = make(options.pop("layers", LAYERS))
    net.train(x, valid, batch_size=batch_size, distributed=distributed_mode, **options)
    return net


def _worker(rank: int, folder: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=WORLD)
    try:
        for name in SCENARIOS:
            record: list = []
            net = run_scenario(name, PER_RANK_BATCH, True, record)
            params = {k: v.detach().numpy() for k, v in net.graph.state_dict().items()}
            np.savez(f"{folder}/{name}-{rank}.npz", **params)
            losses = np.array([[h["train"]["loss"], h["valid"].get("loss", np.nan)] for h in net.history])
            np.save(f"{folder}/{name}-{rank}-history.npy", losses)
            figures = np.array([[h["valid"].get(m, np.nan) for m in METRICS] for h in net.history])
            np.save(f"{folder}/{name}-{rank}-metrics.npy", figures)
            if record:
                np.save(f"{folder}/{name}-{rank}-rows.npy", np.array(record[0].rows))
        # Denoising: each rank draws its own masks; torch's global generator is left alone.
        torch.manual_seed(0)
        before = torch.get_rng_state()
        net = make()
        net.train(data(32), batch_size=PER_RANK_BATCH, max_epochs=2, validate_every=0, input_dropout=0.5)
        np.savez(f"{folder}/noise-{rank}.npz", **{k: v.detach().numpy() for k, v in net.graph.state_dict().items()})
        np.save(f"{folder}/noise-{rank}-rng-kept.npy", np.array(torch.equal(before, torch.get_rng_state())))
        # Resume, with two processes, from a checkpoint written by one.
        net = make()
        net.train(
            data(48),
            batch_size=PER_RANK_BATCH,
            max_epochs=4,
            validate_every=0,
            checkpoint=f"{folder}/run.ckpt",
            resume=True,
        )
        np.savez(f"{folder}/resume-{rank}.npz", **{k: v.detach().numpy() for k, v in net.graph.state_dict().items()})
    finally:
        torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    # The checkpoint to resume from: 2 of 4 epochs in one process, global batch 16.
    first = make()
    for i, _ in enumerate(
        first.itertrain(
            data(48), batch_size=PER_RANK_BATCH * WORLD, max_epochs=4, validate_every=0, checkpoint=folder / "run.ckpt"
        ),
        1,
    ):
        if i == 2:
            break
    spawn_and_join(_worker, (str(folder),), timeout=WORKER_TIMEOUT)
    return folder


WORKER_TIMEOUT = 300  # seconds; the workers take about 20 s. Ranks whose collectives stop matching hang.


def spawn_and_join(worker, args: tuple, timeout: float) -> None:
    """``mp.spawn`` the ranks and wait for them, but fail (and kill them) instead of hanging forever."""
    import time

    context = mp.spawn(worker, args=args, nprocs=WORLD, join=False)
    deadline = time.monotonic() + timeout
    while not context.join(timeout=max(0.0, deadline - time.monotonic())):
        if time.monotonic() >= deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the {WORLD} data-parallel workers did not finish within {timeout} s (a deadlock?)")


def load_params(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


@pytest.mark.parametrize("name", [name for name in SCENARIOS if name not in PER_PROCESS_OBJECTIVE])
def test_ddp_equals_one_process_on_the_global_batch(ddp_runs, name):
    reference = run_scenario(name, PER_RANK_BATCH * WORLD, False)
    want = {k: v.detach().numpy() for k, v in reference.graph.state_dict().items()}
    ranks = [load_params(ddp_runs / f"{name}-{r}.npz") for r in range(WORLD)]
    for key, value in want.items():
        np.testing.assert_array_equal(ranks[0][key], ranks[1][key])  # replicas stay identical
        np.testing.assert_allclose(ranks[0][key], value, rtol=1e-5, atol=1e-6, err_msg=f"{name}: {key}")
    # Monitors are all-reduced: every rank reports the single-process epoch means.
    history = np.array([[h["train"]["loss"], h["valid"].get("loss", np.nan)] for h in reference.history])
    for r in range(WORLD):
        np.testing.assert_allclose(np.load(ddp_runs / f"{name}-{r}-history.npy"), history, rtol=1e-5)
    assert len(history) == SCENARIOS[name]["max_epochs"] or SCENARIOS[name].get("valid")


def test_sae_trackers_count_every_process_examples_and_auxk_keeps_replicas_identical(ddp_runs):
    reference = run_scenario("sae-tracker", PER_RANK_BATCH * WORLD, False)
    since = reference.graph.state_dict()["layers.code.dead_latents.since_fired"].numpy()
    assert since.max() > 0
    for r in range(WORLD):  # all 48 examples of each epoch counted, not one rank's 24
        np.testing.assert_array_equal(
            load_params(ddp_runs / f"sae-tracker-{r}.npz")["layers.code.dead_latents.since_fired"], since
        )
    ranks = [load_params(ddp_runs / f"sae-auxk-{r}.npz") for r in range(WORLD)]
    for key, value in ranks[0].items():
        np.testing.assert_array_equal(ranks[1][key], value, err_msg=key)
    assert ranks[0]["layers.code.dead_latents.since_fired"].max() > 20  # some latents were dead: auxk acted
    assert ranks[0]["layers.code.recipe_initialized"]


def test_metrics_are_whole_data_figures_on_every_rank(ddp_runs):
    reference = run_scenario("summed-state", PER_RANK_BATCH * WORLD, False)
    want = np.array([[h["valid"][m] for m in METRICS] for h in reference.history])
    assert np.isfinite(want).all()
    for r in range(WORLD):
        np.testing.assert_allclose(np.load(ddp_runs / f"summed-state-{r}-metrics.npy"), want, rtol=1e-5, atol=1e-7)


def test_summed_buffers_count_every_process_examples(ddp_runs):
    # The firing counts equal one process's on the global batch (compared in the scenario test too);
    # here: they are not one rank's share, which broadcasting rank 0's buffers would give.
    reference = run_scenario("summed-state", PER_RANK_BATCH * WORLD, False)
    fired = reference.graph.layers["hid1"].fired.numpy()
    assert fired.sum() > 0
    for r in range(WORLD):
        np.testing.assert_array_equal(load_params(ddp_runs / f"summed-state-{r}.npz")["layers.hid1.fired"], fired)


def test_each_rank_reads_only_its_own_rows(ddp_runs):
    rows = [np.load(ddp_runs / f"stream-{r}-rows.npy") for r in range(WORLD)]
    n, epochs = SCENARIOS["stream"]["n"], SCENARIOS["stream"]["max_epochs"]
    for r in range(WORLD):
        # the wrapper also sees the size checks; each rank reads about half of each epoch
        assert len(rows[r]) <= epochs * (n // WORLD + 1)
    per_epoch = [np.array_split(rows[r], epochs) for r in range(WORLD)]
    for e in range(epochs):
        a, b = set(per_epoch[0][e].tolist()), set(per_epoch[1][e].tolist())
        assert not a & b
        assert a | b == set(range(n))


def test_noise_keeps_replicas_identical_and_the_global_generator_untouched(ddp_runs):
    ranks = [load_params(ddp_runs / f"noise-{r}.npz") for r in range(WORLD)]
    for key in ranks[0]:
        np.testing.assert_array_equal(ranks[0][key], ranks[1][key])
        assert np.isfinite(ranks[0][key]).all()
    assert all(np.load(ddp_runs / f"noise-{r}-rng-kept.npy") for r in range(WORLD))


def test_resume_with_another_number_of_processes(ddp_runs):
    reference = make()
    reference.train(data(48), batch_size=PER_RANK_BATCH * WORLD, max_epochs=4, validate_every=0)
    for r in range(WORLD):
        got = load_params(ddp_runs / f"resume-{r}.npz")
        for key, value in reference.graph.state_dict().items():
            np.testing.assert_allclose(got[key], value.numpy(), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------- shards, without processes
def test_tensor_shards_partition_each_global_batch():
    n, b = 53, 4
    x = torch.arange(n, dtype=torch.float32)[:, None].repeat(1, 3)
    single = [xb[:, 0] for xb, _ in TensorSource(x).batches(b * 3, torch.Generator().manual_seed(5))]
    shards = [
        list(ShardedSource(TensorSource(x), r, 3).scaled_batches(b, torch.Generator().manual_seed(5))) for r in range(3)
    ]
    assert len({len(s) for s in shards}) == 1  # same number of steps on every rank
    for step, want in enumerate(single):
        parts = [shards[r][step] for r in range(3)]
        got = torch.cat([p[0][:, 0] for p in parts])
        assert torch.equal(got, want)
        # scales: share of the global batch times the world size; they average to 1
        assert sum(p[2] for p in parts) == pytest.approx(3.0)
        assert [p[2] for p in parts] == pytest.approx([p[0].shape[0] * 3 / want.numel() for p in parts])
    assert len(ShardedSource(TensorSource(x), 0, 3)) == n  # checkpoints see the whole data


def test_global_batches_smaller_than_the_world_are_skipped():
    x = torch.zeros(13, 2)  # 13 = 12 + 1: the last global batch has one row for three ranks
    steps = [len(list(ShardedSource(TensorSource(x), r, 3).batches(4, None))) for r in range(3)]
    assert steps == [1, 1, 1]


def test_streamed_shards_read_disjoint_rows_and_match_one_process():
    x = data(300)
    single = StreamingSource(x, block_bytes=24 * 4 * 70)  # 70-row blocks
    want = [xb for xb, _ in single.batches(16, torch.Generator().manual_seed(3))]
    recorders = [RecordingArray(x) for _ in range(WORLD)]
    shards = [
        list(
            ShardedSource(StreamingSource(rec, block_bytes=24 * 4 * 70), r, WORLD).scaled_batches(
                8, torch.Generator().manual_seed(3)
            )
        )
        for r, rec in enumerate(recorders)
    ]
    assert len(shards[0]) == len(shards[1]) == len(want)
    for step, ref in enumerate(want):
        torch.testing.assert_close(torch.cat([shards[0][step][0], shards[1][step][0]]), ref)
    seen = [set(rec.rows) for rec in recorders]
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(range(300))


def test_streamed_shards_name_bad_rows_by_their_number_in_the_array():
    x = data(300)
    x[211, 5] = float("nan")
    w = np.ones_like(x)
    w[97, 1] = -2.0
    for source, message in [
        (
            StreamingSource(x, block_bytes=24 * 4 * 70, check=lambda b, n, rows: check_array(b, (24,), n, rows=rows)),
            r"x holds NaN or infinite values \(first in row 211\)$",
        ),
        (
            StreamingSource(np.nan_to_num(x), w, block_bytes=24 * 4 * 70),
            r"x weights must be >= 0, got a minimum of -2 \(first in row 97\)$",
        ),
    ]:
        errors = []
        for rank in range(WORLD):  # each rank reads its own shuffled rows of every block
            try:
                for _ in ShardedSource(source, rank, WORLD).scaled_batches(8, torch.Generator().manual_seed(3)):
                    pass
            except DataError as error:
                errors.append(str(error))
        assert len(errors) == 1 and re.search(message, errors[0]), errors  # only the rank that read the row


def test_validation_shards_are_contiguous_and_cover_everything():
    x = torch.arange(10, dtype=torch.float32)[:, None]
    parts = [ShardedSource(TensorSource(x), r, 3).local.x[:, 0].tolist() for r in range(3)]
    assert sum(parts, []) == list(range(10))
    tiny = ShardedSource(TensorSource(x[:2]), 1, 3)  # fewer rows than ranks: everyone evaluates all
    assert not tiny.sharded_eval and len(tiny.local) == 2


# ---------------------------------------------------------------------- options and launch detection
def test_distributed_option_values(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    x = data(20)
    net = make()
    net.train(x, max_epochs=1, distributed="auto")  # no launch: plain training
    net.train(x, max_epochs=1, distributed="false")
    with pytest.raises(ConfigurationError, match="torchrun"):
        net.train(x, max_epochs=1, distributed=True)
    with pytest.raises(ConfigurationError, match="distributed must be"):
        net.train(x, max_epochs=1, distributed="sometimes")
    assert distributed.is_main_process() and distributed.world_size() == 1 and not distributed.is_active()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert distributed.launch_env() == (1, 2, 1) and not distributed.is_main_process()
    with pytest.raises(ConfigurationError, match="MASTER_ADDR"):
        net.train(x, max_epochs=1)


# ---------------------------------------------------------------------- torchrun, end to end
def test_torchrun_cli_matches_one_process_with_the_same_global_batch(tmp_path):
    x = data(400)
    np.save(tmp_path / "x.npy", x)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    common = [
        "train",
        "x.npy",
        "--layers",
        "24,6:sigmoid,24:tied",
        "--epochs",
        "4",
        "--valid-split",
        "0.1",
        "--learning-rate",
        "0.01",
        "--seed",
        "3",
        "--threads",
        "1",
    ]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}"]
    two = subprocess.run(
        [*launcher, "-m", "aekit", *common, "--batch-size", "16", "-o", "two.aekit"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert two.returncode == 0, two.stderr[:6000]
    assert "on 2 processes (batch 16 per process, 32 per step)" in two.stdout
    assert two.stdout.count("saved two.aekit") == 1  # rank 0 alone reports and writes
    one = subprocess.run(
        [sys.executable, "-m", "aekit", *common, "--batch-size", "32", "-o", "one.aekit"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert one.returncode == 0, one.stderr[-2000:]
    a, b = aekit.load(tmp_path / "two.aekit"), aekit.load(tmp_path / "one.aekit")
    assert len(a.history) == len(b.history) == 4
    assert a.score(x) == pytest.approx(b.score(x), abs=1e-4)
    untrained = aekit.Autoencoder([24, (6, "sigmoid"), (24, "tied")], rng=3)
    assert a.score(x) > untrained.score(x) + 0.2  # it did learn


# ---------------------------------------------------------------------- parse_mode and shutdown
@pytest.mark.parametrize(
    "value, expected",
    [
        (True, True),
        (False, False),
        (np.bool_(True), True),
        (np.bool_(False), False),
        ("auto", "auto"),
        (" AUTO ", "auto"),
        ("Auto", "auto"),
        ("true", True),
        ("Yes", True),
        ("ON", True),
        ("1", True),
        (" true\n", True),
        ("false", False),
        ("NO", False),
        ("off", False),
        ("0", False),
    ],
)
def test_parse_mode_accepts_booleans_auto_and_the_cli_spellings(value, expected):
    got = distributed.parse_mode(value)
    assert got == expected and type(got) is type(expected)  # a real bool (or 'auto'), never np.bool_


@pytest.mark.parametrize("value", ["sometimes", "", "2", "t", 1, 0, None, 1.0, ["auto"]])
def test_parse_mode_refuses_anything_else_naming_the_value(value):
    with pytest.raises(ConfigurationError) as caught:
        distributed.parse_mode(value)
    assert str(caught.value) == f"distributed must be True, False or 'auto', got {value!r}"


def test_shutdown_without_a_process_group_is_harmless(monkeypatch):
    assert not torch.distributed.is_initialized()
    distributed.shutdown()
    distributed.shutdown()  # twice, too
    assert not torch.distributed.is_initialized()
    # Even if aekit believes it created a group that someone else already destroyed.
    monkeypatch.setattr(distributed, "_CREATED", True)
    distributed.shutdown()
    assert distributed._CREATED is False and not torch.distributed.is_initialized()
    assert distributed.world_size() == 1 and distributed.is_main_process()


def test_shutdown_leaves_a_process_group_it_did_not_create(tmp_path, monkeypatch):
    # A caller's own (one-process) group is the caller's to destroy.
    assert not torch.distributed.is_initialized()
    torch.distributed.init_process_group("gloo", init_method=(tmp_path / "store").as_uri(), rank=0, world_size=1)
    try:
        distributed.shutdown()
        assert torch.distributed.is_initialized()
        assert distributed.world_size() == 1 and not distributed.is_active()
        # The group aekit's init() created (flagged by _CREATED) is the one it tears down.
        monkeypatch.setattr(distributed, "_CREATED", True)
        distributed.shutdown()
        assert not torch.distributed.is_initialized() and distributed._CREATED is False
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
