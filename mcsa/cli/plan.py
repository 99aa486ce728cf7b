"""``mcsa plan`` and ``mcsa fit``: the firmware_model planner and fit verdict."""

from __future__ import annotations

import json
import sys
import textwrap
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from firmware_model.allocators import ALLOCATORS, allocator_named
from firmware_model.profiles import heap_budget as heap_budget_of

from mcsa.app import interrupt
from mcsa.core.errors import MaskTooLarge
from mcsa.core.packets import f32_to_json
from .common import (
    TABLE_WIDTH, USIZE64_MAX, IntRange, check_outputs, config_option, dim_option, fail_on_input_errors, gate_options,
    heap_budget_option, limit_option, load_config, pyplot, resolve_profile, save_png, seq_len_option, target_options,
)

if TYPE_CHECKING:  # (the planner loads Numba: imported when a command runs, not for --help)
    from firmware_model.step import StepReport


def _common(fn):
    """The options plan and fit share: the shared bundles, ``--allocator`` and ``--json``."""
    fn = limit_option(click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")(fn))
    fn = config_option(fn)
    fn = click.option("--allocator", type=click.Choice(list(ALLOCATORS)),
                      help="Allocator model (default: the profile's); all but 'none' place every block.")(fn)
    return target_options(dim_option(heap_budget_option(fn)))


def _spans(values: list[int]) -> str:
    """``83, 90..92`` for [83, 90, 91, 92]."""
    out, i = [], 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        out.append(str(values[i]) if i == j else f"{values[i]}..{values[j]}")
        i = j + 1
    return ", ".join(out)


def _reason(row: dict) -> str:
    """Why the seq_len after the largest that fits does not fit, wrapped to 100 columns."""
    nxt = row["next"]
    n, cause = nxt["seq_len"], nxt["cause"]
    if n is None:
        text = f"longer steps not scanned: {nxt['detail']} (--max-seq-len)"
    elif cause == "panic":
        text = f"{n} fails: it panics with {nxt['panic']}"
    elif cause == "position_limit":
        text = f"{n} not judged: its mask is over the position limit (--position-limit)"
    elif cause == "bytes":
        what = f"; first over the budget: {nxt['allocation']}" if "allocation" in nxt else ""
        text = f"{n} fails by bytes: {nxt['requested_bytes']:,} B requested, {nxt['missing_bytes']:,} B missing{what}"
    elif cause == "overhead":
        text = (f"{n} fails: {nxt['allocation']} finds {nxt['free_bytes']:,} B free, the allocator's own "
                f"structures and rounding taking the rest")
    else:
        text = (f"{n} fails by fragmentation: {nxt['allocation']} is not served ({nxt['free_bytes']:,} B free, "
                f"largest hole {nxt['largest_hole']:,} B)")
    return "\n".join(textwrap.wrap(text, 100, initial_indent="  ", subsequent_indent="    "))


class _Progress:
    """What :func:`capacity_table` calls while a plan runs: ``update`` stops the scan
    at a signal (the first Ctrl-C or SIGTERM is recorded, not raised, so a long scan
    must look) and moves the progress bar on stderr when that is a terminal; ``echo``
    writes a finished row to stdout, clearing the bar's line first so that the two
    never share a line."""

    def __init__(self, partitions: list[int], bar):
        self.place = {p: i for i, p in enumerate(partitions)}
        self.bar = bar

    def update(self, p: int, done: int, total: int) -> None:
        interrupt.check()
        if self.bar is not None:
            self.bar.update(self.place[p] * 1000 + (1000 * done // total if total else 1000) - self.bar.pos)

    def echo(self, text: str) -> None:
        if self.bar is not None:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
        click.echo(text)
        if self.bar is not None:
            self.bar.render_progress()


@contextmanager
def _progress(partitions: list[int]):
    """A :class:`_Progress` for the run, its bar on stderr only when that is a terminal."""
    if not sys.stderr.isatty():
        yield _Progress(partitions, None)
        return
    with click.progressbar(length=1000 * len(partitions), label="scanning", file=sys.stderr,
                           show_eta=True) as bar:
        yield _Progress(partitions, bar)


def _row_lines(r: dict) -> str:
    """A plan row as the table prints it, with why its next seq_len fails."""
    cells = [r["partitions"], r["max_seq_len"], r["num_positions"], r["step_requested_bytes"], r["step_peak_bytes"]]
    return (" ".join(f"{'-' if c is None else c:>{w}}" for c, w in zip(cells, (10, 11, 10, 14, 10)))
            + "  " + (_spans(r["failing_below"]) or "none") + "\n" + _reason(r))


@click.command()
@_common
@gate_options(partition_list=tuple(range(2, 17)), **{"lambda": 200})
@click.option("--max-seq-len", type=IntRange(1, USIZE64_MAX), default=65536, show_default=True, metavar="N",
              help="Scan seq_len from 1 up to this.")
@fail_on_input_errors
def plan(target_name, profiles_file, dim, gate, heap_budget, allocator, as_json, config_file, position_limit,
         partitions, max_seq_len):
    """The largest seq_len whose whole step fits the heap, per partition count, every
    shorter seq_len that does not fit (fit is not monotonic: with every block placed,
    a longer step can fit where a shorter one fails), and why the next seq_len fails:
    its bytes, the allocator's own overhead or fragmentation (every block placed),
    with the allocation that fails.

    \b
    Example:
      mcsa plan --target stm32f411 --dim 32 --partitions 2..8
      mcsa plan --target esp32 --dim 32 --partitions 2,4,8
    """
    allocator = allocator and allocator_named(allocator)
    profile, build = resolve_profile(target_name, profiles_file, heap_budget, allocator, max_seq_len=max_seq_len,
                                     dim=dim)
    config = load_config(config_file)
    header = (f"{profile.name}-{build}, dim {dim}, lambda {gate.lambda_}, heap budget "
              f"{heap_budget_of(profile, heap_budget, allocator):,} B, allocator {(allocator or profile.allocator).name}\n"
              f"{'partitions':>10} {'max_seq_len':>11} {'positions':>10} {'step_requested':>14} {'step_peak':>10}"
              "  shorter that fail")
    stream = not as_json and sys.stdout.isatty()  # on a terminal, each row as its partition count is done
    if stream:
        click.echo(header)
    with _progress(partitions) as progress:
        from firmware_model.step import capacity_table

        rows = capacity_table(profile, config, dim, partitions, gate, hi=max_seq_len, progress=progress.update,
                              on_row=(lambda r: progress.echo(_row_lines(r))) if stream else None, build=build,
                              heap_budget=heap_budget, allocator=allocator, position_limit=position_limit)
    if as_json:
        click.echo(json.dumps(rows))
    elif not stream:  # (a file or a pipe gets the whole table or, on a refusal, nothing)
        click.echo("\n".join([header, *map(_row_lines, rows)]))


def _report_json(report: StepReport, target) -> dict:
    out = {"profile": report.profile, "build": report.build,
           "target": {"usize_bits": target.usize_bits, "overflow": target.overflow.value, "expf": target.expf.value},
           "config": report.config.to_dict(), "gate": report.gate.to_dict(),
           "partitions": report.partitions, "lambda": report.gate.lambda_}
    out.update({k: getattr(report, k) for k in (
        "seq_len", "dim", "allocator", "budget_bytes", "inputs_bytes", "build_mask_peak_bytes", "mask_bytes",
        "attention_peak_bytes", "step_requested_bytes", "step_peak_bytes", "num_positions", "fits", "headroom",
        "panic")})
    out["density"] = None if report.density is None else f32_to_json(report.density)
    out["crossing"] = vars(report.crossing) if report.crossing else None
    p = report.placement
    out["placement"] = None if p is None else {
        "failed_event": p.failed_event, "failed": report.failed_event, "peak_used": p.peak_used,
        "free_total": p.free_total, "largest_hole": p.largest_hole, "holes": p.holes.tolist(),
    }
    out["cause"] = report.cause()
    out["verdict"] = report.verdict()
    out.update(_mask_figures(report))
    return out


def _mask_figures(report: StepReport) -> dict:
    """The op counts of sparse_attention and the mask's size held other ways (None
    where the mask is not built)."""
    if report.num_positions is None:
        return {"op_counts": None, "representations": None}
    try:
        from firmware_model.step import op_counts, representations

        ops = op_counts(report.step.query_runs(), report.dim)
    except MaskTooLarge:
        ops = None
    return {"op_counts": ops, "representations": representations(report.step.stats(), report.seq_len)}


FIGURE_NOTES = (
    ("inputs_bytes", "q, k and v requested"),
    ("build_mask_peak_bytes", "requested live in build_mask (not q, k, v)"),
    ("mask_bytes", "held by the finished mask"),
    ("attention_peak_bytes", "requested live in sparse_attention (not the mask, q, k, v)"),
    ("step_requested_bytes", "the whole step, each block as the allocator counts it"),
    ("step_peak_bytes", "what the verdict compares with the heap budget"),
)
"""The byte figures fit prints, with what each counts (the shared vocabulary)."""

REPRESENTATIONS = {"vec_pairs": "Vec<(u16,u16)>", "csr": "CSR", "intervals": "intervals", "bitmap": "bitmap"}


@click.command()
@seq_len_option
@_common
@gate_options(**{"lambda": 200})
@click.option("--map", "show_map", is_flag=True, help="Draw the heap at the failing allocation (or the end).")
@click.option("--png", type=click.Path(dir_okay=False), help="Write the heap map as a PNG.")
@fail_on_input_errors
def fit(target_name, profiles_file, dim, gate, heap_budget, allocator, as_json, config_file, position_limit,
        seq_len, show_map, png):
    """Does one step (q, k, v, build_mask, then sparse_attention) fit the target's heap,
    with every block placed by the allocator? Exit 1 if not (a panic of the build
    does not fit either). The verdict names the first allocator call that fails,
    numbered from 0 in call order (alloc, dealloc and realloc each count one), and
    the free space at that moment.

    \b
    Example:
      mcsa fit --target stm32f411 --seq-len 256 --partitions 4 --dim 32
      mcsa fit --target x86_64 --allocator linked-list --heap-budget 65536 --seq-len 184 --partitions 16 --dim 32 --map
    """
    from firmware_model.heapmap import heap_map_figure, heap_map_lines
    from firmware_model.step import fit_step

    check_outputs({"--png": png}, {"--config": config_file, "--profiles": profiles_file})
    allocator = allocator and allocator_named(allocator)
    profile, build = resolve_profile(target_name, profiles_file, heap_budget, allocator, seq_len=seq_len, dim=dim)
    report = fit_step(profile, load_config(config_file), gate, seq_len, dim, build=build, heap_budget=heap_budget,
                      allocator=allocator, position_limit=position_limit)
    lines = heap_map_lines(report) if (show_map or png) else None  # raises the reason there is no map
    if as_json:
        click.echo(json.dumps(_report_json(report, profile.target(build))))
    else:
        click.echo(f"{profile.name}-{build}: seq_len {seq_len}, {gate.partition_count} partitions, "
                   f"lambda {gate.lambda_}, dim {dim}\n"
                   f"  allocator {report.allocator}, heap budget {report.budget_bytes:,} B")
        if report.num_positions is not None:
            click.echo(f"  mask: {report.num_positions:,} positions, density {f32_to_json(report.density)}")
        for name, note in FIGURE_NOTES:
            value = getattr(report, name)
            if value is not None:
                click.echo(f"  {name:<22} {value:>13,} B  {note}")
        click.echo(textwrap.fill(report.verdict(), TABLE_WIDTH, break_on_hyphens=False))
        extra = _mask_figures(report)
        if extra["op_counts"]:
            ops = ", ".join(f"{k} {v:,}" for k, v in extra["op_counts"].items())
            click.echo("\n".join(textwrap.wrap(f"sparse_attention ops: {ops}", 98, initial_indent="  ",
                                               subsequent_indent="    ")))
        if extra["representations"]:
            click.echo("  the mask held as: " + ", ".join(
                f"{REPRESENTATIONS[k]} {v:,} B" for k, v in extra["representations"].items()))
        if show_map:
            click.echo("\n".join(lines))
    if png:
        plt = pyplot("--png")  # matplotlib is there, or the option is refused
        save_png(plt, heap_map_figure(report), png)
        click.echo(f"wrote {png}", err=as_json)
    if not report.fits:
        raise SystemExit(1)
