"""One inference step against a heap budget: fit verdict, the figures a replay record
needs, capacity planner, representation advice and operation counts.

Every function here plans the step once (:func:`firmware_model.planned.plan_step`)
and takes each figure from that one plan: the byte counts from
:func:`firmware_model.heap.count`, the placement from the plan's events.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from mcsa.core._jit import usable_cores
from mcsa.core.attention import MincutSparseAttention
from mcsa.core.checks import check_bool, check_int
from mcsa.core.mask import DEFAULT_POSITION_LIMIT, MaskStats, MaskTooLarge, position_limit_arg
from mcsa.core.packets import GatePacket, SparsityConfig
from mcsa.core.rustvec import check_layout
from mcsa.core.target import Target, TargetPanic

from . import bounds, heap, planned
from .allocators import Allocator, check_allocator
from .heap import Crossing
from .placement import Placement, simulator
from .placement.events import Trace, expand, inputs_trace
from .planned import CALLS, PlannedStep
from .profiles import Profile, heap_budget as heap_budget_of

TRACE_LIMIT = 4_000_000
"""Most allocator calls a step's B-tree may make for the step to be placed block by
block (about 100 MB of trace); a bigger step, which only a heap of many megabytes
could hold, is judged on its bytes alone."""


@dataclass(frozen=True)
class StepReport:
    """A step (q, k, v, build_mask, then sparse_attention) on a profile's heap.

    The byte figures follow the shared vocabulary (``docs``): ``inputs_bytes`` (q, k
    and v requested), ``build_mask_peak_bytes`` and ``attention_peak_bytes`` (the most
    bytes requested live during each call, less what was live when it began),
    ``mask_bytes`` (what the finished mask holds), ``step_requested_bytes`` (the byte
    model: the highest heap use of the whole step, each block as the allocator counts
    it), and :attr:`step_peak_bytes`. ``placement`` is where the allocator's own
    algorithm put every block; when there is one, it decides the verdict. ``panic``
    is set when the step panics (then there is no step figure).
    """

    profile: str
    build: str
    seq_len: int
    dim: int
    gate: GatePacket
    config: SparsityConfig
    allocator: str
    budget_bytes: int
    inputs_bytes: int
    build_mask_peak_bytes: int | None
    mask_bytes: int | None
    attention_peak_bytes: int | None
    step_requested_bytes: int | None
    num_positions: int | None
    density: np.float32 | None
    crossing: Crossing | None
    panic: str | None = None
    placement: Placement | None = None
    trace: Trace | None = None
    step: PlannedStep | None = None

    @property
    def partitions(self) -> int:
        return self.gate.partition_count

    @property
    def fits(self) -> bool:
        if self.panic is not None:
            return False
        if self.placement is not None:
            return self.placement.fits
        return self.step_requested_bytes <= self.budget_bytes

    @property
    def step_peak_bytes(self) -> int | None:
        """The highest heap use of the step, what ``fits`` compares with the budget:
        the heap minus its free bytes at the worst moment when every block was placed
        and the step fits, else :attr:`step_requested_bytes` (None on a panic)."""
        if self.panic is not None:
            return None
        if self.placement is not None and self.placement.fits:
            return self.placement.peak_used
        return self.step_requested_bytes

    @property
    def headroom(self) -> int | None:
        """Budget minus :attr:`step_peak_bytes` (negative when the bytes alone do not fit)."""
        return None if self.panic is not None else self.budget_bytes - self.step_peak_bytes

    @property
    def failed_event(self) -> str | None:
        """The allocator call that fails, described, or None."""
        if self.placement is None or self.placement.fits:
            return None
        return self.trace.describe(self.placement.failed_event)

    def cause(self) -> dict | None:
        """Why the step does not fit, as data (None when it fits): ``cause`` is
        ``panic``; ``bytes`` (the bytes requested, each block as the allocator counts
        it, exceed the budget); ``overhead`` (they do not, but what the allocator keeps
        for itself leaves less free than the failing request); or ``fragmentation``
        (enough is free, but no hole serves the request). With the allocation that
        fails and the bytes missing or free."""
        if self.fits:
            return None
        if self.panic is not None:
            return {"cause": "panic", "panic": self.panic}
        out = {"cause": "bytes", "requested_bytes": self.step_requested_bytes,
               "missing_bytes": max(0, -self.headroom)}
        if self.placement is not None:
            p = self.placement
            size = int(self.trace.events["size"][p.failed_event])
            if self.step_requested_bytes <= self.budget_bytes:
                out["cause"] = "overhead" if p.free_total < size else "fragmentation"
            out.update(allocation=self.failed_event, size=size, free_bytes=p.free_total, largest_hole=p.largest_hole)
        elif self.crossing is not None:
            c = self.crossing
            out.update(allocation=f"{c.call}: {c.allocation}", size=c.requested, live_before=c.live_before)
        return out

    def verdict(self) -> str:
        """One line: fits with headroom; or the panic; or the failing allocation,
        with TFLM-style requested / available / missing when the bytes alone do not
        fit, and the free space when the cause is fragmentation."""
        if self.panic is not None:
            return f"does not fit: the build panics with {self.panic}"
        placed = self.placement is not None
        how = f"{self.allocator}, every block placed" if placed else self.allocator
        budget = self.budget_bytes
        if self.fits:
            return f"fits: peak {self.step_peak_bytes:,} B of {budget:,} B ({how}), headroom {self.headroom:,} B"
        requested = self.step_requested_bytes
        bytes_part = (f"requested {requested:,} B, available {budget:,} B, missing {-self.headroom:,} B"
                      if requested > budget else f"requested {requested:,} B of {budget:,} B available")
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


def check_profile(profile) -> Profile:
    """``profile`` if it is a :class:`~firmware_model.profiles.Profile`.

    Raises
    ------
    TypeError
        For anything else (a name is not a Profile: see ``profile_named``).
    """
    if not isinstance(profile, Profile):
        raise TypeError(f"profile must be a Profile (firmware_model.profiles.profile_named(name)), "
                        f"got {type(profile).__name__} {profile!r:.40}")
    return profile


@dataclass(frozen=True)
class _Setup:
    """A step's checked arguments."""

    profile: Profile
    build: str
    target: Target
    config: SparsityConfig
    gate: GatePacket
    dim: int
    allocator: Allocator
    budget: int
    inputs_on_heap: bool
    position_limit: int


def _setup(profile, config, gate, dim, build, heap_budget, allocator, inputs_on_heap, position_limit) -> _Setup:
    """Check every argument of a step, naming the one that is wrong.

    Raises
    ------
    TypeError, ValueError
    """
    profile = check_profile(profile)
    if not isinstance(config, SparsityConfig):
        raise TypeError(f"config must be a SparsityConfig, got {type(config).__name__}")
    if not isinstance(gate, GatePacket):
        raise TypeError(f"gate must be a GatePacket, got {type(gate).__name__}")
    target = profile.target(build)
    allocator = profile.allocator if allocator is None else check_allocator(allocator)
    return _Setup(profile, build, target, config, gate, target.check_usize(dim, "dim"), allocator,
                  heap_budget_of(profile, heap_budget, allocator), check_bool(inputs_on_heap, "inputs_on_heap"),
                  position_limit_arg(position_limit))


def _plan(s: _Setup, seq_len: int, placed: bool) -> PlannedStep:
    """Plan a step (keeping the B-tree's nodes when it is to be placed).

    Raises
    ------
    mcsa.MaskTooLarge
    """
    return planned.plan_step(s.config, s.gate, seq_len, s.dim, s.target, inputs_on_heap=s.inputs_on_heap,
                             position_limit=s.position_limit, max_events=TRACE_LIMIT if placed else None)


def _inputs_panic(s: _Setup, seq_len: int) -> str | None:
    """``capacity overflow`` where no ``Vec`` can hold q, k or v."""
    try:
        check_layout(seq_len * s.dim if s.inputs_on_heap else 0, 1, s.target)
    except TargetPanic as panic:
        return panic.message
    return None


def _judge(s: _Setup, seq_len: int, step: PlannedStep | None) -> StepReport:
    """The verdict of a planned step (None: the mask is over the position limit and q,
    k and v decide), in Rust's order: q, k and v that no Vec holds; ``build_mask``'s
    panic; q, k and v over the heap; ``sparse_attention``'s panic; then every block."""
    bits = s.target.usize_bits
    inputs = seq_len * s.dim if s.inputs_on_heap else 0
    place = simulator(s.allocator.name)
    requested = None if step is None else heap.count(step.rows, bits, calls=step.calls)

    def report(**fields) -> StepReport:
        build = step is not None and step.figures_of(CALLS[1])
        attention = step is not None and step.figures_of(CALLS[2])
        return StepReport(
            s.profile.name, s.build, seq_len, s.dim, s.gate, s.config, s.allocator.name, s.budget, 3 * inputs,
            requested.call_peak(CALLS[1]) if build else None, requested.call_left(CALLS[1]) if build else None,
            requested.call_peak(CALLS[2]) if attention else None,
            num_positions=step.num_positions if build else None, density=step.density if build else None,
            step=step, **{"step_requested_bytes": None, "crossing": None, **fields})

    panics = dict(step.panics) if step is not None else {}
    if step is None and _inputs_panic(s, seq_len):
        panics[CALLS[0]] = _inputs_panic(s, seq_len)
    for call in CALLS[:2]:
        if call in panics:
            return report(panic=panics[call])
    inputs_cost = 3 * s.allocator.cost(inputs, bits, s.budget)
    if inputs_cost > s.budget:  # q, k, v alone do not fit: the step never gets further
        trace = inputs_trace(inputs, bits)
        return report(step_requested_bytes=inputs_cost, trace=trace,
                      placement=place(trace.events, s.budget, bits) if place else None)
    if CALLS[2] in panics:
        return report(panic=panics[CALLS[2]])
    counted = heap.count(step.rows, bits, s.allocator, s.budget, step.calls)
    placement = trace = None
    if place is not None and step.node_events <= TRACE_LIMIT:
        trace = expand(step.rows, step.calls, step.nodes, bits)
        placement = place(trace.events, s.budget, bits)
    return report(step_requested_bytes=counted.usage.peak_bytes, crossing=counted.crossing,
                  placement=placement, trace=trace)


def fit_step(
    profile: Profile,
    config: SparsityConfig, gate: GatePacket,
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
    placement simulator, every allocation of the step is also placed as that
    allocator places it, and that decides the verdict.

    A panic of the build (in ``build_mask``, ``attempt to divide by zero`` for
    ``dim`` 0, ``capacity overflow``) is a verdict: ``panic`` is set. Otherwise,
    when q, k and v alone exceed the heap, the verdict is theirs.

    Raises
    ------
    TypeError, ValueError
        Naming the argument: a ``profile`` that is not a Profile, a ``config`` or
        ``gate`` of the wrong type, a ``seq_len`` or ``dim`` that is not a usize of the
        target, an unknown ``build``, an ``allocator`` that is not an Allocator, a
        ``heap_budget`` that :func:`firmware_model.profiles.heap_budget` refuses, a
        non-bool ``inputs_on_heap`` or a bad ``position_limit``.
    mcsa.MaskTooLarge
        For a mask over ``position_limit`` (when q, k and v fit the heap).
    """
    s = _setup(profile, config, gate, dim, build, heap_budget, allocator, inputs_on_heap, position_limit)
    seq_len = s.target.check_usize(seq_len, "seq_len")
    try:
        step = _plan(s, seq_len, simulator(s.allocator.name) is not None)
    except MaskTooLarge:  # the verdict is q, k and v's when they alone cannot be; else the refusal stands
        inputs = seq_len * s.dim if s.inputs_on_heap else 0
        if not _inputs_panic(s, seq_len) and 3 * s.allocator.cost(inputs, s.target.usize_bits, s.budget) <= s.budget:
            raise
        step = None
    return _judge(s, seq_len, step)


def step_figures(profile: Profile, build: str, config: SparsityConfig, gate: GatePacket, seq_len: int, dim: int,
                 budget: int, position_limit: int = DEFAULT_POSITION_LIMIT) -> dict:
    """Every figure of a replay record for one step, from one planned step, under
    ``profile``'s allocator on a heap of ``budget`` bytes.

    Returns
    -------
    dict
        ``sparse``, ``num_positions``, ``density`` (the mask's), ``partitions``,
        ``boundary_tokens`` (their counts), ``flops_ratio``, ``build_mask_peak_bytes``,
        ``mask_bytes``, ``attention_peak_bytes`` (bytes requested), ``inputs_bytes``,
        ``step_requested_bytes`` (the byte model, each block as the allocator counts it),
        ``step_peak_bytes`` (what ``fits`` compares with the budget: the placed peak
        when every block was placed and the step fits), ``fits`` and ``panic``. When
        ``build_mask`` panics, only ``panic`` (and ``fits``, False) are set.

    Raises
    ------
    TypeError, ValueError
        As :func:`fit_step`.
    mcsa.MaskTooLarge
        For a mask over ``position_limit`` (a replayer refuses such a record).
    """
    s = _setup(profile, config, gate, dim, build, budget, None, True, position_limit)
    seq_len = s.target.check_usize(seq_len, "seq_len")
    step = _plan(s, seq_len, simulator(s.allocator.name) is not None)
    report = _judge(s, seq_len, step)
    out = dict.fromkeys(FIGURES)
    out.update(fits=report.fits, panic=report.panic)
    if report.num_positions is None:
        return out
    stats = step.stats()
    out.update(sparse=stats.sparse, num_positions=step.num_positions, density=step.density,
               partitions=int(stats.partition_boundaries.size), boundary_tokens=int(stats.boundary_tokens.size),
               build_mask_peak_bytes=report.build_mask_peak_bytes, mask_bytes=report.mask_bytes,
               attention_peak_bytes=report.attention_peak_bytes, inputs_bytes=report.inputs_bytes,
               step_requested_bytes=report.step_requested_bytes, step_peak_bytes=report.step_peak_bytes)
    try:  # the mask builds, but its flops ratio can still overflow a 32-bit usize in debug
        out["flops_ratio"] = MincutSparseAttention(config, s.target).estimated_flops_ratio(stats, seq_len)
    except TargetPanic as panic:
        out["panic"] = panic.message
    return out


FIGURES = ("sparse", "num_positions", "density", "partitions", "boundary_tokens", "flops_ratio",
           "build_mask_peak_bytes", "mask_bytes", "attention_peak_bytes", "inputs_bytes", "step_requested_bytes",
           "step_peak_bytes", "fits", "panic")
"""The keys of :func:`step_figures`."""


SCAN_THREADS = min(8, usable_cores())
"""Threads a plan scan judges its undecided steps on: one per core, at most 8."""


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
    judged : int
        How many steps were planned one by one (the others were decided by bounds on
        their bytes, see :mod:`firmware_model.bounds`).
    placed : int
        How many of those were placed block by block.
    """

    largest: int | None
    failing: list[int]
    scanned: int
    judged: int = 0
    placed: int = 0


def scan_seq_len(profile: Profile, config: SparsityConfig, gate: GatePacket, dim: int, hi: int = 65536, *,
                 build: str = "release", heap_budget: int | None = None, allocator: Allocator | None = None,
                 inputs_on_heap: bool = True, position_limit: int = DEFAULT_POSITION_LIMIT,
                 progress: Callable[[int, int], None] | None = None) -> SeqLenScan:
    """The verdict of every seq_len from 1 to ``hi`` (fit is not monotonic in seq_len:
    a longer step can fit where a shorter one fails), the same as :func:`fit_step` on
    each. Above ``budget // (7 * dim + 3 * usize)`` bytes per token (``3 * dim`` less
    without inputs on the heap) nothing can fit, so the scan stops there. Below,
    bounds on each step's bytes decide most steps at once: a step whose bytes
    requested exceed the heap cannot fit, and one whose every allocation fits in the
    part of the heap never used before (or whose ``sparse_attention`` fits in the block
    the freed B-tree leaves) fits whatever the allocator reuses; only the others are
    planned and placed one by one (:mod:`firmware_model.bounds`).

    Parameters
    ----------
    progress : callable, optional
        Called as ``progress(done, total)`` while the undecided steps are judged.

    Raises
    ------
    TypeError, ValueError
        For a bad ``hi`` or ``dim``, or what :func:`fit_step` refuses.
    mcsa.MaskTooLarge
        For a step the bounds do not decide whose mask is over ``position_limit``.
    """
    s = _setup(profile, config, gate, dim, build, heap_budget, allocator, inputs_on_heap, position_limit)
    hi = check_int(hi, "hi", 0, s.target.usize_max)
    per_token = (3 * s.dim if s.inputs_on_heap else 0) + 4 * s.dim + 3 * s.target.usize_bits // 8
    top = min(hi, s.budget // per_token)
    if s.dim == 0 or top == 0:  # dim 0: every step panics
        return SeqLenScan(None, [], top)
    verdicts = bounds.verdicts(s, top, TRACE_LIMIT)
    todo = [int(n) for n in np.flatnonzero(verdicts == bounds.UNDECIDED) + 1]
    placed = 0
    if progress is not None:
        progress(0, len(todo))

    def judge(n: int) -> StepReport:
        return fit_step(s.profile, s.config, s.gate, n, s.dim, build=s.build, heap_budget=s.budget,
                        allocator=s.allocator, inputs_on_heap=s.inputs_on_heap, position_limit=s.position_limit)

    # The placement kernels release the GIL: the steps are judged on every core, in order.
    pool = ThreadPoolExecutor(max(1, min(SCAN_THREADS, len(todo))))
    try:
        for done, (n, report) in enumerate(zip(todo, pool.map(judge, todo)), 1):
            verdicts[n - 1] = bounds.FITS if report.fits else bounds.FAILS
            placed += report.placement is not None
            if progress is not None:
                progress(done, len(todo))
    finally:  # (a signal or a refusal: the steps not started are not)
        pool.shutdown(wait=True, cancel_futures=True)
    fitting = np.flatnonzero(verdicts == bounds.FITS) + 1
    largest = int(fitting[-1]) if fitting.size else None
    failing = [int(n) for n in np.flatnonzero(verdicts[: largest or 0] == bounds.FAILS) + 1]
    return SeqLenScan(largest, failing, top, len(todo), placed)


def largest_fitting_seq_len(profile: Profile, config, gate, dim: int, hi: int = 65536, **kwargs) -> int | None:
    """The largest ``seq_len`` in 1..=hi whose step fits (see :func:`scan_seq_len`);
    None if none does.

    Raises
    ------
    TypeError, ValueError
        For a bad ``hi`` (an integer 0..=usize::MAX) or ``dim``.
    """
    return scan_seq_len(profile, config, gate, dim, hi, **kwargs).largest


def capacity_table(profile: Profile, config, dim: int, partitions, gate: GatePacket = GatePacket(lambda_=200),
                   hi: int = 65536, progress=None, on_row=None, **kwargs) -> list[dict]:
    """For each partition count, the largest ``seq_len`` whose whole step fits the
    heap, with that step's figures, every smaller ``seq_len`` that does not fit, and
    why the next ``seq_len`` does not fit. ``kwargs`` go to :func:`fit_step`.

    Parameters
    ----------
    gate : GatePacket
        The gate of every step, its ``partition_count`` replaced by each of ``partitions``
        (default: lambda 200, every other field 0).
    progress : callable, optional
        ``progress(partitions, done, total)`` while a partition count's undecided
        steps are judged.
    on_row : callable, optional
        Called with each row as soon as its partition count is done.

    Raises
    ------
    TypeError, ValueError
        As :func:`scan_seq_len`; TypeError for a ``gate`` that is not a GatePacket.
    """
    if not isinstance(gate, GatePacket):
        raise TypeError(f"gate must be a GatePacket, got {type(gate).__name__}")
    template, rows = gate, []
    for p in partitions:
        gate = replace(template, partition_count=p)
        scan = scan_seq_len(profile, config, gate, dim, hi, **kwargs,
                            progress=None if progress is None else (lambda d, t, p=p: progress(p, d, t)))
        n = scan.largest
        report = fit_step(profile, config, gate, n, dim, **kwargs) if n else None
        rows.append({
            "partitions": p,
            "max_seq_len": n,
            "num_positions": report.num_positions if report else None,
            "step_requested_bytes": report.step_requested_bytes if report else None,
            "step_peak_bytes": report.step_peak_bytes if report else None,
            "budget_bytes": heap_budget_of(profile, kwargs.get("heap_budget"), kwargs.get("allocator")),
            "failing_below": scan.failing,
            "next": _next_fails((n or 0) + 1, hi, scan.scanned, profile, config, gate, dim, kwargs),
        })
        if on_row is not None:
            on_row(rows[-1])
    return rows


def _next_fails(n: int, hi: int, top: int, profile, config, gate, dim, kwargs) -> dict:
    """Why ``seq_len`` ``n`` (the one after the largest that fits) does not fit."""
    if n > hi:
        return {"seq_len": None, "cause": "max_seq_len", "detail": f"the scan stops at {hi:,}"}
    try:
        report = fit_step(profile, config, gate, n, dim, **kwargs)
    except MaskTooLarge as err:
        return {"seq_len": n, "cause": "position_limit", "detail": str(err)}
    why = report.cause() or {"cause": "fits"}
    return {"seq_len": n, **why, "detail": report.verdict()}


def representations(stats: MaskStats, seq_len: int) -> dict[str, int]:
    """Bytes of the same mask held four ways (buffers only, no Vec headers).

    ``vec_pairs``: today's ``Vec<(u16, u16)>``; ``csr``: u16 key columns plus
    ``seq_len + 1`` u32 row offsets; ``intervals``: per row a u16 ``lo..=i``
    interval start and end plus a u16 count of leading boundary tokens, and the
    token list once (exact for masks whose indices do not wrap); ``bitmap``: one
    bit per causal pair.

    Raises
    ------
    TypeError, ValueError
        If ``stats`` is not a MaskStats or ``seq_len`` is not a non-negative integer.
    """
    if not isinstance(stats, MaskStats):
        raise TypeError(f"stats must be a MaskStats, got {type(stats).__name__}")
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

    Raises
    ------
    TypeError, ValueError
        If ``runs`` is not two integer arrays of one length, or ``dim`` not a non-negative integer.
    """
    if not (isinstance(runs, tuple) and len(runs) == 2):
        raise TypeError(f"runs must be a (queries, key counts) tuple of arrays, got {type(runs).__name__}")
    queries, lengths = (np.asarray(r) for r in runs)
    if queries.shape != lengths.shape or queries.ndim != 1 or queries.dtype.kind not in "iu" \
            or lengths.dtype.kind not in "iu":
        raise TypeError("runs must be two 1-D integer arrays of one length")
    dim = check_int(dim, "dim", 0)
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
