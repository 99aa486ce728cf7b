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

from mcsa._jit import jit

from . import Placement
from .tlsf import finish, trace_arrays


@jit
def _malloc(nxt, bsz, st, s, w, heap_size):
    pad = max(8, w) - w
    minchunk = w + pad + w
    size = max(((s + w - 1) & ~(w - 1)) + pad + w, minchunk)
    if size >= 0x80000000:
        return -1
    p = st[0]
    r = p
    while r >= 0:
        rem = bsz[r >> 2] - size
        if rem >= 0:
            if rem >= minchunk:
                bsz[r >> 2] = size
                new = r + size
                bsz[new >> 2] = rem
                nxt[new >> 2] = nxt[r >> 2]
                if p == r:
                    st[0] = new
                else:
                    nxt[p >> 2] = new
            elif p == r:
                st[0] = nxt[r >> 2]
            else:
                nxt[p >> 2] = nxt[r >> 2]
            st[2] -= bsz[r >> 2]
            return r
        p = r
        r = nxt[r >> 2]
    if st[1] + size <= heap_size:
        r = st[1]
        st[1] += size
        bsz[r >> 2] = size
        return r
    # sbrk failed: grow the last free chunk if it ends at the break
    p = st[0]
    r = p
    while r >= 0:
        p = r
        r = nxt[r >> 2]
    if p < 0 or p + bsz[p >> 2] != st[1]:
        return -1
    extra = size - bsz[p >> 2]
    if st[1] + extra > heap_size:
        return -1
    st[1] += extra
    st[2] -= bsz[p >> 2]
    bsz[p >> 2] += extra
    if nxt[st[0] >> 2] < 0:
        st[0] = -1
    else:
        r = st[0]
        while nxt[r >> 2] != p:
            r = nxt[r >> 2]
        nxt[r >> 2] = -1
    return p


@jit
def _free(nxt, bsz, st, c):
    st[2] += bsz[c >> 2]
    head = st[0]
    if head < 0:
        nxt[c >> 2] = -1
        st[0] = c
        return
    if c < head:
        if c + bsz[c >> 2] == head:
            bsz[c >> 2] += bsz[head >> 2]
            nxt[c >> 2] = nxt[head >> 2]
        else:
            nxt[c >> 2] = head
        st[0] = c
        return
    q = head
    p = q
    while True:
        p = q
        q = nxt[q >> 2]
        if not (q >= 0 and q <= c):
            break
    if p + bsz[p >> 2] == c:
        bsz[p >> 2] += bsz[c >> 2]
        if q >= 0 and p + bsz[p >> 2] == q:
            bsz[p >> 2] += bsz[q >> 2]
            nxt[p >> 2] = nxt[q >> 2]
    elif q >= 0 and c + bsz[c >> 2] == q:
        bsz[c >> 2] += bsz[q >> 2]
        nxt[c >> 2] = nxt[q >> 2]
        nxt[p >> 2] = c
    else:
        nxt[c >> 2] = q
        nxt[p >> 2] = c


@jit
def _nano(ops, objs, sizes, n_obj, heap_size, w):
    slots = heap_size // 4 + 2
    nxt = np.full(slots, -1, np.int64)
    bsz = np.zeros(slots, np.int64)
    addr = np.full(n_obj, -1, np.int64)
    st = np.zeros(3, np.int64)  # free list head, break, bytes in free chunks
    st[0] = -1
    peak = 0
    status = -1
    for i in range(len(ops)):
        o = objs[i]
        op = ops[i]
        if (op == 0) != (addr[o] < 0):
            return -2 - i, peak, addr, bsz, nxt, st
        if op == 1:
            _free(nxt, bsz, st, addr[o])
            addr[o] = -1
        else:
            if op == 2:
                c = addr[o]
                offset = (8 - (c + w) % 8) % 8
                usable = bsz[c >> 2] - w - offset
                if sizes[i] <= usable and usable // 2 < sizes[i]:
                    continue
            b = _malloc(nxt, bsz, st, sizes[i], w, heap_size)
            if b < 0:
                status = i
                break
            if op == 2:
                peak = max(peak, st[1] - st[2])
                _free(nxt, bsz, st, addr[o])
            addr[o] = b
        peak = max(peak, st[1] - st[2])
    return status, peak, addr, bsz, nxt, st


def simulate(events: np.ndarray, heap_size: int, usize_bits: int) -> Placement:
    """Replay ``events`` on newlib-nano's malloc with ``sbrk`` limited to ``heap_size`` bytes.

    Parameters
    ----------
    events : numpy.ndarray
        The trace, ``EVENT_DTYPE``.
    heap_size : int
        Bytes ``sbrk`` can hand out.
    usize_bits : int
        32 or 64.

    Returns
    -------
    Placement

    Raises
    ------
    TypeError
        If ``events`` is not an ``EVENT_DTYPE`` array.
    ValueError
        If the trace is invalid or an alignment exceeds 8.
    """
    ops, objs, sizes, _, n_obj = trace_arrays(events, heap_size, usize_bits, 8, "newlib")
    status, peak, addr, bsz, nxt, st = _nano(ops, objs, sizes, n_obj, int(heap_size), usize_bits // 8)
    holes = []
    c = int(st[0])
    while c >= 0:
        holes.append([c, int(bsz[c >> 2])])
        c = int(nxt[c >> 2])
    brk = int(st[1])
    if brk < heap_size:
        if holes and holes[-1][0] + holes[-1][1] == brk:
            holes[-1][1] += int(heap_size) - brk
        else:
            holes.append([brk, int(heap_size) - brk])
    live_size = np.where(addr >= 0, bsz[np.maximum(addr, 0) >> 2], 0)
    return finish("newlib", heap_size, status, peak, np.unique(events["obj"]), addr, live_size,
                  np.array(holes, np.int64).reshape(-1, 2))
