"""The ``aekit`` command line, thin over the Python API.

::

    aekit train DATA --layers 784,64,784 --output model.aekit [--tied] [--epochs N] [--hidden-l1 F] ...
    aekit encode MODEL DATA --output codes.npy [--layer hid1]
    aekit decode MODEL CODES --output recon.npy [--layer hid1]
    aekit score MODEL DATA [--output errors.csv]
    aekit diagnose MODEL DATA
    aekit report MODEL DATA --output DIR
    aekit info MODEL-OR-CHECKPOINT
    aekit demo [--output DIR]

DATA is any file :func:`aekit.load_data` reads; ``FILE.npz:NAME`` picks one array of an ``.npz``.

Errors are one line on stderr (``aekit: error: ...``) naming the flag, config key or file at
fault, and a non-zero exit code: 2 for a bad command line (argparse's errors, and option or config
values that aekit refuses: :class:`~aekit.errors.ConfigurationError`), 1 for anything else (data,
model files, a diverged run, ...); ``--debug`` shows the traceback.  Outputs are written
atomically and never onto an input, so a failed run never damages an existing file.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..errors import AekitError, ConfigurationError, DataError, TrainingDiverged
from .config import config_kinds, layers_from_config, load_config, parse_layers_arg, read_config
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

__all__ = ["build_parser", "load_config", "main", "parse_layers_arg"]

log = logging.getLogger(__name__)


class UsageError(Exception):
    """A bad command line (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    # argparse prints the whole usage on errors; aekit prints one line instead.
    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


# ---------------------------------------------------------------------- layers
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


# ---------------------------------------------------------------------- progress
def _epoch_line(
    epoch: int, total: int, train: dict[str, float], valid: dict[str, float], stage: str | None = None
) -> str:
    line = f"{stage + ': ' if stage else ''}epoch {epoch}/{total}: loss={train.get('loss', math.nan):.6g}"
    if "loss" in valid:
        line += f" valid={valid['loss']:.6g}"
    return line


def progress(
    epochs: Iterator,
    total: int,
    quiet: bool = False,
    epoch_of: Callable[[], int] | None = None,
    stage_of: Callable[[], str | None] | None = None,
) -> Iterator:
    """Show training progress on stderr: a tqdm bar on a terminal, else one line per epoch.

    ``epoch_of()`` gives the current epoch number (a resumed run does not start at 1).
    ``stage_of()`` names the pretraining stage an epoch belongs to (``'pretraining hid1'``),
    or None for the epochs of the model itself; a stage counts its own epochs.
    """
    if quiet:
        yield from epochs
        return
    count = 0
    stage: str | None = None
    stage_count = 0

    def step() -> tuple[int, str | None]:
        nonlocal count, stage, stage_count
        now = stage_of() if stage_of is not None else None
        if now is not None:
            stage_count = stage_count + 1 if now == stage else 1
            stage = now
            return stage_count, now
        stage = None
        count += 1
        return (epoch_of() if epoch_of is not None else count), None

    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        with tqdm(total=total, unit="epoch", file=sys.stderr, dynamic_ncols=True) as bar:
            for train, valid in epochs:
                epoch, label = step()
                post = {"loss": f"{train.get('loss', math.nan):.4g}"}
                if "loss" in valid:
                    post["valid"] = f"{valid['loss']:.4g}"
                bar.set_description(f"{label} {epoch}/{total}" if label else "", refresh=False)
                bar.set_postfix(post)
                if label is None:
                    bar.update(max(epoch - bar.n, 0))
                yield train, valid
        return
    for train, valid in epochs:
        epoch, label = step()
        print(_epoch_line(epoch, total, train, valid, label), file=sys.stderr, flush=True)
        yield train, valid


# ---------------------------------------------------------------------- commands
# Keys of `train` that shape the model rather than the training.
_MODEL_KEYS = ("layers", "tied", "activation", "output_activation", "loss", "seed", "device")


def _train_keys() -> list[str]:
    from ..objective.penalties import REGULARIZER_KEYS
    from ..train.loop import TrainOptions

    fields = [f.name for f in dataclasses.fields(TrainOptions) if f.name != "monitors"]
    return fields + [k for k in REGULARIZER_KEYS if k not in fields]


def cmd_train(args: argparse.Namespace) -> int:
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
    layers = settings.pop("layers")
    if settings.pop("tied", False):
        layers = _tie_decoder(layers)
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
    for train_mon, valid_mon in progress(
        epochs, total, args.quiet or not main_process, lambda: len(net.history), stage
    ):
        pass
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
    _check_outputs_of(args)
    net = load_model(args.model)
    args.cli_arrays = {"x": repr(args.data)}
    codes = net.encode(read_data(args.data), layer=_layer(args.layer), sample=args.sample)
    write_array(args.output, codes)
    print(f"wrote codes of shape {codes.shape} to {args.output}")
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
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


def reconstruction_errors(net, x: np.ndarray) -> np.ndarray:
    """Per-example mean squared reconstruction error, shape (n,)."""
    target = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    recon = net.predict(x).reshape(len(x), -1).astype(np.float64)
    return np.mean((recon - target) ** 2, axis=1)


def cmd_score(args: argparse.Namespace) -> int:
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
    """At most ``rows`` epochs of a training history, evenly spaced, first and last included."""
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


# ---------------------------------------------------------------------- parser
def _common(suppress: bool) -> argparse.ArgumentParser:
    """-v/--quiet/--debug, accepted before or after the command."""

    def default(value: Any) -> Any:
        # Sub-command copies must not overwrite what was given before the command.
        return argparse.SUPPRESS if suppress else value

    common = _Parser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=default(0), help="log more (-vv: debug)")
    common.add_argument("-q", "--quiet", action="store_true", default=default(False), help="no progress output")
    common.add_argument(
        "--debug", action="store_true", default=default(False), help="show the traceback of an unexpected error"
    )
    common.add_argument(
        "--threads", type=int, default=default(None), help="CPU threads for torch (default: torch's choice; demo: 1)"
    )
    return common


_DATA_HELP = ".npy, .npz (FILE.npz:NAME picks an array), .csv, idx, or a folder of images"


def _flag_labels(parser: argparse.ArgumentParser, **extra: str) -> dict[str, str]:
    """Python keyword -> the flag that sets it (``max_epochs`` -> ``--epochs``), for error messages."""
    labels = {}
    for action in parser._actions:
        if action.option_strings and action.dest not in ("help", "version"):
            long = [s for s in action.option_strings if s.startswith("--")] or action.option_strings
            labels[action.dest] = long[0]
    labels.update(extra)
    return labels


def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    from ..train.loop import TrainOptions

    p.add_argument("data", help=f"training data: {_DATA_HELP}")
    p.add_argument(
        "--output", "-o", required=True, help="model file to write, e.g. model.aekit (never a data file or an input)"
    )
    p.add_argument("--config", help="TOML file of train settings ([train] table); flags override it")
    p.add_argument("--valid", metavar="FILE", help="validation data file (or use --valid-split, not both)")
    g = p.add_argument_group("model")
    g.add_argument(
        "--layers", help="sizes, input first: 784,64,784 (items SIZE[:ACTIVATION|:tied]; first may be CxHxW)"
    )
    g.add_argument("--tied", action="store_true", default=None, help="decoder shares the encoder's weights")
    g.add_argument("--activation", help="hidden activation (default relu)")
    g.add_argument("--output-activation", help="output activation (default linear)")
    g.add_argument("--loss", help="mse (default), mae, bce, kl, gll")
    g.add_argument("--seed", type=int, help="seed of the weights and shuffles (default 13)")
    g.add_argument("--device", help="cpu (default), cuda, cuda:N or auto")
    g = p.add_argument_group("training")
    g.add_argument(
        "--algo",
        help="adam (default), sgd, nag, rmsprop, adagrad, adadelta, rprop, lbfgs, "
        "layerwise (adam after greedy layerwise pretraining)",
    )
    g.add_argument("--epochs", "--max-epochs", dest="max_epochs", type=int, help="most epochs (default 100)")
    g.add_argument("--batch-size", type=int, help="examples per batch (default 64)")
    g.add_argument("--learning-rate", "--lr", type=float, help="step size (default per algo; adam 1e-3)")
    g.add_argument("--momentum", type=float, help="for sgd, nag, rmsprop (default 0.9)")
    g.add_argument("--patience", type=int, help="validations without progress before stopping (default 5)")
    g.add_argument("--min-improvement", type=float, help="relative progress that counts (default 0)")
    g.add_argument("--validate-every", type=int, help="epochs between validations; 0: off (default 1)")
    g.add_argument(
        "--valid-split", type=float, help="fraction of DATA held out for validation (default 0; not with --valid)"
    )
    g.add_argument("--max-gradient-norm", type=float, help="clip the global gradient norm")
    g.add_argument("--layerwise", action="store_true", default=None, help="greedy layerwise pretraining first")
    g.add_argument(
        "--no-shuffle",
        dest="shuffle",
        action="store_false",
        default=None,
        help="keep the batch order fixed (default: re-shuffle every epoch)",
    )
    g.add_argument("--on-nan", choices=("raise", "warn"), help="on a NaN loss: stop (default) or go on")
    g = p.add_argument_group("speed")
    g.add_argument(
        "--precision",
        metavar="{fp32,bf16,fp16}",
        help="fp32 (default); bf16 or fp16 run the forward pass and loss under torch.autocast "
        "(fp16 with a gradient scaler): faster on GPUs with half-precision units",
    )
    g.add_argument(
        "--compile",
        action="store_true",
        default=None,
        help="compile the training step with torch.compile (default off; falls back to eager "
        'with a warning; config files also take compile = "auto": on CUDA only)',
    )
    g.add_argument(
        "--distributed",
        metavar="{auto,true,false}",
        help="data-parallel training: auto (default: when torchrun starts several processes), "
        "true (required) or false (every process trains alone)",
    )
    g = p.add_argument_group("checkpoints")
    g.add_argument(
        "--checkpoint",
        help="write the whole training state to this file as training goes (an aekit file; `aekit info` shows it)",
    )
    g.add_argument("--checkpoint-every", type=int, help="epochs between checkpoints (default 1)")
    g.add_argument(
        "--resume",
        action="store_true",
        default=None,
        help="continue from --checkpoint if it exists (else start afresh)",
    )
    g = p.add_argument_group("regularizers and noise")
    for key, text in (
        ("hidden_l1", "L1 penalty on hidden activations"),
        ("hidden_l2", "L2 penalty on hidden activations"),
        ("weight_l1", "L1 penalty on weights"),
        ("weight_l2", "L2 penalty on weights (weight decay)"),
        ("sparsity_target", "target mean activation rho (KL sparsity)"),
        ("sparsity_weight", "weight beta of the KL sparsity penalty"),
        ("contractive", "contractive penalty on the code layer's Jacobian"),
        ("input_noise", "std of Gaussian noise on the inputs (denoising)"),
        ("input_dropout", "dropout probability on the inputs (denoising)"),
        ("hidden_noise", "std of Gaussian noise on hidden outputs"),
        ("hidden_dropout", "dropout probability on hidden outputs"),
    ):
        g.add_argument("--" + key.replace("_", "-"), type=float, help=text)
    # Any training option added to TrainOptions later still gets a flag.
    declared = {a.dest for a in p._actions}
    for field in dataclasses.fields(TrainOptions):
        if field.name in declared or field.name == "monitors":
            continue
        flag = "--" + field.name.replace("_", "-")
        if isinstance(field.default, bool):
            p.add_argument(flag, action="store_true", default=None, help=f"see TrainOptions.{field.name}")
        else:
            kind = type(field.default) if isinstance(field.default, (int, float)) else str
            p.add_argument(flag, type=kind, help=f"see TrainOptions.{field.name}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="aekit", description="Build, train, inspect and debug autoencoders.", parents=[_common(False)]
    )
    parser.add_argument("--version", action="version", version=f"aekit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    common = [_common(True)]

    p = sub.add_parser("train", parents=common, help="train an autoencoder and save it")
    _add_train_arguments(p)
    p.set_defaults(func=cmd_train, cli_labels=_flag_labels(p), cli_kinds=config_kinds(p))

    for name, what, func in (("encode", "data to encode", cmd_encode), ("decode", "codes to decode", cmd_decode)):
        p = sub.add_parser(name, parents=common, help=f"{name} with a saved model")
        p.add_argument("model", help="model file (or training checkpoint)")
        p.add_argument("data", help=f"{what}: {_DATA_HELP}")
        p.add_argument("--output", "-o", required=True, help="output .npy or .csv (not an input)")
        p.add_argument("--layer", help="layer name or index (default: the code layer)")
        if name == "encode":
            p.add_argument(
                "--sample",
                action="store_true",
                help="Bernoulli samples of the codes (for a layer whose values lie in [0, 1])",
            )
        p.set_defaults(func=func, cli_labels=_flag_labels(p, **{"layer index": "--layer"}))

    p = sub.add_parser("score", parents=common, help="R^2 and reconstruction errors of data")
    p.add_argument("model", help="model file (or training checkpoint)")
    p.add_argument("data", help=f"data to reconstruct: {_DATA_HELP}")
    p.add_argument("--output", "-o", help="write per-example squared errors (.npy or .csv; not an input)")
    p.set_defaults(func=cmd_score, cli_labels=_flag_labels(p))

    if _optional("inspect.diagnose", "diagnose") is not None:
        p = sub.add_parser("diagnose", parents=common, help="find out why a model does not learn")
        p.add_argument("model", help="model file (or training checkpoint)")
        p.add_argument("data", help=f"data to check the model on: {_DATA_HELP}")
        p.set_defaults(func=cmd_diagnose, cli_labels=_flag_labels(p))

    if _optional("inspect.report", "write_report") is not None:
        p = sub.add_parser("report", parents=common, help="write an HTML report with pictures")
        p.add_argument("model", help="model file (or training checkpoint)")
        p.add_argument("data", help=f"data to show the model on: {_DATA_HELP}")
        p.add_argument(
            "--output", "-o", required=True, help="folder to write index.html and its pictures into (made if missing)"
        )
        p.set_defaults(func=cmd_report, cli_labels=_flag_labels(p))

    p = sub.add_parser("info", parents=common, help="describe a model file or training checkpoint")
    p.add_argument("model", help="model file or training checkpoint")
    p.set_defaults(func=cmd_info, cli_labels=_flag_labels(p))

    p = sub.add_parser("demo", parents=common, help="train a small sparse autoencoder on the 8x8 digits")
    p.add_argument(
        "--output",
        "-o",
        default="demo-output",
        help="folder for model.aekit and the report (default demo-output; made if missing)",
    )
    p.add_argument("--epochs", type=int, default=40, help="most epochs, >= 1 (default 40)")
    p.set_defaults(func=cmd_demo, cli_labels=_flag_labels(p))
    return parser


# ---------------------------------------------------------------------- entry point
def _setup_logging(verbose: int) -> Callable[[], None]:
    """Send aekit's logs and warnings to stderr, one line each; return a function that undoes it."""
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("aekit: %(levelname)s: %(message)s"))
    root = logging.getLogger("aekit")
    saved = (root.handlers[:], root.level, root.propagate, warnings.showwarning)
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False

    def show(message, category, filename, lineno, file=None, line=None):
        # One line per warning, not Python's two-line source dump.
        print(f"aekit: warning: {_one_line(message)}", file=sys.stderr)

    warnings.showwarning = show

    def restore() -> None:
        root.handlers[:], level_, root.propagate, warnings.showwarning = saved[0], saved[1], saved[2], saved[3]
        root.setLevel(level_)

    return restore


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


# A keyword at the start of a message, as in "max_epochs must be ..." or "resume=True needs ...".
_LEAD_WORDS = r"(?=\s+(?:must|needs|applies|should|is|has)\b)"


def explain(error: BaseException, args: argparse.Namespace | None) -> str:
    """``error``'s message in the words of the command line.

    The library names Python keywords (``max_epochs``, ``resume=True``) and arrays (``x``); the
    command line had flags (``--epochs``), config keys and files.  Rewritten: a keyword at the start
    of the message or written ``name=VALUE``, a keyword with an underscore anywhere, and the array
    named at the start of a data error.  An ``unknown NAME 'value'`` error gets the flag that gave
    that value in front.
    """
    message = _one_line(error)
    # Model-file errors quote the file's own config, which the command line did not write.
    if args is None or not isinstance(error, (ConfigurationError, DataError, TrainingDiverged)):
        return message
    arrays: dict[str, str] = getattr(args, "cli_arrays", {})
    if isinstance(error, DataError):
        for name, label in arrays.items():
            if message.startswith(name + " "):
                message = label + message[len(name) :]
                break
    labels: dict[str, str] = getattr(args, "cli_labels", {})

    def flag(name: str, value: str | None) -> str:
        label = labels[name]
        if value is None or value == "True":
            return label
        return f"{label} {value}" if label.startswith("-") else f"{label} = {value}"

    for name in sorted(labels, key=len, reverse=True):
        word = re.escape(name)
        # Not inside a quoted name, a path or a longer word.
        before, after = r"(?<![\w'\"./-])", r"(?![\w'\"/-])"
        message = re.sub(rf"^{word}(?:=(\S+?))?{_LEAD_WORDS}", lambda m: flag(name, m.group(1)), message)
        message = re.sub(rf"{before}{word}=([^\s,;)]+)", lambda m: flag(name, m.group(1)), message)
        if "_" in name or " " in name:
            message = re.sub(rf"{before}{word}{after}", lambda m: flag(name, None), message)
    if isinstance(error, ConfigurationError) and not any(label in message for label in labels.values()):
        unknown = re.match(r"unknown [\w ]+? '([^']*)'", message)
        values: dict[str, Any] = getattr(args, "cli_values", None) or vars(args)
        if unknown:
            wanted = unknown.group(1)
            sources = [
                labels[name]
                for name, value in values.items()
                if name in labels
                and (
                    (isinstance(value, str) and wanted in re.split(r"[,:]", value))
                    or (not isinstance(value, str) and repr(wanted) in repr(value))
                )
            ]
            if sources:
                message = f"{' or '.join(sorted(set(sources)))}: {message}"
    return message


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 error, 2 usage, 130 interrupted).

    Exit code 2 means the command line is wrong: argparse's errors and option or config values
    aekit refuses (:class:`~aekit.errors.ConfigurationError`).  1 is every other error: data,
    model files, a diverged run, the file system.
    """
    parser = build_parser()
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    args: argparse.Namespace | None = None
    undo: list[Callable[[], None]] = []  # main() leaves the process as it found it (tests call it)
    try:
        args = parser.parse_args(argv)
        debug = args.debug
        undo.append(_setup_logging(args.verbose))
        threads = args.threads
        if threads is None and args.command == "demo":
            threads = 1  # the demo's tiny model gains nothing from more; on a busy machine they spin
        if threads is not None:
            if threads < 1:
                raise UsageError(f"--threads must be >= 1, got {threads}")
            import torch

            before = torch.get_num_threads()
            torch.set_num_threads(threads)
            undo.append(lambda: torch.set_num_threads(before))
        return int(args.func(args) or 0)
    except UsageError as error:
        print(f"aekit: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aekit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`aekit info m.aekit | head`): no message; silence the final flush too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except (AekitError, OSError) as error:
        if debug:
            raise
        if isinstance(error, OSError) and error.filename is not None:
            message = f"{error.strerror or error}: {error.filename!r}"
        else:
            message = explain(error, args)
        print(f"aekit: error: {_one_line(message)}", file=sys.stderr)
        return 2 if isinstance(error, ConfigurationError) else 1
    except Exception as error:  # noqa: BLE001 - the CLI never shows a raw traceback
        if debug:
            raise
        print(
            f"aekit: error: unexpected {type(error).__name__}: {_one_line(error)} (run with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1
    finally:
        for step in reversed(undo):
            step()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
