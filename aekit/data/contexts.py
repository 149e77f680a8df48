"""Text contexts of token activations, for the unit browser's top examples.

A data set of token activations (one row per token, e.g. ``../shared/data/minilm-acts``) lists
its tokens in row order and cuts them into documents (the rows ``start .. start + length - 1``).
:func:`token_contexts` gives each row its token with up to ``window`` tokens on each side from
the same document, as a ``[before, token, after]`` triple of texts that
:func:`aekit.inspect.browse` shows with the token highlighted.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import DataError
from .validation import integer

__all__ = ["join_tokens", "token_contexts"]


def join_tokens(tokens: Sequence[str]) -> str:
    """Tokens as text: separated by spaces, WordPiece continuations (``'##ing'``) glued to the previous one.

    Examples
    --------
    >>> join_tokens(['thread', '##ing', '.', 'event'])
    'threading . event'
    """
    text = ""
    for token in tokens:
        if token.startswith("##") and len(token) > 2:
            text += token[2:]
        else:
            text += (" " if text else "") + token
    return text


def token_contexts(
    tokens: Sequence[str],
    starts: Sequence[int],
    lengths: Sequence[int],
    window: int = 8,
) -> list[list[str]]:
    """``[before, token, after]`` for every row: its token and up to ``window`` tokens each side.

    Parameters
    ----------
    tokens : sequence of str, length n
        The token of each row.
    starts, lengths : sequences of int, one per document
        Document ``d`` holds the rows ``starts[d] .. starts[d] + lengths[d] - 1``; a context
        never crosses a document's edge.  Rows in no document get their token alone.
    window : int
        Tokens on each side (8 is the usual feature-browser context).

    Returns
    -------
    list of [str, str, str], length n
        ``before`` ends with a space and ``after`` starts with one where the texts are separate
        words, so that ``''.join(triple)`` reads as the text.

    Examples
    --------
    >>> token_contexts(['a', 'b', '##c', 'd', 'e'], starts=[0, 3], lengths=[3, 2], window=1)
    [['', 'a', ' b'], ['a ', 'b', 'c'], ['b', 'c', ''], ['', 'd', ' e'], ['d ', 'e', '']]
    """
    window = integer("window", window, 0)
    n = len(tokens)
    starts_a = np.asarray(starts, dtype=np.int64).reshape(-1)
    lengths_a = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if starts_a.shape != lengths_a.shape:
        raise DataError(
            f"starts and lengths must have one entry per document, got {len(starts_a)} and {len(lengths_a)}"
        )
    if len(starts_a) and (starts_a.min() < 0 or (starts_a + lengths_a).max() > n or lengths_a.min() < 0):
        raise DataError(f"documents must lie within the {n} tokens, got starts/lengths outside 0..{n}")
    out = [["", str(token), ""] for token in tokens]
    for start, length in zip(starts_a.tolist(), lengths_a.tolist()):
        end = start + length
        for i in range(start, end):
            token = str(tokens[i])
            before = join_tokens(tokens[max(start, i - window) : i])
            after = join_tokens(tokens[i + 1 : min(end, i + window + 1)])
            glued = token.startswith("##") and bool(before)  # a word piece that continues the word before
            if before and not glued:
                before += " "
            if after and not str(tokens[i + 1]).startswith("##"):
                after = " " + after
            out[i] = [before, token[2:] if glued else token, after]
    return out
