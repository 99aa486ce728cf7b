"""Mask quality on SmolLM2-135M: every stored text, T in {128, 512}, P in {2, 3, 4, 8, 16}, every mask,
all 30 layers x 9 heads, and the exact int8 kernel on the reference mask.

    python tools/bench_quality.py [--texts declaration,python] [--lengths 128,512] [--partitions 2,3,4,8,16]
        [--acts-dir DIR] [--check FILE] [--blas] [--profile] [--plot docs/quality.png] [--json results.json]

Fetches the model (`mcsa quality fetch-model`), runs the NumPy forward pass over
the first 512 token ids of each text in tests/data/quality/texts.json once and
keeps the activations in --acts-dir (default: the mcsa cache, keyed by the model
and the ids; T=128 is the first 128 positions of the same activations: attention
is causal), then pools all texts' heads per (T, P, mask). Prints the machine,
the load, the capture (or cache read) and analysis times, the recall/error table,
recall by layer band and the int8 kernel's error. The full run (the defaults)
checks every figure against tests/data/quality/bench_figures_main.json, those of
the masked-copy engine this one replaced, to 1e-9; --blas times one text's
analysis with mcsa's one BLAS thread per worker and with the BLAS default;
--profile shows where one text's analysis spends its time.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import hashlib
import json
import os
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_core import machine  # noqa: E402
from threadpoolctl import threadpool_info  # noqa: E402

from mcsa.cli.common import pyplot  # noqa: E402
from mcsa.app.quality import metrics, model, report  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests/data/quality"
BANDS = ((0, 10), (10, 20), (20, 30))
TOLERANCE = 1e-9


def capture(texts: dict, names, acts_dir: Path) -> dict[str, metrics.Activations]:
    smol = None
    out = {}
    for name in names:
        ids = texts[name]["ids"]
        key = hashlib.sha256(f"{model.MODEL_SHA256} {ids}".encode()).hexdigest()[:16]
        cached = acts_dir / f"{name}-{key}.npz"
        if cached.exists():
            out[name] = metrics.load_activations(cached)
            continue
        smol = smol or model.GGUFModel(model.fetch_model())
        start = time.perf_counter()
        _, acts = smol.forward(ids, capture=True)
        out[name] = metrics.check_activations(acts["q"], acts["k"], acts["v"], tokens=ids)
        print(f"  captured {name}: {len(ids)} tokens in {time.perf_counter() - start:.1f} s", flush=True)
        acts_dir.mkdir(parents=True, exist_ok=True)
        metrics.save_activations(cached, out[name])
    return out


def prefix(acts: metrics.Activations, t: int) -> metrics.Activations:
    return metrics.Activations(acts.q[:, :, :t], acts.k[:, :, :t], acts.v[:, :, :t], acts.layers, acts.scale)


def bands(rec: dict) -> list[float]:
    layers, recall = rec["layers"], rec["recall_by_layer"]
    return [sum(r for l, r in zip(layers, recall) if lo <= l < hi) / max(1, sum(lo <= l < hi for l in layers))
            for lo, hi in BANDS]


def deviation(got: dict, want: dict) -> tuple[float, str]:
    """The largest |difference| between two runs' figures (per T, per record), and where."""
    worst, where = 0.0, "none"
    for t, records in want.items():
        if [(r["partitions"], r["mask"]) for r in got[t]] != [(r["partitions"], r["mask"]) for r in records]:
            return float("inf"), f"T={t}: other records"
        for g, w in zip(got[t], records):
            if g.keys() != w.keys():
                return float("inf"), f"T={t} P={w['partitions']} {w['mask']}: other fields"
            for name, value in w.items():
                if isinstance(value, str):
                    continue
                pairs = zip(g[name], value) if isinstance(value, list) else [(g[name], value)]
                for a, b in pairs:
                    if abs(a - b) > worst:
                        worst, where = abs(a - b), f"T={t} P={w['partitions']} {w['mask']} {name}"
    return worst, where


def timed(texts, settings) -> tuple[list[dict], float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    records = metrics.evaluate(texts, settings)
    return records, time.perf_counter() - wall, time.process_time() - cpu


def blas_threads(text: metrics.Activations, partitions) -> None:
    """One text at T=512, with mcsa's choice (one BLAS thread in each of its workers) and with the BLAS default."""
    default = max((p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"), default=1)
    settings = metrics.Settings(partitions=partitions)
    _, ours, _ = timed(text, settings)
    chosen = metrics.threadpool_limits
    metrics.threadpool_limits = lambda *args, **kwargs: contextlib.nullcontext()
    try:
        _, theirs, _ = timed(text, settings)
    finally:
        metrics.threadpool_limits = chosen
    print(f"\nBLAS threads, one text at T={text.q.shape[2]}: one per worker ({metrics.WORKERS} workers, mcsa's "
          f"choice) {ours:.1f} s; the BLAS default ({default} threads) {theirs:.1f} s: {theirs / ours:.1f}x")


def profile(text: metrics.Activations, partitions) -> None:
    """cProfile of one text's layers on one worker (the profiler sees the worker's thread)."""
    profiler, layer, workers = cProfile.Profile(), metrics._layer, metrics.WORKERS

    def profiled(*args):
        profiler.enable()
        try:
            return layer(*args)
        finally:
            profiler.disable()

    metrics._layer, metrics.WORKERS = profiled, 1
    try:
        timed(text, metrics.Settings(partitions=partitions))
    finally:
        metrics._layer, metrics.WORKERS = layer, workers
    print(f"\nwhere one text's time goes at T={text.q.shape[2]} (one worker, {text.q.shape[0]} layers):")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--texts", default=None, help="Comma-separated text names (default: all).")
    parser.add_argument("--lengths", default="128,512")
    parser.add_argument("--partitions", default="2,3,4,8,16")
    parser.add_argument("--acts-dir", type=Path, default=model.cache_dir() / "activations",
                        help="Keep captured activations here and reuse them (default: %(default)s).")
    parser.add_argument("--check", type=Path, help="Figures to compare with (default for the full run: "
                        "tests/data/quality/bench_figures_main.json).")
    parser.add_argument("--blas", action="store_true", help="Also time one text with the BLAS default threads.")
    parser.add_argument("--profile", action="store_true", help="Also profile one text on one worker: where time goes.")
    parser.add_argument("--plot", help="PNG of the largest T.")
    parser.add_argument("--json", help="All records, per T.")
    args = parser.parse_args()
    texts = {t["name"]: t for t in json.loads((DATA / "texts.json").read_text())["texts"]}
    names = args.texts.split(",") if args.texts else list(texts)
    unknown = [n for n in names if n not in texts]
    if unknown:
        sys.exit(f"unknown text(s) {', '.join(unknown)}; stored: {', '.join(texts)}")
    lengths = [int(x) for x in args.lengths.split(",")]
    partitions = tuple(int(x) for x in args.partitions.split(","))
    full = (names, lengths, partitions) == (list(texts), [128, 512], (2, 3, 4, 8, 16))
    check = args.check or (DATA / "bench_figures_main.json" if full else None)
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f}")
    start = time.perf_counter()
    acts = capture(texts, names, args.acts_dir)
    captured = time.perf_counter()
    print(f"texts: {', '.join(names)}; capture or cache read {captured - start:.1f} s ({args.acts_dir})", flush=True)
    results = {}
    for t in lengths:
        records, wall, cpu = timed([prefix(a, t) for a in acts.values()], metrics.Settings(partitions=partitions))
        results[str(t)] = records
        print(f"\nT={t}: {len(names)} texts x 30 layers x 9 heads, analysis {wall:.1f} s "
              f"(cpu {cpu:.1f} s over {metrics.WORKERS} workers)")
        print(report.table(records))
        print(f"\nrecall by layer band (layers {', '.join(f'{lo}-{hi - 1}' for lo, hi in BANDS)}), T={t}:")
        for rec in records:
            print(f"  P={rec['partitions']:<3} {rec['mask']:<16} " + "  ".join(f"{b:.3f}" for b in bands(rec)))
    total = time.perf_counter() - start
    print(f"\ntotal {total:.1f} s (capture or cache read {captured - start:.1f} s, analysis {total - captured + start:.1f}"
          f" s); load average {os.getloadavg()[0]:.1f}")
    failed = False
    if check:
        worst, where = deviation(results, json.loads(check.read_text())["results"])
        failed = not worst <= TOLERANCE
        print(f"figures against {check.relative_to(ROOT) if check.is_relative_to(ROOT) else check}: largest "
              f"difference {worst:.2g} ({where}); limit {TOLERANCE:g}: {'FAILED' if failed else 'ok'}")
    if args.blas:
        blas_threads(prefix(next(iter(acts.values())), max(lengths)), partitions)
    if args.profile:
        profile(prefix(next(iter(acts.values())), max(lengths)), partitions)
    if args.plot:
        t = max(lengths)
        with open(args.plot, "wb") as f:
            report.plot(results[str(t)], f, pyplot("--plot"),
                        title=f"SmolLM2-135M-Instruct, {len(names)} texts pooled, T={t}, all 30 layers x 9 heads")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
