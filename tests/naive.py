"""Slow, obviously correct references: a line-by-line Python transliteration of
the Rust module, with Python sets for the BTreeSet, Python ints with explicit
wrap/panic checks for usize and i32, and NumPy float32 scalars for every f32
operation. ``expf`` is taken from mcsa; it is verified on its own against the
exhaustive chunk hashes."""

import numpy as np

from mcsa import Adaptive, Linear, Threshold, TargetPanic, expf

F32 = np.float32


def _usize(target, value, op):
    if value > target.usize_max:
        if target.panics_on_overflow:
            raise TargetPanic(f"attempt to {op} with overflow")
        value &= target.usize_max
    return value


def _f32_of_int(n):
    # exact: Fraction-free round-to-nearest-even via Python's correctly rounded int/float
    # conversions would double-round above 2^53, so round by hand.
    if n == 0:
        return F32(0.0)
    e = n.bit_length() - 24
    if e <= 0:
        return F32(n)
    mant, rem, half = n >> e, n & ((1 << e) - 1), 1 << (e - 1)
    if rem > half or (rem == half and mant & 1):
        mant += 1
    return F32(mant * 2.0**e)


def calculate_density(config, gate):
    with np.errstate(all="ignore"):
        s = config.lambda_based_density
        if isinstance(s, Linear):
            x = (F32(min(gate.lambda_, 300)) - F32(30.0)) / F32(270.0)
            x = F32(0.0) if x < 0 else F32(1.0) if x > 1 else x
            return s.min_density + x * (s.max_density - s.min_density)
        if isinstance(s, Threshold):
            return F32(0.9) if gate.lambda_ >= s.dense_above_lambda else F32(0.1)
        if isinstance(s, Adaptive):
            base = F32(gate.lambda_) / F32(150.0)
            base = F32(0.0) if base < 0 else F32(1.0) if base > 1 else base
            base = base * F32(0.6) + F32(0.1)
            boundary = (F32(gate.boundary_concentration_q15) / F32(32768.0)) * F32(0.2)
            partition = max(F32(-0.05) * F32(gate.partition_count), F32(-0.2))
            total = base + boundary + partition
            return F32(0.1) if total < F32(0.1) else F32(0.9) if total > F32(0.9) else total
        return F32(0.5)


def full(seq_len, target):
    """(positions, density) of SparseMask::full, or a TargetPanic."""
    cap = _usize(target, seq_len * seq_len, "multiply")
    n = seq_len * (seq_len + 1) // 2
    target.vec_capacity_check(cap, n, 4)
    positions = [(i & 0xFFFF, j & 0xFFFF) for i in range(seq_len) for j in range(i + 1)]
    return positions, F32(1.0), [0], []


def build_mask(config, gate, seq_len, target):
    """(positions, density, boundaries, tokens) exactly as Rust's build_mask."""
    if not (seq_len >= 16 and gate.partition_count >= 2 and gate.lambda_ >= 30):
        return full(seq_len, target)
    parts = max(gate.partition_count, 1)
    size = seq_len // parts
    boundaries = [(i * size) & 0xFFFF for i in range(parts)]
    tokens = boundaries[: config.max_cross_partition_edges]
    pairs = set()
    if config.intra_partition_attention:
        for idx, start in enumerate(boundaries):
            end = boundaries[idx + 1] if idx + 1 < len(boundaries) else seq_len
            for i in range(start, end):
                for j in range(start, i + 1):
                    pairs.add((i & 0xFFFF, j & 0xFFFF))
    if config.boundary_cross_attention:
        for token in tokens:
            for prev in tokens:
                if prev <= token:
                    pairs.add((token, prev))
            for offset in range(4):
                pos = token + offset
                if pos > 0xFFFF:
                    if target.panics_on_overflow:
                        raise TargetPanic("attempt to add with overflow")
                    pos &= 0xFFFF
                if pos < seq_len:
                    for prev in tokens:
                        if prev <= pos:
                            pairs.add((pos, prev))
    positions = sorted(pairs)
    full_positions = min(seq_len * min(seq_len + 1, target.usize_max), target.usize_max) // 2
    density = _f32_of_int(len(positions)) / _f32_of_int(full_positions) if full_positions else F32(0.0)
    return positions, density, boundaries, tokens


def _f32_max(a, b):
    if np.isnan(a):
        return b
    if np.isnan(b):
        return a
    return a if a > b else b


def sparse_attention(q, k, v, positions, dim, scale, target):
    """Output list of float32, or raises TargetPanic, as Rust's sparse_attention."""
    if dim == 0:
        raise TargetPanic("attempt to divide by zero")
    q, k, v = (list(map(int, a)) for a in (q, k, v))
    seq_len = len(q) // dim
    out = [F32(0.0)] * (seq_len * dim)
    by_query = [[] for _ in range(seq_len)]
    for query, key in positions:
        if query >= seq_len:
            raise TargetPanic(f"index out of bounds: the len is {seq_len} but the index is {query}")
        by_query[query].append(key)
    with np.errstate(all="ignore"):
        for query in range(seq_len):
            keys = by_query[query]
            if not keys:
                continue
            scores = []
            for key in keys:
                score = 0
                for d in range(dim):
                    index = key * dim
                    if target.usize_bits == 32 and index > 0xFFFFFFFF:
                        if target.panics_on_overflow:
                            raise TargetPanic("attempt to multiply with overflow")
                        index &= 0xFFFFFFFF
                    index += d
                    if target.usize_bits == 32 and index > 0xFFFFFFFF:
                        if target.panics_on_overflow:
                            raise TargetPanic("attempt to add with overflow")
                        index &= 0xFFFFFFFF
                    if index >= len(k):
                        raise TargetPanic(f"index out of bounds: the len is {len(k)} but the index is {index}")
                    score += q[query * dim + d] * k[index]
                    if not -(1 << 31) <= score < 1 << 31:
                        if target.panics_on_overflow:
                            raise TargetPanic("attempt to add with overflow")
                        score = (score + (1 << 31)) % (1 << 32) - (1 << 31)
                scores.append(F32(score) * scale)
            top = F32(-np.inf)
            for s in scores:
                top = _f32_max(top, s)
            total = F32(0.0)
            for i, s in enumerate(scores):
                scores[i] = expf(np.array([s - top], np.float32), target.expf)[0]
                total = total + scores[i]
            if total > 0:
                inv = F32(1.0) / total
                scores = [s * inv for s in scores]
            for d in range(dim):
                acc = F32(0.0)
                for i, key in enumerate(keys):
                    acc = acc + scores[i] * F32(v[(key * dim + d) & target.usize_max])
                out[query * dim + d] = acc
    return np.array(out, np.float32)
