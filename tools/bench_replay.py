"""Replay throughput: packets per second from JSONL, CSV and binary traces at 128 tokens.

    python tools/bench_replay.py [--packets 200000] [--repeats 3]

Writes traces from the simulated controller (tools/make_traces.py) to a
temporary folder, then runs `mcsa replay` in this process (start-up and the
first, compiling call excluded) with JSONL output to a file. Prints the machine,
the median time per format and packets per second.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_core import machine  # noqa: E402
from make_traces import main as make_traces  # noqa: E402

from mcsa.cli import main as mcsa_main  # noqa: E402


def replay(trace: Path, out: Path) -> None:
    mcsa_main(["replay", str(trace), "--target", "stm32f411", "--seq-len", "128", "--dim", "32",
               "--format", "jsonl", "-o", str(out)], standalone_mode=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        sys.argv = ["make_traces", "--packets", str(args.packets), "--out", tmp]
        make_traces()
        out = Path(tmp) / "out.jsonl"
        replay(Path(tmp) / "trace.bin", out)  # compile and warm up
        for name in ("trace.jsonl", "trace.jsonl.gz", "trace.csv", "trace.bin"):
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                replay(Path(tmp) / name, out)
                times.append(time.perf_counter() - start)
            median = statistics.median(times)
            print(f"{name:>15}: {median:.2f} s median of {args.repeats}, {args.packets / median:,.0f} packets/s")


if __name__ == "__main__":
    main()
