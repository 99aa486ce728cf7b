"""Speed of build_mask, sparse_attention, mask_stats and the heap model, each next to its limit.

    python tools/bench_core.py [--sizes 256,1024,4096,16384] [--dim 64] [--repeats 7]

Prints the machine (CPU, cores, load average before and after, versions, Numba's
threads and threading layer), then per sequence length (8 partitions, default
config, lambda 200, dim 64: issue 17's table) the median wall time of:

- ``build_mask`` next to **write**: a plain loop writing its positions (one uint32
  per pair) into a fresh (N, 2) uint16 array, allocated as build_mask allocates.
- ``sparse_attention`` on 1 thread and on all of Numba's threads (the default),
  next to **loop**: a plain single-thread loop over the mask's positions doing only
  the arithmetic of each, i32 dots of the int8 q row with the k row and with the
  v row, and one f32 exp (the target's) of the scaled score.
- **loops**: the same plain loop on all of Numba's threads over 1, runs of
  positions claimed in turn as sparse_attention claims its runs of rows: the
  limit of its speedup on this machine right now, for work of its kind.
- **spin**: the machine's own limit for threads right now, the speedup of a
  pure-arithmetic loop on all of Numba's threads over 1 (one chunk per thread).
  Scalar and register-bound, it reaches 2x on 2 cores where work that loads
  and stores vectors does not when the host's load makes one core slower.
- **vspin**: the same for vector float work, the kind of the attention's weighted
  sums, in chunks claimed in turn as the attention claims its runs: f32 multiply
  and add over a 4 KiB row per thread, held in L1. On the 2-core development VM
  one core at times ran vector work at half the other's speed for seconds (the
  attention's thread on it claimed a third of the runs), while spin still gave
  1.9-2.0x: this is the limit of the attention's speedup at that moment.
- ``mask_stats`` and the heap model (``firmware_model.heap.build_mask_usage``, 32-bit),
  which have no loop to compare with: compare them between runs.

Every figure is the median of ``--repeats`` rounds that time, in turn, each call of
its group (build_mask and the write; the attention calls, the loop and spin;
mask_stats and the heap model), calls under a millisecond in batches, so a ratio
compares calls made under the same load. The mask rounds start with an untimed
write of the positions, so that build_mask and the write find the allocator
alike: the first array of a size after other work costs page faults (at 16,384
tokens about 0.1 s), the next reuses freed memory. The outputs of 1 and of all threads are checked to be bit for bit
the same. Also times a fresh process importing mcsa and running one small step,
twice: the second run loads the cached kernels.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

import numba
import numpy as np

import mcsa
from firmware_model.heap import build_mask_usage
from mcsa.core._jit import claim, jit, numba_threads
from mcsa.core.attention import _RUNS_PER_THREAD
from mcsa.core.expf import expf_kernel


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}; {os.cpu_count()} cores; {platform.platform()}; python {platform.python_version()}, "
            f"numpy {np.__version__}, numba {numba.__version__}; NUMBA_NUM_THREADS "
            f"{numba.config.NUMBA_NUM_THREADS}")


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def median_time(fn, repeats: int) -> float:
    """The median seconds of ``repeats`` calls of ``fn``, each timed alone (for calls
    long enough that a batch is not needed: the replay and fit benchmarks)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def medians(calls: dict, repeats: int, prime=None) -> dict:
    """The median seconds per call of each call, timed in turn in every round
    (a call under a millisecond is timed over a batch of calls); ``prime`` runs
    untimed at the start of each round."""
    batch = {}
    for name, call in calls.items():
        start = time.perf_counter()
        call()
        batch[name] = max(1, min(1000, int(1e-3 / max(time.perf_counter() - start, 1e-9))))
    times = {name: [] for name in calls}
    for _ in range(repeats):
        if prime is not None:
            prime()
        for name, call in calls.items():
            start = time.perf_counter()
            for _ in range(batch[name]):
                call()
            times[name].append((time.perf_counter() - start) / batch[name])
    return {name: statistics.median(t) for name, t in times.items()}


@jit(parallel=True)
def _spin(chunks, steps):
    out = np.zeros(chunks)
    for c in numba.prange(chunks):
        x = 0.0
        for _ in range(steps):
            x = x * 0.999999 + 1.0
        out[c] = x
    return out


@jit(parallel=True)
def _vector_spin(rows, chunks, steps):
    taken = np.zeros(1, np.int64)
    for w in numba.prange(rows.shape[0]):
        row = rows[w]
        c = claim(taken)
        while c < chunks:
            for _ in range(steps):
                for d in range(row.size):
                    row[d] = row[d] * np.float32(0.999) + np.float32(0.5)
            c = claim(taken)


def spin(threads: int, steps: int) -> None:
    """The machine's parallel limit: one chunk of pure arithmetic per thread of
    Numba's pool, run on ``threads`` threads (1 thread does them one after another)."""
    with numba_threads(threads):
        _spin(numba.config.NUMBA_NUM_THREADS, steps)


def vector_spin(threads: int, rows: np.ndarray, steps: int) -> None:
    """The machine's parallel limit for vector float work (the attention's weighted
    sums): chunks of ``steps`` passes of f32 multiply and add over a 4 KiB row (in
    L1), one row per thread of Numba's pool, claimed in turn as sparse_attention
    claims its runs of rows, on ``threads`` threads."""
    with numba_threads(threads):
        _vector_spin(rows, _RUNS_PER_THREAD * rows.shape[0], steps)


@jit
def _write_loop(pairs):
    for p in range(pairs.size):
        pairs[p] = np.uint32(p)


def write_positions(count: int) -> np.ndarray:
    """The write limit: a fresh (N, 2) uint16 array, each pair written as one uint32."""
    out = np.empty((count, 2), np.uint16)
    _write_loop(out.view(np.uint32).reshape(-1))
    return out


@jit
def _arithmetic_run(q, k, v, positions, start, stop, dim, scale, flavour):
    total = np.float32(0.0)
    for p in range(start, stop):
        qrow = q[np.int64(positions[p, 0]) * dim : (np.int64(positions[p, 0]) + 1) * dim]
        base = np.int64(positions[p, 1]) * dim
        krow, vrow = k[base : base + dim], v[base : base + dim]
        score, weighted = np.int32(0), np.int32(0)
        for d in range(dim):
            score = np.int32(score + np.int32(qrow[d]) * np.int32(krow[d]))
        for d in range(dim):
            weighted = np.int32(weighted + np.int32(qrow[d]) * np.int32(vrow[d]))
        total += expf_kernel(np.float32(score) * scale, flavour) + np.float32(weighted)
    return total


@jit(parallel=True)
def _arithmetic_threads(q, k, v, positions, runs, workers, dim, scale, flavour, totals):
    taken = np.zeros(1, np.int64)
    for _ in numba.prange(workers):
        r = claim(taken)
        while r < runs.size - 1:
            totals[r] = _arithmetic_run(q, k, v, positions, runs[r], runs[r + 1], dim, scale, flavour)
            r = claim(taken)


def arithmetic_loop(sim, q, k, v, mask, dim, scale, threads: int = 1) -> None:
    """The attention limit: per position, the i32 QK and AV dots and one f32 exp;
    on ``threads`` threads, runs of positions claimed in turn as sparse_attention
    claims its runs of rows."""
    flavour = sim.target.expf.code
    if threads == 1:
        _arithmetic_run(q, k, v, mask.positions, 0, mask.num_positions, dim, scale, flavour)
        return
    runs = np.linspace(0, mask.num_positions, _RUNS_PER_THREAD * threads + 1).astype(np.int64)
    with numba_threads(threads):
        _arithmetic_threads(q, k, v, mask.positions, runs, threads, dim, scale, flavour, np.zeros(runs.size - 1, np.float32))


def fresh_process_seconds() -> float:
    code = ("import numpy as np, mcsa; s = mcsa.MincutSparseAttention(target='thumbv7em-release'); "
            "m = s.build_mask(mcsa.GatePacket(lambda_=100, partition_count=3), 64); "
            "z = np.ones(64 * 8, np.int8); s.sparse_attention(z, z, z, m, 8, 0.5)")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256,1024,4096,16384")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    all_threads = numba.config.NUMBA_NUM_THREADS
    print(f"machine: {machine()}")
    print(f"before: {load()}")
    print(f"fresh process, import + first small step: {fresh_process_seconds():.2f} s, "
          f"again (cached kernels): {fresh_process_seconds():.2f} s")
    one = mcsa.MincutSparseAttention(target="x86_64-release", position_limit=1 << 30, threads=1)
    every = mcsa.MincutSparseAttention(target="x86_64-release", position_limit=1 << 30, threads=all_threads)
    cfg = one.config
    rng = np.random.default_rng(2026)
    scale = np.float32(1 / np.sqrt(args.dim))
    print(f"medians of {args.repeats} rounds (ms), dim {args.dim}, {args.partitions} partitions, lambda 200; "
          f"attention on 1 and {all_threads} threads (threading layer: set at the first parallel call)")
    print(f"{'seq_len':>7} {'positions':>11} | {'build_mask':>10} {'write':>8} {'ratio':>5} | "
          f"{'1 thread':>9} {f'{all_threads} threads':>9} {'loop':>9} {'1t/loop':>7} {'speedup':>7} {'loops':>6} {'spin':>5} {'vspin':>5} | "
          f"{'mask_stats':>10} {'heap model':>10}")
    for seq_len in (int(s) for s in args.sizes.split(",")):
        gate = mcsa.GatePacket(lambda_=200, partition_count=args.partitions)
        mask = one.build_mask(gate, seq_len)
        q, k, v = (rng.integers(-128, 128, seq_len * args.dim).astype(np.int8) for _ in range(3))
        alone = one.sparse_attention(q, k, v, mask, args.dim, scale)
        shared = every.sparse_attention(q, k, v, mask, args.dim, scale)
        assert np.array_equal(alone.view(np.uint32), shared.view(np.uint32)), "threads changed the bits"
        arithmetic_loop(one, q, k, v, mask, args.dim, scale)
        write_positions(1)
        steps = max(1, 16 * mask.num_positions // all_threads)  # about as long as the attention on 1 thread
        rows = np.ones((all_threads, 1024 + 16), np.float32)  # rows 4 KiB + a line apart: no 4K aliasing
        vector_steps = max(1, mask.num_positions // (4 * _RUNS_PER_THREAD * all_threads))  # likewise
        rounds = args.repeats if seq_len <= 4096 else max(3, args.repeats // 2)
        t = medians({"build": lambda: one.build_mask(gate, seq_len),
                     "write": lambda: write_positions(mask.num_positions)},
                    rounds, prime=lambda: write_positions(mask.num_positions))
        t |= medians({"one": lambda: one.sparse_attention(q, k, v, mask, args.dim, scale),
                      "every": lambda: every.sparse_attention(q, k, v, mask, args.dim, scale),
                      "loop": lambda: arithmetic_loop(one, q, k, v, mask, args.dim, scale),
                      "loops": lambda: arithmetic_loop(one, q, k, v, mask, args.dim, scale, all_threads),
                      "spin1": lambda: spin(1, steps),
                      "spin": lambda: spin(all_threads, steps),
                      "vspin1": lambda: vector_spin(1, rows, vector_steps),
                      "vspin": lambda: vector_spin(all_threads, rows, vector_steps)}, rounds)
        t |= medians({"stats": lambda: one.mask_stats(gate, seq_len),
                      "heap": lambda: build_mask_usage(cfg, gate, seq_len, 32)}, rounds)
        ms = {name: 1e3 * seconds for name, seconds in t.items()}
        print(f"{seq_len:>7} {mask.num_positions:>11,} | {ms['build']:>10.3f} {ms['write']:>8.3f} "
              f"{t['build'] / t['write']:>4.1f}x | {ms['one']:>9.3f} {ms['every']:>9.3f} {ms['loop']:>9.3f} "
              f"{t['one'] / t['loop']:>6.2f}x {t['one'] / t['every']:>6.2f}x {t['loop'] / t['loops']:>5.2f}x "
              f"{t['spin1'] / t['spin']:>4.2f}x {t['vspin1'] / t['vspin']:>4.2f}x | "
              f"{ms['stats']:>10.3f} {ms['heap']:>10.3f}", flush=True)
    print(f"threading layer: {numba.threading_layer()}")
    print(f"after: {load()}")


if __name__ == "__main__":
    main()
