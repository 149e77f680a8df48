"""Training checkpoints: save a run's whole state atomically and resume it exactly.

A checkpoint is an aekit model file (safetensors + JSON metadata, see
:mod:`aekit.saving`) with ``kind='checkpoint'`` and, beside the model, everything
the next epoch depends on:

* tensors ``model.*`` (the current parameters and preprocessing state),
  ``best.*`` (the early-stopping snapshot), ``optim.*`` (optimizer state) and
  ``rng.*`` (the trainer's shuffle generator and torch's global generator; noise
  and dropout masks come from a generator seeded per epoch from the model seed);
* JSON: the epoch counter, best loss and epoch, the stale-validation counter,
  the last validation monitors, the history, the optimizer's param groups and
  scalar state, the options and regularizers, the data sizes and, for
  ``precision='fp16'``, the gradient scaler's state (``grad_scaler``: loss
  scale, growth tracker, growth and backoff settings; ``null`` otherwise).

A checkpoint without ``grad_scaler`` (an fp32 run, or one written before aekit
stored it) still resumes: an fp16 run then starts from the default loss scale,
and says so in the log when the checkpoint's own run was fp16.

The penalty scale (``penalty_scale``) says what the stored regularizer keywords
mean: ``'mean'``, theanets 0.7's means over each weight matrix and hidden layer (see
:mod:`aekit.objective.penalties`), or ``'sum'``, the sums of aekit 0.1, whose
checkpoints (``checkpoint_version`` 1) have no such entry.  A run resumed from a
checkpoint keeps its scale, so the same keywords train with the strength the
checkpoint was written with; where that differs from what they mean today, the log
says so and gives today's equivalent keywords.

Resuming restores all of it, so a run that is stopped and resumed ends with the
same parameters, bit for bit, as one that was never stopped (same device,
same torch build).  A resume with a different model config, a different data
size or a different algorithm is refused with :class:`CheckpointError`; other
changed options (a new ``learning_rate`` ...) are used and logged as a warning,
and ``max_epochs`` may be raised to train on.  ``resume=True`` with no file at
the checkpoint path starts from scratch and says so in the log: the same
command line can then be re-run after any crash, including one before the
first checkpoint was written.

Checkpoints never execute code on load (no pickle) and are written through
:func:`aekit.saving.atomic_write`, so a crash while writing leaves the previous
checkpoint intact.  ``aekit.load(checkpoint)`` returns the model it holds.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, ModelFileError
from ..io.model_file import read_model_file, write_model_file
from ..objective.penalties import PENALTY_SCALES

__all__ = ["CHECKPOINT_VERSION", "Checkpointer", "checkpoint_info", "read_checkpoint"]

log = logging.getLogger(__name__)

# 2: the penalty scale is stored (version 1, aekit 0.1, summed weight_l1/l2 and hidden_l1/l2; see
# aekit.objective.penalties), so that an aekit that would misread the keywords refuses the file.
CHECKPOINT_VERSION = 2
# Options that may change between a run and its resumption without a warning.
_FREE_OPTIONS = ("max_epochs", "checkpoint", "checkpoint_every", "resume")


# ---------------------------------------------------------------------- optimizer state
def _encode(value: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON for ``value`` with every tensor moved into ``tensors`` under ``key``."""
    if isinstance(value, torch.Tensor):
        tensors[key] = value.detach().cpu().clone()  # clones: safetensors refuses shared storage
        return {"__tensor__": key}
    if isinstance(value, (list, tuple)):
        return {
            "__list__": [_encode(v, f"{key}.{i}", tensors) for i, v in enumerate(value)],
            "tuple": isinstance(value, tuple),
        }
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise CheckpointError(f"cannot store optimizer state {key!r} of type {type(value).__name__}")


def _decode(value: Any, tensors: dict[str, torch.Tensor], name: str) -> Any:
    if isinstance(value, dict) and "__tensor__" in value:
        key = value["__tensor__"]
        if key not in tensors:
            raise CheckpointError(f"checkpoint {name!r} is damaged: optimizer tensor {key!r} is missing")
        return tensors[key]
    if isinstance(value, dict) and "__list__" in value:
        items = [_decode(v, tensors, name) for v in value["__list__"]]
        return tuple(items) if value.get("tuple") else items
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise CheckpointError(f"checkpoint {name!r} is damaged: unreadable optimizer value {value!r}")


def optimizer_to_file(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Flatten ``optimizer.state_dict()``: tensors into ``tensors`` (``optim.*``), the rest as JSON."""
    state = optimizer.state_dict()
    return {
        "state": [
            [int(index), {k: _encode(v, f"optim.{index}.{k}", tensors) for k, v in entry.items()}]
            for index, entry in state["state"].items()
        ],
        "param_groups": [
            {k: _encode(v, f"optim.group{i}.{k}", tensors) for k, v in group.items()}
            for i, group in enumerate(state["param_groups"])
        ],
    }


def optimizer_from_file(
    optimizer: torch.optim.Optimizer, saved: Any, tensors: dict[str, torch.Tensor], name: str
) -> None:
    """Load what :func:`optimizer_to_file` wrote into ``optimizer``."""
    try:
        state = {
            int(index): {k: _decode(v, tensors, name) for k, v in entry.items()} for index, entry in saved["state"]
        }
        groups = [{k: _decode(v, tensors, name) for k, v in group.items()} for group in saved["param_groups"]]
        _check_optimizer_state(optimizer, state, name)
        _check_param_groups(optimizer, groups, name)
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as error:
        raise CheckpointError(
            f"checkpoint {name!r} has an optimizer state this optimizer cannot use: {error}"
        ) from None


def _same_kind(saved: Any, current: Any) -> bool:
    number = (int, float)
    if isinstance(current, bool) or current is None or isinstance(current, str):
        return type(saved) is type(current)
    if isinstance(current, number):
        return isinstance(saved, number) and not isinstance(saved, bool) and math.isfinite(saved)
    if isinstance(current, (list, tuple)):
        return (
            isinstance(saved, (list, tuple))
            and len(saved) == len(current)
            and all(_same_kind(a, b) for a, b in zip(saved, current))
        )
    return isinstance(saved, type(current))


def _check_param_groups(optimizer: torch.optim.Optimizer, groups: list[Any], name: str) -> None:
    # The optimizer built for this run says which keys and kinds of value a group has.
    current = optimizer.param_groups
    if not isinstance(groups, list) or len(groups) != len(current):
        raise CheckpointError(f"checkpoint {name!r} is damaged: wrong number of optimizer parameter groups")
    for saved, group in zip(groups, current):
        if not isinstance(saved, dict) or set(saved) != set(group):
            raise CheckpointError(
                f"checkpoint {name!r} is damaged: optimizer settings have keys "
                f"{sorted(saved) if isinstance(saved, dict) else saved!r}, "
                f"expected {sorted(group)}"
            )
        for key, value in group.items():
            if key != "params" and not _same_kind(saved[key], value):
                raise CheckpointError(
                    f"checkpoint {name!r} is damaged: optimizer setting {key!r} is "
                    f"{saved[key]!r}, expected a value like {value!r}"
                )
        if saved["params"] != list(range(len(saved["params"]))) or len(saved["params"]) != len(group["params"]):
            raise CheckpointError(f"checkpoint {name!r} is damaged: optimizer parameter indices do not match")


def _check_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[int, dict[str, Any]], name: str) -> None:
    # load_state_dict takes any keys and shapes; a damaged entry would only fail
    # later, inside optimizer.step, with a bare KeyError or RuntimeError.
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if any(not 0 <= index < len(params) for index in state):
        raise CheckpointError(f"checkpoint {name!r} has optimizer state for parameters this model does not have")
    if len({frozenset(entry) for entry in state.values()}) > 1:
        raise CheckpointError(f"checkpoint {name!r} is damaged: its optimizer state entries disagree on their keys")
    if isinstance(optimizer, torch.optim.LBFGS):
        return  # one entry over the flattened parameters
    for index, entry in state.items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor) and value.dim() and value.shape != params[index].shape:
                raise CheckpointError(
                    f"checkpoint {name!r} is damaged: optimizer state {key!r} of parameter "
                    f"{index} has shape {tuple(value.shape)}, expected {tuple(params[index].shape)}"
                )


# ---------------------------------------------------------------------- gradient scaler
def grad_scaler(trainer) -> torch.amp.GradScaler | None:
    """The enabled ``GradScaler`` of an fp16 ``trainer``, or None.

    Single-process and data-parallel trainers both keep it on their step runner
    (:attr:`aekit.train.step.StepRunner.scaler`).
    """
    scaler = getattr(getattr(trainer, "stepper", None), "scaler", None)
    return scaler if scaler is not None and scaler.is_enabled() else None


def scaler_to_file(scaler: torch.amp.GradScaler | None) -> dict[str, int | float] | None:
    """``scaler.state_dict()`` as JSON (plain numbers, no tensors); None without an enabled scaler."""
    if scaler is None or not scaler.is_enabled():
        return None
    state = scaler.state_dict()
    for key, value in state.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise CheckpointError(
                f"cannot store gradient-scaler state {key!r}: expected a finite number, got {value!r}"
            )
    return dict(state)


def scaler_from_file(scaler: torch.amp.GradScaler, saved: Any, name: str) -> dict[str, int | float]:
    """Check what :func:`scaler_to_file` wrote against ``scaler``; returns the state to load.

    Checked before anything is restored, so a damaged entry leaves the trainer untouched
    (``GradScaler.load_state_dict`` takes any values; a zero or NaN scale would silently
    skip every later step).
    """
    current = scaler.state_dict()
    if not isinstance(saved, dict) or set(saved) != set(current):
        got = sorted(saved) if isinstance(saved, dict) else type(saved).__name__
        raise CheckpointError(
            f"checkpoint {name!r} is damaged: its gradient-scaler state has keys {got}, expected {sorted(current)}"
        )
    for key, value in current.items():
        number = saved[key]
        kind = int if isinstance(value, int) else (int, float)
        if (
            isinstance(number, bool)
            or not isinstance(number, kind)
            or not math.isfinite(number)
            or number < 0
            or (key == "scale" and number == 0)
        ):
            expected = "a positive" if key == "scale" else "a non-negative"
            raise CheckpointError(
                f"checkpoint {name!r} is damaged: gradient-scaler {key!r} is {number!r}, "
                f"expected {expected} {'integer' if kind is int else 'number'}"
            )
    return {key: saved[key] for key in current}


# ---------------------------------------------------------------------- reading
def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and check a checkpoint file.

    Returns
    -------
    tensors : dict of str to tensor
    metadata : dict

    Raises
    ------
    CheckpointError
        Missing, empty, truncated, foreign or tampered files, model files that
        are not checkpoints, and checkpoints from a newer aekit.
    """
    name = str(path)
    try:
        tensors, meta = read_model_file(path)
    except CheckpointError:
        raise
    except ModelFileError as error:
        raise CheckpointError(str(error).replace("model file", "checkpoint", 1)) from None
    if meta.get("kind") != "checkpoint":
        raise CheckpointError(f"{name!r} is an aekit model file, not a training checkpoint")
    version = meta.get("checkpoint_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"checkpoint {name!r} has no valid checkpoint_version (got {version!r})")
    if version > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint {name!r} has version {version}, newer than this aekit reads "
            f"({CHECKPOINT_VERSION}); upgrade aekit"
        )
    for key, kind in (("trainer", dict), ("optimizer", dict), ("data", dict), ("history", list)):
        if not isinstance(meta.get(key), kind):
            raise CheckpointError(f"checkpoint {name!r} is damaged: its {key!r} entry is missing or malformed")
    # Version 1 (aekit 0.1) summed the weight and hidden penalties; the entry says so from version 2 on.
    scale = meta.setdefault("penalty_scale", "sum" if version < 2 else None)
    if scale not in PENALTY_SCALES:
        raise CheckpointError(
            f"checkpoint {name!r} is damaged: its penalty_scale is {scale!r}, expected one of {PENALTY_SCALES}"
        )
    if not isinstance(meta.get("grad_scaler"), (dict, type(None))):
        raise CheckpointError(
            f"checkpoint {name!r} is damaged: its 'grad_scaler' entry is "
            f"{type(meta['grad_scaler']).__name__}, expected an object or null"
        )
    return tensors, meta


def checkpoint_info(path: str | os.PathLike) -> dict[str, Any]:
    """What a checkpoint holds, without building anything: epoch, best epoch, history, options."""
    _, meta = read_checkpoint(path)
    state = meta["trainer"]
    return {
        "epoch": state.get("epoch"),
        "best_epoch": state.get("best_epoch"),
        "best_loss": state.get("best_loss"),
        "history": meta["history"],
        "options": meta.get("options"),
        "data": meta["data"],
        "aekit_version": meta.get("aekit_version"),
        "penalty_scale": meta["penalty_scale"],
    }


# ---------------------------------------------------------------------- comparing
def _differences(old: Any, new: Any, where: str = "") -> list[str]:
    """Human-readable paths where two JSON values differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            here = f"{where}.{key}" if where else str(key)
            if key not in old or key not in new:
                out.append(
                    f"{here}: checkpoint has {old.get(key, '(nothing)')!r}, this run has {new.get(key, '(nothing)')!r}"
                )
            else:
                out.extend(_differences(old[key], new[key], here))
        return out
    if isinstance(old, list) and isinstance(new, list):
        if len(old) != len(new):
            return [f"{where}: checkpoint has {len(old)} entries, this run has {len(new)}"]
        out = []
        for i, (a, b) in enumerate(zip(old, new)):
            out.extend(_differences(a, b, f"{where}[{i}]"))
        return out
    return [] if old == new else [f"{where}: checkpoint has {old!r}, this run has {new!r}"]


def _layer_differences(old: Any, new: Any) -> list[str]:
    # Name layers by their names rather than by list index.
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out = []
        for a, b in zip(old, new):
            label = f"layer {b.get('name', '?')!r}" if isinstance(b, dict) else "layer"
            out.extend(_differences(a, b, label))
        return out
    return _differences(old, new, "layers")


def _json_options(options) -> dict[str, Any]:
    out = {}
    for field in dataclasses.fields(options):
        value = getattr(options, field.name)
        if field.name in ("monitors", "callbacks"):
            continue  # Python objects (functions, callbacks); not part of what must match
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        out[field.name] = value if value is None or isinstance(value, (bool, int, float, str)) else repr(value)
    return out


def _data_sizes(trainer) -> dict[str, Any]:
    return {
        "n_train": len(trainer.source),
        "n_valid": None if trainer.valid is None else len(trainer.valid),
        "input_shape": list(trainer.net.graph.input_shape),
    }


_SCALE_WORDS = {
    "sum": "weight_l1/weight_l2 summed over the weights, hidden_l1/hidden_l2 added over the layers",
    "mean": "theanets 0.7's means over each weight matrix and hidden layer",
}


def _keep_penalty_scale(trainer, meta: dict[str, Any], name: str) -> None:
    """Train on with the checkpoint's penalty scale; say so, with today's equivalent keywords where they differ.

    The trainer's objective reads its ``regs`` at every call, and the hand-derived step is built at the
    first batch, after this: both see the scale set here.
    """
    regs, scale = trainer.regs, meta["penalty_scale"]
    if regs.scale == scale:
        return
    weights = {n.split(".", 1)[1]: p for n, p in trainer.net.graph.named_parameters() if p.dim() > 1}
    hidden = trainer.net.graph.hidden_names
    today, previous = regs.per_name(weights, hidden), regs.scale  # what the keywords mean in this run's scale
    regs.scale = scale
    kept = regs.per_name(weights, hidden)  # what they mean in the checkpoint's, as this run's keywords
    same = today.keys() == kept.keys() and all(
        today[key].keys() == kept[key].keys()
        and all(math.isclose(today[key][n], kept[key][n], rel_tol=1e-9) for n in kept[key])
        for key in kept
    )
    equivalent = ", ".join(f"{key}={{{', '.join(f'{n!r}: {v:.6g}' for n, v in kept[key].items())}}}" for key in kept)
    log.log(
        logging.INFO if same else logging.WARNING,
        "checkpoint %s was written by aekit %s with penalty scale %r (%s); this resumed run keeps it, so "
        "its penalties have the strength they were written with%s",
        name,
        meta.get("aekit_version", "?"),
        scale,
        _SCALE_WORDS[scale],
        "" if same else f"; in this aekit's scale ({_SCALE_WORDS[previous]}) they are {equivalent}",
    )


# ---------------------------------------------------------------------- the trainer hook
class Checkpointer:
    """Writes a trainer's state every ``checkpoint_every`` epochs and restores it on resume.

    Parameters
    ----------
    options : TrainOptions
        Supplies ``checkpoint`` (the path), ``checkpoint_every`` and ``resume``.
    regularizers : dict
        The regularizer keywords of the run, stored for the record and compared on resume.
    """

    def __init__(self, options, regularizers: dict[str, Any]):
        self.path = Path(os.fspath(options.checkpoint))
        self.every = int(options.checkpoint_every)
        self.options = _json_options(options)  # as given, before any on_nan halving
        self.regularizers = {
            k: v if isinstance(v, (bool, int, float, str, type(None))) else repr(v)
            for k, v in sorted(regularizers.items())
        }

    def __repr__(self) -> str:
        return f"Checkpointer({str(self.path)!r}, every={self.every})"

    # -------------------------------------------------------------- writing
    def due(self, epoch: int, final: bool) -> bool:
        """True if a checkpoint should be written after ``epoch``."""
        return final or epoch % self.every == 0

    def save(self, trainer) -> None:
        """Write ``trainer``'s complete state to the checkpoint path, atomically."""
        net = trainer.net
        tensors = {f"model.{k}": v.detach().cpu().clone() for k, v in net.state_tensors().items()}
        if trainer.best_state is not None:
            tensors.update({f"best.{k}": v.detach().cpu().clone() for k, v in trainer.best_state.items()})
        tensors["rng.generator"] = trainer.generator.get_state()
        tensors["rng.torch"] = torch.get_rng_state()
        if net.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(net.device)
        optimizer = optimizer_to_file(trainer.optimizer, tensors)
        best_loss = trainer.best_loss
        meta = net.file_metadata()
        meta.update(
            {
                "kind": "checkpoint",
                "checkpoint_version": CHECKPOINT_VERSION,
                "trainer": {
                    "epoch": trainer.epoch,
                    "best_epoch": trainer.best_epoch,
                    "stale": trainer.stale,
                    # JSON has no infinity: a missing best loss is stored as null.
                    "best_loss": best_loss if math.isfinite(best_loss) else None,
                    "has_best": trainer.best_state is not None,
                    "valid_monitors": trainer.valid_monitors,
                    "learning_rate": trainer.options.learning_rate,
                },
                "optimizer": {"algo": trainer.options.algo, **optimizer},
                # Without it a resumed fp16 run restarts at the default loss scale and skips
                # (or no longer skips) overflowing steps differently from an uninterrupted one.
                "grad_scaler": scaler_to_file(grad_scaler(trainer)),
                "options": self.options,
                "regularizers": self.regularizers,
                "penalty_scale": trainer.regs.scale,
                "data": _data_sizes(trainer),
            }
        )
        try:
            write_model_file(self.path, tensors, meta)
        except ModelFileError as error:
            raise CheckpointError(str(error)) from None
        except OSError as error:
            raise CheckpointError(f"cannot write checkpoint {str(self.path)!r}: {error}") from None
        log.debug("checkpoint written to %s after epoch %d", self.path, trainer.epoch)

    # -------------------------------------------------------------- resuming
    def resume(self, trainer) -> bool:
        """Load the checkpoint into ``trainer``; False (start afresh) when there is no file yet."""
        name = str(self.path)
        if not self.path.exists():
            log.info("no checkpoint at %s yet: starting from scratch", name)
            return False
        tensors, meta = read_checkpoint(self.path)
        net = trainer.net
        problems = _layer_differences(meta.get("config", {}).get("layers"), net.config()["layers"])
        rest_old = {k: v for k, v in (meta.get("config") or {}).items() if k != "layers"}
        rest_new = {k: v for k, v in net.config().items() if k != "layers"}
        problems += _differences(rest_old, rest_new)
        if problems:
            raise CheckpointError(
                f"cannot resume from {name!r}: the model differs from the checkpoint's: " + "; ".join(problems[:5])
            )
        data_problems = _differences(meta["data"], _data_sizes(trainer))
        if data_problems:
            raise CheckpointError(
                f"cannot resume from {name!r}: the data differ from the checkpoint's: " + "; ".join(data_problems)
            )
        algo = meta["optimizer"].get("algo")
        if algo != trainer.options.algo:
            raise CheckpointError(
                f"cannot resume from {name!r}: it was trained with algo={algo!r}, this run "
                f"uses algo={trainer.options.algo!r} (optimizer state does not carry over)"
            )
        changed = _differences(
            {k: v for k, v in (meta.get("options") or {}).items() if k not in _FREE_OPTIONS},
            {k: v for k, v in self.options.items() if k not in _FREE_OPTIONS},
        )
        changed += _differences(meta.get("regularizers") or {}, self.regularizers)
        if changed:
            log.warning("resuming from %s with changed options (the new values apply): %s", name, "; ".join(changed))

        model = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
        try:
            # The model's own class rebuilds it (this module never imports the facade).
            restored = type(net).from_file_contents(model, meta, name)
        except ModelFileError as error:
            raise CheckpointError(str(error).replace("model file", "checkpoint", 1)) from None
        state = meta["trainer"]
        try:
            epoch, best_epoch, stale = int(state["epoch"]), int(state["best_epoch"]), int(state["stale"])
            best_loss = math.inf if state.get("best_loss") is None else float(state["best_loss"])
            learning_rate = float(state["learning_rate"])
            valid_monitors = {str(k): float(v) for k, v in dict(state.get("valid_monitors") or {}).items()}
            generator_state, torch_state = tensors["rng.generator"], tensors["rng.torch"]
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"checkpoint {name!r} is damaged: trainer state unreadable ({error})") from None
        best = {k[len("best.") :]: v for k, v in tensors.items() if k.startswith("best.")}
        if state.get("has_best") and set(best) != set(net.graph.state_dict()):
            raise CheckpointError(f"checkpoint {name!r} is damaged: its best-parameter snapshot is incomplete")

        bad = sorted(k for k, v in (*model.items(), *best.items()) if v.is_floating_point() and not v.isfinite().all())
        if bad:
            raise CheckpointError(f"checkpoint {name!r} is damaged: tensors {bad[:3]} hold NaN or infinite values")
        scaler, scaler_state = grad_scaler(trainer), None
        if scaler is not None and meta.get("grad_scaler") is not None:
            scaler_state = scaler_from_file(scaler, meta["grad_scaler"], name)
        elif scaler is not None and (meta.get("options") or {}).get("precision") == "fp16":
            # An fp16 checkpoint from an aekit that did not store the scaler: still usable, but the
            # run is no longer bit-identical to an uninterrupted one. (A run that changed its
            # precision was already warned about above.)
            log.warning(
                "checkpoint %s has no gradient-scaler state (written by an older aekit): the fp16 "
                "loss scale restarts at %g",
                name,
                scaler.get_scale(),
            )
        _keep_penalty_scale(trainer, meta, name)
        net.graph.load_state_dict(restored.graph.state_dict())
        optimizer_from_file(trainer.optimizer, meta["optimizer"], tensors, name)
        if scaler is not None and scaler_state is not None:
            scaler.load_state_dict(scaler_state)
        try:
            trainer.generator.set_state(generator_state)
            torch.set_rng_state(torch_state)
            if "rng.cuda" in tensors and net.device.type == "cuda":
                torch.cuda.set_rng_state(tensors["rng.cuda"], net.device)
        except (RuntimeError, TypeError) as error:
            raise CheckpointError(f"checkpoint {name!r} has an unusable random-generator state: {error}") from None
        trainer.epoch, trainer.best_epoch, trainer.stale, trainer.best_loss = epoch, best_epoch, stale, best_loss
        trainer.best_state = {k: v.to(net.device) for k, v in best.items()} if state.get("has_best") else None
        trainer.valid_monitors = valid_monitors
        saved_options = meta.get("options") or {}
        for key in ("learning_rate", "momentum"):
            # A value changed for this run wins over the optimizer state's; otherwise keep the
            # saved one (the learning rate may have been halved by on_nan='warn').
            if key in saved_options and saved_options[key] != self.options.get(key):
                for group in trainer.optimizer.param_groups:
                    if key in group and not isinstance(group[key], tuple):
                        group[key] = getattr(trainer.options, key)
            elif key == "learning_rate":
                trainer.options.learning_rate = learning_rate
        net.history = list(restored.history)
        trainer.resumed = True
        log.info("resumed from %s after epoch %d (best: epoch %d)", name, epoch, best_epoch)
        return True
