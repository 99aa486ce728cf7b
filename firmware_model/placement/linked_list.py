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
from ._arena import ARENA_ALIGN, block_bytes, finish, trace_arrays


@jit
def _align_up(x, align):
    return -(-x // align) * align


@jit
def _merge_top(hsize, haddr, i, top, word):
    end = haddr[i] + hsize[i]
    if end < top and _align_up(end, word) + 2 * word > top:
        hsize[i] += top - end


@jit
def _free(haddr, hsize, m, addr, size, bottom, top, word):
    """``deallocate``: insert ``[addr, addr + size)`` and merge; the new hole count."""
    if m == 0:
        if bottom + 2 * word > addr:
            size += addr - bottom
            addr = bottom
        haddr[0], hsize[0] = addr, size
        _merge_top(hsize, haddr, 0, top, word)
        return 1
    if addr < haddr[0]:
        if bottom + 2 * word > addr:
            size += addr - bottom
            addr = bottom
        at, cur, merges = 0, 0, 1
    else:
        at = 1
        while at < m and haddr[at] < addr:
            at += 1
        cur, merges = at - 1, 2
    for j in range(m, at, -1):
        haddr[j], hsize[j] = haddr[j - 1], hsize[j - 1]
    haddr[at], hsize[at] = addr, size
    m += 1
    for _ in range(merges):
        if cur + 1 >= m:
            _merge_top(hsize, haddr, cur, top, word)
            break
        if haddr[cur] + hsize[cur] == haddr[cur + 1]:
            hsize[cur] += hsize[cur + 1]
            for j in range(cur + 1, m - 1):
                haddr[j], hsize[j] = haddr[j + 1], hsize[j + 1]
            m -= 1
        else:
            cur += 1
    return m


@jit
def _alloc(haddr, hsize, m, size, align, word):
    """``allocate_first_fit`` of an aligned size: (address or -1, new hole count)."""
    for i in range(m):
        addr, hole = haddr[i], hsize[i]
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
        shift = pieces - 1
        if shift > 0:
            for j in range(m, i + 1, -1):
                haddr[j], hsize[j] = haddr[j - 1], hsize[j - 1]
        elif shift < 0:
            for j in range(i, m - 1):
                haddr[j], hsize[j] = haddr[j + 1], hsize[j + 1]
        k = i
        if start > addr:
            haddr[k], hsize[k] = addr, start - addr
            k += 1
        if back > 0:
            haddr[k], hsize[k] = _align_up(end, word), back
        return start, m + shift
    return -1, m


@jit
def _simulate(op, obj, size, align, n_obj, heap_size, word):
    """Replay a trace. Returns (status as :func:`~._arena.finish` takes it, peak of
    ``used()``, block address and size per object, hole (addr, size) rows) at the
    failure or the end."""
    n = op.size
    baddr = np.full(n_obj, -1, np.int64)
    bsize = np.zeros(n_obj, np.int64)
    haddr = np.empty(n + 2, np.int64)
    hsize = np.empty(n + 2, np.int64)
    top = heap_size // word * word
    m = 0
    if top >= 2 * word:
        haddr[0], hsize[0] = 0, top
        m = 1
    used = peak = 0
    failed = -1
    for i in range(n):
        o = obj[i]
        if (op[i] == 0) != (baddr[o] < 0):
            return -2 - i, peak, baddr, bsize, np.zeros((0, 2), np.int64)
        if op[i] == 1:
            m = _free(haddr, hsize, m, baddr[o], bsize[o], 0, top, word)
            used -= bsize[o]
            baddr[o] = -1
            continue
        need = block_bytes(size[i], 0, 2 * word, word, 0, 0)
        addr, m = _alloc(haddr, hsize, m, need, align[i], word)
        if addr < 0:
            failed = i
            break
        used += need
        peak = max(peak, used)
        if op[i] == 2:
            m = _free(haddr, hsize, m, baddr[o], bsize[o], 0, top, word)
            used -= bsize[o]
        baddr[o], bsize[o] = addr, need
    holes = np.empty((m, 2), np.int64)
    holes[:, 0], holes[:, 1] = haddr[:m], hsize[:m]
    return failed, peak, baddr, bsize, holes


def simulate(events: np.ndarray, heap_size: int, usize_bits: int) -> Placement:
    """Place a trace on a ``linked_list_allocator`` heap of ``heap_size`` bytes.

    Arguments and result as :data:`~firmware_model.placement.Simulator`: ``heap_size``
    is what ``Heap::init`` is given, ``usize_bits`` 32 or 64.

    Raises
    ------
    TypeError
        If ``events`` is not an ``EVENT_DTYPE`` array.
    ValueError
        If the trace, the heap size or the pointer width is invalid.
    """
    ops, objs, sizes, aligns, ids = trace_arrays(events, heap_size, usize_bits, ARENA_ALIGN, "linked-list")
    word = usize_bits // 8
    status, peak, addr, size, holes = _simulate(ops, objs, sizes, aligns, len(ids), int(heap_size), word)
    # The bytes no hole can ever hold (the arena's unaligned tail, or all of an arena too
    # small for one hole) count as taken, as the other simulators count their fixed overhead.
    top = int(heap_size) // word * word
    fixed = int(heap_size) - (top if top >= 2 * word else 0)
    return finish("linked-list", heap_size, status, peak + fixed, ids, addr, size, holes)
