"""Reading recorded gate-packet traces: JSON Lines, CSV, raw 16-byte structs, any of them gzipped.

A trace yields :class:`Record` s in file order. Malformed input raises
:class:`TraceError` naming the file and the line (text) or byte offset (binary).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .packets import GatePacket, check_uint

FIELDS = ("lambda", "lambda_prev", "boundary_edges", "boundary_concentration_q15", "partition_count", "flags")
BINARY_DTYPE = np.dtype([
    ("lambda", "<u4"), ("lambda_prev", "<u4"), ("boundary_edges", "<u2"),
    ("boundary_concentration_q15", "<u2"), ("partition_count", "<u2"), ("flags", "<u2"),
])
"""The ``repr(C)`` GatePacket: 16 bytes, little-endian, no padding."""
FORMATS = ("jsonl", "csv", "bin")


class TraceError(ValueError):
    """A malformed trace; the message starts with ``file:line:`` or ``file: byte N:``."""


@dataclass(frozen=True)
class Record:
    """One packet of a trace.

    Attributes
    ----------
    values : tuple
        The six GatePacket fields in struct order, each in range for its type.
    seq_len : int or None
        The record's own ``seq_len``, if it carries one.
    t : float or None
        Its timestamp, if any.
    source : str
        The file.
    position : int
        Line number (text) or byte offset (binary).
    binary : bool
    """

    values: tuple
    seq_len: int | None
    t: float | None
    source: str
    position: int
    binary: bool = False

    @property
    def gate(self) -> GatePacket:
        return GatePacket(*self.values)

    @property
    def where(self) -> str:
        """``file:line`` or ``file: byte N``, for messages."""
        return f"{self.source}: byte {self.position}" if self.binary else f"{self.source}:{self.position}"


def trace_format(path: str | Path) -> str:
    """``jsonl``, ``csv`` or ``bin`` from the file name (a ``.gz`` suffix is looked through).

    Raises
    ------
    TraceError
        If the extension is none of ``.jsonl``/``.json``/``.ndjson``, ``.csv``, ``.bin``.
    """
    name = Path(path).name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for suffix, fmt in ((".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "jsonl"), (".csv", "csv"), (".bin", "bin")):
        if name.endswith(suffix):
            return fmt
    raise TraceError(f"{path}: cannot tell the trace format; name it .jsonl, .csv or .bin (optionally .gz)")


def _open(path: Path):
    raw = open(path, "rb")
    if path.name.lower().endswith(".gz"):
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw
    return raw, raw


def _record(values: dict, path: Path, line: int) -> Record:
    where = f"{path}:{line}"
    try:
        fields = GatePacket.values_from_dict(values)
        seq_len = values.get("seq_len")
        if seq_len is not None:
            seq_len = check_uint(seq_len, "seq_len", (1 << 64) - 1)
        t = values.get("t")
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float))):
            raise TypeError(f"t must be a number, got {type(t).__name__} {t!r}")
    except (TypeError, ValueError) as err:
        raise TraceError(f"{where}: {err}") from None
    return Record(fields, seq_len, t, str(path), line)


def json_object(line: str, where: str) -> dict:
    """One JSON Lines record, which must be an object.

    Raises
    ------
    TraceError
        ``where: not JSON (...)`` or ``where: a record must be a JSON object``.
    """
    try:
        values = json.loads(line)
    except json.JSONDecodeError as err:
        raise TraceError(f"{where}: not JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(values, dict):
        raise TraceError(f"{where}: a record must be a JSON object, got {type(values).__name__}")
    return values


def _json_record(line: str, path: Path, number: int) -> Record:
    return _record(json_object(line, f"{path}:{number}"), path, number)


def _jsonl(path: Path, stream, skip_bad: bool) -> Iterator[Record | TraceError]:
    for number, line in enumerate(io.TextIOWrapper(stream, encoding="utf-8"), 1):
        if line.strip():
            yield _guarded(_json_record, skip_bad, line, path, number)


def _guarded(parse, skip_bad: bool, *args):
    """``parse(*args)``, or with ``skip_bad`` the TraceError it raised."""
    try:
        return parse(*args)
    except TraceError as err:
        if skip_bad:
            return err
        raise


def _csv_value(name: str, text: str, where: str):
    text = text.strip()
    if text == "":
        return None
    try:
        return float(text) if name == "t" else int(text)
    except ValueError:
        raise TraceError(f"{where}: {name} must be {'a number' if name == 't' else 'an integer'}, got {text!r}") from None


def _csv_record(header: list, row: list, path: Path, number: int) -> Record:
    where = f"{path}:{number}"
    if len(row) != len(header):
        raise TraceError(f"{where}: {len(row)} fields, the header has {len(header)}")
    values = {name: _csv_value(name, text, where) for name, text in zip(header, row)}
    missing = [f for f in FIELDS if values[f] is None]
    if missing:
        raise TraceError(f"{where}: missing field(s): {', '.join(missing)}")
    return _record(values, path, number)


def _csv(path: Path, stream, skip_bad: bool) -> Iterator[Record | TraceError]:
    reader = csv.reader(io.TextIOWrapper(stream, encoding="utf-8", newline=""))
    header = next(reader, None)
    if header is None:
        return
    header = [h.strip() for h in header]
    missing = [f for f in FIELDS if f not in header]
    unknown = [h for h in header if h not in FIELDS + ("seq_len", "t")]
    if missing or unknown:
        parts = ([f"lacks {', '.join(missing)}"] if missing else []) + ([f"has unknown {', '.join(unknown)}"] if unknown else [])
        raise TraceError(f"{path}:1: CSV header {'; '.join(parts)}; expected {', '.join(FIELDS)} (and optional seq_len, t)")
    for row in reader:
        if row:
            yield _guarded(_csv_record, skip_bad, header, row, path, reader.line_num)


def read_binary_chunks(path: str | Path, chunk_records: int = 1 << 16) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first_byte_offset, records)`` of a ``.bin`` trace as structured arrays
    of :data:`BINARY_DTYPE`.

    Raises
    ------
    TraceError
        For a size that is not a multiple of 16 (naming the incomplete record's
        offset) or a corrupt gzip stream.
    """
    path = Path(path)
    stream, raw = _open(path)
    offset = 0
    size = BINARY_DTYPE.itemsize
    with raw:
        while True:
            data = _read(path, stream, chunk_records * size)
            whole = len(data) // size * size
            if whole:
                yield offset, np.frombuffer(data[:whole], BINARY_DTYPE)
            if len(data) != whole:
                raise TraceError(f"{path}: byte {offset + whole}: incomplete record "
                                 f"({len(data) - whole} of {size} bytes); the file size is not a multiple of {size}")
            if len(data) < chunk_records * size:
                return
            offset += whole


def _read(path: Path, stream, n: int) -> bytes:
    try:
        return stream.read(n)
    except (gzip.BadGzipFile, EOFError, zlib.error, OSError) as err:
        raise TraceError(f"{path}: corrupt gzip stream ({err or type(err).__name__})") from None


def read_trace(path: str | Path, skip_bad: bool = False, progress=None) -> Iterator[Record | TraceError]:
    """Every packet of a trace, in order.

    With ``skip_bad``, a malformed record (or a trailing incomplete binary one)
    is yielded as its :class:`TraceError` and reading goes on; a wrong CSV
    header, text that is not UTF-8 and a corrupt gzip stream still stop it.

    Raises
    ------
    TraceError
        For malformed input, naming the file and line or byte offset.
    OSError
        If the file cannot be opened.

    ``progress``, if given, is called now and then with the bytes of the file read so far.
    """
    path = Path(path)
    fmt = trace_format(path)
    if progress is not None:
        yield from _reporting(read_trace(path, skip_bad), path, progress)
        return
    if fmt == "bin":
        try:
            for offset, chunk in read_binary_chunks(path):
                source = str(path)
                for i, row in enumerate(chunk.tolist()):  # u32/u16 struct fields: in range by construction
                    yield Record(row, None, None, source, offset + 16 * i, True)
        except TraceError as err:
            if not skip_bad or "incomplete record" not in str(err):
                raise
            yield err
        return
    stream, raw = _open(path)
    with raw:
        try:
            yield from (_jsonl if fmt == "jsonl" else _csv)(path, stream, skip_bad)
        except (gzip.BadGzipFile, EOFError, zlib.error) as err:
            raise TraceError(f"{path}: corrupt gzip stream ({err or type(err).__name__})") from None
        except UnicodeDecodeError as err:
            raise TraceError(f"{path}: not UTF-8 text ({err.reason})") from None


def _reporting(records, path: Path, progress):
    size = path.stat().st_size
    records = iter(records)
    for n, record in enumerate(records, 1):
        if n % 4096 == 0:
            progress(min(size, _position(record, size, n)))
        yield record
    progress(size)


def _position(record, size: int, n: int) -> int:
    """Bytes read, from a binary record's offset, else estimated from the record count."""
    if isinstance(record, Record) and record.binary:
        return record.position
    return size * n // max(n + 4096, 1) if size else 0
