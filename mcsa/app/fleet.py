"""Many traces, in one process or on a Dask cluster, with identical results.

A trace is cut into pieces: byte ranges on record boundaries of a plain binary or
JSON Lines file (:func:`mcsa.app.traces.byte_ranges`; the workers read them
themselves), or, for what can only be read once and in order (gzip, CSV, stdin, a
pipe, a FIFO, a device), batches that this process reads and sends in pieces of
:data:`STREAM_BATCHES`. At most a window of pieces is in flight, so memory stays
bounded by the window whatever the trace's length (an endless device included).

Two ways out:

- :meth:`Fleet.records`: each piece's records come back here in order, for one
  output stream (JSON Lines, CSV, a table, one Parquet file);
- :meth:`Fleet.dataset`: each piece is replayed and written where it lands, one
  Parquet part file per piece (:class:`mcsa.app.writers.Dataset`); only its count
  and summary come back (a few hundred bytes whatever its size), and the packet
  index each part starts at is sent to the writer once the pieces before it are
  counted. A trace followed by enough others to keep the other workers busy runs
  whole in one task instead (:func:`replay_trace`): its worker writes its pieces in
  turn, as one process does, and only its outcome comes back.

Either way the records, indices, summaries and files are those of a serial run.

Faults: a worker that dies is replaced (a local cluster's nannies restart it) and
its pieces run again (Dask's own rescheduling, ``distributed.scheduler.allowed-failures``
times per piece; ``retries`` for a piece whose task fails). When the cluster cannot
go on (a piece lost with more workers than that, no worker left for
:data:`NO_WORKER_SECONDS`, a cluster that does not start, a scheduler that is not
Dask or does not answer within the connect timeout) a :class:`FleetError` says
what was lost, within seconds. Every wait is in slices that look for a signal
(:mod:`mcsa.app.interrupt`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time
import warnings
from collections import OrderedDict, deque
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from multiprocessing import resource_tracker
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from mcsa.core.packets import PACKET_DTYPE

from . import interrupt
from .record import Summary
from .traces import TraceError, TraceReader, TraceSource, byte_ranges, shift_lines

if TYPE_CHECKING:  # (the simulator: loaded by the work, not by the client's options)
    from .replay import Part, Replayer

CHUNK_BYTES = 16 << 20
"""Bytes of a plain trace per piece written straight into a dataset."""
RECORD_CHUNK_BYTES = 4 << 20
"""Bytes of a plain trace per piece whose records come back (what the window holds here)."""
STREAM_BATCHES = 4
"""Batches (:data:`mcsa.app.traces.BATCH_RECORDS` records each) per piece of a trace read here."""
RECORDS_WINDOW = 2
"""Pieces whose records come back, in flight per worker: one running, one queued (the client holds them)."""
DATASET_WINDOW = 4
"""Pieces of a dataset run in flight per worker (being replayed, counted or written): a piece's write
waits for its count to reach the client, so a worker's queue needs more than one piece not to run dry."""
MAX_WINDOW = 64
"""Pieces in flight at most, whatever the number of workers."""
ALLOWED_FAILURES = 3
"""Workers that may die running one piece before it is given up (Dask's allowed-failures)."""
RETRIES = 1
"""Times a piece whose task raises is run again (Dask's retries)."""
CONNECT_TIMEOUT = 5.0
"""Seconds to reach a scheduler and hear it answer as one (--connect-timeout)."""
NO_WORKER_SECONDS = 15.0
"""Seconds without any worker before the run is given up."""
START_TIMEOUT = 60.0
"""Seconds a local worker may take to start."""
CLOSE_TIMEOUT = 10.0
WORKER_BYTES = 200 << 20
"""Memory one local worker takes with mcsa loaded, at least (measured: 210-250 MiB)."""
SHOWN_SKIPS = 20
"""Messages of skipped records each piece sends back (all are counted)."""
EXTRA = "pip install 'mcsa[fleet]'"
_QUIET_TRACKER = "ignore::UserWarning:multiprocessing.resource_tracker"
"""The warning filter (``-W``) multiprocessing's resource tracker is started with."""


class FleetUnavailable(ValueError):
    """``--workers``/``--scheduler`` without dask.distributed installed."""


class FleetError(ValueError):
    """The cluster cannot go on: one line naming what was lost."""


def _check_room(workers: int) -> None:
    """Refuse a local cluster whose workers alone would not fit in the memory available.

    Raises
    ------
    FleetError
        Saying how much they need and how much there is.
    """
    import psutil

    available = psutil.virtual_memory().available
    if workers * WORKER_BYTES > available:
        raise FleetError(f"--workers {workers}: each local worker takes about {WORKER_BYTES >> 20} MiB, "
                         f"{workers * WORKER_BYTES >> 20:,} MiB in all, and this machine has "
                         f"{available >> 20:,} MiB available: give fewer (one per core is the most that helps)")


@dataclass
class Piece:
    """One unit of work: the byte range ``start..end`` of a plain file, or the
    ``batches`` read here from a trace that is read once (with the ``error`` that
    ended the reading after them, if any)."""

    number: int
    start: int = 0
    end: int | None = None
    batches: list | None = None
    error: str | None = None
    unknown: set = field(default_factory=set)


@dataclass
class PieceResult:
    """What replaying a piece gives: its parts, the error that stopped it, the unknown
    keys met, the lines it read (a JSON Lines range counts them from its start) and
    the bytes of the trace read at its end."""

    parts: list
    error: str | None
    unknown: set
    lines: int
    done: int

    @property
    def n(self) -> int:
        return sum(p.n for p in self.parts)


@dataclass
class PieceInfo:
    """A piece's result as the client sees it in a dataset run: counts, not records."""

    n: int
    summary: Summary
    error: str | None
    unknown: set
    lines: int
    done: int
    bad: int
    skipped: list = field(default_factory=list)


@dataclass
class Outcome:
    """A trace once replayed: its summary, the error that stopped it (None if none),
    the unknown keys met, the messages of the skipped records (the first ones) and
    their count, and, in a dataset run, its staged folder."""

    path: str
    summary: Summary
    error: str | None
    unknown: set
    skipped: list
    folder: object = None


_REPLAYERS: OrderedDict = OrderedDict()
"""The replayers this worker process got, by token: each task brings a copy, the
first one is kept so that what it computed per key (its cache) serves every piece."""
KEPT_REPLAYERS = 4


def _kept(replayer: Replayer) -> Replayer:
    kept = _REPLAYERS.setdefault(replayer.token, replayer)
    _REPLAYERS.move_to_end(replayer.token)
    while len(_REPLAYERS) > KEPT_REPLAYERS:
        _REPLAYERS.popitem(last=False)
    return kept


def replay_piece(replayer: Replayer, source: TraceSource, piece: Piece, skip_bad: bool) -> PieceResult:
    """Run where the piece lands: the parts of one piece of a trace."""
    replayer = _kept(replayer)
    parts, unknown, lines, done = [], set(), 0, 0
    try:
        if piece.batches is None:
            reader = TraceReader(source, skip_bad=skip_bad, start=piece.start, end=piece.end)
            try:
                for batch in reader:
                    part, error = replayer.replay_batch(batch, skip_bad)
                    parts.append(part)
                    done = batch.done
                    if error is not None:
                        raise error
            finally:
                unknown = reader.unknown
                lines = reader.position - 1 if source.fmt != "bin" else 0
        else:
            for batch in piece.batches:
                part, error = replayer.replay_batch(batch, skip_bad)
                parts.append(part)
                done = batch.done
                if error is not None:
                    raise error
    except TraceError as err:
        return PieceResult(parts, str(err), unknown | piece.unknown, lines, done)
    except OSError as err:
        return PieceResult(parts, f"{source.path}: {err.strerror or err}", unknown | piece.unknown, lines, done)
    return PieceResult(parts, piece.error, unknown | piece.unknown, lines, done)


def warm(replayer: Replayer) -> int:
    """Run on each worker as the cluster starts: keep the replayer and load what every
    piece uses (the density kernel, a sparse and a full mask's, pyarrow's Parquet
    writer) before any piece comes, so that the start-up is paid once; the process id."""
    import pyarrow.parquet  # noqa: F401

    replayer = _kept(replayer)
    packets = np.zeros(2, PACKET_DTYPE)
    packets["lambda"], packets["partition_count"] = 200, (4, 1)
    replayer.target_densities(packets)
    for row in packets.tolist():
        replayer.mask_fields(row, 64)
    return os.getpid()


def piece_info(result: PieceResult) -> PieceInfo:
    """Run where the piece's result is: its counts and summary (packet indices from 0)."""
    summary, offset, skipped = Summary(), 0, []
    for part in result.parts:
        summary.add_part(part, offset)
        offset += part.n
        skipped.extend(message for _, message in part.bad[:SHOWN_SKIPS - len(skipped)])
    return PieceInfo(offset, summary, result.error, result.unknown, result.lines, result.done, summary.bad, skipped)


def write_piece(result: PieceResult, offset: int, folder, number: int) -> int:
    """Run where the piece's result is: write its part file; the rows written."""
    return folder.write_part(number, result.parts, offset)


class Unwanted(Exception):
    """A trace run whole that its client let go (cancelled): it stops between pieces."""


def replay_trace(replayer: Replayer, source: TraceSource, folder, skip_bad: bool, chunk_bytes: int) -> Outcome:
    """Run where a whole trace lands: its pieces (of the client's ``chunk_bytes``) replayed
    and written in turn, as one process does (the same part files), stopping between pieces once the client lets it
    go; the staged folder removed if it fails or stops; its outcome."""
    from distributed import get_worker

    worker = get_worker()
    key = worker.get_current_task()
    fleet = Fleet(_kept(replayer))
    fleet.wanted = lambda: getattr(worker.state.tasks.get(key), "state", None) in ("executing", "long-running")
    try:
        return next(fleet._written([source], [folder], skip_bad, chunk_bytes))
    except BaseException:
        folder.abort()
        raise


def _unavailable(option: str) -> FleetUnavailable:
    return FleetUnavailable(f"{option} needs dask.distributed: {EXTRA}")


class Fleet(AbstractContextManager):
    """Replays traces serially (``workers`` and ``scheduler`` None), on a local
    cluster of ``workers`` processes, or on the cluster at ``scheduler``.

    Parameters
    ----------
    replayer : Replayer
    workers : int, optional
    scheduler : str, optional
    connect_timeout : float
        Seconds to reach ``scheduler`` and hear it answer as a Dask scheduler.

    Raises
    ------
    FleetUnavailable
        If a cluster is asked for and dask.distributed is not installed.
    FleetError
        ``--scheduler ADDRESS: ...`` if nothing answers there as a Dask scheduler
        within ``connect_timeout``, or ``--workers N: ...`` if the local cluster does not start.
    ValueError
        If the address is malformed.
    """

    def __init__(self, replayer: Replayer, workers: int | None = None, scheduler: str | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT):
        self.replayer = replayer
        self.client = self.cluster = None
        self.workers = 0
        self.wanted: Callable[[], bool] = lambda: True
        """Whether to go on (a trace run whole in a task: the scheduler still wants it)."""
        self.where = "serial"
        self.had_workers = False
        self._stack = ExitStack()
        if workers is None and scheduler is None:
            return
        option = "--scheduler" if scheduler is not None else "--workers"
        try:
            import dask
            import distributed  # noqa: F401
        except ImportError:
            raise _unavailable(option) from None
        try:
            self._stack.enter_context(_quiet_dask())
            scratch = None
            if scheduler is None:  # Dask's scratch space (workers' and scheduler's), removed at the end
                scratch = self._stack.enter_context(interrupt.temporary(tempfile.mkdtemp(prefix="mcsa-dask-")))
                self._stack.callback(shutil.rmtree, scratch, ignore_errors=True)
            self._stack.enter_context(dask.config.set({
                "temporary-directory": scratch,
                "distributed.scheduler.allowed-failures": ALLOWED_FAILURES,
                "distributed.comm.timeouts.connect": f"{connect_timeout}s",
                "distributed.admin.large-graph-warning-threshold": "256MB",
                "distributed.scheduler.no-workers-timeout": f"{NO_WORKER_SECONDS}s",
                # Dask's housekeeping in a worker shares the GIL with the piece it runs: less of it
                "distributed.worker.profile.enabled": False,  # (it samples the task's stack every 10 ms)
                "distributed.admin.tick.interval": "1s",
                "distributed.admin.system-monitor.interval": "2s",
                "distributed.worker.memory.monitor-interval": "1s",
            }))
            if scheduler is not None:
                self._connect(scheduler, connect_timeout)
            else:
                self._start(workers, scratch)
            for address in self.client.scheduler_info().get("workers", {}):  # every worker ready before the work
                self._result(self.client.submit(warm, replayer, workers=[address], allow_other_workers=True,
                                                pure=False))
        except BaseException:
            self.close()
            raise

    def _connect(self, address: str, timeout: float) -> None:
        from distributed import Client

        self.where = f"the Dask scheduler at {address}"
        identity = _identity(address, timeout)
        try:
            self.client = Client(address, timeout=timeout, set_as_default=False)
        except (OSError, asyncio.TimeoutError) as err:
            raise FleetError(f"--scheduler {address}: {err}") from None
        self.workers = max(len(identity.get("workers", {})), 1)

    def _start(self, workers: int, scratch: str) -> None:
        import dask
        from distributed import Client, LocalCluster

        self.where = f"the local Dask cluster of {workers} worker{'s' * (workers > 1)}"
        _check_room(workers)
        try:
            # SIGINT blocked while the cluster's event loop thread starts: it, and the worker processes it spawns,
            # inherit the mask, so a terminal's Ctrl-C (sent to the whole process group) reaches mcsa alone, which
            # closes them. (multiprocessing's resource tracker, started first from that thread, would unblock it.)
            # When a second signal ends mcsa at once, the tracker frees the cluster's semaphores: quietly (it
            # takes its warning filters from the command line it is started with).
            sys.warnoptions.append(_QUIET_TRACKER)
            try:
                resource_tracker.ensure_running()
            finally:
                sys.warnoptions.remove(_QUIET_TRACKER)
            # Dask starts its workers with MALLOC_TRIM_THRESHOLD_=65536 (memory back to the OS at once):
            # measured, that makes the replay's own work 21% slower per packet, and a piece's memory is
            # bounded anyway, so the workers keep glibc's default.
            with interrupt.signals_blocked(signal.SIGINT), warnings.catch_warnings(), dask.config.set(
                    {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
                warnings.simplefilter("ignore")
                self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                            dashboard_address=None, silence_logs=logging.CRITICAL + 1,
                                            local_directory=scratch, death_timeout=START_TIMEOUT)
                self.client = Client(self.cluster, set_as_default=False)
        except (Exception, asyncio.CancelledError) as err:  # noqa: BLE001 (Dask's own failure, not mcsa's)
            raise FleetError(f"--workers {workers}: the local Dask cluster could not start "
                             f"({_reason(err)})") from None
        interrupt.check()  # one that came while it started
        self.workers = workers

    def close(self) -> None:
        """Close the client and the cluster (its workers stop), and remove their scratch space."""
        client, cluster, self.client, self.cluster = self.client, self.cluster, None, None
        for closing in (client, cluster):
            if closing is not None:
                try:
                    closing.close(timeout=CLOSE_TIMEOUT)
                except (Exception, asyncio.CancelledError):  # noqa: BLE001 (closing what may be gone already)
                    pass
        self._stack.close()

    def __exit__(self, *exc):
        self.close()

    # pieces ---------------------------------------------------------------------------------------

    def _pieces(self, sources: list, skip_bad: bool, chunk_bytes: int, failed: set,
                whole: set = frozenset()) -> Iterator[tuple]:
        """``(trace number, source, piece)`` of every trace in order, piece None for the
        traces in ``whole``; a trace is read here only if it cannot be split, and not
        beyond its failure (``failed``)."""
        for i, source in enumerate(sources):
            if i in whole:
                yield i, source, None
                continue
            for piece in self._trace_pieces(source, skip_bad, chunk_bytes):
                if i in failed:
                    break
                yield i, source, piece

    @staticmethod
    def _trace_pieces(source: TraceSource, skip_bad: bool, chunk_bytes: int) -> Iterator[Piece]:
        if source.splittable:
            for number, (start, end) in enumerate(byte_ranges(source, chunk_bytes)):
                yield Piece(number, start, end)
            return
        reader = TraceReader(source, skip_bad=skip_bad)
        batches, number = [], 0
        try:
            for batch in reader:
                batches.append(batch)
                if len(batches) == STREAM_BATCHES:
                    yield Piece(number, batches=batches, unknown=set(reader.unknown))
                    batches, number = [], number + 1
        except TraceError as err:
            yield Piece(number, batches=batches, error=str(err), unknown=set(reader.unknown))
            return
        if batches or not number:
            yield Piece(number, batches=batches, unknown=set(reader.unknown))

    def _run(self, fn, *args, priority: int = 0):
        """``fn(*args)`` here, or where a worker takes it (a future; the futures among
        ``args`` are their results there), before its tasks of lower ``priority``."""
        if self.client is None:
            return _Done(fn(*(a.value if isinstance(a, _Done) else a for a in args)))
        try:
            return self.client.submit(fn, *args, pure=False, retries=RETRIES, priority=priority)
        except Exception as err:  # noqa: BLE001 (a client that lost its scheduler)
            raise self._lost(err) from None

    def _window(self, per_worker: int) -> int:
        """Pieces in flight: one here, ``per_worker`` per worker of a cluster, at most :data:`MAX_WINDOW`."""
        return 1 if self.client is None else min(per_worker * self.workers, MAX_WINDOW)

    def _whole(self, sources: list) -> set:
        """The traces a worker runs whole on a cluster, writing its pieces in turn as one
        process does (one task, no round trip through the client between pieces): a file
        that can be split while the traces after it hold at least (workers - 1) times its
        bytes, so that the other workers are busy meanwhile; the last ones go in pieces,
        spread over every worker."""
        whole, after = set(), 0
        if self.client is None:
            return whole
        for i in reversed(range(len(sources))):
            size = (sources[i].size or 0) if sources[i].splittable else 0
            if sources[i].splittable and after >= (self.workers - 1) * size:
                whole.add(i)
            after += size
        return whole

    def _result(self, future):
        """A piece's result, waited for in slices (:meth:`_wait`)."""
        self._wait([future])
        if isinstance(future, _Done):
            return future.value
        try:
            return future.result()
        except Exception as err:  # noqa: BLE001 (Dask's failures become one line; mcsa's own propagate)
            raise self._lost(err) from None

    def _wait(self, futures: list) -> None:
        """Until one of ``futures`` is done, waited for in slices: a signal, a cluster that cannot go on, end the wait."""
        interrupt.check()
        if not futures or any(future.done() for future in futures):
            return
        from distributed import wait

        no_worker_since = None
        while not any(future.done() for future in futures):
            try:
                wait(futures, timeout=interrupt.POLL, return_when="FIRST_COMPLETED")
                continue
            except TimeoutError:
                pass
            except Exception:  # noqa: BLE001 (a future cancelled: done, its result says why; a client gone)
                time.sleep(interrupt.POLL / 4)
            interrupt.check()
            no_worker_since = self._watch(no_worker_since)

    def _watch(self, no_worker_since: float | None) -> float | None:
        """Give up on a client that lost its scheduler or a cluster left without workers."""
        if self.client.status not in ("running", "connecting"):
            raise FleetError(f"lost {self.where} (the client is {self.client.status})")
        if self.client.scheduler_info().get("workers"):
            self.had_workers = True
            return None
        now = time.monotonic()
        if no_worker_since is None:
            return now
        if now - no_worker_since > NO_WORKER_SECONDS:
            raise FleetError(f"{self.where} has had no worker for {NO_WORKER_SECONDS:.0f} s: {self._no_worker()}")
        return no_worker_since

    def _no_worker(self) -> str:
        """Why there is no worker: all were lost, or the scheduler never had one."""
        if self.had_workers or self.cluster is not None:
            return "every worker was lost"
        return "it has had none since mcsa connected (start workers with `dask worker ADDRESS`)"

    def _lost(self, err: BaseException) -> BaseException:
        """A piece's failure as the user should read it: Dask's own as a FleetError (never a bug in mcsa)."""
        if isinstance(err, ImportError):
            return FleetError(f"{self.where}: a worker cannot run mcsa ({_reason(err)}); install mcsa[fleet] there")
        module = type(err).__module__ or ""
        dask = module.startswith(("distributed", "tornado", "asyncio", "concurrent")) or isinstance(
            err, asyncio.CancelledError) or _raised_by_dask(err)
        if not dask and (not isinstance(err, OSError) or err.filename is not None):
            return err  # raised by mcsa's own code on the worker: a storage error naming its file, or a bug
        name = type(err).__name__
        if name == "KilledWorker":
            return FleetError(f"{self.where} lost a piece: {ALLOWED_FAILURES + 1} workers died running it "
                              "(distributed.scheduler.allowed-failures), so it was given up")
        if name in ("NoWorkerError", "NoValidWorkerError"):
            return FleetError(f"{self.where} has no worker left to run a piece: {self._no_worker()}")
        return FleetError(f"{self.where} failed: {_reason(err)}")

    def _drain(self, futures) -> None:
        """Let started tasks end (a bounded wait) before what they write is removed."""
        if self.client is None:
            return
        deadline = time.monotonic() + CLOSE_TIMEOUT
        for future in futures:
            while not isinstance(future, _Done) and not future.done() and time.monotonic() < deadline:
                time.sleep(interrupt.POLL / 4)

    # records back here ----------------------------------------------------------------------------

    def records(self, sources: list, skip_bad: bool = False) -> Iterator[tuple[TraceSource, Iterator[Part], set]]:
        """``(source, parts, unknown keys)`` per trace, in order. Iterating ``parts``
        raises the trace's TraceError after its good parts; ``unknown`` is filled as
        the parts are read, and the skipped records' messages carry their true line."""
        if self.client is None:
            for source in sources:
                unknown: set = set()
                yield source, self.replayer.replay(source, skip_bad=skip_bad, unknown=unknown), unknown
            return
        failed: set = set()
        tasks = self._pieces(sources, skip_bad, RECORD_CHUNK_BYTES, failed)
        pending: deque = deque()
        window = self._window(RECORDS_WINDOW)

        def fill():
            while len(pending) < window:
                task = next(tasks, None)
                if task is None:
                    return
                i, source, piece = task
                pending.append((i, self._run(replay_piece, self.replayer, source, piece, skip_bad)))

        try:
            fill()
            for i, source in enumerate(sources):
                unknown = set()
                yield source, self._gather(i, source, pending, fill, unknown), unknown
                failed.add(i)  # (done, or failed: what is left of it is not read)
                while pending and pending[0][0] == i:
                    _cancel(pending.popleft()[1:])
                fill()
        finally:
            for _, *futures in pending:
                _cancel(futures)

    def _gather(self, i: int, source: TraceSource, pending: deque, fill: Callable, unknown: set) -> Iterator[Part]:
        lines = 0
        while pending and pending[0][0] == i:
            result = self._result(pending[0][1])
            pending.popleft()
            fill()
            unknown.update(result.unknown)
            for part in result.parts:
                if lines:
                    part.bad = [(position + lines, shift_lines(message, source.path, lines))
                                for position, message in part.bad]
                yield part
            if result.error is not None:
                raise TraceError(shift_lines(result.error, source.path, lines))
            lines += result.lines

    # records written where they are replayed ------------------------------------------------------

    def dataset(self, sources: list, dataset, skip_bad: bool = False,
                progress: Callable[[str, int], None] = lambda path, done: None) -> Iterator[Outcome]:
        """Replay each trace into its staged folder of ``dataset`` (a
        :class:`mcsa.app.writers.Dataset`), piece by piece, each part file written
        where its piece was replayed; an :class:`Outcome` per trace, in order. A
        trace that fails has its staged folder removed; committing the others is the
        caller's (:meth:`mcsa.app.writers.TraceFolder.commit`). ``progress(path, bytes)``
        hears how far into each trace the pieces written so far reach."""
        folders = [dataset.folder(source.path) for source in sources]
        yield from self._written(sources, folders, skip_bad, CHUNK_BYTES, progress)

    def _written(self, sources: list, folders: list, skip_bad: bool, chunk_bytes: int,
                 progress: Callable[[str, int], None] = lambda path, done: None) -> Iterator[Outcome]:
        """:meth:`dataset` into the staged ``folders`` of ``sources``, in pieces of ``chunk_bytes``."""
        failed: set = set()
        tasks = self._pieces(sources, skip_bad, chunk_bytes, failed, self._whole(sources))
        ahead: deque = deque()  # the next piece, taken early to see where the traces before it end
        outcomes = [Outcome(source.path, Summary(), None, set(), [], folder) for source, folder in zip(sources, folders)]
        lines = [0] * len(sources)
        pending: deque = deque()  # (trace number, piece number, replay future, info future), in order (a
        # trace run whole: piece number and replay future None)
        writes: list = []  # (trace number, write future) in flight
        window = self._window(DATASET_WINDOW)

        def upcoming():
            """The next piece to submit (None: no more), those of a trace that failed dropped."""
            while True:
                if not ahead:
                    ahead.append(next(tasks, None))
                if ahead[0] is None or ahead[0][0] not in failed:
                    return ahead[0]
                ahead.popleft()

        def fill():
            """Submit pieces while the window (pieces being replayed, counted or written) has room."""
            while len(pending) + len(writes) < window and upcoming() is not None:
                if not self.wanted():
                    raise Unwanted
                i, source, piece = ahead.popleft()
                if piece is None:  # a whole trace, written where it is replayed: its outcome comes back
                    pending.append((i, None, None, self._run(replay_trace, self.replayer, source, folders[i], skip_bad,
                                                         chunk_bytes)))
                    continue
                replayed = self._run(replay_piece, self.replayer, source, piece, skip_bad)
                pending.append((i, piece.number, replayed, self._run(piece_info, replayed, priority=1)))

        def count(i, number, replayed, info):
            """The next count of trace ``i``: its piece's write submitted, or the trace failed;
            for a trace run whole, its outcome."""
            if number is None:
                outcome = outcomes[i] = replace(self._result(info), folder=folders[i])
                if outcome.error is None:
                    progress(outcome.path, sources[i].size)
                return
            info, outcome = self._result(info), outcomes[i]
            outcome.unknown.update(info.unknown)
            outcome.skipped.extend(shift_lines(m, outcome.path, lines[i])
                                   for m in info.skipped[:SHOWN_SKIPS - len(outcome.skipped)])
            offset = outcome.summary.packets
            outcome.summary.merge(info.summary, offset)
            if info.error is None:
                writes.append((i, self._run(write_piece, replayed, offset, outcome.folder, number, priority=2)))
                lines[i] += info.lines
                progress(outcome.path, info.done)
                return
            outcome.error = shift_lines(info.error, outcome.path, lines[i])
            failed.add(i)
            for entry in [e for e in pending if e[0] == i]:  # the failed trace's pieces in flight
                pending.remove(entry)
                _cancel(entry[2:])
            self._drain([future for j, future in writes if j == i])
            writes[:] = [(j, future) for j, future in writes if j != i]
            outcome.folder.abort()

        def heads() -> list:
            """The first of each trace's pieces in flight: the one whose count comes next."""
            seen: set = set()
            return [entry for entry in pending if entry[0] not in seen and not seen.add(entry[0])]

        def finished(i: int) -> bool:
            """Trace ``i`` (the first not yet given out) is counted and written."""
            if any(j == i for j, _ in writes) or (pending and pending[0][0] == i):
                return False
            after = upcoming()
            return after is None or after[0] > i

        current = 0
        try:
            fill()
            while current < len(sources):
                for write in [w for w in writes if w[1].done()]:  # let go at once (held, its records stay there)
                    self._result(write[1])  # (its error, if any)
                    writes.remove(write)
                while ready := [entry for entry in heads() if entry[3].done()]:  # each trace's counts in order
                    for entry in ready:
                        if entry in pending:  # (not let go since: its trace failed)
                            pending.remove(entry)
                            count(*entry)
                fill()
                if finished(current):
                    outcome, outcomes[current] = outcomes[current], None
                    current += 1
                    yield outcome
                    continue
                self._wait([entry[3] for entry in heads()] + [future for _, future in writes])
        except BaseException:
            for _, _, *futures in pending:
                _cancel(futures)
            self._drain([future for _, future in writes])
            raise


class _Done:
    """The result of a piece run here, as a finished future."""

    def __init__(self, value):
        self.value = value

    def done(self) -> bool:
        return True

    def cancel(self) -> None:
        pass


HANDSHAKE_LIMIT = 1 << 20
"""Bytes a Dask scheduler's first message may announce (its handshake is under 100 B)."""


def _probe(address: str, host: str, port: int, timeout: float) -> None:
    """Connect to ``host:port`` and read the handshake a Dask server sends at once, its
    sizes bounded before anything is allocated for it (Dask's own read allocates what
    the peer announces: a listener that announces 3 GiB would get them).

    Raises
    ------
    FleetError
        If nothing listens there, nothing answers within ``timeout`` seconds, or the
        answer is not a Dask handshake of at most :data:`HANDSHAKE_LIMIT` bytes.
    """
    from distributed.protocol.utils import unpack_frames

    deadline = time.monotonic() + timeout
    try:
        conn = socket.create_connection((host, port), timeout=timeout)
    except OSError as err:
        raise FleetError(f"--scheduler {address}: nothing listens there ({_reason(err)})") from None

    def read(n: int) -> bytes:
        data = b""
        while len(data) < n:
            conn.settimeout(max(deadline - time.monotonic(), 0.01))
            chunk = conn.recv(n - len(data))
            if not chunk:
                raise ConnectionError("the connection was closed")
            data += chunk
        return data

    not_dask = f"--scheduler {address}: what answers there is not a Dask scheduler"
    try:
        (size,) = struct.unpack("<Q", read(8))
        if size > HANDSHAKE_LIMIT:
            raise FleetError(f"{not_dask} (its first message announces {size:,} bytes)")
        _, buffers = unpack_frames(read(size), partial=True)
        if sum(buffers) > HANDSHAKE_LIMIT:
            raise FleetError(f"{not_dask} (its first message announces {sum(buffers):,} bytes)")
    except socket.timeout:
        raise FleetError(f"--scheduler {address}: no Dask scheduler answered within {timeout:g} s (what listens "
                         "there is not Dask, or is stuck; see --connect-timeout)") from None
    except FleetError:
        raise
    except Exception as err:  # noqa: BLE001 (closed, reset, frames that are not Dask's)
        raise FleetError(f"{not_dask} ({_reason(err)})") from None
    finally:
        conn.close()


def _identity(address: str, timeout: float) -> dict:
    """What the scheduler at ``address`` says it is, within ``timeout`` seconds, or a
    FleetError: first a plain TCP connection (a closed port answers at once), then
    Dask's handshake and an ``identity`` call, under one deadline (Dask's own connect
    bounds the connection, not the handshake: a server that never answers would hang it)."""
    from distributed.comm import connect, parse_address
    from distributed.comm.addressing import parse_host_port

    try:
        scheme, location = parse_address(address)
        host, port = parse_host_port(location) if scheme == "tcp" else (None, None)
    except (ValueError, TypeError) as err:
        raise ValueError(f"--scheduler {address}: not an address a Dask client connects to ({err})") from None
    started = time.monotonic()
    if host is not None:
        interrupt.wait_for(lambda: _probe(address, host, port, timeout))
    timeout = max(timeout - (time.monotonic() - started), 0.1)

    async def ask() -> dict:
        comm = await connect(address, timeout=timeout)
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    try:
        identity = asyncio.run(asyncio.wait_for(ask(), timeout))
    except asyncio.TimeoutError:
        raise FleetError(f"--scheduler {address}: no Dask scheduler answered within {timeout:g} s (what listens "
                         "there is not Dask, or is stuck; see --connect-timeout)") from None
    except (Exception, asyncio.CancelledError) as err:  # noqa: BLE001 (refused, reset, not Dask's protocol)
        raise FleetError(f"--scheduler {address}: what answers there is not a Dask scheduler ({_reason(err)})") from None
    if not isinstance(identity, dict) or identity.get("type") != "Scheduler":
        raise FleetError(f"--scheduler {address}: what answers there is not a Dask scheduler "
                         f"({type(identity).__name__} {str(identity)[:80]})")
    return identity


def _cancel(futures) -> None:
    """Cancel pieces no longer wanted (quietly: the cluster may be gone already)."""
    for future in futures:
        try:
            if future is not None:
                future.cancel()
        except Exception:  # noqa: BLE001, S110
            pass


def _raised_by_dask(err: BaseException) -> bool:
    """Whether the innermost frame of ``err``'s traceback is Dask's or Tornado's own code."""
    tb, last = err.__traceback__, None
    while tb is not None:
        last, tb = tb, tb.tb_next
    if last is None:
        return False
    path = last.tb_frame.f_code.co_filename.replace("\\", "/")
    return any(f"/{package}/" in path for package in ("distributed", "dask", "tornado"))


def _reason(err: BaseException) -> str:
    """One line for an exception of Dask's or the network's."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:300]}" if text else type(err).__name__


@contextmanager
def _quiet_dask():
    """Dask's loggers and warnings off while the fleet runs: mcsa says what went wrong, in one line."""
    prefixes = ("distributed", "tornado", "asyncio", "bokeh")  # each logger by name: Dask's config sets
    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)  # children's levels
               if name.split(".")[0] in prefixes] + [logging.getLogger(name) for name in prefixes]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="distributed")
            warnings.filterwarnings("ignore", category=ResourceWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


__all__ = ["Fleet", "FleetError", "FleetUnavailable", "Outcome", "Piece", "PieceResult"]
