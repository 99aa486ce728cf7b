"""The ``mcsa`` command (and ``python -m mcsa``): the signal handlers go in before
any import, so that a Ctrl-C or SIGTERM while NumPy and Numba load ends the run
like one at any other moment (exit 130, no traceback); once the command has its
exit code, a late signal is ignored (Python would otherwise put the default
handlers back as it shuts down, and die by the signal instead).

Only the interpreter's own start-up comes before: about 10 ms, twice that for an
editable install, whose import hook loads more modules first."""

import os
import signal

_early: list[int] = []


def _record(signum, frame) -> None:
    """A signal while :mod:`mcsa.app.interrupt` loads: recorded for its handler; a
    second one ends the process at once (nothing has been written yet)."""
    if _early:
        os._exit(130)
    _early.append(signum)


def main() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _record)
    from mcsa.app import interrupt

    interrupt.install(_early[0] if _early else None)
    try:
        from mcsa.cli import main as cli

        cli()
    finally:
        for signum in interrupt.SIGNALS:
            signal.signal(signum, signal.SIG_IGN)


if __name__ == "__main__":
    main()
