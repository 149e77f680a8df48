"""The maths of vector quantization, as pure functions (the layers in :mod:`.layers.quantize` hold the state).

Vector quantization (VQ-VAE, van den Oord, Vinyals and Kavukcuoglu 2017, "Neural Discrete
Representation Learning"): each vector ``z`` of the encoder's output is replaced by its nearest
code ``e_k`` of a codebook of ``K`` vectors; gradients pass straight through
(:func:`straight_through`).  With the exponential-moving-average codebook of the paper's
appendix A.1, after each optimizer step, for decay ``gamma`` and the batch's ``n_k`` vectors
assigned to code ``k`` (sum ``s_k``)::

    N_k <- gamma N_k + (1 - gamma) n_k
    m_k <- gamma m_k + (1 - gamma) s_k
    e_k  = m_k / N~_k,   N~_k = (N_k + eps) / (sum_j N_j + K eps) * sum_j N_j

``N~`` is the Laplace-smoothed count (:func:`laplace_smoothed`, as in Sonnet's
``VectorQuantizerEMA``), which keeps a code that stops being used from dividing by zero.

Finite scalar quantization (FSQ, Mentzer, Minnen, Agustsson and Tschannen 2023, "Finite Scalar
Quantization: VQ-VAE Made Simple"): each of ``d`` channels is bounded to ``L_i`` levels and
rounded; the code of a vector is its digits in the mixed radix ``(L_1, ..., L_d)``, so there are
``prod(L_i)`` codes and no codebook parameters (:func:`fsq_quantize`, :func:`fsq_indices`,
:func:`fsq_values`).

Shapes: ``z`` is ``(m, d)`` -- ``m`` vectors of width ``d`` -- and a codebook ``(K, d)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "EMA_EPS",
    "ema_update",
    "fsq_indices",
    "fsq_quantize",
    "fsq_values",
    "kmeans",
    "laplace_smoothed",
    "nearest_codes",
    "pick_rows",
    "straight_through",
]

EMA_EPS = 1e-5  # Sonnet's epsilon of the Laplace smoothing


def nearest_codes(z: torch.Tensor, codebook: torch.Tensor, distance: str = "l2") -> torch.Tensor:
    """The index of the nearest code of each vector.

    Parameters
    ----------
    z : tensor, shape (m, d)
    codebook : tensor, shape (K, d)
    distance : {'l2', 'cosine'}
        Squared Euclidean distance, or cosine similarity (largest wins).

    Returns
    -------
    tensor of int64, shape (m,)
        Ties go to the lowest index (so a codebook of equal codes uses code 0 only).
    """
    z, codebook = z.float(), codebook.float()
    if distance == "cosine":
        return (F.normalize(z, dim=1) @ F.normalize(codebook, dim=1).t()).argmax(dim=1)
    # ||z||^2 is the same for every code of a row: it does not change the argmin.
    scores = codebook.square().sum(dim=1) - 2.0 * (z @ codebook.t())
    return scores.argmin(dim=1)


def straight_through(z: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``q`` in the forward pass, identity gradient to ``z`` in the backward pass: ``z + sg(q - z)``."""
    return z + (q - z).detach()


def laplace_smoothed(counts: torch.Tensor, eps: float = EMA_EPS) -> torch.Tensor:
    """``(N_k + eps) / (n + K eps) * n`` with ``n = sum_k N_k``: counts that are never 0, with the same total.

    Parameters
    ----------
    counts : tensor, shape (K,)

    Returns
    -------
    tensor, shape (K,)
    """
    total = counts.sum()
    return (counts + eps) / (total + counts.numel() * eps) * total


def ema_update(
    count: torch.Tensor,
    total: torch.Tensor,
    batch_count: torch.Tensor,
    batch_sum: torch.Tensor,
    decay: float,
    eps: float = EMA_EPS,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step of the EMA codebook of the VQ-VAE paper (appendix A.1; see the module docstring).

    Parameters
    ----------
    count : tensor, shape (K,)
        ``N``, the moving average of the number of vectors assigned to each code.
    total : tensor, shape (K, d)
        ``m``, the moving average of their sums.
    batch_count : tensor, shape (K,)
        ``n_k``, this batch's vectors per code (summed over the processes of a data-parallel run).
    batch_sum : tensor, shape (K, d)
        ``s_k``, the sum of this batch's vectors assigned to each code.
    decay : float
        ``gamma`` in (0, 1).
    eps : float
        The Laplace smoothing's epsilon.

    Returns
    -------
    (count, total, codebook) : tensors, shapes (K,), (K, d), (K, d)
        The new ``N``, ``m`` and codes ``m_k / N~_k``.
    """
    count = decay * count + (1.0 - decay) * batch_count
    total = decay * total + (1.0 - decay) * batch_sum
    codebook = total / laplace_smoothed(count, eps).unsqueeze(1)
    return count, total, codebook


def pick_rows(m: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """``k`` row indices in ``[0, m)``, distinct when ``m >= k`` (CPU int64, shape (k,))."""
    if m >= k:
        return torch.randperm(m, generator=generator)[:k]
    return torch.randint(m, (k,), generator=generator)


def kmeans(
    z: torch.Tensor, k: int, generator: torch.Generator, iterations: int = 10, distance: str = "l2"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on the rows of ``z``, started by k-means++ (Arthur and Vassilvitskii 2007).

    k-means++ draws each starting centroid with probability proportional to the squared distance
    to the nearest one drawn so far, so two never start on the same cluster or the same row (data
    such as images' empty backgrounds repeat one vector many times).

    Parameters
    ----------
    z : tensor, shape (m, d)
    k : int
    generator : torch.Generator
        A CPU generator: the starting rows (the result is reproducible from its seed).
    iterations : int
    distance : {'l2', 'cosine'}
        With 'cosine' the rows are unit vectors and so are the centroids (spherical k-means).

    Returns
    -------
    (centroids, counts) : tensors, shapes (k, d) and (k,)
        A centroid whose cluster empties keeps its last position.
    """
    z = z.detach().float()
    if distance == "cosine":
        z = F.normalize(z, dim=1)
    centroids = _kmeans_plus_plus(z, k, generator)
    counts = torch.zeros(k, device=z.device)
    for _ in range(max(1, iterations)):
        idx = nearest_codes(z, centroids, distance)
        counts = torch.bincount(idx, minlength=k).float()
        sums = torch.zeros_like(centroids).index_add_(0, idx, z)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled].unsqueeze(1)
        if distance == "cosine":
            centroids = F.normalize(centroids, dim=1)
    return centroids, counts


def _kmeans_plus_plus(z: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """``k`` starting rows of ``z`` (m, d) by D^2 sampling; uniform draws once every row is a centroid."""
    m = z.shape[0]
    first = int(torch.randint(m, (1,), generator=generator))
    chosen = [first]
    nearest = (z - z[first]).square().sum(dim=1)
    for _ in range(1, k):
        weights = nearest.double().cpu()
        if not bool((weights > 0).any()):
            chosen.append(int(torch.randint(m, (1,), generator=generator)))
            continue
        row = int(torch.multinomial(weights, 1, generator=generator))
        chosen.append(row)
        nearest = torch.minimum(nearest, (z - z[row]).square().sum(dim=1))
    return z[torch.tensor(chosen, device=z.device)].clone()


# ---------------------------------------------------------------------- finite scalar quantization
_FSQ_EPS = 1e-3  # the paper's margin that keeps tanh's bound inside the outermost level


def _fsq_constants(levels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    half_l = (levels - 1) * (1 - _FSQ_EPS) / 2
    offset = torch.where(levels % 2 == 0, 0.5, 0.0)
    # atanh, not the paper's tan: bound(0) is then exactly -offset + offset = 0 (as vector-quantize-pytorch).
    shift = torch.atanh(offset / half_l)
    return half_l, offset, shift


def fsq_quantize(z: torch.Tensor, levels: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Bound each channel to its levels and round, with straight-through gradients.

    Computed in float32 whatever the autocast: in bfloat16 the bound of an 8-level channel
    (3.4965) rounds to 3.5 and the digits then leave their range.

    Parameters
    ----------
    z : tensor, shape (m, d)
    levels : sequence of int, length d
        Each at least 2.

    Returns
    -------
    (values, digits) : tensors, shapes (m, d), float32 and int64
        ``values`` are the rounded levels scaled to [-1, 1] (``level / (L // 2)``); ``digits`` are the
        levels as integers in ``[0, L)``.
    """
    lv = torch.tensor(list(levels), dtype=torch.float32, device=z.device)
    half_l, offset, shift = _fsq_constants(lv)
    bounded = torch.tanh(z.float() + shift) * half_l - offset
    rounded = bounded + (torch.round(bounded) - bounded).detach()
    half_width = torch.div(lv, 2, rounding_mode="floor")
    digits = (rounded.detach() + half_width).round().long()
    digits = torch.minimum(digits.clamp_min(0), lv.long() - 1)
    return rounded / half_width, digits


def fsq_indices(digits: torch.Tensor, levels: Sequence[int]) -> torch.Tensor:
    """Each row's code index: its digits in the mixed radix ``levels`` (first digit least significant).

    Parameters
    ----------
    digits : tensor of int64, shape (m, d)

    Returns
    -------
    tensor of int64, shape (m,)
        In ``[0, prod(levels))``.
    """
    basis = torch.tensor(_basis(levels), dtype=torch.int64, device=digits.device)
    return (digits.long() * basis).sum(dim=1)


def fsq_values(indices: torch.Tensor, levels: Sequence[int]) -> torch.Tensor:
    """The values in [-1, 1] of code ``indices``: the inverse of :func:`fsq_indices` then scaling.

    Parameters
    ----------
    indices : tensor of int64, shape (m,)

    Returns
    -------
    tensor of float32, shape (m, d)
    """
    basis = torch.tensor(_basis(levels), dtype=torch.int64, device=indices.device)
    lv = torch.tensor(list(levels), dtype=torch.int64, device=indices.device)
    digits = torch.div(indices.long().unsqueeze(1), basis, rounding_mode="floor") % lv
    half_width = torch.div(lv, 2, rounding_mode="floor")
    return (digits - half_width).float() / half_width.float()


def _basis(levels: Sequence[int]) -> list[int]:
    out, step = [], 1
    for level in levels:
        out.append(step)
        step *= int(level)
    return out
