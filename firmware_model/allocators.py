"""Allocator models: what a block of ``size`` requested bytes really takes from the heap.

Each model gives, per pointer width, the parameters of one rule,
:func:`firmware_model.placement.arena.block_bytes`: ``round_up(max(size + pre,
min_block), align)``, rounded up to a TLSF size class where the allocator keeps that
size, plus ``post``. Each placement simulator sizes its blocks with the same function
and parameters, so the cost of a block is what its simulator takes for it alone
(``tests/test_firmware_model.py`` checks it). These are byte figures, the best case of
each allocator; where every block lands (and what fragmentation costs) is
:mod:`firmware_model.placement`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

from mcsa.core.checks import check_name

# (The placement modules, Numba kernels, are imported where a cost is computed: the
# command line lists and checks allocator names without loading Numba.)

FREERTOS_LEAST_HEAP = {bits: ((2 * bits // 8 + 7) & ~7) + 8 for bits in (32, 64)}
"""heap_4's smallest ``configTOTAL_HEAP_SIZE`` per pointer width: ``xHeapStructSize`` (a
pointer and a size_t, rounded up to 8) for the end marker, and one 8-byte block."""


@dataclass(frozen=True)
class Allocator:
    """A heap allocator's per-block cost, on 32- and 64-bit targets.

    Attributes
    ----------
    name : str
        As profiles and ``--allocator`` name it.
    source : str
        Where the figures were read.
    align : tuple[int, int]
        Block sizes are rounded up to a multiple of this.
    pre : tuple[int, int]
        Bytes added to a request before rounding (a header, padding).
    min_block : tuple[int, int]
        Smallest block before rounding.
    post : tuple[int, int]
        Bytes added after rounding (a header outside the rounded size).
    size_classes : bool
        Blocks keep their size rounded up to the TLSF second-level class (ESP-IDF's
        TLSF), whose width depends on the heap size.

    Each pair is ``(32-bit, 64-bit)``.
    """

    name: str
    source: str
    align: tuple[int, int]
    pre: tuple[int, int] = (0, 0)
    min_block: tuple[int, int] = (0, 0)
    post: tuple[int, int] = (0, 0)
    size_classes: bool = False
    min_heap: tuple[int, int] = (0, 0)
    """Smallest heap the allocator can set up (0: any, even one that holds no block)."""

    def params(self, usize_bits: int, heap_size: int | None = None) -> tuple[int, int, int, int, int]:
        """``(pre, min_block, align, sl_log2, post)`` of :func:`block_bytes` for a pointer
        width and heap size. ``sl_log2`` is 0 (no size classes) but for ESP-IDF, where
        it comes from the heap size as ``multi_heap_register`` sizes its TLSF; with no
        heap size, the finest classes (the least rounding: the best case)."""
        from .placement.esp_idf import HEAP_T_BYTES, control

        i = 0 if usize_bits == 32 else 1
        sl_log2 = 0
        if self.size_classes:
            pool = None if heap_size is None else heap_size - HEAP_T_BYTES
            sl_log2 = control(pool)[1] if pool is not None and pool > 0 else control(1 << 20)[1]
        return self.pre[i], self.min_block[i], self.align[i], sl_log2, self.post[i]

    def cost(self, size: int, usize_bits: int, heap_size: int | None = None) -> int:
        """Bytes one block of ``size`` requested bytes takes (0 for 0) on a heap of
        ``heap_size`` bytes (which only ESP-IDF's size classes depend on)."""
        from .placement.arena import block_bytes

        if size == 0:
            return 0
        return int(block_bytes(size, *self.params(usize_bits, heap_size)))


ALLOCATORS: dict[str, Allocator] = {
    a.name: a
    for a in (
        Allocator("none", "bytes requested (Layout sizes), as in the golden vectors",
                  align=(1, 1), min_block=(1, 1)),
        Allocator("linked-list", "embedded-alloc LlffHeap = linked_list_allocator: hole.rs align_layout rounds a "
                  "request up to HoleList::min_size() (2 * usize) and to align_of::<Hole>() (usize); no header",
                  align=(4, 8), min_block=(8, 16)),
        Allocator("tlsf", "embedded-alloc TlsfHeap = rlsf 0.2.1: a used block is a 2 * usize header (UsedBlockHdr) "
                  "then the payload, rounded up to GRANULARITY (4 * usize); alignments up to 2 * usize",
                  align=(16, 32), pre=(8, 16)),
        Allocator("newlib", "newlib-nano nano-mallocr.c: a chunk is round_up(size, usize) + MALLOC_PADDING (4 B on "
                  "32-bit, 0 on 64-bit) + the usize size word, at least MALLOC_MINCHUNK (12 / 16 B)",
                  align=(4, 8), pre=(8, 8), min_block=(12, 16)),
        Allocator("freertos-heap4", "FreeRTOS portable/MemMang/heap_4.c: xHeapStructSize = sizeof(BlockLink_t) "
                  "(pointer + size_t) rounded to portBYTE_ALIGNMENT (8) is added to each request, the sum rounded "
                  "up to 8; prvHeapInit needs room for its end marker and one 8-byte block",
                  align=(8, 8), pre=(8, 16), min_heap=(FREERTOS_LEAST_HEAP[32], FREERTOS_LEAST_HEAP[64])),
        Allocator("esp-idf", "ESP-IDF components/heap (multi_heap over TLSF, IDF >= 5.0): the payload rounded to "
                  "ALIGN_SIZE 4, at least block_size_min (12 B), rounded up to its second-level class (good fit), "
                  "plus the size_t header; poisoning off",
                  align=(4, 8), min_block=(12, 24), post=(4, 8), size_classes=True),
    )
}
"""Allocator models by name."""


def check_allocator(allocator, what: str = "allocator") -> Allocator:
    """``allocator`` if it is an :class:`Allocator`.

    Raises
    ------
    TypeError
        Naming ``what``, for anything else (a name is not an Allocator: see :func:`allocator_named`).
    """
    if not isinstance(allocator, Allocator):
        raise TypeError(f"{what} must be an Allocator (firmware_model.allocators.allocator_named(name)), "
                        f"got {type(allocator).__name__} {allocator!r:.40}")
    return allocator


def allocator_named(name: str) -> Allocator:
    """An allocator model by name.

    Raises
    ------
    TypeError
        If ``name`` is not a string.
    ValueError
        If the name is unknown.
    """
    return check_name(name, ALLOCATORS, "allocator", "allocator")
