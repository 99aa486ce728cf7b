"""The masks compared with the reference, as boolean (T, T) matrices (True = attend).

Every baseline except ``reference+sinks`` holds exactly the reference's number
of positions N. Position-only masks are the same for every head; the two
oracles (``top-k-row``, ``top-n``) are per head, from the dense probabilities
(:func:`mcsa.app.quality.kernels.oracle_orders`). For the metric kernels,
:func:`distance_split` takes a position-only mask apart into each row's nearest
keys and the rest.
"""

from __future__ import annotations

import enum

from typing import TYPE_CHECKING

import numpy as np

from mcsa.core.packets import GatePacket

if TYPE_CHECKING:  # (the simulator: loaded by the work, not by the command line's options)
    from mcsa.core.attention import MincutSparseAttention

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

DEFAULT_GATE = GatePacket(lambda_=200, lambda_prev=200)
"""The gate of the reference mask: lambda = lambda_prev = 200, no edges, no concentration, no flags."""


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


def _first_n(seq_len: int, n: int, *keys) -> np.ndarray:
    """The first ``n`` causal positions in lexicographic order of ``keys``
    (each an array over ``np.tril_indices``; the first key is the most significant)."""
    i, j = _causal(seq_len)
    order = np.lexsort(tuple(k for k in reversed(keys)))
    take = order[:n]
    out = np.zeros((seq_len, seq_len), bool)
    out[i[take], j[take]] = True
    return out


def window(seq_len: int, n: int) -> np.ndarray:
    """The ``n`` causal positions with the smallest ``i - j``, ties to later queries."""
    i, j = _causal(seq_len)
    return _first_n(seq_len, n, i - j, -i)


def a_shape(seq_len: int, n: int, sinks: int = A_SHAPE_SINKS) -> np.ndarray:
    """Sink columns ``j < sinks`` first, then the window's distance order."""
    i, j = _causal(seq_len)
    return _first_n(seq_len, n, j >= sinks, i - j, -i)


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
    stride = stride_for(seq_len, n)
    i, j = _causal(seq_len)
    d = i - j
    return _first_n(seq_len, n, ~((d < stride) | (d % stride == 0)), d, -i)


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
