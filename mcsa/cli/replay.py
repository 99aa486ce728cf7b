"""``mcsa replay``: gate-packet traces against a target, one record per packet and a summary per trace."""

from __future__ import annotations

import os
import sys
import textwrap
from contextlib import ExitStack

import click

from mcsa.app.fleet import CONNECT_TIMEOUT, Fleet
from mcsa.app.record import FORMATS, RECORD, Summary
from mcsa.app.traces import TraceError, open_trace, unknown_note
from mcsa.app.writers import (
    Dataset, ParquetWriter, TextWriter, fleet_text, plot_points, replay_figure, summary_text,
)
from mcsa.core.packets import FIELDS
from mcsa.core.words import plural
from .common import (
    InputError, InputPath, IntRange, atomic_output, check_outputs, config_option, dim_option, dumps,
    fail_on_input_errors, heap_budget_option, limit_option, load_config, output_format, pyplot, resolve_profile,
    save_png, seq_len_option, target_options,
)

FAIL_ON = ("over-budget", "panic")
SHOWN_SKIPS = 20


def _fail_on(ctx, param, value):
    wanted = {v.strip() for text in value for v in text.split(",") if v.strip()}
    unknown = wanted - set(FAIL_ON)
    if unknown:
        raise click.BadParameter(f"unknown condition(s) {', '.join(sorted(unknown))}; use {', '.join(FAIL_ON)}")
    return wanted


def _columns_help() -> str:
    """The record's columns and what each holds, from the one column table (lines of at most 100 columns)."""
    width = max(len(c.name) for c in RECORD)
    return "\n".join(textwrap.fill(c.doc, 98, initial_indent=f"  {c.name:<{width}}  ",
                                    subsequent_indent=" " * (width + 4)) for c in RECORD)


class _Run:
    """One replay's traces, their summaries and errors, the messages said on the way
    and the plot series; the progress bar, cleared before anything else is said."""

    def __init__(self, plot: bool, several: bool, bar):
        self.plot, self.several, self.bar = plot, several, bar
        self.results, self.series, self.skipped, self.seen = [], {}, 0, set()
        self.positions: dict = {}
        """Each result's trace's place on the command line, for :meth:`ordered`."""
        self.opened: list = []
        """The places of the traces opened, in order: those of the results to come."""

    @property
    def failures(self) -> list:
        return [r["error"] for r in self.results if r["error"] is not None]

    def say(self, text: str) -> None:
        click.echo(("" if getattr(self.bar, "hidden", True) else "\r\x1b[K") + text, err=True)

    def skip(self, messages, count: int) -> None:
        for message in messages[:max(SHOWN_SKIPS - self.skipped, 0)]:
            self.say(f"skipped: {message}")
        self.skipped += count

    def note_unknown(self, path: str, keys: set) -> None:
        note = unknown_note(path, keys - self.seen)
        self.seen |= keys
        if note:
            self.say(f"note: {note}")

    def ordered(self) -> list:
        """The results in the order of the traces (one that could not be opened included)."""
        return sorted(self.results, key=lambda r: self.positions[id(r)])

    def result(self, path: str, summary: Summary, error: str | None, position: int | None = None) -> dict:
        result = {"source": path, **summary.as_dict(), "error": error}
        self.positions[id(result)] = self.opened.pop(0) if position is None else position
        self.results.append(result)
        if error is not None and self.several:
            self.say(f"error: {error}")
        return result

    def trace(self, path: str, parts, keys: set, writer, stop: bool) -> None:
        """Write the records of one trace; after a failure, raise it if ``stop``."""
        summary, error, offset, done = Summary(), None, 0, 0
        points = self.series.setdefault(path, {}) if self.plot else None
        try:
            for part in parts:
                writer.write(part, offset)
                summary.add_part(part, offset)
                self.skip([message for _, message in part.bad], len(part.bad))
                if points is not None:
                    plot_points(part, offset, points)
                offset += part.n
                self.bar.update(max(part.done - done, 0))
                done = max(done, part.done)
        except TraceError as err:
            error = str(err)
        self.note_unknown(path, keys)
        self.result(path, summary, error)
        if error is not None and stop:
            raise InputError(error)
        said = summary.as_dict()
        writer.finish(said if error is None else {**said, "error": error}, path if self.several else None)


def _choose_format(fmt: str | None, output: str | None, several: bool) -> tuple[str, bool]:
    """The output format and whether ``-o`` is a Parquet folder (a dataset), from
    ``--format``, ``-o``'s extension or trailing slash, and the terminal."""
    if output is not None and output != "-" and output.strip() == "":
        raise InputError("-o: an empty path names no file")
    url = output is not None and "://" in output
    folder = output is not None and output != "-" and (url or output.endswith(("/", os.sep)) or os.path.isdir(output))
    named = None if folder else output_format(output)
    if named is not None and named not in FORMATS:
        raise InputError(f"-o {output}: a {os.path.splitext(output)[1]} file is a format replay does not write (it "
                         "writes .jsonl, .csv, .txt for the table, .parquet)")
    if fmt is not None and named is not None and named != fmt:
        raise InputError(f"-o {output} names {named} by its extension, --format says {fmt}")
    fmt = fmt or named or ("parquet" if folder else "table" if output is None and sys.stdout.isatty() else "jsonl")
    if fmt == "parquet" and output in (None, "-"):
        raise InputError("--format parquet needs -o FILE (or -o DIR for a dataset folder)")
    if folder and fmt != "parquet":
        raise InputError(f"-o {output}: a folder or URL takes --format parquet (a dataset folder), not {fmt}")
    return fmt, fmt == "parquet" and (folder or several)


def _open_traces(traces: tuple, input_format: str | None, skip_bad: bool, run: _Run) -> list:
    """Each trace found (format, gzip, stream) before any record is read. A trace
    that cannot be read refuses the run, unless several are replayed with --skip-bad:
    it is then a failed trace."""
    sources = []
    for position, path in enumerate(traces):
        try:
            sources.append(open_trace(path, input_format, skip_bad))
            run.opened.append(position)
        except (TraceError, OSError) as err:
            message = str(err) if isinstance(err, TraceError) else f"{path}: {err.strerror or err}"
            if not (skip_bad and len(traces) > 1):
                for source in sources:
                    source.close()
                raise InputError(message) from None
            run.result(path, Summary(), message, position)
    return sources


@click.command(epilog="\b\nColumns of a record:\n" + _columns_help())
@click.argument("traces", nargs=-1, required=True, type=InputPath(allow_dash=True))
@seq_len_option(help="Sequence length of every packet (a record's own seq_len wins).")
@target_options
@dim_option(help="Head dimension for the attention heap figures.")
@config_option
@heap_budget_option
@click.option("--format", "fmt", type=click.Choice(FORMATS),
              help="Output format (default: what -o's extension names: .jsonl, .csv, .txt for the table, .parquet; "
                   "a folder or URL is a Parquet dataset; else a table on a terminal, JSON Lines otherwise).")
@click.option("--input-format", type=click.Choice(["jsonl", "csv", "bin"]),
              help="Trace format (default: what the content is; a name that says otherwise is refused).")
@click.option("-o", "--output", metavar="FILE|DIR|URL",
              help="Write records here, complete or not at all, instead of stdout. A folder (DIR/), several traces "
                   "with --format parquet, or a URL fsspec knows (s3://, gs://, file://, memory://) is a Parquet "
                   "dataset: one folder per trace, its part files written by the workers.")
@click.option("--wide", is_flag=True, help="The table with every column (default: those that fit 100 columns).")
@click.option("--with-packet", is_flag=True, help="Add the packet's own fields to every record.")
@click.option("--summary", "summary_file", type=click.Path(dir_okay=False),
              help="Write one summary per trace here (JSONL).")
@click.option("--workers", type=IntRange(min=1, max=1024),
              help="Replay on a local Dask cluster of N worker processes (needs mcsa[fleet]; one per core "
                   "helps, each takes about 200 MiB).")
@click.option("--scheduler", metavar="ADDRESS", help="Replay on the Dask cluster at ADDRESS (needs mcsa[fleet]).")
@click.option("--connect-timeout", type=click.FloatRange(min=0, min_open=True, max=3600), default=CONNECT_TIMEOUT,
              show_default=True, help="Seconds for --scheduler to answer as a Dask scheduler.")
@click.option("--plot", type=click.Path(dir_okay=False), help="PNG of density, positions and heap peak over the trace.")
@click.option("--fail-on", callback=_fail_on, multiple=True, metavar="over-budget,panic",
              help="Exit 1 if a packet goes over budget and/or the build panics (repeatable; they add up).")
@click.option("--skip-bad", is_flag=True,
              help="Count and skip malformed records (and, with several traces, unreadable traces) instead of stopping.")
@limit_option
@fail_on_input_errors
def replay(traces, target_name, profiles_file, seq_len, dim, config_file, heap_budget, fmt, input_format, output,
           wide, with_packet, summary_file, workers, scheduler, connect_timeout, plot, fail_on, skip_bad,
           position_limit):
    """Replay recorded gate packets (JSON Lines, CSV or 16-byte binary, optionally gzipped; - for stdin) on a target.

    Each record holds the packet's target density and, for its seq_len and
    partition count, the mask and heap figures (the columns below). With several
    traces, records start with a source column and index counts within each trace.
    A trace's format is what its content is (gzip, JSON, a CSV header, binary), as
    for stdin; a FIFO, /dev/stdin or <(...) is read like -.

    Exit codes: 0 ok, 1 a --fail-on condition, 2 bad input (a malformed record,
    named by file:line or byte offset; the other traces still complete), 130
    interrupted (nothing is left behind).

    \b
    Example:
      mcsa replay examples/trace.jsonl --target stm32f411 --seq-len 128 --dim 32 \\
          --fail-on over-budget,panic
      mcsa replay examples/trace.jsonl examples/trace.bin --target stm32f411 \\
          --seq-len 128 --workers 2 -o out/ --summary summary.jsonl
    """
    if plot:
        pyplot("--plot")  # before any work: a missing extra is a usage error
    if traces.count("-") > 1:
        raise InputError("stdin (-) can be read only once")
    if workers is not None and scheduler is not None:
        raise InputError("--workers starts a local cluster, --scheduler uses another: give one")
    several = len(traces) > 1
    fmt, to_folder = _choose_format(fmt, output, several)
    if output is not None and output.startswith("file://"):  # a dataset on this machine
        output = output[len("file://"):]
    outputs = {"-o": output if output is not None else "-", "--summary": summary_file, "--plot": plot}
    folders = {}
    if to_folder:
        folders["-o"] = False
        for i, (trace, name) in enumerate(zip(traces, Dataset.names(traces))):  # ("-o out/, its folder out/N.parquet")
            which = f"for {trace}{f' (trace {i + 1})' if traces.count(trace) > 1 else ''}, " if several else ""
            label = f"-o {output}, {which}its folder"
            outputs[label] = f"{output.rstrip('/')}/{name}"
            folders[label] = True
    check_outputs(outputs, {None: list(traces), "--profiles": profiles_file, "--config": config_file}, folders)
    profile, build = resolve_profile(target_name, profiles_file, heap_budget, seq_len=seq_len, dim=dim)
    from mcsa.app.replay import Replayer  # (the simulator: loaded to run, not for --help)

    replayer = Replayer(profile, build, load_config(config_file), seq_len, dim, heap_budget, position_limit)
    header = replayer.header()
    header["columns"] = (["source"] if several else []) + [c.name for c in RECORD] + (list(FIELDS) if with_packet else [])
    to_stdout = output in (None, "-")
    show_progress = sys.stderr.isatty() and not to_stdout  # (records on stdout: nothing shares their lines)
    bar = click.progressbar(length=1, label="replaying", file=sys.stderr, hidden=not show_progress)
    run = _Run(plot is not None, several, bar)
    sources = _open_traces(traces, input_format, skip_bad, run)
    bar.length = max(sum(s.size or 0 for s in sources), 1)
    with ExitStack() as stack:  # every output is put in place together, at the end, if all went well
        stack.callback(lambda: [s.close() for s in sources])
        if to_folder:
            _replay_to_folder(Dataset(output, header, several, with_packet), replayer, sources,
                              (workers, scheduler, connect_timeout), skip_bad, run, stack)
        else:
            with bar, Fleet(replayer, workers, scheduler, connect_timeout) as fleet:  # (a cluster refused: no header)
                out = stack.enter_context(atomic_output(None if to_stdout else output,
                                                        "wb" if fmt == "parquet" else "w"))
                writer = (ParquetWriter(out, header, several, with_packet) if fmt == "parquet"
                          else TextWriter(out, fmt, header, several, with_packet, wide))
                stack.push(lambda kind, *rest: writer.abandon() if kind is not None else None)  # (before out closes)
                for source, parts, keys in fleet.records(sources, skip_bad):
                    run.trace(source.path, parts, keys, writer, stop=not several)
            writer.close()  # (a trace that failed among several keeps its records before the fault, and its
            # summary line says why: the outputs go in place, then _report ends the run with 2)
        if summary_file:
            stack.enter_context(atomic_output(summary_file)).write("".join(dumps(r) + "\n" for r in run.ordered()))
        if plot:
            plt = pyplot("--plot")
            name = os.path.basename(traces[0]) if not several else plural(len(traces), "trace")
            title = f"mcsa replay of {name} on {profile.name}-{build}: seq_len {replayer.seq_len:,}, dim {replayer.dim:,}"
            stack.enter_context(_FigureOut(plt, replay_figure(plt, run.series, replayer.budget, title), plot))
    _report(run, several, fmt, to_stdout, wide, fail_on, len(traces), skip_bad)


def _replay_to_folder(dataset, replayer, sources, fleet_args, skip_bad, run, stack):
    """The traces into a Parquet dataset folder, their part files written where they are
    replayed; the good traces' folders are put in place when ``stack`` closes without
    an exception, every staged folder removed in any case."""
    done = {}

    def progress(path, at):
        run.bar.update(max(at - done.get(path, 0), 0))
        done[path] = max(at, done.get(path, 0))

    dataset.prepare([source.path for source in sources])
    stack.callback(dataset.discard)  # (after the commits below: what is not in place is removed)
    commits = []
    stack.push(lambda kind, *rest: [commit() for commit in commits] if kind is None else None)
    with run.bar, Fleet(replayer, *fleet_args) as fleet:
        for outcome in fleet.dataset(sources, dataset, skip_bad, progress):
            run.skip(outcome.skipped, outcome.summary.bad)
            run.note_unknown(outcome.path, outcome.unknown)
            run.result(outcome.path, outcome.summary, outcome.error)
            if run.plot and outcome.error is None:
                run.series[outcome.path] = outcome.folder.plot_points()
            if outcome.error is None:
                commits.append(lambda folder=outcome.folder, said=outcome.summary.as_dict(): folder.commit(said))


class _FigureOut:
    """A figure saved when the outputs are put in place (after an exception: not at all)."""

    def __init__(self, plt, fig, path):
        self.plt, self.fig, self.path = plt, fig, path

    def __enter__(self):
        return self

    def __exit__(self, kind, *rest):
        if kind is None:
            save_png(self.plt, self.fig, self.path)
        else:
            self.plt.close(self.fig)


def _report(run: _Run, several: bool, fmt: str, to_stdout: bool, wide: bool, fail_on: set, count: int,
            skip_bad: bool) -> None:
    """The per-trace table or the summary on stderr, and the verdict's exit code."""
    results = run.ordered()
    if several:
        click.echo(fleet_text(results, wide), err=not (fmt == "table" and to_stdout))
    elif fmt != "table" or not to_stdout:
        click.echo(summary_text(results[0]), err=True)
    if run.failures and not (skip_bad and several):
        raise InputError(run.failures[0] if not several else f"{len(run.failures)} of {count} traces failed (see above)")
    over = [r for r in results if r["first_over_budget_packet"] is not None]
    failed = []
    if "over-budget" in fail_on and over:
        failed.append(f"packet {over[0]['first_over_budget_packet']}" + (f" of {over[0]['source']}" if several else "")
                      + " goes over the heap budget")
    if "panic" in fail_on and any(r["panics"] for r in results):
        failed.append(f"{plural(sum(r['panics'] for r in results), 'packet')} panic")
    if failed:
        click.echo("failing: " + "; ".join(failed), err=True)
        sys.exit(1)
