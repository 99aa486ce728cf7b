"""Fingerprints of everything mcsa outputs, to show that a refactor changed no bit.

A fingerprint is the sha256 of ``json.dumps(sort_keys=True)`` of plain Python values:
f32 values as 8-hex-digit bit patterns, numpy arrays as the sha256 of their bytes with
their dtype and shape, temporary paths written ``<tmp>``. They live in
``tests/fingerprints.json``::

    python tools/fingerprints.py --update          # record them
    python tools/fingerprints.py [--check]         # compare; exit 1 if any differs, is missing or new
    python tools/fingerprints.py --only 'fit/*'    # a subset (fnmatch on the names)

Groups; a panic's message, or a refused call's exception type and message, is an output too:

``cases/<file>/<preset>``
    every case of ``tests/golden/*.jsonl.gz`` and ``tests/golden/differential/*.jsonl.gz``
    on every preset of :data:`PRESETS`, nothing left out (about two CPU-minutes).
``cases/<file>/heap32``, ``cases/<file>/heap64``
    ``firmware_model.heap``'s figures for the masks, full and attention cases at both
    widths; of masks2_core's 40 wrapping masks (seconds each) a fixed, seeded 4 only.
``fit/<profile>/<allocator>``
    ``mcsa fit --json`` for seq_len in :data:`FIT_SEQ_LENS`, 1, 2, 4 and 8 partitions, dim 32,
    every built-in profile (release; ``stm32f411-debug`` too) and allocator, refusals included.
``plan/<profile>``, ``replay/<variant>/<trace>``, ``cli/<command>/...``
    ``mcsa plan --json``; ``mcsa replay`` of the example traces in every format (Parquet
    as its columns, schema and metadata), with ``--with-packet``, a debug build, two traces
    and ``--summary``; ``mcsa targets``, ``mask``, ``attention``, ``verify``.
``api/step/<profile>``
    ``firmware_model.step`` (``fit_step``, ``representations``, ``op_counts``) and the
    ``step_trace`` events of a few steps.

Only APIs meant to survive a restructuring are used: ``mcsa``'s top-level names, public
functions of ``firmware_model``, and the command line (click's CliRunner on
``mcsa.cli.main``). ``--jobs N`` runs on N processes (default: every CPU); each group's
wall-clock and CPU time is printed. Messages from click and values read back by pyarrow
are fingerprinted too: after upgrading those (or numpy, numba), a difference may be theirs.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import fnmatch
import functools
import gzip
import hashlib
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import mcsa
from firmware_model import heap
from firmware_model.placement.events import step_trace
from firmware_model.profiles import load_profiles
from firmware_model.step import fit_step, op_counts, representations

ROOT = Path(__file__).resolve().parent.parent
STORE = ROOT / "tests" / "fingerprints.json"
GOLDEN_PRESETS = ("x86_64-release", "x86_64-debug", "wasm32-release", "wasm32-debug")
PRESETS = GOLDEN_PRESETS + ("thumbv7em-release", "thumbv7em-debug", "thumbv7m-release", "thumbv6m-debug",
                            "riscv32imc-release", "xtensa-release", "wasm32-unknown-release")
ALLOCATORS = ("none", "linked-list", "tlsf", "newlib", "freertos-heap4", "esp-idf")
FIT_SEQ_LENS = (0, 1, 15, 16, 17, 100, 128, 180, 256, 1000)
TRACES = ("trace.jsonl", "trace.csv", "trace.bin", "trace.jsonl.gz")
REPLAY_ARGS = ("--target", "stm32f411", "--seq-len", "128", "--dim", "32")


# Canonical serialisation


def _plain(value):
    """``json.dumps``'s fallback: f32 as bit patterns, arrays as hashes, numpy scalars as Python's."""
    if isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value)
        return {"dtype": data.dtype.descr, "shape": data.shape, "sha256": hashlib.sha256(data.tobytes()).hexdigest()}
    if isinstance(value, np.float32):
        return f"{int(value.view(np.uint32)):08x}"
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    raise TypeError(f"cannot fingerprint a {type(value).__name__}")


def fingerprint(value) -> str:
    """The sha256 hex of ``value``'s canonical JSON."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=_plain).encode()).hexdigest()


def outcome(call):
    """``call()``, or the panic message, or the exception's type and message."""
    try:
        return call()
    except mcsa.TargetPanic as panic:
        return {"panic": str(panic)}
    except Exception as err:  # a refusal (ValueError, MaskTooLarge, ...) is an output too
        return {"error": type(err).__name__, "message": str(err)}


# Group 1: the golden and differential cases (formats: tests/golden/README.md and differential/README.md)


@functools.lru_cache(maxsize=None)
def read_cases(path: Path) -> tuple:
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        return tuple(json.loads(line) for line in lines if line.strip())


def splitmix64(seed: int, count: int) -> np.ndarray:
    """``count`` outputs of SplitMix64 seeded with ``seed``, as uint64."""
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + np.uint64(0x9E3779B97F4A7C15) * np.arange(1, count + 1, dtype=np.uint64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def lengths(case: dict) -> list[int]:
    """The lengths of an attention case's q, k and v."""
    if "qkv_seq_len" in case:
        return [case["qkv_seq_len"] * max(case["dim"], 1)] * 3
    return [case["q_len"], case["k_len"], case["v_len"]]


def qkv(case: dict) -> list[np.ndarray]:
    """An attention case's int8 q, k and v from its ``data`` spec (``r<seed>``, ``c<a>,<b>,<c>``, ``h<hex>,...``)."""
    spec, sizes = case["data"], lengths(case)
    if spec[0] == "r":
        return np.split(splitmix64(int(spec[1:]), sum(sizes)).astype(np.uint8).view(np.int8), np.cumsum(sizes[:2]))
    if spec[0] == "c":
        return [np.full(n, int(p), np.int8) for n, p in zip(sizes, spec[1:].split(","))]
    return [np.frombuffer(bytes.fromhex(p), np.int8) for p in spec[1:].split(",")]


def mask_fields(mask: mcsa.SparseMask) -> dict:
    return {"num_positions": mask.num_positions, "density": mask.density, "sparsity": mask.sparsity(),
            "positions": mask.positions, "boundaries": mask.partition_boundaries, "tokens": mask.boundary_tokens}


def run_case(kind: str, case: dict, target: mcsa.Target):
    """One case's result on one target (call it through :func:`outcome`)."""
    if kind == "scalar":
        sim, empty = mcsa.MincutSparseAttention(target=target), mcsa.SparseMask.empty()
        stats = dataclasses.replace(empty.stats(), num_positions=case["num_positions"])
        return {"flops_ratio": outcome(lambda: sim.estimated_flops_ratio(stats, case["seq_len"])),
                "max_positions": outcome(lambda: empty.max_positions(case["seq_len"], target))}
    if kind == "full":
        return mask_fields(mcsa.SparseMask.full(case["seq_len"], target))
    sim = mcsa.MincutSparseAttention(mcsa.SparsityConfig.from_dict(case["config"]), target)
    gate = mcsa.GatePacket.from_dict(case["gate"])
    if kind == "density":
        return sim.calculate_density(gate)
    if kind == "masks":
        return mask_fields(sim.build_mask(gate, case["seq_len"]))
    mask = sim.build_mask(gate, case["mask_seq_len"])
    return sim.sparse_attention(*qkv(case), mask, case["dim"], np.uint32(int(case["scale"], 16)).view(np.float32))


def heap_case(kind: str, case: dict, bits: int) -> dict:
    """``firmware_model.heap``'s figures for one case at one usize width."""
    if kind == "full":
        return heap.full_mask_usage(case["seq_len"], bits).as_dict()
    config, gate = mcsa.SparsityConfig.from_dict(case["config"]), mcsa.GatePacket.from_dict(case["gate"])
    if kind == "masks":
        return heap.build_mask_usage(config, gate, case["seq_len"], bits).as_dict()
    rows = lengths(case)[0] // max(case["dim"], 1)
    return heap.planned_attention_usage(config, gate, case["mask_seq_len"], rows, case["dim"], bits).as_dict()


def heap_cases(name: str, cases) -> list:
    """All cases, but of masks2_core's 40 wrapping masks (more than 65,536 tokens, whose B-tree
    is replayed insertion by insertion, seconds each) only a fixed, seeded 4."""
    if name != "differential/masks2_core":
        return list(cases)
    slow = [c for c in cases if c["seq_len"] > 65536]
    return [c for c in cases if c["seq_len"] <= 65536] + random.Random(name).sample(slow, 4)


def case_jobs():
    golden = ROOT / "tests" / "golden"
    for path in sorted(golden.glob("*.jsonl.gz")) + sorted(golden.glob("differential/*.jsonl.gz")):
        name = path.relative_to(golden).as_posix().removesuffix(".jsonl.gz")
        kind = next(k for k in ("density", "masks", "full", "scalar", "attention") if path.name.startswith(k))
        for preset in PRESETS:
            yield f"cases/{name}/{preset}", lambda k=kind, p=path, t=mcsa.PRESETS[preset]: [
                outcome(lambda: run_case(k, c, t)) for c in read_cases(p)]
        for bits in (32, 64) if kind in ("masks", "full", "attention") else ():
            yield f"cases/{name}/heap{bits}", lambda k=kind, p=path, n=name, b=bits: [
                outcome(lambda: heap_case(k, c, b)) for c in heap_cases(n, read_cases(p))]


# Groups 2 to 5: the command line


def cli(*args, tmp: str | None = None) -> dict:
    """``mcsa ARGS`` in this process, from the repository root: exit code, stdout, stderr (but
    the notes of a first compile) and any exception but SystemExit, with ``tmp`` written ``<tmp>``."""
    from click.testing import CliRunner
    from mcsa.cli import main

    try:
        runner = CliRunner(mix_stderr=False)  # click 8.1; from 8.2 stderr is always kept apart
    except TypeError:
        runner = CliRunner()
    with contextlib.chdir(ROOT):
        result = runner.invoke(main, [str(a) for a in args])
    # (the notes of a first compile depend on Numba's cache, not on what mcsa computes)
    stderr = "".join(line for line in result.stderr.splitlines(keepends=True) if not line.startswith("note: compil"))
    out = {"exit_code": result.exit_code, "stdout": result.stdout, "stderr": stderr}
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        out["exception"] = f"{type(result.exception).__name__}: {result.exception}"
    return normalise(out, tmp)


def normalise(value, tmp: str | None):
    """``value`` with the temporary directory ``tmp`` written ``<tmp>`` wherever it occurs."""
    return value if tmp is None else json.loads(json.dumps(value, default=_plain).replace(tmp, "<tmp>"))


def parquet(path: Path, tmp: str) -> dict:
    """A Parquet file's columns as values (float columns as arrays), its fields and key-value metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    columns = {name: table[name].to_numpy() if pa.types.is_floating(table[name].type) else table[name].to_pylist()
               for name in table.column_names}
    fields = [[f.name, str(f.type), f.nullable] for f in table.schema]
    metadata = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    return normalise({"columns": columns, "fields": fields, "metadata": metadata}, tmp)


def replay(*args, parquet_out: str | None = None, summary: bool = False) -> dict:
    """``mcsa replay`` on the stm32f411 (a ``--target`` in ARGS wins); with ``parquet_out``
    (``file`` or ``dir``) as Parquet, read back; with ``summary`` its ``--summary`` file too."""
    with tempfile.TemporaryDirectory() as tmp:
        extra = ["--format", "parquet", "-o", f"{tmp}/out"] if parquet_out else []
        out = {"run": cli("replay", *REPLAY_ARGS, *args, *extra, *["--summary", f"{tmp}/sum"] * summary, tmp=tmp)}
        if parquet_out:
            files = [Path(tmp, "out")] if parquet_out == "file" else sorted(Path(tmp, "out").iterdir())
            out["parquet"] = {p.name: parquet(p, tmp) for p in files}
        if summary:
            out["summary"] = normalise(Path(tmp, "sum").read_text(), tmp)
        return out


def attention(*args) -> dict:
    """``mcsa attention`` on 24 x 8 q, k, v in -7..=7 from SplitMix64 (seed 7), and its ``-o`` file."""
    with tempfile.TemporaryDirectory() as tmp:
        data = (splitmix64(7, 3 * 24 * 8) % np.uint64(15)).astype(np.int8).reshape(3, 24, 8) - 7
        for name, array in zip("qkv", data):
            np.save(Path(tmp, f"{name}.npy"), array)
        inputs = [x for n in "qkv" for x in (f"--{n}", f"{tmp}/{n}.npy")]
        run = cli("attention", *inputs, "--dim", 8, "-o", f"{tmp}/out.npy", *args, tmp=tmp)
        return {"run": run, "output": np.load(f"{tmp}/out.npy") if run["exit_code"] == 0 else None}


def fit_jobs():
    for profile in load_profiles():
        for name in (profile, f"{profile}-debug") if profile == "stm32f411" else (profile,):
            for allocator in ALLOCATORS:
                yield f"fit/{name}/{allocator}", lambda n=name, a=allocator: [cli(
                    "fit", "--target", n, "--allocator", a, "--seq-len", s, "--partitions", p, "--dim", 32, "--json")
                    for s in FIT_SEQ_LENS for p in (1, 2, 4, 8)]


def plan_jobs():
    for profile in ("stm32f411", "esp32", "samd21"):
        yield f"plan/{profile}", lambda p=profile: cli(
            "plan", "--target", p, "--max-seq-len", 300, "--partitions", "2,4,8", "--dim", 32, "--json")


def replay_jobs():
    for trace in TRACES:
        path = f"examples/{trace}"
        for fmt in ("jsonl", "csv", "table"):
            yield f"replay/{fmt}/{trace}", lambda p=path, f=fmt: replay(p, "--format", f)
        yield f"replay/parquet/{trace}", lambda p=path: replay(p, parquet_out="file")
        yield f"replay/with-packet/{trace}", lambda p=path: replay(p, "--format", "jsonl", "--with-packet")
    first, two = "examples/trace.jsonl", ("examples/trace.jsonl", "examples/trace.bin")
    yield "replay/with-packet-parquet/trace.jsonl", lambda: replay(first, "--with-packet", parquet_out="file")
    yield "replay/debug/trace.jsonl", lambda: replay(first, "--format", "jsonl", "--target", "stm32f411-debug")
    yield "replay/summary/trace.jsonl.gz", lambda: replay("examples/trace.jsonl.gz", "--format", "jsonl", summary=True)
    for fmt in ("jsonl", "table"):
        yield f"replay/two-traces-{fmt}/trace.jsonl+trace.bin", lambda f=fmt: replay(*two, "--format", f)
    yield "replay/two-traces-parquet/trace.jsonl+trace.bin", lambda: replay(*two, parquet_out="dir", summary=True)


MASKS = {  # name: (lambda, partitions, seq_len, target)
    "l100-p3-n24": (100, 3, 24, "x86_64-release"), "l10-p4-n20-full": (10, 4, 20, "x86_64-release"),
    "l200-p8-n1000": (200, 8, 1000, "thumbv7em-debug"), "l200-p2-n131068": (200, 2, 131068, "x86_64-debug"),
    "l200-p4-n2e9": (200, 4, 2 * 10**9, "wasm32-release"), "l200-p4-n5e9": (200, 4, 5 * 10**9, "stm32f411"),
}
ATTENTION = {
    "x86_64": ("--scale", 0.35355339), "thumbv7em-debug": ("--scale", 0.35355339, "--target", "thumbv7em-debug"),
    "xtensa-release-scale-1e30": ("--scale", 1e30, "--target", "xtensa-release"),
    "stm32f411-p3": ("--scale", 0.125, "--target", "stm32f411", "--gate", json.dumps(
        {"lambda": 200, "lambda_prev": 200, "boundary_edges": 0, "boundary_concentration_q15": 0,
         "partition_count": 3, "flags": 0})),
}


def cli_jobs():
    yield "cli/targets", lambda: cli("targets")
    for name, (lambda_, parts, seq_len, target) in MASKS.items():
        yield f"cli/mask/{name}-{target}", lambda a=(lambda_, parts, seq_len, target): cli(
            "mask", "--lambda", a[0], "--partitions", a[1], "--seq-len", a[2], "--target", a[3])
    for name, args in ATTENTION.items():
        yield f"cli/attention/{name}", lambda a=args: attention(*a)
    for path in sorted((ROOT / "tests" / "golden").glob("*.jsonl.gz")):
        for build in GOLDEN_PRESETS:
            yield f"cli/verify/{path.name}/{build}", lambda p=path.relative_to(ROOT), b=build: cli(
                "verify", p, "--build", b)


# Group 6: firmware_model.step and the step's allocation trace


def step(profile, seq_len: int, partitions: int) -> dict:
    """``fit_step``'s verdict, ``step_trace``, ``op_counts`` and ``representations`` of one step (dim 32)."""
    config, target = mcsa.SparsityConfig(), profile.target("release")
    gate = mcsa.GatePacket(lambda_=200, partition_count=partitions)
    sim = mcsa.MincutSparseAttention(config, target)
    report = fit_step(profile, config, gate, seq_len, 32)
    trace = step_trace(config, gate, seq_len, 32, target.usize_bits, target=target)
    runs = np.unique(sim.build_mask(gate, seq_len).positions[:, 0], return_counts=True)
    return {"verdict": report.verdict(), "fits": report.fits, "peak_bytes": report.step_requested_bytes,
            "events": trace.events, "what": trace.what, "calls": trace.calls, "ops": op_counts(runs, 32),
            "representations": representations(sim.mask_stats(gate, seq_len), seq_len)}


def api_jobs():
    for name, profile in load_profiles().items():
        if name in ("stm32f411", "esp32", "samd21", "x86_64"):
            yield f"api/step/{name}", lambda p=profile: [
                outcome(lambda: step(p, n, parts)) for n in (16, 128, 180, 256) for parts in (2, 8)]


GROUPS = {"cases": case_jobs, "fit": fit_jobs, "plan": plan_jobs, "replay": replay_jobs, "cli": cli_jobs,
          "api": api_jobs}


@functools.lru_cache(maxsize=None)
def all_jobs() -> dict:
    """Every fingerprint's name and the call that computes its value, group by group."""
    return {name: job for make in GROUPS.values() for name, job in make()}


def compute(name: str) -> tuple[str, float]:
    """One fingerprint, by name (a worker process builds the jobs itself), and its CPU seconds."""
    start = time.process_time()
    return fingerprint(all_jobs()[name]()), time.process_time() - start


def compute_all(pattern: str = "*", jobs: int = 1) -> dict[str, str]:
    """The fingerprints whose names match ``pattern`` (fnmatch), printing each group's times."""
    result = {}
    with concurrent.futures.ProcessPoolExecutor(jobs) if jobs > 1 else contextlib.nullcontext() as pool:
        for group in GROUPS:
            names = [n for n in all_jobs() if n.startswith(group + "/") and fnmatch.fnmatchcase(n, pattern)]
            if names:
                start = time.perf_counter()
                done = list(pool.map(compute, names) if pool else map(compute, names))
                result.update(zip(names, (digest for digest, _ in done)))
                print(f"{group}: {len(names)} fingerprints in {time.perf_counter() - start:.1f} s "
                      f"({sum(cpu for _, cpu in done):.1f} s CPU)", flush=True)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="compare with tests/fingerprints.json (the default)")
    mode.add_argument("--update", action="store_true", help="write them to tests/fingerprints.json")
    parser.add_argument("--only", default="*", metavar="PATTERN", help="only names matching this fnmatch pattern")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes (default: every CPU)")
    args = parser.parse_args(argv)
    got = compute_all(args.only, args.jobs)
    stored = json.loads(STORE.read_text()) if STORE.exists() else {}
    if args.update:
        kept = {n: v for n, v in stored.items() if not fnmatch.fnmatchcase(n, args.only)}
        STORE.write_text(json.dumps({**kept, **got}, indent=1, sort_keys=True) + "\n")
        print(f"wrote {len(got)} fingerprints to {STORE.relative_to(ROOT)}")
        return 0
    want = {n: v for n, v in stored.items() if fnmatch.fnmatchcase(n, args.only)}
    lines = ([f"differs: {n}" for n in sorted(got.keys() & want.keys()) if got[n] != want[n]]
             + [f"missing: {n}" for n in sorted(want.keys() - got.keys())]
             + [f"extra: {n}" for n in sorted(got.keys() - want.keys())])
    print("\n".join(lines) or f"{len(got)} fingerprints unchanged")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
