"""Target profiles: pointer width, RAM, default heap budget, FPU, expf and allocator."""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from typing import NamedTuple
from importlib import resources
from pathlib import Path

import mcsa
from mcsa.core import jsonio
from mcsa.core.checks import check_int

from .allocators import Allocator, allocator_named

FPUS = ("none", "single", "double")
HEAP_LIMIT = (1 << 48) - 1
"""Largest heap modelled on a 64-bit target (the placement simulators' address range)."""
PROFILES_LIMIT = 1 << 20
"""Largest profiles file read, in bytes."""


@dataclass(frozen=True)
class Profile:
    """One microcontroller or host, as a row of a profiles TOML file."""

    name: str
    description: str
    arch: str
    usize_bits: int
    ram: int
    heap_budget: int
    fpu: str
    expf: str
    allocator: Allocator
    source: str
    regions: dict = field(default_factory=dict)
    heap_region: str | None = None
    nan: str = "arm-vfp"

    def target(self, build: str = "release") -> mcsa.Target:
        """The simulator build for this part: its usize width, expf and NaN rules, overflow by ``build``.

        The NaN rules are the row's ``nan`` (a name of :data:`mcsa.NAN_RULES`) when it has
        one, else those of the simulator preset family named by ``arch``, else
        ``soft-float`` for a part without an FPU and ``arm-vfp`` for one with.

        Raises
        ------
        ValueError
            If ``build`` is not ``release`` or ``debug``.
        """
        if build not in ("release", "debug"):
            raise ValueError(f"build must be 'release' or 'debug', got {build!r}")
        return mcsa.Target(self.usize_bits, "wrap" if build == "release" else "panic", self.expf,
                           f"{self.name}-{build}", mcsa.NAN_RULES[self.nan])


def _profile(name: str, row: dict, origin: str) -> Profile:
    where = f"{origin}: [{name}]"
    required = ("description", "arch", "usize_bits", "ram", "heap_budget", "fpu", "expf", "allocator", "source")
    missing = [k for k in required if k not in row]
    if missing:
        raise ValueError(f"{where} is missing {', '.join(missing)}")
    known = set(required) | {"regions", "heap_region", "nan"}
    unknown = sorted(set(row) - known)
    if unknown:
        raise ValueError(f"{where} has unknown field(s) {', '.join(unknown)}")
    for key in ("description", "arch", "fpu", "expf", "allocator", "source"):
        if not isinstance(row[key], str):
            raise ValueError(f"{where} {key} must be a string, got {row[key]!r}")
    for key in ("usize_bits", "ram", "heap_budget"):
        check_int(row[key], f"{where} {key}")
    if row["usize_bits"] not in (32, 64):
        raise ValueError(f"{where} usize_bits must be 32 or 64, got {row['usize_bits']}")
    if row["ram"] > 1 << row["usize_bits"]:
        raise ValueError(f"{where} ram {row['ram']:,} B is more than a {row['usize_bits']}-bit usize addresses")
    if row["fpu"] not in FPUS:
        raise ValueError(f"{where} fpu must be one of {', '.join(FPUS)}, got {row['fpu']!r}")
    try:
        mcsa.ExpF.parse(row["expf"])
        allocator = allocator_named(row["allocator"])
    except ValueError as err:
        raise ValueError(f"{where} {err}") from None
    regions = row.get("regions", {})
    if not isinstance(regions, dict):
        raise ValueError(f"{where} regions must be a table of region sizes in bytes, got {regions!r}")
    for region, size in regions.items():
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= row["ram"]:
            raise ValueError(f"{where} regions.{region} must be a size in bytes from 0 to ram "
                             f"({row['ram']:,}), got {size!r}")
    heap_region = row.get("heap_region")
    if heap_region is not None and not isinstance(heap_region, str):
        raise ValueError(f"{where} heap_region must be the name of one of its regions, got {heap_region!r:.40}")
    if heap_region is not None and heap_region not in regions:
        raise ValueError(f"{where} heap_region {heap_region!r} is not one of its regions")
    room, what = (regions[heap_region], f"its heap_region {heap_region}") if heap_region else (row["ram"], "its ram")
    if row["heap_budget"] > room:
        raise ValueError(f"{where} heap_budget {row['heap_budget']:,} B is larger than {what} ({room:,} B)")
    family = mcsa.PRESETS.get(f"{row['arch']}-release")
    nan = row.get("nan", family.nan.name if family else "soft-float" if row["fpu"] == "none" else "arm-vfp")
    if not isinstance(nan, str) or nan not in mcsa.NAN_RULES:
        raise ValueError(f"{where} nan must be one of {', '.join(mcsa.NAN_RULES)}, got {nan!r}")
    profile = Profile(name, row["description"], row["arch"], row["usize_bits"], row["ram"], row["heap_budget"],
                      row["fpu"], row["expf"], allocator, row["source"], dict(regions), heap_region, nan)
    heap_budget(profile, row["heap_budget"], what=f"{where} heap_budget")
    return profile


def heap_budget(profile: Profile, value: int | None = None, allocator: Allocator | None = None,
                what: str = "heap_budget") -> int:
    """The heap a step of ``profile`` runs in: ``value``, or the profile's own budget.

    The one rule for a budget, whether a profile row, an option or an argument gives
    it. A heap is an arena, not one allocation, so ``isize::MAX`` does not bound it:
    any size the target's ``usize`` counts (at most ``HEAP_LIMIT`` on 64-bit, the
    largest the placement simulators model), and at least what ``allocator`` (default:
    the profile's) needs to set itself up.

    Raises
    ------
    TypeError
        If ``value`` is not an integer.
    ValueError
        If it is out of range, or too small for the allocator; the message starts with ``what``.
    """
    if value is None:
        value = profile.heap_budget
    allocator = allocator or profile.allocator
    value = check_int(value, what, 0, min((1 << profile.usize_bits) - 1, HEAP_LIMIT),
                      f"a heap on a {profile.usize_bits}-bit target")
    least = allocator.min_heap[profile.usize_bits == 64]
    if value < least:
        raise ValueError(f"{what} {value} B is too small for the {allocator.name} allocator, which needs at "
                         f"least {least} B to set up its heap")
    return value


def load_profiles(path: str | Path | None = None) -> dict[str, Profile]:
    """The built-in profiles, overridden and extended by those in ``path``.

    Raises
    ------
    ValueError
        Naming the file and profile of a malformed row, or a file that is not TOML.
    OSError
        If ``path`` cannot be read.
    """
    sources = [("built-in profiles.toml", resources.files("firmware_model").joinpath("profiles.toml").read_text())]
    if path is not None:
        with open(path, "rb") as f:
            data = f.read(PROFILES_LIMIT + 1)
        if len(data) > PROFILES_LIMIT:
            raise ValueError(f"{path}: larger than {PROFILES_LIMIT:,} bytes; not a profiles file")
        try:
            sources.append((str(path), data.removeprefix(codecs.BOM_UTF8).decode("utf-8")))
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}: not UTF-8 (byte {err.start})") from None
    profiles = {}
    for origin, text in sources:
        rows = jsonio.loads_toml(text, origin)
        for name, row in rows.items():
            if not isinstance(row, dict):
                raise ValueError(f"{origin}: {name} must be a table of a profile's fields")
            profiles[name] = _profile(name, row, origin)
    return profiles


def profile_named(name: str, path: str | Path | None = None) -> Profile:
    """One profile by name (from the built-ins and ``path``).

    Raises
    ------
    ValueError
        If there is no such profile.
    """
    profiles = load_profiles(path)
    try:
        return profiles[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; known: {', '.join(profiles)}") from None


BUILDS = ("release", "debug")


class Resolved(NamedTuple):
    """A ``--target`` / ``target=`` name resolved: the simulator build, the profile
    behind it (None for a bare simulator preset) and the build kind."""

    target: mcsa.Target
    profile: Profile | None
    build: str


def resolve_target(name: str, profiles_file: str | Path | None = None) -> Resolved:
    """A target by name: a profile (``stm32f411``, ``stm32f411-debug``; built-in or
    from ``profiles_file``; release by default) or a simulator preset
    (``thumbv7em-debug``, see :data:`mcsa.PRESETS`). A profile wins over a preset
    of the same name, and builds the same target.

    Raises
    ------
    TypeError
        If ``name`` is not a string.
    ValueError
        If ``name`` is neither, listing both kinds; or ``profiles_file`` is malformed.
    OSError
        If ``profiles_file`` cannot be read.
    """
    if not isinstance(name, str):
        raise TypeError(f"target must be a name (str), got {type(name).__name__}")
    profiles = load_profiles(profiles_file)
    base, build = name, "release"
    for kind in BUILDS:
        if name.endswith(f"-{kind}") and name[: -len(kind) - 1] in profiles:
            base, build = name[: -len(kind) - 1], kind
    if base in profiles:
        return Resolved(profiles[base].target(build), profiles[base], build)
    if name in mcsa.PRESETS:
        preset = mcsa.PRESETS[name]
        return Resolved(preset, None, "release" if preset.overflow is mcsa.Overflow.WRAP else "debug")
    raise ValueError(f"unknown target {name!r}; use a profile, optionally with -release or -debug "
                     f"({', '.join(profiles)}), or a simulator preset ({', '.join(mcsa.PRESETS)})")
