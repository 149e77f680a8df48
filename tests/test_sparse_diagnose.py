"""diagnose's dead-latents and dense-latents findings: counted over every row, against a by-hand count."""

from __future__ import annotations

import numpy as np
import torch

import aekit


def sae_and_data(rows=6000):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 16)).astype(np.float32)
    net = aekit.Autoencoder([16, dict(size=64, activation="topk:4", name="code"), (16, "linear")], rng=0)
    with torch.no_grad():
        enc = net.graph.layers["code"]
        enc.b[:10] = -1e3  # ten latents that can never fire
        enc.b[10] = 1e3  # one latent that fires on every row
        # Latent 11 fires on one row only, the last, which the 5000-row sample of diagnose skips.
        enc.w[:, 11] = 0.0
        enc.b[11] = -1.0
        enc.w[0, 11] = 10.0
        x[:, 0] = np.minimum(x[:, 0], 0.0)
        x[-1, 0] = 1e3
    return net, x


def test_dead_and_dense_latents_match_a_count_over_all_rows():
    net, x = sae_and_data()
    codes = net.encode(x)
    dead = np.flatnonzero((codes != 0).sum(0) == 0)
    dense = np.flatnonzero((codes != 0).mean(0) > 0.5)
    assert 11 not in dead and 10 in dense  # the premise: one row wakes latent 11
    found = {f.code: f for f in aekit.diagnose(net, x)}
    assert found["dead-latents"].value == len(dead) / 64
    assert found["dead-latents"].severity == "error"  # >= 10% of the dictionary
    assert f"{len(dead)} of 64 latents" in found["dead-latents"].message
    assert "auxk" in found["dead-latents"].remedy
    assert found["dense-latents"].value == len(dense) / 64
    assert "dead-units" not in found  # the sampled generic check does not repeat it for the code


def test_thresholds_are_arguments():
    net, x = sae_and_data(rows=500)
    found = {f.code: f for f in aekit.diagnose(net, x, dead_latents_error=0.9, dense_density=1.0)}
    assert found["dead-latents"].severity == "warning"
    assert "dense-latents" not in found
