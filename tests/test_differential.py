"""Differential cases from the Rust module itself: the host and wasm32 builds
(tests/golden/differential/, README there; every issue-10 class, every build the
oracle ran) and the microcontroller builds under QEMU (tests/golden/firmware/):
the same bits, panic and, for the firmware, heap figures.

These cases extend the golden format (q, k and v of independent lengths
``q_len``/``k_len``/``v_len``), so they are read here rather than by mcsa.app.verify.
A build with no result, or one marked ``harness_error``, was not asked (a seq_len
beyond its usize, or a call the oracle predicted would not finish): nothing to compare.
``full`` and ``scalar`` cases go through :func:`mcsa.app.verify.simulate` (heap figures
included); elsewhere the heap figures are the heap model's tests' business.
"""

import gzip
import json

import numpy as np
import pytest

from mcsa import GatePacket, MincutSparseAttention, PRESETS, SparsityConfig, Target, TargetPanic
from mcsa.core.target import HOW_KNOWN
from mcsa.app.verify import differences, expected_for, f32_hex, hash_hex, kind_of, qkv_from_spec, simulate

from .conftest import BUILDS, GOLDEN

DIR = GOLDEN / "differential"


FILES = sorted(DIR.glob("*.jsonl.gz"))


def cases(path):
    with gzip.open(path, "rt") as lines:
        return [json.loads(line) for line in lines]


def qkv(case):
    """q, k, v: ``qkv_seq_len * max(dim, 1)`` elements each, or ``q_len``, ``k_len``, ``v_len``."""
    if "qkv_seq_len" in case:
        return qkv_from_spec(case["data"], case["qkv_seq_len"] * max(case["dim"], 1))
    return qkv_from_spec(case["data"], tuple(case[f"{name}_len"] for name in "qkv"))


def stored_form(want, got):
    """``got`` shaped as the corpus stores ``want``: u16 lists past 64 entries as
    ``{"len", "fnv1a64"}``, positions and outputs only where the corpus lists them."""
    got = dict(got)
    for key in ("partition_boundaries", "boundary_tokens"):
        if isinstance(want.get(key), dict) and isinstance(got.get(key), (np.ndarray, list)):
            values = np.asarray(got[key], np.uint16)
            got[key] = {"len": int(values.size), "fnv1a64": hash_hex(values)}
    for key, value in got.items():
        if isinstance(value, np.ndarray):
            got[key] = value.tolist() if key in want else None
    return got


def run(kind, case, target):
    if kind in ("full", "scalar"):
        return simulate(kind, case, target)
    sim = MincutSparseAttention(SparsityConfig.from_dict(case["config"]), target)
    gate = GatePacket.from_dict(case["gate"])
    try:
        if kind == "density":
            return {"density": f32_hex(sim.calculate_density(gate))}
        if kind == "masks":
            mask = sim.build_mask(gate, case["seq_len"])
            return {"panic": None, "num_positions": mask.num_positions, "density": f32_hex(mask.density),
                    "sparsity": f32_hex(mask.sparsity()), "positions_fnv1a64": hash_hex(mask.positions),
                    "partition_boundaries": mask.partition_boundaries, "boundary_tokens": mask.boundary_tokens,
                    "positions": mask.positions}
        mask = sim.build_mask(gate, case["mask_seq_len"])
        q, k, v = qkv(case)
        scale = np.uint32(int(case["scale"], 16)).view(np.float32)
        out = sim.sparse_attention(q, k, v, mask, case["dim"], scale)
        return {"panic": None, "len": out.size, "output_fnv1a64": hash_hex(out),
                "output": np.array([f32_hex(x) for x in out]) if out.size <= 8192 else None}
    except TargetPanic as panic:
        return {"panic": panic.message}


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name.split(".")[0])
def test_differential(path, build):
    target = Target.named(build)
    kind = kind_of(path)
    failures, compared = [], 0
    for number, case in enumerate(cases(path), 1):
        want = dict(case["results"].get(build) or {"harness_error": "not run on this build"})
        if "harness_error" in want:
            continue
        if not want.get("panic"):
            if kind not in ("full", "scalar"):
                want.pop("heap", None)
            if "positions" in case:
                want["positions"] = case["positions"]
            elif "positions_by_build" in case:
                want["positions"] = case["positions_by_build"][build]
        got = stored_form(want, run(kind, case, target))
        compared += 1
        diff = differences(want, got)
        if diff:
            failures.append(f"{path.name}:{number}: " + "; ".join(diff))
    assert compared > 0 or not target.usize_bits == 64, "no case for this build"
    assert not failures, f"{len(failures)} of {compared} cases differ:\n" + "\n".join(failures[:10])


FIRMWARE = sorted((GOLDEN / "firmware").glob("*.jsonl.gz"))
MCU_BUILDS = tuple(f"{arch}-{build}" for arch in ("thumbv7em", "thumbv7m", "thumbv6m", "riscv32imc")
                   for build in ("release", "debug"))


def _behaviour(target: Target) -> tuple:
    """What a simulation depends on: presets equal here give equal results."""
    return target.usize_bits, target.overflow, target.expf, target.nan.code


@pytest.mark.parametrize("path", FIRMWARE, ids=lambda p: p.name.split(".")[0])
def test_firmware_builds(path):
    """The reference module as bare-metal firmware under QEMU (tests/golden/firmware/,
    README there): every case on the eight MCU builds gives what the same-named preset
    gives, heap figures included. Presets that simulate alike (thumbv7m, thumbv6m and
    riscv32imc are all soft-float, 32-bit, libm-rs) are simulated once per case."""
    kind = kind_of(path)
    groups: dict = {}
    for build in MCU_BUILDS:
        groups.setdefault(_behaviour(Target.named(build)), []).append(build)
    failures, compared = [], 0
    for number, case in enumerate(cases(path), 1):
        for builds in groups.values():
            wanted = {b: case["results"][b] for b in builds if "harness_error" not in case["results"][b]}
            if not wanted:
                continue
            got = simulate(kind, case, Target.named(builds[0]))
            for build in wanted:
                want = expected_for(case, build)
                compared += 1
                diff = differences(want, stored_form(want, got))
                if diff:
                    failures.append(f"{path.name}:{number} {build}: " + "; ".join(diff))
    assert compared > 0
    assert not failures, f"{len(failures)} of {compared} results differ:\n" + "\n".join(failures[:10])


def test_how_known_counts_the_corpora():
    """``mcsa targets``' "how known" column states how many cases each measured preset was
    checked on: the results of its build in the corpora."""
    counts: dict = {}
    for path in sorted(GOLDEN.glob("*.jsonl.gz")) + FILES + FIRMWARE:
        for case in cases(path):
            for build, result in case["results"].items():
                if result and "harness_error" not in result:
                    counts[build] = counts.get(build, 0) + 1
    for build in BUILDS + MCU_BUILDS:
        assert HOW_KNOWN[build].startswith("measured:") and HOW_KNOWN[build].endswith(f", {counts[build]:,} cases")
    assert all(HOW_KNOWN[name].startswith("read:") for name in PRESETS if name not in BUILDS + MCU_BUILDS)
