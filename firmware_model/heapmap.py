"""The heap of a placed step at its failing allocation (or at its end), drawn as text
lines or as a matplotlib figure."""

from __future__ import annotations

import textwrap

import numpy as np

from . import step as step_module
from .planned import WHAT
from .step import StepReport

LETTERS = "qkvbtLIMOPKS"
"""One letter per kind of block, in the order of :data:`~firmware_model.planned.WHAT`."""


def _placement(report: StepReport):
    """The report's placement, or a ValueError saying why there is none."""
    if not isinstance(report, StepReport):
        raise TypeError(f"report must be a StepReport, got {type(report).__name__}")
    if report.placement is None:
        why = (report.panic or (f"its allocator trace is over {step_module.TRACE_LIMIT:,} events"
                                if report.trace is None and report.allocator != "none"
                                else f"allocator {report.allocator} places no blocks"))
        raise ValueError(f"no heap map: this step was not placed block by block ({why})")
    return report.placement


def _kinds(report: StepReport) -> np.ndarray:
    """The kind of block (a code into WHAT) of each obj id of the trace."""
    events = report.trace.events
    kinds = np.zeros(int(events["obj"].max(initial=0)) + 1, np.int64)
    kinds[events["obj"]] = report.trace.what
    return kinds


def _moment(report: StepReport) -> str:
    return report.failed_event or "the end of the step"


def heap_map_lines(report: StepReport, width: int = 64, rows: int = 16) -> list[str]:
    """The heap at the failing allocation (or at the end of the step) as text:
    ``rows`` lines of ``width`` cells, each cell the block that covers most of it
    (a letter per kind of block, ``.`` free), then the legend and the holes.

    Raises
    ------
    TypeError
        If ``report`` is not a StepReport.
    ValueError
        If the report has no placement (a panic, a trace over ``TRACE_LIMIT`` events, or
        allocator ``none``), or ``width`` or ``rows`` is not a positive integer.
    """
    p = _placement(report)
    for name, value in (("width", width), ("rows", rows)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if p.heap_size == 0:
        return [f"heap of 0 B at {_moment(report)}: no block can be placed in it, nothing to draw"]
    kinds = _kinds(report)
    cells = width * rows
    cell = max(1, -(-p.heap_size // cells))
    free = len(WHAT)
    cover = np.zeros((cells, free + 1), np.int64)  # bytes per cell per kind; the last column free
    edges = np.arange(cells + 1) * cell

    def paint(start, size, column):
        lo, hi = np.searchsorted(edges, [start, start + size], side="right") - 1
        for c in range(lo, min(hi, cells - 1) + 1):
            cover[c, column] += min(edges[c + 1], start + size) - max(edges[c], start)

    for start, size, obj in p.blocks:
        paint(start, size, kinds[obj])
    for start, size in p.holes:
        paint(start, size, free)
    chars = np.array(list(LETTERS) + ["."] + [" "])
    best = np.where(cover.sum(1) > 0, cover.argmax(1), free + 1)
    grid = chars[best]
    lines = [f"heap of {p.heap_size:,} B at {_moment(report)}; one cell = {cell:,} B"]
    lines += [f"{r * width * cell:>9,} |" + "".join(grid[r * width:(r + 1) * width]) + "|" for r in range(rows)]
    used = sorted(set(int(kinds[o]) for o in p.blocks[:, 2]))
    legend = [f"{LETTERS[w]} = {WHAT[w]}" for w in used if w > 2]
    inputs = [LETTERS[w] for w in used if w <= 2]
    if inputs:
        legend.insert(0, f"{' '.join(inputs)} = the input{'s' if len(inputs) > 1 else ''} {', '.join(inputs)}")
    lines += textwrap.wrap("; ".join(legend + [". = free"]), 98, initial_indent="  ", subsequent_indent="  ")
    holes = f"{len(p.holes)} hole{'' if len(p.holes) == 1 else 's'}"
    lines.append(f"  {holes}, {p.free_total:,} B free, largest {p.largest_hole:,} B: "
                 + ", ".join(f"{int(s):,} B at {int(a):,}" for a, s in p.holes[:12]) + (" ..." if len(p.holes) > 12 else ""))
    return lines


def heap_map_figure(report: StepReport):
    """The heap at the failing allocation (or at the end of the step) as a matplotlib
    ``Figure``: every block coloured by what it holds, the holes hatched, offsets in
    bytes; the title gives the profile, seq_len, partitions, dim and the verdict, and
    a failing request is drawn above the heap at its largest hole, as long as it is,
    so that what is missing shows.

    Raises
    ------
    TypeError, ValueError
        As :func:`heap_map_lines`.
    ImportError
        If matplotlib is not installed.
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter

    p = _placement(report)
    fig = Figure(figsize=(11, 3.6), layout="constrained")
    ax = fig.add_subplot()
    fig.suptitle(f"{report.profile}-{report.build}: seq_len {report.seq_len}, {report.partitions} partitions, "
                 f"dim {report.dim}; {report.allocator} heap of {p.heap_size:,} B", fontsize=12)
    ax.set_title("\n".join(textwrap.wrap(report.verdict(), 120)), fontsize=9,
                 color="black" if report.fits else "firebrick")
    ax.set_yticks([])
    ax.set_xlabel("offset in the heap (bytes)")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{int(x):,}"))
    if p.heap_size == 0:
        ax.set_xticks([])
        ax.text(0.5, 0.5, "the heap has 0 bytes: no block can be placed in it", ha="center", va="center",
                transform=ax.transAxes, fontsize=11)
        return fig
    kinds = _kinds(report)
    colours = colormaps["tab20"].colors
    handles = []
    for kind in sorted(set(int(kinds[o]) for o in p.blocks[:, 2])):
        mine = p.blocks[kinds[p.blocks[:, 2]] == kind]
        colour = colours[(2 * kind) % len(colours)]
        ax.broken_barh([(int(a), int(s)) for a, s, _ in mine], (0, 1), facecolors=colour, edgecolor="black",
                       linewidth=0.2)
        handles.append(Patch(facecolor=colour, edgecolor="black", label=WHAT[kind]))
    ax.broken_barh([(int(a), int(s)) for a, s in p.holes], (0, 1), facecolors="white", edgecolor="grey",
                   hatch="//", linewidth=0.4)
    handles.append(Patch(facecolor="white", edgecolor="grey", hatch="//", label="free"))
    top, right = 1.0, p.heap_size
    if p.failed_event is not None:
        size = int(report.trace.events["size"][p.failed_event])
        at = int(p.holes[np.argmax(p.holes[:, 1]), 0]) if len(p.holes) else 0
        ax.broken_barh([(at, size)], (1.25, 0.5), facecolors="none", edgecolor="red", linewidth=1.5)
        where = f"at the largest hole ({p.largest_hole:,} B)" if len(p.holes) else "(no hole at all)"
        ax.text(0.01, 0.96, f"failing request: {report.failed_event}, drawn {where}", fontsize=9, color="red",
                ha="left", va="top", transform=ax.transAxes)
        handles.append(Patch(facecolor="none", edgecolor="red", label="the failing request"))
        top, right = 2.3, max(p.heap_size, at + size)
        if right > p.heap_size:
            ax.axvline(p.heap_size, color="black", linewidth=1)
    ax.set_xlim(0, right)
    ax.set_ylim(0, top)
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 5), fontsize=9, frameon=False)
    return fig
