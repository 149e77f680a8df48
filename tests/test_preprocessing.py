"""aekit.preprocessing: scalers, whitening, patches, and steps attached to (and saved with) a model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import aekit
from aekit.errors import ConfigurationError, DataError, ModelFileError
from aekit.preprocessing import (
    MinMaxScaler,
    Pipeline,
    StandardScaler,
    Whitener,
    extract_patches,
    from_config,
    normalize_patches,
    whiten_images,
)


@pytest.fixture
def correlated(rng):
    mixing = rng.normal(size=(12, 12))
    return (rng.normal(size=(3000, 12)) @ mixing + rng.normal(size=12) * 5).astype(np.float32)


def test_minmax_matches_scikit_learn(correlated):
    from sklearn.preprocessing import MinMaxScaler as Reference

    ours = MinMaxScaler().fit_transform(correlated)
    np.testing.assert_allclose(ours, Reference().fit_transform(correlated), atol=1e-5)
    assert ours.dtype == np.float32 and ours.min() == pytest.approx(0) and ours.max() == pytest.approx(1)
    ranged = MinMaxScaler(feature_range=(-1, 1), per_feature=False).fit(correlated)
    out = ranged.transform(correlated)
    assert out.min() == pytest.approx(-1, abs=1e-6) and out.max() == pytest.approx(1, abs=1e-6)
    np.testing.assert_allclose(ranged.inverse_transform(out), correlated, rtol=1e-5, atol=1e-4)


def test_standard_scaler_matches_scikit_learn_and_handles_constants(correlated):
    from sklearn.preprocessing import StandardScaler as Reference

    np.testing.assert_allclose(
        StandardScaler().fit_transform(correlated), Reference().fit_transform(correlated), atol=1e-5
    )
    constant = np.ones((10, 3), np.float32)
    np.testing.assert_array_equal(StandardScaler().fit_transform(constant), np.zeros((10, 3)))
    np.testing.assert_array_equal(MinMaxScaler().fit_transform(constant), np.zeros((10, 3)))


@pytest.mark.parametrize("kind", ["pca", "zca"])
def test_whitened_covariance_is_identity_and_whitening_inverts(correlated, kind):
    x = correlated.astype(np.float64)
    white = Whitener(kind=kind, epsilon=0.0).fit(x)
    z = white.transform(x)
    assert z.dtype == np.float64
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-9)
    np.testing.assert_allclose(np.cov(z, rowvar=False, bias=True), np.eye(12), atol=1e-8)
    np.testing.assert_allclose(white.inverse_transform(z), x, atol=1e-8)
    # float32 in, float32 out, still white within float32 precision.
    z32 = white.transform(correlated)
    assert z32.dtype == np.float32
    np.testing.assert_allclose(np.cov(z32, rowvar=False, bias=True), np.eye(12), atol=1e-3)


def test_zca_is_symmetric_and_pca_matches_scikit_learn(correlated):
    from sklearn.decomposition import PCA

    zca = Whitener("zca", epsilon=0.0).fit(correlated)
    np.testing.assert_allclose(zca.matrix_, zca.matrix_.T, atol=1e-10)
    pca = Whitener("pca", epsilon=0.0, n_components=5).fit(correlated)
    reference = PCA(n_components=5, whiten=True).fit(correlated)
    ours, theirs = pca.transform(correlated), reference.transform(correlated)
    # Same up to the sign of each component and sklearn's n-1 normalisation.
    signs = np.sign((ours * theirs).sum(axis=0))
    n = len(correlated)
    np.testing.assert_allclose(ours * signs * np.sqrt(n / (n - 1)), theirs, atol=2e-3)
    assert pca.transform(correlated).shape == (3000, 5)
    assert pca.inverse_transform(ours).shape == (3000, 12)


def test_epsilon_regularises_and_singular_data_are_refused(rng):
    x = rng.normal(size=(500, 4))
    x = np.hstack([x, x[:, :1]])  # a repeated column: singular covariance
    with pytest.raises(DataError, match="singular.*epsilon > 0"):
        Whitener("zca", epsilon=0.0).fit(x)
    z = Whitener("zca", epsilon=0.1).fit_transform(x)
    assert np.all(np.diag(np.cov(z, rowvar=False, bias=True)) < 1.0)
    with pytest.raises(ConfigurationError, match="unknown whitening kind 'zac'; did you mean 'zca'"):
        Whitener("zac")
    with pytest.raises(ConfigurationError, match="epsilon"):
        Whitener(epsilon=-1)
    with pytest.raises(ConfigurationError, match="not fitted"):
        Whitener().transform(x)


@pytest.mark.parametrize(
    "step",
    [MinMaxScaler(), StandardScaler(), Whitener("pca", n_components=2), Pipeline([StandardScaler(), Whitener("zca")])],
)
def test_edge_shapes_and_dtypes_are_data_errors_or_empty_results(rng, step):
    with pytest.raises(DataError, match=r"x has no features: shape \(3, 0\)"):
        step.fit(np.zeros((3, 0)))
    with pytest.raises(DataError, match="x is empty: it has 0 examples"):
        step.fit(np.zeros((0, 4)))
    if not isinstance(step, MinMaxScaler):  # its minimum and scale stay finite
        with pytest.raises(DataError, match="statistics overflow float64"):
            step.fit(np.array([[1e300, 0.0, 2.0, 1.0], [-1e300, 1.0, 0.0, 3.0], [3.0, 0.5, 3.0, 1.0]]))
    step.fit(rng.normal(size=(50, 4)))
    empty = step.transform(np.zeros((0, 4), dtype=np.float32))  # no examples: nothing to do
    assert empty.shape == (0, step._n_out()) and empty.dtype == np.float32
    assert step.inverse_transform(empty).shape == (0, 4)
    with pytest.raises(DataError, match="x must hold real numbers, got an array of dtype <U1"):
        step.transform(np.array([["a", "b", "c", "d"]]))
    with pytest.raises(DataError, match=r"y has no features: shape \(2, 0\)"):
        step.inverse_transform(np.zeros((2, 0)))


def test_transform_tensor_matches_numpy_and_keeps_image_shape(rng):
    images = rng.random((50, 1, 4, 4)).astype(np.float32)
    step = Pipeline([StandardScaler(), Whitener("zca", 1e-3)]).fit(images)
    flat = step.transform(images.reshape(50, 16))
    tensor = step.transform_tensor(torch.from_numpy(images))
    assert tensor.shape == (50, 1, 4, 4) and tensor.dtype == torch.float32
    np.testing.assert_allclose(tensor.reshape(50, 16).numpy(), flat, atol=1e-4)
    np.testing.assert_allclose(step.inverse_transform(flat), images.reshape(50, 16), atol=1e-4)
    with pytest.raises(DataError, match="expects 16 features, got 15"):
        step.transform(images.reshape(50, 16)[:, :15])


def test_config_and_state_round_trip(correlated):
    for step in (
        MinMaxScaler((0.1, 0.9), per_feature=False),
        StandardScaler(),
        Whitener("pca", 1e-2),
        Pipeline([MinMaxScaler(), Whitener("zca", 1e-2)]),
    ):
        step.fit(correlated)
        again = from_config(step.get_config(), step.state_tensors())
        assert type(again) is type(step) and repr(again) == repr(step)
        np.testing.assert_array_equal(again.transform(correlated), step.transform(correlated))
    with pytest.raises(ConfigurationError, match="unknown preprocessing step 'whitner'; did you mean 'whitener'"):
        from_config({"name": "whitner"}, {})


def test_attached_preprocessing_saves_loads_and_predicts_the_same(tmp_path, digits):
    x = digits[0][:500]
    step = Whitener("zca", epsilon=0.1).fit(x)
    net = aekit.Autoencoder([64, (32, "relu"), (64, "linear")], rng=5)
    net.set_preprocessing(step)
    net.train(x, max_epochs=3, batch_size=50, validate_every=0)
    # predict works in the data's own space: the inverse whitening is applied to the output.
    manual = step.inverse_transform(net.graph(torch.from_numpy(step.transform(x)))["out:out"].detach().numpy())
    np.testing.assert_allclose(net.predict(x), manual, atol=1e-4)
    codes = net.encode(x)
    net.save(tmp_path / "m.aekit")
    loaded = aekit.load(tmp_path / "m.aekit")
    assert isinstance(loaded.preprocessing, Whitener)
    np.testing.assert_array_equal(loaded.predict(x), net.predict(x))
    np.testing.assert_array_equal(loaded.encode(x), codes)
    assert loaded.score(x) == pytest.approx(net.score(x))


def test_attached_pipeline_round_trips(tmp_path, digits):
    x = digits[0][:300]
    net = aekit.Autoencoder([64, (16, "sigmoid"), 64], rng=2)
    net.preprocessing = Pipeline([StandardScaler(), Whitener("pca", 0.1)]).fit(x)
    net.save(tmp_path / "p.aekit")
    loaded = aekit.load(tmp_path / "p.aekit")
    np.testing.assert_array_equal(loaded.predict(x), net.predict(x))


def test_set_preprocessing_checks_the_step(correlated):
    net = aekit.Autoencoder([12, 4, 12])
    with pytest.raises(ConfigurationError, match="not fitted"):
        net.set_preprocessing(StandardScaler())
    with pytest.raises(ConfigurationError, match="maps 12 features to 5, but the model's input has 12"):
        net.set_preprocessing(Whitener("pca", n_components=5).fit(correlated))
    with pytest.raises(ConfigurationError, match="needs transform_tensor"):
        net.set_preprocessing(object())
    net.set_preprocessing(StandardScaler().fit(correlated))
    net.set_preprocessing(None)
    assert net.preprocessing is None


def test_bad_preprocessing_in_a_model_file_is_a_model_file_error(tmp_path, correlated):
    from aekit.saving import model_metadata, model_tensors, write_model_file

    net = aekit.Autoencoder([12, 4, 12])
    net.set_preprocessing(StandardScaler().fit(correlated))
    tensors = {k: v for k, v in model_tensors(net).items() if k != "preprocessing.std_"}
    write_model_file(tmp_path / "bad.aekit", tensors, model_metadata(net))
    with pytest.raises(ModelFileError, match="invalid preprocessing step.*std_"):
        aekit.load(tmp_path / "bad.aekit")


# ------------------------------------------------------------------ patches
def _windows(images, size):
    """Every size x size window of every image, by plain slicing: (image, row, col) and the pixels."""
    where, pixels = [], []
    for m, image in enumerate(images):
        height, width = image.shape[-2:]
        for r in range(height - size + 1):
            for c in range(width - size + 1):
                where.append((m, r, c))
                pixels.append(image[..., r : r + size, c : c + size].ravel())  # (C, size, size) order for colour
    return np.array(where), np.array(pixels, dtype=np.float32)


def _locate(patches, images, size):
    """The (image, row, col) each patch was cut from, found by brute force; asserts there is one."""
    where, pixels = _windows(images, size)
    match = (patches[:, None, :] == pixels[None]).all(axis=2)
    assert match.any(axis=1).all(), f"{np.sum(~match.any(axis=1))} patches are not windows of the images"
    return where[match.argmax(axis=1)]


def test_extract_patches_are_real_windows(rng):
    images = rng.random((3, 20, 30))
    raw = extract_patches(images, size=5, n=600, rng=1, normalize=False)
    assert raw.shape == (600, 25) and raw.dtype == np.float32
    found = _locate(raw, images, 5)
    # Every image and every row and column a window can start at is drawn (no off-by-one at the edges).
    assert set(found[:, 0]) == {0, 1, 2}
    assert set(found[:, 1]) == set(range(16)) and set(found[:, 2]) == set(range(26))
    np.testing.assert_array_equal(extract_patches(images, 5, 200, rng=1), extract_patches(images, 5, 200, rng=1))


def test_colour_patches_are_windows_of_all_channels(rng):
    images = rng.random((2, 3, 10, 10))
    colour = extract_patches(images, size=4, n=200, rng=0, normalize=False)
    assert colour.shape == (200, 48)
    found = _locate(colour, images, 4)  # all three channels of one window, in (C, H, W) order
    assert set(found[:, 0]) == {0, 1}


def test_patches_from_images_of_different_sizes(rng):
    images = [rng.random((10, 12)), rng.random((30, 9))]
    p = extract_patches(images, size=8, n=300, rng=0, normalize=False)
    assert p.shape == (300, 64)
    found = _locate(p, images, 8)
    assert set(found[:, 0]) == {0, 1}
    # The two images are drawn about equally often, whatever their number of windows (15 and 46).
    assert 0.4 < np.mean(found[:, 0] == 0) < 0.6
    # and mixed: not all patches of one image first
    assert 0 < np.mean(found[:150, 0] == 0) < 1
    assert extract_patches(images, size=8, n=50, rng=0).shape == (50, 64)


def test_ufldl_normalisation(rng):
    images = rng.normal(size=(4, 32, 32)) ** 3  # heavy tails, so truncation matters
    p = extract_patches(images, size=8, n=2000, rng=0)
    assert p.shape == (2000, 64)
    assert p.min() >= 0.1 - 1e-6 and p.max() <= 0.9 + 1e-6
    # Reference: UFLDL's sampleIMAGES normalisation written out directly.
    raw = extract_patches(images, size=8, n=2000, rng=0, normalize=False).astype(np.float64)
    centred = raw - raw.mean(axis=1, keepdims=True)
    pstd = 3 * centred.std()
    reference = (np.maximum(np.minimum(centred, pstd), -pstd) / pstd + 1) * 0.4 + 0.1
    np.testing.assert_allclose(p, reference, atol=1e-5)
    np.testing.assert_allclose(normalize_patches(raw), reference, atol=1e-12)
    with pytest.raises(DataError, match="do not fit"):
        extract_patches(images, size=40, n=1)


def test_whiten_images_flattens_the_spectrum(rng):
    # 1/f noise: a natural-image-like spectrum.
    size = 64
    f = np.sqrt(np.fft.fftfreq(size)[:, None] ** 2 + np.fft.fftfreq(size)[None, :] ** 2)
    f[0, 0] = 1
    image = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(size, size))) / f))
    white = whiten_images(image)[0]
    assert white.shape == (size, size) and white.var() == pytest.approx(0.1, rel=1e-3)

    def band_ratio(a):
        # Power at low spatial frequencies (2-4 cycles) over mid frequencies (8-16 cycles).
        power = np.abs(np.fft.fft2(a)) ** 2
        radius = np.sqrt(np.fft.fftfreq(size)[:, None] ** 2 + np.fft.fftfreq(size)[None, :] ** 2) * size
        return power[(radius >= 2) & (radius < 4)].mean() / power[(radius >= 8) & (radius < 16)].mean()

    assert band_ratio(image) > 5  # 1/f^2 power
    assert 0.5 < band_ratio(white) < 2  # flat


def test_steps_follow_the_scikit_learn_estimator_api():
    # clone, sklearn's Pipeline and set_params (GridSearchCV's calls) work on every step, and a
    # clone fits to exactly what the original fits to.
    from sklearn.base import clone
    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline

    x = np.random.default_rng(0).random((50, 6))
    steps = [
        Whitener(kind="pca", epsilon=0.1),
        MinMaxScaler((0.0, 2.0)),
        StandardScaler(per_feature=False),
        Pipeline([StandardScaler(), Whitener()]),
    ]
    for step in steps:
        copy = clone(step)
        assert copy is not step and copy.get_params().keys() == step.get_params().keys()
        np.testing.assert_array_equal(copy.fit_transform(x), step.fit_transform(x))
    pipe = make_pipeline(Whitener(kind="pca"), PCA(2))
    np.testing.assert_allclose(pipe.fit_transform(x), PCA(2).fit_transform(Whitener(kind="pca").fit_transform(x)))
    pipe.set_params(whitener__epsilon=0.5)
    assert pipe[0].epsilon == 0.5
    whitener = Whitener().fit(x)
    assert whitener.set_params(epsilon=0.5) is whitener and not whitener.fitted  # must be fitted again
    with pytest.raises(ConfigurationError, match="unknown parameter of Whitener 'epsilom'; did you mean 'epsilon'"):
        whitener.set_params(epsilom=1.0)
    with pytest.raises(ConfigurationError, match="unknown whitening kind 'xyz'"):
        whitener.set_params(kind="xyz")
    assert whitener.kind == "zca" and whitener.epsilon == 0.5  # a refused change changes nothing
    scaler = MinMaxScaler((0.0, 2.0)).fit(x)
    with pytest.raises(ConfigurationError, match="feature_range must be"):
        scaler.set_params(feature_range=(3.0, 1.0))
    assert scaler.feature_range == (0.0, 2.0) and scaler.fitted
