"""``mcsa replay``: gate-packet traces against a target, one record per packet and a summary."""

from __future__ import annotations

import json
import math
import os
import sys

import click
import numpy as np

from ..packets import shortest_f32
from ..replay import COLUMNS, MASK_COLUMNS, Replayer, Summary
from ..traces import Record, read_trace
from .common import (
    atomic_output, config_option, dumps, fail_on_input_errors, jsonable, limit_option, load_config, pyplot,
    resolve_profile, target_options,
)

FAIL_ON = ("over-budget", "panic")
TABLE = (("index", 7), ("seq_len", 7), ("target_density", 14), ("sparse", 6), ("density", 11),
         ("num_positions", 13), ("flops_ratio", 11), ("partitions", 10), ("boundary_tokens", 15),
         ("build_mask_peak_bytes", 21), ("attention_peak_bytes", 20), ("step_peak_bytes", 15), ("fits", 5),
         ("panic", 0))


def _fail_on(ctx, param, value):
    if not value:
        return set()
    wanted = {v.strip() for v in value.split(",") if v.strip()}
    unknown = wanted - set(FAIL_ON)
    if unknown:
        raise click.BadParameter(f"unknown condition(s) {', '.join(sorted(unknown))}; use {', '.join(FAIL_ON)}")
    return wanted


def _cell(value) -> str:
    value = jsonable(value)
    return "-" if value is None else str(value)


class _Writer:
    """Records out in one of the three formats. The mask fields of a record are
    a dict shared by every packet with the same mask, so each is rendered once."""

    def __init__(self, out, fmt: str, header: dict):
        self.out, self.fmt = out, fmt
        self._rendered: dict = {}
        if fmt == "jsonl":
            out.write(dumps(header) + "\n")
        elif fmt == "csv":
            out.write(",".join(COLUMNS) + "\n")
        else:
            out.write(" ".join(f"{name:>{width}}" for name, width in TABLE) + "\n")

    @staticmethod
    def _f32(value: float) -> str:
        if math.isfinite(value):
            return shortest_f32(value)
        return json.dumps(jsonable(np.float32(value)))

    def _mask(self, mask: dict) -> str:
        text = self._rendered.get(id(mask))
        if text is None:
            if self.fmt == "jsonl":
                text = dumps(mask)[1:-1]
            elif self.fmt == "csv":
                text = ",".join("" if (v := jsonable(mask[c])) is None else json.dumps(v).strip('"')
                                for c in MASK_COLUMNS)
            else:
                text = " ".join(f"{_cell(mask[name]):>{width}}" for name, width in TABLE if name in mask)
            self._rendered[id(mask)] = text
        return text

    def write(self, index: int, t, seq_len: int, target_density: float, mask: dict) -> None:
        density = self._f32(target_density)
        if self.fmt == "jsonl":
            self.out.write(f'{{"index": {index}, "t": {"null" if t is None else repr(t)}, "seq_len": {seq_len}, '
                           f'"target_density": {density}, {self._mask(mask)}}}\n')
        elif self.fmt == "csv":
            self.out.write(f"{index},{'' if t is None else t},{seq_len},{density},{self._mask(mask)}\n")
        else:
            self.out.write(f"{index:>7} {seq_len:>7} {density:>14} {self._mask(mask)}\n")

    def finish(self, summary: dict) -> None:
        if self.fmt == "jsonl":
            self.out.write(dumps({"summary": summary}) + "\n")
        elif self.fmt == "table":
            self.out.write(_summary_text(summary) + "\n")


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


def _plot(path: str, series: dict, budget: int) -> None:
    plt = pyplot("--plot")
    fig, axes = plt.subplots(3, 1, sharex=True, figsize=(9, 7))
    for ax, (name, label) in zip(axes, (("density", "mask density"), ("num_positions", "positions"),
                                        ("step_peak_bytes", "step heap peak (B)"))):
        ax.plot(series["index"], series[name], lw=0.8)
        ax.set_ylabel(label)
    axes[2].axhline(budget, color="red", ls="--", label=f"budget {budget:,} B")
    axes[2].legend(loc="upper right")
    axes[2].set_xlabel("packet")
    fig.tight_layout()
    with atomic_output(path, "wb") as out:
        fig.savefig(out, format="png", dpi=100)
    plt.close(fig)


@click.command()
@click.argument("traces", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@target_options
@click.option("--seq-len", type=click.IntRange(min=0), required=True,
              help="Sequence length of every packet (a record's own seq_len wins).")
@click.option("--dim", type=click.IntRange(min=0), default=64, show_default=True,
              help="Head dimension for the attention heap figures.")
@config_option
@click.option("--heap-budget", type=click.IntRange(min=0), help="Heap budget in bytes (default: the profile's).")
@click.option("--format", "fmt", type=click.Choice(["table", "jsonl", "csv"]),
              help="Output format (default: table on a terminal, jsonl otherwise).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True),
              help="Write records here (atomically) instead of stdout.")
@click.option("--plot", type=click.Path(dir_okay=False), help="PNG of density, positions and heap peak over the trace.")
@click.option("--fail-on", callback=_fail_on, metavar="over-budget,panic",
              help="Exit 1 if a packet goes over budget and/or the build panics.")
@click.option("--skip-bad", is_flag=True, help="Count and skip malformed records instead of stopping.")
@limit_option
@fail_on_input_errors
def replay(traces, target_name, profiles_file, seq_len, dim, config_file, heap_budget, fmt, output, plot,
           fail_on, skip_bad, position_limit):
    """Replay recorded gate packets (JSONL, CSV or 16-byte .bin, optionally .gz) on a target.

    \b
    Example:
      mcsa replay examples/trace.jsonl --target stm32f411 --seq-len 128 --dim 32 \\
          --fail-on over-budget,panic
    """
    if plot:
        pyplot("--plot")  # before any work: a missing extra is a usage error
    profile, build = resolve_profile(target_name, profiles_file)
    replayer = Replayer(profile, build, load_config(config_file), seq_len, dim, heap_budget, position_limit)
    if fmt is None:
        fmt = "table" if output is None and sys.stdout.isatty() else "jsonl"
    summary = Summary()
    series = {k: [] for k in ("index", "density", "num_positions", "step_peak_bytes")} if plot else None
    show_progress = sys.stderr.isatty()
    with atomic_output(output) as out:
        writer = _Writer(out, fmt, replayer.header())
        index = 0
        for path in traces:
            with click.progressbar(length=max(os.path.getsize(path), 1), label=path, file=sys.stderr,
                                   hidden=not show_progress) as bar:
                def progress(done, bar=bar):
                    bar.update(done - bar.pos)

                for item in read_trace(path, skip_bad, progress if show_progress else None):
                    if not isinstance(item, Record):
                        summary.bad += 1
                        if summary.bad <= 20:
                            click.echo(f"skipped: {item}", err=True)
                        continue
                    seq = seq_len if item.seq_len is None else item.seq_len
                    mask = replayer.mask_fields(item.values, seq)
                    writer.write(index, item.t, seq, replayer.target_density(item.values), mask)
                    summary.add(index, mask)
                    if series is not None and mask["num_positions"] is not None:
                        series["index"].append(index)
                        for k in ("density", "num_positions", "step_peak_bytes"):
                            series[k].append(mask[k])
                    index += 1
        result = summary.as_dict()
        writer.finish(result)
    if fmt != "table" or output is not None:
        click.echo(_summary_text(result), err=True)
    if plot:
        _plot(plot, series, replayer.budget)
    failed = []
    if "over-budget" in fail_on and result["first_over_budget_packet"] is not None:
        failed.append(f"packet {result['first_over_budget_packet']} goes over the heap budget")
    if "panic" in fail_on and result["panics"]:
        failed.append(f"{result['panics']} packet(s) panic")
    if failed:
        click.echo("failing: " + "; ".join(failed), err=True)
        sys.exit(1)
