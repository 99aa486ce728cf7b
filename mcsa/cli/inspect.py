"""``mcsa targets``, ``mask``, ``verify`` and ``attention``."""

from __future__ import annotations

import sys

import click
import numpy as np

from firmware_model.heap import check_insertions
from firmware_model.profiles import load_profiles, resolve_target

from mcsa.core.attention import MincutSparseAttention
from mcsa.core.packets import GatePacket
from mcsa.core.target import PRESETS, TargetPanic
from mcsa.app import arrays
from mcsa.app.verify import differences, expected_for, f32_line, kind_of, read_cases, simulate
from .common import (
    MAX_DIM, USIZE64_MAX, InputError, IntRange, atomic_output, check_outputs, cli_target, config_option, dumps,
    fail_on_input_errors, limit_option, load_config, parse_gate, profiles_option, pyplot, save_png, table,
    target_option,
)

ASCII_LIMIT = 96


@click.command()
@profiles_option
@fail_on_input_errors
def targets(profiles_file):
    """The target profiles and the simulator presets; --target takes either.

    \b
    Example:
      mcsa targets
    """
    profiles = load_profiles(profiles_file)
    header = ("profile", "usize", "ram", "heap_budget", "fpu", "expf", "allocator", "description")
    rows = [(p.name, p.usize_bits, f"{p.ram:,}", f"{p.heap_budget:,}", p.fpu, p.expf, p.allocator.name,
             p.description) for p in profiles.values()]
    for line in table(header, rows, right={1, 2, 3}):
        click.echo(line)
    click.echo("\nsimulator presets (a --target without RAM or allocator: mask, attention, verify):")
    rows = [(t.name, t.usize_bits, t.overflow.value, t.expf.value) for t in PRESETS.values()]
    for line in table(("preset", "usize", "overflow", "expf"), rows, right={1}):
        click.echo(line)


def _bitmap(positions: np.ndarray, seq_len: int, size: int) -> np.ndarray:
    """Fraction of attended pairs per cell of a size x size grid over the seq_len x seq_len square."""
    cells = max(1, -(-seq_len // size))
    n = -(-seq_len // cells)
    grid = np.zeros((n, n))
    np.add.at(grid, (positions[:, 0].astype(np.int64) // cells, positions[:, 1].astype(np.int64) // cells), 1)
    return grid / (cells * cells)


def _build_mask(sim: MincutSparseAttention, gate: GatePacket, seq_len: int):
    """``sim.build_mask``, with a wrapping mask's insertions counted in Python
    integers first (a kernel's 64-bit count can wrap back into range)."""
    plan = sim.plan_mask(gate, seq_len)
    check_insertions(plan, sim.position_limit)
    return sim.mask_from_plan(plan)


def mask_figure(plt, positions: np.ndarray, seq_len: int, title: str):
    """The mask as an image of at most 1024 x 1024 cells, its axes counting tokens."""
    fig, ax = plt.subplots(figsize=(6, 6))
    side = max(seq_len, 1)
    ax.imshow(_bitmap(positions, side, 1024), cmap="Greys", vmin=0, vmax=1, interpolation="nearest",
              extent=(0, side, side, 0))
    ax.set_title(title)
    ax.set_xlabel("key (token)")
    ax.set_ylabel("query (token)")
    return fig


@click.command()
@click.option("--lambda", "lambda_", type=IntRange(0, 0xFFFF_FFFF), required=True, help="Gate lambda.")
@click.option("--partitions", type=IntRange(0, 0xFFFF), required=True, help="Gate partition_count.")
@click.option("--seq-len", type=IntRange(0, USIZE64_MAX), required=True, help="Sequence length.")
@click.option("--concentration", type=IntRange(0, 0xFFFF), default=0, help="boundary_concentration_q15.")
@target_option
@config_option
@click.option("--png", type=click.Path(dir_okay=False), help="Write the mask as a PNG (any size).")
@limit_option
@fail_on_input_errors
def mask(lambda_, partitions, seq_len, concentration, target_name, profiles_file, config_file, png, position_limit):
    """Build one mask and show it: statistics, ASCII art for small masks, a PNG for any.

    \b
    Example:
      mcsa mask --lambda 100 --partitions 3 --seq-len 48
    """
    target = cli_target(target_name, profiles_file, seq_len)
    check_outputs({"--png": png})
    if png:
        plt = pyplot("--png")  # before any work: a missing extra is a usage error
    sim = MincutSparseAttention(load_config(config_file), target, position_limit)
    gate = GatePacket(lambda_=lambda_, partition_count=partitions, boundary_concentration_q15=concentration)
    try:
        m = _build_mask(sim, gate, seq_len)
        ratio = sim.estimated_flops_ratio(m, seq_len)
    except TargetPanic as panic:
        click.echo(f"{target.name} panics: {panic}")
        raise SystemExit(1)
    click.echo(f"{target.name}: seq_len {seq_len}, {'sparse' if m.stats().sparse else 'full'} path, "
               f"{m.num_positions:,} positions, density {m.density!s}, flops ratio {ratio!s}, "
               f"target density {sim.calculate_density(gate)!s}")
    click.echo(f"partition boundaries {m.partition_boundaries.tolist()}, boundary tokens {m.boundary_tokens.tolist()}")
    if seq_len <= ASCII_LIMIT and sys.stdout.isatty() or 0 < seq_len <= 32:
        grid = _bitmap(m.positions, seq_len, seq_len)
        for row in grid:
            click.echo("".join("#" if cell else "." for cell in row))
    if png:
        fig = mask_figure(plt, m.positions, seq_len,
                          f"λ={lambda_}, {partitions} partitions, {seq_len} tokens: {m.num_positions:,} positions")
        save_png(plt, fig, png)
        click.echo(f"wrote {png}")


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--build", required=True, metavar="NAME",
              help="Which build's results to check: a preset (x86_64-release) or a profile (stm32f411-debug).")
@profiles_option
@limit_option
@fail_on_input_errors
def verify(file, build, profiles_file, position_limit):
    """Check a vectors file in the golden format against the simulator. Exit 1 on
    any mismatch, 2 on a malformed or empty file.

    The file's kind (density, masks, full, scalar, attention) is read from its
    name; each case's results are looked up under the build's name. The golden
    files hold x86_64-release, x86_64-debug, wasm32-release and wasm32-debug.

    \b
    Example:
      mcsa verify tests/golden/density.jsonl.gz --build wasm32-release
    """
    kind = kind_of(file)
    target = resolve_target(build, profiles_file).target
    key = target.name
    cases = mismatches = 0
    first = None
    for line, case in read_cases(file):
        where = f"{file}:{line}"
        try:
            expected = expected_for(case, key)
        except KeyError as err:
            if err.args[0] != key:
                raise InputError(f"{where}: missing field {err}") from None
            held = case.get("results")
            builds = f" (it holds {', '.join(map(str, held))})" if isinstance(held, dict) and held else ""
            raise InputError(f"{where}: no result for build {key!r}{builds}") from None
        except TypeError as err:
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
        raise InputError(f"{file}: no cases, nothing verified")
    click.echo(f"{file}: {cases} cases, {mismatches} mismatches for {key}")
    if first:
        line, diff = first
        click.echo(f"first mismatch, line {line}:")
        for entry in diff:
            click.echo(f"  {entry}")
        raise SystemExit(1)


def _load_i8(path: str, option: str) -> np.ndarray:
    """An int8 .npy file given to ``option``, flattened.

    Raises
    ------
    InputError
        Naming the option and the file for anything else (.npz, empty, pickled, other
        dtype, a header the data does not fill: :func:`mcsa.app.arrays.read_npy`).
    """
    if arrays.sniff(path) == "npz":
        raise InputError(f"{option} {path}: an .npz archive; give each of q, k, v as its own int8 .npy file")
    try:
        arr = arrays.read_npy(path)
    except arrays.UnreadableArray as err:
        raise InputError(f"{option} {path}: cannot read as .npy ({err.reason})") from None
    if arr.dtype != np.int8:
        raise InputError(f"{option} {path}: must be int8, got {arr.dtype}")
    return arr.reshape(-1)


def _reference(q, k, v, positions, dim, scale) -> np.ndarray:
    """float64 masked attention over the same positions: the ideal the f32 kernel
    approximates, to measure its error. Not an exact path: it uses NumPy's float64 exp."""
    seq_len = q.size // dim
    Q, K, V = (a.reshape(-1, dim).astype(np.float64) for a in (q, k, v))
    out = np.zeros((seq_len, dim))
    order = np.argsort(positions[:, 0], kind="stable")
    pos = positions[order]
    starts = np.searchsorted(pos[:, 0], np.arange(seq_len + 1))
    for query in range(seq_len):
        keys = pos[starts[query]: starts[query + 1], 1].astype(np.int64)
        if keys.size:
            s = (K[keys] @ Q[query]) * float(scale)
            e = np.exp(s - s.max())
            out[query] = (e / e.sum()) @ V[keys]
    return out.reshape(-1)


@click.command()
@click.option("--q", "q_file", required=True, type=click.Path(exists=True, dir_okay=False), help="q as int8 .npy.")
@click.option("--k", "k_file", required=True, type=click.Path(exists=True, dir_okay=False), help="k as int8 .npy.")
@click.option("--v", "v_file", required=True, type=click.Path(exists=True, dir_okay=False), help="v as int8 .npy.")
@click.option("--dim", type=IntRange(1, MAX_DIM), required=True, help="Head dimension.")
@click.option("--scale", type=float, required=True, help="Attention scale (rounded to f32; finite).")
@click.option("--gate", "gate_json", default='{"lambda":100,"lambda_prev":100,"boundary_edges":0,'
              '"boundary_concentration_q15":0,"partition_count":4,"flags":0}', show_default=True,
              help="The gate packet as serde JSON.")
@target_option
@config_option
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the f32 output as .npy.")
@fail_on_input_errors
def attention(q_file, k_file, v_file, dim, scale, gate_json, target_name, profiles_file, config_file, output):
    """Run one step on your q, k, v and compare it with a float64 reference.

    max_ulp_error is the largest distance, in f32 ULPs (an integer), between the
    output and the float64 reference rounded to f32 (null if only one of them is
    NaN somewhere); worst_index is where.

    \b
    Example:
      mcsa attention --q q.npy --k k.npy --v v.npy --dim 32 --scale 0.176776695 -o out.npy
    """
    target = cli_target(target_name, profiles_file)
    check_outputs({"-o": output})
    gate = parse_gate(gate_json)
    with np.errstate(over="ignore"):
        scale32 = np.float32(scale)
    if not np.isfinite(scale32):
        raise InputError(f"--scale {scale} is not a finite f32")
    q, k, v = (_load_i8(p, n) for p, n in ((q_file, "--q"), (k_file, "--k"), (v_file, "--v")))
    given = (("--q", q_file, q), ("--k", k_file, k), ("--v", v_file, v))
    for option, path, arr in given:
        if arr.size % dim:
            raise InputError(f"{option} {path}: {arr.size:,} elements is not a multiple of --dim {dim}")
    if len({arr.size for _, _, arr in given}) > 1:
        raise InputError("q, k and v must hold seq_len x dim elements each: "
                         + ", ".join(f"{option} {path} has {arr.size:,}" for option, path, arr in given))
    sim = MincutSparseAttention(load_config(config_file), target)
    seq_len = q.size // dim
    try:
        m = _build_mask(sim, gate, seq_len)
        out = sim.sparse_attention(q, k, v, m, dim, scale32)
    except TargetPanic as panic:
        click.echo(f"{target.name} panics: {panic}")
        raise SystemExit(1)
    ref = _reference(q, k, v, m.positions, dim, scale32)
    with np.errstate(over="ignore"):
        ref32 = ref.astype(np.float32)
    nan = np.isnan(out) | np.isnan(ref32)  # no ULP distance to a NaN: null when one side alone is NaN
    ulps = np.where(nan, 0, np.abs(f32_line(out.view(np.uint32)) - f32_line(ref32.view(np.uint32))))
    worst = int(np.argmax(ulps)) if ulps.size else 0
    click.echo(dumps({
        "target": target.name, "seq_len": seq_len, "dim": dim, "num_positions": m.num_positions,
        "max_abs_error": float(np.abs(out.astype(np.float64) - ref).max()) if out.size else 0.0,
        "max_ulp_error": None if (np.isnan(out) != np.isnan(ref32)).any() else int(ulps.max(initial=0)),
        "worst_index": worst,
    }))
    if output:
        with atomic_output(output, "wb") as f:
            np.save(f, out)
