"""``freertos-heap4``: FreeRTOS-Kernel ``portable/MemMang/heap_4.c``, ``portBYTE_ALIGNMENT`` 8.

Read from github:FreeRTOS/FreeRTOS-Kernel ``portable/MemMang/heap_4.c`` (main, 2025):

- ``xHeapStructSize`` = sizeof(BlockLink_t) (pointer + size_t) rounded up to 8: 8 B on
  32-bit, 16 B on 64-bit, in front of every block; a request becomes
  round_up(size + xHeapStructSize, 8).
- ``prvHeapInit``: one free block from the arena start to ``pxEnd``, a zero-size end
  marker at round_down(heap_size - xHeapStructSize, 8).
- ``pvPortMalloc``: fails at once when the wanted size exceeds ``xFreeBytesRemaining``;
  otherwise first fit over the address-ordered free list; the block is split when more
  than ``heapMINIMUM_BLOCK_SIZE`` (2 * xHeapStructSize) would remain, the remainder
  staying in the list where the block was.
- ``vPortFree`` / ``prvInsertBlockIntoFreeList``: address-ordered insert, coalescing with
  the previous and the next free block (never with the end marker).

Rust glue assumed: a ``GlobalAlloc`` calling ``pvPortMalloc(layout.size())`` and
``vPortFree`` (as freertos-rust's ``FreeRtosAllocator``), alignments up to 8 (heap_4's
blocks are 8-aligned); no ``realloc`` override, so a realloc is alloc new, copy, free old.
Blocks and holes are (offset of the BlockLink_t header, block size with header).
"""

from __future__ import annotations

import numpy as np

from mcsa.core._jit import jit

from ..allocators import FREERTOS_LEAST_HEAP
from . import Placement
from .arena import TAKEN, block_bytes, list_holes, live_sizes, slot, table
from .loop import FREERTOS_HEAP4, place

NEXT, SIZE = range(2)
"""Block fields: ``pxNextFreeBlock`` (-1: NULL) and ``xBlockSize``."""

START = -2
"""``xStart``, the list head that is no block, as a previous block."""

HEAD = 1
"""State: ``st[TAKEN]`` (the heap less ``xFreeBytesRemaining``), ``xStart.pxNextFreeBlock``."""

HEAP, HEADER, END = range(3)
"""Parameters: ``configTOTAL_HEAP_SIZE``, ``xHeapStructSize`` and the offset of ``pxEnd``."""


@jit
def init(heap_size, word, n_events):
    """``prvHeapInit``: one free block from the arena start to the end marker ``pxEnd``."""
    header = (2 * word + 7) & ~7
    end_marker = (heap_size - header) & ~7
    keys, fields = table(np.array([-1, 0]))
    st = np.zeros(2, np.int64)
    st[HEAD] = 0
    fields[slot(keys, 0), SIZE] = end_marker
    fields[slot(keys, 0), NEXT] = end_marker
    fields[slot(keys, end_marker), NEXT] = -1
    st[TAKEN] = heap_size - end_marker
    return (keys, fields, np.array([-1, 0]), np.zeros((1, 1), np.int64), np.zeros(1, np.int64), st,
            np.array([heap_size, header, end_marker]))


@jit
def alloc(keys, fields, heads, counts, st, cfg, size, align):
    """``pvPortMalloc``: first fit; the rest of the block split off when it is more than
    ``heapMINIMUM_BLOCK_SIZE``; -1 (NULL) past ``xFreeBytesRemaining`` or at ``pxEnd``."""
    header = cfg[HEADER]
    wanted = block_bytes(size, header, 0, 8, 0, 0)
    if wanted > cfg[HEAP] - st[TAKEN]:  # xFreeBytesRemaining
        return -1
    prev = START
    block = st[HEAD]
    while fields[slot(keys, block), SIZE] < wanted and fields[slot(keys, block), NEXT] != -1:
        prev = block
        block = fields[slot(keys, block), NEXT]
    if block == cfg[END]:
        return -1
    after = fields[slot(keys, block), NEXT]
    if fields[slot(keys, block), SIZE] - wanted > 2 * header:
        rest = block + wanted
        fields[slot(keys, rest), SIZE] = fields[slot(keys, block), SIZE] - wanted
        fields[slot(keys, block), SIZE] = wanted
        fields[slot(keys, rest), NEXT] = after
        after = rest
    if prev == START:
        st[HEAD] = after
    else:
        fields[slot(keys, prev), NEXT] = after
    st[TAKEN] += fields[slot(keys, block), SIZE]
    return block


@jit
def free(keys, fields, heads, counts, st, cfg, block, request):
    """``vPortFree`` / ``prvInsertBlockIntoFreeList``: address-ordered insert, coalescing
    with the previous and the next free block (never with ``pxEnd``)."""
    end_marker = cfg[END]
    st[TAKEN] -= fields[slot(keys, block), SIZE]
    it = START
    it_next = st[HEAD]
    while it_next < block:
        it = it_next
        it_next = fields[slot(keys, it), NEXT]
    if it != START and it + fields[slot(keys, it), SIZE] == block:
        fields[slot(keys, it), SIZE] += fields[slot(keys, block), SIZE]
        block = it
    if block + fields[slot(keys, block), SIZE] == it_next:
        if it_next != end_marker:
            fields[slot(keys, block), SIZE] += fields[slot(keys, it_next), SIZE]
            fields[slot(keys, block), NEXT] = fields[slot(keys, it_next), NEXT]
        else:
            fields[slot(keys, block), NEXT] = end_marker
    else:
        fields[slot(keys, block), NEXT] = it_next
    if it != block:
        if it == START:
            st[HEAD] = block
        else:
            fields[slot(keys, it), NEXT] = block


@jit
def end(keys, fields, heads, counts, st, cfg, addr, requests, n_events):
    """Block offsets and sizes; the holes are the free list up to ``pxEnd``."""
    holes, m = list_holes(keys, fields, NEXT, SIZE, st[HEAD], cfg[END], n_events)
    return addr, live_sizes(keys, fields, SIZE, addr, 0), holes[:m]


def untouched_end(st, cfg) -> tuple[int, int, int, int]:
    """The arena's untouched end at the start (the one free block, up to ``pxEnd``) and
    what a request served there needs beyond its block (see ``firmware_model.bounds``):
    first fit reaches it if no block before serves, and splits it when more than
    ``heapMINIMUM_BLOCK_SIZE`` remains. (end, extra, shift, largest block)."""
    return int(cfg[END]), int(2 * cfg[HEADER] + 1), 0, 1 << 62


def simulate(events: np.ndarray, heap_size: int, usize_bits: int) -> Placement:
    """Replay ``events`` on FreeRTOS heap_4 with a ``configTOTAL_HEAP_SIZE`` of ``heap_size``.

    Arguments and result as :data:`~firmware_model.placement.Simulator`: ``heap_size`` is
    ``configTOTAL_HEAP_SIZE`` (the arena start taken as 8-aligned), ``usize_bits`` 32 or 64.

    Raises
    ------
    TypeError
        If ``events`` is not an ``EVENT_DTYPE`` array, or a size is not an integer.
    ValueError
        If the trace is invalid, an alignment exceeds 8 or the heap cannot hold the end
        marker and one 8-byte block (``prvHeapInit`` would underflow or overlap them).
    """
    return place(FREERTOS_HEAP4, "freertos-heap4", events, heap_size, usize_bits, max_align=8,
                 least_heap=FREERTOS_LEAST_HEAP)
