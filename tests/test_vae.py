"""Variational autoencoders: the Gaussian layer, the KL term's one scale, ELBO and nll against references."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import distributions as dist

import aekit
from aekit.model.layers.gaussian import gaussian_kl, log_normal, soft_clamp
from aekit.objective import Regularizers
from aekit.objective.likelihood import latent_layers
from aekit.train.fused import DenseChainStep


def small_vae(size=4, loss="bce", rng=0, n_in=20):
    out = "sigmoid" if loss == "bce" else "linear"
    return aekit.Autoencoder(
        [n_in, (16, "tanh"), dict(form="gaussian", size=size, name="z"), (16, "tanh"), (n_in, out)], loss=loss, rng=rng
    )


def binary_data(n=64, d=20, seed=0):
    return (np.random.default_rng(seed).random((n, d)) < 0.3).astype(np.float32)


def objective_terms(net, x, training=True, **kwargs):
    regs = Regularizers.from_kwargs(**kwargs)
    with torch.no_grad():
        return net.objective(regs)(torch.as_tensor(x), None, training=training)[1]


# ---------------------------------------------------------------------- the layer
def test_layer_shapes_extras_and_default_linear_activation():
    net = small_vae()
    layer = net.graph.layers["z"]
    assert layer.spec.activation == "linear" and net.code_layer == "z" and latent_layers(net.graph) == ["z"]
    assert net.find("z", "w").shape == (16, 4)  # the mean head: what find and the feature pictures read
    outputs = net.feed_forward(binary_data(5))
    assert outputs["z:out"].shape == (5, 4) and np.array_equal(outputs["z:out"], outputs["z:mean"])
    with pytest.raises(aekit.ConfigurationError, match="linear"):
        aekit.Autoencoder([4, dict(form="gaussian", size=2, activation="relu"), 4])
    with pytest.raises(aekit.ConfigurationError, match="logvar_range"):
        aekit.Autoencoder([4, dict(form="gaussian", size=2, logvar_range=[3, 1]), 4])


def test_training_mode_samples_with_the_reparameterisation():
    net = small_vae()
    layer = net.graph.layers["z"]
    h = torch.randn(3, 16)
    layer.train()
    torch.manual_seed(5)
    record = layer(h)
    torch.manual_seed(5)
    eps = torch.randn(3, 4)
    mean, logvar = record.extras["mean"], record.extras["logvar"]
    torch.testing.assert_close(record.out, mean + torch.exp(0.5 * logvar) * eps)
    layer.eval()
    assert torch.equal(layer(h).out, mean)


def test_encode_is_deterministic_and_sample_draws_from_the_posterior():
    net = small_vae()
    x = binary_data(32)
    net.train(x, max_epochs=1, batch_size=16)
    a, b = net.encode(x), net.encode(x)
    assert np.array_equal(a, b) and np.array_equal(a, net.posterior(x).mean)
    assert np.array_equal(net.predict(x), net.predict(x))
    draws = np.stack([net.encode(x[:1], sample=True)[0] for _ in range(2000)])
    post = net.posterior(x[:1])
    np.testing.assert_allclose(draws.mean(0), post.mean[0], atol=5 * post.std.max() / math.sqrt(2000))
    np.testing.assert_allclose(draws.std(0), post.std[0], rtol=0.1)


def test_soft_clamp_keeps_logvar_finite_with_a_gradient():
    raw = torch.tensor([-1e4, -30.0, -3.0, 0.0, 4.0, 30.0, 1e4], requires_grad=True)
    out = soft_clamp(raw, -20.0, 10.0)
    assert torch.isfinite(out).all() and out.min() >= -20 and out.max() <= 10
    # the identity up to exp(-distance to a bound): 5e-5 at logvar 0, the prior's
    torch.testing.assert_close(out[2:4], raw[2:4].detach(), atol=5e-5, rtol=0)
    out.sum().backward()
    assert (raw.grad[1:-1] > 0).all()


# ---------------------------------------------------------------------- the KL and the scale
def test_closed_form_kl_matches_torch_and_a_monte_carlo_estimate():
    gen = torch.Generator().manual_seed(0)
    mean, logvar = (
        torch.randn(5, generator=gen, dtype=torch.float64),
        torch.randn(5, generator=gen, dtype=torch.float64),
    )
    exact = gaussian_kl(mean, logvar)
    q, p = dist.Normal(mean, torch.exp(0.5 * logvar)), dist.Normal(0.0, 1.0)
    torch.testing.assert_close(exact, dist.kl_divergence(q, p))
    z = q.sample((200_000,))
    log_ratio = log_normal(z, mean, logvar) - log_normal(z)
    torch.testing.assert_close(log_normal(z, mean, logvar), q.log_prob(z))
    standard_error = log_ratio.std(0) / math.sqrt(z.shape[0])
    assert ((log_ratio.mean(0) - exact).abs() < 5 * standard_error).all()


@pytest.mark.parametrize("binarize", [None, "dynamic"])
def test_d_times_loss_is_the_negative_elbo_of_torch_distributions(binarize):
    net = small_vae()
    x = torch.as_tensor(binary_data(8) * 0.8 + 0.1 if binarize else binary_data(8))
    torch.manual_seed(3)
    terms = objective_terms(net, x, binarize=binarize)
    torch.manual_seed(3)
    target = torch.bernoulli(x) if binarize else x
    eps = torch.randn(8, 4)  # the layer's draw comes after the binarization
    g = net.graph
    with torch.no_grad():
        h = g.layers["hid1"](target).out
        mean, logvar = g.layers["z"].posterior(h)
        q = dist.Normal(mean, torch.exp(0.5 * logvar))
        z = mean + q.stddev * eps
        logits = g.layers["out"](g.layers["hid3"](z).out).pre
        log_px = dist.Bernoulli(logits=logits).log_prob(target).sum(-1)
        kl = dist.kl_divergence(q, dist.Normal(0.0, 1.0)).sum(-1)
    negative_elbo = -(log_px - kl).mean()
    torch.testing.assert_close(20 * terms["loss"], negative_elbo, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(terms["elbo"], -negative_elbo, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(terms["kl_nats"], kl.mean(), rtol=1e-5, atol=1e-5)


def test_beta_warmup_free_bits_and_capacity():
    net = small_vae()
    x = binary_data(16)
    base = objective_terms(net, x, training=False)
    kl_nats = float(base["kl_nats"])
    assert float(base["kl"]) == pytest.approx(kl_nats / 20, rel=1e-5)
    assert float(objective_terms(net, x, training=False, beta=4.0)["kl"]) == pytest.approx(4 * kl_nats / 20, rel=1e-5)
    # capacity=0 is the plain KL, never a clamp that zeroes it (PyOD's min(KL, 0) is 0)
    assert float(objective_terms(net, x, training=False, capacity=0)["kl"]) == pytest.approx(kl_nats / 20, rel=1e-5)
    capped = objective_terms(net, x, training=False, capacity=kl_nats + 3.0)["kl"]
    assert float(capped) == pytest.approx(3.0 / 20, rel=1e-3)
    floor = objective_terms(net, x, training=False, free_bits=100.0)["kl"]
    assert float(floor) == pytest.approx(4 * 100.0 / 20, rel=1e-6)
    # warm-up: the weight rises with the layer's step counter in training, the full beta in validation
    net.graph.layers["z"].steps.fill_(25)
    net.graph.eval()  # the same posterior mean as the base terms
    warm = objective_terms(net, x, training=True, kl_warmup=100)
    net.graph.train()
    assert float(warm["kl"]) == pytest.approx(0.25 * kl_nats / 20, rel=1e-5)
    assert float(objective_terms(net, x, training=False, kl_warmup=100)["kl"]) == pytest.approx(kl_nats / 20, rel=1e-5)


def test_training_counts_steps_and_the_fused_step_declines():
    net = small_vae()
    x = binary_data(64)
    regs = Regularizers()
    assert DenseChainStep.build(net.objective(regs)) is None
    plain = aekit.Autoencoder([20, (8, "sigmoid"), (20, "sigmoid")], loss="bce")
    assert DenseChainStep.build(plain.objective(regs)) is not None
    assert DenseChainStep.build(plain.objective(Regularizers.from_kwargs(binarize="dynamic"))) is None
    train, _ = net.train(x, max_epochs=2, batch_size=16, patience=None)
    assert int(net.graph.layers["z"].steps) == 8
    assert {"kl", "kl_nats", "elbo"} <= set(train)


def test_training_is_reproducible_from_rng():
    x = binary_data(64)
    runs = []
    for _ in range(2):
        net = small_vae(rng=7)
        torch.manual_seed(np.random.randint(1000))  # the global state must not matter
        net.train(x, max_epochs=2, batch_size=16, binarize="dynamic")
        runs.append(net.find("z", "w").detach().clone())
    assert torch.equal(runs[0], runs[1])


def test_importance_weighted_training_and_option_errors():
    net = small_vae()
    x = binary_data(32)
    train, _ = net.train(x, max_epochs=1, batch_size=16, importance_samples=5)
    assert set(train) == {"iwae", "loss"} and train["iwae"] == pytest.approx(-20 * train["loss"], rel=1e-5)
    with pytest.raises(aekit.DataError, match="binarize"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", aekit.errors.OutputRangeWarning)  # the other warning of the same fault
            net.train(x * 2, max_epochs=1, binarize="dynamic")
    with pytest.raises(aekit.ConfigurationError, match="binarize"):
        net.train(x, max_epochs=1, binarize="static")
    plain = aekit.Autoencoder([20, 8, 20])
    with pytest.raises(aekit.ConfigurationError, match="gaussian"):
        plain.train(x, max_epochs=1, importance_samples=3)
    with pytest.raises(aekit.ConfigurationError, match="gaussian"):
        plain.nll(x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plain.train(x, max_epochs=1, beta=2.0)
    assert any(issubclass(w.category, aekit.errors.VariationalWarning) for w in caught)


# ---------------------------------------------------------------------- likelihoods
def linear_gaussian_vae(d=6, k=3, seed=0):
    """A linear decoder p(x|z) = N(z Wd + c, I/2) (loss 'mse') whose encoder is the exact posterior."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, k, generator=gen, dtype=torch.float64))
    s = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)[:k]
    wd = (q * s).t()  # (k, d), orthogonal rows: the posterior covariance is diagonal
    c = torch.randn(d, generator=gen, dtype=torch.float64)
    post_var = 1.0 / (1.0 + 2.0 * s**2)  # precision I + A^T Sigma^-1 A with A = wd^T, Sigma = I/2
    we = 2.0 * wd.t() * post_var  # (d, k): mean = S A^T Sigma^-1 (x - c)
    net = aekit.Autoencoder([d, dict(form="gaussian", size=k, name="z"), (d, "linear")], loss="mse")
    layer, out = net.graph.layers["z"], net.graph.layers["out"]
    with torch.no_grad():
        layer.w.copy_(we)
        layer.b.copy_(-(c @ we))
        layer.w_logvar.zero_()
        layer.b_logvar.copy_(torch.log(post_var))
        out.w.copy_(wd)
        out.b.copy_(c)
    marginal = dist.MultivariateNormal(c, wd.t() @ wd + 0.5 * torch.eye(d, dtype=torch.float64))
    return net, marginal


def test_nll_equals_the_closed_form_marginal_when_the_encoder_is_the_exact_posterior():
    net, marginal = linear_gaussian_vae()
    torch.manual_seed(1)
    x = marginal.sample((50,))
    exact = -marginal.log_prob(x).numpy()
    xs = x.float().numpy()
    np.testing.assert_allclose(net.nll(xs, k=1), exact, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(net.nll(xs, k=7, seed=3), exact, rtol=1e-4, atol=1e-4)
    # the ELBO is the log-likelihood too (the KL to the true posterior is zero), up to MC noise in E_q
    np.testing.assert_allclose(-net.elbo(xs, samples=2000), exact, rtol=0, atol=0.2)


def test_nll_is_non_increasing_in_k_and_bounded_by_the_elbo():
    net = small_vae(size=3)
    x = binary_data(40)
    net.train(x, max_epochs=3, batch_size=8)
    values = [float(net.nll(x, k=k).mean()) for k in (1, 10, 100)]
    assert values[0] > values[1] > values[2]
    assert values[0] == pytest.approx(float(-net.elbo(x, samples=200).mean()), rel=0.02)
    assert np.array_equal(net.nll(x, k=10, seed=4), net.nll(x, k=10, seed=4))  # seeded


def test_nll_in_chunks_matches_one_chunk(monkeypatch):
    from aekit.objective import likelihood

    net = small_vae()
    x = binary_data(10)
    whole = net.nll(x, k=50, seed=1)
    monkeypatch.setattr(likelihood, "DECODE_ROWS", 16)  # 16 decoder rows: 50 samples in 4 chunks per example
    # another chunking draws the same numbers in another order: the same distribution, not the same values
    chunked = net.nll(x, k=50, seed=1)
    assert chunked.shape == whole.shape and np.all(np.isfinite(chunked))
    np.testing.assert_allclose(chunked, whole, rtol=0.05)


def test_gaussian_decoders_elbo_matches_torch_distributions():
    net = aekit.Autoencoder(
        [5, (8, "tanh"), dict(form="gaussian", size=2, name="z"), (8, "tanh"), (5, "linear")], loss="mse"
    )
    x = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
    post = net.posterior(x)
    gen = torch.Generator().manual_seed(0)
    eps = torch.randn((4, 1, 2), generator=gen)
    z = torch.as_tensor(post.mean)[:, None] + torch.as_tensor(post.std)[:, None] * eps
    mu = torch.as_tensor(net.decode(z[:, 0].numpy(), layer="z"))
    log_px = dist.Normal(mu, math.sqrt(0.5)).log_prob(torch.as_tensor(x)).sum(-1)
    kl = dist.kl_divergence(
        dist.Normal(torch.as_tensor(post.mean), torch.as_tensor(post.std)), dist.Normal(0.0, 1.0)
    ).sum(-1)
    np.testing.assert_allclose(net.elbo(x, samples=1, seed=0), (log_px - kl).numpy(), rtol=1e-5, atol=1e-4)


# ---------------------------------------------------------------------- generating, files, conv
def test_sample_and_interpolate_shapes_and_ends():
    net = small_vae()
    x = binary_data(8)
    s = net.sample(5, seed=0)
    assert s.shape == (5, 20) and np.array_equal(s, net.sample(5, seed=0)) and (0 <= s).all() and (s <= 1).all()
    line = net.interpolate(x[0], x[1], steps=4)
    assert line.shape == (4, 20)
    np.testing.assert_allclose(line[0], net.predict(x[:1])[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(line[-1], net.predict(x[1:2])[0], rtol=1e-5, atol=1e-6)
    assert net.interpolate(x[:3], x[3:6], steps=2).shape == (3, 2, 20)


def test_save_and_load_keep_nll_sample_and_step_counter_bit_for_bit(tmp_path):
    net = small_vae()
    x = binary_data(32)
    net.train(x, max_epochs=1, batch_size=16, kl_warmup=10, validate_every=0)
    net.save(tmp_path / "vae.aekit")
    back = aekit.load(tmp_path / "vae.aekit")
    assert np.array_equal(net.nll(x, k=20), back.nll(x, k=20))
    assert np.array_equal(net.sample(6), back.sample(6))  # the model's own generator, seeded by rng
    assert np.array_equal(net.encode(x), back.encode(x))
    assert int(back.graph.layers["z"].steps) == int(net.graph.layers["z"].steps) == 2
    assert back.graph.layers["z"].logvar_range == (-20.0, 10.0)


def test_per_position_latent_after_a_conv_layer():
    net = aekit.Autoencoder(
        [
            (1, 8, 8),
            dict(form="conv2", channels=4, stride=2, activation="relu"),
            dict(form="gaussian", size=3, name="z"),
            dict(form="deconv2", channels=1, stride=2, activation="sigmoid"),
        ],
        loss="bce",
    )
    assert net.graph.layers["z"].output_shape == (3, 4, 4)
    x = binary_data(16, 64).reshape(16, 1, 8, 8)
    net.train(x, max_epochs=1, batch_size=8)
    assert net.encode(x).shape == (16, 3, 4, 4) and net.sample(2, seed=0).shape == (2, 1, 8, 8)
    assert net.nll(x[:3], k=5).shape == (3,) and net.kl_per_latent(x).shape == (3, 4, 4)


# ---------------------------------------------------------------------- diagnose
def codes(findings):
    return {f.code: f for f in findings}


def test_diagnose_names_posterior_collapse_with_the_figures():
    net, marginal = linear_gaussian_vae()
    torch.manual_seed(2)
    x = marginal.sample((200,)).float().numpy()
    found = codes(aekit.diagnose(net, x))
    assert "posterior-collapse" not in found and "inactive-latents" not in found
    layer = net.graph.layers["z"]
    with torch.no_grad():
        layer.w[:, 0] = 0.0  # latent 0 now gives the prior for every input
        layer.b[0] = 0.0
        layer.b_logvar[0] = 0.0
    found = codes(aekit.diagnose(net, x))
    assert found["inactive-latents"].severity == "info" and found["inactive-latents"].value == 2
    assert "2 of 3 latents" in found["inactive-latents"].message
    with torch.no_grad():
        layer.w.zero_()
        layer.b.zero_()
        layer.b_logvar.zero_()
    # the KL weight of the last epoch is kl * D / kl_nats = 4 (D = 6 values per example)
    net.history = [{"epoch": 1, "train": {"loss": 2.0, "kl": 1.5, "kl_nats": 1.5 * 6 / 4}}]
    found = codes(aekit.diagnose(net, x))
    collapse = found["posterior-collapse"]
    assert collapse.severity == "error" and collapse.layer == "z" and collapse.value == pytest.approx(0.0, abs=1e-6)
    assert "0 of 3 latents" in collapse.message and "total KL " in collapse.message
    assert "KL weight of 4" in collapse.remedy
    assert found["kl-dominates"].value == pytest.approx(0.75)
    assert "collapsed-code" not in found and "dead-units" not in found  # the latent is judged as a latent


def test_diagnose_logvar_at_its_bound():
    net = small_vae()
    with torch.no_grad():
        net.graph.layers["z"].b_logvar[1] = 50.0
    found = codes(aekit.diagnose(net, binary_data(50)))
    assert found["logvar-range"].value == 1 and "z1" in found["logvar-range"].message


# ---------------------------------------------------------------------- pictures and the report
def test_latent_pictures_and_the_report(tmp_path):
    from matplotlib.image import imread

    from aekit.inspect import latent_pictures as lp

    x = binary_data(40, 16)
    net = aekit.Autoencoder(
        [16, (8, "tanh"), dict(form="gaussian", size=2, name="z"), (8, "tanh"), (16, "sigmoid")], loss="bce"
    )
    net.train(x, max_epochs=1, batch_size=8)
    for draw in (
        lambda p: lp.plot_samples(net, p, n=6),
        lambda p: lp.plot_manifold(net, p, n=4),
        lambda p: lp.plot_kl(net, x, p),
        lambda p: lp.plot_interpolations(net, x, p, pairs=2, steps=3),
    ):
        path = draw(str(tmp_path / "picture.png"))
        assert imread(path).shape[0] > 50
    with pytest.raises(aekit.ConfigurationError, match="2-D latent"):
        lp.plot_manifold(small_vae(), str(tmp_path / "m.png"))
    page = aekit.report.write_report(net, x, tmp_path / "report")
    text = open(page).read()
    for name in ("samples.png", "latent_kl.png", "interpolations.png", "manifold.png", "Latent space"):
        assert name in text and "not available" not in text.split(name)[1][:200]


# ---------------------------------------------------------------------- scikit-learn
def test_estimators_with_a_gaussian_latent():
    from aekit.estimator import AutoencoderOutlierDetector, AutoencoderTransformer

    x = binary_data(60)
    ae = AutoencoderTransformer(
        hidden=(12, 3),
        activation="tanh",
        output_activation="sigmoid",
        loss="bce",
        variational=True,
        max_epochs=2,
        binarize="dynamic",
        random_state=0,
    ).fit(x)
    assert ae.net_.latent_layers == ["code"] and ae.transform(x).shape == (60, 3)
    np.testing.assert_array_equal(ae.transform(x), ae.net_.posterior(x).mean)
    det = AutoencoderOutlierDetector(
        hidden=(12, 3),
        activation="tanh",
        output_activation="sigmoid",
        loss="bce",
        standardize=False,
        variational=True,
        outlier_score="nll",
        nll_samples=20,
        max_epochs=2,
        random_state=0,
    ).fit(x)
    np.testing.assert_allclose(det.decision_scores_, det.net_.nll(x, k=20))
    assert (det.predict(x) == -1).mean() == pytest.approx(0.1, abs=0.05)
    with pytest.raises(aekit.ConfigurationError, match="outlier_score"):
        AutoencoderOutlierDetector(outlier_score="nll").fit(x)


# ---------------------------------------------------------------------- the command line
def test_cli_trains_a_vae_and_writes_nll_and_samples(tmp_path, capsys):
    from aekit import cli

    x = binary_data(40, 16)
    np.save(tmp_path / "x.npy", x)
    model = str(tmp_path / "m.aekit")
    args = ["train", str(tmp_path / "x.npy"), "--layers", "16,8:tanh,2:gaussian,8:tanh,16:sigmoid"]
    assert cli.main([*args, "--loss", "bce", "--binarize", "dynamic", "--epochs", "1", "-o", model, "-q"]) == 0
    net = aekit.load(model)
    assert net.latent_layers == ["hid2"]
    assert cli.main(["nll", model, str(tmp_path / "x.npy"), "--k", "10", "-o", str(tmp_path / "n.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "n.npy"), net.nll(x, k=10, seed=0))
    assert "nats per example" in capsys.readouterr().out
    assert cli.main(["sample", model, "--n", "3", "--seed", "2", "-o", str(tmp_path / "s.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), net.sample(3, seed=2))
    plain = str(tmp_path / "p.aekit")
    aekit.Autoencoder([16, 4, 16]).save(plain)
    assert cli.main(["sample", plain, "-o", str(tmp_path / "t.npy")]) != 0
    assert "gaussian" in capsys.readouterr().err


def test_output_bias_starts_at_the_logit_of_the_mean_pixel():
    net = small_vae()
    x = binary_data(64) * 0.9 + 0.05
    net.init_output_bias(x)
    expected = torch.logit(torch.as_tensor(x, dtype=torch.float64).mean(0)).float()
    torch.testing.assert_close(net.find("out", "b").detach(), expected)
    with pytest.raises(aekit.ConfigurationError, match="sigmoid"):
        small_vae(loss="mse").init_output_bias(x)


def test_resumed_training_equals_an_uninterrupted_run(tmp_path):
    x = binary_data(48)
    options = dict(batch_size=16, binarize="dynamic", kl_warmup=5, validate_every=0)
    whole = small_vae(rng=3)
    whole.train(x, max_epochs=2, **options)
    part = small_vae(rng=3)
    part.train(x, max_epochs=1, checkpoint=str(tmp_path / "c.ckpt"), **options)
    resumed = small_vae(rng=3)
    resumed.train(x, max_epochs=2, checkpoint=str(tmp_path / "c.ckpt"), resume=True, **options)
    assert int(resumed.graph.layers["z"].steps) == int(whole.graph.layers["z"].steps) == 6
    for a, b in zip(whole.params, resumed.params):
        assert torch.equal(a, b)


def test_kl_and_active_units_metrics_match_the_posterior():
    net, marginal = linear_gaussian_vae()
    torch.manual_seed(4)
    x = marginal.sample((300,)).float().numpy()
    with torch.no_grad():
        net.graph.layers["z"].w[:, 2] = 0.0  # one latent that ignores x
    m = aekit.evaluate(net, x)
    post = net.posterior(x)
    assert m["active_units"] == int((post.mean.astype(np.float64).var(0) > 0.01).sum()) == 2
    assert m["kl"] == pytest.approx(float(net.kl_per_latent(x).sum()), rel=1e-6)
    train, valid = net.train(x, max_epochs=1, metrics=["kl", "active_units"], valid=x[:50])
    assert {"kl", "active_units"} <= set(valid)
    with pytest.raises(aekit.ConfigurationError, match="gaussian"):
        aekit.evaluate(net, x, metrics=["kl:out"])


def test_validation_elbo_is_a_seeded_elbo_estimate_and_loss_reconstructs_the_mean():
    net = small_vae()
    x = binary_data(30)
    net.graph.eval()  # as validation runs
    terms = objective_terms(net, x, training=False)
    net.graph.train()
    assert float(terms["elbo"]) == pytest.approx(float(net.elbo(x, samples=1, seed=0).mean()), rel=1e-5)
    recon = torch.as_tensor(net.predict(x))  # from the posterior means
    bce = torch.nn.functional.binary_cross_entropy(recon.double(), torch.as_tensor(x).double())
    assert float(terms["bce"]) == pytest.approx(float(bce), rel=1e-4)


def test_settings_that_cannot_work_are_refused_or_warned():
    net = small_vae()
    x = binary_data(32)
    with pytest.raises(aekit.ConfigurationError, match="IWAE bound alone.*beta"):
        net.train(x, max_epochs=1, importance_samples=4, beta=2.0)
    with pytest.warns(aekit.errors.VariationalWarning, match="kl_warmup"):
        net.train(x, max_epochs=1, kl_warmup=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error", aekit.errors.VariationalWarning)
        net.train(x, max_epochs=1, kl_warmup=10, valid=x)


def test_feature_pictures_of_a_gaussian_layer_are_its_mean_weights():
    net = aekit.Autoencoder([16, dict(form="gaussian", size=3, name="z"), (16, "sigmoid")], loss="bce")
    w = net.find("z", "w").detach().double()
    expected = (w / w.norm(dim=0)).t().reshape(3, 4, 4).numpy()
    np.testing.assert_allclose(aekit.visualize.feature_images(net, "z", method="analytic"), expected, rtol=1e-6)
