"""The ordered allocation trace of one step, from the heap model's own knowledge.

Every call to the global allocator that ``build_mask`` and ``sparse_attention`` make,
in order, for a 32- or 64-bit target (what decides each one is in
:mod:`firmware_model.heap`):

- a growing ``Vec`` (``raw_vec.rs``) allocates its first buffer, then *reallocates*
  (``GlobalAlloc::realloc``) to ``max(2 * cap, len + 1)``, at least 4 (8 for bytes);
- ``BTreeSet`` insertion (``btree/node.rs``, ``map/entry.rs``) allocates the first
  leaf, then on every split the new right node bottom-up: the leaf, each internal
  node that splits, and a new root last;
- ``collect()`` takes the first element, allocates the positions ``Vec`` at its
  final capacity, and only then does ``into_iter`` free the nodes, each after its
  last child (``btree/navigate.rs``: ``deallocating_next``, ``deallocating_end``);
- ``sparse_attention`` allocates its output (``alloc_zeroed``, one call), the
  ``Vec<Vec<u16>>`` (empty inner Vecs allocate nothing), grows each query's key
  ``Vec`` in mask order, allocates and frees one scores ``Vec`` per non-empty
  query, then drops the key ``Vec``s in query order and their outer ``Vec``.

Zero-sized requests never reach the allocator and are not events. The trace stops
when the step returns: what is live then (q, k, v, the mask, the output) stays live.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import types
from numba.typed import Dict

import mcsa
from mcsa.core._jit import jit
from mcsa.core.mask import DEFAULT_POSITION_LIMIT, POSITION_BYTES, MaskPlan
from mcsa.core.rustvec import grown_capacity, min_non_zero_cap

from .. import heap
from . import ALLOC, DEALLOC, EVENT_DTYPE, REALLOC

WHAT = (
    "q", "k", "v", "partition boundaries", "boundary tokens", "a B-tree leaf", "a B-tree internal node",
    "the positions Vec", "the output", "positions_by_query", "a query's key Vec", "a query's scores",
)
"""What each event's block holds, by the codes in :attr:`Trace.what`."""
Q, K, V, BOUNDARIES, TOKENS, LEAF, INTERNAL, POSITIONS, OUTPUT, BY_QUERY, KEYS, SCORES = range(len(WHAT))


@dataclass(frozen=True)
class Trace:
    """An ordered allocation trace.

    Attributes
    ----------
    events : numpy.ndarray
        :data:`~firmware_model.placement.EVENT_DTYPE` records in call order.
    what : numpy.ndarray
        uint8 code per event into :data:`WHAT`.
    calls : tuple of (str, int)
        Each call's name and the index of its first event, in order.
    """

    events: np.ndarray
    what: np.ndarray
    calls: tuple[tuple[str, int], ...]

    def call_of(self, index: int) -> str:
        """The call that makes event ``index``."""
        name = self.calls[0][0] if self.calls else ""
        for call, first in self.calls:
            if first <= index:
                name = call
        return name

    def describe(self, index: int) -> str:
        """``event 532 (sparse_attention: alloc 23,552 B for the output)``."""
        e = self.events[index]
        op = ("alloc", "dealloc", "realloc to")[e["op"]]
        return f"event {index} ({self.call_of(index)}: {op} {int(e['size']):,} B for {WHAT[self.what[index]]})"

    def segment(self, call: str) -> np.ndarray:
        """The events of one call."""
        names = [c for c, _ in self.calls]
        i = names.index(call)
        end = self.calls[i + 1][1] if i + 1 < len(self.calls) else self.events.size
        return self.events[self.calls[i][1]:end]


class TraceTooLarge(ValueError):
    """The step would make more allocator calls than the caller allows."""


class _Builder:
    """Collects events as int64 rows (op, obj, size, align, what) and hands out block ids."""

    def __init__(self, usize_bits: int):
        self.usize_bits = usize_bits
        self.ptr = usize_bits // 8
        self.chunks: list[np.ndarray] = []
        self.calls: list[tuple[str, int]] = []
        self.count = 0
        self.next_obj = 0

    def begin(self, call: str) -> None:
        self.calls.append((call, self.count))

    def add_rows(self, rows: np.ndarray) -> None:
        """Append (n, 5) int64 rows, dropping zero-sized requests."""
        if not rows[:, 2].all():
            rows = rows[rows[:, 2] > 0]
        self.chunks.append(rows)
        self.count += rows.shape[0]

    def add(self, op, obj, size, align, what) -> None:
        """Append events given as columns (arrays or scalars)."""
        n = max(np.size(x) for x in (op, obj, size, align, what))
        rows = np.empty((n, 5), np.int64)
        for j, column in enumerate((op, obj, size, align, what)):
            rows[:, j] = column
        self.add_rows(rows)

    def alloc(self, size: int, align: int, what: int) -> int:
        obj = self.new_obj()
        if size > 0:
            self.chunks.append(np.array([[ALLOC, obj, size, align, what]], np.int64))
            self.count += 1
        return obj

    def new_obj(self, n: int = 1) -> int:
        self.next_obj += n
        return self.next_obj - n

    def push_vec(self, count: int, elem_size: int, what: int) -> None:
        """``Vec::new()`` then ``count`` pushes: the first buffer, then reallocations."""
        caps = []
        cap = 0
        while cap < count:
            cap = grown_capacity(cap, elem_size)
            caps.append(cap)
        if caps:
            ops = np.full(len(caps), REALLOC)
            ops[0] = ALLOC
            self.add(ops, self.new_obj(), np.array(caps) * elem_size, elem_size, what)

    def trace(self) -> Trace:
        events = np.empty(self.count, EVENT_DTYPE)
        what = np.empty(self.count, np.uint8)
        at = 0
        for rows in self.chunks:
            _fill(events, what, at, rows)
            at += rows.shape[0]
        return Trace(events, what, tuple(self.calls))


@jit
def _fill(events, what, at, rows):
    """Copy (op, obj, size, align, what) rows into the trace from index ``at``."""
    for i in range(rows.shape[0]):
        e = events[at + i]
        e.op, e.obj, e.size, e.align = rows[i, 0], rows[i, 1], rows[i, 2], rows[i, 3]
        what[at + i] = rows[i, 4]


@jit
def _node_rows(nodes, op, first, leaf, internal, ptr):
    """Event rows of B-tree nodes given as (kind, id) rows: kind 0 a leaf, 1 an internal node."""
    rows = np.empty((nodes.shape[0], 5), np.int64)
    for i in range(nodes.shape[0]):
        internal_node = nodes[i, 0] == 1
        rows[i, 0], rows[i, 1], rows[i, 3] = op, first + nodes[i, 1], ptr
        rows[i, 2] = internal if internal_node else leaf
        rows[i, 4] = INTERNAL if internal_node else LEAF
    return rows


def _full_mask(b: _Builder, seq_len: int) -> None:
    target = mcsa.Target(b.usize_bits)
    mcsa.core.mask.full_count(seq_len, target)
    b.alloc(target.mul(seq_len, seq_len) * POSITION_BYTES, 2, POSITIONS)
    b.alloc(2, 2, BOUNDARIES)


def _build_mask(b: _Builder, plan: MaskPlan, position_limit: int, max_events: int | None = None) -> None:
    """``build_mask``'s events for a plan (see :func:`firmware_model.heap._build_mask`).

    Raises
    ------
    TraceTooLarge
        If the B-tree alone could take more than ``max_events`` events.
    """
    if not plan.sparse:
        _full_mask(b, plan.seq_len)
        return
    b.alloc(2 * plan.boundaries.size, 2, BOUNDARIES)
    b.push_vec(plan.boundaries.size, 2, TOKENS)
    n_ascending, prefix, lo, codes, count = heap.btree_inputs(plan, position_limit)
    bound = 2 * (n_ascending // 5 + 2 * codes.size + 2)  # allocations and frees of every node, at most
    if max_events is not None and bound > max_events:
        raise TraceTooLarge(f"the B-tree of {count:,} positions takes up to {bound:,} allocator calls, "
                            f"over {max_events:,}")
    _, _, allocs, frees = heap._btree(n_ascending, prefix, lo, codes, True)
    leaf, internal = heap.node_bytes(b.usize_bits)
    first = b.new_obj(len(allocs))
    b.add_rows(_node_rows(allocs, ALLOC, first, leaf, internal, b.ptr))
    if count:
        b.alloc(max(min_non_zero_cap(POSITION_BYTES), count) * POSITION_BYTES, 2, POSITIONS)
    b.add_rows(_node_rows(frees, DEALLOC, first, leaf, internal, b.ptr))


@jit
def _attention_events(queries, runs, seq_len, first_obj, ptr):
    """Events of the key Vecs, scores and drops of ``sparse_attention`` (after its
    two first allocations), as (op, obj, size, align, what) columns."""
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
    out = np.empty((n + 1, 5), np.int64)
    caps = np.zeros(seq_len, np.int64)
    filled = np.zeros(seq_len, np.int64)
    e = 0
    for r in range(queries.size):
        q = queries[r]
        target = filled[q] + runs[r]
        while caps[q] < target:
            new_cap = grown_capacity(caps[q], 2)
            out[e, 0] = 0 if caps[q] == 0 else 2
            out[e, 1], out[e, 2], out[e, 3], out[e, 4] = first_obj + q, new_cap * 2, 2, 10
            e += 1
            caps[q] = new_cap
        filled[q] = target
    for q in range(seq_len):
        if lengths[q] > 0:
            for op in range(2):
                out[e, 0], out[e, 1], out[e, 2], out[e, 3], out[e, 4] = op, first_obj + seq_len + q, lengths[q] * 4, 4, 11
                e += 1
    for q in range(seq_len):
        if caps[q] > 0:
            out[e, 0], out[e, 1], out[e, 2], out[e, 3], out[e, 4] = 1, first_obj + q, caps[q] * 2, 2, 10
            e += 1
    out[e, 0], out[e, 1], out[e, 2], out[e, 3], out[e, 4] = 1, first_obj - 1, seq_len * 3 * ptr, ptr, 9
    return out[: e + 1]


def _sparse_attention(b: _Builder, queries: np.ndarray, runs: np.ndarray, qkv_seq_len: int, dim: int) -> None:
    """``sparse_attention``'s events for a mask given as (query, key count) runs."""
    b.alloc(qkv_seq_len * dim * 4, 4, OUTPUT)
    b.alloc(qkv_seq_len * 3 * b.ptr, b.ptr, BY_QUERY)
    first = b.new_obj(2 * qkv_seq_len)
    b.add_rows(_attention_events(queries, runs, qkv_seq_len, first, b.ptr))


def step_trace(
    config: mcsa.SparsityConfig,
    gate: mcsa.GatePacket,
    seq_len: int,
    dim: int,
    usize_bits: int,
    *,
    inputs_on_heap: bool = True,
    position_limit: int = DEFAULT_POSITION_LIMIT,
    target: mcsa.Target | None = None,
    max_events: int | None = None,
) -> Trace:
    """The allocation trace of one step: q, k, v (``seq_len * dim`` i8 each, when
    on the heap), ``build_mask(gate, seq_len)``, ``sparse_attention(q, k, v, &mask, dim, scale)``.

    Raises
    ------
    mcsa.TargetPanic
        Where the step panics: in ``build_mask`` (as the target does), or with
        ``attempt to divide by zero`` in ``sparse_attention`` when ``dim`` is 0
        (``q.len() / dim``); the trace up to the panic is ``panic.trace``.
    ValueError, TypeError
        For a ``seq_len`` or ``dim`` that is not a usize of the target.
    TraceTooLarge
        If the mask's B-tree could take more than ``max_events`` allocator calls.
    """
    target = target or mcsa.Target(usize_bits)
    sim = mcsa.MincutSparseAttention(config, target, position_limit)
    seq_len = target.check_usize(seq_len, "seq_len")
    dim = target.check_usize(dim, "dim")
    b = _inputs(target.usize_bits, target.mul(seq_len, dim) if inputs_on_heap else 0)
    b.begin("build_mask")
    try:
        plan = sim.plan_mask(gate, seq_len)
        _build_mask(b, plan, position_limit, max_events)
    except mcsa.TargetPanic as panic:
        panic.trace = b.trace()
        raise
    b.begin("sparse_attention")
    if dim == 0:
        panic = mcsa.TargetPanic("attempt to divide by zero")
        panic.trace = b.trace()
        raise panic
    _sparse_attention(b, *heap.query_runs(sim, plan), seq_len, dim)
    return b.trace()


def _inputs(usize_bits: int, size: int) -> _Builder:
    b = _Builder(usize_bits)
    b.begin("the inputs")
    for what in (Q, K, V):
        b.alloc(size, 1, what)
    return b


def inputs_trace(size: int, usize_bits: int) -> Trace:
    """The events of allocating q, k and v of ``size`` bytes each, the start of every step."""
    return _inputs(usize_bits, size).trace()


def build_mask_trace(config, gate, seq_len: int, usize_bits: int,
                     position_limit: int = DEFAULT_POSITION_LIMIT) -> Trace:
    """The events of ``build_mask(gate, seq_len)`` alone."""
    b = _Builder(usize_bits)
    b.begin("build_mask")
    _build_mask(b, heap._plan(config, gate, seq_len, usize_bits), position_limit)
    return b.trace()


def sparse_attention_trace(mask: mcsa.SparseMask, qkv_seq_len: int, dim: int, usize_bits: int) -> Trace:
    """The events of ``sparse_attention`` with q, k, v of ``qkv_seq_len * dim`` elements."""
    b = _Builder(usize_bits)
    b.begin("sparse_attention")
    _sparse_attention(b, *heap._runs(mask.positions[:, 0]), qkv_seq_len, dim)
    return b.trace()


@jit
def _replay_bytes(op, obj, size):
    live = blocks = peak = peak_blocks = allocations = 0
    sizes = Dict.empty(key_type=types.int64, value_type=types.int64)
    for i in range(op.size):
        if op[i] == 1:
            live -= sizes.pop(obj[i])
            blocks -= 1
            continue
        live += size[i]
        blocks += 1
        allocations += 1
        if live > peak:
            peak, peak_blocks = live, blocks
        if op[i] == 2:
            live -= sizes[obj[i]]
            blocks -= 1
        sizes[obj[i]] = size[i]
    return peak, peak_blocks, live, blocks, allocations


def replay_bytes(events: np.ndarray) -> heap.Usage:
    """Byte counting over a trace, as the golden figures count: a reallocation is
    one allocation that takes the new block before it frees the old."""
    return heap.Usage(*(int(x) for x in _replay_bytes(events["op"].astype(np.int64), events["obj"], events["size"])))
