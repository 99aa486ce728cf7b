"""How counts and echoed names are written in messages, tables and summaries (light: no NumPy)."""

from __future__ import annotations

import re

_ESCAPED_BYTE = re.compile(r"(?<!\\)((?:\\\\)*)\\udc([89a-f][0-9a-f])")
"""A surrogate escape in a repr: ``\\udcXX`` after an even run of backslashes."""


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``1 mismatch``, ``2 mismatches``, ``1,024 positions``."""
    return f"{count:,} {noun if count == 1 else nouns or noun + 's'}"


def quoted(text: str) -> str:
    """``repr(text)``, with each byte that was not UTF-8 (a surrogate escape, as
    Python decodes a command line or a file name) shown as the shell shows it:
    ``'stm\\xff32'``, not ``'stm\\udcff32'``."""
    return _ESCAPED_BYTE.sub(r"\1\\x\2", repr(text))
