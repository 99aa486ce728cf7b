"""``mcsa targets``, ``mask``, ``verify`` and ``attention``."""

from __future__ import annotations

import json
import sys

import click
import numpy as np

from firmware_model.profiles import load_profiles

from ..attention import MincutSparseAttention
from ..packets import GatePacket
from ..target import PRESETS, Target, TargetPanic
from ..vectors import differences, expected_for, kind_of, read_cases, simulate
from .common import (
    InputError, atomic_output, config_option, dumps, fail_on_input_errors, limit_option, load_config, pyplot,
    resolve_profile,
)

ASCII_LIMIT = 96


@click.command()
@click.option("--profiles", "profiles_file", type=click.Path(exists=True, dir_okay=False),
              help="Extra target profiles (TOML).")
def targets(profiles_file):
    """The target profiles and the simulator presets.

    \b
    Example:
      mcsa targets
    """
    try:
        profiles = load_profiles(profiles_file)
    except (ValueError, OSError) as err:
        raise InputError(str(err)) from None
    click.echo(f"{'profile':<12} {'usize':>5} {'ram':>12} {'heap_budget':>12} {'fpu':<7} {'expf':<10} "
               f"{'allocator':<15} description")
    for p in profiles.values():
        click.echo(f"{p.name:<12} {p.usize_bits:>5} {p.ram:>12,} {p.heap_budget:>12,} {p.fpu:<7} {p.expf:<10} "
                   f"{p.allocator.name:<15} {p.description}")
    click.echo("\nsimulator presets (for verify; a profile NAME-release/NAME-debug elsewhere):")
    for t in PRESETS.values():
        click.echo(f"  {t.name:<24} usize {t.usize_bits}, overflow {t.overflow.value}, expf {t.expf.value}")


def _bitmap(positions: np.ndarray, seq_len: int, size: int) -> np.ndarray:
    """Fraction of attended pairs per cell of a size x size grid over the seq_len x seq_len square."""
    cells = max(1, -(-seq_len // size))
    n = -(-seq_len // cells)
    grid = np.zeros((n, n))
    np.add.at(grid, (positions[:, 0].astype(np.int64) // cells, positions[:, 1].astype(np.int64) // cells), 1)
    return grid / (cells * cells)


@click.command()
@click.option("--lambda", "lambda_", type=click.IntRange(0, 0xFFFF_FFFF), required=True, help="Gate lambda.")
@click.option("--partitions", type=click.IntRange(0, 0xFFFF), required=True, help="Gate partition_count.")
@click.option("--seq-len", type=click.IntRange(min=0), required=True, help="Sequence length.")
@click.option("--concentration", type=click.IntRange(0, 0xFFFF), default=0, help="boundary_concentration_q15.")
@click.option("--target", "target_name", default="x86_64", show_default=True, metavar="NAME",
              help="Target profile, optionally -release/-debug.")
@click.option("--profiles", "profiles_file", type=click.Path(exists=True, dir_okay=False), help="Extra profiles.")
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
    profile, build = resolve_profile(target_name, profiles_file)
    sim = MincutSparseAttention(load_config(config_file), profile.target(build), position_limit)
    gate = GatePacket(lambda_=lambda_, partition_count=partitions, boundary_concentration_q15=concentration)
    try:
        m = sim.build_mask(gate, seq_len)
        ratio = sim.estimated_flops_ratio(m, seq_len)
    except TargetPanic as panic:
        click.echo(f"{profile.name}-{build} panics: {panic}")
        raise SystemExit(1)
    click.echo(f"{profile.name}-{build}: seq_len {seq_len}, {'sparse' if m.stats().sparse else 'full'} path, "
               f"{m.num_positions:,} positions, density {m.density!s}, flops ratio {ratio!s}, "
               f"target density {sim.calculate_density(gate)!s}")
    click.echo(f"partition boundaries {m.partition_boundaries.tolist()}, boundary tokens {m.boundary_tokens.tolist()}")
    if seq_len <= ASCII_LIMIT and sys.stdout.isatty() or 0 < seq_len <= 32:
        grid = _bitmap(m.positions, seq_len, seq_len)
        for row in grid:
            click.echo("".join("#" if cell else "." for cell in row))
    if png:
        plt = pyplot("--png")
        fig, ax = plt.subplots(figsize=(6, 6))
        ax.imshow(_bitmap(m.positions, max(seq_len, 1), 1024), cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"λ={lambda_}, {partitions} partitions, {seq_len} tokens: {m.num_positions:,} positions")
        ax.set_xlabel("key")
        ax.set_ylabel("query")
        with atomic_output(png, "wb") as out:
            fig.savefig(out, format="png", dpi=100)
        plt.close(fig)
        click.echo(f"wrote {png}")


def _ordered(bits: int) -> int:
    """f32 bits on a line where adjacent floats differ by 1 (for ULP distances)."""
    return bits if bits < 0x8000_0000 else 0x8000_0000 - bits


def _ulps(want, have) -> int | None:
    """Largest ULP distance between f32 bit-pattern strings or lists of them."""
    if isinstance(want, str) and isinstance(have, str) and len(want) == len(have) == 8:
        return abs(_ordered(int(want, 16)) - _ordered(int(have, 16)))
    if isinstance(want, list) and isinstance(have, list) and len(want) == len(have) and want \
            and all(isinstance(x, str) and len(x) == 8 for x in want + have):
        return max(_ulps(a, b) for a, b in zip(want, have))
    return None


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--build", required=True, type=click.Choice(list(PRESETS)), help="Which build's results to check.")
@fail_on_input_errors
def verify(file, build):
    """Check a vectors file in the golden format against the simulator. Exit 1 on any mismatch.

    The file's kind (density, masks, full, scalar, attention) is read from its name.

    \b
    Example:
      mcsa verify tests/golden/density.jsonl.gz --build thumbv7em-release
    """
    kind = kind_of(file)
    target = Target.named(build)
    cases = mismatches = 0
    first = None
    for line, case in read_cases(file):
        try:
            expected = expected_for(case, build)
        except KeyError:
            raise InputError(f"{file}:{line}: no result for build {build!r}") from None
        try:
            got = simulate(kind, case, target)
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"{file}:{line}: malformed case ({err})") from None
        cases += 1
        diff = differences(expected, got)
        if diff:
            mismatches += 1
            if first is None:
                first = (line, diff, expected, got)
    click.echo(f"{file}: {cases} cases, {mismatches} mismatches for {build}")
    if first:
        line, diff, expected, got = first
        click.echo(f"first mismatch, line {line}:")
        for entry in diff:
            click.echo(f"  {entry}")
        for key in ("density", "sparsity", "flops_ratio", "output"):
            ulps = _ulps(expected.get(key), got.get(key))
            if ulps:
                click.echo(f"  {key}: {ulps} ULP{'s' if ulps != 1 else ''} apart")
        raise SystemExit(1)


def _load_i8(path: str, name: str) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: cannot read {name} as .npy ({err})") from None
    if arr.dtype != np.int8:
        raise InputError(f"{path}: {name} must be int8, got {arr.dtype}")
    return arr


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
@click.option("--dim", type=click.IntRange(min=1), required=True, help="Head dimension.")
@click.option("--scale", type=float, required=True, help="Attention scale (rounded to f32).")
@click.option("--gate", "gate_json", default='{"lambda":100,"lambda_prev":100,"boundary_edges":0,'
              '"boundary_concentration_q15":0,"partition_count":4,"flags":0}', show_default=True,
              help="The gate packet as serde JSON.")
@click.option("--target", "target_name", default="x86_64", show_default=True, metavar="NAME", help="Target profile.")
@click.option("--profiles", "profiles_file", type=click.Path(exists=True, dir_okay=False), help="Extra profiles.")
@config_option
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the f32 output as .npy.")
@fail_on_input_errors
def attention(q_file, k_file, v_file, dim, scale, gate_json, target_name, profiles_file, config_file, output):
    """Run one step on your q, k, v and compare it with a float64 reference.

    \b
    Example:
      mcsa attention --q q.npy --k k.npy --v v.npy --dim 32 --scale 0.176776695 -o out.npy
    """
    profile, build = resolve_profile(target_name, profiles_file)
    try:
        gate = GatePacket.from_dict(json.loads(gate_json))
    except json.JSONDecodeError as err:
        raise InputError(f"--gate: not JSON ({err.msg})") from None
    q, k, v = (_load_i8(p, n) for p, n in ((q_file, "q"), (k_file, "k"), (v_file, "v")))
    sim = MincutSparseAttention(load_config(config_file), profile.target(build))
    seq_len = q.size // dim
    try:
        m = sim.build_mask(gate, seq_len)
        out = sim.sparse_attention(q, k, v, m, dim, np.float32(scale))
    except TargetPanic as panic:
        click.echo(f"{profile.name}-{build} panics: {panic}")
        raise SystemExit(1)
    ref = _reference(q.reshape(-1), k.reshape(-1), v.reshape(-1), m.positions, dim, np.float32(scale))
    err = np.abs(out.astype(np.float64) - ref)
    spacing = np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
    ulps = err / spacing
    worst = int(np.argmax(ulps)) if ulps.size else 0
    click.echo(dumps({
        "target": f"{profile.name}-{build}", "seq_len": seq_len, "dim": dim, "num_positions": m.num_positions,
        "max_abs_error": float(err.max()) if err.size else 0.0,
        "max_ulp_error": float(ulps.max()) if ulps.size else 0.0, "worst_index": worst,
    }))
    if output:
        with atomic_output(output, "wb") as f:
            np.save(f, out)
