"""The ``mcsa`` command (and ``python -m mcsa``): the signal handlers go in before
any import, so that a Ctrl-C or SIGTERM while NumPy and Numba load ends the run
like one at any other moment (exit 130, no traceback); once the command has its
exit code, a late signal is ignored (Python would otherwise put the default
handlers back as it shuts down, and die by the signal instead)."""


def main() -> None:
    import signal

    from mcsa.app import interrupt

    interrupt.install()
    try:
        from mcsa.cli import main as cli

        cli()
    finally:
        for signum in interrupt.SIGNALS:
            signal.signal(signum, signal.SIG_IGN)


if __name__ == "__main__":
    main()
