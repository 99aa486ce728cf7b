"""What a Rust build does with integers and ``f32::exp``: the simulated target."""

from __future__ import annotations

import difflib
import enum
import functools
from dataclasses import dataclass

import numpy as np

from .checks import check_int, check_name
from .errors import TargetPanic
from .words import quoted


class ExpF(enum.Enum):
    """Which libm ``expf`` a build links.

    GLIBC_FMA
        glibc on x86-64 with an FMA-capable CPU: ARM optimized-routines ``expf``
        (32-entry table, double-precision polynomial) with the reduction
        ``r = InvLn2N * x - kd`` computed as one fused multiply-add.
    MUSL
        The same algorithm with no fused operation (musl, wasi-libc).
    LIBM_RS
        The Rust ``libm`` crate, a port of FreeBSD msun ``e_expf.c`` computed all
        in f32: what ``no_std`` firmware and ``wasm32-unknown-unknown`` call.
    """

    GLIBC_FMA = "glibc-fma"
    MUSL = "musl"
    LIBM_RS = "libm-rs"

    @property
    def code(self) -> int:
        """The small integer the kernels dispatch on."""
        return _CODES[self]

    @classmethod
    def parse(cls, value: "ExpF | str") -> "ExpF":
        """Accept an ``ExpF`` or its name (``"glibc-fma"``, ``"musl"``, ``"libm-rs"``).

        Raises
        ------
        ValueError
            If the name is not one of the three flavours.
        """
        if isinstance(value, cls):
            return value
        try:
            return cls(value)
        except ValueError:
            names = ", ".join(repr(f.value) for f in cls)
            raise ValueError(f"unknown expf flavour {value!r}; expected one of {names}") from None


_CODES = {flavour: i for i, flavour in enumerate(ExpF)}
GLIBC_FMA, MUSL, LIBM_RS = 0, 1, 2
"""The codes of the three flavours, as :mod:`mcsa.core.expf`'s kernels dispatch on them."""


QUIET_BIT = 0x0040_0000
"""The f32 quiet-NaN bit (the most significant fraction bit)."""
SIGN_BIT = 0x8000_0000
"""The f32 sign bit."""


@dataclass(frozen=True)
class NanRules:
    """Which NaN an f32 operation of the reference module returns on a build.

    IEEE 754 leaves the NaN a result carries to the implementation; Rust passes
    that freedom on. The module's f32 operations that can see NaN are the
    ``Linear`` schedule's ``min + x * (max - min)`` and the softmax and weighted
    sum of ``sparse_attention`` (whose NaNs in one row always share one bit
    pattern, so only ``default_nan``, ``propagate`` and ``quiet`` matter there).

    Parameters
    ----------
    name : str
        A label, e.g. ``"x86-sse"``.
    default_nan : int
        The bits of the NaN an invalid operation (``inf - inf``, ``0 * inf``) creates.
    propagate : bool
        A NaN operand's sign and payload are passed on. False: every NaN result is
        ``default_nan`` (ARM ``FPSCR.DN = 1``, RISC-V F).
    quiet : bool
        A passed-on NaN gets its quiet bit set (an FPU with no signalling NaNs passes
        the bits unchanged).
    snan_first : bool
        A signalling NaN operand wins over a quiet one before operand order is
        considered (ARM VFP ``FPProcessNaNs``).
    add_second, sub_second, mul_second : bool
        When both operands of ``a + b``, ``a - b``, ``a * b`` (in the order the Rust
        source writes them) are NaN, the second one's NaN is returned; False: the first.
        This is where code generation shows: x86-64 compiles the schedule's
        ``min + product`` as ``addss product, min`` and SSE returns the first operand
        of the instruction.
    sub_negates : bool
        ``a - b`` is computed as ``a + (-b)`` (soft-float ``__subsf3``), so a NaN
        coming from ``b`` has its sign flipped.
    add_clears_sign : bool
        A NaN that ``a + b`` or ``a - b`` passes on has its sign bit cleared (Rust
        compiler-builtins' ``__addsf3``, which ``__subsf3`` calls, returns
        ``|NaN| | quiet``; its multiply and divide keep the sign).
    source : str
        Where the rules were measured or read.

    Raises
    ------
    TypeError
        If a flag is not a bool or ``default_nan`` not an integer.
    ValueError
        If ``default_nan`` is not the bit pattern of an f32 NaN.
    """

    name: str
    default_nan: int
    propagate: bool = True
    quiet: bool = True
    snan_first: bool = False
    add_second: bool = False
    sub_second: bool = False
    mul_second: bool = False
    sub_negates: bool = False
    add_clears_sign: bool = False
    source: str = ""

    def __post_init__(self):
        if isinstance(self.default_nan, bool) or not isinstance(self.default_nan, (int, np.integer)):
            raise TypeError(f"default_nan must be an integer bit pattern, got {type(self.default_nan).__name__}")
        if not (0 <= self.default_nan <= 0xFFFF_FFFF and self.default_nan & 0x7FFF_FFFF > 0x7F80_0000):
            raise ValueError(f"default_nan must be the bits of an f32 NaN, got {self.default_nan!r}")
        for flag in ("propagate", "quiet", "snan_first", "add_second", "sub_second", "mul_second", "sub_negates",
                     "add_clears_sign"):
            if not isinstance(getattr(self, flag), (bool, np.bool_)):
                raise TypeError(f"{flag} must be a bool, got {type(getattr(self, flag)).__name__}")

    @property
    def code(self) -> tuple:
        """The rules as the int tuple the kernels take."""
        return (int(self.default_nan), int(self.propagate), int(self.quiet), int(self.snan_first),
                int(self.add_second), int(self.sub_second), int(self.mul_second), int(self.sub_negates),
                int(self.add_clears_sign))

    def passed_on(self, nan_bits: int, by_add: bool = False) -> int:
        """The bits of a NaN operand as an operation passes them on alone (an
        add or subtract when ``by_add``)."""
        if not self.propagate:
            return self.default_nan
        bits = nan_bits | QUIET_BIT if self.quiet else nan_bits
        return bits & ~SIGN_BIT if by_add and self.add_clears_sign else bits

    @classmethod
    def named(cls, name: "NanRules | str") -> "NanRules":
        """A rule set of :data:`NAN_RULES` by name (a NanRules passes through).

        Raises
        ------
        ValueError
            If the name is unknown.
        TypeError
            If ``name`` is neither a str nor a NanRules.
        """
        return name if isinstance(name, cls) else check_name(name, NAN_RULES, "nan", "NaN rules")


NAN_RULES: dict[str, NanRules] = {
    r.name: r
    for r in (
        NanRules(
            "x86-sse", 0xFFC0_0000, add_second=True,
            source="measured: x86_64 Rust (release and overflow-checked) against mcsa on ~96,500 "
                   "differential cases and the golden corpus. SSE returns the first operand of the "
                   "instruction when both are NaN (Intel SDM vol. 1, table 4-7) and the 'real "
                   "indefinite' 0xffc00000 for an invalid operation; rustc compiles the Linear "
                   "schedule's `min + product` as `addss product, min`.",
        ),
        NanRules(
            "wasm-wasmtime", 0xFFC0_0000,
            source="measured: wasm32-wasi Rust run under wasmtime on an x86-64 host (golden corpus and "
                   "differential cases): operands in source order, first NaN wins, and an invalid "
                   "operation gives 0xffc00000 (the host's SSE default NaN, not the 0x7fc00000 canonical "
                   "NaN the WebAssembly spec allows; another engine or host may differ).",
        ),
        NanRules(
            "arm-vfp", 0x7FC0_0000, snan_first=True,
            source="measured: thumbv7em-none-eabihf firmware (rustc 1.63) on QEMU mps2-an386 (Cortex-M4F), FPSCR "
                   "at its reset value (DN = 0): a signalling NaN operand first (a, then b), quietened, else the "
                   "first quiet NaN operand unchanged; invalid operations give 0x7fc00000 (ARMv7-M ARM "
                   "FPProcessNaNs, FPDefaultNaN). VADD/VSUB/VMUL keep source operand order; the Linear schedule "
                   "is VSUB then a non-fused VMLA, whose add takes min first.",
        ),
        NanRules(
            "soft-float", 0x7FC0_0000, sub_negates=True, add_clears_sign=True,
            source="measured: thumbv7m, thumbv6m and riscv32imc firmware under QEMU (rustc 1.63, "
                   "compiler_builtins 0.1.70), and read in compiler-builtins, whose add.rs is unchanged since its "
                   "2016 port in every released toolchain we know of: __addsf3 returns "
                   "`a_abs | quiet` when a is NaN, else `b_abs | quiet` (the sign cleared); __subsf3(a, b) is "
                   "__addsf3(a, -b); __mulsf3 and __divsf3 return `a_rep | quiet`, else `b_rep | quiet` (the sign "
                   "kept); inf - inf and 0 * inf give 0x7fc00000. Operands in source order.",
        ),
        NanRules(
            "soft-float-pr1239", 0x7FC0_0000, sub_negates=True,
            source="read, not measured: the same routines with rust-lang/compiler-builtins PR #1239 (\"Preserve "
                   "the NaN sign bit in soft-float addition\", 2026), which makes __addsf3 return `a_rep | quiet` "
                   "(the sign kept) like __mulsf3; __subsf3 is still __addsf3(a, -b), so a NaN from b has its sign "
                   "flipped. For a toolchain whose library/compiler-builtins carries that change: it was not in "
                   "compiler-builtins' main on 2026-08-20 (add.rs still `a_abs | quiet`), so no Rust release up to "
                   "1.99 carries it; 1.100 at the earliest.",
        ),
        NanRules(
            "xtensa-fpu", 0x7FC0_0000, quiet=False,
            source="read, not measured: the ESP32 (Xtensa LX6) floating-point coprocessor as QEMU models "
                   "it (target/xtensa/cpu.c: no signalling NaNs, first NaN operand propagated unchanged, "
                   "default NaN 0x7fc00000). Operands in source order.",
        ),
    )
}
"""NaN rule sets by name; see :class:`NanRules`. Pass one (or your own NanRules)
as ``Target(nan=...)`` to override a preset's."""


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
    nan : NanRules or str
        Which NaN each f32 operation returns (see :class:`NanRules` and
        :data:`NAN_RULES`); default ``"x86-sse"``, the host's.

    Raises
    ------
    TypeError
        If ``usize_bits`` is not an integer, ``name`` not a str, or ``nan`` not
        a NanRules or name.
    ValueError
        If ``usize_bits`` is not 32 or 64, or a mode name is unknown.
    """

    usize_bits: int = 64
    overflow: Overflow = Overflow.WRAP
    expf: ExpF = ExpF.GLIBC_FMA
    name: str | None = None
    nan: NanRules = NAN_RULES["x86-sse"]

    def __post_init__(self):
        if check_int(self.usize_bits, "usize_bits") not in (32, 64):
            raise ValueError(f"usize_bits must be 32 or 64, got {self.usize_bits!r}")
        if self.name is not None and not isinstance(self.name, str):
            raise TypeError(f"name must be a str, got {type(self.name).__name__}")
        object.__setattr__(self, "usize_bits", int(self.usize_bits))
        object.__setattr__(self, "overflow", Overflow.parse(self.overflow))
        object.__setattr__(self, "expf", ExpF.parse(self.expf))
        object.__setattr__(self, "nan", NanRules.named(self.nan))

    @classmethod
    def named(cls, name: str) -> "Target":
        """A build by name: a preset (:data:`PRESETS`) or a profile of a package
        that provides more names (firmware_model's ``stm32f411``, ``stm32f411-debug``).

        Names are read as :func:`pick_named` reads them: case-insensitive, ``-``
        and ``_`` alike, and a name without ``-release``/``-debug`` means its release build.

        Raises
        ------
        TypeError
            If ``name`` is not a str.
        ValueError
            If no build has that name, with the closest names.
        """
        if not isinstance(name, str):
            raise TypeError(f"target must be a Target or a build name (str), got {type(name).__name__}")
        preset = PRESETS.get(name)
        return preset if preset is not None else pick_named(name, {**_provided_targets(), **PRESETS})

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
        return check_int(value, what, 0, self.usize_max, f"usize on {self}")

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


PRESETS: dict[str, Target] = {
    f"{arch}-{build}": Target(bits, Overflow.WRAP if build == "release" else Overflow.PANIC, expf,
                               f"{arch}-{build}", NAN_RULES[nan])
    for arch, bits, expf, nan, builds in (
        ("x86_64", 64, ExpF.GLIBC_FMA, "x86-sse", ("release", "debug")),
        ("wasm32", 32, ExpF.MUSL, "wasm-wasmtime", ("release", "debug")),
        ("thumbv7em", 32, ExpF.LIBM_RS, "arm-vfp", ("release", "debug")),
        ("thumbv7m", 32, ExpF.LIBM_RS, "soft-float", ("release", "debug")),
        ("thumbv6m", 32, ExpF.LIBM_RS, "soft-float", ("release", "debug")),
        ("riscv32imc", 32, ExpF.LIBM_RS, "soft-float", ("release", "debug")),
        ("xtensa", 32, ExpF.LIBM_RS, "xtensa-fpu", ("release", "debug")),
        ("wasm32-unknown", 32, ExpF.LIBM_RS, "wasm-wasmtime", ("release",)),
    )
    for build in builds
}
"""Simulator presets. ``x86_64-*`` and ``wasm32-*`` are exactly the four golden
builds (glibc on x86-64 with FMA; wasm32-wasi with wasi-libc's musl ``expf``);
``thumbv7em-*`` (Cortex-M4/M7), ``thumbv7m-*`` (Cortex-M3), ``thumbv6m-*``
(Cortex-M0/M0+), ``riscv32imc-*`` and ``xtensa-*`` (ESP32) are ``no_std``
firmware calling the Rust ``libm`` crate, as does ``wasm32-unknown-unknown``.
How each is known: :data:`HOW_KNOWN`."""

FIRMWARE_TOOLCHAIN = "rustc 1.63, compiler_builtins 0.1.70, libm 0.2.1"
"""The toolchain of the firmware builds measured under QEMU (tests/golden/firmware/)."""

_MEASURED = {  # preset family: (where, cases compared per build: release, debug)
    "x86_64": ("Rust binary on x86-64", 13917, 13970),
    "wasm32": ("wasmtime (wasm32-wasi)", 13056, 13086),
    "thumbv7em": ("QEMU mps2-an386 (M4F)", 21975, 22082),
    "thumbv7m": ("QEMU mps2-an385 (M3)", 21975, 22082),
    "thumbv6m": ("QEMU mps2-an385 (v6-M)", 21975, 22082),
    "riscv32imc": ("QEMU virt (rv32imc)", 22013, 22120),
}
HOW_KNOWN: dict[str, str] = {
    name: (f"measured: {_MEASURED[arch][0]}, {_MEASURED[arch][1 if name.endswith('release') else 2]:,} cases"
           if arch in _MEASURED else "read: QEMU's Xtensa model (no Xtensa rustc)" if arch == "xtensa" else
           "read: wasm32's rules, the libm crate's expf")
    for name, arch in ((name, name.rsplit("-", 1)[0]) for name in PRESETS)
}
"""How each preset's behaviour is known: measured against the reference module built
for that target (the golden, differential and firmware corpora of tests/golden/; the
firmware builds with :data:`FIRMWARE_TOOLCHAIN`), or read from manuals and sources."""


def resolve_target(target: "Target | str | None") -> Target:
    """A :class:`Target` from a name (see :meth:`Target.named`), a Target, or None
    (the host, ``x86_64-release``).

    Raises
    ------
    ValueError
        If the name is unknown.
    TypeError
        If ``target`` is of another type.
    """
    if target is None:
        return PRESETS["x86_64-release"]
    if isinstance(target, Target):
        return target
    return Target.named(target)


TARGET_PROVIDERS = "mcsa.targets"
"""The entry-point group through which a package names more builds: each entry
point is a function returning ``{name: Target}`` (firmware_model registers its
profiles there), so that :meth:`Target.named` takes them with no import of that package."""


@functools.cache
def _provided_targets() -> dict[str, Target]:
    from importlib.metadata import entry_points

    found: dict[str, Target] = {}
    for entry in entry_points(group=TARGET_PROVIDERS):
        found.update(entry.load()())
    return found


def name_key(name: str) -> str:
    """A build name as names are compared: case folded, ``_`` read as ``-``."""
    return name.strip().lower().replace("_", "-")


def pick_named(name: str, known: dict, what: str = "target"):
    """The value of ``known`` (keyed by full build names: ``stm32f411-debug``,
    ``thumbv7em-release``) that ``name`` names: case-insensitive, ``-`` and ``_``
    alike, a name without ``-release``/``-debug`` meaning its release build, and
    separators optional where that leaves one build (``esp32-s3`` for ``esp32s3``).

    Raises
    ------
    ValueError
        ``unknown WHAT NAME; did you mean A or B?`` with up to four close names,
        bare names for release builds.
    """
    keys = {name_key(full): full for full in known}
    key = name_key(name)
    wanted = [key] if key.endswith(("-release", "-debug")) else [key, f"{key}-release"]
    for candidate in wanted:
        if candidate in keys:
            return known[keys[candidate]]
    loose: dict[str, list] = {}
    for k, full in keys.items():
        loose.setdefault(k.replace("-", ""), []).append(full)
    for candidate in wanted:
        found = loose.get(candidate.replace("-", ""), [])
        if len(found) == 1:
            return known[found[0]]
    if difflib.get_close_matches(key.rsplit("-", 1)[-1], ["debug"], cutoff=0.6):  # offer debug builds
        shown = {k: full for k, full in keys.items() if k.endswith("-debug")}
    else:  # offer release builds by their bare names
        shown = {k.removesuffix("-release"): full.removesuffix("-release") for k, full in keys.items()
                 if not k.endswith("-debug")}
    names = [shown[c] for c in difflib.get_close_matches(key.removesuffix("-release"), list(shown), n=4, cutoff=0.6)]
    if names:
        hint = "did you mean " + (names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]) + "?"
    else:
        hint = f"no {what} has a close name"
    raise ValueError(f"unknown {what} {quoted(name)}; {hint} (`mcsa targets` lists every profile and preset)")


def f32_of(value, what: str) -> np.float32:
    """A Python or NumPy real number as the f32 a Rust caller passes: a float
    rounded once to f32 (to infinity past its range), an integer rounded to
    nearest-even.

    Raises
    ------
    TypeError
        If ``value`` is not a real number (None, a str, a list, a bool...); the message names ``what``.
    ValueError
        If an integer is beyond every float's range (e.g. ``10**400``).
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{what} must be a real number (an f32), got {type(value).__name__} {value!r:.40}")
    if isinstance(value, (int, np.integer)):
        value = int(value)
        if abs(value).bit_length() > 1024:
            raise ValueError(f"{what} must be a number within f64 range, got an integer of {value.bit_length()} bits")
        return int_as_f32(value)
    with np.errstate(over="ignore"):
        return np.float32(value)


def int_as_f32(n: int):
    """Rust ``n as f32`` for an integer of up to 64 bits: one rounding to nearest-even.

    Going through a Python float would round twice for integers above 2^53;
    the bits shifted out are folded into a sticky bit instead.
    """
    if -(1 << 53) <= n <= 1 << 53:
        return np.float32(float(n))  # exact in a double: one rounding, to f32
    if n < 0:
        return -int_as_f32(-n)
    shift = max(n.bit_length() - 53, 0)
    kept = n >> shift
    if n & ((1 << shift) - 1):
        kept |= 1
    return np.float32(float(kept) * 2.0**shift)
