"""Bounds on a step's bytes that decide most of a plan scan without planning each step.

For every seq_len of a scan (one gate, config, dim, target, allocator and heap), one
jitted pass computes, from closed forms of the mask's plan (partition sizes, the
ascending intra pairs, the boundary-token insertions, the ``BTreeSet``'s node counts
for the ascending pairs and how many nodes the other insertions can add), bounds on:

- the byte model's peak (:func:`firmware_model.heap.count` under the allocator's block
  cost): a step judged on its bytes fails when the lower bound exceeds the budget and
  fits when the upper bound does not (and no allocation can panic);
- for a step whose every block is placed: the bytes requested live at one moment (at the
  positions ``Vec``'s allocation, and when every key ``Vec`` is full) plus what the
  allocator takes for itself; past the heap, no placement can hold them. And what every
  allocation of the step would take from the arena's untouched end
  (``reserve`` of each simulator): when all of it, plus the most any one request needs
  beyond its take, fits in that end, every request is served, whatever the allocator
  reuses, so the step fits. For the allocators of :data:`FREED_NODES_MERGE`, the same
  holds in parts: the B-tree's nodes, freed at the end of ``build_mask``, leave one
  free block, and ``sparse_attention``'s requests fit in it (or in what is left of the
  end), one scores ``Vec`` at a time.

A step the bounds do not decide is :data:`UNDECIDED`: the scan plans and places it.
Bounds are computed only where the mask is laid out in order (no index wraps, at most
65536 tokens); past that every step is undecided. ``tests/test_firmware_model.py`` checks every
bound against the planned steps and the scan against one made step by step.
"""

from __future__ import annotations

import numpy as np

from mcsa.core._jit import jit
from mcsa.core.mask import U16_END, takes_sparse_path
from mcsa.core.rustvec import grown_capacity

from . import btree
from .placement import loop
from .placement.arena import TAKEN, block_bytes

_sparse_path = jit(takes_sparse_path)

FREED_NODES_MERGE = (loop.LINKED_LIST, loop.TLSF, loop.FREERTOS_HEAP4, loop.ESP_IDF)
"""Allocators whose untouched end is a free block like any other and which merge a
freed block with its free neighbours at once: after ``build_mask`` frees its B-tree,
the nodes served from the end are one free block (see :func:`_verdicts`)."""

FAILS, FITS, UNDECIDED = 0, 1, -1
"""A step's verdict, as the scan records it."""

BIG = 1 << 62
"""Larger than any heap: a bound that proves nothing."""


def verdicts(s, top: int, trace_limit: int) -> np.ndarray:
    """The verdict the bounds give each seq_len in 1..=top of a scan's checked
    arguments ``s`` (see :func:`firmware_model.step.scan_seq_len`), as int8."""
    bits = s.target.usize_bits
    out = np.full(top, UNDECIDED, np.int8)
    code = loop.CODES.get(s.allocator.name, -1)
    if code == loop.ESP_IDF and bits != 32:
        return out  # the simulator refuses the width: leave every step to it
    taken = end = extra = shift = largest = 0
    if code >= 0:
        module = loop.MODULES[code]
        _, _, _, _, _, st, cfg = module.init(s.budget, bits // 8, 0)
        taken = int(st[TAKEN])
        end, extra, shift, largest = module.untouched_end(st, cfg)
    leaf, internal = btree.node_bytes(bits)
    _verdicts(out, s.gate.partition_count, s.gate.lambda_, s.config.intra_partition_attention,
              s.config.boundary_cross_attention, s.config.max_cross_partition_edges, s.dim, s.inputs_on_heap,
              bits // 8, s.target.isize_max, s.budget, *s.allocator.params(bits, s.budget), leaf, internal,
              code >= 0, code in FREED_NODES_MERGE, trace_limit, taken, end, extra, shift, largest)
    return out


@jit
def _tri(m):
    return m * (m + 1) // 2


@jit
def _cost_sum(total, count, pre, min_block, align, sl_log2, post):
    """An upper bound on the block cost of ``count`` blocks requesting ``total`` bytes in all."""
    base = total + count * (pre + min_block + align)
    return base + (base >> sl_log2 if sl_log2 > 0 else 0) + count * (post + 1)


@jit
def _new_nodes(n_ascending, top, inserted, keys):
    """At most how many leaves and internal nodes ``inserted`` more keys add to the
    tree of ``n_ascending`` keys inserted in order (whose levels run 0..=top), ``keys``
    in all. A node holds at most 6 keys after a split and every node of the ascending
    tree but the last of each level holds 6, so a node splits at most once per 6 keys
    it receives, the last of a level once more; a split adds one node, and a root
    split one more (the first key of an empty tree, one leaf)."""
    if inserted == 0:
        return 0, 0
    splits = (5 + inserted) // 6
    leaves = splits + 1
    height = 2  # levels a tree of `keys` keys can have: non-root nodes hold >= 5 keys
    room = 2
    while room <= keys:
        room *= 6
        height += 1
    internals = 0
    for _ in range(1, height + 1):
        splits = (5 + splits) // 6 if splits > 0 else 0
        internals += splits
    return leaves, internals + height - min(top, height) + 1


@jit
def _verdicts(out, partition_count, lambda_, intra, cross_on, max_edges, dim, inputs_on_heap, word, isize_max,
              budget, pre, min_block, align, sl_log2, post, leaf, internal, placed, nodes_merge, trace_limit,
              overhead, untouched, extra, shift, largest):
    sizes = np.zeros(16, np.int64)  # the step's known blocks: sizes, and how many of each it allocates
    times = np.zeros(16, np.int64)
    for i in range(out.size):
        n = i + 1
        if n > U16_END:
            break
        s = n * dim if inputs_on_heap else 0
        out_bytes, by_query = 4 * n * dim, 3 * word * n
        if s > isize_max or out_bytes > isize_max or by_query > isize_max:  # capacity overflow: a panic
            out[i] = FAILS
            continue
        inputs = 3 * block_bytes(s, pre, min_block, align, sl_log2, post) if s else 0
        if inputs > budget:  # q, k and v alone do not fit
            out[i] = FAILS
            continue
        sizes[:] = 0
        times[:] = 0
        sizes[0], times[0] = s, 3
        sizes[1], times[1] = out_bytes, 1
        sizes[2], times[2] = by_query, 1
        m = 3
        leaves_lo = internals = leaves_hi = internals_hi = 0
        transient = 0
        token_holes = 0  # the tokens Vec's old buffers, freed before the first node
        if _sparse_path(n, partition_count, lambda_):
            p = partition_count
            size = n // p
            n_asc = (p - 1) * _tri(size) + _tri(n - (p - 1) * size) if intra else 0
            tokens = min(p, max_edges)
            inserted = 0
            if cross_on and tokens > 0:  # MaskPlan.insertion_count of the boundary-token pairs
                for j in range(tokens):
                    for offset in range(-1, 4):
                        row = j * size + max(offset, 0)
                        if offset < 0 or row < n:
                            inserted += tokens if size == 0 else min(tokens, row // size + 1)
            p_lo = n_asc if n_asc > 0 else min(inserted, 1)
            p_hi = n_asc + inserted
            top = 0
            leaves = 0
            if n_asc > 0:
                counts, top = btree.level_counts(n_asc)
                leaves = counts[1] + 1
                for level in range(1, top + 1):
                    internals += counts[level + 1] + 1
            more_leaves, more_internals = _new_nodes(n_asc, top, inserted, p_hi)
            leaves_lo = leaves + (1 if n_asc == 0 and inserted > 0 else 0)
            leaves_hi, internals_hi = leaves + more_leaves, internals + more_internals
            node_events = 2 * (n_asc // 5 + 2 * inserted + 2)
            fixed_raw = 2 * p  # the boundaries, then the tokens Vec pushed p times
            fixed_cost = block_bytes(2 * p, pre, min_block, align, sl_log2, post)
            sizes[m], times[m] = 2 * p, 1
            m += 1
            cap = 0
            while cap < p:
                new = grown_capacity(cap, 2)
                pair = block_bytes(2 * new, pre, min_block, align, sl_log2, post) + (
                    block_bytes(2 * cap, pre, min_block, align, sl_log2, post) if cap else 0)
                transient = max(transient, inputs + fixed_cost + pair)
                token_holes += block_bytes(2 * cap, pre, min_block, align, sl_log2, post) if cap else 0
                sizes[m], times[m] = 2 * new, 1
                m += 1
                cap = new
            fixed_raw += 2 * cap
            fixed_cost += block_bytes(2 * cap, pre, min_block, align, sl_log2, post)
            sizes[m], times[m] = leaf, leaves_hi
            sizes[m + 1], times[m + 1] = internal, internals_hi
            m += 2
        else:  # SparseMask::full
            if 4 * n * n > isize_max:  # with_capacity(seq_len * seq_len) panics
                out[i] = FAILS
                continue
            p_lo = p_hi = _tri(n)
            node_events = 0
            fixed_raw = 2
            fixed_cost = block_bytes(2, pre, min_block, align, sl_log2, post)
            sizes[m], times[m] = 2, 1
            m += 1
        pos_lo_raw = (4 * n * n if not _sparse_path(n, partition_count, lambda_) else
                      4 * max(4, p_lo) if p_lo > 0 else 0)
        pos_hi_raw = (4 * n * n if not _sparse_path(n, partition_count, lambda_) else
                      4 * max(4, p_hi) if p_hi > 0 else 0)
        sizes[m], times[m] = pos_hi_raw, 1
        m += 1
        leaf_cost = block_bytes(leaf, pre, min_block, align, sl_log2, post)
        internal_cost = block_bytes(internal, pre, min_block, align, sl_log2, post)
        pos_lo = block_bytes(pos_lo_raw, pre, min_block, align, sl_log2, post) if pos_lo_raw else 0
        pos_hi = block_bytes(pos_hi_raw, pre, min_block, align, sl_log2, post) if pos_hi_raw else 0
        attention = (block_bytes(out_bytes, pre, min_block, align, sl_log2, post)
                     + block_bytes(by_query, pre, min_block, align, sl_log2, post))
        base = inputs + fixed_cost
        keys_hi = _cost_sum(4 * p_hi + 8 * n, n, pre, min_block, align, sl_log2, post)
        scores_hi = block_bytes(4 * n, pre, min_block, align, sl_log2, post)
        low = max(transient, base + leaves_lo * leaf_cost + internals * internal_cost + pos_lo,
                  base + pos_lo + attention + 2 * p_lo)
        high = max(transient, base + leaves_hi * leaf_cost + internals_hi * internal_cost + pos_hi,
                   base + pos_hi + attention + keys_hi + scores_hi)
        if not placed or node_events > trace_limit:  # judged on the byte model
            out[i] = FAILS if low > budget else FITS if high <= budget else UNDECIDED
            continue
        live = overhead + 3 * s + fixed_raw + pos_lo_raw + max(
            leaves_lo * leaf + internals * internal, out_bytes + by_query + 2 * p_lo)
        if live > budget:  # what is requested live at one moment exceeds the heap
            out[i] = FAILS
            continue
        # Every block the step ever allocates takes its cost from the untouched end when
        # served there (a block's cost is what its simulator takes for it alone).
        taken = 0
        biggest = 4 * n  # a scores Vec
        for r in range(m):
            if sizes[r] > 0:
                taken += times[r] * block_bytes(sizes[r], pre, min_block, align, sl_log2, post)
                biggest = max(biggest, sizes[r])
        steps = 0  # one key Vec's buffers, caps 4, 8, .. up to 2 * len + 4: at most steps + 1
        while (4 << steps) < 2 * n + 4:
            steps += 1
        key_vecs = _cost_sum(8 * p_hi + 16 * n, (steps + 1) * n, pre, min_block, align, sl_log2, post)
        all_scores = _cost_sum(4 * p_hi, n, pre, min_block, align, sl_log2, post)
        taken += key_vecs + all_scores
        cost = block_bytes(biggest, pre, min_block, align, sl_log2, post)
        if cost <= largest and taken + extra + (cost >> shift if shift else 0) <= untouched:
            out[i] = FITS
            continue
        if not (nodes_merge and node_events > 0):
            continue
        # Or in parts. Up to the positions Vec every call allocates and none frees but
        # the tokens Vec's growth, so what does not fill those holes is served from the
        # untouched end, in order: the nodes served there lie side by side between the
        # tokens and the positions Vec, and once into_iter has freed them they are one
        # free block. sparse_attention then allocates its output, the outer Vec and
        # every key Vec's buffers (counted as if none were reused); each scores Vec is
        # freed before the next is allocated, which gives back the free block it was cut
        # from, so one needs room at a time. If that fits in the freed block, or in
        # what is left of the end, every request is served.
        later = attention + key_vecs + scores_hi
        later_cost = block_bytes(max(out_bytes, by_query, 4 * n), pre, min_block, align, sl_log2, post)
        first = taken - attention - key_vecs - all_scores
        first_cost = 0
        for r in range(m):
            if r not in (1, 2) and sizes[r] > 0:  # (rows 1 and 2: the output and positions_by_query)
                first_cost = max(first_cost, block_bytes(sizes[r], pre, min_block, align, sl_log2, post))
        if first_cost > largest or later_cost > largest:
            continue
        if first + extra + (first_cost >> shift if shift else 0) > untouched:
            continue
        freed = leaves_lo * leaf_cost + internals * internal_cost - token_holes - max(leaf_cost, internal_cost)
        if later + extra + (later_cost >> shift if shift else 0) <= max(freed, untouched - first):
            out[i] = FITS

