"""aekit.report: one self-contained HTML page with its pictures and the diagnosis."""

from __future__ import annotations

import os
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

import aekit

mpimg = pytest.importorskip("matplotlib.image")

torch.set_num_threads(1)  # tiny models: threads only contend on a shared CPU


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.links, self.scripts = [], [], 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        if tag in ("link", "a") and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag == "script":
            self.scripts += 1


@pytest.fixture(scope="module")
def model():
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data[:600] / 16.0).astype(np.float32)
    net = aekit.Autoencoder([64, (12, "sigmoid"), (64, "sigmoid")], rng=0)
    # 100 epochs of 12 steps: past diagnose's too-few-steps bar of 1000 steps.
    net.train(x, algo="adam", learning_rate=1e-2, batch_size=50, max_epochs=100)
    return net, x, data.target[:600]


def test_bad_arguments_are_refused_before_the_folder_is_made(tmp_path, model):
    net, x, y = model
    folder = tmp_path / "report"
    for data, options, error, message in (
        (x[:1], {}, aekit.DataError, r"a report needs x with at least 2 examples in rows, got shape \(1, 64\)"),
        (x[0], {}, aekit.DataError, "at least 2 examples in rows"),
        ([[0.0], [1.0, 2.0]], {}, aekit.DataError, "x must be a rectangular array"),
        (x, {"max_samples": "10"}, aekit.ConfigurationError, "max_samples must be an integer >= 2, got '10'"),
    ):
        with pytest.raises(error, match=message):
            aekit.report.write_report(net, data, folder, **options)
    assert not folder.exists()


def test_report_is_one_page_with_its_pictures_alongside(tmp_path, model):
    net, x, y = model
    path = aekit.report.write_report(net, x, tmp_path / "rep", labels=y, max_samples=300)
    assert path == str(tmp_path / "rep" / "index.html")
    text = Path(path).read_text(encoding="utf-8")
    refs = _Refs()
    refs.feed(text)
    assert refs.scripts == 0 and refs.links == []  # nothing outside the folder
    expected = {
        "features_encoder.png",
        "features_decoder.png",
        "reconstructions.png",
        "history.png",
        "codes.png",
        "activations.png",
        "top_inputs.png",
    }
    assert set(refs.images) == expected
    for name in refs.images:
        assert "/" not in name and img_ok(tmp_path / "rep" / name)
    assert "Diagnosis" in text and "<code>fit</code>" in text and "No problems found" in text
    assert not [p for p in os.listdir(tmp_path / "rep") if p.endswith(".tmp")]


def img_ok(path: Path) -> bool:
    image = mpimg.imread(path)
    return image.ndim == 3 and min(image.shape[:2]) > 10


def test_report_shows_the_findings_of_a_broken_model(tmp_path, model):
    net, x, _ = model
    path = aekit.report.write_report(net, x * 255.0, tmp_path / "bad")
    text = Path(path).read_text(encoding="utf-8")
    assert "output-range" in text and 'class="finding error"' in text


def test_report_of_an_untrained_model_without_history(tmp_path):
    net = aekit.Autoencoder([16, (4, "relu"), (16, "linear")])
    x = np.random.default_rng(0).normal(size=(40, 16)).astype(np.float32)
    path = aekit.report.write_report(net, x, tmp_path / "fresh")
    text = Path(path).read_text(encoding="utf-8")
    assert "no training history" in text
    assert "history.png" not in text


# The README's "Look inside" example runs as written in tests/test_readme.py (every README block does).
