"""The command line for sparse dictionaries: topk layer shorthand, --unit-norm-decoder, aekit evaluate."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import aekit
from aekit.cli.config import parse_layers_arg, unit_norm_decoder
from aekit.errors import ConfigurationError
from tests.test_cli import assert_one_line_error, call


def test_layer_shorthand_for_parametric_codes():
    assert parse_layers_arg("384,3072:topk32,384") == [384, (3072, "topk:32"), 384]
    assert parse_layers_arg("384,3072:batchtopk:16,384") == [384, (3072, "batchtopk:16"), 384]
    assert parse_layers_arg("8,4:relu,8:tied") == [8, (4, "relu"), (8, "tied")]


def test_unit_norm_decoder_keeps_the_last_layers_activation():
    assert unit_norm_decoder([8, 4, (8, "linear")])[-1] == {
        "size": 8,
        "activation": "linear",
        "constraint": "unit_norm",
    }
    assert unit_norm_decoder([8, 4, 8])[-1] == {"size": 8, "constraint": "unit_norm"}
    with pytest.raises(ConfigurationError, match="tied"):
        unit_norm_decoder([8, 4, (8, "tied")])


def test_train_then_evaluate_matches_the_python_figures(tmp_path, capsys):
    x = np.random.default_rng(0).normal(size=(400, 12)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = call(
        capsys,
        *("train", "x.npy", "--layers", "12,64:topk4,12", "--unit-norm-decoder", "-o", "m.aekit"),
        *("--epochs", "2", "-q"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    net = aekit.load(tmp_path / "m.aekit")
    assert net.specs[-1].constraint == "unit_norm"
    norms = torch.linalg.vector_norm(net.find("out", "w"), dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms))
    assert (np.count_nonzero(net.encode(x), axis=1) <= 4).all()

    result = call(capsys, "evaluate", "m.aekit", "x.npy", "-o", "m.json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    written = json.loads((tmp_path / "m.json").read_text())
    want = aekit.evaluate(net, x)
    assert written.keys() == want.keys()
    for key, value in want.items():
        assert written[key] == pytest.approx(value, rel=1e-12), key
        assert key in result.stdout


def test_evaluate_rejects_an_unknown_metric_in_one_line(tmp_path, capsys):
    x = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    aekit.Autoencoder([6, 3, 6], rng=0).save(tmp_path / "m.aekit")
    result = call(capsys, "evaluate", "m.aekit", "x.npy", "--metrics", "fvu,nosuch", cwd=tmp_path)
    assert_one_line_error(result, match="nosuch")
