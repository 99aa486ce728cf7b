"""Argument checks, one message shape for every layer.

``check_int`` is the one integer validator: a Rust integer field (``u16``,
``u32``), a ``usize`` of a target, a heap size, a limit. ``check_bool`` is the
one bool validator; ``check_name`` looks a name up in a table of named things;
``parse_byte_size`` reads a size as users write one (``64K``).
Their messages read
``NAME must be an integer, got TYPE VALUE`` and ``NAME must be in LO..=HI (UNIT), got VALUE``.
"""

from __future__ import annotations

import re

import numpy as np


def check_int(value, what: str, lo: int = 0, hi: int | None = None, unit: str | None = None) -> int:
    """``value`` as a Python int within ``lo..=hi`` (no upper bound when ``hi`` is None).

    Parameters
    ----------
    value
        Any integer type (Python, NumPy, anything with ``__index__``); never a bool,
        a float or a string.
    what : str
        The argument's name, as the message starts.
    lo, hi : int
        The bounds, inclusive.
    unit : str, optional
        The type the bounds come from (``u16``, ``usize on thumbv7em-release``).

    Raises
    ------
    TypeError
        If ``value`` is not an integer.
    ValueError
        If it is out of bounds.
    """
    if type(value) is not int:
        if isinstance(value, (bool, np.bool_)) or not hasattr(value, "__index__") or isinstance(value, np.ndarray):
            raise TypeError(f"{what} must be an integer, got {type(value).__name__} {value!r:.40}")
        value = int(value)
    if value < lo or (hi is not None and value > hi):
        bounds = f"in {lo}..={hi}" if hi is not None else f">= {lo}"
        raise ValueError(f"{what} must be {bounds}{f' ({unit})' if unit else ''}, got {value}")
    return value


def check_uint(value, what: str, maximum: int) -> int:
    """A Rust unsigned field of ``maximum.bit_length()`` bits (``u16``, ``u32``, ``u64``).

    Raises
    ------
    TypeError, ValueError
        As :func:`check_int`.
    """
    return check_int(value, what, 0, maximum, f"u{maximum.bit_length()}")


def check_bool(value, what: str) -> bool:
    """A Rust ``bool``.

    Raises
    ------
    TypeError
        If ``value`` is not a bool (0 and 1 are not).
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{what} must be a bool, got {type(value).__name__} {value!r:.40}")
    return bool(value)


def check_name(name, table: dict, what: str, kind: str):
    """The entry of ``table`` named ``name``.

    Parameters
    ----------
    name
        The name, a str.
    table : dict
        Named entries, in the order the refusal lists them.
    what : str
        The argument's name, as the type refusal starts.
    kind : str
        What the entries are, as the unknown-name refusal says (``allocator``).

    Raises
    ------
    TypeError
        If ``name`` is not a str.
    ValueError
        If it is not a key of ``table``.
    """
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a {kind} name (str), got {type(name).__name__} {name!r:.40}")
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unknown {kind} {name!r}; known: {', '.join(table)}") from None


_BYTE_SIZE = re.compile(r"([0-9]+)\s*([A-Za-z]*)")
_UNITS = {"": 0, "b": 0, "k": 10, "kib": 10, "m": 20, "mib": 20, "g": 30, "gib": 30, "t": 40, "tib": 40}


def parse_byte_size(value, what: str) -> int:
    """A size in bytes as users write one, on the command line or in a profiles file:
    an integer, or ``65536``, ``64K``, ``64KiB``, ``1M``, ``1MiB``, ``2G`` (K = KiB = 1024 B;
    a space before the unit is fine). ``KB``/``MB`` are refused: they mean 1000 to some
    tools and 1024 to others. Not bounded here (each use checks its own bounds).

    Raises
    ------
    ValueError
        Naming ``what``, for text that is not such a size.
    TypeError
        For a value that is neither an integer nor text.
    """
    if not isinstance(value, str):
        return check_int(value, what)
    match = _BYTE_SIZE.fullmatch(value.strip())
    unit = match and match.group(2).lower()
    if match and unit in _UNITS:
        return int(match.group(1)) << _UNITS[unit]
    if match and unit in ("kb", "mb", "gb", "tb"):
        raise ValueError(f"{what} {value!r}: write {match.group(1)}{unit[0].upper()} or {match.group(1)}"
                         f"{unit[0].upper()}iB (1024-based) or the bytes; {unit.upper()} is ambiguous")
    raise ValueError(f"{what} {value!r:.40} is not a size in bytes (65536, 64K, 64KiB, 1M, 1MiB)")
