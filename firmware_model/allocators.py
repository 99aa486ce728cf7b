"""Allocator models: what a block of ``size`` requested bytes really takes from the heap.

Each model is a per-block header, a minimum block and an alignment, read from
the allocator's source; the cost of a block is
``round_up(max(size + header, min_block), align)``. These are byte figures, the
best case of each allocator; where every block lands (and what fragmentation
costs) is :mod:`firmware_model.placement`'s.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Allocator:
    """A heap allocator's per-block cost, as multiples of the pointer size where it depends on it.

    Attributes
    ----------
    name : str
    header : tuple[int, int]
        Bytes of header per block, on 32- and 64-bit targets.
    min_block : tuple[int, int]
        Smallest block (header included).
    align : tuple[int, int]
        Block sizes are multiples of this.
    source : str
        Where the figures were read.
    """

    name: str
    header: tuple[int, int]
    min_block: tuple[int, int]
    align: tuple[int, int]
    source: str

    def params(self, usize_bits: int) -> tuple[int, int, int]:
        """``(header, min_block, align)`` for a pointer width."""
        i = 0 if usize_bits == 32 else 1
        return self.header[i], self.min_block[i], self.align[i]

    def cost(self, size: int, usize_bits: int) -> int:
        """Bytes one block of ``size`` requested bytes takes (0 for 0)."""
        if size == 0:
            return 0
        header, min_block, align = self.params(usize_bits)
        return -(-max(size + header, min_block) // align) * align


ALLOCATORS: dict[str, Allocator] = {
    a.name: a
    for a in (
        Allocator("none", (0, 0), (1, 1), (1, 1), "bytes requested (Layout sizes), as in the golden vectors"),
        Allocator(
            "linked-list", (0, 0), (8, 16), (4, 8),
            "embedded-alloc LlffHeap = linked_list_allocator: hole.rs align_layout rounds a request up to "
            "HoleList::min_size() (2 * usize) and to align_of::<Hole>() (usize); no header",
        ),
        Allocator(
            "tlsf", (4, 8), (8, 16), (8, 16),
            "embedded-alloc TlsfHeap = rlsf: a used block has a one-usize header and block sizes are "
            "multiples of GRANULARITY (2 * usize)",
        ),
        Allocator(
            "newlib", (4, 8), (16, 32), (8, 16),
            "newlib libc/stdlib/mallocr.c (dlmalloc): request2size adds SIZE_SZ (usize), aligns to "
            "MALLOC_ALIGNMENT (2 * usize), at least MINSIZE (4 * usize)",
        ),
        Allocator(
            "freertos-heap4", (8, 16), (16, 32), (8, 8),
            "FreeRTOS portable/MemMang/heap_4.c: xHeapStructSize = sizeof(BlockLink_t) (pointer + size_t) "
            "added to each request, rounded to portBYTE_ALIGNMENT (8 on Cortex-M); "
            "heapMINIMUM_BLOCK_SIZE = 2 * xHeapStructSize",
        ),
        Allocator(
            "esp-idf", (4, 8), (16, 24), (4, 8),
            "ESP-IDF components/heap (multi_heap over TLSF, IDF >= 5.0): block_header_overhead = "
            "sizeof(size_t), ALIGN_SIZE 4, block_size_min 12 bytes of payload; poisoning off",
        ),
    )
}
"""Allocator models by name."""


def allocator_named(name: str) -> Allocator:
    """An allocator model by name.

    Raises
    ------
    ValueError
        If the name is unknown.
    """
    try:
        return ALLOCATORS[name]
    except KeyError:
        raise ValueError(f"unknown allocator {name!r}; known: {', '.join(ALLOCATORS)}") from None
