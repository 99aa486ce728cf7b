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

from dataclasses import dataclass, replace

import numpy as np

import mcsa
from mcsa.core._jit import jit
from mcsa.core.mask import (DEFAULT_POSITION_LIMIT, POSITION_BYTES, MaskPlan, check_limit, distinct_codes,
                       ordered_positions)

from mcsa.core.rustvec import grown_capacity, min_non_zero_cap

from .allocators import ALLOCATORS, Allocator
from .placement.arena import block_bytes

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


@dataclass(frozen=True)
class Crossing:
    """The allocation that first takes the heap over its budget."""

    call: str
    allocation: str
    requested: int
    live_before: int


class Heap:
    """Tracks a call's allocations and frees: live and peak bytes (as the
    allocator counts them), blocks, and the first allocation past a budget.

    Parameters
    ----------
    usize_bits : int
    allocator : Allocator
        ``none`` counts bytes requested (the golden figures).
    budget : int, optional
        Record the first allocation that takes live bytes over it.
    """

    def __init__(self, usize_bits: int, allocator: Allocator = ALLOCATORS["none"], budget: int | None = None):
        self.usize_bits = usize_bits
        self.allocator = allocator
        self.budget = budget
        self.call = ""
        self.live_bytes = self.live_blocks = self.allocations = 0
        self.peak_bytes = self.peak_blocks = 0
        self.call_peak = 0
        self.crossing: Crossing | None = None

    def alloc(self, size: int, label: str, count: int = 1) -> None:
        """Allocate ``count`` blocks of ``size`` requested bytes each (nothing for 0 bytes)."""
        if size == 0 or count == 0:
            return
        before = self.live_bytes
        self.live_bytes += self.allocator.cost(size, self.usize_bits, self.budget) * count
        self.live_blocks += count
        self.allocations += count
        if self.live_bytes > self.peak_bytes:
            self.peak_bytes, self.peak_blocks = self.live_bytes, self.live_blocks
        self.call_peak = max(self.call_peak, self.live_bytes)
        if self.budget is not None and self.crossing is None and self.live_bytes > self.budget:
            self.crossing = Crossing(self.call, label, size * count, before)

    def begin(self, call: str) -> None:
        """Start the allocations of ``call``: it names budget crossings, and
        ``call_peak`` counts from the bytes live now."""
        self.call = call
        self.call_peak = self.live_bytes

    def free(self, size: int, count: int = 1) -> None:
        if size == 0 or count == 0:
            return
        self.live_bytes -= self.allocator.cost(size, self.usize_bits, self.budget) * count
        self.live_blocks -= count

    def push_vec(self, count: int, elem_size: int, label: str) -> int:
        """``Vec::new()`` then ``count`` pushes (allocate new, copy, free old); the final capacity."""
        cap = 0
        while cap < count:
            new_cap = grown_capacity(cap, elem_size)
            self.alloc(new_cap * elem_size, label)
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
def _level_counts(n):
    """Keys reaching each level when ``n`` keys are inserted in ascending order.

    The rightmost node fills to 11 keys; the 12th splits it at key 6 (edge 11:
    ``splitpoint`` gives middle 6, insert right), leaving 6 keys on the left and
    sending one up; so every 7 keys past the first 12 send one more key up.
    Level l then holds ``counts[l + 1] + 1`` nodes; node m of level l has the
    level's keys ``7m .. 7m + 6`` (the last node: ``7m ..``), the key ``7m + 6``
    goes up, and key i of level l is key ``(i + 1) * 7**l - 1`` of the sequence.
    """
    counts = np.zeros(64, np.int64)
    counts[0] = n
    top = 0
    while counts[top] > CAPACITY:
        counts[top + 1] = (counts[top] - CAPACITY - 1) // 7 + 1
        top += 1
    return counts, top


@jit
def _grow(a, n):
    b = np.empty((n,) + a.shape[1:], a.dtype)
    b[: a.shape[0]] = a
    return b


@jit
def _split_off(keys, lens, node, new, middle):
    """Move the keys after ``middle`` of a full node to ``new``; return the middle key."""
    for j in range(middle + 1, CAPACITY):
        keys[new, j - middle - 1] = keys[node, j]
    lens[new] = CAPACITY - middle - 1
    lens[node] = middle
    return keys[node, middle]


@jit
def _insert_key(keys, lens, node, at, key):
    """``insert_fit``: shift the keys from ``at`` right and put ``key`` there."""
    for j in range(lens[node], at, -1):
        keys[node, j] = keys[node, j - 1]
    keys[node, at] = key
    lens[node] += 1


@jit
def _insert_edge(edges, length, node, at, edge):
    """Put ``edge`` right of key ``at`` of a node that had ``length`` keys before the key went in."""
    for j in range(length, at, -1):
        edges[node, j + 1] = edges[node, j]
    edges[node, at + 1] = edge


@jit
def _rank_code(rank, prefix, lo):
    """Code ``q << 16 | k`` of the rank-th key of the ascending intra sequence."""
    row = np.searchsorted(prefix, rank, side="right") - 1
    return np.uint32((row << 16) | (lo[row] + rank - prefix[row]))


@jit
def _ascending_allocations(n, counts, top, node_obj, level_start, kinds, objs):
    """Node allocations of inserting ``n`` keys in ascending order into an empty
    tree, in Rust's order: the first key allocates the root leaf; a full node
    splits bottom-up (the new right leaf, then each internal node that splits,
    then a new root). Node m of level l gets id ``node_obj[level_start[l] + m]``
    (nodes of a level are created left to right); ids count up from 0.
    Returns the number of allocations written to ``kinds``/``objs``."""
    lens = np.zeros(64, np.int64)
    made = np.zeros(64, np.int64)
    e = 0
    if n == 0:
        return 0
    node_obj[level_start[0]] = e
    kinds[e], objs[e] = 0, e
    e += 1
    made[0], lens[0] = 1, 1
    height = 0
    for _ in range(1, n):
        if lens[0] < CAPACITY:
            lens[0] += 1
            continue
        node_obj[level_start[0] + made[0]] = e
        kinds[e], objs[e] = 0, e
        e += 1
        made[0] += 1
        lens[0] = 5
        level = 1
        while True:
            if level <= height and lens[level] < CAPACITY:
                lens[level] += 1
                break
            node_obj[level_start[level] + made[level]] = e  # a split's right node, or a new root
            kinds[e], objs[e] = 1, e
            e += 1
            made[level] += 1
            if level > height:
                lens[level] = 1
                height = level
                break
            lens[level] = 5
            level += 1
    return e


@jit
def _emit(allocs, n_alloc, kind, obj):
    """Record the allocation of node ``obj`` (kind 0 a leaf, 1 internal), growing the record."""
    if n_alloc == allocs.shape[0]:
        allocs = _grow(allocs, max(2 * n_alloc, 1))
    allocs[n_alloc, 0], allocs[n_alloc, 1] = kind, obj
    return allocs, n_alloc + 1, obj + 1


@jit
def _btree(n_ascending, prefix, lo, codes, emit):
    """A ``BTreeSet`` after ``n_ascending`` keys in ascending order (the intra
    pairs, whose rank-th key is given by ``prefix``/``lo``), then ``codes`` in
    order.

    Exactly Rust's insertion: linear search in each node, insertion into the
    leaf, a full node split at ``splitpoint`` with its middle key pushed up, a
    new root when the root splits. The ascending part is never built: its shape
    follows from :func:`_level_counts`, and a node is only materialised (its
    keys computed from ranks) when a later key descends through it. Memory and
    time are O(seq_len + len(codes) * depth).

    Returns (leaves, internal nodes, allocations, frees). With ``emit``, the
    allocations are the node allocations in order as (kind, id) columns (kind
    0 a leaf, 1 an internal node) and the frees are every node in the order
    ``into_iter`` frees them (post-order: a node after all its children);
    without, both are empty.
    """
    counts, top = _level_counts(n_ascending)
    leaves = counts[1] + 1 if n_ascending > 0 else 0
    internals = 0
    for level in range(1, top + 1):
        internals += counts[level + 1] + 1
    level_start = np.zeros(66, np.int64)
    for level in range(top + 1):
        level_start[level + 1] = level_start[level] + (counts[level + 1] + 1 if n_ascending > 0 else 0)
    node_obj = np.empty(level_start[top + 1] if emit else 0, np.int64)
    allocs = np.empty((leaves + internals + 2 * codes.size if emit else 0, 2), np.int64)
    n_alloc = 0
    if emit:
        n_alloc = _ascending_allocations(n_ascending, counts, top, node_obj, level_start, allocs[:, 0], allocs[:, 1])
    next_obj = n_alloc
    height = top
    root = -1 if n_ascending > 0 else 0  # -(1 + m): node m of the ascending tree, not yet materialised
    size = 64
    lkeys = np.empty((size, CAPACITY), np.uint32)
    llen = np.zeros(size, np.int64)
    lobj = np.zeros(size, np.int64)
    ikeys = np.empty((size, CAPACITY), np.uint32)
    ilen = np.zeros(size, np.int64)
    iedges = np.empty((size, CAPACITY + 1), np.int64)
    iobj = np.zeros(size, np.int64)
    n_leaf = 0  # explicit nodes (materialised or new)
    n_int = 0
    path_node = np.empty(64, np.int64)
    path_edge = np.empty(64, np.int64)
    power = np.ones(64, np.int64)
    for level in range(1, 64):
        power[level] = power[level - 1] * 7 if power[level - 1] < (1 << 56) else power[level - 1]
    for c in range(codes.size):
        key = codes[c]
        if leaves == 0:
            if n_leaf == lkeys.shape[0]:
                lkeys, llen, lobj = _grow(lkeys, 2 * n_leaf), _grow(llen, 2 * n_leaf), _grow(lobj, 2 * n_leaf)
            lkeys[n_leaf, 0] = key
            llen[n_leaf] = 1
            if emit:
                lobj[n_leaf] = next_obj
                allocs, n_alloc, next_obj = _emit(allocs, n_alloc, 0, next_obj)
            root = n_leaf
            n_leaf += 1
            leaves = 1
            continue
        ref = root
        level = height
        parent = -1
        found = False
        while True:
            if ref < 0:  # materialise node m of the ascending tree at this level
                m = -1 - ref
                first = 7 * m
                length = 6 if m < counts[level + 1] else counts[level] - first
                if level == 0:
                    if n_leaf == lkeys.shape[0]:
                        lkeys, llen, lobj = _grow(lkeys, 2 * n_leaf), _grow(llen, 2 * n_leaf), _grow(lobj, 2 * n_leaf)
                    for i in range(length):
                        lkeys[n_leaf, i] = _rank_code((first + i + 1) * power[0] - 1, prefix, lo)
                    llen[n_leaf] = length
                    if emit:
                        lobj[n_leaf] = node_obj[level_start[0] + m]
                    ref = n_leaf
                    n_leaf += 1
                else:
                    if n_int == ikeys.shape[0]:
                        ikeys, ilen, iedges = _grow(ikeys, 2 * n_int), _grow(ilen, 2 * n_int), _grow(iedges, 2 * n_int)
                        iobj = _grow(iobj, 2 * n_int)
                    for i in range(length):
                        ikeys[n_int, i] = _rank_code((first + i + 1) * power[level] - 1, prefix, lo)
                    for e in range(length + 1):
                        iedges[n_int, e] = -1 - (first + e)
                    ilen[n_int] = length
                    if emit:
                        iobj[n_int] = node_obj[level_start[level] + m]
                    ref = n_int
                    n_int += 1
                if parent < 0:
                    root = ref
                else:
                    iedges[parent, path_edge[level + 1]] = ref
            length = llen[ref] if level == 0 else ilen[ref]
            i = 0
            while i < length:
                k = lkeys[ref, i] if level == 0 else ikeys[ref, i]
                if k >= key:
                    found = k == key
                    break
                i += 1
            if found:
                break
            path_node[level] = ref
            path_edge[level] = i
            if level == 0:
                break
            parent = ref
            ref = iedges[ref, i]
            level -= 1
        if found:
            continue
        leaf = path_node[0]
        edge = path_edge[0]
        if llen[leaf] < CAPACITY:
            _insert_key(lkeys, llen, leaf, edge, key)
            continue
        if n_leaf == lkeys.shape[0]:
            lkeys, llen, lobj = _grow(lkeys, 2 * n_leaf), _grow(llen, 2 * n_leaf), _grow(lobj, 2 * n_leaf)
        middle, right, at = _split_point(edge)
        new = n_leaf
        n_leaf += 1
        leaves += 1
        if emit:
            lobj[new] = next_obj
            allocs, n_alloc, next_obj = _emit(allocs, n_alloc, 0, next_obj)
        up = _split_off(lkeys, llen, leaf, new, middle)
        _insert_key(lkeys, llen, new if right else leaf, at, key)
        left_node = leaf
        right_node = new
        level = 1
        while True:
            if n_int == ikeys.shape[0]:
                ikeys, ilen, iedges = _grow(ikeys, 2 * n_int), _grow(ilen, 2 * n_int), _grow(iedges, 2 * n_int)
                iobj = _grow(iobj, 2 * n_int)
            if emit and (level > height or ilen[path_node[level]] == CAPACITY):
                iobj[n_int] = next_obj
                allocs, n_alloc, next_obj = _emit(allocs, n_alloc, 1, next_obj)
            if level > height:  # the root split: a new root above it
                ikeys[n_int, 0] = up
                iedges[n_int, 0] = left_node
                iedges[n_int, 1] = right_node
                ilen[n_int] = 1
                root = n_int
                n_int += 1
                internals += 1
                height += 1
                counts[height + 1] = 0
                break
            node = path_node[level]
            edge = path_edge[level]
            if ilen[node] < CAPACITY:
                _insert_edge(iedges, ilen[node], node, edge, right_node)
                _insert_key(ikeys, ilen, node, edge, up)
                break
            middle, right, at = _split_point(edge)
            new = n_int
            n_int += 1
            internals += 1
            for j in range(middle + 1, CAPACITY + 1):
                iedges[new, j - middle - 1] = iedges[node, j]
            next_up = _split_off(ikeys, ilen, node, new, middle)
            target = new if right else node
            _insert_edge(iedges, ilen[target], target, at, right_node)
            _insert_key(ikeys, ilen, target, at, up)
            up = next_up
            left_node = node
            right_node = new
            level += 1
    frees = np.empty((leaves + internals if emit else 0, 2), np.int64)
    if emit and leaves > 0:
        _post_order(root, height, counts, ilen, iedges, lobj, iobj, node_obj, level_start, frees)
    return leaves, internals, allocs[:n_alloc], frees


@jit
def _post_order(root, height, counts, ilen, iedges, lobj, iobj, node_obj, level_start, out):
    """Every node as (kind, id), children left to right before their parent:
    the order ``into_iter`` frees them. A node is explicit (``ref >= 0``) or
    node m of the ascending tree (``ref = -1 - m``), whose children are nodes
    ``7m ..`` of the level below."""
    refs = np.empty(64, np.int64)
    nexts = np.zeros(64, np.int64)
    refs[0] = root
    nexts[0] = 0
    depth = 0
    n = 0
    while depth >= 0:
        level = height - depth
        ref = refs[depth]
        if level == 0:
            out[n, 0], out[n, 1] = 0, lobj[ref] if ref >= 0 else node_obj[level_start[0] - 1 - ref]
            n += 1
            depth -= 1
            continue
        if ref >= 0:
            edges = ilen[ref] + 1
        else:
            m = -1 - ref
            edges = (6 if m < counts[level + 1] else counts[level] - 7 * m) + 1
        e = nexts[depth]
        if e < edges:
            nexts[depth] = e + 1
            refs[depth + 1] = iedges[ref, e] if ref >= 0 else -1 - (7 * (-1 - ref) + e)
            nexts[depth + 1] = 0
            depth += 1
        else:
            out[n, 0], out[n, 1] = 1, iobj[ref] if ref >= 0 else node_obj[level_start[level] - 1 - ref]
            n += 1
            depth -= 1


def btree_node_counts(n_ascending, prefix, lo, codes) -> tuple[int, int]:
    """(leaves, internal nodes) of the ``BTreeSet`` of :func:`_btree`."""
    leaves, internals, _, _ = _btree(n_ascending, prefix, lo, codes, False)
    return int(leaves), int(internals)


def _full_mask(heap: Heap, seq_len: int) -> None:
    target = mcsa.Target(heap.usize_bits)
    mcsa.core.mask.full_count(seq_len, target)
    heap.alloc(target.mul(seq_len, seq_len) * POSITION_BYTES, "positions Vec::with_capacity(seq_len * seq_len)")
    heap.alloc(2, "partition_boundaries vec![0]")


def full_mask_usage(seq_len: int, usize_bits: int, allocator: Allocator = ALLOCATORS["none"]) -> Usage:
    """``SparseMask::full(seq_len)``: ``with_capacity(seq_len * seq_len)`` pairs, then ``vec![0u16]``.

    Raises
    ------
    mcsa.TargetPanic
        Where the capacity overflows on this width (see ``mcsa.SparseMask.full``).
    """
    heap = Heap(usize_bits, allocator)
    _full_mask(heap, mcsa.Target(usize_bits).check_usize(seq_len, "seq_len"))
    return heap.usage()


def _intra_ranks(plan: MaskPlan) -> tuple[np.ndarray, np.ndarray]:
    """For the ascending intra pairs of an ordered plan: ``prefix[i]``, the rank of
    row i's first pair, and ``lo[i]``, its first key (its partition's start)."""
    rows = np.arange(plan.seq_len, dtype=np.int64)
    if not plan.intra:
        return np.zeros(plan.seq_len + 1, np.int64), rows
    lo = plan.boundaries.astype(np.int64)[np.searchsorted(plan.boundaries, rows, side="right") - 1]
    prefix = np.zeros(plan.seq_len + 1, np.int64)
    np.cumsum(rows - lo + 1, out=prefix[1:])
    return prefix, lo


def check_insertions(plan: MaskPlan, position_limit: int) -> None:
    """Hold a plan whose indices wrap to ``position_limit`` insertions, counted
    in Python integers before any kernel counts them in 64 bits (which can wrap).

    Raises
    ------
    mcsa.MaskTooLarge
        If the reference's loops insert more than ``position_limit`` pairs.
    """
    if plan.sparse and not plan.ordered:
        check_limit(plan.insertion_count(), position_limit, f"build_mask(seq_len={plan.seq_len}) with wrapping indices")


def btree_inputs(plan: MaskPlan, position_limit: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, int]:
    """What :func:`_btree` needs for a sparse plan, and the distinct positions:
    ``(n_ascending, prefix, lo, codes, count)``.

    In the ordered case (no index wraps) the intra pairs are inserted in
    ascending order and never materialised; only the boundary-token pairs are.
    Where indices wrap, every pair the reference inserts is replayed, so the
    raw insertion count is held to ``position_limit``.
    """
    if plan.ordered:
        prefix, lo = _intra_ranks(plan)
        count = ordered_positions(plan.seq_len, plan.boundaries, plan.tokens, plan.intra, plan.cross,
                                  np.zeros((0, 2), np.uint16), False, np.zeros(0, np.int64))
        return int(prefix[-1]), prefix, lo, replace(plan, intra=False).insertion_codes(), count
    check_insertions(plan, position_limit)
    codes = plan.insertion_codes(position_limit)
    return 0, np.zeros(1, np.int64), np.zeros(1, np.int64), codes, distinct_codes(codes).size


def _build_mask(heap: Heap, plan: MaskPlan, position_limit: int) -> int:
    """Replay ``build_mask``'s allocations for a plan; returns the position count."""
    if not plan.sparse:
        _full_mask(heap, plan.seq_len)
        return plan.seq_len * (plan.seq_len + 1) // 2
    heap.alloc(2 * plan.boundaries.size, "partition boundaries Vec::with_capacity(num_partitions)")
    heap.push_vec(plan.boundaries.size, 2, "boundary_tokens Vec growth")  # every boundary pushed, then truncated
    n_ascending, prefix, lo, codes, count = btree_inputs(plan, position_limit)
    leaves, internals = btree_node_counts(n_ascending, prefix, lo, codes)
    leaf, internal = node_bytes(heap.usize_bits)
    heap.alloc(leaf, "BTreeSet leaf nodes", leaves)
    heap.alloc(internal, "BTreeSet internal nodes", internals)
    if count:
        heap.alloc(max(min_non_zero_cap(POSITION_BYTES), count) * POSITION_BYTES, "positions Vec (collect)")
    heap.free(leaf, leaves)
    heap.free(internal, internals)
    return count


def build_mask_usage(
    config: mcsa.SparsityConfig,
    gate: mcsa.GatePacket,
    seq_len: int,
    usize_bits: int,
    allocator: Allocator = ALLOCATORS["none"],
    position_limit: int = DEFAULT_POSITION_LIMIT,
) -> Usage:
    """Heap use of ``build_mask(gate, seq_len)`` on a ``usize_bits``-bit target.

    Raises
    ------
    mcsa.TargetPanic
        ``capacity overflow`` on the full path where ``SparseMask::full`` panics.
    mcsa.MaskTooLarge
        Only for masks whose indices wrap past 65535 and whose insertions exceed
        ``position_limit`` (they must be replayed one by one).
    """
    heap = Heap(usize_bits, allocator)
    _build_mask(heap, _plan(config, gate, seq_len, usize_bits), position_limit)
    return heap.usage()


def _plan(config, gate, seq_len, usize_bits) -> MaskPlan:
    """The plan on a release build of this width (heap use is the same in debug
    builds that do not panic)."""
    return mcsa.MincutSparseAttention(config, mcsa.Target(usize_bits)).plan_mask(gate, seq_len)


@jit
def _attention_heap(queries, runs, seq_len, pre, min_block, align, sl_log2, post, state, budget):
    """``positions_by_query`` growth over (query, run) runs in mask order, then one
    ``Vec<f32>`` of scores per non-empty query, freed at the end of its turn;
    then the key Vecs are dropped.

    ``state`` is [live, blocks, peak, peak_blocks, allocations] and is updated;
    ``peak`` may start at the peak so far of the enclosing call.
    Returns (kind, requested, live_before) of the first allocation past
    ``budget`` (kind 1: a query's key Vec growing, 2: a scores Vec), or kind 0.
    """
    live, blocks, peak, peak_blocks, allocations = state[0], state[1], state[2], state[3], state[4]
    cross_kind, cross_size, cross_before = 0, 0, 0
    lengths = np.zeros(seq_len, np.int64)
    caps = np.zeros(seq_len, np.int64)
    for r in range(queries.size):
        q = queries[r]
        target = lengths[q] + runs[r]
        while caps[q] < target:
            new_cap = grown_capacity(caps[q], 2)
            before = live
            live += block_bytes(new_cap * 2, pre, min_block, align, sl_log2, post)
            blocks += 1
            allocations += 1
            if live > peak:
                peak = live
                peak_blocks = blocks
            if budget >= 0 and cross_kind == 0 and live > budget:
                cross_kind, cross_size, cross_before = 1, new_cap * 2, before
            if caps[q] > 0:
                live -= block_bytes(caps[q] * 2, pre, min_block, align, sl_log2, post)
                blocks -= 1
            caps[q] = new_cap
        lengths[q] = target
    for q in range(seq_len):
        if lengths[q] > 0:
            cost = block_bytes(lengths[q] * 4, pre, min_block, align, sl_log2, post)
            allocations += 1
            if live + cost > peak:
                peak = live + cost
                peak_blocks = blocks + 1
            if budget >= 0 and cross_kind == 0 and live + cost > budget:
                cross_kind, cross_size, cross_before = 2, lengths[q] * 4, live
    for q in range(seq_len):  # positions_by_query dropped: its Vecs first
        if caps[q] > 0:
            live -= block_bytes(caps[q] * 2, pre, min_block, align, sl_log2, post)
            blocks -= 1
    state[0], state[1], state[2], state[3], state[4] = live, blocks, peak, peak_blocks, allocations
    return cross_kind, cross_size, cross_before


def _runs(query_of_position: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(query, run length) of the consecutive positions of each query, in mask order."""
    if query_of_position.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.flatnonzero(np.concatenate(([True], query_of_position[1:] != query_of_position[:-1])))
    lengths = np.diff(np.append(starts, query_of_position.size))
    return query_of_position[starts].astype(np.int64), lengths.astype(np.int64)


def _sparse_attention(heap: Heap, queries, runs, qkv_seq_len: int, dim: int) -> None:
    """Replay ``sparse_attention``'s allocations; the output stays live."""
    if queries.size and queries.max() >= qkv_seq_len:
        raise ValueError(
            f"the mask reaches query {queries.max()}, past qkv_seq_len={qkv_seq_len}: the call panics"
        )
    vec_header = 3 * heap.usize_bits // 8
    heap.alloc(qkv_seq_len * dim * 4, "output vec![0.0f32; seq_len * dim]")
    heap.alloc(qkv_seq_len * vec_header, "positions_by_query vec![Vec::new(); seq_len]")
    state = np.array([heap.live_bytes, heap.live_blocks, heap.call_peak, 0, heap.allocations])
    budget = -1 if heap.budget is None or heap.crossing is not None else heap.budget
    kind, size, before = _attention_heap(
        queries, runs, qkv_seq_len, *heap.allocator.params(heap.usize_bits, heap.budget), state, budget
    )
    live, blocks, call_peak, call_peak_blocks, allocations = (int(x) for x in state)
    if call_peak > heap.peak_bytes:
        heap.peak_bytes, heap.peak_blocks = call_peak, call_peak_blocks
    heap.live_bytes, heap.live_blocks, heap.call_peak, heap.allocations = live, blocks, call_peak, allocations
    if kind:
        label = "a query's key Vec<u16> growing" if kind == 1 else "a query's scores Vec::with_capacity"
        heap.crossing = Crossing(heap.call, label, int(size), int(before))
    heap.free(qkv_seq_len * vec_header)  # then positions_by_query itself; the output is returned


def _check_sizes(usize_bits: int, qkv_seq_len, dim) -> tuple[int, int]:
    """``qkv_seq_len`` and ``dim`` as usizes of the width, or TypeError/ValueError naming them."""
    target = mcsa.Target(usize_bits)
    return target.check_usize(qkv_seq_len, "qkv_seq_len"), target.check_usize(dim, "dim")


def sparse_attention_usage(
    mask: mcsa.SparseMask, qkv_seq_len: int, dim: int, usize_bits: int, allocator: Allocator = ALLOCATORS["none"]
) -> Usage:
    """Heap use of ``sparse_attention(q, k, v, mask, dim, scale)`` with q, k, v of
    ``qkv_seq_len * dim`` elements (a call that does not panic).

    Raises
    ------
    ValueError
        If the mask reaches a query at or past ``qkv_seq_len`` (the call would
        panic), or ``qkv_seq_len`` or ``dim`` is not a usize of the width.
    TypeError
        If ``qkv_seq_len`` or ``dim`` is not an integer.
    """
    qkv_seq_len, dim = _check_sizes(usize_bits, qkv_seq_len, dim)
    heap = Heap(usize_bits, allocator)
    _sparse_attention(heap, *_runs(mask.positions[:, 0]), qkv_seq_len, dim)
    return heap.usage()


def query_runs(sim: mcsa.MincutSparseAttention, plan: MaskPlan) -> tuple[np.ndarray, np.ndarray]:
    """(query, key count) runs of the mask ``build_mask`` gives for ``plan``, in
    mask order, without building it where no index wraps."""
    if not plan.sparse and plan.seq_len <= mcsa.core.mask.U16_END:
        rows = np.arange(plan.seq_len, dtype=np.int64)
        return rows, rows + 1
    if plan.sparse and plan.ordered:
        counts = np.zeros(plan.seq_len, np.int64)
        ordered_positions(plan.seq_len, plan.boundaries, plan.tokens, plan.intra, plan.cross,
                          np.zeros((0, 2), np.uint16), False, counts)
        rows = np.flatnonzero(counts)
        return rows.astype(np.int64), counts[rows]
    return _runs(sim.mask_from_plan(plan).positions[:, 0])


def planned_attention_usage(
    config: mcsa.SparsityConfig,
    gate: mcsa.GatePacket,
    mask_seq_len: int,
    qkv_seq_len: int,
    dim: int,
    usize_bits: int,
    allocator: Allocator = ALLOCATORS["none"],
    position_limit: int = DEFAULT_POSITION_LIMIT,
) -> Usage:
    """:func:`sparse_attention_usage` for the mask of ``build_mask(gate,
    mask_seq_len)``, without materialising it (where no index wraps; where one
    does, the mask is built, up to ``position_limit`` positions).

    Raises
    ------
    ValueError
        If the mask reaches a query at or past ``qkv_seq_len`` (the call would
        panic), or ``qkv_seq_len`` or ``dim`` is not a usize of the width.
    TypeError
        If ``qkv_seq_len`` or ``dim`` is not an integer.
    mcsa.TargetPanic
        If ``build_mask`` itself panics on this width.
    """
    qkv_seq_len, dim = _check_sizes(usize_bits, qkv_seq_len, dim)
    sim = mcsa.MincutSparseAttention(config, mcsa.Target(usize_bits), position_limit)
    heap = Heap(usize_bits, allocator)
    _sparse_attention(heap, *query_runs(sim, sim.plan_mask(gate, mask_seq_len)), qkv_seq_len, dim)
    return heap.usage()
