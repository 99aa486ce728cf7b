"""One mask described the way ``mcsa mask`` shows it: the figures of the Rust
calls a step makes about its mask, the first panic among them, and what holding
and using the mask costs (other representations' bytes, sparse_attention's ops)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from firmware_model.planned import query_runs
from firmware_model.step import op_counts, representations
from mcsa.core.attention import MincutSparseAttention
from mcsa.core.errors import MaskTooLarge, TargetPanic
from mcsa.core.mask import MaskStats, SparseMask
from mcsa.core.packets import GatePacket


@dataclass(frozen=True)
class MaskReport:
    """What :func:`report_mask` found.

    Attributes
    ----------
    target : str
    seq_len, dim : int
    gate : GatePacket
    target_density : numpy.float32
        ``calculate_density(gate)``.
    stats : MaskStats or None
        The mask's figures (None when ``build_mask`` panics).
    flops_ratio : numpy.float32 or None
        ``estimated_flops_ratio(mask, seq_len)`` (None when it or the build panics).
    panic, panicking_call : str or None
        Rust's message and the call that panics first (``build_mask`` or
        ``estimated_flops_ratio``), in the order a step calls them.
    representations : dict or None
        :func:`firmware_model.step.representations` (bytes per way of holding the mask).
    op_counts : dict or None
        :func:`firmware_model.step.op_counts` of ``sparse_attention`` at ``dim``; None
        when only the built mask could tell them (indices that wrap) and it was not built.
    mask : SparseMask or None
        The mask, when it was built.
    """

    target: str
    seq_len: int
    dim: int
    gate: GatePacket
    target_density: np.float32
    stats: MaskStats | None
    flops_ratio: np.float32 | None
    panic: str | None
    panicking_call: str | None
    representations: dict | None
    op_counts: dict | None
    mask: SparseMask | None

    def record(self) -> dict:
        """The report as a JSON-ready dict, in the vocabulary of ``fit`` and ``replay``."""
        s = self.stats
        return {
            "target": self.target, "seq_len": self.seq_len, "dim": self.dim, "gate": self.gate.to_dict(),
            "sparse": None if s is None else bool(s.sparse),
            "partitions": None if s is None else int(s.partition_boundaries.size),
            "num_positions": None if s is None else s.num_positions,
            "density": None if s is None else s.density,
            "target_density": self.target_density, "flops_ratio": self.flops_ratio,
            "panic": self.panic, "panicking_call": self.panicking_call,
            "partition_boundaries": None if s is None else s.partition_boundaries.tolist(),
            "boundary_tokens": None if s is None else s.boundary_tokens.tolist(),
            "representations": self.representations, "op_counts": self.op_counts,
        }


def report_mask(sim: MincutSparseAttention, gate: GatePacket, seq_len: int, dim: int,
                build: bool = True) -> MaskReport:
    """``build_mask(gate, seq_len)`` and ``estimated_flops_ratio(mask, seq_len)`` on
    ``sim``'s target, the first panic the step would hit answered before any mask
    is built: the figures come from :meth:`MincutSparseAttention.mask_stats`
    (linear in ``min(seq_len, 65536)``), and the mask is built only when ``build``
    and neither call panics.

    Raises
    ------
    TypeError, ValueError
        For a bad ``gate``, ``seq_len`` or ``dim``.
    mcsa.MaskTooLarge
        When ``build`` and the mask is over ``sim.position_limit``.
    """
    dim = sim.target.check_usize(dim, "dim")
    fields = dict(target=str(sim.target), seq_len=seq_len, dim=dim, gate=gate,
                  target_density=sim.calculate_density(gate), stats=None, flops_ratio=None, panic=None,
                  panicking_call=None, representations=None, op_counts=None, mask=None)
    try:
        fields["stats"] = stats = sim.mask_stats(gate, seq_len)
    except TargetPanic as panic:
        return MaskReport(**{**fields, "panic": panic.message, "panicking_call": "build_mask"})
    fields["representations"] = representations(stats, seq_len)
    try:
        fields["flops_ratio"] = sim.estimated_flops_ratio(stats, seq_len)
    except TargetPanic as panic:
        return MaskReport(**{**fields, "panic": panic.message, "panicking_call": "estimated_flops_ratio"})
    if build:
        mask = fields["mask"] = sim.build_mask(gate, seq_len)
        queries, lengths = np.unique(mask.positions[:, 0], return_counts=True)
        fields["op_counts"] = op_counts((queries, lengths), dim)
    else:
        plan = sim.plan_mask(gate, seq_len)
        if plan.ordered:  # else the runs need the positions: only a built mask has them
            try:
                fields["op_counts"] = op_counts(query_runs(plan, None, position_limit=0), dim)
            except MaskTooLarge:  # a full mask whose queries wrap
                pass
    return MaskReport(**fields)
