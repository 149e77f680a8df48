import pytest

from aekit import ConfigurationError
from aekit.specs import LayerSpec, parse_layers, specs_from_config, specs_to_config


def test_theanets_forms_are_normalised():
    specs = parse_layers([784, (64, "relu"), ("sigmoid", 32), dict(size=64, name="dec", std=0.1), (784, "tied")])
    assert [s.name for s in specs] == ["in", "hid1", "hid2", "dec", "out"]
    assert specs[0].form == "input" and specs[0].shape == (784,)
    assert specs[1].activation == "relu" and specs[1].size == 64
    assert specs[2].activation == "sigmoid" and specs[2].size == 32
    assert dict(specs[3].init) == {"std": 0.1}
    assert specs[4].form == "tied"


def test_default_activations_follow_theanets():
    specs = parse_layers([10, 5, 10])
    assert specs[1].activation == "relu" and specs[2].activation == "linear"
    specs = parse_layers([10, 5, 10], hidden_activation="tanh", output_activation="sigmoid")
    assert specs[1].activation == "tanh" and specs[2].activation == "sigmoid"


def test_tied_layers_mirror_their_partners():
    specs = parse_layers([784, 256, 64, (256, "tied"), (784, "tied")])
    assert specs[3].partner == "hid2"
    assert specs[4].partner == "hid1"


def test_image_input_shape():
    specs = parse_layers([(1, 28, 28), (64, "sigmoid"), (784, "sigmoid")])
    assert specs[0].shape == (1, 28, 28) and specs[0].size == 784


def test_config_round_trip():
    specs = parse_layers([784, dict(size=64, activation="relu+norm:z", mean_b=0.5), (784, "tied")])
    again = specs_from_config(specs_to_config(specs))
    assert again == specs
    assert isinstance(again[1], LayerSpec)


@pytest.mark.parametrize(
    "layers, message",
    [
        ([784], None),
        ([], "at least an input"),
        ([784, (64, "relu", "tanh"), 784], "one activation"),
        ([784, (64, 32), 784], "one size"),
        ([784, -3, 784], "positive integer"),
        ([784, 64.5, 784], "expected an int"),
        ([784, dict(size=64, activaton="relu"), 784], "did you mean 'activation'"),
        ([784, (64, "rleu"), 784], "did you mean 'relu'"),
        ([784, dict(size=3, name="a"), dict(size=3, name="a"), 784], "unique"),
        ([784, (784, "tied")], "no untied layer"),
        ("784,64", "list of layer specs"),
    ],
)
def test_bad_specs_get_clear_errors(layers, message):
    if message is None:
        assert len(parse_layers(layers)) == 1
        return
    with pytest.raises(ConfigurationError, match=message):
        parse_layers(layers)


@pytest.mark.parametrize(
    "layers, message",
    [
        ([8, (4, "sigmoud"), 8], r"unknown activation 'sigmoud' in layers\[1\]; did you mean 'sigmoid'\?"),
        (
            [8, 4, dict(size=8, activation="relu+tahn")],
            r"unknown activation 'tahn' in layers\[2\]; did you mean 'tanh'",
        ),
        ([8, dict(size=4, batch_norm="no"), 8], r"layers\[1\] batch_norm must be True or False, got 'no'"),
        ([8, dict(size=4, sparsity=2.0), 8], r"layers\[1\] sparsity must be in \[0, 1\), got 2.0"),
    ],
)
def test_spec_errors_name_the_layer(layers, message):
    with pytest.raises(ConfigurationError, match=message):
        parse_layers(layers)


def test_name_none_means_the_default_name():
    specs = parse_layers([dict(size=8, name=None), dict(size=4, name=None), 8])
    assert [s.name for s in specs] == ["in", "hid1", "out"]


def test_saved_configs_are_checked_field_by_field():
    config = specs_to_config(parse_layers([8, (4, "relu"), (8, "tied")]))
    config[1]["size"] = -4
    with pytest.raises(ConfigurationError, match=r"layers\[1\] \('hid1'\) size must be a positive integer"):
        specs_from_config(config)
    config[1]["size"] = 4
    config[2]["name"] = "hid1"
    with pytest.raises(ConfigurationError, match="'hid1' more than once"):
        specs_from_config(config)
