"""theanets' data forms: ``[x]`` (and ``[x, w]`` for weighted models) mean what the plain arrays mean.

theanets passes data sets as lists of arrays (``net.train([inputs])``, ``net.predict([x])``), and its
Autoencoder reference runs here with only its import changed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import aekit
from aekit.errors import DataError

LAYERS = [10, (3, "linear"), (10, "tied")]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    # Rank-3 data plus a little noise, so that a 3-unit linear code explains most of it.
    basis = rng.standard_normal((3, 10))
    x = (rng.standard_normal((300, 3)) @ basis + 0.05 * rng.standard_normal((300, 10))).astype("float32")
    xv = (rng.standard_normal((60, 3)) @ basis + 0.05 * rng.standard_normal((60, 10))).astype("float32")
    return x, xv


def _state(net):
    return {k: v.detach().clone() for k, v in net.state_tensors().items()}


def _assert_same_parameters(a, b):
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys()
    for key in sa:
        np.testing.assert_array_equal(sa[key].numpy(), sb[key].numpy(), err_msg=key)


def test_train_with_list_forms_equals_the_plain_arrays_bit_for_bit(data):
    x, xv = data
    options = dict(hidden_l1=0.1, max_epochs=4, batch_size=32)
    listed, plain = aekit.Autoencoder(LAYERS, rng=5), aekit.Autoencoder(LAYERS, rng=5)
    listed_mon = listed.train([x], [xv], **options)
    plain_mon = plain.train(x, xv, **options)
    assert listed_mon == plain_mon
    _assert_same_parameters(listed, plain)
    assert listed.history == plain.history
    # The keyword form of valid, and a tuple, too.
    keyword = aekit.Autoencoder(LAYERS, rng=5)
    keyword.train((x,), valid=(xv,), **options)
    _assert_same_parameters(keyword, plain)


def test_itertrain_with_list_forms_equals_the_plain_arrays(data):
    x, xv = data
    listed = list(aekit.Autoencoder(LAYERS, rng=2).itertrain([x], [xv], max_epochs=3))
    plain = list(aekit.Autoencoder(LAYERS, rng=2).itertrain(x, xv, max_epochs=3))
    assert listed == plain and len(plain) == 3


def test_inference_with_list_forms_equals_the_plain_arrays_bit_for_bit(data):
    x, _ = data
    net = aekit.Autoencoder(LAYERS, rng=1)
    net.train(x, max_epochs=2)
    np.testing.assert_array_equal(net.predict([x]), net.predict(x))
    np.testing.assert_array_equal(net.encode([x]), net.encode(x))
    codes = net.encode(x)
    np.testing.assert_array_equal(net.decode([codes]), net.decode(codes))
    listed, plain = net.feed_forward([x]), net.feed_forward(x)
    assert listed.keys() == plain.keys()
    for key in plain:
        np.testing.assert_array_equal(listed[key], plain[key], err_msg=key)
    assert net.score([x]) == net.score(x)
    assert torch.equal(net.loss([x], hidden_l1=0.1), net.loss(x, hidden_l1=0.1))
    # A tensor and a memory-mapped array in a list, too (the memmap is still streamed).
    np.testing.assert_array_equal(net.predict([torch.from_numpy(x)]), net.predict(x))


def test_a_memmap_in_a_list_streams(data, tmp_path):
    x, _ = data
    net = aekit.Autoencoder(LAYERS, rng=1)
    path = tmp_path / "x.npy"
    np.save(path, x)
    mapped = np.load(path, mmap_mode="r")
    np.testing.assert_array_equal(net.predict([mapped]), net.predict(x))
    assert net.score([mapped]) == pytest.approx(net.score(x), abs=1e-12)
    listed, plain = aekit.Autoencoder(LAYERS, rng=4), aekit.Autoencoder(LAYERS, rng=4)
    listed.train([mapped], max_epochs=2)
    plain.train(mapped, max_epochs=2)
    _assert_same_parameters(listed, plain)


def test_weighted_models_take_x_w_for_training_validation_and_scoring(data):
    x, xv = data
    rng = np.random.default_rng(3)
    w = (rng.random(x.shape) > 0.3).astype("float32")
    wv = (rng.random(xv.shape) > 0.3).astype("float32")
    listed, pair = aekit.Autoencoder(LAYERS, weighted=True, rng=6), aekit.Autoencoder(LAYERS, weighted=True, rng=6)
    listed_mon = listed.train([x, w], valid=[xv, wv], max_epochs=3)
    pair_mon = pair.train((x, w), (xv, wv), max_epochs=3)
    assert listed_mon == pair_mon
    _assert_same_parameters(listed, pair)
    # The validation monitors read the validation weights: the weighted score of the validation data.
    assert listed.score([xv, wv]) == listed.score(xv, w=wv)
    assert listed.score([xv, wv]) != listed.score(xv)
    assert torch.equal(listed.loss([x, w]), listed.loss(x, w=w))
    # Inference takes the data alone (the weights are for training, score and loss).
    np.testing.assert_array_equal(listed.predict([x]), listed.predict(x))
    with pytest.raises(DataError, match=r"^x is a pair of arrays, as \[x, w\]; this call takes x alone \(or \[x\]\)$"):
        listed.predict([x, w])
    with pytest.raises(DataError, match=r"^valid must be \[x, w\] for a weighted Autoencoder, got \[x\] without w$"):
        listed.train([x, w], valid=[xv], max_epochs=1)
    with pytest.raises(DataError, match=r"^x must be \[x, w\] for a weighted Autoencoder, got ndarray$"):
        listed.train(x, max_epochs=1)


def test_unit_weights_train_as_the_unweighted_model(data):
    x, xv = data
    weighted = aekit.Autoencoder(LAYERS, weighted=True, rng=8)
    weighted.train([x, np.ones_like(x)], [xv, np.ones_like(xv)], max_epochs=3)
    plain = aekit.Autoencoder(LAYERS, rng=8)
    plain.train([x], [xv], max_epochs=3)
    np.testing.assert_allclose(weighted.predict(x), plain.predict(x), rtol=1e-4, atol=1e-5)


def test_lists_of_numbers_rows_and_examples_are_still_data(data):
    x, _ = data
    net = aekit.Autoencoder(LAYERS, rng=1)
    row = [float(v) for v in x[0]]
    np.testing.assert_array_equal(net.predict([row]), net.predict(x[:1]))  # a list of one row
    rows = [[float(v) for v in r] for r in x[:4]]
    np.testing.assert_array_equal(net.predict(rows), net.predict(x[:4]))  # a list of rows
    np.testing.assert_array_equal(net.predict([x[0], x[1]]), net.predict(x[:2]))  # a list of 1-D rows
    with pytest.raises(DataError, match=r"^x must be 2-D \(examples, features\), got 1-D shape \(10,\)$"):
        net.predict(row)  # a plain list of numbers is one 1-D array, as before
    # For an image model, a list of one image (or of images) is a list of examples.
    images = np.random.default_rng(0).random((3, 3, 4, 4)).astype("float32")
    conv = aekit.Autoencoder([(3, 4, 4), (5, "relu"), (48, "sigmoid")], rng=0)
    np.testing.assert_array_equal(conv.predict([images[0]]), conv.predict(images[:1]))
    np.testing.assert_array_equal(conv.predict([images[0], images[1]]), conv.predict(images[:2]))
    np.testing.assert_array_equal(conv.predict([images]), conv.predict(images))
    gray = aekit.Autoencoder([(1, 4, 4), (5, "relu"), (16, "sigmoid")], rng=0)
    np.testing.assert_array_equal(gray.predict([images[0, 0]]), gray.predict(images[:1, :1]))
    np.testing.assert_array_equal(gray.predict([images[:, 0]]), gray.predict(images[:, :1]))


def test_wrong_shapes_in_list_forms_name_the_argument_in_one_line(data):
    x, xv = data
    net = aekit.Autoencoder(LAYERS, rng=1)
    with pytest.raises(DataError, match=r"^x has 5 features, but this Autoencoder expects 10 \(layer 'in'\)$"):
        net.predict([x[:, :5]])
    with pytest.raises(DataError, match=r"^valid has 4 features, but this Autoencoder expects 10 \(layer 'in'\)$"):
        net.train([x], [xv[:, :4]], max_epochs=1)
    with pytest.raises(DataError, match=r"^z has 2 features, but this Autoencoder expects 3 \(layer 'hid1'\)$"):
        net.decode([np.zeros((4, 2), "float32")])
    with pytest.raises(DataError, match=r"^x is a pair of arrays, as \[x, w\] for a weighted Autoencoder, but "):
        net.score([x, x])
    # The message of old, which counted every value of the list as features, is gone.
    net.train([x], max_epochs=1)
    assert net.predict([x]).shape == x.shape


@pytest.mark.slow
def test_the_theanets_autoencoder_reference_runs_with_only_its_import_changed(capsys):
    # theanets.feedforward.Autoencoder's documented examples (theanets 0.7), verbatim but for the import.
    import aekit as theanets

    model = theanets.Autoencoder([10, 20, 10])
    model = theanets.Autoencoder([10, 20, (10, "tied")])
    inputs = np.random.randn(1000, 10).astype("f")
    model.train([inputs])
    test = np.random.randn(3, 10).astype("f")
    print(model.predict(test))
    enc = model.encode(test)
    assert enc.shape == (3, 20)
    model.decode(enc)
    pca = theanets.Autoencoder([10, (5, "linear"), (10, "tied")])
    ica = pca
    ica.train([inputs], hidden_l1=0.1)
    assert "[[" in capsys.readouterr().out


def test_a_tied_linear_autoencoder_with_list_forms_finds_the_principal_subspace(data):
    # PCA as a tied linear autoencoder, called as in theanets: train/predict/encode/score on [inputs].
    import aekit as theanets

    inputs, _ = data
    net = theanets.Autoencoder([10, (3, "linear"), (10, "tied")])
    net.train([inputs], max_epochs=300, patience=20, learning_rate=1e-2)
    recon = net.predict([inputs])
    codes = net.encode([inputs])
    np.testing.assert_array_equal(net.decode(codes), recon)
    assert codes.shape == (300, 3) and recon.shape == inputs.shape
    # The independent reference: the best rank-3 reconstruction (PCA through the mean) explains
    # a known share of the variance; the autoencoder (with its biases) gets close to it.
    centred = inputs - inputs.mean(axis=0)
    singular = np.linalg.svd(centred.astype(np.float64), compute_uv=False)
    pca_r2 = float((singular[:3] ** 2).sum() / (singular**2).sum())
    assert pca_r2 > 0.99
    assert net.score([inputs]) == net.score(inputs)
    assert net.score([inputs]) > pca_r2 - 0.01
