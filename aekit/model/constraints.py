"""Weight constraints: pure functions, and a registry of the ``constraint=`` names of dense layers.

``constraint='unit_norm'`` keeps each row ``w[i, :]`` of a dense weight of shape
``(n_in, n_out)`` at Euclidean norm 1: the direction along which input unit ``i``
writes into the layer's output.  On a decoder that reads a code, that is each
latent's decoder direction (torch's ``Linear.weight[:, i]``), the convention of
sparse autoencoders (Bricken et al. 2023; Gao et al. 2024), where it stops the
encoder from shrinking codes while the decoder grows to make up for it.

It acts twice per optimizer step, on every step path:

* before the step, the component of each row's gradient along the row is removed
  (:func:`remove_parallel_gradient`): the update then moves along the sphere,
  to first order, instead of changing the norm;
* after the step, each row is divided by its norm (:func:`normalize_rows_`).
"""

from __future__ import annotations

import torch

from ..registry import Registry

__all__ = ["CONSTRAINTS", "UnitNorm", "normalize_rows_", "remove_parallel_gradient", "remove_parallel_gradient_"]

_EPS = 1e-12  # a row of zeros stays zero instead of becoming NaN


def remove_parallel_gradient(w: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``grad`` minus, row by row, its component along the rows of ``w``.

    Parameters
    ----------
    w : tensor, shape (n_in, n_out)
    grad : tensor, shape (n_in, n_out)

    Returns
    -------
    tensor, shape (n_in, n_out)
        ``g_i - (g_i . u_i) u_i`` with ``u_i = w_i / ||w_i||``, so that ``(result_i . w_i) = 0``.
    """
    return remove_parallel_gradient_(w, grad.clone())


def remove_parallel_gradient_(w: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """:func:`remove_parallel_gradient` in place on ``grad`` (returned).

    ``g_i - ((g_i . w_i) / |w_i|^2) w_i``: three passes over the matrix and no temporary
    of its size (a sparse autoencoder's decoder is large, and this runs every step).
    """
    dots = torch.bmm(grad.unsqueeze(1), w.unsqueeze(2)).view(-1)  # row by row, without a product matrix
    coefficient = dots.div_(torch.linalg.vector_norm(w, dim=1).square_().clamp_min_(_EPS * _EPS))
    return grad.addcmul_(w, coefficient.unsqueeze(1), value=-1)


def normalize_rows_(w: torch.Tensor) -> torch.Tensor:
    """Divide each row of ``w`` (shape (n_in, n_out)) by its Euclidean norm, in place; returns ``w``."""
    return w.div_(w.norm(dim=1, keepdim=True).clamp_min(_EPS))


class UnitNorm:
    """Each row of the weight at norm 1 (see the module docstring)."""

    name = "unit_norm"

    def __repr__(self) -> str:
        return "UnitNorm()"

    @torch.no_grad()
    def project_gradient(self, w: torch.nn.Parameter) -> None:
        """Remove from ``w.grad`` its component along each row of ``w`` (no-op without a gradient)."""
        if w.grad is not None:
            remove_parallel_gradient_(w, w.grad)

    @torch.no_grad()
    def apply(self, w: torch.nn.Parameter) -> None:
        """Renormalise each row of ``w`` to norm 1."""
        normalize_rows_(w)


CONSTRAINTS: Registry[type[UnitNorm]] = Registry("constraint")
CONSTRAINTS.register("unit_norm", UnitNorm)
