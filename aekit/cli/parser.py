"""The ``aekit`` command line's argument parser: sub-commands, their flags and help.

Every flag is named after the Python keyword it sets (``--batch-size`` -> ``batch_size``),
so that ``aekit train`` takes every :class:`~aekit.train.loop.TrainOptions` field; the
parser records which flag sets which keyword (``cli_labels``) for the error messages.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from typing import Any, NoReturn

from .._version import __version__
from ..errors import closest_name
from . import commands
from .config import config_kinds
from .errors import UsageError
from .evaluate import cmd_evaluate

__all__ = ["build_parser"]


class _Parser(argparse.ArgumentParser):
    # argparse prints the whole usage on errors; aekit prints one line instead.
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")

    def parse_args(  # type: ignore[override]  # one signature for typeshed's three overloads
        self, args: Sequence[str] | None = None, namespace: Any = None
    ) -> Any:
        """As argparse's, but a misspelt flag gets a did-you-mean (argparse only calls it unrecognized)."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = self._command_parser(parsed)
            raise UsageError(
                f"unrecognized arguments: {' '.join(extras)}{_did_you_mean(command, extras)} "
                f"(see '{command.prog} --help')"
            )
        return parsed

    def _command_parser(self, parsed: argparse.Namespace) -> argparse.ArgumentParser:
        """The sub-command's parser that read ``parsed`` (this parser if there is none)."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                chosen = action.choices.get(getattr(parsed, action.dest, None) or "")
                if chosen is not None:
                    return chosen
        return self


def _did_you_mean(parser: argparse.ArgumentParser, extras: Sequence[str]) -> str:
    """``'; did you mean --hidden-l1?'`` for the flags among ``extras`` that are near one of ``parser``'s."""
    flags = {s[2:]: s for action in parser._actions for s in action.option_strings if s.startswith("--")}
    hints = []
    for extra in extras:
        given = extra.split("=", 1)[0]
        # Compared without the dashes that every flag shares, which would make any two look alike.
        near = closest_name(given[2:], flags) if given.startswith("--") else None
        if near is not None:
            hints.append((given, flags[near]))
    if not hints:
        return ""
    if len(hints) == 1:
        return f"; did you mean {hints[0][1]}?"
    return "; did you mean " + ", ".join(f"{flag} for {given}" for given, flag in hints) + "?"


def _common(suppress: bool) -> _Parser:
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
        "--threads",
        type=int,
        default=default(None),
        help="CPU threads for torch (default: torch's choice; train: 1 for small models; demo: 1)",
    )
    return common


_DATA_HELP = ".npy, .npz or .safetensors (FILE:NAME picks an array), .csv, idx, or a folder of images"


def _flag_labels(parser: argparse.ArgumentParser, **extra: str) -> dict[str, str]:
    """Python keyword -> the flag that sets it (``max_epochs`` -> ``--epochs``), for error messages."""
    labels = {}
    for action in parser._actions:
        if action.option_strings and action.dest not in ("help", "version"):
            long = [s for s in action.option_strings if s.startswith("--")] or action.option_strings
            labels[action.dest] = long[0]
    labels.update(extra)
    return labels


def _patience(text: str) -> int | str:
    """``--patience N`` or ``--patience none`` (no early stopping; cmd_train passes None on)."""
    if text.strip().lower() == "none":
        return "none"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or none, got {text!r}") from None


def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    from ..train.options import PYTHON_ONLY_OPTIONS, TrainOptions

    p.add_argument("data", help=f"training data: {_DATA_HELP}")
    p.add_argument(
        "--output", "-o", required=True, help="model file to write, e.g. model.aekit (never a data file or an input)"
    )
    p.add_argument("--config", help="TOML file of train settings ([train] table); flags override it")
    p.add_argument("--valid", metavar="FILE", help="validation data file (or use --valid-split, not both)")
    g = p.add_argument_group("model")
    g.add_argument(
        "--layers",
        help="sizes, input first: 784,64,784 (items SIZE[:ACTIVATION|:tied]; first may be CxHxW; "
        "sparse codes as 3072:topk32 or 3072:topk:32)",
    )
    g.add_argument("--tied", action="store_true", default=None, help="decoder shares the encoder's weights")
    g.add_argument(
        "--unit-norm-decoder",
        action="store_true",
        default=None,
        help="the output layer's weight rows (one per code unit) kept at norm 1 (sparse dictionaries)",
    )
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
    g.add_argument(
        "--patience",
        type=_patience,
        help="stop once more than this many validations in a row did not improve the validation loss "
        "(the training loss without validation data); none: never stop early (default 5)",
    )
    g.add_argument(
        "--metrics",
        help="whole-data figures to report with validation, comma-separated: fvu, r2, mse, l0, dead_fraction "
        "(l0:LAYER names a layer)",
    )
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
    g = p.add_argument_group("sparse autoencoders")
    sae_flags: tuple[tuple[str, type, str], ...] = (
        ("jumprelu_l0", float, "L0 penalty of 'jumprelu' codes (Rajamanoharan et al. 2024)"),
        ("decoder_weighted_l1", float, "L1 penalty on codes weighted by their decoder norms (ReLU SAEs)"),
        ("auxk", float, "weight of the auxiliary loss of dead latents (Gao et al. 2024)"),
        ("auxk_k", int, "how many dead latents the auxiliary loss uses (default 512)"),
        ("dead_after", int, "training examples without firing after which a latent is dead (default 10000000)"),
        ("multik", float, "weight of the Multi-TopK term: the reconstruction from the top 4k (Gao et al. 2024)"),
    )
    for key, kind, text in sae_flags:
        g.add_argument("--" + key.replace("_", "-"), type=kind, help=text)
    g = p.add_argument_group("variational autoencoders (a gaussian layer)")
    g.add_argument("--beta", type=float, help="weight of the KL term (default 1: the ELBO)")
    g.add_argument("--kl-warmup", type=int, help="optimizer steps over which the KL weight rises from 0")
    g.add_argument("--free-bits", type=float, help="nats each latent's KL counts at least (default 0: off)")
    g.add_argument("--capacity", type=float, help="train on beta * |KL - capacity| (default off)")
    g.add_argument("--importance-samples", type=int, help="train on the IWAE bound with this many samples")
    g.add_argument("--binarize", choices=("dynamic",), help="resample each batch as x ~ Bernoulli(x)")
    # Any training option added to TrainOptions later still gets a flag.
    declared = {a.dest for a in p._actions}
    for field in dataclasses.fields(TrainOptions):
        if field.name in declared or field.name in PYTHON_ONLY_OPTIONS:
            continue
        flag = "--" + field.name.replace("_", "-")
        if isinstance(field.default, bool):
            p.add_argument(flag, action="store_true", default=None, help=f"see TrainOptions.{field.name}")
        else:
            kind = type(field.default) if isinstance(field.default, (int, float)) else str
            p.add_argument(flag, type=kind, help=f"see TrainOptions.{field.name}")


def build_parser() -> argparse.ArgumentParser:
    """The ``aekit`` argument parser, with one sub-command per :mod:`aekit.cli.commands` function.

    Each sub-command's ``func`` default is its ``cmd_NAME`` function, looked up on
    :mod:`aekit.cli.commands` when the parser is built; ``cli_labels`` maps each Python
    keyword to the flag that sets it, for error messages.

    Returns
    -------
    argparse.ArgumentParser
        Its errors raise :class:`~aekit.cli.errors.UsageError` instead of exiting.
    """
    parser = _Parser(
        prog="aekit", description="Build, train, inspect and debug autoencoders.", parents=[_common(False)]
    )
    parser.add_argument("--version", action="version", version=f"aekit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    common = [_common(True)]

    p = sub.add_parser("train", parents=common, help="train an autoencoder and save it")
    _add_train_arguments(p)
    p.set_defaults(func=commands.cmd_train, cli_labels=_flag_labels(p), cli_kinds=config_kinds(p))

    for name, what, func in (
        ("encode", "data to encode", commands.cmd_encode),
        ("decode", "codes to decode", commands.cmd_decode),
    ):
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
    p.set_defaults(func=commands.cmd_score, cli_labels=_flag_labels(p))

    p = sub.add_parser("nll", parents=common, help="negative log-likelihood of data under a VAE (nats)")
    p.add_argument("model", help="model file with a gaussian layer (or training checkpoint)")
    p.add_argument("data", help=f"data to score: {_DATA_HELP}")
    p.add_argument("--k", type=int, default=1000, help="importance samples per example (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples (default 0)")
    p.add_argument("--output", "-o", help="write the per-example figures (.npy or .csv; not an input)")
    p.set_defaults(func=commands.cmd_nll, cli_labels=_flag_labels(p))

    p = sub.add_parser("sample", parents=common, help="draw samples from a VAE's prior, decoded")
    p.add_argument("model", help="model file with a gaussian layer (or training checkpoint)")
    p.add_argument("--n", type=int, default=16, help="how many samples (default 16)")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    p.add_argument("--output", "-o", required=True, help="output .npy or .csv")
    p.set_defaults(func=commands.cmd_sample, cli_labels=_flag_labels(p))

    if commands._optional("inspect.diagnose", "diagnose") is not None:
        p = sub.add_parser("diagnose", parents=common, help="find out why a model does not learn")
        p.add_argument("model", help="model file (or training checkpoint)")
        p.add_argument("data", help=f"data to check the model on: {_DATA_HELP}")
        p.set_defaults(func=commands.cmd_diagnose, cli_labels=_flag_labels(p))

    if commands._optional("inspect.report", "write_report") is not None:
        p = sub.add_parser("report", parents=common, help="write an HTML report with pictures")
        p.add_argument("model", help="model file (or training checkpoint)")
        p.add_argument("data", help=f"data to show the model on: {_DATA_HELP}")
        p.add_argument(
            "--output", "-o", required=True, help="folder to write index.html and its pictures into (made if missing)"
        )
        p.set_defaults(func=commands.cmd_report, cli_labels=_flag_labels(p))

    p = sub.add_parser("evaluate", parents=common, help="exact metrics (fvu, l0, dead fraction, ...) over all of DATA")
    p.add_argument("model", help="model file (or training checkpoint)")
    p.add_argument("data", help=f"data to evaluate on: {_DATA_HELP}")
    p.add_argument("--metrics", help="comma-separated metric names, e.g. fvu,l0:code (default: the model's)")
    p.add_argument("--output", "-o", help="also write the figures to this .json file (not an input)")
    p.set_defaults(func=cmd_evaluate, cli_labels=_flag_labels(p))

    if commands._optional("inspect.browser", "browse") is not None:
        from .browse import add_parser as add_browse_parser
        from .browse import cmd_browse

        p = add_browse_parser(sub, common, _DATA_HELP)
        p.set_defaults(func=cmd_browse, cli_labels=_flag_labels(p, **{"layer index": "--layer", "k": "--top"}))

    p = sub.add_parser("info", parents=common, help="describe a model file or training checkpoint")
    p.add_argument("model", help="model file or training checkpoint")
    p.set_defaults(func=commands.cmd_info, cli_labels=_flag_labels(p))

    p = sub.add_parser("demo", parents=common, help="train a small sparse autoencoder on the 8x8 digits")
    p.add_argument(
        "--output",
        "-o",
        default="demo-output",
        help="folder for model.aekit and the report (default demo-output; made if missing)",
    )
    p.add_argument("--epochs", type=int, default=40, help="most epochs, >= 1 (default 40)")
    p.set_defaults(func=commands.cmd_demo, cli_labels=_flag_labels(p))
    return parser
