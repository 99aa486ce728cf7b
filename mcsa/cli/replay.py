"""``mcsa replay``: gate-packet traces against a target, one record per packet and a summary per trace."""

from __future__ import annotations

import json
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import click
import numpy as np
import orjson

from mcsa.core import jsonio
from mcsa.app.fleet import Fleet
from mcsa.core.packets import shortest_f32
from mcsa.app.replay import COLUMNS, MASK_COLUMNS, SCHEMA_VERSION, Part, Replayer, Summary, part_table
from mcsa.app.traces import KNOWN_KEYS, TraceError
from mcsa.core.packets import FIELDS
from .common import (
    USIZE64_MAX, InputError, IntRange, atomic_output, check_outputs, config_option, dumps, fail_on_input_errors,
    jsonable, limit_option, load_config, pyplot, resolve_profile, save_png, target_options,
)

FAIL_ON = ("over-budget", "panic")
TABLE = (("index", 7), ("seq_len", 7), ("target_density", 14), ("sparse", 6), ("density", 11),
         ("num_positions", 13), ("flops_ratio", 11), ("partitions", 10), ("boundary_tokens", 15),
         ("build_mask_peak_bytes", 21), ("attention_peak_bytes", 20), ("step_peak_bytes", 15), ("fits", 5),
         ("panic", 0))
SHOWN_SKIPS = 20


def _fail_on(ctx, param, value):
    wanted = {v.strip() for text in value for v in text.split(",") if v.strip()}
    unknown = wanted - set(FAIL_ON)
    if unknown:
        raise click.BadParameter(f"unknown condition(s) {', '.join(sorted(unknown))}; use {', '.join(FAIL_ON)}")
    return wanted


def _cell(value) -> str:
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


def _numbers(values: list) -> list:
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


RENDERED_KEYS = 4096
"""Keys whose rendered mask fields a writer keeps: memory stays flat."""
DENSITY_TEXTS = 1 << 17
"""Distinct target densities whose text a writer keeps (about 130 bytes each)."""


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


class _Writer:
    """Records out as JSONL, CSV or a table, a part at a time, in one write per
    part that a thread does while the next part is read and rendered (the disk
    and the parser overlap; one part in flight). What a key's records share is
    rendered once per key, each distinct density once. :meth:`close` waits for
    the last write and raises its error."""

    def __init__(self, out, fmt: str, header: dict, source: bool, with_packet: bool):
        self.out, self.fmt, self.source, self.with_packet = out, fmt, source, with_packet
        self._rendered: dict = {}
        self._densities: dict = {}
        self._pool = ThreadPoolExecutor(1)
        self._pending = None
        if fmt == "jsonl":
            out.write(dumps(header) + "\n")
        elif fmt == "csv":
            out.write(",".join(header["columns"]) + "\n")
        else:
            out.write(("source " if source else "") + " ".join(f"{name:>{width}}" for name, width in TABLE)
                      + (" " + " ".join(FIELDS) if with_packet else "") + "\n")

    def _mask(self, mask: dict) -> str:
        entry = self._rendered.get(id(mask))
        if entry is None:
            if self.fmt == "jsonl":
                text = dumps(mask)[1:-1]
            elif self.fmt == "csv":
                text = ",".join("" if (v := jsonable(mask[c])) is None else json.dumps(v).strip('"')
                                for c in MASK_COLUMNS)
            else:
                text = " ".join(f"{_cell(mask[name]):>{width}}" for name, width in TABLE if name in mask)
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

    def _shared(self, part: Part) -> tuple:
        """Each record's seq_len (one text if all are the same), target density and mask fields."""
        density = self._density_texts(part.target_density)
        masks = [self._mask(m) for m in part.masks]
        masks = list(map(masks.__getitem__, part.inverse.tolist()))
        seq = part.seq_len
        seq = str(seq[0]) if (seq == seq[0]).all() else _numbers(seq.tolist())
        return seq, density, masks

    def write(self, part: Part, offset: int) -> None:
        n, fmt = part.n, self.fmt
        if not n:
            return
        index = _numbers(list(range(offset, offset + n)))
        seq, density, masks = self._shared(part)
        if part.t is None:
            t = "null" if fmt == "jsonl" else ""
        else:
            t = _numbers(part.t)
            if fmt != "jsonl" and None in part.t:
                t = ["" if v is None else r for v, r in zip(part.t, t)]
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
            right = "{:>7}".format
            seq = right(seq) if isinstance(seq, str) else list(map(right, seq))
            columns = [part.source + " " if self.source else "", list(map(right, index)), " ", seq, " ",
                       list(map("{:>14}".format, density)), " ", masks]
        if self.with_packet:
            rows = part.packets.tolist()
            if fmt == "jsonl":
                columns.append([", " + ", ".join(f'"{k}": {v}' for k, v in zip(FIELDS, row)) for row in rows])
            else:
                sep = "," if fmt == "csv" else " "
                columns.append([sep + sep.join(map(str, row)) for row in rows])
        columns.append("}\n" if fmt == "jsonl" else "\n")
        text = _interleave(columns, n)
        self._wait()
        self._pending = self._pool.submit(self.out.write, text)

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """Wait for the write in flight (raising its error) and stop the thread."""
        try:
            self._wait()
        finally:
            self._pool.shutdown()

    def finish(self, summary: dict, source: str | None) -> None:
        self._wait()
        if self.fmt == "jsonl":
            self.out.write(dumps({"summary": summary if source is None else {"source": source, **summary}}) + "\n")
        elif self.fmt == "table" and source is None:
            self.out.write(_summary_text(summary) + "\n")


class _ParquetWriter:
    """Records out as Parquet: one row group per part, the header and the
    schema version in the key-value metadata (the summary added at the end)."""

    def __init__(self, out, header: dict, source: bool, with_packet: bool):
        self.out, self.header, self.source, self.with_packet = out, header, source, with_packet
        self.writer = None

    def _open(self, table):
        import pyarrow.parquet as pq

        metadata = {"schema_version": str(SCHEMA_VERSION), "mcsa.replay.header": dumps(self.header)}
        self.writer = pq.ParquetWriter(self.out, table.schema.with_metadata(metadata))

    def write(self, part: Part, offset: int) -> None:
        table = part_table(part, offset, self.source, self.with_packet)
        if self.writer is None:
            self._open(table)
        self.writer.write_table(table, row_group_size=max(part.n, 1))

    def finish(self, summary: dict, source: str | None) -> None:
        if self.writer is None:
            self._open(part_table(Part.empty(""), 0, self.source, self.with_packet))
        self.writer.add_key_value_metadata({"mcsa.replay.summary": dumps(summary)})
        self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _summary_text(s: dict) -> str:
    lines = [
        f"packets {s['packets']}: {s['sparse']} sparse, {s['full']} full, {s['panics']} panicked, "
        f"{s['bad_records']} bad records skipped",
        f"mask density min/median/max: {_cell(s['density_min'])} / {_cell(s['density_median'])} / "
        f"{_cell(s['density_max'])}",
        f"worst step peak: {_cell(s['worst_step_peak_bytes'])} B at packet {_cell(s['worst_packet'])}; "
        f"first over budget: {_cell(s['first_over_budget_packet'])}",
    ]
    lines += [f"panic at packet {p['first_packet']}: {p['message']}" for p in s["panic_messages"]]
    return "\n".join(lines)


def _fleet_text(results: list) -> str:
    """The per-trace table, worst step peak first."""
    rows = sorted(results, key=lambda r: (r["worst_step_peak_bytes"] is None, -(r["worst_step_peak_bytes"] or 0)))
    width = max([6] + [len(r["source"]) for r in rows])
    names = ("packets", "sparse", "full", "panics", "bad_records", "worst_step_peak_bytes", "worst_packet",
             "first_over_budget_packet")
    lines = [f"{'source':<{width}} " + " ".join(names) + " status"]
    for r in rows:
        cells = " ".join(f"{_cell(r[n]):>{len(n)}}" for n in names)
        lines.append(f"{r['source']:<{width}} {cells} {'failed: ' + r['error'] if r['error'] else 'ok'}")
    return "\n".join(lines)


def _plot(path: str, series: dict, budget: int) -> None:
    plt = pyplot("--plot")
    fig, axes = plt.subplots(3, 1, sharex=True, figsize=(9, 7))
    for ax, (name, label) in zip(axes, (("density", "mask density"), ("num_positions", "positions"),
                                        ("step_peak_bytes", "step heap peak (B)"))):
        for source, values in series.items():
            ax.plot(values["index"], values[name], lw=0.8, label=source if len(series) > 1 else None)
        ax.set_ylabel(label)
    axes[2].axhline(budget, color="red", ls="--", label=f"budget {budget:,} B")
    axes[2].legend(loc="upper right")
    axes[2].set_xlabel("packet")
    fig.tight_layout()
    save_png(plt, fig, path)


def _plot_points(part: Part, offset: int, into: dict) -> None:
    valid = np.array([m["num_positions"] is not None for m in part.masks], bool)
    rows = np.flatnonzero(valid[part.inverse]) if part.n else np.zeros(0, np.int64)
    into["index"].extend((rows + offset).tolist())
    for name in ("density", "num_positions", "step_peak_bytes"):
        per_key = part.mask_column(name)
        into[name].extend(per_key[k] for k in part.inverse[rows].tolist())


def _parquet_name(source: str, taken: set) -> str:
    stem = "stdin" if source == "-" else Path(source).name
    name, n = f"{stem}.parquet", 1
    while name in taken:
        n += 1
        name = f"{stem}.{n}.parquet"
    taken.add(name)
    return name


class _Abandon(Exception):
    """Leaves an output file unwritten."""


class _Run:
    """Replays traces one after another into writers, keeping each trace's
    summary and error, the skipped-record messages and the plot series."""

    def __init__(self, plot: bool, several: bool):
        self.plot, self.several = plot, several
        self.results, self.series, self.unknown, self.skipped, self.bar = [], {}, _Unknown(), 0, None

    @property
    def failures(self) -> list:
        return [r["error"] for r in self.results if r["error"] is not None]

    def trace(self, path: str, parts, keys: set, writer, abandon: bool = True) -> None:
        """Write the records of one trace; raise _Abandon after a failure if ``abandon``."""
        summary, error, offset, done = Summary(), None, 0, 0
        points = self.series.setdefault(path, {k: [] for k in ("index", "density", "num_positions",
                                                                "step_peak_bytes")}) if self.plot else None
        try:
            for part in parts:
                writer.write(part, offset)
                summary.add_part(part, offset)
                for _, message in part.bad:
                    self.skipped += 1
                    if self.skipped <= SHOWN_SKIPS:
                        click.echo(f"skipped: {message}", err=True)
                if points is not None:
                    _plot_points(part, offset, points)
                offset += part.n
                self.bar.update(max(part.done - done, 0))
                done = max(done, part.done)
        except TraceError as err:
            error = str(err)
        self.unknown.report(path, keys)
        result = summary.as_dict()
        self.results.append({"source": path, **result, "error": error})
        if error is None or (self.several and not abandon):  # in one output for all, a trace cut short says so
            writer.finish(result if error is None else {**result, "error": error}, path if self.several else None)
        if error is None:
            return
        if self.several:
            click.echo(f"error: {error}", err=True)
        if abandon:
            raise _Abandon


class _Unknown:
    """Reports each unknown key once, with a did-you-mean for a close known one."""

    def __init__(self):
        self.seen: set = set()

    def report(self, source: str, keys: set) -> None:
        fresh = sorted(keys - self.seen)
        self.seen.update(fresh)
        for note in jsonio.unknown_keys(dict.fromkeys(fresh), KNOWN_KEYS, source):
            click.echo(f"note: {note}", err=True)


@click.command()
@click.argument("traces", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@target_options
@click.option("--seq-len", type=IntRange(min=0, max=USIZE64_MAX), required=True,
              help="Sequence length of every packet (a record's own seq_len wins).")
@click.option("--dim", type=IntRange(min=0, max=USIZE64_MAX), default=64, show_default=True,
              help="Head dimension for the attention heap figures.")
@config_option
@click.option("--heap-budget", type=IntRange(min=0, max=USIZE64_MAX),
              help="Heap budget in bytes (default: the profile's).")
@click.option("--format", "fmt", type=click.Choice(["table", "jsonl", "csv", "parquet"]),
              help="Output format (default: table on a terminal, jsonl otherwise; parquet needs -o).")
@click.option("--input-format", type=click.Choice(["jsonl", "csv", "bin"]),
              help="Trace format (default: from the file name; sniffed for stdin).")
@click.option("-o", "--output", type=click.Path(writable=True),
              help="Write records here (atomically) instead of stdout; with --format parquet and several "
                   "traces, a directory that gets one Parquet file per trace.")
@click.option("--with-packet", is_flag=True, help="Add the packet's own fields to every record.")
@click.option("--summary", "summary_file", type=click.Path(dir_okay=False, writable=True),
              help="Write one summary per trace here (JSONL).")
@click.option("--workers", type=IntRange(min=1, max=1024),
              help="Replay on a local Dask cluster of N worker processes (needs mcsa[fleet]).")
@click.option("--scheduler", metavar="ADDRESS", help="Replay on the Dask cluster at ADDRESS (needs mcsa[fleet]).")
@click.option("--plot", type=click.Path(dir_okay=False), help="PNG of density, positions and heap peak over the trace.")
@click.option("--fail-on", callback=_fail_on, multiple=True, metavar="over-budget,panic",
              help="Exit 1 if a packet goes over budget and/or the build panics (repeatable; they add up).")
@click.option("--skip-bad", is_flag=True,
              help="Count and skip malformed records (and, with several traces, unreadable traces) instead of stopping.")
@limit_option
@fail_on_input_errors
def replay(traces, target_name, profiles_file, seq_len, dim, config_file, heap_budget, fmt, input_format, output,
           with_packet, summary_file, workers, scheduler, plot, fail_on, skip_bad, position_limit):
    """Replay recorded gate packets (JSONL, CSV or 16-byte .bin, optionally .gz; - for stdin) on a target.

    Each record holds the packet's target density and, for its seq_len and
    partition count, the mask and heap figures. build_mask_peak_bytes,
    attention_peak_bytes and mask_bytes count bytes requested (no allocator
    overhead); step_peak_bytes is the whole step with q, k and v under the
    profile's allocator, and is what fits compares with the budget. With several
    traces, records start with a source column and index counts within each trace.

    Exit codes: 0 ok, 1 a --fail-on condition, 2 bad input (a malformed record,
    named by file:line or byte offset; the other traces still complete).

    \b
    Example:
      mcsa replay examples/trace.jsonl --target stm32f411 --seq-len 128 --dim 32 \\
          --fail-on over-budget,panic
      mcsa replay logs/*.bin --target stm32f411 --seq-len 128 --workers 2 \\
          --format parquet -o out/ --summary summary.jsonl
    """
    if plot:
        pyplot("--plot")  # before any work: a missing extra is a usage error
    if traces.count("-") > 1:
        raise InputError("stdin (-) can be read only once")
    if output == "":  # (Path("") is the current folder)
        raise InputError("-o: an empty path names no file")
    if fmt == "parquet" and output is None:
        raise InputError("--format parquet needs -o FILE (or -o DIR for one file per trace)")
    profile, build = resolve_profile(target_name, profiles_file, heap_budget, seq_len=seq_len, dim=dim)
    replayer = Replayer(profile, build, load_config(config_file), seq_len, dim, heap_budget, position_limit)
    if fmt is None:
        fmt = "table" if output is None and sys.stdout.isatty() else "jsonl"
    several = len(traces) > 1
    out_dir = fmt == "parquet" and (several or Path(output).is_dir() or output.endswith(("/", os.sep)))
    check_outputs({"-o": None if out_dir else output, "--summary": summary_file, "--plot": plot})  # a DIR is made
    if out_dir:
        Path(output).mkdir(parents=True, exist_ok=True)
    header = replayer.header()
    header["columns"] = (["source"] if several else []) + list(COLUMNS) + (list(FIELDS) if with_packet else [])
    sizes = [0 if p == "-" else Path(p).stat().st_size for p in traces]
    show_progress = sys.stderr.isatty() and not (fmt == "table" and output is None and sys.stdout.isatty())
    run = _Run(plot, several)
    try:
        with ExitStack() as stack:
            fleet = stack.enter_context(Fleet(replayer, workers, scheduler))
            run.bar = stack.enter_context(click.progressbar(length=max(sum(sizes), 1), label="replaying",
                                                            file=sys.stderr, hidden=not show_progress))
            writer, taken = None, set()
            if not out_dir:
                out = stack.enter_context(atomic_output(output, "wb" if fmt == "parquet" else "w"))
                writer = (_ParquetWriter(out, header, several, with_packet) if fmt == "parquet"
                          else _Writer(out, fmt, header, several, with_packet))
                stack.callback(writer.close)  # before the output is closed
            for path, parts, keys in fleet.run(traces, input_format, skip_bad):
                if out_dir:
                    name = str(Path(output) / _parquet_name(path, taken))
                    try:
                        with atomic_output(name, "wb") as out:
                            trace_writer = _ParquetWriter(out, header, several, with_packet)
                            try:
                                run.trace(path, parts, keys, trace_writer)
                            finally:
                                trace_writer.close()
                    except _Abandon:
                        pass
                else:
                    run.trace(path, parts, keys, writer, abandon=False)
            if writer is not None:
                writer.close()
            if run.failures and not (skip_bad and several) and not out_dir:
                raise _Abandon  # an incomplete output file is not written
    except _Abandon:
        pass
    results = run.results
    refusal = None
    if run.failures and not (skip_bad and several):
        refusal = InputError(run.failures[0] if not several else
                             f"{len(run.failures)} of {len(traces)} traces failed (see above)")
    if several:
        click.echo(_fleet_text(results), err=not (fmt == "table" and output is None))
    if refusal and not out_dir:  # the records were not written: nor are the summary and the plot
        raise refusal
    if summary_file:
        with atomic_output(summary_file) as out:
            for r in results:
                out.write(dumps(r) + "\n")
    if not several and (fmt != "table" or output is not None):
        click.echo(_summary_text(results[0]), err=True)
    if plot:
        _plot(plot, run.series, replayer.budget)
    if refusal:  # one Parquet file per good trace, and the summary that says which failed
        raise refusal
    over = [r for r in results if r["first_over_budget_packet"] is not None]
    failed = []
    if "over-budget" in fail_on and over:
        failed.append(f"packet {over[0]['first_over_budget_packet']}" + (f" of {over[0]['source']}" if several else "")
                      + " goes over the heap budget")
    if "panic" in fail_on and any(r["panics"] for r in results):
        failed.append(f"{sum(r['panics'] for r in results)} packet(s) panic")
    if failed:
        click.echo("failing: " + "; ".join(failed), err=True)
        sys.exit(1)
