"""Preprocessing: scaling and PCA/ZCA whitening, saved with the model.

Every step follows scikit-learn's conventions -- ``__init__`` only stores
arguments, ``fit(x)`` learns attributes that end in ``_``, then
``transform`` / ``inverse_transform`` / ``fit_transform`` -- and adds what an
:class:`~aekit.Autoencoder` needs to carry it:

* ``transform_tensor(t)`` applies the step to a tensor on any device (used on
  every input of ``encode``/``predict``/``train`` once the step is attached);
* ``state_tensors()`` / ``get_config()`` / :func:`from_config` store the fitted
  step inside the model file (tensors + JSON, no pickle).

A step works on flattened examples: an input of shape (n, *shape) is treated as
(n, prod(shape)) and the result takes the input's shape again when the number
of features is unchanged.  Attach a fitted step with
``net.preprocessing = step`` (or ``net.set_preprocessing(step)``); its output
must then have the model's input size, and ``predict``/``decode`` map their
outputs back with ``inverse_transform``.

The fitted statistics are computed in float64; ``transform`` returns float32
(float64 when given float64).

The image-patch functions (:func:`extract_patches`, :func:`normalize_patches`,
:func:`whiten_images`) live in :mod:`aekit.data.patches` and are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from ..errors import ConfigurationError, DataError, unknown_name_error
from ..registry import Registry
from .checks import real_array
from .patches import extract_patches, normalize_patches, whiten_images

__all__ = [
    "MinMaxScaler",
    "Pipeline",
    "StandardScaler",
    "Step",
    "Whitener",
    "extract_patches",
    "from_config",
    "normalize_patches",
    "whiten_images",
]


_OVERFLOW = "x's statistics overflow float64 (its values are too large in magnitude); scale x down first"


def _real_array(x: Any, name: str = "x") -> np.ndarray:
    """``x`` as a real-valued array of shape (n, features) or (n, *shape) with at least one feature."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    array = real_array(x, name)
    if array.ndim < 2:
        raise DataError(f"{name} must be 2-D (examples, features), got shape {array.shape}")
    if math.prod(array.shape[1:]) == 0:
        raise DataError(f"{name} has no features: shape {array.shape}")
    return array


def _as_2d(x: Any, name: str = "x") -> np.ndarray:
    array = _real_array(x, name)
    if array.shape[0] == 0:
        raise DataError(f"{name} is empty: it has 0 examples")
    return array.reshape(array.shape[0], -1)


class Step:
    """Base class of preprocessing steps (see the module docstring).

    Subclasses define ``name``, ``_params`` (constructor arguments stored in the
    config), ``_state`` (fitted ndarray attributes stored as tensors), ``_fit``
    and ``_apply``.
    """

    name: ClassVar[str] = ""
    _params: ClassVar[tuple[str, ...]] = ()
    _state: ClassVar[tuple[str, ...]] = ()
    # Set by fit: the number of input features, and the fitted statistics as tensors by (dtype, device).
    n_features_: int
    _cache: dict[tuple[torch.dtype, str], dict[str, torch.Tensor]]

    # ----------------------------------------------------------- to implement
    def _fit(self, x: np.ndarray) -> None:  # x: float64 (n, d)
        raise NotImplementedError

    def _apply(self, x: torch.Tensor, p: dict[str, torch.Tensor], inverse: bool) -> torch.Tensor:
        raise NotImplementedError

    # ----------------------------------------------------------- public API
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor arguments, as scikit-learn's ``clone``, ``Pipeline`` and ``GridSearchCV`` read them."""
        return {k: getattr(self, k) for k in self._params}

    def set_params(self, **params: Any) -> Step:
        """Change constructor arguments (checked as the constructor checks them); the step must be fitted again."""
        for key in params:
            if key not in self._params:
                raise unknown_name_error(f"parameter of {type(self).__name__}", key, self._params)
        # A new step checks the arguments first, so a refused change leaves this one as it was.
        fresh = type(self)(**{**self.get_params(), **params})
        self.__dict__.clear()
        self.__dict__.update(fresh.__dict__)
        return self

    @property
    def fitted(self) -> bool:
        """True once :meth:`fit` has learned every fitted attribute."""
        return all(getattr(self, k, None) is not None for k in self._state)

    @property
    def n_features_in_(self) -> int:
        """The number of features :meth:`fit` saw (scikit-learn's name for ``n_features_``)."""
        return int(self.n_features_)

    def fit(self, x: Any, y: Any = None) -> Step:
        """Learn the step's statistics from ``x`` of shape (n, features) or (n, *shape)."""
        array = _as_2d(x).astype(np.float64)
        if not np.isfinite(array).all():
            raise DataError("x holds NaN or infinite values; preprocessing needs finite data")
        self.n_features_ = array.shape[1]
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported below, as a DataError
            self._fit(array)
        self._cache = {}
        if not all(np.isfinite(getattr(self, k)).all() for k in self._state):
            raise DataError(_OVERFLOW)
        return self

    def fit_transform(self, x: Any, y: Any = None) -> np.ndarray:
        """:meth:`fit` on ``x``, then :meth:`transform` ``x``.

        Parameters
        ----------
        x : array-like, shape (n, features) or (n, *shape)
        y : ignored
            Accepted for scikit-learn's pipelines.

        Returns
        -------
        ndarray, float32 (float64 for float64 input)
            Shape (n, out_features), or the shape of ``x`` when the number of features is unchanged.
        """
        return self.fit(x).transform(x)

    def transform(self, x: Any) -> np.ndarray:
        """The transformed ``x``, float32 (float64 for float64 input), shaped like ``x`` when sizes allow."""
        return self._numpy(x, inverse=False)

    def inverse_transform(self, y: Any) -> np.ndarray:
        """Map transformed data back to the original space (``transform``'s inverse, lossy if it reduces)."""
        return self._numpy(y, inverse=True)

    def transform_tensor(self, t: torch.Tensor) -> torch.Tensor:
        """``transform`` for a tensor of shape (n, *shape), on its device and in its dtype."""
        return self._tensor(t, inverse=False)

    def inverse_transform_tensor(self, t: torch.Tensor) -> torch.Tensor:
        """``inverse_transform`` for a tensor of shape (n, out_features), on its device and in its dtype."""
        return self._tensor(t, inverse=True)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Fitted statistics as contiguous CPU tensors (for the model file)."""
        self._require_fitted()
        return {k: torch.from_numpy(np.ascontiguousarray(getattr(self, k))) for k in self._state}

    def get_config(self) -> dict[str, Any]:
        """JSON-ready constructor arguments plus ``name`` and ``n_features``."""
        config: dict[str, Any] = {"name": self.name}
        for k in self._params:
            value = getattr(self, k)
            config[k] = list(value) if isinstance(value, tuple) else value
        if getattr(self, "n_features_", None) is not None:
            config["n_features"] = int(self.n_features_)
        return config

    @classmethod
    def _from_config(cls, config: dict[str, Any], state: dict[str, torch.Tensor]) -> Step:
        kwargs = {k: config[k] for k in cls._params if k in config}
        step = cls(**kwargs)
        missing = [k for k in cls._state if k not in state]
        if missing:
            raise DataError(f"{cls.name} step is missing its fitted tensors {missing}")
        for k in cls._state:
            setattr(step, k, state[k].detach().cpu().numpy().astype(np.float64))
        fitted_features = int(np.asarray(getattr(step, cls._state[0])).shape[-1])
        step.n_features_ = int(config.get("n_features", fitted_features))
        step._cache = {}
        return step

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._params)
        return f"{type(self).__name__}({args})"

    # ----------------------------------------------------------- machinery
    def _not_fitted(self) -> ConfigurationError:
        return ConfigurationError(f"this {type(self).__name__} is not fitted yet; call fit(x) first")

    def _require_fitted(self) -> None:
        if not self.fitted:
            raise self._not_fitted()

    def _params_for(self, dtype: torch.dtype, device: torch.device) -> dict[str, torch.Tensor]:
        cache = self.__dict__.setdefault("_cache", {})
        key = (dtype, str(device))
        if key not in cache:
            cache[key] = {
                k: torch.as_tensor(np.asarray(getattr(self, k)), dtype=dtype, device=device) for k in self._state
            }
        return cache[key]

    def _n_out(self) -> int:
        return self.n_features_

    def _tensor(self, t: torch.Tensor, inverse: bool) -> torch.Tensor:
        self._require_fitted()
        n_in = self._n_out() if inverse else self.n_features_
        flat = t.reshape(t.shape[0], math.prod(t.shape[1:]))  # explicit: -1 is ambiguous for 0 examples
        if flat.shape[1] != n_in:
            what = "inverse_transform" if inverse else "transform"
            raise DataError(f"{type(self).__name__}.{what} expects {n_in} features, got {flat.shape[1]}")
        dtype = t.dtype if t.dtype.is_floating_point else torch.float32
        out = self._apply(flat.to(dtype), self._params_for(dtype, t.device), inverse)
        return out.reshape(t.shape) if out.shape[1] == flat.shape[1] else out

    def _numpy(self, x: Any, inverse: bool) -> np.ndarray:
        array = _real_array(x, "y" if inverse else "x")
        out_dtype = np.float64 if array.dtype == np.float64 else np.float32
        result = self._tensor(torch.from_numpy(np.array(array, dtype=np.float64)), inverse)
        return result.numpy().astype(out_dtype, copy=False)


class MinMaxScaler(Step):
    """Scale to ``feature_range`` (default [0, 1]) using the minimum and maximum seen in ``fit``.

    Parameters
    ----------
    feature_range : (float, float)
    per_feature : bool
        One minimum and maximum per feature (scikit-learn's rule) or one for all
        features (better for images, whose pixels share one scale).

    Attributes
    ----------
    min_, scale_ : ndarray, shape (features,) or (1,)
        ``transform(x) = (x - min_) * scale_ + feature_range[0]``; a constant
        feature gets ``scale_ = 1``.
    """

    name = "minmax"
    _params = ("feature_range", "per_feature")
    _state = ("min_", "scale_")

    def __init__(self, feature_range: tuple[float, float] = (0.0, 1.0), per_feature: bool = True):
        as_floats = tuple(float(v) for v in feature_range)
        # The argument itself when it is already such a pair: scikit-learn's clone checks identity.
        self.feature_range = (
            feature_range if isinstance(feature_range, tuple) and feature_range == as_floats else as_floats
        )
        self.per_feature = bool(per_feature)
        if len(self.feature_range) != 2 or not self.feature_range[0] < self.feature_range[1]:
            raise ConfigurationError(f"feature_range must be (low, high) with low < high, got {feature_range!r}")
        self.min_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None

    def _fit(self, x: np.ndarray) -> None:
        axis = 0 if self.per_feature else None
        low, high = np.atleast_1d(x.min(axis=axis)), np.atleast_1d(x.max(axis=axis))
        span = high - low
        width = self.feature_range[1] - self.feature_range[0]
        self.min_ = low
        self.scale_ = np.where(span > 0, width / np.where(span > 0, span, 1.0), 1.0)

    def _apply(self, x, p, inverse):
        lo = self.feature_range[0]
        if inverse:
            return (x - lo) / p["scale_"] + p["min_"]
        return (x - p["min_"]) * p["scale_"] + lo


class StandardScaler(Step):
    """Standardise: subtract the mean and divide by the standard deviation.

    Attributes
    ----------
    mean_, std_ : ndarray, shape (features,) or (1,)
        A constant feature gets ``std_ = 1``.
    """

    name = "standard"
    _params = ("per_feature",)
    _state = ("mean_", "std_")

    def __init__(self, per_feature: bool = True):
        self.per_feature = bool(per_feature)
        self.mean_: np.ndarray | None = None
        self.std_: np.ndarray | None = None

    def _fit(self, x: np.ndarray) -> None:
        axis = 0 if self.per_feature else None
        self.mean_ = np.atleast_1d(x.mean(axis=axis))
        std = np.atleast_1d(x.std(axis=axis))
        self.std_ = np.where(std > 0, std, 1.0)

    def _apply(self, x, p, inverse):
        if inverse:
            return x * p["std_"] + p["mean_"]
        return (x - p["mean_"]) / p["std_"]


class Whitener(Step):
    """PCA or ZCA whitening: decorrelate the features and give them unit variance.

    With eigenvalues ``lambda_i`` and eigenvectors ``U`` of the covariance of
    ``x``, PCA whitening maps ``x`` to ``diag(1/sqrt(lambda + epsilon)) U^T (x - mean)``
    (rotated to the principal axes); ZCA rotates back, ``U diag(...) U^T (x - mean)``,
    so whitened images still look like images (UFLDL's recipe).

    Parameters
    ----------
    kind : {'pca', 'zca'}
    epsilon : float
        Added to each eigenvalue: regularises (and low-pass filters) the
        whitening; 0 gives an exactly white covariance for full-rank data.
    n_components : int, optional
        Keep only the leading components (PCA: the output has this many
        features; ZCA: projected and whitened in the original space).

    Attributes
    ----------
    mean_ : ndarray, shape (features,)
    matrix_ : ndarray, shape (out, features)
        ``transform(x) = (x - mean_) @ matrix_.T``
    inverse_ : ndarray, shape (features, out)
        ``inverse_transform(z) = z @ inverse_.T + mean_``
    eigenvalues_ : ndarray, shape (features,), descending
    """

    name = "whitener"
    _params = ("kind", "epsilon", "n_components")
    _state = ("mean_", "matrix_", "inverse_", "eigenvalues_")

    def __init__(self, kind: str = "zca", epsilon: float = 1e-5, n_components: int | None = None):
        if kind not in ("pca", "zca"):
            raise unknown_name_error("whitening kind", str(kind), ("pca", "zca"))
        if (
            not isinstance(epsilon, (int, float))
            or isinstance(epsilon, bool)
            or not epsilon >= 0
            or not math.isfinite(epsilon)
        ):
            raise ConfigurationError(f"epsilon must be a finite number >= 0, got {epsilon!r}")
        if n_components is not None and (not isinstance(n_components, int) or n_components < 1):
            raise ConfigurationError(f"n_components must be a positive integer or None, got {n_components!r}")
        self.kind, self.epsilon, self.n_components = kind, float(epsilon), n_components
        self.mean_: np.ndarray | None = None
        self.matrix_: np.ndarray | None = None
        self.inverse_: np.ndarray | None = None
        self.eigenvalues_: np.ndarray | None = None

    def _fit(self, x: np.ndarray) -> None:
        n, d = x.shape
        if n < 2:
            raise DataError(f"whitening needs at least 2 examples, got {n}")
        k = d if self.n_components is None else self.n_components
        if k > d:
            raise ConfigurationError(f"n_components={k} exceeds the {d} features of x")
        self.mean_ = x.mean(axis=0)
        centred = x - self.mean_
        cov = centred.T @ centred / n
        if not np.isfinite(cov).all():
            raise DataError(_OVERFLOW)
        values, vectors = np.linalg.eigh(cov)
        order = np.argsort(values)[::-1]
        values, vectors = np.clip(values[order], 0.0, None), vectors[:, order]
        kept = values[:k] + self.epsilon
        if kept.min() <= 1e-12 * max(values[0], 1e-300):
            raise DataError(
                f"the covariance of x is singular (eigenvalue {values[k - 1]:.3g} of {values[0]:.3g}); "
                "give epsilon > 0 or fewer n_components"
            )
        u = vectors[:, :k]
        scale = 1.0 / np.sqrt(kept)
        if self.kind == "pca":
            self.matrix_ = (u * scale).T  # (k, d)
            self.inverse_ = u / scale  # (d, k)
        else:
            self.matrix_ = (u * scale) @ u.T  # (d, d)
            self.inverse_ = (u / scale) @ u.T
        self.eigenvalues_ = values

    def _n_out(self) -> int:
        if self.matrix_ is None:
            raise self._not_fitted()
        return int(self.matrix_.shape[0])

    def _apply(self, x, p, inverse):
        if inverse:
            return x @ p["inverse_"].T + p["mean_"]
        return (x - p["mean_"]) @ p["matrix_"].T


class Pipeline(Step):
    """Several steps applied in order (and inverted in reverse order).

    Parameters
    ----------
    steps : sequence of Step
    """

    name = "pipeline"
    _params = ("steps",)

    def __init__(self, steps: Sequence[Step]):
        steps = steps if isinstance(steps, list) else list(steps)  # a list as given: clone checks identity
        for s in steps:
            if not isinstance(s, Step):
                raise ConfigurationError(f"Pipeline steps must be aekit.preprocessing steps, got {type(s).__name__}")
        self.steps = steps

    @property
    def fitted(self) -> bool:
        """True when the pipeline has steps and every one of them is fitted."""
        return bool(self.steps) and all(s.fitted for s in self.steps)

    def fit(self, x: Any, y: Any = None) -> Pipeline:
        """Fit each step in turn, on the output of the steps before it.

        Parameters
        ----------
        x : array-like, shape (n, features) or (n, *shape)
        y : ignored
            Accepted for scikit-learn's pipelines.

        Returns
        -------
        Pipeline
            This pipeline, fitted.
        """
        array = _as_2d(x).astype(np.float64)
        self.n_features_ = array.shape[1]
        for s in self.steps:
            array = s.fit(array).transform(array)
        return self

    def _n_out(self) -> int:
        return self.steps[-1]._n_out() if self.steps else self.n_features_

    def _tensor(self, t: torch.Tensor, inverse: bool) -> torch.Tensor:
        self._require_fitted()
        for s in reversed(self.steps) if inverse else self.steps:
            t = s._tensor(t, inverse)
        return t

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Every step's fitted tensors, named ``'INDEX.NAME'`` (``'0.mean_'``), for the model file."""
        return {f"{i}.{k}": v for i, s in enumerate(self.steps) for k, v in s.state_tensors().items()}

    def get_config(self) -> dict[str, Any]:
        """JSON-ready ``name``, the configs of the ``steps`` in order, and ``n_features``."""
        return {
            "name": self.name,
            "steps": [s.get_config() for s in self.steps],
            "n_features": int(getattr(self, "n_features_", 0) or 0),
        }

    @classmethod
    def _from_config(cls, config: dict[str, Any], state: dict[str, torch.Tensor]) -> Pipeline:
        steps = []
        for i, sub in enumerate(config.get("steps") or []):
            prefix = f"{i}."
            steps.append(from_config(sub, {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}))
        pipe = cls(steps)
        pipe.n_features_ = int(config.get("n_features") or (steps[0].n_features_ if steps else 0))
        return pipe

    def __repr__(self) -> str:
        return f"Pipeline({self.steps!r})"


STEPS: Registry[type[Step]] = Registry("preprocessing step", case_sensitive=True)
for _step in (MinMaxScaler, StandardScaler, Whitener, Pipeline):
    STEPS.register(_step.name, _step)


def from_config(config: dict[str, Any], state_tensors: dict[str, torch.Tensor]) -> Step:
    """Rebuild a fitted step from ``get_config()`` and ``state_tensors()`` (as stored in a model file)."""
    if not isinstance(config, dict) or "name" not in config:
        raise ConfigurationError(f"a preprocessing config must be a dict with a 'name', got {config!r}")
    return STEPS.get(str(config["name"]))._from_config(config, state_tensors)


def check_step(step: Any, input_shape: Sequence[int]) -> Any:
    """Validate a step before it is attached to a model with input ``input_shape``."""
    for method in ("transform_tensor", "inverse_transform", "state_tensors", "get_config"):
        if not callable(getattr(step, method, None)):
            raise ConfigurationError(
                f"preprocessing must be an aekit.preprocessing step (it needs {method}()), got {type(step).__name__}"
            )
    if isinstance(step, Step):
        step._require_fitted()
        n = math.prod(input_shape)
        if step.n_features_ != n or step._n_out() != n:
            raise ConfigurationError(
                f"this preprocessing step maps {step.n_features_} features to {step._n_out()}, but the model's "
                f"input has {n}; an attached step must keep the number of features"
            )
    return step
