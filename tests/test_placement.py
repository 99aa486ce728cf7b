"""Allocation traces and placement: the trace against every golden heap figure,
the linked-list simulator against the real crate's results."""

import numpy as np
import pytest

import mcsa
from firmware_model.placement import events as ev
from mcsa.vectors import expected_for, read_cases

from .conftest import GOLDEN

WIDTHS = {"x86_64-release": 64, "wasm32-release": 32}


def _golden_heap_cases(kind):
    for line, case in read_cases(GOLDEN / f"{kind}.jsonl.gz"):
        for build, bits in WIDTHS.items():
            expected = expected_for(case, build)
            if not expected.get("panic"):
                yield line, case, build, bits, expected["heap"]


@pytest.mark.parametrize("kind", ["full", "attention", pytest.param("masks", marks=pytest.mark.slow)])
def test_trace_replays_to_every_golden_heap_figure(kind):
    """Byte counting over the trace gives the golden peak_bytes, peak_blocks,
    live_*, allocations of the real Rust run, both widths."""
    failures = []
    checked = 0
    for line, case, build, bits, heap in _golden_heap_cases(kind):
        target = mcsa.Target.named(build)
        if kind != "full":
            sim = mcsa.MincutSparseAttention(mcsa.SparsityConfig.from_dict(case["config"]), target)
        if kind == "masks":
            trace = ev.build_mask_trace(sim.config, mcsa.GatePacket.from_dict(case["gate"]), case["seq_len"], bits)
        elif kind == "full":
            b = ev._Builder(bits)
            ev._full_mask(b, case["seq_len"])
            trace = b.trace()
        else:
            mask = sim.build_mask(mcsa.GatePacket.from_dict(case["gate"]), case["mask_seq_len"])
            trace = ev.sparse_attention_trace(mask, case["qkv_seq_len"], case["dim"], bits)
        got = ev.replay_bytes(trace.events).as_dict()
        checked += 1
        if any(got[k] != v for k, v in heap.items()):
            failures.append(f"{kind}.jsonl.gz:{line} {build}: {got} != {heap}")
    assert checked > 0 and not failures, "\n".join(failures[:10])


def _real_points():
    for _, point in read_cases(GOLDEN / "placement" / "linked_list.jsonl.gz"):
        yield point


def _check_points(points):
    from firmware_model.placement import linked_list

    failures = []
    for r in points:
        gate = mcsa.GatePacket(lambda_=r["lambda"], partition_count=r["partitions"],
                               boundary_concentration_q15=r["concentration"])
        trace = ev.step_trace(mcsa.SparsityConfig(), gate, r["seq_len"], r["dim"], 64)
        p = linked_list.simulate(trace.events, r["heap"], 64)
        holes = p.holes.tolist() if not p.fits else []
        if (p.failed_event, p.peak_used, holes) != (r["failed_event"], r["peak_used"], r["holes"]):
            failures.append(f"{r}: simulated {p.failed_event}, {p.peak_used}, {holes}")
    return failures


def test_linked_list_agrees_with_the_real_crate_on_a_sample():
    """Every 8th recorded point (all of them in the slow test)."""
    points = list(_real_points())
    assert len(points) > 10_000
    failures = _check_points(points[::8])
    assert not failures, "\n".join(failures[:5])


@pytest.mark.slow
def test_linked_list_agrees_with_the_real_crate_everywhere():
    failures = _check_points(_real_points())
    assert not failures, "\n".join(failures[:5])
