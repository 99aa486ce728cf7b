"""Replay records out: JSON Lines, CSV, a table, one Parquet file, or a Parquet dataset folder.

The text writers render a part at a time (:class:`TextWriter`): what a key's
records share is rendered once per key, each distinct density once, and the
write of one part runs on a thread while the next is read and rendered. Parquet
goes out one row group per part, to one file (:class:`ParquetWriter`) or, for
``-o DIR``, to a dataset folder (:class:`Dataset`, any path or URL fsspec
understands) that the fleet's workers write into directly.

Every column comes from :data:`mcsa.app.record.RECORD`: its name, its Arrow
type, its place in the table view and what it counts.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import uuid
from typing import TYPE_CHECKING

import numpy as np
import orjson

from mcsa.core.jsonio import dumps, jsonable
from mcsa.core.words import plural
from mcsa.core.packets import FIELDS, shortest_f32

from . import interrupt
from .record import RECORD, SCHEMA_VERSION, part_table, record_schema

if TYPE_CHECKING:  # (the simulator: loaded by the replay, not by the command line's options)
    from .replay import Part

RENDERED_KEYS = 4096
"""Keys whose rendered mask fields a writer keeps: memory stays flat."""
DENSITY_TEXTS = 1 << 17
"""Distinct target densities whose text a writer keeps (about 130 bytes each)."""
HEADER_KEY, SUMMARY_KEY = "mcsa.replay.header", "mcsa.replay.summary"
"""Parquet key-value metadata: the header record and a trace's summary."""
NARROW_FLEET = ("packets", "panics", "bad_records", "worst_step_peak_bytes", "first_over_budget_packet")
WIDE_FLEET = ("packets", "sparse", "full", "panics", "bad_records", "worst_step_peak_bytes", "worst_packet",
              "first_over_budget_packet")


def table_view(wide: bool) -> tuple:
    """The columns the table shows: those that fit 100 columns, or all with ``wide``."""
    return tuple(c for c in RECORD if wide or c.narrow)


def cell(value) -> str:
    value = jsonable(value)
    return "-" if value is None else str(value)


def _f32(value: float) -> str:
    if math.isfinite(value):
        return shortest_f32(value)
    return json.dumps(jsonable(np.float32(value)))


def _f32s(values: np.ndarray) -> list:
    """:func:`_f32` of each value; NumPy's shortest repr is the same text for
    0.0001 <= |v| < 1 and renders those in C."""
    text = values.astype(str).tolist()
    plain = ((np.abs(values) >= np.float32(1e-4)) & (np.abs(values) < 1)).tolist()
    return [t if p else _f32(float(v)) for t, p, v in zip(text, plain, values.tolist())]


def numbers(values: list) -> list:
    """``str`` of each int, ``repr`` of each float,
    ``"null"`` for None, as one-record rendering gives them. orjson prints them all
    in one call; its shortest float text is repr's but for the exponent form (repr
    writes ``1e-05`` and ``1e+16``; orjson ``0.00001``, and ``1e16`` before 3.11.7),
    so a text with an exponent or below 1e-4 is repr's instead."""
    try:
        text = orjson.dumps(values)[1:-1].decode()
    except orjson.JSONEncodeError:  # an int beyond 64 bits
        return ["null" if v is None else repr(v) for v in values]
    texts = text.split(",") if text else []
    if "e" in text or "0.0000" in text:
        texts = [repr(v) if ("e" in s or "0.0000" in s) else s for v, s in zip(values, texts)]
    return texts


def _interleave(columns: list, n: int) -> str:
    """The concatenation, record after record, of ``columns``: each either one
    text for every record or a list of ``n`` texts."""
    merged = []
    for column in columns:
        if isinstance(column, str) and merged and isinstance(merged[-1], str):
            merged[-1] += column
        else:
            merged.append(column)
    out = [None] * (len(merged) * n)
    for j, column in enumerate(merged):
        out[j::len(merged)] = [column] * n if isinstance(column, str) else column
    return "".join(out)


class _Background:
    """One write at a time on a daemon thread (a write stuck on a pipe nobody reads
    never keeps the process from ending); waits look for a signal in slices."""

    def __init__(self):
        self._thread, self._error = None, None

    def submit(self, write, text: str) -> None:
        self.wait()
        self._thread = threading.Thread(target=self._run, args=(write, text), daemon=True)
        self._thread.start()

    def _run(self, write, text: str) -> None:
        try:
            write(text)
        except BaseException as err:  # noqa: BLE001 (raised by wait, in the caller's thread)
            self._error = err

    def wait(self) -> None:
        """Wait for the write in flight; raise its error."""
        thread = self._thread
        if thread is None:
            return
        while thread.is_alive():
            thread.join(interrupt.POLL)
            interrupt.check()
        self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise error


class TextWriter:
    """Records out as JSON Lines, CSV or a table, a part at a time, in one write per
    part that a thread does while the next part is read and rendered (the disk and
    the parser overlap; one part in flight). What a key's records share is rendered
    once per key, each distinct density once. :meth:`close` waits for the last write
    and raises its error.

    Parameters
    ----------
    out : file
        A text stream.
    fmt : {"jsonl", "csv", "table"}
    header : dict
        The header record (JSON Lines' first line; its ``columns`` are CSV's header).
    source : bool
        Lead each record with its trace (several traces in one output).
    with_packet : bool
        End each record with the packet's own fields.
    wide : bool
        The table with every column (default: those that fit 100 columns).
    """

    def __init__(self, out, fmt: str, header: dict, source: bool, with_packet: bool, wide: bool = False):
        self.out, self.fmt, self.source, self.with_packet = out, fmt, source, with_packet
        self.view = table_view(wide)
        self._rendered: dict = {}
        self._densities: dict = {}
        self._background = _Background()
        if fmt == "jsonl":
            out.write(dumps(header) + "\n")
        elif fmt == "csv":
            out.write(",".join(header["columns"]) + "\n")
        else:
            out.write(("source " if source else "") + " ".join(f"{c.name:>{c.width}}" for c in self.view)
                      + (" " + " ".join(FIELDS) if with_packet else "") + "\n")

    def _mask(self, mask: dict) -> str:
        entry = self._rendered.get(id(mask))
        if entry is None:
            if self.fmt == "jsonl":
                text = dumps(mask)[1:-1]
            elif self.fmt == "csv":
                text = ",".join("" if (v := jsonable(mask[c.name])) is None else json.dumps(v).strip('"')
                                for c in RECORD if c.shared)
            else:
                text = " ".join(f"{cell(mask[c.name]):>{c.width}}" for c in self.view if c.shared)
            if len(self._rendered) > RENDERED_KEYS:
                self._rendered.clear()
            entry = self._rendered[id(mask)] = (mask, text)  # the dict is kept, so its id is not reused
        return entry[1]

    def _density_texts(self, values: np.ndarray) -> list:
        """:func:`_f32` of each f32 value, each distinct one rendered once while it stays cached."""
        bits = values.view(np.uint32).tolist()
        known = self._densities
        texts = list(map(known.get, bits))
        if None in texts:
            missing = list(set(bits).difference(known))
            if len(known) + len(missing) > DENSITY_TEXTS:
                known.clear()
                missing = list(set(bits))
            known.update(zip(missing, _f32s(np.array(missing, np.uint32).view(np.float32))))
            texts = list(map(known.__getitem__, bits))
        return texts

    def write(self, part: Part, offset: int) -> None:
        n, fmt = part.n, self.fmt
        if not n:
            return
        index = numbers(list(range(offset, offset + n)))
        density = self._density_texts(part.target_density)
        masks = [self._mask(m) for m in part.masks]
        masks = list(map(masks.__getitem__, part.inverse.tolist()))
        seq = part.seq_len
        seq = str(seq[0]) if (seq == seq[0]).all() else numbers(seq.tolist())
        if part.t is None:
            t = "null" if fmt == "jsonl" else "" if fmt == "csv" else "-"
        else:
            t = numbers(part.t)
            if fmt != "jsonl" and None in part.t:
                t = [("" if fmt == "csv" else "-") if v is None else r for v, r in zip(part.t, t)]
        if fmt == "jsonl":
            source = f'"source": {json.dumps(part.source)}, ' if self.source else ""
            columns = ["{" + source + '"index": ', index, ', "t": ', t, ', "seq_len": ', seq,
                       ', "target_density": ', density, ", ", masks]
        elif fmt == "csv":
            quoted = any(c in part.source for c in ',"\r\n')
            source = (('"' + part.source.replace('"', '""') + '"' if quoted else part.source) + ","
                      if self.source else "")
            columns = [source, index, ",", t, ",", seq, ",", density, ",", masks]
        else:
            cells = {"index": index, "t": t, "seq_len": seq, "target_density": density}
            columns = [part.source + " " if self.source else ""]
            for c in self.view:
                if not c.shared:
                    right = f"{{:>{c.width}}}".format
                    texts = cells[c.name]
                    columns += [right(texts) if isinstance(texts, str) else list(map(right, texts)), " "]
            columns.append(masks)
        if self.with_packet:
            rows = part.packets.tolist()
            if fmt == "jsonl":
                columns.append([", " + ", ".join(f'"{k}": {v}' for k, v in zip(FIELDS, row)) for row in rows])
            else:
                sep = "," if fmt == "csv" else " "
                columns.append([sep + sep.join(map(str, row)) for row in rows])
        columns.append("}\n" if fmt == "jsonl" else "\n")
        self._background.submit(self.out.write, _interleave(columns, n))

    def close(self) -> None:
        """Wait for the write in flight (raising its error)."""
        self._background.wait()

    def abandon(self) -> None:
        """Stop (the file is being thrown away): a write in flight fails on the closed file, unheard."""

    def finish(self, summary: dict, source: str | None) -> None:
        """The end of one trace: JSON Lines gets its summary record, a table of one trace its summary text."""
        self.close()
        if self.fmt == "jsonl":
            self.out.write(dumps({"summary": summary if source is None else {"source": source, **summary}}) + "\n")
        elif self.fmt == "table" and source is None:
            self.out.write(summary_text(summary) + "\n")


def _metadata(header: dict, summary: dict | None = None) -> dict:
    metadata = {"schema_version": str(SCHEMA_VERSION), HEADER_KEY: dumps(header)}
    if summary is not None:
        metadata[SUMMARY_KEY] = dumps(summary)
    return metadata


class ParquetWriter:
    """Records out as one Parquet file: one row group per part, the header and the
    schema version in the key-value metadata (the summary added at the end)."""

    def __init__(self, out, header: dict, source: bool, with_packet: bool):
        import pyarrow.parquet as pq

        self.source, self.with_packet, self.header = source, with_packet, header
        self.writer = pq.ParquetWriter(out, record_schema(source, with_packet).with_metadata(_metadata(header)))

    def write(self, part: Part, offset: int) -> None:
        self.writer.write_table(part_table(part, offset, self.source, self.with_packet), row_group_size=max(part.n, 1))

    def finish(self, summary: dict, source: str | None) -> None:
        self.writer.add_key_value_metadata({SUMMARY_KEY: dumps(summary)})
        self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def abandon(self) -> None:
        """Stop without a footer's errors (the file is being thrown away), before the file is closed."""
        writer, self.writer = self.writer, None
        if writer is not None:
            try:
                writer.close()
            except (OSError, ValueError):
                pass


class Dataset:
    """``-o DIR`` for Parquet: a folder (a local path, or a URL fsspec understands:
    ``s3://``, ``gs://``, ``file://``, ``memory://``) with one dataset folder per trace,
    ``NAME.parquet/`` (NAME: the trace's file name; ``stdin`` for ``-``; ``NAME.2`` for
    a second trace of the same name), holding ``part-00000.parquet``... (one per piece
    of the trace, its rows in order, each with the header in its metadata) and
    ``_common_metadata`` (the schema, the header and the trace's summary).
    ``pyarrow.parquet.read_table(DIR)`` reads every trace; ``read_table(DIR/NAME.parquet)`` one.

    A trace is written into a hidden staging folder beside its own and moved in
    place when complete (:meth:`TraceFolder.commit`): a reader never sees half a
    trace, and a failed or interrupted run leaves nothing.

    Raises
    ------
    ValueError
        For a URL whose protocol fsspec does not know.
    """

    def __init__(self, url: str, header: dict, source: bool, with_packet: bool):
        import fsspec

        self.url = url.rstrip("/") or url
        try:
            self.fs, self.root = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as err:
            raise ValueError(f"-o {url}: {err}") from None
        except OSError as err:  # (a store fsspec connects to at once: a host not found)
            raise OSError(err.errno, err.strerror or str(err), f"-o {url}") from None
        self.root = self.root.rstrip("/") or self.root
        self.header, self.source, self.with_packet = header, source, with_packet
        self._taken: set = set()
        self._token = uuid.uuid4().hex[:12]
        self.folders: list = []

    @property
    def local(self) -> bool:
        return "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))

    @staticmethod
    def names(paths) -> list[str]:
        """The folder names the traces at ``paths`` get, in order."""
        taken: set = set()
        return [_folder_name(path, taken) for path in paths]

    def prepare(self, paths) -> None:
        """Make the folder if it is not there (:meth:`discard` removes it again if it
        stays empty), after checking that each trace folder it will replace (those of
        the traces at ``paths``) holds only what a replay writes.

        Raises
        ------
        ValueError
            For a trace folder that holds anything else (a dataset folder is replaced
            as a whole: the user's files in it would go with it), or is a file.
        OSError
            Naming ``-o`` and the folder.
        """
        try:
            self._check_folders(paths)
            self._made = not self.fs.exists(self.root)
            self.fs.makedirs(self.root, exist_ok=True)
        except OSError as err:  # (a URL whose host is not found, a store that refuses, a read-only folder)
            raise OSError(err.errno, err.strerror or str(err), f"-o {self.url}") from None
        if self._made and self.local:  # a second signal ends the run at once: nothing of it stays
            interrupt.register(self.root)

    def _check_folders(self, paths) -> None:
        for name in self.names(paths):
            final = f"{self.root}/{name}"
            if not self.fs.exists(final):
                continue
            if not self.fs.isdir(final):
                raise ValueError(f"-o {self.url}: {name} is a file, where this trace's dataset folder goes")
            foreign = sorted(entry for entry in (os.path.basename(e.rstrip("/")) for e in self.fs.ls(final, detail=False))
                             if not _WRITTEN.fullmatch(entry))
            if foreign:
                raise ValueError(f"-o {self.url}: {name}/ holds {', '.join(foreign[:3])}"
                                 f"{f' and {len(foreign) - 3:,} more' if len(foreign) > 3 else ''}, which a replay "
                                 "does not write; the folder would be replaced as a whole: move them, or give "
                                 "another -o")

    def discard(self) -> None:
        """Remove every staged folder not put in place, and the folder :meth:`prepare`
        made if nothing was put in it (what a failed or interrupted run leaves: nothing)."""
        for folder in self.folders:
            folder.abort()
        try:
            if getattr(self, "_made", False) and not self.fs.ls(self.root):
                self.fs.rmdir(self.root)
        except OSError:
            pass
        finally:
            interrupt.forget(self.root)

    def folder(self, path: str) -> "TraceFolder":
        """The staged folder of the trace at ``path`` (its name taken)."""
        name = _folder_name(path, self._taken)
        folder = TraceFolder(self.fs, self.root, self.url, name, self._token, self.header, self.source,
                             self.with_packet)
        if self.local:
            interrupt.register(folder.staging)
        self.folders.append(folder)
        return folder


_WRITTEN = re.compile(r"part-[0-9]+\.parquet|_common_metadata")
"""What a trace's dataset folder holds when a replay wrote it."""


def _folder_name(path: str, taken: set) -> str:
    stem = "stdin" if path == "-" else os.path.basename(path.rstrip("/")) or "trace"
    name, n = f"{stem}.parquet", 1
    while name in taken:
        n += 1
        name = f"{stem}.{n}.parquet"
    taken.add(name)
    return name


class TraceFolder:
    """One trace's folder in a :class:`Dataset`; sent to the workers that write its parts."""

    def __init__(self, fs, root: str, url: str, name: str, token: str, header: dict, source: bool,
                 with_packet: bool):
        self.fs, self.name, self.header, self.source, self.with_packet = fs, name, header, source, with_packet
        self.root, self.final = root, f"{root}/{name}"
        self.staging = f"{root}/.{name}.partial-{token}"
        self.shown = f"{url}/{name}"
        """The folder as the user named it, for messages."""

    def _named(self, err: OSError) -> OSError:
        return OSError(err.errno, err.strerror or str(err), self.shown)

    def write_part(self, number: int, parts: list, offset: int) -> int:
        """Write part file ``number`` from ``parts``, the first record being packet ``offset``; the rows written.

        Raises
        ------
        OSError
            Naming the trace's folder (a full disk, a store that refuses).
        """
        import pyarrow.parquet as pq

        schema = record_schema(self.source, self.with_packet).with_metadata(_metadata(self.header))
        rows = 0
        try:
            self.fs.makedirs(self.staging, exist_ok=True)
            with self.fs.open(f"{self.staging}/part-{number:05d}.parquet", "wb") as out:
                writer = pq.ParquetWriter(out, schema)
                try:
                    for part in parts:
                        writer.write_table(part_table(part, offset + rows, self.source, self.with_packet),
                                           row_group_size=max(part.n, 1))
                        rows += part.n
                finally:
                    writer.close()
        except OSError as err:
            raise self._named(err) from None
        return rows

    def commit(self, summary: dict) -> None:
        """Write ``_common_metadata`` (with the summary) and move the staged folder in
        place, replacing what was there.

        Raises
        ------
        OSError
            Naming the trace's folder.
        """
        import pyarrow.parquet as pq

        interrupt.commit()  # nothing is put in place once a signal asked to stop
        interrupt.forget(self.root)  # (the folder the dataset made now holds the outputs)
        schema = record_schema(self.source, self.with_packet).with_metadata(_metadata(self.header, summary))
        old = f"{self.staging}.old"
        try:
            self.fs.makedirs(self.staging, exist_ok=True)
            with self.fs.open(f"{self.staging}/_common_metadata", "wb") as out:
                pq.write_metadata(schema, out)
            if self.fs.exists(self.final):
                self.fs.mv(self.final, old, recursive=True)
            self.fs.mv(self.staging, self.final, recursive=True)
            if self.fs.exists(old):
                self.fs.rm(old, recursive=True)
        except OSError as err:
            raise self._named(err) from None
        finally:
            interrupt.forget(self.staging)

    def plot_points(self) -> dict:
        """The plotted columns (:data:`PLOTTED`) of the staged parts, as :func:`plot_points` gives
        them: read back for ``--plot``, the only use of a dataset run's records here."""
        import pyarrow.parquet as pq

        names = ["index", *(name for name, _ in PLOTTED)]
        try:
            table = pq.read_table(self.staging, columns=names, filesystem=self.fs)
        except OSError as err:
            raise self._named(err) from None
        table = table.filter(table.column("num_positions").is_valid())
        return {name: table.column(name).to_pylist() for name in names}

    def abort(self) -> None:
        """Remove the staged folder (what a failed or interrupted trace wrote), if it is still there."""
        try:
            if self.fs.exists(self.staging):
                self.fs.rm(self.staging, recursive=True)
        except OSError:
            pass
        finally:
            interrupt.forget(self.staging)


def summary_text(s: dict) -> str:
    """A trace's summary for a person: empty traces and all-panic runs said plainly."""
    skipped = f"{plural(s['bad_records'], 'bad record')} skipped"
    if not s["packets"]:
        return "packets 0: the trace holds no packet" + (f" ({skipped})" if s["bad_records"] else "")
    lines = [f"packets {s['packets']:,}: {s['sparse']:,} sparse, {s['full']:,} full, {s['panics']:,} panicked, "
             f"{skipped}"]
    if s["density_min"] is None:
        lines.append("no mask: every build_mask panicked")
    else:
        lines.append(f"mask density min/median/max: {cell(s['density_min'])} / {cell(s['density_median'])} / "
                     f"{cell(s['density_max'])}")
    if s["worst_step_peak_bytes"] is None:
        lines.append("no heap figure: every step panicked")
    else:
        over = s["first_over_budget_packet"]
        lines.append(f"worst step peak: {s['worst_step_peak_bytes']} B at packet {s['worst_packet']}; "
                     + ("every step fits the budget" if over is None else f"first over budget: packet {over}"))
    lines += [f"panic at packet {p['first_packet']}: {p['message']}" for p in s["panic_messages"]]
    return "\n".join(lines)


def fleet_text(results: list, wide: bool = False) -> str:
    """The per-trace table of a run over several traces, worst step peak first."""
    rows = sorted(results, key=lambda r: (r["worst_step_peak_bytes"] is None, -(r["worst_step_peak_bytes"] or 0)))
    width = max([6] + [len(r["source"]) for r in rows])
    names = WIDE_FLEET if wide else NARROW_FLEET
    lines = [f"{'source':<{width}} " + " ".join(names) + " status"]
    for r in rows:
        cells = " ".join(f"{cell(r[n]):>{len(n)}}" for n in names)
        lines.append(f"{r['source']:<{width}} {cells} {'failed: ' + r['error'] if r['error'] else 'ok'}")
    return "\n".join(lines)


PLOTTED = (("density", "mask density\n(positions / seq_len²)"), ("num_positions", "positions\n(query-key pairs)"),
           ("step_peak_bytes", "step heap peak\n(bytes)"))
"""The replay plot's panels: a record column and its axis label."""


def plot_points(part: Part, offset: int, into: dict) -> None:
    """Add a part's plotted values (packets whose step did not panic) to ``into``."""
    valid = np.array([m["num_positions"] is not None for m in part.masks], bool)
    rows = np.flatnonzero(valid[part.inverse]) if part.n else np.zeros(0, np.int64)
    into.setdefault("index", []).extend((rows + offset).tolist())
    for name, _ in PLOTTED:
        per_key = part.mask_column(name)
        into.setdefault(name, []).extend(per_key[k] for k in part.inverse[rows].tolist())


def replay_figure(plt, series: dict, budget: int, title: str):
    """The replay plot: density, positions and step heap peak over the packets of
    each trace (``series``: trace -> :func:`plot_points`' lists), the budget drawn,
    the legend below the panels so that it covers no data."""
    fig, axes = plt.subplots(len(PLOTTED), 1, sharex=True, figsize=(9, 7.5))
    for ax, (name, label) in zip(axes, PLOTTED):
        for source, values in series.items():
            ax.plot(values.get("index", []), values.get(name, []), lw=0.8, label=os.path.basename(source) or source)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[-1].axhline(budget, color="red", ls="--", label=f"heap budget {budget:,} B")
    axes[-1].set_xlabel("packet (index in its trace)")
    fig.suptitle(title)
    handles, labels = axes[-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


__all__ = ["Dataset", "ParquetWriter", "TextWriter", "TraceFolder", "fleet_text",
           "numbers", "plot_points", "replay_figure", "summary_text", "table_view"]
