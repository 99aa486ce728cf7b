"""Replay a trace of gate packets against a target profile: one record per packet and a summary.

Everything a packet's record needs beyond ``calculate_density`` depends only on
``seq_len`` and, on the sparse path, the partition count; it is computed once
per such key and reused.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from firmware_model.heap import build_mask_usage, planned_attention_usage
from firmware_model.profiles import Profile
from firmware_model.step import fit_step

from .attention import MincutSparseAttention
from .density import density_kernel, schedule_args
from .mask import DEFAULT_POSITION_LIMIT
from .packets import GatePacket, SparsityConfig
from .target import TargetPanic

SCHEMA_VERSION = 1
PACKET_COLUMNS = ("index", "t", "seq_len", "target_density")
"""Fields that change with every packet."""
MASK_COLUMNS = (
    "sparse", "density", "num_positions", "flops_ratio", "partitions", "boundary_tokens",
    "build_mask_peak_bytes", "attention_peak_bytes", "step_peak_bytes", "mask_bytes", "fits", "panic",
)
"""Fields shared by every packet with the same seq_len and (on the sparse path) partition count."""
COLUMNS = PACKET_COLUMNS + MASK_COLUMNS
"""Fields of a packet's record, in order."""


@dataclass
class Summary:
    """What a replay found over the whole trace."""

    packets: int = 0
    sparse: int = 0
    full: int = 0
    bad: int = 0
    panics: int = 0
    densities: Counter = field(default_factory=Counter)
    worst_peak: int | None = None
    worst_packet: int | None = None
    first_over_budget: int | None = None
    panic_messages: dict = field(default_factory=dict)

    def add(self, index: int, mask: dict) -> None:
        """Count packet ``index`` whose mask fields are ``mask``."""
        self.packets += 1
        if mask["panic"] is not None:
            self.panics += 1
            self.panic_messages.setdefault(mask["panic"], index)
        if mask["num_positions"] is None:
            return
        self.sparse += mask["sparse"]
        self.full += not mask["sparse"]
        self.densities[mask["density"]] += 1
        if self.worst_peak is None or mask["step_peak_bytes"] > self.worst_peak:
            self.worst_peak, self.worst_packet = mask["step_peak_bytes"], index
        if not mask["fits"] and self.first_over_budget is None:
            self.first_over_budget = index

    def density_quantiles(self) -> tuple:
        """(min, median, max) of the masks' densities (lower median), or Nones."""
        if not self.densities:
            return None, None, None
        values = sorted(self.densities)
        total = sum(self.densities.values())
        seen = 0
        for v in values:
            seen += self.densities[v]
            if 2 * seen >= total:
                return values[0], v, values[-1]

    def as_dict(self) -> dict:
        lo, mid, hi = self.density_quantiles()
        return {
            "packets": self.packets, "sparse": self.sparse, "full": self.full, "bad_records": self.bad,
            "density_min": lo, "density_median": mid, "density_max": hi,
            "worst_step_peak_bytes": self.worst_peak, "worst_packet": self.worst_packet,
            "first_over_budget_packet": self.first_over_budget, "panics": self.panics,
            "panic_messages": [{"message": m, "first_packet": i} for m, i in self.panic_messages.items()],
        }


class Replayer:
    """Turns packets into records for one profile, build, config, dim and budget.

    Parameters
    ----------
    profile : Profile
    build : {"release", "debug"}
    config : SparsityConfig
    seq_len : int
        Default sequence length (a record's own ``seq_len`` overrides it).
    dim : int
        Head dimension for the attention heap figures (q, k, v of ``seq_len * dim``).
    heap_budget : int, optional
        Defaults to the profile's.
    position_limit : int
        Largest mask materialised (only masks whose indices wrap need it).
    """

    def __init__(self, profile: Profile, build: str, config: SparsityConfig, seq_len: int, dim: int,
                 heap_budget: int | None = None, position_limit: int = DEFAULT_POSITION_LIMIT):
        self.profile = profile
        self.build = build
        self.config = config
        self.seq_len = seq_len
        self.dim = dim
        self.budget = profile.heap_budget if heap_budget is None else heap_budget
        self.sim = MincutSparseAttention(config, profile.target(build), position_limit)
        self.position_limit = position_limit
        self.bits = self.sim.target.usize_bits
        self._cache: dict = {}
        self._schedule = schedule_args(config)

    def header(self) -> dict:
        """The first record of a JSONL output."""
        return {
            "schema_version": SCHEMA_VERSION, "profile": self.profile.name, "build": self.build,
            "target": {"usize_bits": self.bits, "overflow": self.sim.target.overflow.value,
                       "expf": self.sim.target.expf.value},
            "config": self.config.to_dict(), "seq_len": self.seq_len, "dim": self.dim,
            "heap_budget": self.budget, "allocator": self.profile.allocator.name, "columns": list(COLUMNS),
        }

    def mask_fields(self, values: tuple, seq_len: int) -> dict:
        """The shared fields of a packet given as its six field values (already
        validated), computed once per seq_len and partition count; treat as read-only."""
        lam, pc = values[0], values[4]
        sparse = seq_len >= 16 and pc >= 2 and lam >= 30  # MincutSparseAttention.should_use_sparse
        key = (seq_len, pc if sparse else None)
        fields = self._cache.get(key)
        if fields is None:
            fields = self._cache[key] = self._compute(GatePacket(*values), seq_len)
        return fields

    def target_density(self, values: tuple) -> float:
        """``calculate_density`` of a packet given as its six field values (an f32 value)."""
        return density_kernel(*self._schedule, values[0], values[3], values[4])

    def _compute(self, gate: GatePacket, seq_len: int) -> dict:
        try:
            stats = self.sim.mask_stats(gate, seq_len)
            limit = self.position_limit
            mask_usage = build_mask_usage(self.config, gate, seq_len, self.bits, position_limit=limit)
            attention = planned_attention_usage(self.config, gate, seq_len, seq_len, self.dim, self.bits,
                                                position_limit=limit)
            step = fit_step(self.profile, self.config, gate, seq_len, self.dim, build=self.build,
                            heap_budget=self.budget, position_limit=limit)
        except TargetPanic as panic:
            return {**dict.fromkeys(MASK_COLUMNS), "panic": panic.message}
        fields = dict.fromkeys(MASK_COLUMNS)
        fields.update(
            sparse=stats.sparse, density=stats.density, num_positions=stats.num_positions,
            partitions=int(stats.partition_boundaries.size), boundary_tokens=int(stats.boundary_tokens.size),
            build_mask_peak_bytes=mask_usage.peak_bytes, attention_peak_bytes=attention.peak_bytes,
            step_peak_bytes=step.peak_bytes, mask_bytes=mask_usage.live_bytes, fits=step.fits,
        )
        try:  # the mask builds, but its flops ratio can still overflow a 32-bit usize in debug
            fields["flops_ratio"] = self.sim.estimated_flops_ratio(stats, seq_len)
        except TargetPanic as panic:
            fields["panic"] = panic.message
        return fields

    def record(self, index: int, gate: GatePacket, seq_len: int | None = None, t: float | None = None) -> dict:
        """The whole record of one packet (``panic`` set, mask fields None, if the build panics)."""
        values = gate.values()
        seq_len = self.seq_len if seq_len is None else seq_len
        return {"index": index, "t": t, "seq_len": seq_len, "target_density": np.float32(self.target_density(values)),
                **self.mask_fields(values, seq_len)}
