"""The :class:`Autoencoder`: a graph of layers with theanets' compact API.

``Autoencoder`` is deliberately not an ``nn.Module`` (theanets' ``train(x)``
would clash with ``Module.train(mode)``); it owns a :class:`Graph`, which is.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from . import quantized
from .data.checks import check_array
from .data.sources import is_streamable
from .data.validation import seed_from
from .errors import AekitError, ConfigurationError, ModelFileError, unknown_name_error
from .io import model_file
from .model.activations import get as get_activation
from .model.graph import Graph, resolve_device
from .model.inference import BatchedInference
from .model.layers import Layer
from .model.specs import LayerSpec, parse_layers, specs_from_config, specs_to_config
from .objective import jacobian
from .objective.losses import Loss
from .objective.objective import Objective
from .objective.penalties import REGULARIZER_KEYS, Regularizers
from .variational import VariationalMixin

__all__ = ["Autoencoder", "Graph", "load", "load_checkpoint_model", "resolve_device"]

log = logging.getLogger(__name__)


LOSS_OPTIONS = ("output", "covar")  # the keywords Autoencoder passes on to its first Loss
AUTOENCODER_KEYWORDS = (
    "layers",
    "loss",
    "weighted",
    "rng",
    "hidden_activation",
    "output_activation",
    "device",
    *LOSS_OPTIONS,
)


class Autoencoder(VariationalMixin, BatchedInference):
    """An autoencoder built from theanets-style layer specs.

    Parameters
    ----------
    layers : sequence
        Input first, output last: ints, ``(size, 'activation')`` / ``(size, 'tied')``
        tuples, dicts, or a tuple of ints as an image input shape ``(C, H, W)``.
    loss : str
        ``'mse'`` (default), ``'mae'``, ``'bce'``, ``'kl'`` or ``'gll'``.
    weighted : bool
        When True, training data come as ``[x, w]`` with ``w`` shaped like ``x``.  Every method
        that takes data also takes theanets' ``[x]``.
    rng : int, numpy random generator or None
        Seed of the initial weights, the training shuffles and ``encode(sample=True)``'s
        draws; None takes a fresh seed from the operating system.
    hidden_activation, output_activation : str
        Defaults for layers that do not name one (theanets: ``'relu'``, ``'linear'``).
    device : str
        ``'cpu'`` (default), ``'cuda'`` or ``'auto'``.

    Attributes
    ----------
    history : list of dict
        One ``{'epoch', 'train', 'valid'}`` record per epoch of the whole model.
    training_stage : str or None
        During layerwise pretraining, the code layer of the sub-model that the epochs
        :meth:`itertrain` yields have trained (``'hid1'``, ...); None otherwise.

    Examples
    --------
    >>> net = Autoencoder([784, (64, 'relu'), (784, 'tied')])
    >>> net.layers[1].name, net.find('hid1', 'w').shape
    ('hid1', torch.Size([784, 64]))
    """

    def __init__(
        self,
        layers: Sequence[Any],
        loss: str = "mse",
        weighted: bool = False,
        rng: Any = 13,
        *,
        hidden_activation: str = "relu",
        output_activation: str = "linear",
        device: str | torch.device = "cpu",
        **loss_options: Any,
    ):
        unknown = set(loss_options) - set(LOSS_OPTIONS)
        if unknown:
            raise unknown_name_error("keyword argument of Autoencoder()", sorted(unknown)[0], AUTOENCODER_KEYWORDS)
        self.seed = seed_from(rng)
        self.weighted = bool(weighted)
        for key, name in (("hidden_activation", hidden_activation), ("output_activation", output_activation)):
            # Checked even when every layer names its own: add_layer() would fail on it later.
            try:
                get_activation(name)
            except ConfigurationError as error:
                raise ConfigurationError(f"{key}: {error}") from None
        self.hidden_activation = hidden_activation
        self.output_activation = output_activation
        self.device = resolve_device(device)
        specs = parse_layers(layers, hidden_activation, output_activation)
        self.graph = Graph(specs, self.seed).to(self.device)
        self._losses: list[Loss] = [Loss(loss, **loss_options)]
        self.preprocessing = None  # a fitted transform applied by encode/predict, saved with the model
        self.history: list[dict[str, Any]] = []
        self._sample_generator: np.random.Generator | None = None  # encode(sample=True)'s draws
        # Layerwise pretraining: the code layer of the sub-model the current epochs train
        # (None while the whole model trains, and outside training).
        self.training_stage: str | None = None

    # ------------------------------------------------------------------ structure
    @property
    def specs(self) -> list[LayerSpec]:
        """The canonical layer specs."""
        return self.graph.specs

    @property
    def layers(self) -> list[Layer]:
        """All layers, input first."""
        return list(self.graph.layers.values())

    @property
    def params(self) -> list[nn.Parameter]:
        """Every trainable parameter once (tied weights are shared, not repeated)."""
        return list(self.graph.parameters())

    @property
    def num_params(self) -> int:
        """Total number of trainable values."""
        return sum(p.numel() for p in self.params)

    @property
    def losses(self) -> list[Loss]:
        """The weighted losses whose sum training minimises."""
        return list(self._losses)

    @property
    def code_layer(self) -> str:
        """The middle layer (theanets' rule: ``layers[len(layers) // 2]``); a model's one gaussian layer."""
        if len(self.latent_layers) == 1:
            return self.latent_layers[0]
        names = list(self.graph.layers)
        return names[len(names) // 2]

    def _layer_name(self, layer: str | int | None, default: str) -> str:
        if layer is None:
            return default
        names = list(self.graph.layers)
        if isinstance(layer, (int, np.integer)) and not isinstance(layer, bool):
            if not -len(names) <= layer < len(names):
                raise ConfigurationError(f"layer index must be in [{-len(names)}, {len(names)}), got {layer}")
            return names[layer]
        name, _, output = str(layer).partition(":")
        if name not in names:
            raise unknown_name_error("layer", name, names)
        if output not in ("", "out"):
            raise ConfigurationError(
                f"layer must be a layer name such as {name!r} (or {name + ':out'!r}), got "
                f"{layer!r}; feed_forward(x) has every layer's pre-activation"
            )
        return name

    def find(self, layer: str | int, param: str) -> nn.Parameter:
        """The live parameter ``param`` (``'w'`` or ``'b'``) of ``layer``.

        A dense ``w`` has shape (n_in, n_out).  Changing it changes the model.
        """
        name = self._layer_name(layer, "")
        module = self.graph.layers[name]
        value = getattr(module, str(param), None)
        if not isinstance(value, nn.Parameter):
            owned = sorted(n for n, _ in module.named_parameters(recurse=False))
            partner = getattr(module, "partner", None)  # a tied layer's
            hint = f"; it shares {partner.name!r}.w" if partner is not None and param == "w" else ""
            raise ConfigurationError(f"layer {name!r} has no parameter {param!r}; it has {owned or 'none'}{hint}")
        return value

    def add_layer(self, layer: Any = None, is_output: bool = False, **kwargs: Any) -> None:
        """Append a layer (any spec form, or keywords as in a dict spec), keeping trained values.

        Parameters
        ----------
        layer : int, tuple, dict or str, optional
            The spec; keywords are merged into a dict spec.
        is_output : bool
            Name the new layer ``'out'`` (theanets' graph-building call).
        """
        if kwargs:
            base = {} if layer is None else (dict(layer) if isinstance(layer, dict) else {"size": layer})
            layer = {**base, **kwargs}
        if layer is None:
            raise ConfigurationError("add_layer needs a layer spec, got none")
        specs = parse_layers(
            [layer], self.hidden_activation, self.output_activation, existing=self.specs, output_last=is_output
        )
        old_state = self.graph.state_dict()
        graph = Graph(specs, self.seed).to(self.device)
        graph.load_state_dict(old_state, strict=False)
        self.graph = graph

    # ------------------------------------------------------------------ losses
    def set_loss(self, name: str = "mse", weight: float = 1.0, **options: Any) -> None:
        """Replace all losses by one (theanets' ``set_loss``)."""
        self._losses = [Loss(name, weight, **options)]

    def add_loss(self, name: str = "mse", weight: float = 1.0, **options: Any) -> None:
        """Add a weighted loss term to the ones already there."""
        self._losses.append(Loss(name, weight, **options))

    def _check_outputs_exist(self) -> None:
        Objective(self.graph, self._losses, Regularizers()).check()

    def objective(self, regs: Regularizers | None = None) -> Objective:
        """The :class:`~aekit.objective.Objective` this model trains with, for parsed keywords ``regs``."""
        return Objective(self.graph, self._losses, Regularizers() if regs is None else regs)

    def check_regularizer_targets(self, regs: Regularizers) -> None:
        """Refuse a per-layer penalty pattern that chooses nothing (see :meth:`Objective.check_targets`)."""
        self.objective(regs).check_targets()

    def loss_terms(
        self, x: torch.Tensor, w: torch.Tensor | None, regs: Regularizers, training: bool
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total objective and its named terms for a checked batch (see :class:`~aekit.objective.Objective`)."""
        return self.objective(regs)(x, w, training)

    def _jacobian_norm(self, x: torch.Tensor, layer: str) -> torch.Tensor:
        """Mean over examples of ``||d layer:out / d x||_F^2`` (:func:`aekit.objective.jacobian.jacobian_norm`)."""
        return jacobian.jacobian_norm(self.graph, x, layer)

    def loss(self, x: Any, w: Any = None, **regularizers: Any) -> torch.Tensor:
        """The training objective on ``x`` as a differentiable scalar tensor.

        Weighted losses plus the given regularizers (same keywords as :meth:`train`),
        with noise applied as in training: use it in a hand-written loop.
        """
        unknown = set(regularizers) - set(REGULARIZER_KEYS)
        if unknown:
            raise unknown_name_error("keyword argument of loss()", sorted(unknown)[0], REGULARIZER_KEYS)
        self._check_outputs_exist()
        regs = Regularizers.from_kwargs(code_layer=self.code_layer, **regularizers)
        self.check_regularizer_targets(regs)
        x, w = self._split(x, w=w, weights=True)
        xt = self._check(x)
        wt = self._check_weights(w) if w is not None else None
        total, _ = self.loss_terms(xt, wt, regs, training=True)
        return total

    def set_preprocessing(self, step: Any) -> None:
        """Attach a fitted :mod:`aekit.preprocessing` step (None detaches it).

        Inputs of encode/predict/train/score go through ``step`` and outputs of
        predict/decode through its inverse; the step is saved with the model.
        """
        from .data.preprocessing import check_step

        self.preprocessing = None if step is None else check_step(step, self.graph.input_shape)

    def encode(self, x: Any, layer: str | int | None = None, sample: bool = False, codes: bool = False) -> np.ndarray:
        """Codes of ``x`` at ``layer`` (default: the middle layer).

        Parameters
        ----------
        x : array-like, shape (n, features) or (n, *input_shape)
            A memory-mapped or other streamable ``x`` is read one block of rows
            at a time; only the codes are held in memory.
        layer : str or int, optional
        sample : bool
            Draw Bernoulli samples with the code activations as probabilities
            (the codes must lie in [0, 1]); of a gaussian layer, draw ``z ~ q(z|x)``
            (without it a gaussian layer gives the posterior means).
        codes : bool
            For a quantizer layer (``vq``, ``fsq``): its int64 code indices, shape (n, *grid).

        Returns
        -------
        ndarray, shape (n, units) or (n, C, H, W)
        """
        self._check_outputs_exist()
        name = self._layer_name(layer, self.code_layer)
        if codes:
            return quantized.code_indices(self, x, name)
        if sample and name in self.latent_layers:
            return self._sample_posterior(x, name)
        x, _ = self._split(x)
        values = self._run(self._inputs(x), lambda b: self.graph(b, stop=name)[f"{name}:out"])
        if sample:
            if values.size and (values.min() < 0 or values.max() > 1):
                raise ConfigurationError(
                    f"sample=True needs codes in [0, 1]; layer {name!r} gives values in "
                    f"[{values.min():.3g}, {values.max():.3g}]"
                )
            # One generator per model, seeded by rng: reproducible, yet each call draws afresh.
            if self._sample_generator is None:
                self._sample_generator = np.random.default_rng(self.seed)
            values = (self._sample_generator.random(values.shape) < values).astype(values.dtype)
        return values

    def decode(self, z: Any, layer: str | int | None = None) -> np.ndarray:
        """Reconstructions from codes ``z`` of ``layer`` (default: the middle layer).

        A memory-mapped or other streamable ``z`` is read one block of rows at a time.  For a
        quantizer layer, integer ``z`` are code indices (``encode(x, layer, codes=True)``).

        Returns
        -------
        ndarray, shape (n, features) or (n, *output_shape)
        """
        self._check_outputs_exist()
        name = self._layer_name(layer, self.code_layer)
        if quantized.is_code_array(self, z, name):
            z = quantized.vectors_from_codes(self, z, name)
        shape = self.graph.layers[name].output_shape
        out = self.graph.output_name
        z, _ = self._split(z, "z", shape=shape)

        def run(b: torch.Tensor) -> torch.Tensor:
            return self.graph.run_from(name, b)[f"{out}:out"]

        if is_streamable(z):
            source = self._stream(z, name="z", shape=shape, layer=name)
            return np.concatenate(
                [self._inverse(self._run(self._batches(block), run)) for _, _, block in self._blocks(source)], axis=0
            )
        zt = check_array(z, shape, name="z", layer=name, device=self.device)
        return self._inverse(self._run(self._batches(zt), run))

    def predict(self, x: Any) -> np.ndarray:
        """Reconstruction of ``x``, shaped like the output layer: (n, features), or (n, C, H, W) for an image output.

        A memory-mapped or other streamable ``x`` is read one block of rows at a time.
        """
        self._check_outputs_exist()
        x, _ = self._split(x)
        if is_streamable(x):
            # The inverse preprocessing is row-wise: applying it per block keeps
            # its float64 working copy as small as the block.
            return np.concatenate([self._reconstruct(block) for _, _, block in self._blocks(self._stream(x))], axis=0)
        return self._inverse(self._run(self._batches(self._check(x)), self._output))

    # ------------------------------------------------------------------ training
    def itertrain(self, x: Any, valid: Any = None, **kwargs: Any):
        """Train, yielding ``(train_monitors, valid_monitors)`` after each epoch.

        Keywords as :meth:`train`.  Breaking out of the loop still restores the
        best parameters seen.
        """
        from .train.loop import itertrain

        return itertrain(self, x, valid, **kwargs)

    def train(self, x: Any, valid: Any = None, **kwargs: Any) -> tuple[dict[str, float], dict[str, float]]:
        """Train until early stopping or ``max_epochs``; return the last monitors.

        Parameters
        ----------
        x : array-like, shape (n, features); also ``[x]`` (theanets' form), and ``[x, w]`` when ``weighted``
        valid : array-like, optional
            Validation data for early stopping (or ``valid_split=0.1``), in the forms of ``x``.
        **kwargs
            ``algo``, ``learning_rate``, ``batch_size``, ``max_epochs``, ``patience``,
            regularizers (``hidden_l1``, ``weight_l2``, ...): see
            :class:`aekit.training.TrainOptions`.
        """
        train_mon: dict[str, float] = {}
        valid_mon: dict[str, float] = {}
        for monitors in self.itertrain(x, valid, **kwargs):
            train_mon, valid_mon = monitors
        return train_mon, valid_mon

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> None:
        """Write the model to one file (safetensors weights + JSON config), atomically.

        An existing aekit model file at ``path`` is replaced; any other existing,
        non-empty file is not (:class:`~aekit.errors.ModelFileError`), so a mistyped
        name cannot destroy data or notes.
        """
        model_file.write_model_file(path, self.state_tensors(), self.file_metadata(), replace_only_models=True)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Autoencoder:
        """Read a model written by :meth:`save` (or the model of a checkpoint); never executes code from the file."""
        return load(path)

    def config(self) -> dict[str, Any]:
        """The JSON-ready description the model file stores (no weights); :meth:`from_config` reads it."""
        return {
            "layers": specs_to_config(self.specs),
            "losses": [term.to_dict() for term in self._losses],
            "weighted": self.weighted,
            "rng": self.seed,
            "hidden_activation": self.hidden_activation,
            "output_activation": self.output_activation,
        }

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Every parameter and buffer by short name (``'hid1.w'``), plus the preprocessing state.

        The preprocessing state's names start with ``'preprocessing.'``.
        """
        tensors = {k.split(".", 1)[1]: v for k, v in self.graph.state_dict().items()}
        if self.preprocessing is not None:
            tensors.update({f"preprocessing.{k}": v for k, v in self.preprocessing.state_tensors().items()})
        return tensors

    def file_metadata(self) -> dict[str, Any]:
        """The JSON-ready metadata stored beside :meth:`state_tensors`: config, history, preprocessing."""
        meta: dict[str, Any] = {"config": self.config(), "history": self.history}
        if self.preprocessing is not None:
            meta["preprocessing"] = self.preprocessing.get_config()
        return meta

    @classmethod
    def from_config(
        cls,
        config: dict[str, Any],
        tensors: dict[str, torch.Tensor] | None = None,
        *,
        preprocessing: dict[str, Any] | None = None,
        history: list[dict[str, Any]] | None = None,
        source: str = "config",
    ) -> Autoencoder:
        """Build a model from :meth:`config`, and load ``tensors`` (:meth:`state_tensors`) into it.

        Everything is checked before anything is built: the config field by field, and the
        tensors' names, shapes and dtypes against the config (on the meta device, so a
        tampered size cannot exhaust memory).

        Parameters
        ----------
        config : dict
            As :meth:`config` returns it.
        tensors : dict of str to tensor, optional
            Parameters, buffers and ``'preprocessing.*'`` state; None keeps the initial values.
        preprocessing : dict, optional
            The preprocessing step's config (``file_metadata()['preprocessing']``).
        history : list of dict, optional
        source : str
            Where the config comes from, for error messages (a file name).

        Raises
        ------
        ModelFileError
            Naming ``source`` and what is wrong with the config or the tensors.
        """
        if not isinstance(config, dict) or "layers" not in config:
            raise ModelFileError(f"model file {source!r} has no model config in its metadata")
        try:
            _check_config(config)
            specs = specs_from_config(config["layers"])
            if tensors is not None:
                weights = {k: v for k, v in tensors.items() if not k.startswith("preprocessing.")}
                with torch.device("meta"):
                    Graph(specs, 0).check_state(weights, source)
            losses = config.get("losses") or [{"name": "mse"}]
            first = dict(losses[0])
            name0, weight0 = first.pop("name"), first.pop("weight", 1.0)
            net = cls(
                specs,
                loss=name0,
                weighted=config.get("weighted", False),
                rng=config.get("rng", 13),
                hidden_activation=config.get("hidden_activation", "relu"),
                output_activation=config.get("output_activation", "linear"),
                **first,
            )
            # Autoencoder() takes the first loss's options but not its weight: set_loss does.
            net.set_loss(name0, weight0, **first)
            for extra in losses[1:]:
                extra = dict(extra)
                net.add_loss(extra.pop("name"), **extra)
            net.objective().check_loss_layers()  # else the first predict() would fail, far from the file at fault
        except ModelFileError:
            raise
        except (AekitError, TypeError, KeyError, ValueError, AttributeError, IndexError) as error:
            raise ModelFileError(f"model file {source!r} has an invalid model config: {error}") from None
        tensors = tensors or {}
        net.graph.load_state_dict(
            {f"layers.{k}": v for k, v in tensors.items() if not k.startswith("preprocessing.")}, strict=bool(tensors)
        )
        state = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("preprocessing.")}
        used: set[str] = set()
        if preprocessing is not None:
            from .data.preprocessing import check_step, from_config

            try:
                step = from_config(preprocessing, state)
                # Its statistics must fit this model's input, as set_preprocessing demands.
                net.preprocessing = check_step(step, net.graph.input_shape)
                used = set(step.state_tensors())
            except (AekitError, TypeError, KeyError, ValueError, AttributeError, IndexError) as error:
                raise ModelFileError(f"model file {source!r} has an invalid preprocessing step: {error}") from None
        if set(state) - used:
            raise ModelFileError(
                f"model file {source!r} has preprocessing tensors its config does not use: "
                f"{sorted(f'preprocessing.{k}' for k in set(state) - used)}"
            )
        net.history = history or []
        if not isinstance(net.history, list) or not all(isinstance(record, dict) for record in net.history):
            raise ModelFileError(f"model file {source!r} has an invalid history: expected a list of per-epoch records")
        return net

    @classmethod
    def from_file_contents(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any], source: str) -> Autoencoder:
        """:meth:`from_config` on what :func:`aekit.io.model_file.read_model_file` returns."""
        return cls.from_config(
            meta.get("config"),  # type: ignore[arg-type]  # checked by from_config
            tensors,
            preprocessing=meta.get("preprocessing"),
            history=meta.get("history"),
            source=source,
        )

    def __repr__(self) -> str:
        parts = []
        for layer in self.layers:
            shape = "x".join(map(str, layer.output_shape))
            act = f" {layer.spec.activation}" if layer.spec.form != "input" else ""
            form = "" if layer.spec.form in ("dense", "input") else f" {layer.spec.form}"
            parts.append(f"{layer.name}:{shape}{act}{form}")
        losses = " + ".join(f"{t.weight:g}*{t.name}" if t.weight != 1 else t.name for t in self._losses)
        return f"Autoencoder([{', '.join(parts)}], loss={losses}, params={self.num_params})"


# The keys Autoencoder.config() writes; any other is refused rather than ignored, since a
# model built without it would differ from the one that was saved.
_CONFIG_KEYS = ("layers", "losses", "weighted", "rng", "hidden_activation", "output_activation")


def _check_config(config: dict[str, Any]) -> None:
    """Raise ConfigurationError for a config whose top-level values have the wrong type."""
    for key in config:
        if key not in _CONFIG_KEYS:
            raise unknown_name_error("model config key", str(key), _CONFIG_KEYS)
    losses = config.get("losses") or []
    if not isinstance(losses, list) or not all(
        isinstance(term, dict) and isinstance(term.get("name"), str) for term in losses
    ):
        raise ConfigurationError(f"losses must be a list of dicts with a 'name', got {losses!r:.80}")
    if not isinstance(config.get("weighted", False), bool):
        raise ConfigurationError(f"weighted must be true or false, got {config['weighted']!r}")
    rng = config.get("rng", 13)
    if not isinstance(rng, int) or isinstance(rng, bool):
        raise ConfigurationError(f"rng must be an int seed, got {rng!r}")
    # hidden_activation and output_activation are checked by Autoencoder() itself.


def load(path: str | os.PathLike) -> Autoencoder:
    """Load an :class:`Autoencoder` saved with :meth:`Autoencoder.save` (or the model of a training checkpoint).

    Never executes code from the file: safetensors tensors and a JSON config only.
    """
    tensors, meta = model_file.read_model_file(path)
    if meta.get("kind") == "checkpoint":
        # A checkpoint holds the model beside the trainer state, under 'model.'.
        tensors = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    return Autoencoder.from_file_contents(tensors, meta, str(path))


def load_checkpoint_model(path: str | os.PathLike) -> Autoencoder:
    """The :class:`Autoencoder` stored in a training checkpoint, with its current (not best) parameters.

    Raises
    ------
    CheckpointError
        If ``path`` is not a readable checkpoint.
    """
    from .errors import CheckpointError
    from .train.checkpoint import read_checkpoint

    tensors, meta = read_checkpoint(path)
    model = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        return Autoencoder.from_file_contents(model, meta, str(path))
    except ModelFileError as error:
        raise CheckpointError(str(error).replace("model file", "checkpoint", 1)) from None
