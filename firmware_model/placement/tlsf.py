"""``tlsf``: embedded-alloc's ``TlsfHeap``, which is rlsf's ``Tlsf`` (github:yvt/rlsf 0.2.1).

Read from embedded-alloc ``src/tlsf.rs`` (``Tlsf<'static, usize, usize, {usize::BITS},
{usize::BITS}>``: FLLEN = SLLEN = 32 on 32-bit, 64 on 64-bit; ``GlobalAlloc`` implements
only ``alloc``/``dealloc``, so Rust's default ``realloc`` = alloc new, copy, dealloc old)
and rlsf ``crates/rlsf/src/tlsf.rs``:

- ``GRANULARITY`` = 4 usize (16 / 32 B); every block (header included) is a multiple
  of it; a used block's header is 2 usize (``UsedBlockHdr``), the payload follows it.
- ``insert_free_block_ptr``: the arena rounded to GRANULARITY becomes one free block
  and a GRANULARITY-sized sentinel at its end.
- ``allocate``: search size = round_up(size + max(align - G/2, 0) + G/2, G);
  ``map_ceil`` gives the smallest list whose every block fits (good fit, rounded up the
  second level), the first non-empty list from there (same first level, then higher
  first levels) gives its head block; the block is split at round_up(header + size, G),
  the tail becomes a free block (any tail is a valid block: sizes are multiples of G).
- ``deallocate``: coalesce with the next then the previous physical block if free.
- Free lists are LIFO (a block is linked at the head of list ``map_floor(size)``).

Blocks and holes are reported as (offset of the block header, block size with header).
The simulator assumes the arena start is aligned to 4096 bytes (as the oracle's arena
was), so payload alignment follows from the offsets alone.
"""

from __future__ import annotations

import numpy as np

from mcsa.core._jit import jit

from . import Placement
from .arena import ARENA_ALIGN, TAKEN, block_bytes, first_free, live_sizes, log2, pop_free, push_free, slot, table
from .loop import TLSF, place

NEXT_FREE, PREV_FREE, SIZE, USED, PREV_PHYS = range(5)
"""Block fields (rows of the block table): the free-list links, the block's size with
its header, whether it is used, and the block physically before it (-1: none)."""

# State: only ``st[TAKEN]``, the bytes not in free blocks.

HEAP, GRANULE, GRANULE_LOG2, SLI, FL_COUNT = range(5)
"""Parameters: the heap size, GRANULARITY and its log2, SLLEN's log2, FLLEN."""


@jit
def _map(size, g_log2, sli, ceil):
    """rlsf ``map_floor``/``map_ceil`` for a multiple of GRANULARITY: (fl, sl)."""
    size_log2 = log2(size)
    fl = size_log2 - g_log2
    if size_log2 >= sli:
        shift = size_log2 - sli
        sl = size >> shift
        rounded = ceil and (size & ((1 << shift) - 1)) != 0
    else:
        sl = size << (sli - size_log2)
        rounded = False
    sl = (sl & ((1 << sli) - 1)) + (1 if rounded else 0)
    fl += sl >> sli
    return fl, sl & ((1 << sli) - 1)


@jit
def _link(keys, fields, heads, counts, cfg, block, size):
    """``link_free_block``: a free block of ``size`` at the head of list ``map_floor(size)``."""
    fl, sl = _map(size, cfg[GRANULE_LOG2], cfg[SLI], False)
    push_free(keys, fields, NEXT_FREE, PREV_FREE, heads, counts, block, fl, sl)
    fields[slot(keys, block), SIZE] = size


@jit
def _unlink(keys, fields, heads, counts, cfg, block, size):
    fl, sl = _map(size, cfg[GRANULE_LOG2], cfg[SLI], False)
    pop_free(keys, fields, NEXT_FREE, PREV_FREE, heads, counts, block, fl, sl)


@jit
def init(heap_size, word, n_events):
    """``insert_free_block_ptr``: one free block over the arena rounded to GRANULARITY,
    and a GRANULARITY-sized used sentinel after it."""
    g = 4 * word
    sli = 5 if word == 4 else 6
    cfg = np.array([heap_size, g, 4 if word == 4 else 5, sli, 8 * word])
    fill = np.array([-1, -1, 0, 1, -1])
    keys, fields = table(fill)
    heads = np.full((8 * word, 1 << sli), -1, np.int64)
    counts = np.zeros(8 * word, np.int64)
    st = np.full(1, heap_size, np.int64)
    length = heap_size & ~(g - 1)
    if length >= 2 * g:
        free0 = length - g
        fields[slot(keys, 0), USED] = 0
        _link(keys, fields, heads, counts, cfg, 0, free0)
        st[TAKEN] -= free0
        sentinel = slot(keys, free0)
        fields[sentinel, USED] = 1
        fields[sentinel, SIZE] = g
        fields[sentinel, PREV_PHYS] = 0
    return keys, fields, fill, heads, counts, st, cfg


@jit
def alloc(keys, fields, heads, counts, st, cfg, size, align):
    """``allocate``: good fit from ``map_ceil`` of the search size, the block split after
    the request rounded to GRANULARITY; -1 when no list holds a block that fits."""
    g = cfg[GRANULE]
    max_over = max(align - g // 2, 0) + g // 2
    search = (size + max_over + g - 1) & ~(g - 1)
    fl, sl = _map(search, cfg[GRANULE_LOG2], cfg[SLI], True)
    if fl >= cfg[FL_COUNT]:
        return -1
    block = first_free(heads, counts, fl, sl, cfg[FL_COUNT])
    if block < 0:
        return -1
    j = slot(keys, block)
    block_size = fields[j, SIZE]
    _unlink(keys, fields, heads, counts, cfg, block, block_size)
    ptr = (block + g // 2 + align - 1) & ~(align - 1)
    new_size = block_bytes(size, ptr - block, 0, g, 0, 0)
    if new_size != block_size:
        rest = block + new_size
        fields[slot(keys, block + block_size), PREV_PHYS] = rest
        k = slot(keys, rest)
        fields[k, PREV_PHYS] = block
        fields[k, USED] = 0
        _link(keys, fields, heads, counts, cfg, rest, block_size - new_size)
        st[TAKEN] -= block_size - new_size
    st[TAKEN] += block_size
    fields[j, USED] = 1
    fields[j, SIZE] = new_size
    return block


@jit
def free(keys, fields, heads, counts, st, cfg, block, request):
    """``deallocate``: coalesce with the next, then the previous physical block if free."""
    size = fields[slot(keys, block), SIZE]
    st[TAKEN] -= size
    after = block + size
    k = slot(keys, after)
    if fields[k, USED] == 0:
        after_size = fields[k, SIZE]
        _unlink(keys, fields, heads, counts, cfg, after, after_size)
        size += after_size
    before = fields[slot(keys, block), PREV_PHYS]
    if before >= 0:
        k = slot(keys, before)
        if fields[k, USED] == 0:
            before_size = fields[k, SIZE]
            _unlink(keys, fields, heads, counts, cfg, before, before_size)
            size += before_size
            block = before
    fields[slot(keys, block), USED] = 0
    _link(keys, fields, heads, counts, cfg, block, size)
    fields[slot(keys, block + size), PREV_PHYS] = block


@jit
def end(keys, fields, heads, counts, st, cfg, addr, requests, n_events):
    """Block offsets, sizes and the holes, walking the arena block by block."""
    g = cfg[GRANULE]
    length = cfg[HEAP] & ~(g - 1)
    holes = np.zeros((n_events + 1, 2), np.int64)
    m = 0
    block = 0
    while length >= 2 * g and block < length - g:
        j = slot(keys, block)
        if fields[j, USED] == 0:
            holes[m, 0] = block
            holes[m, 1] = fields[j, SIZE]
            m += 1
        block += fields[j, SIZE]
    return addr, live_sizes(keys, fields, SIZE, addr, 0), holes[:m]


def untouched_end(st, cfg) -> tuple[int, int, int, int]:
    """The arena's untouched end at the start (the one free block) and what a request
    served there needs beyond its block (see ``firmware_model.bounds``): the end must
    sit in a list ``map_ceil`` searches, so hold the block (the request and its header
    rounded to GRANULARITY, alignments up to GRANULARITY / 2) rounded up to its
    second-level class, at most ``block >> SLI`` more. (end, extra, shift, largest block)."""
    return int(cfg[HEAP] - st[TAKEN]), 1, int(cfg[SLI]), 1 << 62


def simulate(events: np.ndarray, heap_size: int, usize_bits: int) -> Placement:
    """Replay ``events`` on embedded-alloc's ``TlsfHeap`` (rlsf) over ``heap_size`` bytes.

    Arguments and result as :data:`~firmware_model.placement.Simulator`: ``heap_size`` is
    what ``Heap::init`` is given, ``usize_bits`` 32 or 64.

    Raises
    ------
    TypeError
        If ``events`` is not an ``EVENT_DTYPE`` array, or a size is not an integer.
    ValueError
        If the trace or the sizes are invalid.
    """
    return place(TLSF, "tlsf", events, heap_size, usize_bits, max_align=ARENA_ALIGN)
