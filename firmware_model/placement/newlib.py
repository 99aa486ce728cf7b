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
from .arena import TAKEN, block_bytes, list_holes, live_sizes, slot, table
from .loop import NEWLIB, place

NEXT, SIZE = range(2)
"""Chunk fields: the next free chunk (address order, -1 at the end) and the chunk's size."""

HEAD, BREAK = 1, 2
"""State: ``st[TAKEN]`` (the break less the bytes in free chunks), the free list's first
chunk (-1: empty), the ``sbrk`` break."""

HEAP, WORD = range(2)
"""Parameters: the heap size (what ``sbrk`` can hand out), the usize in bytes."""


@jit
def init(heap_size, word, n_events):
    keys, fields = table(np.array([-1, 0]))
    st = np.zeros(3, np.int64)
    st[HEAD] = -1
    return (keys, fields, np.array([-1, 0]), np.zeros((1, 1), np.int64), np.zeros(1, np.int64), st,
            np.array([heap_size, word]))


@jit
def alloc(keys, fields, heads, counts, st, cfg, request, align):
    """``nano_malloc``: first fit, a chunk split when MINCHUNK would remain (its first
    part returned); else ``sbrk``; else grow the last free chunk if it ends at the break."""
    word = cfg[WORD]
    pad = max(8, word) - word
    minchunk = word + pad + word
    size = block_bytes(request, pad + word, minchunk, word, 0, 0)
    if size >= 0x80000000:
        return -1
    p = st[HEAD]
    r = p
    while r >= 0:
        rem = fields[slot(keys, r), SIZE] - size
        if rem >= 0:
            if rem >= minchunk:
                fields[slot(keys, r), SIZE] = size
                rest = r + size
                fields[slot(keys, rest), SIZE] = rem
                fields[slot(keys, rest), NEXT] = fields[slot(keys, r), NEXT]
                if p == r:
                    st[HEAD] = rest
                else:
                    fields[slot(keys, p), NEXT] = rest
            elif p == r:
                st[HEAD] = fields[slot(keys, r), NEXT]
            else:
                fields[slot(keys, p), NEXT] = fields[slot(keys, r), NEXT]
            st[TAKEN] += fields[slot(keys, r), SIZE]
            return r
        p = r
        r = fields[slot(keys, r), NEXT]
    if st[BREAK] + size <= cfg[HEAP]:
        r = st[BREAK]
        st[BREAK] += size
        st[TAKEN] += size
        fields[slot(keys, r), SIZE] = size
        return r
    # sbrk failed: grow the last free chunk if it ends at the break
    p = st[HEAD]
    r = p
    while r >= 0:
        p = r
        r = fields[slot(keys, r), NEXT]
    if p < 0 or p + fields[slot(keys, p), SIZE] != st[BREAK]:
        return -1
    extra = size - fields[slot(keys, p), SIZE]
    if st[BREAK] + extra > cfg[HEAP]:
        return -1
    st[BREAK] += extra
    st[TAKEN] += extra + fields[slot(keys, p), SIZE]
    fields[slot(keys, p), SIZE] += extra
    if fields[slot(keys, st[HEAD]), NEXT] < 0:
        st[HEAD] = -1
    else:
        r = st[HEAD]
        while fields[slot(keys, r), NEXT] != p:
            r = fields[slot(keys, r), NEXT]
        fields[slot(keys, r), NEXT] = -1
    return p


@jit
def free(keys, fields, heads, counts, st, cfg, chunk, request):
    """``nano_free``: address-ordered insert, coalescing with both neighbours."""
    st[TAKEN] -= fields[slot(keys, chunk), SIZE]
    head = st[HEAD]
    if head < 0:
        fields[slot(keys, chunk), NEXT] = -1
        st[HEAD] = chunk
        return
    if chunk < head:
        if chunk + fields[slot(keys, chunk), SIZE] == head:
            fields[slot(keys, chunk), SIZE] += fields[slot(keys, head), SIZE]
            fields[slot(keys, chunk), NEXT] = fields[slot(keys, head), NEXT]
        else:
            fields[slot(keys, chunk), NEXT] = head
        st[HEAD] = chunk
        return
    q = head
    p = q
    while True:
        p = q
        q = fields[slot(keys, q), NEXT]
        if not (q >= 0 and q <= chunk):
            break
    if p + fields[slot(keys, p), SIZE] == chunk:
        fields[slot(keys, p), SIZE] += fields[slot(keys, chunk), SIZE]
        if q >= 0 and p + fields[slot(keys, p), SIZE] == q:
            fields[slot(keys, p), SIZE] += fields[slot(keys, q), SIZE]
            fields[slot(keys, p), NEXT] = fields[slot(keys, q), NEXT]
    elif q >= 0 and chunk + fields[slot(keys, chunk), SIZE] == q:
        fields[slot(keys, chunk), SIZE] += fields[slot(keys, q), SIZE]
        fields[slot(keys, chunk), NEXT] = fields[slot(keys, q), NEXT]
        fields[slot(keys, p), NEXT] = chunk
    else:
        fields[slot(keys, chunk), NEXT] = q
        fields[slot(keys, p), NEXT] = chunk


@jit
def realloc_in_place(keys, fields, st, cfg, chunk, size):
    """``nano_realloc`` keeps the chunk when ``size <= usable`` and ``usable / 2 < size``;
    ``usable`` is the chunk less its header and the alignment padding its address needs."""
    word = cfg[WORD]
    offset = (8 - (chunk + word) % 8) % 8
    usable = fields[slot(keys, chunk), SIZE] - word - offset
    return size <= usable and usable // 2 < size


@jit
def end(keys, fields, heads, counts, st, cfg, addr, requests, n_events):
    """Chunk offsets and sizes; the holes are the free list and the arena past the break."""
    heap_size = cfg[HEAP]
    holes, m = list_holes(keys, fields, NEXT, SIZE, st[HEAD], -1, n_events + 1)
    if st[BREAK] < heap_size:  # the arena sbrk has not handed out yet
        if m > 0 and holes[m - 1, 0] + holes[m - 1, 1] == st[BREAK]:
            holes[m - 1, 1] += heap_size - st[BREAK]
        else:
            holes[m, 0] = st[BREAK]
            holes[m, 1] = heap_size - st[BREAK]
            m += 1
    return addr, live_sizes(keys, fields, SIZE, addr, 0), holes[:m]


def untouched_end(st, cfg) -> tuple[int, int, int, int]:
    """The arena's untouched end at the start (all the arena ``sbrk`` can hand out) and
    what a request served there needs beyond its chunk (see ``firmware_model.bounds``):
    nothing, but no chunk of 2 GiB or more is served. (end, extra, shift, largest block)."""
    return int(cfg[HEAP]), 0, 0, 0x7FFFFFFF


def simulate(events: np.ndarray, heap_size: int, usize_bits: int) -> Placement:
    """Replay ``events`` on newlib-nano's malloc with ``sbrk`` limited to ``heap_size`` bytes.

    Arguments and result as :data:`~firmware_model.placement.Simulator`: ``heap_size`` is
    what ``sbrk`` can hand out, ``usize_bits`` 32 or 64.

    Raises
    ------
    TypeError
        If ``events`` is not an ``EVENT_DTYPE`` array, or a size is not an integer.
    ValueError
        If the trace is invalid or an alignment exceeds 8.
    """
    return place(NEWLIB, "newlib", events, heap_size, usize_bits, max_align=8)
