"""The unit browser in headless Chromium: three pages (MNIST dense, conv, a MiniLM SAE), clicks, sorting, escaping.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them); skipped with a
message where they are absent.  Screenshots of the pages are kept in ``tests/artifacts/`` (or in
the folder named by ``AEKIT_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import os
from pathlib import Path

import minilm_data
import numpy as np
import pytest
import webdriver
from test_browser import read_data_file

import aekit
from aekit.inspect import browse, top_activations

pytestmark = pytest.mark.skipif(webdriver.find_browser() is None, reason=webdriver.missing_message())

ARTIFACTS = Path(os.environ.get("AEKIT_TEST_ARTIFACTS", Path(__file__).parent / "artifacts"))
MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
PAYLOADS = [
    "<img src=x onerror=\"window.__pwned='img';alert(1)\">",
    "<script>window.__pwned='script'</script>",
    "</script><script>window.__pwned='close'</script>",
]


@pytest.fixture(scope="module")
def browser():
    try:
        session = webdriver.Browser(width=1400, height=1100)
    except webdriver.WebDriverError as error:
        pytest.skip(f"headless Chromium did not start: {error}")
    with session:
        yield session


@pytest.fixture(scope="module")
def mnist_rows():
    images = MNIST / "t10k-images-idx3-ubyte.gz"
    labels = MNIST / "t10k-labels-idx1-ubyte.gz"
    if not (images.exists() and labels.exists()):
        pytest.skip("MNIST not found in ../shared/data")
    x, y = aekit.datasets.mnist(path=str(MNIST), split="test")
    return x[:1500], y[:1500]


def _open(browser, folder: Path, unit: int | None = None) -> dict:
    browser.get((folder / "index.html").as_uri() + ("" if unit is None else f"#unit={unit}"))
    browser.wait("return document.body.getAttribute('data-ready') === '1'")
    return browser.run("return window.aekitPage.state.summary")


def _card_of(browser, unit: int) -> None:
    browser.wait(f"return document.getElementById('card').getAttribute('data-unit') === '{unit}'")


def _listed(browser) -> list[int]:
    rows = browser.run(
        "return Array.from(document.querySelectorAll('.unit-row'))"
        ".sort((a, b) => parseFloat(a.style.top) - parseFloat(b.style.top))"
        ".map(r => +r.getAttribute('data-unit'))"
    )
    return rows


def _every_row(browser) -> list[int]:
    """The units of the list, scrolling it from top to bottom (it draws only the rows in view)."""
    seen: dict[int, int] = {}
    height, view = browser.run(
        "const l = document.getElementById('unit-list'); return [l.scrollHeight, l.clientHeight]"
    )
    for top in range(0, max(1, height), max(1, view // 2)):
        # The list redraws on the scroll event: wait for that redraw (none when the position is unchanged).
        renders, moved = browser.run(
            "const l = document.getElementById('unit-list'); const before = l.scrollTop;"
            f"l.scrollTop = {top}; return [window.aekitPage.state.renders, l.scrollTop !== before]"
        )
        if moved:
            browser.wait(f"return window.aekitPage.state.renders > {renders}")
        rows = browser.run(
            "return Array.from(document.querySelectorAll('.unit-row'))"
            ".map(r => [parseFloat(r.style.top), +r.dataset.unit])"
        )
        seen.update({int(t) // 26: u for t, u in rows})
    browser.run("document.getElementById('unit-list').scrollTop = 0")
    browser.wait("return Array.from(document.querySelectorAll('.unit-row')).some(r => r.style.top === '0px')")
    return [seen[i] for i in sorted(seen)]


def _check_cards_click_and_sort(browser, folder: Path, units: int, density: np.ndarray, unit: int) -> None:
    summary = _open(browser, folder)
    assert summary["units"] == units
    # One row (card) per unit, each unit once.
    assert _every_row(browser) == list(range(units))
    row = next(r for r in browser.find(f".unit-row[data-unit='{unit}']"))
    browser.click(row)
    _card_of(browser, unit)
    shown = browser.run("return document.querySelectorAll('#top-examples .top-example').length")
    assert shown == summary["k"]
    assert browser.run("return document.querySelector('#card h2').textContent").startswith(f"Unit {unit}")
    # Sort by density (most firing first): the list follows the densities computed in Python.
    browser.run("const s = document.getElementById('sort'); s.value = 'density'; s.dispatchEvent(new Event('change'))")
    listed = _listed(browser)
    expected = sorted(range(units), key=lambda u: (-round(float(density[u]), 5), u))
    assert listed == expected[: len(listed)]


def test_mnist_dense_model_page(browser, mnist_rows, tmp_path):
    x, y = mnist_rows
    net = aekit.Autoencoder([784, (24, "relu"), (784, "sigmoid")], loss="bce", rng=0)
    net.train(x, batch_size=100, max_epochs=2, learning_rate=3e-3)
    browse(net, x, tmp_path, labels=y, k=8, title="MNIST dense autoencoder")
    summary = read_data_file(tmp_path / "data" / "summary.js")
    _check_cards_click_and_sort(browser, tmp_path, 24, np.asarray(summary["density"]), unit=5)
    # The card of an image model: encoder and decoder pictures, top inputs as pictures, labels.
    browser.run("window.aekitPage.select(3)")
    _card_of(browser, 3)
    assert browser.run("return document.querySelectorAll('#card .panels canvas.picture').length") == 2
    assert browser.run("return document.querySelectorAll('#top-examples canvas.picture').length") == 8
    assert browser.run("return document.querySelectorAll('#labels tr').length") == 10
    browser.run("window.scrollTo(0, 0)")
    browser.screenshot(ARTIFACTS / "browser_mnist_dense.png")


def test_conv_model_page(browser, mnist_rows, tmp_path):
    x, _ = mnist_rows
    images = x[:600].reshape(-1, 1, 28, 28)
    net = aekit.Autoencoder(
        [
            (1, 28, 28),
            dict(form="conv2", channels=8, stride=2),
            dict(form="deconv2", channels=1, stride=2, shape=(28, 28), activation="sigmoid"),
        ],
        loss="bce",
        rng=0,
    )
    net.train(images, batch_size=100, max_epochs=1, learning_rate=3e-3)
    browse(net, images, tmp_path, k=6, title="MNIST conv autoencoder")
    summary = read_data_file(tmp_path / "data" / "summary.js")
    _check_cards_click_and_sort(browser, tmp_path, 8, np.asarray(summary["density"]), unit=2)
    # A conv unit's encoder picture is its kernel.
    kernel = browser.run("const c = document.querySelector('#card .panels canvas.picture'); return [c.width, c.height]")
    assert kernel == list(net.find("hid1", "w").shape[2:])
    browser.screenshot(ARTIFACTS / "browser_conv.png")


@pytest.mark.skipif(not minilm_data.available(), reason="../shared/data/minilm-acts is absent")
def test_minilm_sae_page_shows_contexts_and_runs_no_injected_script(browser, tmp_path):
    x = minilm_data.acts(2000)
    contexts = minilm_data.contexts()[:2000]
    sae = aekit.Autoencoder(
        [
            384,
            dict(size=64, activation="topk:8", name="code"),
            dict(size=384, activation="linear", constraint="unit_norm"),
        ],
        rng=0,
    )
    sae.train(x, batch_size=250, max_epochs=1, learning_rate=1e-3)
    top = top_activations(sae, x, k=5)
    # Script injection in the contexts of unit 1's top rows, in a label, and in the title.
    for j, row in enumerate(top.indices[1][:3]):
        contexts[row] = [PAYLOADS[j] + " ", contexts[row][1], " " + PAYLOADS[(j + 1) % 3]]
    contexts[top.indices[1][3]] = PAYLOADS[1]
    labels = np.array(["plain", PAYLOADS[0]])[np.arange(len(x)) % 2]
    browse(sae, x, tmp_path, contexts=contexts, labels=labels, k=5, title=PAYLOADS[2])
    summary = read_data_file(tmp_path / "data" / "summary.js")
    _check_cards_click_and_sort(browser, tmp_path, 64, np.asarray(summary["density"]), unit=1)
    browser.run("window.aekitPage.select(1)")
    _card_of(browser, 1)
    lines = browser.run(
        "return Array.from(document.querySelectorAll('#top-examples .top-example')).map(e => e.textContent)"
    )
    assert PAYLOADS[0] in lines[0] and PAYLOADS[1] in lines[0] and PAYLOADS[1] in lines[3]
    marks = browser.run("return Array.from(document.querySelectorAll('#top-examples mark')).map(m => m.textContent)")
    assert marks[0] == contexts[top.indices[1][0]][1]
    assert browser.run("return document.title") == PAYLOADS[2]
    # Nothing ran: no alert, no flag, no element made from the data.
    assert browser.alert_text() is None
    assert browser.run("return window.__pwned === undefined")
    assert browser.run("return document.querySelectorAll('img').length") == 0
    assert browser.run("return document.querySelectorAll('#card script, #overview script').length") == 0
    browser.run("window.scrollTo(0, 0)")
    browser.screenshot(ARTIFACTS / "browser_minilm_sae.png")


def test_large_dictionary_list_is_virtualised_and_filters(browser, tmp_path):
    rng = np.random.default_rng(0)
    net = aekit.Autoencoder([32, dict(size=3000, activation="topk:16"), (32, "linear")], rng=0)
    x = rng.normal(size=(400, 32)).astype(np.float32)
    browse(net, x, tmp_path, k=3, shard=500)
    summary = _open(browser, tmp_path, unit=2999)
    assert summary["units"] == 3000
    _card_of(browser, 2999)  # opened from the address, its shard loaded on demand
    assert len(_listed(browser)) < 120  # only the rows in view are drawn
    loaded = browser.run("return Object.keys(window.aekitPage.state.shards)")
    assert loaded == ["5"]
    search = browser.find("#search")[0]
    browser.type(search, "29")
    listed = _listed(browser)
    assert listed and all(str(u).startswith("29") for u in listed)
    assert browser.run("return window.aekitPage.order().length") == 1 + 10 + 100  # 29, 290-299, 2900-2999
    browser.run("const s = document.getElementById('search'); s.value = ''; s.dispatchEvent(new Event('input'))")
    browser.run("const f = document.getElementById('filter'); f.value = 'dead'; f.dispatchEvent(new Event('change'))")
    dead = [u for u in range(3000) if summary["dead"][u]]
    assert browser.run("return window.aekitPage.order()") == dead
    # Scrolled to the end, the last rows are drawn.
    browser.run("const f = document.getElementById('filter'); f.value = 'all'; f.dispatchEvent(new Event('change'))")
    browser.run("const l = document.getElementById('unit-list'); l.scrollTop = l.scrollHeight")
    browser.wait(
        "return Array.from(document.querySelectorAll('.unit-row')).some(r => r.getAttribute('data-unit') === '2999')"
    )
