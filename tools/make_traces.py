"""Write example gate-packet traces from a simulated min-cut coherence controller.

    python tools/make_traces.py [--packets 400] [--seed 7] [--out examples]

The controller: lambda is a random walk around 120 (clipped to 0..400) with
occasional sharp drops (an incoherent burst) and slow recovery; the graph is
re-partitioned now and then (2 to 8 partitions, sometimes 1); the boundary
concentration is noise around 0.25 (Q15); FORCE_SAFE is set while lambda is
below 30. Writes trace.jsonl, trace.csv, trace.bin and trace.jsonl.gz with the
same packets (timestamps ``t`` in the text formats).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
from pathlib import Path

import numpy as np

from mcsa.core.packets import FIELDS, PACKET_DTYPE


def controller(packets: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    lam, prev, parts = 120.0, 120, 4
    out = []
    for i in range(packets):
        if rng.random() < 0.02:
            lam *= 0.25  # an incoherent burst
        lam = float(np.clip(lam + rng.normal(2.0 if lam < 120 else 0.0, 6.0), 0, 400))
        if rng.random() < 0.05:
            parts = int(rng.choice([1, 2, 3, 4, 6, 8]))
        conc = int(np.clip(rng.normal(8192, 3000), 0, 32767))
        current = int(round(lam))
        out.append({"lambda": current, "lambda_prev": prev, "boundary_edges": int(rng.integers(0, 40)),
                    "boundary_concentration_q15": conc, "partition_count": parts,
                    "flags": 1 if current < 30 else 0, "t": round(i * 0.01, 2)})
        prev = current
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=400)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default="examples")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    records = controller(args.packets, args.seed)
    lines = "".join(json.dumps(r) + "\n" for r in records)
    (out / "trace.jsonl").write_text(lines)
    with gzip.GzipFile(out / "trace.jsonl.gz", "wb", mtime=0) as f:
        f.write(lines.encode())
    with open(out / "trace.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*FIELDS, "t"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
    packed = np.array([tuple(r[k] for k in FIELDS) for r in records], PACKET_DTYPE)
    (out / "trace.bin").write_bytes(packed.tobytes())
    print(f"wrote {len(records)} packets to {out}/trace.{{jsonl,jsonl.gz,csv,bin}}")


if __name__ == "__main__":
    main()
