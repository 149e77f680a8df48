"""aekit.visualize: feature definitions against their formulas, and PNGs that read back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import aekit
from aekit import visualize as V

mpimg = pytest.importorskip("matplotlib.image")

torch.set_num_threads(1)  # tiny models: threads only contend on a shared CPU


@pytest.fixture(scope="module")
def trained(request):
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    net = aekit.Autoencoder([64, (16, "sigmoid"), (64, "sigmoid")], rng=3)
    net.train(x, algo="adam", learning_rate=1e-2, batch_size=128, max_epochs=8)
    return net, x, data.target


def test_image_shape_rules():
    assert V.image_shape(64) == (8, 8)
    assert V.image_shape(784) == (28, 28)
    assert V.image_shape(192) == (3, 8, 8)
    assert V.image_shape(10) == (2, 5)
    assert V.image_shape(7) == (1, 7)
    assert V.image_shape((1, 28, 28)) == (28, 28)
    assert V.image_shape((3, 4, 5)) == (3, 4, 5)


def test_encoder_features_are_normalised_weight_columns(trained):
    net, _, _ = trained
    feats = V.feature_images(net, "hid1", "encoder")
    w = net.find("hid1", "w").detach().numpy().astype(np.float64)
    expected = (w / np.linalg.norm(w, axis=0)).T.reshape(16, 8, 8)
    assert feats.shape == (16, 8, 8)
    np.testing.assert_allclose(feats, expected, atol=1e-6)
    # UFLDL: this input maximises the unit's pre-activation among all inputs of norm 1.
    rng = np.random.default_rng(0)
    others = rng.normal(size=(500, 64))
    others /= np.linalg.norm(others, axis=1, keepdims=True)
    best = np.einsum("uf,fu->u", feats.reshape(16, 64), w)
    assert np.all(best[None, :] >= others @ w - 1e-9)


def test_gradient_ascent_finds_the_analytic_optimum(trained):
    net, _, _ = trained
    analytic = V.feature_images(net, "hid1", method="analytic")
    ascent = V.feature_images(net, "hid1", method="ascent", steps=150)
    np.testing.assert_allclose(ascent, analytic, atol=1e-4)


def test_deep_layer_features_lie_in_the_unit_ball_and_beat_random_inputs():
    net = aekit.Autoencoder([36, (12, "tanh"), (5, "sigmoid"), (12, "tanh"), (36, "linear")], rng=1)
    feats = V.feature_images(net, "hid2", steps=150)
    assert feats.shape == (5, 6, 6)
    flat = torch.tensor(feats.reshape(5, 36))
    np.testing.assert_array_less(flat.norm(dim=1).numpy(), 1 + 1e-5)
    with torch.no_grad():
        pre = net.graph(flat, stop="hid2")["hid2:pre"].diagonal()
        rand = torch.randn(2000, 36)
        rand /= rand.norm(dim=1, keepdim=True)
        rand_pre = net.graph(rand, stop="hid2")["hid2:pre"]
    assert torch.all(pre >= rand_pre.max(dim=0).values - 1e-4)


def test_decoder_features_of_a_linear_decoder_are_its_columns():
    net = aekit.Autoencoder([64, (10, "relu"), (64, "linear")], rng=2)
    feats = V.feature_images(net, "hid1", "decoder", scale=2.0)
    w_out = net.find("out", "w").detach().numpy()  # (10, 64)
    np.testing.assert_allclose(feats.reshape(10, 64), 2.0 * w_out, atol=1e-5)


def test_decoder_features_through_a_nonlinear_output_match_decode(trained):
    net, _, _ = trained
    feats = V.feature_images(net, "hid1", "decoder")
    codes = np.vstack([np.zeros((1, 16)), np.eye(16)]).astype(np.float32)
    drawn = net.decode(codes)
    np.testing.assert_allclose(feats.reshape(16, 64), drawn[1:] - drawn[:1], atol=1e-5)


def test_image_input_keeps_its_shape():
    net = aekit.Autoencoder([(1, 6, 6), (7, "sigmoid"), (36, "sigmoid")], rng=0)
    assert V.feature_images(net, "hid1").shape == (7, 6, 6)
    assert V.feature_images(net, "hid1", "decoder").shape == (7, 6, 6)


def test_conv_filters_are_normalised_kernels():
    pytest.importorskip("aekit.conv")
    net = aekit.Autoencoder(
        [(1, 8, 8), dict(form="conv2", channels=4, kernel=3, stride=2, activation="relu"), "flatten", (64, "sigmoid")],
        rng=0,
    )
    feats = V.feature_images(net, "hid1")
    w = net.find("hid1", "w").detach().numpy()  # torch layout (out, in, k, k)
    expected = w[:, 0] / np.linalg.norm(w.reshape(4, -1), axis=1)[:, None, None]
    np.testing.assert_allclose(feats, expected, atol=1e-6)
    # The unit is channel c at the centre output position (2, 2).  'same' padding of an 8-pixel
    # side by kernel 3 stride 2 pads one pixel at the end only, so that position reads the window
    # [4:7, 4:7]; its pre-activation is linear in x, maximal under ||x|| <= 1 for the kernel
    # divided by its norm in that window and zero elsewhere.
    centred = np.zeros((4, 8, 8))
    centred[:, 4:7, 4:7] = expected
    ascent = V.feature_images(net, "hid1", method="ascent", steps=150)
    np.testing.assert_allclose(ascent, centred, atol=1e-4)


def test_bad_arguments_name_what_was_wrong(trained):
    net, _, _ = trained
    with pytest.raises(aekit.ConfigurationError, match="kind"):
        V.feature_images(net, "hid1", kind="middle")
    with pytest.raises(aekit.ConfigurationError, match="in"):
        V.feature_images(net, "in")
    deep = aekit.Autoencoder([16, (8, "relu"), (4, "relu"), (8, "relu"), (16, "linear")])
    with pytest.raises(aekit.ConfigurationError, match="ascent"):
        V.feature_images(deep, "hid2", method="analytic")


def test_bad_pictures_and_options_are_documented_errors(tmp_path, trained):
    net, x, _ = trained
    tiles = np.random.default_rng(0).random((4, 3, 3))
    for images in (np.zeros((1, 0, 0)), np.zeros((0, 5, 5)), np.zeros((3, 0))):
        with pytest.raises(aekit.DataError, match="at least one image of at least one pixel"):
            V.save_tiles(images, tmp_path / "e.png")
    with pytest.raises(aekit.DataError, match="images must be an array of real numbers"):
        V.tile_mosaic([["a", "b"]])
    for option, value in (
        ("n_cols", 0),
        ("n_cols", 2.5),
        ("n_cols", float("nan")),
        ("border", -1),
        ("zoom", 0),
        ("zoom", True),
    ):
        with pytest.raises(aekit.ConfigurationError, match=f"{option} must be an integer >= "):
            V.save_tiles(tiles, tmp_path / "o.png", **{option: value})
    # A mistaken grid or zoom is refused before it fills the memory.
    with pytest.raises(aekit.ConfigurationError, match="pixels, more than"):
        V.save_tiles(tiles, tmp_path / "big.png", n_cols=10**12)
    with pytest.raises(aekit.ConfigurationError, match="pixels, more than"):
        V.save_tiles(tiles, tmp_path / "big.png", zoom=10**6)
    with pytest.raises(aekit.ConfigurationError, match="titles must be a sequence"):
        V.save_tiles(tiles, tmp_path / "t.png", titles=0)
    with pytest.raises(aekit.ConfigurationError, match="shape must be a size or"):
        V.image_shape(None)
    with pytest.raises(aekit.ConfigurationError, match="positive sizes"):
        V.image_shape((1, 0, 4))
    with pytest.raises(aekit.DataError, match=r"labels must be 1-D .* got shape \(\)"):
        V.plot_codes(net, x[:10], tmp_path / "c.png", labels=1)
    with pytest.raises(aekit.DataError, match=r"labels must be 1-D .* \(10 or more\), got shape \(3,\)"):
        V.plot_codes(net, x[:10], tmp_path / "c.png", labels=[0, 1, 2])
    assert not list(tmp_path.iterdir())  # nothing written by a refused call


def test_plot_codes_takes_names_and_many_classes(tmp_path, trained):
    net, x, _ = trained
    for labels in ([None, "a", 3] * 10, [f"class {i}" for i in range(30)]):
        img = mpimg.imread(V.plot_codes(net, x[:30], tmp_path / "c.png", labels=labels))
        assert img.ndim == 3 and img.shape[0] > 20


def test_tile_mosaic_layout_and_contrast():
    imgs = np.arange(5 * 4 * 3, dtype=np.float32).reshape(5, 4, 3)
    mosaic = V.tile_mosaic(imgs, n_cols=3, border=1)
    assert mosaic.shape == (2 * 5 + 1, 3 * 4 + 1)
    assert mosaic.min() >= 0 and mosaic.max() <= 1
    assert np.all(mosaic[0] == 0) and np.all(mosaic[:, 0] == 0)  # black border
    # per-tile contrast: every tile reaches an extreme of the grey scale
    for k in range(5):
        r, c = divmod(k, 3)
        tile = mosaic[1 + r * 5 : 1 + r * 5 + 4, 1 + c * 4 : 1 + c * 4 + 3]
        assert np.isclose(tile.min(), 0.0) or np.isclose(tile.max(), 1.0)


def test_save_tiles_writes_a_png_of_the_expected_size(tmp_path, trained):
    net, _, _ = trained
    feats = V.feature_images(net, "hid1")
    path = V.save_tiles(feats, tmp_path / "f.png", n_cols=4, border=1, zoom=3)
    assert path == str(tmp_path / "f.png")
    img = mpimg.imread(path)
    assert img.shape[:2] == (3 * (4 * 9 + 1), 3 * (4 * 9 + 1))
    titled = mpimg.imread(V.save_tiles(feats, tmp_path / "t.png", titles=[f"u{i}" for i in range(16)]))
    assert titled.ndim == 3 and titled.shape[0] > 100
    rgb = mpimg.imread(V.save_tiles(np.random.default_rng(0).random((6, 3, 5, 5)), tmp_path / "c.png", zoom=1))
    assert rgb.shape[:2] == (2 * 6 + 1, 3 * 6 + 1)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files


@pytest.fixture
def figures(monkeypatch):
    """The matplotlib figures the plotting functions write, captured as they are written."""
    from aekit.inspect import pictures, plots

    drawn = []
    write = pictures._figure_bytes

    def capture(fig, fmt):
        drawn.append(fig)
        return write(fig, fmt)

    # Patched where the writers look it up: plots for the plots, pictures for titled tiles.
    for module in (pictures, plots):
        monkeypatch.setattr(module, "_figure_bytes", capture)
    return drawn


def _tile(picture, layout, k):
    top, left, bottom, right = layout.box(k)
    return picture[top:bottom, left:right, :3]


def test_plot_reconstructions_has_two_labelled_rows_of_tiles(tmp_path, trained, figures):
    net, x, _ = trained
    recon = mpimg.imread(V.plot_reconstructions(net, x, tmp_path / "r.png", n=5, zoom=2))
    layout = figures[-1].tile_layout
    assert (layout.rows, layout.cols, layout.tile_h, layout.tile_w) == (2, 5, 16, 16)
    assert recon.shape[:2] == (layout.height, layout.width)
    texts = [t.get_text() for t in figures[-1].axes[0].texts]
    assert "input" in texts and "reconstruction" in texts and all(str(i) in texts for i in range(5))
    # Row 0 holds the inputs, row 1 their reconstructions, on the inputs' grey scale.
    low, high = x[:5].min(), x[:5].max()
    for k, image in enumerate([*x[:5], *net.predict(x[:5])]):
        expected = np.kron(np.clip((image.reshape(8, 8) - low) / (high - low), 0, 1), np.ones((2, 2)))
        np.testing.assert_allclose(_tile(recon, layout, k)[..., 0], expected, atol=1.01 / 255)


def test_plot_history_draws_the_history(tmp_path, figures):
    from types import SimpleNamespace

    history = [
        {"epoch": 1, "train": {"loss": 4.0, "err": 2.0}, "valid": {"loss": 5.0}},
        {"epoch": 2, "train": {"loss": 1.0, "err": 0.5}, "valid": {}},
        {"epoch": 3, "train": {"loss": 0.1, "err": 0.05}, "valid": {"loss": 0.2}},
    ]
    V.plot_history(SimpleNamespace(history=history), tmp_path / "h.png")
    (ax,) = figures[-1].axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    expected = {
        "train loss": ([1, 2, 3], [4.0, 1.0, 0.1], "-"),
        "train err": ([1, 2, 3], [2.0, 0.5, 0.05], "-"),
        "valid loss": ([1, 3], [5.0, 0.2], "--"),
    }  # no 'valid err': never monitored
    assert sorted(lines) == sorted(expected)
    for label, (epochs, values, style) in expected.items():
        np.testing.assert_array_equal(lines[label].get_xdata(), epochs)
        np.testing.assert_array_equal(lines[label].get_ydata(), values)
        assert lines[label].get_linestyle() == style
    assert ax.get_yscale() == "log"  # values span 5 / 0.05 = 100 > 20
    V.plot_history(SimpleNamespace(history=history[1:2]), tmp_path / "h2.png")
    assert figures[-1].axes[0].get_yscale() == "linear"  # span 1 / 0.5
    V.plot_history(SimpleNamespace(history=[]), tmp_path / "h3.png")
    assert [t.get_text() for t in figures[-1].axes[0].texts] == ["no training history"]


def _aligned(points, reference):
    """``points`` with each column's sign flipped to agree with ``reference`` (PCA signs are arbitrary)."""
    signs = np.sign(np.sum(points * reference, axis=0))
    return points * signs


def test_plot_codes_draws_the_pca_of_the_codes(tmp_path, trained, figures):
    from sklearn.decomposition import PCA

    net, x, y = trained
    z = net.encode(x[:200]).astype(np.float64)
    reference = PCA(n_components=2).fit_transform(z)
    V.plot_codes(net, x[:200], tmp_path / "c.png")
    (ax,) = figures[-1].axes
    (scatter,) = ax.collections
    np.testing.assert_allclose(_aligned(np.asarray(scatter.get_offsets()), reference), reference, atol=1e-9)
    # With labels: one scatter per class, in sorted class order, holding that class's points.
    V.plot_codes(net, x[:200], tmp_path / "c2.png", labels=y[:200])
    ax = figures[-1].axes[0]
    classes = np.unique(y[:200])
    assert [c.get_label() for c in ax.collections] == [str(c) for c in classes]
    drawn = np.concatenate([np.asarray(c.get_offsets()) for c in ax.collections])
    expected = np.concatenate([reference[y[:200] == c] for c in classes])
    np.testing.assert_allclose(_aligned(drawn, expected), expected, atol=1e-9)


def test_plot_activations_draws_each_units_histogram(tmp_path, trained, figures):
    net, x, _ = trained
    V.plot_activations(net, x[:200], tmp_path / "a.png", max_units=5, bins=12)
    h = net.encode(x[:200], layer="hid1")
    axes = figures[-1].axes
    assert len(axes) == 6 and not axes[5].axison  # a 2x3 grid, the last cell empty
    for unit in range(5):
        counts, edges = np.histogram(h[:, unit], bins=12)
        bars = axes[unit].patches
        np.testing.assert_array_equal([bar.get_height() for bar in bars], counts)
        np.testing.assert_allclose([bar.get_x() for bar in bars], edges[:-1], rtol=1e-6)
        assert axes[unit].get_title() == f"unit {unit}"


def test_save_top_inputs_shows_the_top_inputs_of_each_unit(tmp_path, trained, figures):
    net, x, _ = trained
    k, units = 4, 6
    img = mpimg.imread(V.save_top_inputs(net, x, tmp_path / "top.png", k=k, max_units=units))
    layout = figures[-1].tile_layout
    assert (layout.rows, layout.cols, layout.tile_h) == (units, k, 64)  # 8x8 tiles zoomed to 64 px
    codes = net.encode(x)
    order = np.argsort(-codes, axis=0)
    ranked = np.take_along_axis(codes, order, axis=0)
    assert np.all(ranked[:k] > ranked[1 : k + 1])  # no ties: the top k of each unit are well defined
    scaled = (x - x.min()) / (x.max() - x.min())
    for unit in range(units):
        for rank in range(k):
            expected = np.kron(scaled[order[rank, unit]].reshape(8, 8), np.ones((8, 8)))
            tile = _tile(img, layout, unit * k + rank)[..., 0]
            np.testing.assert_allclose(tile, expected, atol=1.01 / 255)  # 8-bit grey levels
    texts = [t.get_text() for t in figures[-1].axes[0].texts]
    assert [f"unit {u}" for u in range(units)] == [t for t in texts if t.startswith("unit")]
    assert any("first 6 of 16 units" in t for t in texts)


def _writers(net, x):
    """Every picture-writing function of visualize, as name -> (call on a path, draws a figure)."""
    tiles = np.random.default_rng(0).random((4, 5, 5))
    return {
        "save_tiles": (lambda p: V.save_tiles(tiles, p), False),
        "save_tiles titled": (lambda p: V.save_tiles(tiles, p, titles="abcd"), True),
        "plot_reconstructions": (lambda p: V.plot_reconstructions(net, x, p, n=3), False),
        "plot_history": (lambda p: V.plot_history(net, p), True),
        "plot_codes": (lambda p: V.plot_codes(net, x[:50], p), True),
        "plot_activations": (lambda p: V.plot_activations(net, x[:50], p, max_units=1), True),
        "save_top_inputs": (lambda p: V.save_top_inputs(net, x[:50], p, k=2, max_units=2), False),
    }


# The first bytes of each format, from its specification.
MAGIC = {
    ".png": b"\x89PNG\r\n\x1a\n",
    ".jpg": b"\xff\xd8\xff",
    ".JPEG": b"\xff\xd8\xff",
    ".pdf": b"%PDF-",
    ".tiff": (b"II*\x00", b"MM\x00*"),
    ".gif": b"GIF8",
    ".svg": b"<?xml",
    ".eps": b"%!PS-Adobe",
    "": b"\x89PNG",
}


def _head(path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(16)


def test_pixel_pictures_honour_the_suffix(tmp_path, trained):
    net, x, _ = trained
    for name, (write, figure) in _writers(net, x).items():
        if not figure:
            for suffix in (".jpg", ".png"):
                assert _head(write(tmp_path / f"{name}{suffix}")).startswith(MAGIC[suffix]), (name, suffix)
    tiles = np.random.default_rng(1).random((6, 4, 4))
    for suffix, magic in MAGIC.items():
        assert _head(V.save_tiles(tiles, tmp_path / f"tiles{suffix}")).startswith(magic), suffix
    # The JPEG holds the PNG's picture, up to its lossy compression.
    from PIL import Image

    png = np.asarray(Image.open(V.save_tiles(tiles, tmp_path / "t.png", zoom=4)).convert("L"), dtype=float)
    jpeg = Image.open(V.save_tiles(tiles, tmp_path / "t.jpg", zoom=4))
    assert jpeg.format == "JPEG" and jpeg.size == png.shape[::-1]
    assert np.abs(np.asarray(jpeg.convert("L"), dtype=float) - png).mean() < 8


def test_figures_honour_the_suffix(tmp_path, trained):
    net, x, _ = trained
    writers = _writers(net, x)
    for name, (write, figure) in writers.items():
        if figure:
            assert _head(write(tmp_path / f"{name}.jpg")).startswith(MAGIC[".jpg"]), name
    assert _head(writers["plot_history"][0](tmp_path / "h.png")).startswith(MAGIC[".png"])


def test_unsupported_suffixes_and_missing_folders_are_configuration_errors(tmp_path, trained):
    net, x, _ = trained
    (tmp_path / "folder.png").mkdir()
    missing = tmp_path / "nonexistent" / "dir" / "t.png"
    for name, (write, _) in _writers(net, x).items():
        for path, suffix in (("p.txt", ".txt"), ("p.pgf", ".pgf"), ("p.png.bak", ".bak")):
            with pytest.raises(
                aekit.ConfigurationError,
                match=rf"path .* has suffix '\{suffix}'; expected one of .*'\.jpg'.*or none for PNG",
            ):
                write(tmp_path / path)
        # Not a ModelFileError (the class atomic_write gives model files): a bad path argument.
        with pytest.raises(aekit.ConfigurationError) as error:
            write(missing)
        assert str(error.value) == f"path {str(missing)!r}: folder {str(missing.parent)!r} does not exist", name
        with pytest.raises(aekit.ConfigurationError, match="is a folder, not a file"):
            write(tmp_path / "folder.png")
    assert [p.name for p in tmp_path.iterdir()] == ["folder.png"]  # nothing written by a refused call


def test_top_inputs_are_the_most_activating_rows(trained):
    net, x, _ = trained
    index = V.top_inputs(net, x, layer="hid1", k=5)
    codes = net.encode(x, layer="hid1")
    assert index.shape == (16, 5)
    for unit in range(16):
        expected = np.sort(codes[:, unit])[::-1][:5]
        np.testing.assert_allclose(codes[index[unit], unit], expected)


def test_visualize_does_not_load_pyplot():
    import subprocess
    import sys

    code = (
        "import sys, aekit, numpy as np, tempfile, os\n"
        "net = aekit.Autoencoder([16, (4, 'sigmoid'), (16, 'sigmoid')])\n"
        "d = tempfile.mkdtemp()\n"
        "aekit.visualize.save_tiles(aekit.visualize.feature_images(net), os.path.join(d, 'f.png'))\n"
        "aekit.visualize.plot_history(net, os.path.join(d, 'h.png'))\n"
        "print('matplotlib.pyplot' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"MPLBACKEND": "", "PATH": ""}
    )
    assert out.stdout.strip() == "False"
