"""The masks compared with the reference, as boolean (T, T) matrices (True = attend).

Every baseline except ``reference+sinks`` holds exactly the reference's number
of positions N. Position-only masks are the same for every head; the two
oracles (``top-k-row``, ``top-n``) are per head, from the dense probabilities
(:func:`mcsa.app.quality.kernels.oracle_orders`). Each position-only family is
the first N positions of a fixed order (``*_order``); :func:`row_keys` and
:func:`row_counts` give that order row by row, for the metric kernels.
"""

from __future__ import annotations

import enum

import numpy as np

from mcsa.core.attention import MincutSparseAttention
from mcsa.core.packets import GatePacket

A_SHAPE_SINKS = 4
"""Sink columns of the A-shape baseline (StreamingLLM / MInference)."""


class Family(enum.Enum):
    """A mask family of the comparison."""

    REFERENCE = "reference"
    """mcsa's own ``build_mask`` for the gate (the simulated firmware's mask)."""
    SINKS = "reference+sinks"
    """The reference plus keys ``0..S-1`` for every row (a variant, more positions)."""
    WINDOW = "window"
    """The N causal positions nearest the diagonal, ties going to later queries."""
    A_SHAPE = "a-shape"
    """4 sink columns first, then the window's distance order."""
    STRIDED = "strided"
    """A local window of l keys plus every l-th earlier key, l the smallest that fits N."""
    TOP_K_ROW = "top-k-row"
    """Oracle: per row, the highest-probability keys, as many as the reference row has."""
    TOP_N = "top-n"
    """Oracle ceiling: the head's N highest-probability causal positions."""


FAMILIES = tuple(f.value for f in Family)


def reference_mask(sim: MincutSparseAttention, gate: GatePacket, seq_len: int):
    """``(SparseMask, dense bool matrix)`` of ``sim.build_mask(gate, seq_len)``.

    Raises
    ------
    ValueError
        If the mask reaches a position outside the causal (T, T) square.
    """
    mask = sim.build_mask(gate, seq_len)
    rows = mask.positions[:, 0].astype(np.int64)
    cols = mask.positions[:, 1].astype(np.int64)
    if mask.num_positions and (rows.max() >= seq_len or np.any(cols > rows)):
        raise ValueError("the reference mask holds a position outside the causal square")
    dense = np.zeros((seq_len, seq_len), bool)
    dense[rows, cols] = True
    return mask, dense


def _causal(seq_len: int):
    i, j = np.tril_indices(seq_len)
    return i, j


def causal_order(seq_len: int, *keys) -> np.ndarray:
    """The causal positions (indices into ``np.tril_indices``) in lexicographic
    order of ``keys`` (each an array over them; the first key is the most significant)."""
    return np.lexsort(tuple(reversed(keys)))


def window_order(seq_len: int) -> np.ndarray:
    """The window's order: smallest ``i - j`` first, ties to later queries."""
    i, j = _causal(seq_len)
    return causal_order(seq_len, i - j, -i)


def a_shape_order(seq_len: int, sinks: int = A_SHAPE_SINKS) -> np.ndarray:
    """Sink columns ``j < sinks`` first, then the window's order."""
    i, j = _causal(seq_len)
    return causal_order(seq_len, j >= sinks, i - j, -i)


def strided_order(seq_len: int, stride: int) -> np.ndarray:
    """The core pattern ``(i - j) < l or (i - j) % l == 0`` first, each part in the window's order."""
    i, j = _causal(seq_len)
    d = i - j
    return causal_order(seq_len, ~((d < stride) | (d % stride == 0)), d, -i)


def first_n(seq_len: int, order: np.ndarray, n: int) -> np.ndarray:
    """The (T, T) mask of the first ``n`` positions of ``order``."""
    i, j = _causal(seq_len)
    take = order[:n]
    out = np.zeros((seq_len, seq_len), bool)
    out[i[take], j[take]] = True
    return out


def row_keys(seq_len: int, order: np.ndarray) -> np.ndarray:
    """(T, T) int32: row i's keys in the order ``order`` takes them (first i + 1 entries)."""
    i, j = _causal(seq_len)
    by_row = order[np.argsort(i[order], kind="stable")]  # rows ascending, each in order: the tril layout
    keys = np.zeros((seq_len, seq_len), np.int32)
    keys[i, j] = j[by_row]
    return keys


def row_counts(seq_len: int, order: np.ndarray, n: int) -> np.ndarray:
    """(T,) int32: how many of the first ``n`` positions of ``order`` each row holds."""
    i, _ = _causal(seq_len)
    return np.bincount(i[order[:n]], minlength=seq_len).astype(np.int32)


def window(seq_len: int, n: int) -> np.ndarray:
    """The ``n`` causal positions with the smallest ``i - j``, ties to later queries."""
    return first_n(seq_len, window_order(seq_len), n)


def a_shape(seq_len: int, n: int, sinks: int = A_SHAPE_SINKS) -> np.ndarray:
    """Sink columns ``j < sinks`` first, then the window's distance order."""
    return first_n(seq_len, a_shape_order(seq_len, sinks), n)


def stride_for(seq_len: int, n: int) -> int:
    """The smallest l whose window-l plus every-l-th key pattern holds at most ``n``
    positions (or the l with the fewest, when none fits)."""
    ls = np.arange(1, max(seq_len, 1) + 1)[:, None]
    rows = np.arange(seq_len)[None, :]
    counts = (np.minimum(rows + 1, ls) + rows // ls).sum(axis=1)
    fits = np.flatnonzero(counts <= n)
    return int(ls[fits[0], 0] if fits.size else ls[np.argmin(counts), 0])


def strided(seq_len: int, n: int) -> np.ndarray:
    """Local window of l keys plus every l-th earlier key (``(i - j) % l == 0``),
    topped up to ``n`` with the nearest remaining keys."""
    return first_n(seq_len, strided_order(seq_len, stride_for(seq_len, n)), n)


def distance_keys(seq_len: int) -> np.ndarray:
    """(T, T) int32: row i's keys nearest first, ``i, i - 1, ..., 0``."""
    i, c = np.indices((seq_len, seq_len))
    return np.where(c <= i, i - c, 0).astype(np.int32)


def distance_split(mask: np.ndarray):
    """Each row of a causal mask as its nearest keys ``i, ..., i - L + 1`` (all in it)
    plus the rest: ``(L (T,), rest (T, E), rest counts (T,))``, int32."""
    t = mask.shape[0]
    i, c = np.indices((t, t))
    by_distance = np.where(c <= i, mask[i, np.maximum(i - c, 0)], False)
    lengths = np.argmin(np.concatenate([by_distance, np.zeros((t, 1), bool)], axis=1), axis=1)
    rest = mask & (c <= (np.arange(t) - lengths)[:, None])
    counts = rest.sum(axis=1)
    keys = np.argsort(~rest, axis=1, kind="stable")[:, : counts.max(initial=0)]
    return lengths.astype(np.int32), keys.astype(np.int32), counts.astype(np.int32)


def with_sinks(mask: np.ndarray, sinks: int) -> np.ndarray:
    """``mask`` plus the causal keys ``0..sinks-1`` of every row."""
    out = mask.copy()
    out[:, :sinks] |= np.tril(np.ones((mask.shape[0], min(sinks, mask.shape[0])), bool))
    return out
