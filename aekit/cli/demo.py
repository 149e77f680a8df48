"""``aekit demo``: a small sparse autoencoder on scikit-learn's 8x8 digits, end to end.

Trains ``[64, (32, 'sigmoid'), (64, 'sigmoid')]`` with binary cross-entropy and
a KL sparsity penalty on 90% of the digits, validates on the rest, saves the
model and (when :mod:`aekit.report` is there) writes a report beside it.
Takes a few seconds on two CPU cores.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["run_demo"]

log = logging.getLogger(__name__)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from ..data.datasets import digits
    except ImportError:  # pragma: no cover - datasets ships with aekit
        from sklearn.datasets import load_digits

        data = load_digits()
        return (data.data / 16.0).astype(np.float32), data.target
    return digits()


def run_demo(output: str | os.PathLike = "demo-output", epochs: int = 40, quiet: bool = False) -> dict[str, Any]:
    """Train the demo model and save it (and a report) into ``output``.

    Returns
    -------
    dict
        ``epochs``, ``train_loss``, ``valid_loss``, ``r2`` (held-out digits),
        ``seconds``, ``model`` (path), ``report`` (path or None), ``net`` (its repr),
        ``n_train`` and ``n_valid``.
    """
    from ..autoencoder import Autoencoder
    from .progress import progress

    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    x, labels = _digits()
    order = np.random.default_rng(0).permutation(len(x))
    n_valid = len(x) // 10
    valid, train = x[order[:n_valid]], x[order[n_valid:]]

    net = Autoencoder([64, (32, "sigmoid"), (64, "sigmoid")], loss="bce", rng=0)
    start = time.perf_counter()
    train_mon: dict[str, float] = {}
    valid_mon: dict[str, float] = {}
    epochs_iter = net.itertrain(
        train,
        valid,
        algo="adam",
        learning_rate=1e-2,
        batch_size=64,
        max_epochs=epochs,
        patience=5,
        sparsity_target=0.1,
        sparsity_weight=0.05,
    )
    for monitors in progress(epochs_iter, epochs, quiet):
        train_mon, valid_mon = monitors
    seconds = time.perf_counter() - start
    model_path = folder / "model.aekit"
    net.save(str(model_path))
    r2 = net.score(valid)
    summary = {
        "epochs": len(net.history),
        "train_loss": train_mon.get("loss", math.nan),
        "valid_loss": valid_mon.get("loss", math.nan),
        "r2": r2,
        "seconds": seconds,
        "model": str(model_path),
        "report": None,
    }
    summary["net"] = repr(net)
    summary["n_train"], summary["n_valid"] = len(train), len(valid)
    log.info("demo: %d epochs, valid loss %.4f, R^2 %.3f", summary["epochs"], summary["valid_loss"], r2)
    try:
        from ..inspect.report import write_report
    except ImportError:  # pragma: no cover - the report ships with aekit; without it the demo only trains
        return summary
    report = write_report(net, x, folder, labels=labels)
    summary["report"] = str(report) if report else str(folder)
    return summary
