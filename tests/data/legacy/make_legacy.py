"""Write the legacy fixtures in this folder with the OLD aekit (commit 0ff98ae, before the re-layering).

These files are what a user of aekit 0ff98ae has on disk; ``tests/test_legacy_files.py`` checks that
the current code reads them and computes exactly what the old code computed.  They were written by
running, with the old version's own virtual environment (torch 2.13.0+cpu)::

    git worktree add --detach /work/wt-old 0ff98ae
    cd /work/wt-old && make venv
    cd /work/wt-old && .venv/bin/python /path/to/this/checkout/tests/data/legacy/make_legacy.py

From ``/work/wt-old``, ``import aekit`` is the old code (the script refuses to run otherwise, see
``_check_old_version``).  Do not re-run it with a newer aekit: the point of these files is that they
were written by the old one.  Everything is seeded and run on one CPU thread, so a re-run with
0ff98ae on the same torch build writes the same numbers.

Files (all in this folder):

* ``dense.aekit`` -- 64-(16, sigmoid)-(64, tied) on ``load_digits() / 16`` with a StandardScaler
  attached (``net.set_preprocessing``); ``dense_x.npy`` (input rows), ``dense_predict.npy``,
  ``dense_encode.npy``.
* ``conv.aekit`` -- (1, 8, 8)-conv2(4 channels, stride 2, batch_norm=True)-tied, 2 epochs;
  ``conv_x.npy``, ``conv_predict.npy``, ``conv_encode.npy``.
* ``run.ckpt`` -- the checkpoint an Adam run (input noise, hidden L1) wrote after epoch 3 of
  ``train(..., max_epochs=3, checkpoint=...)``; ``ckpt_data.npy`` (the data it trained on),
  ``ckpt_predict.npy`` / ``ckpt_encode.npy`` (the checkpoint's model on ``ckpt_data``),
  ``ckpt_resumed.npz`` (parameters and buffers after resuming with the same call and
  ``max_epochs=5, resume=True``, plus ``predict`` and ``encode`` of the resumed model),
  ``ckpt_resumed.json`` (the call's options, ``train()``'s return value, the history and
  ``checkpoint_info`` of the checkpoint).  The script checks that the resumed run ends bit for bit
  where an uninterrupted 5-epoch old run ends.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import aekit
import aekit.checkpoint

OLD_COMMIT = "0ff98ae"
HERE = Path(__file__).resolve().parent

# The checkpointed run: the same call is used to write the checkpoint (max_epochs=CKPT_EPOCHS),
# to resume it (max_epochs=CKPT_EPOCHS + 2, resume=True) and, as a check, uninterrupted.
CKPT_LAYERS = [12, (6, "relu"), (12, "tied")]
CKPT_SEED = 7
CKPT_EPOCHS = 3
CKPT_OPTIONS = dict(algo="adam", learning_rate=3e-3, batch_size=16, input_noise=0.05, hidden_l1=1e-3)


def _check_old_version() -> None:
    """Refuse to write fixtures with anything but the old code."""
    package = Path(aekit.__file__).resolve().parent
    head = subprocess.run(
        ["git", "-C", str(package), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(package), "status", "--porcelain", "--", "."], capture_output=True, text=True, check=True
    ).stdout.strip()
    if not head.startswith(OLD_COMMIT) or dirty:
        sys.exit(
            f"import aekit gives {package} at {head[:10]}{' (modified)' if dirty else ''}; "
            f"run this script with the old version {OLD_COMMIT} (see the docstring)"
        )
    if torch.__version__.split("+")[0] != "2.13.0":
        sys.exit(f"expected torch 2.13.0 (the pinned build), got {torch.__version__}")


def _save(name: str, array: np.ndarray) -> None:
    np.save(HERE / name, np.ascontiguousarray(array))


def _state(net) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in net.graph.state_dict().items()}


def digits() -> np.ndarray:
    from sklearn.datasets import load_digits

    return (load_digits().data / 16.0).astype(np.float32)


def write_dense(x_all: np.ndarray) -> None:
    x_train, x = x_all[:600], x_all[1700:1732]
    net = aekit.Autoencoder([64, (16, "sigmoid"), (64, "tied")], rng=11)
    net.set_preprocessing(aekit.preprocessing.StandardScaler().fit(x_train))
    net.train(x_train, max_epochs=4, batch_size=32, validate_every=0)
    net.save(str(HERE / "dense.aekit"))
    _save("dense_x.npy", x)
    _save("dense_predict.npy", net.predict(x))
    _save("dense_encode.npy", net.encode(x))


def write_conv(x_all: np.ndarray) -> None:
    x_train, x = x_all[:256].reshape(-1, 1, 8, 8), x_all[1732:1756].reshape(-1, 1, 8, 8)
    layers = [
        (1, 8, 8),
        dict(form="conv2", channels=4, stride=2, batch_norm=True, name="code"),
        dict(form="tied", activation="sigmoid"),
    ]
    net = aekit.Autoencoder(layers, rng=5)
    net.train(x_train, max_epochs=2, batch_size=32, validate_every=0)
    net.save(str(HERE / "conv.aekit"))
    _save("conv_x.npy", x)
    _save("conv_predict.npy", net.predict(x))
    _save("conv_encode.npy", net.encode(x))


def write_checkpoint() -> None:
    data = np.random.default_rng(2024).normal(size=(96, 12)).astype(np.float32)
    data[:, 6:] = data[:, :6] * 0.5 + 0.1 * data[:, 6:]  # some structure to learn
    _save("ckpt_data.npy", data)
    path = HERE / "run.ckpt"
    path.unlink(missing_ok=True)
    aekit.Autoencoder(CKPT_LAYERS, rng=CKPT_SEED).train(
        data, max_epochs=CKPT_EPOCHS, checkpoint=str(path), **CKPT_OPTIONS
    )
    at_checkpoint = aekit.checkpoint.load_checkpoint_model(str(path))
    _save("ckpt_predict.npy", at_checkpoint.predict(data))
    _save("ckpt_encode.npy", at_checkpoint.encode(data))
    info = aekit.checkpoint.checkpoint_info(str(path))

    with tempfile.TemporaryDirectory() as tmp:
        # Resume a copy: resuming rewrites the checkpoint, and run.ckpt must stay the epoch-3 one.
        copy = Path(tmp) / "run.ckpt"
        shutil.copyfile(path, copy)
        resumed = aekit.Autoencoder(CKPT_LAYERS, rng=CKPT_SEED)
        monitors = resumed.train(data, max_epochs=CKPT_EPOCHS + 2, checkpoint=str(copy), resume=True, **CKPT_OPTIONS)
        straight = aekit.Autoencoder(CKPT_LAYERS, rng=CKPT_SEED)
        straight.train(data, max_epochs=CKPT_EPOCHS + 2, checkpoint=str(Path(tmp) / "straight.ckpt"), **CKPT_OPTIONS)
    state, reference = _state(resumed), _state(straight)
    assert list(state) == list(reference), (list(state), list(reference))
    for key in state:
        assert np.array_equal(state[key], reference[key]), f"old version: resumed != uninterrupted at {key}"
    assert resumed.history == straight.history

    np.savez(
        HERE / "ckpt_resumed.npz",
        predict=resumed.predict(data),
        encode=resumed.encode(data),
        **{f"state.{k}": v for k, v in state.items()},
    )
    record = {
        "written_by": {
            "aekit_commit": OLD_COMMIT,
            "aekit_version": getattr(aekit, "__version__", None),
            "torch": torch.__version__,
        },
        "layers": CKPT_LAYERS,
        "rng": CKPT_SEED,
        "checkpoint_epochs": CKPT_EPOCHS,
        "resume_max_epochs": CKPT_EPOCHS + 2,
        "options": CKPT_OPTIONS,
        "monitors": list(monitors),
        "history": resumed.history,
        "checkpoint_info": {k: info[k] for k in ("epoch", "best_epoch", "best_loss", "history")},
    }
    (HERE / "ckpt_resumed.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")


def main() -> None:
    _check_old_version()
    torch.set_num_threads(1)  # the legacy test runs on one thread too: no thread-count dependent sums
    torch.manual_seed(0)  # torch's global generator (stored in the checkpoint) starts from a random seed
    x_all = digits()
    write_dense(x_all)
    write_conv(x_all)
    write_checkpoint()
    total = 0
    for file in sorted(HERE.iterdir()):
        if file.name != Path(__file__).name:
            total += file.stat().st_size
            print(f"{file.stat().st_size:8d}  {file.name}")
    print(f"{total:8d}  total")


if __name__ == "__main__":
    main()
