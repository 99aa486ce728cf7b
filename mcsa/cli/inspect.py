"""``mcsa targets``, ``mask``, ``verify`` and ``attention``. The simulator loads
when a command runs, not when its options are read."""

from __future__ import annotations

import sys
import textwrap

import click

from .common import (
    InputError, InputPath, atomic_output, byte_size, check_outputs, cli_build, config_option, dim_option, dumps,
    fail_on_input_errors, gate_options, jsonable, limit_option, load_config, output_options, plural,
    profiles_option, pyplot, save_png, seq_len_option, table, target_options, TABLE_WIDTH,
)

ASCII_LIMIT = 96
"""Masks up to this many tokens are drawn as text on a terminal (up to 32 always)."""
LISTED = 8
"""Boundaries and boundary tokens listed in text; JSON holds them all."""
KINDS = ("density", "masks", "full", "scalar", "attention")
"""mcsa.app.verify.KINDS (a test holds them equal), here so that `verify --help` loads no kernels."""


@click.command()
@profiles_option
@output_options(wide=True)
@fail_on_input_errors
def targets(profiles_file, fmt, output, wide):
    """List the target profiles (parts with RAM, heap budget and allocator) and the
    simulator presets (builds with no RAM figure); --target takes either.

    \b
    Example:
      mcsa targets
      mcsa targets --json
    """
    from firmware_model.profiles import load_profiles
    from mcsa.core.target import FIRMWARE_TOOLCHAIN, HOW_KNOWN, PRESETS

    check_outputs({"-o": output}, {"--profiles": profiles_file})
    profiles = load_profiles(profiles_file)
    with atomic_output(output) as out:
        if fmt == "json":
            out.write(json_line({
                "profiles": [{"name": p.name, "arch": p.arch, "usize_bits": p.usize_bits, "ram": p.ram,
                              "heap_budget": p.heap_budget, "fpu": p.fpu, "expf": p.expf, "nan": p.nan,
                              "allocator": p.allocator.name, "description": p.description, "source": p.source}
                             for p in profiles.values()],
                "presets": [{"name": t.name, "usize_bits": t.usize_bits, "overflow": t.overflow.value,
                             "expf": t.expf.value, "nan": t.nan.name, "how_known": HOW_KNOWN[t.name]}
                            for t in PRESETS.values()]}))
            return
        header = ("profile", "usize", "ram", "heap_budget", "allocator", "expf", "description")
        rows = [(p.name, p.usize_bits, byte_size(p.ram), byte_size(p.heap_budget), p.allocator.name, p.expf,
                 p.description) for p in profiles.values()]
        lines = table(header, rows, right={1, 2, 3}, wide=wide)
        lines += ["", *textwrap.wrap("simulator presets: builds with no RAM figure (fit, plan and replay give them "
                                     "their whole address space as heap, allocator none):", TABLE_WIDTH)]
        rows = [(t.name, t.usize_bits, t.expf.value, t.nan.name, HOW_KNOWN[t.name]) for t in PRESETS.values()]
        lines += table(("preset", "usize", "expf", "nan", "how known"), rows, right={1}, wide=wide)
        lines += textwrap.wrap(f"measured: against the reference module built for that target; the QEMU firmware "
                               f"builds with {FIRMWARE_TOOLCHAIN} (tests/golden/firmware/README.md)", TABLE_WIDTH)
        out.write("\n".join(lines) + "\n")


def json_line(record: dict) -> str:
    return dumps(record) + "\n"


def _listed(values: list) -> str:
    """``[0, 16, 32]``, or the first :data:`LISTED` and how many in all."""
    if len(values) <= LISTED:
        return str(values)
    return "[" + ", ".join(map(str, values[:LISTED])) + f", … ({len(values):,} in all)]"


def mask_figure(plt, positions, boundaries, seq_len: int, title: str):
    """The mask as an image: the square of query x key tokens in blocks of equal
    size (at most 128 a side, so one block is several pixels), each block shaded by
    the density of its intra-partition positions and drawn solid where it holds a
    cross-partition position (a boundary token's), so every kind shows at any size."""
    import numpy as np
    from matplotlib.patches import Patch

    side = min(max(seq_len, 1), 1 << 16)  # a mask whose indices wrap lives in u16 x u16
    block = -(-side // 128)
    cells = -(-side // block)
    q = positions[:, 0].astype(np.int64)
    k = positions[:, 1].astype(np.int64)
    bounds = np.asarray(boundaries, np.int64)
    start = bounds[np.maximum(np.searchsorted(bounds, q, side="right") - 1, 0)] if bounds.size else q + 1
    intra = (k >= start) & (k <= q)
    density = np.zeros((cells, cells))
    np.add.at(density, (q[intra] // block, k[intra] // block), 1.0 / (block * block))
    cross = np.zeros((cells, cells), bool)
    cross[q[~intra] // block, k[~intra] // block] = True
    image = np.ones((cells, cells, 3))
    shade = np.where(density > 0, 0.25 + 0.75 * np.minimum(density, 1.0), 0.0)  # a lone position still shows
    image -= shade[..., None] * (1.0 - np.array([0.12, 0.35, 0.7]))  # towards blue
    image[cross] = (0.85, 0.1, 0.1)
    fig, ax = plt.subplots(figsize=(7, 7.4))
    ax.imshow(image, interpolation="nearest", extent=(0, cells * block, cells * block, 0))
    ax.set_xlim(0, side)
    ax.set_ylim(side, 0)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("key token")
    ax.set_ylabel("query token")
    one = "one token" if block == 1 else f"{block} x {block} tokens"
    ax.legend(handles=[Patch(color=(0.12, 0.35, 0.7), label=f"intra-partition (shade: density of a block of {one})"),
                       Patch(color=(0.85, 0.1, 0.1), label="cross-partition: a boundary token's positions")],
              loc="upper center", bbox_to_anchor=(0.5, -0.08), fontsize=9, frameon=False)
    fig.tight_layout()
    return fig


def _mask_text(report, art: bool) -> str:
    """The report as lines of at most :data:`TABLE_WIDTH` columns (and the mask as text when ``art``)."""
    s = report.stats
    head = f"{report.target}: seq_len {report.seq_len:,}"
    lines = []
    if s is not None:
        lines.append(f"{head}, {'sparse' if s.sparse else 'full'} path, "
                     f"{plural(s.partition_boundaries.size, 'partition')}, {plural(s.num_positions, 'position')}")
        figures = [f"density {jsonable(s.density)}", f"target_density {jsonable(report.target_density)}"]
        if report.flops_ratio is not None:
            figures.append(f"flops_ratio {jsonable(report.flops_ratio)}")
        lines.append(", ".join(figures))
        lines.append(f"partition_boundaries {_listed(s.partition_boundaries.tolist())}; "
                     f"boundary_tokens {_listed(s.boundary_tokens.tolist())}")
        lines.append("mask bytes: " + ", ".join(f"{k} {v:,}" for k, v in report.representations.items()))
    else:
        lines.append(head)
    if report.panicking_call == "build_mask":
        lines.append(f"build_mask panics: {report.panic}")
    elif report.panic is not None:
        lines.append(f"build_mask completes; estimated_flops_ratio(mask, {report.seq_len}) then panics: {report.panic}")
    elif report.op_counts is not None:
        lines.append(f"sparse_attention at dim {report.dim:,}: "
                     + ", ".join(f"{k} {v:,}" for k, v in report.op_counts.items() if k != "positions"))
    else:
        lines.append("sparse_attention op counts: this mask's indices wrap, so they need it built (without --stats)")
    text = [lines[0]] + [wrapped for line in lines[1:] for wrapped in
                         textwrap.wrap(line, TABLE_WIDTH, initial_indent="  ", subsequent_indent="    ")]
    if art and report.mask is not None:
        import numpy as np

        grid = np.zeros((report.seq_len, report.seq_len), bool)
        grid[report.mask.positions[:, 0], report.mask.positions[:, 1]] = True
        text += ["".join("#" if cell else "." for cell in row) for row in grid]
    return "\n".join(text) + "\n"


@click.command()
@seq_len_option
@gate_options
@target_options(default="x86_64")
@dim_option(help="Head dimension, for sparse_attention's op counts.")
@config_option
@limit_option
@click.option("--stats", is_flag=True,
              help="Statistics without building the mask: any seq_len the target takes, in time linear in "
                   "min(seq_len, 65536).")
@click.option("--png", type=click.Path(dir_okay=False), metavar="FILE",
              help="Draw the mask as a PNG (any size; blocks shaded by density, cross-partition positions solid).")
@output_options
@fail_on_input_errors
def mask(seq_len, gate, target_name, profiles_file, dim, config_file, position_limit, stats, png, fmt, output):
    """Build one mask, as build_mask does on the target, and show its statistics,
    its size held four ways, sparse_attention's op counts and, for small masks,
    the mask itself (--png draws any). Exit 1 if the build panics: the first
    panic a step would hit (build_mask, then estimated_flops_ratio) is the
    answer, before any mask is built.

    \b
    Example:
      mcsa mask --seq-len 48 --lambda 100 --partitions 3
      mcsa mask --seq-len 70000 --lambda 200 --partitions 8 --target thumbv7em --stats
      mcsa mask --seq-len 1024 --lambda 100 --partitions 8 --png mask.png
    """
    target = cli_build(target_name, profiles_file, seq_len=seq_len, dim=dim).target
    check_outputs({"-o": output, "--png": png}, {"--config": config_file, "--profiles": profiles_file})
    if stats and png:
        raise InputError("--png draws the mask, which --stats does not build")
    plt = pyplot("--png") if png else None  # before any work: a missing extra is a usage error
    from mcsa.app.mask_report import report_mask
    from mcsa.core.attention import MincutSparseAttention

    sim = MincutSparseAttention(load_config(config_file), target, position_limit)
    report = report_mask(sim, gate, seq_len, dim, build=not stats)
    art = fmt == "table" and (0 < seq_len <= 32 or seq_len <= ASCII_LIMIT and output is None and sys.stdout.isatty())
    with atomic_output(output) as out:
        out.write(json_line(report.record()) if fmt == "json" else _mask_text(report, art))
    if report.panic is not None:
        raise SystemExit(1)
    if png:
        s = report.stats
        title = (f"{target.name}: {seq_len:,} tokens, λ={gate.lambda_}, {plural(gate.partition_count, 'partition')}"
                 f"\n{plural(s.num_positions, 'position')}, density {jsonable(s.density)}")
        save_png(plt, mask_figure(plt, report.mask.positions, s.partition_boundaries, seq_len, title), png)
        click.echo(f"wrote {png}", err=output is None and fmt == "json")


@click.command()
@click.argument("file", type=InputPath())
@target_options(spellings=("--build",))
@click.option("--kind", type=click.Choice(KINDS),
              help="What the file's cases call (default: from the file name, e.g. density-mine.jsonl).")
@limit_option
@output_options
@fail_on_input_errors
def verify(file, target_name, profiles_file, kind, position_limit, fmt, output):
    """Check a vectors file in the golden format (JSON Lines, gzip or plain; see
    tests/golden/README.md) against the simulator. Exit 1 on any mismatch, 2 on a
    malformed or empty file, or an expected result no simulator result could equal (a
    field its kind does not have, an f32 that is not 8 hex digits).

    Each case's results are looked up under the target's build name; the golden
    files hold x86_64-release, x86_64-debug, wasm32-release and wasm32-debug. A
    result that is only a harness_error (the build could not run the case) is
    counted apart, not compared.

    \b
    Example:
      mcsa verify tests/golden/density.jsonl.gz --target wasm32-release
      mcsa verify tests/golden/scalar.jsonl.gz --target x86_64-debug --kind scalar --json
    """
    from mcsa.app.verify import check_expected, differences, expected_for, kind_of, read_cases, simulate

    check_outputs({"-o": output}, {None: file, "--profiles": profiles_file})
    if kind is None:
        try:
            kind = kind_of(file)
        except ValueError as err:
            raise InputError(f"{err}; or give --kind") from None
    target = cli_build(target_name, profiles_file, option="--target").target
    key = target.name
    cases = mismatches = unrun = 0
    first = None
    for line, case in read_cases(file):
        where = f"{file}:{line}"
        try:
            expected = expected_for(case, key)
            if set(expected) == {"harness_error"}:  # the dump says this build could not run the case
                unrun += 1
                continue
            check_expected(kind, expected)
        except KeyError as err:
            if err.args[0] != key:
                raise InputError(f"{where}: missing field {err}") from None
            held = case.get("results")
            builds = f" (it holds {', '.join(map(str, held))})" if isinstance(held, dict) and held else ""
            raise InputError(f"{where}: no result for build {key!r}{builds}") from None
        except (TypeError, ValueError) as err:
            raise InputError(f"{where}: {err}") from None
        try:
            got = simulate(kind, case, target, position_limit)
        except KeyError as err:
            raise InputError(f"{where}: missing field {err}") from None
        except (TypeError, ValueError, OverflowError) as err:
            raise InputError(f"{where}: {err}") from None
        cases += 1
        diff = differences(expected, got)
        if diff:
            mismatches += 1
            if first is None:
                first = (line, diff)
    if not cases:
        raise InputError(f"{file}: no cases, nothing verified" + (f" ({plural(unrun, 'case')} with a harness_error "
                                                                  f"for {key})" if unrun else ""))
    with atomic_output(output) as out:
        if fmt == "json":
            out.write(json_line({"file": file, "kind": kind, "target": key, "cases": cases, "mismatches": mismatches,
                                  "not_run": unrun,
                                  "first_mismatch": first and {"line": first[0], "differences": first[1]}}))
        else:
            out.write(f"{file}: {plural(cases, kind + ' case')}, {plural(mismatches, 'mismatch', 'mismatches')} "
                      f"for {key}" + (f" ({plural(unrun, 'case')} the build could not run, with a harness_error, "
                                      "not compared)" if unrun else "") + "\n")
            if first:
                out.write(f"first mismatch, line {first[0]}:\n" + "".join(f"  {entry}\n" for entry in first[1]))
    if first:
        raise SystemExit(1)


def _load_i8(path: str, option: str):
    """An int8 .npy file given to ``option``, flattened.

    Raises
    ------
    InputError
        Naming the option and the file for anything else (.npz, empty, pickled, other
        dtype, a header the data does not fill: :func:`mcsa.app.arrays.read_npy`).
    """
    import numpy as np

    from mcsa.app import arrays

    try:
        if arrays.sniff(path) == "npz":
            raise InputError(f"{option} {path}: an .npz archive; give each of q, k, v as its own int8 .npy file")
        arr = arrays.read_npy(path)
    except arrays.UnreadableArray as err:
        raise InputError(f"{option} {path}: cannot read as .npy ({err.reason})") from None
    if arr.dtype != np.int8:
        raise InputError(f"{option} {path}: must be int8, got {arr.dtype}")
    return arr.reshape(-1)


@click.command()
@click.option("--q", "q_file", required=True, type=InputPath(), help="q as int8 .npy.")
@click.option("--k", "k_file", required=True, type=InputPath(), help="k as int8 .npy.")
@click.option("--v", "v_file", required=True, type=InputPath(), help="v as int8 .npy.")
@dim_option(default=None, help="Head dimension: q, k and v each hold seq_len x dim int8 values.")
@click.option("--scale", type=float, required=True, help="Attention scale (rounded to f32; finite).")
@gate_options(**{"lambda": 100, "lambda_prev": 100, "partition_count": 4})
@target_options(default="x86_64")
@config_option
@click.option("-o", "--output", type=click.Path(dir_okay=False), metavar="FILE.npy",
              help="Write the f32 output as .npy.")
@fail_on_input_errors
def attention(q_file, k_file, v_file, dim, scale, gate, target_name, profiles_file, config_file, output):
    """Run one step (build_mask, then sparse_attention) on your q, k, v and compare
    the output with a float64 reference over the same positions. Exit 1 if the
    build panics (dim 0: the division by zero Rust's q.len() / dim makes).

    The report is one JSON line: max_ulp_error is the largest distance, in f32
    ULPs (an integer), between the output and the float64 reference rounded to
    f32 (null if only one of them is NaN somewhere); worst_index is where.

    \b
    Example:
      mcsa example qkv
      mcsa attention --q q.npy --k k.npy --v v.npy --dim 32 --scale 0.176776695 -o out.npy
    """
    from pathlib import Path

    import numpy as np

    target = cli_build(target_name, profiles_file, dim=dim).target
    check_outputs({"-o": output}, {"--q": q_file, "--k": k_file, "--v": v_file, "--config": config_file,
                                   "--profiles": profiles_file})
    if output is not None and Path(output).suffix.lower() not in ("", ".npy"):
        raise InputError(f"-o {output}: attention writes its f32 output as .npy; name the file .npy")
    with np.errstate(over="ignore"):
        scale32 = np.float32(scale)
    if not np.isfinite(scale32):
        raise InputError(f"--scale {scale} is not a finite f32")
    given = [(option, path, _load_i8(path, option)) for option, path in (("--q", q_file), ("--k", k_file),
                                                                         ("--v", v_file))]
    if dim:
        for option, path, arr in given:
            if arr.size % dim:
                raise InputError(f"{option} {path}: {arr.size:,} elements is not a multiple of --dim {dim}")
    if len({arr.size for _, _, arr in given}) > 1:
        raise InputError("q, k and v must hold seq_len x dim elements each: "
                         + ", ".join(f"{option} {path} has {arr.size:,}" for option, path, arr in given))
    from mcsa.app.reference import error_against, float64_attention
    from mcsa.core.attention import MincutSparseAttention
    from mcsa.core.errors import TargetPanic

    q, k, v = (arr for _, _, arr in given)
    sim = MincutSparseAttention(load_config(config_file), target)
    if dim == 0:
        click.echo(f"{target.name}: sparse_attention panics: attempt to divide by zero (q.len() / dim)")
        raise SystemExit(1)
    seq_len = q.size // dim
    try:
        m = sim.build_mask(gate, seq_len)
        out = sim.sparse_attention(q, k, v, m, dim, scale32)
    except TargetPanic as panic:
        click.echo(f"{target.name}: the step panics: {panic}")
        raise SystemExit(1)
    click.echo(dumps({"target": target.name, "seq_len": seq_len, "dim": dim, "num_positions": m.num_positions,
                      **error_against(out, float64_attention(q, k, v, m.positions, dim, scale32))}))
    if output:
        with atomic_output(output, "wb") as f:
            np.save(f, out)
