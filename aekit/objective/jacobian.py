"""The contractive penalty's Jacobian norm, exact: in closed form for dense chains, else per example."""

from __future__ import annotations

import torch

from ..model.activations import ELEMENTWISE
from ..model.graph import Graph
from ..model.layers.dense import Dense
from .penalties import chain_jacobian_norm

__all__ = ["dense_chain_to", "jacobian_norm", "per_example_jacobian_norm"]


def jacobian_norm(graph: Graph, x: torch.Tensor, layer: str) -> torch.Tensor:
    """Mean over examples of ``||d layer:out / d x||_F^2``, exact, differentiable.

    In closed form when ``layer`` ends a chain of dense layers from the input,
    each with an elementwise activation (the usual contractive autoencoder, one
    layer deep or more); through one automatic Jacobian per example otherwise.

    Parameters
    ----------
    graph : Graph
    x : tensor, shape (n, *input_shape)
        The clean (uncorrupted) input batch.
    layer : str
        The code layer whose Jacobian is taken.

    Returns
    -------
    tensor, shape ()
    """
    chain = dense_chain_to(graph, layer)
    if chain is None:
        return per_example_jacobian_norm(graph, x, layer)
    slopes, a = [], x
    for dense in chain:
        pre = dense.transform(a)
        # f(pre), f'(pre); torch types jvp's result as 2 or 3 values (3 with has_aux)
        a, slope = torch.func.jvp(dense.activation, (pre,), (torch.ones_like(pre),))[:2]
        slopes.append(slope)
    return chain_jacobian_norm(slopes, [dense.w for dense in chain])


def dense_chain_to(graph: Graph, layer: str) -> list[Dense] | None:
    """The dense layers from the input to ``layer``, input side first, or None.

    None unless each is a plain dense layer (no batch norm, no constraint-free tricks)
    with an elementwise activation, the case :func:`jacobian_norm` has a closed form for.
    """
    chain, name = [], layer
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


def per_example_jacobian_norm(graph: Graph, x: torch.Tensor, layer: str) -> torch.Tensor:
    """:func:`jacobian_norm` for any code layer: one (code, input) Jacobian per example, shape ()."""

    def code(example: torch.Tensor) -> torch.Tensor:
        return graph(example.unsqueeze(0), stop=layer)[f"{layer}:out"].flatten()

    jac = torch.func.vmap(torch.func.jacrev(code))(x)
    return jac.square().flatten(1).sum(dim=1).mean()
