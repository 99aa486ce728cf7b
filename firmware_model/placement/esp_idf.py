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
from ._arena import _ix, _live_sizes, _log2, _crowded, _grown, _table, block_bytes, finish, trace_arrays


HEAP_T_BYTES = 20
"""``sizeof(heap_t)`` on 32-bit (5 words), in front of the TLSF pool."""


def control(pool: int) -> tuple[int, int, int, int]:
    """``control_construct`` for ``pool`` bytes on 32-bit: (fl_index_max, sl_log2, fl_count,
    control size = sizeof(control_t) 36 + the second-level bitmaps + the list heads)."""
    fl_index_max = (pool & 0xFFFFFFFF).bit_length()
    sl_log2 = 3 if pool <= 16 * 1024 else 4 if pool <= 256 * 1024 else 5
    fl_count = fl_index_max - (sl_log2 + 2) + 1
    return fl_index_max, sl_log2, fl_count, 36 + 4 * fl_count + 4 * fl_count * (1 << sl_log2)


@jit
def _mapping(size, sl_log2):
    shift = sl_log2 + 2
    if size < (1 << shift):
        return 0, size // 4
    fl = _log2(size)
    sl = (size >> (fl - sl_log2)) ^ (1 << sl_log2)
    return fl - (shift - 1), sl


@jit
def _insert(f, keys, head, count, b, sl_log2):
    j = _ix(keys, b)
    fl, sl = _mapping(f[1, j], sl_log2)
    nxt = head[fl, sl]
    f[4, j] = nxt
    f[5, j] = -1
    if nxt >= 0:
        f[5, _ix(keys, nxt)] = b
    head[fl, sl] = b
    count[fl] += 1


@jit
def _remove(f, keys, head, count, b, sl_log2):
    j = _ix(keys, b)
    fl, sl = _mapping(f[1, j], sl_log2)
    nxt = f[4, j]
    prv = f[5, j]
    if nxt >= 0:
        f[5, _ix(keys, nxt)] = prv
    if prv >= 0:
        f[4, _ix(keys, prv)] = nxt
    if head[fl, sl] == b:
        head[fl, sl] = nxt
    count[fl] -= 1


# Block fields, in the table slot of the block header's address (``tlsf._ix``):
# f[0] prev_phys_block, f[1] size, f[2] free, f[3] prev free, f[4] next_free, f[5] prev_free.


@jit
def _next(f, keys, b, w):
    return b + w + f[1, _ix(keys, b)]


@jit
def _absorb(f, keys, prev, b, w):
    f[1, _ix(keys, prev)] += f[1, _ix(keys, b)] + w
    f[0, _ix(keys, _next(f, keys, prev, w))] = prev


@jit
def _merge_next(f, keys, head, count, b, w, sl_log2):
    n = _next(f, keys, b, w)
    if f[2, _ix(keys, n)]:
        _remove(f, keys, head, count, n, sl_log2)
        _absorb(f, keys, b, n, w)


@jit
def _split(f, keys, b, size, w):
    """``block_split``: cut ``b`` to ``size``, mark the rest free, return it."""
    rem = b + w + size
    j, r = _ix(keys, b), _ix(keys, rem)
    f[1, r] = f[1, j] - (size + w)
    f[1, j] = size
    n = _ix(keys, rem + w + f[1, r])
    f[0, n] = rem
    f[3, n] = 1
    f[2, r] = 1
    return rem


@jit
def _malloc(f, keys, head, count, st, size, w, sl_log2, fl_index_max, fl_count):
    if st[1] == 0:
        return -1
    adjust = block_bytes(size, 0, 3 * w, 4, sl_log2, 0)
    if adjust >= (1 << fl_index_max):
        return -1
    fl, sl = _mapping(adjust, sl_log2)
    if fl >= fl_count:
        return -1
    b = -1
    for s in range(sl, 1 << sl_log2):
        if head[fl, s] >= 0:
            b = head[fl, s]
            break
    if b < 0:
        for g in range(fl + 1, fl_count):
            if count[g] > 0:
                for s in range(1 << sl_log2):
                    if head[g, s] >= 0:
                        b = head[g, s]
                        break
                break
    if b < 0:
        return -1
    _remove(f, keys, head, count, b, sl_log2)
    j = _ix(keys, b)
    st[0] -= f[1, j] + w
    if f[1, j] >= 4 * w + adjust:
        rem = _split(f, keys, b, adjust, w)
        r = _ix(keys, rem)
        f[0, r] = b
        f[3, r] = 1
        _insert(f, keys, head, count, rem, sl_log2)
        st[0] += f[1, r] + w
    f[3, _ix(keys, b + w + f[1, j])] = 0
    f[2, j] = 0
    return b


@jit
def _free(f, keys, head, count, st, b, w, sl_log2):
    j = _ix(keys, b)
    st[0] += f[1, j] + w
    n = _ix(keys, b + w + f[1, j])
    f[0, n] = b
    f[3, n] = 1
    f[2, j] = 1
    if f[3, j]:
        prev = f[0, j]
        _remove(f, keys, head, count, prev, sl_log2)
        _absorb(f, keys, prev, b, w)
        b = prev
    _merge_next(f, keys, head, count, b, w, sl_log2)
    _insert(f, keys, head, count, b, sl_log2)


@jit
def _realloc(f, keys, head, count, st, b, size, w, sl_log2, fl_index_max, fl_count):
    n = _next(f, keys, b, w)
    cur = f[1, _ix(keys, b)]
    combined = cur + f[1, _ix(keys, n)] + w
    adjust = block_bytes(size, 0, 3 * w, 4, 0, 0)  # tlsf_realloc: no size-class rounding
    if adjust >= (1 << fl_index_max):
        return -1, 0
    if adjust > cur and (f[2, _ix(keys, n)] == 0 or adjust > combined):
        nb = _malloc(f, keys, head, count, st, size, w, sl_log2, fl_index_max, fl_count)
        if nb < 0:
            return -1, 0
        moved_peak = st[0]
        _free(f, keys, head, count, st, b, w, sl_log2)
        return nb, moved_peak
    if adjust > cur:
        st[0] -= f[1, _ix(keys, n)] + w
        _merge_next(f, keys, head, count, b, w, sl_log2)
        f[3, _ix(keys, _next(f, keys, b, w))] = 0
        f[2, _ix(keys, b)] = 0
    if f[1, _ix(keys, b)] >= 4 * w + adjust:
        rem = _split(f, keys, b, adjust, w)
        f[3, _ix(keys, rem)] = 0
        st[0] += f[1, _ix(keys, rem)] + w
        _merge_next(f, keys, head, count, rem, w, sl_log2)
        _insert(f, keys, head, count, rem, sl_log2)
    return b, st[0]


@jit
def _esp(ops, objs, sizes, n_obj, heap_size, w, pool0, pool_bytes, sl_log2, fl_index_max, fl_count):
    fill = np.array([-1, 0, 0, 0, -1, -1])
    keys, f = _table(fill)
    head = np.full((max(fl_count, 1), 1 << sl_log2), -1, np.int64)
    count = np.zeros(max(fl_count, 1), np.int64)
    addr = np.full(n_obj, -1, np.int64)
    st = np.zeros(2, np.int64)  # free bytes (payload + size word), heap usable
    if pool_bytes > 0:
        b0 = pool0 - w
        f[1, _ix(keys, b0)] = pool_bytes
        f[2, _ix(keys, b0)] = 1
        _insert(f, keys, head, count, b0, sl_log2)
        sentinel = _next(f, keys, b0, w)
        f[0, _ix(keys, sentinel)] = b0
        f[3, _ix(keys, sentinel)] = 1
        st[0] = pool_bytes + w
        st[1] = 1
    peak = heap_size - st[0]
    status = -1
    for i in range(len(ops)):
        if _crowded(keys):
            keys, f = _grown(keys, f, fill)
        o = objs[i]
        op = ops[i]
        if (op == 0) != (addr[o] < 0):
            return -2 - i, peak, addr, addr, np.zeros((0, 2), np.int64)
        if op == 0:
            b = _malloc(f, keys, head, count, st, sizes[i], w, sl_log2, fl_index_max, fl_count)
            if b < 0:
                status = i
                break
            addr[o] = b
        elif op == 1:
            _free(f, keys, head, count, st, addr[o], w, sl_log2)
            addr[o] = -1
        else:
            b, low = _realloc(f, keys, head, count, st, addr[o], sizes[i], w, sl_log2, fl_index_max, fl_count)
            if b < 0:
                status = i
                break
            peak = max(peak, heap_size - low)
            addr[o] = b
        peak = max(peak, heap_size - st[0])
    holes = np.zeros((len(ops) + 1, 2), np.int64)
    m = 0
    b = pool0 - w
    while pool_bytes > 0 and f[1, _ix(keys, b)] != 0:
        size = f[1, _ix(keys, b)]
        if f[2, _ix(keys, b)]:
            holes[m, 0] = b + w
            holes[m, 1] = size + w
            m += 1
        b += w + size
    return status, peak, addr, _live_sizes(keys, f[1], addr, w), holes[:m]


def simulate(events: np.ndarray, heap_size: int, usize_bits: int) -> Placement:
    """Replay ``events`` on an ESP-IDF ``multi_heap`` registered over ``heap_size`` bytes.

    Arguments and result as :data:`~firmware_model.placement.Simulator`: ``heap_size`` is
    what ``multi_heap_register`` is given, ``usize_bits`` 32 (ESP-IDF targets are 32-bit).

    Raises
    ------
    TypeError
        If ``events`` is not an ``EVENT_DTYPE`` array.
    ValueError
        If ``usize_bits`` is not 32, the trace is invalid or an alignment exceeds 4
        (std's ``MIN_ALIGN`` on ESP-IDF; larger ones go through ``memalign``).
    """
    if usize_bits != 32:
        raise ValueError(f"esp-idf: ESP-IDF targets are 32-bit; usize_bits {usize_bits} is not modelled")
    ops, objs, sizes, _, ids = trace_arrays(events, heap_size, usize_bits, 4, "esp-idf")
    w = 4
    heap_size = int(heap_size)
    pool = heap_size - HEAP_T_BYTES
    fl_index_max, sl_log2, fl_count, ctrl = control(pool) if pool > 0 else (0, 3, 0, 0)
    pool_bytes = ((pool - ctrl - 2 * w) & ~3) if pool >= ctrl + 3 * w else 0
    if pool_bytes < 3 * w or pool_bytes > (1 << fl_index_max):
        pool_bytes = 0
    pool0 = HEAP_T_BYTES + ctrl
    status, peak, addr, live_size, holes = _esp(ops, objs, sizes, len(ids), heap_size, w, pool0, pool_bytes,
                                                sl_log2, fl_index_max, fl_count)
    return finish("esp-idf", heap_size, status, peak, ids,
                  np.where(addr >= 0, addr + w, -1), live_size, holes)
