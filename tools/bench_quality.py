"""Mask quality on SmolLM2-135M: every stored text, T in {128, 512}, P in {2, 3, 4, 8, 16}, every mask,
all 30 layers x 9 heads, and the exact int8 kernel on the reference mask.

    python tools/bench_quality.py [--texts declaration,python] [--lengths 128,512]
        [--acts-dir DIR] [--plot docs/quality.png] [--json results.json]

Fetches the model (`mcsa quality fetch-model`), runs the NumPy forward pass over
the first 512 token ids of each text in tests/data/quality/texts.json (T=128 is
the first 128 positions of the same activations: attention is causal), then
pools all texts' heads per (T, P, mask). Prints the machine, the load, capture
and analysis times, the recall/error table, recall by layer band and the int8
kernel's error.
"""

from __future__ import annotations

import os

# One BLAS thread: the analysis is many small batched products, which threaded
# OpenBLAS runs up to 30x slower on a loaded 2-core machine. Set before NumPy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))

from bench_core import machine  # noqa: E402

from mcsa.cli.common import pyplot  # noqa: E402
from mcsa.app.quality import metrics, model, report  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BANDS = ((0, 10), (10, 20), (20, 30))


def capture(names, acts_dir: Path | None) -> dict[str, metrics.Activations]:
    texts = {t["name"]: t for t in json.loads((ROOT / "tests/data/quality/texts.json").read_text())["texts"]}
    unknown = [n for n in names if n not in texts]
    if unknown:
        sys.exit(f"unknown text(s) {', '.join(unknown)}; stored: {', '.join(texts)}")
    smol = None
    out = {}
    for name in names:
        cached = acts_dir / f"{name}.npz" if acts_dir else None
        if cached and cached.exists():
            out[name] = metrics.load_activations(cached)
            continue
        smol = smol or model.GGUFModel(model.fetch_model())
        ids = texts[name]["ids"]
        start = time.perf_counter()
        _, acts = smol.forward(ids, capture=True)
        out[name] = metrics.check_activations(acts["q"], acts["k"], acts["v"], tokens=ids)
        print(f"  captured {name}: {len(ids)} tokens in {time.perf_counter() - start:.1f} s", flush=True)
        if cached:
            acts_dir.mkdir(parents=True, exist_ok=True)
            metrics.save_activations(cached, out[name])
    return out


def prefix(acts: metrics.Activations, t: int) -> metrics.Activations:
    return metrics.Activations(acts.q[:, :, :t], acts.k[:, :, :t], acts.v[:, :, :t], acts.layers, acts.scale)


def bands(rec: dict) -> list[float]:
    layers, recall = rec["layers"], rec["recall_by_layer"]
    return [sum(r for l, r in zip(layers, recall) if lo <= l < hi) / max(1, sum(lo <= l < hi for l in layers))
            for lo, hi in BANDS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", default=None, help="Comma-separated text names (default: all).")
    parser.add_argument("--lengths", default="128,512")
    parser.add_argument("--partitions", default="2,3,4,8,16")
    parser.add_argument("--acts-dir", type=Path, help="Keep captured activations here and reuse them.")
    parser.add_argument("--plot", help="PNG of the largest T.")
    parser.add_argument("--json", help="All records, per T.")
    args = parser.parse_args()
    names = args.texts.split(",") if args.texts else [
        t["name"] for t in json.loads((ROOT / "tests/data/quality/texts.json").read_text())["texts"]]
    lengths = [int(x) for x in args.lengths.split(",")]
    partitions = tuple(int(x) for x in args.partitions.split(","))
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f}")
    start = time.perf_counter()
    texts = capture(names, args.acts_dir)
    captured = time.perf_counter()
    print(f"texts: {', '.join(names)}; capture {captured - start:.0f} s", flush=True)
    results = {}
    for t in lengths:
        t0 = time.perf_counter()
        records = metrics.evaluate([prefix(a, t) for a in texts.values()], metrics.Settings(partitions=partitions))
        results[t] = records
        print(f"\nT={t}: {len(names)} texts x 30 layers x 9 heads, analysis {time.perf_counter() - t0:.0f} s")
        print(report.table(records))
        print(f"\nrecall by layer band (layers {', '.join(f'{lo}-{hi - 1}' for lo, hi in BANDS)}), T={t}:")
        for rec in records:
            print(f"  P={rec['partitions']:<3} {rec['mask']:<16} " + "  ".join(f"{b:.3f}" for b in bands(rec)))
    print(f"\ntotal {time.perf_counter() - start:.0f} s (capture {captured - start:.0f} s); "
          f"load average {os.getloadavg()[0]:.1f}")
    if args.plot:
        t = max(lengths)
        with open(args.plot, "wb") as f:
            report.plot(results[t], f, pyplot("--plot"),
                        title=f"SmolLM2-135M, {len(names)} texts, T={t}, all 30 layers x 9 heads")
    if args.json:
        Path(args.json).write_text(json.dumps({str(t): r for t, r in results.items()}, indent=1))


if __name__ == "__main__":
    main()
