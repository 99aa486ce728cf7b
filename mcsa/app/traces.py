"""Reading recorded gate-packet traces: JSON Lines, CSV, raw 16-byte structs, any of them gzipped.

A trace is read in :class:`Batch` es of NumPy columns, in file order. Whole
batches are decoded and validated at once (``np.frombuffer`` for binary, msgspec
and orjson for JSON Lines); only a batch that holds a suspicious record goes through the
strict per-record path, so that a malformed record raises :class:`TraceError`
naming the file and the line (text) or byte offset (binary), or, with
``skip_bad``, is counted and skipped alone.

Parsing is as strict as serde: the JSON number grammar, finite ``t``, no
duplicate fields, ASCII digits in CSV integers, no nesting deeper than
serde_json's 128 levels. As Windows editors save them, CRLF line ends and a
UTF-8 byte order mark at the start of a text trace are accepted. Keys other than the packet's, ``seq_len`` and ``t``
are accepted (firmware logs carry extra fields) and collected in
:attr:`TraceReader.unknown` so that the caller can report them once.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import gzip
import io
import math
import os
import re
import select
import stat
import sys
import zlib
from array import array
from collections import Counter
from contextlib import suppress
from itertools import compress, count, repeat
from operator import attrgetter, itemgetter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import msgspec
import numpy as np
import orjson

from mcsa.core import jsonio
from mcsa.core.checks import check_uint
from mcsa.core.packets import FIELDS, PACKET_DTYPE, GatePacket

from . import interrupt

KNOWN_KEYS = FIELDS + ("seq_len", "t")
RECORD_BYTES = PACKET_DTYPE.itemsize
BATCH_RECORDS = 1 << 16
"""Records per batch: what bounds memory, whatever the trace length."""
MAX_FIELD = 131072
"""Longest CSV field accepted (Python's csv default limit)."""
MAX_LINE = 1 << 20
"""Longest text line read (bytes): a record with room for many extra fields."""
U64_MAX = (1 << 64) - 1
_INT_DIGITS = 24  # longer integer literals are out of range for every field, without converting them
_CSV_FLOAT = re.compile(r"[0-9.eE+\-]*")
_CSV_INT = re.compile(r"[0-9]*")
_LONG_DIGITS = re.compile(rb"[0-9]{20}")
_CSV_SIGNED = re.compile(r"-?[0-9]+")  # a sign only to say "out of range" rather than "not an integer"


class TraceError(ValueError):
    """A malformed trace; the message starts with ``file:line:`` or ``file: byte N:``."""


@dataclass(frozen=True)
class Record:
    """One packet of a trace (the record-at-a-time view of a :class:`Batch`).

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
        return where(self.source, self.position, self.binary)


def where(source: str, position: int, binary: bool) -> str:
    """``file:line`` or ``file: byte N``."""
    return f"{source}: byte {position}" if binary else f"{source}:{position}"


@dataclass
class Batch:
    """Consecutive good records of one trace as columns, and the bad ones skipped among them.

    Attributes
    ----------
    source : str
    binary : bool
        Positions are byte offsets (else line numbers).
    positions : numpy.ndarray
        int64 line number or byte offset of each record.
    packets : numpy.ndarray
        The packets, a structured array of :data:`PACKET_DTYPE`.
    seq_len : numpy.ndarray or None
        uint64 own ``seq_len`` of each record (0 where ``seq_given`` is False), or None if no record has one.
    seq_given : numpy.ndarray or None
    t : list or None
        Each record's ``t`` as read (int, float or None), or None if no record has one.
    bad : list
        ``(position, message)`` of the records skipped (only with ``skip_bad``).
    done : int
        Bytes of the file read once this batch is complete.
    """

    source: str
    binary: bool
    positions: np.ndarray
    packets: np.ndarray
    seq_len: np.ndarray | None = None
    seq_given: np.ndarray | None = None
    t: list | None = None
    bad: list = field(default_factory=list)
    done: int = 0

    def __len__(self) -> int:
        return len(self.positions)

    def where(self, i: int) -> str:
        return where(self.source, int(self.positions[i]), self.binary)

    def take(self, keep: np.ndarray) -> "Batch":
        """The records where ``keep`` (a bool array) holds, with the same skipped records."""
        return Batch(
            self.source, self.binary, self.positions[keep], self.packets[keep],
            None if self.seq_len is None else self.seq_len[keep],
            None if self.seq_given is None else self.seq_given[keep],
            None if self.t is None else [v for v, k in zip(self.t, keep.tolist()) if k],
            self.bad, self.done,
        )

    def records(self) -> Iterator[Record]:
        """The records one at a time."""
        seq = [None] * len(self) if self.seq_len is None else [
            int(s) if g else None for s, g in zip(self.seq_len.tolist(), self.seq_given.tolist())]
        t = [None] * len(self) if self.t is None else self.t
        for row, s, tt, pos in zip(self.packets.tolist(), seq, t, self.positions.tolist()):
            yield Record(row, s, tt, self.source, pos, self.binary)


_EXTENSIONS = ((".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "jsonl"), (".csv", "csv"), (".bin", "bin"))
_KINDS = {"jsonl": "JSON Lines", "csv": "CSV", "bin": "binary packets", "gzip": "a gzip file",
          "text": "text that is neither JSON Lines nor CSV", "parquet": "a Parquet file (what replay writes)",
          "npy": "a NumPy array (.npy)", "zip": "a zip archive (.npz, .zip)", "png": "a PNG image",
          "gguf": "a GGUF model"}
_FILES = {b"PAR1": "parquet", b"\x93NUMPY": "npy", b"PK\x03\x04": "zip", b"\x89PNG\r\n\x1a\n": "png", b"GGUF": "gguf"}
"""Magic numbers of files that are not traces (what else users keep next to them). A binary
trace's first packet may begin with any bytes: a name or ``--input-format`` that says
``bin`` is trusted over them."""
GZIP_MAGIC = b"\x1f\x8b"
SNIFF_BYTES = 4096
"""Bytes of a trace looked at to tell what it holds."""
SNIFF_HEAD = 512
"""Bytes of a stream waited for (or its end) before telling what it holds."""
_ODD = bytes(range(0x00, 0x09)) + bytes(range(0x0E, 0x20)) + b"\x7f"
"""Bytes that no text trace holds (control characters but tab, line ends and form feed)."""


def trace_format(path: str | Path) -> str | None:
    """``jsonl``, ``csv`` or ``bin`` as the file name says (a ``.gz`` suffix is looked
    through: ``.jsonl``/``.json``/``.ndjson``, ``.csv``, ``.bin``), or None."""
    name = Path(path).name.lower().removesuffix(".gz")
    return next((fmt for suffix, fmt in _EXTENSIONS if name.endswith(suffix)), None)


def sniff(head: bytes) -> str:
    """What the first bytes of a trace look like: ``gzip``, ``utf16`` (a UTF-16 byte-order
    mark), or a file of :data:`_FILES`
    (``parquet``, ``npy``...) by its magic number, ``empty``, and for the rest, text (at most one byte in 20 a control
    character or not UTF-8) or not: ``jsonl`` (the first line that is not blank opens a JSON
    object or array), ``csv`` (it is a header: commas and ``lambda``), ``text``
    (neither), ``bin`` (not text)."""
    if head[:2] == GZIP_MAGIC:
        return "gzip"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # (and UTF-32 LE, which starts the same)
        return "utf16"
    kind = next((kind for magic, kind in _FILES.items() if head.startswith(magic)), None)
    if kind is not None:
        return kind
    body = head.removeprefix(codecs.BOM_UTF8)
    if not body:
        return "empty"
    decoded = codecs.getincrementaldecoder("utf-8")("surrogateescape").decode(body, final=False)
    odd = sum(body.count(c) for c in _ODD) + sum(1 for c in decoded if "\udc80" <= c <= "\udcff")
    if odd * 20 > len(body):
        return "bin"
    line = next((line for line in body.splitlines() if line.strip()), b"").lstrip()
    if line.startswith((b"{", b"[")):
        return "jsonl"
    return "csv" if b"," in line and b"lambda" in line and b"{" not in line else "text"


@dataclass
class TraceSource:
    """A trace as found before any record is read: what it holds and how it can be read.

    Attributes
    ----------
    path : str
        As given (``-`` for stdin).
    fmt : {"jsonl", "csv", "bin"}
    compressed : bool
        gzip, told by its magic number.
    stream : bool
        Not a regular file (stdin, a pipe, a FIFO, a device): read once, in order.
    size : int or None
        Bytes of a regular file.
    handle : tuple or None
        ``(readable, raw)``: a ``stream`` source's decompressed (or raw) stream and the
        raw one, its first bytes read already (not pickled).
    """

    path: str
    fmt: str
    compressed: bool = False
    stream: bool = False
    size: int | None = None
    handle: object = field(default=None, repr=False, compare=False)

    def __getstate__(self):
        return {**self.__dict__, "handle": None}

    @property
    def splittable(self) -> bool:
        """Whether byte ranges of it can be read apart: a plain regular binary or JSON Lines file."""
        return not self.stream and not self.compressed and self.fmt in ("bin", "jsonl")

    def close(self) -> None:
        if self.handle is not None:
            self.handle[1].close()
            self.handle = None


def open_trace(path: str | Path, fmt: str | None = None, skip_bad: bool = False) -> TraceSource:
    """Find what a trace holds before reading any record, as stdin is: gzip by its
    magic number, then JSON Lines, CSV or binary by its first bytes. A format named by
    ``fmt`` or by the file's extension that contradicts the content is refused, as is a
    plain binary file whose size is not a whole number of packets (unless ``skip_bad``:
    the last, incomplete record is then a bad record). A stream (stdin, a pipe, a FIFO,
    process substitution, a device) is opened and its first bytes read here.

    Raises
    ------
    TraceError
        Naming the file and what its content looks like.
    OSError
        If it cannot be opened or read.
    """
    path = str(path)
    suffixes = Path(path).suffixes
    shown = "".join(suffixes[-2:]) if len(suffixes) > 1 and suffixes[-1].lower() == ".gz" else Path(path).suffix
    named, why = (fmt, f"--input-format {fmt}") if fmt else (trace_format(path), f"its extension {shown}")
    stream, size = path == "-", None
    if not stream:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            raise TraceError(f"{path}: a folder, not a trace")
        stream = not stat.S_ISREG(mode)
        size = None if stream else os.stat(path).st_size
    raw = _open_stream(path) if stream else open(path, "rb")
    try:
        head = raw.peek(SNIFF_BYTES)[:SNIFF_BYTES]
        compressed = head[:2] == GZIP_MAGIC
        if path.lower().endswith(".gz") and head and not compressed:
            raise TraceError(f"{path}: its extension .gz names a gzip file, but the content is not gzip-compressed "
                             f"(it looks like {_KINDS.get(sniff(head), 'nothing')})")
        readable = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
        if compressed:
            try:
                head = readable.peek(SNIFF_BYTES)[:SNIFF_BYTES]
            except (gzip.BadGzipFile, EOFError, zlib.error) as err:
                raise TraceError(f"{path}: corrupt gzip stream ({err or type(err).__name__}) at its start") from None
        fmt = _agree(path, named, why, sniff(head))
        if fmt == "bin" and size is not None and not compressed and size % RECORD_BYTES and not skip_bad:
            cut = size - size % RECORD_BYTES
            raise TraceError(f"{where(path, cut, True)}: incomplete record ({size - cut} of {RECORD_BYTES} bytes); "
                             f"the file size ({size:,} B) is not a multiple of {RECORD_BYTES}: refused before any record")
    except BaseException:
        raw.close()
        raise
    if not stream:
        raw.close()
    return TraceSource(path, fmt, compressed, stream, size, (readable, raw) if stream else None)


def _agree(path: str, named: str | None, why: str, looks: str) -> str:
    """The format of a trace named ``named`` (by ``why``) whose first bytes look like ``looks``."""
    if looks == "utf16":  # (a name or --input-format that says bin is trusted: a packet may begin so)
        if named == "bin":
            return named
        raise TraceError(f"{path}: the content is UTF-16 text (it starts with a UTF-16 byte-order mark, as Windows "
                         "PowerShell writes), and traces are UTF-8: save it as UTF-8")
    if looks == "empty":
        return named or "bin"
    if looks == "gzip":  # gzip inside gzip: read as it says, and let the reader judge
        looks = named or "bin"
    if named is None:
        if looks == "text" or looks in _FILES.values():
            raise TraceError(f"{path}: cannot tell the trace format: the content is {_KINDS[looks]}, not a trace "
                             "(JSON Lines opens with {, CSV with a header line); give --input-format")
        return looks
    if named == "bin" and looks in _FILES.values() and looks != "parquet":
        return named
    if looks == "parquet" or (named == "bin") != (looks == "bin") or looks not in ("text", named, "bin"):
        fix = "give the --input-format it holds, or none" if why.startswith("--") else "rename it, or give --input-format"
        raise TraceError(f"{path}: {why} names {_KINDS[named]}, but the content looks like {_KINDS[looks]}; {fix}")
    return named


class _UpToFault(io.RawIOBase):
    """A gzip stream that ends at its first fault (a corrupt or cut stream) after its last
    whole record: lines (``packet`` None) or ``packet``-byte records. Whole records go
    out as they are decompressed; at the fault the incomplete one is dropped and the
    stream ends, ``fault`` holding the error for the reader to name where the records
    stop. Pieces of 64 KiB: what came before the fault is not lost with it."""

    PIECE = 1 << 16

    def __init__(self, stream, packet: int | None):
        self.stream, self.packet = stream, packet
        self.ready, self.pending = bytearray(), bytearray()
        self.fault: BaseException | None = None
        self.done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self.ready and not self.done:
            try:
                piece = self.stream.read1(self.PIECE)  # (one read: what it decompressed is not lost with a fault)
            except (gzip.BadGzipFile, EOFError, zlib.error) as err:
                self.fault, self.done = err, True
                break
            if not piece:
                self.ready += self.pending
                self.done = True
                break
            self.pending += piece
            cut = (len(self.pending) // self.packet * self.packet if self.packet
                   else self.pending.rfind(b"\n") + 1)
            if len(self.pending) - cut > MAX_LINE:  # no record is that long: the reader refuses it, bounded
                cut = len(self.pending)
            self.ready += self.pending[:cut]
            del self.pending[:cut]
        n = min(len(buffer), len(self.ready))
        buffer[:n] = self.ready[:n]
        del self.ready[:n]
        return n


class _StreamInput(io.RawIOBase):
    """A file descriptor read as it comes (a pipe, a FIFO, a terminal, a device),
    waiting for data in slices so that a signal is seen while nothing comes."""

    def __init__(self, fd: int, close_fd: bool):
        super().__init__()
        self.fd, self.close_fd, self.count = fd, close_fd, 0
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN | select.POLLPRI)
        self._head = b""

    def prefetch(self, n: int) -> None:
        """Read up to ``n`` bytes ahead (fewer at the end), for a first peek that sees them all."""
        chunks, got = [], 0
        while got < n:
            chunk = bytearray(n - got)
            size = self._wait_read(chunk)
            if not size:
                break
            chunks.append(chunk[:size])
            got += size
        self._head = b"".join(chunks)

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.fd

    def tell(self) -> int:
        return self.count

    def readinto(self, buffer) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n], self._head = self._head[:n], self._head[n:]
        else:
            n = self._wait_read(buffer)
        self.count += n
        return n

    def _wait_read(self, buffer) -> int:
        while not self._poll.poll(int(interrupt.POLL * 1000)):
            interrupt.check()
        return os.readv(self.fd, [buffer])

    def close(self) -> None:
        if not self.closed and self.close_fd:
            os.close(self.fd)
        super().close()


def _open_stream(path: str):
    """A buffered reader of stdin (``-``) or of a file that is not a regular one."""
    if path == "-":
        try:
            fd = sys.stdin.fileno()
        except (AttributeError, ValueError, io.UnsupportedOperation):  # not a real file (CliRunner)
            raw = sys.stdin.buffer
            return raw if hasattr(raw, "peek") else io.BufferedReader(raw)
        raw = _StreamInput(fd, close_fd=False)
    else:
        raw = _StreamInput(interrupt.wait_for(lambda: os.open(path, os.O_RDONLY)), close_fd=True)  # (a FIFO: a writer)
    raw.prefetch(SNIFF_HEAD)
    return io.BufferedReader(raw, SNIFF_BYTES * 2)


def byte_ranges(source: TraceSource, chunk_bytes: int) -> list[tuple[int, int | None]]:
    """``(start, end)`` pieces of about ``chunk_bytes`` that cut a splittable trace on
    record boundaries (a multiple of 16 bytes; just after a newline), found by reading
    one line at each cut: the line numbers of a piece are counted from its start
    (:func:`shift_lines` puts them in place). A trace that cannot be split is one piece ``(0, None)``."""
    size = source.size or 0
    if not source.splittable or size <= chunk_bytes:
        return [(0, None)]
    if source.fmt == "bin":
        step = max(chunk_bytes // RECORD_BYTES, 1) * RECORD_BYTES
        return [(s, s + step if s + step < size else None) for s in range(0, size, step)]
    pieces, start = [], 0
    with open(source.path, "rb") as f:
        while start < size:
            f.seek(start + chunk_bytes)
            f.readline(MAX_LINE + 1)
            end = f.tell() if start + chunk_bytes < size else size
            pieces.append((start, end if end < size else None))
            start = end
    return pieces


def shift_lines(message: str, source: str, lines: int) -> str:
    """A message that starts ``source:LINE:`` with LINE moved on by ``lines`` (a
    piece's line numbers count from its own start)."""
    match = re.match(re.escape(source) + r":(\d+)", message)
    if match is None or not lines:
        return message
    return f"{source}:{int(match.group(1)) + lines}" + message[match.end():]


class TraceReader:
    """Batches of one trace, or of the byte range ``start..end`` of it.

    Parameters
    ----------
    trace : str or TraceSource
        A path (``-`` for stdin), opened with :func:`open_trace`, or a source found so.
    fmt : {"jsonl", "csv", "bin"}, optional
        With a path: the format it must hold (default: the one its name gives, else its content's).
    skip_bad : bool
        Count and skip malformed records instead of raising.
    start, end : int, optional
        A byte range cut on record boundaries (see :func:`byte_ranges`).
    first_line : int
        The line number of the first line at ``start``.
    batch_records : int

    Raises
    ------
    TraceError
        From :func:`open_trace`, and from iteration: a malformed record (without
        ``skip_bad``), a wrong CSV header, a corrupt gzip stream; always naming the
        file and line or offset.
    OSError
        If the file cannot be opened.
    """

    def __init__(self, trace, fmt: str | None = None, skip_bad: bool = False, start: int = 0,
                 end: int | None = None, first_line: int = 1, batch_records: int = BATCH_RECORDS):
        self.source = trace if isinstance(trace, TraceSource) else open_trace(trace, fmt, skip_bad)
        self.path, self.fmt, self.skip_bad = self.source.path, self.source.fmt, skip_bad
        self.start, self.end, self.first_line = start, end, first_line
        self.batch_records = batch_records
        self.unknown: set = set()
        self.position = start if self.fmt == "bin" else first_line
        """The line or byte offset being read, for messages."""

    def __iter__(self) -> Iterator[Batch]:
        source = self.source
        if source.stream:
            if source.handle is None:
                raise TraceError(f"{self.path}: a stream is read once; it was read already")
            (stream, raw), source.handle = source.handle, None
        else:
            raw = open(self.path, "rb")
            if not source.compressed:
                raw.seek(self.start)
            stream = gzip.GzipFile(fileobj=raw, mode="rb") if source.compressed else raw
        return self._read(stream, raw, close=raw is not sys.stdin.buffer)

    def _read(self, stream, raw, close: bool = True) -> Iterator[Batch]:
        guard = None
        if self.source.compressed:  # (a fault ends the records where it is, then is named there)
            guard = _UpToFault(stream, RECORD_BYTES if self.fmt == "bin" else None)
            stream = io.BufferedReader(guard, 1 << 16)
        try:
            if self.start == 0 and self.fmt != "bin" and stream.peek(3)[:3] == codecs.BOM_UTF8:  # saved on Windows
                self.start = len(stream.read(3))  # a byte range's length counts from here
            reader = {"bin": self._binary, "jsonl": self._jsonl, "csv": self._csv}[self.fmt]
            yield from reader(stream, raw)
            if guard is not None and guard.fault is not None:
                raise guard.fault
            self._check_not_cut(raw)
        except (gzip.BadGzipFile, EOFError, zlib.error) as err:
            unit = "byte" if self.fmt == "bin" else "line"
            raise TraceError(f"{self.path}: corrupt gzip stream ({err or type(err).__name__}) at {unit} "
                             f"{self.position:,} of the decompressed trace (the records before it were read)") from None
        finally:
            if close:
                raw.close()

    def _check_not_cut(self, raw) -> None:
        """A file cut while it was read (a log rotated or truncated) ends early without
        a sign in its bytes: where the reading stopped is compared with the end the
        file had when it was opened.

        Raises
        ------
        TraceError
            If the reading stopped short of that end.
        """
        expected = self.end if self.end is not None else self.source.size
        if self.source.stream or expected is None:
            return
        read = raw.tell()
        if read < expected:
            raise TraceError(f"{self.path}: the file was cut from {expected:,} to {os.fstat(raw.fileno()).st_size:,} "
                             f"bytes while it was replayed: the records after byte {read:,} are missing")

    def _limit(self) -> int | None:
        return None if self.end is None else self.end - self.start

    def _done(self, raw) -> int:
        try:
            return raw.tell()
        except (OSError, ValueError):
            return 0

    # binary ------------------------------------------------------------------------------------

    def _binary(self, stream, raw) -> Iterator[Batch]:
        offset, left = self.start, self._limit()
        self.position = offset
        while True:
            n = self.batch_records * RECORD_BYTES if left is None else min(self.batch_records * RECORD_BYTES, left)
            data = stream.read(n) if n else b""
            whole = len(data) // RECORD_BYTES * RECORD_BYTES
            if whole:
                packets = np.frombuffer(data, PACKET_DTYPE, whole // RECORD_BYTES)
                positions = offset + RECORD_BYTES * np.arange(len(packets), dtype=np.int64)
                yield Batch(self.path, True, positions, packets, done=self._done(raw))
            if len(data) != whole:
                message = (f"{where(self.path, offset + whole, True)}: incomplete record ({len(data) - whole} of "
                           f"{RECORD_BYTES} bytes); the file size is not a multiple of {RECORD_BYTES}")
                if not self.skip_bad:
                    raise TraceError(message)
                yield Batch(self.path, True, np.zeros(0, np.int64), np.zeros(0, PACKET_DTYPE),
                            bad=[(offset + whole, message)], done=self._done(raw))
            offset += whole
            self.position = offset
            if len(data) < n or not n:
                return
            if left is not None:
                left -= whole

    # JSON Lines --------------------------------------------------------------------------------

    def _lines(self, stream) -> Iterator[tuple[int, list, bytes]]:
        """``(first line number, lines, their text)`` in groups of about a batch.

        Raises
        ------
        TraceError
            At a line longer than :data:`MAX_LINE` (after the lines before it):
            no record is that long, and reading on could take all memory (``/dev/zero``).
        """
        line, left = self.first_line, self._limit()
        while left is None or left > 0:
            data = stream.read(1 << 22 if left is None else min(1 << 22, left))
            if data and not data.endswith(b"\n"):  # finish the last line (a range ends on a line end)
                data += stream.readline(MAX_LINE + 1)
            if not data:
                return
            if left is not None:
                left -= len(data)
            lines = io.BytesIO(data).readlines()
            long = (next(i for i, size in enumerate(map(len, lines)) if size > MAX_LINE)
                    if lines and max(map(len, lines)) > MAX_LINE else None)
            stop = len(lines) if long is None else long
            for i in range(0, stop, self.batch_records):
                group = lines[i: min(i + self.batch_records, stop)]
                yield line + i, group, data if len(group) == len(lines) else b"".join(group)
            if long is not None:
                self.position = line + long
                raise TraceError(f"{where(self.path, line + long, False)}: a line longer than {MAX_LINE:,} bytes; "
                                 "no record is that long")
            line += len(lines)
            self.position = line

    def _jsonl(self, stream, raw) -> Iterator[Batch]:
        for first, lines, text in self._lines(stream):
            blank = {i for i in compress(range(len(lines)), map(bytes.isspace, lines))
                     if not lines[i].strip(b" \t\r\n")}  # JSON's whitespace: a form feed is a bad record
            numbers = [first + i for i in range(len(lines)) if i not in blank] if blank else range(first, first + len(lines))
            lines = [text for i, text in enumerate(lines) if i not in blank] if blank else lines
            if lines:
                yield from self._collect(_fast_json(lines, text, self.unknown), lines, numbers, self._done(raw),
                                         lambda text, number: json_object(text, f"{self.path}:{number}"))

    def _collect(self, fast, items, numbers, done, slow, bad=()) -> Iterator[Batch]:
        """A batch from the fast decoder's columns, or record by record with ``slow``
        (which returns a values dict or raises TraceError) when the fast one gave up.
        Without ``skip_bad``, the good records before a bad one are yielded, then its error raised."""
        if fast is not None:
            packets, seq, given, t = fast
            positions = (np.arange(numbers.start, numbers.stop, dtype=np.int64) if isinstance(numbers, range)
                         else np.asarray(numbers, np.int64))
            yield Batch(self.path, False, positions, packets, seq, given, t, list(bad), done)
            return
        good, bad, records = [], list(bad), []
        for item, number in zip(items, numbers):
            try:
                values = slow(item, number)
                records.append(_record(values, f"{self.path}:{number}"))
                self.unknown.update(k for k in values if k not in KNOWN_KEYS)
                good.append(number)
            except TraceError as err:
                if not self.skip_bad:
                    if good:
                        yield _records_batch(self.path, good, records, [], done)
                    raise
                bad.append((number, str(err)))
        yield _records_batch(self.path, good, records, bad, done)

    # CSV ---------------------------------------------------------------------------------------

    def _csv(self, stream, raw) -> Iterator[Batch]:
        text = io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape", newline="")
        try:
            yield from self._csv_text(text, raw)
        finally:
            with suppress(ValueError):
                text.detach()  # (not closed with the wrapper: the caller closes it, after a look at its end)

    def _csv_text(self, text, raw) -> Iterator[Batch]:
        reader = csv.reader(self._bounded(text), strict=True)
        header = self._csv_row(reader)
        if header is None:
            return
        header = [h.strip() for h in header[1]]
        seen = Counter(header)  # (a dict: linear in the header's width, however wide)
        missing = [f for f in FIELDS if f not in seen]
        duplicate = sorted(h for h, n in seen.items() if n > 1)
        undecodable = not all(map(_valid_text, seen))
        if missing or duplicate or undecodable:
            parts = ([f"lacks {', '.join(missing)}"] if missing else []) + (
                [f"repeats {_listed(duplicate)}"] if duplicate else []) + (["is not UTF-8 text"] if undecodable else [])
            raise TraceError(f"{self.path}:1: CSV header {'; '.join(parts)}; expected {', '.join(FIELDS)} "
                             "(and optional seq_len, t)")
        self.unknown.update(h for h in seen if h not in KNOWN_KEYS)
        columns = [header.index(k) if k in seen else None for k in KNOWN_KEYS]
        while True:
            rows, numbers, bad = [], [], []
            while len(rows) < self.batch_records:
                row = self._csv_row(reader, bad)
                if row is None:
                    break
                if row[1]:
                    numbers.append(row[0])
                    rows.append(row[1])
            if not rows and not bad:
                return
            yield from self._collect(_fast_csv(rows, columns, len(header)), rows, numbers, self._done(raw),
                                     lambda row, number: _csv_values(header, row, f"{self.path}:{number}"), bad)
            if len(rows) < self.batch_records and not bad:
                return

    def _bounded(self, text) -> Iterator[str]:
        """The lines of ``text``, refusing one longer than :data:`MAX_LINE` (see :meth:`_lines`)."""
        for number in count(self.first_line):
            chunk = text.readline(MAX_LINE + 1)
            if len(chunk) > MAX_LINE:
                raise TraceError(f"{where(self.path, number, False)}: a line longer than {MAX_LINE:,} characters; "
                                 "no record is that long")
            if not chunk:
                return
            yield chunk

    def _csv_row(self, reader, bad=None):
        """``(line, fields)`` of the next row, None at the end; a row csv cannot
        read (an over-long field, an unterminated quote) is a TraceError or, with
        ``skip_bad``, appended to ``bad``."""
        while True:
            line = self.position = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return None
            except csv.Error as err:
                reason = str(err)
                if "field larger" in reason:
                    reason = f"a field is longer than {MAX_FIELD:,} characters"
                message = f"{self.path}:{line}: not valid CSV ({reason})"
                if bad is None or not self.skip_bad:
                    raise TraceError(message) from None
                bad.append((line, message))
                continue
            return line, row


def _listed(names, shown: int = 10, label=str) -> str:
    """``label`` of the first ``shown`` names, and how many more there are."""
    names = list(names)
    more = f" and {len(names) - shown:,} more" if len(names) > shown else ""
    return ", ".join(map(label, names[:shown])) + more


def unknown_note(source: str, keys) -> str | None:
    """One note for all the keys of a trace that are no packet field, ``seq_len`` or
    ``t`` (firmware logs carry others), with a did-you-mean for those close to one; None if there are none."""
    if not keys:
        return None

    def label(key: str) -> str:
        close = difflib.get_close_matches(key, KNOWN_KEYS, 1, 0.75)
        return f"`{key}`" + (f" (did you mean `{close[0]}`?)" if close else "")

    noun = "key" if len(keys) == 1 else "keys"
    return f"{source}: {len(keys):,} unknown {noun} ignored: {_listed(sorted(keys), label=label)}"


def _valid_text(text: str) -> bool:
    """No undecodable byte (read with ``surrogateescape``)."""
    return text.isascii() or not any("\udc80" <= c <= "\udcff" for c in text)


def _records_batch(source: str, numbers: list, records: list, bad: list, done: int) -> Batch:
    """A batch from checked records ``(values, seq_len, t)``."""
    packets = np.array([r[0] for r in records], PACKET_DTYPE) if records else np.zeros(0, PACKET_DTYPE)
    seq = [r[1] for r in records]
    t = [r[2] for r in records]
    given = np.array([s is not None for s in seq], bool)
    has_seq = bool(given.any())
    seq_arr = np.array([0 if s is None else s for s in seq], np.uint64) if has_seq else None
    return Batch(source, False, np.asarray(numbers, np.int64), packets, seq_arr, given if has_seq else None,
                 t if any(v is not None for v in t) else None, bad, done)


# The fast decoders: columns, or None when anything looks unusual -------------------------------

def _numeric(values: list, kinds: str):
    """``values`` (no None) as an array if NumPy types them all as ``kinds``, else None."""
    try:
        arr = np.array(values)
    except (ValueError, OverflowError, TypeError):
        return None
    return arr if arr.dtype.kind in kinds and arr.ndim == 1 else None


def _optional(values: list, kinds: str):
    """``(array, given)`` of a column that may hold None; ``(None, None)`` if
    all are None; None if a value is unusual."""
    missing = values.count(None)
    if missing == len(values):
        return None, None
    if missing:
        given = np.array([v is not None for v in values], bool)
        arr = _numeric([v for v in values if v is not None], kinds)
        if arr is None:
            return None
        full = np.zeros(len(values), arr.dtype)
        full[given] = arr
        return full, given
    arr = _numeric(values, kinds)
    return None if arr is None else (arr, np.ones(len(values), bool))


def _packets(columns: list) -> np.ndarray | None:
    """The six field columns as packets, or None if one is not all in range
    (``array`` takes exactly the non-negative ints below 2**64)."""
    packets = np.empty(len(columns[0]), PACKET_DTYPE)
    for name, values in zip(FIELDS, columns):
        try:
            arr = np.frombuffer(array("Q", values), np.uint64)
        except (TypeError, OverflowError):
            return None
        if len(arr) and arr.max() > np.iinfo(PACKET_DTYPE[name]).max:
            return None
        packets[name] = arr
    return packets


def _finite(t: list) -> bool:
    """Every value of ``t`` is a finite number or None."""
    column = _optional(t, "iuf")
    return column is not None and (column[0] is None or column[0].dtype.kind != "f" or bool(np.isfinite(column[0]).all()))


_FLAT_NAMES = tuple("lambda_" if name == "lambda" else name for name in FIELDS)
_Flat = msgspec.defstruct(
    "_Flat",
    [(attr, int, msgspec.field(name=name)) for attr, name in zip(_FLAT_NAMES, FIELDS)]
    + [("seq_len", int | None, None), ("t", int | float | None, None)],
    forbid_unknown_fields=True, gc=False,
)
"""A record of the known keys alone, ints where ints go: the first, typed decoder's type."""
_FLAT = msgspec.json.Decoder(_Flat).decode
_FLAT_FIELDS = tuple(map(attrgetter, _FLAT_NAMES))


def _fast_json(lines: list, text: bytes, unknown: set):
    """Columns of JSON Lines, or None if a line is unusual: not a flat object of
    the known keys and others, a bool, a repeated key, or a value out of range.
    ``text`` holds the lines and maybe blank ones.

    msgspec decodes lines of the known keys alone straight into typed records
    (twice orjson's speed); a batch where that fails or a key is repeated or null
    (one colon a key, over the whole batch) goes to orjson, which also takes other keys."""
    try:
        flat = list(map(_FLAT, lines))
    except msgspec.DecodeError:
        return _any_json(lines, text, unknown)
    seq = list(map(attrgetter("seq_len"), flat))
    t = list(map(attrgetter("t"), flat))
    if text.count(b":") != 8 * len(flat) - seq.count(None) - t.count(None):
        return _any_json(lines, text, unknown)
    return _columns([list(map(get, flat)) for get in _FLAT_FIELDS], seq, t)


def _any_json(lines: list, text: bytes, unknown: set):
    """:func:`_fast_json` through orjson: other keys allowed (and added to ``unknown``)."""
    try:
        objects = list(map(orjson.loads, lines))
        columns = [list(map(itemgetter(k), objects)) for k in FIELDS]
        seq = list(map(dict.get, objects, repeat("seq_len")))
        t = list(map(dict.get, objects, repeat("t")))
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return None
    # over the whole batch at once: one colon per key (a repeated key has two), one brace per line
    # (no nesting), no array, no true/false, no 20-digit run (orjson reads an int beyond 64 bits as a float)
    keys = sum(map(len, objects))
    if (text.count(b":") != keys or text.count(b"{") != len(lines) or b"[" in text or b"true" in text
            or b"false" in text or _LONG_DIGITS.search(text)):
        return None
    if keys != 6 * len(objects) + len(seq) - seq.count(None) + len(t) - t.count(None):
        for o in objects:
            unknown.update(k for k in o if k not in KNOWN_KEYS)
    return _columns(columns, seq, t)


def _columns(columns: list, seq: list, t: list):
    packets = _packets(columns)
    if packets is None:
        return None
    seq_col = _optional(seq, "iu")
    if seq_col is None or (seq_col[0] is not None and len(seq_col[0]) and seq_col[0].min() < 0):
        return None
    if t.count(None) == len(t):
        t = None
    elif not _finite(t):
        return None
    seq_arr, given = seq_col
    return packets, None if seq_arr is None else seq_arr.astype(np.uint64), given, t


def _fast_csv(rows: list, columns: list, width: int):
    """Columns of CSV rows if every row is well formed with plain ASCII digits, else None."""
    if not rows or any(len(r) != width for r in rows):
        return None if rows else (np.zeros(0, PACKET_DTYPE), None, None, None)
    cells = []
    for k, j in zip(KNOWN_KEYS, columns):
        if j is None:
            cells.append(None)
            continue
        col = [r[j] for r in rows]
        joined = "".join(col)
        if not (_CSV_FLOAT if k == "t" else _CSV_INT).fullmatch(joined) or max(map(len, col)) > 20:
            return None
        if k in FIELDS and not all(col):
            return None
        cells.append(col)
    try:
        ints = [[int(v) for v in c] for c in cells[:6]]
        seq = [None] * len(rows) if cells[6] is None else [int(v) if v else None for v in cells[6]]
        t = [None] * len(rows) if cells[7] is None else [float(v) if v else None for v in cells[7]]
    except ValueError:
        return None
    return _columns(ints, seq, t)


# The strict slow path: one record, exact messages -----------------------------------------------


def json_object(line: str | bytes, where: str) -> dict:
    """One JSON Lines record, parsed as strictly as serde_json; it must be an object.

    Raises
    ------
    TraceError
        ``where: not UTF-8 text``, ``where: not JSON (...)``, ``where: ... nested deeper than 128 levels``,
        ``where: a record must be a JSON object``.
    """
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as err:
            raise TraceError(f"{where}: not UTF-8 text ({err.reason} at byte {err.start} of the line)") from None
    try:
        values = jsonio.loads(line, where)
    except ValueError as err:
        raise TraceError(str(err)) from None
    if not isinstance(values, dict):
        raise TraceError(f"{where}: a record must be a JSON object, got {type(values).__name__}")
    return values


def _csv_values(header: list, row: list, where: str) -> dict:
    if len(row) != len(header):
        raise TraceError(f"{where}: {len(row)} fields, the header has {len(header)}")
    if not all(_valid_text(v) for v in row):
        raise TraceError(f"{where}: not UTF-8 text")
    values = {name: _csv_value(name, text, where) for name, text in zip(header, row) if name in KNOWN_KEYS}
    missing = [f for f in FIELDS if values[f] is None]
    if missing:
        raise TraceError(f"{where}: missing field(s): {', '.join(missing)}")
    return values


def _csv_value(name: str, text: str, where: str):
    text = text.strip()
    if text == "":
        return None
    if name == "t":
        if not _CSV_FLOAT.fullmatch(text) or len(text) > 400:
            raise TraceError(f"{where}: t must be a finite number, got {text[:40]!r}")
        try:
            return jsonio.finite_float(text)
        except ValueError:
            raise TraceError(f"{where}: t must be a finite number, got {text[:40]!r}") from None
    if not _CSV_SIGNED.fullmatch(text):
        raise TraceError(f"{where}: {name} must be an integer, got {text[:40]!r} (ASCII digits only)")
    if len(text) > _INT_DIGITS:
        raise TraceError(f"{where}: {name} of {len(text.lstrip('-')):,} digits is out of range")
    return int(text)


def _record(values: dict, where: str) -> tuple:
    """``(packet values, seq_len, t)`` of a parsed record, checked."""
    try:
        fields = GatePacket.values_from_dict(values)
        seq_len = values.get("seq_len")
        if seq_len is not None:
            seq_len = check_uint(seq_len, "seq_len", U64_MAX)
        t = values.get("t")
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t)):
            raise TypeError(f"t must be a finite number, got {type(t).__name__} {t!r}")
    except (TypeError, ValueError) as err:
        raise TraceError(f"{where}: {err}") from None
    return fields, seq_len, t


def read_trace(path: str | Path, skip_bad: bool = False, fmt: str | None = None) -> Iterator[Record | TraceError]:
    """Every packet of a trace, in order, one at a time (see :class:`TraceReader`
    for the batches); with ``skip_bad``, a malformed record is yielded as its
    :class:`TraceError` and reading goes on.

    Raises
    ------
    TraceError
        For malformed input, naming the file and line or byte offset.
    OSError
        If the file cannot be opened.
    """
    for batch in TraceReader(str(path), fmt, skip_bad):
        bad = iter(sorted(batch.bad))
        pending = next(bad, None)
        for record in batch.records():
            while pending is not None and pending[0] < record.position:
                yield TraceError(pending[1])
                pending = next(bad, None)
            yield record
        while pending is not None:
            yield TraceError(pending[1])
            pending = next(bad, None)
