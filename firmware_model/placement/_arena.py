"""What the allocator simulators share: a trace checked and turned into kernel arrays,
block fields in a table of block addresses, the free list listed as holes, and a
kernel's end state turned into a :class:`~firmware_model.placement.Placement`."""

from __future__ import annotations

import numpy as np

from mcsa.core._jit import jit

from . import EVENT_DTYPE, REALLOC, Placement

ARENA_ALIGN = 4096
"""Alignment of the arena start every simulator assumes (block offsets alone then tell
a payload's alignment); also the largest request alignment a simulator accepts."""


def trace_arrays(events: np.ndarray, heap_size: int, usize_bits: int, max_align: int, who: str):
    """Validate a trace and return ``(ops, objs, sizes, aligns, obj_ids)`` for a kernel:
    ``objs`` index ``obj_ids`` (the trace's own ids), so a kernel keeps one row per id.

    Raises
    ------
    TypeError
        If ``events`` is not an array of ``EVENT_DTYPE``.
    ValueError
        If the pointer width, heap size, an op, a size or an alignment is invalid.
    """
    if not isinstance(events, np.ndarray) or events.dtype != EVENT_DTYPE or events.ndim != 1:
        raise TypeError(f"{who}: events must be a 1-D array of EVENT_DTYPE")
    if usize_bits not in (32, 64):
        raise ValueError(f"{who}: usize_bits must be 32 or 64, got {usize_bits}")
    if not 0 <= int(heap_size) < min(2**usize_bits, 2**48):
        raise ValueError(f"{who}: heap_size must be in 0..{min(2**usize_bits, 2**48) - 1}, got {heap_size}")
    ops = events["op"].astype(np.int64)
    # A request larger than the arena fails whatever its size: clamp to keep sums in range.
    sizes = np.minimum(events["size"].astype(np.int64), int(heap_size) + 1)
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
    return ops, dense.astype(np.int64), sizes, aligns, ids


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


ROOM = 8
"""Block addresses one event may add to a block table, at most (an alloc splits a block
in two or three; the check before each event keeps this many slots spare, and more)."""


@jit
def _table(fill, cap=256):
    """An empty block table: ``keys`` (open addressing over ``cap``, a power of two,
    slots, -1 = empty, the count of keys in one extra last slot) and ``f``, one row per
    block field, each set to its ``fill``. It starts small and :func:`_grown` doubles it, so
    its size follows the blocks a trace touches, not the trace's length."""
    keys = np.full(cap + 1, -1, np.int64)
    keys[cap] = 0
    f = np.empty((len(fill), cap), np.int64)
    for r in range(len(fill)):
        f[r, :] = fill[r]
    return keys, f


@jit
def _crowded(keys):
    """Whether the table would pass half full with another event's :data:`ROOM` additions."""
    return 2 * (keys[-1] + ROOM) > len(keys) - 1


@jit
def _grown(keys, f, fill):
    """A table twice as large holding the same blocks."""
    cap = len(keys) - 1
    big, g = _table(fill, 2 * cap)
    for j in range(cap):
        if keys[j] != -1:
            g[:, _ix(big, keys[j])] = f[:, j]
    return big, g


@jit
def _ix(keys, a):
    """Slot of block address ``a`` in the table ``keys`` (see :func:`_table`), added when
    new. Block fields live in arrays indexed by slot, so memory follows the number of
    blocks, not the heap size."""
    mask = len(keys) - 2
    h = ((a >> 2) * 2654435761) & mask
    while keys[h] != a:
        if keys[h] == -1:
            keys[h] = a
            keys[mask + 1] += 1
            return h
        h = (h + 1) & mask
    return h


@jit
def _live_sizes(keys, bsz, addr, extra):
    """``bsz`` of each live block (plus ``extra``), 0 for objects not live."""
    out = np.zeros(len(addr), np.int64)
    for o in range(len(addr)):
        if addr[o] >= 0:
            out[o] = bsz[_ix(keys, addr[o])] + extra
    return out


@jit
def _list_holes(keys, nxt, bsz, head, stop, room):
    """(address, size) of each block of a singly linked free list, from ``head`` to ``stop``,
    in a ``room`` + 1 row array whose rows past the list are left for the caller."""
    holes = np.zeros((room + 1, 2), np.int64)
    m = 0
    b = head
    while b != stop:
        holes[m, 0] = b
        holes[m, 1] = bsz[_ix(keys, b)]
        m += 1
        b = nxt[_ix(keys, b)]
    return holes, m


@jit
def _log2(x):
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
        r = 1 << (_log2(b) - sl_log2)
        b = (b + r - 1) // r * r
    return b + post
