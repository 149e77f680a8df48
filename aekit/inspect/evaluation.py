"""``aekit.evaluate(net, x)``: a model's metrics over all of ``x``, with exact definitions.

The definitions are those of :mod:`aekit.objective.metrics`.  Reconstructions are
compared with ``x`` in the data's own space (after the inverse of the model's
preprocessing step, as :meth:`~aekit.Autoencoder.predict` returns them), so
``evaluate(net, x)['r2'] == net.score(x)`` up to rounding.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..data.sources import is_streamable
from ..model.inference import INFERENCE_BATCH
from ..objective.metrics import Metric, MetricBatch, build_metrics, compute_all, update_all

if TYPE_CHECKING:
    from ..autoencoder import Autoencoder

__all__ = ["DEFAULT_METRICS", "default_metrics", "evaluate", "run_metrics"]

DEFAULT_METRICS = ("mse", "fvu", "r2", "explained_variance", "cosine", "l2_ratio")


def default_metrics(net: Autoencoder) -> list[str]:
    """The metrics :func:`evaluate` reports when none are named.

    They are the reconstruction's, plus the code layer's ``l0`` and ``dead_fraction`` when the
    code is a hidden layer (other than a quantizer), plus ``usage`` and ``perplexity`` of each
    quantizer layer; or the code's ``kl`` and ``active_units`` when it is a gaussian layer.
    """
    names = list(DEFAULT_METRICS)
    quantizers = [name for name, layer in net.graph.layers.items() if hasattr(layer, "codebook_size")]
    if net.code_layer in getattr(net, "latent_layers", ()):  # a VAE's latent: its KL and active units
        names += ["kl", "active_units"]
    elif net.code_layer in net.graph.hidden_names and net.code_layer not in quantizers:
        names += ["l0", "dead_fraction"]
    # Codebook usage and perplexity of every quantizer layer (vq, fsq), over all of x.
    names += [f"{metric}:{name}" for name in quantizers for metric in ("usage", "perplexity")]
    return names


@torch.inference_mode()
def evaluate(net: Autoencoder, x: Any, w: Any = None, metrics: Sequence[str] | None = None) -> dict[str, float]:
    """The model's metrics over all of ``x`` (see :mod:`aekit.objective.metrics` for each definition).

    Parameters
    ----------
    net : Autoencoder
    x : array-like, shape (n, features) or (n, *input_shape)
        Data as the model takes it (before its preprocessing step); a memory-mapped or other
        streamable ``x`` (e.g. ``load_data(..., mmap=True)``) is read one block of rows at a time.
    w : array-like, optional, shape like ``x``
        Per-value weights for ``mse``, ``fvu`` and ``r2``.
    metrics : sequence of str, optional
        Metric names (``'fvu'``, ``'l0:hid2'``, ...); default :func:`default_metrics`.

    Returns
    -------
    dict of str to float
        One figure per metric, computed over every row of ``x`` (not averaged over batches).

    Examples
    --------
    >>> import numpy as np, aekit
    >>> net = aekit.Autoencoder([8, (4, 'relu'), (8, 'tied')], rng=0)
    >>> sorted(aekit.evaluate(net, np.ones((10, 8), 'float32')))
    ['cosine', 'dead_fraction', 'explained_variance', 'fvu', 'l0', 'l2_ratio', 'mse', 'r2']
    """
    names = default_metrics(net) if metrics is None else metrics
    chosen = build_metrics(names, dict(net.graph.layers.items()), net.code_layer)
    return compute_all(run_metrics(net, x, chosen, w))


@torch.inference_mode()
def run_metrics(net: Autoencoder, x: Any, chosen: dict[str, Metric], w: Any = None) -> dict[str, Metric]:
    """Reset ``chosen`` and update it with every row of ``x``, in eval mode; returns ``chosen``.

    For figures beyond a metric's ``compute()`` (e.g. :meth:`~aekit.objective.reconstruction.Density.per_unit`).

    Parameters
    ----------
    net : Autoencoder
    x : array-like or streamable, shape (n, *input_shape)
    chosen : dict of str to Metric
        As :func:`aekit.objective.metrics.build_metrics` makes them.
    w : array-like, optional, shape like ``x``
    """
    net._check_outputs_exist()
    for metric in chosen.values():
        metric.reset()
    graph, checker = net.graph, net.input_checker
    output = graph.output_name
    was_training = graph.training
    graph.eval()
    try:
        for raw, weight in _raw_blocks(net, x, w):
            for start in range(0, raw.shape[0], INFERENCE_BATCH):
                target = raw[start : start + INFERENCE_BATCH]
                outputs = dict(graph(checker.preprocess(target)))
                recon = outputs[f"{output}:out"]
                if net.preprocessing is not None:  # back to the data's space, as predict() returns it
                    flat = net.preprocessing.inverse_transform(recon.flatten(1).cpu().numpy())
                    outputs[f"{output}:out"] = torch.as_tensor(flat, device=recon.device).reshape(recon.shape)
                batch_weight = None if weight is None else weight[start : start + INFERENCE_BATCH]
                update_all(chosen, MetricBatch(outputs, target, batch_weight, output))
    finally:
        graph.train(was_training)
    return chosen


def _raw_blocks(net: Autoencoder, x: Any, w: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """``(rows, weights)`` of ``x``, checked but not preprocessed.

    All at once, or block by block for streamable ``x`` (a memmap, a lazy ``.safetensors``
    tensor), as :meth:`~aekit.Autoencoder.predict` reads it.
    """
    checker = net.input_checker
    if not is_streamable(x):
        yield checker.data(x, transform=False), None if w is None else checker.weights(w)
        return
    for a, b, block in net._blocks(net._stream(x)):
        yield block, None if w is None else checker.weights(np.asarray(w[a:b]), rows=range(a, b))
