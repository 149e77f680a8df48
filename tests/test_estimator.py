"""scikit-learn adapters: estimator checks, a digits pipeline, PCA reference, outlier detection."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import aekit  # noqa: E402
from aekit import AutoencoderOutlierDetector, AutoencoderTransformer  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny models and solvers: on a busy 2-core machine, threads that wait on each other spin
    # (torch and OpenBLAS both ran ~50x slower with 2 threads than with 1 here).
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(before)


@parametrize_with_checks(
    [
        AutoencoderTransformer(hidden=(4,), max_epochs=3),
        AutoencoderTransformer(hidden=(6, 3), tied=True, activation="tanh", max_epochs=2),
        AutoencoderOutlierDetector(max_epochs=3),
    ]
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_exported_from_package():
    assert "AutoencoderTransformer" in aekit.__all__
    assert "AutoencoderOutlierDetector" in aekit.__all__
    assert aekit.AutoencoderTransformer is AutoencoderTransformer


def test_network_is_built_from_the_data(digits):
    x, _ = digits
    ae = AutoencoderTransformer(
        hidden=(32, 8), tied=True, output_activation="sigmoid", max_epochs=2, random_state=0
    ).fit(x)
    sizes = [layer.output_shape[0] for layer in ae.net_.layers]
    assert sizes == [64, 32, 8, 32, 64]
    assert [layer.spec.form for layer in ae.net_.layers[3:]] == ["tied", "tied"]
    assert ae.net_.layers[-1].spec.activation == "sigmoid"
    assert ae.n_features_in_ == 64 and ae.n_iter_ == len(ae.history_) == 2
    assert ae.transform(x).shape == (len(x), 8)
    assert list(ae.get_feature_names_out()) == [f"autoencodertransformer{i}" for i in range(8)]
    # transform + inverse_transform is the network's reconstruction; score is its R^2.
    np.testing.assert_allclose(ae.inverse_transform(ae.transform(x)), ae.net_.predict(x), rtol=1e-5, atol=1e-6)
    assert ae.score(x) == pytest.approx(ae.net_.score(x))
    # Another layer through the `layer` parameter.
    assert ae.set_params(layer="hid1").transform(x).shape == (len(x), 32)


def test_linear_autoencoder_reaches_pca(digits):
    """A linear autoencoder's best reconstruction is PCA's (Baldi & Hornik 1989)."""
    x, _ = digits
    k = 6
    pca = PCA(n_components=k).fit(x)
    pca_r2 = pca.explained_variance_ratio_.sum()
    ae = AutoencoderTransformer(
        hidden=(k,),
        activation="linear",
        tied=True,
        algo="adam",
        learning_rate=1e-2,
        batch_size=128,
        max_epochs=150,
        patience=10,
        random_state=0,
    ).fit(x)
    r2 = ae.score(x)
    assert r2 <= pca_r2 + 1e-3  # nothing linear beats PCA
    assert r2 >= pca_r2 - 0.02, (r2, pca_r2)


def test_fit_is_repeatable_and_random_state_matters(digits):
    x = digits[0][:300]
    a = AutoencoderTransformer(hidden=(5,), max_epochs=3, random_state=1).fit(x).transform(x)
    b = AutoencoderTransformer(hidden=(5,), max_epochs=3, random_state=1).fit(x).transform(x)
    c = AutoencoderTransformer(hidden=(5,), max_epochs=3, random_state=2).fit(x).transform(x)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_hidden_sizes_as_an_array_build_the_same_network(digits):
    # scikit-learn's MLPs take any array-like of sizes; a 1-D integer array is one.
    x = digits[0][:200]
    from_tuple = AutoencoderTransformer(hidden=(8, 4), max_epochs=2, random_state=0).fit(x)
    from_array = AutoencoderTransformer(hidden=np.array([8, 4]), max_epochs=2, random_state=0).fit(x)
    assert [layer.n_out for layer in from_array.net_.layers[1:]] == [8, 4, 8, 64]
    np.testing.assert_array_equal(from_array.transform(x), from_tuple.transform(x))


def test_pickle_holds_arrays_not_torch_objects(digits):
    x = digits[0][:200]
    ae = AutoencoderTransformer(hidden=(7,), max_epochs=2, random_state=0).fit(x)
    state = ae.__getstate__()
    assert set(state["net_"]) == {"tensors", "meta"}
    assert all(isinstance(v, np.ndarray) for v in state["net_"]["tensors"].values())
    raw = pickle.dumps(ae)
    assert b"torch" not in raw
    back = pickle.loads(raw)
    np.testing.assert_array_equal(back.transform(x), ae.transform(x))
    assert back.history_ == ae.history_
    # clone gives an unfitted copy with the same parameters.
    fresh = clone(ae)
    assert not hasattr(fresh, "net_") and fresh.get_params() == ae.get_params()


def test_bad_parameters_raise_value_errors(digits):
    x = digits[0][:50]
    with pytest.raises(ValueError, match="hidden must be"):
        AutoencoderTransformer(hidden=(0,)).fit(x)
    with pytest.raises(ValueError, match="hidden must be"):
        AutoencoderTransformer(hidden="64").fit(x)
    with pytest.raises(aekit.ConfigurationError, match="did you mean 'relu'"):
        AutoencoderTransformer(activation="rleu", max_epochs=1).fit(x)
    with pytest.raises(aekit.ConfigurationError, match="did you mean 'adam'"):
        AutoencoderTransformer(algo="adamm", max_epochs=1).fit(x)
    with pytest.raises(ValueError, match="contamination"):
        AutoencoderOutlierDetector(contamination=0.7).fit(x)
    ae = AutoencoderTransformer(hidden=(3,), max_epochs=1).fit(x)
    with pytest.raises(ValueError, match="63 features"):
        ae.transform(x[:, :63])
    # inverse_transform names the mismatch as transform does.
    with pytest.raises(
        ValueError,
        match=r"X has 4 features, but AutoencoderTransformer.inverse_transform is "
        r"expecting 3 features",
    ):
        ae.inverse_transform(np.zeros((2, 4)))


def test_one_sample_with_valid_split_follows_sklearn_convention():
    """scikit-learn's check_fit2d_1sample wants a ValueError naming the one sample, whatever the parameters."""
    from sklearn.utils.estimator_checks import check_fit2d_1sample

    for est in (
        AutoencoderTransformer(hidden=(2,), valid_split=0.2, max_epochs=2),
        AutoencoderOutlierDetector(valid_split=0.3, max_epochs=2),
    ):
        check_fit2d_1sample(type(est).__name__, est)
        with pytest.raises(ValueError, match="n_samples=1"):
            clone(est).fit(np.ones((1, 5)))
    # Two samples are enough to split.
    assert AutoencoderTransformer(hidden=(2,), valid_split=0.5, max_epochs=2).fit(np.eye(2)).n_iter_ == 2


def test_values_beyond_float32_are_named_as_such():
    """Finite float64 data that overflow the network's float32: no 'NaN or infinite' error, no overflow warning."""
    x = np.random.default_rng(0).random((40, 4))
    big = x.copy()
    big[3, 2] = 1e39
    fitted = AutoencoderOutlierDetector(standardize=False, max_epochs=1, random_state=0).fit(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        for call in (
            lambda: AutoencoderTransformer(hidden=(2,), max_epochs=1).fit(big),
            lambda: AutoencoderOutlierDetector(standardize=False, max_epochs=1).fit(big),
            lambda: fitted.predict(big),
        ):
            with pytest.raises(ValueError, match=r"too large for float32 \(first at row 3, column 2: 1e\+39\)"):
                call()


def test_pipeline_classifies_digits_well_above_chance(digits):
    """Codes of an autoencoder feed a logistic regression (MNIST subset when present)."""
    from pathlib import Path

    mnist_dir = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
    if (mnist_dir / "train-images-idx3-ubyte.gz").exists():
        # A subset keeps it fast.
        x_all = aekit.load_data(mnist_dir / "train-images-idx3-ubyte.gz").reshape(-1, 784)[:2400]
        y_all = aekit.load_data(mnist_dir / "train-labels-idx1-ubyte.gz")[:2400]
    else:
        x_all, y_all = digits
    n_train = len(x_all) * 2 // 3
    pipe = make_pipeline(
        AutoencoderTransformer(hidden=(64,), max_epochs=10, random_state=0),
        LogisticRegression(max_iter=500),
    )
    pipe.fit(x_all[:n_train], y_all[:n_train])
    accuracy = pipe.score(x_all[n_train:], y_all[n_train:])
    assert accuracy > 0.85, accuracy  # chance is 0.1


def test_grid_search_over_code_size(digits):
    x, y = digits[0][:600], digits[1][:600]
    pipe = make_pipeline(AutoencoderTransformer(max_epochs=3, random_state=0), LogisticRegression(max_iter=200))
    search = GridSearchCV(pipe, {"autoencodertransformer__hidden": [(4,), (16,)]}, cv=2).fit(x, y)
    # The search scores exactly what cross-validating each pipeline by hand scores (the estimator
    # clones and refits reproducibly), and 16 codes classify digits better than 4.
    for hidden, score in zip([(4,), (16,)], search.cv_results_["mean_test_score"]):
        by_hand = cross_val_score(clone(pipe).set_params(autoencodertransformer__hidden=hidden), x, y, cv=2)
        assert score == pytest.approx(by_hand.mean(), abs=1e-12)
    assert search.best_params_["autoencodertransformer__hidden"] == (16,)
    assert search.cv_results_["mean_test_score"][1] > search.cv_results_["mean_test_score"][0] + 0.05


def _subspace_data(rng, n=600, d=20, k=3, n_out=30):
    """Inliers on a k-dimensional plane plus small noise; outliers scattered off it."""
    basis = np.linalg.qr(rng.normal(size=(d, k)))[0]
    inliers = rng.normal(size=(n, k)) @ basis.T + 0.05 * rng.normal(size=(n, d))
    outliers = rng.normal(size=(n_out, d)) * inliers.std()
    return inliers.astype(np.float32), outliers.astype(np.float32)


def test_outlier_detector_finds_points_off_the_data_plane(rng):
    inliers, outliers = _subspace_data(rng)
    det = AutoencoderOutlierDetector(
        hidden=(3,),
        activation="linear",
        contamination=0.05,
        learning_rate=1e-2,
        max_epochs=60,
        patience=10,
        random_state=0,
    ).fit(inliers)
    test = np.vstack([inliers[:200], outliers])
    truth = np.r_[np.zeros(200), np.ones(len(outliers))]
    errors = det.reconstruction_error(test)
    assert roc_auc_score(truth, errors) > 0.95
    assert (det.predict(outliers) == -1).mean() > 0.9
    assert (det.predict(inliers) == 1).mean() >= 0.9


def test_outlier_score_conventions(rng):
    x = np.vstack(_subspace_data(rng, n=300, n_out=20))
    det = AutoencoderOutlierDetector(contamination=0.1, max_epochs=5, random_state=0).fit(x)
    errors = det.reconstruction_error(x)
    np.testing.assert_allclose(errors, det.decision_scores_)
    np.testing.assert_allclose(det.score_samples(x), -errors)  # higher = more normal
    np.testing.assert_allclose(det.decision_function(x), det.threshold_ - errors)  # negative = outlier
    assert det.offset_ == -det.threshold_
    pred = det.predict(x)
    np.testing.assert_array_equal(pred == -1, errors > det.threshold_)
    np.testing.assert_array_equal(det.labels_, (pred == -1).astype(int))
    assert (pred == -1).sum() == round(0.1 * len(x))
    np.testing.assert_array_equal(det.fit_predict(x), pred)  # same random_state, same model
    # Standardisation: errors do not depend on the units of a feature.
    scaled = x.copy()
    scaled[:, 0] *= 1000.0
    det2 = clone(det).fit(scaled)
    np.testing.assert_allclose(det2.reconstruction_error(scaled), errors, rtol=1e-3, atol=1e-5)
