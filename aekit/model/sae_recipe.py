"""The published recipe of top-k sparse autoencoders, and which layer decodes a code.

When a dense code layer with a ``'topk:K'`` or ``'batchtopk:K'`` activation reads the
input and is decoded by the output layer, a dense ``'linear'`` layer with
``constraint='unit_norm'`` (the model of Gao et al. 2024, "Scaling and evaluating
sparse autoencoders", and of OpenAI's ``sparse_autoencoder`` and EleutherAI's
``sparsify``), three things are done by default, each an option of the code layer's
spec (saved in the model file):

``pre_bias`` (default ``'auto'``)
    The decoder's output bias ``b_dec`` is subtracted from the input before encoding:
    ``z = topk((x - b_dec) @ W_enc + b_enc)``, ``x_hat = z @ W_dec + b_dec``.  The bias
    is the decoder's own parameter (tied, not a copy), so it trains through both uses.
``tied_init`` (default ``'auto'``)
    The encoder's weight starts as the decoder's transpose, ``W_enc = W_dec^T`` (with
    unit-norm rows of ``W_dec``): each latent starts reading the direction it writes.
``bias_init`` (default ``'auto'``, i.e. ``'median'``)
    ``b_dec`` starts at the *geometric median* of the first training data (OpenAI's
    ``init_from_data_`` and sparsify's first-batch init both use it; it is robust to the
    outliers of transformer activations), found by Weiszfeld's iteration on up to
    :data:`INIT_ROWS` rows: evenly spaced rows of in-memory data, the first rows of
    streamed data.  ``'mean'`` takes their mean, ``'zero'`` leaves the bias at its
    initial value.  This happens once, on the first ``train()`` of a fresh model: the
    layer's ``recipe_initialized`` buffer records it, is saved with the model and in
    checkpoints, so a loaded or resumed model keeps its bias.

``recipe=False`` turns every ``'auto'`` off; ``True`` / ``False`` for a part forces it.
A part forced on needs the wiring it acts on (a dense code layer that reads the input,
decoded by a dense output layer of the input's size), else the model is refused with a
ConfigurationError naming the option.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, cast

import torch

from ..errors import ConfigurationError
from .dead_latents import DeadLatents
from .layers import Layer
from .layers.dense import Dense, Tied
from .specs import extend_form

if TYPE_CHECKING:
    from .graph import Graph  # the graph calls link() and reset() as it is built

__all__ = [
    "INIT_ROWS",
    "RECIPE_OPTIONS",
    "Recipe",
    "dead_latents",
    "decoder_of",
    "decoder_weight",
    "geometric_median",
    "initialize_from_data",
    "link",
    "needs_data",
    "reset",
]

INIT_ROWS = 4096  # rows of the first training data the output bias starts from
TOPK_FAMILIES = ("topk", "batchtopk")  # the code activations the recipe is the default for
CODE_FAMILIES = ("topk", "batchtopk", "jumprelu")  # sparse codes: their layers track dead latents
BIAS_INITS = ("auto", "median", "mean", "zero")
RECIPE_OPTIONS: dict[str, Any] = {"recipe": True, "pre_bias": "auto", "tied_init": "auto", "bias_init": "auto"}


def _check_options(options: dict[str, Any], where: str) -> dict[str, Any]:
    for key in ("pre_bias", "tied_init"):
        if key in options and options[key] not in ("auto", True, False):
            raise ConfigurationError(f"{where} {key} must be 'auto', True or False, got {options[key]!r}")
    if "recipe" in options and not isinstance(options["recipe"], bool):
        raise ConfigurationError(f"{where} recipe must be True or False, got {options['recipe']!r}")
    if "bias_init" in options and options["bias_init"] not in BIAS_INITS:
        raise ConfigurationError(
            f"{where} bias_init must be one of {', '.join(map(repr, BIAS_INITS))}, got {options['bias_init']!r}"
        )
    return options


# Dense layer specs take the recipe's options (stored in the model file when given).
extend_form("dense", RECIPE_OPTIONS, _check_options)


def decoder_of(graph: Graph, name: str) -> Dense | Tied | None:
    """The one dense or tied layer that reads layer ``name``'s output, or None (no reader, several, another form)."""
    readers = [graph.layers[n] for n, source in graph.sources.items() if source == name]
    if len(readers) != 1 or type(readers[0]) not in (Dense, Tied):
        return None
    return cast(Dense | Tied, readers[0])


def decoder_weight(decoder: Layer) -> torch.Tensor:
    """Each latent's decoder direction, one per row: shape (latents, n_out).

    A dense decoder's ``w`` (its rows, as ``constraint='unit_norm'`` keeps them); a tied
    decoder's partner weight transposed.
    """
    if isinstance(decoder, Tied):
        return cast(torch.Tensor, decoder.partner.w).t()
    return cast(torch.Tensor, decoder.w)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The recipe's parts as resolved for one code layer (``layer.sae_recipe``).

    Attributes
    ----------
    decoder : str
        The decoder layer's name.
    pre_bias, tied_init : bool
    bias_init : {'median', 'mean', 'zero'}
    """

    decoder: str
    pre_bias: bool
    tied_init: bool
    bias_init: str


def _wiring(graph: Graph, name: str) -> Dense | None:
    """The decoder when ``name`` is a dense code layer reading the input, decoded by a dense output of its size."""
    layer = graph.layers[name]
    decoder = decoder_of(graph, name)
    if (
        type(layer) is not Dense
        or graph.sources.get(name) != graph.input_name
        or type(decoder) is not Dense
        or decoder.name != graph.output_name
        or decoder.n_out != layer.n_in
    ):
        return None
    return decoder


def _is_default(graph: Graph, layer: Dense, decoder: Dense) -> bool:
    """Whether the recipe is the default: a top-k code feeding a unit-norm linear decoder."""
    parts = layer.activation.parts
    return (
        len(parts) == 1
        and parts[0].split(":")[0] in TOPK_FAMILIES
        and layer.norm is None
        and decoder.spec.constraint == "unit_norm"
        and decoder.activation.parts == ["linear"]
    )


def link(graph: Graph) -> None:
    """Resolve each dense layer's recipe options and wire the parts that apply (called when a graph is built).

    Sets ``layer.sae_recipe`` (a :class:`Recipe`, or None) on every dense layer, ``pre_bias_of``
    on a code layer whose input is shifted, and registers its ``recipe_initialized`` buffer
    where the output bias starts from data.  A dense layer with a sparse code activation
    (:data:`CODE_FAMILIES`) gets a :class:`~aekit.model.dead_latents.DeadLatents` tracker as
    its ``dead_latents`` submodule, fed by a forward hook.

    Raises
    ------
    ConfigurationError
        A part forced on (``True``, ``'median'``, ``'mean'``) where the wiring does not allow it.
    """
    for name, layer in graph.layers.items():
        if type(layer) is not Dense:
            continue
        layer.sae_recipe = None
        parts = layer.activation.parts
        if len(parts) == 1 and parts[0].split(":")[0] in CODE_FAMILIES and "dead_latents" not in layer._modules:
            tracker = DeadLatents(layer.n_out)
            layer.add_module("dead_latents", tracker)
            layer.register_forward_hook(tracker.hook)  # a bound method: a deep copy of the model hooks its copy
        spec = layer.spec
        given = {key: spec.option(key) for key in RECIPE_OPTIONS}
        decoder = _wiring(graph, name)
        default = decoder is not None and given["recipe"] and _is_default(graph, layer, decoder)
        resolved = {
            "pre_bias": default if given["pre_bias"] == "auto" else given["pre_bias"],
            "tied_init": default if given["tied_init"] == "auto" else given["tied_init"],
            "bias_init": ("median" if default else "zero") if given["bias_init"] == "auto" else given["bias_init"],
        }
        forced = [k for k in ("pre_bias", "tied_init") if resolved[k]]
        forced += ["bias_init"] if resolved["bias_init"] != "zero" else []
        if not forced:
            continue
        if decoder is None:
            raise ConfigurationError(
                f"layer {name!r}: {forced[0]}={given[forced[0]]!r} needs a dense code layer that reads the input "
                f"and is decoded by a dense output layer of the input's size"
            )
        recipe = Recipe(
            decoder.name, bool(resolved["pre_bias"]), bool(resolved["tied_init"]), str(resolved["bias_init"])
        )
        layer.sae_recipe = recipe
        if recipe.pre_bias:
            layer.pre_bias_of = (decoder,)  # a tuple: the decoder stays out of this layer's module tree
        if recipe.bias_init != "zero":
            layer.register_buffer("recipe_initialized", torch.zeros((), dtype=torch.bool))


def dead_latents(layer: Layer) -> DeadLatents | None:
    """The dead-latent tracker of a sparse code layer (None for other layers): ``since_fired``, ``dead_mask()``."""
    tracker = layer._modules.get("dead_latents")
    return tracker if isinstance(tracker, DeadLatents) else None


def _recipes(graph: Graph) -> list[tuple[Dense, Recipe]]:
    return [
        (layer, layer.sae_recipe)
        for layer in graph.layers.values()
        if isinstance(layer, Dense) and layer.sae_recipe is not None
    ]


@torch.no_grad()
def reset(graph: Graph) -> None:
    """The recipe's part of a (re)initialisation: encoders that start as their decoder's transpose.

    A re-initialised model is a fresh one: its output bias waits for its data-dependent start again.
    """
    for layer, recipe in _recipes(graph):
        if recipe.bias_init != "zero":
            cast(torch.Tensor, layer.recipe_initialized).fill_(False)
        if recipe.tied_init:
            layer.w.copy_(cast(Dense, graph.layers[recipe.decoder]).w.t())


def needs_data(graph: Graph) -> bool:
    """Whether some output bias still waits for its data-dependent start."""
    return any(recipe.bias_init != "zero" and not bool(layer.recipe_initialized) for layer, recipe in _recipes(graph))


def geometric_median(x: torch.Tensor, iterations: int = 100, tolerance: float = 1e-7) -> torch.Tensor:
    """The point minimising the sum of Euclidean distances to the rows of ``x``: Weiszfeld's iteration, in float64.

    Parameters
    ----------
    x : tensor, shape (n, d)
    iterations : int
        At most this many updates (from the mean).
    tolerance : float
        Stop when an update moves the estimate by less than this, relative to its norm.

    Returns
    -------
    tensor, shape (d,), float64
    """
    points = x.double()
    median = points.mean(dim=0)
    for _ in range(iterations):
        # Weights 1/distance; a point on the estimate itself is given a tiny distance, not infinity.
        weights = 1.0 / (points - median).norm(dim=1).clamp_min(1e-12)
        updated = (weights[:, None] * points).sum(dim=0) / weights.sum()
        moved = (updated - median).norm()
        median = updated
        if moved <= tolerance * median.norm().clamp_min(1e-12):
            break
    return median


@torch.no_grad()
def initialize_from_data(graph: Graph, x: torch.Tensor) -> None:
    """Start each waiting output bias at the geometric median (or mean) of ``x``, once.

    Parameters
    ----------
    graph : Graph
    x : tensor, shape (n, *input_shape)
        Checked rows of the first training data.
    """
    rows = x.flatten(1)
    for layer, recipe in _recipes(graph):
        if recipe.bias_init == "zero" or bool(layer.recipe_initialized):
            continue
        start = geometric_median(rows) if recipe.bias_init == "median" else rows.double().mean(dim=0)
        bias = cast(Dense, graph.layers[recipe.decoder]).b
        bias.copy_(start.to(bias.dtype))
        cast(torch.Tensor, layer.recipe_initialized).fill_(True)
