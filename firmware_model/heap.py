"""Exact heap use of the reference module's calls, from Rust's allocation behaviour.

Figures are bytes requested from the global allocator (``Layout`` sizes, no
allocator overhead) during one call, as defined in the golden vectors:
``peak_bytes`` (highest live total), ``peak_blocks`` (live blocks the first time
that peak is reached), ``live_bytes``/``live_blocks`` (what the call leaves
allocated) and ``allocations`` (calls to the allocator; a reallocation counts
one). A growing ``Vec`` reallocates as allocate-new, copy, free-old.

What decides the numbers (``library/alloc/src`` of Rust's std):

- ``Vec`` growth (``raw_vec.rs``): the new capacity is ``max(2 * cap, len + 1)``
  and at least 4 for 2- and 4-byte elements, 8 for 1-byte ones.
- ``collect()`` from ``BTreeSet::into_iter()`` (``vec/spec_from_iter_nested.rs``):
  takes the first element, then allocates ``max(4, remaining + 1)`` at once; the
  iterator frees every node as it leaves it, after that allocation.
- ``BTreeSet<(u16, u16)>`` (``collections/btree/node.rs``): B = 6, leaves of 11
  keys, internal nodes of 12 edges; a full node splits around ``splitpoint``;
  a leaf is 56 bytes on 64-bit (52 on 32-bit), an internal node 152 (100).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import mcsa
from mcsa._jit import jit
from mcsa.mask import POSITION_BYTES, MaskPlan

CAPACITY = 11
"""Keys per B-tree node (2 * B - 1, B = 6)."""


@dataclass(frozen=True)
class Usage:
    """Heap figures of one call (bytes requested, no allocator overhead)."""

    peak_bytes: int
    peak_blocks: int
    live_bytes: int
    live_blocks: int
    allocations: int

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("peak_bytes", "peak_blocks", "live_bytes", "live_blocks", "allocations")}


def node_bytes(usize_bits: int) -> tuple[int, int]:
    """``(leaf, internal)`` node sizes of ``BTreeSet<(u16, u16)>``.

    A leaf is ``parent`` (a pointer), ``parent_idx`` and ``len`` (u16 each) and
    11 keys of 4 bytes, rounded to pointer alignment; an internal node adds 12
    edge pointers.
    """
    ptr = usize_bits // 8
    leaf = -(-(ptr + 2 + 2 + CAPACITY * POSITION_BYTES) // ptr) * ptr
    return leaf, leaf + (CAPACITY + 1) * ptr


def min_non_zero_cap(elem_size: int) -> int:
    """``RawVec::MIN_NON_ZERO_CAP``."""
    return 8 if elem_size == 1 else 4 if elem_size <= 1024 else 1


class Heap:
    """Tracks live bytes and blocks over a call's allocations and frees."""

    def __init__(self):
        self.live_bytes = self.live_blocks = self.allocations = 0
        self.peak_bytes = self.peak_blocks = 0

    def alloc(self, size: int, blocks: int = 1) -> None:
        """Allocate ``blocks`` blocks of ``size`` bytes in all (no-op for 0 bytes)."""
        if size == 0:
            return
        self.live_bytes += size
        self.live_blocks += blocks
        self.allocations += blocks
        if self.live_bytes > self.peak_bytes:
            self.peak_bytes, self.peak_blocks = self.live_bytes, self.live_blocks

    def free(self, size: int, blocks: int = 1) -> None:
        if size == 0:
            return
        self.live_bytes -= size
        self.live_blocks -= blocks

    def push_vec(self, count: int, elem_size: int) -> int:
        """``Vec::new()`` then ``count`` pushes; returns the final capacity."""
        cap = 0
        while cap < count:
            new_cap = max(cap * 2, cap + 1, min_non_zero_cap(elem_size))
            self.alloc(new_cap * elem_size)
            self.free(cap * elem_size)
            cap = new_cap
        return cap

    def usage(self) -> Usage:
        return Usage(self.peak_bytes, self.peak_blocks, self.live_bytes, self.live_blocks, self.allocations)


@jit
def _split_point(edge):
    """``node.rs::splitpoint``: (middle key index, insert into right?, index there)."""
    if edge < 5:
        return 4, False, edge
    if edge == 5:
        return 5, False, edge
    if edge == 6:
        return 5, True, 0
    return 6, True, edge - 7


@jit
def btree_node_counts(codes):
    """Insert ``codes`` into a simulated ``BTreeSet`` in order; return (leaves, internals).

    Exactly Rust's insertion: linear search in each node, insert into the leaf,
    split a full node at ``splitpoint`` and push the middle key up, a new root
    when the root splits. Only counts matter, but the keys are kept to place
    every insertion.
    """
    n = codes.size
    max_nodes = n // 4 + 8
    lkeys = np.empty((max_nodes, CAPACITY), np.uint32)
    llen = np.zeros(max_nodes, np.int64)
    ikeys = np.empty((max_nodes // 4 + 8, CAPACITY), np.uint32)
    ilen = np.zeros(max_nodes // 4 + 8, np.int64)
    iedges = np.empty((max_nodes // 4 + 8, CAPACITY + 1), np.int64)
    leaves = 0
    internals = 0
    root = -1
    height = 0
    path_node = np.empty(64, np.int64)
    path_edge = np.empty(64, np.int64)
    for c in range(n):
        key = codes[c]
        if root < 0:
            root = 0
            leaves = 1
            lkeys[0, 0] = key
            llen[0] = 1
            continue
        node = root
        level = height
        found = False
        while True:
            length = llen[node] if level == 0 else ilen[node]
            i = 0
            while i < length:
                k = lkeys[node, i] if level == 0 else ikeys[node, i]
                if k >= key:
                    found = k == key
                    break
                i += 1
            if found:
                break
            path_node[level] = node
            path_edge[level] = i
            if level == 0:
                break
            node = iedges[node, i]
            level -= 1
        if found:
            continue
        # leaf insertion
        leaf = path_node[0]
        edge = path_edge[0]
        if llen[leaf] < CAPACITY:
            for j in range(llen[leaf], edge, -1):
                lkeys[leaf, j] = lkeys[leaf, j - 1]
            lkeys[leaf, edge] = key
            llen[leaf] += 1
            continue
        middle, right, at = _split_point(edge)
        new = leaves
        leaves += 1
        for j in range(middle + 1, CAPACITY):
            lkeys[new, j - middle - 1] = lkeys[leaf, j]
        llen[new] = CAPACITY - middle - 1
        llen[leaf] = middle
        up = lkeys[leaf, middle]
        target = new if right else leaf
        for j in range(llen[target], at, -1):
            lkeys[target, j] = lkeys[target, j - 1]
        lkeys[target, at] = key
        llen[target] += 1
        left_node = leaf
        right_node = new
        # push (up, right_node) into the parents
        level = 1
        while True:
            if level > height:
                parent = internals
                internals += 1
                ikeys[parent, 0] = up
                iedges[parent, 0] = left_node
                iedges[parent, 1] = right_node
                ilen[parent] = 1
                root = parent
                height += 1
                break
            parent = path_node[level]
            edge = path_edge[level]
            if ilen[parent] < CAPACITY:
                for j in range(ilen[parent], edge, -1):
                    ikeys[parent, j] = ikeys[parent, j - 1]
                    iedges[parent, j + 1] = iedges[parent, j]
                ikeys[parent, edge] = up
                iedges[parent, edge + 1] = right_node
                ilen[parent] += 1
                break
            middle, right, at = _split_point(edge)
            new = internals
            internals += 1
            for j in range(middle + 1, CAPACITY):
                ikeys[new, j - middle - 1] = ikeys[parent, j]
            for j in range(middle + 1, CAPACITY + 1):
                iedges[new, j - middle - 1] = iedges[parent, j]
            ilen[new] = CAPACITY - middle - 1
            ilen[parent] = middle
            next_up = ikeys[parent, middle]
            target = new if right else parent
            for j in range(ilen[target], at, -1):
                ikeys[target, j] = ikeys[target, j - 1]
                iedges[target, j + 1] = iedges[target, j]
            ikeys[target, at] = up
            iedges[target, at + 1] = right_node
            ilen[target] += 1
            up = next_up
            left_node = parent
            right_node = new
            level += 1
    return leaves, internals


def full_mask_usage(seq_len: int, usize_bits: int) -> Usage:
    """``SparseMask::full(seq_len)``: ``with_capacity(seq_len * seq_len)`` pairs, then ``vec![0u16]``.

    Raises
    ------
    mcsa.TargetPanic
        Where the capacity overflows on this width (see ``mcsa.SparseMask.full``).
    """
    target = mcsa.Target(usize_bits)
    seq_len = target.check_usize(seq_len, "seq_len")
    mcsa.mask.full_count(seq_len, target)
    heap = Heap()
    heap.alloc(target.mul(seq_len, seq_len) * POSITION_BYTES)
    heap.alloc(2)
    return heap.usage()


def plan_usage(plan: MaskPlan, usize_bits: int) -> tuple[Usage, int]:
    """Heap use of ``build_mask`` for a :class:`mcsa.MaskPlan`, and its position count."""
    if not plan.sparse:
        return full_mask_usage(plan.seq_len, usize_bits), plan.seq_len * (plan.seq_len + 1) // 2
    heap = Heap()
    heap.alloc(2 * plan.boundaries.size)  # Vec::with_capacity(num_partitions)
    heap.push_vec(plan.boundaries.size, 2)  # boundary tokens: every boundary pushed, then truncated
    codes = plan.insertion_codes()
    leaves, internals = btree_node_counts(codes)
    leaf, internal = node_bytes(usize_bits)
    nodes = leaves * leaf + internals * internal
    heap.alloc(nodes, leaves + internals)
    count = _distinct(codes)
    if count:
        heap.alloc(max(min_non_zero_cap(POSITION_BYTES), count) * POSITION_BYTES)
    heap.free(nodes, leaves + internals)
    return heap.usage(), count


def _distinct(codes: np.ndarray) -> int:
    if codes.size == 0:
        return 0
    ordered = np.sort(codes)
    return int(np.count_nonzero(ordered[1:] != ordered[:-1])) + 1


def build_mask_usage(config: mcsa.SparsityConfig, gate: mcsa.GatePacket, seq_len: int, usize_bits: int) -> Usage:
    """Heap use of ``build_mask(gate, seq_len)`` on a ``usize_bits``-bit target.

    Raises
    ------
    mcsa.TargetPanic
        Never for overflow checks (release semantics are assumed: heap use is the
        same in debug builds that do not panic); ``capacity overflow`` on the full path.
    """
    sim = mcsa.MincutSparseAttention(config, mcsa.Target(usize_bits))
    return plan_usage(sim.plan_mask(gate, seq_len), usize_bits)[0]


@jit
def _attention_heap(queries, runs, seq_len, vec_bytes, base_live, base_blocks):
    """``positions_by_query`` growth over (query, run) runs in mask order, then one
    ``Vec<f32>`` of scores per non-empty query, freed at the end of its turn.
    Returns (peak, peak_blocks, allocations, lengths)."""
    live = base_live
    blocks = base_blocks
    peak = live
    peak_blocks = blocks
    allocations = 0
    lengths = np.zeros(seq_len, np.int64)
    caps = np.zeros(seq_len, np.int64)
    for r in range(queries.size):
        q = queries[r]
        target = lengths[q] + runs[r]
        while caps[q] < target:
            new_cap = max(caps[q] * 2, caps[q] + 1, 4)
            live += new_cap * 2
            blocks += 1
            allocations += 1
            if live > peak:
                peak = live
                peak_blocks = blocks
            if caps[q] > 0:
                live -= caps[q] * 2
                blocks -= 1
            caps[q] = new_cap
        lengths[q] = target
    for q in range(seq_len):
        if lengths[q] > 0:
            size = lengths[q] * 4
            allocations += 1
            if live + size > peak:
                peak = live + size
                peak_blocks = blocks + 1
    return peak, peak_blocks, allocations


def _runs(query_of_position: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if query_of_position.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.flatnonzero(np.concatenate(([True], query_of_position[1:] != query_of_position[:-1])))
    lengths = np.diff(np.append(starts, query_of_position.size))
    return query_of_position[starts].astype(np.int64), lengths.astype(np.int64)


def _attention_usage(queries, runs, qkv_seq_len: int, dim: int, usize_bits: int) -> Usage:
    heap = Heap()
    heap.alloc(qkv_seq_len * dim * 4)  # vec![0.0f32; seq_len * dim]
    heap.alloc(qkv_seq_len * 3 * usize_bits // 8)  # vec![Vec::new(); seq_len]
    peak, peak_blocks, allocations = _attention_heap(
        queries, runs, qkv_seq_len, 3 * usize_bits // 8, heap.live_bytes, heap.live_blocks
    )
    if peak > heap.peak_bytes:
        heap.peak_bytes, heap.peak_blocks = int(peak), int(peak_blocks)
    output = qkv_seq_len * dim * 4
    return Usage(heap.peak_bytes, heap.peak_blocks, output, int(output > 0), heap.allocations + int(allocations))


def sparse_attention_usage(mask: mcsa.SparseMask, qkv_seq_len: int, dim: int, usize_bits: int) -> Usage:
    """Heap use of ``sparse_attention(q, k, v, mask, dim, scale)`` with q, k, v of
    ``qkv_seq_len * dim`` elements (a call that does not panic).

    Raises
    ------
    ValueError
        If the mask reaches a query at or past ``qkv_seq_len`` (the call would panic).
    """
    queries, runs = _runs(mask.positions[:, 0])
    if queries.size and queries.max() >= qkv_seq_len:
        raise ValueError(f"the mask reaches query {queries.max()}, past qkv_seq_len={qkv_seq_len}: the call panics")
    return _attention_usage(queries, runs, qkv_seq_len, dim, usize_bits)
