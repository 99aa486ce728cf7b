"""The one event loop of every placement simulator.

Each allocator module keeps only its own primitives, over one shape of state: a block
table (``keys``, ``fields``: see :func:`~firmware_model.placement.arena.table`), ``heads``
(its free lists, or its hole list), ``counts``, ``st`` (its scalars) and ``cfg`` (its
parameters); and ``init``, ``alloc``, ``free``, ``taken`` (bytes taken from the arena
now) and ``end`` (block offsets, block sizes and holes), plus ``realloc`` where the
allocator overrides it. The loop dispatches on an allocator code rather than taking the
primitives as arguments: a cached Numba function that takes a jitted function as an
argument is compiled again in every process.
"""

from __future__ import annotations

import numpy as np

from mcsa.core._jit import jit

from . import ALLOC, DEALLOC, Placement
from .arena import crowded, check_arena, finish, grown, trace_arrays

LINKED_LIST, TLSF, NEWLIB, FREERTOS_HEAP4, ESP_IDF = range(5)
"""Allocator codes."""


@jit
def _init(code, heap_size, word, n_events):
    if code == TLSF:
        return tlsf.init(heap_size, word, n_events)
    if code == NEWLIB:
        return newlib.init(heap_size, word, n_events)
    if code == FREERTOS_HEAP4:
        return freertos_heap4.init(heap_size, word, n_events)
    if code == ESP_IDF:
        return esp_idf.init(heap_size, word, n_events)
    return linked_list.init(heap_size, word, n_events)


@jit
def _alloc(code, keys, fields, heads, counts, st, cfg, size, align):
    if code == TLSF:
        return tlsf.alloc(keys, fields, heads, counts, st, cfg, size, align)
    if code == NEWLIB:
        return newlib.alloc(keys, fields, heads, counts, st, cfg, size, align)
    if code == FREERTOS_HEAP4:
        return freertos_heap4.alloc(keys, fields, heads, counts, st, cfg, size, align)
    if code == ESP_IDF:
        return esp_idf.alloc(keys, fields, heads, counts, st, cfg, size, align)
    return linked_list.alloc(keys, fields, heads, counts, st, cfg, size, align)


@jit
def _free(code, keys, fields, heads, counts, st, cfg, block, request):
    if code == TLSF:
        tlsf.free(keys, fields, heads, counts, st, cfg, block, request)
    elif code == NEWLIB:
        newlib.free(keys, fields, heads, counts, st, cfg, block, request)
    elif code == FREERTOS_HEAP4:
        freertos_heap4.free(keys, fields, heads, counts, st, cfg, block, request)
    elif code == ESP_IDF:
        esp_idf.free(keys, fields, heads, counts, st, cfg, block, request)
    else:
        linked_list.free(keys, fields, heads, counts, st, cfg, block, request)


@jit
def _taken(code, st, cfg):
    if code == TLSF:
        return tlsf.taken(st, cfg)
    if code == NEWLIB:
        return newlib.taken(st, cfg)
    if code == FREERTOS_HEAP4:
        return freertos_heap4.taken(st, cfg)
    if code == ESP_IDF:
        return esp_idf.taken(st, cfg)
    return linked_list.taken(st, cfg)


@jit
def _realloc(code, keys, fields, heads, counts, st, cfg, block, request, size, align):
    """The block after ``realloc`` (-1 when it fails) and the bytes taken at its worst
    moment: the allocator's own where it overrides ``realloc``, else Rust's default
    (alloc new, copy, dealloc old)."""
    if code == ESP_IDF:
        return esp_idf.realloc(keys, fields, heads, counts, st, cfg, block, request, size)
    if code == NEWLIB and newlib.realloc_in_place(keys, fields, st, cfg, block, size):
        return block, _taken(code, st, cfg)
    moved = _alloc(code, keys, fields, heads, counts, st, cfg, size, align)
    if moved < 0:
        return -1, 0
    worst = _taken(code, st, cfg)
    _free(code, keys, fields, heads, counts, st, cfg, block, request)
    return moved, worst


@jit
def _end(code, keys, fields, heads, counts, st, cfg, addr, requests, n_events):
    if code == TLSF:
        return tlsf.end(keys, fields, heads, counts, st, cfg, addr, requests, n_events)
    if code == NEWLIB:
        return newlib.end(keys, fields, heads, counts, st, cfg, addr, requests, n_events)
    if code == FREERTOS_HEAP4:
        return freertos_heap4.end(keys, fields, heads, counts, st, cfg, addr, requests, n_events)
    if code == ESP_IDF:
        return esp_idf.end(keys, fields, heads, counts, st, cfg, addr, requests, n_events)
    return linked_list.end(keys, fields, heads, counts, st, cfg, addr, requests, n_events)


@jit
def _run(code, ops, objs, sizes, aligns, n_obj, heap_size, word):
    """Replay a trace. Returns (status as :func:`~.arena.finish` takes it, the peak of
    bytes taken, each object's block offset and size, the holes) at the failure or the end."""
    keys, fields, fill, heads, counts, st, cfg = _init(code, heap_size, word, len(ops))
    addr = np.full(n_obj, -1, np.int64)
    requests = np.zeros(n_obj, np.int64)  # each live block's Layout size, as dealloc is given it
    peak = _taken(code, st, cfg)
    status = -1
    for i in range(len(ops)):
        if crowded(keys):
            keys, fields = grown(keys, fields, fill)
        o = objs[i]
        op = ops[i]
        if (op == ALLOC) != (addr[o] < 0):
            return -2 - i, peak, addr, addr, np.zeros((0, 2), np.int64)
        if op == DEALLOC:
            _free(code, keys, fields, heads, counts, st, cfg, addr[o], requests[o])
            addr[o] = -1
            continue
        if op == ALLOC:
            block = _alloc(code, keys, fields, heads, counts, st, cfg, sizes[i], aligns[i])
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
        peak = max(peak, _taken(code, st, cfg))
    shown, block_sizes, holes = _end(code, keys, fields, heads, counts, st, cfg, addr, requests, len(ops))
    return status, peak, shown, block_sizes, holes


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
    status, peak, addr, block_sizes, holes = _run(code, ops, objs, sizes, aligns, len(ids), heap_size,
                                                  usize_bits // 8)
    return finish(name, heap_size, status, peak, ids, addr, block_sizes, holes)


from . import esp_idf, freertos_heap4, linked_list, newlib, tlsf  # noqa: E402  (their primitives; they import place)
