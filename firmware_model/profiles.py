"""Target profiles: pointer width, RAM, default heap budget, FPU, expf and allocator."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import mcsa

from .allocators import Allocator, allocator_named

FPUS = ("none", "single", "double")


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

    def target(self, build: str = "release") -> mcsa.Target:
        """The simulator build for this part: its usize width and expf, overflow by ``build``.

        Raises
        ------
        ValueError
            If ``build`` is not ``release`` or ``debug``.
        """
        if build not in ("release", "debug"):
            raise ValueError(f"build must be 'release' or 'debug', got {build!r}")
        return mcsa.Target(self.usize_bits, "wrap" if build == "release" else "panic", self.expf,
                           f"{self.name}-{build}")


def _profile(name: str, row: dict, origin: str) -> Profile:
    where = f"{origin}: [{name}]"
    required = ("description", "arch", "usize_bits", "ram", "heap_budget", "fpu", "expf", "allocator", "source")
    missing = [k for k in required if k not in row]
    if missing:
        raise ValueError(f"{where} is missing {', '.join(missing)}")
    known = set(required) | {"regions", "heap_region"}
    unknown = sorted(set(row) - known)
    if unknown:
        raise ValueError(f"{where} has unknown field(s) {', '.join(unknown)}")
    for key in ("usize_bits", "ram", "heap_budget"):
        if isinstance(row[key], bool) or not isinstance(row[key], int) or row[key] < 0:
            raise ValueError(f"{where} {key} must be a non-negative integer, got {row[key]!r}")
    if row["usize_bits"] not in (32, 64):
        raise ValueError(f"{where} usize_bits must be 32 or 64, got {row['usize_bits']}")
    if row["fpu"] not in FPUS:
        raise ValueError(f"{where} fpu must be one of {', '.join(FPUS)}, got {row['fpu']!r}")
    try:
        mcsa.ExpF.parse(row["expf"])
        allocator = allocator_named(row["allocator"])
    except ValueError as err:
        raise ValueError(f"{where} {err}") from None
    regions = row.get("regions", {})
    if row.get("heap_region") is not None and row["heap_region"] not in regions:
        raise ValueError(f"{where} heap_region {row['heap_region']!r} is not one of its regions")
    return Profile(name, row["description"], row["arch"], row["usize_bits"], row["ram"], row["heap_budget"],
                   row["fpu"], row["expf"], allocator, row["source"], dict(regions), row.get("heap_region"))


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
        sources.append((str(path), Path(path).read_text(encoding="utf-8")))
    profiles = {}
    for origin, text in sources:
        try:
            rows = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"{origin}: not valid TOML ({err})") from None
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
