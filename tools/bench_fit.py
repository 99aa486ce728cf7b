"""Speed of the placement fit verdict and of the planner's seq_len scan.

    python tools/bench_fit.py [--repeats 5] [--allocator linked-list]

Prints the machine, then medians of: one ``fit_step`` with every block placed for
a 256-token step (stm32f411: 32-bit, 128 KiB heap budget raised so that it fits,
4 partitions, dim 32), and its parts (the trace, the simulator); one
``scan_seq_len`` over seq_len 1..1024 for one partition count on a heap big enough
that the scan reaches 1024 (x86_64, 4 partitions, dim 32; stm32f411 for esp-idf,
whose simulator models 32-bit targets only).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import mcsa  # noqa: E402
from bench_core import machine, median_time  # noqa: E402
from firmware_model.allocators import allocator_named  # noqa: E402
from firmware_model.placement import simulator  # noqa: E402
from firmware_model.placement.events import step_trace  # noqa: E402
from firmware_model.profiles import profile_named  # noqa: E402
from firmware_model.step import fit_step, scan_seq_len  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--allocator", default="linked-list")
    args = parser.parse_args()
    print(machine())
    config, allocator = mcsa.SparsityConfig(), allocator_named(args.allocator)
    mcu, host = profile_named("stm32f411"), profile_named("x86_64")
    gate = mcsa.GatePacket(lambda_=200, partition_count=4)
    trace = step_trace(config, gate, 256, 32, 32)
    place = simulator(args.allocator)
    print(f"256-token step: {trace.events.size:,} allocator calls")
    for name, fn in (
        ("fit_step, 256 tokens, placed", lambda: fit_step(mcu, config, gate, 256, 32, heap_budget=200_000,
                                                          allocator=allocator)),
        ("  its trace", lambda: step_trace(config, gate, 256, 32, 32)),
        ("  its placement", lambda: place(trace.events, 200_000, 32)),
    ):
        fn()  # compile and warm
        print(f"{name:<34} {median_time(fn, args.repeats) * 1e3:9.2f} ms (median of {args.repeats})")
    budget = 8 * 2**20
    scanned = mcu if args.allocator == "esp-idf" else host
    scan = lambda: scan_seq_len(scanned, config, gate, 32, 1024, heap_budget=budget, allocator=allocator)  # noqa: E731
    result = scan()  # also warms
    repeats = max(1, args.repeats // 2)
    print(f"plan scan on {scanned.name}, seq_len 1..1024, 4 partitions, {budget:,} B: largest {result.largest}, "
          f"{median_time(scan, repeats):.2f} s (median of {repeats})")


if __name__ == "__main__":
    main()
