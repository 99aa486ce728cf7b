"""The ``mcsa`` command: replay traces, inspect masks, plan heaps, verify vectors.

Each command's module is imported when that command runs (or shows its help):
``mcsa --help`` and a mistyped command answer without NumPy or Numba.
"""

from __future__ import annotations

import difflib
import importlib
import os
import signal
import sys

import click

from mcsa.app import interrupt
from mcsa.core.errors import TargetPanic

from .common import NamedFile

COMMANDS = {
    "replay": ("mcsa.cli.replay", "Replay recorded gate-packet traces on a target: a record per packet."),
    "mask": ("mcsa.cli.inspect", "Show one mask: its statistics, sizes, op counts and picture."),
    "plan": ("mcsa.cli.plan", "Find the longest seq_len whose step fits the heap, per partition count."),
    "fit": ("mcsa.cli.plan", "Say whether one step fits the target's heap, every block placed."),
    "targets": ("mcsa.cli.inspect", "List the target profiles and simulator presets that --target takes."),
    "verify": ("mcsa.cli.inspect", "Check a vectors file in the golden format against the simulator."),
    "attention": ("mcsa.cli.inspect", "Run one attention step on your q, k, v and measure its error."),
    "quality": ("mcsa.cli.quality", "Measure how much dense attention the mask keeps on real activations."),
    "example": ("mcsa.cli.example", "Write the sample files that the help examples use."),
}
"""Each command's module and its one-sentence summary for ``mcsa --help``."""


EXIT_OK, EXIT_FAILED, EXIT_INPUT, EXIT_INTERNAL = 0, 1, 2, 70
EXIT_INTERRUPTED = interrupt.EXIT_INTERRUPTED
EXIT_CLOSED_PIPE = 128 + signal.SIGPIPE
"""141, the status a shell gives a Unix tool that SIGPIPE ended."""


def _quiet_stdout() -> None:
    """After a closed pipe: point stdout at /dev/null so that flushing at exit stays silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (CliRunner)
        pass


def _interrupted(err: BaseException) -> bool:
    """Whether ``err`` came of a Ctrl-C or SIGTERM: one that arrives while a jitted
    kernel calls back into Python surfaces as a SystemError caused by the KeyboardInterrupt."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, KeyboardInterrupt):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


class _ClosedPipe(BaseException):
    """stdout's reader went away (click would turn the BrokenPipeError into exit 1)."""


class _Main(click.Group):
    """The group whose ``main`` maps every way a run can end to one exit code
    (see ``mcsa --help``), so that no traceback ever reaches the user, and which
    imports a command's module only when that command is asked for."""

    def list_commands(self, ctx):
        return list(COMMANDS)

    def resolve_command(self, ctx, args):
        if args and args[0] not in COMMANDS and not args[0].startswith("-"):
            close = difflib.get_close_matches(args[0], COMMANDS, n=2, cutoff=0.6)
            if close:
                ctx.fail(f"No such command {args[0]!r}; did you mean {' or '.join(close)}?")
        return super().resolve_command(ctx, args)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        return getattr(importlib.import_module(COMMANDS[name][0]), name)

    def format_commands(self, ctx, formatter):
        """The summaries of :data:`COMMANDS`, whole, without importing any command."""
        with formatter.section("Commands"):
            formatter.write_dl([(name, summary) for name, (_, summary) in COMMANDS.items()])

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            raise _ClosedPipe from None

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        restore = interrupt.install()  # first: a signal from here on ends the run with 130
        stderr, sys.stderr = sys.stderr, _Unfailing(sys.stderr)
        stdout, sys.stdout = sys.stdout, NamedFile(sys.stdout, "stdout")  # (`> file` on a full disk: say stdout)
        try:
            code = self._exit_code(args, prog_name, complete_var, **extra)
        finally:
            sys.stderr.flush()
            sys.stdout, sys.stderr = stdout, stderr
            restore()
        sys.exit(code)

    def _exit_code(self, args, prog_name, complete_var, **extra) -> int:
        """Run the command; the exit code of however it ended (a signal recorded meanwhile wins)."""
        try:
            interrupt.check()  # one that came while the modules loaded
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            interrupt.check()
            return code if isinstance(code, int) else EXIT_OK
        except BaseException as err:  # noqa: BLE001 (every way out gets its code)
            if interrupt.received() is not None or _interrupted(err):
                if not isinstance(err, click.Abort):  # (click ends the ^C line itself)
                    click.echo("", err=True)
                return EXIT_INTERRUPTED
            return _failure(err)


class _Unfailing:
    """``sys.stderr`` while a command runs: a message that cannot be written (stderr on a
    full disk, or closed) is dropped, so that the exit code stays the run's own (Python
    would end a run whose stderr fails with 1 or 120, codes that mean something else here)."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except (OSError, ValueError):
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except (OSError, ValueError):
            pass

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _failure(err: BaseException) -> int:
    """Say how the command failed (one line, never a traceback) and return the exit code."""
    if isinstance(err, SystemExit):
        return err.code if isinstance(err.code, int) else EXIT_FAILED if err.code else EXIT_OK
    if isinstance(err, click.ClickException):
        err.show()
        return err.exit_code if err.exit_code != EXIT_FAILED else EXIT_INPUT
    if isinstance(err, click.Abort):
        if isinstance(err.__context__, EOFError):
            click.echo(f"Error: truncated input ({err.__context__})", err=True)
            return EXIT_INPUT
        return EXIT_INTERRUPTED
    if isinstance(err, (_ClosedPipe, BrokenPipeError)):
        _quiet_stdout()
        return EXIT_CLOSED_PIPE
    if isinstance(err, OSError):
        if err.filename is None:
            click.echo(f"Error: {err.strerror or err}", err=True)
        else:
            click.echo(f"Error: {err.filename}: {err.strerror or err}", err=True)
        return EXIT_INPUT
    if isinstance(err, MemoryError):  # the host, not mcsa: a limit such as `ulimit -v` below what was asked
        click.echo(f"Error: not enough memory on this machine for this request ({err or 'MemoryError'}); "
                   "ask for less (--position-limit, a shorter seq_len) or run where there is more", err=True)
        return EXIT_INPUT
    if isinstance(err, TargetPanic):  # the simulated step failed: a verdict, like mask's and attention's
        click.echo(f"the target panics: {err}", err=True)
        return EXIT_FAILED
    if not isinstance(err, Exception):
        raise err
    click.echo(f"internal error: {type(err).__name__}: {err} (a bug in mcsa: please report it "
               f"with the command line)", err=True)
    return EXIT_INTERNAL


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="mcsa")
def main():
    """Bit-exact simulator of mincut-aware sparse attention on Rust targets.

    \b
    Example:
      mcsa mask --seq-len 48 --lambda 100 --partitions 3
      mcsa fit --target stm32f411 --seq-len 256 --partitions 4 --dim 32
      mcsa replay examples/trace.jsonl --target stm32f411 --seq-len 128 --dim 32

    \b
    Exit codes:
      0    success
      1    a verdict you asked for went against the run: a --fail-on condition,
           a step that does not fit (fit), mismatches (verify), a panic of the
           simulated target in a single step (mask, attention, fit)
      2    bad input or usage; the message names the option, or file and line
      70   internal error: a bug in mcsa, to be reported
      130  interrupted (Ctrl-C or SIGTERM); no partial output file is left
      141  stdout closed before the end (`| head`): quietly, as a Unix tool
           that SIGPIPE ends; the run's verdict is unknown
    """
