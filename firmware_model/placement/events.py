"""The ordered allocation trace of one step: its planned description
(:mod:`firmware_model.planned`) expanded call by call, the B-tree node by node, into
:data:`~firmware_model.placement.EVENT_DTYPE` records a simulator places.

Every call to the global allocator that ``build_mask`` and ``sparse_attention`` make,
in order, for a 32- or 64-bit target. Zero-sized requests never reach the allocator
and are not events. The trace stops when the step returns: what is live then (q, k,
v, the mask, the output) stays live.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import types
from numba.typed import Dict

from mcsa.core._jit import jit
from mcsa.core.mask import DEFAULT_POSITION_LIMIT, SparseMask
from mcsa.core.packets import GatePacket, SparsityConfig
from mcsa.core.target import Target, TargetPanic

from .. import btree, heap, planned
from ..planned import ALIGN, INTERNAL, KIND, LEAF, OBJ, OP, SIZE, WHAT
from . import ALLOC, DEALLOC, EVENT_DTYPE


@dataclass(frozen=True)
class Trace:
    """An ordered allocation trace.

    Attributes
    ----------
    events : numpy.ndarray
        :data:`~firmware_model.placement.EVENT_DTYPE` records in call order.
    what : numpy.ndarray
        uint8 code per event into :data:`~firmware_model.planned.WHAT`.
    calls : tuple of (str, int)
        Each call's name and the index of its first event, in order.
    """

    events: np.ndarray
    what: np.ndarray
    calls: tuple[tuple[str, int], ...]

    def call_of(self, index: int) -> str:
        """The call that makes event ``index``."""
        return planned.call_of(self.calls, index)

    def describe(self, index: int) -> str:
        """``event 532 (sparse_attention: alloc 23,552 B for the output)``."""
        e = self.events[index]
        op = ("alloc", "dealloc", "realloc to")[e["op"]]
        return f"event {index} ({self.call_of(index)}: {op} {int(e['size']):,} B for {WHAT[self.what[index]]})"


class TraceTooLarge(ValueError):
    """The step would make more allocator calls than the caller allows."""


@jit
def _node_rows(nodes, op, first, leaf, internal, ptr):
    """Description rows of B-tree nodes given as (kind, id) rows."""
    rows = np.ones((nodes.shape[0], 6), np.int64)
    for i in range(nodes.shape[0]):
        is_internal = nodes[i, 0] == btree.INTERNAL
        rows[i, OP], rows[i, OBJ], rows[i, ALIGN] = op, first + nodes[i, 1], ptr
        rows[i, SIZE] = internal if is_internal else leaf
        rows[i, KIND] = INTERNAL if is_internal else LEAF
    return rows


@jit
def _fill(events, what, rows):
    """Copy description rows (each one block) into the trace."""
    for i in range(rows.shape[0]):
        e = events[i]
        e.op, e.obj, e.size, e.align = rows[i, OP], rows[i, OBJ], rows[i, SIZE], rows[i, ALIGN]
        what[i] = rows[i, KIND]


def expand(rows: np.ndarray, calls: tuple[tuple[str, int], ...], nodes=None, usize_bits: int = 64) -> Trace:
    """The trace of description rows: each folded B-tree row replaced by its nodes, in
    Rust's order (``nodes``, the allocations and the frees as (kind, id) rows).

    Raises
    ------
    ValueError
        If the rows fold B-tree nodes and ``nodes`` is None.
    """
    folded = np.flatnonzero((rows[:, KIND] == LEAF) | (rows[:, KIND] == INTERNAL))
    if folded.size:
        if nodes is None:
            raise ValueError("the B-tree's node sequence was not kept for this step")
        leaf, internal = btree.node_bytes(usize_bits)
        first = int(rows[:, OBJ].max()) + 1  # the nodes' ids, after every other block's
        allocs, frees = folded[rows[folded, OP] == ALLOC], folded[rows[folded, OP] == DEALLOC]
        width = np.ones(len(rows), np.int64)  # events each row becomes
        width[folded] = 0
        width[allocs[0]], width[frees[0]] = len(nodes[0]), len(nodes[1])
        at = np.concatenate(([0], np.cumsum(width)))
        calls = tuple((name, int(at[first_row])) for name, first_row in calls)
        rows = np.concatenate([rows[:allocs[0]], _node_rows(nodes[0], ALLOC, first, leaf, internal, usize_bits // 8),
                               rows[allocs[-1] + 1:frees[0]],
                               _node_rows(nodes[1], DEALLOC, first, leaf, internal, usize_bits // 8),
                               rows[frees[-1] + 1:]])
    events = np.empty(len(rows), EVENT_DTYPE)
    what = np.empty(len(rows), np.uint8)
    _fill(events, what, rows)
    return Trace(events, what, calls)


def step_trace(
    config: SparsityConfig, gate: GatePacket,
    seq_len: int, dim: int,
    usize_bits: int,
    *,
    inputs_on_heap: bool = True,
    position_limit: int = DEFAULT_POSITION_LIMIT,
    target: Target | None = None,
    max_events: int | None = None,
) -> Trace:
    """The allocation trace of one step: q, k, v (``seq_len * dim`` i8 each, when
    on the heap), ``build_mask(gate, seq_len)``, ``sparse_attention(q, k, v, &mask, dim, scale)``.

    Raises
    ------
    mcsa.TargetPanic
        Where the step panics (q, k and v no ``Vec`` can hold, ``build_mask``'s panics,
        ``attempt to divide by zero`` in ``sparse_attention`` when ``dim`` is 0); the
        trace up to the panic is ``panic.trace``.
    ValueError, TypeError
        For a ``seq_len`` or ``dim`` that is not a usize of the target.
    TraceTooLarge
        If the mask's B-tree could take more than ``max_events`` allocator calls.
    """
    target = target or heap.width_target(usize_bits)
    step = planned.plan_step(config, gate, target.check_usize(seq_len, "seq_len"),
                             target.check_usize(dim, "dim"), target, inputs_on_heap=inputs_on_heap,
                             position_limit=position_limit, max_events=max_events if max_events is not None else 2**62)
    return trace_of(step, max_events)


def trace_of(step: planned.PlannedStep, max_events: int | None = None) -> Trace:
    """The trace of a planned step (planned with ``max_events`` at least as large).

    Raises
    ------
    mcsa.TargetPanic
        Where the step panics, with the trace up to the panic as ``panic.trace``.
    TraceTooLarge
        If the mask's B-tree could take more than ``max_events`` allocator calls.
    """
    if max_events is not None and step.node_events > max_events:
        raise TraceTooLarge(f"the B-tree of {step.num_positions:,} positions takes up to {step.node_events:,} "
                            f"allocator calls, over {max_events:,}")
    if step.panic is None:
        return expand(step.rows, step.calls, step.nodes, step.target.usize_bits)
    names = [name for name, _ in step.calls]
    last = names.index(step.panic[0])
    end = step.calls[last + 1][1] if last + 1 < len(names) else len(step.rows)
    panic = TargetPanic(step.panic[1])
    panic.trace = expand(step.rows[:end], step.calls[:last + 1], step.nodes, step.target.usize_bits)
    raise panic


def inputs_trace(size: int, usize_bits: int) -> Trace:
    """The events of allocating q, k and v of ``size`` bytes each, the start of every step."""
    calls = planned.Calls(usize_bits)
    calls.begin(planned.CALLS[0])
    for kind in (planned.Q, planned.K, planned.V):
        calls.alloc(size, 1, kind)
    return expand(calls.rows(), tuple(calls.starts))


def full_mask_trace(seq_len: int, usize_bits: int) -> Trace:
    """The events of ``SparseMask::full(seq_len)``.

    Raises
    ------
    mcsa.TargetPanic
        Where the capacity overflows on this width.
    """
    target = heap.width_target(usize_bits)
    calls = planned.Calls(usize_bits)
    calls.begin(planned.CALLS[1])
    planned.full_mask_rows(calls, target.check_usize(seq_len, "seq_len"), target)
    return expand(calls.rows(), tuple(calls.starts))


def build_mask_trace(config, gate, seq_len: int, usize_bits: int,
                     position_limit: int = DEFAULT_POSITION_LIMIT) -> Trace:
    """The events of ``build_mask(gate, seq_len)`` alone.

    Raises
    ------
    mcsa.TargetPanic
        Where ``build_mask`` panics.
    """
    target = heap.width_target(usize_bits)
    step = planned.plan_step(config, gate, target.check_usize(seq_len, "seq_len"), 0, target,
                             inputs_on_heap=False, position_limit=position_limit, max_events=2**62)
    if planned.CALLS[1] in step.panics:
        raise TargetPanic(step.panics[planned.CALLS[1]])
    rows = step.call_rows(planned.CALLS[1])
    return expand(rows, ((planned.CALLS[1], 0),), step.nodes, usize_bits)


def sparse_attention_trace(mask: SparseMask, qkv_seq_len: int, dim: int, usize_bits: int) -> Trace:
    """The events of ``sparse_attention`` with q, k, v of ``qkv_seq_len * dim`` elements.

    Raises
    ------
    ValueError
        If the mask reaches a query at or past ``qkv_seq_len``.
    """
    target = heap.width_target(usize_bits)
    calls = planned.Calls(usize_bits)
    calls.begin(planned.CALLS[2])
    planned.sparse_attention_rows(calls, *planned.runs_of(mask.positions[:, 0]),
                                  target.check_usize(qkv_seq_len, "qkv_seq_len"), target.check_usize(dim, "dim"))
    return expand(calls.rows(), tuple(calls.starts))


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
    one allocation that takes the new block before it frees the old. (An independent
    count of the events, to check :func:`firmware_model.heap.count` against.)"""
    return heap.Usage(*(int(x) for x in _replay_bytes(events["op"].astype(np.int64), events["obj"], events["size"])))
