"""The planned step: one description of every allocator call a step makes, built once.

A step is q, k and v (``seq_len * dim`` i8 each, when on the heap), ``build_mask(gate,
seq_len)``, then ``sparse_attention(q, k, v, &mask, dim, scale)``. :func:`plan_step`
plans it once from the config, the gate, the sizes and the target: the ``MaskPlan``,
the ``BTreeSet``'s node allocations, the mask's query runs, and the allocator calls
of the whole step as description rows. Whatever needs the step takes it from there:
the byte counter (:mod:`firmware_model.heap`, every ``Usage`` figure), the event trace
(:mod:`firmware_model.placement.events`, which expands the rows into the
allocator-call trace a simulator places), :func:`firmware_model.step.fit_step`, the
planner and the replayer.

What decides each call (``library/alloc/src`` of Rust's std):

- a growing ``Vec`` (``raw_vec.rs``) allocates its first buffer, then *reallocates*
  to ``max(2 * cap, len + 1)``, at least 4 (8 for bytes) (:mod:`mcsa.core.rustvec`);
- ``BTreeSet`` insertion allocates the first leaf, then on every split the new right
  node bottom-up (:mod:`firmware_model.btree`);
- ``collect()`` from ``BTreeSet::into_iter()`` (``vec/spec_from_iter_nested.rs``) takes
  the first element, allocates ``max(4, remaining + 1)`` at once, and only then does
  ``into_iter`` free the nodes, each after its last child;
- ``SparseMask::full`` allocates ``with_capacity(seq_len * seq_len)`` pairs, then ``vec![0u16]``;
- ``sparse_attention`` allocates its output (one call), the ``Vec<Vec<u16>>`` (empty
  inner Vecs allocate nothing), grows each query's key ``Vec`` in mask order, allocates
  and frees one scores ``Vec`` per non-empty query, then drops the key ``Vec``s in query
  order and their outer ``Vec``; the output stays live.

Zero-sized requests never reach the allocator and are not described. The B-tree's
nodes are folded into one row per node kind (allocations all come before the positions
``Vec``, frees all after it, so their count is all the byte figures need); the node by
node sequence is kept when the step is to be placed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mcsa.core._jit import jit
from mcsa.core.attention import MincutSparseAttention
from mcsa.core.mask import POSITION_BYTES, U16_END, MaskPlan, MaskStats, check_limit, full_count, ordered_positions, sparse_density
from mcsa.core.packets import GatePacket, SparsityConfig
from mcsa.core.rustvec import check_layout, grown_capacity, min_non_zero_cap
from mcsa.core.target import Target, TargetPanic

from . import btree
from .placement import ALLOC, DEALLOC, REALLOC

WHAT = (
    "q", "k", "v", "partition boundaries", "boundary tokens", "a B-tree leaf", "a B-tree internal node",
    "the positions Vec", "the output", "positions_by_query", "a query's key Vec", "a query's scores",
)
"""What each described block holds, by the codes in a row's ``KIND``."""
Q, K, V, BOUNDARIES, TOKENS, LEAF, INTERNAL, POSITIONS, OUTPUT, BY_QUERY, KEYS, SCORES = range(len(WHAT))

OP, OBJ, SIZE, ALIGN, KIND, COUNT = range(6)
"""Columns of a description row: the allocator call (``ALLOC``, ``DEALLOC`` or
``REALLOC``), the block's id (-1 for folded B-tree nodes, whose ids the expanded trace
gives), the ``Layout`` size and alignment (for DEALLOC, the block's), what the block
holds (:data:`WHAT`), and how many blocks of that size the row stands for (1 but for
folded B-tree nodes)."""

CALLS = ("the inputs", "build_mask", "sparse_attention")
"""The calls of a step, in order."""


class Calls:
    """Collects a step's allocator calls as description rows, in call order, and hands
    out block ids."""

    def __init__(self, usize_bits: int):
        self.ptr = usize_bits // 8
        self.chunks: list[np.ndarray] = []
        self.starts: list[tuple[str, int]] = []
        self.count = 0
        self.next_obj = 0

    def begin(self, call: str) -> None:
        self.starts.append((call, self.count))

    def add(self, rows: np.ndarray) -> None:
        """Append (n, 6) int64 rows, dropping zero-sized requests and empty folds."""
        rows = rows[(rows[:, SIZE] > 0) & (rows[:, COUNT] > 0)]
        self.chunks.append(rows)
        self.count += rows.shape[0]

    def new_obj(self, n: int = 1) -> int:
        self.next_obj += n
        return self.next_obj - n

    def alloc(self, size: int, align: int, kind: int) -> int:
        obj = self.new_obj()
        self.add(np.array([[ALLOC, obj, size, align, kind, 1]], np.int64))
        return obj

    def push_vec(self, count: int, elem_size: int, kind: int) -> None:
        """``Vec::new()`` then ``count`` pushes: the first buffer, then reallocations."""
        caps = []
        cap = 0
        while cap < count:
            cap = grown_capacity(cap, elem_size)
            caps.append(cap)
        if caps:
            rows = np.empty((len(caps), 6), np.int64)
            rows[:] = (REALLOC, self.new_obj(), 0, elem_size, kind, 1)
            rows[0, OP] = ALLOC
            rows[:, SIZE] = np.array(caps) * elem_size
            self.add(rows)

    def rows(self) -> np.ndarray:
        return np.concatenate(self.chunks) if self.chunks else np.zeros((0, 6), np.int64)


@dataclass(frozen=True)
class PlannedStep:
    """One step, planned once (see the module's description).

    Attributes
    ----------
    target : mcsa.Target
    seq_len, dim : int
    inputs_bytes : int
        q, k and v requested together (0 when they are not on the heap).
    plan : mcsa.core.mask.MaskPlan or None
        None when ``plan_mask`` panics.
    num_positions : int or None
    density : numpy.float32 or None
    runs : tuple of numpy.ndarray or None
        (query, key count) runs of the mask in mask order, when ``sparse_attention`` was
        described (see :meth:`query_runs`).
    rows : numpy.ndarray
        (n, 6) int64 description rows of every allocator call, up to the first panic.
    calls : tuple of (str, int)
        Each call described and the index of its first row.
    nodes : tuple of numpy.ndarray or None
        The B-tree's node allocations and frees, in order, as (kind, id) rows, when
        they were asked for and the trace is within ``max_events``.
    node_events : int
        At most this many allocator calls for the B-tree's nodes.
    panics : dict of str to str
        Rust's message for each call that panics: q, k and v that no ``Vec`` can hold
        (``the inputs``), ``build_mask``, ``sparse_attention`` (a call that panics is
        described up to the panic; those after a panicking ``build_mask`` are not).
    distinct : numpy.ndarray or None
        Where indices wrap, the mask's positions as codes (see :class:`~firmware_model.btree.Insertions`).
    position_limit : int
    """

    target: Target
    seq_len: int
    dim: int
    inputs_bytes: int
    plan: MaskPlan | None
    num_positions: int | None
    density: np.float32 | None
    runs: tuple[np.ndarray, np.ndarray] | None
    rows: np.ndarray
    calls: tuple[tuple[str, int], ...]
    nodes: tuple[np.ndarray, np.ndarray] | None
    node_events: int
    panics: dict[str, str]
    distinct: np.ndarray | None
    position_limit: int

    def query_runs(self) -> tuple[np.ndarray, np.ndarray]:
        """The mask's (query, key count) runs, in mask order.

        Raises
        ------
        ValueError
            If the mask was not built (``build_mask`` panics).
        mcsa.MaskTooLarge
            For a full mask past 65536 tokens over the position limit.
        """
        if self.runs is not None:
            return self.runs
        if self.plan is None or CALLS[1] in self.panics:
            raise ValueError("the mask was not built: build_mask panics")
        return query_runs(self.plan, self.distinct, self.position_limit)

    def stats(self) -> MaskStats:
        """What ``mask_stats`` gives for this mask.

        Raises
        ------
        ValueError
            If the mask was not built (``build_mask`` panics).
        """
        if self.plan is None or CALLS[1] in self.panics:
            raise ValueError("the mask was not built: build_mask panics")
        sparse = self.plan.sparse
        return MaskStats(sparse, self.num_positions, self.density,
                         self.plan.boundaries if sparse else np.zeros(1, np.uint16), self.plan.tokens)

    @property
    def panic(self) -> tuple[str, str] | None:
        """The first call that panics, and its message."""
        return next(((call, self.panics[call]) for call in CALLS if call in self.panics), None)

    def figures_of(self, call: str) -> bool:
        """Whether ``call`` was described whole (it was reached and does not panic)."""
        return call in (name for name, _ in self.calls) and call not in self.panics

    def call_rows(self, call: str) -> np.ndarray:
        """The rows of one call (empty when it was not described)."""
        names = [c for c, _ in self.calls]
        if call not in names:
            return self.rows[:0]
        i = names.index(call)
        end = self.calls[i + 1][1] if i + 1 < len(self.calls) else len(self.rows)
        return self.rows[self.calls[i][1]:end]

    def call_of(self, row: int) -> str:
        """The call that makes row ``row``."""
        return call_of(self.calls, row)


def call_of(calls: tuple[tuple[str, int], ...], index: int) -> str:
    """The call, of ``(name, first index)`` pairs in order, that makes row or event ``index``."""
    name = calls[0][0] if calls else ""
    for call, first in calls:
        if first <= index:
            name = call
    return name


def plan_step(
    config: SparsityConfig, gate: GatePacket,
    seq_len: int, dim: int,
    target: Target,
    *,
    inputs_on_heap: bool = True,
    position_limit: int,
    max_events: int | None = None,
) -> PlannedStep:
    """Plan one step on ``target`` (arguments already checked).

    Parameters
    ----------
    max_events : int, optional
        Keep the B-tree's node sequence (to place the step block by block) when its
        allocator calls are at most this many; None keeps none.

    Raises
    ------
    mcsa.MaskTooLarge
        For a mask whose indices wrap and whose insertions exceed ``position_limit``, or
        a full mask past 65536 tokens with more positions than that.
    """
    bits = target.usize_bits
    inputs = seq_len * dim if inputs_on_heap else 0
    calls = Calls(bits)
    panics = {}
    calls.begin(CALLS[0])
    try:
        check_layout(inputs, 1, target)  # vec![x; seq_len * dim]
    except TargetPanic as err:
        panics[CALLS[0]] = err.message
    else:
        for kind in (Q, K, V):
            calls.alloc(inputs, 1, kind)
    calls.begin(CALLS[1])
    sim = MincutSparseAttention(config, target, position_limit)
    plan = count = density = runs = nodes = distinct = None
    node_events = 0
    try:
        plan = sim.plan_mask(gate, seq_len)
        if plan.sparse:
            count, nodes, node_events, distinct = _sparse_mask(calls, plan, position_limit, max_events)
            density = sparse_density(count, seq_len, target)
        else:
            count = full_mask_rows(calls, seq_len, target)
            density, distinct = np.float32(1.0), None
    except TargetPanic as err:
        panics[CALLS[1]] = err.message
    else:
        calls.begin(CALLS[2])
        attention_panic = "attempt to divide by zero" if dim == 0 else None  # q.len() / dim
        try:  # its two Vecs: the output, positions_by_query
            check_layout(seq_len * dim, 4, target)
            check_layout(seq_len, 3 * bits // 8, target)
        except TargetPanic as err:
            attention_panic = attention_panic or err.message
        if attention_panic:
            panics[CALLS[2]] = attention_panic
        else:
            runs = query_runs(plan, distinct, position_limit)
            sparse_attention_rows(calls, *runs, seq_len, dim)
    return PlannedStep(target, seq_len, dim, 3 * inputs, plan, count, density, runs, calls.rows(),
                       tuple(calls.starts), nodes, node_events, panics, distinct, position_limit)


def full_mask_rows(calls: Calls, seq_len: int, target: Target) -> int:
    """Describe ``SparseMask::full(seq_len)``; its position count.

    Raises
    ------
    mcsa.TargetPanic
        Where the capacity overflows on the target.
    """
    count = full_count(seq_len, target)
    calls.alloc(target.mul(seq_len, seq_len) * POSITION_BYTES, 2, POSITIONS)
    calls.alloc(2, 2, BOUNDARIES)
    return count


def _sparse_mask(calls: Calls, plan: MaskPlan, position_limit: int, max_events: int | None):
    """``build_mask``'s calls on the sparse path: (position count, node sequence or None,
    the bound on the B-tree's allocator calls, the distinct codes where indices wrap)."""
    calls.alloc(2 * plan.boundaries.size, 2, BOUNDARIES)
    calls.push_vec(plan.boundaries.size, 2, TOKENS)  # every boundary pushed, then truncated
    ins = btree.insertions(plan, position_limit)
    node_events = 2 * (ins.n_ascending // 5 + 2 * ins.codes.size + 2)  # every node's alloc and free, at most
    keep = max_events is not None and node_events <= max_events
    leaves, internals, allocs, frees = btree.insert(ins.n_ascending, ins.prefix, ins.lo, ins.codes, keep)
    leaf, internal = btree.node_bytes(8 * calls.ptr)
    node_rows = np.array([[ALLOC, -1, leaf, calls.ptr, LEAF, leaves],  # ids: given when expanded
                          [ALLOC, -1, internal, calls.ptr, INTERNAL, internals]], np.int64)
    calls.add(node_rows)
    if ins.count:
        calls.alloc(max(min_non_zero_cap(POSITION_BYTES), ins.count) * POSITION_BYTES, 2, POSITIONS)
    node_rows[:, OP] = DEALLOC
    calls.add(node_rows)
    return ins.count, ((allocs, frees) if keep else None), node_events, ins.distinct


def query_runs(plan: MaskPlan, distinct: np.ndarray | None, position_limit: int) -> tuple[np.ndarray, np.ndarray]:
    """(query, key count) runs of the mask ``build_mask`` gives for ``plan``, in mask
    order, without building it; a sparse mask whose indices wrap needs its
    ``distinct`` insertion codes (the B-tree's keys).

    Raises
    ------
    ValueError
        For a wrapping sparse mask without ``distinct``.
    mcsa.MaskTooLarge
        For a full mask past 65536 tokens (its queries wrap) over ``position_limit``.
    """
    if not plan.sparse:
        rows = np.arange(plan.seq_len, dtype=np.int64)
        if plan.seq_len > U16_END:
            check_limit(plan.seq_len * (plan.seq_len + 1) // 2, position_limit, f"SparseMask.full({plan.seq_len})")
        return rows & 0xFFFF, rows + 1
    if distinct is not None:
        return runs_of(distinct >> np.uint32(16))
    if not plan.ordered:
        raise ValueError("a sparse mask whose indices wrap: its query runs need its distinct positions")
    counts = np.zeros(plan.seq_len, np.int64)
    ordered_positions(plan.seq_len, plan.boundaries, plan.tokens, plan.intra, plan.cross,
                      np.zeros((0, 2), np.uint16), False, counts)
    rows = np.flatnonzero(counts)
    return rows.astype(np.int64), counts[rows]


def runs_of(query_of_position: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(query, run length) of the consecutive positions of each query, in mask order."""
    if query_of_position.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.flatnonzero(np.concatenate(([True], query_of_position[1:] != query_of_position[:-1])))
    lengths = np.diff(np.append(starts, query_of_position.size))
    return query_of_position[starts].astype(np.int64), lengths.astype(np.int64)


def sparse_attention_rows(calls: Calls, queries: np.ndarray, runs: np.ndarray, qkv_seq_len: int, dim: int) -> None:
    """Describe ``sparse_attention`` for a mask given as (query, key count) runs.

    Raises
    ------
    ValueError
        If the mask reaches a query at or past ``qkv_seq_len`` (the call would panic).
    """
    if queries.size and queries.max() >= qkv_seq_len:
        raise ValueError(f"the mask reaches query {queries.max()}, past qkv_seq_len={qkv_seq_len}: the call panics")
    calls.alloc(qkv_seq_len * dim * 4, 4, OUTPUT)
    by_query = calls.alloc(qkv_seq_len * 3 * calls.ptr, calls.ptr, BY_QUERY)
    first = calls.new_obj(2 * qkv_seq_len)
    calls.add(_attention_rows(queries, runs, qkv_seq_len, first, by_query, calls.ptr))


@jit
def _attention_rows(queries, runs, seq_len, first_obj, by_query, ptr):
    """Rows of the key Vecs, scores and drops of ``sparse_attention`` (after its two
    first allocations): key Vec ``q`` is block ``first_obj + q``, its scores
    ``first_obj + seq_len + q``."""
    lengths = np.zeros(seq_len, np.int64)
    for r in range(queries.size):
        lengths[queries[r]] += runs[r]
    n = 0
    for q in range(seq_len):
        if lengths[q] > 0:
            cap = 0
            while cap < lengths[q]:
                cap = grown_capacity(cap, 2)
                n += 1
            n += 3
    out = np.ones((n + 1, 6), np.int64)
    caps = np.zeros(seq_len, np.int64)
    filled = np.zeros(seq_len, np.int64)
    e = 0
    for r in range(queries.size):
        q = queries[r]
        target = filled[q] + runs[r]
        while caps[q] < target:
            new_cap = grown_capacity(caps[q], 2)
            out[e, OP] = ALLOC if caps[q] == 0 else REALLOC
            out[e, OBJ], out[e, SIZE], out[e, ALIGN], out[e, KIND] = first_obj + q, new_cap * 2, 2, KEYS
            e += 1
            caps[q] = new_cap
        filled[q] = target
    for q in range(seq_len):
        if lengths[q] > 0:
            for op in (ALLOC, DEALLOC):
                out[e, OP], out[e, OBJ], out[e, SIZE], out[e, ALIGN], out[e, KIND] = (
                    op, first_obj + seq_len + q, lengths[q] * 4, 4, SCORES)
                e += 1
    for q in range(seq_len):
        if caps[q] > 0:
            out[e, OP], out[e, OBJ], out[e, SIZE], out[e, ALIGN], out[e, KIND] = DEALLOC, first_obj + q, caps[q] * 2, 2, KEYS
            e += 1
    out[e, OP], out[e, OBJ], out[e, SIZE], out[e, ALIGN], out[e, KIND] = DEALLOC, by_query, seq_len * 3 * ptr, ptr, BY_QUERY
    return out[: e + 1]
