"""The command line's layer argument and TOML config file: read, and type-checked like the flags.

``--layers 784,64:sigmoid,784`` and a config file's ``layers`` key become the layer
specs of :class:`aekit.Autoencoder`; every other config key is checked as the flag
of the same name would check it (TOML has types, argparse converts strings), so
``tied = "false"`` is refused rather than read as true.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..errors import ConfigurationError, unknown_name_error

__all__ = [
    "config_kinds",
    "layers_from_config",
    "load_config",
    "parse_layers_arg",
    "read_config",
    "unit_norm_decoder",
]


def parse_layers_arg(text: str) -> list[Any]:
    """``'784,64:sigmoid,784:tied'`` -> ``[784, (64, 'sigmoid'), (784, 'tied')]``.

    Each item is ``SIZE[:FORM-OR-ACTIVATION[:...]]``; the first may be an image
    shape ``CxHxW`` (e.g. ``1x28x28``).
    """
    items = [item.strip() for item in str(text).split(",")]
    if len(items) < 2 or any(not item for item in items):
        raise ConfigurationError(
            f"--layers must be a comma-separated list of at least two layer sizes, e.g. 784,64,784; got {text!r}"
        )
    layers: list[Any] = []
    for index, item in enumerate(items):
        size, *extra = item.split(":")
        try:
            if index == 0 and "x" in size:
                value: Any = tuple(int(part) for part in size.split("x"))
            else:
                value = int(size)
        except ValueError:
            raise ConfigurationError(
                f"--layers item {index + 1} ({item!r}) must start with a whole number of units, "
                f"e.g. 64 or 64:sigmoid; got {text!r}"
            ) from None
        if any(v <= 0 for v in np.atleast_1d(value)):
            raise ConfigurationError(f"--layers sizes must be positive, got {item!r} in {text!r}")
        if extra and any(not e for e in extra):
            raise ConfigurationError(f"--layers item {item!r} has an empty ':' part")
        extra = _join_parametric(extra)
        layers.append((value, *extra) if extra else value)
    return layers


def _join_parametric(parts: list[str]) -> list[str]:
    """``['topk', '32']`` and ``['topk32']`` -> ``['topk:32']`` (a parametric activation and its K)."""
    from ..model.activations import PARAMETRIC

    out: list[str] = []
    for part in parts:
        match = re.fullmatch(r"([a-zA-Z_-]+?)(\d+)", part)
        if out and part.isdigit() and out[-1].lower() in PARAMETRIC:
            out[-1] = f"{out[-1]}:{part}"
        elif match and match.group(1).lower() in PARAMETRIC:
            out.append(f"{match.group(1)}:{match.group(2)}")
        else:
            out.append(part)
    return out


def unit_norm_decoder(layers: list[Any]) -> list[Any]:
    """``--unit-norm-decoder``: the last layer as a dict spec with ``constraint='unit_norm'``.

    Its size, form and activation are kept (an item such as ``(384, 'linear')`` becomes
    ``dict(size=384, activation='linear', constraint='unit_norm')``).
    """
    from ..model.specs import FORMS

    *rest, last = layers
    if isinstance(last, dict):
        return [*rest, {**last, "constraint": "unit_norm"}]
    size, *extras = last if isinstance(last, tuple) else (last,)
    spec: dict[str, Any] = {"size": size, "constraint": "unit_norm"}
    for part in extras:
        spec["form" if str(part).lower() in FORMS else "activation"] = part
    if spec.get("form") == "tied":
        raise ConfigurationError("--unit-norm-decoder needs a decoder of its own, not a tied one (--tied)")
    return [*rest, spec]


def layers_from_config(value: Any, label: str = "config key 'layers'") -> list[Any]:
    """A config file's ``layers`` value as the layer specs of :class:`aekit.Autoencoder`.

    Parameters
    ----------
    value : str or list
        ``'784,64:sigmoid,784'`` (as ``--layers``), or a TOML list whose items are sizes,
        ``'SIZE:ACTIVATION'`` strings, ``[SIZE, ACTIVATION, ...]`` lists or tables.
    label : str
        Where the value came from, for error messages.

    Returns
    -------
    list
        One spec per layer, input first: an int, a tuple ``(size, *options)`` or a dict.

    Raises
    ------
    ConfigurationError
        Fewer than two layers, or an item that is not a layer.
    """
    if isinstance(value, str):
        try:
            return parse_layers_arg(value)
        except ConfigurationError as error:
            raise ConfigurationError(str(error).replace("--layers", label)) from None
    if not isinstance(value, list) or len(value) < 2:
        raise ConfigurationError(
            f"{label} must be a list of at least two layers or a string like '784,64,784', got {value!r}"
        )
    out: list[Any] = []
    for item in value:
        if isinstance(item, str):
            try:
                out.extend(parse_layers_arg(f"{item},1")[:1])
            except ConfigurationError as error:
                raise ConfigurationError(
                    f"{label}: item {item!r} must be SIZE[:ACTIVATION|:tied], e.g. '64:sigmoid' ({error})"
                ) from None
        elif isinstance(item, list):
            out.append(tuple(item))
        else:
            out.append(item)
    return out


def _read_toml(path: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10: the same parser, as a package
        import tomli as tomllib
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigurationError(f"config file {path!r} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigurationError(f"config file {path!r} is not valid TOML: {error}") from None


def load_config(path: str, valid: Iterable[str], kinds: dict[str, tuple[str, Any]] | None = None) -> dict[str, Any]:
    """Read the ``[train]`` table (or the top level) of a TOML file; keys as the flags.

    ``learning-rate`` and ``learning_rate`` are the same key; unknown keys are errors.
    ``kinds`` (key -> (kind, choices), see :func:`config_kinds`) type-checks the values
    like their flags: ``tied = "false"`` is refused, not taken as true.
    """
    return {name: value for name, (_, value) in read_config(path, valid, kinds).items()}


def read_config(
    path: str, valid: Iterable[str], kinds: dict[str, tuple[str, Any]] | None = None
) -> dict[str, tuple[str, Any]]:
    """Like :func:`load_config`, with each value's key as written in the file: name -> (key, value)."""
    data = _read_toml(path)
    table = data.get("train", data)
    if not isinstance(table, dict):
        raise ConfigurationError(f"config file {path!r}: [train] must be a table, got {table!r}")
    if table is not data:
        stray = sorted(k for k, v in data.items() if k != "train" and not isinstance(v, dict))
        if stray:  # they would be ignored silently
            raise ConfigurationError(
                f"config file {path!r} has keys outside its [train] table: "
                f"{', '.join(map(repr, stray))}; move them into [train]"
            )
    valid = set(valid)
    config: dict[str, tuple[str, Any]] = {}
    for key, value in table.items():
        name = {"epochs": "max_epochs"}.get(key.replace("-", "_"), key.replace("-", "_"))
        if name not in valid:
            raise unknown_name_error(f"key in config file {path!r}:", key, sorted(valid))
        if name in config:
            raise ConfigurationError(f"config file {path!r} sets {name!r} twice: as {config[name][0]!r} and as {key!r}")
        if kinds and name in kinds:
            value = _check_config_value(f"config key {key!r} in {path!r}", value, *kinds[name])
        config[name] = (key, value)
    return config


_KIND_TEXT = {
    "bool": "true or false",
    "int": "a whole number",
    "int-or-none": 'a whole number or "none"',
    "float": "a number",
    "str": "a string",
    "bool-or-auto": 'true, false or "auto"',
    "bool-or-str": 'true, false or "auto"',
    "layers": 'a list of layers or a string like "784,64,784"',
}


def _check_config_value(label: str, value: Any, kind: str, choices: Any = None) -> Any:
    """``value`` from a TOML file, checked as its flag would be (TOML has types; argparse converts)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = {
        "bool": isinstance(value, bool),
        "int": number and isinstance(value, int),
        "int-or-none": (number and isinstance(value, int)) or (isinstance(value, str) and value.lower() == "none"),
        "float": number,
        "str": isinstance(value, str),
        "bool-or-auto": isinstance(value, bool) or value == "auto",
        "bool-or-str": isinstance(value, (bool, str)),
        "layers": isinstance(value, (str, list)),
    }.get(kind, True)
    expected = _KIND_TEXT.get(kind, kind)
    if ok and choices is not None and value not in choices:
        ok, expected = False, "one of " + ", ".join(f'"{c}"' for c in choices)
    if not ok:
        hint = ""
        if kind.startswith("bool") and isinstance(value, str) and value.lower() in ("true", "false"):
            hint = f" (a string; write {value.lower()} without quotes)"
        elif isinstance(value, str) and (
            kind in ("int", "float") or (kind == "int-or-none" and value.strip().lstrip("+-").isdigit())
        ):
            hint = " (a string; write the number without quotes)"
        raise ConfigurationError(f"{label} must be {expected}, got {value!r}{hint}")
    return float(value) if kind == "float" else value


def config_kinds(parser: argparse.ArgumentParser) -> dict[str, tuple[str, Any]]:
    """Config key -> (kind, choices), from the flags of ``parser`` (what argparse would accept)."""
    kinds: dict[str, tuple[str, Any]] = {}
    for action in parser._actions:
        if not action.option_strings:
            continue
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            kind = "bool"
        else:
            kind = "int" if action.type is int else "float" if action.type is float else "str"
        kinds[action.dest] = (kind, action.choices)
    # Values the Python API takes that no flag spells.
    kinds["compile"] = ("bool-or-auto", None)
    kinds["distributed"] = ("bool-or-str", None)
    kinds["layers"] = ("layers", None)
    kinds["patience"] = ("int-or-none", None)  # "none": no early stopping
    return kinds
