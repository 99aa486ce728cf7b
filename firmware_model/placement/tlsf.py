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

from ._arena import ARENA_ALIGN, _ix, _live_sizes, _log2, _crowded, _grown, _table, block_bytes, finish, trace_arrays

@jit
def _map(size, g_log2, sli, ceil):
    """rlsf ``map_floor``/``map_ceil`` for a multiple of GRANULARITY: (fl, sl)."""
    log2 = _log2(size)
    fl = log2 - g_log2
    if log2 >= sli:
        shift = log2 - sli
        sl = size >> shift
        rounded = ceil and (size & ((1 << shift) - 1)) != 0
    else:
        sl = size << (sli - log2)
        rounded = False
    sl = (sl & ((1 << sli) - 1)) + (1 if rounded else 0)
    fl += sl >> sli
    return fl, sl & ((1 << sli) - 1)


@jit
def _link(keys, head, nfree, pfree, bsz, count, b, size, g_log2, sli):
    fl, sl = _map(size, g_log2, sli, False)
    nxt = head[fl, sl]
    head[fl, sl] = b
    j = _ix(keys, b)
    nfree[j] = nxt
    pfree[j] = -1
    if nxt >= 0:
        pfree[_ix(keys, nxt)] = b
    count[fl] += 1
    bsz[j] = size


@jit
def _unlink(keys, head, nfree, pfree, count, b, size, g_log2, sli):
    fl, sl = _map(size, g_log2, sli, False)
    j = _ix(keys, b)
    nxt = nfree[j]
    prv = pfree[j]
    if nxt >= 0:
        pfree[_ix(keys, nxt)] = prv
    if prv >= 0:
        nfree[_ix(keys, prv)] = nxt
    else:
        head[fl, sl] = nxt
    count[fl] -= 1


@jit
def _rlsf_alloc(keys, st, head, nfree, pfree, bsz, used, prevp, count, size, align, g, g_log2, sli, fllen):
    max_over = max(align - g // 2, 0) + g // 2
    search = (size + max_over + g - 1) & ~(g - 1)
    fl, sl = _map(search, g_log2, sli, True)
    if fl >= fllen:
        return -1
    sllen = 1 << sli
    b = -1
    for s in range(sl, sllen):
        if head[fl, s] >= 0:
            b = head[fl, s]
            break
    if b < 0:
        for f in range(fl + 1, fllen):
            if count[f] > 0:
                for s in range(sllen):
                    if head[f, s] >= 0:
                        b = head[f, s]
                        break
                break
    if b < 0:
        return -1
    j = _ix(keys, b)
    bs = bsz[j]
    _unlink(keys, head, nfree, pfree, count, b, bs, g_log2, sli)
    ptr = (b + g // 2 + align - 1) & ~(align - 1)
    new_size = block_bytes(size, ptr - b, 0, g, 0, 0)
    if new_size != bs:
        nb = b + new_size
        prevp[_ix(keys, (b + bs))] = nb
        k = _ix(keys, nb)
        prevp[k] = b
        used[k] = 0
        _link(keys, head, nfree, pfree, bsz, count, nb, bs - new_size, g_log2, sli)
        st[0] += bs - new_size
    st[0] -= bs
    used[j] = 1
    bsz[j] = new_size
    return b


@jit
def _rlsf_free(keys, st, head, nfree, pfree, bsz, used, prevp, count, b, g_log2, sli):
    j = _ix(keys, b)
    size = bsz[j]
    st[0] += size
    nxt = b + size
    k = _ix(keys, nxt)
    if used[k] == 0:
        ns = bsz[k]
        _unlink(keys, head, nfree, pfree, count, nxt, ns, g_log2, sli)
        size += ns
    prv = prevp[j]
    if prv >= 0:
        k = _ix(keys, prv)
        if used[k] == 0:
            ps = bsz[k]
            _unlink(keys, head, nfree, pfree, count, prv, ps, g_log2, sli)
            size += ps
            b = prv
    used[_ix(keys, b)] = 0
    _link(keys, head, nfree, pfree, bsz, count, b, size, g_log2, sli)
    prevp[_ix(keys, (b + size))] = b


@jit
def _rlsf(ops, objs, sizes, aligns, n_obj, heap_size, w):
    g = 4 * w
    g_log2 = 4 if w == 4 else 5
    sli = 5 if w == 4 else 6
    fllen = 8 * w
    fill = np.array([-1, -1, 0, 1, -1])  # next free, previous free, size, used, previous physical
    keys, f = _table(fill)
    nfree, pfree, bsz, used, prevp = f[0], f[1], f[2], f[3], f[4]
    head = np.full((fllen, 1 << sli), -1, np.int64)
    count = np.zeros(fllen, np.int64)
    addr = np.full(n_obj, -1, np.int64)
    st = np.zeros(1, np.int64)  # free bytes
    length = heap_size & ~(g - 1)
    status = -1
    if length >= 2 * g:
        free0 = length - g
        used[_ix(keys, 0)] = 0
        _link(keys, head, nfree, pfree, bsz, count, 0, free0, g_log2, sli)
        st[0] = free0
        used[_ix(keys, free0)] = 1
        bsz[_ix(keys, free0)] = g
        prevp[_ix(keys, free0)] = 0
    peak = heap_size - st[0]
    for i in range(len(ops)):
        if _crowded(keys):
            keys, f = _grown(keys, f, fill)
            nfree, pfree, bsz, used, prevp = f[0], f[1], f[2], f[3], f[4]
        o = objs[i]
        op = ops[i]
        if (op == 0) != (addr[o] < 0):
            return -2 - i, peak, addr, addr, np.zeros((0, 2), np.int64)
        if op == 1:
            _rlsf_free(keys, st, head, nfree, pfree, bsz, used, prevp, count, addr[o], g_log2, sli)
            addr[o] = -1
        else:
            b = _rlsf_alloc(keys, st, head, nfree, pfree, bsz, used, prevp, count, sizes[i], aligns[i],
                            g, g_log2, sli, fllen)
            if b < 0:
                status = i
                break
            if op == 2:
                peak = max(peak, heap_size - st[0])
                _rlsf_free(keys, st, head, nfree, pfree, bsz, used, prevp, count, addr[o], g_log2, sli)
            addr[o] = b
        peak = max(peak, heap_size - st[0])
    holes = np.zeros((len(ops) + 1, 2), np.int64)
    m = 0
    b = 0
    while length >= 2 * g and b < length - g:
        size = bsz[_ix(keys, b)]
        if used[_ix(keys, b)] == 0:
            holes[m, 0] = b
            holes[m, 1] = size
            m += 1
        b += size
    return status, peak, addr, _live_sizes(keys, bsz, addr, 0), holes[:m]


def simulate(events: np.ndarray, heap_size: int, usize_bits: int) -> Placement:
    """Replay ``events`` on embedded-alloc's ``TlsfHeap`` (rlsf) over ``heap_size`` bytes.

    Arguments and result as :data:`~firmware_model.placement.Simulator`: ``heap_size`` is
    what ``Heap::init`` is given, ``usize_bits`` 32 or 64.

    Raises
    ------
    TypeError
        If ``events`` is not an ``EVENT_DTYPE`` array.
    ValueError
        If the trace or the sizes are invalid.
    """
    ops, objs, sizes, aligns, ids = trace_arrays(events, heap_size, usize_bits, ARENA_ALIGN, "tlsf")
    status, peak, addr, live_size, holes = _rlsf(ops, objs, sizes, aligns, len(ids), int(heap_size),
                                                 usize_bits // 8)
    return finish("tlsf", heap_size, status, peak, ids, addr, live_size, holes)
