"""Likelihoods of variational autoencoders: the KL term, the ELBO, the IWAE bound, all in nats.

One definition of scale.  A variational autoencoder (a graph with a
:class:`~aekit.model.layers.gaussian.Gaussian` layer) is a model of ``p(x|z) p(z)``
whose decoder likelihood is the model's first loss:

============ ==================================================== ================
loss          ``-log p(x|z)`` per example, nats                    ``D``
============ ==================================================== ================
``'bce'``     Bernoulli: ``sum_j BCE(x_j, y_j)`` (from the logits  values per example
              of a sigmoid output)
``'mse'``     Gaussian, fixed variance 1/2: ``sum_j (x_j - y_j)^2  values per example
              + (D/2) log pi``
``'gll'``     Gaussian, learned variance (the ``covar`` layer)     1
============ ==================================================== ================

``'bce'`` and ``'mse'`` are means over the D values of an example and ``'gll'`` is
already per example; so the objective adds the KL term divided by ``D``, and ``D *
loss`` is the negative ELBO in nats per example (for ``'mse'`` less the constant
``(D/2) log pi``, which training does not see).  ``beta=1`` is the ELBO: a summed KL
next to a mean reconstruction (the usual slip, which makes beta silently equal to the
number of pixels) is not possible.  The training monitors add two readings in nats per
example, ``'kl_nats'`` (the KL, unweighted) and ``'elbo'``.

Training options (``train()`` keywords, parsed in :class:`~aekit.objective.penalties.Regularizers`):

``beta`` (1.0)
    Weight of the KL term (beta-VAE).
``kl_warmup`` (0)
    The KL weight rises linearly from 0 to ``beta`` over this many optimizer steps
    (Sonderby et al. 2016), counted by the layer's ``steps`` buffer over the model's
    life; validation monitors use the full ``beta``.
``free_bits`` (0.0, off)
    Each latent's KL, averaged over the batch, counts at least this many nats
    (Kingma et al. 2016): ``sum_j max(free_bits, mean_i KL_ij)``.
``capacity`` (None, off)
    ``beta * |KL - capacity|`` (Burgess et al. 2018).  ``capacity=0`` is the plain KL,
    never a clamp that zeroes it (PyOD's ``min(KL, capacity)`` with capacity 0 trains
    with no KL at all).
``importance_samples`` (1)
    With ``k > 1`` train on the importance-weighted bound of Burda et al. 2015 with
    ``k`` samples per example instead of the ELBO.
``binarize`` (None)
    ``'dynamic'``: each training batch is resampled as ``x ~ Bernoulli(x)`` (inputs in
    [0, 1]), the binarized MNIST protocol of the VAE literature.

Evaluation (:func:`log_weights`, :func:`nll`, :func:`elbo`) is vectorised over samples,
chunked so that at most :data:`DECODE_ROWS` decoder rows are in memory, seeded, and
accumulated in float64 (log-sum-exp in float64).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import ConfigurationError, DataError, VariationalWarning
from ..model.graph import Graph
from ..model.layers.gaussian import Gaussian, gaussian_kl, log_normal
from .losses import Loss

__all__ = [
    "BINARIZE_MODES",
    "DECODE_ROWS",
    "LIKELIHOODS",
    "check_training",
    "elbo",
    "iwae_objective",
    "kl_penalty",
    "kl_weight",
    "latent_layers",
    "log_likelihood",
    "log_weights",
    "nats_scale",
    "nll",
    "readings",
]

BINARIZE_MODES = ("dynamic",)
LIKELIHOODS = ("bce", "mse", "gll")
DECODE_ROWS = 8192  # decoder rows per chunk of nll/elbo (k samples of several examples)
_EPS = 1e-7


def latent_layers(graph: Graph) -> list[str]:
    """The names of the graph's Gaussian latent layers, input side first."""
    return [name for name, layer in graph.layers.items() if isinstance(layer, Gaussian)]


def nats_scale(graph: Graph, losses: Sequence[Loss]) -> float:
    """``D``: nats per example in one unit of the first loss (values per example; 1 for ``'gll'``/``'kl'``)."""
    first = losses[0]
    if first.name in ("gll", "kl"):
        return 1.0
    return float(math.prod(graph.layers[first.output].output_shape))


def _constant(graph: Graph, loss: Loss) -> float:
    """The normalising constant ``-log p(x|z) - D * mse`` of the fixed-variance Gaussian (0 for the others)."""
    if loss.name != "mse":
        return 0.0
    return 0.5 * math.log(math.pi) * math.prod(graph.layers[loss.output].output_shape)


def log_likelihood(
    graph: Graph, loss: Loss, outputs: Mapping[str, torch.Tensor], target: torch.Tensor, samples: int = 1
) -> torch.Tensor:
    """``log p(x|z)`` of each output row under the decoder ``loss`` names, float64, nats.

    Parameters
    ----------
    graph : Graph
    loss : Loss
        ``'bce'`` (Bernoulli), ``'mse'`` (Gaussian of variance 1/2) or ``'gll'``.
    outputs : dict of str to tensor
        The graph's outputs: ``samples`` consecutive rows per row of ``target``.
    target : tensor, shape (n, *input_shape)
    samples : int
        Output rows per target row (broadcast, not copied).

    Returns
    -------
    tensor, shape (n * samples,), float64
    """
    if loss.name not in LIKELIHOODS:
        raise ConfigurationError(
            f"loss {loss.name!r} is not a likelihood: the ELBO and nll of a variational autoencoder need "
            f"loss 'bce' (Bernoulli), 'mse' (Gaussian, fixed variance) or 'gll' (Gaussian, learned variance)"
        )
    n = target.shape[0]

    def rows(key: str) -> torch.Tensor:  # (n, samples, values)
        return outputs[key].reshape(n, samples, -1)

    out = rows(f"{loss.output}:out")
    t = target.reshape(n, 1, -1)
    if loss.name == "bce":
        if graph.layers[loss.output].activation.is_sigmoid:
            logits = rows(f"{loss.output}:pre")
            per = -F.binary_cross_entropy_with_logits(logits, t.expand_as(logits), reduction="none")
        else:
            p = out.clamp(_EPS, 1 - _EPS)
            per = t * torch.log(p) + (1 - t) * torch.log1p(-p)
    elif loss.name == "mse":
        per = -(out - t).square() - 0.5 * math.log(math.pi)
    else:
        var = rows(f"{loss.covar}:out").clamp_min(_EPS)
        per = -0.5 * (math.log(2 * math.pi) + torch.log(var) + (t - out).square() / var)
    return per.double().sum(dim=2).reshape(n * samples)


# ---------------------------------------------------------------------- the training objective
def kl_weight(regs: Any, layer: Any, training: bool) -> float | torch.Tensor:
    """``beta``, ramped over ``kl_warmup`` steps in training (validation takes the full ``beta``)."""
    if not training or not regs.kl_warmup:
        return float(regs.beta)
    return regs.beta * torch.clamp(layer.steps.to(torch.float32) / float(regs.kl_warmup), max=1.0)


def _kl_values(outputs: Mapping[str, torch.Tensor], name: str) -> torch.Tensor:
    """Each example's KL per latent value, shape (n, *latent_shape)."""
    return gaussian_kl(outputs[f"{name}:mean"], outputs[f"{name}:logvar"])


def kl_penalty(batch: Any) -> torch.Tensor | None:
    """The KL term of every Gaussian layer in loss units: ``weight * KL / D`` (see the module docstring).

    ``batch`` is an :class:`~aekit.objective.objective.PenaltyInput`; None for a graph with no
    Gaussian layer.  ``free_bits`` floors each latent's batch-mean KL, then ``capacity`` takes
    ``|KL - capacity|``.
    """
    names = latent_layers(batch.graph)
    if not names:
        return None
    regs, scale = batch.regs, batch.scale
    total: torch.Tensor | float = 0.0
    for name in names:
        per_latent = _kl_values(batch.outputs, name).flatten(1).mean(dim=0)
        if regs.free_bits:
            per_latent = per_latent.clamp_min(regs.free_bits)
        kl = per_latent.sum()
        if regs.capacity is not None:
            kl = (kl - regs.capacity).abs()
        layer = batch.graph.layers[name]
        total = total + kl_weight(regs, layer, batch.training) * kl / scale
    return torch.as_tensor(total)


def readings(
    graph: Graph,
    losses: Sequence[Loss],
    outputs: Mapping[str, torch.Tensor],
    terms: Mapping[str, torch.Tensor],
    target: torch.Tensor,
    training: bool,
) -> dict[str, torch.Tensor]:
    """The monitors in nats per example: ``'kl_nats'`` (summed over the latents) and ``'elbo'``.

    In training the ELBO is the one-sample estimate the step minimises (``D * loss`` at
    ``beta=1``).  Out of training the graph reconstructs from the posterior means (the
    deterministic ``loss`` that early stopping compares), which is not the ELBO: there
    ``'elbo'`` decodes one draw of a generator seeded with 0, so it is an ELBO estimate and
    the same on every call.  Empty for a graph with no Gaussian layer; no ``'elbo'`` for a
    first loss that is not a likelihood, or out of training with several Gaussian layers.
    """
    names = latent_layers(graph)
    if not names:
        return {}
    kl = sum(_kl_values(outputs, name).flatten(1).sum(dim=1).mean() for name in names)
    out = {"kl_nats": torch.as_tensor(kl).detach()}
    first = losses[0]
    if first.name not in LIKELIHOODS or first.name not in terms:
        return out
    if training:
        rec = nats_scale(graph, losses) * terms[first.name].detach() + _constant(graph, first)
    elif len(names) == 1:
        with torch.no_grad():
            mean, logvar = outputs[f"{names[0]}:mean"], outputs[f"{names[0]}:logvar"]
            generator = torch.Generator(device=mean.device).manual_seed(0)
            eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            decoded = graph.run_from(names[0], mean + torch.exp(0.5 * logvar) * eps)
            rec = -log_likelihood(graph, first, decoded, target).mean().to(mean.dtype)
    else:
        return out
    out["elbo"] = -(rec + out["kl_nats"])
    return out


def iwae_objective(graph: Graph, losses: Sequence[Loss], x: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    """The importance-weighted bound with ``k`` samples per example as a training objective.

    Returns the terms ``'iwae'`` (the bound, nats per example) and ``'loss'`` (``-iwae / D``,
    so that ``D * loss`` is the negative bound as with the ELBO).
    """
    names = latent_layers(graph)
    if len(names) != 1:
        raise ConfigurationError(f"importance_samples needs exactly one gaussian layer, this model has {len(names)}")
    name = names[0]
    repeated = x.repeat_interleave(k, dim=0)
    outputs = graph(repeated)  # training mode: one posterior sample per row
    z, mean, logvar = (outputs[f"{name}:{key}"].flatten(1) for key in ("out", "mean", "logvar"))
    log_w = (
        log_likelihood(graph, losses[0], outputs, x, k)
        + log_normal(z).double().sum(dim=1)
        - log_normal(z, mean, logvar).double().sum(dim=1)
    ).reshape(-1, k)
    bound = (torch.logsumexp(log_w, dim=1) - math.log(k)).mean()
    return {"iwae": bound.float().detach(), "loss": (-bound / nats_scale(graph, losses)).float()}


def check_training(
    graph: Graph, losses: Sequence[Loss], regs: Any, x: torch.Tensor | None, watches_training_loss: bool = False
) -> None:
    """Refuse or warn about variational settings before training starts.

    ``watches_training_loss``: early stopping and the best-epoch restore will compare
    training losses (validation on, no validation data).

    Raises
    ------
    ConfigurationError
        ``binarize`` or ``importance_samples`` where they cannot apply.
    DataError
        ``binarize='dynamic'`` on values outside [0, 1] (in-memory data; streamed data are
        checked batch by batch by torch).
    """
    import warnings

    names = latent_layers(graph)
    if regs.importance_samples > 1:
        ignored = [
            key
            for key in ("weight_l1", "weight_l2", "hidden_l1", "hidden_l2", "sparsity", "contractive", "input_noise")
            + ("input_dropout", "hidden_noise", "hidden_dropout", "kl_warmup", "free_bits", "capacity")
            if getattr(regs, key)
        ] + (["beta"] if regs.beta != 1.0 else [])
        if ignored:
            raise ConfigurationError(
                f"importance_samples={regs.importance_samples} trains on the IWAE bound alone, which has no "
                f"place for {', '.join(ignored)}; train without them, or with importance_samples=1"
            )
    if regs.importance_samples > 1 and len(names) != 1:
        raise ConfigurationError(
            f"importance_samples={regs.importance_samples} needs a model with one gaussian layer, "
            f"this one has {len(names)}"
        )
    if regs.importance_samples > 1 and losses[0].name not in LIKELIHOODS:
        raise ConfigurationError(
            f"importance_samples needs a likelihood loss ('bce', 'mse' or 'gll'), got {losses[0].name!r}"
        )
    if regs.binarize and x is not None and x.numel() and (float(x.min()) < 0 or float(x.max()) > 1):
        raise DataError(
            f"binarize='dynamic' draws x ~ Bernoulli(x), so x must lie in [0, 1], got values in "
            f"[{float(x.min()):.4g}, {float(x.max()):.4g}]; scale the data (e.g. divide pixels by 255)"
        )
    if names and losses[0].name not in LIKELIHOODS:
        warnings.warn(
            f"loss {losses[0].name!r} is not a likelihood, so this variational autoencoder's KL term has no "
            "matching reconstruction scale and its elbo/nll are undefined; use loss 'bce', 'mse' or 'gll'",
            VariationalWarning,
            stacklevel=4,
        )
    if names and regs.kl_warmup and watches_training_loss:
        warnings.warn(
            f"kl_warmup={regs.kl_warmup}: the training loss rises while the KL weight warms up, and without "
            "validation data early stopping and the best-epoch restore compare the training losses of epochs "
            "with different objectives (an early, barely trained epoch looks best); give valid data (validation "
            "uses the full beta), or validate_every=0 to keep the last parameters",
            VariationalWarning,
            stacklevel=4,
        )
    if not names and (regs.beta != 1.0 or regs.kl_warmup or regs.free_bits or regs.capacity is not None):
        warnings.warn(
            "beta, kl_warmup, free_bits and capacity act on the KL term of gaussian layers, and this model has "
            "none: they change nothing",
            VariationalWarning,
            stacklevel=4,
        )


# ---------------------------------------------------------------------- evaluation in nats
def _chunks(n: int, k: int, rows: int) -> Iterator[tuple[int, int, int, int]]:
    """``(start, stop, k_start, k_stop)``: example chunks times sample chunks of at most ``rows`` decoder rows."""
    per = max(1, rows // k)
    k_step = min(k, rows)
    for start in range(0, n, per):
        for k_start in range(0, k, k_step):
            yield start, min(n, start + per), k_start, min(k, k_start + k_step)


@torch.no_grad()
def log_weights(
    graph: Graph,
    loss: Loss,
    name: str,
    x: torch.Tensor,
    k: int,
    generator: torch.Generator,
    rows: int = DECODE_ROWS,
) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor]]:
    """Importance log-weights ``log p(x|z) + log p(z) - log q(z|x)`` for ``z ~ q(z|x)``, chunk by chunk.

    Runs in the graph's current mode (call it in eval mode: the encoder gives the posterior's
    parameters, the decoder reads the drawn ``z``).

    Yields
    ------
    start, stop : int
        The rows of ``x`` of this chunk.
    log_w : tensor, shape (stop - start, k_chunk), float64
        For a chunk of the ``k`` samples (the chunks of a row range come in order).
    log_px : tensor, shape (stop - start, k_chunk), float64
        ``log p(x|z)`` alone (for the ELBO).
    """
    encoded = None
    for start, stop, k_start, k_stop in _chunks(x.shape[0], k, rows):
        if k_start == 0:
            outputs = graph(x[start:stop], stop=name)
            encoded = outputs[f"{name}:mean"], outputs[f"{name}:logvar"]
        assert encoded is not None
        mean, logvar = encoded
        m = stop - start
        count = k_stop - k_start
        eps = torch.randn((m, count, *mean.shape[1:]), generator=generator, device=mean.device, dtype=mean.dtype)
        z = mean[:, None] + torch.exp(0.5 * logvar)[:, None] * eps
        flat = z.reshape(m * count, *mean.shape[1:])
        decoded = graph.run_from(name, flat)
        log_px = log_likelihood(graph, loss, decoded, x[start:stop], count).reshape(m, count)
        z64 = z.double().flatten(2)
        log_pz = log_normal(z64).sum(dim=2)
        log_qz = log_normal(z64, mean.double().flatten(1)[:, None], logvar.double().flatten(1)[:, None]).sum(dim=2)
        yield start, stop, log_px + log_pz - log_qz, log_px


@torch.no_grad()
def nll(graph: Graph, loss: Loss, name: str, x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """``-log p(x)`` bounded from above by the importance-weighted bound with ``k`` samples, (n,) float64.

    ``-(logsumexp_i log w_i - log k)`` (Burda et al. 2015); non-increasing in ``k`` in
    expectation, and exact for any ``k`` when ``q(z|x)`` is the true posterior.
    """
    out = torch.empty(x.shape[0], dtype=torch.float64, device=x.device)
    parts: list[torch.Tensor] = []
    for start, stop, log_w, _ in log_weights(graph, loss, name, x, k, generator):
        parts.append(log_w)
        if sum(p.shape[1] for p in parts) == k:
            out[start:stop] = -(torch.logsumexp(torch.cat(parts, dim=1), dim=1) - math.log(k))
            parts = []
    return out


@torch.no_grad()
def elbo(
    graph: Graph, loss: Loss, name: str, x: torch.Tensor, samples: int, generator: torch.Generator
) -> torch.Tensor:
    """The ELBO of each example, (n,) float64: ``E_q log p(x|z)`` over ``samples`` draws minus the exact KL."""
    out = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    for start, stop, _, log_px in log_weights(graph, loss, name, x, samples, generator):
        out[start:stop] += log_px.sum(dim=1) / samples
    for start in range(0, x.shape[0], DECODE_ROWS):
        outputs = graph(x[start : start + DECODE_ROWS], stop=name)
        kl = gaussian_kl(outputs[f"{name}:mean"].double(), outputs[f"{name}:logvar"].double())
        out[start : start + DECODE_ROWS] -= kl.flatten(1).sum(dim=1)
    return out
