"""Strict JSON in, as serde_json reads it: no NaN/Infinity, finite numbers, no
duplicate fields, a bounded nesting depth; and unknown keys reported with a guess.

These are the rules for every JSON the package reads (traces, vectors, configs,
gate packets); errors are ValueErrors that start with the place they were given.
:func:`read_text` is the one way a config, profiles or text file is read.
"""

from __future__ import annotations

import codecs
import difflib
import json
import math
import re
import sys
import tomllib

MAX_DEPTH = 128
"""serde_json's default recursion limit."""
MAX_INT_DIGITS = 40
"""Longer integer literals are out of range for every Rust integer type (u128 has 39 digits)."""

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_SHAPE = str.maketrans({**dict.fromkeys("0123456789", "0"), "E": "e", "-": "+"})
_LONG = "0" * (MAX_INT_DIGITS + 1)
_BIG_EXPONENT = re.compile(r'e\+?000+(?:[^0-9A-Za-z"]|$)')
"""On a text whose digits are all 0, what a number out of range needs: over 40 digits,
or an exponent of 3 digits (ending where a number ends, unlike hex digits in a string)."""


def read_text(path, limit: int = 1 << 20) -> str:
    """A UTF-8 text file of at most ``limit`` bytes (a config, not a device that never
    ends), a leading BOM dropped (a file saved on Windows).

    Raises
    ------
    ValueError
        ``path: not UTF-8 (byte N)`` or ``path: larger than ... bytes``.
    OSError
        If the file cannot be read.
    """
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path}: larger than {limit:,} bytes, the most read")
    try:
        return data.removeprefix(codecs.BOM_UTF8).decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 (byte {err.start})") from None


def _pairs(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate field `{key}`")
        out[key] = value
    return out


def _constant(name):
    raise ValueError(f"{name} is not a JSON value")


def finite_float(text: str) -> float:
    """A JSON/CSV number's text as a finite f64.

    Raises
    ------
    ValueError
        If it is out of f64 range (``1e400``) or not finite.
    """
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range for f64")
    return value


def _int(text):
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"integer literal of {len(text.lstrip('-')):,} digits is out of range")
    return int(text)


def _depth(text: str) -> int:
    """Deepest nesting of arrays and objects (outside strings)."""
    import numpy as np  # here: the command line imports this module before NumPy is needed

    bare = np.frombuffer(_STRING.sub("", text).encode(), np.uint8)
    steps = np.isin(bare, np.frombuffer(b"[{", np.uint8)).astype(np.int64) - np.isin(bare, np.frombuffer(b"]}", np.uint8))
    return int(np.cumsum(steps).max(initial=0))


def loads(text: str, where: str):
    """Parse one JSON value strictly.

    Raises
    ------
    ValueError
        ``where: not JSON (...)`` naming the reason and, for syntax errors, the
        column (and the line, in a text of several).
    """
    if text.count("[") + text.count("{") > MAX_DEPTH and _depth(text) > MAX_DEPTH:
        raise ValueError(f"{where}: not JSON (nested deeper than {MAX_DEPTH} levels)")
    hooks = {"object_pairs_hook": _pairs, "parse_constant": _constant}
    shape = text.translate(_SHAPE)
    if _LONG in shape or _BIG_EXPONENT.search(shape):  # only then may a number be out of range: check each
        hooks.update(parse_float=finite_float, parse_int=_int)
    try:
        value = json.loads(text, **hooks)
    except json.JSONDecodeError as err:
        place = f"line {err.lineno}, column {err.colno}" if "\n" in text.strip() else f"column {err.colno}"
        raise ValueError(f"{where}: not JSON ({err.msg.removesuffix(' at')} at {place})") from None
    except (ValueError, RecursionError) as err:
        raise ValueError(f"{where}: not JSON ({err})") from None
    if "\\u" in text and _lone_surrogate(value):  # a pair is one character once decoded
        raise ValueError(f"{where}: not JSON (a lone surrogate in a \\u escape)")
    return value


def jsonable(value):
    """Records to JSON: f32 as the shortest decimal that reads back to it; NumPy ints
    as ints; a non-finite Python float as null (serde_json's choice: JSON has no NaN)."""
    np = sys.modules.get("numpy")  # not loaded: the value holds no NumPy scalar
    if np is not None:
        if isinstance(value, np.floating):
            from mcsa.core.packets import f32_to_json

            return f32_to_json(value)
        if isinstance(value, np.integer):
            return int(value)
        if isinstance(value, np.bool_):
            return bool(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(record: dict) -> str:
    """One JSON object of ``record``'s values made :func:`jsonable`."""
    return json.dumps({k: jsonable(v) for k, v in record.items()}, default=jsonable)


def loads_toml(text: str, where: str) -> dict:
    """Parse a TOML document (configs, profiles).

    Raises
    ------
    ValueError
        ``where: not valid TOML (...)``, nesting too deep for the parser included.
    """
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{where}: not valid TOML ({err})") from None
    except RecursionError:
        raise ValueError(f"{where}: not valid TOML (arrays or tables nested too deep)") from None


def _lone_surrogate(value) -> bool:
    if isinstance(value, str):
        return any("\ud800" <= c <= "\udfff" for c in value)
    if isinstance(value, dict):
        return any(_lone_surrogate(k) or _lone_surrogate(v) for k, v in value.items())
    return isinstance(value, list) and any(map(_lone_surrogate, value))


def unknown_keys(record: dict, known, where: str) -> list[str]:
    """One message per key of ``record`` not in ``known``, with a did-you-mean when one is close."""
    known = list(known)
    notes = []
    for key in record:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.7)
            hint = f" (did you mean `{close[0]}`?)" if close else ""
            notes.append(f"{where}: unknown key `{key}` ignored{hint}")
    return notes
