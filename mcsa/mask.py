"""``SparseMask`` and the kernels that lay out its positions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._jit import jit
from .target import PRESETS, Target, int_as_f32

DEFAULT_POSITION_LIMIT = 1 << 27
"""Largest mask built on the host by default: 134,217,728 positions (512 MiB)."""

POSITION_BYTES = 4
"""``size_of::<(u16, u16)>()``."""

U16_END = 1 << 16


class MaskTooLarge(ValueError):
    """A mask would hold more positions than the host-memory guard allows."""


def resolve_target(target: Target | str | None) -> Target:
    """A :class:`Target` from a preset name, a Target, or None (the host, ``x86_64-release``).

    Raises
    ------
    ValueError
        If the name is unknown.
    TypeError
        If ``target`` is of another type.
    """
    if target is None:
        return PRESETS["x86_64-release"]
    if isinstance(target, str):
        return Target.named(target)
    if not isinstance(target, Target):
        raise TypeError(f"target must be a Target or a preset name, got {type(target).__name__}")
    return target


def check_limit(count: int, limit: int, what: str) -> None:
    """Refuse to materialise more than ``limit`` positions.

    Raises
    ------
    MaskTooLarge
        With how to raise the limit and how to get the figures without a mask.
    """
    if count > limit:
        raise MaskTooLarge(
            f"{what} would hold {count:,} positions ({count * POSITION_BYTES / 2**20:,.0f} MiB on the host), "
            f"over the position limit of {limit:,}; raise it (position_limit= in Python, "
            "--position-limit on the command line), or use MincutSparseAttention.mask_stats() for "
            "num_positions and density without building the mask"
        )


def causal_positions(seq_len: int, target: Target) -> int:
    """``seq_len * (seq_len + 1) / 2`` on the target's ``usize``.

    Raises
    ------
    TargetPanic
        On overflow in a debug build.
    """
    return target.mul(seq_len, target.add(seq_len, 1)) // 2


def full_count(seq_len: int, target: Target) -> int:
    """Positions of ``SparseMask::full(seq_len)``, with the panics of its
    ``Vec::with_capacity(seq_len * seq_len)`` and the pushes that follow.

    Raises
    ------
    TargetPanic
        ``attempt to multiply with overflow`` (debug) or ``capacity overflow``.
    """
    capacity = target.mul(seq_len, seq_len)
    count = seq_len * (seq_len + 1) // 2
    target.vec_capacity_check(capacity, count, POSITION_BYTES)
    return count


@jit
def _full_positions(seq_len, out):
    n = 0
    for i in range(seq_len):
        for j in range(i + 1):
            out[n, 0] = i & 0xFFFF
            out[n, 1] = j & 0xFFFF
            n += 1


@jit
def ordered_positions(seq_len, bounds, tokens, intra, cross, out, fill, row_counts):
    """The sparse positions in ``BTreeSet`` order, without a set or a sort.

    Valid when no index can wrap: ``seq_len <= 65536`` and every boundary token
    ``<= 65532``, so boundaries are nondecreasing. Row ``i`` attends to the
    distinct tokens below its partition start ``lo`` (when a cross window
    reaches it) followed by ``lo..=i`` (intra); without intra, to the tokens
    ``<= i``. Returns the count; writes ``out`` only when ``fill``, and each
    row's count into ``row_counts`` unless it is empty.
    """
    uniq = np.empty(tokens.size, np.int64)
    n_uniq = 0
    for t in tokens:
        if n_uniq == 0 or uniq[n_uniq - 1] != t:
            uniq[n_uniq] = t
            n_uniq += 1
    reached = np.zeros(seq_len, np.bool_)
    if cross:
        for t in tokens:
            for offset in range(4):
                if t + offset < seq_len:
                    reached[t + offset] = True
    n = 0
    part = 0
    below = 0
    for i in range(seq_len):
        row_start = n
        lo = i + 1
        if intra:
            while part + 1 < bounds.size and bounds[part + 1] <= i:
                part += 1
            lo = np.int64(bounds[part])
        if reached[i]:
            while below < n_uniq and uniq[below] < lo:
                below += 1
            if fill:
                for u in range(below):
                    out[n + u, 0] = i
                    out[n + u, 1] = uniq[u]
            n += below
        if intra:
            if fill:
                for j in range(lo, i + 1):
                    out[n + j - lo, 0] = i
                    out[n + j - lo, 1] = j
            n += i + 1 - lo
        if row_counts.size:
            row_counts[i] = n - row_start
    return n


@jit
def _raw_row(row, tokens, ordered, out, n, fill):
    """Insert ``(row, prev)`` for every boundary token ``prev <= row``."""
    if not fill:
        return n + np.searchsorted(ordered, row, side="right")
    for u in tokens:
        if u <= row:
            out[n] = (row << 16) | np.int64(u)
            n += 1
    return n


@jit
def raw_positions(seq_len, bounds, tokens, intra, cross, out, fill):
    """Every pair the reference's loops insert, as ``q << 16 | k`` codes with
    ``as u16`` truncation and the wrapping ``boundary_token + offset``, in loop
    order (duplicates kept). Returns the count; writes ``out`` only when ``fill``.
    """
    n = 0
    if intra:
        for p in range(bounds.size):
            start = np.int64(bounds[p])
            end = np.int64(bounds[p + 1]) if p + 1 < bounds.size else seq_len
            for i in range(start, end):
                if fill:
                    for j in range(start, i + 1):
                        out[n + j - start] = ((i & 0xFFFF) << 16) | (j & 0xFFFF)
                n += i + 1 - start
    if cross:
        ordered = np.sort(tokens)
        for t in tokens:
            n = _raw_row(np.int64(t), tokens, ordered, out, n, fill)
            for offset in range(4):
                row = (np.int64(t) + offset) & 0xFFFF
                if row < seq_len:
                    n = _raw_row(row, tokens, ordered, out, n, fill)
    return n


@dataclass(frozen=True)
class MaskPlan:
    """How ``build_mask`` lays out a mask, before any position exists.

    Attributes
    ----------
    seq_len : int
    sparse : bool
        The sparse path is taken (else ``SparseMask::full``).
    boundaries, tokens : numpy.ndarray
        uint16 partition boundaries and boundary tokens (empty on the full path).
    intra, cross : bool
        Which of the two loops of ``build_sparse_positions`` insert anything.
    ordered : bool
        No index can wrap, so positions can be generated in order.
    """

    seq_len: int
    sparse: bool
    boundaries: np.ndarray
    tokens: np.ndarray
    intra: bool
    cross: bool
    ordered: bool

    def insertion_codes(self, limit: int | None = None) -> np.ndarray:
        """Every ``(q, k)`` the reference inserts into its ``BTreeSet``, in
        insertion order and with repeats, as uint32 ``q << 16 | k``.

        Raises
        ------
        MaskTooLarge
            If there are more than ``limit`` insertions (when a limit is given).
        """
        args = (self.seq_len, self.boundaries, self.tokens, self.intra, self.cross)
        count = raw_positions(*args, np.zeros(0, np.uint32), False)
        if limit is not None:
            check_limit(count, limit, f"build_mask(seq_len={self.seq_len}) with wrapping indices")
        codes = np.empty(count, np.uint32)
        raw_positions(*args, codes, True)
        return codes


def distinct_codes(codes: np.ndarray) -> np.ndarray:
    """The distinct codes, ascending: the ``BTreeSet``'s order. Sorts and drops
    repeats, which is faster than ``np.unique``'s hash pass."""
    ordered = np.sort(codes)
    first = np.ones(ordered.size, np.bool_)
    first[1:] = ordered[1:] != ordered[:-1]
    return ordered[first]


@dataclass(frozen=True)
class MaskStats:
    """What ``build_mask`` would return, without its positions.

    Attributes
    ----------
    sparse : bool
        The sparse path was taken (else ``SparseMask::full``).
    num_positions : int
        ``mask.num_positions()``.
    density : numpy.float32
        ``mask.density``.
    partition_boundaries, boundary_tokens : numpy.ndarray
        uint16, as in the mask.
    """

    sparse: bool
    num_positions: int
    density: np.float32
    partition_boundaries: np.ndarray
    boundary_tokens: np.ndarray

    def sparsity(self) -> np.float32:
        """``1.0 - density`` in f32."""
        return np.float32(1.0) - self.density


def _u16_array(values, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.size == 0:
        return np.zeros(arr.shape, np.uint16)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{what} must hold integers, got dtype {arr.dtype}")
    if arr.min() < 0 or arr.max() > 0xFFFF:
        raise ValueError(f"{what} must hold u16 values (0..=65535), got {arr.min()}..={arr.max()}")
    return arr.astype(np.uint16)


class SparseMask:
    """The reference's ``SparseMask``.

    Parameters
    ----------
    positions : array_like, shape (N, 2)
        ``(query, key)`` pairs as u16, in the order the mask holds them.
    density : float
        ``mask.density`` (held as float32).
    partition_boundaries, boundary_tokens : array_like of u16
    target : Target or str, optional
        The build the mask belongs to; the default for :meth:`max_positions`.

    Raises
    ------
    TypeError
        If positions are not integers.
    ValueError
        If positions are not (N, 2) or not u16.
    """

    def __init__(self, positions, density, partition_boundaries=(), boundary_tokens=(), target=None):
        positions = _u16_array(positions, "positions")
        if positions.size == 0:
            positions = positions.reshape(0, 2)
        if positions.ndim != 2 or positions.shape[1] != 2:
            raise ValueError(f"positions must have shape (N, 2), got {positions.shape}")
        self.positions = positions
        self.density = np.float32(density)
        self.partition_boundaries = _u16_array(partition_boundaries, "partition_boundaries").reshape(-1)
        self.boundary_tokens = _u16_array(boundary_tokens, "boundary_tokens").reshape(-1)
        self.target = None if target is None else resolve_target(target)

    def __repr__(self) -> str:
        return (
            f"SparseMask(num_positions={self.num_positions}, density={self.density}, "
            f"partition_boundaries={self.partition_boundaries.tolist()}, "
            f"boundary_tokens={self.boundary_tokens.tolist()})"
        )

    @property
    def num_positions(self) -> int:
        """``mask.num_positions()``."""
        return len(self.positions)

    def sparsity(self) -> np.float32:
        """``1.0 - density`` in f32."""
        return np.float32(1.0) - self.density

    def max_positions(self, seq_len: int, target: Target | str | None = None) -> int:
        """``seq_len * (seq_len + 1) / 2`` on the target's ``usize``.

        Raises
        ------
        TargetPanic
            On overflow in a debug build.
        """
        target = resolve_target(target or self.target)
        return causal_positions(target.check_usize(seq_len, "seq_len"), target)

    def can_attend(self, query_pos: int, key_pos: int) -> bool:
        """Whether ``(query_pos, key_pos)`` is in the mask (``positions.contains``)."""
        pair = _u16_array([query_pos, key_pos], "query_pos/key_pos")
        return bool(np.any((self.positions[:, 0] == pair[0]) & (self.positions[:, 1] == pair[1])))

    def stats(self) -> MaskStats:
        """This mask's figures as :class:`MaskStats`; ``sparse`` when it has two or more
        partitions, as every mask of ``build_mask``'s sparse path has."""
        sparse = self.partition_boundaries.size >= 2
        return MaskStats(sparse, self.num_positions, self.density, self.partition_boundaries, self.boundary_tokens)

    @classmethod
    def empty(cls) -> "SparseMask":
        """``SparseMask::empty()``."""
        return cls(np.zeros((0, 2), np.uint16), 0.0)

    @classmethod
    def full(
        cls, seq_len: int, target: Target | str | None = None, position_limit: int = DEFAULT_POSITION_LIMIT
    ) -> "SparseMask":
        """``SparseMask::full(seq_len)``: every causal pair, ``as u16`` (so indices
        wrap past 65535 and pairs repeat, as the firmware's ``Vec`` holds them).

        Raises
        ------
        TargetPanic
            ``attempt to multiply with overflow`` (debug) or ``capacity overflow``
            where ``Vec::with_capacity(seq_len * seq_len)`` fails on the target.
        MaskTooLarge
            If the mask would exceed ``position_limit``.
        """
        target = resolve_target(target)
        seq_len = target.check_usize(seq_len, "seq_len")
        count = full_count(seq_len, target)
        check_limit(count, position_limit, f"SparseMask.full({seq_len})")
        positions = np.empty((count, 2), np.uint16)
        _full_positions(seq_len, positions)
        return cls(positions, 1.0, [0], [], target)


def sparse_density(count: int, seq_len: int, target: Target) -> np.float32:
    """``positions.len() as f32 / full_positions as f32`` with the saturating
    ``seq_len * (seq_len + 1) / 2``, or 0.0 when that is 0."""
    full = target.saturating_mul(seq_len, target.saturating_add(seq_len, 1)) // 2
    return int_as_f32(count) / int_as_f32(full) if full > 0 else np.float32(0.0)
