"""The unit browser's data: streamed top activations and histograms against plain NumPy, the page's files."""

from __future__ import annotations

import json
import re

import minilm_data
import numpy as np
import pytest

import aekit
from aekit.data.contexts import join_tokens, token_contexts
from aekit.errors import DataError
from aekit.inspect import browse, top_activations
from aekit.inspect import unit_scan as unit_scan_module
from aekit.inspect.browser import script_json
from aekit.inspect.browser_panels import PANELS
from aekit.inspect.measures import dead_units
from aekit.inspect.unit_scan import scan_units


def read_data_file(path):
    """The JSON a data/*.js file hands to the page."""
    text = path.read_text(encoding="utf-8")
    match = re.fullmatch(r"aekitData\('(\w+)', (\d+), (.*)\);\n", text, flags=re.S)
    assert match, text[:80]
    return json.loads(match.group(3))


@pytest.fixture
def small_chunks(monkeypatch):
    # Chunks of a few rows: every running figure is merged across many chunks.
    monkeypatch.setattr(unit_scan_module, "CHUNK_VALUES", 7 * 12)


def _net_and_data(rng, n=300):
    net = aekit.Autoencoder([20, (12, "relu"), (20, "linear")], rng=1)
    # Rows of growing scale, so that each histogram's range grows chunk after chunk.
    x = (rng.normal(size=(n, 20)) * np.linspace(0.01, 3.0, n)[:, None]).astype(np.float32)
    return net, x


def test_top_activations_equal_a_full_sort(rng, small_chunks):
    net, x = _net_and_data(rng)
    contexts = [f"row {i}" for i in range(len(x))]
    top = top_activations(net, x, k=6, contexts=contexts)
    h = net.encode(x)
    order = np.argsort(-h, axis=0, kind="stable")[:6].T
    np.testing.assert_array_equal(top.indices, order)
    np.testing.assert_allclose(top.values, np.take_along_axis(h, order.T, axis=0).T, rtol=1e-6)
    assert top.contexts == [[f"row {i}" for i in row] for row in order]
    # k larger than the data: every row, ranked.
    assert top_activations(net, x[:4], k=10).indices.shape == (12, 4)


def test_top_activations_with_ties_list_the_top_values_earlier_rows_first(rng, small_chunks):
    net, x = _net_and_data(rng)
    x[[5, 50, 120]] = x[7]
    x[200:] = x[7]  # ties across many chunks; relu zeros tie too
    top = top_activations(net, x, k=8)
    h = net.encode(x)
    np.testing.assert_array_equal(top.values, -np.sort(-h, axis=0)[:8].T)
    for u in range(h.shape[1]):
        rows = top.indices[u]
        assert len(set(rows.tolist())) == 8
        np.testing.assert_array_equal(h[rows, u], top.values[u])
        for a, b, va, vb in zip(rows, rows[1:], top.values[u], top.values[u][1:]):
            assert va > vb or (va == vb and a < b)


def test_top_activations_of_a_memmap_equal_in_memory(rng, tmp_path, small_chunks):
    net, x = _net_and_data(rng)
    path = tmp_path / "x.npy"
    np.save(path, x)
    streamed = top_activations(net, np.load(path, mmap_mode="r"), k=5)
    np.testing.assert_array_equal(streamed.indices, top_activations(net, x, k=5).indices)


def test_scan_counts_ranges_histograms_and_labels_match_numpy(rng, small_chunks):
    net, x = _net_and_data(rng)
    net.find("hid1", "b").data[3] = -1e3  # a dead unit
    labels = rng.integers(0, 4, len(x))
    scan = scan_units(net, x, k=3, labels=labels, bins=16)
    h = net.encode(x).astype(np.float64)
    np.testing.assert_array_equal(scan.fired, (h != 0).sum(axis=0))
    np.testing.assert_allclose(scan.density, (h != 0).mean(axis=0))
    np.testing.assert_allclose(scan.maximum, h.max(axis=0), rtol=1e-6)
    np.testing.assert_allclose(scan.mean, h.mean(axis=0), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(scan.dead, dead_units(h))
    assert scan.dead[3]
    for u in range(h.shape[1]):
        positive = h[:, u][h[:, u] > 0]
        top = scan.pos_top[u]
        # The edge is the smallest power of two at or above the largest value.
        assert (top == 0) == (positive.size == 0)
        if positive.size:
            assert top >= positive.max() > top / 2
            reference, _ = np.histogram(np.minimum(positive, np.nextafter(top, 0)), bins=16, range=(0, top))
            np.testing.assert_array_equal(scan.hist_pos[u], reference)
    assert scan.hist_neg.sum() == 0  # relu: no negative values
    for j, label in enumerate(scan.label_values):
        np.testing.assert_allclose(scan.label_means[:, j], h[labels == label].mean(axis=0), rtol=1e-6, atol=1e-9)


def test_scan_of_a_conv_layer_ranks_channels_by_their_mean(rng):
    net = aekit.Autoencoder(
        [(1, 8, 8), dict(form="conv2", channels=5, stride=2), dict(form="deconv2", channels=1, stride=2, shape=(8, 8))],
        rng=0,
    )
    x = rng.random((60, 1, 8, 8)).astype(np.float32)
    scan = scan_units(net, x, k=4)
    means = net.encode(x).mean(axis=(2, 3))
    np.testing.assert_array_equal(scan.top.indices, np.argsort(-means, axis=0, kind="stable")[:4].T)
    assert scan.top.indices.shape == (5, 4)


def test_histogram_of_signed_units(rng, small_chunks):
    net = aekit.Autoencoder([6, (4, "tanh"), (6, "linear")], rng=0)
    x = (rng.normal(size=(200, 6)) * np.linspace(0.001, 2, 200)[:, None]).astype(np.float32)
    scan = scan_units(net, x, bins=8)
    h = net.encode(x).astype(np.float64)
    for u in range(4):
        negative = -h[:, u][h[:, u] < 0]
        top = scan.neg_top[u]
        reference, _ = np.histogram(np.minimum(negative, np.nextafter(top, 0)), bins=8, range=(0, top))
        np.testing.assert_array_equal(scan.hist_neg[u], reference)
    assert int(scan.hist_pos.sum() + scan.hist_neg.sum()) == int((h != 0).sum())


def test_script_json_cannot_close_a_script_and_reads_back():
    payload = {"text": "</script><img src=x onerror=alert(1)> & \u2028", "n": [1, 2.5]}
    text = script_json(payload)
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == payload


def test_browse_writes_a_page_whose_data_match_the_model(rng, tmp_path):
    net, x = _net_and_data(rng, n=120)
    labels = np.array(["<b>cat</b>", "dog"])[rng.integers(0, 2, len(x))]
    contexts = [["<img src=x onerror=alert(1)> ", f"tok{i}", " </script>"] for i in range(len(x))]
    page = browse(net, x, tmp_path / "page", labels=labels, contexts=contexts, k=4, shard=5, title="<i>t</i>")
    folder = tmp_path / "page"
    html = (folder / "index.html").read_text()
    assert "<i>t</i>" not in html and "&lt;i&gt;t&lt;/i&gt;" in html
    assert "http://" not in html and "https://" not in html  # nothing from the network
    summary = read_data_file(folder / "data" / "summary.js")
    scan = scan_units(net, x, k=4)
    assert summary["units"] == 12 and summary["contexts"] and not summary["images"]
    np.testing.assert_allclose(summary["density"], scan.density, rtol=1e-4)
    assert summary["labels"] == ["<b>cat</b>", "dog"]
    assert set(summary["metrics"]) >= {"mse", "fvu", "l0", "dead_fraction"}
    shards = sorted((folder / "data").glob("units_*.js"))
    assert len(shards) == 3  # 12 units, 5 per file
    cards = [card for path in shards for card in read_data_file(path)]
    assert [card["id"] for card in cards] == list(range(12))
    for card in cards:
        rows = [t["row"] for t in card["top"]]
        assert rows == scan.top.indices[card["id"]].tolist()
        assert [t["context"][1] for t in card["top"]] == [f"tok{r}" for r in rows]
        assert card["labels"]["names"] == ["<b>cat</b>", "dog"]
    for path in [*shards, folder / "data" / "summary.js"]:
        assert "<" not in path.read_text()  # every < of the data is escaped
    assert page == str(folder / "index.html")


def test_browse_checks_its_arguments(rng, tmp_path):
    net, x = _net_and_data(rng, n=20)
    with pytest.raises(DataError, match="contexts must have one entry per row"):
        browse(net, x, tmp_path, contexts=["a"])
    with pytest.raises(DataError, match=r"contexts\[0\] must be a text"):
        browse(net, x, tmp_path, contexts=[1] * 20)
    with pytest.raises(DataError, match="labels must have one label per row"):
        browse(net, x, tmp_path, labels=[0, 1])


def test_browse_draws_image_panels_for_picture_data(rng, tmp_path):
    net = aekit.Autoencoder([64, (6, "relu"), (64, "sigmoid")], rng=0)
    x = rng.random((50, 64)).astype(np.float32)
    browse(net, x, tmp_path, k=3)
    summary = read_data_file(tmp_path / "data" / "summary.js")
    assert summary["images"] and summary["panels"] == ["encoder", "decoder"]
    card = read_data_file(tmp_path / "data" / "units_0000.js")[2]
    encoder = card["panels"][0]["images"][0]
    assert (encoder["h"], encoder["w"], encoder["c"]) == (8, 8, 1)
    # The encoder picture is the unit's weight column, scaled to [0, 1] (brightest where the weight is largest).
    import base64

    pixels = np.frombuffer(base64.b64decode(encoder["data"]), np.uint8)
    column = net.find("hid1", "w").detach().numpy()[:, 2]
    assert pixels.argmax() == column.argmax() and pixels.argmin() == column.argmin()
    assert len(card["top"]) == 3 and card["top"][0]["image"]["w"] == 8


def test_a_registered_panel_appears_on_every_card(rng, tmp_path):
    net, x = _net_and_data(rng, n=30)
    name = "test-norms"

    def norms(ctx):
        w = ctx.net.find(ctx.layer, "w").detach().numpy()
        return [
            {"title": "weight norm", "kind": "bars", "names": ["norm"], "values": [float(np.linalg.norm(w[:, u]))]}
            for u in range(ctx.units)
        ]

    PANELS.register(name, norms)
    try:
        browse(net, x, tmp_path)
    finally:
        PANELS._entries.pop(name)
    summary = read_data_file(tmp_path / "data" / "summary.js")
    assert name in summary["panels"]
    card = read_data_file(tmp_path / "data" / "units_0000.js")[4]
    w = net.find("hid1", "w").detach().numpy()
    assert card["panels"][-1]["values"][0] == pytest.approx(np.linalg.norm(w[:, 4]), rel=1e-6)


def test_token_contexts_follow_the_documents():
    tokens = ["the", "thread", "##ing", "module", ".", "event", "set"]
    triples = token_contexts(tokens, starts=[0, 5], lengths=[5, 2], window=2)
    assert triples[2] == ["the thread", "ing", " module ."]
    assert triples[4] == ["##ing module ".replace("##", ""), ".", ""]
    assert triples[5] == ["", "event", " set"]  # never crosses into the document before
    assert join_tokens(["a", "##b", "c"]) == "ab c"


@pytest.mark.skipif(not minilm_data.available(), reason="../shared/data/minilm-acts is absent")
def test_minilm_contexts_are_the_readme_windows():
    meta = json.loads((minilm_data.FOLDER / "tokens.json").read_text(encoding="utf-8"))
    tokens, docs = meta["tokens"], meta["documents"]
    triples = minilm_data.contexts()
    assert len(triples) == len(tokens) == 100116
    doc_of = np.repeat(np.arange(len(docs)), [d["n_tokens"] for d in docs])
    for i in np.random.default_rng(0).choice(len(tokens), 300, replace=False):
        d = docs[doc_of[i]]
        lo, hi = max(d["start"], i - 8), min(d["start"] + d["n_tokens"], i + 9)  # the README's formula
        if i == lo and tokens[i].startswith("##"):
            continue
        assert "".join(triples[i]) == join_tokens(tokens[lo:hi])
        assert triples[i][1] in (tokens[i], tokens[i][2:])


def test_a_vae_card_shows_its_latents_traversal(tmp_path):
    import base64

    x, _ = aekit.datasets.digits()
    vae = aekit.Autoencoder([64, (32, "tanh"), dict(form="gaussian", size=4, name="z"), (32, "tanh"), (64, "sigmoid")],
                            loss="bce", rng=0)  # fmt: skip
    vae.train(x, max_epochs=2, batch_size=128, validate_every=0)
    browse(vae, x, tmp_path, layer="z", k=3)
    assert "traversal" in read_data_file(tmp_path / "data" / "summary.js")["panels"]
    card = read_data_file(tmp_path / "data" / "units_0000.js")[1]
    panel = next(p for p in card["panels"] if p["title"] == "latent traversal")
    assert panel["captions"] == [f"z1 = {t:+g}" for t in (-3, -2, -1, 0, 1, 2, 3)]
    # Each picture is the decoder's output with latent 1 set to t and the others at the mean code.
    from aekit.inspect.measures import sample_rows

    base = vae.encode(x[sample_rows(len(x))], layer="z").mean(axis=0)
    z = np.repeat(base[None], 7, axis=0).astype(np.float32)
    z[:, 1] = [-3, -2, -1, 0, 1, 2, 3]
    want = vae.decode(z, layer="z")
    for picture_, row in zip(panel["images"], want):
        pixels = np.frombuffer(base64.b64decode(picture_["data"]), np.uint8).astype(float)
        assert np.corrcoef(pixels, row)[0, 1] > 0.99


def test_a_vq_layer_is_browsed_code_by_code(tmp_path):
    import base64

    from aekit.inspect.codebook_pictures import code_images

    x, _ = aekit.datasets.digits()
    x = x.reshape(-1, 1, 8, 8)
    layers = [
        (1, 8, 8),
        dict(form="conv2", channels=8, stride=2),
        dict(form="conv2", channels=4, kernel=1, activation="linear"),
        dict(form="vq", codebook=16, name="vq"),
        dict(form="deconv2", channels=8, stride=1),
        dict(form="deconv2", channels=1, stride=2, activation="sigmoid"),
    ]
    net = aekit.Autoencoder(layers, rng=0)
    net.train(x, max_epochs=2, batch_size=128, validate_every=0)
    top = aekit.inspect.top_activations(net, x, layer="vq", k=3)
    codes = net.encode(x, layer="vq", codes=True).reshape(len(x), -1)
    shares = np.stack([(codes == c).mean(axis=1) for c in range(16)], axis=1)  # (rows, codes)
    assert top.indices.shape == (16, 3)
    np.testing.assert_allclose(top.values[:, 0], shares.max(axis=0), rtol=1e-6)
    np.testing.assert_allclose(shares[top.indices[:, 0], np.arange(16)], shares.max(axis=0), rtol=1e-6)
    browse(net, x, tmp_path, layer="vq", k=3)
    summary = read_data_file(tmp_path / "data" / "summary.js")
    assert summary["units"] == 16 and "code" in summary["panels"]
    card = read_data_file(tmp_path / "data" / "units_0000.js")[5]
    panel = next(p for p in card["panels"] if p["title"] == "code decodes to")
    pixels = np.frombuffer(base64.b64decode(panel["images"][0]["data"]), np.uint8).astype(float)
    want = code_images(net, "vq", max_codes=16)[5].reshape(-1)
    assert np.corrcoef(pixels, want)[0, 1] > 0.99
