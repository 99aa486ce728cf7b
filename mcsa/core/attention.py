"""``MincutSparseAttention``: masks from gate packets and int8 sparse attention."""

from __future__ import annotations

import numba
import numpy as np

from ._jit import claim, jit, numba_threads, thread_count
from .checks import check_int
from .density import density_kernel, f32_max, schedule_args
from .expf import expf_kernel
from .mask import (
    DEFAULT_POSITION_LIMIT,
    MaskPlan,
    MaskStats,
    SparseMask,
    U16_END,
    causal_positions,
    check_limit,
    distinct_positions,
    full_count,
    ordered_count,
    ordered_positions,
    partition_layout,
    position_limit_arg,
    reduced_seq_len,
    sparse_density,
    takes_sparse_path,
)
from .packets import GatePacket, SparsityConfig
from .rustvec import check_layout
from .target import Target, TargetPanic, f32_of, int_as_f32, resolve_target

OK, INDEX_OUT_OF_BOUNDS, ADD_OVERFLOW, MUL_OVERFLOW = 0, 1, 2, 3
_I32_MIN, _I32_MAX = -(1 << 31), (1 << 31) - 1
_U32_END = 1 << 32
_SAFE_DIM = 131072
"""Below this ``dim`` an i32 sum of i8 * i8 products cannot overflow."""
_NO_KEYS = np.zeros(0, np.uint16)
_NO_COUNTS = np.zeros(0, np.int64)
_LINE = 64
"""Bytes in a cache line (x86-64 and the AVX-512 vector)."""
_RUNS_PER_THREAD = 32
"""Runs of rows per thread, claimed in turn: on a machine whose cores run at
unequal speeds (a shared host measured one core 1.35x slower than the other for
seconds at a time) a fast core takes more of them; a one-per-thread split waits."""
_PARALLEL_MIN = 1 << 15
"""Masks with fewer positions run on one thread: a parallel launch costs more than it saves."""


def _panic(code: int, a: int, b: int) -> TargetPanic:
    if code == INDEX_OUT_OF_BOUNDS:
        return TargetPanic(f"index out of bounds: the len is {a} but the index is {b}")
    return TargetPanic(f"attempt to {'add' if code == ADD_OVERFLOW else 'multiply'} with overflow")


def _row_chunks(offsets: np.ndarray, chunks: int) -> np.ndarray:
    """Bounds of up to ``chunks`` runs of whole query rows holding about as many
    positions each: rows ``bounds[c]..bounds[c + 1]``."""
    bounds = np.searchsorted(offsets, np.arange(chunks + 1) * (offsets[-1] / chunks))
    bounds[0], bounds[-1] = 0, offsets.size - 1
    return np.unique(bounds)


@jit
def _score_checked(q, k, qbase, key, dim, wrap32, panic_mode):
    """One score with every Rust check in its order, for rows the fast path
    cannot take: ``key * dim`` and ``+ d`` on a 32-bit usize, the bounds check
    of ``k``, and the checked i32 ``score +=``. Returns (code, a, b, score, base)."""
    score = 0
    base = np.int64(key) * dim
    if wrap32 and base >= _U32_END:
        if panic_mode:
            return MUL_OVERFLOW, 0, 0, 0, 0
        base &= _U32_END - 1
    for d in range(dim):
        index = base + d
        if wrap32 and index >= _U32_END:
            if panic_mode:
                return ADD_OVERFLOW, 0, 0, 0, 0
            index &= _U32_END - 1
        if index >= k.size:
            return INDEX_OUT_OF_BOUNDS, k.size, index, 0, 0
        score += np.int64(q[qbase + d]) * np.int64(k[index])
        if score < _I32_MIN or score > _I32_MAX:
            if panic_mode:
                return ADD_OVERFLOW, 0, 0, 0, 0
            score = np.int64(np.int32(score))
    return OK, 0, 0, score, base


@jit
def _accumulate_checked(v, bases, scores, n, dim, wrap32, orow):
    """The weighted sum in Rust's order (``d`` outer, keys inner) with the bounds
    check of every ``v`` read and the 32-bit wrap of ``base + d``, for rows the
    fast path cannot take. Returns (code, len, index)."""
    for d in range(dim):
        total = np.float32(0.0)
        for t in range(n):
            index = bases[t] + d
            if wrap32 and index >= _U32_END:
                index -= _U32_END  # a debug build panicked on this add in the k loop
            if index >= v.size:
                return INDEX_OUT_OF_BOUNDS, v.size, index
            total += scores[t] * np.float32(v[index])
        orow[d] = total
    return OK, 0, 0


@jit
def _rows(q, k, v, offsets, grouped, rows_from, rows_to, dim, scale, flavour, wrap32, panic_mode, out):
    """``sparse_attention``'s loop body for queries ``rows_from..rows_to``, each
    in Rust's order; writes their rows of ``out`` and returns the first panic of
    the run (code, a, b). ``k`` and ``v`` may be of any length: every read past
    them is Rust's panic.

    The i32 score is summed wrapping, which is Rust's release sum in any order
    (LLVM vectorises it); a debug build's sum cannot overflow below
    ``_SAFE_DIM``, else it takes the checked path. Each output element's f32
    sum runs over the keys in order, with ``d`` inner so LLVM vectorises across
    ``d`` without reordering any sum."""
    widest = 0
    for i in range(rows_from, rows_to):
        widest = max(widest, offsets[i + 1] - offsets[i])
    scores = np.empty(widest, np.float32)
    bases = np.empty(widest, np.int64)
    unchecked_sum = not (panic_mode and dim >= _SAFE_DIM)
    for query in range(rows_from, rows_to):
        first, n = offsets[query], offsets[query + 1] - offsets[query]
        if n == 0:
            continue
        qbase = query * dim
        qrow = q[qbase : qbase + dim]
        v_inside = True
        for t in range(n):
            key = np.int64(grouped[first + t, 1])
            base = key * dim
            wraps = wrap32 and base + dim - 1 >= _U32_END
            if unchecked_sum and not wraps and base + dim <= k.size:
                krow = k[base : base + dim]
                score = np.int32(0)
                for d in range(dim):
                    score = np.int32(score + np.int32(qrow[d]) * np.int32(krow[d]))
            else:
                code, a, b, checked, base = _score_checked(q, k, qbase, key, dim, wrap32, panic_mode)
                if code != OK:
                    return code, a, b
                score = np.int32(checked)
                wraps = wrap32 and base + dim - 1 >= _U32_END
            bases[t] = base
            v_inside = v_inside and not wraps and base + dim <= v.size
            scores[t] = np.float32(score) * scale
        top = np.float32(-np.inf)
        for t in range(n):
            top = f32_max(top, scores[t])
        total = np.float32(0.0)
        for t in range(n):
            scores[t] = expf_kernel(scores[t] - top, flavour)
            total += scores[t]
        if total > np.float32(0.0):
            inv = np.float32(1.0) / total
            for t in range(n):
                scores[t] *= inv
        orow = out[qbase : qbase + dim]
        if not v_inside:
            code, a, b = _accumulate_checked(v, bases, scores, n, dim, wrap32, orow)
            if code != OK:
                return code, a, b
            continue
        # d inner, keys outer: each output element still sums over keys in order
        # (four keys a pass, added one after the other, so that the row is loaded
        # and stored once per four), and the row slices let LLVM vectorise across d.
        t = 0
        while t + 4 <= n:
            w0, w1, w2, w3 = scores[t], scores[t + 1], scores[t + 2], scores[t + 3]
            v0, v1 = v[bases[t] : bases[t] + dim], v[bases[t + 1] : bases[t + 1] + dim]
            v2, v3 = v[bases[t + 2] : bases[t + 2] + dim], v[bases[t + 3] : bases[t + 3] + dim]
            for d in range(dim):
                orow[d] = (((orow[d] + w0 * np.float32(v0[d])) + w1 * np.float32(v1[d]))
                           + w2 * np.float32(v2[d])) + w3 * np.float32(v3[d])
            t += 4
        for t in range(t, n):
            weight = scores[t]
            vrow = v[bases[t] : bases[t] + dim]
            for d in range(dim):
                orow[d] += weight * np.float32(vrow[d])
    return OK, 0, 0


@jit(parallel=True)
def _rows_parallel(q, k, v, offsets, grouped, chunks, workers, dim, scale, flavour, wrap32, panic_mode, out, panics):
    """:func:`_rows` over the runs of rows ``chunks[c]..chunks[c + 1]`` on ``workers``
    threads, each claiming the next run not yet taken until none is left;
    ``panics[c]`` gets run ``c``'s first panic (code, a, b)."""
    taken = np.zeros(1, np.int64)
    for _ in numba.prange(workers):
        c = claim(taken)
        while c < chunks.size - 1:
            code, a, b = _rows(q, k, v, offsets, grouped, chunks[c], chunks[c + 1], dim, scale, flavour, wrap32,
                               panic_mode, out)
            panics[c, 0], panics[c, 1], panics[c, 2] = code, a, b
            c = claim(taken)


def _aligned_zeros(count: int) -> np.ndarray:
    """``count`` float32 zeros starting on a 64-byte line: numpy aligns to 16
    bytes, and output rows that start 16 bytes into a line split a vector store
    in two on every row (measured: 1.5x the time of the whole kernel)."""
    raw = np.zeros(count + _LINE // 4, np.float32)
    skip = -raw.ctypes.data % _LINE // 4
    return raw[skip : skip + count]


def _qkv(name: str, array, dim: int) -> np.ndarray:
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be an int8 numpy array, got {type(array).__name__}")
    if array.dtype != np.int8:
        raise TypeError(f"{name} must be an int8 array, got dtype {array.dtype}")
    if array.ndim == 2 and array.shape[1] != dim and dim != 0:
        raise ValueError(f"{name} has shape {array.shape}, whose rows are not dim={dim} long")
    if array.ndim > 2:
        raise ValueError(f"{name} must be 1-D or 2-D (seq_len, dim), got shape {array.shape}")
    return np.ascontiguousarray(array).reshape(-1)


class MincutSparseAttention:
    """The reference's ``MincutSparseAttention`` on a simulated build.

    Parameters
    ----------
    config : SparsityConfig
        The sparsity configuration (Rust defaults if omitted).
    target : Target or str, optional
        The build to simulate (preset name or :class:`Target`); default
        ``x86_64-release``.
    position_limit : int
        Host-memory guard: the largest mask this simulator will materialise.
    threads : int, optional
        Threads :meth:`sparse_attention` runs query rows on (the bits do not depend
        on it). ``None``, the default: Numba's thread count at the call, which is
        every core unless ``NUMBA_NUM_THREADS`` or ``numba.set_num_threads`` says
        otherwise. At most ``NUMBA_NUM_THREADS``.

    Raises
    ------
    TypeError
        If ``config`` is not a :class:`SparsityConfig`, or ``threads`` not an integer.
    ValueError
        If the target name is unknown, ``position_limit`` is negative, or
        ``threads`` is not in ``1..=NUMBA_NUM_THREADS``.
    """

    def __init__(
        self,
        config: SparsityConfig | None = None,
        target: Target | str | None = None,
        position_limit: int = DEFAULT_POSITION_LIMIT,
        threads: int | None = None,
    ):
        config = SparsityConfig() if config is None else config
        if not isinstance(config, SparsityConfig):
            raise TypeError(f"config must be a SparsityConfig, got {type(config).__name__}")
        self.config = config
        self.target = resolve_target(target)
        self.position_limit = position_limit_arg(position_limit)
        self.threads = None if threads is None else check_int(
            threads, "threads", 1, numba.config.NUMBA_NUM_THREADS, "NUMBA_NUM_THREADS")
        self._schedule = schedule_args(config, self.target)

    def __repr__(self) -> str:
        return f"MincutSparseAttention({self.config!r}, target={str(self.target)!r})"

    def calculate_density(self, gate: GatePacket) -> np.float32:
        """``calculate_density(gate)``: the schedule's f32 target density.

        Raises
        ------
        TypeError
            If ``gate`` is not a :class:`GatePacket`.
        """
        _check_gate(gate)
        return np.float32(
            density_kernel(*self._schedule, gate.lambda_, gate.boundary_concentration_q15, gate.partition_count)
        )

    def should_use_sparse(self, gate: GatePacket, seq_len: int) -> bool:
        """The reference's sparse-path test: ``seq_len >= 16``, two or more
        partitions and ``lambda >= 30``.

        Raises
        ------
        TypeError, ValueError
            For a bad ``gate`` or ``seq_len``.
        """
        _check_gate(gate)
        seq_len = self.target.check_usize(seq_len, "seq_len")
        return takes_sparse_path(seq_len, gate.partition_count, gate.lambda_)

    def plan_mask(self, gate: GatePacket, seq_len: int) -> MaskPlan:
        """Boundaries, tokens and path of ``build_mask(gate, seq_len)``, without positions.

        Raises
        ------
        TypeError, ValueError
            For a bad ``gate`` or ``seq_len``.
        TargetPanic
            ``attempt to add with overflow`` on a debug build when a boundary
            token is within 3 of 65535 (the u16 ``boundary_token + offset``).
        """
        _check_gate(gate)
        seq_len = self.target.check_usize(seq_len, "seq_len")
        if not takes_sparse_path(seq_len, gate.partition_count, gate.lambda_):
            return MaskPlan(seq_len, False, _NO_KEYS, _NO_KEYS, False, False, True)
        parts = max(gate.partition_count, 1)
        bounds, tokens, top = partition_layout(parts, seq_len // parts, self.config.max_cross_partition_edges)
        cross = self.config.boundary_cross_attention and tokens.size > 0
        token_wraps = cross and top + 3 >= U16_END
        if token_wraps and self.target.panics_on_overflow:
            raise TargetPanic("attempt to add with overflow")
        ordered = seq_len <= U16_END and not token_wraps
        return MaskPlan(seq_len, True, bounds, tokens, self.config.intra_partition_attention, cross, ordered)

    def _positions(self, plan: MaskPlan, fill_limit: int):
        """Count, and when under ``fill_limit`` build, the sparse positions: in
        order where no index wraps (counted in closed form), else row by row from
        unions of intervals (counted by a pass that writes nothing)."""
        if plan.ordered:
            args = (plan.seq_len, plan.boundaries, plan.tokens, plan.intra, plan.cross)
            count, kernel, extra = ordered_count(*args), ordered_positions, (_NO_COUNTS,)
        else:
            args = (reduced_seq_len(plan.seq_len), plan.boundaries, plan.tokens, plan.intra, plan.cross)
            count, kernel, extra = distinct_positions(*args, np.zeros((0, 2), np.uint16), False), distinct_positions, ()
        if count > fill_limit:
            return count, None
        out = np.empty((count, 2), np.uint16)
        kernel(*args, out, True, *extra)
        return count, out

    def mask_stats(self, gate: GatePacket, seq_len: int) -> MaskStats:
        """What :meth:`build_mask` would give, without materialising positions:
        for any ``seq_len`` the target accepts, wrapping indices included, in time
        linear in ``min(seq_len, 65536)`` plus the boundary tokens and memory that
        does not grow with the number of positions.

        Raises
        ------
        TypeError, ValueError
            For a bad ``gate`` or ``seq_len``.
        TargetPanic
            Where ``build_mask`` panics on the target.
        """
        plan = self.plan_mask(gate, seq_len)
        if not plan.sparse:
            count = full_count(plan.seq_len, self.target)
            return MaskStats(False, count, np.float32(1.0), np.zeros(1, np.uint16), _NO_KEYS)
        count, _ = self._positions(plan, fill_limit=-1)
        density = sparse_density(count, plan.seq_len, self.target)
        return MaskStats(True, count, density, plan.boundaries, plan.tokens)

    def build_mask(self, gate: GatePacket, seq_len: int) -> SparseMask:
        """``build_mask(gate, seq_len)``: the mask exactly as the build holds it.

        Raises
        ------
        TypeError
            If ``gate`` is not a GatePacket or ``seq_len`` not an integer.
        ValueError
            If ``seq_len`` is negative or above the target's ``usize::MAX``.
        TargetPanic
            ``attempt to add with overflow`` (debug, a boundary token within 3 of
            65535) or the panics of ``SparseMask::full``.
        MaskTooLarge
            If the mask would exceed ``position_limit``.
        """
        return self.mask_from_plan(self.plan_mask(gate, seq_len))

    def mask_from_plan(self, plan: MaskPlan) -> SparseMask:
        """The mask of a :meth:`plan_mask` result (what ``build_mask`` returns).

        Raises
        ------
        TargetPanic
            The panics of ``SparseMask::full`` on the full path.
        MaskTooLarge
            If the mask would exceed ``position_limit``.
        """
        if not plan.sparse:
            return SparseMask.full(plan.seq_len, self.target, self.position_limit)
        count, positions = self._positions(plan, fill_limit=self.position_limit)
        check_limit(count, self.position_limit, f"build_mask(seq_len={plan.seq_len})")
        density = sparse_density(count, plan.seq_len, self.target)
        return SparseMask._built(positions, density, plan.boundaries, plan.tokens, self.target, by_query=True)

    def estimated_flops_ratio(self, mask: SparseMask | MaskStats, seq_len: int) -> np.float32:
        """``num_positions as f32 / (seq_len * (seq_len + 1) / 2) as f32``, 1.0 when that is 0.

        Raises
        ------
        TypeError
            If ``mask`` is neither a SparseMask nor a MaskStats, or ``seq_len`` not an integer.
        ValueError
            If ``seq_len`` is not a usize of the target.
        TargetPanic
            On ``usize`` overflow in a debug build.
        """
        if not isinstance(mask, (SparseMask, MaskStats)):
            raise TypeError(f"mask must be a SparseMask or MaskStats, got {type(mask).__name__}")
        full = causal_positions(self.target.check_usize(seq_len, "seq_len"), self.target)
        if full == 0:
            return np.float32(1.0)
        return int_as_f32(mask.num_positions) / int_as_f32(full)

    def sparse_attention(self, q, k, v, mask: SparseMask, dim: int, scale) -> np.ndarray:
        """``sparse_attention(q, k, v, mask, dim, scale)``: int8 scores with i32
        accumulation, f32 softmax with the target's ``expf``, f32 weighted sum.
        Query rows run on ``threads`` threads, each in Rust's order, so the bits
        and the panic (Rust's first, in query order) are the one-thread ones.

        Lengths are Rust's: ``seq_len = q.len() / dim`` (a partial last row of q is
        ignored), and k and v may be of any length; a read past either panics as
        Rust's bounds check does, in Rust's order of reads.

        Parameters
        ----------
        q, k, v : numpy.ndarray of int8
            Flat, or shaped (rows, dim).
        mask : SparseMask
        dim : int
        scale : float
            Rounded to f32 as a Rust literal would be; pass ``np.float32`` to be explicit.

        Returns
        -------
        numpy.ndarray
            float32, ``(q.size // dim) * dim`` elements (a view of a buffer that
            starts on a 64-byte line).

        Raises
        ------
        TypeError
            If q, k or v is not an int8 array, mask is not a SparseMask, or scale
            not a real number.
        ValueError
            If q, k or v has more than 2 dimensions or rows other than ``dim`` long,
            or ``dim`` is not a usize of the target.
        TargetPanic
            ``attempt to divide by zero`` (dim 0), ``capacity overflow``, ``index out
            of bounds: the len is L but the index is I`` (the mask reaches past q's
            rows, or a read past k or v), ``attempt to multiply/add with overflow``
            (debug: the 32-bit index, the i32 score sum).
        """
        dim = self.target.check_usize(dim, "dim")
        q, k, v = (_qkv(name, a, dim) for name, a in (("q", q), ("k", k), ("v", v)))
        if not isinstance(mask, SparseMask):
            raise TypeError(f"mask must be a SparseMask, got {type(mask).__name__}")
        scale = f32_of(scale, "scale")
        if dim == 0:
            raise TargetPanic("attempt to divide by zero")
        seq_len = q.size // dim
        check_layout(seq_len * dim, 4, self.target)  # output: vec![0.0f32; seq_len * dim]
        check_layout(seq_len, 3 * self.target.usize_bits // 8, self.target)  # vec![Vec::new(); seq_len]
        bad, offsets, grouped = mask.by_query(seq_len)
        if bad >= 0:
            raise _panic(INDEX_OUT_OF_BOUNDS, seq_len, bad)
        out = _aligned_zeros(seq_len * dim)
        if seq_len == 0:  # no rows (dim may be past q's length, even 2^63 or more)
            return out
        build = (dim, scale, self.target.expf.code, self.target.usize_bits == 32, self.target.panics_on_overflow)
        threads = 1 if offsets[-1] < _PARALLEL_MIN else thread_count() if self.threads is None else self.threads
        if threads == 1:
            code, a, b = _rows(q, k, v, offsets, grouped, 0, seq_len, *build, out)
        else:
            chunks = _row_chunks(offsets, threads * _RUNS_PER_THREAD)
            panics = np.zeros((chunks.size - 1, 3), np.int64)
            with numba_threads(threads):
                _rows_parallel(q, k, v, offsets, grouped, chunks, threads, *build, out, panics)
            first = np.flatnonzero(panics[:, 0])  # the runs are in query order: Rust's first panic
            code, a, b = panics[first[0]] if first.size else (OK, 0, 0)
        if code != OK:
            raise _panic(code, a, b)
        nan = np.isnan(out)
        if nan.any():
            # every NaN of a row comes from the scale's NaN or from one invalid
            # operation (0 * inf, inf - inf), so one pattern is right for all of them;
            # each output element's last operation is an add (sum += weight * v)
            rules = self.target.nan
            bits = (rules.passed_on(int(scale.view(np.uint32)), by_add=True) if np.isnan(scale)
                    else rules.default_nan)
            out[nan] = np.uint32(bits).view(np.float32)
        return out


def _check_gate(gate) -> None:
    if not isinstance(gate, GatePacket):
        raise TypeError(f"gate must be a GatePacket, got {type(gate).__name__}")
