"""Many traces, in one process or on a Dask cluster, with identical results.

A trace too large for one task is cut into byte ranges on record boundaries
(:func:`mcsa.app.traces.byte_ranges`); each piece is replayed where it lands and
its parts come back in order, so the records, indices and summaries are those
of a serial replay whatever the number of workers.
"""

from __future__ import annotations

import logging
import warnings
from collections import deque
from contextlib import AbstractContextManager
from typing import Iterator

from .replay import Part, Replayer
from .traces import TraceError, byte_ranges, trace_format

CHUNK_BYTES = 16 << 20
"""Bytes of a trace per task on a cluster."""
EXTRA = "pip install 'mcsa[fleet]'"


_IGNORE_CTRL_C = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
"""Run in each worker once it is up. Ctrl-C reaches the whole process group; only
mcsa should stop on it (closing the cluster, exit 130), without the workers'
tracebacks. (A Ctrl-C in the second the workers take to start still reaches them.)"""


class FleetUnavailable(ValueError):
    """``--workers``/``--scheduler`` without dask.distributed installed."""


def _piece(replayer: Replayer, path: str, fmt: str | None, skip_bad: bool, start: int, end: int | None,
           first_line: int) -> tuple[list, str | None, set]:
    """Run on a worker: the parts of one byte range, the error that stopped it, the unknown keys."""
    parts, unknown = [], set()
    try:
        for part in replayer.replay(path, fmt, skip_bad, start, end, first_line, unknown):
            parts.append(part)
    except TraceError as err:
        return parts, str(err), unknown
    except OSError as err:
        return parts, f"{path}: {err.strerror or err}", unknown
    return parts, None, unknown


class Fleet(AbstractContextManager):
    """Replays traces serially (``workers`` and ``scheduler`` None), on a local
    cluster of ``workers`` processes, or on the cluster at ``scheduler``.

    Raises
    ------
    FleetUnavailable
        If a cluster is asked for and dask.distributed is not installed.
    ValueError
        ``--scheduler ADDRESS: ...`` if the address is malformed or cannot be reached.
    """

    def __init__(self, replayer: Replayer, workers: int | None = None, scheduler: str | None = None,
                 chunk_bytes: int = CHUNK_BYTES):
        self.replayer, self.chunk_bytes = replayer, chunk_bytes
        self.client = self.cluster = None
        if workers is None and scheduler is None:
            return
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            option = "--scheduler" if scheduler else "--workers"
            raise FleetUnavailable(f"{option} needs dask.distributed: {EXTRA}") from None
        if scheduler is not None:
            try:
                self.client = Client(scheduler)
            except (ValueError, TypeError, OSError) as err:  # a malformed or unreachable address
                raise ValueError(f"--scheduler {scheduler}: {err}") from None
        else:
            with warnings.catch_warnings():  # its health endpoint takes another port when 8787 is taken
                warnings.filterwarnings("ignore", "Port .* is already in use", UserWarning)
                self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                            dashboard_address=None, silence_logs=logging.ERROR,
                                            preload=[_IGNORE_CTRL_C])
            self.client = Client(self.cluster)
        self.window = 2 * max(len(self.client.scheduler_info().get("workers", {})), 1)
        """Pieces in flight: what bounds memory on the workers and here."""

    def __exit__(self, *exc):
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def run(self, paths, fmt: str | None = None, skip_bad: bool = False) -> Iterator[tuple[str, Iterator[Part], set]]:
        """``(path, parts, unknown keys)`` per trace, in order. Iterating ``parts``
        raises the trace's TraceError after its good parts; ``unknown`` is filled
        as the parts are read."""
        if self.client is None:
            for path in paths:
                unknown: set = set()
                yield path, self.replayer.replay(path, fmt, skip_bad, unknown=unknown), unknown
            return
        tasks = iter([(i, path, piece) for i, path in enumerate(paths) for piece in self._pieces(path, fmt)])
        pending: deque = deque()  # (trace number, future or None for stdin), in order, at most a window ahead

        def fill():
            while len(pending) < self.window:
                task = next(tasks, None)
                if task is None:
                    return
                i, path, piece = task
                pending.append((i, None if path == "-" else self.client.submit(
                    _piece, self.replayer, path, fmt, skip_bad, *piece, pure=False)))

        fill()
        for i, path in enumerate(paths):
            unknown = set()
            yield path, self._gather(i, path, pending, fill, fmt, skip_bad, unknown), unknown
            while pending and pending[0][0] == i:  # a failed trace's remaining pieces
                _, future = pending.popleft()
                if future is not None:
                    future.cancel()
                fill()

    def _pieces(self, path: str, fmt: str | None) -> list:
        if path == "-":
            return [(0, None, 1)]
        return byte_ranges(path, fmt or trace_format(path), self.chunk_bytes)

    def _gather(self, i, path, pending, fill, fmt, skip_bad, unknown) -> Iterator[Part]:
        while pending and pending[0][0] == i:
            _, future = pending.popleft()
            fill()
            parts, error, keys = _piece(self.replayer, path, fmt, skip_bad, 0, None, 1) if future is None \
                else future.result()
            unknown.update(keys)
            yield from parts
            if error is not None:
                raise TraceError(error)
