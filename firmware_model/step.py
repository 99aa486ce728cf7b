"""One inference step against a heap budget: fit verdict, capacity planner,
representation advice and operation counts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import mcsa
from mcsa.core.checks import check_int
from mcsa.core.mask import DEFAULT_POSITION_LIMIT
from mcsa.core.rustvec import check_layout

from .allocators import Allocator
from .heap import Crossing, Heap, _build_mask, _sparse_attention, query_runs
from .placement import Placement, simulator
from .placement.events import Trace, TraceTooLarge, inputs_trace, step_trace
from .profiles import Profile, heap_budget as heap_budget_of

TRACE_LIMIT = 4_000_000
"""Most allocator calls a step's B-tree may make for the step to be placed block by
block (about 100 MB of trace); a bigger step, which only a heap of many megabytes
could hold, is judged on its bytes alone."""


@dataclass(frozen=True)
class CallFigures:
    """Bytes (as the allocator counts them) around one call of the step."""

    peak_bytes: int
    live_after: int


@dataclass(frozen=True)
class StepReport:
    """A step (build_mask, then sparse_attention) on a profile's heap.

    ``peak_bytes`` is the byte-only figure ("requested"): everything live during
    the step, each block as the allocator model counts it, q, k, v when they are
    on the heap, the mask while attention runs, and the output. ``placement`` is
    where the allocator's own algorithm put every block; when there is one, it
    decides the verdict. ``panic`` is set (and the figures None) when the build
    panics.
    """

    profile: str
    build: str
    seq_len: int
    dim: int
    allocator: str
    budget: int
    inputs_bytes: int
    build_mask: CallFigures | None
    sparse_attention: CallFigures | None
    peak_bytes: int | None
    num_positions: int | None
    crossing: Crossing | None
    panic: str | None = None
    placement: Placement | None = None
    trace: Trace | None = None

    @property
    def fits(self) -> bool:
        if self.panic is not None:
            return False
        if self.placement is not None:
            return self.placement.fits
        return self.peak_bytes <= self.budget

    @property
    def headroom(self) -> int | None:
        """Budget minus peak (negative when the bytes alone do not fit)."""
        if self.panic is not None:
            return None
        peak = self.placement.peak_used if self.placement is not None and self.fits else self.peak_bytes
        return self.budget - peak

    @property
    def failed_event(self) -> str | None:
        """The allocator call that fails, described, or None."""
        if self.placement is None or self.placement.fits:
            return None
        return self.trace.describe(self.placement.failed_event)

    def verdict(self) -> str:
        """One line: fits with headroom; or the panic; or the failing allocation,
        with TFLM-style requested / available / missing when the bytes alone do not
        fit, and the heap map when the cause is fragmentation."""
        if self.panic is not None:
            return f"does not fit: the build panics with {self.panic}"
        placed = self.placement is not None
        how = f"{self.allocator}, every block placed" if placed else self.allocator
        if self.fits:
            return (f"fits: peak {self.budget - self.headroom:,} B of {self.budget:,} B ({how}), "
                    f"headroom {self.headroom:,} B")
        over = self.peak_bytes > self.budget
        bytes_part = (f"requested {self.peak_bytes:,} B, available {self.budget:,} B, missing {-self.headroom:,} B"
                      if over else f"requested {self.peak_bytes:,} B of {self.budget:,} B available")
        if not placed:
            c = self.crossing
            where = (f"the budget is crossed in {c.call} by {c.allocation} ({c.requested:,} B requested with "
                     f"{c.live_before:,} B live)" if c else "q, k and v alone exceed it")
            return f"does not fit: {bytes_part}; {where}"
        p = self.placement
        size = int(self.trace.events["size"][p.failed_event])
        if p.free_total < size:
            cause = f"only {p.free_total:,} B free"
        elif p.largest_hole < size:
            cause = f"{p.free_total:,} B free but the largest hole is {p.largest_hole:,} B (fragmentation)"
        else:
            cause = (f"{p.free_total:,} B free and a {p.largest_hole:,} B hole, but {self.allocator} will not "
                     f"split a hole that way (fragmentation)")
        return f"does not fit: {self.failed_event} fails: {cause}; {bytes_part}"


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
    """One step on ``profile``'s heap: q, k, v (``seq_len * dim`` bytes each, when
    on the heap), ``build_mask(gate, seq_len)``, then ``sparse_attention`` with the
    mask live. The bytes are counted by the heap model; where the allocator has a
    placement simulator, every allocation of the step's trace is also placed as
    that allocator places it, and that decides the verdict.

    A panic of the build (in ``build_mask``, ``attempt to divide by zero`` for
    ``dim`` 0, ``capacity overflow``) is a verdict: ``panic`` is set. Otherwise,
    when q, k and v alone exceed the heap, the verdict is theirs.

    Raises
    ------
    TypeError, ValueError
        For a ``seq_len`` or ``dim`` that is not a usize of the target, or a
        ``heap_budget`` that :func:`firmware_model.profiles.heap_budget` refuses, naming the argument.
    mcsa.MaskTooLarge
        For a wrapping mask over ``position_limit`` (when q, k and v fit the heap).
    """
    target = profile.target(build)
    seq_len = target.check_usize(seq_len, "seq_len")
    dim = target.check_usize(dim, "dim")
    allocator = allocator or profile.allocator
    budget = heap_budget_of(profile, heap_budget, allocator)
    inputs = seq_len * dim if inputs_on_heap else 0

    def report(**fields) -> StepReport:
        fields = {"build_mask": None, "sparse_attention": None, "peak_bytes": None, "num_positions": None,
                  "crossing": None, **fields}
        return StepReport(profile.name, build, seq_len, dim, allocator.name, budget, 3 * inputs, **fields)

    try:
        check_layout(inputs, 1, target)  # vec![x; seq_len * dim]
    except mcsa.TargetPanic as panic:
        return report(panic=panic.message)
    place = simulator(allocator.name)

    inputs_cost = 3 * allocator.cost(inputs, target.usize_bits, budget)

    def inputs_only() -> StepReport:  # q, k, v alone do not fit: the step never gets further
        trace = inputs_trace(inputs, target.usize_bits)
        return report(peak_bytes=inputs_cost, trace=trace,
                      placement=place(trace.events, budget, target.usize_bits) if place else None)

    inputs_fit = inputs_cost <= budget
    sim = mcsa.MincutSparseAttention(config, target, position_limit)
    heap = Heap(target.usize_bits, allocator, budget)
    try:
        plan = sim.plan_mask(gate, seq_len)
        heap.begin("the inputs")
        for name in ("q", "k", "v"):
            heap.alloc(inputs, f"{name} ({seq_len} x {dim} i8)")
        heap.begin("build_mask")
        count = _build_mask(heap, plan, position_limit)
    except mcsa.TargetPanic as panic:  # a panic of the build is the verdict whatever the heap
        return report(panic=panic.message)
    except mcsa.MaskTooLarge:
        if inputs_fit:
            raise
        return inputs_only()
    if not inputs_fit:
        return inputs_only()
    if dim == 0:  # sparse_attention's q.len() / dim
        return report(panic="attempt to divide by zero")
    try:  # its two Vecs: the output, positions_by_query
        check_layout(seq_len * dim, 4, target)
        check_layout(seq_len, 3 * target.usize_bits // 8, target)
    except mcsa.TargetPanic as panic:
        return report(panic=panic.message)
    mask = CallFigures(heap.call_peak, heap.live_bytes)
    heap.begin("sparse_attention")
    _sparse_attention(heap, *query_runs(sim, plan), seq_len, dim)
    attention = CallFigures(heap.call_peak, heap.live_bytes)
    placement = trace = None
    if place is not None:
        try:
            trace = step_trace(config, gate, seq_len, dim, target.usize_bits, inputs_on_heap=inputs_on_heap,
                               position_limit=position_limit, target=target, max_events=TRACE_LIMIT)
            placement = place(trace.events, budget, target.usize_bits)
        except TraceTooLarge:
            trace = None
    return report(build_mask=mask, sparse_attention=attention, peak_bytes=heap.peak_bytes, num_positions=count,
                  crossing=heap.crossing, placement=placement, trace=trace)


def heap_map(report: StepReport, width: int = 64, rows: int = 16) -> list[str]:
    """The heap at the failing allocation (or at the end of the step) as text:
    ``rows`` lines of ``width`` cells, each cell the block that covers most of it
    (a letter per kind of block, ``.`` free), then the legend and the holes.

    Raises
    ------
    ValueError
        If the report has no placement (a panic, a trace over :data:`TRACE_LIMIT` events, or allocator ``none``).
    """
    if report.placement is None:
        why = (report.panic or (f"its allocator trace is over {TRACE_LIMIT:,} events" if report.trace is None
                                and report.allocator != "none" else f"allocator {report.allocator} places no blocks"))
        raise ValueError(f"no heap map: this step was not placed block by block ({why})")
    p, trace = report.placement, report.trace
    from .placement.events import WHAT

    what = np.zeros(int(trace.events["obj"].max(initial=0)) + 1, np.int64)
    what[trace.events["obj"]] = trace.what
    letters = "qkvbtLIMOPKS"
    cells = width * rows
    cell = max(1, -(-p.heap_size // cells))
    cover = np.zeros((cells, len(WHAT) + 1), np.int64)  # bytes per cell per kind; the last column free
    edges = np.arange(cells + 1) * cell

    def paint(start, size, column):
        lo, hi = np.searchsorted(edges, [start, start + size], side="right") - 1
        for c in range(lo, min(hi, cells - 1) + 1):
            cover[c, column] += min(edges[c + 1], start + size) - max(edges[c], start)

    for start, size, obj in p.blocks:
        paint(start, size, what[obj])
    for start, size in p.holes:
        paint(start, size, len(WHAT))
    chars = np.array(list(letters) + ["."] + [" "])
    best = np.where(cover.sum(1) > 0, cover.argmax(1), len(WHAT) + 1)
    grid = chars[best]
    moment = report.failed_event or "the end of the step"
    lines = [f"heap of {p.heap_size:,} B at {moment}; one cell = {cell:,} B"]
    lines += [f"{r * width * cell:>9,} |" + "".join(grid[r * width:(r + 1) * width]) + "|" for r in range(rows)]
    used = sorted(set(int(what[o]) for o in p.blocks[:, 2]))
    lines.append("  " + ", ".join(f"{letters[w]}={WHAT[w]}" for w in used) + ", .=free")
    lines.append(f"  {len(p.holes)} hole{'' if len(p.holes) == 1 else 's'}, {p.free_total:,} B free, largest {p.largest_hole:,} B: "
                 + ", ".join(f"{int(s):,} B at {int(a):,}" for a, s in p.holes[:12]) + (" ..." if len(p.holes) > 12 else ""))
    return lines


@dataclass(frozen=True)
class SeqLenScan:
    """Every seq_len in 1..=hi judged on one heap.

    Attributes
    ----------
    largest : int or None
        The largest seq_len whose step fits.
    failing : list of int
        Every smaller seq_len whose step does not fit.
    scanned : int
        The top of the scan: every seq_len above it does not fit, since q, k, v,
        the output and ``positions_by_query`` alone exceed the budget there.
    """

    largest: int | None
    failing: list[int]
    scanned: int


def scan_seq_len(profile: Profile, config, gate, dim: int, hi: int = 65536, **kwargs) -> SeqLenScan:
    """Judge every seq_len from 1 to ``hi`` (fit is not monotonic in seq_len: a
    longer step can fit where a shorter one fails). Above ``budget // (7 * dim +
    3 * usize)`` bytes per token (``3 * dim`` less without inputs on the heap)
    nothing can fit, so the scan stops there. ``kwargs`` go to :func:`fit_step`.

    Raises
    ------
    TypeError, ValueError
        For a bad ``hi`` or ``dim``, or what :func:`fit_step` refuses.
    """
    target = profile.target(kwargs.get("build", "release"))
    hi = check_int(hi, "hi", 0, target.usize_max)
    dim = target.check_usize(dim, "dim")
    budget = heap_budget_of(profile, kwargs.get("heap_budget"), kwargs.get("allocator"))
    inputs_on_heap = kwargs.get("inputs_on_heap", True)
    per_token = (3 * dim if inputs_on_heap else 0) + 4 * dim + 3 * target.usize_bits // 8
    top = min(hi, budget // per_token)
    allocator = kwargs.get("allocator") or profile.allocator
    place = simulator(allocator.name)

    def fits(n: int) -> bool:
        if place is not None:  # the placement alone decides: no byte figures needed
            try:
                trace = step_trace(config, gate, n, dim, target.usize_bits, inputs_on_heap=inputs_on_heap,
                                   position_limit=kwargs.get("position_limit", DEFAULT_POSITION_LIMIT),
                                   target=target, max_events=TRACE_LIMIT)
            except mcsa.TargetPanic:
                return False
            except TraceTooLarge:
                pass
            else:
                return place(trace.events, budget, target.usize_bits).fits
        return fit_step(profile, config, gate, n, dim, **kwargs).fits

    fitting = [n for n in range(1, top + 1) if dim > 0 and fits(n)]  # dim 0: every step panics
    largest = fitting[-1] if fitting else None
    failing = sorted(set(range(1, (largest or 0) + 1)) - set(fitting))
    return SeqLenScan(largest, failing, top)


def largest_fitting_seq_len(profile: Profile, config, gate, dim: int, hi: int = 65536, **kwargs) -> int | None:
    """The largest ``seq_len`` in 1..=hi whose step fits (see :func:`scan_seq_len`);
    None if none does.

    Raises
    ------
    TypeError, ValueError
        For a bad ``hi`` (an integer 0..=usize::MAX) or ``dim``.
    """
    return scan_seq_len(profile, config, gate, dim, hi, **kwargs).largest


def capacity_table(profile: Profile, config, dim: int, partitions, lambda_: int = 200,
                   concentration_q15: int = 0, hi: int = 65536, **kwargs) -> list[dict]:
    """For each partition count, the largest ``seq_len`` whose whole step fits the
    heap, with that step's figures, and every smaller ``seq_len`` that does not fit.
    ``kwargs`` go to :func:`fit_step`."""
    rows = []
    for p in partitions:
        gate = mcsa.GatePacket(lambda_=lambda_, partition_count=p, boundary_concentration_q15=concentration_q15)
        scan = scan_seq_len(profile, config, gate, dim, hi, **kwargs)
        n = scan.largest
        report = fit_step(profile, config, gate, n, dim, **kwargs) if n else None
        rows.append({
            "partitions": p,
            "max_seq_len": n,
            "num_positions": report.num_positions if report else None,
            "peak_bytes": report.peak_bytes if report else None,
            "peak_used": report.placement.peak_used if report and report.placement else None,
            "budget": heap_budget_of(profile, kwargs.get("heap_budget"), kwargs.get("allocator")),
            "failing_below": scan.failing,
        })
    return rows


def representations(stats: mcsa.MaskStats, seq_len: int) -> dict[str, int]:
    """Bytes of the same mask held four ways (buffers only, no Vec headers).

    ``vec_pairs``: today's ``Vec<(u16, u16)>``; ``csr``: u16 key columns plus
    ``seq_len + 1`` u32 row offsets; ``intervals``: per row a u16 ``lo..=i``
    interval start and end plus a u16 count of leading boundary tokens, and the
    token list once (exact for masks whose indices do not wrap); ``bitmap``: one
    bit per causal pair.

    Raises
    ------
    TypeError, ValueError
        If ``seq_len`` is not a non-negative integer.
    """
    seq_len = check_int(seq_len, "seq_len", 0, 2**64 - 1)
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
