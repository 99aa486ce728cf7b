"""What the allocator simulators share: a trace checked and turned into kernel arrays,
the table that keeps each block's fields by its address, the segregated free lists of
the two TLSF allocators, the one block-size rule, and a kernel's end state turned into
a :class:`~firmware_model.placement.Placement`."""

from __future__ import annotations

import numpy as np

from mcsa.core._jit import jit
from mcsa.core.checks import check_int

from . import EVENT_DTYPE, REALLOC, Placement

ARENA_ALIGN = 4096
"""Alignment of the arena start every simulator assumes (block offsets alone then tell
a payload's alignment); also the largest request alignment a simulator accepts."""

MAX_HEAP = 2**48
"""Heaps are below this many bytes (and below ``2**usize_bits``): kernel sums stay in int64."""


def check_arena(heap_size, usize_bits, who: str) -> tuple[int, int]:
    """``(heap_size, usize_bits)`` as Python ints, or TypeError/ValueError naming the argument.

    Raises
    ------
    TypeError
        If either is not an integer (a bool, a float, a string, a Decimal are not).
    ValueError
        If ``usize_bits`` is not 32 or 64, or ``heap_size`` is not in ``0..min(2**usize_bits, 2**48)``.
    """
    usize_bits = check_int(usize_bits, f"{who}: usize_bits", 32, 64)
    if usize_bits not in (32, 64):
        raise ValueError(f"{who}: usize_bits must be 32 or 64, got {usize_bits}")
    heap_size = check_int(heap_size, f"{who}: heap_size", 0, min(2**usize_bits, MAX_HEAP) - 1, "bytes")
    return heap_size, usize_bits


def trace_arrays(events: np.ndarray, heap_size: int, max_align: int, who: str):
    """Validate a trace and return ``(ops, objs, sizes, aligns, obj_ids)`` for a kernel:
    ``objs`` index ``obj_ids`` (the trace's own ids), so a kernel keeps one row per id.

    Raises
    ------
    TypeError
        If ``events`` is not a 1-D array of ``EVENT_DTYPE``.
    ValueError
        If an op, a size or an alignment is invalid.
    """
    if not isinstance(events, np.ndarray) or events.dtype != EVENT_DTYPE or events.ndim != 1:
        got = f"{type(events).__name__} of {events.dtype}" if isinstance(events, np.ndarray) else type(events).__name__
        raise TypeError(f"{who}: events must be a 1-D array of EVENT_DTYPE, got {got}")
    ops = events["op"].astype(np.int64)
    # A request larger than the arena fails whatever its size: clamp to keep sums in range.
    sizes = np.minimum(events["size"].astype(np.int64), heap_size + 1)
    aligns = events["align"].astype(np.int64)
    bad = np.flatnonzero((ops > REALLOC) | (sizes <= 0) | (aligns <= 0)
                         | (aligns & (aligns - 1) != 0) | (aligns > max_align))
    if len(bad):
        i = int(bad[0])
        raise ValueError(
            f"{who}: event {i} (op {ops[i]}, size {events['size'][i]}, align {aligns[i]}) is not a "
            f"request this allocator's glue passes on (sizes of at least 1, power-of-two "
            f"alignments up to {max_align})")
    objs = events["obj"].astype(np.int64)
    if len(objs) and 0 <= objs.min() and objs.max() < 2 * len(objs) + 64:  # already small: used as is
        return ops, objs, sizes, aligns, np.arange(objs.max() + 1)
    ids, dense = np.unique(objs, return_inverse=True)
    return ops, dense.astype(np.int64).reshape(-1), sizes, aligns, ids


def finish(name: str, heap_size: int, status: int, peak: int, obj_ids: np.ndarray,
           addr: np.ndarray, bsize: np.ndarray, holes: np.ndarray) -> Placement:
    """Build a :class:`Placement` from a kernel's end state.

    ``status`` is -1 when every event ran, the failing event index when one failed, and
    ``-2 - i`` when event ``i`` names a block that is not (or already) live.

    Raises
    ------
    ValueError
        If the trace is inconsistent (``status <= -2``).
    """
    if status <= -2:
        raise ValueError(f"{name}: event {-2 - status} frees, reallocates or allocates an obj "
                         "that is not, or is already, live")
    live = np.flatnonzero(addr >= 0)
    order = live[np.argsort(addr[live], kind="stable")]
    blocks = np.stack([addr[order], bsize[order], obj_ids[order]], axis=1).astype(np.int64)
    holes = holes[np.argsort(holes[:, 0], kind="stable")] if len(holes) else holes
    return Placement(name, int(heap_size), None if status < 0 else int(status), int(peak),
                     blocks.reshape(-1, 3), holes.reshape(-1, 2).astype(np.int64))


TAKEN = 0
"""Every simulator's state keeps in ``st[TAKEN]`` the bytes taken from the arena: its
blocks, headers and rounding, and what the allocator keeps for itself."""

ROOM = 8
"""Block addresses one event may add to a block table, at most (an alloc splits a block
in two or three; the check before each event keeps this many slots spare, and more)."""


@jit
def table(fill, cap=256):
    """An empty block table: ``keys`` (open addressing over ``cap``, a power of two,
    slots, -1 = empty, the count of keys in one extra last slot) and ``fields``, one row
    per slot and one column per block field (a block's fields share a cache line), each
    column set to its ``fill``. It starts small and :func:`grown` doubles it, so its size
    follows the blocks a trace touches, not the trace's length."""
    keys = np.full(cap + 1, -1, np.int64)
    keys[cap] = 0
    fields = np.empty((cap, len(fill)), np.int64)
    for r in range(len(fill)):
        fields[:, r] = fill[r]
    return keys, fields


@jit
def crowded(keys):
    """Whether the table would pass half full with another event's :data:`ROOM` additions."""
    return 2 * (keys[-1] + ROOM) > len(keys) - 1


@jit
def grown(keys, fields, fill):
    """A table twice as large holding the same blocks."""
    cap = len(keys) - 1
    big, bigger_fields = table(fill, 2 * cap)
    for j in range(cap):
        if keys[j] != -1:
            k = slot(big, keys[j])
            for r in range(fields.shape[1]):
                bigger_fields[k, r] = fields[j, r]
    return big, bigger_fields


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_HALF = np.uint64(32)


@jit
def slot(keys, address):
    """Slot of block ``address`` in the table ``keys`` (see :func:`table`), added when
    new. Block fields live in arrays indexed by slot, so memory follows the number of
    blocks, not the heap size. Fibonacci hashing with the product's high half folded in:
    block addresses are multiples of 4 to 32, which the low bits of a plain product
    would keep, crowding a fraction of the slots."""
    mask = len(keys) - 2
    mixed = np.uint64(address) * _GOLDEN
    h = np.int64((mixed ^ (mixed >> _HALF)) & np.uint64(mask))
    while keys[h] != address:
        if keys[h] == -1:
            keys[h] = address
            keys[mask + 1] += 1
            return h
        h = (h + 1) & mask
    return h


@jit
def live_sizes(keys, fields, size, addr, extra):
    """Field ``size`` of each live block (plus ``extra``), 0 for objects not live."""
    out = np.zeros(len(addr), np.int64)
    for o in range(len(addr)):
        if addr[o] >= 0:
            out[o] = fields[slot(keys, addr[o]), size] + extra
    return out


@jit
def list_holes(keys, fields, next_free, size, head, stop, room):
    """(address, size) of each block of a singly linked free list (field ``next_free``),
    from ``head`` to ``stop``, in a ``room`` + 1 row array whose rows past the list are
    left for the caller."""
    holes = np.zeros((room + 1, 2), np.int64)
    m = 0
    b = head
    while b != stop:
        j = slot(keys, b)
        holes[m, 0] = b
        holes[m, 1] = fields[j, size]
        m += 1
        b = fields[j, next_free]
    return holes, m


@jit
def push_free(keys, fields, next_free, prev_free, heads, counts, block, fl, sl):
    """Link ``block`` at the head of free list ``(fl, sl)`` (TLSF lists are LIFO); the
    links are the block fields ``next_free`` and ``prev_free``."""
    j = slot(keys, block)
    after = heads[fl, sl]
    heads[fl, sl] = block
    fields[j, next_free] = after
    fields[j, prev_free] = -1
    if after >= 0:
        fields[slot(keys, after), prev_free] = block
    counts[fl] += 1


@jit
def pop_free(keys, fields, next_free, prev_free, heads, counts, block, fl, sl):
    """Unlink ``block`` from free list ``(fl, sl)``."""
    j = slot(keys, block)
    after = fields[j, next_free]
    before = fields[j, prev_free]
    if after >= 0:
        fields[slot(keys, after), prev_free] = before
    if before >= 0:
        fields[slot(keys, before), next_free] = after
    else:
        heads[fl, sl] = after
    counts[fl] -= 1


@jit
def first_free(heads, counts, fl, sl, fl_count):
    """The TLSF search: the head of the first non-empty list from ``(fl, sl)`` on in
    the same first level, else the first non-empty list of the next first level that
    has any free block; -1 when there is none."""
    sl_count = heads.shape[1]
    for s in range(sl, sl_count):
        if heads[fl, s] >= 0:
            return heads[fl, s]
    for f in range(fl + 1, fl_count):
        if counts[f] > 0:
            for s in range(sl_count):
                if heads[f, s] >= 0:
                    return heads[f, s]
            return -1
    return -1


@jit
def log2(x):
    """floor(log2(x)) for x > 0."""
    n = -1
    while x:
        x >>= 1
        n += 1
    return n


@jit
def block_bytes(size, pre, min_block, align, sl_log2, post):
    """Bytes a block of ``size`` requested bytes takes from the arena, by one rule with
    each allocator's parameters: ``round_up(max(size + pre, min_block), align)``, then
    (when ``sl_log2`` > 0) rounded up to its TLSF second-level size class of
    ``2**sl_log2`` classes per power of two above ``2**(sl_log2 + 2)``, plus ``post``.

    The simulators size their blocks with it and :mod:`firmware_model.allocators` costs
    blocks with it, so a lone block's cost is what its simulator takes for it."""
    b = max(size + pre, min_block)
    b = (b + align - 1) // align * align
    if sl_log2 > 0 and b >= (1 << (sl_log2 + 2)):
        r = 1 << (log2(b) - sl_log2)
        b = (b + r - 1) // r * r
    return b + post
