"""Exact heap use of the reference module's calls: the byte counter.

Figures are bytes requested from the global allocator (``Layout`` sizes, no
allocator overhead) during one call, as defined in the golden vectors:
``peak_bytes`` (highest live total), ``peak_blocks`` (live blocks the first time
that peak is reached), ``live_bytes``/``live_blocks`` (what the call leaves
allocated) and ``allocations`` (calls to the allocator; a reallocation counts
one). A growing ``Vec`` reallocates as allocate-new, copy, free-old.

The counter replays the description rows of a planned step
(:mod:`firmware_model.planned`, where what decides each call is written) under one
block-cost rule: bytes requested (allocator ``none``), or what each block takes from an
allocator's heap (:mod:`firmware_model.allocators`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mcsa.core._jit import jit
from mcsa.core.checks import check_int
from mcsa.core.mask import DEFAULT_POSITION_LIMIT, SparseMask, position_limit_arg
from mcsa.core.packets import GatePacket, SparsityConfig
from mcsa.core.target import Target, TargetPanic

from . import planned
from .allocators import ALLOCATORS, Allocator, check_allocator
from .placement import DEALLOC, REALLOC
from .placement.arena import block_bytes
from .planned import COUNT, KIND, OBJ, OP, SIZE, WHAT

NONE = ALLOCATORS["none"]

FOLDED = {planned.LEAF: "B-tree leaves", planned.INTERNAL: "B-tree internal nodes"}
"""What a row of many blocks holds (the B-tree's nodes, folded by kind)."""


@dataclass(frozen=True)
class Usage:
    """Heap figures of one call (bytes requested, no allocator overhead)."""

    peak_bytes: int
    peak_blocks: int
    live_bytes: int
    live_blocks: int
    allocations: int

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("peak_bytes", "peak_blocks", "live_bytes", "live_blocks", "allocations")}


@dataclass(frozen=True)
class Crossing:
    """The allocation that first takes the heap over its budget."""

    call: str
    allocation: str
    requested: int
    live_before: int


@dataclass(frozen=True)
class Counted:
    """A planned step's rows counted under one block-cost rule.

    Attributes
    ----------
    usage : Usage
        Of every row, from an empty heap.
    call_peaks, call_lives, call_starts : dict of str to int
        Per call: the highest live bytes while it runs (counting what was live when it
        began), what is live when it returns, and what was live when it began.
    crossing : Crossing or None
        The first allocation past the budget, when a budget was given.
    """

    usage: Usage
    call_peaks: dict[str, int]
    call_lives: dict[str, int]
    call_starts: dict[str, int]
    crossing: Crossing | None

    def call_peak(self, call: str) -> int:
        """Highest bytes live during ``call``, minus what was live when it began."""
        return self.call_peaks[call] - self.call_starts[call]

    def call_left(self, call: str) -> int:
        """Bytes ``call`` leaves live (what it allocated and did not free)."""
        return self.call_lives[call] - self.call_starts[call]


@jit
def _count(rows, starts, pre, min_block, align, sl_log2, post, budget, n_obj):
    """Replay description rows: each block costs ``block_bytes`` of its size; a
    reallocation takes the new block before it frees the old. Returns the figures of
    :class:`Usage`, each call's (start, peak, end) live bytes, and the first row that
    takes live bytes past ``budget`` (-1: none, or no budget) with the bytes live before it."""
    n_calls = starts.size
    at_start = np.zeros(n_calls, np.int64)
    call_peak = np.zeros(n_calls, np.int64)
    at_end = np.zeros(n_calls, np.int64)
    sizes = np.zeros(n_obj, np.int64)  # each single block's current size
    live = blocks = peak = peak_blocks = allocations = 0
    cross_row = -1
    cross_before = 0
    c = 0
    for r in range(rows.shape[0]):
        while c + 1 < n_calls and starts[c + 1] <= r:
            at_end[c] = live
            c += 1
            at_start[c] = call_peak[c] = live
        op, obj, count = rows[r, OP], rows[r, OBJ], rows[r, COUNT]
        cost = block_bytes(rows[r, SIZE], pre, min_block, align, sl_log2, post)
        if op == DEALLOC:
            live -= cost * count
            blocks -= count
            continue
        before = live
        live += cost * count
        blocks += count
        allocations += count
        if live > peak:
            peak, peak_blocks = live, blocks
        call_peak[c] = max(call_peak[c], live)
        if budget >= 0 and cross_row < 0 and live > budget:
            cross_row, cross_before = r, before
        if op == REALLOC:
            live -= block_bytes(sizes[obj], pre, min_block, align, sl_log2, post)
            blocks -= 1
        if obj >= 0:
            sizes[obj] = rows[r, SIZE]
    while c + 1 < n_calls:
        at_end[c] = live
        c += 1
        at_start[c] = call_peak[c] = live
    at_end[c] = live
    return peak, peak_blocks, live, blocks, allocations, at_start, call_peak, at_end, cross_row, cross_before


def count(rows: np.ndarray, usize_bits: int, allocator: Allocator = NONE, budget: int | None = None,
          calls: tuple[tuple[str, int], ...] = (("", 0),)) -> Counted:
    """Count description rows (see :func:`_count`) with ``allocator``'s block cost on a
    heap of ``budget`` bytes (which only ESP-IDF's size classes depend on)."""
    params = allocator.params(usize_bits, budget)
    starts = np.array([first for _, first in calls], np.int64)
    n_obj = int(rows[:, OBJ].max(initial=-1)) + 1
    (peak, peak_blocks, live, blocks, allocations, at_start, call_peak, at_end, cross_row,
     cross_before) = _count(rows, starts, *params, -1 if budget is None else budget, n_obj)
    names = [name for name, _ in calls]
    crossing = None
    if cross_row >= 0:
        row = rows[cross_row]
        what = f"{int(row[COUNT]):,} {FOLDED[row[KIND]]}" if row[COUNT] > 1 else WHAT[row[KIND]]
        crossing = Crossing(planned.call_of(calls, int(cross_row)), what, int(row[SIZE] * row[COUNT]),
                            int(cross_before))
    return Counted(Usage(int(peak), int(peak_blocks), int(live), int(blocks), int(allocations)),
                   dict(zip(names, map(int, call_peak))), dict(zip(names, map(int, at_end))),
                   dict(zip(names, map(int, at_start))), crossing)


def width_target(usize_bits) -> Target:
    """A release target of the width (heap use is the same in debug builds that do not panic).

    Raises
    ------
    TypeError, ValueError
        If ``usize_bits`` is not 32 or 64.
    """
    usize_bits = check_int(usize_bits, "usize_bits", 32, 64)
    if usize_bits not in (32, 64):
        raise ValueError(f"usize_bits must be 32 or 64, got {usize_bits}")
    return Target(usize_bits)


def full_mask_usage(seq_len: int, usize_bits: int, allocator: Allocator = NONE) -> Usage:
    """``SparseMask::full(seq_len)``: ``with_capacity(seq_len * seq_len)`` pairs, then ``vec![0u16]``.

    Raises
    ------
    TypeError, ValueError
        For a ``seq_len`` that is not a usize of the width, a width other than 32 or
        64, or an allocator that is not an :class:`~firmware_model.allocators.Allocator`.
    mcsa.TargetPanic
        Where the capacity overflows on this width (see ``mcsa.SparseMask.full``).
    """
    target = width_target(usize_bits)
    seq_len = target.check_usize(seq_len, "seq_len")
    calls = planned.Calls(target.usize_bits)
    planned.full_mask_rows(calls, seq_len, target)
    return count(calls.rows(), target.usize_bits, check_allocator(allocator)).usage


def _mask_step(config, gate, seq_len, target, position_limit) -> planned.PlannedStep:
    """The planned step of a mask alone (no q, k, v on the heap, no attention)."""
    return planned.plan_step(config, gate, seq_len, 0, target, inputs_on_heap=False,
                             position_limit=position_limit_arg(position_limit))


def build_mask_usage(
    config: SparsityConfig, gate: GatePacket,
    seq_len: int,
    usize_bits: int,
    allocator: Allocator = NONE,
    position_limit: int = DEFAULT_POSITION_LIMIT,
) -> Usage:
    """Heap use of ``build_mask(gate, seq_len)`` on a ``usize_bits``-bit target.

    Raises
    ------
    TypeError, ValueError
        For a bad config, gate, width, allocator, position limit, or a ``seq_len``
        that is not a usize of the width, naming the argument.
    mcsa.TargetPanic
        ``capacity overflow`` on the full path where ``SparseMask::full`` panics.
    mcsa.MaskTooLarge
        Only for masks whose indices wrap past 65535 and whose insertions exceed
        ``position_limit`` (they must be replayed one by one).
    """
    target = width_target(usize_bits)
    allocator = check_allocator(allocator)
    step = _mask_step(config, gate, target.check_usize(seq_len, "seq_len"), target, position_limit)
    _raise_build_panic(step)
    return count(step.call_rows(planned.CALLS[1]), target.usize_bits, allocator).usage


def _raise_build_panic(step: planned.PlannedStep) -> None:
    if planned.CALLS[1] in step.panics:
        raise TargetPanic(step.panics[planned.CALLS[1]])


def _check_sizes(target: Target, qkv_seq_len, dim) -> tuple[int, int]:
    """``qkv_seq_len`` and ``dim`` as usizes of the width, or TypeError/ValueError naming them."""
    return target.check_usize(qkv_seq_len, "qkv_seq_len"), target.check_usize(dim, "dim")


def _attention_usage(queries, runs, qkv_seq_len: int, dim: int, target: Target, allocator: Allocator) -> Usage:
    calls = planned.Calls(target.usize_bits)
    planned.sparse_attention_rows(calls, queries, runs, qkv_seq_len, dim)
    return count(calls.rows(), target.usize_bits, allocator).usage


def sparse_attention_usage(
    mask: SparseMask, qkv_seq_len: int, dim: int, usize_bits: int, allocator: Allocator = NONE
) -> Usage:
    """Heap use of ``sparse_attention(q, k, v, mask, dim, scale)`` with q, k, v of
    ``qkv_seq_len * dim`` elements (a call that does not panic).

    Raises
    ------
    ValueError
        If the mask reaches a query at or past ``qkv_seq_len`` (the call would
        panic), or ``qkv_seq_len`` or ``dim`` is not a usize of the width.
    TypeError
        If ``mask`` is not a SparseMask, ``qkv_seq_len`` or ``dim`` not an integer, or
        ``allocator`` not an Allocator.
    """
    if not isinstance(mask, SparseMask):
        raise TypeError(f"mask must be a SparseMask, got {type(mask).__name__}")
    target = width_target(usize_bits)
    qkv_seq_len, dim = _check_sizes(target, qkv_seq_len, dim)
    return _attention_usage(*planned.runs_of(mask.positions[:, 0]), qkv_seq_len, dim, target,
                            check_allocator(allocator))


def planned_attention_usage(
    config: SparsityConfig, gate: GatePacket,
    mask_seq_len: int, qkv_seq_len: int, dim: int, usize_bits: int,
    allocator: Allocator = NONE,
    position_limit: int = DEFAULT_POSITION_LIMIT,
) -> Usage:
    """:func:`sparse_attention_usage` for the mask of ``build_mask(gate,
    mask_seq_len)``, without materialising it.

    Raises
    ------
    ValueError, TypeError
        As :func:`sparse_attention_usage` (a ``config`` or ``gate`` of the wrong type too).
    mcsa.TargetPanic
        If ``build_mask`` itself panics on this width.
    mcsa.MaskTooLarge
        Where the mask's insertions must be replayed and exceed ``position_limit``.
    """
    target = width_target(usize_bits)
    qkv_seq_len, dim = _check_sizes(target, qkv_seq_len, dim)
    allocator = check_allocator(allocator)
    step = _mask_step(config, gate, target.check_usize(mask_seq_len, "mask_seq_len"), target, position_limit)
    _raise_build_panic(step)
    return _attention_usage(*step.query_runs(), qkv_seq_len, dim, target, allocator)
