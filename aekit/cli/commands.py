"""The commands of the ``aekit`` command line: one ``cmd_NAME(args)`` per sub-command.

Each takes the parsed :class:`argparse.Namespace` (see :mod:`aekit.cli.parser`), does its
work through the Python API and returns the exit code.  Before it reads data a command
records in ``args`` what the library's names stand for on the command line
(``args.cli_arrays``, ``args.cli_labels``, ``args.cli_values``), so that
:func:`aekit.cli.errors.explain` can word an error in the user's terms.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import AekitError, ConfigurationError
from .config import layers_from_config, parse_layers_arg, read_config, unit_norm_decoder
from .errors import UsageError
from .files import (
    check_folder_output,
    check_model_output,
    check_output,
    describe_path,
    is_model_file,
    load_model,
    read_data,
    write_array,
)
from .progress import progress
from .variational import cmd_nll, cmd_sample  # noqa: F401  (the parser finds every command here)

if TYPE_CHECKING:
    from ..autoencoder import Autoencoder

__all__ = [
    "cmd_decode",
    "cmd_demo",
    "cmd_diagnose",
    "cmd_encode",
    "cmd_info",
    "cmd_report",
    "cmd_score",
    "cmd_train",
    "history_lines",
    "reconstruction_errors",
]

log = logging.getLogger(__name__)


def _tie_decoder(layers: list[Any]) -> list[Any]:
    """``--tied``: every layer after the middle one shares its mirror's weights."""
    middle = len(layers) // 2
    tied = list(layers[: middle + 1])
    for item in layers[middle + 1 :]:
        if isinstance(item, dict):
            tied.append({**item, "form": "tied"})
        elif isinstance(item, tuple):
            tied.append(item if "tied" in item else (*item, "tied"))
        else:
            tied.append((item, "tied"))
    return tied


# Keys of `train` that shape the model rather than the training.
_MODEL_KEYS = ("layers", "tied", "unit_norm_decoder", "activation", "output_activation", "loss", "seed", "device")


def _train_keys() -> list[str]:
    from ..objective.penalties import REGULARIZER_KEYS
    from ..train.options import PYTHON_ONLY_OPTIONS, TrainOptions

    fields = [f.name for f in dataclasses.fields(TrainOptions) if f.name not in PYTHON_ONLY_OPTIONS]
    return fields + [k for k in REGULARIZER_KEYS if k not in fields]


def cmd_train(args: argparse.Namespace) -> int:
    """``aekit train``: build the model of ``--layers`` (or the config file), train it on DATA, save it.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line: ``data``, ``output``, ``config``, ``valid`` and one attribute per
        model or training flag (None when the flag is not given; the config file fills those).

    Returns
    -------
    int
        The exit code: 0 (failures raise).
    """
    from ..autoencoder import Autoencoder
    from ..train.loop import parse_train_arguments

    keys = [*_MODEL_KEYS, *_train_keys()]
    settings: dict[str, Any] = {}
    labels: dict[str, str] = {}  # where each setting came from, for error messages
    if args.config:
        for name, (key, value) in read_config(args.config, keys, args.cli_kinds).items():
            settings[name] = value
            labels[name] = f"config key {key!r} in {args.config!r}"
        if "layers" in settings:
            settings["layers"] = layers_from_config(settings["layers"], labels["layers"])
    given = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    for name in given:
        labels.pop(name, None)  # the flag wins over the file
    args.cli_labels.update(labels)
    args.cli_labels["hidden_activation"] = args.cli_labels["activation"]  # Autoencoder's keyword names
    args.cli_labels["rng"] = args.cli_labels["seed"]
    if "layers" in given:
        given["layers"] = parse_layers_arg(given["layers"])
    settings.update(given)
    args.cli_values = dict(settings)  # to tell which setting an "unknown ... 'value'" error is about
    if args.layers is not None:
        args.cli_values["layers"] = args.layers  # as typed: 64,8:relux,64
    if "layers" not in settings:
        raise UsageError("train needs --layers (e.g. --layers 784,64,784) or a config file with 'layers'")
    label = args.cli_labels.get
    inputs = [("DATA", args.data), ("--valid", args.valid), ("--config", args.config)]
    checkpoint = settings.get("checkpoint")
    check_model_output(args.output, "--output", [*inputs, (label("checkpoint"), checkpoint)])
    if checkpoint is not None:
        check_model_output(checkpoint, label("checkpoint"), inputs)
    if args.valid is not None and settings.get("valid_split"):
        raise ConfigurationError(
            f"--valid and {label('valid_split')} exclude each other: --valid is the "
            "validation data, --valid-split holds out part of DATA; give one"
        )
    if isinstance(settings.get("patience"), str):  # --patience none (or "none" in the config file)
        settings["patience"] = None
    layers = settings.pop("layers")
    if settings.pop("tied", False):
        layers = _tie_decoder(layers)
    if settings.pop("unit_norm_decoder", False):
        layers = unit_norm_decoder(layers)
    model_kwargs = {
        "loss": settings.pop("loss", "mse"),
        "rng": settings.pop("seed", 13),
        "hidden_activation": settings.pop("activation", "relu"),
        "output_activation": settings.pop("output_activation", "linear"),
        "device": settings.pop("device", "cpu"),
    }
    net = Autoencoder(layers, **model_kwargs)
    # Every option is checked before the data are read: a typo should not wait for a big file.
    options, _, _ = parse_train_arguments(net, settings)
    args.cli_arrays = {"x": repr(args.data), "valid": describe_path("--valid", args.valid)}
    x = read_data(args.data)
    valid = read_data(args.valid, "--valid") if args.valid else None
    total = options.max_epochs
    from ..train import distributed

    main_process = distributed.is_main_process()  # under torchrun only rank 0 reports and writes
    if not main_process:
        logging.getLogger("aekit").setLevel(logging.WARNING)
    log.info("training %r on %s examples from %s", net, x.shape[0], args.data)
    start = time.perf_counter()
    train_mon: dict[str, float] = {}
    valid_mon: dict[str, float] = {}

    def stage() -> str | None:
        # During layerwise pretraining the epochs train a sub-model: its code layer names the stage.
        return None if net.training_stage is None else f"pretraining {net.training_stage}"

    epochs = net.itertrain(x, valid, **settings)  # joins the process group under torchrun
    for monitors in progress(epochs, total, args.quiet or not main_process, lambda: len(net.history), stage):
        train_mon, valid_mon = monitors
    seconds = time.perf_counter() - start
    if not main_process:
        return 0
    net.save(args.output)
    summary = f"trained {len(net.history)} epochs in {seconds:.1f} s"
    if distributed.is_active() and distributed.parse_mode(settings.get("distributed", "auto")) is not False:
        batch, world = options.batch_size, distributed.world_size()
        summary += f" on {world} processes (batch {batch} per process, {batch * world} per step)"
    summary += f": loss={train_mon.get('loss', math.nan):.6g}"
    if "loss" in valid_mon:
        summary += f" valid={valid_mon['loss']:.6g}"
    print(f"{summary}; saved {args.output}")
    return 0


def _check_outputs_of(args: argparse.Namespace) -> None:
    inputs = [("MODEL", args.model), ("DATA", args.data)]
    check_output(args.output, inputs=inputs)


def cmd_encode(args: argparse.Namespace) -> int:
    """``aekit encode``: write the codes of DATA at ``--layer`` (default: the code layer).

    Parameters
    ----------
    args : argparse.Namespace
        ``model``, ``data``, ``output`` (.npy or .csv), ``layer`` (name or index) and ``sample``.
        The codes have shape (n, units) or (n, C, H, W).

    Returns
    -------
    int
        The exit code: 0 (failures raise).
    """
    _check_outputs_of(args)
    net = load_model(args.model)
    args.cli_arrays = {"x": repr(args.data)}
    codes = net.encode(read_data(args.data), layer=_layer(args.layer), sample=args.sample)
    write_array(args.output, codes)
    print(f"wrote codes of shape {codes.shape} to {args.output}")
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    """``aekit decode``: write the reconstructions decoded from the codes in DATA.

    Parameters
    ----------
    args : argparse.Namespace
        ``model``, ``data`` (codes of shape (n, units) at ``layer``), ``output`` and ``layer``.

    Returns
    -------
    int
        The exit code: 0 (failures raise).
    """
    _check_outputs_of(args)
    net = load_model(args.model)
    args.cli_arrays = {"z": repr(args.data)}
    recon = net.decode(read_data(args.data), layer=_layer(args.layer))
    write_array(args.output, recon)
    print(f"wrote reconstructions of shape {recon.shape} to {args.output}")
    return 0


def _layer(value: str | None) -> str | int | None:
    if value is not None and value.lstrip("-").isdigit():
        return int(value)
    return value


def reconstruction_errors(net: Autoencoder, x: np.ndarray) -> np.ndarray:
    """Per-example mean squared reconstruction error.

    Parameters
    ----------
    net : Autoencoder
    x : ndarray, shape (n, features) or (n, *input_shape)

    Returns
    -------
    ndarray, float64, shape (n,)
        The mean over features of ``(predict(x) - x) ** 2``, row by row.
    """
    target = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    recon = net.predict(x).reshape(len(x), -1).astype(np.float64)
    return np.mean((recon - target) ** 2, axis=1)


def cmd_score(args: argparse.Namespace) -> int:
    """``aekit score``: print R^2 and the reconstruction errors of DATA; optionally write them.

    Parameters
    ----------
    args : argparse.Namespace
        ``model``, ``data`` and ``output`` (optional: the per-example errors, shape (n,)).

    Returns
    -------
    int
        The exit code: 0 (failures raise).
    """
    if args.output:
        _check_outputs_of(args)
    net = load_model(args.model)
    args.cli_arrays = {"x": repr(args.data)}
    x = read_data(args.data)
    r2 = net.score(x)
    errors = reconstruction_errors(net, x)
    print(f"R^2 {r2:.6f}")
    print(
        f"mean squared error {errors.mean():.6g} (per example: median {np.median(errors):.6g}, "
        f"max {errors.max():.6g} at row {int(errors.argmax())})"
    )
    if args.output:
        write_array(args.output, errors)
        print(f"wrote {len(errors)} per-example errors to {args.output}")
    return 0


def _loss_text(monitors: Any) -> str:
    value = monitors.get("loss") if isinstance(monitors, dict) else None
    return f"{value:.6g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "?"


def history_lines(history: list[Any], rows: int = 10) -> list[str]:
    """At most ``rows`` epochs of a training history, evenly spaced, first and last included.

    Parameters
    ----------
    history : list of dict
        ``net.history``: one ``{'epoch', 'train', 'valid'}`` entry per epoch (malformed entries
        show as ``?``).
    rows : int
        The most epochs shown; a gap between two shown epochs is a ``...`` line.

    Returns
    -------
    list of str
        Indented lines ``epoch N: loss=... valid=...``.
    """
    n = len(history)
    picked = sorted({int(i) for i in np.linspace(0, n - 1, min(n, rows)).round()}) if n else []
    lines: list[str] = []
    previous = -1
    for i in picked:
        if i > previous + 1:
            lines.append("    ...")
        entry = history[i] if isinstance(history[i], dict) else {}
        line = f"    epoch {entry.get('epoch', i + 1)}: loss={_loss_text(entry.get('train'))}"
        if isinstance(entry.get("valid"), dict) and "loss" in entry["valid"]:
            line += f" valid={_loss_text(entry['valid'])}"
        lines.append(line)
        previous = i
    return lines


def cmd_info(args: argparse.Namespace) -> int:
    """``aekit info``: describe a model file or training checkpoint (layers, parameters, history).

    Parameters
    ----------
    args : argparse.Namespace
        ``model``: the path of the model file or checkpoint.

    Returns
    -------
    int
        The exit code: 0 (failures raise).
    """
    from ..autoencoder import Autoencoder
    from ..io.model_file import read_model_file

    tensors, meta = read_model_file(args.model)
    state = None
    if meta.get("kind") == "checkpoint":
        # The model of a checkpoint is stored beside the trainer's state (as aekit.load reads it).
        from ..autoencoder import load_checkpoint_model
        from ..train.checkpoint import checkpoint_info

        state = checkpoint_info(args.model)
        net = load_checkpoint_model(args.model)
        kind = "aekit training checkpoint"
    else:
        net = Autoencoder.from_file_contents(tensors, meta, args.model)
        kind = "aekit model"
    print(f"{args.model}: {kind}, format {meta['format_version']}, written by aekit {meta['aekit_version']}")
    print(repr(net))
    for layer in net.layers:
        spec = layer.spec
        shape = "x".join(map(str, layer.output_shape))
        params = sum(p.numel() for p in layer.parameters(recurse=False))
        extra = f" (shares {spec.partner}.w)" if spec.partner else ""
        act = "" if spec.form == "input" else f" {spec.activation}"
        print(f"  {layer.name:<8} {spec.form:<8} {shape:>10}{act} params={params}{extra}")
    print(f"parameters: {net.num_params}; code layer: {net.code_layer}")
    if net.preprocessing is not None:
        print(f"preprocessing: {net.preprocessing!r}")
    if state is not None:
        line = f"checkpoint after epoch {state['epoch']}"
        if state.get("best_epoch"):
            best = state.get("best_loss")
            line += f" (best: epoch {state['best_epoch']}"
            line += f", loss={best:.6g})" if isinstance(best, (int, float)) else ")"
        print(f"{line}; to train on: aekit train DATA ... --checkpoint {args.model} --resume")
    if net.history:
        last = net.history[-1] if isinstance(net.history[-1], dict) else {}
        line = f"trained {len(net.history)} epochs; last loss={_loss_text(last.get('train'))}"
        if isinstance(last.get("valid"), dict) and "loss" in last["valid"]:
            line += f" valid={_loss_text(last['valid'])}"
        print(line)
        print("history:")
        for text in history_lines(net.history):
            print(text)
    else:
        print("not trained")
    return 0


def _optional(module: str, attr: str):
    """The function ``aekit.<module>.<attr>`` if that part of aekit is installed, else None."""
    import importlib

    try:
        return getattr(importlib.import_module(f"aekit.{module}"), attr)
    except (ImportError, AttributeError):
        return None


def cmd_diagnose(args: argparse.Namespace) -> int:
    """``aekit diagnose``: print the findings of :func:`aekit.diagnose` on DATA, one per line.

    Parameters
    ----------
    args : argparse.Namespace
        ``model`` and ``data``.

    Returns
    -------
    int
        The exit code: 0 (failures raise).
    """
    diagnose = _optional("inspect.diagnose", "diagnose")
    if diagnose is None:
        raise AekitError("this aekit has no diagnose module")
    net = load_model(args.model)
    args.cli_arrays = {"x": repr(args.data)}
    findings = diagnose(net, read_data(args.data))
    if not findings:
        print("no problems found")
    for f in findings:
        print(f"[{f.severity}] {f.code}: {f.message}")
        if getattr(f, "remedy", None):
            print(f"    remedy: {f.remedy}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``aekit report``: write the HTML report of :func:`aekit.report.write_report` into a folder.

    Parameters
    ----------
    args : argparse.Namespace
        ``model``, ``data`` and ``output`` (the folder; made if missing).

    Returns
    -------
    int
        The exit code: 0 (failures raise).
    """
    write_report = _optional("inspect.report", "write_report")
    if write_report is None:
        raise AekitError("this aekit has no report module")
    check_folder_output(args.output, [("MODEL", args.model), ("DATA", args.data)])
    net = load_model(args.model)
    args.cli_arrays = {"x": repr(args.data)}
    x = read_data(args.data)
    # write_report checks the data against the model before it makes the folder.
    path = write_report(net, x, args.output)
    print(f"wrote report to {path or args.output}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``aekit demo``: train the small sparse autoencoder of :mod:`aekit.cli.demo` and print a summary.

    Parameters
    ----------
    args : argparse.Namespace
        ``output`` (the folder for ``model.aekit`` and the report), ``epochs`` and ``quiet``.

    Returns
    -------
    int
        The exit code: 0 (failures raise).
    """
    from .demo import run_demo

    if args.epochs < 1:
        raise ConfigurationError(f"--epochs must be an integer >= 1, got {args.epochs}")
    check_folder_output(args.output)
    model = Path(args.output) / "model.aekit"
    if model.exists() and not (model.is_file() and is_model_file(str(model))):
        raise ConfigurationError(
            f"--output {args.output!r} holds {str(model)!r}, which is not an aekit model; "
            "the demo would replace it, so choose another folder"
        )
    s = run_demo(args.output, epochs=args.epochs, quiet=args.quiet)
    print(f"aekit demo: sparse autoencoder {s['net']}")
    print(f"  data: {s['n_train']} training and {s['n_valid']} held-out 8x8 digits, pixels in [0, 1]")
    print(
        f"  trained {s['epochs']} epochs in {s['seconds']:.1f} s: loss {s['train_loss']:.4f} (train), "
        f"{s['valid_loss']:.4f} (valid); held-out R^2 {s['r2']:.3f}"
    )
    print(f"  model: {s['model']}")
    if s["report"]:
        print(f"  report: {s['report']}")
    return 0
