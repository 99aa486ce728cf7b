"""What the commands share: input errors (exit 2), option bundles, config and
target loading, atomic output files, JSON-ready values."""

from __future__ import annotations

import codecs
import errno
import functools
import os
import re
import stat
import sys
import tempfile
import zlib
from contextlib import contextmanager, suppress
from pathlib import Path

import click

from firmware_model.profiles import heap_budget as profile_heap_budget
from firmware_model.profiles import load_profiles, resolve_target

from mcsa.app import interrupt
from mcsa.core import jsonio
from mcsa.core.jsonio import dumps, jsonable  # noqa: F401 (the commands' JSON, one definition)
from mcsa.core.mask import DEFAULT_POSITION_LIMIT, MAX_HOST_POSITIONS
from mcsa.core.packets import GatePacket, SparsityConfig

MAX_DIM = 1 << 16
"""Upper bound of --dim (any real head is far smaller)."""
USIZE64_MAX = (1 << 64) - 1
"""Upper bound of sizes (--seq-len, --heap-budget): the widest usize; a command
checks them against its target's own usize."""


def ascii_int(text: str) -> int:
    """An integer written in ASCII digits. Python's ``int`` would also take ``1_0``
    and other scripts' digits (``５``, ``٨``), which no firmware tool writes.

    Raises
    ------
    ValueError
        For anything else.
    """
    if not _ASCII_INT.fullmatch(text.strip()):
        raise ValueError(f"{text!r:.40} is not an integer (ASCII digits)")
    return int(text)


_ASCII_INT = re.compile(r"[+-]?[0-9]+")


class IntRange(click.IntRange):
    """click's IntRange for :func:`ascii_int` integers."""

    def convert(self, value, param, ctx):
        if isinstance(value, str):
            try:
                ascii_int(value)
            except ValueError as err:
                self.fail(str(err), param, ctx)
        return super().convert(value, param, ctx)


class InputError(click.ClickException):
    """Bad input or usage: a clear message and exit code 2."""

    exit_code = 2


def fail_on_input_errors(fn):
    """Turn the library's ValueError/TypeError/OSError (and a truncated compressed
    stream's EOFError/zlib.error) into :class:`InputError`. A closed stdout
    (BrokenPipeError) is not bad input: it goes on to ``main``, which ends quietly."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BrokenPipeError:
            raise
        except (ValueError, TypeError) as err:
            raise InputError(str(err)) from None
        except OSError as err:
            raise InputError(f"{err.filename or ''}: {err.strerror or err}".lstrip(": ")) from None
        except (EOFError, zlib.error) as err:
            raise InputError(f"truncated or corrupt input ({err})") from None

    return wrapper


def read_text(path: str, limit: int = 1 << 20) -> str:
    """A UTF-8 text file of at most ``limit`` bytes (a config, not a device that never ends).

    Raises
    ------
    ValueError
        ``path: not UTF-8 (byte N)`` or ``path: larger than ... bytes``.
    """
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path}: larger than {limit:,} bytes, the most read")
    try:
        return data.removeprefix(codecs.BOM_UTF8).decode("utf-8")  # a BOM: saved on Windows
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 (byte {err.start})") from None


def load_config(path: str | None) -> SparsityConfig:
    """A SparsityConfig from a JSON or TOML file: the fields it gives over Rust's
    ``Default`` (a partial config is fine), or the defaults. JSON is read strictly
    (:func:`mcsa.core.jsonio.loads`); an unknown key is ignored with a note on stderr.

    Raises
    ------
    ValueError
        Naming the file for unreadable or invalid content.
    """
    if path is None:
        return SparsityConfig()
    text = read_text(path)
    if path.endswith(".toml"):
        record = jsonio.loads_toml(text, path)
    else:
        record = jsonio.loads(text, path)
    if not isinstance(record, dict):
        raise ValueError(f"{path}: a config must be a JSON object or TOML table, got {type(record).__name__}")
    defaults = SparsityConfig().to_dict()
    for note in jsonio.unknown_keys(record, defaults, path):
        click.echo(f"note: {note}", err=True)
    try:
        return SparsityConfig.from_dict({**defaults, **record})
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path}: {err}") from None


def resolve_profile(name: str, profiles_file: str | None, heap_budget: int | None = None, allocator=None, **sizes):
    """``(profile, build)`` for a command that needs a profile (RAM, heap budget,
    allocator): see :func:`firmware_model.profiles.resolve_target`. Each of
    ``sizes`` (an option's name and value, None if not given) is checked against
    the target's usize, ``heap_budget`` by :func:`firmware_model.profiles.heap_budget`
    (with ``allocator``, an :class:`~firmware_model.allocators.Allocator` overriding the profile's).

    Raises
    ------
    ValueError
        If there is no such target, or it is a simulator preset with no profile.
    InputError
        Naming the option whose size the target cannot hold.
    """
    resolved = resolve_target(name, profiles_file)
    if resolved.profile is None:
        family = name.rsplit("-", 1)[0]
        peers = [f"{p.name}-{resolved.build}" for p in load_profiles(profiles_file).values() if p.arch == family]
        raise ValueError(f"target {name!r} is a simulator preset, with no RAM, heap budget or allocator; this "
                         f"command needs a profile{' such as ' + ', '.join(peers) if peers else ''} "
                         f"(see `mcsa targets`)")
    check_sizes(resolved.target, **sizes)
    try:
        profile_heap_budget(resolved.profile, heap_budget, allocator, "--heap-budget")
    except ValueError as err:
        raise InputError(str(err)) from None
    budget = heap_budget
    if budget is not None and budget > resolved.profile.ram:
        click.echo(f"note: --heap-budget {budget:,} B is more than {resolved.profile.name}'s "
                   f"{resolved.profile.ram:,} B of RAM: a what-if, not a verdict for that part", err=True)
    return resolved.profile, resolved.build


def check_sizes(target, **sizes) -> None:
    """Each of ``sizes`` (an option's name and value, None if not given) within
    the target's usize.

    Raises
    ------
    InputError
        Naming the option whose size the target cannot hold.
    """
    for option, value in sizes.items():
        if value is not None and value > target.usize_max:
            raise InputError(f"--{option.replace('_', '-')} {value:,} is over {target.usize_max:,}, the largest "
                             f"usize on {target.name}")


TARGET_HELP = "a profile (stm32f411, stm32f411-debug; see `mcsa targets`) or a simulator preset (x86_64-release)"


def profiles_option(fn):
    return click.option("--profiles", "profiles_file", type=click.Path(exists=True, dir_okay=False),
                        help="Extra target profiles (TOML), added to and overriding the built-in ones.")(fn)


def target_options(fn):
    """--target NAME and --profiles FILE."""
    return click.option("--target", "target_name", required=True, metavar="NAME",
                        help=f"Target: {TARGET_HELP}.")(profiles_option(fn))


def limit_option(fn):
    """--position-limit: the largest mask the host materialises."""
    return click.option("--position-limit", type=IntRange(0, MAX_HOST_POSITIONS), default=DEFAULT_POSITION_LIMIT,
                        show_default=True, help="Largest mask (positions) built on the host.")(fn)


def config_option(fn):
    return click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
                        help="SparsityConfig as JSON or TOML; fields it leaves out keep Rust's defaults.")(fn)


def table(header, rows, right=frozenset()) -> list[str]:
    """Lines of a plain-text table, each column as wide as its widest cell;
    the columns whose index is in ``right`` (numbers) right-aligned, the last one unpadded."""
    cells = [[str(c) for c in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    last = len(header) - 1
    return [" ".join(c.rjust(w) if i in right else (c if i == last else c.ljust(w))
                     for i, (c, w) in enumerate(zip(row, widths))).rstrip() for row in cells]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class _NamedFile:
    """An output file whose storage errors (a full disk) name the user's path."""

    def __init__(self, file, path: str):
        self._file, self._path = file, path

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __iter__(self):
        return iter(self._file)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _named(self, call, *args):
        try:
            return call(*args)
        except OSError as err:
            raise OSError(err.errno, err.strerror or str(err), self._path) from None

    def write(self, data):
        return self._named(self._file.write, data)

    def flush(self):
        return self._named(self._file.flush)

    def close(self):
        return self._named(self._file.close)


def _stat(path: str):
    """``os.stat`` of an output, None if there is nothing there yet (a dangling link
    is written through, as a shell redirection would); a loop of links is an error."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise OSError(err.errno, err.strerror, path) from None


def _text(mode: str) -> dict:
    return {} if "b" in mode else {"encoding": "utf-8", "newline": ""}


@contextmanager
def atomic_output(path: str | None, mode: str = "w"):
    """Write to a temporary file beside ``path`` and move it in place only on
    success: the output is complete, or not there. ``None`` or ``-`` is stdout.

    As a shell redirection would: through a symlink to its target (the link stays;
    a dangling one creates its target; a loop is refused), with the permissions the
    umask gives a new file (an existing file keeps its own), straight into what is
    not a regular file (``/dev/null``, a FIFO), and the output's own errors (a full
    disk) name ``path``. Nothing is moved in place once a signal asked the run to
    stop (:mod:`mcsa.app.interrupt`); on any exception the temporary file is removed.

    Raises
    ------
    OSError
        Of the output: with ``filename`` the user's ``path``. Errors of the block's
        own work (reading an input) pass unchanged.
    """
    if path is None or path == "-":
        yield sys.stdout if "b" not in mode else sys.stdout.buffer
        return
    if path == "":  # not the current folder
        raise OSError(errno.ENOENT, "an empty path names no file", "''")
    existing = _stat(path)
    if existing is not None and not stat.S_ISREG(existing.st_mode):  # /dev/null, /dev/stdout, a FIFO: write into it
        try:
            out = open(path, mode, **_text(mode))
        except OSError as err:  # a directory, a FIFO nobody reads
            raise OSError(err.errno, err.strerror, path) from None
        named = _NamedFile(out, path)
        try:
            yield named
        except BaseException:
            with suppress(OSError):
                named.close()
            raise
        named.close()
        return
    target = Path(os.path.realpath(path))
    keep = 0o666 & ~_umask() if existing is None else stat.S_IMODE(existing.st_mode)
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as err:
        raise OSError(err.errno, err.strerror, path) from None
    interrupt.register(tmp)
    try:
        os.fchmod(fd, keep)
        with _NamedFile(os.fdopen(fd, mode, **_text(mode)), path) as out:
            yield out
        interrupt.check()  # nothing is put in place once a signal asked to stop
        try:
            os.replace(tmp, target)
        except OSError as err:
            raise OSError(err.errno, err.strerror, path) from None
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        interrupt.forget(tmp)


def file_identity(path: str, fd: int | None = None):
    """What makes two paths the same file: device and inode of what exists (through
    symlinks and hard links), else the real path it would be created at; for ``-``,
    the file behind ``fd`` (stdin 0, stdout 1) if it is a regular one, else None."""
    if path in (None, "-"):
        try:
            st = os.fstat(fd)
        except (OSError, TypeError, ValueError):
            return None
        return ("inode", st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else None
    if _local(path) is None:
        return ("url", path.rstrip("/"))
    path = _local(path)
    try:
        st = os.stat(path)
    except OSError:
        return ("path", os.path.realpath(path))
    return ("inode", st.st_dev, st.st_ino)


def check_outputs(paths: dict, inputs: dict | None = None, folders: dict | None = None) -> None:
    """Refuse, before any work, what a shell redirection would refuse and what would
    destroy an input: an output (``{option: path}``, None or ``-`` for stdout) whose
    folder is missing or read-only, that is a loop of symlinks, that is one of the
    ``inputs`` (``{option: path or paths}``, ``-`` for stdin) or another output (the
    same file by device and inode, through symlinks and hard links), or that lies
    inside an output folder (``folders``: ``{option: replaced}`` for the outputs that
    are folders the command fills; an input inside one is refused too if the folder
    is ``replaced`` as a whole). A command with several outputs then never leaves some
    written and fails on the last, and never writes over what it reads.

    Every command calls it with all its outputs and inputs.

    Raises
    ------
    InputError
        Naming the option and path: ``No such file or directory (...)``, ``... is not
        writable``, ``Too many levels of symbolic links``, ``is also the input
        TRACE``, ``is the same file as --summary ...``, ``is inside -o ...``.
    """
    outputs = {option: os.fspath(path) for option, path in paths.items() if path is not None}
    folders = folders or {}
    _check_identities(outputs, inputs or {}, folders)
    for option, path in outputs.items():
        local = _local(path)
        if local is None:
            continue
        if local == "":
            raise InputError(f"{option}: an empty path names no file")
        try:
            existing = _stat(local)
        except OSError as err:
            raise InputError(f"{option} {path}: {err.strerror}") from None
        is_dir = existing is not None and stat.S_ISDIR(existing.st_mode)
        if option in folders:
            if existing is not None and not is_dir:
                raise InputError(f"{option} {path}: is a file, not a folder")
            continue
        if is_dir or local.endswith(("/", os.sep)):
            raise InputError(f"{option} {path}: names a folder, not a file")
        folder = Path(os.path.realpath(local)).parent
        if not folder.is_dir():
            raise InputError(f"{option} {path}: No such file or directory (no folder to write it in)")
        if (existing is None or stat.S_ISREG(existing.st_mode)) and not os.access(folder, os.W_OK):
            raise InputError(f"{option} {path}: the folder {folder} is not writable")


def _local(path) -> str | None:
    """A path on this machine (``file://`` taken off), or None for stdin/stdout and other URLs."""
    path = os.fspath(path)
    if path == "-" or "://" in path and not path.startswith("file://"):
        return None
    return path.removeprefix("file://")


def _check_identities(outputs: dict, inputs: dict, folders: dict) -> None:
    named_inputs = [(option, os.fspath(path)) for option, given in inputs.items() if given is not None
                    for path in ([given] if isinstance(given, (str, os.PathLike)) else given)]
    read = {}
    for option, path in named_inputs:
        identity = file_identity(path, 0)
        if identity is not None:
            read.setdefault(identity, f"the input {path}" if option is None else f"the input {option} {path}")
    for option, path in outputs.items():
        identity = file_identity(path, 1)
        if identity is not None and identity in read:
            raise InputError(f"{option} {'stdout' if path == '-' else path}: is the same file as {read[identity]}; "
                             "writing it would destroy what is read (choose another output)")
    for option, replaced in folders.items():
        local = _local(outputs.get(option, "-"))
        if local is None:
            continue
        root = os.path.realpath(local).rstrip(os.sep) + os.sep
        inside = [(f"{other} {path}", path) for other, path in outputs.items() if other not in folders]
        inside += [(f"the input {path}", path) for _, path in named_inputs] if replaced else []
        for what, path in inside:
            real = _local(path)
            if real is not None and os.path.realpath(real).startswith(root):
                raise InputError(f"{option} {outputs[option]}: the folder it writes holds {what}; refused "
                                 "(it would be overwritten, or read half-written; choose another place)")
    written = {}
    for option, path in outputs.items():
        identity = file_identity(path, 1)
        if identity is not None and identity in written:
            raise InputError(f"{option} {'stdout' if path == '-' else path}: is the same file as {written[identity]}; "
                             "one output would overwrite the other")
        if identity is not None:
            written[identity] = f"{option} {'stdout' if path == '-' else path}"


def save_png(plt, fig, path: str) -> None:
    """Write ``fig`` as a PNG through :func:`atomic_output` and close it."""
    try:
        with atomic_output(path, "wb") as out:
            fig.savefig(out, format="png", dpi=100)
    finally:
        plt.close(fig)


def pyplot(option: str):
    """matplotlib.pyplot on the Agg backend, or an InputError naming the option and the extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError(f"{option} needs matplotlib: pip install 'mcsa[plot]'") from None
    return plt


def target_option(fn):
    return click.option("--target", "target_name", default="x86_64", show_default=True, metavar="NAME",
                        help=f"Target: {TARGET_HELP}.")(profiles_option(fn))


def cli_target(name: str, profiles_file: str | None, seq_len: int | None = None):
    """The resolved --target, with --seq-len checked against its usize."""
    target = resolve_target(name, profiles_file).target
    check_sizes(target, seq_len=seq_len)
    return target


def parse_gate(text: str) -> GatePacket:
    """A --gate option's serde JSON as a GatePacket (strict JSON; unknown keys noted on stderr)."""
    try:
        record = jsonio.loads(text, "--gate")
        packet = GatePacket.from_dict(record)
        for note in jsonio.unknown_keys(record, GatePacket().to_dict(), "--gate"):
            click.echo(f"note: {note}", err=True)
        return packet
    except (ValueError, TypeError) as err:
        raise InputError(str(err) if str(err).startswith("--gate") else f"--gate: {err}") from None
