"""Numba kernels of the quality analysis: masked sums along key orders, and
partial selection of the most probable keys.

Every mask of the comparison, for every partition count, is a prefix of some
order of each row's keys: the window takes the nearest keys first, the oracles
the most probable. :func:`prefix_errors` walks a row's keys in such an order
once and takes, at each cut (a prefix length), the recall and the output error
of the mask made of that prefix, so one walk serves all partition counts and
no masked copy of the probabilities is ever made. The float64 sums here are the
analysis's reference, not a simulated kernel.
"""

from __future__ import annotations

import numpy as np

from mcsa.core._jit import jit


@jit
def _accumulate(acc, probs_row, v, keys_row, start, stop):
    """``acc += sum(p[j] v[j])`` over keys ``keys_row[start:stop]``; returns ``sum(p[j])``.
    Four keys at a time: one pass over ``acc`` for four rows of ``v``."""
    mass = 0.0
    c = start
    while c + 4 <= stop:
        j0, j1, j2, j3 = keys_row[c], keys_row[c + 1], keys_row[c + 2], keys_row[c + 3]
        w0, w1, w2, w3 = probs_row[j0], probs_row[j1], probs_row[j2], probs_row[j3]
        v0, v1, v2, v3 = v[j0], v[j1], v[j2], v[j3]
        for d in range(acc.size):
            acc[d] += (w0 * v0[d] + w1 * v1[d]) + (w2 * v2[d] + w3 * v3[d])
        mass += (w0 + w1) + (w2 + w3)
        c += 4
    while c < stop:
        w, vj = probs_row[keys_row[c]], v[keys_row[c]]
        for d in range(acc.size):
            acc[d] += w * vj[d]
        mass += w
        c += 1
    return mass


@jit
def _prefix_errors(probs, v, out, keys, cuts, recall, err2, save, save_at):
    heads, t = probs.shape[0], probs.shape[1]
    group = heads // v.shape[0]
    dim = v.shape[2]
    sets = cuts.shape[0]
    acc = np.zeros(dim)
    order = np.empty(sets, np.int64)
    for h in range(heads):
        kh = h if keys.shape[0] > 1 else 0
        ch = h if cuts.shape[1] > 1 else 0
        for i in range(t):
            for s in range(sets):  # this row's cuts, shortest first (insertion sort: a few)
                n = s
                while n > 0 and cuts[order[n - 1], ch, i] > cuts[s, ch, i]:
                    order[n] = order[n - 1]
                    n -= 1
                order[n] = s
            acc[:] = 0.0
            mass = 0.0
            c = 0
            for n in range(sets):
                s = order[n]
                if cuts[s, ch, i] > c:
                    mass += _accumulate(acc, probs[h, i], v[h // group], keys[kh, i], c, cuts[s, ch, i])
                    c = cuts[s, ch, i]
                e = 0.0
                if mass > 0.0:
                    for d in range(dim):
                        x = acc[d] / mass - out[h, i, d]
                        e += x * x
                else:
                    for d in range(dim):
                        e += out[h, i, d] * out[h, i, d]
                recall[s, h] += mass
                err2[s, h] += e
                if s == save_at:
                    for d in range(dim):
                        save[h, i, d] = acc[d] / mass if mass > 0.0 else 0.0


def prefix_errors(probs, v, out, keys, cuts, save_at: int = -1):
    """Recall and squared output error of every prefix mask, per head.

    Parameters
    ----------
    probs : numpy.ndarray
        float64 (H, T, T) dense probabilities.
    v : numpy.ndarray
        float64 (KV, T, D) values; kv head ``h // (H / KV)`` serves query head h.
    out : numpy.ndarray
        float64 (H, T, D) dense output.
    keys : numpy.ndarray
        int32 (1 or H, T, K): each row's keys in the order the masks take them.
    cuts : numpy.ndarray
        int32 (S, 1 or H, T): mask s holds the first ``cuts[s, h, i]`` keys of row i.
    save_at : int
        Also return mask ``save_at``'s renormalised output (H, T, D); -1 for none.

    Returns
    -------
    recall : numpy.ndarray
        (S, H): the probability mass each mask keeps, summed over rows.
    err2 : numpy.ndarray
        (S, H): ``||O_mask - O||_F^2`` (a row without keys outputs zeros).
    saved : numpy.ndarray or None

    Raises
    ------
    ValueError
        If the shapes disagree or a cut is outside ``0..K``.
    """
    heads, t, _ = probs.shape
    if keys.shape[0] not in (1, heads) or cuts.shape[1] not in (1, heads) or keys.shape[1] != t or cuts.shape[2] != t:
        raise ValueError(f"keys {keys.shape} and cuts {cuts.shape} do not fit probabilities {probs.shape}")
    if cuts.size and (cuts.min() < 0 or cuts.max() > keys.shape[2]):
        raise ValueError(f"cuts must lie in 0..{keys.shape[2]}")
    recall = np.zeros((cuts.shape[0], heads))
    err2 = np.zeros((cuts.shape[0], heads))
    saved = np.zeros(out.shape) if save_at >= 0 else np.zeros((0, 0, 0))
    _prefix_errors(probs, v, out, keys, cuts, recall, err2, saved, save_at)
    return recall, err2, (saved if save_at >= 0 else None)


@jit
def _select(vals, items, lo, hi, cuts, stack):
    """Reorder ``vals[lo:hi]`` (and ``items`` alongside) so that for each cut c
    (ascending, lo <= c <= hi) ``vals[lo:c]`` are the highest: quickselect on every
    cut at once (median-of-three pivot, three-way partition; ties in any order).
    Each pending range of ``stack`` holds a cut of its own: ``cuts.size`` rows suffice."""
    stack[0, 0], stack[0, 1], stack[0, 2], stack[0, 3] = lo, hi, 0, cuts.size
    top = 1
    while top > 0:
        top -= 1
        a, b, c0, c1 = stack[top, 0], stack[top, 1], stack[top, 2], stack[top, 3]
        while c0 < c1 and cuts[c0] <= a:
            c0 += 1
        while c1 > c0 and cuts[c1 - 1] >= b:
            c1 -= 1
        if c0 >= c1:
            continue
        x, y, z = vals[a], vals[(a + b) // 2], vals[b - 1]
        pivot = max(min(x, y), min(max(x, y), z))
        gt, k, lt = a, a, b  # [a, gt) > pivot, [gt, k) == pivot, [lt, b) < pivot
        while k < lt:
            value = vals[k]
            if value > pivot:
                vals[k], vals[gt] = vals[gt], value
                items[k], items[gt] = items[gt], items[k]
                gt += 1
                k += 1
            elif value < pivot:
                lt -= 1
                vals[k], vals[lt] = vals[lt], value
                items[k], items[lt] = items[lt], items[k]
            else:
                k += 1
        mid = c0
        while mid < c1 and cuts[mid] < gt:
            mid += 1
        if mid > c0:
            stack[top, 0], stack[top, 1], stack[top, 2], stack[top, 3] = a, gt, c0, mid
            top += 1
        while mid < c1 and cuts[mid] <= lt:
            mid += 1
        if c1 > mid:
            stack[top, 0], stack[top, 1], stack[top, 2], stack[top, 3] = lt, b, mid, c1
            top += 1


@jit
def _head_counts(bits, sizes, counts):
    """counts[s, h, i]: how many of head h's ``sizes[s]`` most probable causal
    positions lie in row i. ``bits`` are the probabilities' float64 bit patterns
    (non-negative: their order is the values'). Radix selection: a histogram of
    the top 16 bits finds the bucket of the ``sizes[s]``-th value, a sort of that
    bucket the value itself; ties with it go to the first rows."""
    heads, t = bits.shape[0], bits.shape[1]
    hist = np.zeros(1 << 16, np.int64)
    bucket = np.empty(t * (t + 1) // 2, np.int64)
    for h in range(heads):
        hist[:] = 0
        for i in range(t):
            for j in range(i + 1):
                hist[bits[h, i, j] >> 48] += 1
        for s in range(sizes.size):
            if sizes[s] == 0:
                counts[s, h, :] = 0
                continue
            above, b = 0, (1 << 16) - 1
            while above + hist[b] < sizes[s]:
                above += hist[b]
                b -= 1
            m = 0
            for i in range(t):
                for j in range(i + 1):
                    if bits[h, i, j] >> 48 == b:
                        bucket[m] = bits[h, i, j]
                        m += 1
            ranked = np.sort(bucket[:m])
            need = sizes[s] - above  # the bucket's highest values taken
            cut = ranked[m - need]
            ties = need - (m - np.searchsorted(ranked, cut, side="right"))  # values equal to cut taken
            for i in range(t):
                greater, equal = 0, 0
                for j in range(i + 1):
                    greater += bits[h, i, j] > cut
                    equal += bits[h, i, j] == cut
                take = min(equal, ties)
                ties -= take
                counts[s, h, i] = greater + take


@jit
def _row_orders(probs, cuts, keys):
    """keys[h, i, :]: row i's causal keys, reordered so that each of the row's
    cuts ``cuts[:, h or 0, i]`` is preceded by that many of its most probable keys."""
    heads, t = probs.shape[0], probs.shape[1]
    sets = cuts.shape[0]
    vals = np.empty(t)
    mine = np.empty(sets, np.int64)
    stack = np.empty((sets + 1, 4), np.int64)
    for h in range(heads):
        ch = h if cuts.shape[1] > 1 else 0
        for i in range(t):
            row = keys[h, i]
            for j in range(i + 1):
                vals[j] = probs[h, i, j]
                row[j] = j
            for s in range(sets):  # ascending, for _select
                n = s
                while n > 0 and mine[n - 1] > cuts[s, ch, i]:
                    mine[n] = mine[n - 1]
                    n -= 1
                mine[n] = cuts[s, ch, i]
            _select(vals, row, 0, i + 1, mine, stack)


def oracle_orders(probs, row_cuts, sizes):
    """The two oracles as cuts of one key order per head and row.

    Parameters
    ----------
    probs : numpy.ndarray
        float64 (H, T, T) causal probabilities.
    row_cuts : numpy.ndarray
        int (R, T): ``top-k-row`` mask r keeps ``row_cuts[r, i]`` keys of row i (R may be 0).
    sizes : sequence of int
        ``top-n`` mask s keeps each head's ``sizes[s]`` most probable causal positions.

    Returns
    -------
    keys : numpy.ndarray
        int32 (H, T, T): per head and row, the causal keys in an order where each
        cut below is preceded by that many of the row's most probable keys.
    cuts : numpy.ndarray
        int32 (R + len(sizes), H, T): the ``top-k-row`` masks, then the ``top-n`` ones.

    Raises
    ------
    ValueError
        If a size is outside ``0..T (T + 1) / 2`` or a row cut outside ``0..i + 1``.
    """
    heads, t, _ = probs.shape
    row_cuts = np.asarray(row_cuts, np.int64).reshape(-1, t)
    sizes = np.asarray(sizes, np.int64).reshape(-1)
    if np.any(sizes < 0) or np.any(sizes > t * (t + 1) // 2):
        raise ValueError(f"top-n sizes must lie in 0..{t * (t + 1) // 2}")
    if np.any(row_cuts < 0) or np.any(row_cuts > np.arange(1, t + 1)):
        raise ValueError("a top-k-row cut is outside its row")
    if np.any(probs < 0):
        raise ValueError("probabilities must not be negative")
    cuts = np.empty((len(row_cuts) + sizes.size, heads, t), np.int32)
    cuts[: len(row_cuts)] = row_cuts[:, None, :]
    _head_counts(np.ascontiguousarray(probs).view(np.int64), sizes, cuts[len(row_cuts):])
    keys = np.zeros((heads, t, t), np.int32)
    _row_orders(probs, cuts, keys)
    return keys, cuts
