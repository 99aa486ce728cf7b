"""A seeded campaign of ``mcsa replay`` runs over crafted traces, outputs and faults, each bounded by a timeout.

    python tools/fuzz_replay.py [--runs 300] [--seed 19] [--fleet-share 0.15] [--full DIR]

Each run draws a trace (mutated JSON Lines, CSV or binary, gzipped or not, empty,
misnamed, a wide CSV header, an endless line, a Parquet file, a FIFO, a folder),
an output (a file of any extension, a folder, an input itself through a symlink or
a hard link, a symlink loop, a dangling link, a summary inside the Parquet folder,
/dev/full, ``--full``: a small filesystem that fills up) and, for a share of them,
a fault (a --workers 2 run sent SIGTERM or SIGINT at a random moment, one of its
workers killed, a --scheduler where something that is not Dask listens). Every run
must end with exit 0, 1, 2 or 130 within its timeout, without a traceback or an
"internal error", leave its inputs unchanged and no temporary file, and, unless it
succeeded, no output. Prints each failure and the totals.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import random
import shutil
import signal
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "examples"
ARGS = ["--target", "stm32f411", "--seq-len", "128", "--dim", "32"]
HOSTILE = [b"NaN", b"1e400", b"-1", b"\xff\xfe", b"\x00", b",", b"{", b"}", b"[" * 200, b'"', b"\r\n", b"true",
           b"18446744073709551616", b'"seq_len":4294967296,', b"\t", b"\x1f\x8b"]
TIMEOUT = 120


def mutate(rng: random.Random, data: bytes) -> bytes:
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(data) + 1)
        token = rng.choice(HOSTILE) if rng.random() < 0.7 else bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
        kind = rng.choice(["insert", "replace", "delete"])
        data = (data[:at] + token + data[at:] if kind == "insert" else
                data[:at] + token + data[at + len(token):] if kind == "replace" else data[:at] + data[at + rng.randint(1, 9):])
    return data


def make_trace(rng: random.Random, work: Path) -> tuple[list, dict]:
    """Trace arguments and extra CLI options."""
    kind = rng.choice(["jsonl", "csv", "bin", "jsonl", "bin", "gz", "empty", "misnamed", "wide", "long", "parquet",
                       "fifo", "folder", "big"])
    base = {"jsonl": "trace.jsonl", "csv": "trace.csv", "bin": "trace.bin"}
    if kind in base:
        data = (EXAMPLES / base[kind]).read_bytes()
        if rng.random() < 0.6:
            data = mutate(rng, data)
        path = work / f"t.{kind}"
        path.write_bytes(data)
        return [str(path)], {}
    if kind == "big":
        path = work / "big.bin"
        path.write_bytes((EXAMPLES / "trace.bin").read_bytes() * rng.choice([50, 500]))
        return [str(path)], {}
    if kind == "gz":
        src = rng.choice(["trace.jsonl", "trace.csv", "trace.bin"])
        data = gzip.compress((EXAMPLES / src).read_bytes())
        if rng.random() < 0.5:
            data = data[: rng.randrange(len(data))]
        path = work / (src + rng.choice([".gz", ""]))
        path.write_bytes(data)
        return [str(path)], {}
    if kind == "empty":
        path = work / rng.choice(["e.jsonl", "e.csv", "e.bin", "e"])
        path.write_bytes(b"")
        return [str(path)], {}
    if kind == "misnamed":
        src = rng.choice(["trace.jsonl", "trace.csv", "trace.bin"])
        path = work / rng.choice(["m.jsonl", "m.csv", "m.bin", "m.txt"])
        path.write_bytes((EXAMPLES / src).read_bytes())
        extra = {"--input-format": rng.choice(["jsonl", "csv", "bin"])} if rng.random() < 0.3 else {}
        return [str(path)], extra
    if kind == "wide":
        path = work / "w.csv"
        extra_columns = rng.choice([10, 1000, 50000])
        header = "lambda,lambda_prev,boundary_edges,boundary_concentration_q15,partition_count,flags"
        path.write_text(header + "".join(f",c{i}" for i in range(extra_columns)) + "\n"
                        + ("1,1,0,0,2,0" + ",5" * extra_columns + "\n") * 3)
        return [str(path)], {}
    if kind == "long":
        path = work / "l.jsonl"
        path.write_bytes(b"{" + b" " * (2 << 20) + b"}\n")
        return [str(path)], {}
    if kind == "parquet":
        path = work / "p.parquet"
        subprocess.run([sys.executable, "-m", "mcsa", "replay", str(EXAMPLES / "trace.bin"), *ARGS, "-o", str(path)],
                       capture_output=True, timeout=TIMEOUT)
        return [str(path)], {}
    if kind == "fifo":
        path = work / rng.choice(["f.jsonl", "fifo"])
        os.mkfifo(path)
        data = (EXAMPLES / rng.choice(["trace.jsonl", "trace.csv", "trace.bin", "trace.jsonl.gz"])).read_bytes()

        def feed():
            try:
                with open(path, "wb") as f:
                    f.write(data)
            except OSError:
                pass

        threading.Thread(target=feed, daemon=True).start()
        return [str(path)], {}
    folder = work / "folder"
    folder.mkdir()
    return [str(folder)], {}


def make_output(rng: random.Random, work: Path, traces: list, full: str | None) -> tuple[list, list]:
    """Output options, and the paths that must not exist unless the run succeeded."""
    kind = rng.choice(["file", "file", "folder", "input", "symlink", "hardlink", "loop", "dangling", "nested",
                       "devfull", "devnull", "summary-input", "full", "plot"])
    ext = rng.choice([".jsonl", ".csv", ".parquet", ".txt", "", ".json"])
    out = work / "out"
    out.mkdir()
    if kind == "file":
        return ["-o", str(out / f"o{ext}")], [out / f"o{ext}"]
    if kind == "folder":
        return ["-o", f"{out / 'ds'}/", "--summary", str(out / "s.jsonl")], [out / "ds", out / "s.jsonl"]
    if kind == "input":
        return ["-o", traces[0]], []
    if kind == "symlink":
        (out / "link").symlink_to(os.path.abspath(traces[0]))
        return ["-o", str(out / "link")], []
    if kind == "hardlink":
        try:
            os.link(traces[0], out / "hard")
        except OSError:
            return ["-o", str(out / "o.jsonl")], [out / "o.jsonl"]
        return ["-o", str(out / "hard")], []
    if kind == "loop":
        (out / "loop").symlink_to(out / "loop")
        return ["-o", str(out / "loop")], []
    if kind == "dangling":
        (out / "d").symlink_to(out / rng.choice(["made.jsonl", "nowhere/made.jsonl"]))
        return ["-o", str(out / "d")], [out / "made.jsonl"]
    if kind == "nested":
        (out / "ds").mkdir()
        return ["-o", str(out / "ds"), "--summary", str(out / "ds" / "t.bin.parquet")], [out / "ds" / "t.bin.parquet"]
    if kind == "devfull":
        return [rng.choice(["-o", "--summary", "--plot"]), "/dev/full"], []
    if kind == "devnull":
        return ["-o", "/dev/null"], []
    if kind == "summary-input":
        return ["-o", str(out / "o.jsonl"), "--summary", traces[0]], [out / "o.jsonl"]
    if kind == "plot":
        return ["-o", str(out / "o.jsonl"), "--plot", str(out / "p.png")], [out / "o.jsonl", out / "p.png"]
    if full:
        target = Path(full) / f"f{rng.randrange(10**6)}"
        return ["-o", f"{target}{rng.choice(['.jsonl', '/'])}"], [target]
    return ["-o", str(out / "o.jsonl")], [out / "o.jsonl"]


class _Listener(socketserver.BaseRequestHandler):
    def handle(self):
        if self.server.answer:
            self.request.sendall(b"HTTP/1.0 200 OK\r\n\r\nhello")
        else:
            time.sleep(20)


def workers_of(pid: int) -> list:
    try:
        return [c for c in psutil.Process(pid).children(recursive=True) if "spawn_main" in " ".join(c.cmdline())]
    except psutil.Error:
        return []


def digest(paths: list) -> dict:
    return {p: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths if os.path.isfile(p)}


def one_run(rng: random.Random, number: int, root: Path, fleet_share: float, listeners: list, full: str | None) -> tuple:
    work = Path(tempfile.mkdtemp(prefix=f"run{number}-", dir=root))
    scratch = work / "tmp"
    scratch.mkdir()
    traces, extra = make_trace(rng, work)
    outputs, created = make_output(rng, work, traces, full)
    options = [*traces, *ARGS, *outputs]
    for key, value in extra.items():
        options += [key, value]
    if rng.random() < 0.3:
        options.append("--skip-bad")
    fault = None
    if rng.random() < fleet_share:
        fault = rng.choice(["sigterm", "sigint", "kill-worker", "scheduler"])
        if fault == "scheduler":
            options += ["--scheduler", rng.choice(listeners), "--connect-timeout", "2"]
        else:
            options += ["--workers", "2"]
    before = digest(traces)
    proc = subprocess.Popen([sys.executable, "-m", "mcsa", "replay", *options], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "TMPDIR": str(scratch)})
    if fault in ("sigterm", "sigint", "kill-worker"):
        deadline = time.monotonic() + rng.uniform(0.2, 8)
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        if proc.poll() is None:
            if fault == "sigterm":
                os.kill(proc.pid, signal.SIGTERM)
            elif fault == "sigint":
                os.killpg(proc.pid, signal.SIGINT)
            else:
                for worker in workers_of(proc.pid)[:1]:
                    worker.kill()
    try:
        _, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return number, fault, "HANG", options, ""
    problems = []
    if proc.returncode not in (0, 1, 2, 130):
        problems.append(f"exit {proc.returncode}")
    if "Traceback" in err or "internal error" in err or "Exception ignored" in err:
        problems.append("traceback or internal error")
    if fault in ("sigterm", "sigint") and proc.returncode not in (0, 2, 130):  # (2: refused before the signal)
        problems.append(f"signal gave exit {proc.returncode}")
    if digest(traces) != before:
        problems.append("an input changed")
    leftovers = [str(p) for p in work.rglob("*") if ".tmp" in p.name or ".partial-" in p.name]
    leftovers += [str(p) for p in scratch.iterdir()]
    if full:
        leftovers += [str(p) for p in Path(full).iterdir() if ".tmp" in p.name or ".partial-" in p.name]
    if leftovers:
        problems.append(f"left {leftovers[:3]}")
    if proc.returncode not in (0, 1):  # (a Parquet folder's summary says which trace failed, exit 2)
        present = [str(p) for p in created if p.exists() and not (p.name == "s.jsonl" and proc.returncode == 2)]
        if present:
            problems.append(f"output of a failed run: {present}")
    shutil.rmtree(work, ignore_errors=True)
    return number, fault, problems, options, err.strip().splitlines()[-1:] if err.strip() else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--fleet-share", type=float, default=0.15, help="share of runs with a Dask fault")
    parser.add_argument("--full", help="a small filesystem (e.g. a 1 MiB tmpfs) to fill up")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    np.random.seed(args.seed)
    servers, listeners = [], []
    for answer in (True, False):
        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Listener)
        server.daemon_threads, server.answer = True, answer
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        listeners.append(f"tcp://127.0.0.1:{server.server_address[1]}")
    codes, faults, failures = {}, {}, 0
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as name:
        for number in range(args.runs):
            number, fault, problems, options, said = one_run(rng, number, Path(name), args.fleet_share, listeners,
                                                            args.full)
            faults[fault] = faults.get(fault, 0) + 1
            if problems:
                failures += 1
                print(f"run {number} ({fault}): {problems}: mcsa replay {' '.join(options)}\n    {said}", flush=True)
            else:
                codes[said[-1][:60] if said else ""] = codes.get(said[-1][:60] if said else "", 0) + 1
    for server in servers:
        server.shutdown()
    print(f"{args.runs} runs in {time.monotonic() - started:.0f} s, faults {faults}, {failures} failed")


if __name__ == "__main__":
    main()
