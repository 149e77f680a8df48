"""The training loop: epochs of steps, validation, divergence handling and callbacks.

``itertrain`` is the engine; ``Autoencoder.train`` drains it.  Design points:

* the data are checked and moved to the device once; each epoch draws one
  permutation and slices contiguous batches from the permuted copy, so samples
  are re-mixed every epoch (theanets kept fixed batches);
* every step goes through one :class:`~aekit.train.step.StepRunner` and one
  :class:`~aekit.objective.Objective`, and data parallelism is a
  :class:`~aekit.train.strategy.Strategy` the loop and the step ask (there is no
  second copy of the step);
* monitor values are summed on the device and read once per epoch (no host
  sync per batch); epoch means weigh each batch by its size;
* after each epoch the callbacks run (:mod:`aekit.train.callbacks`: early
  stopping, the history, checkpoints, then the user's);
* the best parameters (by validation loss, or training loss without validation
  data) are restored when training ends -- also when the caller breaks out of
  the loop or an error escapes;
* nothing fails silently (:mod:`aekit.train.guards`): output-range warnings at the
  start, divergence also by growth, an ``EarlyStoppingWarning`` for every early stop;
* ``max_gradient_norm`` clips the global norm over all parameters (theanets
  called per-tensor clipping global).

The loop never imports the model class: it works on any object with the
attributes the :class:`Trainer` docstring lists.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import warnings
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..data.checks import all_finite, split_data
from ..data.sources import StreamingSource, TensorSource, is_streamable
from ..errors import ConfigurationError, DataError, EarlyStoppingWarning, TrainingDiverged
from ..objective import likelihood
from ..objective import penalties as reg
from ..objective.metrics import MetricBatch, build_metrics, compute_all, update_all
from . import dead_latents
from .callbacks import Callback, Checkpoint, EarlyStopping, History, divergence_stopping_message
from .data_init import start_from_data
from .guards import check_output_ranges, growth_reason, sample, starting_loss, warn_tail_split
from .optimizers import ALGORITHMS, make_optimizer
from .options import TrainOptions
from .step import StepRunner
from .strategy import SingleProcess, Strategy
from .threads import training_threads

if TYPE_CHECKING:
    from .checkpoint import Checkpointer

__all__ = ["ALGORITHMS", "TensorSource", "TrainOptions", "Trainer", "itertrain", "make_optimizer"]

log = logging.getLogger(__name__)

VALID_BATCH = 4096


def noise_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of epoch ``epoch``'s noise and dropout draws (process ``rank`` of a run)."""
    return int(np.random.SeedSequence([seed % 2**64, epoch, rank]).generate_state(1)[0])


def _as_source(net: Any, data: Any, name: str) -> TensorSource | StreamingSource:
    checker = net.input_checker
    # theanets' forms, [x] and [x, w], read here once for the training and the validation data.
    x, w = split_data(data, name, weighted=net.weighted, weights=True, example_shape=checker.shape)
    if net.weighted and w is None:
        given = "[x] without w" if x is not data else type(data).__name__
        raise DataError(f"{name} must be [x, w] for a weighted Autoencoder, got {given}")
    if is_streamable(x):
        # Memory-mapped / on-disk data: read, check and preprocess block by block.
        return StreamingSource(
            x,
            w,
            check=lambda b, n, rows: checker.data(b, name=name, rows=rows),
            check_weights=lambda b, n, rows: checker.weights(b, name=n, rows=rows),
            name=name,
        )
    xt = checker.data(x, name=name)
    wt = None
    if w is not None:
        wt = checker.weights(w, name=f"{name} weights")
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


class Trainer:
    """State of one training run; :func:`itertrain` drives it.

    Parameters
    ----------
    net : model
        Anything with ``graph``, ``device``, ``seed``, ``history``, ``weighted``,
        ``input_checker``, ``objective(regs)`` and ``_check_outputs_exist()`` (an
        :class:`aekit.Autoencoder`).
    x, valid : array-like
        Training and validation data (``valid`` may be None).
    options : TrainOptions
    regs : Regularizers
    strategy : Strategy, optional
        How the run is spread over processes (default: this process only).
    """

    def __init__(
        self,
        net: Any,
        x: Any,
        valid: Any,
        options: TrainOptions,
        regs: reg.Regularizers,
        strategy: Strategy | None = None,
    ):
        self.net = net
        self.options = options
        self.regs = regs
        self.strategy = strategy if strategy is not None else SingleProcess()
        self.strategy.attach(net)
        net._check_outputs_exist()
        source = _as_source(net, x, "x")
        if isinstance(source, TensorSource) and self.strategy.writes_files():  # one warning, not one per process
            check_output_ranges(net.graph, net.losses, source.x, source.w)
        in_memory = source.x if isinstance(source, TensorSource) else None
        watches = valid is None and options.valid_split == 0 and options.validate_every > 0
        likelihood.check_training(net.graph, net.losses, regs, in_memory, watches)
        valid_source = None
        if valid is not None:
            if options.valid_split > 0:  # one of the two would be ignored
                raise ConfigurationError(f"give valid or valid_split, not both (valid_split={options.valid_split})")
            valid_source = _as_source(net, valid, "valid")
        elif options.valid_split > 0 and options.validate_every > 0:
            source, valid_source = _split_off_validation(source, options.valid_split, net.seed)
        self.source, self.valid = self.strategy.prepare(source, valid_source)
        start_from_data(net.graph, source)  # e.g. the SAE recipe's output bias, on a fresh model's first train()
        dead_latents.attach(net.graph, regs, self.strategy.sum_tensor, len(source), options.max_epochs)
        self.generator = torch.Generator().manual_seed(net.seed + 1 + len(net.history))
        self.objective = net.objective(regs)
        # What "the loss grew by orders of magnitude" is measured against; streamed data: see _check_first_batch.
        self.start_loss: float | None = None
        if isinstance(source, TensorSource):
            self.start_loss = self._agreed(
                starting_loss(self.objective, net.graph, *sample(source), bool(regs.contractive))
            )
        assert options.learning_rate is not None  # TrainOptions.validate() filled in the algorithm's default
        self.optimizer = make_optimizer(
            options.algo, list(net.graph.parameters()), options.learning_rate, options.momentum
        )
        self.stepper = StepRunner(
            self.objective,
            self.optimizer,
            max_gradient_norm=options.max_gradient_norm,
            precision=options.precision,
            compile=options.compile,
            batch_size=options.batch_size,
            strategy=self.strategy,
        )
        # Batches of one example are left out where a batch norm would have one value per unit
        # (in one process only: a data-parallel step must mean the same on every process).
        self.skip_lone_examples = self.strategy.world == 1 and any(
            getattr(layer, "needs_batches_of_two", False) for layer in net.graph.layers.values()
        )
        self.best_loss = math.inf
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_epoch = 0
        self.epoch = 0
        self.stale = 0  # validations since the last improvement
        self.stopping = False  # set by a callback (early stopping) to end the run after this epoch
        self.valid_monitors: dict[str, float] = {}
        self.checkpointer: Checkpointer | None = None  # set when train(checkpoint=...)
        self.resumed = False
        self.callbacks: list[Callback] = [EarlyStopping(), History()]
        self.metrics = build_metrics(options.metrics, dict(net.graph.layers.items()), net.code_layer)

    @property
    def rank(self) -> int:
        """The place of this process in a data-parallel run (0 otherwise)."""
        return self.strategy.rank

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(algo={self.options.algo!r}, epoch={self.epoch}, "
            f"best_epoch={self.best_epoch}, source={self.source!r}, strategy={self.strategy!r})"
        )

    # -------------------------------------------------------------- epochs
    def train_epoch(self) -> dict[str, float]:
        """One pass over the training data; returns size-weighted mean monitors.

        Noise, dropout, binarization and latent samples draw from torch's global generator, seeded for the epoch
        from (model seed, epoch number, rank) and put back afterwards: the same ``rng``
        gives the same training run whatever else the process drew, and a resumed
        run draws what an uninterrupted one would.
        """
        layers = self.net.graph.layers.values()
        if not (self.regs.uses_randomness or any(getattr(layer, "draws_noise", False) for layer in layers)):
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

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, float]]:
        generator = self.generator if self.options.shuffle else None
        source, size = self.source, self.options.batch_size
        if hasattr(source, "scaled_batches"):  # one process's share of global batches
            yield from source.scaled_batches(size, generator)
            return
        # In memory, each batch is used up before the next one: gather into one buffer.
        batches = (
            source.batches(size, generator, reuse=True)
            if isinstance(source, TensorSource)
            else (source.batches(size, generator))
        )
        for xb, wb in batches:
            yield xb, wb, 1.0

    def _train_epoch(self) -> dict[str, float]:
        self.net.graph.train()
        self.strategy.begin_epoch(self.net.graph)
        if self.options.algo == "lbfgs":
            return self._lbfgs_epoch()
        total: torch.Tensor | None = None
        count = 0
        for xb, wb, scale in self._batches():
            n = xb.shape[0]
            if n == 1 and self.skip_lone_examples:
                # Batch norm cannot normalise one example: leave it out of this epoch's steps (as
                # DataLoader's drop_last would); the shuffle gives it a full batch in another epoch.
                log.debug("skipping a training batch of 1 example: the model has batch norm")
                continue
            if self.start_loss is None:
                self._check_first_batch(xb, wb)
            values = self.stepper(xb, wb, scale)
            # Accumulated on the device: no host sync per batch.
            total = values * n if total is None else total.add_(values, alpha=n)
            count += n
        if total is None:
            if self.strategy.world > 1:
                raise DataError(
                    f"no training step this epoch: every block of {len(self.source)} rows is smaller "
                    f"than the {self.strategy.world} processes; use more data or larger streaming blocks"
                )
            raise DataError(
                "batch norm needs training batches of at least 2 examples, but the training data has 1 example"
            )
        self.strategy.sync_state(self.net.graph)
        means = self.strategy.epoch_means(total, count)  # the one host sync of the epoch
        return dict(zip(self.stepper.keys or [], means))

    def _agreed(self, loss: float) -> float:
        """The starting loss all processes judge divergence by (one all-reduce in a data-parallel run)."""
        return self.strategy.reduce_means({"loss": loss}, 1)["loss"]

    def _check_first_batch(self, xb: torch.Tensor, wb: torch.Tensor | None) -> None:
        """Streamed data: the output-range check and the starting loss on the first batch read, before its step.

        A file is read once per epoch: a check of its own at the start would read rows twice.
        """
        if self.strategy.writes_files():
            check_output_ranges(
                self.net.graph, self.net.losses, xb, wb, "the values of the first training batch (streamed data)"
            )
        self.start_loss = self._agreed(
            starting_loss(self.objective, self.net.graph, xb, wb, bool(self.regs.contractive))
        )

    def _lbfgs_epoch(self) -> dict[str, float]:
        """One L-BFGS iteration over the whole (local) data, through the same step runner."""
        local, shared = self.strategy.local_part(self.source)
        if isinstance(local, StreamingSource):
            _ = local.x  # raises the ConfigurationError that explains why L-BFGS cannot stream
        n = len(local)
        scale = n * self.strategy.world / len(self.source) if shared else 1.0
        stash: dict[str, float] = {}

        def closure() -> torch.Tensor:
            values = self.stepper.gradients(local.x, local.w, scale)
            terms = dict(zip(self.stepper.keys or [], values))
            stash.clear()
            stash.update(self.strategy.reduce_means(terms, n) if shared else {k: float(v) for k, v in terms.items()})
            # The global loss: every process's line search must see the same number.
            return torch.tensor(stash["loss"], dtype=torch.float32, device=local.x.device)

        # torch.optim.LBFGS takes a closure that returns the loss tensor (Optimizer.step's types want a float).
        assert isinstance(self.optimizer, torch.optim.LBFGS)  # algo='lbfgs' made it
        self.optimizer.step(closure)
        self.stepper.after_update()
        self.strategy.sync_state(self.net.graph)
        return dict(stash)

    @torch.no_grad()
    def evaluate(self, source: Any) -> dict[str, float]:
        """Monitors on ``source`` without noise or dropout, in eval mode, over every process's part."""
        local, shared = self.strategy.local_part(source)
        for metric in self.metrics.values():
            metric.reset()
        means = self._evaluate(local)
        if shared:
            means = self.strategy.reduce_means(means, len(local))
            for metric in self.metrics.values():
                state = metric.state()
                if state is not None:
                    metric.load_state(self.strategy.sum_tensor(state))
        means.update(compute_all(self.metrics))  # over the whole data set, not per batch
        return means

    def _evaluate(self, source: Any) -> dict[str, float]:
        graph = self.net.graph
        graph.eval()
        try:
            sums: dict[str, torch.Tensor] = {}
            count = 0
            for xb, wb in source.batches(VALID_BATCH, None):
                with torch.enable_grad() if self.regs.contractive else torch.no_grad():
                    _, terms = self.objective(xb, wb, training=False)
                if self.options.monitors or self.metrics:
                    outputs = graph(xb)
                    terms.update(_monitor_terms(self.options.monitors, outputs, xb))
                    update_all(self.metrics, MetricBatch(outputs, xb, wb, graph.output_name))
                n = xb.shape[0]
                for k, v in terms.items():
                    v = v.detach().float() * n
                    sums[k] = sums[k] + v if k in sums else v
                count += n
            return {k: float(v) / count for k, v in sums.items()}
        finally:
            graph.train()

    def criterion(self, train_monitors: dict[str, float]) -> float:
        """The loss early stopping compares: validation loss if there are validation data, else training loss."""
        return self.valid_monitors["loss"] if self.valid is not None else train_monitors["loss"]

    def validate(self) -> None:
        """Update ``valid_monitors`` when this epoch validates.

        On the validation data, or with monitors asked for, on the training data.
        """
        options = self.options
        if options.validate_every == 0 or self.epoch % options.validate_every:
            return
        if self.valid is not None:
            self.valid_monitors = self.evaluate(self.valid)
        elif options.monitors or options.metrics:
            self.valid_monitors = self.evaluate(self.source)

    # -------------------------------------------------------------- bookkeeping
    def snapshot(self) -> dict[str, torch.Tensor]:
        """A copy of every parameter and buffer of the graph."""
        return {k: v.detach().clone() for k, v in self.net.graph.state_dict().items()}

    def params_finite(self) -> bool:
        """True if every parameter is finite (one host sync per parameter)."""
        return all(all_finite(p.detach()) for p in self.net.graph.parameters())

    def restore_best(self) -> None:
        """Load the best parameters seen (if any) back into the graph."""
        if self.best_state is not None:
            self.net.graph.load_state_dict(self.best_state)

    def close(self) -> None:
        """Release what the run holds beyond the model (the data-parallel strategy's communication)."""
        self.strategy.close()

    def divergence(self, monitors: dict[str, float]) -> str | None:
        """Why this epoch counts as divergence, or None: a loss that is NaN, infinite or grew by orders of magnitude.

        Growth: see :func:`aekit.train.guards.growth_reason`.  A finite loss can also hide a last
        step that made the parameters non-finite.
        """
        loss = monitors.get("loss", math.nan)
        if not math.isfinite(loss):
            return f"the loss became {loss}"
        return growth_reason(loss, self.start_loss) or (
            None if self.params_finite() else "the parameters became NaN or infinite"
        )

    def handle_divergence(self, monitors: dict[str, float], reason: str | None = None) -> None:
        """Roll back to the best finite parameters, then raise or (``on_nan='warn'``) halve the rate and go on."""
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
        assert self.options.learning_rate is not None  # TrainOptions.validate() filled in the default
        self.options.learning_rate *= 0.5
        self.optimizer.state.clear()


_Trainer = Trainer  # the name older code used


def _split_off_validation(
    source: TensorSource | StreamingSource, fraction: float, seed: int
) -> tuple[TensorSource | StreamingSource, TensorSource | StreamingSource]:
    """``valid_split``: a random fraction of in-memory rows (a contiguous tail when streaming) for validation.

    In memory the rows are a seeded random permutation's first ``round(n * fraction)``, so sorted
    data (by class) give a validation set like the training set.  Streamed data are read block by
    block, so their validation rows are the last ones, with an :class:`~aekit.errors.AekitWarning`
    that says so.
    """
    n_valid = int(round(len(source) * fraction))
    if n_valid < 1 or n_valid >= len(source):
        raise DataError(f"valid_split={fraction} leaves no examples for training or validation out of {len(source)}")
    if isinstance(source, StreamingSource):
        train, valid = source.split_tail(n_valid)  # a contiguous tail block: no random reads
        warn_tail_split(fraction, valid.start, valid.stop)
        return train, valid
    perm = torch.randperm(len(source), generator=torch.Generator().manual_seed(seed)).to(source.x.device)

    def pick(t: torch.Tensor | None, idx: torch.Tensor) -> torch.Tensor | None:
        return None if t is None else t.index_select(0, idx)

    v_idx, t_idx = perm[:n_valid], perm[n_valid:]
    return TensorSource(source.x.index_select(0, t_idx), pick(source.w, t_idx)), TensorSource(
        source.x.index_select(0, v_idx), pick(source.w, v_idx)
    )


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


def itertrain(
    net: Any, x: Any, valid: Any = None, **kwargs: Any
) -> Iterator[tuple[dict[str, float], dict[str, float]]]:
    """Validate the options now, then return the epoch generator (see :class:`TrainOptions`)."""
    options, reg_kwargs, regs = parse_train_arguments(net, kwargs)
    trainer = Trainer(net, x, valid, options, regs, _strategy(net, options))
    if options.checkpoint is not None:
        from .checkpoint import Checkpointer

        checkpointer = trainer.checkpointer = Checkpointer(options, reg_kwargs)
        if options.resume:
            resumed = checkpointer.resume(trainer)
            trainer.strategy.agree_on_resume(resumed, trainer.epoch, str(checkpointer.path))
            if resumed:
                return _run(trainer)  # checkpoints are written after any layerwise pretraining
    if options.layerwise:
        return _layerwise(net, x, valid, kwargs, trainer)
    return _run(trainer)


def _strategy(net: Any, options: TrainOptions) -> Strategy:
    """A single-process strategy, or the data-parallel one when this process is part of a distributed run."""
    if options.distributed is False:
        return SingleProcess()
    from . import distributed

    return distributed.DataParallel() if distributed.resolve(options.distributed, net.device) else SingleProcess()


def _run(trainer: Trainer) -> Iterator[tuple[dict[str, float], dict[str, float]]]:
    net, opts = trainer.net, trainer.options
    if not trainer.resumed:
        # An initial snapshot so that a NaN in the first epoch can be rolled back.
        trainer.best_state = trainer.snapshot()
        trainer.best_epoch = 0
    callbacks = list(trainer.callbacks)
    if trainer.checkpointer is not None:
        callbacks.append(Checkpoint(trainer.checkpointer))
    callbacks += opts.callbacks
    validating = opts.validate_every > 0
    # The run's CPU threads (aekit.train.threads), put back when the generator finishes or is closed.
    resources = contextlib.ExitStack()
    resources.enter_context(training_threads(opts.threads, net.graph, tuple(net.graph.input_shape), opts.batch_size))
    try:
        for callback in callbacks:
            callback.on_train_begin(trainer)
        while trainer.epoch < opts.max_epochs:
            trainer.epoch += 1
            train_mon = trainer.train_epoch()
            reason = trainer.divergence(train_mon)
            if reason is not None:
                trainer.handle_divergence(train_mon, reason)  # raises unless on_nan='warn'
                trainer.stale += 1
                if opts.patience is not None and trainer.stale > opts.patience:
                    warnings.warn(divergence_stopping_message(trainer), EarlyStoppingWarning, stacklevel=2)
                    break
                continue
            trainer.validate()
            for callback in callbacks:
                callback.on_epoch_end(trainer, train_mon, trainer.valid_monitors)
            yield dict(train_mon), dict(trainer.valid_monitors)
            if trainer.stopping:  # EarlyStopping warned (or a callback of the user's asked)
                log.info("stopping after %d epochs (best: epoch %d)", trainer.epoch, trainer.best_epoch)
                break
    finally:
        if validating or trainer.best_state is not None:
            trainer.restore_best()
        net.graph.train()
        try:
            for callback in callbacks:
                callback.on_train_end(trainer)
        finally:
            trainer.close()
            resources.close()


def _layerwise(net, x, valid, kwargs, full: Trainer):
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
            yield from _run(Trainer(view, x, valid, dataclasses.replace(options), regs, _strategy(view, options)))
        net.training_stage = None
        yield from _run(full)
    finally:
        net.training_stage = None
