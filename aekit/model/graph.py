"""The graph of an autoencoder: its layers, wired by name, as one ``nn.Module``."""

from __future__ import annotations

import math
from collections.abc import Callable, ItemsView, Iterator, Mapping, Sequence, ValuesView
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..errors import AekitError, ConfigurationError, ModelFileError
from . import sae_recipe
from .layers import Layer, LayerOutput, build_layer, layer_seed
from .sparse_decode import SparseCode, sparse_pairs
from .specs import LayerSpec

__all__ = ["Graph", "GraphOutputs", "resolve_device"]

if TYPE_CHECKING:

    class _LayerDict(nn.ModuleDict):
        # What the type checker sees of Graph.layers: an nn.ModuleDict that holds only Layers.
        def __getitem__(self, key: str) -> Layer: ...
        def values(self) -> ValuesView[Layer]: ...
        def items(self) -> ItemsView[str, Layer]: ...

else:
    _LayerDict = nn.ModuleDict  # at run time the plain ModuleDict (same repr, same state_dict)


class GraphOutputs(dict):
    """Every layer's outputs by ``'name:pre'`` / ``'name:out'`` / ``'name:extra'``, plus the layers' loss terms.

    A top-k code that took the sparse path (:mod:`aekit.model.sparse_decode`) is kept as
    its active latents in ``codes``; its ``'name:out'`` is made dense (differentiably) the
    first time something reads it, by any of the dict's ways of reading.

    Attributes
    ----------
    terms : dict of str to tensor
        Loss terms layers own, by ``'name.key'`` (scalars, already weighted).
    codes : dict of str to SparseCode
        The sparse codes by layer name.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.terms: dict[str, torch.Tensor] = {}
        self.codes: dict[str, SparseCode] = {}

    def add_code(self, name: str, pre: torch.Tensor, code: SparseCode) -> None:
        """Store layer ``name``'s pre-activation and sparse code; its ``'name:out'`` is dense on demand."""
        self[f"{name}:pre"] = pre
        self.codes[name] = code
        super().__setitem__(f"{name}:out", _DENSE_ON_DEMAND)

    def __getitem__(self, key: str) -> Any:
        value = super().__getitem__(key)
        if value is _DENSE_ON_DEMAND:
            value = self.codes[key.rsplit(":", 1)[0]].dense()
            super().__setitem__(key, value)
        return value

    # Every way of reading a dict goes through __getitem__ (overriding __iter__ also makes dict(outputs)
    # and {**outputs} read key by key), so no reader ever sees the placeholder.
    def __iter__(self) -> Iterator[str]:
        return super().__iter__()

    def get(self, key: str, default: Any = None) -> Any:
        """``self[key]`` if there is one, else ``default``."""
        return self[key] if key in self else default

    def items(self) -> list[tuple[str, Any]]:  # type: ignore[override]
        """Every ``(key, value)``, sparse codes made dense."""
        return [(key, self[key]) for key in self]

    def values(self) -> list[Any]:  # type: ignore[override]
        """Every value, sparse codes made dense."""
        return [self[key] for key in self]

    def copy(self) -> dict[str, Any]:
        """A plain dict of every value, sparse codes made dense."""
        return dict(self.items())

    def pop(self, key: str, *default: Any) -> Any:
        """Remove ``key`` and return its value (made dense), or ``default``."""
        if key in self:
            value = self[key]
            del self[key]
            return value
        return super().pop(key, *default)

    def add(self, name: str, record: LayerOutput) -> torch.Tensor:
        """Store layer ``name``'s record; returns its output."""
        self[f"{name}:pre"] = record.pre
        self[f"{name}:out"] = record.out
        for key, value in record.extras.items():
            self[f"{name}:{key}"] = value
        for key, value in record.terms.items():
            self.terms[f"{name}.{key}"] = value
        return record.out


_DENSE_ON_DEMAND = object()  # the placeholder of a sparse code's 'name:out' until it is read


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
        self.layers = _LayerDict()
        self.sources: dict[str, str] = {}
        previous = None
        for spec in self.specs:
            if "." in spec.name or ":" in spec.name or not spec.name:
                raise ConfigurationError(f"layer names may not be empty or contain '.' or ':', got {spec.name!r}")
            if spec.form == "input":
                if previous is not None:
                    raise ConfigurationError(f"only the first layer may be an input, got {spec.name!r}")
                # An input spec has a shape (parse_layers sets it); a damaged config without one raises TypeError
                # here, which from_config reports as a ModelFileError.
                layer = build_layer(spec, tuple(spec.shape), {})  # type: ignore[arg-type]
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
        sae_recipe.link(self)  # layers wired across the graph (aekit.model.sae_recipe)
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
        sae_recipe.reset(self)  # encoders that start as their decoder's transpose

    def check_state(self, tensors: Mapping[str, torch.Tensor], source: str) -> None:
        """Raise ModelFileError unless ``tensors`` has exactly this graph's state: names, shapes, dtypes.

        Parameters
        ----------
        tensors : dict of str to tensor
            By short name (``'hid1.w'``), as a model file stores them.
        source : str
            The file they come from, for the message.
        """
        expected = {k.split(".", 1)[1]: v for k, v in self.state_dict().items()}
        missing = sorted(set(expected) - set(tensors))
        extra = sorted(set(tensors) - set(expected))
        if missing or extra:
            raise ModelFileError(
                f"model file {source!r} does not match its config: missing {missing or 'nothing'}, "
                f"unexpected {extra or 'nothing'}"
            )
        for key in expected:  # graph order: the file's own order may vary between runs
            value = tensors[key]
            if tuple(value.shape) != tuple(expected[key].shape) or value.dtype != expected[key].dtype:
                raise ModelFileError(
                    f"model file {source!r}: tensor {key!r} has shape {tuple(value.shape)} ({value.dtype}), "
                    f"but the config needs {tuple(expected[key].shape)} ({expected[key].dtype})"
                )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Per-example shape of the input layer, e.g. ``(784,)`` or ``(1, 28, 28)``."""
        return self.layers[self.input_name].output_shape

    def forward(
        self,
        x: torch.Tensor,
        stop: str | None = None,
        corrupt: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
    ) -> GraphOutputs:
        """Run the graph on a batch; return every ``'name:pre'``, ``'name:out'`` and extra output.

        The loss terms that layers report are in the result's ``terms``.

        Parameters
        ----------
        x : tensor, shape (n, *input_shape)
        stop : str, optional
            Stop after this layer (encoding need not run the decoder).
        corrupt : dict of str to callable, optional
            A function applied to the output of each named layer before the next
            layer reads it (the training objective's hidden noise and dropout).
        """
        outputs = GraphOutputs({f"{self.input_name}:out": x})
        # Top-k encoders feeding dense decoders: encoded and decoded from the active latents only.
        pairs = sparse_pairs(self.layers, self.sources, stop, corrupt or ())
        for name, source in self.sources.items():
            layer = self.layers[name]
            code = outputs.codes.get(source) if pairs.get(source) == name else None
            if name in pairs:  # not corrupted (sparse_pairs): its dense output is made only if read
                outputs.add_code(name, *layer.encode_sparse(outputs[f"{source}:out"]))  # type: ignore[operator]
            else:
                record = layer(outputs[f"{source}:out"]) if code is None else layer.decode_sparse(code)  # type: ignore[operator]
                out = outputs.add(name, record)
                if corrupt is not None and name in corrupt:
                    outputs[f"{name}:out"] = corrupt[name](out)
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
        sub.layers = _LayerDict({n: self.layers[n] for n in names})
        sub.sources = {}
        for previous, name in zip(names, names[1:]):
            if math.prod(self.layers[name].input_shape) != math.prod(self.layers[previous].output_shape):
                return None
            sub.sources[name] = previous
        sub.input_name, sub.output_name = names[0], names[-1]
        sub.hidden_names = list(names[1:-1])
        return sub

    def run_from(self, start: str, z: torch.Tensor) -> GraphOutputs:
        """Feed ``z`` as the output of layer ``start`` and run the layers after it."""
        names = list(self.sources)
        outputs = GraphOutputs({f"{start}:out": z})
        for name in names[names.index(start) + 1 :] if start in names else names:
            source = self.sources[name]
            if f"{source}:out" not in outputs:
                raise ConfigurationError(
                    f"cannot decode from layer {start!r}: layer {name!r} reads {source!r}, which lies before it"
                )
            outputs.add(name, self.layers[name](outputs[f"{source}:out"]))
        return outputs

    # ------------------------------------------------------------------ around optimizer steps
    @property
    def hooked_layers(self) -> list[Layer]:
        """The layers whose :meth:`~Layer.before_step` / :meth:`~Layer.after_step` do something."""
        return [layer for layer in self.layers.values() if layer.has_step_hooks]

    def summed_buffers(self) -> list[torch.Tensor]:
        """The buffers layers declare as per-process counts (summed, not copied, across processes)."""
        return [getattr(layer, key) for layer in self.layers.values() for key in layer.summed_buffers]
