"""Speed of the placement fit verdict and of the planner's seq_len scan, per allocator.

    python tools/bench_fit.py [--repeats 5] [--against PATH]

Prints the machine, then medians of, for every allocator model: one ``fit_step`` of a
256-token step with every block placed (stm32f411: 32-bit, 4 partitions, dim 32, on a
200,000 B heap so that it fits), its trace and its placement; and two ``scan_seq_len``
over seq_len 1..1024 for one partition count (4, dim 32): on an 8 MiB heap, where the
scan reaches 1024 (x86_64, stm32f411 for esp-idf, whose simulator models 32-bit targets
only), and on a 256 KiB heap, where the largest fitting seq_len is inside the range and
the steps near it are placed one by one. Each scan is printed next to its limit, 1 s.

``--against PATH`` runs the same figures on another source tree (a checkout or an
export of another commit) in a subprocess and prints them side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_core import machine, median_time  # noqa: E402

ALLOCATORS = ("none", "linked-list", "tlsf", "newlib", "freertos-heap4", "esp-idf")
SCAN_LIMIT = 1.0
"""Seconds a plan scan over 1..1024 may take (issue 17.5)."""


def measure(repeats: int) -> dict:
    """Every figure, in seconds, by allocator."""
    import mcsa
    from firmware_model.allocators import allocator_named
    from firmware_model.placement import simulator
    from firmware_model.placement.events import step_trace
    from firmware_model.profiles import profile_named
    from firmware_model.step import fit_step, scan_seq_len

    config = mcsa.SparsityConfig()
    mcu, host = profile_named("stm32f411"), profile_named("x86_64")
    gate = mcsa.GatePacket(lambda_=200, partition_count=4)
    trace = step_trace(config, gate, 256, 32, 32)
    out = {"events": int(trace.events.size)}
    for name in ALLOCATORS:
        allocator = allocator_named(name)
        place = simulator(name)
        figures = {}
        cases = [("fit_step", lambda: fit_step(mcu, config, gate, 256, 32, heap_budget=200_000, allocator=allocator)),
                 ("trace", lambda: step_trace(config, gate, 256, 32, 32))]
        if place:
            cases.append(("placement", lambda: place(trace.events, 200_000, 32)))
        for label, fn in cases:
            fn()  # compile and warm
            figures[label] = median_time(fn, repeats)
        for label, budget in (("scan 8 MiB", 8 * 2**20), ("scan 256 KiB", 256 * 2**10)):
            scanned = mcu if name == "esp-idf" else host
            scan = lambda: scan_seq_len(scanned, config, gate, 32, 1024, heap_budget=budget,  # noqa: E731
                                        allocator=allocator)
            result = scan()
            figures[label] = median_time(scan, max(1, repeats // 2))
            figures[label + " largest"] = result.largest
            figures[label + " placed"] = getattr(result, "placed", None)
        out[name] = figures
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--against", help="another source tree to measure the same way, side by side")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # one tree's figures, for --against
    args = parser.parse_args()
    if args.json:
        print(json.dumps(measure(args.repeats)))
        return
    print(f"{machine()}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    trees = {"this tree": measure(args.repeats)}
    if args.against:
        env = {**os.environ, "PYTHONPATH": str(Path(args.against).resolve())}
        run = subprocess.run([sys.executable, __file__, "--json", "--repeats", str(args.repeats)], env=env,
                             capture_output=True, text=True, check=True, cwd=args.against)
        trees = {args.against: json.loads(run.stdout.splitlines()[-1]), **trees}
    names = list(trees)
    print(f"256-token step: {trees[names[-1]]['events']:,} allocator calls; medians of {args.repeats} "
          f"(scans: of {max(1, args.repeats // 2)}); columns: {' | '.join(names)}")
    for name in ALLOCATORS:
        print(name)
        for label in ("fit_step", "trace", "placement"):
            if label in trees[names[-1]][name]:
                cells = [f"{t[name][label] * 1e3:9.2f} ms" for t in trees.values()]
                print(f"  {label:<24}" + " | ".join(cells))
        for label in ("scan 8 MiB", "scan 256 KiB"):
            cells = []
            for t in trees.values():
                placed = t[name].get(label + " placed")
                cells.append(f"{t[name][label]:7.3f} s (largest {t[name][label + ' largest']}"
                             + ("" if placed is None else f", {placed} placed") + ")")
            print(f"  {label + ', 1..1024':<24}" + " | ".join(cells) + f"   limit {SCAN_LIMIT:.0f} s")


if __name__ == "__main__":
    main()
