"""What the simulator panics with or refuses, and the host-memory guard's limits.

Importable without NumPy or Numba, so that the command line can map outcomes to
exit codes and declare its options before any kernel loads.
"""

from __future__ import annotations

DEFAULT_POSITION_LIMIT = 1 << 27
"""Largest mask built on the host by default: 134,217,728 positions (512 MiB)."""

MAX_HOST_POSITIONS = 1 << 40
"""No position array past this many entries (4 TiB) is attempted, whatever the limit."""

POSITION_BYTES = 4
"""``size_of::<(u16, u16)>()``, and the host bytes of one position or insertion code."""


class TargetPanic(Exception):
    """The simulated target panicked; ``str()`` is Rust's message exactly.

    Examples: ``attempt to add with overflow``, ``attempt to multiply with
    overflow``, ``attempt to divide by zero``, ``capacity overflow``,
    ``index out of bounds: the len is 16 but the index is 16``.
    """

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class MaskTooLarge(ValueError):
    """A mask would hold more positions than the host-memory guard allows.

    Attributes
    ----------
    what : str
        The call, e.g. ``build_mask(seq_len=70000)``.
    count, limit : int
        What it would hold, and the limit.
    noun : str
        What is counted (``positions``, ``insertions``).
    """

    def __init__(self, what: str, count: int, limit: int, noun: str = "positions"):
        self.what, self.count, self.limit, self.noun = what, count, limit, noun
        super().__init__(f"{self.size()}; raise it (position_limit= in Python, --position-limit on the command "
                         "line), or use MincutSparseAttention.mask_stats() for num_positions and density without "
                         "building the mask")

    def __reduce__(self):  # rebuilt from its fields, not its message (a Dask worker sends it back)
        return type(self), (self.what, self.count, self.limit, self.noun)

    def size(self) -> str:
        """``WHAT would hold N NOUN (M MiB on the host), over the position limit of L``."""
        return (f"{self.what} would hold {self.count:,} {self.noun} "
                f"({self.count * POSITION_BYTES / 2**20:,.0f} MiB on the host), "
                f"over the position limit of {self.limit:,}")
