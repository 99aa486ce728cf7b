"""What the commands share: input errors (exit 2), the option bundles (each option
declared once, meaning one thing in every command), target and config loading,
atomic output files, tables and JSON-ready values.

Nothing here imports NumPy, Numba or the simulator at module level, so that
``mcsa --help`` and argument errors answer before any kernel loads; the helpers
import what they use when they run.
"""

from __future__ import annotations

import errno
import functools
import io
import os
import re
import select
import stat
import sys
import tempfile
import zlib
from contextlib import contextmanager, suppress
from pathlib import Path

import click

from mcsa.core import compiling
from mcsa.core.errors import DEFAULT_POSITION_LIMIT, MAX_HOST_POSITIONS, MaskTooLarge

from mcsa.app import interrupt
from mcsa.core.jsonio import dumps, jsonable, read_text  # noqa: F401 (the commands' JSON and files, one definition)
from mcsa.core.words import plural  # noqa: F401 (for the commands)

USIZE64_MAX = (1 << 64) - 1
"""Upper bound of sizes (--seq-len, --dim, --heap-budget): the widest usize; a command
checks them against its target's own usize."""
U16_MAX, U32_MAX = 0xFFFF, 0xFFFF_FFFF
TABLE_WIDTH = 100
"""Columns a table fits in unless --wide."""


# --- values -----------------------------------------------------------------------------------------------


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
    """click's IntRange for :func:`ascii_int` integers, its range written as Rust
    writes one (``0..=65535``, ``0..=usize::MAX``)."""

    def _describe_range(self) -> str:
        if self.max is None:
            return f"{self.min}.."
        return f"{self.min}..={'usize::MAX' if self.max == USIZE64_MAX else self.max}"

    def convert(self, value, param, ctx):
        if isinstance(value, str):
            try:
                ascii_int(value)
            except ValueError as err:
                self.fail(str(err), param, ctx)
        return super().convert(value, param, ctx)


class ByteSize(click.ParamType):
    """A size in bytes as :func:`mcsa.core.checks.parse_byte_size` reads one (``64K``,
    ``1MiB``; ``KB``/``MB`` refused as ambiguous), at most the largest usize."""

    name = "bytes"

    def convert(self, value, param, ctx):
        from mcsa.core.checks import parse_byte_size

        if isinstance(value, int) and not isinstance(value, bool):
            return value
        try:
            size = parse_byte_size(str(value), "")
        except ValueError as err:
            self.fail(str(err).strip(), param, ctx)
        if size > USIZE64_MAX:
            self.fail(f"{value} is over {USIZE64_MAX:,} B, the largest usize", param, ctx)
        return size


def byte_size(size: int) -> str:
    """``size`` in the largest unit that divides it (``64 KiB``, ``16 GiB``, ``1,000 B``):
    what :class:`ByteSize` reads back without the space."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size and size % (1 << shift) == 0:
            return f"{size >> shift:,} {unit}"
    return f"{size:,} B"


class PartitionList(click.ParamType):
    """Partition counts: ``2,4,8``, ``2..16`` or mixed ``2,4..8,16``; each a u16.
    Converted to a tuple, ascending, each count once."""

    name = "counts"

    def convert(self, value, param, ctx):
        if isinstance(value, (tuple, list)):
            return value
        counts: set[int] = set()
        for part in str(value).split(","):
            lo_text, dots, hi_text = part.partition("..")
            try:
                lo = ascii_int(lo_text)
                hi = ascii_int(hi_text) if dots else lo
            except ValueError:
                self.fail(f"{value!r:.40}: write counts as 2,4,8 or 2..16 or 2,4..8,16", param, ctx)
            if not (0 <= lo <= U16_MAX and 0 <= hi <= U16_MAX):
                self.fail(f"{part.strip()}: a partition count is a u16 (0..=65535)", param, ctx)
            if hi < lo:
                self.fail(f"{part.strip()} runs downwards; write {hi}..{lo}", param, ctx)
            counts.update(range(lo, hi + 1))
        return tuple(sorted(counts))


class InputPath(click.Path):
    """An input file that must exist (``click.Path(exists=True, dir_okay=False)``), a symlink
    loop said to be one: click calls it a file that does not exist."""

    def __init__(self, **kwargs):
        super().__init__(exists=True, dir_okay=False, **kwargs)

    def convert(self, value, param, ctx):
        if value != "-":
            try:
                os.stat(value)
            except OSError as err:
                if err.errno == errno.ELOOP:
                    self.fail(f"{os.fsdecode(value)!r}: {err.strerror} (a symlink loop)", param, ctx)
        return super().convert(value, param, ctx)


def _options(fn, *options):
    """Apply click options so that --help lists them in the order given."""
    for option in reversed(options):
        fn = option(fn)
    return fn


def _bundle(decorate):
    """Let a bundle be used bare (``@bundle``) or with its settings (``@bundle(default=...)``)."""

    @functools.wraps(decorate)
    def bundle(fn=None, **settings):
        if fn is None:
            return lambda f: decorate(f, **settings)
        return decorate(fn, **settings)

    return bundle


# --- errors -----------------------------------------------------------------------------------------------


class InputError(click.ClickException):
    """Bad input or usage: a clear message and exit code 2."""

    exit_code = 2


@_bundle
def fail_on_input_errors(fn, kernels: bool = True):
    """Turn the library's ValueError/TypeError/OSError (and a truncated compressed
    stream's EOFError/zlib.error) into :class:`InputError`. A closed stdout
    (BrokenPipeError) is not bad input: it goes on to ``main``, which ends quietly.
    A mask over the position limit is told how to get its figures from the command line.
    With ``kernels`` (a command that runs the simulator), a first compile of the
    kernels on this machine is announced on stderr (:class:`CompileNotice`)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        notice = CompileNotice() if kernels else None
        try:
            return fn(*args, **kwargs)
        except BrokenPipeError:
            raise
        except MaskTooLarge as err:
            raise InputError(f"{err.size()}; raise --position-limit, or run `mcsa mask --stats` for "
                             "num_positions and density without building the mask") from None
        except (ValueError, TypeError) as err:
            raise InputError(str(err)) from None
        except OSError as err:
            raise InputError(f"{err.filename or ''}: {err.strerror or err}".lstrip(": ")) from None
        except (EOFError, zlib.error) as err:
            raise InputError(f"truncated or corrupt input ({err})") from None
        finally:
            if notice is not None:
                notice.close()

    return wrapper


class CompileNotice:
    """While a command runs: the first time Numba compiles a kernel (its cache holds
    none for this machine and source), one note on stderr that it compiles and how
    long that takes; at the end, how long it took. Numba signals only real compiles
    (``numba:compile`` events, passed on by :mod:`mcsa.core.compiling`), not loads
    from its cache; listening loads no Numba."""

    def __init__(self):
        self.seconds, self.depth, self.started = 0.0, 0, None
        compiling.listeners.append(self)

    def start(self) -> None:
        import time

        if self.depth == 0:
            if self.started is None:
                click.echo("note: compiling mcsa's kernels for this machine, once (seconds to a minute); "
                           "later runs load them from Numba's cache", err=True)
            self.started = time.perf_counter()
        self.depth += 1

    def end(self) -> None:
        import time

        self.depth -= 1
        if self.depth == 0:
            self.seconds += time.perf_counter() - self.started

    def close(self) -> None:
        compiling.listeners.remove(self)
        if self.started is not None:
            click.echo(f"note: compiled in {self.seconds:.0f} s", err=True)


# --- files ------------------------------------------------------------------------------------------------


def load_config(path: str | None):
    """A :class:`~mcsa.core.packets.SparsityConfig` from a JSON or TOML file: the
    fields it gives over Rust's ``Default`` (a partial config is fine), or the
    defaults. JSON is read strictly (:func:`mcsa.core.jsonio.loads`); an unknown key
    is ignored with a note on stderr.

    Raises
    ------
    ValueError
        Naming the file for unreadable or invalid content.
    """
    from mcsa.core import jsonio
    from mcsa.core.packets import SparsityConfig

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


# --- option bundles ---------------------------------------------------------------------------------------


TARGET_HELP = ("a profile (stm32f411, stm32f411-debug) or a simulator preset (thumbv7em, x86_64-debug); "
               "case and - or _ do not matter, no suffix means -release; `mcsa targets` lists them")


def profiles_option(fn):
    """``--profiles FILE``: target profiles added to and overriding the built-in ones."""
    return click.option("--profiles", "profiles_file", type=InputPath(),
                        help="Your own target profiles (TOML): new parts, or a row named after a built-in one "
                             "that changes only the fields it gives.")(fn)


@_bundle
def target_options(fn, default: str | None = None, spellings: tuple = ()):
    """``--target NAME`` (required unless a ``default`` is given; ``spellings`` are
    other names for it) and ``--profiles FILE``: the command gets ``target_name``
    and ``profiles_file``; :func:`cli_build` resolves them."""
    return _options(
        fn,
        click.option("--target", *spellings, "target_name", metavar="NAME", required=default is None,
                     default=default, show_default=default is not None, help=f"Target: {TARGET_HELP}."),
        profiles_option,
    )


def cli_build(target_name: str, profiles_file: str | None = None, option: str = "--target", **sizes):
    """The :class:`firmware_model.profiles.Build` that ``--target`` names (a bare
    preset is a build with no RAM figure), with each of ``sizes`` (an option's name
    and value, None if not given) checked against its usize.

    Raises
    ------
    InputError
        Naming ``option`` for an unknown name (with the closest ones), and the
        option whose size the target cannot hold.
    """
    from firmware_model.profiles import build_named

    try:
        build = build_named(target_name, profiles_file)
    except ValueError as err:
        if str(err).startswith("unknown target"):
            raise InputError(f"{option}: {err}") from None
        raise
    check_sizes(build.target, **sizes)
    return build


def resolve_profile(name: str, profiles_file: str | None, heap_budget: int | None = None, allocator=None, **sizes):
    """``(profile, build)`` for a command that sizes a heap (see :func:`cli_build`; a
    bare preset's profile has the whole address space as heap and allocator ``none``),
    with ``heap_budget`` checked by :func:`firmware_model.profiles.heap_budget` (with
    ``allocator``, an :class:`~firmware_model.allocators.Allocator` overriding the profile's).

    Raises
    ------
    InputError
        For an unknown target, a size it cannot hold, or a budget it refuses, naming the option.
    """
    from firmware_model.profiles import heap_budget as profile_heap_budget

    build = cli_build(name, profiles_file, **sizes)
    try:
        profile_heap_budget(build.profile, heap_budget, allocator, "--heap-budget")
    except ValueError as err:
        raise InputError(str(err)) from None
    if heap_budget is not None and heap_budget > build.profile.ram:
        click.echo(f"note: --heap-budget {heap_budget:,} B is more than {build.profile.name}'s "
                   f"{build.profile.ram:,} B of RAM: a what-if, not a verdict for that part", err=True)
    return build.profile, build.build


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


GATE_OPTIONS = (
    # option, parameter, serde field, largest value, help
    ("--lambda", "lambda_", "lambda", U32_MAX, "Gate lambda, the min-cut value (u32)."),
    ("--lambda-prev", "lambda_prev", "lambda_prev", U32_MAX, "Gate lambda_prev, the previous lambda (u32)."),
    ("--boundary-edges", "boundary_edges", "boundary_edges", U16_MAX, "Gate boundary_edges (u16)."),
    ("--concentration", "concentration", "boundary_concentration_q15", U16_MAX,
     "Gate boundary_concentration_q15 (u16, Q15)."),
    ("--partitions", "partitions", "partition_count", U16_MAX, "Gate partition_count (u16)."),
    ("--flags", "flags", "flags", U16_MAX, "Gate flags (u16: bit 0 FORCE_SAFE, 1 SKIP, 2 BOUNDARY_IDS_AVAILABLE)."),
)
"""The gate packet on the command line: one option per field of Rust's ``GatePacket``."""


@_bundle
def gate_options(fn, partition_list: tuple | None = None, **defaults):
    """``--lambda``, ``--lambda-prev``, ``--boundary-edges``, ``--concentration``,
    ``--partitions``, ``--flags`` and ``--gate JSON``: the command gets ``gate``, a
    :class:`~mcsa.core.packets.GatePacket`.

    Each field is Rust's ``Default`` (0) unless ``defaults`` (keyed by serde field
    name) gives the command's own; ``--gate`` (a recorded packet's serde JSON) sets
    the fields it holds, and the field options given on the command line set theirs
    over it. With ``partition_list`` (the default counts), ``--partitions`` takes a
    :class:`PartitionList` and the command also gets ``partitions``: the counts
    given, else ``--gate``'s partition_count, else ``partition_list``.
    """
    defaults = {field: defaults.get(field, 0) for _, _, field, _, _ in GATE_OPTIONS}
    options = []
    for option, param, field, top, help in GATE_OPTIONS:
        if option == "--partitions" and partition_list is not None:
            options.append(click.option(option, param, type=PartitionList(), default=",".join(map(str, partition_list)),
                                        show_default=True, help="Partition counts: 2,4,8 or 2..16 or 2,4..8,16; "
                                        "each replaces the gate's partition_count."))
        else:
            options.append(click.option(option, param, type=IntRange(0, top), default=defaults[field],
                                        show_default=True, metavar="N", help=help))
    options.append(click.option("--gate", "gate_json", metavar="JSON",
                                help="A gate packet as serde JSON, e.g. a trace record; fields it leaves out take "
                                     "the defaults above, the field options given set theirs over it."))

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from mcsa.core.packets import FIELDS, GatePacket

        ctx = click.get_current_context()
        values = dict(defaults)
        gate_json = kwargs.pop("gate_json")
        if gate_json is not None:
            values.update(parse_gate(gate_json, defaults).to_dict())
        for _, param, field, _, _ in GATE_OPTIONS:
            value = kwargs.pop(param)
            if ctx.get_parameter_source(param) is not click.core.ParameterSource.DEFAULT:
                if param == "partitions" and partition_list is not None:
                    kwargs["partitions"] = value
                    values[field] = value[0]
                else:
                    values[field] = value
        if partition_list is not None and "partitions" not in kwargs:
            kwargs["partitions"] = (values["partition_count"],) if gate_json is not None else tuple(partition_list)
        kwargs["gate"] = GatePacket(*(values[field] for field in FIELDS))
        return fn(*args, **kwargs)

    return _options(wrapper, *options)


def parse_gate(text: str, defaults: dict | None = None):
    """A --gate option's serde JSON (a packet, or a trace record) as a GatePacket:
    strict JSON, the fields it leaves out from ``defaults`` (serde names; with None,
    every field must be there), keys that are not a trace record's noted on stderr.

    Raises
    ------
    InputError
        ``--gate: ...`` naming what is wrong.
    """
    from mcsa.app.traces import KNOWN_KEYS
    from mcsa.core import jsonio
    from mcsa.core.packets import GatePacket

    try:
        record = jsonio.loads(text, "--gate")
        if not isinstance(record, dict):
            raise ValueError(f"--gate: a gate packet is a JSON object, got {type(record).__name__}")
        packet = GatePacket.from_dict({**(defaults or {}), **record})
        for note in jsonio.unknown_keys(record, KNOWN_KEYS, "--gate"):  # a trace record's t and seq_len: no note
            click.echo(f"note: {note}", err=True)
        return packet
    except (ValueError, TypeError) as err:
        raise InputError(str(err) if str(err).startswith("--gate") else f"--gate: {err}") from None


@_bundle
def seq_len_option(fn, help: str = "Sequence length (tokens; a usize of the target)."):
    """``--seq-len N``, required: a usize (checked against the target's by :func:`check_sizes`)."""
    return click.option("--seq-len", type=IntRange(0, USIZE64_MAX), required=True, metavar="N", help=help)(fn)


@_bundle
def dim_option(fn, default: int | None = 64, help: str = "Head dimension."):
    """``--dim D``: a usize of the target, 0 included (Rust's ``sparse_attention``
    divides by it: 0 is the build's ``attempt to divide by zero``, a verdict, not a
    usage error); required when ``default`` is None."""
    return click.option("--dim", type=IntRange(0, USIZE64_MAX), default=default, required=default is None,
                        show_default=default is not None, metavar="D", help=help)(fn)


def heap_budget_option(fn):
    """``--heap-budget SIZE``, a :class:`ByteSize`; a command checks it with
    :func:`firmware_model.profiles.heap_budget` (see :func:`resolve_profile`)."""
    return click.option("--heap-budget", type=ByteSize(), metavar="SIZE",
                        help="Heap budget: 65536, 64K, 64KiB, 1M (default: the profile's; for a bare preset, "
                             "its whole address space).")(fn)


def limit_option(fn):
    """``--position-limit``: the largest mask the host materialises."""
    return click.option("--position-limit", type=IntRange(0, MAX_HOST_POSITIONS), default=DEFAULT_POSITION_LIMIT,
                        show_default=True, metavar="N",
                        help="Largest mask (positions) built on the host, 4 bytes each.")(fn)


def config_option(fn):
    """``--config FILE``: a SparsityConfig, read by :func:`load_config`."""
    return click.option("--config", "config_file", type=InputPath(),
                        help="SparsityConfig as JSON or TOML; fields it leaves out keep Rust's defaults.")(fn)


EXTENSIONS = {".txt": "table", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv",
              ".parquet": "parquet", ".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".svg": "svg", ".pdf": "pdf",
              ".gz": "gzip", ".npy": "npy", ".npz": "npz", ".bin": "binary packets", ".tsv": "tsv",
              ".xlsx": "Excel", ".xls": "Excel", ".zip": "zip", ".bz2": "bzip2", ".xz": "xz", ".zst": "zstd",
              ".yaml": "YAML", ".yml": "YAML", ".toml": "TOML", ".html": "HTML", ".htm": "HTML", ".md": "Markdown",
              ".feather": "Arrow IPC", ".arrow": "Arrow IPC", ".pkl": "pickle", ".pickle": "pickle"}
"""The format an output file's extension names: every output's one table. Most are formats
no command writes, named so that an output is not written under a name that promises
another (``-o r.bin`` would be read back as binary packets; mcsa compresses nothing)."""
WRITES = {"--png": "png", "--plot": "png", "--summary": "jsonl"}
"""What the outputs of one fixed format write (``-o`` follows ``--format``)."""


def output_format(path: str | None) -> str | None:
    """The format ``path``'s extension names (:data:`EXTENSIONS`), or None."""
    if path in (None, "-"):
        return None
    return EXTENSIONS.get(os.path.splitext(str(path).rstrip("/"))[1].lower())


@_bundle
def output_options(fn, formats: tuple = ("table", "json"), default="table", wide: bool = False,
                   folder: bool = False, output_help: str | None = None):
    """``--format`` (one of ``formats``; ``--json`` is ``--format json``), ``-o FILE``
    (a folder too with ``folder``; ``output_help`` words it) and, with ``wide``,
    ``--wide``: the command gets ``fmt`` and ``output`` (None: stdout). The format is
    ``--format``'s, else the one ``-o``'s extension names (:data:`EXTENSIONS`), else
    ``default`` (a name, or a function of ``output``); an extension that names another
    format than ``--format`` is refused, as is one naming a format the command does not write."""
    options = [click.option("--format", "fmt", type=click.Choice(formats),
                            help=f"Output format (default: {default if isinstance(default, str) else 'see above'};"
                                 f" or what -o's extension names).")]
    if "json" in formats:
        options.append(click.option("--json", "as_json", is_flag=True, help="The same as --format json."))
    options.append(click.option("-o", "--output", type=click.Path(dir_okay=folder), metavar="FILE",
                                help=output_help or "Write the output here (complete, or not at all) instead of "
                                                    "stdout."))
    if wide:
        options.append(click.option("--wide", is_flag=True, help=f"Tables as wide as their cells (default: "
                                                                 f"{TABLE_WIDTH} columns)."))

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        fmt, output = kwargs["fmt"], kwargs["output"]
        if kwargs.pop("as_json", False):
            if fmt not in (None, "json"):
                raise InputError(f"--json and --format {fmt} contradict each other")
            fmt = "json"
        named = output_format(output)
        if named is not None and named not in formats:
            raise InputError(f"-o {output}: a {Path(output).suffix} file, a format this command does not write (it "
                             f"writes {', '.join(formats)}; name the file .{'/.'.join(_extension(f) for f in formats)})")
        if fmt is not None and named is not None and named != fmt:
            raise InputError(f"-o {output} names {named} by its extension, --format says {fmt}")
        kwargs["fmt"] = fmt or named or (default if isinstance(default, str) else default(output))
        return fn(*args, **kwargs)

    return _options(wrapper, *options)


def _extension(fmt: str) -> str:
    return next(ext.lstrip(".") for ext, named in EXTENSIONS.items() if named == fmt)


# --- output -----------------------------------------------------------------------------------------------


def table(header, rows, right=frozenset(), wide: bool = False) -> list[str]:
    """Lines of a plain-text table, each column as wide as its widest cell; the
    columns whose index is in ``right`` (numbers) right-aligned, the last one
    unpadded and, unless ``wide``, cut with ``…`` to fit :data:`TABLE_WIDTH` columns."""
    cells = [[str(c) for c in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    last = len(header) - 1
    lines = [" ".join(c.rjust(w) if i in right else (c if i == last else c.ljust(w))
                      for i, (c, w) in enumerate(zip(row, widths))).rstrip() for row in cells]
    return lines if wide else [line if len(line) <= TABLE_WIDTH else line[:TABLE_WIDTH - 1] + "…" for line in lines]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_all(raw, data: bytes) -> None:
    """Every byte of ``data`` to a raw stream, however many writes it takes."""
    view = memoryview(data)
    while view:
        n = raw.write(view)
        if n is None:  # (a non-blocking file that is full: wait until it takes more)
            select.select([], [raw], [])
            n = 0
        view = view[n:]


class NamedFile:
    """An output file whose storage errors (a full disk) name the user's path, and
    whose writes are whole: over an unbuffered binary layer (``python -u``,
    ``PYTHONUNBUFFERED``), a text write is one raw write that a pipe may take in part,
    the rest dropped without an error (a reader that left unseen: exit 0, not 141)."""

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
        raw = getattr(self._file, "buffer", None)
        if isinstance(data, str) and isinstance(raw, io.RawIOBase):
            self._named(self._file.flush)
            self._named(_write_all, raw, data.encode(self._file.encoding, self._file.errors or "strict"))
            return len(data)
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
            out = interrupt.wait_for(lambda: open(path, mode, **_text(mode)))  # a FIFO waits for its reader
        except OSError as err:  # a directory
            raise OSError(err.errno, err.strerror, path) from None
        named = NamedFile(out, path)
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
        with NamedFile(os.fdopen(fd, mode, **_text(mode)), path) as out:
            yield out
        interrupt.commit()  # nothing is put in place once a signal asked to stop
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
        TRACE``, ``is the same file as --summary ...``, ``is inside -o ...``; an output
        of :data:`WRITES` whose extension names another format.
    """
    outputs = {option: os.fspath(path) for option, path in paths.items() if path is not None}
    folders = folders or {}
    _check_identities(outputs, inputs or {}, folders)
    for option, kind in WRITES.items():
        path = outputs.get(option)
        if output_format(path) not in (None, kind):
            raise InputError(f"{option} {path}: a {os.path.splitext(path)[1]} file, but {option} writes {kind}: "
                             f"name it .{_extension(kind)}")
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
