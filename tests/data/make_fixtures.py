"""Regenerate the committed model-file fixtures (run once per format version, then commit).

    python tests/data/make_fixtures.py

Writes ``model_v1.aekit`` (format version 1: a small tied autoencoder with a
standard-scaling step, trained on fixed inputs) and ``model_v1_expected.npz``
(those inputs and the model's predictions and codes at the time of writing).
``tests/test_fixtures.py`` checks that today's aekit still loads the file and
predicts the same values, so old model files keep working.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main() -> None:
    import aekit

    rng = np.random.default_rng(2024)
    x = rng.normal(size=(40, 6)).astype(np.float32) @ rng.normal(size=(6, 6)).astype(np.float32)
    net = aekit.Autoencoder([6, (3, "tanh"), (6, "tied")], rng=5)
    net.set_preprocessing(aekit.preprocessing.StandardScaler().fit(x))
    net.train(x, max_epochs=3, batch_size=8, validate_every=0)
    probe = x[:5]
    net.save(HERE / "model_v1.aekit")
    np.savez(HERE / "model_v1_expected.npz", x=probe, predict=net.predict(probe), encode=net.encode(probe))
    print(f"wrote {HERE / 'model_v1.aekit'} (aekit {aekit.__version__}, format {aekit.saving.FORMAT_VERSION})")


if __name__ == "__main__":
    main()
