"""The variational-autoencoder methods of :class:`aekit.Autoencoder`: posteriors, samples, ELBO and nll.

A model with a Gaussian latent layer (``dict(form='gaussian', size=50, name='z')``, see
:mod:`aekit.model.layers.gaussian`) is a variational autoencoder.  Its code layer is the
latent, :meth:`~aekit.Autoencoder.encode` gives posterior means (deterministic) and
``encode(x, sample=True)`` draws ``z ~ q(z|x)``; this mixin adds the rest.  Every figure
is in nats per example (see :mod:`aekit.objective.likelihood` for the one definition of
scale), of the data after the model's preprocessing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from .data.checks import to_numpy
from .data.validation import integer
from .errors import ConfigurationError, DataError
from .model.graph import Graph
from .objective import likelihood
from .objective.losses import Loss

__all__ = ["Posterior", "VariationalMixin"]


class Posterior(NamedTuple):
    """The diagonal Gaussian ``q(z|x)`` of each example.

    Attributes
    ----------
    mean, logvar : ndarray, shape (n, *latent_shape)
    """

    mean: np.ndarray
    logvar: np.ndarray

    @property
    def std(self) -> np.ndarray:
        """``exp(logvar / 2)``."""
        return np.exp(0.5 * self.logvar)


class VariationalMixin:
    """Methods of models with a Gaussian latent layer (a base class of :class:`aekit.Autoencoder`)."""

    graph: Graph
    device: torch.device
    seed: int
    _losses: list[Loss]
    _latent_generator: torch.Generator | None = None

    if TYPE_CHECKING:  # provided by the model (BatchedInference and the façade)

        def _split(
            self, data: Any, name: str = "x", w: Any = None, weights: bool = False, shape: Any = None
        ) -> tuple[Any, Any]: ...
        def _inputs(self, x: Any) -> Iterator[torch.Tensor]: ...
        def _layer_name(self, layer: str | int | None, default: str) -> str: ...
        def _check_outputs_exist(self) -> None: ...
        def decode(self, z: Any, layer: str | int | None = None) -> np.ndarray:
            """See :meth:`aekit.Autoencoder.decode`."""

    def __repr__(self) -> str:  # the model's own repr takes precedence; this one is for the mixin alone
        return f"{type(self).__name__}(latent_layers={self.latent_layers})"

    # ------------------------------------------------------------------ which layer
    @property
    def latent_layers(self) -> list[str]:
        """The names of the Gaussian latent layers, input side first (empty: not a VAE)."""
        return likelihood.latent_layers(self.graph)

    def _latent(self, layer: str | int | None = None) -> str:
        names = self.latent_layers
        if not names:
            raise ConfigurationError(
                "this Autoencoder has no gaussian layer: add dict(form='gaussian', size=N) to its layers "
                "to make it a variational autoencoder"
            )
        name = self._layer_name(layer, names[0])
        if name not in names:
            raise ConfigurationError(f"layer {name!r} is not a gaussian layer; the gaussian layers are {names}")
        return name

    def _generator(self, seed: int | None, device: torch.device | None = None) -> torch.Generator:
        """A fresh generator for ``seed``, else the model's own (seeded by ``rng``, drawing afresh each call)."""
        if seed is not None:
            return torch.Generator(device=device or "cpu").manual_seed(integer("seed", seed, 0))
        if self._latent_generator is None:
            self._latent_generator = torch.Generator().manual_seed(self.seed)
        return self._latent_generator

    def _eval_batches(self, x: Any, fn: Callable[[torch.Tensor], None]) -> None:
        """``fn(batch)`` on checked, preprocessed batches of ``x``, in eval and inference mode."""
        self._check_outputs_exist()
        was_training = self.graph.training
        self.graph.eval()
        try:
            for batch in self._inputs(self._split(x)[0]):
                with torch.inference_mode():
                    fn(batch)
        finally:
            self.graph.train(was_training)

    # ------------------------------------------------------------------ the posterior
    def posterior(self, x: Any, layer: str | int | None = None) -> Posterior:
        """The posterior ``q(z|x)`` of each example: means and log-variances.

        Parameters
        ----------
        x : array-like, shape (n, features) or (n, *input_shape)
        layer : str or int, optional
            The gaussian layer (default: the first).

        Returns
        -------
        Posterior
            ``mean`` and ``logvar``, each shape (n, *latent_shape); ``.std`` too.
        """
        name = self._latent(layer)
        means: list[np.ndarray] = []
        logvars: list[np.ndarray] = []

        def run(batch: torch.Tensor) -> None:
            outputs = self.graph(batch, stop=name)
            means.append(to_numpy(outputs[f"{name}:mean"]))
            logvars.append(to_numpy(outputs[f"{name}:logvar"]))

        self._eval_batches(x, run)
        return Posterior(np.concatenate(means), np.concatenate(logvars))

    def _sample_posterior(self, x: Any, name: str) -> np.ndarray:
        """``encode(x, sample=True)`` of a gaussian layer: ``z ~ q(z|x)`` from the model's generator."""
        post = self.posterior(x, name)
        generator = self._generator(None)
        eps = torch.randn(post.mean.shape, generator=generator).numpy()
        return (post.mean + post.std * eps).astype(post.mean.dtype)

    # ------------------------------------------------------------------ generating
    def sample(self, n: int, layer: str | int | None = None, seed: int | None = None) -> np.ndarray:
        """Decoder means for ``n`` draws ``z ~ N(0, I)`` of the prior.

        Parameters
        ----------
        n : int
        layer : str or int, optional
            The gaussian layer (default: the first).
        seed : int, optional
            Seed of the draws; None draws from the model's own generator (seeded by ``rng``:
            reproducible, yet each call draws afresh).

        Returns
        -------
        ndarray, shape (n, *output_shape)
            E.g. pixel probabilities of a Bernoulli decoder.
        """
        n = integer("n", n, 1)
        name = self._latent(layer)
        shape = self.graph.layers[name].output_shape
        z = torch.randn((n, *shape), generator=self._generator(seed)).numpy()
        return self.decode(z, layer=name)

    def interpolate(self, a: Any, b: Any, steps: int = 8, layer: str | int | None = None) -> np.ndarray:
        """Decoder means along the straight line between the posterior means of ``a`` and ``b``.

        Parameters
        ----------
        a, b : array-like
            One example each (shape ``input_shape``, e.g. (features,)), or n examples each.
        steps : int
            Points on the line, ends included (>= 2).
        layer : str or int, optional

        Returns
        -------
        ndarray, shape (steps, *output_shape), or (n, steps, *output_shape) for n pairs
        """
        steps = integer("steps", steps, 2)
        name = self._latent(layer)
        input_shape = tuple(self.graph.input_shape)
        single = np.ndim(a) == len(input_shape) if not isinstance(a, (list, tuple)) else False
        za, zb = (self.posterior(_rows(v, input_shape), name).mean for v in (a, b))
        if za.shape != zb.shape:
            raise DataError(f"a and b must hold as many examples, got {za.shape[0]} and {zb.shape[0]}")
        t = np.linspace(0.0, 1.0, steps, dtype=np.float64).reshape(1, steps, *([1] * (za.ndim - 1)))
        z = ((1 - t) * za[:, None] + t * zb[:, None]).astype(np.float32)
        out = self.decode(z.reshape(-1, *za.shape[1:]), layer=name)
        out = out.reshape(za.shape[0], steps, *out.shape[1:])
        return out[0] if single else out

    # ------------------------------------------------------------------ likelihoods, nats per example
    def _likelihood_loss(self) -> Loss:
        loss = self._losses[0]
        if loss.name not in likelihood.LIKELIHOODS:
            raise ConfigurationError(
                f"elbo and nll need a likelihood loss ('bce', 'mse' or 'gll'), this model's is {loss.name!r}"
            )
        return loss

    def elbo(self, x: Any, samples: int = 1, seed: int = 0, layer: str | int | None = None) -> np.ndarray:
        """The evidence lower bound of each example, nats: ``E_q log p(x|z) - KL(q(z|x) || p(z))``.

        The expectation is a Monte Carlo mean over ``samples`` draws (seeded), the KL exact.

        Returns
        -------
        ndarray, shape (n,), float64
        """
        samples = integer("samples", samples, 1)
        name = self._latent(layer)
        loss = self._likelihood_loss()
        generator = self._generator(seed, self.device)
        parts: list[np.ndarray] = []
        self._eval_batches(
            x, lambda batch: parts.append(to_numpy(likelihood.elbo(self.graph, loss, name, batch, samples, generator)))
        )
        return np.concatenate(parts)

    def nll(self, x: Any, k: int = 1000, seed: int = 0, layer: str | int | None = None) -> np.ndarray:
        """The importance-weighted estimate of ``-log p(x)`` of each example, nats (Burda et al. 2015).

        ``-(logsumexp_i log w_i - log k)`` with ``w_i = p(x|z_i) p(z_i) / q(z_i|x)`` and ``z_i ~ q(z|x)``:
        an upper bound on the negative log-likelihood in expectation, tighter as ``k`` grows (``k=1``
        is the negative ELBO with a sampled KL).  Vectorised over samples, chunked, seeded, and
        summed in float64.

        Parameters
        ----------
        x : array-like, shape (n, features) or (n, *input_shape)
        k : int
            Importance samples per example.
        seed : int
            Seed of the draws: the same seed gives the same figures.
        layer : str or int, optional

        Returns
        -------
        ndarray, shape (n,), float64
        """
        k = integer("k", k, 1)
        name = self._latent(layer)
        loss = self._likelihood_loss()
        generator = self._generator(seed, self.device)
        parts: list[np.ndarray] = []
        self._eval_batches(
            x, lambda batch: parts.append(to_numpy(likelihood.nll(self.graph, loss, name, batch, k, generator)))
        )
        return np.concatenate(parts)

    def init_output_bias(self, x: Any) -> None:
        """Start a Bernoulli decoder's output bias at the logit of each value's mean over ``x``.

        Burda et al. 2015's initialisation: the untrained decoder then gives the data's mean
        image, so the first steps do not spend themselves learning it.  The means are clipped
        to [1e-3, 1 - 1e-3] (an always-black pixel would get an infinite bias).

        Raises
        ------
        ConfigurationError
            Unless the output layer is a sigmoid layer with a bias ``b`` (its loss ``'bce'``).
        """
        out = self.graph.layers[self.graph.output_name]
        bias = getattr(out, "b", None)
        if not out.activation.is_sigmoid or not isinstance(bias, torch.nn.Parameter) or bias.dim() != 1:
            raise ConfigurationError(
                f"init_output_bias needs a sigmoid output layer with a bias (a Bernoulli decoder), "
                f"layer {out.name!r} has activation {out.spec.activation!r}"
            )
        total = torch.zeros(bias.shape, dtype=torch.float64)
        count = 0

        def add(batch: torch.Tensor) -> None:
            nonlocal total, count
            flat = batch.reshape(batch.shape[0], -1).double().cpu()
            if flat.shape[1] == bias.shape[0]:
                total += flat.sum(0)
            else:  # a conv output: one bias per channel, the mean over the positions
                total += flat.reshape(batch.shape[0], bias.shape[0], -1).mean(2).sum(0)
            count += batch.shape[0]

        self._eval_batches(x, add)
        mean = (total / count).clamp(1e-3, 1 - 1e-3)
        with torch.no_grad():
            bias.copy_(torch.log(mean / (1 - mean)).to(bias.dtype))

    def kl_per_latent(self, x: Any, layer: str | int | None = None) -> np.ndarray:
        """The mean over ``x`` of each latent's ``KL(q(z_j|x) || N(0, 1))``, nats, shape (*latent_shape,)."""
        post = self.posterior(x, layer)
        mean, logvar = post.mean.astype(np.float64), post.logvar.astype(np.float64)
        return (0.5 * (mean**2 + np.exp(logvar) - 1.0 - logvar)).mean(axis=0)


def _rows(value: Any, input_shape: tuple[int, ...]) -> Any:
    """One example (shape ``input_shape`` or flat) as a batch of one row; batches as they are."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.ndim == len(input_shape) and (len(input_shape) > 1 or array.ndim == 1):
        return array[None]
    return array
