"""The callback protocol of a training run, and the callbacks every run uses.

A :class:`Callback` is told when training starts, after each epoch and when it
ends.  ``train(callbacks=[...])`` adds yours after the built-in ones, which run
in this order after each epoch:

1. :class:`EarlyStopping` -- compares the epoch's criterion (the validation
   loss, else the training loss) with the best so far, keeps the best
   parameters, and asks the loop to stop after ``patience`` epochs without
   progress;
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
from typing import Any

__all__ = ["Callback", "Checkpoint", "EarlyStopping", "History"]

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
    """Keep the best parameters and stop after ``patience`` validations without progress.

    The criterion is the validation loss when there are validation data, else the
    training loss.  A validation is progress when it improves on the best by more than
    ``min_improvement`` (relative).  With ``validate_every=0`` the latest finite
    parameters are the ones kept.  The state lives on the trainer (``best_loss``,
    ``best_state``, ``best_epoch``, ``stale``), so that checkpoints hold it.
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
        trainer.stopping = trainer.stopping or trainer.stale > options.patience


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
