"""Replay a trace of gate packets against a target profile: one record per packet and a summary.

Everything a packet's record needs beyond ``calculate_density`` depends only on
``seq_len`` and, on the sparse path, the partition count; it is computed once
per such key and reused.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from firmware_model.heap import Heap, _sparse_attention, build_mask_usage
from firmware_model.profiles import Profile
from firmware_model.step import fit_step, query_runs

from .attention import MincutSparseAttention
from .packets import GatePacket, SparsityConfig
from .target import TargetPanic

SCHEMA_VERSION = 1
COLUMNS = (
    "index", "t", "seq_len", "sparse", "target_density", "density", "num_positions", "flops_ratio",
    "partitions", "boundary_tokens", "build_mask_peak_bytes", "attention_peak_bytes", "step_peak_bytes",
    "mask_bytes", "fits", "panic",
)
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

    def add(self, rec: dict) -> None:
        self.packets += 1
        if rec["panic"] is not None:
            self.panics += 1
            self.panic_messages.setdefault(rec["panic"], rec["index"])
        if rec["num_positions"] is None:
            return
        self.sparse += rec["sparse"]
        self.full += not rec["sparse"]
        self.densities[rec["density"]] += 1
        if self.worst_peak is None or rec["step_peak_bytes"] > self.worst_peak:
            self.worst_peak, self.worst_packet = rec["step_peak_bytes"], rec["index"]
        if not rec["fits"] and self.first_over_budget is None:
            self.first_over_budget = rec["index"]

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
    """

    def __init__(self, profile: Profile, build: str, config: SparsityConfig, seq_len: int, dim: int,
                 heap_budget: int | None = None):
        self.profile = profile
        self.build = build
        self.config = config
        self.seq_len = seq_len
        self.dim = dim
        self.budget = profile.heap_budget if heap_budget is None else heap_budget
        self.sim = MincutSparseAttention(config, profile.target(build))
        self.bits = self.sim.target.usize_bits
        self._cache: dict = {}

    def header(self) -> dict:
        """The first record of a JSONL output."""
        return {
            "schema_version": SCHEMA_VERSION, "profile": self.profile.name, "build": self.build,
            "target": {"usize_bits": self.bits, "overflow": self.sim.target.overflow.value,
                       "expf": self.sim.target.expf.value},
            "config": self.config.to_dict(), "seq_len": self.seq_len, "dim": self.dim,
            "heap_budget": self.budget, "allocator": self.profile.allocator.name, "columns": list(COLUMNS),
        }

    def _mask_fields(self, gate: GatePacket, seq_len: int) -> dict:
        sparse = self.sim.should_use_sparse(gate, seq_len)
        key = (seq_len, gate.partition_count if sparse else None)
        if key not in self._cache:
            self._cache[key] = self._compute(gate, seq_len)
        return self._cache[key]

    def _compute(self, gate: GatePacket, seq_len: int) -> dict:
        try:
            plan = self.sim.plan_mask(gate, seq_len)
            stats = self.sim.mask_stats(gate, seq_len)
            mask_usage = build_mask_usage(self.config, gate, seq_len, self.bits)
            heap = Heap(self.bits)
            _sparse_attention(heap, *query_runs(self.sim, plan), seq_len, self.dim)
            step = fit_step(self.profile, self.config, gate, seq_len, self.dim, build=self.build,
                            heap_budget=self.budget)
        except TargetPanic as panic:
            return {"panic": panic.message}
        fields = {
            "sparse": stats.sparse, "density": stats.density, "num_positions": stats.num_positions,
            "partitions": int(stats.partition_boundaries.size), "boundary_tokens": int(stats.boundary_tokens.size),
            "build_mask_peak_bytes": mask_usage.peak_bytes, "attention_peak_bytes": heap.peak_bytes,
            "step_peak_bytes": step.peak_bytes, "mask_bytes": mask_usage.live_bytes, "fits": step.fits,
            "flops_ratio": None, "panic": None,
        }
        try:  # the mask builds, but its flops ratio can still overflow a 32-bit usize in debug
            fields["flops_ratio"] = self.sim.estimated_flops_ratio(stats, seq_len)
        except TargetPanic as panic:
            fields["panic"] = panic.message
        return fields

    def record(self, index: int, gate: GatePacket, seq_len: int | None = None, t: float | None = None) -> dict:
        """The record of one packet (``panic`` set and mask fields None if the build panics)."""
        seq_len = self.seq_len if seq_len is None else seq_len
        rec = dict.fromkeys(COLUMNS)
        rec.update(index=index, t=t, seq_len=seq_len, target_density=self.sim.calculate_density(gate))
        rec.update(self._mask_fields(gate, seq_len))
        return rec
