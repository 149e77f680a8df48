"""Training progress on stderr: a tqdm bar on a terminal, else one line per epoch."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Iterator

__all__ = ["progress"]

# The (train, valid) monitor values of one epoch.
Monitors = tuple[dict[str, float], dict[str, float]]


def _epoch_line(
    epoch: int, total: int, train: dict[str, float], valid: dict[str, float], stage: str | None = None
) -> str:
    line = f"{stage + ': ' if stage else ''}epoch {epoch}/{total}: loss={train.get('loss', math.nan):.6g}"
    if "loss" in valid:
        line += f" valid={valid['loss']:.6g}"
    return line


def progress(
    epochs: Iterable[Monitors],
    total: int,
    quiet: bool = False,
    epoch_of: Callable[[], int] | None = None,
    stage_of: Callable[[], str | None] | None = None,
) -> Iterator[Monitors]:
    """Show training progress on stderr: a tqdm bar on a terminal, else one line per epoch.

    Parameters
    ----------
    epochs : iterable of (dict, dict)
        The ``(train, valid)`` monitor values of each epoch, as
        :meth:`aekit.Autoencoder.itertrain` yields them; ``'loss'`` is shown.
    total : int
        The most epochs the run may take (the bar's length).
    quiet : bool
        Show nothing; the epochs pass through unchanged.
    epoch_of : callable, optional
        ``epoch_of()`` gives the current epoch number (a resumed run does not start at 1).
    stage_of : callable, optional
        ``stage_of()`` names the pretraining stage an epoch belongs to (``'pretraining hid1'``),
        or None for the epochs of the model itself; a stage counts its own epochs.

    Yields
    ------
    (dict, dict)
        Each item of ``epochs``, once it is shown.
    """
    if quiet:
        yield from epochs
        return
    count = 0
    stage: str | None = None
    stage_count = 0

    def step() -> tuple[int, str | None]:
        nonlocal count, stage, stage_count
        now = stage_of() if stage_of is not None else None
        if now is not None:
            stage_count = stage_count + 1 if now == stage else 1
            stage = now
            return stage_count, now
        stage = None
        count += 1
        return (epoch_of() if epoch_of is not None else count), None

    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        with tqdm(total=total, unit="epoch", file=sys.stderr, dynamic_ncols=True) as bar:
            for train, valid in epochs:
                epoch, label = step()
                post = {"loss": f"{train.get('loss', math.nan):.4g}"}
                if "loss" in valid:
                    post["valid"] = f"{valid['loss']:.4g}"
                bar.set_description(f"{label} {epoch}/{total}" if label else "", refresh=False)
                bar.set_postfix(post)
                if label is None:
                    bar.update(max(epoch - bar.n, 0))
                yield train, valid
        return
    for train, valid in epochs:
        epoch, label = step()
        print(_epoch_line(epoch, total, train, valid, label), file=sys.stderr, flush=True)
        yield train, valid
