"""Layer shorthand -> canonical, frozen :class:`LayerSpec` objects, and back to JSON.

The theanets forms are accepted, once, at the boundary:

* ``784`` -- a layer of 784 units (the first entry is the input);
* ``(1, 28, 28)`` -- a tuple of ints only, as the first entry: an image input shape;
* ``(64, 'relu')`` / ``('relu', 64)`` / ``(784, 'tied')`` -- order-free tuples of a
  size, an activation and/or a form;
* ``dict(size=64, activation='relu', name='code', std=0.1, ...)`` -- everything;
* ``'flatten'`` -- a form name alone, for layers that need no size.

Everything downstream works with :class:`LayerSpec` only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, overload

import numpy as np

from ..errors import ConfigurationError, unknown_name_error
from ..registry import Registry
from . import activations
from .constraints import CONSTRAINTS

__all__ = [
    "FORMS",
    "INIT_KEYS",
    "FormOptions",
    "LayerSpec",
    "parse_layers",
    "extend_form",
    "register_form",
    "specs_from_config",
    "specs_to_config",
]


@dataclasses.dataclass(frozen=True)
class FormOptions:
    """The options a layer form takes beyond :class:`LayerSpec`'s common fields.

    Attributes
    ----------
    defaults : dict of str to value
        Each option's name and default (JSON-ready: numbers, strings, bools, lists).
    check : callable, optional
        ``check(options, where) -> options``: validates and normalises the options a
        spec gives (from a layer list or a model file), raising ConfigurationError
        naming ``where``.
    activation : str, optional
        The activation of a layer of this form whose spec names none (None: the
        model's hidden or output default); e.g. ``'linear'`` for a latent that outputs samples.
    """

    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    check: Callable[[dict[str, Any], str], dict[str, Any]] | None = None
    activation: str | None = None


# Every layer form by name, with its own options.  A new form is registered by its layer class
# (:func:`aekit.model.layers.register`), so that specs accept it with no edit here.
FORMS: Registry[FormOptions] = Registry("layer form")
for _form in ("input", "dense", "tied", "conv2", "deconv2", "pool", "upsample", "flatten", "reshape"):
    FORMS.register(_form, FormOptions())


def register_form(form: str, options: FormOptions | None = None) -> None:
    """Make ``form`` (with its own ``options``) a valid form in layer specs; replaces an earlier entry."""
    FORMS.register(form, options or FormOptions(), replace=True)


def extend_form(
    form: str,
    defaults: Mapping[str, Any],
    check: Callable[[dict[str, Any], str], dict[str, Any]] | None = None,
) -> None:
    """Add options to the registered ``form``, keeping its own; ``check`` runs after the form's own check.

    How a feature that spans layers (the SAE recipe of :mod:`aekit.model.sae_recipe`) gives
    an existing form options without editing its registration.
    """
    old = FORMS.get(form)
    if check is None and old.check is None:
        register_form(form, FormOptions({**old.defaults, **defaults}))
        return

    def both(options: dict[str, Any], where: str) -> dict[str, Any]:
        if old.check is not None:
            options = old.check(options, where)
        return check(options, where) if check is not None else options

    register_form(form, FormOptions({**old.defaults, **defaults}, both))


# Initialisation keys, theanets' names: a bare key sets the weight's value, the
# ``_w``/``_b`` variants target the weights or the biases explicitly.
INIT_KEYS = tuple(f"{key}{suffix}" for key in ("mean", "std", "sparsity", "diagonal") for suffix in ("", "_w", "_b"))
# Forms whose size follows their input; a tied layer's partner search skips them (a quantizer's
# codebook is no weight a decoder could mirror), and their activation defaults to linear.
_FORMLESS_SIZE = ("flatten", "reshape", "pool", "upsample", "vq", "fsq")


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """A fully specified layer.

    Attributes
    ----------
    name : str
        ``'in'``, ``'hid1'``, ..., ``'out'`` unless given.
    form : str
        One of :data:`FORMS`.
    size : int or None
        Units of a dense or tied layer (None where the form infers its shape).
    shape : tuple of int or None
        Per-example shape of an input layer, or the target shape of a ``reshape``.
    activation : str
        Activation name (``'a+b'`` compositions allowed).
    inputs : str or None
        Name of the layer whose output feeds this one; None means the previous layer.
    partner : str or None
        For tied layers, the layer whose weights are shared (found automatically).
    channels, kernel, stride, padding, mode, scale, batch_norm
        Convolution, pooling and upsampling options.
    constraint : str or None
        A weight constraint of a dense layer (``'unit_norm'``: see :mod:`aekit.model.constraints`).
    init : tuple of (str, float)
        Initialisation options (``std``, ``mean_b``, ``sparsity``, ...), sorted.
    options : tuple of (str, value)
        The options of this layer's form (see :class:`FormOptions`), sorted; read
        them with :meth:`option`.
    """

    name: str
    form: str = "dense"
    size: int | None = None
    shape: tuple[int, ...] | None = None
    activation: str = "linear"
    inputs: str | None = None
    partner: str | None = None
    channels: int | None = None
    kernel: int = 3
    stride: int = 1
    padding: Any = "same"
    mode: str = "max"
    scale: int = 2
    batch_norm: bool = False
    constraint: str | None = None
    init: tuple[tuple[str, float], ...] = ()
    options: tuple[tuple[str, Any], ...] = ()

    def option(self, key: str) -> Any:
        """The form-specific option ``key``: the value given, else the form's default."""
        given = dict(self.options)
        if key in given:
            return given[key]
        defaults = FORMS.get(self.form).defaults
        if key not in defaults:
            raise unknown_name_error(f"option of a {self.form!r} layer", key, defaults)
        return defaults[key]

    @overload
    def init_value(self, key: str, param: str, default: float) -> float: ...
    @overload
    def init_value(self, key: str, param: str, default: None = None) -> float | None: ...
    def init_value(self, key: str, param: str, default: float | None = None) -> float | None:
        """Look up an init option for ``param`` ('w' or 'b'): ``std_w`` beats ``std``.

        The bare key (``std``) applies to weights only, as in theanets.
        """
        options = dict(self.init)
        if f"{key}_{param}" in options:
            return options[f"{key}_{param}"]
        if param == "w" and key in options:
            return options[key]
        return default

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict holding only the fields that differ from the defaults."""
        out: dict[str, Any] = {"name": self.name, "form": self.form}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in out or value == field.default:
                continue
            if field.name in ("init", "options"):
                value = _json_ready(dict(value))
            elif isinstance(value, tuple):
                value = list(value)
            out[field.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "layer config") -> LayerSpec:
        """Inverse of :meth:`to_dict`, checking every field (the dict may come from a tampered file).

        Raises
        ------
        ConfigurationError
            Naming ``where`` and the field, for an unknown key or a value of the wrong type
            (a size that is not a positive integer, an unknown activation, ...).
        """
        if not isinstance(data, dict):
            raise ConfigurationError(f"{where} must be a dict, got {type(data).__name__} {data!r}")
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        for key in data:
            if key not in known:
                raise unknown_name_error(f"key in {where}", key, known)
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"{where} name must be a non-empty string, got {name!r}")
        where = f"{where} ({name!r})"
        if data.get("form", "dense") not in FORMS:
            raise unknown_name_error(f"layer form in {where}", str(data["form"]), FORMS)
        if "options" in data:
            given = data["options"]
            if not isinstance(given, dict):
                raise ConfigurationError(f"{where} options must be a dict, got {given!r}")
            data["options"] = _form_options(data.get("form", "dense"), dict(given), where)
        # Sizes are checked here, before any tensor is allocated: a negative size gave a
        # raw torch error, and a string one a model whose config no longer compared equal.
        data = _checked_fields(data, where, booleans="true or false")  # JSON's spelling
        if not isinstance(data.get("mode", "max"), str):
            raise ConfigurationError(f"{where} mode must be a string, got {data['mode']!r}")
        padding = data.get("padding", "same")
        if not (isinstance(padding, str) or _is_int(padding)):
            raise ConfigurationError(f"{where} padding must be 'same', 'valid' or an int, got {padding!r}")
        if "init" in data:
            init = data["init"]
            if not isinstance(init, dict) or any(key not in INIT_KEYS for key in init):
                raise ConfigurationError(
                    f"{where} init must be a dict with keys among {', '.join(INIT_KEYS)}, got {init!r}"
                )
            data["init"] = tuple(sorted((k, _init_value(k, v, where)) for k, v in init.items()))
        return cls(**data)


_DICT_KEYS = {f.name for f in dataclasses.fields(LayerSpec)} - {"init", "options"} | set(INIT_KEYS)


def _json_ready(value: Any) -> Any:
    """Tuples as lists, recursively (a config must compare equal to its JSON round trip)."""
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def _form_options(form: str, given: dict[str, Any], where: str) -> tuple[tuple[str, Any], ...]:
    """The options of a ``form`` layer, checked by the form, as a sorted tuple."""
    info = FORMS.get(form)
    for key in given:
        if key not in info.defaults:
            raise unknown_name_error(f"option of a {form!r} layer in {where}", key, info.defaults)
    if info.check is not None:
        given = info.check(dict(given), where)
    return tuple(sorted(given.items()))


def _positive_int(value: Any, what: str) -> int:
    if not _is_int(value):
        raise ConfigurationError(f"{what} must be a positive integer, got {value!r}")
    value = int(value)
    if value <= 0:
        raise ConfigurationError(f"{what} must be a positive integer, got {value}")
    return value


def _shape(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not value:
        raise ConfigurationError(f"{what} must be a non-empty tuple of positive integers, got {value!r}")
    return tuple(_positive_int(v, what) for v in value)


def _finite_float(value: Any, what: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not math.isfinite(value)
    ):
        raise ConfigurationError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _is_int(value: Any) -> bool:
    return hasattr(value, "__index__") and not isinstance(value, bool)


def _checked_fields(fields: dict[str, Any], where: str, booleans: str = "True or False") -> dict[str, Any]:
    """A copy of a layer's ``fields`` with every value given checked and normalised.

    These are the checks that the layer shorthand and a model file's config share.

    Sizes become ints, a shape a tuple of ints; names must be non-empty strings, the
    activation known, ``batch_norm`` a bool (a string such as 'no' would be truthy and
    silently add a batch norm; ``booleans`` spells the choice in the message).
    """
    out = dict(fields)
    for key in ("size", "channels", "kernel", "stride", "scale"):
        if out.get(key) is not None:
            out[key] = _positive_int(out[key], f"{where} {key}")
    if out.get("shape") is not None:
        out["shape"] = _shape(out["shape"], f"{where} shape")
    for key in ("name", "inputs", "partner"):
        if out.get(key) is not None and (not isinstance(out[key], str) or not out[key]):
            raise ConfigurationError(f"{where} {key} must be a non-empty string, got {out[key]!r}")
    if "activation" in out:
        _check_activation(out["activation"], where)
    if not isinstance(out.get("batch_norm", False), bool):
        raise ConfigurationError(f"{where} batch_norm must be {booleans}, got {out['batch_norm']!r}")
    if out.get("constraint") is not None:
        try:
            out["constraint"] = CONSTRAINTS.canonical(out["constraint"])
        except ConfigurationError as error:
            raise ConfigurationError(f"{where}: {error}") from None
    return out


def _check_activation(name: Any, where: str) -> None:
    """Raise the standard unknown-activation error, prefixed with the layer it belongs to."""
    try:
        activations.get(name)
    except ConfigurationError as error:
        head, sep, hint = str(error).partition("; ")
        if head.startswith("unknown activation "):
            # The layer goes after the name: the message still starts "unknown activation 'x'",
            # which the command line recognises to name the flag that gave the value.
            raise ConfigurationError(f"{head} in {where}{sep}{hint}") from None
        raise ConfigurationError(f"{where}: {error}") from None


def _init_value(key: str, value: Any, where: str) -> float:
    """An init option as a float; sparsity is a fraction of weights, so it must lie in [0, 1)."""
    value = _finite_float(value, f"{where} {key}")
    if key.startswith("sparsity") and not 0 <= value < 1:
        raise ConfigurationError(f"{where} {key} must be in [0, 1), got {value}")
    return value


def _from_tuple(item: tuple, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for element in item:
        if _is_int(element):
            if "size" in out:
                raise ConfigurationError(f"{where}: a layer tuple may hold one size, got {item!r}")
            out["size"] = _positive_int(element, f"{where} size")
        elif isinstance(element, str):
            key = "form" if element.lower() in FORMS else "activation"
            if key in out:
                raise ConfigurationError(f"{where}: a layer tuple may hold one {key}, got {item!r}")
            out[key] = element.lower() if key == "form" else element
        elif isinstance(element, dict):
            out.update(element)
        else:
            raise ConfigurationError(
                f"{where}: expected ints and strings in a layer tuple, got {element!r} in {item!r}"
            )
    return out


def _raw_dict(item: Any, index: int, where: str) -> dict[str, Any]:
    if _is_int(item):
        return {"size": _positive_int(item, f"{where} size")}
    if isinstance(item, str):
        if item.lower() not in FORMS:
            raise unknown_name_error(f"layer form in {where}", item, FORMS)
        return {"form": item.lower()}
    if isinstance(item, dict):
        form = str(item.get("form", "dense")).lower()
        known = _DICT_KEYS | set(FORMS[form].defaults if form in FORMS else ())
        for key in item:
            if key not in known:
                raise unknown_name_error(f"layer option in {where}", key, known)
        return dict(item)
    if isinstance(item, (tuple, list)):
        if index == 0 and item and all(_is_int(v) for v in item):
            return {"form": "input", "shape": tuple(_positive_int(v, f"{where} shape") for v in item)}
        return _from_tuple(tuple(item), where)
    raise ConfigurationError(
        f"{where}: expected an int, a tuple, a dict or a form name, got {type(item).__name__} {item!r}"
    )


def _find_partner(specs: list[LayerSpec]) -> str | None:
    # theanets' rule: walk back; each tied layer pushes, each untied layer pops;
    # the partner is the untied layer that brings the count to zero.  Layers
    # without weights (flatten, reshape, pool, upsample) only change shapes, so
    # they are skipped: a conv encoder with a dense code still mirrors layer by layer.
    count = 1
    for spec in reversed(specs):
        if spec.form == "input":
            return None
        if spec.form in _FORMLESS_SIZE:
            continue
        count += 1 if spec.form in ("tied",) else -1
        if count == 0:
            return spec.name
    return None


def parse_layers(
    layers: Sequence[Any],
    hidden_activation: str = "relu",
    output_activation: str = "linear",
    existing: Sequence[LayerSpec] = (),
    output_last: bool = True,
) -> list[LayerSpec]:
    """Normalise a theanets-style layer list into :class:`LayerSpec` objects.

    Parameters
    ----------
    layers : sequence
        At least two entries: the input, then each layer up to the output.
    hidden_activation, output_activation : str
        Defaults for layers that do not name an activation (theanets' defaults).
    existing : sequence of LayerSpec
        Layers already built, which the new ones follow (``add_layer``).
    output_last : bool
        Whether the last new entry is the output layer (named ``'out'``).

    Returns
    -------
    list of LayerSpec
        One per entry, named and with tied partners resolved.

    Raises
    ------
    ConfigurationError
        On any malformed entry, with its position.
    """
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence):
        raise ConfigurationError(f"layers must be a list of layer specs, got {type(layers).__name__}")
    if len(layers) < 1:
        raise ConfigurationError("layers needs at least an input layer, got an empty list")
    specs: list[LayerSpec] = list(existing)
    offset = len(specs)
    last = offset + len(layers) - 1 if output_last else -1
    for index, item in enumerate(layers, start=offset):
        where = f"layers[{index}]"
        if isinstance(item, LayerSpec):  # already canonical (e.g. from a saved config)
            specs.append(item)
            continue
        raw = _raw_dict(item, index, where)
        init = tuple(sorted((k, _init_value(k, raw.pop(k), where)) for k in list(raw) if k in INIT_KEYS))
        if raw.get("name", "") is None:
            del raw["name"]  # name=None means "the default name", as inputs=None and partner=None do
        if index == 0:
            form = raw.pop("form", "input")
            if form != "input":
                raise ConfigurationError(f"{where}: the first layer is the input, got form {form!r}")
            shape = raw.pop("shape", None)
            size = raw.pop("size", None)
            if shape is None and size is None:
                raise ConfigurationError(f"{where}: the input needs a size or a shape")
            shape = _shape(shape, f"{where} shape") if shape is not None else (_positive_int(size, f"{where} size"),)
            name = raw.pop("name", "in")
            if not isinstance(name, str) or not name:
                raise ConfigurationError(f"{where} name must be a non-empty string, got {name!r}")
            specs.append(LayerSpec(name=name, form="input", shape=shape, size=int(_prod(shape))))
            continue
        form = raw.pop("form", "dense")
        if form not in FORMS or form == "input":
            raise unknown_name_error(f"layer form in {where}", form, [f for f in FORMS if f != "input"])
        default_name = "out" if index == last else f"hid{index}"
        default_act = output_activation if index == last else hidden_activation
        if form in _FORMLESS_SIZE:
            default_act = "linear"
        default_act = FORMS[form].activation or default_act
        raw.setdefault("activation", default_act)
        own = {key: raw.pop(key) for key in list(raw) if key in FORMS[form].defaults}
        options = _form_options(form, own, where)
        raw = _checked_fields(raw, where)  # validates early, with the standard messages
        activation = raw.pop("activation")
        size = raw.pop("size", None)
        if size is None and form == "dense":
            raise ConfigurationError(f"{where}: a dense layer needs a size, got {item!r}")
        if form == "pool" and raw.get("kernel") is None:
            raw["kernel"] = 2  # Keras' pool_size: dict(form='pool') halves H and W
        spec = LayerSpec(
            name=raw.pop("name", default_name),
            form=form,
            size=size,
            activation=activation,
            init=init,
            options=options,
            **raw,
        )
        if form == "tied" and spec.partner is None:
            partner = _find_partner(specs)
            if partner is None:
                raise ConfigurationError(f"{where}: tied layer {spec.name!r} has no untied layer to mirror")
            spec = dataclasses.replace(spec, partner=partner)
        specs.append(spec)
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigurationError(f"layer names must be unique, got {duplicates[0]!r} more than once")
    return specs


def _prod(values: Sequence[int]) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


def specs_to_config(specs: Sequence[LayerSpec]) -> list[dict[str, Any]]:
    """JSON-ready list of layer dicts."""
    return [spec.to_dict() for spec in specs]


def specs_from_config(config: Sequence[dict[str, Any]]) -> list[LayerSpec]:
    """Rebuild specs from :func:`specs_to_config` output.

    Raises
    ------
    ConfigurationError
        If ``config`` is not a list of layer dicts, or a dict is malformed
        (see :meth:`LayerSpec.from_dict`); the message names the layer.
    """
    if not isinstance(config, (list, tuple)) or not config:
        raise ConfigurationError(f"layers must be a non-empty list of layer dicts, got {config!r:.80}")
    specs = [LayerSpec.from_dict(item, f"layers[{index}]") for index, item in enumerate(config)]
    names = [spec.name for spec in specs]
    for name in names:
        if names.count(name) > 1:  # the graph keys layers by name: a second one would replace the first
            raise ConfigurationError(f"layer names must be unique, got {name!r} more than once")
    return specs
