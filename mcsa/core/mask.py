"""``SparseMask`` and the kernels that lay out its positions."""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass

import numpy as np

from ._jit import jit
from .checks import check_int
from .rustvec import check_growth
from .errors import DEFAULT_POSITION_LIMIT, MAX_HOST_POSITIONS, POSITION_BYTES, MaskTooLarge
from .target import Target, f32_of, int_as_f32, resolve_target

U16_END = 1 << 16


def position_limit_arg(value) -> int:
    """Validate a ``position_limit`` argument.

    Raises
    ------
    TypeError
        If it is not an integer.
    ValueError
        If it is negative.
    """
    return check_int(value, "position_limit", 0)


def takes_sparse_path(seq_len, partition_count, lambda_):
    """The reference's ``should_use_sparse``: ``seq_len >= 16``, two or more
    partitions and ``lambda >= 30``. On Python or NumPy integers (a bool), or
    elementwise on arrays (a bool array)."""
    return (seq_len >= 16) & (partition_count >= 2) & (lambda_ >= 30)


def check_limit(count: int, limit: int, what: str, noun: str = "positions") -> None:
    """Refuse to materialise more than ``limit`` positions (4 bytes each on the
    host: what the array of pairs, or of insertion codes, costs).

    Raises
    ------
    MaskTooLarge
        With how to raise the limit and how to get the figures without a mask.
    """
    if count > limit:
        raise MaskTooLarge(what, count, limit, noun)


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
    check_growth(capacity, count, POSITION_BYTES, target)
    return count


_QUERY_SHIFT = 0 if sys.byteorder == "little" else 16
"""Where ``positions[n, 0]`` sits in the uint32 that holds ``positions[n]``."""
_KEY_SHIFT = 16 - _QUERY_SHIFT


@jit
def _pairs(out):
    """An (N, 2) uint16 array as N uint32 words, one per pair: the kernels write
    a pair as one word (see :func:`_pair`), which LLVM vectorises along a row."""
    return out.view(np.uint32).reshape(-1)


@jit
def _pair(query, key):
    """The uint32 word of the pair ``(query, key)`` (both below 65536)."""
    return np.uint32((query << _QUERY_SHIFT) | (key << _KEY_SHIFT))


@jit
def _key_run(pairs, n, query, lo, count):
    """``pairs[n:n + count]`` = ``(query, lo)``, ``(query, lo + 1)``, ... (keys below
    65536). A kernel of its own, so the loop that calls it stays lean when it only counts."""
    run, first = pairs[n : n + count], _pair(query, lo)
    for j in range(count):
        run[j] = first + _pair(0, j)


@jit
def _full_positions(seq_len, out):
    pairs = _pairs(out)
    n = 0
    for i in range(seq_len):
        row = pairs[n : n + i + 1]
        for j in range(i + 1):
            row[j] = _pair(i & 0xFFFF, j & 0xFFFF)
        n += i + 1


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
    pairs = _pairs(out)
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
    below = 0
    parts = bounds.size if intra else 1  # without intra, all rows in one run
    for part in range(parts):  # the rows of each partition, lo its start
        first = np.int64(bounds[part]) if intra else 0
        end = min(np.int64(bounds[part + 1]), seq_len) if part + 1 < parts else seq_len
        for i in range(first, end):
            row_start = n
            lo = first if intra else i + 1
            if reached[i]:
                while below < n_uniq and uniq[below] < lo:
                    below += 1
                if fill:
                    for u in range(below):
                        pairs[n + u] = _pair(i, uniq[u])
                n += below
            if intra:
                if fill:
                    _key_run(pairs, n, i, lo, i + 1 - lo)
                n += i + 1 - lo
            if row_counts.size:
                row_counts[i] = n - row_start
    return n


@jit
def ordered_count(seq_len, bounds, tokens, intra, cross):
    """How many positions :func:`ordered_positions` lays out (under its conditions),
    in time linear in the partitions and boundary tokens rather than in ``seq_len``:
    ``run * (run + 1) / 2`` per partition, plus, per row a cross window reaches,
    the distinct tokens below the row's partition start (or ``<= row``)."""
    n = 0
    if intra:
        for p in range(bounds.size):
            end = min(np.int64(bounds[p + 1]) if p + 1 < bounds.size else seq_len, seq_len)
            run = max(end - np.int64(bounds[p]), 0)
            n += run * (run + 1) // 2
    if cross and tokens.size:
        rows = np.empty(4 * tokens.size, np.int64)
        m = 0
        for t in tokens:
            for offset in range(4):
                if t + offset < seq_len:
                    rows[m] = t + offset
                    m += 1
        uniq = np.unique(tokens)
        for row in np.unique(rows[:m]):
            lo = row + 1
            if intra:
                lo = np.int64(bounds[max(np.searchsorted(bounds, row, side="right") - 1, 0)])
            n += np.searchsorted(uniq, lo)
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
    ``seq_len`` must be below 2^62 (see :meth:`MaskPlan.insertion_codes`).
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


@jit
def _row_intervals(seq_len, bounds, intra):
    """Per row ``r`` (a u16 query), the keys the intra loops give it as up to three
    intervals ``[lo, hi]`` (rows of ``lo``/``hi``; ``lo > hi`` is empty).

    A non-last partition ``[s, e)`` (``e`` a u16 boundary) gives row ``r`` in it
    ``[s, r]``; several may cover a row after boundaries wrap, whose union is
    ``[min s, r]``. The last partition ``[s, seq_len)`` gives row ``r`` the keys
    ``s..=i`` of its largest ``i`` with ``i as u16 == r``, ``as u16``: everything
    once that run is 65536 long, else one interval or two when it wraps.
    """
    lo = np.full((3, U16_END), 1, np.int64)
    hi = np.zeros((3, U16_END), np.int64)
    parts = bounds.size
    if not intra or parts == 0:
        return lo, hi
    starts = np.empty(max(parts - 1, 0), np.int64)
    ends = np.empty(max(parts - 1, 0), np.int64)
    for p in range(parts - 1):
        starts[p], ends[p] = bounds[p], bounds[p + 1]
    reach = 0
    for p in np.argsort(starts, kind="mergesort"):
        s, e = starts[p], ends[p]
        for r in range(max(s, reach), e):
            lo[0, r], hi[0, r] = s, r
        reach = max(reach, e)
    s = np.int64(bounds[parts - 1])
    if seq_len > s:
        top = seq_len - 1
        top_hi, top_lo = top - top % U16_END, top % U16_END
        for r in range(U16_END):
            i = top_hi + r if r <= top_lo else top_hi - U16_END + r
            if i < s:
                continue
            if i - s + 1 >= U16_END:
                lo[1, r], hi[1, r] = 0, U16_END - 1
            elif i < U16_END:
                lo[1, r], hi[1, r] = s, i
            else:
                lo[1, r], hi[1, r] = s, U16_END - 1
                lo[2, r], hi[2, r] = 0, i - U16_END
    return lo, hi


@jit
def distinct_positions(seq_len, bounds, tokens, intra, cross, out, fill):
    """The distinct ``(q, k)`` pairs of the sparse path in ``BTreeSet`` order, for
    any plan (wrapping indices included), row by row as unions of intervals, never
    holding more than the pairs themselves. Returns the count; writes ``out`` only
    when ``fill``. ``seq_len`` may be given reduced (see :func:`reduced_seq_len`).
    """
    pairs = _pairs(out)
    lo, hi = _row_intervals(seq_len, bounds, intra)
    uniq = np.unique(tokens).astype(np.int64)
    reached = np.zeros(U16_END, np.bool_)
    if cross:
        for t in tokens:
            reached[t] = True
            for offset in range(4):
                row = (np.int64(t) + offset) & 0xFFFF
                if row < seq_len:
                    reached[row] = True
    merged_lo = np.empty(3, np.int64)
    merged_hi = np.empty(3, np.int64)
    n = 0
    for r in range(U16_END):
        m = 0  # merge the row's intervals, ascending
        for _ in range(3):
            best = -1
            for k in range(3):
                if lo[k, r] <= hi[k, r] and (best < 0 or lo[k, r] < lo[best, r]):
                    best = k
            if best < 0:
                break
            a, b = lo[best, r], hi[best, r]
            lo[best, r], hi[best, r] = 1, 0
            if m > 0 and a <= merged_hi[m - 1] + 1:
                merged_hi[m - 1] = max(merged_hi[m - 1], b)
            else:
                merged_lo[m], merged_hi[m] = a, b
                m += 1
        below = np.searchsorted(uniq, r, side="right") if reached[r] else 0
        cursor = 0  # tokens <= r not yet placed
        for k in range(m + 1):
            gap_end = merged_lo[k] if k < m else U16_END
            stop = min(np.searchsorted(uniq, gap_end, side="left"), below)
            if fill:
                for u in range(cursor, stop):
                    pairs[n + u - cursor] = _pair(r, uniq[u])
            n += max(stop - cursor, 0)
            if k < m:
                if fill:
                    _key_run(pairs, n, r, merged_lo[k], merged_hi[k] - merged_lo[k] + 1)
                n += merged_hi[k] - merged_lo[k] + 1
                cursor = max(cursor, min(np.searchsorted(uniq, merged_hi[k], side="right"), below))
    return n


@functools.lru_cache(maxsize=64)
def partition_layout(parts: int, size: int, max_edges: int) -> tuple[np.ndarray, np.ndarray, int]:
    """``build_mask``'s partition boundaries ``(p * size) as u16`` for ``p`` in
    ``0..parts``, its boundary tokens (the first ``max_edges`` of them) and their
    largest (-1 when there are none). Read-only arrays, kept for the next call
    with the same figures: a controller sends the same few partition counts."""
    bounds = (np.arange(parts, dtype=np.uint64) * np.uint64(size) & np.uint64(0xFFFF)).astype(np.uint16)
    bounds.flags.writeable = False
    tokens = bounds[:max_edges]
    return bounds, tokens, int(tokens.max()) if tokens.size else -1


def reduced_seq_len(seq_len: int) -> int:
    """A ``seq_len`` below 2^18 that gives the same distinct pairs as ``seq_len``
    (so no kernel sees a usize past int64): rows are u16, and from 3 * 65536 tokens
    on, every row of the last partition, which then starts below 65536 and runs
    past 2 * 65536, holds every key."""
    return min(seq_len, 3 * U16_END)


@dataclass(frozen=True)
class MaskPlan:
    """How ``build_mask`` lays out a mask, before any position exists.

    Attributes
    ----------
    seq_len : int
        The ``seq_len`` given to ``build_mask``.
    sparse : bool
        The sparse path is taken (else ``SparseMask::full``).
    boundaries, tokens : numpy.ndarray
        uint16 partition boundaries and boundary tokens (empty on the full path),
        read-only: they are kept for the next plan with the same figures.
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

    def insertion_count(self) -> int:
        """How many ``(q, k)`` the reference inserts into its ``BTreeSet``, repeats
        included, as an exact Python integer (it can pass 2^64)."""
        count = 0
        if self.intra:
            bounds = self.boundaries.astype(np.int64)
            runs = np.maximum(np.diff(bounds), 0)
            count += int(np.sum(runs * (runs + 1) // 2)) if runs.size else 0
            last = max(self.seq_len - int(bounds[-1]), 0)
            count += last * (last + 1) // 2
        if self.cross:
            ordered = np.sort(self.tokens.astype(np.int64))
            rows = [ordered]
            for offset in range(4):
                row = (ordered + offset) & 0xFFFF
                rows.append(row[row < self.seq_len])
            count += int(sum(np.searchsorted(ordered, r, side="right").sum() for r in rows))
        return count

    def insertion_codes(self, limit: int | None = None) -> np.ndarray:
        """Every ``(q, k)`` the reference inserts into its ``BTreeSet``, in
        insertion order and with repeats, as uint32 ``q << 16 | k``.

        Raises
        ------
        MaskTooLarge
            If there are more than ``limit`` insertions (when a limit is given), or
            more than a host array can hold.
        """
        count = self.insertion_count()
        check_limit(count, MAX_HOST_POSITIONS if limit is None else limit,
                    f"build_mask(seq_len={self.seq_len})'s insertion sequence", noun="insertions")
        codes = np.empty(count, np.uint32)
        # count fits in memory, so the last partition (if any) is short: seq_len < 2^62
        raw_positions(min(self.seq_len, 1 << 62), self.boundaries, self.tokens, self.intra, self.cross, codes, True)
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


@jit
def _sorted_by_query(positions):
    """Whether ``positions[:, 0]`` never decreases."""
    for p in range(1, positions.shape[0]):
        if positions[p, 0] < positions[p - 1, 0]:
            return False
    return True


@jit
def _gallop(queries, start, value):
    """The first ``p >= start`` with ``queries[p] >= value`` (``queries`` nondecreasing,
    all before ``start`` below ``value``), in steps that double from ``start``."""
    lo, step = start, 1
    while lo + step <= queries.size and queries[lo + step - 1] < value:
        lo += step
        step *= 2
    return lo + np.searchsorted(queries[lo : min(lo + step, queries.size)], value)


@jit
def _by_query(positions, seq_len, ordered):
    """The CSR of :meth:`SparseMask.by_query`. Positions sorted by query
    (``ordered``) are their own grouping: each row's end is found from the last
    one's and nothing is copied."""
    count = positions.shape[0]
    queries = positions[:, 0]
    offsets = np.zeros(seq_len + 1, np.int64)
    if ordered:
        last = np.int64(queries[count - 1]) if count else -1
        if last >= seq_len:
            return np.int64(queries[np.searchsorted(queries, seq_len)]), offsets, positions
        for i in range(1, seq_len + 1):
            offsets[i] = _gallop(queries, offsets[i - 1], i) if i <= last else count
        return -1, offsets, positions
    for p in range(count):
        query = np.int64(queries[p])
        if query >= seq_len:
            return query, offsets, positions
        offsets[query + 1] += 1
    for i in range(seq_len):
        offsets[i + 1] += offsets[i]
    grouped = np.empty_like(positions)
    cursor = offsets[:-1].copy()
    for p in range(count):
        grouped[cursor[queries[p]]] = positions[p]
        cursor[queries[p]] += 1
    return -1, offsets, grouped


class SparseMask:
    """The reference's ``SparseMask``.

    Parameters
    ----------
    positions : array_like, shape (N, 2)
        ``(query, key)`` pairs as u16, in the order the mask holds them. The mask
        keeps its own read-only copy (``mask.positions``).
    density : float
        ``mask.density`` (held as float32).
    partition_boundaries, boundary_tokens : array_like of u16
    target : Target or str, optional
        The build the mask belongs to; the default for :meth:`max_positions`.

    Raises
    ------
    TypeError
        If positions are not integers or density not a real number.
    ValueError
        If positions are not (N, 2) or not u16.
    """

    def __init__(self, positions, density, partition_boundaries=(), boundary_tokens=(), target=None):
        positions = np.ascontiguousarray(_u16_array(positions, "positions"))
        if positions.size == 0:
            positions = positions.reshape(0, 2)
        if positions.ndim != 2 or positions.shape[1] != 2:
            raise ValueError(f"positions must have shape (N, 2), got {positions.shape}")
        self._hold(positions, f32_of(density, "density"),
                   _u16_array(partition_boundaries, "partition_boundaries").reshape(-1),
                   _u16_array(boundary_tokens, "boundary_tokens").reshape(-1),
                   None if target is None else resolve_target(target), None)

    @classmethod
    def _built(cls, positions: np.ndarray, density: np.float32, partition_boundaries: np.ndarray,
               boundary_tokens: np.ndarray, target: Target, by_query: bool) -> "SparseMask":
        """A mask over the (N, 2) uint16 positions a kernel has just laid out, taken
        as they are (no re-check, no copy); ``by_query``: they are sorted by query."""
        mask = cls.__new__(cls)
        mask._hold(positions, density, partition_boundaries.copy(), boundary_tokens.copy(), target, by_query)
        return mask

    def _hold(self, positions, density, partition_boundaries, boundary_tokens, target, by_query) -> None:
        positions.flags.writeable = False  # so what is known about their order stays true
        self._positions = positions
        self._by_query = by_query
        self._grouping = None
        self.density = density
        self.partition_boundaries = partition_boundaries
        self.boundary_tokens = boundary_tokens
        self.target = target

    @property
    def positions(self) -> np.ndarray:
        """The ``(query, key)`` pairs: (N, 2) uint16, read-only."""
        return self._positions

    def sorted_by_query(self) -> bool:
        """Whether the positions come in nondecreasing query order, as every mask of
        ``build_mask``'s sparse path does (a ``BTreeSet``); found once, then known."""
        if self._by_query is None:
            self._by_query = bool(_sorted_by_query(self._positions))
        return self._by_query

    def by_query(self, seq_len: int) -> tuple[int, np.ndarray, np.ndarray]:
        """``positions_by_query`` for a ``q`` of ``seq_len`` rows, as CSR: ``(bad,
        offsets, grouped)``, where the keys of query ``i`` are
        ``grouped[offsets[i]:offsets[i + 1], 1]`` in mask order and ``bad`` is the
        first query, in mask order, at or past ``seq_len`` (else -1); both arrays are
        read-only. Positions sorted by query are their own grouping, and their
        offsets are kept for the next call with the same ``seq_len`` (one mask
        serves every head and layer), unless ``seq_len`` is above the number of
        positions: what is kept (8 bytes a row) stays within twice the positions'
        own 4 bytes each."""
        if self._grouping is not None and self._grouping[0] == seq_len:
            return self._grouping[1]
        rows = _by_query(self._positions, seq_len, self.sorted_by_query())
        rows[1].flags.writeable = rows[2].flags.writeable = False
        if self.sorted_by_query() and seq_len <= self.num_positions:
            self._grouping = (seq_len, rows)
        return rows

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
        position_limit = position_limit_arg(position_limit)
        count = full_count(seq_len, target)
        check_limit(count, position_limit, f"SparseMask.full({seq_len})")
        positions = np.empty((count, 2), np.uint16)
        _full_positions(seq_len, positions)
        return cls._built(positions, np.float32(1.0), np.zeros(1, np.uint16), np.zeros(0, np.uint16), target,
                          by_query=seq_len <= U16_END)


def sparse_density(count: int, seq_len: int, target: Target) -> np.float32:
    """``positions.len() as f32 / full_positions as f32`` with the saturating
    ``seq_len * (seq_len + 1) / 2``, or 0.0 when that is 0."""
    full = target.saturating_mul(seq_len, target.saturating_add(seq_len, 1)) // 2
    return int_as_f32(count) / int_as_f32(full) if full > 0 else np.float32(0.0)
