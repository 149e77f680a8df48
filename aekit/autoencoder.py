"""The :class:`Autoencoder`: a graph of layers with theanets' compact API.

``Autoencoder`` is deliberately not an ``nn.Module`` (theanets' ``train(x)``
would clash with ``Module.train(mode)``); it owns a :class:`Graph`, which is.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .data.checks import check_array, check_weights, to_numpy
from .data.sources import StreamingSource, is_streamable
from .errors import AekitError, ConfigurationError, DataError, closest_name, unknown_name_error
from .model.activations import ELEMENTWISE
from .model.activations import get as get_activation
from .model.layers.dense import Dense, Layer, build_layer, layer_seed
from .model.specs import LayerSpec, parse_layers
from .objective import penalties as reg
from .objective.losses import Loss

__all__ = ["Autoencoder", "Graph", "resolve_device"]

log = logging.getLogger(__name__)

INFERENCE_BATCH = 4096


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``'auto'`` picks CUDA when available, else the CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError):
        chosen = None
    if chosen is None or chosen.type not in ("cpu", "cuda"):
        raise ConfigurationError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    if chosen.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (chosen.index or 0) >= count:
            raise ConfigurationError(
                f"device {device!r} asked for, but this machine has {count} CUDA device(s) "
                f"(torch {torch.__version__}); use device='auto' or 'cpu'"
            )
    return chosen


class Graph(nn.Module):
    """The layers of an autoencoder, wired by name, as one ``nn.Module``.

    Parameters
    ----------
    specs : list of LayerSpec
        The first is the input; each other layer reads the output of ``spec.inputs``
        (default: the layer before it).
    seed : int
        Initialisation seed; each layer draws from its own stream.
    """

    def __init__(self, specs: Sequence[LayerSpec], seed: int = 13):
        super().__init__()
        self.specs = list(specs)
        self.layers = nn.ModuleDict()
        self.sources: dict[str, str] = {}
        previous = None
        for spec in self.specs:
            if "." in spec.name or ":" in spec.name or not spec.name:
                raise ConfigurationError(f"layer names may not be empty or contain '.' or ':', got {spec.name!r}")
            if spec.form == "input":
                if previous is not None:
                    raise ConfigurationError(f"only the first layer may be an input, got {spec.name!r}")
                layer = build_layer(spec, tuple(spec.shape), {})
            elif previous is None:
                raise ConfigurationError(f"the first layer must be the input, got {spec.name!r} ({spec.form})")
            else:
                source = (spec.inputs or previous).split(":")[0]
                if source not in self.layers:
                    raise ConfigurationError(
                        f"layer {spec.name!r} reads from {source!r}, which is not an earlier layer"
                    )
                self.sources[spec.name] = source
                try:
                    layer = build_layer(spec, self.layers[source].output_shape, dict(self.layers.items()))
                except AekitError:
                    raise
                except (TypeError, ValueError, AttributeError, KeyError, IndexError) as error:
                    # A spec option of a type the layer cannot use (e.g. padding='x').
                    raise ConfigurationError(f"layer {spec.name!r} ({spec.form}) cannot be built: {error}") from None
            self.layers[spec.name] = layer
            previous = spec.name
        names = list(self.layers)
        self.input_name = names[0]
        self.output_name = "out" if "out" in self.layers else names[-1]
        self.hidden_names = [n for n in names[1:] if n != self.output_name]
        self.reset_parameters(seed)

    def reset_parameters(self, seed: int) -> None:
        """Initialise every layer from its own generator derived from ``seed``."""
        if any(p.is_meta for p in self.parameters()):
            # A graph built on the meta device only describes shapes (the model loader
            # checks a file against one); it has no values, and drawing them would import
            # torch's slow meta kernels for randn.
            return
        for index, layer in enumerate(self.layers.values()):
            generator = torch.Generator().manual_seed(layer_seed(seed, index))
            layer.reset_parameters(generator)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.layers[self.input_name].output_shape

    def forward(
        self,
        x: torch.Tensor,
        stop: str | None = None,
        hidden_noise: dict[str, float] | None = None,
        hidden_dropout: dict[str, float] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Run the graph on a batch; return every ``'name:pre'`` and ``'name:out'``.

        Parameters
        ----------
        x : tensor, shape (n, *input_shape)
        stop : str, optional
            Stop after this layer (encoding need not run the decoder).
        hidden_noise, hidden_dropout : dict, optional
            Per-layer noise std / dropout probability, applied to hidden outputs
            (training only).
        """
        outputs = {f"{self.input_name}:out": x}
        for name, source in self.sources.items():
            pre, out = self.layers[name](outputs[f"{source}:out"])
            if hidden_noise and name in hidden_noise:
                out = reg.gaussian_noise(out, hidden_noise[name])
            if hidden_dropout and name in hidden_dropout:
                out = reg.dropout(out, hidden_dropout[name])
            outputs[f"{name}:pre"] = pre
            outputs[f"{name}:out"] = out
            if name == stop:
                break
        return outputs

    def subgraph(self, names: Sequence[str]) -> Graph | None:
        """A chain through ``names`` sharing these layers (for layerwise pretraining).

        Returns None when consecutive layers do not line up in size.
        """
        sub = Graph.__new__(Graph)
        nn.Module.__init__(sub)
        sub.specs = [s for s in self.specs if s.name in names]
        sub.layers = nn.ModuleDict({n: self.layers[n] for n in names})
        sub.sources = {}
        for previous, name in zip(names, names[1:]):
            if math.prod(self.layers[name].input_shape) != math.prod(self.layers[previous].output_shape):
                return None
            sub.sources[name] = previous
        sub.input_name, sub.output_name = names[0], names[-1]
        sub.hidden_names = list(names[1:-1])
        return sub

    def run_from(self, start: str, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Feed ``z`` as the output of layer ``start`` and run the layers after it."""
        names = list(self.sources)
        outputs = {f"{start}:out": z}
        for name in names[names.index(start) + 1 :] if start in names else names:
            source = self.sources[name]
            if f"{source}:out" not in outputs:
                raise ConfigurationError(
                    f"cannot decode from layer {start!r}: layer {name!r} reads {source!r}, which lies before it"
                )
            pre, out = self.layers[name](outputs[f"{source}:out"])
            outputs[f"{name}:pre"] = pre
            outputs[f"{name}:out"] = out
        return outputs


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


def _seed_from(rng: Any) -> int:
    if rng is None:  # as scikit-learn's random_state=None: a fresh seed from the operating system
        return int(np.random.SeedSequence().generate_state(1)[0] % 2**31)
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return int(rng)
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(2**31))
    if isinstance(rng, np.random.RandomState):
        return int(rng.randint(2**31))
    raise ConfigurationError(f"rng must be an int seed, a NumPy random generator or None, got {rng!r}")


class Autoencoder:
    """An autoencoder built from theanets-style layer specs.

    Parameters
    ----------
    layers : sequence
        Input first, output last: ints, ``(size, 'activation')`` / ``(size, 'tied')``
        tuples, dicts, or a tuple of ints as an image input shape ``(C, H, W)``.
    loss : str
        ``'mse'`` (default), ``'mae'``, ``'bce'``, ``'kl'`` or ``'gll'``.
    weighted : bool
        When True, training data come as ``[x, w]`` with ``w`` shaped like ``x``.
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
        self.seed = _seed_from(rng)
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
        """The middle layer (theanets' rule: ``layers[len(layers) // 2]``)."""
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
            hint = f"; it shares {module.partner.name!r}.w" if hasattr(module, "partner") and param == "w" else ""
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
        for term in self._losses:
            for layer in (term.output, term.covar):
                if layer is not None and layer not in self.graph.layers:
                    raise ConfigurationError(f"loss {term.name!r} reads layer {layer!r}, which does not exist")
        if len(self.graph.layers) < 2:
            raise ConfigurationError("this Autoencoder has only an input layer; add layers with add_layer()")
        self._check_output_shapes()

    def check_regularizer_targets(self, regs: reg.Regularizers) -> None:
        """Refuse a per-layer regularizer pattern that chooses nothing in this model.

        theanets ignored such keywords silently (``hidden_l1={'hidden1': 0.1}`` trained
        without any penalty); here each pattern must match a hidden layer (a weight
        matrix for ``weight_l1``/``weight_l2``), and a sparsity pattern a hidden layer
        whose outputs lie in [0, 1], the only ones KL sparsity is defined for.

        Raises
        ------
        ConfigurationError
            Naming the keyword, the pattern and the names it could have chosen.
        """
        graph = self.graph
        hidden = graph.hidden_names
        weights = [n.split(".", 1)[1] for n, p in graph.named_parameters() if p.dim() > 1]
        ranges = {n: _activation_range(graph.layers[n]) for n in hidden}
        bounded = [n for n, (low, high) in ranges.items() if low >= 0 and high <= 1]
        keys = {
            "weight_l1": weights,
            "weight_l2": weights,
            "hidden_l1": hidden,
            "hidden_l2": hidden,
            "contractive": hidden,
            "hidden_noise": hidden,
            "hidden_dropout": hidden,
            "sparsity_weight": bounded,
        }
        for key, names in keys.items():
            kind = "weight matrix" if key.startswith("weight") else "hidden layer"
            for pattern in getattr(regs, "sparsity" if key == "sparsity_weight" else key):
                if reg.match({pattern: 1.0}, names):
                    continue
                if key == "sparsity_weight":
                    chosen = [f"{n} ({graph.layers[n].spec.activation})" for n in reg.match({pattern: 1.0}, hidden)]
                    if chosen:
                        raise ConfigurationError(
                            f"sparsity_weight applies to hidden layers with outputs in [0, 1] (e.g. sigmoid), "
                            f"but pattern {pattern!r} chooses only {', '.join(chosen)}"
                        )
                    kind = "hidden layer with outputs in [0, 1]"
                if not names:
                    raise ConfigurationError(
                        f"{key} pattern {pattern!r} matches nothing: this Autoencoder has no {kind}"
                    )
                hint = closest_name(pattern, names)
                raise ConfigurationError(
                    f"{key} pattern {pattern!r} matches no {kind} of this Autoencoder; "
                    + (f"did you mean {hint!r}?" if hint else f"expected one of {', '.join(map(repr, names))}")
                )

    def _check_output_shapes(self) -> None:
        # A reconstruction must line up with the input: the same shape, or the
        # same number of values when one side is flat (a dense output after an
        # image input).  Mis-lined conv specs surface here, not as a broadcast error.
        want = tuple(self.graph.input_shape)
        for term in self._losses:
            got = tuple(self.graph.layers[term.output].output_shape)
            if got == want or (math.prod(got) == math.prod(want) and (len(got) == 1 or len(want) == 1)):
                continue
            hint = ""
            if self.graph.layers[term.output].spec.form == "deconv2":
                hint = "; give the deconv2 layer shape=" + repr(want) + " or mirror the conv with dict(form='tied')"
            raise ConfigurationError(
                f"output layer {term.output!r} produces shape {got}, but an autoencoder must reconstruct "
                f"its input of shape {want} (layer {self.graph.input_name!r}){hint}"
            )

    def loss_terms(
        self,
        x: torch.Tensor,
        w: torch.Tensor | None,
        regs: reg.Regularizers,
        training: bool,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total objective and its named terms for a checked batch (internal; used by training).

        Noise and dropout apply only when ``training`` is True.
        """
        graph = self.graph
        target = x
        if training and regs.input_noise:
            x = reg.gaussian_noise(x, regs.input_noise)
        if training and regs.input_dropout:
            x = reg.dropout(x, regs.input_dropout)
        hidden = graph.hidden_names
        outputs = graph(
            x,
            hidden_noise=reg.match(regs.hidden_noise, hidden) if training else None,
            hidden_dropout=reg.match(regs.hidden_dropout, hidden) if training else None,
        )
        terms: dict[str, torch.Tensor] = {}
        err = None
        for term in self._losses:
            logits_ok = graph.layers[term.output].activation.is_sigmoid
            value = term(outputs, target, w, logits_ok=logits_ok)
            terms[term.name] = value
            weighted = term.weight * value
            err = weighted if err is None else err + weighted
        terms["err"] = err
        total = err
        for key, power in (("weight_l1", 1), ("weight_l2", 2)):
            patterns = getattr(regs, key)
            if patterns:
                # 'layers.hid1.w' -> 'hid1.w'; biases (1-D) are never penalised.
                weights = {n.split(".", 1)[1]: p for n, p in graph.named_parameters() if p.dim() > 1}
                chosen = reg.match(patterns, weights)
                value = sum(lam * reg.weight_penalty([weights[name]], power) for name, lam in chosen.items() if lam)
                terms[key] = torch.as_tensor(value)
                total = total + terms[key]
        for key, power in (("hidden_l1", 1), ("hidden_l2", 2)):
            layers = reg.match(getattr(regs, key), hidden)
            if layers:
                terms[key] = sum(lam * reg.hidden_penalty(outputs[f"{n}:out"], power) for n, lam in layers.items())
                total = total + terms[key]
        if regs.sparsity:
            layers = reg.match(regs.sparsity, hidden)
            value = 0.0
            for name, beta in layers.items():
                low, high = _activation_range(graph.layers[name])
                if low >= 0 and high <= 1:
                    value = value + beta * reg.kl_sparsity(outputs[f"{name}:out"], regs.sparsity_target)
            terms["sparsity"] = torch.as_tensor(value)
            total = total + terms["sparsity"]
        if regs.contractive:
            layers = reg.match(regs.contractive, hidden)
            value = sum(lam * self._jacobian_norm(target, name) for name, lam in layers.items())
            terms["contractive"] = torch.as_tensor(value)
            total = total + terms["contractive"]
        terms["loss"] = total
        return total, terms

    def _jacobian_norm(self, x: torch.Tensor, layer: str) -> torch.Tensor:
        """Mean over examples of ``||d layer:out / d x||_F^2``, exact, differentiable.

        In closed form when ``layer`` ends a chain of dense layers from the input,
        each with an elementwise activation (the usual contractive autoencoder, one
        layer deep or more); through one automatic Jacobian per example otherwise.
        """
        chain = self._dense_chain_to(layer)
        if chain is None:
            return self._per_example_jacobian_norm(x, layer)
        slopes, a = [], x
        for dense in chain:
            pre = dense.transform(a)
            a, slope = torch.func.jvp(dense.activation, (pre,), (torch.ones_like(pre),))  # f(pre), f'(pre)
            slopes.append(slope)
        return reg.chain_jacobian_norm(slopes, [dense.w for dense in chain])

    def _dense_chain_to(self, layer: str) -> list[Dense] | None:
        """The dense layers from the input to ``layer``, input side first, if each is a plain
        dense layer (no batch norm) with an elementwise activation; else None.
        """
        graph, chain, name = self.graph, [], layer
        while name != graph.input_name:
            dense = graph.layers[name]
            if (
                type(dense) is not Dense
                or dense.norm is not None
                or not all(part in ELEMENTWISE for part in dense.activation.parts)
            ):
                return None
            chain.append(dense)
            name = graph.sources[name]
        return chain[::-1]

    def _per_example_jacobian_norm(self, x: torch.Tensor, layer: str) -> torch.Tensor:
        """:meth:`_jacobian_norm` for any code layer: a (code, input) Jacobian per example."""
        graph = self.graph

        def code(example: torch.Tensor) -> torch.Tensor:
            return graph(example.unsqueeze(0), stop=layer)[f"{layer}:out"].flatten()

        jac = torch.func.vmap(torch.func.jacrev(code))(x)
        return jac.square().flatten(1).sum(dim=1).mean()

    def loss(self, x: Any, w: Any = None, **regularizers: Any) -> torch.Tensor:
        """The training objective on ``x`` as a differentiable scalar tensor.

        Weighted losses plus the given regularizers (same keywords as :meth:`train`),
        with noise applied as in training: use it in a hand-written loop.
        """
        unknown = set(regularizers) - set(reg.REGULARIZER_KEYS)
        if unknown:
            raise unknown_name_error("keyword argument of loss()", sorted(unknown)[0], reg.REGULARIZER_KEYS)
        self._check_outputs_exist()
        regs = reg.Regularizers.from_kwargs(code_layer=self.code_layer, **regularizers)
        self.check_regularizer_targets(regs)
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

    # ------------------------------------------------------------------ inference
    # Inputs come in two kinds.  NumPy arrays, tensors and lists are checked as a
    # whole (``_check``) and run in batches of INFERENCE_BATCH.  Streamable ones
    # (``np.memmap``, h5py-like datasets: see ``aekit.streaming.is_streamable``)
    # are read, checked and preprocessed one block of rows at a time, as training
    # reads them, so that only the outputs -- never the whole input -- sit in memory.
    def _check(
        self, x: Any, name: str = "x", transform: bool = True, rows: Sequence[int] | None = None
    ) -> torch.Tensor:
        """``x`` checked (:func:`check_array`; ``rows`` numbers its rows in messages), preprocessed if ``transform``."""
        tensor = check_array(
            x, self.graph.input_shape, name=name, layer=self.graph.input_name, device=self.device, rows=rows
        )
        return self._preprocess(tensor, name) if transform else tensor

    def _check_weights(self, w: Any, name: str = "w", rows: Sequence[int] | None = None) -> torch.Tensor:
        """Per-value weights ``w``, shaped like the input, finite and >= 0, as a tensor."""
        return check_weights(self._check(w, name=name, transform=False, rows=rows), name, rows)

    def _preprocess(self, tensor: torch.Tensor, name: str = "x") -> torch.Tensor:
        """Apply the attached preprocessing step to a checked tensor of data (not weights, not codes)."""
        if self.preprocessing is not None and name in ("x", "valid"):
            tensor = self.preprocessing.transform_tensor(tensor)
        return tensor

    def _batches(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        for start in range(0, x.shape[0], INFERENCE_BATCH):
            yield x[start : start + INFERENCE_BATCH]

    def _stream(
        self,
        x: Any,
        name: str = "x",
        shape: tuple[int, ...] | None = None,
        layer: str | None = None,
    ) -> StreamingSource:
        """A :class:`StreamingSource` over streamable ``x`` whose blocks are checked but not preprocessed.

        Parameters
        ----------
        x : array-like, shape (n, features) or (n, *shape)
            Streamable data (``is_streamable(x)``).
        name : str
            The argument's name, for error messages.
        shape, layer : optional
            The per-example shape expected and the layer named in errors
            (default: the input layer).

        Raises
        ------
        DataError
            If ``x`` has the wrong rank, dtype or size, or no rows (the messages
            of the in-memory path); bad values surface when their block is read.
        """
        shape = tuple(self.graph.input_shape if shape is None else shape)
        layer = self.graph.input_name if layer is None else layer

        def check(block: Any, block_name: str, rows: Sequence[int]) -> torch.Tensor:
            return check_array(block, shape, name=block_name, layer=layer, device=self.device, rows=rows)

        source = StreamingSource(x, check=check, name=name)
        # dtype, rank and feature count are checked on an empty slice before any
        # row is read, so a wrong file fails at once with today's one-line message.
        # (A private copy: torch warns about the read-only views a memmap gives.)
        check_array(np.array(x[:0]), shape, name=name, layer=layer, allow_empty=len(source) > 0)
        if source.block_rows > INFERENCE_BATCH:
            # Whole batches per block put the batch boundaries where the in-memory
            # path puts them, so streamed outputs match it bit for bit.
            source.block_rows -= source.block_rows % INFERENCE_BATCH
        return source

    @staticmethod
    def _blocks(source: StreamingSource) -> Iterator[tuple[int, int, torch.Tensor]]:
        """``(start, stop, checked block)`` for the rows of ``source``, in order."""
        for a in range(source.start, source.stop, source.block_rows):
            b = min(a + source.block_rows, source.stop)
            block, _ = source.read(a, b)
            yield a, b, block

    def _inputs(self, x: Any) -> Iterator[torch.Tensor]:
        """Checked, preprocessed batches of ``x`` (streamed block by block when ``x`` is streamable)."""
        if not is_streamable(x):
            yield from self._batches(self._check(x))
            return
        for _, _, block in self._blocks(self._stream(x)):
            yield from self._batches(self._preprocess(block))

    def _run(self, batches: Iterable[torch.Tensor], fn: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
        was_training = self.graph.training
        self.graph.eval()
        try:
            parts = []
            for batch in batches:
                # Only the model runs in inference mode: blocks are read and
                # preprocessed outside it, so tensors the preprocessing step
                # caches stay usable by training later.
                with torch.inference_mode():
                    parts.append(to_numpy(fn(batch)))
            return np.concatenate(parts, axis=0)
        finally:
            self.graph.train(was_training)

    def encode(self, x: Any, layer: str | int | None = None, sample: bool = False) -> np.ndarray:
        """Codes of ``x`` at ``layer`` (default: the middle layer).

        Parameters
        ----------
        x : array-like, shape (n, features) or (n, *input_shape)
            A memory-mapped or other streamable ``x`` is read one block of rows
            at a time; only the codes are held in memory.
        layer : str or int, optional
        sample : bool
            Draw Bernoulli samples with the code activations as probabilities
            (the codes must lie in [0, 1]).

        Returns
        -------
        ndarray, shape (n, units) or (n, C, H, W)
        """
        self._check_outputs_exist()
        name = self._layer_name(layer, self.code_layer)
        codes = self._run(self._inputs(x), lambda b: self.graph(b, stop=name)[f"{name}:out"])
        if sample:
            if codes.size and (codes.min() < 0 or codes.max() > 1):
                raise ConfigurationError(
                    f"sample=True needs codes in [0, 1]; layer {name!r} gives values in "
                    f"[{codes.min():.3g}, {codes.max():.3g}]"
                )
            # One generator per model, seeded by rng: reproducible, yet each call draws afresh.
            if self._sample_generator is None:
                self._sample_generator = np.random.default_rng(self.seed)
            codes = (self._sample_generator.random(codes.shape) < codes).astype(codes.dtype)
        return codes

    def decode(self, z: Any, layer: str | int | None = None) -> np.ndarray:
        """Reconstructions from codes ``z`` of ``layer`` (default: the middle layer).

        A memory-mapped or other streamable ``z`` is read one block of rows at a time.

        Returns
        -------
        ndarray, shape (n, features) or (n, *output_shape)
        """
        self._check_outputs_exist()
        name = self._layer_name(layer, self.code_layer)
        shape = self.graph.layers[name].output_shape
        out = self.graph.output_name

        def run(b: torch.Tensor) -> torch.Tensor:
            return self.graph.run_from(name, b)[f"{out}:out"]

        if is_streamable(z):
            source = self._stream(z, name="z", shape=shape, layer=name)
            return np.concatenate(
                [self._inverse(self._run(self._batches(block), run)) for _, _, block in self._blocks(source)], axis=0
            )
        zt = check_array(z, shape, name="z", layer=name, device=self.device)
        return self._inverse(self._run(self._batches(zt), run))

    def _inverse(self, y: np.ndarray) -> np.ndarray:
        if self.preprocessing is not None:
            if y.ndim > 2:  # images: preprocessing works on flat rows
                return self.preprocessing.inverse_transform(y.reshape(y.shape[0], -1)).reshape(y.shape)
            return self.preprocessing.inverse_transform(y)
        return y

    def predict(self, x: Any) -> np.ndarray:
        """Reconstruction of ``x``, shaped like the output layer: (n, features), or (n, C, H, W) for an image output.

        A memory-mapped or other streamable ``x`` is read one block of rows at a time.
        """
        self._check_outputs_exist()
        if is_streamable(x):
            # The inverse preprocessing is row-wise: applying it per block keeps
            # its float64 working copy as small as the block.
            return np.concatenate([self._reconstruct(block) for _, _, block in self._blocks(self._stream(x))], axis=0)
        return self._inverse(self._run(self._batches(self._check(x)), self._output))

    def _output(self, batch: torch.Tensor) -> torch.Tensor:
        """The output layer's activations for a (preprocessed) batch."""
        return self.graph(batch)[f"{self.graph.output_name}:out"]

    def _reconstruct(self, block: torch.Tensor) -> np.ndarray:
        """:meth:`predict` of one checked, not yet preprocessed block of rows."""
        return self._inverse(self._run(self._batches(self._preprocess(block)), self._output))

    def feed_forward(self, x: Any) -> dict[str, np.ndarray]:
        """Every layer's ``'name:pre'`` and ``'name:out'`` for ``x`` (plus ``'in:out'``).

        A memory-mapped or other streamable ``x`` is read one block of rows at a
        time; note that ``'in:out'`` is the whole (preprocessed) input.
        """
        was_training = self.graph.training
        self.graph.eval()
        parts: dict[str, list[np.ndarray]] = {}
        try:
            for batch in self._inputs(x):
                with torch.inference_mode():
                    for key, value in self.graph(batch).items():
                        parts.setdefault(key, []).append(to_numpy(value))
        finally:
            self.graph.train(was_training)
        return {key: np.concatenate(values, axis=0) for key, values in parts.items()}

    def score(self, x: Any, w: Any = None) -> float:
        """R^2 of the reconstruction: ``1 - SS_res / SS_tot`` with per-feature means.

        Equals scikit-learn's ``r2_score(x, predict(x), multioutput='variance_weighted')``
        when unweighted.  With ``w`` (shaped like ``x``) both sums are weighted.
        A memory-mapped or other streamable ``x`` (and ``w``) is read one block
        of rows at a time, in one pass.
        """
        if is_streamable(x):
            return self._score_streamed(x, w)
        target = check_array(x, self.graph.input_shape, name="x", layer=self.graph.input_name)
        target = target.flatten(1).double().numpy()
        pred = self.predict(x).reshape(target.shape[0], -1).astype(np.float64)
        if pred.shape != target.shape:
            raise DataError(f"score needs an output shaped like the input, got {pred.shape} vs {target.shape}")
        weight = (
            np.ones_like(target)
            if w is None
            else to_numpy(self._check_weights(w)).astype(np.float64).reshape(target.shape)
        )
        mean = (weight * target).sum(axis=0) / np.maximum(weight.sum(axis=0), 1e-12)
        ss_res = (weight * (target - pred) ** 2).sum()
        ss_tot = (weight * (target - mean) ** 2).sum()
        return _r_squared(float(ss_res), float(ss_tot))

    def _score_streamed(self, x: Any, w: Any) -> float:
        """:meth:`score` for streamable ``x``: per-block sums merged without a second pass.

        The per-feature weighted means and squared deviations of the blocks are
        combined with Chan et al.'s pairwise update, which is as accurate as the
        two-pass in-memory formula (a running ``sum(w x^2) - mean^2`` would
        cancel catastrophically for data far from zero).
        """
        self._check_outputs_exist()
        source = self._stream(x)
        n = len(source)
        n_features = math.prod(self.graph.input_shape)
        w_shape = tuple(getattr(w, "shape", np.shape(w))) if w is not None else None
        if w_shape is not None and (len(w_shape) < 1 or w_shape[0] != n or math.prod(w_shape) != n * n_features):
            raise DataError(f"w must be shaped like x ({n} rows of {n_features} values), got shape {w_shape}")
        total = mean = m2 = np.zeros(n_features)
        ss_res = 0.0
        for a, b, raw in self._blocks(source):
            target = to_numpy(raw).reshape(b - a, -1).astype(np.float64)
            pred = self._reconstruct(raw).reshape(b - a, -1).astype(np.float64)
            if pred.shape != target.shape:
                raise DataError(
                    f"score needs an output shaped like the input, got {(n, pred.shape[1])} vs {(n, target.shape[1])}"
                )
            weight = (
                np.ones_like(target)
                if w is None
                else to_numpy(self._check_weights(np.asarray(w[a:b]), "w", range(a, b)))
                .astype(np.float64)
                .reshape(target.shape)
            )
            ss_res += float((weight * (target - pred) ** 2).sum())
            block_total = weight.sum(axis=0)
            block_mean = (weight * target).sum(axis=0) / np.maximum(block_total, 1e-12)
            block_m2 = (weight * (target - block_mean) ** 2).sum(axis=0)
            merged = total + block_total
            share = block_total / np.maximum(merged, 1e-12)
            delta = block_mean - mean
            m2 = m2 + block_m2 + delta**2 * total * share
            mean = mean + delta * share
            total = merged
        return _r_squared(ss_res, float(m2.sum()))

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
        x : array-like, shape (n, features), or ``[x, w]`` when ``weighted``
        valid : array-like, optional
            Validation data for early stopping (or ``valid_split=0.1``).
        **kwargs
            ``algo``, ``learning_rate``, ``batch_size``, ``max_epochs``, ``patience``,
            regularizers (``hidden_l1``, ``weight_l2``, ...): see
            :class:`aekit.training.TrainOptions`.
        """
        train_mon: dict[str, float] = {}
        valid_mon: dict[str, float] = {}
        for train_mon, valid_mon in self.itertrain(x, valid, **kwargs):
            pass
        return train_mon, valid_mon

    # ------------------------------------------------------------------ files
    def save(self, path: str) -> None:
        """Write the model to one file (safetensors weights + JSON config), atomically."""
        from .io.model_file import save_model

        save_model(self, path)

    @classmethod
    def load(cls, path: str) -> Autoencoder:
        """Read a model written by :meth:`save`; never executes code from the file."""
        from .io.model_file import load_model

        return load_model(path)

    def config(self) -> dict[str, Any]:
        """The JSON-ready description the model file stores (no weights)."""
        from .model.specs import specs_to_config

        return {
            "layers": specs_to_config(self.specs),
            "losses": [term.to_dict() for term in self._losses],
            "weighted": self.weighted,
            "rng": self.seed,
            "hidden_activation": self.hidden_activation,
            "output_activation": self.output_activation,
        }

    def __repr__(self) -> str:
        parts = []
        for layer in self.layers:
            shape = "x".join(map(str, layer.output_shape))
            act = f" {layer.spec.activation}" if layer.spec.form != "input" else ""
            form = "" if layer.spec.form in ("dense", "input") else f" {layer.spec.form}"
            parts.append(f"{layer.name}:{shape}{act}{form}")
        losses = " + ".join(f"{t.weight:g}*{t.name}" if t.weight != 1 else t.name for t in self._losses)
        return f"Autoencoder([{', '.join(parts)}], loss={losses}, params={self.num_params})"


def _r_squared(ss_res: float, ss_tot: float) -> float:
    """``1 - SS_res / SS_tot``; for constant data 1 if the reconstruction is exact, else 0."""
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else 0.0)


def _activation_range(layer: Layer) -> tuple[float, float]:
    from .model.activations import output_range

    return output_range(layer.spec.activation)
