"""Vector-quantized layers (vq, fsq): straight-through gradients, the EMA formula, dead-code re-seeding,
k-means initialisation, code indices in and out, every step path, files and resume bit for bit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import aekit
from aekit.fused import DenseChainStep
from aekit.model import codebook as cb
from aekit.model.layers.quantize import DeadCodeWarning
from aekit.regularizers import Regularizers


def vq_net(n_in=12, width=3, chunks=2, **options):
    options = {"codebook": 8, "dim": width, "name": "vq", **options}
    return aekit.Autoencoder([n_in, (width * chunks, "linear"), dict(form="vq", **options), n_in], rng=0)


def data(n=64, d=12, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 4)) @ rng.normal(size=(4, d))).astype(np.float32)


def conv_vq(**options):
    options = {"codebook": 16, "name": "vq", **options}
    return aekit.Autoencoder(
        [
            (1, 8, 8),
            dict(form="conv2", channels=4, stride=2),
            dict(form="conv2", channels=3, kernel=1, activation="linear"),
            dict(form="vq", **options),
            dict(form="deconv2", channels=4, stride=2),
            dict(form="conv2", channels=1, kernel=3, activation="sigmoid"),
        ],
        rng=0,
    )


def images(n=48, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 8, 8)).astype(np.float32)


def train_forward(layer, x):
    """One training forward pass of ``layer`` alone, as a step runs it (its stash then feeds after_step)."""
    layer.train()
    with torch.enable_grad():
        return layer(x)


# ---------------------------------------------------------------------- gradients
def test_the_gradient_through_the_vq_layer_is_the_identity():
    net = conv_vq()
    layer = net.graph.layers["vq"]
    x = torch.randn(5, 3, 4, 4, requires_grad=True)
    record = train_forward(layer, x)
    assert record.pre is x
    g = torch.randn_like(record.out)
    (grad,) = torch.autograd.grad(record.out, x, g)
    torch.testing.assert_close(grad, g, rtol=0, atol=0)
    # The output is a code: every position's vector is a row of the codebook.
    vectors = record.out.detach().permute(0, 2, 3, 1).reshape(-1, 3)
    idx = record.extras["codes"].reshape(-1)
    torch.testing.assert_close(vectors, layer.codebook[idx], rtol=0, atol=1e-6)


def test_the_fsq_gradient_is_that_of_its_bound():
    levels = (8, 5, 3)
    z = torch.randn(20, 3, dtype=torch.float32, requires_grad=True)
    values, _ = cb.fsq_quantize(z, levels)
    g = torch.randn_like(values)
    (grad,) = torch.autograd.grad(values, z, g)
    # By hand: d/dz [tanh(z + shift) * half_l - offset] / (L // 2), rounding passed straight through.
    lv = torch.tensor(levels, dtype=torch.float32)
    half_l = (lv - 1) * (1 - 1e-3) / 2
    shift = torch.atanh(torch.where(lv % 2 == 0, 0.5, 0.0) / half_l)
    want = g * (1 - torch.tanh(z.detach() + shift) ** 2) * half_l / torch.div(lv, 2, rounding_mode="floor")
    torch.testing.assert_close(grad, want)


def test_the_commitment_term_is_part_of_the_objective():
    net = vq_net(beta=0.5, update="loss", init="uniform")
    x = torch.from_numpy(data(16))
    total, terms = net.loss_terms(x, None, Regularizers(), training=False)
    assert list(terms) == ["mse", "err", "vq.commitment", "vq.codebook", "loss"]
    outputs = net.graph(x)
    z = outputs["vq:pre"].reshape(-1, 3)
    q = outputs["vq:out"].reshape(-1, 3)
    torch.testing.assert_close(terms["vq.commitment"], 0.5 * (z - q).square().mean())
    torch.testing.assert_close(terms["vq.codebook"], (z - q).square().mean())
    torch.testing.assert_close(total, terms["mse"] + terms["vq.commitment"] + terms["vq.codebook"])


# ---------------------------------------------------------------------- EMA and re-seeding
def test_the_ema_update_is_the_published_formula():
    net = vq_net(init="uniform", dead_codes=0.0, decay=0.9)
    layer = net.graph.layers["vq"]
    rng = np.random.default_rng(3)
    start = torch.from_numpy(rng.normal(size=(8, 3)).astype(np.float32))
    counts0 = torch.from_numpy(rng.uniform(0.5, 4, size=8).astype(np.float32))
    layer.set_codebook(start, counts0)
    x = torch.from_numpy(rng.normal(size=(40, 6)).astype(np.float32))
    record = train_forward(layer, x)
    layer.after_step()
    # Plain float64 NumPy: nearest codes, counts and sums, then the appendix's update with Laplace smoothing.
    z = x.numpy().astype(np.float64).reshape(-1, 3)
    e = start.numpy().astype(np.float64)
    idx = ((z[:, None, :] - e[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(record.extras["codes"].reshape(-1).numpy(), idx)
    n_k = np.bincount(idx, minlength=8)
    s_k = np.zeros((8, 3))
    np.add.at(s_k, idx, z)
    N = 0.9 * counts0.numpy() + 0.1 * n_k
    m = 0.9 * e * counts0.numpy()[:, None] + 0.1 * s_k
    n = N.sum()
    smoothed = (N + 1e-5) / (n + 8 * 1e-5) * n
    np.testing.assert_allclose(layer.ema_count.numpy(), N, rtol=1e-6)
    np.testing.assert_allclose(layer.ema_sum.numpy(), m, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.codebook.numpy(), m / smoothed[:, None], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(layer.hits.numpy(), n_k)


@pytest.mark.parametrize("update", ["loss", "ema"])
def test_reseeding_touches_exactly_the_codes_under_the_threshold(update):
    net = vq_net(init="uniform", dead_codes=1.5, decay=0.5, update=update)
    layer = net.graph.layers["vq"]
    rng = np.random.default_rng(4)
    start = torch.from_numpy(rng.normal(size=(8, 3)).astype(np.float32))
    start[5:] += 100.0  # three codes far from the data: never chosen
    counts0 = torch.tensor([4.0, 4.0, 4.0, 4.0, 4.0, 1.0, 8.0, 2.0])
    layer.set_codebook(start, counts0)
    x = torch.from_numpy(rng.normal(size=(30, 6)).astype(np.float32))
    record = train_forward(layer, x)
    n_k = torch.bincount(record.extras["codes"].reshape(-1), minlength=8).float()
    expected_count = 0.5 * counts0 + 0.5 * n_k
    dead = expected_count < 1.5
    assert dead[5] and dead[7] and not dead[6]  # 0.5 and 1.0 under 1.5; 4.0 over it
    before = layer.codebook.detach().clone()
    if update == "ema":
        _, _, alive_want = cb.ema_update(counts0, start * counts0[:, None], n_k, _sums(record, 8), 0.5)
    else:
        alive_want = before
    layer.after_step()
    after = layer.codebook.detach()
    z = x.reshape(-1, 3)
    for k in range(8):
        if dead[k]:
            assert (z == after[k]).all(dim=1).any(), f"code {k} was not re-seeded with a batch vector"
            assert layer.ema_count[k] == 1.5
        else:
            assert torch.equal(after[k], alive_want[k]), f"code {k} above the threshold was changed"
            assert layer.ema_count[k] == expected_count[k]
    assert int(layer.reseeded) == int(dead.sum())
    # Distinct dead codes get distinct vectors (drawn without replacement).
    assert len({tuple(after[k].tolist()) for k in range(8) if dead[k]}) == int(dead.sum())


def _sums(record, k):
    z = record.pre.detach().reshape(-1, 3)
    return torch.zeros(k, 3).index_add_(0, record.extras["codes"].reshape(-1), z)


def test_kmeans_initialisation_runs_on_the_first_training_batch_only():
    net = conv_vq()
    layer = net.graph.layers["vq"]
    assert not bool(layer.initialized)
    x = images(32)
    net.train(x, batch_size=32, max_epochs=1, validate_every=0)
    assert bool(layer.initialized)
    # k-means of the first batch's vectors: every code is used on that batch (then one EMA step moved them).
    codes = net.encode(x, layer="vq", codes=True)
    assert len(np.unique(codes)) >= 12
    # Starting from the data, k-means beats the uniform start by far on the commitment term.
    uniform = conv_vq(init="uniform", dead_codes=0.0)
    uniform.train(x, batch_size=32, max_epochs=1, validate_every=0)
    assert net.history[0]["train"]["vq.commitment"] < 0.5 * uniform.history[0]["train"]["vq.commitment"]


def test_kmeans_finds_separated_clusters():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 2)) * 10
    z = torch.from_numpy((centres[rng.integers(4, size=400)] + rng.normal(size=(400, 2)) * 0.1).astype(np.float32))
    found, counts = cb.kmeans(z, 4, torch.Generator().manual_seed(0), iterations=20)
    distance = np.abs(np.sort(found.numpy(), axis=0) - np.sort(centres, axis=0)).max()
    assert distance < 0.1 and counts.sum() == 400


def test_equal_codes_collapse_without_reseeding_and_recover_with_it():
    x = images(64)
    usage = {}
    for threshold in (0.0, 1.0):
        net = conv_vq(init="uniform", dead_codes=threshold)
        net.graph.layers["vq"].set_codebook(torch.full((16, 3), 3.0))
        net.train(x, batch_size=32, max_epochs=3, validate_every=0)
        usage[threshold] = len(np.unique(net.encode(x, layer="vq", codes=True))) / 16
    assert usage[0.0] == 1 / 16  # ties go to code 0, and the others stay out of reach
    assert usage[1.0] >= 0.75


def test_a_threshold_no_code_can_meet_is_warned():
    net = vq_net(dead_codes=5.0, codebook=64)
    with pytest.warns(DeadCodeWarning, match="fewer than 5 per code"):
        net.train(data(16), batch_size=8, max_epochs=1, validate_every=0)


# ---------------------------------------------------------------------- step paths
def test_the_fused_step_declines_quantizer_models():
    plain = aekit.Autoencoder([12, (6, "linear"), 12], rng=0)
    assert DenseChainStep.build(plain.objective(Regularizers())) is not None
    for net in (vq_net(), aekit.Autoencoder([12, (4, "linear"), dict(form="fsq", levels=(3, 3)), 12], rng=0)):
        assert DenseChainStep.build(net.objective(Regularizers())) is None


@pytest.mark.parametrize(
    "options",
    [dict(algo="adam"), dict(algo="lbfgs"), dict(algo="adam", precision="bf16")],
    ids=["adam", "lbfgs", "bf16"],
)
def test_after_step_runs_once_per_step_on_every_path(options):
    net = vq_net(dead_codes=0.0)
    x = data(32)
    batch = 32 if options["algo"] == "lbfgs" else 8
    net.train(x, batch_size=batch, max_epochs=2, validate_every=0, **options)
    layer = net.graph.layers["vq"]
    steps = 2 if options["algo"] == "lbfgs" else 2 * 32 // batch
    assert int(layer.steps) == steps
    assert float(layer.hits.sum()) == steps * batch * 2  # two chunks per example


# ---------------------------------------------------------------------- codes in and out
def test_encode_codes_and_decode_indices_on_the_conv_model():
    net = conv_vq()
    x = images(20)
    net.train(x, batch_size=10, max_epochs=1, validate_every=0)
    idx = net.encode(x, layer="vq", codes=True)
    assert idx.dtype == np.int64 and idx.shape == (20, 4, 4)
    np.testing.assert_allclose(net.decode(idx, layer="vq"), net.predict(x), atol=1e-6)
    quantized = net.encode(x, layer="vq")
    np.testing.assert_allclose(net.decode(quantized, layer="vq"), net.decode(idx, layer="vq"), atol=1e-6)
    with pytest.raises(aekit.DataError, match=r"must lie in \[0, 16\)"):
        net.decode(np.full((2, 4, 4), 16), layer="vq")
    with pytest.raises(aekit.DataError, match=r"shape \(n, 4, 4\)"):
        net.decode(np.zeros((2, 16), dtype=np.int64), layer="vq")
    with pytest.raises(aekit.ConfigurationError, match="quantizer layer"):
        net.encode(x, layer="hid1", codes=True)


def test_fsq_codes_round_trip_through_decode():
    levels = (8, 5, 5, 5)
    net = aekit.Autoencoder(
        [(1, 8, 8), dict(form="conv2", channels=4, kernel=1, activation="linear"), dict(form="fsq", levels=levels)]
        + [dict(form="conv2", channels=1, kernel=1, activation="linear")],
        rng=0,
    )
    x = images(30) * 6 - 3
    idx = net.encode(x, layer="hid2", codes=True)
    assert idx.shape == (30, 8, 8) and idx.min() >= 0 and idx.max() < 1000
    np.testing.assert_allclose(net.decode(idx, layer="hid2"), net.predict(x), atol=1e-6)
    # Every one of the 1000 codes decodes to its own vector, and back to its index.
    every = torch.arange(1000)
    values = cb.fsq_values(every, levels)
    half = torch.tensor([4, 2, 2, 2])
    digits = (values * half).round().long() + half
    torch.testing.assert_close(cb.fsq_indices(digits, levels), every)
    assert len({tuple(v) for v in values.tolist()}) == 1000


def test_fsq_indices_stay_in_range_under_bf16():
    levels = (8, 5, 5, 5)
    z = torch.randn(4096, 4) * 50  # saturated: the bound's edges, where bf16 rounding pushed digits out
    with torch.autocast("cpu", dtype=torch.bfloat16):
        values, digits = cb.fsq_quantize(z.bfloat16(), levels)
    idx = cb.fsq_indices(digits, levels)
    assert values.dtype == torch.float32
    assert int(idx.min()) >= 0 and int(idx.max()) < 1000
    assert set(np.unique(digits[:, 0].numpy())) <= set(range(8))


def test_bad_options_are_refused_naming_the_option():
    with pytest.raises(aekit.ConfigurationError, match="update must be one of 'ema', 'loss'"):
        vq_net(update="sgd")
    with pytest.raises(aekit.ConfigurationError, match="codebook must be an integer >= 2"):
        vq_net(codebook=1)
    with pytest.raises(aekit.ConfigurationError, match=r"decay must be in \(0, 1\)"):
        vq_net(decay=1.0)
    with pytest.raises(aekit.ConfigurationError, match="dim must divide"):
        vq_net(dim=4)
    with pytest.raises(aekit.ConfigurationError, match="give the layer before it 3 channels"):
        aekit.Autoencoder([(1, 8, 8), dict(form="conv2", channels=2), dict(form="fsq", levels=(3, 3, 3)), 4])
    with pytest.raises(aekit.ConfigurationError, match="did you mean 'codebook'"):
        vq_net(codebok=8)


# ---------------------------------------------------------------------- files and resume
def state(net):
    return {k: v.detach().clone() for k, v in net.graph.state_dict().items()}


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("update", ["ema", "loss"])
def test_save_and_load_keep_the_codebook_and_its_state_bit_for_bit(tmp_path, update):
    net = conv_vq(update=update)
    x = images(32)
    net.train(x, batch_size=16, max_epochs=2, validate_every=0)
    net.save(tmp_path / "vq.aekit")
    loaded = aekit.load(tmp_path / "vq.aekit")
    assert_same_state(state(net), state(loaded))
    for key in ("codebook", "ema_count", "hits", "steps", "seed", "initialized", "reseeded"):
        assert f"layers.vq.{key}" in state(loaded)
    np.testing.assert_array_equal(loaded.encode(x, layer="vq", codes=True), net.encode(x, layer="vq", codes=True))


@pytest.mark.parametrize("layer", ["vq", "fsq"])
def test_resume_is_bit_identical_with_a_quantizer(tmp_path, layer):
    def make():
        if layer == "fsq":
            return aekit.Autoencoder(
                [(1, 8, 8), dict(form="conv2", channels=3, stride=2), dict(form="fsq", levels=(5, 4, 3))]
                + [dict(form="deconv2", channels=1, stride=2, activation="sigmoid")],
                rng=0,
            )
        return conv_vq(dead_codes=8.0, decay=0.8)  # re-seeds codes from time to time: its draws must resume too

    x = images(48)
    options = dict(batch_size=16, max_epochs=4, validate_every=0)
    reference = make()
    reference.train(x, **options)
    path = tmp_path / "run.ckpt"
    first = make()
    for i, _ in enumerate(first.itertrain(x, checkpoint=path, **options), 1):
        if i == 2:
            break
    resumed = make()
    resumed.train(x, checkpoint=path, resume=True, **options)
    assert_same_state(state(resumed), state(reference))
    assert resumed.history == reference.history
    if layer == "vq":
        assert int(reference.graph.layers["vq"].reseeded) > 0


def test_cosine_distance_uses_unit_codes():
    net = vq_net(distance="cosine", init="uniform")
    x = data(32)
    net.train(x, batch_size=8, max_epochs=1, validate_every=0)
    out = net.feed_forward(x)["vq:out"].reshape(-1, 3)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    assert math.isfinite(net.history[-1]["train"]["loss"])


# ---------------------------------------------------------------------- usage and perplexity
@pytest.mark.parametrize("batch", [1, 7, 1000])
def test_usage_and_perplexity_are_whole_data_figures(batch):
    from aekit.objective.metrics import MetricBatch, build_metrics, compute_all, update_all

    net = conv_vq()
    x = images(40)
    net.train(x, batch_size=20, max_epochs=1, validate_every=0)
    idx = net.encode(x, layer="vq", codes=True).reshape(-1)
    counts = np.bincount(idx, minlength=16)
    p = counts[counts > 0] / counts.sum()
    want = {"usage": (counts > 0).mean(), "perplexity": float(np.exp(-(p * np.log(p)).sum()))}
    metrics = build_metrics(["usage", "perplexity:vq"], dict(net.graph.layers.items()), net.code_layer)
    graph = net.graph.eval()
    with torch.no_grad():
        for start in range(0, len(x), batch):
            xb = torch.from_numpy(x[start : start + batch])
            update_all(metrics, MetricBatch(dict(graph(xb)), xb, None, "out"))
    got = compute_all(metrics)
    assert got["usage"] == pytest.approx(want["usage"]) and got["perplexity:vq"] == pytest.approx(want["perplexity"])
    figures = aekit.evaluate(net, x)
    assert figures["usage:vq"] == pytest.approx(want["usage"])
    assert figures["perplexity:vq"] == pytest.approx(want["perplexity"], rel=1e-9)
    assert "l0" not in figures  # the code layer is the quantizer: its codes are counted, not its non-zeros


def test_usage_is_a_training_monitor_and_refuses_other_layers():
    net = conv_vq()
    x = images(40)
    net.train(x, batch_size=20, max_epochs=2, metrics=["usage", "perplexity"])
    valid = net.history[-1]["valid"]
    assert valid["usage"] == pytest.approx(aekit.evaluate(net, x, metrics=["usage"])["usage"])
    assert 1 <= valid["perplexity"] <= 16
    with pytest.raises(aekit.ConfigurationError, match="reads a quantizer layer"):
        aekit.evaluate(net, x, metrics=["usage:hid1"])


# ---------------------------------------------------------------------- diagnose
def codes_of(findings):
    return {f.code: f for f in findings}


def test_diagnose_reports_a_collapsed_codebook_and_not_a_healthy_one():
    x = images(64)
    collapsed = conv_vq(init="uniform", dead_codes=0.0)
    collapsed.graph.layers["vq"].set_codebook(torch.full((16, 3), 3.0))
    collapsed.train(x, batch_size=32, max_epochs=2, validate_every=0)
    found = codes_of(aekit.diagnose(collapsed, x))
    finding = found["codebook-collapse"]
    assert finding.severity == "error" and finding.layer == "vq" and finding.value == pytest.approx(1 / 16)
    assert "1 of its 16 codes" in finding.message and "dead_codes=1.0" in finding.remedy
    assert "dead-units" not in found and "collapsed-code" not in found  # the codes are judged by usage

    healthy = conv_vq()
    healthy.train(x, batch_size=32, max_epochs=2, validate_every=0)
    usage = aekit.evaluate(healthy, x)["usage:vq"]
    found = codes_of(aekit.diagnose(healthy, x))
    assert "codebook-collapse" not in found
    assert ("dead-codes" in found) == (1 - usage >= 0.05)


def test_diagnose_warns_of_partial_collapse_and_dead_codes():
    from aekit.inspect.codebook_checks import check_codebooks

    layer = conv_vq().graph.layers["vq"]
    for used, code, severity in ((4, "codebook-collapse", "warning"), (14, "dead-codes", "warning"), (16, None, None)):
        outputs = {"vq:codes": np.arange(160).reshape(10, 4, 4) % used}
        found = check_codebooks({"vq": layer}, outputs, "")
        if code is None:
            assert found == []
        else:
            assert [(f.code, f.severity) for f in found] == [(code, severity)]
            assert f"chose {used} of its 16 codes" in found[0].message


def test_diagnose_reports_a_commitment_term_that_keeps_growing():
    from aekit.inspect.codebook_checks import check_commitment_drift

    layer = conv_vq().graph.layers["vq"]
    history = [{"train": {"vq.commitment": v}} for v in (0.02, 0.01, 0.012, 0.018, 0.03)]
    (finding,) = check_commitment_drift({"vq": layer}, history)
    assert finding.code == "commitment-drift" and finding.value == pytest.approx(3.0)
    steady = [{"train": {"vq.commitment": v}} for v in (0.02, 0.01, 0.012, 0.011, 0.013)]
    assert check_commitment_drift({"vq": layer}, steady) == []


# ---------------------------------------------------------------------- pictures and the report
def test_code_pictures_and_the_report(tmp_path):
    from PIL import Image

    from aekit.inspect.codebook_pictures import code_images, plot_code_usage, save_code_images

    net = conv_vq()
    x = images(40)
    net.train(x, batch_size=20, max_epochs=1, validate_every=0)
    tiles = code_images(net)
    assert tiles.shape == (16, 1, 8, 8)
    for k in (0, 5):  # a code's picture is the decoder's output for a grid of that code
        np.testing.assert_allclose(tiles[k], net.decode(np.full((1, 4, 4), k), layer="vq")[0], atol=1e-6)
    path = save_code_images(net, tmp_path / "codes.png", x=x)
    assert Image.open(path).size[0] > 100
    assert Image.open(plot_code_usage(net, x, tmp_path / "usage.png")).size == (800, 300)
    # The report's section (write_report draws every other picture too: too slow for a unit test).
    from aekit.inspect.report import _codebook_sections

    drawn = []
    html = _codebook_sections(net, x, lambda name, caption, draw: drawn.append(draw(str(tmp_path / name))) or caption)
    assert html[0] == "<h2>Codebook of vq</h2>" and len(drawn) == 2
    assert (tmp_path / "codebook_vq.png").exists() and (tmp_path / "usage_vq.png").exists()
    with pytest.raises(aekit.ConfigurationError, match="quantizer layer"):
        save_code_images(net, tmp_path / "x.png", layer="hid1")


def test_an_fsq_collapse_names_the_channels_short_of_levels():
    from aekit.inspect.codebook_checks import check_codebooks, levels_used

    net = aekit.Autoencoder(
        [(1, 4, 4), dict(form="conv2", channels=3, kernel=1), dict(form="fsq", levels=(4, 3, 2), name="q")]
        + [dict(form="conv2", channels=1, kernel=1)]
    )
    layer = net.graph.layers["q"]
    # Codes whose digits take channel 0 in {0, 1}, channel 1 in {0, 1, 2}, channel 2 in {1}.
    chosen = [d0 + 4 * d1 + 12 * 1 for d0 in (0, 1) for d1 in (0, 1, 2)]
    counts = np.bincount(chosen, minlength=24)
    assert levels_used(counts, (4, 3, 2)) == [2, 3, 1]
    (finding,) = check_codebooks({"q": layer}, {"q:codes": np.array(chosen * 3)}, "")
    assert finding.code == "codebook-collapse" and finding.severity == "warning"
    assert "channel 0 takes 2 of its 4; channel 2 takes 1 of its 2 levels" in finding.remedy
