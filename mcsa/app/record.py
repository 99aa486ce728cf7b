"""A replay record: its fields (the one place each is named, typed and explained), the
formats it is written in, and the summary of a trace's records. Light to import (NumPy,
no simulator): the command line builds its help and options from it without loading
Numba, and a fleet's client sums summaries with it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from mcsa.core.packets import FIELDS, PACKET_DTYPE

if TYPE_CHECKING:
    from .replay import Part

FORMATS = ("table", "jsonl", "csv", "parquet")
"""The formats a replay writes its records in."""

SCHEMA_VERSION = 2
"""2: the header's ``heap_budget`` is ``budget_bytes`` (one vocabulary with fit and plan); a Parquet
folder holds one dataset folder per trace (part files and ``_common_metadata``)."""


@dataclass(frozen=True)
class Column:
    """One field of a replay record: the one place its name, type, view and meaning are written.

    Attributes
    ----------
    name : str
        The record key, the Parquet and CSV column, the table heading.
    arrow : str
        Its ``pyarrow`` type's name (every field may be null but ``index``, ``seq_len`` and ``target_density``).
    shared : bool
        The same for every packet of one seq_len and (on the sparse path) partition count.
    width : int
        Its column in the table view.
    narrow : bool
        Shown by the table view without ``--wide`` (which fits 100 columns).
    doc : str
        What it holds (the help text; for byte counts, the header's ``accounting``).
    """

    name: str
    arrow: str
    shared: bool
    width: int
    narrow: bool
    doc: str


RECORD = (
    Column("index", "int64", False, 7, True, "the packet's number in its trace, from 0"),
    Column("t", "float64", False, 10, False, "the packet's timestamp as recorded, if any"),
    Column("seq_len", "uint64", False, 7, True, "the step's sequence length: the record's own, else --seq-len"),
    Column("target_density", "float32", False, 14, False, "calculate_density of the gate (f32)"),
    Column("sparse", "bool", True, 6, False, "build_mask took the sparse path (else the full mask)"),
    Column("density", "float32", True, 11, True, "positions kept over seq_len squared (f32)"),
    Column("num_positions", "int64", True, 13, True, "positions in the mask"),
    Column("flops_ratio", "float32", True, 11, False, "estimated_flops_ratio of the mask (f32)"),
    Column("partitions", "int32", True, 10, False, "partitions of the mask (its boundaries)"),
    Column("boundary_tokens", "int32", True, 15, False, "boundary tokens of the mask"),
    Column("build_mask_peak_bytes", "int64", True, 21, False,
           "bytes requested by build_mask at its highest, over what was live when it began (no allocator "
           "overhead, no q, k, v)"),
    Column("attention_peak_bytes", "int64", True, 20, False,
           "the same for sparse_attention (the mask and q, k, v not counted)"),
    Column("step_peak_bytes", "int64", True, 15, True,
           "the highest heap use of the whole step (q, k, v, build_mask, sparse_attention) under the profile's "
           "allocator, headers and alignment included: with every block placed when the step fits, else the "
           "blocks' bytes added up"),
    Column("mask_bytes", "int64", True, 10, False, "bytes requested that the finished mask holds"),
    Column("fits", "bool", True, 5, True,
           "the step runs on a heap of the budget's size, every block placed by the profile's allocator"),
    Column("panic", "string", True, 0, True, "the panic of the step on the target (a debug build's overflow), if any"),
)
"""The fields of a replay record, in order."""
COLUMNS = tuple(c.name for c in RECORD)
"""Fields of a packet's record, in order."""
PACKET_COLUMNS = tuple(c.name for c in RECORD if not c.shared)
"""Fields that change with every packet."""
MASK_COLUMNS = tuple(c.name for c in RECORD if c.shared)
"""Fields shared by every packet with the same seq_len and (on the sparse path) partition count."""
ACCOUNTING = {c.name: c.doc for c in RECORD if c.name.endswith("_bytes")}
"""What each byte column counts (the header record carries it)."""


@dataclass
class Summary:
    """What a replay found over a whole trace."""

    packets: int = 0
    sparse: int = 0
    full: int = 0
    bad: int = 0
    panics: int = 0
    density_values: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    """The distinct mask densities seen, ascending, and how many packets had each
    (arrays: 12 bytes per distinct density)."""
    density_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    worst_peak: int | None = None
    worst_packet: int | None = None
    first_over_budget: int | None = None
    panic_messages: dict = field(default_factory=dict)

    def add_part(self, part: Part, offset: int) -> None:
        """Count the records of ``part``, the first of which is packet ``offset``."""
        self.bad += len(part.bad)
        if not part.n:
            return
        counts = np.bincount(part.inverse, minlength=len(part.masks))
        _, firsts = np.unique(part.inverse, return_index=True)  # every key of a part is used
        self.add_keys(offset, part.masks, counts, firsts)

    def add_keys(self, offset: int, masks: list, counts: np.ndarray, firsts: np.ndarray) -> None:
        """Count ``counts[k]`` packets of key ``masks[k]``, the first at ``offset + firsts[k]``."""
        values, weights = [], []
        for k in sorted((k for k in range(len(masks)) if counts[k]), key=lambda k: firsts[k]):
            mask, count, index = masks[k], int(counts[k]), offset + int(firsts[k])
            self.packets += count
            if mask["panic"] is not None:
                self.panics += count
                self.panic_messages.setdefault(mask["panic"], index)
            if mask["num_positions"] is None:
                continue
            self.sparse += count * bool(mask["sparse"])
            self.full += count * (not mask["sparse"])
            values.append(mask["density"])
            weights.append(count)
            peak = mask["step_peak_bytes"]
            if peak is not None and (self.worst_peak is None or peak > self.worst_peak
                                     or (peak == self.worst_peak and index < self.worst_packet)):
                self.worst_peak, self.worst_packet = peak, index
            if peak is not None and not mask["fits"] and (self.first_over_budget is None
                                                           or index < self.first_over_budget):
                self.first_over_budget = index
        self._add_densities(np.array(values, np.float32), np.array(weights, np.int64))

    def merge(self, other: "Summary", offset: int) -> None:
        """Add the summary of a later piece of the trace whose first packet is packet ``offset``."""
        self.packets += other.packets
        self.sparse += other.sparse
        self.full += other.full
        self.bad += other.bad
        self.panics += other.panics
        for message, index in other.panic_messages.items():
            self.panic_messages.setdefault(message, index + offset)
        if other.worst_peak is not None:
            index = other.worst_packet + offset
            if self.worst_peak is None or other.worst_peak > self.worst_peak or (
                    other.worst_peak == self.worst_peak and index < self.worst_packet):
                self.worst_peak, self.worst_packet = other.worst_peak, index
        if other.first_over_budget is not None and self.first_over_budget is None:
            self.first_over_budget = other.first_over_budget + offset
        self._add_densities(other.density_values, other.density_counts)

    def _add_densities(self, values: np.ndarray, counts: np.ndarray) -> None:
        if not len(values):
            return
        merged, inverse = np.unique(np.concatenate([self.density_values, values.astype(np.float32)]),
                                    return_inverse=True)
        total = np.zeros(len(merged), np.int64)
        np.add.at(total, inverse.reshape(-1), np.concatenate([self.density_counts, counts.astype(np.int64)]))
        self.density_values, self.density_counts = merged, total

    def density_quantiles(self) -> tuple:
        """(min, median, max) of the masks' densities (lower median), or Nones."""
        values = self.density_values
        if not values.size:
            return None, None, None
        seen = np.cumsum(self.density_counts)
        median = values[int(np.searchsorted(2 * seen, seen[-1]))]
        return values[0], median, values[-1]

    def as_dict(self) -> dict:
        lo, mid, hi = self.density_quantiles()
        return {
            "packets": self.packets, "sparse": self.sparse, "full": self.full, "bad_records": self.bad,
            "density_min": lo, "density_median": mid, "density_max": hi,
            "worst_step_peak_bytes": self.worst_peak, "worst_packet": self.worst_packet,
            "first_over_budget_packet": self.first_over_budget, "panics": self.panics,
            "panic_messages": [{"message": m, "first_packet": i} for m, i in self.panic_messages.items()],
        }


def record_schema(source: bool = False, with_packet: bool = False):
    """The ``pyarrow.Schema`` of replay records (:data:`RECORD`), with a leading
    ``source`` column and the packet's own fields (u32/u16) if asked."""
    import pyarrow as pa

    fields = [pa.field("source", pa.string())] if source else []
    fields += [pa.field(c.name, pa.type_for_alias(c.arrow), nullable=c.name not in ("index", "seq_len",
                                                                                     "target_density"))
               for c in RECORD]
    if with_packet:
        fields += [pa.field(name, pa.from_numpy_dtype(PACKET_DTYPE[name]), nullable=False) for name in FIELDS]
    return pa.schema(fields)


def part_table(part: Part, offset: int, source: bool = False, with_packet: bool = False):
    """A ``pyarrow.Table`` of a part's records, the first being packet ``offset``, in :func:`record_schema`."""
    import pyarrow as pa

    schema = record_schema(source, with_packet)
    take = pa.array(part.inverse)
    columns = {}
    if source:
        columns["source"] = pa.array([part.source] * part.n, pa.string())
    columns["index"] = np.arange(offset, offset + part.n, dtype=np.int64)
    if part.t is None:
        columns["t"] = pa.nulls(part.n, pa.float64())
    else:
        try:
            columns["t"] = pa.array(part.t, pa.float64())
        except pa.ArrowInvalid:  # an int that a double does not hold exactly: rounded, as serde reads it
            columns["t"] = pa.array([None if v is None else float(v) for v in part.t], pa.float64())
    columns["seq_len"] = part.seq_len
    columns["target_density"] = part.target_density
    for name in MASK_COLUMNS:
        kind = schema.field(name).type
        values = [None if v is None else (float(v) if pa.types.is_floating(kind) else v) for v in part.mask_column(name)]
        columns[name] = pa.array(values, kind).take(take)
    if with_packet:
        for name in FIELDS:
            columns[name] = np.ascontiguousarray(part.packets[name])
    arrays = [v if isinstance(v := columns[f.name], pa.Array) else pa.array(v, f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)
