"""Replay throughput against floors measured in the same run, Dask workers, and peak memory.

    python tools/bench_replay.py [--jsonl 1000000] [--binary 5000000] [--traces 12] [--rss 1000000,10000000]

Traces come from the simulated controller (tools/make_traces.py), repeated to
the sizes asked for, in a temporary folder. Every figure is the median of
``--repeats`` runs in this process, each floor run just before its replay so
that both see the same load (start-up and the first, compiling call
excluded), except the Dask and memory figures, which run the command as a user
would (a fresh process; the cluster's start included):

- JSONL -> JSONL, against the floor: orjson parsing the same file line by line;
- binary -> Parquet, against the floor: ``np.fromfile`` of the same file plus
  pyarrow writing a table of the same rows and columns;
- ``--traces`` JSONL traces with 1 and 2 Dask workers, and serially, each next to
  a 1-packet replay run the same way (the cluster's start and the workers' imports);
- peak RSS of binary -> Parquet replays of each ``--rss`` size, and how much of it
  the trace adds over a 1-packet replay in the same process (flat is the target).

Prints the machine, each time, packets per second and the ratio to its floor.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402
import orjson  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from bench_core import machine, median_time  # noqa: E402
from make_traces import controller  # noqa: E402

from mcsa.cli import main as mcsa_main  # noqa: E402
from mcsa.app.replay import COLUMNS  # noqa: E402
from mcsa.core.packets import FIELDS, PACKET_DTYPE  # noqa: E402

ARGS = ["--target", "stm32f411", "--seq-len", "128", "--dim", "32"]


def paired(floor, work, repeats: int) -> tuple[float, float]:
    """Median seconds of ``floor`` and of ``work``, run in turns so that both see the same load."""
    floors, works = [], []
    for _ in range(repeats):
        floors.append(median_time(floor, 1))
        works.append(median_time(work, 1))
    return statistics.median(floors), statistics.median(works)


def replay(*args: str) -> None:
    mcsa_main(["replay", *args, *ARGS], standalone_mode=False)


def write_traces(tmp: Path, jsonl: int, binary: int, base: list) -> None:
    lines = [orjson.dumps(r) + b"\n" for r in base]
    with open(tmp / "big.jsonl", "wb") as f:
        for i in range(jsonl):
            f.write(lines[i % len(lines)])
    packed = np.array([tuple(r[k] for k in FIELDS) for r in base], PACKET_DTYPE)
    np.resize(packed, max(binary, 1)).tofile(tmp / "big.bin")  # one at least, to compile the kernels


def orjson_floor(path: Path) -> None:
    loads = orjson.loads
    with open(path, "rb") as f:
        for line in f:
            loads(line)


def read_write_floor(path: Path, out: Path) -> None:
    """Read the packets with NumPy, write a table of as many rows and the replay's columns."""
    packets = np.fromfile(path, PACKET_DTYPE)
    n = len(packets)
    columns = {name: pa.array(np.zeros(n, np.int64)) for name in COLUMNS if name != "panic"}
    columns["target_density"] = pa.array(np.zeros(n, np.float32))
    pq.write_table(pa.table(columns), out)


def fresh_process(args: list, warm: list | None = None) -> tuple[float, int, int]:
    """Seconds and peak RSS (KiB) of ``mcsa`` run in a new Python process, and the
    peak RSS after running ``warm`` first in it (the JIT's compilation and the
    imports are then out of the figure), or 0."""
    code = ("import json, resource, sys, time; from mcsa.cli import main; warm = json.loads(sys.argv[1]); "
            "warm and main(warm, standalone_mode=False); "
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss if warm else 0; "
            "t = time.perf_counter(); main(sys.argv[2:], standalone_mode=False); "
            "print(time.perf_counter() - t, before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(warm or []), *args], capture_output=True,
                         text=True, check=True)
    seconds, before, rss = out.stdout.split()[-3:]
    return float(seconds), int(rss), int(before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jsonl", type=int, default=1_000_000, help="packets of the JSONL trace")
    parser.add_argument("--binary", type=int, default=5_000_000,
                        help="packets of the binary trace (0: the JSONL figure alone)")
    parser.add_argument("--traces", type=int, default=12, help="JSONL traces for the Dask run")
    parser.add_argument("--trace-packets", type=int, default=200_000, help="packets of each of those")
    parser.add_argument("--rss", default="1000000,10000000",
                        help="binary trace sizes for the memory figures ('' for none)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    base = controller(100_000, 7)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        write_traces(tmp, args.jsonl, args.binary, base)
        replay(str(tmp / "big.bin"), "--format", "jsonl", "-o", str(tmp / "warm.jsonl"))  # compile

        floor, took = paired(lambda: orjson_floor(tmp / "big.jsonl"),
                             lambda: replay(str(tmp / "big.jsonl"), "--format", "jsonl", "-o", str(tmp / "o.jsonl")),
                             args.repeats)
        print(f"JSONL -> JSONL, {args.jsonl:,} packets: {took:.2f} s ({args.jsonl / took:,.0f} packets/s); "
              f"orjson parse floor {floor:.2f} s ({args.jsonl / floor:,.0f}/s): {took / floor:.1f}x the floor "
              "(target: within 5x)")

        if not args.binary:
            return
        floor, took = paired(lambda: read_write_floor(tmp / "big.bin", tmp / "floor.parquet"),
                             lambda: replay(str(tmp / "big.bin"), "--format", "parquet", "-o", str(tmp / "o.parquet")),
                             args.repeats)
        print(f"binary -> Parquet, {args.binary:,} packets: {took:.2f} s ({args.binary / took:,.0f} packets/s); "
              f"NumPy read + pyarrow write floor {floor:.2f} s ({args.binary / floor:,.0f}/s): "
              f"{took / floor:.1f}x the floor (target: within 10x)")

        traces = []
        for i in range(args.traces):
            path = tmp / f"device{i:02d}.jsonl"
            with open(path, "wb") as f:
                for j in range(args.trace_packets):
                    f.write(orjson.dumps(base[(j + 997 * i) % len(base)]) + b"\n")
            traces.append(str(path))
        total = args.traces * args.trace_packets
        (tmp / "one.jsonl").write_bytes(orjson.dumps(base[0]) + b"\n")
        for workers in (None, 1, 2):
            extra = [] if workers is None else ["--workers", str(workers)]
            seconds, _, _ = fresh_process(["replay", *traces, *ARGS, "--format", "parquet", "-o", str(tmp / f"fleet{workers}"),
                                        "--summary", str(tmp / f"summary{workers}.jsonl"), *extra])
            start, _, _ = fresh_process(["replay", str(tmp / "one.jsonl"), *ARGS, "--format", "parquet", "-o",
                                         str(tmp / "one.parquet"), *extra])
            label = "serial (no Dask)" if workers is None else f"{workers} Dask worker(s)"
            print(f"{args.traces} traces, {total:,} packets, {label}: {seconds:.2f} s "
                  f"({total / seconds:,.0f} packets/s), of which {start:.2f} s is what a 1-packet replay takes "
                  "(the cluster's start and the workers' imports and compiled kernels)")
        same = [(tmp / f"summary{w}.jsonl").read_text() for w in (None, 1, 2)]
        print(f"summaries identical across worker counts: {same[0] == same[1] == same[2]}")

        tiny = tmp / "tiny.bin"
        np.fromfile(tmp / "big.bin", PACKET_DTYPE, count=1).tofile(tiny)
        warm = ["replay", str(tiny), *ARGS, "--format", "parquet", "-o", str(tmp / "tiny.parquet")]
        for size in (int(s) for s in args.rss.split(",") if s):
            path = tmp / f"rss{size}.bin"
            np.resize(np.fromfile(tmp / "big.bin", PACKET_DTYPE, count=len(base)), size).tofile(path)
            seconds, rss, before = fresh_process(["replay", str(path), *ARGS, "--format", "parquet", "-o",
                                                  str(tmp / "rss.parquet")], warm)
            print(f"peak RSS, binary -> Parquet, {size:,} packets: {rss / 1024:,.0f} MiB, of which "
                  f"{(rss - before) / 1024:,.0f} MiB over a 1-packet replay in the same process ({seconds:.1f} s)")
            path.unlink()


if __name__ == "__main__":
    main()
