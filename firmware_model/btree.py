"""``BTreeSet<(u16, u16)>`` as ``build_mask`` fills it: node sizes, the nodes its
insertions allocate (in Rust's order) and the order ``into_iter`` frees them.

What decides the numbers (``library/alloc/src`` of Rust's std,
``collections/btree/node.rs``): B = 6, leaves of 11 keys, internal nodes of 12 edges;
a full node splits around ``splitpoint``; a leaf is 56 bytes on 64-bit (52 on 32-bit),
an internal node 152 (100).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from mcsa.core._jit import jit
from mcsa.core.mask import POSITION_BYTES, MaskPlan, check_limit, distinct_codes, ordered_positions

CAPACITY = 11
"""Keys per B-tree node (2 * B - 1, B = 6)."""

LEAF, INTERNAL = range(2)
"""Node kinds, as :func:`insert` reports allocations and frees."""


def node_bytes(usize_bits: int) -> tuple[int, int]:
    """``(leaf, internal)`` node sizes of ``BTreeSet<(u16, u16)>``.

    A leaf is ``parent`` (a pointer), ``parent_idx`` and ``len`` (u16 each) and
    11 keys of 4 bytes, rounded to pointer alignment; an internal node adds 12
    edge pointers.
    """
    ptr = usize_bits // 8
    leaf = -(-(ptr + 2 + 2 + CAPACITY * POSITION_BYTES) // ptr) * ptr
    return leaf, leaf + (CAPACITY + 1) * ptr


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
def level_counts(n):
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
def insert(n_ascending, prefix, lo, codes, emit):
    """A ``BTreeSet`` after ``n_ascending`` keys in ascending order (the intra
    pairs, whose rank-th key is given by ``prefix``/``lo``), then ``codes`` in
    order.

    Exactly Rust's insertion: linear search in each node, insertion into the
    leaf, a full node split at ``splitpoint`` with its middle key pushed up, a
    new root when the root splits. The ascending part is never built: its shape
    follows from :func:`level_counts`, and a node is only materialised (its
    keys computed from ranks) when a later key descends through it. Memory and
    time are O(seq_len + len(codes) * depth).

    Returns (leaves, internal nodes, allocations, frees). With ``emit``, the
    allocations are the node allocations in order as (kind, id) columns (kind
    0 a leaf, 1 an internal node) and the frees are every node in the order
    ``into_iter`` frees them (post-order: a node after all its children);
    without, both are empty.
    """
    counts, top = level_counts(n_ascending)
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


def node_counts(n_ascending, prefix, lo, codes) -> tuple[int, int]:
    """(leaves, internal nodes) of the ``BTreeSet`` of :func:`insert`."""
    leaves, internals, _, _ = insert(n_ascending, prefix, lo, codes, False)
    return int(leaves), int(internals)


def intra_ranks(plan: MaskPlan) -> tuple[np.ndarray, np.ndarray]:
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


@dataclass(frozen=True)
class Insertions:
    """What ``build_mask`` inserts into its ``BTreeSet``, as :func:`insert` takes it.

    In the ordered case (no index wraps) the intra pairs go in ascending order and are
    never materialised (``n_ascending`` of them, ranked by ``prefix``/``lo``); ``codes``
    holds only the boundary-token pairs. Where indices wrap, ``codes`` is every pair
    the reference inserts, and ``distinct`` the positions the mask ends with (the
    ``BTreeSet``'s order, ``q << 16 | k``).

    Attributes
    ----------
    n_ascending : int
    prefix, lo : numpy.ndarray
    codes : numpy.ndarray
        uint32 ``q << 16 | k`` in insertion order, repeats kept.
    count : int
        Distinct positions: the mask's ``num_positions``.
    distinct : numpy.ndarray or None
    """

    n_ascending: int
    prefix: np.ndarray
    lo: np.ndarray
    codes: np.ndarray
    count: int
    distinct: np.ndarray | None


def insertions(plan: MaskPlan, position_limit: int) -> Insertions:
    """The insertions of a sparse plan.

    Raises
    ------
    mcsa.MaskTooLarge
        Where indices wrap and the reference inserts more than ``position_limit`` pairs
        (they are replayed one by one).
    """
    if plan.ordered:
        prefix, lo = intra_ranks(plan)
        count = ordered_positions(plan.seq_len, plan.boundaries, plan.tokens, plan.intra, plan.cross,
                                  np.zeros((0, 2), np.uint16), False, np.zeros(0, np.int64))
        return Insertions(int(prefix[-1]), prefix, lo, replace(plan, intra=False).insertion_codes(), int(count), None)
    check_insertions(plan, position_limit)
    codes = plan.insertion_codes(position_limit)
    distinct = distinct_codes(codes)
    return Insertions(0, np.zeros(1, np.int64), np.zeros(1, np.int64), codes, int(distinct.size), distinct)
