"""Running a model on data of any size: checked, preprocessed batches, in memory or streamed.

NumPy arrays, tensors and lists are checked as a whole and run in batches of
:data:`INFERENCE_BATCH` rows.  Streamable inputs (``np.memmap``, h5py-like datasets:
see :func:`aekit.data.sources.is_streamable`) are read, checked and preprocessed one
block of rows at a time, as training reads them, so that only the outputs -- never
the whole input -- sit in memory.  Streamed outputs equal the in-memory ones bit for
bit (whole batches per block).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from ..data.checks import InputChecker, check_array, split_data, to_numpy
from ..data.sources import StreamingSource, is_streamable
from ..errors import DataError
from .graph import Graph

__all__ = ["INFERENCE_BATCH", "BatchedInference", "r_squared"]

INFERENCE_BATCH = 4096


class BatchedInference:
    """Batched, streamed inference and scoring for a model that has a graph.

    A base class of :class:`aekit.Autoencoder`: it needs the attributes ``graph``
    (:class:`~aekit.model.graph.Graph`), ``device`` and ``preprocessing`` (a fitted
    step or None), and the methods ``_check_outputs_exist()`` and ``predict(x)``.
    """

    graph: Graph
    device: torch.device
    preprocessing: Any
    weighted: bool

    def _check_outputs_exist(self) -> None:  # pragma: no cover - defined by the model
        raise NotImplementedError

    def predict(self, x: Any) -> np.ndarray:  # pragma: no cover - defined by the model
        """The reconstruction of ``x`` (see :meth:`aekit.Autoencoder.predict`)."""
        raise NotImplementedError

    @property
    def input_checker(self) -> InputChecker:
        """The :class:`~aekit.data.checks.InputChecker` of this model's input (shape, device, preprocessing)."""
        return InputChecker(tuple(self.graph.input_shape), self.graph.input_name, self.device, self.preprocessing)

    def _split(
        self, data: Any, name: str = "x", w: Any = None, weights: bool = False, shape: Sequence[int] | None = None
    ) -> tuple[Any, Any]:
        """``(x, w)`` from ``data`` in any form the public methods take: ``x``, ``[x]``, ``[x, w]``.

        Every public method that takes data reads it here first (:func:`aekit.data.checks.split_data`);
        ``weights``: the method takes weights, given as ``w`` or in ``[x, w]``; ``shape``: one
        example's shape (default: the input's).
        """
        example = self.graph.input_shape if shape is None else shape
        x, pair_w = split_data(data, name, weighted=self.weighted, weights=weights and w is None, example_shape=example)
        return x, (pair_w if w is None else w)

    # ------------------------------------------------------------------ inference
    # Inputs come in two kinds.  NumPy arrays, tensors and lists are checked as a
    # whole (``_check``) and run in batches of INFERENCE_BATCH.  Streamable ones
    # (``np.memmap``, h5py-like datasets: see ``aekit.streaming.is_streamable``)
    # are read, checked and preprocessed one block of rows at a time, as training
    # reads them, so that only the outputs -- never the whole input -- sit in memory.
    def _check(
        self, x: Any, name: str = "x", transform: bool = True, rows: Sequence[int] | None = None
    ) -> torch.Tensor:
        """``x`` checked (:func:`check_array`; ``rows`` numbers its rows in messages), preprocessed if ``transform``."""
        return self.input_checker.data(x, name=name, transform=transform, rows=rows)

    def _check_weights(self, w: Any, name: str = "w", rows: Sequence[int] | None = None) -> torch.Tensor:
        """Per-value weights ``w``, shaped like the input, finite and >= 0, as a tensor."""
        return self.input_checker.weights(w, name=name, rows=rows)

    def _preprocess(self, tensor: torch.Tensor, name: str = "x") -> torch.Tensor:
        """Apply the attached preprocessing step to a checked tensor of data (not weights, not codes)."""
        return self.input_checker.preprocess(tensor, name)

    def _batches(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        for start in range(0, x.shape[0], INFERENCE_BATCH):
            yield x[start : start + INFERENCE_BATCH]

    def _stream(
        self,
        x: Any,
        name: str = "x",
        shape: tuple[int, ...] | None = None,
        layer: str | None = None,
    ) -> StreamingSource:
        """A :class:`StreamingSource` over streamable ``x`` whose blocks are checked but not preprocessed.

        Parameters
        ----------
        x : array-like, shape (n, features) or (n, *shape)
            Streamable data (``is_streamable(x)``).
        name : str
            The argument's name, for error messages.
        shape, layer : optional
            The per-example shape expected and the layer named in errors
            (default: the input layer).

        Raises
        ------
        DataError
            If ``x`` has the wrong rank, dtype or size, or no rows (the messages
            of the in-memory path); bad values surface when their block is read.
        """
        shape = tuple(self.graph.input_shape if shape is None else shape)
        layer = self.graph.input_name if layer is None else layer

        def check(block: Any, block_name: str, rows: Sequence[int]) -> torch.Tensor:
            return check_array(block, shape, name=block_name, layer=layer, device=self.device, rows=rows)

        source = StreamingSource(x, check=check, name=name)
        # dtype, rank and feature count are checked on an empty slice before any
        # row is read, so a wrong file fails at once with today's one-line message.
        # (A private copy: torch warns about the read-only views a memmap gives.)
        check_array(np.array(x[:0]), shape, name=name, layer=layer, allow_empty=len(source) > 0)
        if source.block_rows > INFERENCE_BATCH:
            # Whole batches per block put the batch boundaries where the in-memory
            # path puts them, so streamed outputs match it bit for bit.
            source.block_rows -= source.block_rows % INFERENCE_BATCH
        return source

    @staticmethod
    def _blocks(source: StreamingSource) -> Iterator[tuple[int, int, torch.Tensor]]:
        """``(start, stop, checked block)`` for the rows of ``source``, in order."""
        for a in range(source.start, source.stop, source.block_rows):
            b = min(a + source.block_rows, source.stop)
            block, _ = source.read(a, b)
            yield a, b, block

    def _inputs(self, x: Any) -> Iterator[torch.Tensor]:
        """Checked, preprocessed batches of ``x`` (streamed block by block when ``x`` is streamable)."""
        if not is_streamable(x):
            yield from self._batches(self._check(x))
            return
        for _, _, block in self._blocks(self._stream(x)):
            yield from self._batches(self._preprocess(block))

    def _run(self, batches: Iterable[torch.Tensor], fn: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
        was_training = self.graph.training
        self.graph.eval()
        try:
            parts = []
            for batch in batches:
                # Only the model runs in inference mode: blocks are read and
                # preprocessed outside it, so tensors the preprocessing step
                # caches stay usable by training later.
                with torch.inference_mode():
                    parts.append(to_numpy(fn(batch)))
            return np.concatenate(parts, axis=0)
        finally:
            self.graph.train(was_training)

    def _inverse(self, y: np.ndarray) -> np.ndarray:
        if self.preprocessing is not None:
            if y.ndim > 2:  # images: preprocessing works on flat rows
                return self.preprocessing.inverse_transform(y.reshape(y.shape[0], -1)).reshape(y.shape)
            return self.preprocessing.inverse_transform(y)
        return y

    def _output(self, batch: torch.Tensor) -> torch.Tensor:
        """The output layer's activations for a (preprocessed) batch."""
        return self.graph(batch)[f"{self.graph.output_name}:out"]

    def _reconstruct(self, block: torch.Tensor) -> np.ndarray:
        """:meth:`predict` of one checked, not yet preprocessed block of rows."""
        return self._inverse(self._run(self._batches(self._preprocess(block)), self._output))

    def feed_forward(self, x: Any) -> dict[str, np.ndarray]:
        """Every layer's ``'name:pre'`` and ``'name:out'`` for ``x`` (plus ``'in:out'``).

        A memory-mapped or other streamable ``x`` is read one block of rows at a
        time; note that ``'in:out'`` is the whole (preprocessed) input.
        """
        x, _ = self._split(x)
        was_training = self.graph.training
        self.graph.eval()
        parts: dict[str, list[np.ndarray]] = {}
        try:
            for batch in self._inputs(x):
                with torch.inference_mode():
                    for key, value in self.graph(batch).items():
                        parts.setdefault(key, []).append(to_numpy(value))
        finally:
            self.graph.train(was_training)
        return {key: np.concatenate(values, axis=0) for key, values in parts.items()}

    def score(self, x: Any, w: Any = None) -> float:
        """R^2 of the reconstruction: ``1 - SS_res / SS_tot`` with per-feature means.

        Equals scikit-learn's ``r2_score(x, predict(x), multioutput='variance_weighted')``
        when unweighted.  With ``w`` (shaped like ``x``) both sums are weighted.
        A memory-mapped or other streamable ``x`` (and ``w``) is read one block
        of rows at a time, in one pass.  A weighted model also takes ``[x, w]``.
        """
        x, w = self._split(x, w=w, weights=True)
        if is_streamable(x):
            return self._score_streamed(x, w)
        checked = check_array(x, self.graph.input_shape, name="x", layer=self.graph.input_name)
        target = checked.flatten(1).double().numpy()
        pred = self.predict(x).reshape(target.shape[0], -1).astype(np.float64)
        if pred.shape != target.shape:
            raise DataError(f"score needs an output shaped like the input, got {pred.shape} vs {target.shape}")
        weight = (
            np.ones_like(target)
            if w is None
            else to_numpy(self._check_weights(w)).astype(np.float64).reshape(target.shape)
        )
        mean = (weight * target).sum(axis=0) / np.maximum(weight.sum(axis=0), 1e-12)
        ss_res = (weight * (target - pred) ** 2).sum()
        ss_tot = (weight * (target - mean) ** 2).sum()
        return r_squared(float(ss_res), float(ss_tot))

    def _score_streamed(self, x: Any, w: Any) -> float:
        """:meth:`score` for streamable ``x``: per-block sums merged without a second pass.

        The per-feature weighted means and squared deviations of the blocks are
        combined with Chan et al.'s pairwise update, which is as accurate as the
        two-pass in-memory formula (a running ``sum(w x^2) - mean^2`` would
        cancel catastrophically for data far from zero).
        """
        self._check_outputs_exist()
        source = self._stream(x)
        n = len(source)
        n_features = math.prod(self.graph.input_shape)
        w_shape = tuple(getattr(w, "shape", np.shape(w))) if w is not None else None
        if w_shape is not None and (len(w_shape) < 1 or w_shape[0] != n or math.prod(w_shape) != n * n_features):
            raise DataError(f"w must be shaped like x ({n} rows of {n_features} values), got shape {w_shape}")
        total = mean = m2 = np.zeros(n_features)
        ss_res = 0.0
        for a, b, raw in self._blocks(source):
            target = to_numpy(raw).reshape(b - a, -1).astype(np.float64)
            pred = self._reconstruct(raw).reshape(b - a, -1).astype(np.float64)
            if pred.shape != target.shape:
                raise DataError(
                    f"score needs an output shaped like the input, got {(n, pred.shape[1])} vs {(n, target.shape[1])}"
                )
            weight = (
                np.ones_like(target)
                if w is None
                else to_numpy(self._check_weights(np.asarray(w[a:b]), "w", range(a, b)))
                .astype(np.float64)
                .reshape(target.shape)
            )
            ss_res += float((weight * (target - pred) ** 2).sum())
            block_total = weight.sum(axis=0)
            block_mean = (weight * target).sum(axis=0) / np.maximum(block_total, 1e-12)
            block_m2 = (weight * (target - block_mean) ** 2).sum(axis=0)
            merged = total + block_total
            share = block_total / np.maximum(merged, 1e-12)
            delta = block_mean - mean
            m2 = m2 + block_m2 + delta**2 * total * share
            mean = mean + delta * share
            total = merged
        return r_squared(ss_res, float(m2.sum()))


def r_squared(ss_res: float, ss_tot: float) -> float:
    """``1 - SS_res / SS_tot``; for constant data 1 if the reconstruction is exact, else 0."""
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else 0.0)
