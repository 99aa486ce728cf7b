"""``newlib``: newlib-nano's malloc (``newlib/libc/stdlib/nano-mallocr.c``), heap grown by ``sbrk``.

newlib-nano is what arm-none-eabi firmware links with ``--specs=nano.specs`` (the default
of most vendor IDEs and of the Rust embedded templates that link a C library); the full
``mallocr.c`` (dlmalloc) is not modelled. Read from upstream newlib's ``nano-mallocr.c``
at commit 766f1beb4 (2023-08-30, newlib 4.4; read in github:pspdev/newlib, which carries
upstream history), which has the 2021-2023 fixes (split returns the first part, the
``sbrk`` fallback that grows the last free chunk, no NULL dereference there):

- A chunk is a ``long size`` then the payload; ``MALLOC_ALIGN`` 8, ``CHUNK_ALIGN`` = usize,
  ``MALLOC_PADDING`` = max(8, usize) - usize (4 B on 32-bit, 0 on 64-bit); a request of
  ``s`` takes max(round_up(s, usize) + padding + usize, ``MALLOC_MINCHUNK``) with
  MINCHUNK = 12 B (32-bit) / 16 B (64-bit).
- ``nano_malloc``: first fit over the address-ordered free list; a chunk with at least
  MINCHUNK to spare is split and its *first* part returned; when nothing fits, ``sbrk``
  the chunk; when ``sbrk`` fails and the last free chunk ends at the break, ``sbrk`` only
  the difference and take that chunk.
- ``nano_free``: address-ordered insert, coalescing with both neighbours.
- ``nano_realloc``: keeps the block when ``size <= usable`` and ``usable / 2 < size``;
  otherwise malloc new, copy, free old. ``usable`` is the chunk minus its header and the
  alignment padding actually used (which depends on the chunk's address modulo 8).

``sbrk`` hands out the arena from its start to ``heap_size``; nothing is given back.
Rust glue assumed: std's ``System`` on a libc target (``malloc``/``free``, ``realloc`` for
alignments up to ``MIN_ALIGN`` = 2 usize), alignments up to 8 accepted. The arena start
is taken as 4096-aligned. Blocks and holes are (chunk offset, chunk size); the arena not
yet taken by ``sbrk`` counts as a hole, merged with a free chunk that ends at the break.
"""

from __future__ import annotations

import numpy as np

from mcsa.core._jit import jit

from . import Placement
from ._arena import _ix, _list_holes, _live_sizes, _crowded, _grown, _table, block_bytes, finish, trace_arrays


@jit
def _malloc(keys, nxt, bsz, st, s, w, heap_size):
    pad = max(8, w) - w
    minchunk = w + pad + w
    size = block_bytes(s, pad + w, minchunk, w, 0, 0)
    if size >= 0x80000000:
        return -1
    p = st[0]
    r = p
    while r >= 0:
        rem = bsz[_ix(keys, r)] - size
        if rem >= 0:
            if rem >= minchunk:
                bsz[_ix(keys, r)] = size
                new = r + size
                bsz[_ix(keys, new)] = rem
                nxt[_ix(keys, new)] = nxt[_ix(keys, r)]
                if p == r:
                    st[0] = new
                else:
                    nxt[_ix(keys, p)] = new
            elif p == r:
                st[0] = nxt[_ix(keys, r)]
            else:
                nxt[_ix(keys, p)] = nxt[_ix(keys, r)]
            st[2] -= bsz[_ix(keys, r)]
            return r
        p = r
        r = nxt[_ix(keys, r)]
    if st[1] + size <= heap_size:
        r = st[1]
        st[1] += size
        bsz[_ix(keys, r)] = size
        return r
    # sbrk failed: grow the last free chunk if it ends at the break
    p = st[0]
    r = p
    while r >= 0:
        p = r
        r = nxt[_ix(keys, r)]
    if p < 0 or p + bsz[_ix(keys, p)] != st[1]:
        return -1
    extra = size - bsz[_ix(keys, p)]
    if st[1] + extra > heap_size:
        return -1
    st[1] += extra
    st[2] -= bsz[_ix(keys, p)]
    bsz[_ix(keys, p)] += extra
    if nxt[_ix(keys, st[0])] < 0:
        st[0] = -1
    else:
        r = st[0]
        while nxt[_ix(keys, r)] != p:
            r = nxt[_ix(keys, r)]
        nxt[_ix(keys, r)] = -1
    return p


@jit
def _free(keys, nxt, bsz, st, c):
    st[2] += bsz[_ix(keys, c)]
    head = st[0]
    if head < 0:
        nxt[_ix(keys, c)] = -1
        st[0] = c
        return
    if c < head:
        if c + bsz[_ix(keys, c)] == head:
            bsz[_ix(keys, c)] += bsz[_ix(keys, head)]
            nxt[_ix(keys, c)] = nxt[_ix(keys, head)]
        else:
            nxt[_ix(keys, c)] = head
        st[0] = c
        return
    q = head
    p = q
    while True:
        p = q
        q = nxt[_ix(keys, q)]
        if not (q >= 0 and q <= c):
            break
    if p + bsz[_ix(keys, p)] == c:
        bsz[_ix(keys, p)] += bsz[_ix(keys, c)]
        if q >= 0 and p + bsz[_ix(keys, p)] == q:
            bsz[_ix(keys, p)] += bsz[_ix(keys, q)]
            nxt[_ix(keys, p)] = nxt[_ix(keys, q)]
    elif q >= 0 and c + bsz[_ix(keys, c)] == q:
        bsz[_ix(keys, c)] += bsz[_ix(keys, q)]
        nxt[_ix(keys, c)] = nxt[_ix(keys, q)]
        nxt[_ix(keys, p)] = c
    else:
        nxt[_ix(keys, c)] = q
        nxt[_ix(keys, p)] = c


@jit
def _nano(ops, objs, sizes, n_obj, heap_size, w):
    fill = np.array([-1, 0])  # next free, size
    keys, f = _table(fill)
    nxt, bsz = f[0], f[1]
    addr = np.full(n_obj, -1, np.int64)
    st = np.zeros(3, np.int64)  # free list head, break, bytes in free chunks
    st[0] = -1
    peak = 0
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
            _free(keys, nxt, bsz, st, addr[o])
            addr[o] = -1
        else:
            if op == 2:
                c = addr[o]
                offset = (8 - (c + w) % 8) % 8
                usable = bsz[_ix(keys, c)] - w - offset
                if sizes[i] <= usable and usable // 2 < sizes[i]:
                    continue
            b = _malloc(keys, nxt, bsz, st, sizes[i], w, heap_size)
            if b < 0:
                status = i
                break
            if op == 2:
                peak = max(peak, st[1] - st[2])
                _free(keys, nxt, bsz, st, addr[o])
            addr[o] = b
        peak = max(peak, st[1] - st[2])
    holes, m = _list_holes(keys, nxt, bsz, st[0], -1, len(ops) + 1)
    if st[1] < heap_size:  # the arena sbrk has not handed out yet
        if m > 0 and holes[m - 1, 0] + holes[m - 1, 1] == st[1]:
            holes[m - 1, 1] += heap_size - st[1]
        else:
            holes[m, 0] = st[1]
            holes[m, 1] = heap_size - st[1]
            m += 1
    return status, peak, addr, _live_sizes(keys, bsz, addr, 0), holes[:m]


def simulate(events: np.ndarray, heap_size: int, usize_bits: int) -> Placement:
    """Replay ``events`` on newlib-nano's malloc with ``sbrk`` limited to ``heap_size`` bytes.

    Arguments and result as :data:`~firmware_model.placement.Simulator`: ``heap_size`` is
    what ``sbrk`` can hand out, ``usize_bits`` 32 or 64.

    Raises
    ------
    TypeError
        If ``events`` is not an ``EVENT_DTYPE`` array.
    ValueError
        If the trace is invalid or an alignment exceeds 8.
    """
    ops, objs, sizes, _, ids = trace_arrays(events, heap_size, usize_bits, 8, "newlib")
    status, peak, addr, live_size, holes = _nano(ops, objs, sizes, len(ids), int(heap_size), usize_bits // 8)
    return finish("newlib", heap_size, status, peak, ids, addr, live_size, holes)
