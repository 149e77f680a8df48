"""One definition of what training minimises, for every step path.

:class:`Objective` adds up, for a batch: the weighted reconstruction losses, the
loss terms that layers report about themselves, and the registered penalties
(:data:`PENALTIES`).  The eager, compiled and mixed-precision steps, L-BFGS,
validation and the data-parallel path all call the same object; the hand-derived
step of :mod:`aekit.train.fused` is checked against it (same term names, same
values) before it is used.

Term names, in order: each loss by name (``'mse'``, ...), ``'err'`` (their
weighted sum), the layers' own terms, each active penalty (``'weight_l1'``,
``'hidden_l1'``, ``'sparsity'``, ``'contractive'``, ``'kl'``, ...), and ``'loss'``, the total;
then, for a variational autoencoder, readings that are not minimised: ``'kl_nats'`` and
``'elbo'`` in nats per example (:mod:`aekit.objective.likelihood`).  Training on the
importance-weighted bound (``importance_samples > 1``) has the terms ``'iwae'`` and ``'loss'``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..errors import ConfigurationError, closest_name
from ..model.activations import output_range
from ..model.graph import Graph
from ..registry import Registry
from . import jacobian, likelihood
from . import penalties as reg
from .auxk import auxk_term, check_auxk
from .corruption import corruptions, dropout, gaussian_noise
from .losses import Loss
from .sae_penalties import check_sae_targets, decoder_weighted_l1_term, jumprelu_l0_term, multik_term

__all__ = ["PENALTIES", "Objective", "PenaltyInput"]


@dataclass
class PenaltyInput:
    """What a penalty sees of one batch.

    Attributes
    ----------
    graph : Graph
    outputs : dict of str to tensor
        Every ``'name:pre'`` / ``'name:out'`` of the (possibly corrupted) forward pass.
    target : tensor, shape (n, *input_shape)
        The clean input.
    regs : Regularizers
        The parsed train() keywords.
    training : bool
        A training step (False: validation, ``loss()`` readings without corruption).
    scale : float
        Nats per example in one unit of the reconstruction loss (``D``, see
        :mod:`aekit.objective.likelihood`).
    """

    graph: Graph
    outputs: dict[str, torch.Tensor]
    target: torch.Tensor
    regs: reg.Regularizers
    training: bool = True
    scale: float = 1.0


# A penalty maps a batch to its term, or None when its keywords are not set.  The order of
# registration is the order of the terms in the monitors (and of the hand-derived step's terms).
PENALTIES: Registry[Callable[[PenaltyInput], torch.Tensor | None]] = Registry("penalty")


def _weights(graph: Graph) -> dict[str, torch.Tensor]:
    # 'layers.hid1.w' -> 'hid1.w'; biases (1-D) are never penalised.
    return {n.split(".", 1)[1]: p for n, p in graph.named_parameters() if p.dim() > 1}


def _weight_norm(key: str, power: int) -> Callable[[PenaltyInput], torch.Tensor | None]:
    def term(batch: PenaltyInput) -> torch.Tensor | None:
        patterns = getattr(batch.regs, key)
        if not patterns:
            return None
        weights = _weights(batch.graph)
        # lam * theanets 0.7's mean over each matrix, averaged over a pattern's matrices: c_k * sum |W_k|**p.
        coefs = reg.weight_coefficients(patterns, weights, batch.regs.scale)
        value = sum(c * reg.weight_norm(weights[name], power) for name, c in coefs.items() if c)
        return torch.as_tensor(value)

    return term


def _activity(key: str, power: int) -> Callable[[PenaltyInput], torch.Tensor | None]:
    def term(batch: PenaltyInput) -> torch.Tensor | None:
        # lam * the mean over a pattern's layers of each one's mean |h|**p (theanets 0.7): c_l * mean |h_l|**p.
        layers = reg.hidden_coefficients(getattr(batch.regs, key), batch.graph.hidden_names, batch.regs.scale)
        if not layers:
            return None
        return sum(c * reg.hidden_penalty(batch.outputs[f"{n}:out"], power) for n, c in layers.items())  # type: ignore[return-value]

    return term


def _sparsity(batch: PenaltyInput) -> torch.Tensor | None:
    if not batch.regs.sparsity:
        return None
    value: torch.Tensor | float = 0.0
    for name, beta in reg.match(batch.regs.sparsity, batch.graph.hidden_names).items():
        low, high = output_range(batch.graph.layers[name].spec.activation)
        if low >= 0 and high <= 1:
            value = value + beta * reg.kl_sparsity(batch.outputs[f"{name}:out"], batch.regs.sparsity_target)
    return torch.as_tensor(value)


def _contractive(batch: PenaltyInput) -> torch.Tensor | None:
    if not batch.regs.contractive:
        return None
    layers = reg.match(batch.regs.contractive, batch.graph.hidden_names)
    # Looked up on the module at each call, so that a test or benchmark can swap the definition.
    value = sum(lam * jacobian.jacobian_norm(batch.graph, batch.target, name) for name, lam in layers.items())
    return torch.as_tensor(value)


PENALTIES.register("weight_l1", _weight_norm("weight_l1", 1))
PENALTIES.register("weight_l2", _weight_norm("weight_l2", 2))
PENALTIES.register("hidden_l1", _activity("hidden_l1", 1))
PENALTIES.register("hidden_l2", _activity("hidden_l2", 2))
PENALTIES.register("sparsity", _sparsity)
PENALTIES.register("contractive", _contractive)
PENALTIES.register("jumprelu_l0", jumprelu_l0_term)  # sparse autoencoders: aekit.objective.sae_penalties
PENALTIES.register("decoder_weighted_l1", decoder_weighted_l1_term)
PENALTIES.register("multik", multik_term)
PENALTIES.register("auxk", auxk_term)  # Gao et al. 2024's auxiliary loss: aekit.objective.auxk
PENALTIES.register("kl", likelihood.kl_penalty)  # every gaussian layer's KL, always on (beta=1 by default)


class Objective:
    """The training objective of a graph: reconstruction losses + layer terms + penalties.

    Parameters
    ----------
    graph : Graph
    losses : sequence of Loss
        The weighted reconstruction losses (``net.losses``).
    regs : Regularizers
        Parsed penalty and corruption keywords of ``train()`` / ``loss()``.

    Examples
    --------
    >>> import torch, aekit
    >>> from aekit.objective import Objective, Regularizers
    >>> net = aekit.Autoencoder([4, (2, 'sigmoid'), (4, 'tied')])
    >>> total, terms = Objective(net.graph, net.losses, Regularizers())(torch.zeros(3, 4), None, training=False)
    >>> list(terms)
    ['mse', 'err', 'loss']
    """

    def __init__(self, graph: Graph, losses: Sequence[Loss], regs: reg.Regularizers):
        self.graph = graph
        self.losses = list(losses)
        self.regs = regs

    def __repr__(self) -> str:
        return f"Objective(losses={[t.name for t in self.losses]}, regs={self.regs!r})"

    # ------------------------------------------------------------------ checks
    def check_loss_layers(self) -> None:
        """Refuse a loss that reads a layer (output or variance) the graph does not have.

        Raises
        ------
        ConfigurationError
            Naming the loss and the layer.
        """
        for term in self.losses:
            for layer in (term.output, term.covar):
                if layer is not None and layer not in self.graph.layers:
                    raise ConfigurationError(f"loss {term.name!r} reads layer {layer!r}, which does not exist")

    def check(self) -> None:
        """Refuse losses that read missing layers or outputs that do not line up with the input.

        Raises
        ------
        ConfigurationError
            Naming the loss, the layer and the shapes.
        """
        graph = self.graph
        self.check_loss_layers()
        if len(graph.layers) < 2:
            raise ConfigurationError("this Autoencoder has only an input layer; add layers with add_layer()")
        # A reconstruction must line up with the input: the same shape, or the
        # same number of values when one side is flat (a dense output after an
        # image input).  Mis-lined conv specs surface here, not as a broadcast error.
        want = tuple(graph.input_shape)
        for term in self.losses:
            got = tuple(graph.layers[term.output].output_shape)
            if got == want or (math.prod(got) == math.prod(want) and (len(got) == 1 or len(want) == 1)):
                continue
            hint = ""
            if graph.layers[term.output].spec.form == "deconv2":
                hint = "; give the deconv2 layer shape=" + repr(want) + " or mirror the conv with dict(form='tied')"
            raise ConfigurationError(
                f"output layer {term.output!r} produces shape {got}, but an autoencoder must reconstruct "
                f"its input of shape {want} (layer {graph.input_name!r}){hint}"
            )

    def check_targets(self) -> None:
        """Refuse a per-layer penalty pattern that chooses nothing in this graph.

        theanets ignored such keywords silently (``hidden_l1={'hidden1': 0.1}`` trained
        without any penalty); here each pattern must match a hidden layer (a weight
        matrix for ``weight_l1``/``weight_l2``), and a sparsity pattern a hidden layer
        whose outputs lie in [0, 1], the only ones KL sparsity is defined for.

        Raises
        ------
        ConfigurationError
            Naming the keyword, the pattern and the names it could have chosen.
        """
        graph, regs = self.graph, self.regs
        check_sae_targets(graph, regs)
        check_auxk(graph, regs)
        hidden = graph.hidden_names
        weights = list(_weights(graph))
        ranges = {n: output_range(graph.layers[n].spec.activation) for n in hidden}
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

    # ------------------------------------------------------------------ the value
    def __call__(
        self, x: torch.Tensor, w: torch.Tensor | None, training: bool
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The total objective and its named terms for a checked batch.

        Parameters
        ----------
        x : tensor, shape (n, *input_shape)
            Checked, preprocessed data (the reconstruction target).
        w : tensor or None, shape like ``x``
            Per-value weights of a weighted model.
        training : bool
            Corrupt inputs and hidden outputs (noise, dropout) as the keywords say.

        Returns
        -------
        total : tensor, shape ()
        terms : dict of str to tensor, each shape ()
        """
        graph, regs = self.graph, self.regs
        if training and regs.binarize == "dynamic":
            x = torch.bernoulli(x)  # the target too: the model of binarized data
        if regs.importance_samples > 1 and training:
            bound = likelihood.iwae_objective(graph, self.losses, x, regs.importance_samples)
            return bound["loss"], bound
        target = x
        if training and regs.input_noise:
            x = gaussian_noise(x, regs.input_noise)
        if training and regs.input_dropout:
            x = dropout(x, regs.input_dropout)
        corrupt = None
        if training and (regs.hidden_noise or regs.hidden_dropout):
            hidden = graph.hidden_names
            corrupt = corruptions(reg.match(regs.hidden_noise, hidden), reg.match(regs.hidden_dropout, hidden))
        outputs = graph(x, corrupt=corrupt)
        terms: dict[str, torch.Tensor] = {}
        err = None
        for term in self.losses:
            logits_ok = graph.layers[term.output].activation.is_sigmoid
            value = term(outputs, target, w, logits_ok=logits_ok)
            terms[term.name] = value
            weighted = term.weight * value
            err = weighted if err is None else err + weighted
        assert err is not None  # an Autoencoder always has a loss
        terms["err"] = err
        total = err
        for key, value in outputs.terms.items():  # the terms layers own (a KL, a commitment loss...)
            terms[key] = value
            total = total + value
        batch = PenaltyInput(graph, outputs, target, regs, training, likelihood.nats_scale(graph, self.losses))
        for key, penalty in PENALTIES.items():
            penalty_value = penalty(batch)
            if penalty_value is not None:
                terms[key] = penalty_value
                total = total + penalty_value
        terms["loss"] = total
        # Nats per example, not minimised (out of training, the ELBO of a seeded draw).
        terms.update(likelihood.readings(graph, self.losses, outputs, terms, target, training))
        return total, terms
