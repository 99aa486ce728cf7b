"""The gate packet and the sparsity configuration, with their serde JSON forms."""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field, fields

import numpy as np

from .checks import check_bool, check_uint
from .target import Overflow, Target, TargetPanic, f32_of, resolve_target

U16_MAX = 0xFFFF
U32_MAX = 0xFFFF_FFFF

PACKET_LAYOUT = (
    ("lambda", 32), ("lambda_prev", 32), ("boundary_edges", 16),
    ("boundary_concentration_q15", 16), ("partition_count", 16), ("flags", 16),
)
"""``GatePacket``'s ``repr(C)`` fields in order, as serde names them, with their
unsigned widths in bits: 16 bytes, no padding, little-endian. The struct format,
the NumPy dtype, the field list and the range checks all come from here."""
FIELDS = tuple(name for name, _ in PACKET_LAYOUT)
"""The packet's serde field names, in struct order."""
PACKET_DTYPE = np.dtype([(name, f"<u{bits // 8}") for name, bits in PACKET_LAYOUT])
"""The packet as a NumPy structured dtype (a ``.bin`` trace is an array of it)."""
_ATTRIBUTES = tuple("lambda_" if name == "lambda" else name for name in FIELDS)
_MAXIMA = tuple((1 << bits) - 1 for _, bits in PACKET_LAYOUT)

FORCE_SAFE = 1 << 0
SKIP = 1 << 1
BOUNDARY_IDS_AVAILABLE = 1 << 2


def _require(record, names, what: str):
    """``names`` after checking that ``record`` is a JSON object holding all of them
    (other keys are ignored, as serde does).

    Raises
    ------
    TypeError
        If ``record`` is not a dict.
    ValueError
        Naming the missing fields.
    """
    if not isinstance(record, dict):
        raise TypeError(f"{what} must be a JSON object, got {type(record).__name__}")
    missing = [n for n in names if n not in record]
    if missing:
        raise ValueError(f"{what} is missing field(s): {', '.join(missing)}")
    return names


F32_BITS = re.compile(r"[0-9a-fA-F]{8}")
"""An f32 bit pattern as the golden files write it: exactly 8 hex digits."""


def f32_from_json(value, what: str) -> np.float32:
    """An f32 from JSON: a number, or an 8-hex-digit bit pattern string (golden form).

    Raises
    ------
    TypeError
        If ``value`` is neither.
    ValueError
        If the string is not 8 hex digits, or an integer is beyond f64 range.
    """
    if isinstance(value, str):
        if not F32_BITS.fullmatch(value):  # int(value, 16) would take "0x3dcccc", "-0000001", "3dcc_ccc", fullwidth digits
            raise ValueError(f"{what} bit pattern must be 8 hex digits, got {value!r:.40}")
        return np.uint32(int(value, 16)).view(np.float32)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{what} must be a number or an f32 bit pattern, got {type(value).__name__} {value!r:.40}")
    return f32_of(value, what)


_F32 = struct.Struct("<f")


def shortest_f32(value: float) -> str:
    """The shortest decimal that reads back to the same finite f32 (as serde_json
    and NumPy print it). Fewer digits never round-trip when more do not, so the
    search goes up from 6 digits and, if 6 suffice, down."""
    packed = _F32.pack(value)
    text = f"{value:.6g}"
    if _F32.pack(float(text)) == packed:
        for digits in range(5, 0, -1):
            shorter = f"{value:.{digits}g}"
            if _F32.pack(float(shorter)) != packed:
                break
            text = shorter
        return text
    for digits in (7, 8):
        text = f"{value:.{digits}g}"
        if _F32.pack(float(text)) == packed:
            return text
    return f"{value:.9g}"


def f32_to_json(value: np.float32, as_bits: bool = False) -> float | str:
    """An f32 for JSON: the shortest decimal that reads back to the same f32
    (serde_json's form), or its 8-hex-digit bit pattern when ``as_bits`` or
    when the value is not finite (JSON has no NaN or infinity)."""
    value = np.float32(value)
    if as_bits or not np.isfinite(value):
        return f"{int(value.view(np.uint32)):08x}"
    return float(shortest_f32(float(value)))


@dataclass(frozen=True)
class GatePacket:
    """The 16-byte ``repr(C)`` packet a min-cut coherence controller sends.

    Parameters
    ----------
    lambda_ : int
        Current min-cut value (u32; serde key ``"lambda"``).
    lambda_prev : int
        Previous lambda (u32).
    boundary_edges : int
        Edges crossing partition boundaries (u16).
    boundary_concentration_q15 : int
        Q15 concentration (u16; any value accepted, as in Rust).
    partition_count : int
        Partitions in the current graph state (u16).
    flags : int
        Bit 0 FORCE_SAFE, bit 1 SKIP, bit 2 BOUNDARY_IDS_AVAILABLE (u16).

    Raises
    ------
    TypeError
        If a field is not an integer.
    ValueError
        If a field is out of range for its Rust type; the message names it.
    """

    lambda_: int = 0
    lambda_prev: int = 0
    boundary_edges: int = 0
    boundary_concentration_q15: int = 0
    partition_count: int = 0
    flags: int = 0

    STRUCT = struct.Struct("<" + "".join("I" if bits == 32 else "H" for _, bits in PACKET_LAYOUT))
    """The little-endian ``repr(C)`` layout: 16 bytes, no padding."""

    def __post_init__(self):
        for json_name, name, maximum in zip(FIELDS, _ATTRIBUTES, _MAXIMA):
            object.__setattr__(self, name, check_uint(getattr(self, name), json_name, maximum))

    @classmethod
    def from_dict(cls, record: dict) -> "GatePacket":
        """Read serde's JSON form (``{"lambda": ..., "lambda_prev": ..., ...}``).

        Raises
        ------
        ValueError
            If a field is missing or out of range (other keys are ignored, as serde does).
        TypeError
            If a field has the wrong type.
        """
        return cls(*(record[n] for n in _require(record, FIELDS, "gate packet")))

    @classmethod
    def values_from_dict(cls, record: dict) -> tuple:
        """The six field values of serde's JSON form, validated, without building a
        packet (the fast path of trace replay); errors as :meth:`from_dict`.

        Raises
        ------
        ValueError, TypeError
            As :meth:`from_dict`.
        """
        try:
            values = tuple(record[n] for n in FIELDS)
        except (KeyError, TypeError):
            values = ()
        if values and all(type(v) is int and 0 <= v <= m for v, m in zip(values, _MAXIMA)):
            return values
        return cls.from_dict(record).values()

    def to_dict(self) -> dict:
        """serde's JSON form, key ``"lambda"`` for ``lambda_``."""
        return dict(zip(FIELDS, self.values()))

    @classmethod
    def from_bytes(cls, data: bytes) -> "GatePacket":
        """Read the 16-byte little-endian ``repr(C)`` struct.

        Raises
        ------
        ValueError
            If ``data`` is not exactly 16 bytes.
        """
        if len(data) != cls.STRUCT.size:
            raise ValueError(f"a GatePacket is {cls.STRUCT.size} bytes, got {len(data)}")
        return cls(*cls.STRUCT.unpack(data))

    def values(self) -> tuple:
        """The six fields in struct order."""
        return (self.lambda_, self.lambda_prev, self.boundary_edges, self.boundary_concentration_q15,
                self.partition_count, self.flags)

    def to_bytes(self) -> bytes:
        """The 16-byte little-endian ``repr(C)`` struct."""
        return self.STRUCT.pack(*self.values())

    def lambda_delta(self, target: Target | str | None = None) -> int:
        """``lambda as i32 - lambda_prev as i32``: wraps in release, panics in debug.

        Parameters
        ----------
        target : Target or str, optional
            The build; default wraps (release).

        Raises
        ------
        TargetPanic
            ``attempt to subtract with overflow`` on a debug target.
        """
        a = self.lambda_ - (1 << 32) if self.lambda_ >= 1 << 31 else self.lambda_
        b = self.lambda_prev - (1 << 32) if self.lambda_prev >= 1 << 31 else self.lambda_prev
        exact = a - b
        wrapped = ((exact + (1 << 31)) & U32_MAX) - (1 << 31)
        if target is not None:
            target = resolve_target(target)
            if wrapped != exact and target.overflow is Overflow.PANIC:
                raise TargetPanic("attempt to subtract with overflow")
        return wrapped

    def drop_ratio_q15(self) -> int:
        """Q15 relative drop of lambda: 0 unless ``lambda < lambda_prev``."""
        if self.lambda_prev == 0 or self.lambda_ >= self.lambda_prev:
            return 0
        return ((self.lambda_prev - self.lambda_) * 32768 // self.lambda_prev) & U16_MAX

    def force_safe(self) -> bool:
        """Flag bit 0."""
        return bool(self.flags & FORCE_SAFE)

    def skip_requested(self) -> bool:
        """Flag bit 1."""
        return bool(self.flags & SKIP)

    def boundary_ids_available(self) -> bool:
        """Flag bit 2."""
        return bool(self.flags & BOUNDARY_IDS_AVAILABLE)




@dataclass(frozen=True)
class Adaptive:
    """``LambdaDensitySchedule::Adaptive``: lambda, boundary and partition driven."""

    KIND = 1

    def to_json(self, f32_as_bits: bool = False):
        return "Adaptive"


@dataclass(frozen=True)
class Linear:
    """``LambdaDensitySchedule::Linear``: interpolate over lambda in [30, 300].

    ``min_density`` and ``max_density`` are held as float32 (any f32, NaN and
    infinities included).

    Raises
    ------
    TypeError
        If a density is not a number or an f32 bit-pattern string.
    ValueError
        If a density is a malformed bit pattern or an integer beyond f64 range.
    """

    KIND = 2
    min_density: np.float32 = np.float32(0.1)
    max_density: np.float32 = np.float32(0.9)

    def __post_init__(self):
        for name in ("min_density", "max_density"):
            object.__setattr__(self, name, f32_from_json(getattr(self, name), name))

    def to_json(self, f32_as_bits: bool = False):
        return {"Linear": {n: f32_to_json(getattr(self, n), f32_as_bits) for n in ("min_density", "max_density")}}

    def __eq__(self, other):
        return isinstance(other, Linear) and all(
            getattr(self, n).view(np.uint32) == getattr(other, n).view(np.uint32)
            for n in ("min_density", "max_density")
        )

    def __hash__(self):
        return hash((int(self.min_density.view(np.uint32)), int(self.max_density.view(np.uint32))))


@dataclass(frozen=True)
class Threshold:
    """``LambdaDensitySchedule::Threshold``: 0.9 when lambda >= threshold, else 0.1.

    Raises
    ------
    ValueError
        If ``dense_above_lambda`` is outside u32.
    """

    KIND = 3
    dense_above_lambda: int = 150

    def __post_init__(self):
        object.__setattr__(
            self, "dense_above_lambda", check_uint(self.dense_above_lambda, "dense_above_lambda", U32_MAX)
        )

    def to_json(self, f32_as_bits: bool = False):
        return {"Threshold": {"dense_above_lambda": self.dense_above_lambda}}


Schedule = Adaptive | Linear | Threshold


def schedule_from_json(value) -> Schedule | None:
    """Read serde's externally tagged ``Option<LambdaDensitySchedule>``.

    Raises
    ------
    ValueError
        If the tag or its fields are not a known schedule.
    """
    if value is None:
        return None
    if value == "Adaptive":
        return Adaptive()
    if isinstance(value, dict) and len(value) == 1:
        (tag, body), = value.items()
        if tag in ("Linear", "Threshold") and isinstance(body, dict):
            cls = Linear if tag == "Linear" else Threshold
            expected = {f.name for f in fields(cls)}
            if set(body) != expected:
                raise ValueError(f"lambda_based_density.{tag} needs exactly the fields {sorted(expected)}, got {sorted(body)}")
            return cls(**body)
    raise ValueError(
        "lambda_based_density must be null, \"Adaptive\", {\"Linear\": {...}} or {\"Threshold\": {...}}, "
        f"got {value!r}"
    )


@dataclass(frozen=True)
class SparsityConfig:
    """``SparsityConfig`` with Rust's defaults.

    ``min_density_q15`` and ``max_density_q15`` are carried for fidelity; the
    reference module never reads them.

    Raises
    ------
    TypeError
        If a field has the wrong type.
    ValueError
        If an integer field is out of range for its Rust type.
    """

    intra_partition_attention: bool = True
    boundary_cross_attention: bool = True
    lambda_based_density: Schedule | None = field(default_factory=Adaptive)
    max_cross_partition_edges: int = 20
    min_density_q15: int = 3277
    max_density_q15: int = 29491

    def __post_init__(self):
        for name in ("intra_partition_attention", "boundary_cross_attention"):
            object.__setattr__(self, name, check_bool(getattr(self, name), name))
        for name in ("max_cross_partition_edges", "min_density_q15", "max_density_q15"):
            object.__setattr__(self, name, check_uint(getattr(self, name), name, U16_MAX))
        if self.lambda_based_density is not None and not isinstance(self.lambda_based_density, Schedule):
            raise TypeError(
                "lambda_based_density must be Adaptive(), Linear(...), Threshold(...) or None, "
                f"got {self.lambda_based_density!r}"
            )

    @classmethod
    def from_dict(cls, record: dict) -> "SparsityConfig":
        """Read serde's JSON form, all six fields (Linear densities may be numbers or f32
        bit patterns; other keys are ignored, as serde does).

        Raises
        ------
        TypeError, ValueError
            As :meth:`GatePacket.from_dict`, and for a ``lambda_based_density`` that is not
            a schedule (:func:`schedule_from_json`).
        """
        values = {n: record[n] for n in _require(record, [f.name for f in fields(cls)], "sparsity config")}
        values["lambda_based_density"] = schedule_from_json(record["lambda_based_density"])
        return cls(**values)

    def to_dict(self, f32_as_bits: bool = False) -> dict:
        """serde's JSON form (Linear densities as bit patterns when ``f32_as_bits``)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        sched = self.lambda_based_density
        out["lambda_based_density"] = None if sched is None else sched.to_json(f32_as_bits)
        return out
