"""VQ under data-parallel training: the EMA statistics are all-reduced after each step, so two processes
on half batches train the codebook of one process on the whole batch; re-seeding keeps replicas equal."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

import aekit

WORLD = 2
PER_RANK_BATCH = 8


def make(**options):
    options = {"codebook": 8, "dim": 2, "name": "vq", **options}
    return aekit.Autoencoder([12, (6, "linear"), dict(form="vq", **options), 12], rng=0)


def data(n=64):
    rng = np.random.default_rng(0)
    return (rng.normal(size=(n, 4)) @ rng.normal(size=(4, 12))).astype(np.float32)


SCENARIOS = {
    # Uniform start, no re-seeding: every step's EMA update must equal the one-process update.
    "ema": dict(init="uniform", dead_codes=0.0),
    # k-means and re-seeding draw from rank 0's vectors: the replicas must stay identical.
    "reseed": dict(init="kmeans", dead_codes=3.0, decay=0.8),
}


def _worker(rank: int, folder: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=WORLD)
    try:
        for name, options in SCENARIOS.items():
            net = make(**options)
            net.train(data(), batch_size=PER_RANK_BATCH, max_epochs=2, validate_every=0, distributed=True)
            state = {k: v.detach().numpy() for k, v in net.graph.state_dict().items()}
            np.savez(f"{folder}/{name}-{rank}.npz", **state)
            flags = [layer.data_parallel for layer in net.graph.layers.values()]
            np.save(f"{folder}/{name}-{rank}-flags.npy", np.array(flags))
    finally:
        torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vq-ddp")
    context = mp.spawn(_worker, args=(str(folder),), nprocs=WORLD, join=False)
    deadline = time.monotonic() + 300
    while not context.join(timeout=max(0.0, deadline - time.monotonic())):
        if time.monotonic() >= deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the data-parallel workers did not finish within 300 s (a deadlock?)")
    return folder


def load(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def test_the_ema_codebook_equals_one_process_on_the_global_batch(runs):
    reference = make(**SCENARIOS["ema"])
    reference.train(data(), batch_size=PER_RANK_BATCH * WORLD, max_epochs=2, validate_every=0, distributed=False)
    want = {k: v.detach().numpy() for k, v in reference.graph.state_dict().items()}
    ranks = [load(runs / f"ema-{r}.npz") for r in range(WORLD)]
    for key, value in want.items():
        np.testing.assert_array_equal(ranks[0][key], ranks[1][key], err_msg=key)
        np.testing.assert_allclose(ranks[0][key], value, rtol=1e-5, atol=1e-6, err_msg=key)
    # The usage counter is summed over the processes: every training vector counted once per epoch.
    assert ranks[0]["layers.vq.hits"].sum() == 2 * 64 * 3


def test_reseeding_keeps_the_replicas_identical(runs):
    ranks = [load(runs / f"reseed-{r}.npz") for r in range(WORLD)]
    for key in ranks[0]:
        np.testing.assert_array_equal(ranks[0][key], ranks[1][key], err_msg=key)
    assert ranks[0]["layers.vq.reseeded"] > 0
    # The strategy marks the layers while it trains them, and unmarks them after.
    assert not np.load(runs / "reseed-0-flags.npy").any()
