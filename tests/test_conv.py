"""Convolutional layers: shapes, gradients, tying, saving, errors, and a model that learns."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import aekit
from aekit.conv import Conv2, TiedConv, conv_same, deconv_same


def conv(channels, stride=1, **kw):
    return dict(form="conv2", channels=channels, stride=stride, **kw)


def deconv(channels, stride=1, **kw):
    return dict(form="deconv2", channels=channels, stride=stride, **kw)


def shapes(net):
    return [layer.output_shape for layer in net.layers]


@pytest.mark.parametrize("size", [7, 8, 28])
@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("kernel", [1, 2, 3, 5])
def test_same_padding_sizes_and_tied_mirror(size, stride, kernel):
    net = aekit.Autoencoder([(2, size, size), conv(3, stride, kernel=kernel), dict(form="tied")])
    out = -(-size // stride)
    assert shapes(net) == [(2, size, size), (3, out, out), (2, size, size)]
    x = torch.rand(4, 2, size, size)
    feats = net.feed_forward(x)
    assert feats["hid1:out"].shape == (4, 3, out, out)
    assert net.predict(x).shape == (4, 2, size, size)
    # A stride-s deconv maps H to H*s, and back through a stride-s conv to H.
    net2 = aekit.Autoencoder([(2, out, out), deconv(3, stride, kernel=kernel), conv(2, stride, kernel=kernel)])
    assert shapes(net2)[1:] == [(3, out * stride, out * stride), (2, out, out)]
    assert net2.predict(torch.rand(3, 2, out, out)).shape == (3, 2, out, out)


@pytest.mark.parametrize("size,stride", [(7, 2), (28, 3), (13, 2)])
def test_deconv_shape_option_reaches_odd_sizes(size, stride):
    mid = -(-size // stride)
    net = aekit.Autoencoder([(1, size, size), conv(4, stride), deconv(1, stride, shape=(1, size, size))])
    assert shapes(net)[1:] == [(4, mid, mid), (1, size, size)]
    x = torch.rand(16, size * size)
    assert net.predict(x).shape == (16, 1, size, size)
    before = net.loss(x).item()
    net.train(x, max_epochs=5, validate_every=0, learning_rate=1e-2)
    assert net.loss(x).item() < before


def test_valid_and_int_padding_follow_torch():
    x = torch.rand(2, 3, 9, 9)
    for padding, expected in (("valid", 4), (1, 5), (0, 4)):
        net = aekit.Autoencoder([(3, 9, 9), conv(4, 2, padding=padding), dict(form="tied")])
        layer = net.layers[1]
        ref = F.conv2d(x, layer.w, layer.b, stride=2, padding=0 if padding == "valid" else padding)
        assert layer.output_shape == (4, expected, expected)
        torch.testing.assert_close(layer.transform(x), ref)
        assert net.predict(x).shape == (2, 3, 9, 9)


def test_conv_matches_torch_reference_with_same_padding():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 10, 10)
    net = aekit.Autoencoder([(3, 10, 10), conv(5, 1, kernel=3), deconv(3, 1, kernel=3)])
    layer = net.layers[1]
    torch.testing.assert_close(layer.transform(x), F.conv2d(x, layer.w, layer.b, padding=1))
    d = net.layers[2]
    z = torch.rand(2, 5, 10, 10)
    torch.testing.assert_close(d.transform(z), F.conv_transpose2d(z, d.w, d.b, padding=1))
    assert layer.w.shape == (5, 3, 3, 3) and d.w.shape == (5, 3, 3, 3)  # (out,in,k,k) / (in,out,k,k)


def _padded_conv(x, w, b, stride, pads):
    """conv_same by its definition: an explicit zero pad (or crop), then a plain convolution."""
    return F.conv2d(F.pad(x, pads), w, b, stride=stride)


def _cropped_deconv(x, w, b, stride, crop, out_hw):
    """deconv_same by its definition: the full transposed convolution, cropped or zero-extended, plus b."""
    full = F.conv_transpose2d(x, w, None, stride=stride)
    (top, left), (out_h, out_w) = crop, out_hw
    full = F.pad(full, (-left, out_w + left - full.shape[3], -top, out_h + top - full.shape[2]))
    return full + b.view(1, -1, 1, 1)


@pytest.mark.parametrize("size", [5, 8, 9])
@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("kernel", [1, 2, 3, 4])
def test_native_padding_and_cropping_equal_the_padded_definitions(size, stride, kernel):
    # Symmetric pads go to the convolution itself and crops become views with the bias in the
    # kernel's pass; asymmetric pads, negative pads (tied layers) and zero extensions keep F.pad.
    torch.manual_seed(size * 100 + stride * 10 + kernel)
    x = torch.rand(2, 3, size, size, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, kernel, kernel, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    for pads in [(0, 0, 0, 0), (1, 1, 1, 1), (0, 1, 0, 1), (1, 2, 0, 0), (-1, -1, 0, 1), (2, 2, 1, 1)]:
        if size + pads[0] + pads[1] < kernel or size + pads[2] + pads[3] < kernel:
            continue
        got, want = conv_same(x, w, b, stride, pads), _padded_conv(x, w, b, stride, pads)
        torch.testing.assert_close(got, want)
        grads = torch.autograd.grad((got * torch.cos(want.detach())).sum(), (x, w, b))
        expected = torch.autograd.grad((want * torch.cos(want.detach())).sum(), (x, w, b))
        for g, e in zip(grads, expected):
            torch.testing.assert_close(g, e)
    z = torch.rand(2, 4, size, size, dtype=torch.float64, requires_grad=True)
    full = (size - 1) * stride + kernel
    wt = w.detach().clone().requires_grad_()  # transposed-conv layout (C_in=4, C_out=3, k, k)
    for crop, out in [
        ((0, 0), (full, full)),
        ((0, 0), (full - 1, full)),
        ((1, 0), (full - 1, full - 2)),
        ((0, 1), (full + 1, full)),
        ((1, 1), (full + 2, full + 2)),
    ]:
        got, want = deconv_same(z, wt, b[:3], stride, crop, out), _cropped_deconv(z, wt, b[:3], stride, crop, out)
        assert got.shape == want.shape == (2, 3, *out)
        torch.testing.assert_close(got, want)
        grads = torch.autograd.grad((got * torch.sin(want.detach())).sum(), (z, wt, b))
        expected = torch.autograd.grad((want * torch.sin(want.detach())).sum(), (z, wt, b))
        for g, e in zip(grads, expected):
            torch.testing.assert_close(g, e)


STRIDED_1X1 = """
import torch
from aekit.conv import conv_same
torch.set_num_threads(1)
for c_in, c_out in [(1, 1), (2, 2), (1, 4), (3, 8)]:
    for _ in range(150):
        x = torch.rand(16, c_in, 6, 6)
        w = torch.randn(c_out, c_in, 1, 1, requires_grad=True)
        b = torch.zeros(c_out, requires_grad=True)
        conv_same(x, w, b, 2, (0, 0, 0, 0)).sum().backward()
print("ok")
"""


def test_strided_one_by_one_convolutions_train_without_corrupting_memory():
    # In torch 2.13 oneDNN's strided 1x1 weight gradient on channels-last input wrote out of bounds
    # with one thread and few channels: 'double free or corruption' within a few hundred steps.
    # A fresh process, as a corrupted heap may hang or abort it.
    done = subprocess.run([sys.executable, "-c", STRIDED_1X1], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-500:]


def test_convolutions_run_channels_last_from_a_one_channel_input_on():
    # oneDNN works in NHWC: from the first layer on (one input channel, where NCHW and NHWC
    # strides both look contiguous) each conv and deconv output stays NHWC, so no layer reorders.
    net = aekit.Autoencoder(
        [(1, 12, 12), conv(4, 2), conv(8, 2), deconv(4, 2), deconv(1, 2, activation="sigmoid")], rng=0
    )
    x = torch.rand(3, 1, 12, 12)
    outputs = net.graph(x)
    for name in ("hid1", "hid2", "hid3"):
        out = outputs[f"{name}:out"]
        assert out.stride(1) == 1 and out.is_contiguous(memory_format=torch.channels_last), name
    assert all(p.is_contiguous() for p in net.params)  # the parameters themselves stay NCHW (safetensors)
    reference = x
    for layer in net.layers[1:]:  # the same layers, computed NCHW by their padded definitions
        if isinstance(layer, Conv2):
            reference = layer.activation(_padded_conv(reference, layer.w, layer.b, layer.spec.stride, layer.pads))
        else:
            reference = layer.activation(
                _cropped_deconv(reference, layer.w, layer.b, layer.spec.stride, layer.crop, layer.output_shape[1:])
            )
    torch.testing.assert_close(outputs["out:out"], reference)


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("size", [7, 8])
def test_pool_and_upsample_shapes_and_values(mode, size):
    half = -(-size // 2)
    net = aekit.Autoencoder(
        [
            (2, size, size),
            dict(form="pool", mode=mode, kernel=2),
            dict(form="upsample", scale=2),
            conv(2, 1, kernel=2 * half - size + 1, padding="valid"),
        ]
    )
    assert shapes(net)[1:3] == [(2, half, half), (2, 2 * half, 2 * half)]
    x = torch.rand(3, 2, size, size)
    pooled = torch.from_numpy(net.feed_forward(x)["hid1:out"])
    if size == 8:  # no padding: exactly torch's pooling
        ref = F.max_pool2d(x, 2) if mode == "max" else F.avg_pool2d(x, 2)
    else:  # the last row/column is a window of one real pixel
        ref = F.max_pool2d(x, 2, ceil_mode=True) if mode == "max" else F.avg_pool2d(x, 2, ceil_mode=True)
    torch.testing.assert_close(pooled, ref)
    up = torch.from_numpy(net.feed_forward(x)["hid2:out"])
    torch.testing.assert_close(up, pooled.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))


def test_conv_deconv_pair_passes_gradcheck_in_float64():
    torch.manual_seed(1)
    x = torch.rand(1, 1, 7, 7, dtype=torch.float64, requires_grad=True)
    w1 = torch.randn(2, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    b1 = torch.randn(2, dtype=torch.float64, requires_grad=True)
    w2 = torch.randn(2, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    b2 = torch.randn(1, dtype=torch.float64, requires_grad=True)

    def pair(x, w1, b1, w2, b2):  # 7 -> 4 -> 7 with 'same' padding and stride 2
        h = torch.tanh(conv_same(x, w1, b1, 2, (1, 1, 1, 1)))
        return deconv_same(h, w2, b2, 2, (1, 1), (7, 7))

    assert pair(x, w1, b1, w2, b2).shape == (1, 1, 7, 7)
    assert torch.autograd.gradcheck(pair, (x, w1, b1, w2, b2), fast_mode=True)
    # and through the layers themselves, in double precision
    net = aekit.Autoencoder([(1, 7, 7), conv(2, 2, activation="tanh"), deconv(1, 2, shape=(7, 7)), dict(form="tied")])
    graph = net.graph.double()
    xin = torch.rand(1, 1, 7, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: graph(t)["out:out"], (xin,), fast_mode=True)


def test_tied_deconv_is_the_adjoint_and_shares_the_kernel():
    net = aekit.Autoencoder([(2, 7, 7), conv(3, 2, activation="linear"), dict(form="tied")])
    enc, dec = net.layers[1], net.layers[2]
    assert isinstance(enc, Conv2) and isinstance(dec, TiedConv)
    assert dec.partner is enc and not any(p is enc.w for p in dec.parameters(recurse=False))
    assert net.num_params == enc.w.numel() + enc.b.numel() + dec.b.numel()
    with pytest.raises(aekit.ConfigurationError, match="shares 'hid1'.w"):
        net.find("out", "w")
    # Adjoint: <conv(x), y> == <x, tied(y)> for the linear parts.
    x, y = torch.rand(2, 2, 7, 7), torch.rand(2, 3, 4, 4)
    with torch.no_grad():
        dec.b.zero_()
        lhs = (conv_same(x, enc.w, None, 2, enc.pads) * y).sum()
        rhs = (x * dec.transform(y)).sum()
    torch.testing.assert_close(lhs, rhs)
    # Gradients from the encoder and the decoder both reach the one kernel.
    before = enc.w.detach().clone()
    net.graph.zero_grad()
    net.loss(torch.rand(8, 98)).backward()
    grad_both = enc.w.grad.clone()
    enc.w.grad = None
    out = dec(torch.rand(8, 3, 4, 4))[1].sum()
    out.backward()
    assert enc.w.grad is not None and enc.w.grad.abs().sum() > 0
    assert not torch.equal(grad_both, enc.w.grad)
    with torch.no_grad():
        enc.w.add_(1.0)  # a change to the conv kernel changes the decoder at once
    assert not torch.equal(enc.w, before)
    torch.testing.assert_close(dec.transform(y), deconv_same(y, enc.w, dec.b, 2, (enc.pads[2], enc.pads[0]), (7, 7)))


def test_tied_conv_mirrors_a_deconv_and_a_dense_code():
    net = aekit.Autoencoder(
        [
            (1, 8, 8),
            conv(4, 2),
            conv(6, 2),
            "flatten",
            (10, "relu"),
            dict(form="tied"),
            dict(form="reshape", shape=(6, 2, 2)),
            dict(form="tied"),
            dict(form="tied", activation="sigmoid"),
        ]
    )
    names = {layer.name: layer for layer in net.layers}
    assert [s.partner for s in net.specs if s.form == "tied"] == ["hid4", "hid2", "hid1"]
    assert names["out"].output_shape == (1, 8, 8) and names["hid7"].output_shape == (4, 4, 4)
    assert net.code_layer == "hid4" and net.encode(np.random.rand(5, 64)).shape == (5, 10)
    net2 = aekit.Autoencoder([(2, 4, 4), deconv(3, 2), dict(form="tied")])
    dec, tied = net2.layers[1], net2.layers[2]
    x, y = torch.rand(2, 2, 4, 4), torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        tied.b.zero_()
        lhs = ((dec.transform(x) - dec.b.view(1, -1, 1, 1)) * y).sum()
        rhs = (x * tied.transform(y)).sum()
    torch.testing.assert_close(lhs, rhs)


def test_save_load_round_trips_bit_for_bit_with_batch_norm(tmp_path):
    spec = [
        (1, 8, 8),
        conv(4, 2, batch_norm=True),
        "flatten",
        dict(size=6, batch_norm=True),
        (64, "relu"),
        dict(form="reshape", shape=(4, 4, 4)),
        deconv(2, 2, kernel=2),
        dict(form="pool", mode="avg"),
        dict(form="upsample"),
        conv(1, 1, activation="sigmoid"),
    ]
    net = aekit.Autoencoder(spec, rng=3)
    x = np.random.default_rng(0).random((32, 64)).astype(np.float32)
    net.train(x, max_epochs=2, batch_size=8, validate_every=0)
    norm = net.graph.layers["hid1"].norm
    assert isinstance(norm, torch.nn.BatchNorm2d) and int(norm.num_batches_tracked) == 8
    assert not torch.equal(norm.running_mean, torch.zeros(4))
    net.save(tmp_path / "conv.aekit")
    again = aekit.load(tmp_path / "conv.aekit")
    state, state2 = net.graph.state_dict(), again.graph.state_dict()
    assert list(state) == list(state2) and "layers.hid1.norm.running_var" in state
    for key in state:
        assert state[key].dtype == state2[key].dtype and torch.equal(state[key], state2[key]), key
    assert np.array_equal(net.predict(x), again.predict(x))
    assert np.array_equal(net.encode(x), again.encode(x))
    # Batch norm runs in eval mode at inference: one example encodes as in a batch.
    np.testing.assert_allclose(net.encode(x[:1]), net.encode(x)[:1], rtol=1e-5, atol=1e-6)


def test_encode_decode_predict_score_on_conv_layers():
    net = aekit.Autoencoder([(1, 12, 12), conv(4, 2), conv(8, 2), deconv(4, 2), deconv(1, 2, activation="sigmoid")])
    x = np.random.default_rng(1).random((10, 1, 12, 12)).astype(np.float32)
    assert net.code_layer == "hid2"
    z = net.encode(x)
    assert z.shape == (10, 8, 3, 3)
    np.testing.assert_allclose(net.decode(z), net.predict(x), rtol=1e-6)
    np.testing.assert_allclose(net.decode(z.reshape(10, -1)), net.predict(x), rtol=1e-6)  # flat codes too
    assert net.predict(x.reshape(10, 144)).shape == (10, 1, 12, 12)  # flat input, declared shape
    pred = net.predict(x).reshape(10, -1)
    flat = x.reshape(10, -1)
    r2 = 1 - ((flat - pred) ** 2).sum() / ((flat - flat.mean(0)) ** 2).sum()
    assert net.score(x) == pytest.approx(r2, rel=1e-5)
    assert net.find("hid1", "w").shape == (4, 1, 3, 3) and net.find("out", "w").shape == (4, 1, 3, 3)


def test_dense_after_image_input_flattens_and_trains():
    net = aekit.Autoencoder([(1, 8, 8), (16, "sigmoid"), (64, "sigmoid")], rng=0)
    assert net.find("hid1", "w").shape == (64, 16)
    x = np.random.default_rng(2).random((64, 1, 8, 8)).astype(np.float32)
    before = net.score(x)
    net.train(x, max_epochs=5, batch_size=16, validate_every=0)
    assert net.score(x) > before
    assert net.predict(x).shape == (64, 64) and net.encode(x).shape == (64, 16)
    ref = torch.sigmoid(torch.from_numpy(x).flatten(1) @ net.find("hid1", "w") + net.find("hid1", "b"))
    np.testing.assert_allclose(net.encode(x), ref.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_default_init_scales_with_fan_in_and_activation():
    net = aekit.Autoencoder(
        [(16, 12, 12), conv(32, 1, kernel=3), conv(32, 1, kernel=3, activation="sigmoid"), conv(8, 1, std=1.0)]
    )
    w1, w2, w3 = (net.find(f"hid{i}" if i < 3 else "out", "w").detach() for i in (1, 2, 3))
    assert float(w1.std()) == pytest.approx(math.sqrt(2 / (16 * 9)), rel=0.1)  # He
    assert float(w2.std()) == pytest.approx(math.sqrt(2 / (32 * 9 + 32 * 9)), rel=0.1)  # Glorot
    assert float(w3.std()) == pytest.approx(1.0, rel=0.1)  # explicit std key wins


@pytest.mark.parametrize(
    "layers,match",
    [
        ([(1, 7, 7), conv(4, 2), deconv(1, 2)], r"output layer 'out' produces shape \(1, 8, 8\).*\(1, 7, 7\)"),
        (
            [(1, 8, 8), conv(4, 2), "flatten", dict(form="reshape", shape=(4, 5, 5))],
            r"reshape layer 'out' cannot reshape \(64,\).*\(4, 5, 5\)",
        ),
        ([64, conv(4, 2), 64], r"conv2 layer 'hid1' needs an image input shaped \(C, H, W\), got \(64,\)"),
        ([(1, 8, 8), dict(form="conv2", stride=2)], r"conv2 layer 'out' needs channels="),
        ([(1, 8, 8), conv(2, 1, padding="full")], r"padding must be 'same', 'valid'"),
        ([(1, 8, 8), conv(2, 1, kernel=9, padding="valid")], r"kernel 9 .* does not fit an input of size 8"),
        ([(1, 8, 8), dict(form="pool", mode="median")], r"pooling mode"),
        ([(1, 4, 4), deconv(1, 2, shape=(1, 9, 9))], r"deconv2 layer 'out' with stride 2 cannot map size 4 to 9"),
        ([(2, 8, 8), conv(4, 2), dict(form="tied", channels=3)], r"tied layer 'out' has channels=3.*takes 2 channels"),
    ],
)
def test_misaligned_specs_raise_clear_errors(layers, match):
    with pytest.raises(aekit.ConfigurationError, match=match):
        net = aekit.Autoencoder(layers)
        net.predict(np.zeros((1, int(np.prod(net.graph.input_shape)))))


def test_add_layer_builds_a_conv_graph():
    net = aekit.Autoencoder([(1, 8, 8)])
    net.add_layer(dict(form="conv2", channels=4, stride=2))
    net.add_layer(dict(form="tied", activation="sigmoid"), is_output=True)
    assert shapes(net) == [(1, 8, 8), (4, 4, 4), (1, 8, 8)]
    assert isinstance(net.layers[2], TiedConv) and isinstance(net.layers[1], Conv2)
    assert net.find("hid1", "w").shape == (4, 1, 3, 3)  # the tied layer shares it: no weight of its own
    assert [n for n, _ in net.layers[2].named_parameters(recurse=False)] == ["b"]


# ---------------------------------------------------------------- the MNIST question
# A conv autoencoder whose codes are the same for every input: data sorted by
# label, sigmoid everywhere, unscaled init (std=1.0), learning rate 1e-4.  aekit's
# defaults (shuffled batches, fan-in scaled init, relu hidden units, Adam at 1e-3)
# make the same architecture learn codes that tell digits apart.


def _digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = (digits.data / 16.0).astype(np.float32), digits.target
    order = np.random.default_rng(0).permutation(len(x))
    return x[order[:500]], y[order[:500]], x[order[800:1300]], y[order[800:1300]]


def _question_layers(**extra):
    return [
        (1, 8, 8),
        conv(32, 2, **extra),
        conv(64, 2, **extra),
        "flatten",
        dict(size=16, **extra),
        dict(size=256, **extra),
        dict(form="reshape", shape=(64, 2, 2)),
        deconv(32, 2, **extra),
        deconv(1, 2, activation="sigmoid", **{k: v for k, v in extra.items() if k != "activation"}),
    ]


def _code_quality(net, xtr, ytr, xte, yte):
    from sklearn.neighbors import NearestCentroid

    train_codes, test_codes = net.encode(xtr), net.encode(xte)
    spread = float(test_codes.std(axis=0).mean() / (np.abs(test_codes).mean() + 1e-12))
    keep = train_codes.std(axis=0) > 0  # dead units carry no information (and upset NearestCentroid)
    acc = NearestCentroid().fit(train_codes[:, keep], ytr).score(test_codes[:, keep], yte) if keep.any() else 0.1
    return spread, float(acc)


def test_sorted_sigmoid_unscaled_setup_collapses_and_defaults_fix_it():
    xtr, ytr, xte, yte = _digits()
    bad = aekit.Autoencoder(_question_layers(activation="sigmoid", std=1.0), rng=1)
    bad.train(
        xtr[np.argsort(ytr, kind="stable")],
        shuffle=False,
        learning_rate=1e-4,
        max_epochs=3,
        batch_size=32,
        validate_every=0,
    )
    good = aekit.Autoencoder(_question_layers(), rng=1)
    good.train(xtr, max_epochs=3, batch_size=32, validate_every=0)
    bad_spread, bad_acc = _code_quality(bad, xtr, ytr, xte, yte)
    good_spread, good_acc = _code_quality(good, xtr, ytr, xte, yte)
    assert bad_spread < 0.5 * good_spread, (bad_spread, good_spread)
    assert bad_acc < 0.45 and good_acc > 0.6 and good_acc > bad_acc + 0.25, (bad_acc, good_acc)
    good_mse = float(((good.predict(xte).reshape(len(xte), -1) - xte) ** 2).mean())
    bad_mse = float(((bad.predict(xte).reshape(len(xte), -1) - xte) ** 2).mean())
    assert good_mse < 0.5 * bad_mse, (good_mse, bad_mse)
    # aekit.diagnose names what went wrong with the question's setup and not with the defaults.
    # (The codes here are squeezed, not constant: their relative spread stays above
    # diagnose's 'collapsed-code' threshold, so that finding is not asserted.)
    order = np.argsort(ytr, kind="stable")
    bad_codes = {f.code for f in aekit.diagnose(bad, xtr[order], ytr[order])}
    good_codes = {f.code for f in aekit.diagnose(good, xtr, ytr)}
    assert {"trivial-loss", "unshuffled-data"} <= bad_codes, bad_codes
    assert not {"trivial-loss", "unshuffled-data", "collapsed-code"} & good_codes, good_codes
