"""``mcsa plan`` and ``mcsa fit``: the firmware_model planner and fit verdict."""

from __future__ import annotations

import json

import click

from firmware_model.allocators import ALLOCATORS, allocator_named
from firmware_model.placement.events import WHAT
from firmware_model.step import StepReport, capacity_table, fit_step, heap_map

from mcsa.core.packets import GatePacket
from .common import (
    USIZE64_MAX, IntRange, ascii_int, check_outputs, config_option, fail_on_input_errors, limit_option, load_config,
    pyplot, resolve_profile, save_png, target_options,
)


def _range(ctx, param, value):
    """Partition counts from ``A..B``, ``N`` or a comma list of them (``2,4,8``), ascending."""
    counts: set[int] = set()
    for part in value.split(","):
        try:
            lo, _, hi = part.partition("..")
            lo, hi = ascii_int(lo), ascii_int(hi or lo)
        except ValueError:
            raise click.BadParameter(f"expected A..B, N or a comma list of them, got {value!r}") from None
        if not 0 <= lo <= hi <= 0xFFFF:
            raise click.BadParameter(f"partition counts must satisfy 0 <= A <= B <= 65535, got {part!r}")
        counts.update(range(lo, hi + 1))
    return sorted(counts)


def _common(fn):
    for option in reversed((
        click.option("--dim", type=IntRange(0, USIZE64_MAX), default=64, show_default=True,
                     help="Head dimension."),
        click.option("--lambda", "lambda_", type=IntRange(0, 0xFFFF_FFFF), default=200, show_default=True,
                     help="Gate lambda."),
        click.option("--concentration", type=IntRange(0, 0xFFFF), default=0, show_default=True,
                     help="Gate boundary_concentration_q15."),
        click.option("--heap-budget", type=IntRange(0, USIZE64_MAX),
                     help="Heap budget in bytes (default: the profile's)."),
        click.option("--allocator", type=click.Choice(list(ALLOCATORS)),
                     help="Allocator model (default: the profile's); all but 'none' place every block."),
        click.option("--json", "as_json", is_flag=True, help="JSON instead of a table."),
    )):
        fn = option(fn)
    return limit_option(config_option(target_options(fn)))


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


@click.command()
@_common
@click.option("--partitions", default="2..16", show_default=True, callback=_range, help="Partition counts: A..B, N or a comma list (2,4,8).")
@click.option("--max-seq-len", type=IntRange(1, USIZE64_MAX), default=65536, show_default=True,
              help="Scan seq_len from 1 up to this.")
@fail_on_input_errors
def plan(target_name, profiles_file, dim, lambda_, concentration, heap_budget, allocator, as_json, config_file,
         position_limit, partitions, max_seq_len):
    """The largest seq_len whose whole step fits the heap, per partition count, and
    every shorter seq_len that does not fit (fit is not monotonic: with every block
    placed, a longer step can fit where a shorter one fails).

    \b
    Example:
      mcsa plan --target stm32f411 --dim 32 --partitions 2..8
      mcsa plan --target esp32 --dim 32 --partitions 2,4,8
    """
    allocator = allocator and allocator_named(allocator)
    profile, build = resolve_profile(target_name, profiles_file, heap_budget, allocator, max_seq_len=max_seq_len,
                                     dim=dim)
    rows = capacity_table(profile, load_config(config_file), dim, partitions, lambda_, concentration,
                          hi=max_seq_len, build=build, heap_budget=heap_budget, allocator=allocator,
                          position_limit=position_limit)
    if as_json:
        click.echo(json.dumps(rows))
        return
    click.echo(f"{profile.name}-{build}, dim {dim}, lambda {lambda_}, heap budget {rows[0]['budget']:,} B, "
               f"allocator {(allocator or profile.allocator).name}")
    click.echo(f"{'partitions':>10} {'max_seq_len':>11} {'positions':>10} {'peak_bytes':>11}  shorter that fail")
    for r in rows:
        cells = [r["partitions"], r["max_seq_len"], r["num_positions"], r["peak_bytes"]]
        click.echo(" ".join(f"{'-' if c is None else c:>{w}}" for c, w in zip(cells, (10, 11, 10, 11)))
                   + "  " + (_spans(r["failing_below"]) or "none"))


def _report_json(report: StepReport) -> dict:
    out = {k: getattr(report, k) for k in ("profile", "build", "seq_len", "dim", "allocator", "budget",
                                           "inputs_bytes", "peak_bytes", "num_positions", "fits", "headroom",
                                           "panic")}
    out["build_mask"] = vars(report.build_mask) if report.build_mask else None
    out["sparse_attention"] = vars(report.sparse_attention) if report.sparse_attention else None
    out["crossing"] = vars(report.crossing) if report.crossing else None
    p = report.placement
    out["placement"] = None if p is None else {
        "failed_event": p.failed_event, "failed": report.failed_event, "peak_used": p.peak_used,
        "free_total": p.free_total, "largest_hole": p.largest_hole, "holes": p.holes.tolist(),
    }
    out["verdict"] = report.verdict()
    return out


def _map_png(report: StepReport, path: str) -> None:
    plt = pyplot("--png")
    p = report.placement
    what = {int(o): int(w) for o, w in zip(report.trace.events["obj"], report.trace.what)}
    fig, ax = plt.subplots(figsize=(10, 3))
    colours = plt.get_cmap("tab20").colors
    seen = set()
    for start, size, obj in p.blocks:
        w = what[int(obj)]
        ax.broken_barh([(start, size)], (0, 1), facecolors=colours[w % len(colours)], edgecolor="black",
                       linewidth=0.2, label=None if w in seen else WHAT[w])
        seen.add(w)
    ax.broken_barh([tuple(h) for h in p.holes], (0, 1), facecolors="white", edgecolor="grey", hatch="//",
                   linewidth=0.3, label="free")
    ax.set_xlim(0, p.heap_size)
    ax.set_yticks([])
    ax.set_xlabel("heap offset (bytes)")
    ax.set_title(f"{report.allocator}, {p.heap_size:,} B heap at {report.failed_event or 'the end of the step'}",
                 fontsize=8)
    ax.legend(fontsize=6, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.6))
    fig.tight_layout()
    save_png(plt, fig, path)


@click.command()
@_common
@click.option("--seq-len", type=IntRange(0, USIZE64_MAX), required=True, help="Sequence length.")
@click.option("--partitions", type=IntRange(0, 0xFFFF), required=True, help="Gate partition_count.")
@click.option("--map", "show_map", is_flag=True, help="Draw the heap at the failing allocation (or the end).")
@click.option("--png", type=click.Path(dir_okay=False), help="Write the heap map as a PNG.")
@fail_on_input_errors
def fit(target_name, profiles_file, dim, lambda_, concentration, heap_budget, allocator, as_json, config_file,
        position_limit, seq_len, partitions, show_map, png):
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
    check_outputs({"--png": png})
    allocator = allocator and allocator_named(allocator)
    profile, build = resolve_profile(target_name, profiles_file, heap_budget, allocator, seq_len=seq_len, dim=dim)
    gate = GatePacket(lambda_=lambda_, partition_count=partitions, boundary_concentration_q15=concentration)
    report = fit_step(profile, load_config(config_file), gate, seq_len, dim, build=build, heap_budget=heap_budget,
                      allocator=allocator, position_limit=position_limit)
    if (show_map or png) and report.placement is None:
        heap_map(report)  # raises the reason there is no map
    if as_json:
        click.echo(json.dumps(_report_json(report)))
    else:
        positions = "" if report.num_positions is None else f"{report.num_positions:,} positions, "
        click.echo(f"{profile.name}-{build}: seq_len {seq_len}, {partitions} partitions, dim {dim}, "
                   f"{positions}allocator {report.allocator}")
        if report.build_mask is not None:
            click.echo(f"  inputs q, k, v:   {report.inputs_bytes:>12,} B")
            click.echo(f"  build_mask peak:  {report.build_mask.peak_bytes:>12,} B (mask left: "
                       f"{report.build_mask.live_after - report.inputs_bytes:,} B)")
            click.echo(f"  attention peak:   {report.sparse_attention.peak_bytes:>12,} B")
        click.echo(report.verdict())
        if show_map:
            click.echo("\n".join(heap_map(report)))
    if png:
        _map_png(report, png)
        click.echo(f"wrote {png}", err=as_json)
    if not report.fits:
        raise SystemExit(1)
