"""The README's pictures of the unit browser: an MNIST autoencoder and a top-k SAE on MiniLM activations.

Trains both models briefly, writes their pages with ``aekit.inspect.browse`` and photographs
them in headless Chromium (Debian's ``chromium`` and ``chromedriver``; ``tests/webdriver.py``
drives them).  Needs ``../shared/data`` (MNIST and minilm-acts).

Run ``python examples/browser_screenshots.py [--output docs]``; it writes
``browser_mnist.png`` and ``browser_minilm_sae.png``.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import tempfile
from pathlib import Path

import numpy as np

import aekit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import minilm_data  # noqa: E402
import webdriver  # noqa: E402

MNIST = ROOT.parent / "shared" / "data" / "mnist"


def mnist_page(folder: Path) -> Path:
    raw = gzip.open(MNIST / "train-images-idx3-ubyte.gz").read()
    x = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 784)[:20000].astype(np.float32) / 255
    y = np.frombuffer(gzip.open(MNIST / "train-labels-idx1-ubyte.gz").read(), np.uint8, offset=8)[:20000]
    net = aekit.Autoencoder([784, (64, "relu"), (784, "sigmoid")], loss="bce", rng=0)
    net.train(x, batch_size=64, max_epochs=8, learning_rate=2e-3)
    aekit.inspect.browse(net, x, folder, labels=y, k=10, title="MNIST autoencoder, 784-64-784")
    return folder


def sae_page(folder: Path) -> Path:
    x = minilm_data.acts(30000)
    sae = aekit.Autoencoder(
        [384, dict(size=2048, activation="topk:16", name="code"),
         dict(size=384, activation="linear", constraint="unit_norm")],
        rng=0,
    )  # fmt: skip
    sae.train(x, batch_size=512, max_epochs=3, learning_rate=1e-3)
    contexts = minilm_data.contexts()[: len(x)]
    aekit.inspect.browse(sae, x, folder, contexts=contexts, k=10, title="Top-k SAE on MiniLM layer 3, 2,048 latents")
    return folder


def photograph(browser, folder: Path, unit: int, path: Path, sort: str | None = None) -> None:
    browser.get("about:blank")
    browser.get((folder / "index.html").as_uri() + f"#unit={unit}")
    browser.wait("return document.body.getAttribute('data-ready') === '1'")
    browser.wait(f"return document.getElementById('card').getAttribute('data-unit') === '{unit}'")
    if sort:
        browser.run(
            f"const s = document.getElementById('sort'); s.value = '{sort}'; s.dispatchEvent(new Event('change'))"
        )
    browser.run("document.getElementById('browser').scrollIntoView()")
    browser.screenshot(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=str(ROOT / "docs"))
    out = Path(parser.parse_args().output)
    with tempfile.TemporaryDirectory() as tmp, webdriver.Browser(width=1300, height=900) as browser:
        mnist = mnist_page(Path(tmp) / "mnist")
        photograph(browser, mnist, 7, out / "browser_mnist.png")
        sae = sae_page(Path(tmp) / "sae")
        # A latent that fires rarely but strongly: the kind a reader of an SAE looks for.
        browser.get((sae / "index.html").as_uri())
        summary = browser.wait("return window.aekitPage.state.summary")
        density, peak = np.asarray(summary["density"], float), np.asarray(summary["max"], float)
        rare = np.flatnonzero((density > 1e-3) & (density < 1e-2))
        unit = int(rare[np.argmax(peak[rare])]) if rare.size else 0
        photograph(browser, sae, unit, out / "browser_minilm_sae.png", sort="density")
    print(f"wrote {out / 'browser_mnist.png'} and {out / 'browser_minilm_sae.png'}")


if __name__ == "__main__":
    main()
