"""Speed of build_mask and sparse_attention against plain-NumPy peers, same run.

    python tools/bench_core.py [--sizes 256,1024,4096,16384] [--dim 64] [--repeats 5]

Prints the machine, then per sequence length (8 partitions, default config,
lambda 200) the median wall time of each implementation and the ratio. The
NumPy peers are speed references only: ``build_mask_numpy`` builds all pairs,
sorts and deduplicates (as fast as the Rust BTreeSet build, roughly);
``attention_numpy`` is per query (gather keys, mat-vec, softmax with np.exp,
weighted sum) and is not bit-exact. The last column is the heap model
(firmware_model.heap.build_mask_usage, 32-bit) for the same mask. Also times a fresh process importing mcsa
and running one small step, twice: the second run loads the cached kernels.
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


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}; {os.cpu_count()} cores; {platform.platform()}; python {platform.python_version()}, "
            f"numpy {np.__version__}, numba {numba.__version__}")


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def build_mask_numpy(seq_len: int, parts: int, max_edges: int) -> np.ndarray:
    """All pairs, sort, drop repeats: the best plain-NumPy construction (np.unique
    is slower: NumPy 2 runs a hash pass before its sort)."""
    bounds = np.arange(parts, dtype=np.int64) * (seq_len // parts)
    ends = np.append(bounds[1:], seq_len)
    codes = []
    for start, end in zip(bounds, ends):
        i, j = np.tril_indices(end - start)
        codes.append(((i + start) << 16) | (j + start))
    tokens = bounds[:max_edges]
    rows = (tokens[:, None] + np.arange(4)).ravel()
    rows = np.concatenate([tokens, rows[rows < seq_len]])
    r, t = np.meshgrid(rows, tokens, indexing="ij")
    keep = t <= r
    codes.append((r[keep] << 16) | t[keep])
    codes = np.sort(np.concatenate(codes))
    codes = codes[np.concatenate(([True], codes[1:] != codes[:-1]))]
    return np.stack([codes >> 16, codes & 0xFFFF], axis=1).astype(np.uint16)


def attention_numpy(q, k, v, positions, dim, scale):
    """Per query: gather keys, mat-vec, softmax (np.exp), weighted sum. Not exact."""
    seq_len = q.size // dim
    Q = q.reshape(-1, dim).astype(np.int32)
    K = k.reshape(-1, dim).astype(np.int32)
    V = v.reshape(-1, dim).astype(np.float32)
    out = np.zeros((seq_len, dim), np.float32)
    starts = np.searchsorted(positions[:, 0], np.arange(seq_len + 1))
    for query in range(seq_len):
        keys = positions[starts[query] : starts[query + 1], 1]
        if keys.size:
            s = (K[keys] @ Q[query]).astype(np.float32) * scale
            e = np.exp(s - s.max())
            out[query] = (e / e.sum()) @ V[keys]
    return out.reshape(-1)


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
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"fresh process, import + first small step: {fresh_process_seconds():.2f} s, "
          f"again (cached kernels): {fresh_process_seconds():.2f} s")
    sim = mcsa.MincutSparseAttention(target="x86_64-release", position_limit=1 << 30)
    cfg = sim.config
    rng = np.random.default_rng(2026)
    print(f"{'seq_len':>8} {'positions':>11} | {'build_mask':>10} {'numpy':>9} {'ratio':>6} | "
          f"{'attention':>10} {'numpy':>9} {'ratio':>6} | {'heap model':>9}   (medians, dim {args.dim})")
    for seq_len in (int(s) for s in args.sizes.split(",")):
        gate = mcsa.GatePacket(lambda_=200, partition_count=args.partitions)
        mask = sim.build_mask(gate, seq_len)
        peer = build_mask_numpy(seq_len, args.partitions, cfg.max_cross_partition_edges)
        assert np.array_equal(peer, mask.positions), "NumPy peer builds a different mask"
        repeats = args.repeats if seq_len <= 4096 else max(1, args.repeats // 2)
        t_mask = median_time(lambda: sim.build_mask(gate, seq_len), repeats)
        t_mask_np = median_time(lambda: build_mask_numpy(seq_len, args.partitions, cfg.max_cross_partition_edges),
                                repeats)
        q, k, v = (rng.integers(-128, 128, seq_len * args.dim).astype(np.int8) for _ in range(3))
        scale = np.float32(1 / np.sqrt(args.dim))
        t_att = median_time(lambda: sim.sparse_attention(q, k, v, mask, args.dim, scale), repeats)
        t_att_np = median_time(lambda: attention_numpy(q, k, v, mask.positions, args.dim, scale), repeats)
        t_heap = median_time(lambda: build_mask_usage(cfg, gate, seq_len, 32), repeats)
        print(f"{seq_len:>8} {mask.num_positions:>11,} | {t_mask * 1e3:>8.2f}ms {t_mask_np * 1e3:>7.1f}ms "
              f"{t_mask_np / t_mask:>5.1f}x | {t_att * 1e3:>8.2f}ms {t_att_np * 1e3:>7.1f}ms {t_att_np / t_att:>5.1f}x"
              f" | {t_heap * 1e3:>7.2f}ms")


if __name__ == "__main__":
    main()
