"""Where every block of a step lands: allocation traces and allocator simulators.

An allocation trace is a NumPy array of :data:`EVENT_DTYPE` records, in the order the
Rust step makes them. Each allocator simulator replays a trace on a heap of a given
size, placing every block as that allocator's own algorithm does, and returns a
:class:`Placement`: the first event that cannot be satisfied (if any) and the heap map
at that moment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

ALLOC, DEALLOC, REALLOC = 0, 1, 2
"""Event kinds. ``REALLOC``'s ``size`` is the new size; the block keeps its ``obj`` id.
A simulator whose allocator does not override ``GlobalAlloc::realloc`` replays it as
alloc new, copy, dealloc old (Rust's default)."""

EVENT_DTYPE = np.dtype([("op", "u1"), ("obj", "i8"), ("size", "i8"), ("align", "i8")])
"""One allocator call: ``op`` (ALLOC/DEALLOC/REALLOC), ``obj`` (an id unique among live
blocks), ``size`` and ``align`` of the ``Layout`` (for DEALLOC, the block's layout)."""


@dataclass(frozen=True)
class Placement:
    """What an allocator simulator found for one trace on one heap.

    Attributes
    ----------
    allocator : str
        The simulated allocator's name.
    heap_size : int
        Bytes of the arena handed to the allocator.
    failed_event : int or None
        Index of the first event the allocator could not satisfy (it returned null),
        or None when the whole trace ran.
    peak_used : int
        Most bytes taken from the arena at once, up to the failure: ``heap_size`` minus
        the free bytes (the holes) at the worst moment. It counts every block with its
        header, padding and rounding, and what the allocator keeps for itself (its
        control structure, sentinels, the arena's unaligned tail). For ``linked-list``
        it is ``Heap::used()`` plus the arena's tail past the last usize boundary.
    blocks : numpy.ndarray
        Live blocks at the failure (or at the end): (N, 3) int64 of (offset, size, obj),
        offsets from the arena start, sizes as taken from the arena.
    holes : numpy.ndarray
        Free regions at the same moment: (M, 2) int64 of (offset, size).
    """

    allocator: str
    heap_size: int
    failed_event: int | None
    peak_used: int
    blocks: np.ndarray
    holes: np.ndarray

    @property
    def fits(self) -> bool:
        """True when every event was satisfied."""
        return self.failed_event is None

    @property
    def free_total(self) -> int:
        """Bytes free at the failure (or at the end)."""
        return int(self.holes[:, 1].sum()) if len(self.holes) else 0

    @property
    def largest_hole(self) -> int:
        """The largest free region at the failure (or at the end)."""
        return int(self.holes[:, 1].max()) if len(self.holes) else 0


Simulator = Callable[[np.ndarray, int, int], Placement]
"""``simulate(events, heap_size, usize_bits) -> Placement``: every simulator's signature.
``heap_size`` is the arena in bytes. Every simulator takes the arena's start as aligned
to 4096 bytes (``_arena.ARENA_ALIGN``), so that a block's offset alone tells its
alignment: the C and rlsf oracles' arenas were 4096-aligned; the linked-list oracle's
was 16-aligned, which places the same as long as no request asks for more than 16
(the step's largest alignment is 8)."""


SIMULATORS: dict[str, str] = {
    "linked-list": "firmware_model.placement.linked_list:simulate",
    "tlsf": "firmware_model.placement.tlsf:simulate",
    "freertos-heap4": "firmware_model.placement.freertos_heap4:simulate",
    "newlib": "firmware_model.placement.newlib:simulate",
    "esp-idf": "firmware_model.placement.esp_idf:simulate",
}
"""Each allocator model's placement simulator, as ``module:function`` (imported on first use)."""


def simulator(name: str) -> Simulator | None:
    """The placement simulator of allocator model ``name``, or None when it has none
    (``none`` counts bytes requested and places nothing) or its module is not installed.

    Raises
    ------
    ValueError
        If ``name`` is neither a simulator nor a known allocator model.
    """
    from importlib import import_module

    from ..allocators import ALLOCATORS

    if name not in SIMULATORS:
        if name in ALLOCATORS:
            return None
        raise ValueError(f"unknown allocator {name!r}; known: {', '.join(ALLOCATORS)}")
    module, _, function = SIMULATORS[name].partition(":")
    try:
        return getattr(import_module(module), function)
    except ModuleNotFoundError as missing:
        if missing.name != module:
            raise
        return None
