"""``mcsa plan`` and ``mcsa fit``: the firmware_model planner and fit verdict."""

from __future__ import annotations

import json

import click

from firmware_model.allocators import ALLOCATORS, allocator_named
from firmware_model.step import capacity_table, fit_step

from ..packets import GatePacket
from .common import config_option, fail_on_input_errors, limit_option, load_config, resolve_profile, target_options


def _range(ctx, param, value):
    try:
        lo, _, hi = value.partition("..")
        lo, hi = int(lo), int(hi or lo)
    except ValueError:
        raise click.BadParameter(f"expected A..B or N, got {value!r}") from None
    if not 0 <= lo <= hi <= 0xFFFF:
        raise click.BadParameter(f"partition counts must satisfy 0 <= A <= B <= 65535, got {value!r}")
    return range(lo, hi + 1)


def _common(fn):
    for option in reversed((
        click.option("--dim", type=click.IntRange(min=0), default=64, show_default=True, help="Head dimension."),
        click.option("--lambda", "lambda_", type=click.IntRange(0, 0xFFFF_FFFF), default=200, show_default=True,
                     help="Gate lambda."),
        click.option("--concentration", type=click.IntRange(0, 0xFFFF), default=0, show_default=True,
                     help="Gate boundary_concentration_q15."),
        click.option("--heap-budget", type=click.IntRange(min=0), help="Heap budget in bytes (default: the profile's)."),
        click.option("--allocator", type=click.Choice(list(ALLOCATORS)), help="Allocator model (default: the profile's)."),
        click.option("--json", "as_json", is_flag=True, help="JSON instead of a table."),
    )):
        fn = option(fn)
    return limit_option(config_option(target_options(fn)))


@click.command()
@_common
@click.option("--partitions", default="2..16", show_default=True, callback=_range, help="Partition counts, A..B.")
@fail_on_input_errors
def plan(target_name, profiles_file, dim, lambda_, concentration, heap_budget, allocator, as_json, config_file,
         position_limit, partitions):
    """The largest seq_len whose whole step fits the heap, per partition count.

    \b
    Example:
      mcsa plan --target stm32f411 --dim 32 --partitions 2..8
    """
    profile, build = resolve_profile(target_name, profiles_file)
    rows = capacity_table(profile, load_config(config_file), dim, partitions, lambda_, concentration, build=build,
                          heap_budget=heap_budget, allocator=allocator and allocator_named(allocator),
                          position_limit=position_limit)
    if as_json:
        click.echo(json.dumps(rows))
        return
    budget = rows[0]["budget"] if rows else heap_budget
    click.echo(f"{profile.name}-{build}, dim {dim}, lambda {lambda_}, heap budget {budget:,} B")
    click.echo(f"{'partitions':>10} {'max_seq_len':>11} {'positions':>10} {'peak_bytes':>11}")
    for r in rows:
        cells = [r["partitions"], r["max_seq_len"], r["num_positions"], r["peak_bytes"]]
        click.echo(" ".join(f"{'-' if c is None else c:>{w}}" for c, w in zip(cells, (10, 11, 10, 11))))


@click.command()
@_common
@click.option("--seq-len", type=click.IntRange(min=0), required=True, help="Sequence length.")
@click.option("--partitions", type=click.IntRange(0, 0xFFFF), required=True, help="Gate partition_count.")
@fail_on_input_errors
def fit(target_name, profiles_file, dim, lambda_, concentration, heap_budget, allocator, as_json, config_file,
        position_limit, seq_len, partitions):
    """Does one step (build_mask, then sparse_attention) fit the target's heap? Exit 1 if not.

    \b
    Example:
      mcsa fit --target stm32f411 --seq-len 256 --partitions 4 --dim 32
    """
    profile, build = resolve_profile(target_name, profiles_file)
    gate = GatePacket(lambda_=lambda_, partition_count=partitions, boundary_concentration_q15=concentration)
    report = fit_step(profile, load_config(config_file), gate, seq_len, dim, build=build, heap_budget=heap_budget,
                      allocator=allocator and allocator_named(allocator), position_limit=position_limit)
    if as_json:
        out = {k: getattr(report, k) for k in ("profile", "build", "seq_len", "dim", "allocator", "budget",
                                               "inputs_bytes", "peak_bytes", "num_positions", "fits", "headroom")}
        out["build_mask"] = vars(report.build_mask)
        out["sparse_attention"] = vars(report.sparse_attention)
        out["crossing"] = vars(report.crossing) if report.crossing else None
        click.echo(json.dumps(out))
    else:
        click.echo(f"{profile.name}-{build}: seq_len {seq_len}, {partitions} partitions, dim {dim}, "
                   f"{report.num_positions:,} positions, allocator {report.allocator}")
        click.echo(f"  inputs q, k, v:   {report.inputs_bytes:>12,} B")
        click.echo(f"  build_mask peak:  {report.build_mask.peak_bytes:>12,} B (mask left: "
                   f"{report.build_mask.live_after - report.inputs_bytes:,} B)")
        click.echo(f"  attention peak:   {report.sparse_attention.peak_bytes:>12,} B")
        click.echo(report.verdict())
    if not report.fits:
        raise SystemExit(1)
