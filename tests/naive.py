"""Slow, obviously correct references: a line-by-line Python transliteration of
the Rust module, with Python sets for the BTreeSet, Python ints with explicit
wrap/panic checks for usize and i32, and NumPy float32 scalars for every f32
operation, with the target's NaN rules (``target.nan``) applied at every f32
operation that can return a NaN. ``expf`` is taken from mcsa; it is verified on
its own against the exhaustive chunk hashes."""

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


def _bits(x):
    return int(np.float32(x).view(np.uint32))


def _is_nan(bits):
    return bits & 0x7FFF_FFFF > 0x7F80_0000


def op(kind, a, b, rules):
    """``a kind b`` ('+', '-', '*') on two f32 with the NaN the target returns."""
    with np.errstate(all="ignore"):
        r = {"+": a + b, "-": a - b, "*": a * b}[kind]
    if not np.isnan(r):
        return r
    x, y = _bits(a), _bits(b)
    if not rules.propagate or not (_is_nan(x) or _is_nan(y)):
        chosen = rules.default_nan  # an invalid operation, or payloads not propagated
    else:
        if kind == "-" and rules.sub_negates:
            y ^= 0x8000_0000  # a - b computed as a + (-b)
        if _is_nan(x) and _is_nan(y):
            x_signalling, y_signalling = not x & 0x0040_0000, not y & 0x0040_0000
            if rules.snan_first and x_signalling != y_signalling:
                take_second = y_signalling
            else:
                take_second = {"+": rules.add_second, "-": rules.sub_second, "*": rules.mul_second}[kind]
        else:
            take_second = _is_nan(y)
        chosen = y if take_second else x
        if rules.quiet:
            chosen |= 0x0040_0000
        if kind in "+-" and rules.add_clears_sign:
            chosen &= 0x7FFF_FFFF
    return np.uint32(chosen).view(np.float32)


def calculate_density(config, gate, target):
    with np.errstate(all="ignore"):
        s = config.lambda_based_density
        if isinstance(s, Linear):
            x = (F32(min(gate.lambda_, 300)) - F32(30.0)) / F32(270.0)
            x = F32(0.0) if x < 0 else F32(1.0) if x > 1 else x
            rules = target.nan
            return op("+", s.min_density, op("*", x, op("-", s.max_density, s.min_density, rules), rules), rules)
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
    limit = ((1 << (target.usize_bits - 1)) - 1) // 4  # isize::MAX bytes of (u16, u16)
    while True:  # RawVec: with_capacity(cap), then doubling (at least 4) while pushing n pairs
        if cap > limit:
            raise TargetPanic("capacity overflow")
        if cap >= n:
            break
        cap = max(cap * 2, cap + 1, 4)
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


def _index(key, dim, d, target):
    """``key as usize * dim + d`` on the target's usize."""
    index = _usize(target, key * dim, "multiply")
    return _usize(target, index + d, "add")


def _read(array, index):
    if index >= len(array):
        raise TargetPanic(f"index out of bounds: the len is {len(array)} but the index is {index}")
    return array[index]


def sparse_attention(q, k, v, positions, dim, scale, target):
    """Output list of float32, or raises TargetPanic, as Rust's sparse_attention;
    q, k, v of any lengths."""
    if dim == 0:
        raise TargetPanic("attempt to divide by zero")
    q, k, v = (list(map(int, a)) for a in (q, k, v))
    rules = target.nan
    seq_len = len(q) // dim
    if seq_len * dim * 4 > target.isize_max or seq_len * 3 * target.usize_bits // 8 > target.isize_max:
        raise TargetPanic("capacity overflow")
    out = [F32(0.0)] * (seq_len * dim)
    by_query = [[] for _ in range(seq_len)]
    for query, key in positions:
        if query >= seq_len:
            raise TargetPanic(f"index out of bounds: the len is {seq_len} but the index is {query}")
        by_query[query].append(key)
    for query in range(seq_len):
        keys = by_query[query]
        if not keys:
            continue
        scores = []
        for key in keys:
            score = 0
            for d in range(dim):
                score += _read(q, query * dim + d) * _read(k, _index(key, dim, d, target))
                if not -(1 << 31) <= score < 1 << 31:
                    if target.panics_on_overflow:
                        raise TargetPanic("attempt to add with overflow")
                    score = (score + (1 << 31)) % (1 << 32) - (1 << 31)
            scores.append(op("*", F32(score), scale, rules))
        top = F32(-np.inf)
        for s in scores:
            top = _f32_max(top, s)
        total = F32(0.0)
        for i, s in enumerate(scores):
            x = op("-", s, top, rules)
            scores[i] = op("+", x, x, rules) if np.isnan(x) else expf(np.array([x], np.float32), target.expf)[0]
            total = op("+", total, scores[i], rules)
        if total > 0:
            inv = F32(1.0) / total
            scores = [op("*", s, inv, rules) for s in scores]
        for d in range(dim):
            acc = F32(0.0)
            for i, key in enumerate(keys):
                acc = op("+", acc, op("*", scores[i], F32(_read(v, _index(key, dim, d, target))), rules), rules)
            out[query * dim + d] = acc
    return np.array(out, np.float32)
