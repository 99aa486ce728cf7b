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

from . import Placement
from ._arena import _ix, _list_holes, _live_sizes, _crowded, _grown, _table, block_bytes, finish, trace_arrays

_NULL = -1
_START = -2


@jit
def _malloc(keys, nxt, bsz, st, size, hs, end):
    wanted = block_bytes(size, hs, 0, 8, 0, 0)
    if wanted > st[1]:
        return -1
    prev = _START
    blk = st[0]
    while bsz[_ix(keys, blk)] < wanted and nxt[_ix(keys, blk)] != _NULL:
        prev = blk
        blk = nxt[_ix(keys, blk)]
    if blk == end:
        return -1
    after = nxt[_ix(keys, blk)]
    if bsz[_ix(keys, blk)] - wanted > 2 * hs:
        new = blk + wanted
        bsz[_ix(keys, new)] = bsz[_ix(keys, blk)] - wanted
        bsz[_ix(keys, blk)] = wanted
        nxt[_ix(keys, new)] = after
        after = new
    if prev == _START:
        st[0] = after
    else:
        nxt[_ix(keys, prev)] = after
    st[1] -= bsz[_ix(keys, blk)]
    return blk


@jit
def _free(keys, nxt, bsz, st, blk, end):
    st[1] += bsz[_ix(keys, blk)]
    it = _START
    it_next = st[0]
    while it_next < blk:
        it = it_next
        it_next = nxt[_ix(keys, it)]
    if it != _START and it + bsz[_ix(keys, it)] == blk:
        bsz[_ix(keys, it)] += bsz[_ix(keys, blk)]
        blk = it
    if blk + bsz[_ix(keys, blk)] == it_next:
        if it_next != end:
            bsz[_ix(keys, blk)] += bsz[_ix(keys, it_next)]
            nxt[_ix(keys, blk)] = nxt[_ix(keys, it_next)]
        else:
            nxt[_ix(keys, blk)] = end
    else:
        nxt[_ix(keys, blk)] = it_next
    if it != blk:
        if it == _START:
            st[0] = blk
        else:
            nxt[_ix(keys, it)] = blk


@jit
def _heap4(ops, objs, sizes, n_obj, heap_size, w):
    hs = (2 * w + 7) & ~7
    fill = np.array([_NULL, 0])  # next free, size
    keys, f = _table(fill)
    nxt, bsz = f[0], f[1]
    addr = np.full(n_obj, -1, np.int64)
    end = (heap_size - hs) & ~7
    st = np.zeros(2, np.int64)  # head of the free list, xFreeBytesRemaining
    st[0] = 0
    bsz[_ix(keys, 0)] = end
    nxt[_ix(keys, 0)] = end
    nxt[_ix(keys, end)] = _NULL
    st[1] = end
    peak = heap_size - st[1]
    status = -1
    for i in range(len(ops)):
        if _crowded(keys):
            keys, f = _grown(keys, f, fill)
            nxt, bsz = f[0], f[1]
        o = objs[i]
        op = ops[i]
        if (op == 0) != (addr[o] < 0):
            return -2 - i, peak, addr, addr, np.zeros((0, 2), np.int64)
        if op == 1:
            _free(keys, nxt, bsz, st, addr[o], end)
            addr[o] = -1
        else:
            b = _malloc(keys, nxt, bsz, st, sizes[i], hs, end)
            if b < 0:
                status = i
                break
            if op == 2:
                peak = max(peak, heap_size - st[1])
                _free(keys, nxt, bsz, st, addr[o], end)
            addr[o] = b
        peak = max(peak, heap_size - st[1])
    holes, m = _list_holes(keys, nxt, bsz, st[0], end, len(ops))
    return status, peak, addr, _live_sizes(keys, bsz, addr, 0), holes[:m]


def simulate(events: np.ndarray, heap_size: int, usize_bits: int) -> Placement:
    """Replay ``events`` on FreeRTOS heap_4 with a ``configTOTAL_HEAP_SIZE`` of ``heap_size``.

    Arguments and result as :data:`~firmware_model.placement.Simulator`: ``heap_size`` is
    ``configTOTAL_HEAP_SIZE`` (the arena start taken as 8-aligned), ``usize_bits`` 32 or 64.

    Raises
    ------
    TypeError
        If ``events`` is not an ``EVENT_DTYPE`` array.
    ValueError
        If the trace is invalid, an alignment exceeds 8 or the heap cannot hold the end
        marker and one 8-byte block (``prvHeapInit`` would underflow or overlap them).
    """
    ops, objs, sizes, _, ids = trace_arrays(events, heap_size, usize_bits, 8, "freertos-heap4")
    w = usize_bits // 8
    hs = (2 * w + 7) & ~7
    if heap_size < hs + 8:
        raise ValueError(f"freertos-heap4: heap_size {heap_size} cannot hold the end marker and a block "
                         f"(at least {hs + 8} bytes)")
    status, peak, addr, live_size, holes = _heap4(ops, objs, sizes, len(ids), int(heap_size), w)
    return finish("freertos-heap4", heap_size, status, peak, ids, addr,
                  live_size, holes)
