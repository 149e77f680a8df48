"""The unit browser of a 16,384-latent sparse autoencoder: first render in headless Chromium, file sizes.

Model: a top-k SAE, 384 -> 16,384 latents (``topk:32``) -> 384 (unit-norm decoder), trained
briefly on the MiniLM activations of ``../shared/data/minilm-acts`` (random Gaussian rows of the
same shape when that folder is absent).  ``aekit.inspect.browse`` writes its page over the rows
with their ±8-token contexts; the page is opened from ``file://`` in headless Chromium (Debian's
``chromium`` + ``chromedriver``, driven by ``tests/webdriver.py``) and timed from the navigation's
start (``performance.now()``) to the first frame drawn after the page has built its overview and
unit list ("first render"), as the median of fresh loads.  Also timed in the page: opening a
unit's card (its data file loaded on demand), filtering by id, sorting by density.

Baseline, same data, same browser, same run: an *eager* page (``EAGER_PAGE`` below) that reads
the same ``data/summary.js`` and builds one DOM row per unit, as a page without a virtualised
list does.

Size: ``AEKIT_BENCH_QUICK=1`` (or ``run(quick=True)``) uses 20,000 rows; the full run all 100,116.
Run ``python benchmarks/bench_browser.py [--quick]``.  Without Chromium the benchmark says so
and reports no timings.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import aekit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import minilm_data  # noqa: E402  (tests/minilm_data.py: the folder's reader)
import webdriver  # noqa: E402  (tests/webdriver.py: a WebDriver client)

LATENTS = 16384
K = 32
LOADS = 5

# The baseline: the same summary data, every unit a DOM row at once (no virtualisation).
EAGER_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><link rel="stylesheet" href="browser.css"></head>
<body><div id="list"></div><script>
window.aekitData = function (kind, index, s) {
  var list = document.getElementById("list");
  for (var u = 0; u < s.units; u++) {
    var row = document.createElement("div");
    row.className = "unit-row-eager";
    row.setAttribute("data-unit", String(u));
    var id = document.createElement("span"); id.textContent = "#" + u;
    var d = document.createElement("span"); d.textContent = (100 * s.density[u]).toPrecision(3) + "%";
    var m = document.createElement("span"); m.textContent = String(s.max[u]);
    row.appendChild(id); row.appendChild(d); row.appendChild(m);
    list.appendChild(row);
  }
  window.firstRenderMs = performance.now();
  window.requestAnimationFrame(function () {
    setTimeout(function () { window.firstFrameMs = performance.now(); }, 0);
  });
};
</script><script src="data/summary.js"></script></body></html>
"""


def _data(rows: int):
    if minilm_data.available():
        x = minilm_data.acts(rows)
        contexts = minilm_data.contexts()[: len(x)]
        return x, contexts, "minilm-acts"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 384)).astype(np.float32)
    return x, [["", f"token{i}", ""] for i in range(rows)], "random Gaussian rows (minilm-acts absent)"


def _folder_bytes(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def _load_times(browser, url: str, ready: str, frame: str) -> list[float]:
    times = []
    for _ in range(LOADS):
        browser.get("about:blank")
        browser.get(url)
        browser.wait(ready, timeout=60)
        times.append(float(browser.wait(f"return {frame}", timeout=60)))
    return times


def _page_actions(browser, url: str) -> dict[str, float]:
    browser.get("about:blank")
    browser.get(url)
    browser.wait("return document.body.getAttribute('data-ready') === '1'", timeout=60)
    t0 = time.perf_counter()
    browser.run("window.aekitPage.select(12345)")
    browser.wait("return document.getElementById('card').getAttribute('data-unit') === '12345'", timeout=60)
    card = time.perf_counter() - t0
    timed = (
        "const t0 = performance.now(); const e = document.getElementById(arguments[0]); e.value = arguments[1];"
        "e.dispatchEvent(new Event(arguments[2])); document.body.offsetHeight; return performance.now() - t0"
    )
    search = browser.run(timed, "search", "12", "input")
    browser.run(timed, "search", "", "input")
    sort = browser.run(timed, "sort", "density", "change")
    rows = browser.run("return document.querySelectorAll('.unit-row').length")
    return {"card_s": card, "filter_ms": float(search), "sort_ms": float(sort), "rows_in_dom": int(rows)}


def run(quick: bool | None = None) -> dict:
    quick = os.environ.get("AEKIT_BENCH_QUICK") == "1" if quick is None else quick
    rows = 20000 if quick else 100116
    x, contexts, source = _data(rows)
    sae = aekit.Autoencoder(
        [384, dict(size=LATENTS, activation=f"topk:{K}", name="code"),
         dict(size=384, activation="linear", constraint="unit_norm")],
        rng=0,
    )  # fmt: skip
    started = time.perf_counter()
    sae.train(x[:8192], batch_size=1024, max_epochs=1, learning_rate=1e-3)
    train_s = time.perf_counter() - started
    result: dict = {"rows": len(x), "latents": LATENTS, "data": source, "train_s": train_s, "quick": quick}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "page"
        started = time.perf_counter()
        browse_started = started
        aekit.inspect.browse(sae, x, folder, contexts=contexts, k=10, title="16,384-latent SAE on MiniLM")
        result["browse_s"] = time.perf_counter() - browse_started
        result["bytes"], result["files"] = _folder_bytes(folder)
        (folder / "eager.html").write_text(EAGER_PAGE, encoding="utf-8")
        if webdriver.find_browser() is None:
            result["skipped"] = webdriver.missing_message()
            return result
        with webdriver.Browser(width=1400, height=1000) as browser:
            page = _load_times(
                browser,
                (folder / "index.html").as_uri(),
                "return document.body.getAttribute('data-ready') === '1'",
                "window.aekitPage.state.firstFrameMs",
            )
            eager = _load_times(
                browser, (folder / "eager.html").as_uri(), "return window.firstRenderMs", "window.firstFrameMs"
            )
            result.update(_page_actions(browser, (folder / "index.html").as_uri()))
    result["first_render_ms"] = statistics.median(page)
    result["first_render_all_ms"] = page
    result["eager_first_render_ms"] = statistics.median(eager)
    result["eager_first_render_all_ms"] = eager
    return result


def to_markdown(r: dict) -> str:
    lines = [
        f"16,384-latent top-k SAE (k={K}) over {r['rows']} rows of {r['data']}; "
        f"trained {r['train_s']:.1f} s (1 epoch of 8,192 rows), page written in {r['browse_s']:.1f} s: "
        f"{r['files']} files, {r['bytes'] / 1e6:.1f} MB.",
        "",
    ]
    if "skipped" in r:
        return "\n".join([*lines, f"Browser timings skipped: {r['skipped']}."])
    lines += [
        f"| page (headless Chromium, file://) | first render, median of {LOADS} loads | all loads (ms) |",
        "| --- | ---: | --- |",
        f"| aekit browser (virtualised list, cards on demand) | {r['first_render_ms']:.0f} ms | "
        + ", ".join(f"{v:.0f}" for v in r["first_render_all_ms"])
        + " |",
        f"| baseline: every unit a DOM row | {r['eager_first_render_ms']:.0f} ms | "
        + ", ".join(f"{v:.0f}" for v in r["eager_first_render_all_ms"])
        + " |",
        "",
        f"In the aekit page: opening unit 12345's card (its data file loaded) {r['card_s'] * 1000:.0f} ms; "
        f"filtering by id {r['filter_ms']:.0f} ms; sorting by density {r['sort_ms']:.0f} ms; "
        f"{r['rows_in_dom']} list rows in the DOM.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 rows instead of all")
    result = run(quick=parser.parse_args().quick or None)
    print(to_markdown(result))
