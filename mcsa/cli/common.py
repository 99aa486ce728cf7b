"""What the commands share: input errors (exit 2), option bundles, config and
target loading, atomic output files, JSON-ready values."""

from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
import tomllib
from contextlib import contextmanager
from pathlib import Path

import click
import numpy as np

from firmware_model.profiles import load_profiles

from ..mask import DEFAULT_POSITION_LIMIT
from ..packets import SparsityConfig, f32_to_json


class InputError(click.ClickException):
    """Bad input or usage: a clear message and exit code 2."""

    exit_code = 2


def fail_on_input_errors(fn):
    """Turn the library's ValueError/TypeError/OSError into :class:`InputError`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ValueError, TypeError) as err:
            raise InputError(str(err)) from None
        except OSError as err:
            raise InputError(f"{err.filename or ''}: {err.strerror or err}".lstrip(": ")) from None

    return wrapper


def load_config(path: str | None) -> SparsityConfig:
    """A SparsityConfig from a serde JSON or TOML file (all fields, as serde requires), or the defaults.

    Raises
    ------
    ValueError
        Naming the file for unreadable or invalid content.
    """
    if path is None:
        return SparsityConfig()
    text = Path(path).read_text(encoding="utf-8")
    try:
        record = tomllib.loads(text) if path.endswith(".toml") else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not valid {'TOML' if path.endswith('.toml') else 'JSON'} ({err})") from None
    try:
        return SparsityConfig.from_dict(record)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path}: {err}") from None


def resolve_profile(name: str, profiles_file: str | None):
    """``(profile, build)`` from ``NAME`` or ``NAME-release``/``NAME-debug`` (default release).

    Raises
    ------
    ValueError
        If no profile has that name.
    """
    profiles = load_profiles(profiles_file)
    for build in ("release", "debug"):
        if name.endswith(f"-{build}") and name[: -len(build) - 1] in profiles:
            return profiles[name[: -len(build) - 1]], build
    if name in profiles:
        return profiles[name], "release"
    raise ValueError(f"unknown target {name!r}; use a profile (see `mcsa targets`), "
                     f"optionally with -release or -debug: {', '.join(profiles)}")


def target_options(fn):
    """--target NAME and --profiles FILE."""
    fn = click.option("--profiles", "profiles_file", type=click.Path(exists=True, dir_okay=False),
                      help="Extra target profiles (TOML), added to and overriding the built-in ones.")(fn)
    return click.option("--target", "target_name", required=True, metavar="NAME",
                        help="Target profile, e.g. stm32f411 or stm32f411-debug (see `mcsa targets`).")(fn)


def limit_option(fn):
    """--position-limit: the largest mask the host materialises."""
    return click.option("--position-limit", type=click.IntRange(min=0), default=DEFAULT_POSITION_LIMIT,
                        show_default=True, help="Largest mask (positions) built on the host.")(fn)


def config_option(fn):
    return click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
                        help="SparsityConfig as serde JSON or TOML (default: Rust's defaults).")(fn)


def jsonable(value):
    """Records to JSON: f32 as the shortest decimal that reads back to it; NumPy ints as ints."""
    if isinstance(value, np.floating):
        return f32_to_json(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def dumps(record: dict) -> str:
    return json.dumps({k: jsonable(v) for k, v in record.items()}, default=jsonable)


@contextmanager
def atomic_output(path: str | None, mode: str = "w"):
    """Write to a temporary file beside ``path`` and move it in place only on
    success: the output is complete, or not there. ``None`` or ``-`` is stdout."""
    if path is None or path == "-":
        yield sys.stdout if "b" not in mode else sys.stdout.buffer
        return
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent or ".", prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})) as out:
            yield out
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise


def pyplot(option: str):
    """matplotlib.pyplot on the Agg backend, or an InputError naming the option and the extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError(f"{option} needs matplotlib: pip install 'mcsa[plot]'") from None
    return plt
