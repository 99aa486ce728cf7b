"""Differential cases from the Rust module itself (tests/golden/differential/, README
there): every issue-10 class, every build the oracle ran, the same bits or panic.

These cases extend the golden format (q, k and v of independent lengths
``q_len``/``k_len``/``v_len``), so they are read here rather than by mcsa.vectors.
A result marked ``harness_error`` is a seq_len beyond that build's usize: the
build was not asked, and there is nothing to compare.
"""

import gzip
import json

import numpy as np
import pytest

from mcsa import GatePacket, MincutSparseAttention, SparsityConfig, Target, TargetPanic
from mcsa.vectors import f32_hex, hash_hex, qkv_from_spec, splitmix64

from .conftest import BUILDS, GOLDEN

DIR = GOLDEN / "differential"


def cases(kind):
    with gzip.open(DIR / f"{kind}_core.jsonl.gz", "rt") as lines:
        return [json.loads(line) for line in lines]


CASES = {kind: cases(kind) for kind in ("density", "masks", "attention")}


def qkv(case):
    """q, k, v of q_len, k_len, v_len elements: one SplitMix64 stream, q then k then v."""
    lengths = [case[f"{name}_len"] for name in "qkv"]
    if not case["data"].startswith("r"):
        return qkv_from_spec(case["data"], lengths[0])
    data = (splitmix64(int(case["data"][1:]), sum(lengths)) & np.uint64(0xFF)).astype(np.uint8).view(np.int8)
    return np.split(data, np.cumsum(lengths)[:2])


def u16_list(values):
    """A u16 list as the corpus stores it: in full, or past 64 entries as its length and FNV-1a 64."""
    values = np.asarray(values, np.uint16)
    return values.tolist() if values.size <= 64 else {"len": int(values.size), "fnv1a64": hash_hex(values)}


def run(kind, case, target):
    sim = MincutSparseAttention(SparsityConfig.from_dict(case["config"]), target)
    gate = GatePacket.from_dict(case["gate"])
    try:
        if kind == "density":
            return {"density": f32_hex(sim.calculate_density(gate))}
        if kind == "masks":
            mask = sim.build_mask(gate, case["seq_len"])
            return {"panic": None, "num_positions": mask.num_positions, "density": f32_hex(mask.density),
                    "sparsity": f32_hex(mask.sparsity()), "positions_fnv1a64": hash_hex(mask.positions),
                    "partition_boundaries": u16_list(mask.partition_boundaries),
                    "boundary_tokens": u16_list(mask.boundary_tokens), "positions": mask.positions.tolist()}
        mask = sim.build_mask(gate, case["mask_seq_len"])
        q, k, v = qkv(case)
        scale = np.uint32(int(case["scale"], 16)).view(np.float32)
        out = sim.sparse_attention(q, k, v, mask, case["dim"], scale)
        return {"panic": None, "len": out.size, "output_fnv1a64": hash_hex(out), "output": [f32_hex(x) for x in out]}
    except TargetPanic as panic:
        return {"panic": panic.message}


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("kind", list(CASES))
def test_differential(kind, build):
    target = Target.named(build)
    failures, compared = [], 0
    for number, case in enumerate(CASES[kind], 1):
        want = dict(case["results"][build])
        if "harness_error" in want:
            continue
        if not want.get("panic"):
            want.pop("heap", None)
            if "positions" in case:
                want["positions"] = case["positions"]
            elif "positions_by_build" in case:
                want["positions"] = case["positions_by_build"][build]
        got = run(kind, case, target)
        compared += 1
        diff = [f"{key}: expected {want[key]!r:.80}, got {got.get(key)!r:.80}" for key in want if got.get(key) != want[key]]
        if diff:
            failures.append(f"{kind}_core.jsonl.gz:{number}: " + "; ".join(diff))
    assert compared > 0
    assert not failures, f"{len(failures)} of {compared} cases differ:\n" + "\n".join(failures[:10])
