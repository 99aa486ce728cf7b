"""Kernels of the quality analysis: masked sums along key orders, and the oracles' orders.

Every mask of the comparison, for every partition count, is a prefix of some
order of each row's keys plus keys of its own: the position-only masks are
their row's nearest keys (a prefix of ``i, i - 1, ..., 0``) plus boundary, sink
or farther strided keys; the oracles are prefixes of the row's keys from the
most probable. :func:`prefix_errors` walks a row's keys in such an order once
and takes, at each cut (a prefix length), the recall and the output error of the
mask made of that prefix and its own keys: one walk serves several families and
every partition count, and no masked copy of the probabilities is made. The
float64 sums here are the analysis's reference, not a simulated kernel.
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
def _row_error(acc, mass, out_row):
    """``||acc / mass - out_row||^2`` (``||out_row||^2`` for a row without mass), in
    four partial sums: without fast-math one chain of dependent adds would be the
    bottleneck of a row's snapshot."""
    inv = 1.0 / mass if mass > 0.0 else 0.0
    e0, e1, e2, e3 = 0.0, 0.0, 0.0, 0.0
    d = 0
    while d + 4 <= acc.size:
        x0, x1 = acc[d] * inv - out_row[d], acc[d + 1] * inv - out_row[d + 1]
        x2, x3 = acc[d + 2] * inv - out_row[d + 2], acc[d + 3] * inv - out_row[d + 3]
        e0 += x0 * x0
        e1 += x1 * x1
        e2 += x2 * x2
        e3 += x3 * x3
        d += 4
    while d < acc.size:
        x0 = acc[d] * inv - out_row[d]
        e0 += x0 * x0
        d += 1
    return (e0 + e1) + (e2 + e3)


@jit
def _prefix_errors(probs, v, out, keys, cuts, order, extra_keys, extra_cuts, recall, err2, save, slot):
    heads, t = probs.shape[0], probs.shape[1]
    group = heads // v.shape[0]
    sets = cuts.shape[0]
    acc = np.zeros(v.shape[2])
    branch = np.zeros(v.shape[2])
    for h in range(heads):
        kh = h if keys.shape[0] > 1 else 0
        ch = h if cuts.shape[1] > 1 else 0
        vh = v[h // group]
        for i in range(t):
            acc[:] = 0.0
            mass = 0.0
            c = 0
            for n in range(sets):  # this row's cuts, shortest first
                s = order[n, ch, i]
                if cuts[s, ch, i] > c:
                    mass += _accumulate(acc, probs[h, i], vh, keys[kh, i], c, cuts[s, ch, i])
                    c = cuts[s, ch, i]
                kept, total = acc, mass
                if extra_cuts[s, i] > 0:  # the prefix plus keys of its own
                    branch[:] = acc
                    kept, total = branch, mass + _accumulate(branch, probs[h, i], vh, extra_keys[s, i], 0,
                                                             extra_cuts[s, i])
                recall[s, h] += total
                err2[s, h] += _row_error(kept, total, out[h, i])
                if slot[s] >= 0:
                    inv = 1.0 / total if total > 0.0 else 0.0
                    for d in range(kept.size):
                        save[slot[s], h, i, d] = kept[d] * inv


def prefix_errors(probs, v, out, keys, cuts, extra_keys=None, extra_cuts=None, saves=()):
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
    extra_keys, extra_cuts : numpy.ndarray, optional
        int32 (S, T, E) and (S, T): mask s also holds the first ``extra_cuts[s, i]``
        of ``extra_keys[s, i]`` (keys beyond its prefix, the same for every head).
    saves : sequence of int
        Masks whose renormalised outputs to return.

    Returns
    -------
    recall : numpy.ndarray
        (S, H): the probability mass each mask keeps, summed over rows.
    err2 : numpy.ndarray
        (S, H): ``||O_mask - O||_F^2`` (a row without keys outputs zeros).
    saved : numpy.ndarray
        (len(saves), H, T, D): their outputs.

    Raises
    ------
    ValueError
        If the shapes disagree or a cut is outside its keys.
    """
    heads, t, _ = probs.shape
    sets = cuts.shape[0]
    if extra_keys is None:
        extra_keys, extra_cuts = np.zeros((sets, t, 0), np.int32), np.zeros((sets, t), np.int32)
    if (keys.shape[0] not in (1, heads) or cuts.shape[1] not in (1, heads) or keys.shape[1] != t
            or cuts.shape[2] != t or extra_keys.shape[:2] != (sets, t) or extra_cuts.shape != (sets, t)):
        raise ValueError(f"keys {keys.shape}, cuts {cuts.shape}, extra keys {extra_keys.shape} and extra cuts "
                         f"{extra_cuts.shape} do not fit probabilities {probs.shape}")
    for name, n, most in (("cuts", cuts, keys.shape[2]), ("extra cuts", extra_cuts, extra_keys.shape[2])):
        if n.size and (n.min() < 0 or n.max() > most):
            raise ValueError(f"{name} must lie in 0..{most}")
    slot = np.full(sets, -1, np.int64)
    slot[list(saves)] = np.arange(len(saves))
    recall = np.zeros((sets, heads))
    err2 = np.zeros((sets, heads))
    saved = np.zeros((len(saves), *out.shape))
    order = np.argsort(cuts, axis=0, kind="stable")
    _prefix_errors(probs, v, out, keys, cuts, order, extra_keys, extra_cuts, recall, err2, saved, slot)
    return recall, err2, saved


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
    order = np.argsort(sizes)
    found = np.empty(sizes.size, np.int64)
    above = np.empty(sizes.size, np.int64)
    for h in range(heads):
        lo, hi = (1 << 16) - 1, 0
        for i in range(t):
            for j in range(i + 1):
                b = bits[h, i, j] >> 48
                hist[b] += 1
                lo, hi = min(lo, b), max(hi, b)
        n, total, b = 0, 0, hi  # one pass down the buckets finds every size's, smallest size first
        while n < sizes.size:
            if sizes[order[n]] == 0:
                found[order[n]], above[order[n]] = -1, 0
                n += 1
            elif total + hist[b] >= sizes[order[n]]:
                found[order[n]], above[order[n]] = b, total
                n += 1
            else:
                total += hist[b]
                b -= 1
        hist[lo: hi + 1] = 0
        for s in range(sizes.size):
            if found[s] < 0:
                counts[s, h, :] = 0
                continue
            m = 0
            for i in range(t):
                for j in range(i + 1):
                    if bits[h, i, j] >> 48 == found[s]:
                        bucket[m] = bits[h, i, j]
                        m += 1
            ranked = np.sort(bucket[:m])
            need = sizes[s] - above[s]  # the bucket's highest values taken
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
        int32 (H, T, T): per head and row, the keys from the most probable (the
        non-causal ones, of probability 0, among the last).
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
    return np.argsort(-probs, axis=-1).astype(np.int32), cuts
