"""What a Rust build does with integers and ``f32::exp``: the simulated target."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from .expf import ExpF


class TargetPanic(Exception):
    """The simulated target panicked; ``str()`` is Rust's message exactly.

    Examples: ``attempt to add with overflow``, ``attempt to multiply with
    overflow``, ``attempt to divide by zero``, ``capacity overflow``,
    ``index out of bounds: the len is 16 but the index is 16``.
    """

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class Overflow(enum.Enum):
    """What integer overflow does in a build.

    WRAP
        Release builds: two's complement wrap-around.
    PANIC
        Debug builds, or release with ``overflow-checks = true``: the
        operation panics with Rust's ``attempt to ... with overflow`` message.
    """

    WRAP = "wrap"
    PANIC = "panic"

    @classmethod
    def parse(cls, value: "Overflow | str") -> "Overflow":
        """Accept an ``Overflow`` or ``"wrap"``/``"panic"``.

        Raises
        ------
        ValueError
            If the name is neither.
        """
        if isinstance(value, cls):
            return value
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"unknown overflow mode {value!r}; expected 'wrap' or 'panic'") from None


@dataclass(frozen=True)
class Target:
    """A build of the reference module: pointer width, overflow mode, libm ``expf``.

    Parameters
    ----------
    usize_bits : {32, 64}
        Width of ``usize`` (the pointer width): 32 on microcontrollers and
        wasm32, 64 on hosts.
    overflow : Overflow or str
        ``"wrap"`` (release) or ``"panic"`` (debug / ``overflow-checks``).
    expf : ExpF or str
        ``"glibc-fma"``, ``"musl"`` or ``"libm-rs"``.
    name : str, optional
        A label for reports; presets carry their own.

    Raises
    ------
    ValueError
        If ``usize_bits`` is not 32 or 64, or a mode name is unknown.
    """

    usize_bits: int = 64
    overflow: Overflow = Overflow.WRAP
    expf: ExpF = ExpF.GLIBC_FMA
    name: str | None = None

    def __post_init__(self):
        if self.usize_bits not in (32, 64) or isinstance(self.usize_bits, bool):
            raise ValueError(f"usize_bits must be 32 or 64, got {self.usize_bits!r}")
        object.__setattr__(self, "overflow", Overflow.parse(self.overflow))
        object.__setattr__(self, "expf", ExpF.parse(self.expf))

    @classmethod
    def named(cls, name: str) -> "Target":
        """A preset build by name; see :data:`PRESETS`.

        Raises
        ------
        ValueError
            If ``name`` is not a preset.
        """
        try:
            return PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown target {name!r}; known targets: {', '.join(PRESETS)}") from None

    def __str__(self) -> str:
        return self.name or f"usize{self.usize_bits}-{self.overflow.value}-{self.expf.value}"

    @property
    def usize_max(self) -> int:
        """``usize::MAX``."""
        return (1 << self.usize_bits) - 1

    @property
    def isize_max(self) -> int:
        """``isize::MAX``, the largest allocation Rust allows in bytes."""
        return (1 << (self.usize_bits - 1)) - 1

    @property
    def panics_on_overflow(self) -> bool:
        """True for debug builds."""
        return self.overflow is Overflow.PANIC

    def check_usize(self, value, what: str) -> int:
        """Validate that ``value`` is an integer that fits this target's ``usize``.

        Raises
        ------
        TypeError
            If ``value`` is not an integer.
        ValueError
            If it is negative or above ``usize::MAX``.
        """
        if isinstance(value, bool) or not hasattr(value, "__index__"):
            raise TypeError(f"{what} must be an integer, got {type(value).__name__}")
        value = int(value)
        if not 0 <= value <= self.usize_max:
            raise ValueError(f"{what} must be in 0..={self.usize_max} (usize on {self}), got {value}")
        return value

    def add(self, a: int, b: int) -> int:
        """``a + b`` on ``usize``: wraps or panics as the build does."""
        return self._overflowing(a + b, "add")

    def mul(self, a: int, b: int) -> int:
        """``a * b`` on ``usize``: wraps or panics as the build does."""
        return self._overflowing(a * b, "multiply")

    def saturating_add(self, a: int, b: int) -> int:
        """``usize::saturating_add``."""
        return min(a + b, self.usize_max)

    def saturating_mul(self, a: int, b: int) -> int:
        """``usize::saturating_mul``."""
        return min(a * b, self.usize_max)

    def _overflowing(self, exact: int, op: str) -> int:
        if exact > self.usize_max and self.panics_on_overflow:
            raise TargetPanic(f"attempt to {op} with overflow")
        return exact & self.usize_max

    def vec_capacity_check(self, initial_capacity: int, final_len: int, elem_size: int) -> None:
        """Panic with ``capacity overflow`` where a ``Vec`` of ``elem_size``-byte
        elements, created ``with_capacity(initial_capacity)`` and pushed to
        ``final_len`` elements, would ask ``Layout`` for more than ``isize::MAX``
        bytes (``RawVec`` growth: double, at least the minimum non-zero capacity).

        Raises
        ------
        TargetPanic
            ``capacity overflow``.
        """
        limit = self.isize_max // elem_size
        cap = initial_capacity
        if cap > limit:
            raise TargetPanic("capacity overflow")
        min_cap = 8 if elem_size == 1 else 4 if elem_size <= 1024 else 1
        while cap < final_len:
            cap = max(cap * 2, cap + 1, min_cap)
            if cap > limit:
                raise TargetPanic("capacity overflow")


PRESETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target(64, Overflow.WRAP, ExpF.GLIBC_FMA, "x86_64-release"),
        Target(64, Overflow.PANIC, ExpF.GLIBC_FMA, "x86_64-debug"),
        Target(32, Overflow.WRAP, ExpF.MUSL, "wasm32-release"),
        Target(32, Overflow.PANIC, ExpF.MUSL, "wasm32-debug"),
        Target(32, Overflow.WRAP, ExpF.LIBM_RS, "thumbv7em-release"),
        Target(32, Overflow.PANIC, ExpF.LIBM_RS, "thumbv7em-debug"),
        Target(32, Overflow.WRAP, ExpF.LIBM_RS, "thumbv7m-release"),
        Target(32, Overflow.PANIC, ExpF.LIBM_RS, "thumbv7m-debug"),
        Target(32, Overflow.WRAP, ExpF.LIBM_RS, "thumbv6m-release"),
        Target(32, Overflow.PANIC, ExpF.LIBM_RS, "thumbv6m-debug"),
        Target(32, Overflow.WRAP, ExpF.LIBM_RS, "riscv32imc-release"),
        Target(32, Overflow.PANIC, ExpF.LIBM_RS, "riscv32imc-debug"),
        Target(32, Overflow.WRAP, ExpF.LIBM_RS, "xtensa-release"),
        Target(32, Overflow.PANIC, ExpF.LIBM_RS, "xtensa-debug"),
        Target(32, Overflow.WRAP, ExpF.LIBM_RS, "wasm32-unknown-release"),
    )
}
"""Simulator presets. ``x86_64-*`` and ``wasm32-*`` are exactly the four golden
builds (glibc on x86-64 with FMA; wasm32-wasi with wasi-libc's musl ``expf``);
``thumbv7em-*`` (Cortex-M4/M7), ``thumbv7m-*`` (Cortex-M3), ``thumbv6m-*``
(Cortex-M0/M0+), ``riscv32imc-*`` and ``xtensa-*`` (ESP32) are ``no_std``
firmware calling the Rust ``libm`` crate, as does ``wasm32-unknown-unknown``."""


def int_as_f32(n: int):
    """Rust ``n as f32`` for an integer of up to 64 bits: one rounding to nearest-even.

    Going through a Python float would round twice for integers above 2^53;
    the bits shifted out are folded into a sticky bit instead.
    """
    if n < 0:
        return -int_as_f32(-n)
    shift = max(n.bit_length() - 53, 0)
    kept = n >> shift
    if n & ((1 << shift) - 1):
        kept |= 1
    return np.float32(float(kept) * 2.0**shift)
