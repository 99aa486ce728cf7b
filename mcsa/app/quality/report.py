"""The quality records as a terminal table, CSV and a figure."""

from __future__ import annotations

import csv

COLUMNS = (("partitions", 10, "{}", True), ("mask", 15, "{}", True), ("positions", 9, "{}", False),
           ("density", 7, "{:.4f}", True), ("mask_bytes", 10, "{}", False), ("recall_mean", 11, "{:.4f}", True),
           ("recall_min_head", 15, "{:.4f}", True), ("out_err_median", 14, "{:.4f}", True),
           ("int8_err_vs_dense_median", 24, "{:.4f}", False), ("int8_err_vs_mask_median", 23, "{:.4f}", False))
"""The scalar fields of a record: name, table width, format, and whether the table
shows it without ``wide`` (those fit 100 columns)."""


def table(records: list[dict], wide: bool = False) -> str:
    """Fixed-width table of the scalar fields (``-`` where a record has none); without
    ``wide``, the columns that fit 100 characters, and a line naming the others."""
    shown = [c for c in COLUMNS if wide or c[3]]
    lines = [" ".join(f"{name:>{w}}" for name, w, _, _ in shown)]
    for rec in records:
        lines.append(" ".join(f"{fmt.format(rec[name]) if name in rec else '-':>{w}}" for name, w, fmt, _ in shown))
    if len(shown) < len(COLUMNS):
        lines.append("(positions, mask_bytes and the int8 errors: --wide, or --format csv or json)")
    return "\n".join(lines)


def write_csv(records: list[dict], out) -> None:
    """One row per record: the scalar fields, then ``recall_layer_<id>`` per layer."""
    layers = records[0]["layers"] if records else []
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([c[0] for c in COLUMNS] + [f"recall_layer_{i}" for i in layers])
    for rec in records:
        writer.writerow([rec.get(c[0], "") for c in COLUMNS] + rec["recall_by_layer"])


def plot(records: list[dict], out, plt, title: str = "") -> None:
    """Left: recall against density, one line per mask family over the partition
    counts (the reference's points labelled P=...). Right: recall per layer at the
    middle partition count. One legend below both, a title naming what and ``title``
    (the texts, T, layers and heads). Writes PNG to ``out`` (a binary file)."""
    families = list(dict.fromkeys(r["mask"] for r in records))
    counts = sorted({r["partitions"] for r in records})
    middle = counts[len(counts) // 2]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    for f in families:
        rows = sorted((r for r in records if r["mask"] == f), key=lambda r: r["density"])
        left.plot([r["density"] for r in rows], [r["recall_mean"] for r in rows], marker="o", label=f)
        for r in rows if f == "reference" else ():
            left.annotate(f"P={r['partitions']}", (r["density"], r["recall_mean"]), fontsize=8,
                          textcoords="offset points", xytext=(-4, 5), ha="right", va="bottom")
        at = next(r for r in records if r["mask"] == f and r["partitions"] == middle)
        right.plot(at["layers"], at["recall_by_layer"], marker=".", label=f)
    densities = [r["density"] for r in records]
    left.set_xscale("log")
    left.set_xlim(min(densities) / 1.5, max(densities) * 1.3)
    ticks = []
    for d in sorted({round(r["density"], 3) for r in records if r["mask"] == families[0]}):
        if not ticks or d > ticks[-1] * 1.25:  # labels apart on the log axis
            ticks.append(d)
    left.set_xticks(ticks, [f"{d:.3f}" for d in ticks], minor=False)
    left.set_xticks([], minor=True)
    left.set_xlabel("density: mask positions / causal positions (log scale)")
    left.set_ylabel("recall: dense attention mass kept\n(mean over texts, layers, heads)")
    left.set_title("recall against density, one point per partition count")
    right.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    right.set_xlabel("layer")
    right.set_ylabel("recall (mean over texts and heads)")
    right.set_title(f"recall per layer at P={middle}")
    for ax in (left, right):
        ax.set_ylim(0, 1.04)
        ax.grid(alpha=0.3)
    fig.suptitle("Mask quality: how much of the dense attention each mask keeps" + (f"\n{title}" if title else ""),
                 fontsize=11)
    handles, labels = left.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(families), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(out, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
