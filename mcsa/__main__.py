"""The ``mcsa`` command (and ``python -m mcsa``): the signal handlers go in before
any import, so that a Ctrl-C or SIGTERM while NumPy and Numba load ends the run
like one at any other moment (exit 130, no traceback)."""


def main() -> None:
    from mcsa.app import interrupt

    interrupt.install()
    from mcsa.cli import main as cli

    cli()


if __name__ == "__main__":
    main()
