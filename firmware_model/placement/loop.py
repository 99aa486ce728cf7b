"""The one event loop of every placement simulator.

Each allocator module keeps only its own primitives, over one shape of state: a block
table (``keys``, ``fields``: see :func:`~firmware_model.placement.arena.table`), ``heads``
(its free lists, or its hole list), ``counts``, ``st`` (its scalars, ``st[TAKEN]`` the
bytes taken from the arena) and ``cfg`` (its parameters); and ``init``, ``alloc``,
``free`` and ``end`` (block offsets, block sizes and holes), plus ``realloc`` where the
allocator overrides it. The loop dispatches on an allocator code rather than taking the
primitives as arguments: a cached Numba function that takes a jitted function as an
argument is compiled again in every process.
"""

from __future__ import annotations

import numpy as np

from mcsa.core._jit import jit

from . import ALLOC, DEALLOC, Placement
from .arena import TAKEN, check_arena, crowded, finish, grown, trace_arrays

LINKED_LIST, TLSF, NEWLIB, FREERTOS_HEAP4, ESP_IDF = range(5)
"""Allocator codes."""


@jit
def _call(code, op, *args):
    """The allocator's ``alloc(keys, fields, heads, counts, st, cfg, size, align)`` (the
    block, or -1) for ALLOC, else its ``free(keys, fields, heads, counts, st, cfg,
    block, request)`` (then -1)."""
    if op == ALLOC:
        return (tlsf.alloc(*args) if code == TLSF else newlib.alloc(*args) if code == NEWLIB
                else freertos_heap4.alloc(*args) if code == FREERTOS_HEAP4
                else esp_idf.alloc(*args) if code == ESP_IDF else linked_list.alloc(*args))
    if code == TLSF:
        tlsf.free(*args)
    elif code == NEWLIB:
        newlib.free(*args)
    elif code == FREERTOS_HEAP4:
        freertos_heap4.free(*args)
    elif code == ESP_IDF:
        esp_idf.free(*args)
    else:
        linked_list.free(*args)
    return -1


@jit
def _realloc(code, keys, fields, heads, counts, st, cfg, block, request, size, align):
    """The block after ``realloc`` (-1 when it fails) and the bytes taken at its worst
    moment: the allocator's own where it overrides ``realloc``, else Rust's default
    (alloc new, copy, dealloc old)."""
    if code == ESP_IDF:
        return esp_idf.realloc(keys, fields, heads, counts, st, cfg, block, request, size)
    if code == NEWLIB and newlib.realloc_in_place(keys, fields, st, cfg, block, size):
        return block, st[TAKEN]
    moved = _call(code, ALLOC, keys, fields, heads, counts, st, cfg, size, align)
    if moved < 0:
        return -1, 0
    worst = st[TAKEN]
    _call(code, DEALLOC, keys, fields, heads, counts, st, cfg, block, request)
    return moved, worst


@jit
def _run(code, ops, objs, sizes, aligns, n_obj, keys, fields, fill, heads, counts, st, cfg):
    """Replay a trace from an allocator's initial state. Returns the status as
    :func:`~.arena.finish` takes it, the peak of bytes taken, each object's block and
    ``Layout`` size, and the block table (grown as blocks came); the other state arrays
    are left as the failure or the end found them."""
    addr = np.full(n_obj, -1, np.int64)
    requests = np.zeros(n_obj, np.int64)  # each live block's Layout size, as dealloc is given it
    peak = st[TAKEN]
    status = -1
    for i in range(len(ops)):
        if crowded(keys):
            keys, fields = grown(keys, fields, fill)
        o = objs[i]
        op = ops[i]
        if (op == ALLOC) != (addr[o] < 0):
            status = -2 - i
            break
        if op == DEALLOC:
            _call(code, DEALLOC, keys, fields, heads, counts, st, cfg, addr[o], requests[o])
            addr[o] = -1
            continue
        if op == ALLOC:
            block = _call(code, ALLOC, keys, fields, heads, counts, st, cfg, sizes[i], aligns[i])
        else:
            block, worst = _realloc(code, keys, fields, heads, counts, st, cfg, addr[o], requests[o], sizes[i],
                                    aligns[i])
            if block >= 0:
                peak = max(peak, worst)
        if block < 0:
            status = i
            break
        addr[o] = block
        requests[o] = sizes[i]
        peak = max(peak, st[TAKEN])
    return status, peak, addr, requests, keys, fields


def place(code: int, name: str, events: np.ndarray, heap_size, usize_bits, *, max_align: int,
          widths: tuple[int, ...] = (32, 64), least_heap: dict[int, int] | None = None) -> Placement:
    """Check a trace and its arguments, and replay it on allocator ``code``: the body of
    every simulator's ``simulate``.

    Parameters
    ----------
    max_align : int
        The largest alignment the allocator's Rust glue serves.
    widths : tuple of int
        The pointer widths the simulator models.
    least_heap : dict, optional
        Per pointer width, the smallest heap the allocator can set up.

    Raises
    ------
    TypeError
        If ``events`` is not an ``EVENT_DTYPE`` array, or ``heap_size`` or ``usize_bits``
        is not an integer.
    ValueError
        If the width is not modelled, the heap is too small to set up, or the trace is invalid.
    """
    heap_size, usize_bits = check_arena(heap_size, usize_bits, name)
    if usize_bits not in widths:
        raise ValueError(f"{name}: models {'/'.join(map(str, widths))}-bit targets only; "
                         f"usize_bits {usize_bits} is not modelled")
    ops, objs, sizes, aligns, ids = trace_arrays(events, heap_size, max_align, name)
    if least_heap and heap_size < least_heap[usize_bits]:
        raise ValueError(f"{name}: heap_size {heap_size} cannot hold the allocator's own structures and a "
                         f"block (at least {least_heap[usize_bits]} bytes)")
    module = MODULES[code]
    keys, fields, fill, heads, counts, st, cfg = module.init(heap_size, usize_bits // 8, len(ops))
    status, peak, addr, requests, keys, fields = _run(code, ops, objs, sizes, aligns, len(ids), keys, fields, fill,
                                                      heads, counts, st, cfg)
    if status <= -2:
        return finish(name, heap_size, status, peak, ids, addr, addr, np.zeros((0, 2), np.int64))
    shown, block_sizes, holes = module.end(keys, fields, heads, counts, st, cfg, addr, requests, len(ops))
    return finish(name, heap_size, status, peak, ids, shown, block_sizes, holes)


from . import esp_idf, freertos_heap4, linked_list, newlib, tlsf  # noqa: E402  (their primitives; they import place)

MODULES = {LINKED_LIST: linked_list, TLSF: tlsf, NEWLIB: newlib, FREERTOS_HEAP4: freertos_heap4, ESP_IDF: esp_idf}
"""Each allocator code's module."""

CODES = {"linked-list": LINKED_LIST, "tlsf": TLSF, "newlib": NEWLIB, "freertos-heap4": FREERTOS_HEAP4,
         "esp-idf": ESP_IDF}
"""Each simulated allocator model's code, by name."""
