"""Property-based tests: whatever goes in, only documented errors (AekitError) come out.

Layer specs, arrays, train options and model/checkpoint files are generated at
random; a call either works or raises an :class:`aekit.AekitError` subclass
with a non-empty message -- never a bare TypeError, IndexError or a crash.
"""

import os
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import aekit
from aekit import AekitError
from aekit.training import TrainOptions

# AEKIT_FUZZ_EXAMPLES=2000 for a deeper hunt; the default keeps the file under a minute.
FUZZ = settings(
    max_examples=int(os.environ.get("AEKIT_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def documented(call):
    """Run ``call``; an error must be an AekitError with a message."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return call()
    except AekitError as error:
        assert str(error).strip(), f"{type(error).__name__} without a message"
        return None


# ---------------------------------------------------------------------- layer specs
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["relu", "sigmoid", "tied", "linear", "tanh+relu", "nope", "", "conv2", "flatten", "in", "hid1"]),
    st.text(max_size=6),
    st.binary(max_size=4),
)
spec_keys = st.sampled_from(
    [
        "size",
        "activation",
        "name",
        "form",
        "std",
        "sparsity",
        "channels",
        "kernel",
        "stride",
        "padding",
        "shape",
        "inputs",
        "partner",
        "mode",
        "scale",
        "batch_norm",
        "init",
        "bogus",
    ]
)
layer_items = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(tuple),
        st.lists(inner, max_size=3),
        st.dictionaries(spec_keys, inner, max_size=4),
    ),
    max_leaves=6,
)
plausible = st.one_of(st.integers(1, 12), st.tuples(st.integers(1, 12), st.sampled_from(["relu", "tied", "sigmoid"])))


@FUZZ
@given(layers=st.one_of(st.lists(layer_items, max_size=5), st.lists(plausible, min_size=2, max_size=4), scalars))
def test_fuzzed_layer_specs(layers):
    net = documented(lambda: aekit.Autoencoder(layers))
    if net is not None:
        n = net.graph.input_shape
        x = np.random.default_rng(0).random((3, *n)).astype(np.float32)
        documented(lambda: net.predict(x))


# ---------------------------------------------------------------------- arrays
dtypes = st.one_of(
    hnp.floating_dtypes(),
    hnp.integer_dtypes(),
    hnp.unsigned_integer_dtypes(),
    hnp.boolean_dtypes(),
    hnp.complex_number_dtypes(),
    st.just(np.dtype(object)),
)


@st.composite
def arrays(draw):
    shape = draw(
        st.one_of(
            hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5), st.tuples(st.integers(0, 4), st.just(4))
        )
    )
    dtype = draw(dtypes)
    if dtype == np.dtype(object):
        return np.array([[1, "a"], [None, 2.0]], dtype=object)[: shape[0] if shape else 0]
    return draw(hnp.arrays(dtype, shape))


@pytest.fixture(scope="module")
def small_net():
    return aekit.Autoencoder([4, (3, "sigmoid"), (4, "tied")])


@FUZZ
@given(x=st.one_of(arrays(), scalars, st.lists(scalars, max_size=4)))
def test_fuzzed_arrays(small_net, x):
    for call in (small_net.predict, small_net.encode, small_net.score, small_net.feed_forward):
        out = documented(lambda call=call: call(x))
        if isinstance(out, np.ndarray):
            assert np.isfinite(out).all()  # NaN/Inf inputs were refused, not propagated
    documented(lambda: small_net.decode(x))
    net = aekit.Autoencoder([4, (3, "sigmoid"), (4, "tied")])
    documented(lambda: net.train(x, max_epochs=1, validate_every=0))
    assert all(bool(torch.isfinite(p).all()) for p in net.params)


# ---------------------------------------------------------------------- preprocessing
def preprocessing_step(kind):
    from aekit import preprocessing as pp

    return {
        "minmax": pp.MinMaxScaler,
        "standard": pp.StandardScaler,
        "zca": pp.Whitener,
        "pca": lambda: pp.Whitener("pca", n_components=2),
        "pipeline": lambda: pp.Pipeline([pp.StandardScaler(), pp.Whitener("pca")]),
    }[kind]()


@FUZZ
@given(
    kind=st.sampled_from(["minmax", "standard", "zca", "pca", "pipeline"]),
    x=st.one_of(arrays(), scalars),
    y=st.one_of(arrays(), scalars, st.lists(scalars, max_size=4)),
)
def test_fuzzed_preprocessing(kind, x, y):
    step = preprocessing_step(kind)
    if documented(lambda: step.fit(x)) is None:
        return
    for call in (step.transform, step.inverse_transform):
        out = documented(lambda call=call: call(y))
        if isinstance(out, np.ndarray):
            assert out.shape[0] == np.shape(y)[0]


# ---------------------------------------------------------------------- pictures
@FUZZ
@given(x=st.one_of(arrays(), scalars, st.lists(scalars, max_size=4)), option=scalars, which=st.integers(0, 9))
def test_fuzzed_pictures(tmp_path_factory, small_net, x, option, which):
    """Any images, data, labels or option values: a PNG or a documented error (and no memory blow-up)."""
    from aekit import visualize as V

    path = tmp_path_factory.mktemp("p") / "p.png"
    good = np.random.default_rng(0).random((6, 4)).astype(np.float32)
    calls = [
        lambda: V.tile_mosaic(x, n_cols=option),
        lambda: V.save_tiles(x, path, zoom=option),
        lambda: V.save_tiles(good, path, border=option, normalize="global"),
        lambda: V.save_tiles(good, path, titles=x),
        lambda: V.image_shape(x),
        lambda: V.plot_reconstructions(small_net, x, path, n=option),
        lambda: V.plot_codes(small_net, good, path, labels=x),
        lambda: V.plot_activations(small_net, x, path),
        lambda: V.top_inputs(small_net, x, k=option),
        lambda: V.feature_images(small_net, layer=option),
    ]
    documented(calls[which])


# ---------------------------------------------------------------------- diagnosis and reports
DIAGNOSE_OPTIONS = [
    "max_samples",
    "collapse_ratio",
    "mean_cosine",
    "dead_tolerance",
    "saturation_fraction",
    "trivial_r2",
    "label_runs",
    "order_correlation",
]


@FUZZ
@given(
    x=st.one_of(arrays(), scalars),
    y=st.one_of(arrays(), scalars),
    options=st.dictionaries(st.sampled_from(DIAGNOSE_OPTIONS), scalars, max_size=2),
    report=st.booleans(),
)
def test_fuzzed_diagnosis_and_report(tmp_path_factory, small_net, x, y, options, report):
    if report:
        folder = tmp_path_factory.mktemp("r") / "report"
        samples = options.get("max_samples", 100)
        if documented(lambda: aekit.report.write_report(small_net, x, folder, labels=y, max_samples=samples)) is None:
            assert not folder.exists()  # refused before anything was written
    else:
        findings = documented(lambda: aekit.diagnose(small_net, x, y, **options))
        assert findings is None or all(isinstance(f, aekit.Finding) for f in findings)


# ---------------------------------------------------------------------- models trained
MODEL_ACTIVATIONS = [
    "relu",
    "sigmoid",
    "tanh",
    "linear",
    "softplus",
    "elu",
    "gelu",
    "prelu",
    "lrelu",
    "rect:minmax",
    "softmax",
    "relu+norm:z",
    "sigmoid+norm:mean",
]


@st.composite
def dense_models(draw):
    widths = draw(st.lists(st.integers(1, 6), min_size=1, max_size=3))
    layers = [6, *((w, draw(st.sampled_from(MODEL_ACTIVATIONS))) for w in widths)]
    for w in [*reversed(widths[:-1]), 6]:
        act = draw(st.sampled_from(MODEL_ACTIVATIONS))
        layers.append(draw(st.sampled_from([(w, act), (w, "tied"), {"size": w, "form": "tied", "activation": act}])))
    return layers


@st.composite
def conv_models(draw):
    conv = {
        "form": "conv2",
        "channels": draw(st.integers(1, 3)),
        "stride": draw(st.sampled_from([1, 2])),
        "kernel": draw(st.sampled_from([1, 2, 3])),
        "padding": draw(st.sampled_from(["same", "valid", 0, 1])),
        "activation": draw(st.sampled_from(MODEL_ACTIVATIONS[:6])),
    }
    middle = draw(st.sampled_from([[conv], [conv, {"form": "pool", "mode": draw(st.sampled_from(["max", "avg"]))}]]))
    return [(1, 6, 6), *middle, draw(st.sampled_from(["tied", "deconv", "flatten"]))]


training_options = st.fixed_dictionaries(
    {},
    optional={
        "hidden_l1": st.sampled_from([0.0, 0.1]),
        "weight_l2": st.just(1e-3),
        "sparsity_target": st.just(0.1),
        "contractive": st.sampled_from([0.1, {"hid1": 0.2}]),
        "input_noise": st.just(0.1),
        "input_dropout": st.just(0.2),
        "hidden_dropout": st.just(0.3),
        "algo": st.sampled_from(["adam", "sgd", "lbfgs", "rmsprop"]),
        "batch_size": st.sampled_from([1, 3, 64]),
        "layerwise": st.booleans(),
        "max_gradient_norm": st.just(1.0),
        "precision": st.sampled_from(["fp32", "bf16"]),
        "valid_split": st.just(0.25),
    },
)


@FUZZ
@given(
    layers=st.one_of(dense_models(), conv_models()),
    loss=st.sampled_from(["mse", "mae", "bce", "kl"]),
    options=training_options,
    seed=st.integers(0, 100),
)
def test_fuzzed_models_train(layers, loss, options, seed):
    """Random dense and conv models, losses and regularizers: training works or says why.

    This found a contractive penalty crashing on conv code layers and through prelu, and oneDNN
    corrupting the heap on strided 1x1 convolutions.
    """
    net = documented(lambda: aekit.Autoencoder(layers, loss=loss, rng=seed))
    if net is None:
        return
    x = np.random.default_rng(seed).random((16, 36)).astype(np.float32)
    x = x.reshape(16, *net.graph.input_shape) if len(net.graph.input_shape) > 1 else x[:, :6]
    try:
        net.train(x, max_epochs=2, **options)
    except aekit.TrainingDiverged:
        return  # the documented outcome of a NaN loss
    except AekitError as error:
        assert str(error).strip()
        return
    assert all(bool(torch.isfinite(p).all()) for p in net.params)
    assert net.predict(x).shape == x.shape or len(net.graph.layers[net.graph.output_name].output_shape) == 1


# ---------------------------------------------------------------------- train options
option_names = [f.name for f in __import__("dataclasses").fields(TrainOptions)] + [
    "hidden_l1",
    "weight_l2",
    "sparsity_target",
    "input_noise",
    "hidden_dropout",
    "max_updates",
    "contractive",
]
option_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 4),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.text(max_size=8),
    st.sampled_from(["adam", "sgd", "lbfgs", "layerwise", "warn", "raise", "hid1", "hid1:out"]),
    st.lists(st.floats(-2, 2), max_size=3),
    st.dictionaries(
        st.sampled_from(["hid1", "hid1:out", "x", "*"]), st.one_of(st.floats(-2, 2), st.text(max_size=3)), max_size=2
    ),
)


@FUZZ
@given(options=st.dictionaries(st.sampled_from(option_names), option_values, min_size=1, max_size=3))
def test_fuzzed_train_options(tmp_path_factory, options):
    if "checkpoint" in options and isinstance(options["checkpoint"], str):
        options["checkpoint"] = str(tmp_path_factory.mktemp("ck") / (options["checkpoint"] or "c"))
    if options.get("resume") and "checkpoint" not in options:
        options["checkpoint"] = str(tmp_path_factory.mktemp("ck") / "c")
    kwargs = {"max_epochs": 1, **options}
    if "max_updates" in kwargs and "max_epochs" not in options:
        del kwargs["max_epochs"]
    for key in ("max_epochs", "max_updates"):
        if isinstance(kwargs.get(key), int) and not isinstance(kwargs[key], bool):
            kwargs[key] = min(kwargs[key], 2)  # keep the run short
    x = np.random.default_rng(0).random((12, 4)).astype(np.float32)
    net = aekit.Autoencoder([4, (3, "sigmoid"), (4, "tied")])
    documented(lambda: net.train(x, **kwargs))
    assert all(bool(torch.isfinite(p).all()) for p in net.params)


# ---------------------------------------------------------------------- files
@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "m.aekit"
    net = aekit.Autoencoder([4, (3, "sigmoid"), (4, "tied")])
    net.set_preprocessing(aekit.preprocessing.StandardScaler().fit(np.eye(4, dtype=np.float32)))
    net.save(path)
    return path.read_bytes()


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("c") / "c.ckpt"
    net = aekit.Autoencoder([4, (3, "sigmoid"), (4, "tied")])
    net.train(np.eye(4, dtype=np.float32), max_epochs=1, checkpoint=path)
    return path.read_bytes()


@st.composite
def mutations(draw, raw, kinds=("flip", "cut", "splice", "header")):
    """``raw`` with bytes changed, cut off or inserted; 'header' rewrites a byte of a safetensors
    file's JSON header."""
    data = bytearray(raw)
    kind = draw(st.sampled_from(kinds))
    if kind == "flip":
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
    elif kind == "cut":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif kind == "splice":
        i = draw(st.integers(0, len(data)))
        data[i:i] = draw(st.binary(min_size=1, max_size=8))
    else:  # rewrite a byte inside the JSON header, where most of the meaning is
        n = int.from_bytes(data[:8], "little")
        i = draw(st.integers(8, 8 + n - 1))
        data[i] = draw(st.sampled_from(list(b'{}[]":,0123456789aenrtuls ')))
    return bytes(data)


def _file_seeds():
    import gzip
    import io

    seeds = []
    for save in (np.save, np.savez):
        buffer = io.BytesIO()
        save(buffer, np.arange(6, dtype=np.float32).reshape(3, 2))
        seeds.append(buffer.getvalue())
    idx = bytes([0, 0, 8, 2, 0, 0, 0, 3, 0, 0, 0, 2]) + bytes(range(6))
    seeds += [idx, b"1,2,3\n4,5,6\n", b"a,b\n1,2\n3,x\n"]
    return seeds + [gzip.compress(seed) for seed in seeds]


@FUZZ
@given(
    data=st.data(),
    name=st.sampled_from(
        [
            "d.npy",
            "d.npz",
            "d.csv",
            "d.tsv",
            "d.txt",
            "d-idx3-ubyte",
            "d.idx",
            "d.npy.gz",
            "d.csv.gz",
            "d-idx3-ubyte.gz",
            "d",
        ]
    ),
    mmap=st.booleans(),
)
def test_fuzzed_data_files(tmp_path_factory, data, name, mmap):
    """Any bytes under any data file name: an array of real numbers or a DataError."""
    edits = st.sampled_from(_file_seeds()).flatmap(lambda seed: mutations(seed, kinds=("flip", "cut", "splice")))
    raw = data.draw(st.one_of(edits, st.binary(max_size=60)))
    path = tmp_path_factory.mktemp("f") / name
    path.write_bytes(raw)
    array = documented(lambda: aekit.load_data(path, mmap=mmap))
    if array is not None:
        assert array.ndim >= 1 and (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_)


@FUZZ
@given(data=st.data())
def test_fuzzed_model_files(tmp_path_factory, model_bytes, data):
    raw = data.draw(mutations(model_bytes))
    path = tmp_path_factory.mktemp("f") / "m.aekit"
    path.write_bytes(raw)
    net = documented(lambda: aekit.load(path))
    if net is not None:
        documented(lambda: net.predict(np.eye(4, dtype=np.float32)))


@FUZZ
@given(data=st.data())
def test_fuzzed_checkpoints(tmp_path_factory, checkpoint_bytes, data):
    raw = data.draw(mutations(checkpoint_bytes))
    path = tmp_path_factory.mktemp("f") / "c.ckpt"
    path.write_bytes(raw)
    net = aekit.Autoencoder([4, (3, "sigmoid"), (4, "tied")])
    try:
        net.train(np.eye(4, dtype=np.float32), max_epochs=2, checkpoint=path, resume=True)
    except aekit.CheckpointError as error:
        assert str(error).strip()
    except aekit.TrainingDiverged:
        pass  # a flipped byte in a weight can make it NaN: the documented outcome
    assert all(bool(torch.isfinite(p).all()) for p in net.params)
