"""scikit-learn adapters: an autoencoder as a transformer and as an outlier detector.

Both follow scikit-learn's conventions: ``__init__`` only stores its arguments,
everything learnt in :meth:`fit` ends in ``_`` (``net_``, ``n_features_in_``,
``history_``, ``n_iter_``), inputs are checked with scikit-learn's own
validation, and ``random_state`` seeds both the initial weights and the batch
shuffles.  They can sit in a :class:`~sklearn.pipeline.Pipeline`, be cloned,
grid-searched and pickled -- pickling stores the network as plain arrays plus
its JSON config, never a pickled torch object.

The network is built from the data: ``hidden=(64, 16)`` with 784 input
features gives ``[784, 64, 16, 64, 784]`` -- the decoder mirrors the encoder,
with tied weights when ``tied=True``.  The fitted :class:`aekit.Autoencoder` is
``est.net_`` (save it with ``est.net_.save(path)``).
"""

from __future__ import annotations

import json
import logging
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, OutlierMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array, check_is_fitted

from .autoencoder import Autoencoder
from .data.validation import as_float32
from .errors import ConfigurationError, DataError
from .objective.penalties import REGULARIZER_KEYS, SAE_KEYS

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - older scikit-learn

    def _validate_data(estimator, X, **kwargs):
        return estimator._validate_data(X, **kwargs)


__all__ = ["AutoencoderOutlierDetector", "AutoencoderTransformer"]

log = logging.getLogger(__name__)

# Every training keyword the estimators forward to Autoencoder.train, by parameter name.
_TRAIN_PARAMS = (
    "algo",
    "learning_rate",
    "batch_size",
    "max_epochs",
    "patience",
    "min_improvement",
    "valid_split",
    "max_gradient_norm",
    # every penalty and noise keyword is an estimator parameter of the same name (but those of SAE layers)
    *(key for key in REGULARIZER_KEYS if key not in SAE_KEYS),
)


def _check_params(est: BaseEstimator) -> None:
    """The one place that writes parameter errors (the rest is checked by aekit itself)."""
    hidden = est.hidden
    if hidden is not None:
        if isinstance(hidden, numbers.Integral):
            hidden = (hidden,)
        if isinstance(hidden, np.ndarray) and hidden.ndim == 1:  # array-likes, as MLPRegressor takes them
            hidden = hidden.tolist()
        if (
            not isinstance(hidden, Sequence)
            or isinstance(hidden, str)
            or not hidden
            or not all(isinstance(h, numbers.Integral) and not isinstance(h, bool) and int(h) > 0 for h in hidden)
        ):
            raise ConfigurationError(
                f"hidden must be a non-empty sequence of positive layer sizes, e.g. (64,), got {est.hidden!r}"
            )
    if not isinstance(est.tied, (bool, np.bool_)):
        raise ConfigurationError(f"tied must be True or False, got {est.tied!r}")
    if not isinstance(est.variational, (bool, np.bool_)):
        raise ConfigurationError(f"variational must be True or False, got {est.variational!r}")


def _hidden_sizes(est: BaseEstimator, n_features: int) -> list[int]:
    hidden = est.hidden
    if hidden is None:  # a bottleneck of half the input, at least one unit
        return [max(1, n_features // 2)]
    if isinstance(hidden, numbers.Integral):
        return [int(hidden)]
    return [int(h) for h in hidden]


def _layers(est: BaseEstimator, n_features: int) -> list[Any]:
    """``[n, h1, ..., hk, ..., h1, n]`` with mirrored (optionally tied) decoder layers."""
    sizes = _hidden_sizes(est, n_features)
    encoder: list[Any] = [(size, est.activation) for size in sizes]
    if est.variational:  # the code is a Gaussian latent: transform gives its posterior means
        encoder[-1] = dict(form="gaussian", size=sizes[-1], name="code")
    decoder_sizes = list(reversed(sizes[:-1])) + [n_features]
    decoder = []
    for index, size in enumerate(decoder_sizes):
        activation = est.output_activation if index == len(decoder_sizes) - 1 else est.activation
        decoder.append((size, "tied", activation) if est.tied else (size, activation))
    return [n_features, *encoder, *decoder]


def _writable(X: np.ndarray) -> np.ndarray:
    # torch warns on read-only arrays (e.g. memory maps); a copy is what it would make anyway.
    return X if X.flags.writeable else X.copy()


def _float32(X: np.ndarray) -> np.ndarray:
    """Checked, finite ``X`` as the network's float32, writable; values beyond float32's range are an error."""
    return _writable(as_float32("X", X))


def _seed(random_state: Any) -> int:
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


def _fit_network(est: BaseEstimator, X: np.ndarray) -> Autoencoder:
    """Build and train the network of ``est`` on checked data ``X`` (n, features)."""
    _check_params(est)
    net = Autoencoder(
        _layers(est, X.shape[1]),
        loss=est.loss,
        rng=_seed(est.random_state),
        hidden_activation=est.activation,
        output_activation=est.output_activation,
        device=est.device,
    )
    options = {key: getattr(est, key) for key in _TRAIN_PARAMS}
    # None means "the default" except for patience, where None turns early stopping off (as in train()).
    options = {k: v for k, v in options.items() if v is not None or k == "patience"}
    split = options.get("valid_split")
    if isinstance(split, numbers.Real) and float(split) > 0 and X.shape[0] < 2:
        # scikit-learn's convention (check_fit2d_1sample): say that one sample is the problem.
        raise DataError(
            f"valid_split={split} needs at least 2 examples (one to train on, one to validate), "
            f"got n_samples={X.shape[0]}"
        )
    log.info("fitting %r on %d examples", net, X.shape[0])
    net.train(_float32(X), **options)
    return net


# ---------------------------------------------------------------------- pickling
def _net_state(net: Autoencoder) -> dict[str, Any]:
    """A pickle-safe description of ``net``: NumPy arrays and JSON-ready values only."""
    tensors = {k: v.detach().cpu().numpy().copy() for k, v in net.state_tensors().items()}
    return {"tensors": tensors, "meta": json.loads(json.dumps(net.file_metadata()))}


def _net_from_state(state: dict[str, Any], device: Any) -> Autoencoder:
    from .autoencoder import resolve_device

    tensors = {k: torch.from_numpy(np.asarray(v).copy()) for k, v in state["tensors"].items()}
    net = Autoencoder.from_file_contents(tensors, state["meta"], "<pickled estimator>")
    try:
        target = resolve_device(device)
        net.graph.to(target)
        net.device = target
    except (ConfigurationError, RuntimeError, AssertionError):
        log.warning("device %r is not available here; the unpickled network stays on the CPU", device)
    return net


class _NetworkEstimator(BaseEstimator):
    """Shared fitting, pickling and tag logic; subclasses declare the parameters."""

    def _fit_net(self, X: Any) -> np.ndarray:
        X = _validate_data(self, X, reset=True, dtype=[np.float32, np.float64], ensure_min_samples=1)
        self.net_ = _fit_network(self, X)
        self.history_ = [dict(entry) for entry in self.net_.history]
        self.n_iter_ = len(self.history_)
        return X

    def _check_X(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "net_")
        return _writable(_validate_data(self, X, reset=False, dtype=[np.float32, np.float64]))

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        if "net_" in state:
            state = dict(state)
            state["net_"] = _net_state(state["net_"])
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state.get("net_"), dict):
            state = dict(state)
            state["net_"] = _net_from_state(state["net_"], state.get("device", "cpu"))
        super().__setstate__(state)


class AutoencoderTransformer(ClassNamePrefixFeaturesOutMixin, TransformerMixin, _NetworkEstimator):
    """An autoencoder as a scikit-learn transformer: ``transform`` gives the codes.

    Parameters
    ----------
    hidden : int, or sequence or 1-D array of int, default=(64,)
        Encoder layer sizes, the last being the code; the decoder mirrors them.
        None: one layer of ``max(1, n_features // 2)`` units.
    activation : str, default='relu'
        Activation of the hidden layers (any :mod:`aekit.activations` name).
    output_activation : str, default='linear'
        Activation of the reconstruction (``'sigmoid'`` for data in [0, 1]).
    tied : bool, default=False
        Decoder layers share the transposed encoder weights.
    loss : str, default='mse'
        ``'mse'``, ``'mae'``, ``'bce'``, ...
    layer : str or int, optional
        Layer whose output :meth:`transform` returns (default: the code layer).
    algo, learning_rate, batch_size, max_epochs, patience, min_improvement, valid_split, max_gradient_norm
        Training options of :meth:`aekit.Autoencoder.train` (``learning_rate=None``:
        the algorithm's default).  Without ``valid_split`` early stopping watches
        the training loss; ``patience=None`` turns it off.  ``valid_split`` holds out
        rows drawn at random (seeded by ``random_state``), not the last rows.
    hidden_l1, hidden_l2, weight_l1, weight_l2, sparsity_target, sparsity_weight, contractive
        Regularizers, as in :meth:`aekit.Autoencoder.train`.
    input_noise, input_dropout, hidden_noise, hidden_dropout
        Denoising options (training only).
    variational : bool, default=False
        Make the code a Gaussian latent (a variational autoencoder): :meth:`transform`
        gives posterior means.  Use ``loss='bce'`` with a sigmoid output for data in [0, 1]
        (``'mse'`` is a Gaussian decoder of fixed variance).
    beta, kl_warmup, free_bits, capacity, importance_samples, binarize
        The KL term's options, as in :meth:`aekit.Autoencoder.train` (None: the default).
    device : str, default='cpu'
        ``'cpu'``, ``'cuda'`` or ``'auto'``.
    random_state : int, RandomState instance or None, default=None
        Seeds the initial weights and the shuffles; an int makes ``fit`` repeatable.

    Attributes
    ----------
    net_ : aekit.Autoencoder
        The trained network.
    n_features_in_ : int
    feature_names_in_ : ndarray of str, shape (n_features_in_,)
        Only when ``X`` had string column names.
    history_ : list of dict
        One ``{'epoch', 'train', 'valid'}`` entry per epoch.
    n_iter_ : int
        Epochs trained.

    Notes
    -----
    :meth:`transform` returns float32 arrays, the network's precision.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> X = load_digits().data / 16.0
    >>> ae = AutoencoderTransformer(hidden=(16,), max_epochs=5, random_state=0).fit(X)
    >>> ae.transform(X).shape
    (1797, 16)
    """

    def __init__(
        self,
        hidden: Any = (64,),
        activation: str = "relu",
        output_activation: str = "linear",
        tied: bool = False,
        loss: str = "mse",
        layer: str | int | None = None,
        algo: str = "adam",
        learning_rate: float | None = None,
        batch_size: int = 64,
        max_epochs: int = 100,
        patience: int = 5,
        min_improvement: float = 0.0,
        valid_split: float = 0.0,
        max_gradient_norm: float | None = None,
        hidden_l1: float = 0.0,
        hidden_l2: float = 0.0,
        weight_l1: float = 0.0,
        weight_l2: float = 0.0,
        sparsity_target: float | None = None,
        sparsity_weight: float | None = None,
        contractive: float = 0.0,
        input_noise: float = 0.0,
        input_dropout: float = 0.0,
        hidden_noise: float = 0.0,
        hidden_dropout: float = 0.0,
        variational: bool = False,
        beta: float | None = None,
        kl_warmup: int | None = None,
        free_bits: float | None = None,
        capacity: float | None = None,
        importance_samples: int | None = None,
        binarize: str | None = None,
        device: str = "cpu",
        random_state: Any = None,
    ):
        self.hidden = hidden
        self.activation = activation
        self.output_activation = output_activation
        self.tied = tied
        self.loss = loss
        self.layer = layer
        self.algo = algo
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.min_improvement = min_improvement
        self.valid_split = valid_split
        self.max_gradient_norm = max_gradient_norm
        self.hidden_l1 = hidden_l1
        self.hidden_l2 = hidden_l2
        self.weight_l1 = weight_l1
        self.weight_l2 = weight_l2
        self.sparsity_target = sparsity_target
        self.sparsity_weight = sparsity_weight
        self.contractive = contractive
        self.input_noise = input_noise
        self.input_dropout = input_dropout
        self.hidden_noise = hidden_noise
        self.hidden_dropout = hidden_dropout
        self.variational = variational
        self.beta = beta
        self.kl_warmup = kl_warmup
        self.free_bits = free_bits
        self.capacity = capacity
        self.importance_samples = importance_samples
        self.binarize = binarize
        self.device = device
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None) -> AutoencoderTransformer:
        """Train the autoencoder to reconstruct ``X`` (n_samples, n_features); ``y`` is ignored."""
        self._fit_net(X)
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Codes of ``X``: float32 array of shape (n_samples, code units)."""
        X = self._check_X(X)
        return self.net_.encode(X, layer=self.layer)

    def inverse_transform(self, X: Any) -> np.ndarray:
        """Reconstructions from codes ``X`` (n_samples, code units) -> (n_samples, n_features_in_)."""
        check_is_fitted(self, "net_")
        X = _writable(check_array(X, dtype=[np.float32, np.float64]))
        n_codes = self._n_features_out
        if X.shape[1] != n_codes:  # in scikit-learn's words, not the network's ('z', 'this Autoencoder')
            raise DataError(
                f"X has {X.shape[1]} features, but {type(self).__name__}.inverse_transform is expecting "
                f"{n_codes} features as input (the outputs of transform)"
            )
        return self.net_.decode(X, layer=self.layer)

    def score(self, X: Any, y: Any = None) -> float:
        """R^2 of the reconstruction of ``X`` (1 is perfect); ``y`` is ignored."""
        X = self._check_X(X)
        return self.net_.score(X)

    @property
    def _n_features_out(self) -> int:
        name = self.net_._layer_name(self.layer, self.net_.code_layer)
        layer = next(layer for layer in self.net_.layers if layer.name == name)
        return int(np.prod(layer.output_shape))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Codes come out in the network's float32 whatever the input dtype.
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags

    def _more_tags(self) -> dict[str, Any]:  # scikit-learn < 1.6
        return {"preserves_dtype": [np.float32]}


class AutoencoderOutlierDetector(OutlierMixin, _NetworkEstimator):
    """Outliers are the examples an autoencoder reconstructs worst (PyOD's AutoEncoder).

    The examples are standardised (when ``standardize``), an autoencoder with a
    bottleneck is trained on them, and the per-example reconstruction error --
    the mean squared error over features, in the standardised space -- is the
    outlier score.

    Score conventions, both offered:

    * scikit-learn: :meth:`score_samples` is the *negative* reconstruction error
      (higher = more normal); :meth:`decision_function` is ``score_samples(X) -
      offset_`` (negative = outlier); :meth:`predict` gives -1 (outlier) / 1.
    * PyOD: :meth:`reconstruction_error` and ``decision_scores_`` (training data)
      are raw errors (higher = more abnormal); ``labels_`` is 1 for outliers, 0
      otherwise.

    Parameters
    ----------
    contamination : float, default=0.1
        Expected fraction of outliers in the training data, in (0, 0.5]; sets
        ``threshold_`` to the matching quantile of the training errors.
    standardize : bool, default=True
        Scale each feature to zero mean and unit variance before the network
        (so that no feature dominates the error).
    hidden : int or sequence of int, optional
        Encoder sizes; default: one layer of ``max(1, n_features // 2)`` units.
    outlier_score : {'reconstruction', 'nll'}, default='reconstruction'
        The outlier score: the reconstruction error, or (``variational=True``) the
        importance-weighted negative log-likelihood ``net_.nll(X, k=nll_samples)`` in nats
        (of the standardised data when ``standardize``).
    nll_samples : int, default=100
        Importance samples per example of the ``'nll'`` score.

    Other Parameters
    ----------------
        As :class:`AutoencoderTransformer`.

    Attributes
    ----------
    net_ : aekit.Autoencoder
    scaler_ : sklearn.preprocessing.StandardScaler or None
    decision_scores_ : ndarray, shape (n_samples,)
        Reconstruction errors of the training examples (higher = more abnormal).
    threshold_ : float
        Errors above it are outliers.
    offset_ : float
        ``-threshold_``, so that ``decision_function = score_samples - offset_``.
    labels_ : ndarray of int, shape (n_samples,)
        1 for training outliers, 0 for inliers (PyOD).
    n_features_in_, history_, n_iter_
        As :class:`AutoencoderTransformer`.
    """

    def __init__(
        self,
        contamination: float = 0.1,
        standardize: bool = True,
        outlier_score: str = "reconstruction",
        nll_samples: int = 100,
        hidden: Any = None,
        activation: str = "relu",
        output_activation: str = "linear",
        tied: bool = False,
        loss: str = "mse",
        algo: str = "adam",
        learning_rate: float | None = None,
        batch_size: int = 64,
        max_epochs: int = 100,
        patience: int = 5,
        min_improvement: float = 0.0,
        valid_split: float = 0.0,
        max_gradient_norm: float | None = None,
        hidden_l1: float = 0.0,
        hidden_l2: float = 0.0,
        weight_l1: float = 0.0,
        weight_l2: float = 0.0,
        sparsity_target: float | None = None,
        sparsity_weight: float | None = None,
        contractive: float = 0.0,
        input_noise: float = 0.0,
        input_dropout: float = 0.0,
        hidden_noise: float = 0.0,
        hidden_dropout: float = 0.0,
        variational: bool = False,
        beta: float | None = None,
        kl_warmup: int | None = None,
        free_bits: float | None = None,
        capacity: float | None = None,
        importance_samples: int | None = None,
        binarize: str | None = None,
        device: str = "cpu",
        random_state: Any = None,
    ):
        self.contamination = contamination
        self.standardize = standardize
        self.outlier_score = outlier_score
        self.nll_samples = nll_samples
        self.hidden = hidden
        self.activation = activation
        self.output_activation = output_activation
        self.tied = tied
        self.loss = loss
        self.algo = algo
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.min_improvement = min_improvement
        self.valid_split = valid_split
        self.max_gradient_norm = max_gradient_norm
        self.hidden_l1 = hidden_l1
        self.hidden_l2 = hidden_l2
        self.weight_l1 = weight_l1
        self.weight_l2 = weight_l2
        self.sparsity_target = sparsity_target
        self.sparsity_weight = sparsity_weight
        self.contractive = contractive
        self.input_noise = input_noise
        self.input_dropout = input_dropout
        self.hidden_noise = hidden_noise
        self.hidden_dropout = hidden_dropout
        self.variational = variational
        self.beta = beta
        self.kl_warmup = kl_warmup
        self.free_bits = free_bits
        self.capacity = capacity
        self.importance_samples = importance_samples
        self.binarize = binarize
        self.device = device
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None) -> AutoencoderOutlierDetector:
        """Train on ``X`` (n_samples, n_features), mostly normal examples; ``y`` is ignored."""
        c = self.contamination
        if isinstance(c, bool) or not isinstance(c, numbers.Real) or not 0 < c <= 0.5:
            raise ConfigurationError(f"contamination must be a number in (0, 0.5], got {c!r}")
        if not isinstance(self.standardize, (bool, np.bool_)):
            raise ConfigurationError(f"standardize must be True or False, got {self.standardize!r}")
        if self.outlier_score not in ("reconstruction", "nll") or (
            self.outlier_score == "nll" and not self.variational
        ):
            raise ConfigurationError(
                f"outlier_score must be 'reconstruction', or 'nll' with variational=True, got {self.outlier_score!r} "
                f"(variational={self.variational!r})"
            )
        X = _validate_data(self, X, reset=True, dtype=[np.float32, np.float64], ensure_min_samples=1)
        self.scaler_: StandardScaler | None = None
        if self.standardize:
            from sklearn.preprocessing import StandardScaler

            self.scaler_ = StandardScaler().fit(X)
        self.net_ = _fit_network(self, self._scale(X))
        self.history_ = [dict(entry) for entry in self.net_.history]
        self.n_iter_ = len(self.history_)
        self.decision_scores_ = self._errors(X)
        self.threshold_ = float(np.percentile(self.decision_scores_, 100.0 * (1.0 - c)))
        self.offset_: float = -self.threshold_
        self.labels_ = (self.decision_scores_ > self.threshold_).astype(int)
        return self

    def _scale(self, X: np.ndarray) -> np.ndarray:
        return X if self.scaler_ is None else self.scaler_.transform(X)

    def _errors(self, X: np.ndarray) -> np.ndarray:
        Xs = _float32(self._scale(X))
        if self.outlier_score == "nll":  # nats; seeded, so the same X always gets the same scores
            return self.net_.nll(Xs, k=self.nll_samples)
        recon = self.net_.predict(Xs).reshape(Xs.shape[0], -1)
        return np.mean((recon.astype(np.float64) - Xs.astype(np.float64)) ** 2, axis=1)

    def reconstruction_error(self, X: Any) -> np.ndarray:
        """Per-example outlier score, shape (n_samples,), higher = more abnormal.

        The mean squared reconstruction error, or with ``outlier_score='nll'`` the negative log-likelihood in nats.
        """
        return self._errors(self._check_X(X))

    def score_samples(self, X: Any) -> np.ndarray:
        """Negative reconstruction error, shape (n_samples,): higher = more normal."""
        return -self.reconstruction_error(X)

    def decision_function(self, X: Any) -> np.ndarray:
        """``score_samples(X) - offset_``, shape (n_samples,): negative for outliers."""
        return self.score_samples(X) - self.offset_

    def predict(self, X: Any) -> np.ndarray:
        """-1 for outliers, 1 for inliers, shape (n_samples,)."""
        return np.where(self.decision_function(X) < 0, -1, 1)
