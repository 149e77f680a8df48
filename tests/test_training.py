import numpy as np
import pytest
import torch

import aekit
from aekit import ConfigurationError, DataError
from aekit.training import ALGORITHMS, TensorSource


@pytest.fixture
def x(digits):
    return digits[0][:600]


def test_loss_falls(x):
    net = aekit.Autoencoder([64, (16, "sigmoid"), (64, "sigmoid")])
    losses = [tm["loss"] for tm, _ in net.itertrain(x, max_epochs=8, validate_every=0)]
    assert losses[-1] < 0.7 * losses[0]
    assert [h["epoch"] for h in net.history] == list(range(1, 9))


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_every_algorithm_lowers_the_loss(algo, x):
    net = aekit.Autoencoder([64, (16, "tanh"), 64])
    before = net.loss(x).item()
    lr = {"sgd": 0.1, "nag": 0.1, "adagrad": 0.05}.get(algo)
    net.train(x, algo=algo, max_epochs=5, learning_rate=lr, validate_every=0, batch_size=32)
    assert net.loss(x).item() < 0.9 * before


def test_tied_linear_autoencoder_reaches_pca(mnist):
    """A tied linear autoencoder's optimum is PCA's subspace (Baldi & Hornik 1989)."""
    from sklearn.decomposition import PCA

    train, test = mnist
    train, test = train[:3000], test[:2000]
    pca = PCA(32).fit(train)
    pca_err = ((pca.inverse_transform(pca.transform(test)) - test) ** 2).mean()
    net = aekit.Autoencoder([784, (32, "linear"), (784, "tied")])
    net.train(train, algo="adam", learning_rate=2e-3, batch_size=64, max_epochs=20, validate_every=0)
    err = ((net.predict(test) - test) ** 2).mean()
    assert err < 1.02 * pca_err, (err, pca_err)


def test_early_stopping_restores_the_best_parameters(x):
    net = aekit.Autoencoder([64, (32, "relu"), 64])
    valid = x[:100]
    seen = []
    for _, vm in net.itertrain(
        x[100:], valid=valid, max_epochs=60, patience=2, learning_rate=0.05, algo="sgd", momentum=0.99
    ):
        seen.append(vm["loss"])
    assert len(seen) < 60
    assert np.isclose(net.loss(valid).item(), min(seen), rtol=1e-4)


def test_breaking_out_restores_the_best_parameters(x):
    net = aekit.Autoencoder([64, (16, "relu"), 64])
    best = np.inf
    for epoch, (_, vm) in enumerate(net.itertrain(x, valid=x[:200], max_epochs=50)):
        best = min(best, vm["loss"])
        if epoch == 3:
            with torch.no_grad():
                net.find("hid1", "w").mul_(100.0)  # ruin the model, then leave the loop
            break
    assert np.isclose(net.loss(x[:200]).item(), best, rtol=1e-4)


def test_samples_are_reshuffled_every_epoch():
    source = TensorSource(torch.arange(20.0).reshape(20, 1))
    g = torch.Generator().manual_seed(0)
    first = torch.cat([b for b, _ in source.batches(5, g)]).flatten()
    second = torch.cat([b for b, _ in source.batches(5, g)]).flatten()
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(20))
    assert not torch.equal(first, second)


def test_epoch_means_weigh_batches_by_size():
    # 5 examples, batch 4: batches of 4 and 1. An untrainable model (lr tiny) gives the
    # per-example mean of the loss, not the mean of the two batch means.
    x = np.array([[0.0], [0.0], [0.0], [0.0], [10.0]], np.float32)
    net = aekit.Autoencoder([1, dict(size=1, std=0.0), dict(size=1, std=0.0)])
    tm, _ = net.train(
        x, batch_size=4, max_epochs=1, algo="sgd", learning_rate=1e-12, momentum=0.0, shuffle=False, validate_every=0
    )
    assert np.isclose(tm["loss"], 100.0 / 5, rtol=1e-5)


def test_noise_is_off_during_validation(x):
    net = aekit.Autoencoder([64, (16, "relu"), 64])
    _, vm = net.train(x, valid=x[:100], max_epochs=1, input_noise=5.0, hidden_dropout=0.9)
    clean = torch.nn.functional.mse_loss(torch.from_numpy(net.predict(x[:100])), torch.from_numpy(x[:100]))
    assert np.isclose(vm["err"], clean.item(), rtol=1e-4)


def test_validation_split_and_validate_every(x):
    net = aekit.Autoencoder([64, 8, 64])
    history = list(net.itertrain(x, valid_split=0.2, validate_every=2, max_epochs=4))
    assert history[0][1] == {} and "loss" in history[1][1]
    net2 = aekit.Autoencoder([64, 8, 64])
    assert all(vm == {} for _, vm in net2.itertrain(x, validate_every=0, max_epochs=3))
    assert len(net2.history) == 3


def test_max_updates_is_an_alias(x):
    net = aekit.Autoencoder([64, 8, 64])
    assert len(list(net.itertrain(x, max_updates=2, validate_every=0))) == 2


def test_global_gradient_clipping(x):
    net = aekit.Autoencoder([64, (16, "relu"), 64])
    before = [p.detach().clone() for p in net.params]
    net.train(
        x[:64],
        algo="sgd",
        learning_rate=1.0,
        momentum=0.0,
        batch_size=64,
        max_epochs=1,
        max_gradient_norm=0.01,
        shuffle=False,
        validate_every=0,
    )
    step = torch.cat([(p.detach() - b).flatten() for p, b in zip(net.params, before)])
    assert step.norm().item() == pytest.approx(0.01, rel=1e-3)


def test_custom_monitors(x):
    net = aekit.Autoencoder([64, (16, "sigmoid"), 64])
    _, vm = net.train(
        x,
        valid=x[:50],
        max_epochs=1,
        monitors={"hid1:out": (0.1, 0.9), "code_mean": lambda outs, xb: outs["hid1:out"].mean()},
    )
    codes = net.encode(x[:50])
    # The fraction of the layer's values below each threshold, after the epoch.
    assert vm["hid1:out<0.1"] == pytest.approx((codes < 0.1).mean(), abs=1e-6)
    assert vm["hid1:out<0.9"] == pytest.approx((codes < 0.9).mean(), abs=1e-6)
    assert np.isclose(vm["code_mean"], codes.mean(), rtol=1e-4)


def test_layerwise_pretraining(x):
    net = aekit.Autoencoder([64, (32, "relu"), (8, "relu"), (32, "tied"), (64, "tied")])
    before = net.loss(x).item()
    w_before = net.find("hid1", "w").detach().clone()
    stages = iter(net.itertrain(x, algo="layerwise", max_epochs=3, validate_every=0))
    first_stage = []
    for _ in range(3):  # depth 1: in -> hid1 -> out
        first_stage.append(next(stages))
        assert net.training_stage == "hid1"
    assert not torch.equal(net.find("hid1", "w"), w_before)
    assert torch.equal(net.find("hid2", "w"), aekit.Autoencoder(net.specs).find("hid2", "w"))
    rest = [net.training_stage for _ in stages]
    assert rest == [None, None, None]  # then the whole model
    assert net.training_stage is None
    assert first_stage[-1][0]["loss"] < first_stage[0][0]["loss"]
    assert net.loss(x).item() < 0.8 * before


def test_batch_norm_leaves_out_a_lone_last_example(x):
    # 33 examples in batches of 32: torch's batch norm cannot normalise the 33rd alone, so the
    # epoch takes one step on 32 and leaves the lone one out, as DataLoader(drop_last=True) would.
    layers = [64, dict(size=16, activation="relu", batch_norm=True), (64, "linear")]
    net, reference = aekit.Autoencoder(layers, rng=4), aekit.Autoencoder(layers, rng=4)
    net.train(x[:33], batch_size=32, max_epochs=1, validate_every=0, shuffle=False)
    reference.train(x[:32], batch_size=32, max_epochs=1, validate_every=0, shuffle=False)
    for got, expected in zip(net.params, reference.params):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    # One example in all is a documented error, and so is a batch of one anywhere else.
    with pytest.raises(DataError, match="batch norm needs training batches of at least 2 examples"):
        net.train(x[:1], max_epochs=1, validate_every=0)
    for call in (lambda: net.train(x[:1], algo="lbfgs", max_epochs=1, validate_every=0), lambda: net.loss(x[:1])):
        with pytest.raises(DataError, match="layer 'hid1' has batch_norm, which needs at least 2 values per unit"):
            call()
    assert net.predict(x[:1]).shape == (1, 64)  # inference uses the running statistics


def test_momentum_is_refused_where_the_algorithm_has_none(x):
    net = aekit.Autoencoder([64, 8, 64])
    for algo in ("adam", "adagrad", "adadelta", "rprop", "lbfgs"):
        with pytest.raises(
            ConfigurationError, match=f"momentum applies to algo 'sgd', 'nag', 'rmsprop', but algo is '{algo}'"
        ):
            net.train(x, algo=algo, momentum=0.5, max_epochs=1)
    net.train(x[:64], algo="nag", momentum=0.5, max_epochs=1, validate_every=0)


def test_valid_and_valid_split_together_are_refused(x):
    with pytest.raises(ConfigurationError, match=r"give valid or valid_split, not both \(valid_split=0.1\)"):
        aekit.Autoencoder([64, 8, 64]).train(x, valid=x[:50], valid_split=0.1, max_epochs=1)


def test_weighted_training(x):
    w = np.ones_like(x)
    w[:, 32:] = 0.0
    net = aekit.Autoencoder([64, (16, "relu"), 64], weighted=True, rng=1)
    w_out, b_out = net.find("out", "w").detach().clone(), net.find("out", "b").detach().clone()
    tm, _ = net.train([x, w], max_epochs=2, validate_every=0)
    # The weighted loss is the mean squared error over the columns of weight 1 only...
    masked_mse = np.mean((net.predict(x)[:, :32] - x[:, :32]) ** 2)
    assert net.loss(x, w).item() == pytest.approx(masked_mse, rel=1e-5)
    # ...so the output units of weight 0 get no gradient, and Adam leaves them where they started,
    # while the others learn.
    torch.testing.assert_close(net.find("out", "w")[:, 32:], w_out[:, 32:], rtol=0, atol=0)
    torch.testing.assert_close(net.find("out", "b")[32:], b_out[32:], rtol=0, atol=0)
    assert not torch.equal(net.find("out", "w")[:, :32], w_out[:, :32])
    assert np.isfinite(tm["loss"])
    with pytest.raises(DataError, match="must be \\[x, w\\]"):
        net.train(x, max_epochs=1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(learning_rat=0.1), "did you mean 'learning_rate'"),
        (dict(hiden_l1=0.1), "did you mean 'hidden_l1'"),
        (dict(algo="adma"), "did you mean 'adam'"),
        (dict(batch_size=0), "batch_size must be an integer >= 1, got 0"),
        (dict(batch_size=2.5), "batch_size must be an integer"),
        (dict(learning_rate=-1.0), "learning_rate must be a number in \\(0.0"),
        (dict(momentum=2.0), "momentum must be a number in \\[0.0, 1.0\\]"),
        (dict(patience=-1), "patience must be an integer >= 0"),
        (dict(valid_split=1.0), "valid_split"),
        (dict(on_nan="ignore"), "on_nan must be"),
        (dict(max_epochs=3, max_updates=3), "not both"),
    ],
)
def test_bad_options_get_the_documented_error(kwargs, message, x):
    net = aekit.Autoencoder([64, 8, 64])
    with pytest.raises(ConfigurationError, match=message):
        net.train(x, **kwargs)
    with pytest.raises(ConfigurationError, match=message):
        net.itertrain(x, **kwargs)  # raised at the call, not at the first next()


def test_theanets_seed_script_runs_with_only_its_import_changed(digits):
    """The theanets README example, with `import theanets` -> `import aekit as theanets`."""
    import aekit as theanets

    data = digits[0]
    net = theanets.Autoencoder([64, 9, 64])
    net.train(data, weight_l2=0.0001, max_updates=5)
    w = net.find("hid1", "w").detach().numpy()
    assert w.shape == (64, 9)


def test_reused_batch_buffer_gives_the_same_batches_as_a_permuted_copy():
    x = torch.arange(46.0).reshape(23, 2)
    w = x * 10
    source = TensorSource(x, w)
    copied = [(xb.clone(), wb.clone()) for xb, wb in source.batches(5, torch.Generator().manual_seed(4))]
    reused = [(xb.clone(), wb.clone()) for xb, wb in source.batches(5, torch.Generator().manual_seed(4), reuse=True)]
    assert [xb.shape[0] for xb, _ in reused] == [5, 5, 5, 5, 3]  # the short last batch too
    for (xa, wa), (xb, wb) in zip(copied, reused):
        assert torch.equal(xa, xb) and torch.equal(wa, wb)
    # The buffer is overwritten: every batch handed out is one and the same storage.
    pointers = {xb.data_ptr() for xb, _ in source.batches(5, torch.Generator().manual_seed(4), reuse=True)}
    assert len(pointers) == 1


@pytest.mark.parametrize("noise", [dict(input_noise=0.2), dict(hidden_dropout=0.3)])
def test_noise_is_reproducible_from_the_model_seed_alone(noise):
    x = np.random.default_rng(1).random((60, 6)).astype(np.float32)

    def trained(global_seed: int) -> np.ndarray:
        torch.manual_seed(global_seed)  # whatever else the process drew must not matter
        net = aekit.Autoencoder([6, (3, "sigmoid"), (6, "sigmoid")], rng=5)
        net.train(x, batch_size=10, max_epochs=2, validate_every=0, **noise)
        return net.predict(x)

    np.testing.assert_array_equal(trained(0), trained(123))
    # ... and training leaves the global generator where the caller put it.
    torch.manual_seed(9)
    state = torch.get_rng_state()
    net = aekit.Autoencoder([6, (3, "sigmoid"), (6, "sigmoid")], rng=5)
    net.train(x, batch_size=10, max_epochs=1, validate_every=0, **noise)
    assert torch.equal(torch.get_rng_state(), state)
