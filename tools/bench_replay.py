"""Replay throughput against floors measured in the same run, the Dask fleet, and peak memory per path.

    python tools/bench_replay.py [--only floors,fleet,rss] [--jsonl 1000000] [--binary 5000000]
                                 [--traces 8] [--trace-packets 600000] [--rss-packets 20000000]

Traces come from the simulated controller (tools/make_traces.py), repeated to
the sizes asked for, in a temporary folder. Every figure is printed next to its
limit, with the machine and its load (2 cores shared with other engineers: compare
ratios measured in one run, and the CPU seconds, which load does not inflate).

- floors: JSONL -> JSONL against orjson parsing the same file line by line;
  binary -> Parquet against ``np.fromfile`` plus pyarrow writing a table of the
  same rows and columns (medians of ``--repeats`` runs in this process, each floor
  run just before its replay so that both see the same load).
- fleet: ``--traces`` JSONL traces of ``--trace-packets`` packets into a Parquet
  dataset folder, serially and with 1 and 2 Dask workers in turns, each in a fresh process
  next to a 1-packet replay run the same way (start-up: imports, the cluster, the
  workers' kernels), so that the figures are net of start-up. Wall seconds, CPU
  seconds of mcsa's process (the client, and for a local cluster its scheduler)
  and of the workers, the datasets compared file by file, and what the client
  sends and receives per piece (O(1) bytes per piece: 0 bytes per packet of a
  plain file; a model of N machines from the measured per-packet costs).
- rss: peak RSS of mcsa's process and of its largest worker, per path: a plain
  binary trace serially and with 1 and 2 workers, a ``--rss-packets`` .bin.gz
  serially and with 1 and 2 workers, and /dev/zero as a binary trace for
  ``--zero-seconds`` serially and with 2 workers (stopped with SIGTERM).
"""

from __future__ import annotations

import argparse
import filecmp
import gzip
import json
import os
import pickle
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402
import orjson  # noqa: E402
import psutil  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from bench_core import load, machine, median_time  # noqa: E402
from make_traces import controller  # noqa: E402

from mcsa.app import fleet  # noqa: E402
from mcsa.app.record import COLUMNS  # noqa: E402
from mcsa.app.replay import Replayer  # noqa: E402
from mcsa.app.traces import byte_ranges, open_trace  # noqa: E402
from mcsa.cli import main as mcsa_main  # noqa: E402
from mcsa.cli.common import resolve_profile  # noqa: E402
from mcsa.core.packets import FIELDS, PACKET_DTYPE, SparsityConfig  # noqa: E402

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


def jsonl_lines(base: list, count: int, shift: int = 0):
    lines = [orjson.dumps(r) + b"\n" for r in base]
    return (lines[(i + shift) % len(lines)] for i in range(count))


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


def fresh(args: list, stop_after: float | None = None) -> dict:
    """``mcsa`` in a new process (``python -m mcsa``): wall seconds, the CPU seconds of
    its own process and of its workers (the children it waited for), and the peak RSS
    (MiB) of its process and of its largest worker; a run that never ends on its own
    (/dev/zero) is sent SIGTERM after ``stop_after`` seconds (``stop``: how long it then took)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "mcsa", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    peak_self = peak_worker = 0
    cpu_self = 0.0
    watched = psutil.Process(proc.pid)
    while proc.poll() is None and (stop_after is None or time.perf_counter() - started < stop_after):
        try:
            peak_self = max(peak_self, watched.memory_info().rss)
            times = watched.cpu_times()
            cpu_self = times.user + times.system
            for child in watched.children(recursive=True):
                try:
                    peak_worker = max(peak_worker, child.memory_info().rss)
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        time.sleep(0.05)
    stopping = time.perf_counter()
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=300)[1]
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in (0, 130):
        raise RuntimeError(f"mcsa {' '.join(args)}: exit {proc.returncode}: {err[-500:]}")
    total = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": total, "cpu_self": min(cpu_self, total), "cpu_workers": max(total - cpu_self, 0.0),
            "rss_self": peak_self / 2**20, "rss_worker": peak_worker / 2**20, "code": proc.returncode,
            "stop": time.perf_counter() - stopping}


def same_datasets(a: Path, b: Path) -> bool:
    names = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    return names == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()) and all(
        filecmp.cmp(a / n, b / n, shallow=False) for n in names)


def floors(tmp: Path, args, base: list) -> None:
    with open(tmp / "big.jsonl", "wb") as f:
        f.writelines(jsonl_lines(base, args.jsonl))
    packed = np.array([tuple(r[k] for k in FIELDS) for r in base], PACKET_DTYPE)
    np.resize(packed, max(args.binary, 1)).tofile(tmp / "big.bin")
    replay(str(tmp / "big.bin"), "--format", "jsonl", "-o", str(tmp / "warm.jsonl"))  # compile
    floor, took = paired(lambda: orjson_floor(tmp / "big.jsonl"),
                         lambda: replay(str(tmp / "big.jsonl"), "--format", "jsonl", "-o", str(tmp / "o.jsonl")),
                         args.repeats)
    print(f"JSONL -> JSONL, {args.jsonl:,} packets: {took:.2f} s ({args.jsonl / took:,.0f} packets/s); "
          f"orjson parse floor {floor:.2f} s ({args.jsonl / floor:,.0f}/s): {took / floor:.1f}x the floor "
          "(target: within 5x)")
    floor, took = paired(lambda: read_write_floor(tmp / "big.bin", tmp / "floor.parquet"),
                         lambda: replay(str(tmp / "big.bin"), "--format", "parquet", "-o", str(tmp / "o.parquet")),
                         args.repeats)
    print(f"binary -> Parquet, {args.binary:,} packets: {took:.2f} s ({args.binary / took:,.0f} packets/s); "
          f"NumPy read + pyarrow write floor {floor:.2f} s ({args.binary / floor:,.0f}/s): "
          f"{took / floor:.1f}x the floor (target: within 10x)")


def fleet_figures(tmp: Path, args, base: list) -> None:
    traces = []
    for i in range(args.traces):
        path = tmp / f"device{i:02d}.jsonl"
        with open(path, "wb") as f:
            f.writelines(jsonl_lines(base, args.trace_packets, 997 * i))
        traces.append(str(path))
    (tmp / "one.jsonl").write_bytes(orjson.dumps(base[0]) + b"\n")
    total = args.traces * args.trace_packets
    pieces = sum(len(byte_ranges(open_trace(t), fleet.CHUNK_BYTES)) for t in traces)
    print(f"fleet: {args.traces} JSONL traces x {args.trace_packets:,} packets = {total:,} packets, "
          f"{sum(os.path.getsize(t) for t in traces) / 2**20:,.0f} MiB, {pieces} pieces of at most "
          f"{fleet.CHUNK_BYTES >> 20} MiB, into a Parquet dataset folder")
    rows, runs, starts = {}, {None: [], 1: [], 2: []}, {None: [], 1: [], 2: []}
    for repeat in range(args.repeats):  # in turns, so that every way of running sees the same load
        for workers in runs:
            extra = [] if workers is None else ["--workers", str(workers)]
            runs[workers].append(fresh(["replay", *traces, *ARGS, "-o", f"{tmp / f'fleet{workers}'}/", *extra]))
            starts[workers].append(fresh(["replay", str(tmp / "one.jsonl"), *ARGS, "-o", f"{tmp / 'one'}/", *extra]))
    for workers in runs:
        run = {k: statistics.median(r[k] for r in runs[workers]) for k in runs[workers][0]}
        start = {k: statistics.median(r[k] for r in starts[workers]) for k in starts[workers][0]}
        net = run["wall"] - start["wall"]
        rows[workers] = (run, start, net)
        label = "serial (no Dask)" if workers is None else f"{workers} Dask worker{'s' * (workers > 1)}"
        print(f"  {label:>17}: {run['wall']:.2f} s wall, start-up (a 1-packet replay) {start['wall']:.2f} s, "
              f"net {net:.2f} s ({total / net:,.0f} packets/s); CPU s: mcsa {run['cpu_self'] - start['cpu_self']:.2f}"
              f" net of start-up, workers {run['cpu_workers'] - start['cpu_workers']:.2f}")
    serial, two = rows[None][2], rows[2][2]
    print(f"  2 workers vs one process, net of start-up: {serial / two:.2f}x (target >= 1.5x on 2 cores; "
          f"limit 2.0x; {load()})")
    print("  datasets identical file by file (serial, 1 worker, 2 workers): "
          f"{same_datasets(tmp / 'fleetNone', tmp / 'fleet1') and same_datasets(tmp / 'fleetNone', tmp / 'fleet2')}")
    profile, build = resolve_profile("stm32f411", None)
    replayer = Replayer(profile, build, SparsityConfig(), 128, 32)
    source = open_trace(traces[0])
    start, end = byte_ranges(source, fleet.CHUNK_BYTES)[0]
    result = fleet.replay_piece(replayer, source, fleet.Piece(0, start, end), False)
    info = fleet.piece_info(result)
    sent = len(pickle.dumps((replayer, source, fleet.Piece(0, start, end)))) * 3  # replay, count, write
    received = len(pickle.dumps(info))
    print(f"  the client per piece of {info.n:,} packets: sends {sent:,} B (three tasks), receives {received:,} B "
          f"(count and summary): {(sent + received) / info.n:.3f} B per packet, none of it records "
          f"(a piece's records, pickled, are {len(pickle.dumps(result)) / info.n:.0f} B per packet)")
    two_run, two_start, _ = rows[2]
    client = max(two_run["cpu_self"] - two_start["cpu_self"], 1e-9) / total
    work = max(two_run["cpu_workers"] - two_start["cpu_workers"], 1e-9) / total
    limit = work / client
    print(f"  model of N machines (measured with 2 workers): {work * 1e6:.2f} us of worker CPU and {client * 1e6:.3f} us"
          f" of client CPU (its scheduler included) per packet; N machines replay about N x "
          f"{1 / work:,.0f} packets/s until the client saturates at {1 / client:,.0f} packets/s, N ~ {limit:,.0f}")


def rss_figures(tmp: Path, args, base: list) -> None:
    packed = np.array([tuple(r[k] for k in FIELDS) for r in base], PACKET_DTYPE)
    plain = tmp / "rss.bin"
    np.resize(packed, args.rss_packets // 4).tofile(plain)
    zipped = tmp / "rss.bin.gz"
    block = np.resize(packed, 1 << 20).tobytes()
    with gzip.open(zipped, "wb", compresslevel=1) as f:
        for _ in range(args.rss_packets >> 20):
            f.write(block)
    print(f"peak RSS (MiB) of mcsa's process / its largest worker, binary -> Parquet dataset ({load()}):")
    for label, path, packets in (("plain .bin", plain, args.rss_packets // 4),
                                 (".bin.gz", zipped, (args.rss_packets >> 20) << 20)):
        for workers in (None, 1, 2):
            extra = [] if workers is None else ["--workers", str(workers)]
            out = tmp / f"rss{workers}"
            got = fresh(["replay", str(path), *ARGS, "-o", f"{out}/", *extra])
            name = "serial" if workers is None else f"{workers} worker{'s' * (workers > 1)}"
            print(f"  {label} {packets:,} packets, {name:>9}: {got['rss_self']:,.0f} / {got['rss_worker']:,.0f} "
                  f"({got['wall']:.1f} s)")
            subprocess.run(["rm", "-rf", str(out)], check=True)
    for workers in (None, 2):
        extra = [] if workers is None else ["--workers", str(workers)]
        got = fresh(["replay", "/dev/zero", "--input-format", "bin", *ARGS, "-o", os.devnull, "--format", "jsonl",
                     *extra], stop_after=args.zero_seconds)
        name = "serial" if workers is None else f"{workers} workers"
        print(f"  /dev/zero as binary, {args.zero_seconds:.0f} s then SIGTERM, {name:>9}: {got['rss_self']:,.0f} / "
              f"{got['rss_worker']:,.0f} (exit {got['code']}, {got['stop']:.1f} s to stop)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="floors,fleet,rss", help="sections to run")
    parser.add_argument("--jsonl", type=int, default=1_000_000, help="packets of the JSONL trace")
    parser.add_argument("--binary", type=int, default=5_000_000, help="packets of the binary trace")
    parser.add_argument("--traces", type=int, default=8, help="JSONL traces for the fleet")
    parser.add_argument("--trace-packets", type=int, default=600_000, help="packets of each of those")
    parser.add_argument("--rss-packets", type=int, default=20_000_000, help="packets of the .bin.gz for the memory figures")
    parser.add_argument("--zero-seconds", type=float, default=20.0, help="seconds of /dev/zero")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {machine()}; {load()}")
    base = controller(100_000, 7)
    sections = {"floors": floors, "fleet": fleet_figures, "rss": rss_figures}
    with tempfile.TemporaryDirectory() as name:
        for section in args.only.split(","):
            sections[section.strip()](Path(name), args, base)
    print(json.dumps({"done": load()}))


if __name__ == "__main__":
    main()
