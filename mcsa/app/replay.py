"""Replay traces of gate packets against a target profile: records per packet and a summary per trace.

The engine is columnar. A trace is read in batches of NumPy columns
(:class:`mcsa.app.traces.TraceReader`); ``calculate_density`` runs over a whole
batch in one jitted call; everything else a record holds depends only on
``seq_len`` and, on the sparse path, the partition count: it is computed once
per such key (kept in a bounded LRU cache) and spread to the packets with
``np.unique`` + inverse indexing. A batch's result is a :class:`Part`, which
the writers render (JSONL, CSV, table) or turn into a ``pyarrow.Table``.

Accounting of the byte columns: ``build_mask_peak_bytes``,
``attention_peak_bytes`` and ``mask_bytes`` count the bytes requested from the
allocator by ``build_mask`` and by ``sparse_attention`` alone;
``step_peak_bytes`` is the whole step (q, k, v, mask and attention) under the
profile's allocator, headers and alignment included, and is what ``fits``
compares with the heap budget.
"""

from __future__ import annotations

import os
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from firmware_model.profiles import Profile, profile_named
from firmware_model.profiles import heap_budget as profile_heap_budget
from firmware_model.step import step_figures
from mcsa.core._jit import jit
from mcsa.core.attention import MincutSparseAttention
from mcsa.core.checks import check_bool
from mcsa.core.density import density_kernel, schedule_args
from mcsa.core.mask import DEFAULT_POSITION_LIMIT, U16_END, takes_sparse_path
from mcsa.core.packets import PACKET_DTYPE, GatePacket, SparsityConfig

from . import interrupt
from .record import ACCOUNTING, COLUMNS, MASK_COLUMNS, SCHEMA_VERSION, part_table
from .traces import Batch, TraceError, TraceReader

CACHE_KEYS = 4096
"""Distinct (seq_len, partitions) results kept: memory stays flat on any trace."""
_FULL = np.uint64(U16_END)  # the key's partition part on the full path (no u16 count equals it)


@jit
def _densities(kind, min_density, max_density, dense_above, rules, lam, conc, parts, out):
    for i in range(lam.size):
        out[i] = density_kernel(kind, min_density, max_density, dense_above, rules, np.int64(lam[i]),
                                np.int64(conc[i]), np.int64(parts[i]))


@dataclass
class Part:
    """The records of one batch, as columns (index is added when writing).

    Attributes
    ----------
    source : str
    n : int
    t : list or None
        ``t`` as read, or None if no record has one.
    seq_len : numpy.ndarray
        uint64.
    target_density : numpy.ndarray
        float32.
    inverse : numpy.ndarray
        Each record's position in ``masks``.
    masks : list of dict
        The shared fields (:data:`MASK_COLUMNS`) of each distinct key; read-only.
    packets : numpy.ndarray
        The packets (:data:`mcsa.app.traces.PACKET_DTYPE`).
    bad : list
        ``(position, message)`` of the records skipped.
    done : int
        Bytes of the trace read so far.
    """

    source: str
    n: int
    t: list | None
    seq_len: np.ndarray
    target_density: np.ndarray
    inverse: np.ndarray
    masks: list
    packets: np.ndarray
    bad: list = field(default_factory=list)
    done: int = 0

    @classmethod
    def empty(cls, source: str) -> "Part":
        """No records."""
        return cls(source, 0, None, np.zeros(0, np.uint64), np.zeros(0, np.float32), np.zeros(0, np.int64), [],
                   np.zeros(0, PACKET_DTYPE))

    def mask_column(self, name: str) -> list:
        """Per-key values of one shared column."""
        return [m[name] for m in self.masks]


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

    Raises
    ------
    TypeError
        Naming the argument of a wrong type.
    ValueError
        If ``seq_len`` or ``dim`` is beyond the target's ``usize``, the budget is out of
        range for the target or its allocator, or no step at all can run in this
        configuration (a configuration error, before any record).
    """

    def __init__(self, profile: Profile, build: str, config: SparsityConfig, seq_len: int, dim: int,
                 heap_budget: int | None = None, position_limit: int = DEFAULT_POSITION_LIMIT):
        if not isinstance(profile, Profile):
            raise TypeError(f"profile must be a Profile, got {type(profile).__name__}")
        if not isinstance(config, SparsityConfig):
            raise TypeError(f"config must be a SparsityConfig, got {type(config).__name__}")
        self.profile = profile
        self.build = build
        self.config = config
        self.sim = MincutSparseAttention(config, profile.target(build), position_limit)
        self.bits = self.sim.target.usize_bits
        self.seq_len = self.sim.target.check_usize(seq_len, "seq_len")
        self.dim = self.sim.target.check_usize(dim, "dim")
        self.budget = profile_heap_budget(profile, heap_budget)
        self.position_limit = position_limit
        self._cache: OrderedDict = OrderedDict()
        self._schedule = schedule_args(config, self.sim.target)
        self.token = uuid.uuid4().hex
        """Names this replayer where copies of it are sent (a worker keeps the first, with its cache)."""
        probe = self._fields(1, int(_FULL), GatePacket())  # a configuration no step can run is no record's fault
        if isinstance(probe, Exception):
            raise ValueError(f"{profile.name}-{build} cannot run any step with this configuration: {probe}")

    def __getstate__(self):
        return {**self.__dict__, "_cache": OrderedDict()}

    def header(self) -> dict:
        """The first record of a JSONL output (and the Parquet metadata)."""
        return {
            "schema_version": SCHEMA_VERSION, "profile": self.profile.name, "build": self.build,
            "target": {"usize_bits": self.bits, "overflow": self.sim.target.overflow.value,
                       "expf": self.sim.target.expf.value},
            "config": self.config.to_dict(), "seq_len": self.seq_len, "dim": self.dim,
            "budget_bytes": self.budget, "allocator": self.profile.allocator.name, "columns": list(COLUMNS),
            "accounting": ACCOUNTING,
        }

    def mask_fields(self, values: tuple, seq_len: int) -> dict:
        """The shared fields of a packet given as its six field values (already
        validated), computed once per seq_len and partition count; treat as read-only.

        Raises
        ------
        ValueError
            If the mask cannot be simulated on this host (over the position limit).
        """
        lam, pc = values[0], values[4]
        fields = self._fields(seq_len, pc if takes_sparse_path(seq_len, pc, lam) else int(_FULL), GatePacket(*values))
        if isinstance(fields, Exception):
            raise fields
        return fields

    def _fields(self, seq_len: int, key_parts: int, gate: GatePacket):
        """The shared fields of a key, or the ValueError that refuses it (both cached)."""
        key = (seq_len, key_parts)
        fields = self._cache.get(key)
        if fields is None:
            try:
                fields = self._compute(gate, seq_len)
            except (ValueError, TypeError, OverflowError) as err:
                fields = ValueError(str(err))
            self._cache[key] = fields
            if len(self._cache) > CACHE_KEYS:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return fields

    def target_density(self, values: tuple) -> float:
        """``calculate_density`` of a packet given as its six field values (an f32 value)."""
        return density_kernel(*self._schedule, values[0], values[3], values[4])

    def target_densities(self, packets: np.ndarray) -> np.ndarray:
        """``calculate_density`` of every packet of a structured array, in one kernel call (float32)."""
        out = np.empty(len(packets), np.float32)
        _densities(*self._schedule, np.ascontiguousarray(packets["lambda"]),
                   np.ascontiguousarray(packets["boundary_concentration_q15"]),
                   np.ascontiguousarray(packets["partition_count"]), out)
        return out

    def _compute(self, gate: GatePacket, seq_len: int) -> dict:
        figures = step_figures(self.profile, self.build, self.config, gate, seq_len, self.dim, self.budget,
                               self.position_limit)
        return {name: figures[name] for name in MASK_COLUMNS}

    def record(self, index: int, gate: GatePacket, seq_len: int | None = None, t: float | None = None) -> dict:
        """The whole record of one packet (``panic`` set, mask fields None, if the build panics).

        Raises
        ------
        ValueError
            If ``seq_len`` is beyond the target's usize or the mask over the position limit.
        """
        values = gate.values()
        seq_len = self.seq_len if seq_len is None else self.sim.target.check_usize(seq_len, "seq_len")
        return {"index": index, "t": t, "seq_len": seq_len, "target_density": np.float32(self.target_density(values)),
                **self.mask_fields(values, seq_len)}

    def replay_batch(self, batch: Batch, skip_bad: bool) -> tuple[Part, TraceError | None]:
        """The records of a batch, and the error of its first bad record (None with
        ``skip_bad``, which moves the bad records to ``Part.bad`` instead)."""
        n = len(batch)
        seq = np.full(n, self.seq_len, np.uint64)
        if batch.seq_len is not None:
            seq[batch.seq_given] = batch.seq_len[batch.seq_given]
        packets = batch.packets
        errors = np.zeros(n, np.int64)  # 0 good, 1 seq_len beyond usize, k + 2 a refused key
        errors[seq > np.uint64(self.sim.target.usize_max)] = 1
        lam, parts = packets["lambda"], packets["partition_count"]
        key_parts = np.where(takes_sparse_path(seq, parts, lam), parts.astype(np.uint64), _FULL)
        ok = errors == 0
        rows = np.flatnonzero(ok)
        if batch.seq_len is None:
            uniq, first, inverse = np.unique(key_parts[ok], return_index=True, return_inverse=True)
            keys = [(self.seq_len, int(p)) for p in uniq]
        else:
            uniq, first, inverse = np.unique(np.stack([seq[ok], key_parts[ok]], axis=1), axis=0,
                                             return_index=True, return_inverse=True)
            keys = [(int(s), int(p)) for s, p in uniq]
        inverse = inverse.reshape(-1)
        first = rows[first]
        masks, messages = [], []
        for k, (s, p) in enumerate(keys):
            interrupt.check()  # a new step is planned and placed: up to a second each, so look between them
            fields = self._fields(s, p, GatePacket(*packets[first[k]].tolist()))
            if isinstance(fields, Exception):
                messages.append(str(fields))
                fields = None
            masks.append(fields)
        refused = np.array([m is None for m in masks], bool)
        if refused.any():
            codes = np.cumsum(refused) - 1 + 2
            errors[rows[refused[inverse]]] = codes[inverse[refused[inverse]]]
        bad_rows = np.flatnonzero(errors)
        bad = [(int(batch.positions[i]), self._message(batch, i, int(errors[i]), seq, messages)) for i in bad_rows]
        error = None
        keep = errors == 0
        if bad and not skip_bad:
            keep[bad_rows[0]:] = False
            error = TraceError(bad[0][1])
            bad = []
        if not keep.all():
            batch = batch.take(keep)
            seq = seq[keep]
            used, inverse = np.unique(inverse[keep[ok]], return_inverse=True)
            masks = [masks[k] for k in used]
        part = Part(batch.source, len(batch), batch.t, seq, self.target_densities(batch.packets),
                    inverse.reshape(-1).astype(np.int64), masks, batch.packets,
                    sorted(batch.bad + bad), batch.done)
        return part, error

    def _message(self, batch: Batch, i: int, code: int, seq: np.ndarray, messages: list) -> str:
        place = batch.where(i)
        if code == 1:
            return (f"{place}: seq_len {int(seq[i])} is beyond the target's usize "
                    f"(u{self.bits}, at most {self.sim.target.usize_max})")
        return f"{place}: {messages[code - 2]}"

    def replay(self, trace, fmt: str | None = None, skip_bad: bool = False, start: int = 0,
               end: int | None = None, first_line: int = 1, unknown: set | None = None) -> Iterator[Part]:
        """The parts of a trace (a path or a :class:`~mcsa.app.traces.TraceSource`), or
        of its byte range ``start..end``, in order.

        Raises
        ------
        TraceError
            At the first malformed record (after the parts before it), without ``skip_bad``.
        OSError
            If the trace cannot be read.
        """
        reader = TraceReader(trace, fmt, skip_bad, start, end, first_line)
        try:
            for batch in reader:
                interrupt.check()
                part, error = self.replay_batch(batch, skip_bad)
                if part.n or part.bad:
                    yield part
                if error is not None:
                    raise error
        finally:
            if unknown is not None:
                unknown.update(reader.unknown)


def replay_table(trace: str | os.PathLike, profile: Profile | str, seq_len: int, dim: int = 64,
                 build: str = "release", config: SparsityConfig | None = None, heap_budget: int | None = None,
                 with_packet: bool = False, skip_bad: bool = False, position_limit: int = DEFAULT_POSITION_LIMIT,
                 profiles_file: str | os.PathLike | None = None):
    """Replay one trace and return its records as a ``pyarrow.Table`` (``.to_pandas()`` for notebooks).

    Parameters
    ----------
    trace : str or os.PathLike
        A JSON Lines, CSV or 16-byte binary trace, optionally gzipped (told by its content; a
        name that says otherwise is refused).
    profile : Profile or str
        A target profile or its name (see ``mcsa targets``; ``profiles_file`` adds more).
    build : {"release", "debug"}
    seq_len, dim, config, heap_budget, position_limit
        As :class:`Replayer`.
    with_packet : bool
        Add the packet's own fields.
    skip_bad : bool
        Skip malformed records instead of raising.
    profiles_file : str or os.PathLike, optional

    Raises
    ------
    TraceError
        For a malformed record (naming file:line or byte offset) without ``skip_bad``.
    TypeError
        Naming the argument of a wrong type (a path that is not a str or os.PathLike, a
        profile that is neither a Profile nor a name, a flag that is not a bool).
    ValueError
        For an unknown profile or a bad argument.
    """
    import pyarrow as pa

    trace = _path_arg(trace, "trace")
    profiles_file = None if profiles_file is None else _path_arg(profiles_file, "profiles_file")
    with_packet, skip_bad = check_bool(with_packet, "with_packet"), check_bool(skip_bad, "skip_bad")
    if isinstance(profile, str):
        profile = profile_named(profile, profiles_file)
    replayer = Replayer(profile, build, config or SparsityConfig(), seq_len, dim, heap_budget, position_limit)
    tables, offset = [], 0
    for part in replayer.replay(trace, skip_bad=skip_bad):
        tables.append(part_table(part, offset, with_packet=with_packet))
        offset += part.n
    if not tables:
        tables.append(part_table(Part.empty(trace), 0, with_packet=with_packet))
    return pa.concat_tables(tables)


def _path_arg(value, what: str) -> str:
    """A path argument as a str; an int is not a path (``open`` would take it for a file descriptor)."""
    if isinstance(value, (str, os.PathLike)) and not isinstance(value, bytes):
        return os.fspath(value)
    raise TypeError(f"{what} must be a path (str or os.PathLike), got {type(value).__name__} {value!r:.40}")


__all__ = ["Part", "Replayer", "replay_table"]
