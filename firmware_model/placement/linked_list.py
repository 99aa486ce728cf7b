"""``linked-list``: rust-osdev ``linked_list_allocator`` v0.10.5, the heap behind
embedded-alloc's ``LlffHeap``, block by block.

What it does (``src/hole.rs``, ``src/lib.rs`` of v0.10.5):

- ``HoleList::new`` aligns the arena start to ``align_of::<Hole>()`` (usize) and
  its size down to it; the free space is one hole ``[bottom, top)``.
- ``align_layout``: a request is at least ``min_size()`` (``2 * usize``, a ``Hole``)
  and rounded up to usize; ``used()`` counts these sizes.
- ``allocate_first_fit`` walks the holes in address order and takes the first
  where ``split_current`` succeeds: the block starts at the hole (or, when the hole
  is not aligned enough, at least a ``Hole`` further, aligned, leaving a front
  hole); the rest of the hole becomes a back hole, and a hole whose rest is not
  empty but smaller than a ``Hole`` is *refused*, not split.
- ``deallocate`` inserts the block as a hole in address order and merges it with
  its neighbours when they touch (``try_merge_next_n``: one merge at the list's
  front, two elsewhere); at the list's end a hole within a ``Hole`` of the top
  grows to the top (``check_merge_top``), at the front one within a ``Hole`` of
  the bottom grows down to it (``check_merge_bottom``).
- ``GlobalAlloc`` has only ``alloc``/``dealloc``: ``realloc`` is Rust's default,
  alloc the new block, copy, dealloc the old one; a failed alloc returns null.
"""

from __future__ import annotations

import numpy as np

from mcsa.core._jit import jit

from . import Placement
from .arena import ARENA_ALIGN, TAKEN, block_bytes, table
from .loop import LINKED_LIST, place

ADDRESS, LENGTH = range(2)
"""Columns of the hole list (the ``heads`` of the other allocators): each hole's address
and size, in address order."""

HOLES = 1
"""State: ``st[TAKEN]`` (``Heap::used()`` and the bytes no hole can ever hold: the
unaligned tail, or all of an arena too small for one hole, counted as taken as the
other simulators count their own overhead), and the number of holes."""

HEAP, WORD, TOP = range(3)
"""Parameters: the heap size, the usize in bytes, the end of the arena rounded down to it."""


@jit
def _align_up(x, align):
    return -(-x // align) * align


@jit
def _shift(holes, first, last, by):
    """Move holes ``first..last`` (exclusive) by ``by`` places (+1 or -1)."""
    if by > 0:
        for j in range(last - 1, first - 1, -1):
            holes[j + 1, ADDRESS], holes[j + 1, LENGTH] = holes[j, ADDRESS], holes[j, LENGTH]
    else:
        for j in range(first, last):
            holes[j - 1, ADDRESS], holes[j - 1, LENGTH] = holes[j, ADDRESS], holes[j, LENGTH]


@jit
def _merge_top(holes, i, top, word):
    end = holes[i, ADDRESS] + holes[i, LENGTH]
    if end < top and _align_up(end, word) + 2 * word > top:
        holes[i, LENGTH] += top - end


@jit
def _insert(holes, m, addr, size, bottom, top, word):
    """``deallocate``: insert ``[addr, addr + size)`` and merge; the new hole count."""
    if m == 0:
        if bottom + 2 * word > addr:
            size += addr - bottom
            addr = bottom
        holes[0, ADDRESS], holes[0, LENGTH] = addr, size
        _merge_top(holes, 0, top, word)
        return 1
    if addr < holes[0, ADDRESS]:
        if bottom + 2 * word > addr:
            size += addr - bottom
            addr = bottom
        at, cur, merges = 0, 0, 1
    else:
        at = 1
        while at < m and holes[at, ADDRESS] < addr:
            at += 1
        cur, merges = at - 1, 2
    _shift(holes, at, m, 1)
    holes[at, ADDRESS], holes[at, LENGTH] = addr, size
    m += 1
    for _ in range(merges):
        if cur + 1 >= m:
            _merge_top(holes, cur, top, word)
            break
        if holes[cur, ADDRESS] + holes[cur, LENGTH] == holes[cur + 1, ADDRESS]:
            holes[cur, LENGTH] += holes[cur + 1, LENGTH]
            _shift(holes, cur + 2, m, -1)
            m -= 1
        else:
            cur += 1
    return m


@jit
def _first_fit(holes, m, size, align, word):
    """``allocate_first_fit`` of an aligned size: (address or -1, new hole count)."""
    for i in range(m):
        addr, hole = holes[i, ADDRESS], holes[i, LENGTH]
        if hole < size:
            continue
        start = addr if addr % align == 0 else _align_up(addr + 2 * word, align)
        end = start + size
        hole_end = addr + hole
        if end > hole_end:
            continue
        back = hole_end - end
        if back > 0 and _align_up(end, word) + 2 * word > hole_end:
            continue  # a remainder smaller than a Hole: this hole is refused
        pieces = (1 if start > addr else 0) + (1 if back > 0 else 0)
        if pieces == 2:
            _shift(holes, i + 1, m, 1)
        elif pieces == 0:
            _shift(holes, i + 1, m, -1)
        k = i
        if start > addr:
            holes[k, ADDRESS], holes[k, LENGTH] = addr, start - addr
            k += 1
        if back > 0:
            holes[k, ADDRESS], holes[k, LENGTH] = _align_up(end, word), back
        return start, m + pieces - 1
    return -1, m


@jit
def init(heap_size, word, n_events):
    """``HoleList::new``: one hole over the arena, its end aligned down to a usize."""
    top = heap_size // word * word
    keys, fields = table(np.zeros(1, np.int64))
    holes = np.empty((n_events + 2, 2), np.int64)
    st = np.zeros(2, np.int64)
    st[TAKEN] = heap_size - (top if top >= 2 * word else 0)
    if top >= 2 * word:
        holes[0, ADDRESS], holes[0, LENGTH] = 0, top
        st[HOLES] = 1
    return (keys, fields, np.zeros(1, np.int64), holes, np.zeros(1, np.int64), st,
            np.array([heap_size, word, top]))


@jit
def alloc(keys, fields, holes, counts, st, cfg, size, align):
    word = cfg[WORD]
    need = block_bytes(size, 0, 2 * word, word, 0, 0)
    block, count = _first_fit(holes, st[HOLES], need, align, word)
    st[HOLES] = count
    if block >= 0:
        st[TAKEN] += need
    return block


@jit
def free(keys, fields, holes, counts, st, cfg, block, request):
    """``deallocate``: the block's size follows from its layout, as ``align_layout`` gave it."""
    size = block_bytes(request, 0, 2 * cfg[WORD], cfg[WORD], 0, 0)
    st[HOLES] = _insert(holes, st[HOLES], block, size, 0, cfg[TOP], cfg[WORD])
    st[TAKEN] -= size


@jit
def end(keys, fields, holes, counts, st, cfg, addr, requests, n_events):
    word = cfg[WORD]
    sizes = np.zeros(len(addr), np.int64)
    for o in range(len(addr)):
        if addr[o] >= 0:
            sizes[o] = block_bytes(requests[o], 0, 2 * word, word, 0, 0)
    return addr, sizes, holes[:st[HOLES]].copy()


def untouched_end(st, cfg) -> tuple[int, int, int, int]:
    """The arena's untouched end at the start (the one hole) and what a request served
    at its start needs beyond its block (alignments up to a usize need no front padding;
    see ``firmware_model.bounds``): a Hole after it, since a smaller remainder refuses
    the hole. (end, extra, shift, largest block)."""
    return int(cfg[TOP]) if cfg[TOP] >= 2 * cfg[WORD] else 0, int(2 * cfg[WORD]), 0, 1 << 62


def simulate(events: np.ndarray, heap_size: int, usize_bits: int) -> Placement:
    """Place a trace on a ``linked_list_allocator`` heap of ``heap_size`` bytes.

    Arguments and result as :data:`~firmware_model.placement.Simulator`: ``heap_size``
    is what ``Heap::init`` is given, ``usize_bits`` 32 or 64. ``peak_used`` is
    ``Heap::used()`` plus the arena's tail past the last usize boundary.

    Raises
    ------
    TypeError
        If ``events`` is not an ``EVENT_DTYPE`` array, or a size is not an integer.
    ValueError
        If the trace, the heap size or the pointer width is invalid.
    """
    return place(LINKED_LIST, "linked-list", events, heap_size, usize_bits, max_align=ARENA_ALIGN)
