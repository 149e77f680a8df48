"""The options of ``train()`` that are not penalties: checked once, at the boundary."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..data.validation import integer, number
from ..errors import ConfigurationError, unknown_name_error
from ..objective import penalties as reg
from ..objective.metrics import METRICS
from .callbacks import Callback
from .optimizers import ALGORITHMS, DEFAULT_LEARNING_RATE, MOMENTUM_ALGORITHMS
from .step import check_compile, check_precision
from .threads import check_threads

__all__ = ["PYTHON_ONLY_OPTIONS", "TrainOptions", "parse_mode"]

# Options that hold Python objects (functions, callbacks): no command-line flag, not compared on resume.
PYTHON_ONLY_OPTIONS = ("monitors", "callbacks")


@dataclasses.dataclass
class TrainOptions:
    """Every option of :meth:`Autoencoder.train` that is not a regularizer.

    Attributes
    ----------
    algo : str
        One of :data:`ALGORITHMS` (``'layerwise'`` means ``layerwise=True`` with Adam).
    learning_rate : float, optional
        Defaults per algorithm (Adam: 1e-3).
    momentum : float
        For sgd, nag and rmsprop.
    batch_size : int
    max_epochs : int
        Upper bound on epochs (theanets' ``max_updates`` is accepted as an alias).
    patience : int or None
        Early stopping: training stops (with an :class:`~aekit.errors.EarlyStoppingWarning`)
        once more than ``patience`` validations in a row did not improve the watched loss --
        the validation loss, or the training loss when there are no validation data -- by
        more than ``min_improvement``.  None: no early stopping (the best parameters are
        still kept).
    min_improvement : float
        Relative improvement of the watched loss that counts as progress.
    validate_every : int
        Validate every this many epochs; 0 turns validation and early stopping off (the
        last parameters are kept).
    valid_split : float
        Fraction of ``x`` held out for validation when ``valid`` is None: rows drawn at
        random (seeded by the model's ``rng``) from in-memory data, the last rows of
        streamed (memory-mapped) data.
    max_gradient_norm : float, optional
        Clip the global gradient norm over all parameters.
    monitors : dict, optional
        ``{'hid1:out': (0.1, 0.9)}`` reports the fraction of activations below each
        threshold; ``{'name': fn(outputs, x) -> scalar tensor}`` reports any function.
    layerwise : bool
        Greedy layerwise pretraining of each encoder depth before the full model.
    shuffle : bool
        Re-shuffle the samples every epoch (default True).
    on_nan : str
        ``'raise'`` (TrainingDiverged) or ``'warn'`` (restore, halve the learning rate, go on).
    checkpoint : str or path, optional
        Write the whole training state there every ``checkpoint_every`` epochs and at
        the end (see :mod:`aekit.train.checkpoint`).
    checkpoint_every : int
        Epochs between checkpoints (default 1).
    resume : bool
        Continue from ``checkpoint`` if that file exists (else start afresh).
    precision : str
        ``'fp32'`` (default), ``'bf16'`` or ``'fp16'``: run forward and loss under
        ``torch.autocast`` (fp16 with a gradient scaler); see :mod:`aekit.train.step`.
    compile : bool or 'auto'
        Compile the training step with ``torch.compile`` (``'auto'``: on CUDA only);
        falls back to eager execution with a logged warning when compiling fails.
    distributed : bool or 'auto'
        Data-parallel training over a ``torch.distributed`` process group (see
        :mod:`aekit.train.distributed`); ``'auto'`` (default) when launched by torchrun
        with several processes.  ``batch_size`` is then per process.
    threads : int, 'auto' or None
        CPU threads while training: ``'auto'`` (default) one thread for models whose
        step is small (see :mod:`aekit.train.threads`), torch's setting otherwise;
        ``N`` threads; None leaves torch's setting.
    metrics : list of str
        Whole-data-set figures reported with the validation monitors (on the training
        data without validation data): ``'fvu'``, ``'r2'``, ``'mse'``, ``'l0'``,
        ``'dead_fraction'`` (``'l0:hid2'`` names a layer); see :mod:`aekit.objective.metrics`.
        A comma-separated string (the command line's ``--metrics fvu,l0``) works too.
    callbacks : list of Callback
        Called at the start and end of training and after each epoch (see
        :mod:`aekit.train.callbacks`); they may also add step hooks.
    """

    algo: str = "adam"
    learning_rate: float | None = None
    momentum: float = 0.9
    batch_size: int = 64
    max_epochs: int = 100
    patience: int | None = 5
    min_improvement: float = 0.0
    validate_every: int = 1
    valid_split: float = 0.0
    max_gradient_norm: float | None = None
    monitors: Mapping[str, Any] | None = None
    layerwise: bool = False
    shuffle: bool = True
    on_nan: str = "raise"
    checkpoint: str | os.PathLike | None = None
    checkpoint_every: int = 1
    resume: bool = False
    precision: str = "fp32"
    compile: bool | str = False
    distributed: bool | str = "auto"
    callbacks: list[Callback] = dataclasses.field(default_factory=list)
    metrics: list[str] = dataclasses.field(default_factory=list)
    threads: int | str | None = "auto"

    @classmethod
    def parse(cls, kwargs: dict[str, Any]) -> tuple[TrainOptions, dict[str, Any]]:
        """Split ``kwargs`` into options and regularizer keywords; reject unknown names."""
        kwargs = dict(kwargs)
        if "max_updates" in kwargs:
            if "max_epochs" in kwargs:
                raise ConfigurationError("give max_epochs or its alias max_updates, not both")
            kwargs["max_epochs"] = kwargs.pop("max_updates")
        fields = {f.name for f in dataclasses.fields(cls)}
        valid_names = fields | set(reg.REGULARIZER_KEYS) | {"max_updates"}
        for key in kwargs:
            if key not in valid_names:
                raise unknown_name_error("keyword argument of train()", key, valid_names)
        options = cls(**{k: v for k, v in kwargs.items() if k in fields})
        options.validate()
        if "momentum" in kwargs and options.algo not in MOMENTUM_ALGORITHMS:
            # theanets took momentum for every algorithm and used it for some: say where it applies.
            raise ConfigurationError(
                f"momentum applies to algo {', '.join(map(repr, MOMENTUM_ALGORITHMS))}, but algo is {options.algo!r}"
            )
        return options, {k: v for k, v in kwargs.items() if k in reg.REGULARIZER_KEYS}

    def validate(self) -> None:
        """Check types and ranges, raising the standard ConfigurationError."""
        if self.algo == "layerwise":
            self.algo, self.layerwise = "adam", True
        if not isinstance(self.algo, str) or self.algo.lower() not in ALGORITHMS:
            raise unknown_name_error("training algorithm", str(self.algo), ALGORITHMS)
        self.algo = self.algo.lower()
        integer("batch_size", self.batch_size, 1)
        integer("max_epochs", self.max_epochs, 0)
        if self.patience is not None:
            try:
                integer("patience", self.patience, 0)
            except ConfigurationError:
                raise ConfigurationError(
                    f"patience must be an integer >= 0, or None for no early stopping, got {self.patience!r}"
                ) from None
        integer("validate_every", self.validate_every, 0)
        if self.learning_rate is None:
            self.learning_rate = DEFAULT_LEARNING_RATE[self.algo]
        number("learning_rate", self.learning_rate, 0.0, math.inf, open_low=True)
        number("momentum", self.momentum, 0.0, 1.0)
        number("min_improvement", self.min_improvement, 0.0, math.inf)
        number("valid_split", self.valid_split, 0.0, 0.99)
        if self.max_gradient_norm is not None:
            number("max_gradient_norm", self.max_gradient_norm, 0.0, math.inf, open_low=True)
        if self.on_nan not in ("raise", "warn"):
            raise ConfigurationError(f"on_nan must be 'raise' or 'warn', got {self.on_nan!r}")
        if self.monitors is not None and not isinstance(self.monitors, Mapping):
            raise ConfigurationError(f"monitors must be a dict, got {type(self.monitors).__name__}")
        for key, spec in (self.monitors or {}).items():
            thresholds = spec if isinstance(spec, (list, tuple)) else [spec]
            if not isinstance(key, str) or not (
                callable(spec)
                or all(
                    isinstance(t, (int, float, np.integer, np.floating)) and not isinstance(t, bool) for t in thresholds
                )
            ):
                raise ConfigurationError(
                    f"monitors[{key!r}] must be a threshold, a list of thresholds or a "
                    f"function(outputs, x), got {spec!r}"
                )
        if self.checkpoint is not None and not isinstance(self.checkpoint, (str, os.PathLike)):
            raise ConfigurationError(f"checkpoint must be a file path, got {type(self.checkpoint).__name__}")
        if self.checkpoint is not None and (
            not str(os.fspath(self.checkpoint)) or "\0" in str(os.fspath(self.checkpoint))
        ):
            raise ConfigurationError(f"checkpoint must be a file path, got {self.checkpoint!r}")
        integer("checkpoint_every", self.checkpoint_every, 1)
        if not isinstance(self.resume, (bool, np.bool_)):
            raise ConfigurationError(f"resume must be True or False, got {self.resume!r}")
        if self.resume and self.checkpoint is None:
            raise ConfigurationError("resume=True needs checkpoint=PATH (the file to resume from)")
        self.precision = check_precision(self.precision)
        self.compile = check_compile(self.compile)
        self.distributed = parse_mode(self.distributed)
        self.threads = check_threads(self.threads)
        if not isinstance(self.callbacks, (list, tuple)) or not all(isinstance(c, Callback) for c in self.callbacks):
            raise ConfigurationError(
                f"callbacks must be a list of aekit.train.callbacks.Callback objects, got {self.callbacks!r:.80}"
            )
        self.callbacks = list(self.callbacks)
        if isinstance(self.metrics, str):
            self.metrics = [m.strip() for m in self.metrics.split(",") if m.strip()]
        if not isinstance(self.metrics, (list, tuple)) or not all(isinstance(m, str) for m in self.metrics):
            raise ConfigurationError(
                f"metrics must be a list of metric names such as ['fvu', 'l0'], got {self.metrics!r}"
            )
        for name in self.metrics:
            METRICS.get(name.partition(":")[0])  # the standard did-you-mean error for an unknown name
        self.metrics = list(self.metrics)


def parse_mode(value: Any) -> bool | str:
    """Normalise the ``distributed`` option: True, False or ``'auto'`` (strings from the CLI too)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return "auto"
        if text in ("true", "yes", "on", "1"):
            return True
        if text in ("false", "no", "off", "0"):
            return False
    raise ConfigurationError(f"distributed must be True, False or 'auto', got {value!r}")
