"""Faults injected into a replay, bounded and seeded: the fleet survives a worker that
dies, gives up in seconds with exit 2 when every worker keeps dying, a signal at any
moment ends the run with 130 and nothing left behind, and a scheduler address where
something else listens is refused within seconds.

Every run is bounded by a timeout (a hang fails the test, it does not stall the suite)."""

import contextlib
import os
import random
import re
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import mcsa.app.fleet as fleet
from mcsa.cli import main

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "examples"
ARGS = ["--target", "stm32f411", "--seq-len", "128", "--dim", "32"]
BOUND = 90
"""Seconds any one run may take before it counts as a hang."""


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def worker_processes() -> list:
    """This process's Dask worker processes (multiprocessing spawns them)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            pass
    return found


def kill(processes) -> int:
    killed = 0
    for process in processes:
        try:
            process.kill()
            killed += 1
        except psutil.Error:
            pass
    return killed


@pytest.fixture
def big(tmp_path):
    """A 40,000-packet binary trace cut into ten pieces (the chunk sizes made small)."""
    path = tmp_path / "big.bin"
    path.write_bytes((EXAMPLES / "trace.bin").read_bytes() * 100)
    return path


@pytest.fixture
def small_pieces(monkeypatch):
    monkeypatch.setattr(fleet, "RECORD_CHUNK_BYTES", 64 << 10)
    monkeypatch.setattr(fleet, "CHUNK_BYTES", 64 << 10)


def test_a_worker_killed_mid_run_changes_nothing(tmp_path, big, small_pieces, monkeypatch):
    """One of two workers killed as the first piece comes back, in a run to one stream
    and in a run whose workers write a dataset: the pieces it held run again (Dask's
    rescheduling), and the outputs are those of a serial run, byte for byte."""
    serial = run("replay", big, *ARGS, "-o", tmp_path / "serial.jsonl")
    folder = run("replay", big, *ARGS, "-o", f"{tmp_path / 'serial'}/")
    assert serial.exit_code == 0 and folder.exit_code == 0
    original = fleet.Fleet._result
    killed = []

    def result(self, future):
        if not killed and self.cluster is not None:
            killed.append(kill(worker_processes()[:1]))
        return original(self, future)

    monkeypatch.setattr(fleet.Fleet, "_result", result)
    records = run("replay", big, *ARGS, "-o", tmp_path / "fleet.jsonl", "--workers", 2)
    assert records.exit_code == 0, records.output
    assert killed == [1] and (tmp_path / "fleet.jsonl").read_bytes() == (tmp_path / "serial.jsonl").read_bytes()
    killed.clear()
    written = run("replay", big, *ARGS, "-o", f"{tmp_path / 'fleet'}/", "--workers", 2)
    assert written.exit_code == 0, written.output
    parts = sorted(p.name for p in (tmp_path / "serial" / "big.bin.parquet").iterdir())
    assert killed == [1] and len(parts) == 11 and parts == sorted(p.name for p in (tmp_path / "fleet" / "big.bin.parquet").iterdir())
    for name in parts:
        assert (tmp_path / "fleet" / "big.bin.parquet" / name).read_bytes() == \
            (tmp_path / "serial" / "big.bin.parquet" / name).read_bytes(), name
    assert pq.read_table(tmp_path / "fleet").num_rows == 40_000


def test_every_worker_killed_again_and_again_is_exit_2_in_seconds(tmp_path, big, small_pieces, monkeypatch):
    """Every worker killed every 0.3 s once the run is under way (the nannies restart
    them, and they die again): past Dask's allowed failures, or with no worker left,
    mcsa stops with exit 2 and one line naming what was lost; no partial output."""
    original = fleet.Fleet._result
    stop = threading.Event()
    kills = []

    def killer():
        while not stop.wait(0.3):
            kills.append(kill(worker_processes()))

    def result(self, future):
        if not kills and self.cluster is not None:
            kills.append(0)
            threading.Thread(target=killer, daemon=True).start()
        return original(self, future)

    monkeypatch.setattr(fleet.Fleet, "_result", result)
    out = tmp_path / "out"
    out.mkdir()
    started = time.monotonic()
    try:
        result_ = run("replay", big, *ARGS, "-o", out / "r.jsonl", "--workers", 2)
    finally:
        stop.set()
    took = time.monotonic() - started
    assert result_.exit_code == 2, result_.output
    message = result_.stderr.strip().splitlines()[-1]
    assert ("lost a piece: 4 workers died running it" in message or "no worker" in message), message
    assert "bug in mcsa" not in result_.stderr and "Traceback" not in result_.output
    assert sum(kills) >= 2 and took < BOUND
    assert list(out.iterdir()) == []


def _mcsa(*args, env=None):
    return subprocess.Popen([sys.executable, "-m", "mcsa", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)


def test_a_signal_at_a_random_moment_ends_a_fleet_run_with_130_and_nothing_left(tmp_path):
    """SIGTERM (to mcsa) or SIGINT (to its process group, as a terminal's Ctrl-C) at
    seeded random moments of a --workers 2 run: from the cluster's start to its
    shutdown. Each ends with 130 and no traceback, leaves no output (or, past the
    end, complete ones), no temporary file and no Dask scratch space."""
    trace = tmp_path / "big.jsonl"
    trace.write_bytes((EXAMPLES / "trace.jsonl").read_bytes() * 100)
    rng = random.Random(19)
    for attempt in range(3):
        work = tmp_path / f"run{attempt}"
        out, scratch = work / "out", work / "tmp"
        out.mkdir(parents=True)
        scratch.mkdir()
        folder = attempt % 2 == 1
        target = f"{out / 'ds'}/" if folder else out / "r.jsonl"
        proc = _mcsa("replay", trace, *ARGS, "-o", target, "--summary", out / "s.jsonl", "--workers", 2,
                     env={**os.environ, "TMPDIR": str(scratch)})
        delay = rng.uniform(0.5, 8)
        time.sleep(delay)
        signum = rng.choice([signal.SIGTERM, signal.SIGINT])
        if proc.poll() is None:
            (os.killpg if signum == signal.SIGINT else os.kill)(proc.pid, signum)
        try:
            _, err = proc.communicate(timeout=BOUND)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"a hang after {signum!r} at {delay:.2f} s")
        left = sorted(p.name for p in out.iterdir())
        assert "Traceback" not in err and "Exception" not in err, err
        assert proc.returncode in (0, 130), (delay, proc.returncode, err)
        assert left == [] if proc.returncode == 130 else "s.jsonl" in left, (delay, left)
        assert list(scratch.iterdir()) == [], (delay, list(scratch.iterdir()))


def test_a_second_signal_ends_a_fleet_run_at_once_and_quietly(tmp_path):
    """A second Ctrl-C while the cluster closes ends mcsa at once: 130, no traceback, no
    warning from multiprocessing's resource tracker about the semaphores it then frees,
    no output and no temporary file."""
    trace = tmp_path / "big.bin"
    trace.write_bytes((EXAMPLES / "trace.bin").read_bytes() * 5000)
    out, scratch = tmp_path / "out", tmp_path / "tmp"
    out.mkdir()
    scratch.mkdir()
    proc = _mcsa("replay", trace, *ARGS, "-o", f"{out / 'ds'}/", "--workers", 2,
                 env={**os.environ, "TMPDIR": str(scratch)})
    deadline = time.monotonic() + BOUND
    workers = []
    while len(workers) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
        workers = [c for c in psutil.Process(proc.pid).children(recursive=True)
                   if "spawn_main" in " ".join(c.cmdline())]
    time.sleep(1)
    assert proc.poll() is None, "finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=BOUND)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("a hang after a second SIGINT")
    time.sleep(1)  # (the resource tracker outlives mcsa by a moment)
    assert proc.returncode == 130 and err.strip() == "", err
    assert list(out.iterdir()) == [] and list(scratch.iterdir()) == []


def test_more_workers_than_memory_holds_are_refused_before_any_starts(monkeypatch, tmp_path):
    monkeypatch.setattr(fleet, "WORKER_BYTES", 1 << 50)
    result = run("replay", EXAMPLES / "trace.jsonl", *ARGS, "--workers", 2, "-o", tmp_path / "r.jsonl")
    assert result.exit_code == 2, result.output
    assert re.fullmatch(r"Error: --workers 2: each local worker takes about [0-9]+ MiB, [0-9,]+ MiB in all, and "
                        r"this machine has [0-9,]+ MiB available: give fewer \(one per core is the most that "
                        r"helps\)\n", result.stderr), result.stderr
    assert list(tmp_path.iterdir()) == [] and worker_processes() == []


def test_a_scheduler_that_never_had_a_worker_is_named_as_such(monkeypatch, tmp_path):
    from distributed import LocalCluster

    monkeypatch.setattr(fleet, "NO_WORKER_SECONDS", 2.0)
    with LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster:
        started = time.monotonic()
        result = run("replay", EXAMPLES / "trace.jsonl", *ARGS, "--scheduler", cluster.scheduler_address,
                     "-o", tmp_path / "r.jsonl")
    assert result.exit_code == 2 and time.monotonic() - started < BOUND, result.output
    assert result.stderr == (f"Error: the Dask scheduler at {cluster.scheduler_address} has had no worker for 2 s: it "
                             "has had none since mcsa connected (start workers with `dask worker ADDRESS`)\n")
    assert list(tmp_path.iterdir()) == []


class _Silent(socketserver.BaseRequestHandler):
    def handle(self):
        time.sleep(30)  # accepts, never answers


class _Http(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.recv(1024)
        self.request.sendall(b"HTTP/1.0 400 Bad Request\r\nContent-Length: 0\r\n\r\n")


@pytest.mark.parametrize("handler", [_Silent, _Http])
def test_a_listener_that_is_not_dask_is_refused_within_seconds(handler):
    """An HTTP server, or one that accepts and never answers, where --scheduler points:
    exit 2 naming the address, once --connect-timeout has passed (it hung 590 s)."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        address = f"tcp://127.0.0.1:{server.server_address[1]}"
        proc = _mcsa("replay", EXAMPLES / "trace.jsonl", *ARGS, "-o", os.devnull, "--scheduler", address,
                     "--connect-timeout", 2)
        _, err = proc.communicate(timeout=BOUND)
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 2 and f"--scheduler {address}: " in err and "Dask scheduler" in err, err


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "table"])
@pytest.mark.parametrize("scheduler", ["garbage", "tcp://127.0.0.1:1"])
def test_a_cluster_refused_before_any_record_leaves_stdout_empty(fmt, scheduler):
    """The header record went to stdout before --scheduler was refused: a redirect kept a header-only file."""
    result = run("replay", EXAMPLES / "trace.jsonl", *ARGS, "--format", fmt, "--scheduler", scheduler,
                 "--connect-timeout", 1)
    assert result.exit_code == 2 and result.stdout == "" and f"--scheduler {scheduler}: " in result.stderr


class _Huge(socketserver.BaseRequestHandler):
    def handle(self):
        try:  # a first message of 3 GiB announced, then 64 MiB of it
            self.request.sendall(struct.pack("<Q", 3 << 30) + bytes(1 << 26))
        except OSError:
            pass


def test_a_listener_that_announces_gigabytes_is_refused_before_they_are_allocated():
    """Dask's read allocates what the peer announces: mcsa peaked at 2.2 GiB before refusing."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Huge)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        address = f"tcp://127.0.0.1:{server.server_address[1]}"
        proc = _mcsa("replay", EXAMPLES / "trace.jsonl", *ARGS, "-o", os.devnull, "--scheduler", address)
        peak, watched = 0, psutil.Process(proc.pid)
        while proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                peak = max(peak, watched.memory_info().rss)
            time.sleep(0.01)
        err = proc.stderr.read()
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 2 and "its first message announces 3,221,225,472 bytes" in err, err
    assert peak < 1 << 30


def test_a_closed_port_is_refused_at_once():
    """Nothing listens at tcp://127.0.0.1:1: said at the first refused connection, not after a timeout."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: connections are refused
        result = run("replay", EXAMPLES / "trace.jsonl", *ARGS, "-o", os.devnull, "--scheduler",
                     f"tcp://127.0.0.1:{port}", "--connect-timeout", 600)
    assert result.exit_code == 2 and f"--scheduler tcp://127.0.0.1:{port}: nothing listens there" in result.stderr


def test_dask_logs_no_traceback_of_its_own_while_the_fleet_runs():
    """A scheduler lost mid-run made distributed.client log tracebacks beside mcsa's one-line
    error: Dask's config gives its child loggers their own levels, so each is silenced."""
    import logging

    import distributed  # noqa: F401 (its logging config)

    names = ("distributed.client", "distributed.worker", "distributed.scheduler", "distributed.core")
    before = [logging.getLogger(name).level for name in names]
    with fleet._quiet_dask():
        assert not [name for name in names if logging.getLogger(name).isEnabledFor(logging.CRITICAL)]
    assert [logging.getLogger(name).level for name in names] == before
