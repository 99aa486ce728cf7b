"""Argument checks, one message shape for every layer.

``check_int`` is the one integer validator: a Rust integer field (``u16``,
``u32``), a ``usize`` of a target, a heap size, a limit. ``check_bool`` is the
one bool validator; ``check_name`` looks a name up in a table of named things.
Their messages read
``NAME must be an integer, got TYPE VALUE`` and ``NAME must be in LO..=HI (UNIT), got VALUE``.
"""

from __future__ import annotations

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
