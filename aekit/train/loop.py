"""Training: options, batches, optimizers, early stopping and monitors.

``itertrain`` is the engine; ``Autoencoder.train`` drains it.  Design points:

* the data are checked and moved to the device once; each epoch draws one
  permutation and slices contiguous batches from the permuted copy, so samples
  are re-mixed every epoch (theanets kept fixed batches);
* monitor values are summed on the device and read once per epoch (no host
  sync per batch); epoch means weigh each batch by its size;
* the best parameters (by validation loss, or training loss without validation
  data) are restored when training ends -- also when the caller breaks out of
  the loop or an error escapes;
* ``max_gradient_norm`` clips the global norm over all parameters (theanets
  called per-tensor clipping global).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from ..data.checks import all_finite
from ..data.sources import StreamingSource, is_streamable
from ..data.validation import integer, number
from ..errors import ConfigurationError, DataError, TrainingDiverged, unknown_name_error
from ..objective import penalties as reg
from . import step as steps

__all__ = ["ALGORITHMS", "TrainOptions", "TensorSource", "itertrain", "make_optimizer"]

log = logging.getLogger(__name__)

ALGORITHMS = ("sgd", "nag", "rmsprop", "adam", "adagrad", "adadelta", "rprop", "lbfgs")
MOMENTUM_ALGORITHMS = ("sgd", "nag", "rmsprop")
DEFAULT_LEARNING_RATE = {
    "sgd": 1e-2,
    "nag": 1e-2,
    "rmsprop": 1e-3,
    "adam": 1e-3,
    "adagrad": 1e-2,
    "adadelta": 1.0,
    "rprop": 1e-2,
    "lbfgs": 1.0,
}
VALID_BATCH = 4096


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
    patience : int
        Validations without improvement before stopping.
    min_improvement : float
        Relative improvement of the validation loss that counts as progress.
    validate_every : int
        Validate every this many epochs; 0 turns validation and early stopping off.
    valid_split : float
        Fraction of ``x`` held out for validation when ``valid`` is None.
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
        the end (see :mod:`aekit.checkpoint`).
    checkpoint_every : int
        Epochs between checkpoints (default 1).
    resume : bool
        Continue from ``checkpoint`` if that file exists (else start afresh).
    precision : str
        ``'fp32'`` (default), ``'bf16'`` or ``'fp16'``: run forward and loss under
        ``torch.autocast`` (fp16 with a gradient scaler); see :mod:`aekit.steps`.
    compile : bool or 'auto'
        Compile the training step with ``torch.compile`` (``'auto'``: on CUDA only);
        falls back to eager execution with a logged warning when compiling fails.
    distributed : bool or 'auto'
        Data-parallel training over a ``torch.distributed`` process group (see
        :mod:`aekit.distributed`); ``'auto'`` (default) when launched by torchrun
        with several processes.  ``batch_size`` is then per process.
    """

    algo: str = "adam"
    learning_rate: float | None = None
    momentum: float = 0.9
    batch_size: int = 64
    max_epochs: int = 100
    patience: int = 5
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
        integer("patience", self.patience, 0)
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
        self.precision = steps.check_precision(self.precision)
        self.compile = steps.check_compile(self.compile)
        from .distributed import parse_mode

        self.distributed = parse_mode(self.distributed)


def make_optimizer(algo: str, params: list[torch.nn.Parameter], lr: float, momentum: float) -> torch.optim.Optimizer:
    """The ``torch.optim`` optimizer for ``algo``, fused where the build supports it."""
    if algo == "adam":
        try:
            return torch.optim.Adam(params, lr=lr, fused=True)
        except (RuntimeError, TypeError, ValueError):
            return torch.optim.Adam(params, lr=lr, foreach=True)
    if algo in ("sgd", "nag"):
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=algo == "nag" and momentum > 0)
    if algo == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=momentum if momentum < 1 else 0.0)
    if algo == "adagrad":
        return torch.optim.Adagrad(params, lr=lr)
    if algo == "adadelta":
        return torch.optim.Adadelta(params, lr=lr)
    if algo == "rprop":
        return torch.optim.Rprop(params, lr=lr)
    # One iteration per epoch; max_eval must be explicit: torch derives it as max_iter * 5 // 4 = 1,
    # which leaves the strong-Wolfe line search no evaluations, and L-BFGS then stalls for good.
    return torch.optim.LBFGS(params, lr=lr, max_iter=1, max_eval=25, history_size=20, line_search_fn="strong_wolfe")


def noise_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of epoch ``epoch``'s noise and dropout draws (process ``rank`` of a run)."""
    return int(np.random.SeedSequence([seed % 2**64, epoch, rank]).generate_state(1)[0])


class TensorSource:
    """Training data held as tensors on the training device.

    Parameters
    ----------
    x : tensor, shape (n, *input_shape)
    w : tensor or None, shape like ``x``
    """

    def __init__(self, x: torch.Tensor, w: torch.Tensor | None = None):
        self.x = x
        self.w = w

    def __repr__(self) -> str:
        weights = "" if self.w is None else ", weighted"
        return f"TensorSource({len(self)} examples of shape {tuple(self.x.shape[1:])}{weights}, {self.x.device})"

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def batches(
        self, batch_size: int, generator: torch.Generator | None, *, reuse: bool = False
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """Batches of one fresh permutation (in order, as slices, when generator is None).

        Parameters
        ----------
        batch_size : int
        generator : torch.Generator or None
            Draws the permutation; None: no shuffle.
        reuse : bool
            Gather each shuffled batch into the same buffer, overwriting the previous
            batch (use each batch before asking for the next).  Without it the whole
            permuted data set is copied once per epoch, which for data held in memory
            means a second copy of it; with it, training needs one batch more.
        """
        x, w = self.x, self.w
        n = len(self)
        perm = None if generator is None else torch.randperm(n, generator=generator).to(x.device)
        if perm is not None and reuse:
            yield from self._gathered(perm, batch_size)
            return
        if perm is not None:
            x = x.index_select(0, perm)
            w = w.index_select(0, perm) if w is not None else None
        for start in range(0, n, batch_size):
            yield x[start : start + batch_size], (w[start : start + batch_size] if w is not None else None)

    def _gathered(self, perm: torch.Tensor, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """The batches of ``perm``, each gathered into the same (one-batch) buffer."""
        x, w = self.x, self.w
        rows = min(batch_size, len(self))
        x_buffer = x.new_empty((rows, *x.shape[1:]))
        w_buffer = None if w is None else w.new_empty((rows, *w.shape[1:]))
        for start in range(0, len(self), batch_size):
            index = perm[start : start + batch_size]
            k = index.shape[0]
            xb = torch.index_select(x, 0, index, out=x_buffer[:k])
            wb = None if w is None else torch.index_select(w, 0, index, out=w_buffer[:k])
            yield xb, wb


def _split_weighted(net, data: Any, name: str) -> tuple[Any, Any]:
    if not net.weighted:
        if isinstance(data, (list, tuple)) and len(data) == 2 and all(getattr(part, "ndim", 0) >= 2 for part in data):
            raise DataError(
                f"{name} is a pair of arrays, as [x, w] for a weighted Autoencoder, but this "
                f"Autoencoder has weighted=False; pass x alone, or build it with weighted=True"
            )
        return data, None
    if not isinstance(data, (list, tuple)) or len(data) != 2:
        raise DataError(f"{name} must be [x, w] for a weighted Autoencoder, got {type(data).__name__}")
    return data[0], data[1]


def _as_source(net, data: Any, name: str) -> TensorSource | StreamingSource:
    x, w = _split_weighted(net, data, name)
    if is_streamable(x):
        # Memory-mapped / on-disk data: read, check and preprocess block by block.
        return StreamingSource(
            x,
            w,
            check=lambda b, n, rows: net._check(b, name=name, rows=rows),
            check_weights=lambda b, n, rows: net._check_weights(b, name=n, rows=rows),
            name=name,
        )
    xt = net._check(x, name=name)
    wt = None
    if w is not None:
        wt = net._check_weights(w, name=f"{name} weights")
    return TensorSource(xt, wt)


def _monitor_terms(monitors: Mapping[str, Any] | None, outputs: dict[str, torch.Tensor], x) -> dict[str, torch.Tensor]:
    terms: dict[str, torch.Tensor] = {}
    for key, spec in (monitors or {}).items():
        if callable(spec):
            terms[key] = torch.as_tensor(spec(outputs, x)).detach().float()
            continue
        name = key if ":" in key else f"{key}:out"
        if name not in outputs:
            raise ConfigurationError(
                f"monitor {key!r} names an output that does not exist; try one of {sorted(outputs)}"
            )
        thresholds = spec if isinstance(spec, (list, tuple)) else [spec]
        for threshold in thresholds:
            terms[f"{name}<{threshold:g}"] = (outputs[name] < threshold).float().mean()
    return terms


class _Trainer:
    """State of one training run; :func:`itertrain` drives it."""

    rank = 0  # this process's place in a data-parallel run (aekit.distributed sets it)

    def __init__(self, net, x: Any, valid: Any, options: TrainOptions, regs: reg.Regularizers):
        self.net = net
        self.options = options
        self.regs = regs
        net._check_outputs_exist()
        source = _as_source(net, x, "x")
        self.valid = None
        if valid is not None:
            if options.valid_split > 0:  # one of the two would be ignored
                raise ConfigurationError(f"give valid or valid_split, not both (valid_split={options.valid_split})")
            self.valid = _as_source(net, valid, "valid")
        elif options.valid_split > 0 and options.validate_every > 0:
            n_valid = int(round(len(source) * options.valid_split))
            if n_valid < 1 or n_valid >= len(source):
                raise DataError(
                    f"valid_split={options.valid_split} leaves no examples for training or validation "
                    f"out of {len(source)}"
                )
            if isinstance(source, StreamingSource):
                source, self.valid = source.split_tail(n_valid)  # a contiguous tail block: no random reads
            else:
                perm = torch.randperm(len(source), generator=torch.Generator().manual_seed(net.seed)).to(
                    source.x.device
                )
                pick = lambda t, idx: None if t is None else t.index_select(0, idx)  # noqa: E731
                v_idx, t_idx = perm[:n_valid], perm[n_valid:]
                self.valid = TensorSource(pick(source.x, v_idx), pick(source.w, v_idx))
                source = TensorSource(pick(source.x, t_idx), pick(source.w, t_idx))
        self.source = source
        self.generator = torch.Generator().manual_seed(net.seed + 1 + len(net.history))
        self.optimizer = make_optimizer(options.algo, net.params, options.learning_rate, options.momentum)
        self.stepper = steps.StepRunner(
            net,
            regs,
            self.optimizer,
            max_gradient_norm=options.max_gradient_norm,
            precision=options.precision,
            compile=options.compile,
            batch_size=options.batch_size,
        )
        # Batches of one example are left out where a batch norm would have one value per unit.
        self.skip_lone_examples = any(
            getattr(layer, "needs_batches_of_two", False) for layer in net.graph.layers.values()
        )
        self.best_loss = math.inf
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_epoch = 0
        self.epoch = 0
        self.stale = 0  # validations since the last improvement
        self.valid_monitors: dict[str, float] = {}
        self.checkpointer = None  # an aekit.checkpoint.Checkpointer when train(checkpoint=...)
        self.resumed = False

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(algo={self.options.algo!r}, epoch={self.epoch}, "
            f"best_epoch={self.best_epoch}, source={self.source!r})"
        )

    # -------------------------------------------------------------- steps
    def _step(self, xb: torch.Tensor, wb: torch.Tensor | None) -> torch.Tensor:
        """One optimizer step; the detached loss terms in ``self.stepper.keys`` order."""
        return self.stepper(xb, wb)

    def _lbfgs_epoch(self) -> dict[str, float]:
        net, src = self.net, self.source
        stash: dict[str, torch.Tensor] = {}

        def closure() -> torch.Tensor:
            values = self.stepper.gradients(src.x, src.w)  # the hand-derived step, where it applies
            if values is not None:
                stash.clear()
                stash.update(zip(self.stepper.keys, values))
                return values[-1]  # 'loss', the total
            self.optimizer.zero_grad(set_to_none=True)
            total, terms = net.loss_terms(src.x, src.w, self.regs, training=True)
            total.backward()
            stash.clear()
            stash.update({k: v.detach() for k, v in terms.items()})
            return total

        self.optimizer.step(closure)
        return {k: float(v) for k, v in stash.items()}

    def train_epoch(self) -> dict[str, float]:
        """One pass over the training data; returns size-weighted mean monitors.

        Noise and dropout draw from torch's global generator, seeded for the epoch
        from (model seed, epoch number) and put back afterwards: the same ``rng``
        gives the same training run whatever else the process drew, and a resumed
        run draws what an uninterrupted one would.
        """
        if not self.regs.uses_randomness:
            return self._train_epoch()
        devices = [self.net.device.index or 0] if self.net.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.epoch_noise_seed())
            return self._train_epoch()

    def epoch_noise_seed(self) -> int:
        """The seed of this epoch's noise and dropout draws (see :func:`noise_seed`).

        The epoch is counted over the model's whole history (a second ``train`` call
        goes on drawing new noise); the rank makes the replicas of a data-parallel
        run draw different masks for their different examples.
        """
        return noise_seed(self.net.seed, len(self.net.history) + 1, self.rank)

    def _train_epoch(self) -> dict[str, float]:
        self.net.graph.train()
        if self.options.algo == "lbfgs":
            return self._lbfgs_epoch()
        total: torch.Tensor | None = None
        count = 0
        generator = self.generator if self.options.shuffle else None
        if isinstance(self.source, TensorSource):  # each batch is used up before the next one
            batches = self.source.batches(self.options.batch_size, generator, reuse=True)
        else:
            batches = self.source.batches(self.options.batch_size, generator)
        for xb, wb in batches:
            n = xb.shape[0]
            if n == 1 and self.skip_lone_examples:
                # Batch norm cannot normalise one example: leave it out of this epoch's steps (as
                # DataLoader's drop_last would); the shuffle gives it a full batch in another epoch.
                log.debug("skipping a training batch of 1 example: the model has batch norm")
                continue
            values = self._step(xb, wb)
            # Accumulated on the device: no host sync per batch.
            total = values * n if total is None else total.add_(values, alpha=n)
            count += n
        if total is None:
            raise DataError(
                "batch norm needs training batches of at least 2 examples, but the training data has 1 example"
            )
        means = (total / count).tolist()  # the one host sync of the epoch
        return dict(zip(self.stepper.keys, means))

    @torch.no_grad()
    def evaluate(self, source: TensorSource) -> dict[str, float]:
        """Monitors on ``source`` without noise or dropout, in eval mode."""
        net = self.net
        net.graph.eval()
        try:
            sums: dict[str, torch.Tensor] = {}
            count = 0
            for xb, wb in source.batches(VALID_BATCH, None):
                with torch.enable_grad() if self.regs.contractive else torch.no_grad():
                    _, terms = net.loss_terms(xb, wb, self.regs, training=False)
                if self.options.monitors:
                    outputs = net.graph(xb)
                    terms.update(_monitor_terms(self.options.monitors, outputs, xb))
                n = xb.shape[0]
                for k, v in terms.items():
                    v = v.detach().float() * n
                    sums[k] = sums[k] + v if k in sums else v
                count += n
            return {k: float(v) / count for k, v in sums.items()}
        finally:
            net.graph.train()

    # -------------------------------------------------------------- bookkeeping
    def snapshot(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.net.graph.state_dict().items()}

    def params_finite(self) -> bool:
        """True if every parameter is finite (one host sync per parameter)."""
        return all(all_finite(p.detach()) for p in self.net.params)

    def restore_best(self) -> None:
        if self.best_state is not None:
            self.net.graph.load_state_dict(self.best_state)

    def close(self) -> None:
        """Release what the run holds beyond the model (the data-parallel trainer's communication)."""

    def consider(self, loss: float) -> bool:
        """Record ``loss`` for early stopping; True if it is a new best."""
        best = self.best_loss
        if math.isfinite(loss) and (
            not math.isfinite(best) or (best - loss) / max(abs(best), 1e-12) > self.options.min_improvement
        ):
            self.best_loss, self.best_epoch, self.best_state = loss, self.epoch, self.snapshot()
            return True
        return False

    def handle_divergence(self, monitors: dict[str, float], reason: str | None = None) -> None:
        reason = reason or f"the loss became {monitors.get('loss')}"
        message = (
            f"training diverged at epoch {self.epoch}: {reason}; "
            f"parameters restored to the best finite ones (epoch {self.best_epoch}). "
            f"Try a smaller learning_rate (now {self.options.learning_rate:g}), "
            "max_gradient_norm, or scaled input data"
        )
        if self.best_state is None:
            raise TrainingDiverged(
                message.replace(
                    "restored to the best finite ones (epoch 0)", "could not be restored (no finite epoch yet)"
                )
            )
        self.restore_best()
        if self.options.on_nan == "raise":
            raise TrainingDiverged(message)
        warnings.warn(message + "; halving the learning rate and going on", RuntimeWarning, stacklevel=3)
        for group in self.optimizer.param_groups:
            group["lr"] *= 0.5
        self.options.learning_rate *= 0.5
        self.optimizer.state.clear()


def parse_train_arguments(net, kwargs: dict[str, Any]) -> tuple[TrainOptions, dict[str, Any], reg.Regularizers]:
    """``train``'s keywords checked for ``net``: the options, the regularizer keywords and their parsed form.

    Raises
    ------
    ConfigurationError
        An unknown keyword, a value out of range, or a regularizer pattern that chooses nothing.
    """
    options, reg_kwargs = TrainOptions.parse(kwargs)
    regs = reg.Regularizers.from_kwargs(code_layer=net.code_layer, **reg_kwargs)
    net.check_regularizer_targets(regs)
    return options, reg_kwargs, regs


def itertrain(net, x: Any, valid: Any = None, **kwargs: Any) -> Iterator[tuple[dict[str, float], dict[str, float]]]:
    """Validate the options now, then return the epoch generator (see :class:`TrainOptions`)."""
    options, reg_kwargs, regs = parse_train_arguments(net, kwargs)
    trainer = _trainer_class(net, options)(net, x, valid, options, regs)
    if options.checkpoint is not None:
        from .checkpoint import Checkpointer

        trainer.checkpointer = Checkpointer(options, reg_kwargs)
        if options.resume and trainer.checkpointer.resume(trainer):
            return _run(trainer)  # checkpoints are written after any layerwise pretraining
    if options.layerwise:
        return _layerwise(net, x, valid, kwargs, trainer)
    return _run(trainer)


def _trainer_class(net, options: TrainOptions) -> type[_Trainer]:
    """``_Trainer``, or the data-parallel one when this process is part of a distributed run."""
    if options.distributed is False:
        return _Trainer
    from . import distributed

    return distributed.DistributedTrainer if distributed.resolve(options.distributed, net.device) else _Trainer


def _run(trainer: _Trainer) -> Iterator[tuple[dict[str, float], dict[str, float]]]:
    net, opts = trainer.net, trainer.options
    if not trainer.resumed:
        # An initial snapshot so that a NaN in the first epoch can be rolled back.
        trainer.best_state = trainer.snapshot()
        trainer.best_epoch = 0
    validating = opts.validate_every > 0
    try:
        while trainer.epoch < opts.max_epochs:
            trainer.epoch += 1
            train_mon = trainer.train_epoch()
            # A finite loss can hide a last step that made the parameters non-finite.
            loss_finite = math.isfinite(train_mon.get("loss", math.nan))
            if not loss_finite or not trainer.params_finite():
                trainer.handle_divergence(
                    train_mon, None if not loss_finite else "the parameters became NaN or infinite"
                )
                trainer.stale += 1
                if trainer.stale > opts.patience:
                    break
                continue
            if validating and trainer.epoch % opts.validate_every == 0:
                if trainer.valid is not None:
                    trainer.valid_monitors = trainer.evaluate(trainer.valid)
                    criterion = trainer.valid_monitors["loss"]
                else:
                    criterion = train_mon["loss"]
                    if opts.monitors:
                        trainer.valid_monitors = trainer.evaluate(trainer.source)
                if trainer.consider(criterion):
                    trainer.stale = 0
                else:
                    trainer.stale += 1
            elif not validating:
                # Validation off: the latest finite parameters are the ones to keep (and to
                # roll back to if a later epoch diverges).
                trainer.best_state, trainer.best_epoch = trainer.snapshot(), trainer.epoch
            net.history.append(
                {"epoch": len(net.history) + 1, "train": dict(train_mon), "valid": dict(trainer.valid_monitors)}
            )
            log.info("epoch %d: %s", trainer.epoch, " ".join(f"{k}={v:.6g}" for k, v in train_mon.items()))
            stopping = validating and trainer.stale > opts.patience
            if trainer.checkpointer is not None and trainer.checkpointer.due(
                trainer.epoch, stopping or trainer.epoch >= opts.max_epochs
            ):
                trainer.checkpointer.save(trainer)  # before yielding: a consumer may stop here
            yield dict(train_mon), dict(trainer.valid_monitors)
            if stopping:
                log.info("early stopping after %d epochs (best: epoch %d)", trainer.epoch, trainer.best_epoch)
                break
    finally:
        if validating or trainer.best_state is not None:
            trainer.restore_best()
        net.graph.train()
        trainer.close()


def _layerwise(net, x, valid, kwargs, full: _Trainer):
    """Greedy layerwise pretraining: encoder depth 1, 2, ... then the whole model."""
    names = list(net.graph.layers)
    code_index = names.index(net.code_layer)
    # Each stage trains with the run's own (already checked) options; only the
    # contractive penalty's default layer moves with the stage's code layer.
    options = dataclasses.replace(full.options, layerwise=False)
    reg_kwargs = {k: v for k, v in kwargs.items() if k in reg.REGULARIZER_KEYS}
    try:
        for depth in range(1, code_index):
            sub = net.graph.subgraph(names[: depth + 1] + names[len(names) - depth :])
            if sub is None:
                log.info("layerwise: skipping depth %d (decoder does not mirror the encoder)", depth)
                continue
            view = copy.copy(net)
            view.graph = sub
            view.history = []
            log.info("layerwise: pretraining %s", " -> ".join(sub.layers))
            regs = reg.Regularizers.from_kwargs(code_layer=names[depth], **reg_kwargs)
            # The epochs yielded next train the sub-model: say which (the CLI's progress shows it).
            net.training_stage = names[depth]
            yield from _run(type(full)(view, x, valid, dataclasses.replace(options), regs))
        net.training_stage = None
        yield from _run(full)
    finally:
        net.training_stage = None
