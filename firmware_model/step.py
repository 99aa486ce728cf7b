"""One inference step against a heap budget: fit verdict, capacity planner,
representation advice and operation counts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import mcsa
from mcsa.mask import DEFAULT_POSITION_LIMIT

from .allocators import Allocator
from .heap import Crossing, Heap, _build_mask, _sparse_attention, query_runs
from .profiles import Profile


@dataclass(frozen=True)
class CallFigures:
    """Bytes (as the allocator counts them) around one call of the step."""

    peak_bytes: int
    live_after: int


@dataclass(frozen=True)
class StepReport:
    """A step (build_mask, then sparse_attention) on a profile's heap.

    ``peak_bytes`` counts everything live during the step: q, k, v when they are
    on the heap, the mask while attention runs, and the output.
    """

    profile: str
    build: str
    seq_len: int
    dim: int
    allocator: str
    budget: int
    inputs_bytes: int
    build_mask: CallFigures
    sparse_attention: CallFigures
    peak_bytes: int
    num_positions: int
    crossing: Crossing | None

    @property
    def fits(self) -> bool:
        return self.peak_bytes <= self.budget

    @property
    def headroom(self) -> int:
        """Budget minus peak (negative when it does not fit)."""
        return self.budget - self.peak_bytes

    def verdict(self) -> str:
        """One line: fits with headroom, or TFLM-style requested / available / missing."""
        if self.fits:
            return (f"fits: peak {self.peak_bytes:,} B of {self.budget:,} B ({self.allocator}), "
                    f"headroom {self.headroom:,} B")
        c = self.crossing
        return (f"does not fit: requested {self.peak_bytes:,} B, available {self.budget:,} B, "
                f"missing {-self.headroom:,} B; the budget is crossed in {c.call} by {c.allocation} "
                f"({c.requested:,} B requested with {c.live_before:,} B live)")


def fit_step(
    profile: Profile,
    config: mcsa.SparsityConfig,
    gate: mcsa.GatePacket,
    seq_len: int,
    dim: int,
    *,
    build: str = "release",
    heap_budget: int | None = None,
    allocator: Allocator | None = None,
    inputs_on_heap: bool = True,
    position_limit: int = DEFAULT_POSITION_LIMIT,
) -> StepReport:
    """Replay one step's allocations on ``profile``: q, k, v (``seq_len * dim``
    bytes each, when on the heap), ``build_mask(gate, seq_len)``, then
    ``sparse_attention`` with the mask live.

    Raises
    ------
    mcsa.TargetPanic
        If the build panics in ``build_mask`` (the step never reaches attention).
    ValueError
        For a bad ``seq_len``, ``dim`` or budget.
    """
    target = profile.target(build)
    sim = mcsa.MincutSparseAttention(config, target, position_limit)
    plan = sim.plan_mask(gate, seq_len)
    dim = target.check_usize(dim, "dim")
    budget = profile.heap_budget if heap_budget is None else heap_budget
    if budget < 0:
        raise ValueError(f"heap budget must be non-negative, got {budget}")
    heap = Heap(target.usize_bits, allocator or profile.allocator, budget)
    inputs = 3 * seq_len * dim if inputs_on_heap else 0
    heap.begin("the inputs")
    for name in ("q", "k", "v"):
        heap.alloc(seq_len * dim if inputs_on_heap else 0, f"{name} ({seq_len} x {dim} i8)")
    heap.begin("build_mask")
    count = _build_mask(heap, plan, position_limit)
    mask = CallFigures(heap.call_peak, heap.live_bytes)
    heap.begin("sparse_attention")
    _sparse_attention(heap, *query_runs(sim, plan), seq_len, dim)
    attention = CallFigures(heap.call_peak, heap.live_bytes)
    return StepReport(profile.name, build, seq_len, dim, heap.allocator.name, budget, inputs,
                      mask, attention, heap.peak_bytes, count, heap.crossing)


def largest_fitting_seq_len(profile: Profile, config, gate, dim: int, hi: int = 65536, **kwargs) -> int | None:
    """The largest ``seq_len`` in 1..=hi whose step fits, by binary search on the
    exact model (which grows with ``seq_len`` for a fixed gate); None if not even 1 fits."""
    def fits(n):
        try:
            return fit_step(profile, config, gate, n, dim, **kwargs).fits
        except mcsa.TargetPanic:
            return False

    if not fits(1):
        return None
    lo = 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def capacity_table(profile: Profile, config, dim: int, partitions, lambda_: int = 200,
                   concentration_q15: int = 0, **kwargs) -> list[dict]:
    """For each partition count, the largest ``seq_len`` whose whole step fits the
    budget, with that step's peak. ``kwargs`` go to :func:`fit_step`."""
    rows = []
    for p in partitions:
        gate = mcsa.GatePacket(lambda_=lambda_, partition_count=p, boundary_concentration_q15=concentration_q15)
        n = largest_fitting_seq_len(profile, config, gate, dim, **kwargs)
        report = fit_step(profile, config, gate, n, dim, **kwargs) if n else None
        rows.append({
            "partitions": p,
            "max_seq_len": n,
            "num_positions": report.num_positions if report else None,
            "peak_bytes": report.peak_bytes if report else None,
            "budget": report.budget if report else (kwargs.get("heap_budget") or profile.heap_budget),
        })
    return rows


def representations(stats: mcsa.MaskStats, seq_len: int) -> dict[str, int]:
    """Bytes of the same mask held four ways (buffers only, no Vec headers).

    ``vec_pairs``: today's ``Vec<(u16, u16)>``; ``csr``: u16 key columns plus
    ``seq_len + 1`` u32 row offsets; ``intervals``: per row a u16 ``lo..=i``
    interval start and end plus a u16 count of leading boundary tokens, and the
    token list once (exact for masks whose indices do not wrap); ``bitmap``: one
    bit per causal pair.
    """
    n = stats.num_positions
    return {
        "vec_pairs": 4 * n,
        "csr": 2 * n + 4 * (seq_len + 1),
        "intervals": 6 * seq_len + 2 * stats.boundary_tokens.size,
        "bitmap": -(-seq_len * (seq_len + 1) // 2 // 8),
    }


def op_counts(runs: tuple[np.ndarray, np.ndarray], dim: int) -> dict[str, int]:
    """Operations of ``sparse_attention`` for a mask given as (query, key count) runs.

    Per position: ``dim`` i8 multiply-accumulates into i32, one i32-to-f32
    conversion and an f32 multiply by scale, one f32 max, one subtract, one exp,
    one add into the sum, one multiply by ``1 / sum``, and per output element
    one i8-to-f32 conversion, a multiply and an add; one divide per non-empty
    query. Bytes read: q rows once per query, k and v rows once per position.
    """
    queries, lengths = runs
    n = int(lengths.sum())
    q = int(np.unique(queries).size)
    return {
        "positions": n,
        "queries": q,
        "i8_macs": n * dim,
        "exp_calls": n,
        "f32_mul": 2 * n + n * dim,
        "f32_add": n + n * dim,
        "f32_sub": n,
        "f32_max": n,
        "f32_div": q,
        "int_to_f32": n + n * dim,
        "bytes_read": q * dim + 2 * n * dim + 4 * n,
    }
