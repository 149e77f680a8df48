"""auxk and the dead-latent tracker: a hand-written reference, gradients, counting, saving, resuming."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import aekit
from aekit import ConfigurationError
from aekit.model.dead_latents import DeadLatents
from aekit.objective import Regularizers
from aekit.objective.auxk import auxk_loss
from aekit.train.dead_latents import DeadLatentWarning


def reference_auxk(pre, dead, w_dec, residual, k_aux):
    """Gao et al. 2024's auxiliary loss, example by example with NumPy (OpenAI's normalized_mse)."""
    n, latents = pre.shape
    e_hat = np.zeros_like(residual)
    candidates = np.flatnonzero(dead)
    for i in range(n):
        order = candidates[np.argsort(-pre[i, candidates], kind="stable")][:k_aux]
        for j in order:
            e_hat[i] += max(pre[i, j], 0.0) * w_dec[j]  # no output bias
    mse = ((e_hat - residual) ** 2).mean()
    return mse / ((residual - residual.mean(axis=0)) ** 2).mean() if dead.any() else 0.0


@pytest.mark.parametrize("k_aux", [3, 50])  # fewer than the dead latents, and more
def test_auxk_loss_matches_a_hand_written_reference(k_aux):
    rng = np.random.default_rng(0)
    pre = rng.normal(size=(20, 30))
    dead = rng.random(30) < 0.3
    w_dec = rng.normal(size=(30, 12))
    residual = rng.normal(size=(20, 12))
    got = auxk_loss(torch.tensor(pre), torch.tensor(dead), torch.tensor(w_dec), torch.tensor(residual), k_aux)
    assert float(got) == pytest.approx(reference_auxk(pre, dead, w_dec, residual, k_aux), rel=1e-12)
    nothing = torch.zeros(30, dtype=torch.bool)
    assert float(auxk_loss(torch.tensor(pre), nothing, torch.tensor(w_dec), torch.tensor(residual), 5)) == 0.0


def sae(size=48, rng=0, **options):
    layers = [
        24,
        dict(size=size, activation="topk:4", name="code", **options),
        dict(size=24, activation="linear", constraint="unit_norm"),
    ]
    return aekit.Autoencoder(layers, rng=rng)


def data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 6)) @ rng.normal(size=(6, 24))).astype(np.float32)


def test_the_term_trains_dead_latents_only_and_not_the_live_reconstruction():
    # Without the pre-encoder bias, the output bias is in the auxiliary loss nowhere: it is not decoded again,
    # and the residual is detached.  (With it, the bias reaches the dead latents' pre-activations.)
    net = sae(pre_bias=False)
    tracker = net.graph.layers["code"].dead_latents
    dead = torch.zeros(48, dtype=torch.bool)
    dead[::3] = True
    tracker.since_fired[dead] = 1000
    x = torch.from_numpy(data(64))
    regs = Regularizers.from_kwargs(auxk=0.5, auxk_k=4, dead_after=999)
    _, terms = net.loss_terms(x, None, regs, training=False)
    grads = torch.autograd.grad(
        terms["auxk"], [net.graph.layers["code"].w, net.graph.layers["out"].b], allow_unused=True
    )
    assert torch.count_nonzero(grads[0][:, ~dead]) == 0  # live latents' encoder columns: nothing
    assert torch.count_nonzero(grads[0][:, dead]) > 0
    assert grads[1] is None  # the output bias: not decoded again, residual detached
    outputs = net.feed_forward(x.numpy())
    residual = x.numpy() - outputs["out:out"]
    xs = x.numpy().astype(np.float64)
    variance = ((xs - xs.mean(0)) ** 2).mean()  # the term is in the units of the mse loss
    want = (
        0.5
        * variance
        * reference_auxk(outputs["code:pre"], dead.numpy(), net.graph.layers["out"].w.detach().numpy(), residual, 4)
    )
    assert float(terms["auxk"].detach()) == pytest.approx(want, rel=1e-5)


def test_the_tracker_counts_examples_and_resets_latents_that_fired():
    tracker = DeadLatents(4)
    layer = torch.nn.Module()  # stands in for the code layer: the hook reads output.out

    def step(codes, summed=None):
        tracker.sum_over_processes = summed
        tracker.hook(layer, (), type("Out", (), {"out": torch.tensor(codes, dtype=torch.float32)})())
        tracker.commit()

    step([[1, 0, 0, 0], [0, 0, 2, 0]])
    assert tracker.since_fired.tolist() == [0, 2, 0, 2]
    step([[0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    assert tracker.since_fired.tolist() == [3, 5, 0, 5]
    # Two processes (the second saw latent 1 fire on its own 3 examples): fired masks OR-ed, examples added.
    other = torch.tensor([0.0, 1.0, 0.0, 0.0, 3.0], dtype=torch.float64)
    step([[0, 0, 0, 0]], summed=lambda counts: counts + other)
    assert tracker.since_fired.tolist() == [7, 0, 4, 9]
    tracker.commit()  # no forward since: nothing to count
    assert tracker.since_fired.tolist() == [7, 0, 4, 9]
    assert tracker.dead_mask(5).tolist() == [True, False, False, True]


def test_a_code_given_by_its_active_latents_counts_the_same():
    rng = np.random.default_rng(0)
    values = torch.tensor(np.maximum(rng.normal(size=(6, 3)), 0))
    indices = torch.tensor(np.sort(rng.choice(10, size=(6, 3)), axis=1))
    dense = torch.zeros(6, 10, dtype=torch.float64).scatter(1, indices, values)
    a, b = DeadLatents(10), DeadLatents(10)
    a.since_fired.fill_(5)
    b.since_fired.fill_(5)
    a.observe(dense)
    b.observe_active(values, indices)
    a.commit()
    b.commit()
    assert torch.equal(a.since_fired, b.since_fired) and int(a.since_fired.max()) == 11


def test_training_counts_every_example_for_a_latent_that_never_fires():
    net = sae()
    with torch.no_grad():
        net.graph.layers["code"].b[7] = -1e6  # latent 7 can never fire
    net.train(data(200), batch_size=32, max_epochs=3, validate_every=0, dead_after=250)
    tracker = net.graph.layers["code"].dead_latents
    assert int(tracker.since_fired[7]) == 3 * 200
    assert int(tracker.dead_after) == 250 and bool(tracker.dead_mask()[7])
    assert int(tracker.since_fired.min()) == 0  # some latent fired in the last step


def sparse_data(n=1024, d=24, atoms=96, seed=0):
    # Each example mixes a few of 96 directions: a dictionary with every latent alive reconstructs it best.
    rng = np.random.default_rng(seed)
    codes = rng.uniform(0.5, 1.5, size=(n, atoms)) * (rng.random((n, atoms)) < 0.04)
    return (codes @ rng.normal(size=(atoms, d))).astype(np.float32)


def test_auxk_revives_dead_latents():
    x = sparse_data()
    kwargs = dict(batch_size=64, max_epochs=10, validate_every=0, dead_after=1024, learning_rate=1e-2)
    runs = []
    for auxk in (None, 1.0):
        net = sae(96)
        with torch.no_grad():
            net.graph.layers["code"].b[:48] = -6.0  # half the latents start (nearly) never firing
        monitors = [m for m, _ in net.itertrain(x, auxk=auxk, **kwargs)]
        runs.append((int(net.graph.layers["code"].dead_latents.dead_mask().sum()), monitors[-1]))
    assert runs[1][1]["auxk"] > 0 and "auxk" not in runs[0][1]
    assert runs[1][0] < 0.5 * runs[0][0], runs  # measured: 43 dead without, 11 with


def test_tracker_and_recipe_state_are_saved_and_resume_bit_for_bit(tmp_path):
    x = data(256)
    kwargs = dict(batch_size=32, validate_every=0, auxk=1 / 32, dead_after=300, learning_rate=1e-2)
    whole = sae(rng=5)
    whole.train(x, max_epochs=4, **kwargs)
    first = sae(rng=5)
    for i, _ in enumerate(first.itertrain(x, max_epochs=4, checkpoint=tmp_path / "c.ckpt", **kwargs), 1):
        if i == 2:
            break
    resumed = sae(rng=5)
    resumed.train(x, max_epochs=4, checkpoint=tmp_path / "c.ckpt", resume=True, **kwargs)
    state = whole.graph.state_dict()
    assert int(state["layers.code.dead_latents.since_fired"].max()) > 300  # some latents are dead
    for key, value in state.items():
        torch.testing.assert_close(resumed.graph.state_dict()[key], value, rtol=0, atol=0, msg=key)
    whole.save(tmp_path / "m.aekit")
    loaded = aekit.load(tmp_path / "m.aekit")
    for key, value in state.items():
        torch.testing.assert_close(loaded.graph.state_dict()[key], value, rtol=0, atol=0, msg=key)
    assert (
        loaded.graph.layers["code"].dead_latents.dead_fraction == whole.graph.layers["code"].dead_latents.dead_fraction
    )


def test_auxk_needs_a_decoded_sparse_code_and_a_reachable_threshold_is_warned():
    with pytest.raises(ConfigurationError, match="auxk applies to a dense layer with a sparse code"):
        aekit.Autoencoder([24, (48, "relu"), (24, "linear")]).train(data(32), auxk=0.1, max_epochs=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sae().train(data(64), auxk=0.1, max_epochs=1, validate_every=0)
    assert any(issubclass(w.category, DeadLatentWarning) and "dead_after=10000000" in str(w.message) for w in caught)


def test_the_sparse_and_dense_paths_count_the_same_dead_latents():
    from aekit.model.sparse_decode import sparse_mode

    x = sparse_data(n=512)
    trackers = []
    for mode in ("always", "never"):
        net = sae(96)
        with torch.no_grad():
            net.graph.layers["code"].b[:48] = -6.0
        with sparse_mode(mode):
            net.train(x, batch_size=64, max_epochs=2, validate_every=0, dead_after=256, auxk=1.0)
        trackers.append(net.graph.layers["code"].dead_latents.since_fired.clone())
    assert int(trackers[0].max()) > 0
    torch.testing.assert_close(trackers[0], trackers[1], rtol=0, atol=0)
