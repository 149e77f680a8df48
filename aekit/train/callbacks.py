"""The callback protocol of a training run, and the callbacks every run uses.

A :class:`Callback` is told when training starts, after each epoch and when it
ends.  ``train(callbacks=[...])`` adds yours after the built-in ones, which run
in this order after each epoch:

1. :class:`EarlyStopping` -- compares the epoch's criterion (the validation
   loss, else the training loss) with the best so far, keeps the best
   parameters, and asks the loop to stop (with an
   :class:`~aekit.errors.EarlyStoppingWarning`) once more than ``patience``
   validations in a row made no progress;
2. :class:`History` -- appends ``{'epoch', 'train', 'valid'}`` to ``net.history``;
3. :class:`Checkpoint` -- writes the whole training state every
   ``checkpoint_every`` epochs and at the end (see :mod:`aekit.train.checkpoint`).

A callback may also act around every optimizer step: in :meth:`Callback.on_train_begin`
append functions to ``trainer.stepper.gradient_hooks`` (called after backward, before
clipping and the update) or ``trainer.stepper.post_step_hooks`` (after the update).
They run on every step path, the hand-derived one included.

Examples
--------
>>> import numpy as np, aekit
>>> from aekit.train.callbacks import Callback
>>> class Losses(Callback):
...     def __init__(self):
...         self.seen = []
...     def on_epoch_end(self, trainer, train_monitors, valid_monitors):
...         self.seen.append(round(train_monitors['loss'], 3))
>>> record = Losses()
>>> net = aekit.Autoencoder([4, (2, 'sigmoid'), (4, 'tied')], rng=0)
>>> _ = net.train(np.zeros((8, 4), 'float32'), max_epochs=2, validate_every=0, callbacks=[record])
>>> len(record.seen)
2
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

from ..errors import EarlyStoppingWarning

__all__ = [
    "Callback",
    "Checkpoint",
    "EarlyStopping",
    "History",
    "divergence_stopping_message",
    "early_stopping_message",
]

log = logging.getLogger(__name__)


class Callback:
    """Base class: every method does nothing; override the ones you need.

    ``trainer`` is the run's :class:`aekit.train.loop.Trainer`: ``trainer.net`` is the
    model, ``trainer.epoch`` the epoch counter, ``trainer.stepper`` the step runner,
    ``trainer.stopping`` whether the loop stops after this epoch (a callback may set it).
    """

    def on_train_begin(self, trainer: Any) -> None:
        """Called once, before the first epoch (after any resume)."""

    def on_epoch_end(self, trainer: Any, train_monitors: dict[str, float], valid_monitors: dict[str, float]) -> None:
        """Called after each finished epoch with its monitors (before the epoch is yielded)."""

    def on_train_end(self, trainer: Any) -> None:
        """Called once when training ends, also when it ends early or by an error."""


class EarlyStopping(Callback):
    """Keep the best parameters and stop once more than ``patience`` validations in a row made no progress.

    The criterion is the validation loss (``valid_monitors['loss']``: the whole objective,
    penalties included, on the validation data without noise or dropout) when there are
    validation data, else the training loss (the epoch's mean of ``train_monitors['loss']``).
    A validation is progress when it improves on the best by more than ``min_improvement``
    (relative).  Stopping is never silent: it issues an
    :class:`~aekit.errors.EarlyStoppingWarning` that names the epoch, the rule and how to turn
    it off.  ``patience=None`` never stops (the best parameters are still kept); with
    ``validate_every=0`` the latest finite parameters are the ones kept.  The state lives on
    the trainer (``best_loss``, ``best_state``, ``best_epoch``, ``stale``), so that
    checkpoints hold it.
    """

    def on_epoch_end(self, trainer: Any, train_monitors: dict[str, float], valid_monitors: dict[str, float]) -> None:
        """Count a validation without progress, keep a new best, and set ``trainer.stopping`` when patience runs out.

        Parameters
        ----------
        trainer : Trainer
        train_monitors, valid_monitors : dict of str to float
            The epoch's monitors on the training data, and the latest validation's (empty before the first).
        """
        options = trainer.options
        if options.validate_every == 0:
            # Validation off: the latest finite parameters are the ones to keep (and to
            # roll back to if a later epoch diverges).
            trainer.best_state, trainer.best_epoch = trainer.snapshot(), trainer.epoch
            return
        if trainer.epoch % options.validate_every:
            return
        criterion = trainer.criterion(train_monitors)
        if consider(trainer, criterion):
            trainer.stale = 0
        else:
            trainer.stale += 1
        if options.patience is not None and trainer.stale > options.patience and not trainer.stopping:
            trainer.stopping = True
            warnings.warn(early_stopping_message(trainer), EarlyStoppingWarning, stacklevel=3)  # the epochs' consumer


def _count(n: int, noun: str) -> str:
    return noun if n == 1 else f"{n} {noun}s"


def kept_parameters(epoch: int) -> str:
    """Which parameters a stopped run keeps, in words (epoch 0: the ones training started from)."""
    return f"the parameters of epoch {epoch} are kept" if epoch else "the parameters training started from are kept"


def early_stopping_message(trainer: Any) -> str:
    """The one line that says why ``trainer`` stops early, what was watched and how to turn it off."""
    options = trainer.options
    watched = (
        "validation loss"
        if trainer.valid is not None
        else "training loss (there are no validation data: pass valid= or valid_split= to watch held-out data)"
    )
    return (
        f"early stopping at epoch {trainer.epoch} of max_epochs={options.max_epochs}: the {watched} did not "
        f"improve on its best (epoch {trainer.best_epoch}) by more than min_improvement={options.min_improvement:g} "
        f"(relative) in the last {_count(trainer.stale, 'validation')}, more than patience={options.patience}; "
        f"{kept_parameters(trainer.best_epoch)}. To train on, pass patience=None (no early "
        "stopping; the best parameters are still kept) or validate_every=0 (no validation; the last "
        "parameters are kept)"
    )


def divergence_stopping_message(trainer: Any) -> str:
    """Why ``trainer`` stops after diverged epochs (``on_nan='warn'``) used up its patience."""
    options = trainer.options
    return (
        f"training stopped at epoch {trainer.epoch} of max_epochs={options.max_epochs}: the last "
        f"{_count(trainer.stale, 'epoch')} diverged or made no progress, more than patience={options.patience}; "
        f"{kept_parameters(trainer.best_epoch)}. Start with a smaller learning_rate, or pass patience=None "
        "to go on halving it"
    )


def consider(trainer: Any, loss: float) -> bool:
    """Record ``loss`` for early stopping; True (and a snapshot of the parameters) if it is a new best."""
    best = trainer.best_loss
    if math.isfinite(loss) and (
        not math.isfinite(best) or (best - loss) / max(abs(best), 1e-12) > trainer.options.min_improvement
    ):
        trainer.best_loss, trainer.best_epoch, trainer.best_state = loss, trainer.epoch, trainer.snapshot()
        return True
    return False


class History(Callback):
    """Append each epoch's monitors to ``net.history``, counting epochs over the model's whole life.

    An entry is ``{'epoch', 'train', 'valid', 'steps'}``; ``steps`` is the number of optimizer steps
    the epoch took (global batches of ``batch_size`` per process; one per L-BFGS epoch).
    """

    def on_epoch_end(self, trainer: Any, train_monitors: dict[str, float], valid_monitors: dict[str, float]) -> None:
        """Append the epoch's monitors to ``net.history`` and log the training ones.

        Parameters
        ----------
        trainer : Trainer
        train_monitors, valid_monitors : dict of str to float
            The epoch's monitors on the training data, and the latest validation's (empty before the first).
        """
        net = trainer.net
        batch = trainer.options.batch_size * trainer.strategy.world  # one optimizer step's examples
        net.history.append(
            {
                "epoch": len(net.history) + 1,
                "train": dict(train_monitors),
                "valid": dict(valid_monitors),
                "steps": 1 if trainer.options.algo == "lbfgs" else math.ceil(len(trainer.source) / batch),
            }
        )
        log.info("epoch %d: %s", trainer.epoch, " ".join(f"{k}={v:.6g}" for k, v in train_monitors.items()))


class Checkpoint(Callback):
    """Write the run's state with a :class:`~aekit.train.checkpoint.Checkpointer` when it is due.

    Only the process that writes files (rank 0 of a data-parallel run) writes.

    Parameters
    ----------
    checkpointer : Checkpointer
    """

    def __init__(self, checkpointer: Any):
        self.checkpointer = checkpointer

    def __repr__(self) -> str:
        return f"Checkpoint({self.checkpointer!r})"

    def on_epoch_end(self, trainer: Any, train_monitors: dict[str, float], valid_monitors: dict[str, float]) -> None:
        """Write a checkpoint when one is due (every ``checkpoint_every`` epochs, and after the last).

        Parameters
        ----------
        trainer : Trainer
        train_monitors, valid_monitors : dict of str to float
            The epoch's monitors on the training data, and the latest validation's (empty before the first).
        """
        final = trainer.stopping or trainer.epoch >= trainer.options.max_epochs
        if self.checkpointer.due(trainer.epoch, final) and trainer.strategy.writes_files():
            self.checkpointer.save(trainer)  # before the epoch is yielded: a consumer may stop there
