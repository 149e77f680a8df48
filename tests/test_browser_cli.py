"""``aekit browse``: the page from the command line, its files' errors, and ``--serve`` on localhost."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import numpy as np
import pytest
from test_browser import read_data_file

import aekit
from aekit import cli


@pytest.fixture
def files(tmp_path):
    x = np.random.default_rng(0).random((60, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    net = aekit.Autoencoder([16, (5, "relu"), (16, "linear")], rng=0)
    net.save(tmp_path / "m.aekit")
    return tmp_path, net, x


def test_browse_command_writes_the_page_with_labels_and_contexts(files, capsys):
    folder, net, x = files
    (folder / "c.json").write_text(json.dumps([["<i>", f"t{i}", "</i>"] for i in range(60)]))
    (folder / "y.json").write_text(json.dumps(["a", "b", "c"] * 20))
    code = cli.main(
        ["browse", str(folder / "m.aekit"), str(folder / "x.npy"), "-o", str(folder / "page"),
         "--contexts", str(folder / "c.json"), "--labels", str(folder / "y.json"), "--top", "4"]
    )  # fmt: skip
    assert code == 0
    assert "wrote the unit browser" in capsys.readouterr().out
    summary = read_data_file(folder / "page" / "data" / "summary.js")
    assert summary["units"] == 5 and summary["k"] == 4 and summary["labels"] == ["a", "b", "c"]
    card = read_data_file(folder / "page" / "data" / "units_0000.js")[0]
    expected = aekit.inspect.top_activations(net, x, k=4).indices[0].tolist()
    assert [t["row"] for t in card["top"]] == expected
    assert [t["context"][1] for t in card["top"]] == [f"t{r}" for r in expected]


def test_browse_command_errors_are_one_line(files, capsys):
    folder, _, _ = files
    (folder / "c.json").write_text(json.dumps({"not": "a list"}))
    code = cli.main(["browse", str(folder / "m.aekit"), str(folder / "x.npy"), "-o", str(folder / "p"),
                     "--contexts", str(folder / "c.json")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and "--contexts" in err and "JSON list" in err and "Traceback" not in err
    (folder / "c.json").write_text(json.dumps(["x"] * 3))
    assert cli.main(["browse", str(folder / "m.aekit"), str(folder / "x.npy"), "-o", str(folder / "p"),
                     "--contexts", str(folder / "c.json")]) == 1  # fmt: skip
    assert "one entry per row of x (60), got 3" in capsys.readouterr().err


def test_browse_serve_answers_on_localhost(files):
    folder, _, _ = files
    process = subprocess.Popen(
        [sys.executable, "-m", "aekit", "browse", str(folder / "m.aekit"), str(folder / "x.npy"),
         "-o", str(folder / "page"), "--serve", "--port", "0"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        lines = [process.stdout.readline(), process.stdout.readline()]
        assert lines[0].startswith("wrote the unit browser"), lines
        url = lines[1].split(" at ")[1].split(" ")[0]
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url, timeout=10) as response:
            assert b'<script src="data/summary.js">' in response.read()
        with urllib.request.urlopen(url + "data/summary.js", timeout=10) as response:
            assert response.read().startswith(b"aekitData('summary'")
    finally:
        process.terminate()
        process.wait(timeout=10)
