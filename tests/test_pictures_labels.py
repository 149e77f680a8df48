"""Pictures that cannot mislead: dead units greyed and named, every tile labelled, "first N of M"
where units are left out, labelled rows, no duplicate curves, a minimum tile size, a visible
collapsed code.  Checked on the written pictures and on the figures drawn (matplotlib objects)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import aekit
from aekit import visualize as V
from aekit.inspect import grids, pictures, plots

mpimg = pytest.importorskip("matplotlib.image")

torch.set_num_threads(1)  # tiny models: threads only contend on a shared CPU

DEAD = [0, 3, 9]


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    return (load_digits().data[:600] / 16.0).astype(np.float32)


@pytest.fixture(scope="module")
def net_with_dead(digits):
    """32 units, three of them dead: a bias of -100 keeps them at 0 on every input."""
    net = aekit.Autoencoder([64, (32, "sigmoid"), (64, "sigmoid")], rng=0)
    net.train(digits, algo="adam", learning_rate=1e-2, batch_size=100, max_epochs=3)
    with torch.no_grad():
        net.find("hid1", "b")[DEAD] = -100.0
    return net


@pytest.fixture
def figures(monkeypatch):
    """The matplotlib figures the picture functions write, captured as they are written."""
    drawn = []
    write = pictures._figure_bytes

    def capture(fig, fmt):
        drawn.append(fig)
        return write(fig, fmt)

    for module in (pictures, plots):
        monkeypatch.setattr(module, "_figure_bytes", capture)
    return drawn


def texts(fig):
    return {t.get_text(): t for ax in fig.axes for t in ax.texts}


def tile(picture, layout, k):
    top, left, bottom, right = layout.box(k)
    return picture[top:bottom, left:right, :3]


def test_dead_units_are_greyed_and_every_tile_names_its_unit(tmp_path, net_with_dead, digits, figures):
    path = V.save_features(net_with_dead, tmp_path / "f.png", "hid1", x=digits)
    picture = mpimg.imread(path)
    fig = figures[-1]
    layout = fig.tile_layout
    assert picture.shape[:2] == (layout.height, layout.width) and layout.n == 32
    labels = texts(fig)
    for unit in range(32):
        name = f"{unit} dead" if unit in DEAD else str(unit)
        assert name in labels, name
        assert labels[name].get_color() == (grids.DEAD_COLOUR if unit in DEAD else "black")
        pixels = tile(picture, layout, unit)
        if unit in DEAD:  # light grey at low contrast, not a contrast-stretched picture of noise
            assert pixels.min() >= 0.74 and pixels.max() <= 0.86
        else:
            assert pixels.max() - pixels.min() > 0.5
    title = next(t for t in labels if t.startswith("encoder features of 'hid1'"))
    assert "all 32 units" in title and "3 of 32 dead over 600 rows" in title
    # Decoder features of the same units: the same dead units.
    V.save_features(net_with_dead, tmp_path / "d.png", "hid1", kind="decoder", x=digits)
    assert {t for t in texts(figures[-1]) if t.endswith(" dead")} == {f"{u} dead" for u in DEAD}
    # Without data nothing is called dead, but every tile is still labelled.
    V.save_features(net_with_dead, tmp_path / "n.png", "hid1")
    assert {str(u) for u in range(32)} <= set(texts(figures[-1]))
    # save_tiles greys out what it is told is dead, and labels tiles by index.
    V.save_tiles(np.random.default_rng(0).random((4, 5, 5)), tmp_path / "t.png", dead=[False, True, False, False])
    assert {"0", "1 dead", "2", "3"} <= set(texts(figures[-1]))


def test_pictures_say_when_units_are_left_out(tmp_path, net_with_dead, digits, figures):
    V.save_top_inputs(net_with_dead, digits, tmp_path / "top.png")  # 16 rows by default
    found = texts(figures[-1])
    assert any("first 16 of 32 units" in t for t in found)
    assert [f"unit {u} dead" if u in DEAD else f"unit {u}" for u in range(16)] == [
        t for t in found if t.startswith("unit ")
    ]
    V.plot_activations(net_with_dead, digits, tmp_path / "a.png")  # 25 histograms by default
    title = figures[-1]._suptitle.get_text()
    assert "first 25 of 32 units" in title and "3 of 32 dead" in title
    axes = figures[-1].axes
    for unit in range(25):
        assert axes[unit].get_title() == (f"unit {unit} dead" if unit in DEAD else f"unit {unit}")
        colours = {tuple(bar.get_facecolor()) for bar in axes[unit].patches}
        assert (colours == {(0.7, 0.7, 0.7, 1.0)}) == (unit in DEAD)
    V.save_features(net_with_dead, tmp_path / "f.png", "hid1", x=digits, max_units=10)
    assert figures[-1].tile_layout.n == 10
    assert any("first 10 of 32 units" in t for t in texts(figures[-1]))
    V.plot_activations(net_with_dead, digits, tmp_path / "all.png", max_units=40)
    assert "all 32 units" in figures[-1]._suptitle.get_text()


def test_dead_rows_of_top_inputs_are_greyed(tmp_path, net_with_dead, digits, figures):
    picture = mpimg.imread(V.save_top_inputs(net_with_dead, digits, tmp_path / "top.png", k=3, max_units=4))
    layout = figures[-1].tile_layout
    assert texts(figures[-1])["unit 0 dead"].get_color() == grids.DEAD_COLOUR
    for k in range(3):  # unit 0 is dead: its "top" inputs are arbitrary, drawn greyed
        assert tile(picture, layout, k).max() <= 0.86
    assert max(tile(picture, layout, 3 + k).max() for k in range(3)) > 0.95  # unit 1 is alive


def test_minimum_tile_size(tmp_path):
    # Tiles are at least 64 px on their longer side (an integer zoom), within 4096 px a side.
    assert grids.default_zoom((8, 8)) == 8 and grids.default_zoom((28, 28)) == 3
    assert grids.default_zoom((5, 12)) == 6 and grids.default_zoom((64, 64)) == 1
    tiles = np.random.default_rng(0).random((32, 8, 8))
    picture = mpimg.imread(V.save_tiles(tiles, tmp_path / "t.png"))
    assert picture.shape[:2] == (8 * (6 * 9 + 1), 8 * (6 * 9 + 1))  # 6x6 grid of 8x8 tiles, zoom 8
    many = np.random.default_rng(0).random((1000, 8, 8))
    picture = mpimg.imread(V.save_tiles(many, tmp_path / "m.png", n_cols=100))
    assert picture.shape[1] <= grids.MAX_PICTURE_SIDE and picture.shape[1] == 4 * (100 * 9 + 1)


def test_plot_history_draws_equal_monitors_once(tmp_path, figures):
    from types import SimpleNamespace

    history = [{"epoch": e, "train": {"loss": 1.0 / e, "err": 1.0 / e}, "valid": {}} for e in (1, 2, 3)]
    V.plot_history(SimpleNamespace(history=history), tmp_path / "h.png")
    (ax,) = figures[-1].axes
    assert [line.get_label() for line in ax.get_lines()] == ["train loss = err"]
    assert "loss = err" in ax.get_title()
    history[1]["train"]["loss"] = 0.6  # a penalty makes them differ: two curves
    V.plot_history(SimpleNamespace(history=history), tmp_path / "h2.png")
    (ax,) = figures[-1].axes
    assert [line.get_label() for line in ax.get_lines()] == ["train loss", "train err"]
    assert ax.get_title() == "training curves"


def test_collapsed_code_is_visible_in_plot_codes(tmp_path, digits, figures):
    net = aekit.Autoencoder([64, (6, "sigmoid"), (64, "sigmoid")], rng=0)
    V.plot_codes(net, digits, tmp_path / "ok.png")
    (ax,) = figures[-1].axes
    assert "COLLAPSED" not in ax.get_title() and "spread across inputs" in ax.get_title()
    with torch.no_grad():
        net.find("hid1", "w").mul_(1e-5)  # every input gets (almost) the same code
    z = net.encode(digits).astype(np.float64)
    relative = np.sqrt(z.var(axis=0).mean()) / np.sqrt(np.mean(z**2))
    assert relative < 1e-2
    V.plot_codes(net, digits, tmp_path / "collapsed.png")
    (ax,) = figures[-1].axes
    assert ax.get_title().startswith("COLLAPSED CODE") and f"{relative:.2g}" in ax.get_title()
    assert ax.title.get_color() == grids.DEAD_COLOUR
    # Drawn at the scale of the codes' size: the cloud is a dot, not a blown-up cloud.
    size = np.sqrt(np.mean(z**2)) * np.sqrt(z.shape[1])
    for low, high in (ax.get_xlim(), ax.get_ylim()):
        assert high - low >= 2 * size * 0.999
    points = np.asarray(ax.collections[0].get_offsets())
    assert np.ptp(points, axis=0).max() < 1e-3 * (ax.get_xlim()[1] - ax.get_xlim()[0])
    # diagnose calls it collapsed too, with the same figure.
    finding = next(f for f in aekit.diagnose(net, digits) if f.code == "collapsed-code")
    assert finding.value == pytest.approx(relative, rel=1e-6)
