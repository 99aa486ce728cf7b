"""Stopping a run on SIGINT or SIGTERM: at any moment, with exit 130 and nothing left behind.

Python runs a signal handler in the main thread between two bytecodes, wherever
that thread happens to be: inside a garbage-collector callback, a finaliser or a
library's callback, an exception raised by the handler is printed as "Exception
ignored" and dropped, and the run goes on. So the handler here raises nothing: it
records the signal, and the run looks at it (:func:`check`) between units of
work. Every wait that could last (a pipe or a terminal with nothing to read, a
cluster's answer) waits in slices of :data:`POLL` seconds and looks in between,
so the record is seen within a slice whichever thread the signal reached.

A second signal while the run is stopping (a cluster that does not close, say)
ends the process at once, with the temporary files registered by
:func:`temporary` removed.

Outputs are put in place together at the end of a run; :func:`commit` opens that
moment: a signal recorded before it stops the run with nothing put in place, one
after it is ignored, so that a run ends either with 130 and no output or with all
of its outputs and its own exit code (a second signal after it still ends the
process at once: a commit to remote storage that hangs).

When the handlers are not installed (the Python API, a worker process), nothing
is recorded and :func:`check` never raises: Python's own KeyboardInterrupt applies.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

EXIT_INTERRUPTED = 130
POLL = 0.2
"""Seconds a blocking wait lasts before it looks for a signal."""
SIGNALS = (signal.SIGINT, signal.SIGTERM)

_received: int | None = None
_installed = False
_committed = False
_late: int | None = None
"""A signal let go because it came after :func:`commit`."""
_temporary: set = set()


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal (its number is ``args[0]``)."""


def _handle(signum, frame) -> None:
    """Record the first signal; on a second one, remove the temporary files and exit.
    Nothing here raises: the work is an assignment, or an exit."""
    global _received, _late
    if _committed and _late is None:  # the outputs are going in place: the run ends as it is
        _late = signum
        return
    if not _committed and _received is None:
        _received = signum
        return
    for path in list(_temporary):
        try:
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)
        except BaseException:  # noqa: BLE001 (the process ends just below)
            pass
    os._exit(EXIT_INTERRUPTED)


def install(pending: int | None = None) -> Callable[[], None]:
    """Send SIGINT and SIGTERM to the record (a run's first act), with ``pending``
    (a signal the caller caught before) as the only one received so far; returns
    the function that puts the previous handlers back. Outside the main thread (a
    host program's thread) nothing changes."""
    global _received, _installed, _committed, _late
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    if _installed:  # (the entry point installed them before the imports: keep what came meanwhile)
        return lambda: None
    _received, _committed, _late = pending, False, None
    previous = {signum: signal.signal(signum, _handle) for signum in SIGNALS}
    _installed = True

    def restore() -> None:
        global _installed
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _installed = False

    return restore


def received() -> int | None:
    """The signal that asked the run to stop, or None."""
    return _received


def check() -> None:
    """Raise :class:`Interrupted` if a signal asked the run to stop.

    Raises
    ------
    Interrupted
    """
    if _received is not None:
        raise Interrupted(_received)


def commit() -> None:
    """Before an output is put in place: stop if a signal came (nothing is in place
    yet), else ignore signals from now on (the outputs go in place together).

    Raises
    ------
    Interrupted
        If a signal asked the run to stop.
    """
    global _committed
    check()
    _committed = _installed


def wait_for(call: Callable[[], object]) -> object:
    """``call()`` (a system call that may wait for ever: opening a FIFO nobody writes
    to) on a daemon thread, waited for in slices: a signal interrupts the wait (the
    thread is left to the process's end).

    Raises
    ------
    Interrupted
        If a signal asked the run to stop meanwhile.
    Exception
        Whatever ``call`` raised.
    """
    outcome: list = []

    def run() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as err:  # noqa: BLE001 (raised below, in the caller's thread)
            outcome.append((False, err))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(POLL)
        check()
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def register(path: str) -> None:
    """Have a local temporary file or folder removed if a second signal ends the process at once."""
    _temporary.add(path)


def forget(path: str) -> None:
    """Undo :func:`register` (the file is in place, or removed)."""
    _temporary.discard(path)


@contextmanager
def temporary(path: str) -> Iterator[str]:
    """:func:`register` ``path`` for the block."""
    register(path)
    try:
        yield path
    finally:
        forget(path)


@contextmanager
def signals_blocked(*signums: int) -> Iterator[None]:
    """Block ``signums`` in this thread for the block: a thread or process started
    meanwhile inherits the mask (the Dask event loop and the workers it spawns never
    see a terminal's Ctrl-C), and a signal that comes meanwhile waits for the end."""
    signums = signums or SIGNALS
    old = signal.pthread_sigmask(signal.SIG_BLOCK, signums)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


__all__ = ["EXIT_INTERRUPTED", "Interrupted", "POLL", "check", "forget", "install", "received", "register",
           "signals_blocked", "temporary", "wait_for"]
