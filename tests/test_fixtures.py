"""Model files written by earlier aekit versions still load and predict the same values."""

from pathlib import Path

import numpy as np

import aekit
from aekit.saving import read_model_file

DATA = Path(__file__).resolve().parent / "data"


def test_format_version_1_file_loads_and_predicts_the_stored_values():
    path = DATA / "model_v1.aekit"
    _, meta = read_model_file(path)
    assert meta["format_version"] == 1
    net = aekit.load(path)
    expected = np.load(DATA / "model_v1_expected.npz")
    np.testing.assert_allclose(net.predict(expected["x"]), expected["predict"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.encode(expected["x"]), expected["encode"], rtol=1e-5, atol=1e-6)
    assert net.preprocessing is not None  # the scaling step came back from the file
    assert [h["epoch"] for h in net.history] == [1, 2, 3]
    assert [layer.name for layer in net.layers] == ["in", "hid1", "out"]
