"""The Gaussian latent layer of a variational autoencoder: ``dict(form='gaussian', size=50, name='z')``.

The layer maps its input ``h`` to the parameters of a diagonal Gaussian posterior
``q(z|x) = N(mean, diag(exp(logvar)))`` with two affine heads,

* ``mean = h @ w + b`` -- the parameters ``w`` (n_in, size) and ``b`` are the mean
  head, so ``net.find('z', 'w')`` and the feature pictures show what each latent's
  mean reads;
* ``logvar = soft_clamp(h @ w_logvar + b_logvar, low, high)`` -- the log-variance head,

and outputs a reparameterised sample ``z = mean + exp(logvar / 2) * eps`` (``eps ~ N(0, I)``)
while the graph trains, the posterior mean otherwise (``encode``, ``predict``, validation):
inference is deterministic.  The extras ``'z:mean'`` and ``'z:logvar'`` carry the
posterior; the KL term is added by the objective (:mod:`aekit.objective.likelihood`),
which knows the training options (``beta``, ``kl_warmup``, ...) and the data size.

Against NaN.  ``exp(logvar)`` overflows float32 from ``logvar ~ 88`` and a variance of
zero makes ``log q`` infinite; a raw linear head gets there after one bad step.  The
log-variance is therefore kept in ``logvar_range`` (default ``[-20, 10]``: standard
deviations from 4.5e-5 to 148) by a *soft* clamp, ``low + softplus(raw - low)`` then
``high - softplus(high - .)``: the identity (to float32 rounding) well inside the range,
smooth, and with a gradient everywhere, so a latent pushed against a bound can come back
(a hard clamp would freeze it).  :func:`aekit.diagnose` reports latents that sit at a
bound (``logvar-range``).

Image inputs.  After a convolution (input ``(C, H, W)``) the layer is a per-position
latent: both heads are 1x1 convolutions, the output has shape ``(size, H, W)``, and ``w``
has shape ``(C, size)``.

A counter buffer ``steps`` (optimizer steps taken, saved with the model) drives the KL
warm-up; it is not summed across data-parallel processes (each counts the same steps).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigurationError
from ..specs import FormOptions, LayerSpec
from .base import Layer, LayerOutput, _numel, default_std, random_matrix, register

__all__ = ["DEFAULT_LOGVAR_RANGE", "Gaussian", "gaussian_kl", "log_normal", "reparameterize", "soft_clamp"]

DEFAULT_LOGVAR_RANGE = (-20.0, 10.0)
_LOG_2PI = math.log(2 * math.pi)


def soft_clamp(raw: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """``raw`` smoothly kept in ``[low, high]``: the identity well inside, a gradient everywhere.

    Parameters
    ----------
    raw : tensor, any shape
    low, high : float
        ``low < high``.

    Returns
    -------
    tensor, shape of ``raw``
    """
    above = low + F.softplus(raw - low)
    return high - F.softplus(high - above)


def reparameterize(mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A draw ``mean + exp(logvar / 2) * eps`` with ``eps ~ N(0, I)``, differentiable in both.

    Parameters
    ----------
    mean, logvar : tensor, same shape
    generator : torch.Generator, optional
        The source of ``eps`` (default: torch's global generator).

    Returns
    -------
    tensor, shape of ``mean``
    """
    eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return mean + torch.exp(0.5 * logvar) * eps


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mean, exp(logvar)) || N(0, 1))`` per value, in nats.

    ``0.5 * (mean^2 + exp(logvar) - 1 - logvar)`` (Kingma and Welling 2014, appendix B).

    Parameters
    ----------
    mean, logvar : tensor, same shape

    Returns
    -------
    tensor, shape of ``mean``
    """
    return 0.5 * (mean.square() + torch.exp(logvar) - 1.0 - logvar)


def log_normal(z: torch.Tensor, mean: torch.Tensor | None = None, logvar: torch.Tensor | None = None) -> torch.Tensor:
    """``log N(z; mean, exp(logvar))`` per value, in nats (the standard normal when both are None).

    Parameters
    ----------
    z : tensor
    mean, logvar : tensor, optional
        Broadcastable against ``z``.

    Returns
    -------
    tensor, shape of ``z``
    """
    if mean is None or logvar is None:
        return -0.5 * (_LOG_2PI + z.square())
    return -0.5 * (_LOG_2PI + logvar + (z - mean).square() * torch.exp(-logvar))


def _check_options(options: dict[str, Any], where: str) -> dict[str, Any]:
    value = options.get("logvar_range", list(DEFAULT_LOGVAR_RANGE))
    ok = isinstance(value, (list, tuple)) and len(value) == 2
    if ok:
        try:
            low, high = (float(v) for v in value)
        except (TypeError, ValueError):
            ok = False
        else:
            ok = all(math.isfinite(v) for v in (low, high)) and low < high and not isinstance(value[0], bool)
    if not ok:
        raise ConfigurationError(f"{where} logvar_range must be two finite numbers low < high, got {value!r}")
    if "logvar_range" in options:
        options["logvar_range"] = [low, high]
    return options


@register(
    "gaussian",
    FormOptions(defaults={"logvar_range": list(DEFAULT_LOGVAR_RANGE)}, check=_check_options, activation="linear"),
)
class Gaussian(Layer):
    """A diagonal Gaussian latent: mean and log-variance heads, a sample in training, the mean otherwise.

    Parameters
    ----------
    spec : LayerSpec
        ``size`` latents; the form option ``logvar_range`` (see the module docstring).
    input_shape : tuple of int
        ``(n_in,)``, or ``(C, H, W)`` for a per-position latent.
    """

    # Training draws eps from torch's global generator: the loop seeds it per epoch.
    draws_noise = True

    def __init__(self, spec: LayerSpec, input_shape: tuple[int, ...]):
        if spec.activation != "linear":
            raise ConfigurationError(
                f"layer {spec.name!r}: a gaussian layer outputs samples of its posterior, so its "
                f"activation must be 'linear', got {spec.activation!r}"
            )
        if spec.batch_norm:
            raise ConfigurationError(f"layer {spec.name!r}: a gaussian layer takes no batch_norm")
        if spec.size is None:
            raise ConfigurationError(f"layer {spec.name!r}: a gaussian layer needs a size (the number of latents)")
        super().__init__(spec, input_shape)
        self.per_position = len(self.input_shape) == 3
        self.n_in = self.input_shape[0] if self.per_position else _numel(self.input_shape)
        size = int(spec.size)
        self.w = nn.Parameter(torch.empty(self.n_in, size))
        self.b = nn.Parameter(torch.zeros(size))
        self.w_logvar = nn.Parameter(torch.empty(self.n_in, size))
        self.b_logvar = nn.Parameter(torch.zeros(size))
        low, high = spec.option("logvar_range")
        self.logvar_range = (float(low), float(high))
        self.steps: torch.Tensor
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))

    def infer_shape(self, input_shape):
        """``(size,)``, or ``(size, H, W)`` after an image-shaped input.

        Parameters
        ----------
        input_shape : tuple of int

        Returns
        -------
        tuple of int
        """
        size = int(self.spec.size or 0)  # checked in __init__
        if len(input_shape) == 3:
            return (size, *input_shape[1:])
        if len(input_shape) != 1 and len(input_shape) != 3:
            raise ConfigurationError(f"layer {self.spec.name!r}: a gaussian layer takes flat or (C, H, W) inputs")
        return (size,)

    @property
    def size(self) -> int:
        """The number of latents (per position for an image-shaped input)."""
        return int(self.b.shape[0])

    def reset_parameters(self, generator):
        """Glorot-normal weights for both heads, zero biases (a unit posterior variance at the start).

        Parameters
        ----------
        generator : torch.Generator
        """
        std = self.spec.init_value("std", "w", default_std("linear", self.n_in, self.size))
        with torch.no_grad():
            for w, b in ((self.w, self.b), (self.w_logvar, self.b_logvar)):
                w.copy_(random_matrix((self.n_in, self.size), generator, std=std))
                b.copy_(random_matrix((self.size,), generator, mean=self.spec.init_value("mean", "b", 0.0)))

    def _head(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.per_position:
            return F.conv2d(x, w.t()[:, :, None, None], b)  # a 1x1 convolution
        return torch.addmm(b, x.flatten(1) if x.dim() > 2 else x, w)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, logvar)`` of ``q(z|x)`` for this layer's input ``x``.

        Parameters
        ----------
        x : tensor, shape (n, *input_shape)

        Returns
        -------
        mean, logvar : tensor, shape (n, *output_shape)
        """
        mean = self._head(x, self.w, self.b)
        low, high = self.logvar_range
        return mean, soft_clamp(self._head(x, self.w_logvar, self.b_logvar), low, high)

    def transform(self, x):
        """The posterior mean (this layer's pre-activation).

        Parameters
        ----------
        x : tensor, shape (n, *input_shape)

        Returns
        -------
        tensor, shape (n, *output_shape)
        """
        return self._head(x, self.w, self.b)

    def forward(self, x: torch.Tensor) -> LayerOutput:
        """A sample of ``q(z|x)`` in training mode, the mean otherwise; the posterior in the extras.

        Parameters
        ----------
        x : tensor, shape (n, *input_shape)

        Returns
        -------
        LayerOutput
            ``pre`` the mean, ``out`` the sample (or the mean), extras ``'mean'`` and ``'logvar'``.
        """
        mean, logvar = self.posterior(x)
        out = reparameterize(mean, logvar) if self.training else mean
        return LayerOutput(mean, out, {"mean": mean, "logvar": logvar})

    @property
    def has_step_hooks(self) -> bool:
        """True: :meth:`after_step` counts the optimizer steps (the KL warm-up reads them)."""
        return True

    def after_step(self) -> None:
        """Count one optimizer step."""
        self.steps.add_(1)

    def extra_repr(self) -> str:
        """Name, shapes and the log-variance range, for ``repr``."""
        return f"{self.name!r}, {self.input_shape} -> {self.output_shape}, logvar_range={list(self.logvar_range)}"
