"""``esp-idf``: ESP-IDF ``components/heap`` ``multi_heap`` over its TLSF, poisoning off.

Read from ESP-IDF ``components/heap/multi_heap.c`` (TLSF version, IDF >= 5.0) and
github:espressif/tlsf (branch ``idf``: ``tlsf.c``, ``tlsf_block_functions.h``,
``tlsf_control_functions.h``), the ``components/heap/tlsf`` submodule; the ROM copy
of TLSF some chips can use (``CONFIG_HEAP_TLSF_USE_ROM_IMPL``) is not modelled.

- ``multi_heap_register(start, size)``: a ``heap_t`` (5 words) at the arena start, then
  ``tlsf_create_with_pool`` on the rest: the control structure sized from the pool
  (``control_construct``: ``fl_index_max`` = bit length of the pool size, second level
  of 8 / 16 / 32 lists for pools up to 16 KiB / 256 KiB / larger, ``ALIGN_SIZE`` 4, its
  bitmaps and list heads), then one free block and a zero-size sentinel.
- A block is a ``size`` word then the payload (the previous-block pointer lives in the
  last word of a free predecessor): 4 B header on 32-bit; the smallest payload
  (``block_size_min``) is 3 words.
- ``tlsf_malloc``: size rounded to 4 (at least 3 words), then ``mapping_search`` rounds
  it up to its second-level class (good fit) and that rounded size is what the block
  keeps; the head of the first non-empty list at or above the class is taken and split
  when the remainder can hold a block header plus the request.
- ``tlsf_free``: coalesce with the previous then the next physical block; lists are LIFO.
- ``tlsf_realloc`` (what ``multi_heap_realloc`` calls): grows in place into a free next
  block when the two together are large enough, shrinks in place (the tail, merged with
  a free next block, goes back); otherwise malloc new, copy, free old.

Rust glue assumed: std's ``System`` on ESP-IDF (``malloc``, ``realloc``, ``free`` through
``heap_caps`` to one ``multi_heap``); std's ``MIN_ALIGN`` on ESP-IDF is 4, and larger
alignments would go through ``memalign``, which is not modelled: alignments above 4 are
refused. ESP-IDF targets are 32-bit (Xtensa, RISC-V 32); a 64-bit trace is refused too
(espressif/tlsf built for a 64-bit host lays its list heads over the pool's first block
when the first-level count is odd, so there is no 64-bit behaviour to follow).
Blocks and holes are (offset of the block's size word, payload + size word).
"""

from __future__ import annotations

import numpy as np

from mcsa.core._jit import jit

from . import Placement
from .arena import TAKEN, block_bytes, first_free, live_sizes, log2, pop_free, push_free, slot, table
from .loop import ESP_IDF, place

HEAP_T_BYTES = 20
"""``sizeof(heap_t)`` on 32-bit (5 words), in front of the TLSF pool."""

WORD = 4
"""ESP-IDF targets are 32-bit."""

PREV_PHYS, SIZE, IS_FREE, PREV_IS_FREE, NEXT_FREE, PREV_FREE = range(6)
"""Block fields, at the address of the block's ``prev_phys_block`` word: that word, the
payload size, the block's free bit, the previous block's free bit, the free-list links."""

USABLE = 1
"""State: ``st[TAKEN]`` (the bytes not in free blocks, payload and size word), and
whether the pool could be registered."""

HEAP, SL_LOG2, FL_INDEX_MAX, FL_COUNT, POOL0 = range(5)
"""Parameters: the heap size, ``SL_INDEX_COUNT_LOG2``, ``fl_index_max``, ``fl_index_count``
and the offset of the first block's payload."""


@jit
def control(pool):
    """``control_construct`` for ``pool`` bytes on 32-bit: (fl_index_max, sl_log2, fl_count,
    control size = sizeof(control_t) 36 + the second-level bitmaps + the list heads)."""
    low = pool & 0xFFFFFFFF
    fl_index_max = log2(low) + 1 if low > 0 else 0
    sl_log2 = 3 if pool <= 16 * 1024 else 4 if pool <= 256 * 1024 else 5
    fl_count = fl_index_max - (sl_log2 + 2) + 1
    return fl_index_max, sl_log2, fl_count, 36 + 4 * fl_count + 4 * fl_count * (1 << sl_log2)


@jit
def _mapping(size, sl_log2):
    shift = sl_log2 + 2
    if size < (1 << shift):
        return 0, size // 4
    fl = log2(size)
    sl = (size >> (fl - sl_log2)) ^ (1 << sl_log2)
    return fl - (shift - 1), sl


@jit
def _insert(keys, fields, heads, counts, cfg, block):
    fl, sl = _mapping(fields[slot(keys, block), SIZE], cfg[SL_LOG2])
    push_free(keys, fields, NEXT_FREE, PREV_FREE, heads, counts, block, fl, sl)


@jit
def _remove(keys, fields, heads, counts, cfg, block):
    fl, sl = _mapping(fields[slot(keys, block), SIZE], cfg[SL_LOG2])
    pop_free(keys, fields, NEXT_FREE, PREV_FREE, heads, counts, block, fl, sl)


@jit
def _next(keys, fields, block):
    return block + WORD + fields[slot(keys, block), SIZE]


@jit
def _absorb(keys, fields, prev, block):
    fields[slot(keys, prev), SIZE] += fields[slot(keys, block), SIZE] + WORD
    fields[slot(keys, _next(keys, fields, prev)), PREV_PHYS] = prev


@jit
def _merge_next(keys, fields, heads, counts, cfg, block):
    after = _next(keys, fields, block)
    if fields[slot(keys, after), IS_FREE]:
        _remove(keys, fields, heads, counts, cfg, after)
        _absorb(keys, fields, block, after)


@jit
def _split(keys, fields, block, size):
    """``block_split``: cut ``block`` to ``size``, mark the rest free, return it."""
    rest = block + WORD + size
    j, r = slot(keys, block), slot(keys, rest)
    fields[r, SIZE] = fields[j, SIZE] - (size + WORD)
    fields[j, SIZE] = size
    after = slot(keys, rest + WORD + fields[r, SIZE])
    fields[after, PREV_PHYS] = rest
    fields[after, PREV_IS_FREE] = 1
    fields[r, IS_FREE] = 1
    return rest


@jit
def init(heap_size, word, n_events):
    """``multi_heap_register``: ``heap_t``, the TLSF control sized from the pool, one free
    block over the rest and a zero-size sentinel (no block when the pool is too small)."""
    pool = heap_size - HEAP_T_BYTES
    fl_index_max, sl_log2, fl_count, ctrl = control(pool) if pool > 0 else (0, 3, 0, 0)
    pool_bytes = ((pool - ctrl - 2 * WORD) & ~3) if pool >= ctrl + 3 * WORD else 0
    if pool_bytes < 3 * WORD or pool_bytes > (1 << fl_index_max):
        pool_bytes = 0
    pool0 = HEAP_T_BYTES + ctrl
    cfg = np.array([heap_size, sl_log2, fl_index_max, fl_count, pool0])
    fill = np.array([-1, 0, 0, 0, -1, -1])
    keys, fields = table(fill)
    heads = np.full((max(fl_count, 1), 1 << sl_log2), -1, np.int64)
    counts = np.zeros(max(fl_count, 1), np.int64)
    st = np.zeros(2, np.int64)
    st[TAKEN] = heap_size
    if pool_bytes > 0:
        first = pool0 - WORD
        fields[slot(keys, first), SIZE] = pool_bytes
        fields[slot(keys, first), IS_FREE] = 1
        _insert(keys, fields, heads, counts, cfg, first)
        sentinel = slot(keys, _next(keys, fields, first))
        fields[sentinel, PREV_PHYS] = first
        fields[sentinel, PREV_IS_FREE] = 1
        st[TAKEN] -= pool_bytes + WORD
        st[USABLE] = 1
    return keys, fields, fill, heads, counts, st, cfg


@jit
def alloc(keys, fields, heads, counts, st, cfg, size, align):
    """``tlsf_malloc``: the size rounded up to its class (good fit), the head of the first
    non-empty list from that class on, split when the rest can hold a block."""
    if st[USABLE] == 0:
        return -1
    adjust = block_bytes(size, 0, 3 * WORD, 4, cfg[SL_LOG2], 0)
    if adjust >= (1 << cfg[FL_INDEX_MAX]):
        return -1
    fl, sl = _mapping(adjust, cfg[SL_LOG2])
    if fl >= cfg[FL_COUNT]:
        return -1
    block = first_free(heads, counts, fl, sl, cfg[FL_COUNT])
    if block < 0:
        return -1
    _remove(keys, fields, heads, counts, cfg, block)
    j = slot(keys, block)
    st[TAKEN] += fields[j, SIZE] + WORD
    if fields[j, SIZE] >= 4 * WORD + adjust:
        rest = _split(keys, fields, block, adjust)
        r = slot(keys, rest)
        fields[r, PREV_PHYS] = block
        fields[r, PREV_IS_FREE] = 1
        _insert(keys, fields, heads, counts, cfg, rest)
        st[TAKEN] -= fields[r, SIZE] + WORD
    fields[slot(keys, block + WORD + fields[j, SIZE]), PREV_IS_FREE] = 0
    fields[j, IS_FREE] = 0
    return block


@jit
def free(keys, fields, heads, counts, st, cfg, block, request):
    """``tlsf_free``: coalesce with the previous, then the next physical block."""
    j = slot(keys, block)
    st[TAKEN] -= fields[j, SIZE] + WORD
    after = slot(keys, block + WORD + fields[j, SIZE])
    fields[after, PREV_PHYS] = block
    fields[after, PREV_IS_FREE] = 1
    fields[j, IS_FREE] = 1
    if fields[j, PREV_IS_FREE]:
        prev = fields[j, PREV_PHYS]
        _remove(keys, fields, heads, counts, cfg, prev)
        _absorb(keys, fields, prev, block)
        block = prev
    _merge_next(keys, fields, heads, counts, cfg, block)
    _insert(keys, fields, heads, counts, cfg, block)


@jit
def realloc(keys, fields, heads, counts, st, cfg, block, request, size):
    """``tlsf_realloc``: grow in place into a free next block when the two together are
    large enough, shrink in place (the tail, merged with a free next block, goes back),
    else malloc new, copy, free old. Returns the block (-1 on failure) and the bytes
    taken at its worst moment."""
    after = _next(keys, fields, block)
    current = fields[slot(keys, block), SIZE]
    combined = current + fields[slot(keys, after), SIZE] + WORD
    adjust = block_bytes(size, 0, 3 * WORD, 4, 0, 0)  # tlsf_realloc: no size-class rounding
    if adjust >= (1 << cfg[FL_INDEX_MAX]):
        return -1, 0
    if adjust > current and (fields[slot(keys, after), IS_FREE] == 0 or adjust > combined):
        moved = alloc(keys, fields, heads, counts, st, cfg, size, 4)
        if moved < 0:
            return -1, 0
        worst = st[TAKEN]
        free(keys, fields, heads, counts, st, cfg, block, request)
        return moved, worst
    if adjust > current:
        st[TAKEN] += fields[slot(keys, after), SIZE] + WORD
        _merge_next(keys, fields, heads, counts, cfg, block)
        fields[slot(keys, _next(keys, fields, block)), PREV_IS_FREE] = 0
        fields[slot(keys, block), IS_FREE] = 0
    if fields[slot(keys, block), SIZE] >= 4 * WORD + adjust:
        rest = _split(keys, fields, block, adjust)
        fields[slot(keys, rest), PREV_IS_FREE] = 0
        st[TAKEN] -= fields[slot(keys, rest), SIZE] + WORD
        _merge_next(keys, fields, heads, counts, cfg, rest)
        _insert(keys, fields, heads, counts, cfg, rest)
    return block, st[TAKEN]


@jit
def end(keys, fields, heads, counts, st, cfg, addr, requests, n_events):
    """Block offsets (of the size word) and sizes (payload and size word), and the holes,
    walking the pool block by block."""
    holes = np.zeros((n_events + 1, 2), np.int64)
    m = 0
    block = cfg[POOL0] - WORD
    while st[USABLE] and fields[slot(keys, block), SIZE] != 0:
        size = fields[slot(keys, block), SIZE]
        if fields[slot(keys, block), IS_FREE]:
            holes[m, 0] = block + WORD
            holes[m, 1] = size + WORD
            m += 1
        block += WORD + size
    shown = np.where(addr >= 0, addr + WORD, -1)
    return shown, live_sizes(keys, fields, SIZE, addr, WORD), holes[:m]


def untouched_end(st, cfg) -> tuple[int, int, int, int]:
    """The arena's untouched end at the start (the payload of the pool's one free block)
    and what a request served there needs beyond its block, the size rounded to its
    class and a size word (see ``firmware_model.bounds``): the rest must hold a block for
    the end to be split (an in-place ``realloc`` into the end takes no more). (end,
    extra, shift, largest block)."""
    return int(cfg[HEAP] - st[TAKEN] - WORD) if st[USABLE] else 0, 3 * WORD, 0, 1 << 62


def simulate(events: np.ndarray, heap_size: int, usize_bits: int) -> Placement:
    """Replay ``events`` on an ESP-IDF ``multi_heap`` registered over ``heap_size`` bytes.

    Arguments and result as :data:`~firmware_model.placement.Simulator`: ``heap_size`` is
    what ``multi_heap_register`` is given, ``usize_bits`` 32 (ESP-IDF targets are 32-bit).

    Raises
    ------
    TypeError
        If ``events`` is not an ``EVENT_DTYPE`` array, or a size is not an integer.
    ValueError
        If ``usize_bits`` is not 32, the trace is invalid or an alignment exceeds 4
        (std's ``MIN_ALIGN`` on ESP-IDF; larger ones go through ``memalign``).
    """
    return place(ESP_IDF, "esp-idf", events, heap_size, usize_bits, max_align=4, widths=(32,))
