"""How counts are written in messages, tables and summaries (light: no NumPy)."""

from __future__ import annotations


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``1 mismatch``, ``2 mismatches``, ``1,024 positions``."""
    return f"{count:,} {noun if count == 1 else nouns or noun + 's'}"
