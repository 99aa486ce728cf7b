"""Target profiles: pointer width, RAM, default heap budget, FPU, expf and allocator."""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from importlib import resources
from typing import NamedTuple

import mcsa
from mcsa.core import jsonio
from mcsa.core.checks import check_int, parse_byte_size
from mcsa.core.target import PRESETS, name_key, pick_named

from .allocators import ALLOCATORS, Allocator, allocator_named

FPUS = ("none", "single", "double")
FAMILIES = tuple(dict.fromkeys(name.rsplit("-", 1)[0] for name in PRESETS))
"""The simulator preset families a profile's ``arch`` names."""
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

        The NaN rules are the profile's ``nan``, a name of :data:`mcsa.NAN_RULES`.

        Raises
        ------
        ValueError
            If ``build`` is not ``release`` or ``debug``.
        """
        if build not in ("release", "debug"):
            raise ValueError(f"build must be 'release' or 'debug', got {build!r}")
        return mcsa.Target(self.usize_bits, "wrap" if build == "release" else "panic", self.expf,
                           f"{self.name}-{build}", mcsa.NAN_RULES[self.nan])


REQUIRED = ("arch", "ram", "heap_budget", "allocator")
"""The fields a new profile must give; the others default from its ``arch``'s preset."""
OPTIONAL = ("description", "usize_bits", "fpu", "expf", "nan", "source", "regions", "heap_region")
FAMILY_FPU = {"x86_64": "double", "wasm32": "double", "wasm32-unknown": "double", "thumbv7em": "single",
              "thumbv7m": "none", "thumbv6m": "none", "riscv32imc": "none", "xtensa": "single"}
"""The FPU a preset family's parts usually have: a row's ``fpu`` default."""


def _one_of(value, allowed, what: str) -> str:
    """``value`` if it is one of ``allowed`` (strings), else a ValueError naming them and the closest."""
    if isinstance(value, str) and value in allowed:
        return value
    close = difflib.get_close_matches(value, list(allowed), n=1, cutoff=0.6) if isinstance(value, str) else []
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"{what} must be one of {', '.join(allowed)}, got {value!r:.40}{hint}")


def _profile(name: str, row: dict, origin: str, base: dict | None) -> tuple[Profile, dict]:
    """A profile from a TOML row, over the fields ``base`` that the row of that name
    it overrides gave (None for a new profile); returns the profile and the fields
    given by both (what a later override starts from)."""
    where = f"{origin}: [{name}]"
    for key in row:
        if key not in REQUIRED + OPTIONAL:
            close = difflib.get_close_matches(str(key), REQUIRED + OPTIONAL, n=1, cutoff=0.6)
            raise ValueError(f"{where}: unknown key `{key}`" + (f"; did you mean `{close[0]}`?" if close else
                             f"; a profile's keys are {', '.join(REQUIRED + OPTIONAL)}"))
    if base is None:
        missing = [k for k in REQUIRED if k not in row]
        if missing:
            raise ValueError(f"{where} is missing {', '.join(missing)} (a new profile gives {', '.join(REQUIRED)}; "
                             f"a row named after an existing profile changes only the fields it gives)")
    own, given = set(row), {**(base or {}), **row}
    row = dict(given)  # with the defaults filled in below
    family = _one_of(row["arch"], FAMILIES, f"{where} arch")
    preset = PRESETS[f"{family}-release"]
    for key in ("description", "source"):
        row.setdefault(key, "")
        if not isinstance(row[key], str):
            raise ValueError(f"{where} {key} must be a string, got {row[key]!r:.40}")
    bits = check_int(row.setdefault("usize_bits", preset.usize_bits), f"{where} usize_bits")
    if bits != preset.usize_bits:  # every arch has one pointer width
        came = f" (from the {name} this row overrides)" if "usize_bits" not in own else ""
        raise ValueError(f"{where} usize_bits {bits}{came} does not match arch {family}, a "
                         f"{preset.usize_bits}-bit target: give usize_bits = {preset.usize_bits}, or another arch")
    for key in ("ram", "heap_budget"):  # 131072 or "128K", as --heap-budget takes it
        row[key] = parse_byte_size(row[key], f"{where} {key}")
    if row["ram"] > 1 << bits:
        raise ValueError(f"{where} ram {row['ram']:,} B is more than a {bits}-bit usize addresses")
    fpu = _one_of(row.setdefault("fpu", FAMILY_FPU[family]), FPUS, f"{where} fpu")
    expf = _one_of(row.setdefault("expf", preset.expf.value), [e.value for e in mcsa.ExpF], f"{where} expf")
    allocator = allocator_named(_one_of(row["allocator"], list(ALLOCATORS), f"{where} allocator"))
    default_nan = "soft-float" if fpu == "none" else preset.nan.name  # no FPU: compiler-builtins' routines
    nan = _one_of(row.setdefault("nan", default_nan), list(mcsa.NAN_RULES), f"{where} nan")
    regions = row.get("regions", {})
    if not isinstance(regions, dict):
        raise ValueError(f"{where} regions must be a table of region sizes in bytes, got {regions!r}")
    regions = {region: parse_byte_size(size, f"{where} regions.{region}") if isinstance(size, str) else size
               for region, size in regions.items()}
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
    profile = Profile(name, row["description"], family, bits, row["ram"], row["heap_budget"], fpu, expf, allocator,
                      row["source"], dict(regions), heap_region, nan)
    heap_budget(profile, row["heap_budget"], what=f"{where} heap_budget")
    return profile, given


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


def load_profiles(path: str | os.PathLike | None = None) -> dict[str, Profile]:
    """The built-in profiles, overridden and extended by those in ``path``.

    A row of ``path`` named after a profile (case and ``-``/``_`` aside) changes the
    fields it gives and keeps the others; a row of a new name gives at least
    :data:`REQUIRED`, the rest defaulting from its ``arch``'s simulator preset.

    Raises
    ------
    TypeError
        If ``path`` is not a path (an int would be read as a file descriptor).
    ValueError
        Naming the file and profile of a malformed row (an unknown key with the
        closest known one, a value outside its allowed ones), or a file that is not TOML.
    OSError
        If ``path`` cannot be read.
    """
    sources = [("built-in profiles.toml", resources.files("firmware_model").joinpath("profiles.toml").read_text())]
    if path is not None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"profiles file must be a path (str or os.PathLike), got {type(path).__name__}")
        sources.append((str(path), jsonio.read_text(path, PROFILES_LIMIT)))
    profiles: dict[str, Profile] = {}
    given: dict[str, dict] = {}
    for i, (origin, text) in enumerate(sources):
        rows = jsonio.loads_toml(text, origin)
        for name, row in rows.items():
            if not isinstance(row, dict):
                raise ValueError(f"{origin}: {name} must be a table of a profile's fields")
            name = next((known for known in profiles if name_key(known) == name_key(name)), name)
            if name not in profiles and i > 0:  # (the built-in x86_64 and wasm32 are the hosts' presets)
                _check_new_name(name, origin)
            profiles[name], given[name] = _profile(name, row, origin, given.get(name))
    return profiles


def _check_new_name(name: str, origin: str) -> None:
    """Refuse a new profile's name that ``--target`` could never pick: empty, ending in a
    build (``--target NAME-debug`` picks NAME's debug build), or a simulator preset's
    (the row would hide the preset)."""
    key = name_key(name)
    if not key:
        raise ValueError(f"{origin}: [{name!r}]: a profile needs a name")
    build = next((b for b in BUILDS if key.endswith(f"-{b}")), None)
    if build is not None:
        raise ValueError(f"{origin}: [{name}]: a name ending in -{build} cannot be picked (--target "
                         f"{name} means the {build} build of {name[:-len(build) - 1]}): drop the suffix")
    if key in {name_key(family) for family in FAMILIES}:
        raise ValueError(f"{origin}: [{name}] is the name of a simulator preset, which the row would hide: "
                         "name your part otherwise")


def profile_named(name: str, path: str | os.PathLike | None = None) -> Profile:
    """One profile by name (from the built-ins and ``path``), read as
    :func:`mcsa.core.target.pick_named` reads names.

    Raises
    ------
    ValueError
        If there is no such profile, with the closest names.
    """
    return pick_named(name, load_profiles(path), "profile")


BUILDS = ("release", "debug")


class Build(NamedTuple):
    """A ``--target`` name resolved: the simulator target, the profile (for a bare
    simulator preset, :func:`preset_profile`'s) and the build kind."""

    target: mcsa.Target
    profile: Profile
    build: str


def preset_profile(family: str) -> Profile:
    """A simulator preset family (``thumbv7em``) as a profile: a build with no RAM
    figure, whose heap is its whole address space (the largest budget
    :func:`heap_budget` takes) under allocator ``none`` (bytes requested).

    Raises
    ------
    KeyError
        If ``family`` is not a preset family.
    """
    preset = PRESETS[f"{family}-release"]
    bits = preset.usize_bits
    return Profile(family, "simulator preset: no RAM figure, the heap is the whole address space", family, bits,
                   1 << bits, min((1 << bits) - 1, HEAP_LIMIT), FAMILY_FPU[family], preset.expf.value,
                   ALLOCATORS["none"], "mcsa.PRESETS", nan=preset.nan.name)


def build_named(name: str, profiles_file: str | os.PathLike | None = None) -> Build:
    """A target by name: a profile (``stm32f411``, ``stm32f411-debug``; built-in or
    from ``profiles_file``) or a simulator preset (``thumbv7em``, ``thumbv7em-debug``,
    see :data:`mcsa.PRESETS`), read as :func:`mcsa.core.target.pick_named` reads
    names. A profile wins over a preset of the same name (and builds the same target).

    Raises
    ------
    TypeError
        If ``name`` is not a string or ``profiles_file`` not a path.
    ValueError
        If no profile or preset has that name (with the closest names), or
        ``profiles_file`` is malformed.
    OSError
        If ``profiles_file`` cannot be read.
    """
    if not isinstance(name, str):
        raise TypeError(f"target must be a name (str), got {type(name).__name__}")
    known = {full: (full.rsplit("-", 1)[0], None, full.rsplit("-", 1)[1]) for full in PRESETS}
    for profile in load_profiles(profiles_file).values():
        known.update({f"{profile.name}-{build}": (profile.name, profile, build) for build in BUILDS})
    family, profile, build = pick_named(name, known)
    profile = profile or preset_profile(family)
    return Build(profile.target(build), profile, build)


def builtin_targets() -> dict[str, mcsa.Target]:
    """The builds of the built-in profiles by name (``stm32f411-debug``): what
    :meth:`mcsa.Target.named` takes beside the presets (the ``mcsa.targets`` entry point)."""
    return {f"{p.name}-{build}": p.target(build) for p in load_profiles().values() for build in BUILDS}
