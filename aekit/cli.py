"""The ``aekit`` command line, thin over the Python API.

::

    aekit train DATA --layers 784,64,784 --output model.aekit [--tied] [--epochs N] [--hidden-l1 F] ...
    aekit encode MODEL DATA --output codes.npy [--layer hid1]
    aekit decode MODEL CODES --output recon.npy [--layer hid1]
    aekit score MODEL DATA [--output errors.csv]
    aekit diagnose MODEL DATA
    aekit report MODEL DATA --output DIR
    aekit info MODEL
    aekit demo [--output DIR]

Errors are one line on stderr (``aekit: error: ...``) and a non-zero exit code:
2 for a bad command line, 1 for anything else; ``--debug`` shows the traceback.
Outputs are written atomically, so a failed run never damages an existing file.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .errors import AekitError, ConfigurationError, DataError, unknown_name_error

__all__ = ["build_parser", "load_config", "main", "parse_layers_arg"]

log = logging.getLogger(__name__)

OUTPUT_SUFFIXES = (".npy", ".csv")


class UsageError(Exception):
    """A bad command line (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    # argparse prints the whole usage on errors; aekit prints one line instead.
    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


# ---------------------------------------------------------------------- layers and config
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
        layers.append((value, *extra) if extra else value)
    return layers


def _layers_from_config(value: Any) -> list[Any]:
    if isinstance(value, str):
        return parse_layers_arg(value)
    if not isinstance(value, list) or len(value) < 2:
        raise ConfigurationError(f"config 'layers' must be a list of at least two layers or a string, got {value!r}")
    out: list[Any] = []
    for item in value:
        if isinstance(item, str):
            out.extend(parse_layers_arg(f"{item},1")[:1])
        elif isinstance(item, list):
            out.append(tuple(item))
        else:
            out.append(item)
    return out


def _tie_decoder(layers: list[Any]) -> list[Any]:
    """``--tied``: every layer after the middle one shares its mirror's weights."""
    middle = len(layers) // 2
    tied = list(layers[: middle + 1])
    for item in layers[middle + 1:]:
        if isinstance(item, dict):
            tied.append({**item, "form": "tied"})
        elif isinstance(item, tuple):
            tied.append(item if "tied" in item else (*item, "tied"))
        else:
            tied.append((item, "tied"))
    return tied


def _read_toml(path: str) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigurationError(f"config file {path!r} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigurationError(f"config file {path!r} is not valid TOML: {error}") from None


def load_config(path: str, valid: Iterable[str]) -> dict[str, Any]:
    """Read the ``[train]`` table (or the top level) of a TOML file; keys as the flags.

    ``learning-rate`` and ``learning_rate`` are the same key; unknown keys are errors.
    """
    data = _read_toml(path)
    table = data.get("train", data)
    if not isinstance(table, dict):
        raise ConfigurationError(f"config file {path!r}: [train] must be a table")
    valid = set(valid)
    config: dict[str, Any] = {}
    for key, value in table.items():
        name = {"epochs": "max_epochs"}.get(key.replace("-", "_"), key.replace("-", "_"))
        if name not in valid:
            raise unknown_name_error(f"key in config file {path!r}:", key, sorted(valid))
        config[name] = value
    return config


# ---------------------------------------------------------------------- data in and out
def read_data(path: str) -> np.ndarray:
    """Any file :func:`aekit.load_data` reads (npy, npz, csv, idx, image folders)."""
    if _is_model_file(path):
        raise DataError(f"{path!r} is an aekit model file; pass it as MODEL, not as data")
    try:
        from .loaders import load_data
    except ImportError:  # pragma: no cover - the loaders module ships with aekit
        load_data = _read_simple
    return load_data(path)


def _is_model_file(path: str) -> bool:
    # A safetensors header that names the aekit format (see aekit.saving).
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                return False
            size = int.from_bytes(head, "little")
            if not 0 < size < 100 * 1024 * 1024:
                return False
            header = handle.read(size)
    except OSError:
        return False
    return header[:1] == b"{" and b'"format":"aekit"' in header.replace(b" ", b"")


def _read_simple(path: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"data file {path!r} does not exist")
    if p.suffix == ".npy":
        return np.load(p, allow_pickle=False)
    if p.suffix == ".csv":
        try:
            return np.loadtxt(p, delimiter=",", dtype=np.float32, ndmin=2)
        except ValueError as error:
            raise DataError(f"{path!r} is not a numeric CSV table: {error}") from None
    raise DataError(f"cannot read data file {path!r}: expected .npy or .csv")


def check_output(path: str, suffixes: Sequence[str] = OUTPUT_SUFFIXES) -> None:
    """Fail before any work if ``path`` cannot be written: wrong suffix or missing folder."""
    p = Path(path)
    if suffixes and p.suffix.lower() not in suffixes:
        raise ConfigurationError(f"--output {path!r} must end in {' or '.join(suffixes)}")
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise ConfigurationError(f"--output {path!r}: folder {str(folder)!r} does not exist")
    if p.is_dir():
        raise ConfigurationError(f"--output {path!r} is a folder, not a file")


def write_array(path: str, array: np.ndarray) -> None:
    """Write ``array`` as .npy or .csv (by suffix), atomically; CSV rows are examples."""
    from .saving import atomic_write

    check_output(path)
    if Path(path).suffix.lower() == ".npy":
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        atomic_write(path, buffer.getvalue())
    else:
        text = io.StringIO()
        flat = array.reshape(array.shape[0], -1) if array.ndim > 1 else array.reshape(-1, 1)
        np.savetxt(text, flat, delimiter=",", fmt="%.9g")
        atomic_write(path, text.getvalue().encode())


def load_model(path: str):
    from .saving import load_model as _load

    return _load(path)


# ---------------------------------------------------------------------- progress
def _epoch_line(epoch: int, total: int, train: dict[str, float], valid: dict[str, float]) -> str:
    line = f"epoch {epoch}/{total}: loss={train.get('loss', math.nan):.6g}"
    if "loss" in valid:
        line += f" valid={valid['loss']:.6g}"
    return line


def progress(epochs: Iterator, total: int, quiet: bool = False,
             epoch_of: Callable[[], int] | None = None) -> Iterator:
    """Show training progress on stderr: a tqdm bar on a terminal, else one line per epoch.

    ``epoch_of()`` gives the current epoch number (a resumed run does not start at 1).
    """
    if quiet:
        yield from epochs
        return
    count = 0

    def current() -> int:
        return epoch_of() if epoch_of is not None else count

    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        with tqdm(total=total, unit="epoch", file=sys.stderr, dynamic_ncols=True) as bar:
            for train, valid in epochs:
                count += 1
                post = {"loss": f"{train.get('loss', math.nan):.4g}"}
                if "loss" in valid:
                    post["valid"] = f"{valid['loss']:.4g}"
                bar.set_postfix(post)
                bar.update(max(current() - bar.n, 0))
                yield train, valid
        return
    for train, valid in epochs:
        count += 1
        print(_epoch_line(current(), total, train, valid), file=sys.stderr, flush=True)
        yield train, valid


# ---------------------------------------------------------------------- commands
# Keys of `train` that shape the model rather than the training.
_MODEL_KEYS = ("layers", "tied", "activation", "output_activation", "loss", "seed", "device")


def _train_keys() -> list[str]:
    from .regularizers import REGULARIZER_KEYS
    from .training import TrainOptions

    fields = [f.name for f in dataclasses.fields(TrainOptions) if f.name != "monitors"]
    return fields + [k for k in REGULARIZER_KEYS if k not in fields]


def cmd_train(args: argparse.Namespace) -> int:
    from .network import Autoencoder

    keys = [*_MODEL_KEYS, *_train_keys()]
    settings: dict[str, Any] = {}
    if args.config:
        settings.update(load_config(args.config, keys))
        if "layers" in settings:
            settings["layers"] = _layers_from_config(settings["layers"])
    given = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    if "layers" in given:
        given["layers"] = parse_layers_arg(given["layers"])
    settings.update(given)
    if "layers" not in settings:
        raise UsageError("train needs --layers (e.g. --layers 784,64,784) or a config file with 'layers'")
    check_output(args.output, suffixes=())
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
    x = read_data(args.data)
    valid = read_data(args.valid) if args.valid else None
    total = int(settings.get("max_epochs", 100))
    from . import distributed

    main_process = distributed.is_main_process()  # under torchrun only rank 0 reports and writes
    if not main_process:
        logging.getLogger("aekit").setLevel(logging.WARNING)
    log.info("training %r on %s examples from %s", net, x.shape[0], args.data)
    start = time.perf_counter()
    train_mon: dict[str, float] = {}
    valid_mon: dict[str, float] = {}
    epochs = net.itertrain(x, valid, **settings)  # joins the process group under torchrun
    for train_mon, valid_mon in progress(epochs, total, args.quiet or not main_process,
                                         lambda: len(net.history)):
        pass
    seconds = time.perf_counter() - start
    if not main_process:
        return 0
    net.save(args.output)
    summary = f"trained {len(net.history)} epochs in {seconds:.1f} s"
    if distributed.is_active() and distributed.parse_mode(settings.get("distributed", "auto")) is not False:
        from .training import TrainOptions

        batch, world = int(settings.get("batch_size", TrainOptions.batch_size)), distributed.world_size()
        summary += f" on {world} processes (batch {batch} per process, {batch * world} per step)"
    summary += f": loss={train_mon.get('loss', math.nan):.6g}"
    if "loss" in valid_mon:
        summary += f" valid={valid_mon['loss']:.6g}"
    print(f"{summary}; saved {args.output}")
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    check_output(args.output)
    net = load_model(args.model)
    codes = net.encode(read_data(args.data), layer=_layer(args.layer), sample=args.sample)
    write_array(args.output, codes)
    print(f"wrote codes of shape {codes.shape} to {args.output}")
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    check_output(args.output)
    net = load_model(args.model)
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
        check_output(args.output)
    net = load_model(args.model)
    x = read_data(args.data)
    r2 = net.score(x)
    errors = reconstruction_errors(net, x)
    print(f"R^2 {r2:.6f}")
    print(f"mean squared error {errors.mean():.6g} (per example: median {np.median(errors):.6g}, "
          f"max {errors.max():.6g} at row {int(errors.argmax())})")
    if args.output:
        write_array(args.output, errors)
        print(f"wrote {len(errors)} per-example errors to {args.output}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .saving import model_from_file_contents, read_model_file

    tensors, meta = read_model_file(args.model)
    net = model_from_file_contents(tensors, meta, args.model)
    print(f"{args.model}: aekit model, format {meta['format_version']}, written by aekit {meta['aekit_version']}")
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
    if net.history:
        last = net.history[-1]
        line = f"trained {len(net.history)} epochs; last loss={last['train'].get('loss', math.nan):.6g}"
        if last.get("valid", {}).get("loss") is not None:
            line += f" valid={last['valid']['loss']:.6g}"
        print(line)
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
    diagnose = _optional("diagnose", "diagnose")
    if diagnose is None:
        raise AekitError("this aekit has no diagnose module")
    net = load_model(args.model)
    findings = diagnose(net, read_data(args.data))
    if not findings:
        print("no problems found")
    for f in findings:
        print(f"[{f.severity}] {f.code}: {f.message}")
        if getattr(f, "remedy", None):
            print(f"    remedy: {f.remedy}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    write_report = _optional("report", "write_report")
    if write_report is None:
        raise AekitError("this aekit has no report module")
    net = load_model(args.model)
    x = read_data(args.data)
    os.makedirs(args.output, exist_ok=True)
    path = write_report(net, x, args.output)
    print(f"wrote report to {path or args.output}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    s = run_demo(args.output, epochs=args.epochs, quiet=args.quiet)
    print(f"aekit demo: sparse autoencoder {s['net']}")
    print(f"  data: {s['n_train']} training and {s['n_valid']} held-out 8x8 digits, pixels in [0, 1]")
    print(f"  trained {s['epochs']} epochs in {s['seconds']:.1f} s: loss {s['train_loss']:.4f} (train), "
          f"{s['valid_loss']:.4f} (valid); held-out R^2 {s['r2']:.3f}")
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
    common.add_argument("--debug", action="store_true", default=default(False),
                        help="show the traceback of an unexpected error")
    common.add_argument("--threads", type=int, default=default(None),
                        help="CPU threads for torch (default: torch's choice; demo: 1)")
    return common


def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    from .training import TrainOptions

    p.add_argument("data", help="training data (.npy, .npz, .csv, idx, folder of images)")
    p.add_argument("--output", "-o", required=True, help="model file to write")
    p.add_argument("--config", help="TOML file of train settings ([train] table); flags override it")
    p.add_argument("--valid", help="validation data file (else --valid-split)")
    g = p.add_argument_group("model")
    g.add_argument("--layers", help="sizes, input first: 784,64,784 (items SIZE[:ACTIVATION|:tied]; "
                                    "first may be CxHxW)")
    g.add_argument("--tied", action="store_true", default=None, help="decoder shares the encoder's weights")
    g.add_argument("--activation", help="hidden activation (default relu)")
    g.add_argument("--output-activation", help="output activation (default linear)")
    g.add_argument("--loss", help="mse (default), mae, bce, kl, gll")
    g.add_argument("--seed", type=int, help="seed of the weights and shuffles (default 13)")
    g.add_argument("--device", help="cpu (default), cuda or auto")
    g = p.add_argument_group("training")
    g.add_argument("--algo", help="adam (default), sgd, nag, rmsprop, adagrad, adadelta, rprop, lbfgs")
    g.add_argument("--epochs", "--max-epochs", dest="max_epochs", type=int, help="most epochs (default 100)")
    g.add_argument("--batch-size", type=int, help="examples per batch (default 64)")
    g.add_argument("--learning-rate", "--lr", type=float, help="step size (default per algo; adam 1e-3)")
    g.add_argument("--momentum", type=float, help="for sgd, nag, rmsprop (default 0.9)")
    g.add_argument("--patience", type=int, help="validations without progress before stopping (default 5)")
    g.add_argument("--min-improvement", type=float, help="relative progress that counts (default 0)")
    g.add_argument("--validate-every", type=int, help="epochs between validations; 0: off (default 1)")
    g.add_argument("--valid-split", type=float, help="fraction held out for validation (default 0)")
    g.add_argument("--max-gradient-norm", type=float, help="clip the global gradient norm")
    g.add_argument("--layerwise", action="store_true", default=None, help="greedy layerwise pretraining first")
    g.add_argument("--no-shuffle", dest="shuffle", action="store_false", default=None,
                   help="keep the batch order fixed")
    g.add_argument("--on-nan", choices=("raise", "warn"), help="on a NaN loss: stop (default) or go on")
    g = p.add_argument_group("checkpoints")
    g.add_argument("--checkpoint", help="write the whole training state to this file as training goes")
    g.add_argument("--checkpoint-every", type=int, help="epochs between checkpoints (default 1)")
    g.add_argument("--resume", action="store_true", default=None,
                   help="continue from --checkpoint if it exists (else start afresh)")
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
    parser = _Parser(prog="aekit", description="Build, train, inspect and debug autoencoders.",
                     parents=[_common(False)])
    parser.add_argument("--version", action="version", version=f"aekit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    common = [_common(True)]

    p = sub.add_parser("train", parents=common, help="train an autoencoder and save it")
    _add_train_arguments(p)
    p.set_defaults(func=cmd_train)

    for name, what, func in (("encode", "data to encode", cmd_encode), ("decode", "codes to decode", cmd_decode)):
        p = sub.add_parser(name, parents=common, help=f"{name} with a saved model")
        p.add_argument("model", help="model file")
        p.add_argument("data", help=what)
        p.add_argument("--output", "-o", required=True, help="output .npy or .csv")
        p.add_argument("--layer", help="layer name or index (default: the code layer)")
        if name == "encode":
            p.add_argument("--sample", action="store_true", help="Bernoulli samples of codes in [0, 1]")
        p.set_defaults(func=func)

    p = sub.add_parser("score", parents=common, help="R^2 and reconstruction errors of data")
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("--output", "-o", help="write per-example squared errors (.npy or .csv)")
    p.set_defaults(func=cmd_score)

    if _optional("diagnose", "diagnose") is not None:
        p = sub.add_parser("diagnose", parents=common, help="find out why a model does not learn")
        p.add_argument("model")
        p.add_argument("data")
        p.set_defaults(func=cmd_diagnose)

    if _optional("report", "write_report") is not None:
        p = sub.add_parser("report", parents=common, help="write an HTML report with pictures")
        p.add_argument("model")
        p.add_argument("data")
        p.add_argument("--output", "-o", required=True, help="folder to write the report into")
        p.set_defaults(func=cmd_report)

    p = sub.add_parser("info", parents=common, help="describe a model file")
    p.add_argument("model")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("demo", parents=common, help="train a small sparse autoencoder on the 8x8 digits")
    p.add_argument("--output", "-o", default="demo-output", help="folder for the model and report")
    p.add_argument("--epochs", type=int, default=40, help="most epochs (default 40)")
    p.set_defaults(func=cmd_demo)
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 error, 2 usage, 130 interrupted)."""
    parser = build_parser()
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
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
            message = str(error)
        print(f"aekit: error: {_one_line(message)}", file=sys.stderr)
        return 1
    except Exception as error:  # noqa: BLE001 - the CLI never shows a raw traceback
        if debug:
            raise
        print(f"aekit: error: unexpected {type(error).__name__}: {_one_line(error)} "
              "(run with --debug for the traceback)", file=sys.stderr)
        return 1
    finally:
        for step in reversed(undo):
            step()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
