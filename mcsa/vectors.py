"""Conformance vectors in the golden format: read a case, simulate it, compare.

A vectors file is gzip-compressed (or plain) JSON Lines, one case a line; its
kind (``density``, ``masks``, ``full``, ``scalar``, ``attention``) is told by its
name. Each case's ``results`` maps a build key to that build's result; f32
values are 8-hex-digit bit patterns and hashes 16-hex-digit FNV-1a 64.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Iterator

import numpy as np

from .attention import MincutSparseAttention
from .fnv import fnv1a64
from .mask import MaskStats, SparseMask
from .packets import GatePacket, SparsityConfig, f32_from_json
from .target import Target, TargetPanic
from .traces import json_object

KINDS = ("density", "masks", "full", "scalar", "attention")
OUTPUT_LIST_LIMIT = 8192
"""Outputs with at most this many elements are listed in full."""
POSITIONS_LIST_LIMIT = 4096
"""Masks with at most this many positions are listed in full."""


def kind_of(path: str | Path) -> str:
    """The case kind a vectors file holds, from its name (``masks.jsonl.gz`` → ``masks``).

    Raises
    ------
    ValueError
        If the name does not start with a known kind.
    """
    stem = Path(path).name.split(".")[0]
    for kind in KINDS:
        if stem.startswith(kind):
            return kind
    raise ValueError(f"{path}: cannot tell the case kind from the file name; it must start with one of {', '.join(KINDS)}")


def read_cases(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, case)`` from a JSON Lines file, gzip or plain.

    Raises
    ------
    ValueError
        Naming the file and line of a line that is not a JSON object.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if line.strip():
                yield number, json_object(line, f"{path}:{number}")


def f32_hex(value) -> str:
    """An f32 as its 8-hex-digit bit pattern."""
    return f"{int(np.float32(value).view(np.uint32)):08x}"


def hash_hex(array: np.ndarray) -> str:
    """FNV-1a 64 of an array's bytes, as 16 hex digits."""
    return f"{fnv1a64(array):016x}"


def splitmix64(seed: int, count: int) -> np.ndarray:
    """``count`` outputs of SplitMix64 seeded with ``seed``, as uint64."""
    gamma = np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + gamma * np.arange(1, count + 1, dtype=np.uint64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def qkv_from_spec(spec: str, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """q, k, v of ``count`` int8 each from a golden ``data`` string.

    ``r<seed>``: SplitMix64 low bytes, q then k then v; ``c<a>,<b>,<c>``: constant
    fills; ``h<q>,<k>,<v>``: hex bytes.

    Raises
    ------
    ValueError
        If the spec is malformed or hex data has the wrong length.
    """
    try:
        if spec.startswith("r"):
            data = (splitmix64(int(spec[1:]), 3 * count) & np.uint64(0xFF)).astype(np.uint8).view(np.int8)
            return data[:count], data[count : 2 * count], data[2 * count :]
        parts = spec[1:].split(",")
        if spec.startswith("c") and len(parts) == 3:
            return tuple(np.full(count, int(p), np.int8) for p in parts)
        if spec.startswith("h") and len(parts) == 3:
            arrays = tuple(np.frombuffer(bytes.fromhex(p), np.int8) for p in parts)
            if all(a.size == count for a in arrays):
                return arrays
    except ValueError:
        pass
    raise ValueError(f"bad data spec {spec!r} for {count} elements")


def _panic_or(fn) -> dict:
    try:
        return {"panic": None, **fn()}
    except TargetPanic as panic:
        return {"panic": panic.message}


def simulate(kind: str, case: dict, target: Target) -> dict:
    """Run one case on a target; the result in the golden format, with the
    ``heap`` figures of :mod:`firmware_model.heap` for masks, full and attention.

    Raises
    ------
    ValueError, TypeError
        If the case is malformed (a missing or invalid field).
    """
    from firmware_model import heap  # the heap model builds on this package

    bits = target.usize_bits
    if kind == "density":
        sim = MincutSparseAttention(SparsityConfig.from_dict(case["config"]), target)
        return {"density": f32_hex(sim.calculate_density(GatePacket.from_dict(case["gate"])))}
    if kind == "scalar":
        sim = MincutSparseAttention(target=target)
        stats = MaskStats(True, int(case["num_positions"]), np.float32(0), np.zeros(0), np.zeros(0))
        out = {}
        for name, call in (
            ("flops_ratio", lambda: f32_hex(sim.estimated_flops_ratio(stats, case["seq_len"]))),
            ("max_positions", lambda: SparseMask.empty().max_positions(case["seq_len"], target)),
        ):
            try:
                out[name], out[f"{name}_panic"] = call(), None
            except TargetPanic as panic:
                out[name], out[f"{name}_panic"] = None, panic.message
        return out
    if kind == "full":
        def full():
            mask = SparseMask.full(case["seq_len"], target)
            return {
                "num_positions": mask.num_positions,
                "positions_fnv1a64": hash_hex(mask.positions),
                "heap": heap.full_mask_usage(case["seq_len"], bits).as_dict(),
            }

        return _panic_or(full)
    if kind == "masks":
        sim = MincutSparseAttention(SparsityConfig.from_dict(case["config"]), target)

        def masks():
            gate = GatePacket.from_dict(case["gate"])
            mask = sim.build_mask(gate, case["seq_len"])
            out = {
                "num_positions": mask.num_positions,
                "density": f32_hex(mask.density),
                "sparsity": f32_hex(mask.sparsity()),
                "positions_fnv1a64": hash_hex(mask.positions),
                "partition_boundaries": mask.partition_boundaries.tolist(),
                "boundary_tokens": mask.boundary_tokens.tolist(),
                "heap": heap.build_mask_usage(sim.config, gate, case["seq_len"], bits).as_dict(),
            }
            if mask.num_positions <= POSITIONS_LIST_LIMIT:
                out["positions"] = mask.positions.tolist()
            return out

        return _panic_or(masks)
    if kind == "attention":
        sim = MincutSparseAttention(SparsityConfig.from_dict(case["config"]), target)
        dim = case["dim"]
        q, k, v = qkv_from_spec(case["data"], case["qkv_seq_len"] * max(dim, 1))

        def attention():
            mask = sim.build_mask(GatePacket.from_dict(case["gate"]), case["mask_seq_len"])
            scale = f32_from_json(case["scale"], "scale")
            output = sim.sparse_attention(q, k, v, mask, dim, scale)
            out = {
                "len": output.size,
                "output_fnv1a64": hash_hex(output),
                "heap": heap.sparse_attention_usage(mask, case["qkv_seq_len"], dim, bits).as_dict(),
            }
            if output.size <= OUTPUT_LIST_LIMIT:
                out["output"] = [f32_hex(x) for x in output]
            return out

        return _panic_or(attention)
    raise ValueError(f"unknown case kind {kind!r}")


def expected_for(case: dict, build: str) -> dict:
    """A case's expected result for one build, with listed positions folded in
    (a build that panicked has none).

    Raises
    ------
    KeyError
        If the case has no result for ``build``.
    """
    expected = dict(case["results"][build])
    if expected.get("panic"):
        return expected
    if "positions" in case:
        expected["positions"] = case["positions"]
    elif "positions_by_build" in case:
        expected["positions"] = case["positions_by_build"][build]
    return expected


def differences(expected: dict, got: dict, prefix: str = "") -> list[str]:
    """Fields where ``got`` differs from ``expected``; only the fields that
    ``expected`` holds are compared, nested objects (``heap``) field by field."""
    out = []
    for key, want in expected.items():
        have = got.get(key)
        if isinstance(want, dict) and isinstance(have, dict):
            out += differences(want, have, f"{prefix}{key}.")
        elif have != want:
            out.append(f"{prefix}{key}: expected {_short(want)}, got {_short(have)}")
    return out


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 120 else text[:117] + "..."
