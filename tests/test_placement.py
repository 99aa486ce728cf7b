"""Allocation traces and placement: the trace against every golden heap figure,
the linked-list simulator against the real crate's results (x86_64, wasm32), and
fit against the real linked-list and TLSF allocators in thumbv7em firmware."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

import mcsa
from firmware_model import heap, step
from firmware_model.allocators import allocator_named
from firmware_model.placement import ALLOC, DEALLOC, EVENT_DTYPE, REALLOC, linked_list, simulator
from firmware_model.placement import events as ev
from firmware_model.profiles import profile_named
from mcsa.cli import main
from mcsa.app.verify import expected_for, read_cases

from .conftest import GOLDEN
from .strategies import configs, gates

HOST = profile_named("x86_64")
LL = allocator_named("linked-list")
CFG = mcsa.SparsityConfig()


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)

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
            trace = ev.full_mask_trace(case["seq_len"], bits)
        else:
            mask = sim.build_mask(mcsa.GatePacket.from_dict(case["gate"]), case["mask_seq_len"])
            trace = ev.sparse_attention_trace(mask, case["qkv_seq_len"], case["dim"], bits)
        got = ev.replay_bytes(trace.events).as_dict()
        checked += 1
        if any(got[k] != v for k, v in heap.items()):
            failures.append(f"{kind}.jsonl.gz:{line} {build}: {got} != {heap}")
    assert checked > 0 and not failures, "\n".join(failures[:10])


REAL = {64: "linked_list.jsonl.gz", 32: "linked_list_wasm32.jsonl.gz"}


def _real_points(bits=64):
    for _, point in read_cases(GOLDEN / "placement" / REAL[bits]):
        yield point


def _check_points(points, bits):
    failures = []
    for r in points:
        gate = mcsa.GatePacket(lambda_=r["lambda"], partition_count=r["partitions"],
                               boundary_concentration_q15=r["concentration"])
        trace = ev.step_trace(mcsa.SparsityConfig(), gate, r["seq_len"], r["dim"], bits)
        p = linked_list.simulate(trace.events, r["heap"], bits)
        holes = p.holes.tolist() if not p.fits else []
        # The golden peak is the crate's Heap::used() (blocks only); Placement.peak_used
        # also counts the arena's tail past the last usize boundary, which no block can use.
        peak = r["peak_used"] + r["heap"] % (bits // 8)
        if (p.failed_event, p.peak_used, holes) != (r["failed_event"], peak, r["holes"]):
            failures.append(f"{r}: simulated {p.failed_event}, {p.peak_used}, {holes}")
    return failures


@pytest.mark.parametrize("bits", [64, 32])
def test_linked_list_agrees_with_the_real_crate_on_a_sample(bits):
    """Every 8th recorded point (all of them in the slow test)."""
    points = list(_real_points(bits))
    assert len(points) > 5_000
    failures = _check_points(points[::8], bits)
    assert not failures, "\n".join(failures[:5])


@pytest.mark.slow
@pytest.mark.parametrize("bits", [64, 32])
def test_linked_list_agrees_with_the_real_crate_everywhere(bits):
    failures = _check_points(_real_points(bits), bits)
    assert not failures, "\n".join(failures[:5])


FIRMWARE = {"linked-list": ("linked_list_thumbv7em.jsonl.gz", "stm32f411"),
            "tlsf": ("tlsf_thumbv7em.jsonl.gz", "stm32h743")}
"""The real crates as the global allocator of thumbv7em firmware (README there), and the
profile whose allocator each models."""


def _firmware_points(allocator):
    for _, point in read_cases(GOLDEN / "placement" / FIRMWARE[allocator][0]):
        assert point["allocator"] == allocator
        yield point


def _check_fit(points, allocator):
    """``fit_step`` on the profile, with the point's heap as budget: the firmware's failing
    event, peak ``used`` and holes (the largest hole with them)."""
    profile = profile_named(FIRMWARE[allocator][1])
    failures = []
    for r in points:
        gate = mcsa.GatePacket(lambda_=r["lambda"], partition_count=r["partitions"],
                               boundary_concentration_q15=r["concentration"])
        p = step.fit_step(profile, CFG, gate, r["seq_len"], r["dim"], heap_budget=r["heap"]).placement
        holes = p.holes.tolist() if not p.fits else []
        if (p.failed_event, p.peak_used, holes) != (r["failed_event"], r["peak_used"], r["holes"]):
            failures.append(f"{r}: fit_step gives {p.failed_event}, {p.peak_used}, {holes}")
        elif holes and p.largest_hole != max(size for _, size in r["holes"]):
            failures.append(f"{r}: largest hole {p.largest_hole}")
    return failures


@pytest.mark.parametrize("allocator", FIRMWARE)
def test_fit_agrees_with_the_real_allocator_on_thumbv7em_firmware(allocator):
    points = list(_firmware_points(allocator))
    assert len(points) > 5_000 and sum(p["failed_event"] is not None for p in points) > 2_000
    failures = _check_fit(points, allocator)
    assert not failures, "\n".join(failures[:5])


@pytest.mark.parametrize("allocator,index", [(a, i) for a in FIRMWARE for i in range(0, 7000, 1399)])
def test_fit_cli_agrees_with_the_real_allocator_on_thumbv7em(allocator, index):
    r = next(p for i, p in enumerate(_firmware_points(allocator)) if i == index)
    result = run("fit", "--target", FIRMWARE[allocator][1], "--heap-budget", r["heap"], "--seq-len", r["seq_len"],
                 "--partitions", r["partitions"], "--dim", r["dim"], "--lambda", r["lambda"],
                 "--concentration", r["concentration"], "--json")
    out = json.loads(result.stdout)
    assert result.exit_code == (0 if r["failed_event"] is None else 1)
    assert (out["placement"]["failed_event"], out["placement"]["peak_used"]) == (r["failed_event"], r["peak_used"])


@given(configs(), gates(), st.integers(0, 400), st.integers(0, 40), st.sampled_from([32, 64]))
def test_trace_is_consistent_and_counts_what_the_byte_model_counts(config, gate, seq_len, dim, bits):
    """Every dealloc and realloc names a live block (a dealloc with its size); the
    whole step's byte peak equals the heap model's."""
    profile = profile_named("x86_64" if bits == 64 else "wasm32")
    report = step.fit_step(profile, config, gate, seq_len, dim, allocator=allocator_named("none"))
    try:
        trace = ev.step_trace(config, gate, seq_len, dim, bits)
    except mcsa.TargetPanic as panic:
        assert report.panic == panic.message and not report.fits
        return
    live = {}
    for e in trace.events.tolist():
        op, obj, size, align = e
        assert size > 0 and align in (1, 2, 4, 8)
        if op == ALLOC:
            assert obj not in live
        else:
            assert obj in live
        if op == DEALLOC:
            assert live.pop(obj) == size
        else:
            live[obj] = size
    assert ev.replay_bytes(trace.events).peak_bytes == report.step_requested_bytes


def _events(*rows):
    events = np.zeros(len(rows), EVENT_DTYPE)
    for i, row in enumerate(rows):
        events[i] = row
    return events


def test_linked_list_refuses_a_hole_that_would_leave_less_than_a_hole_header():
    """hole.rs split_current: a 72 B hole cannot take 64 B (8 B would be left); first fit
    then goes on to the next hole, and a freed block merges with its neighbours."""
    events = _events((ALLOC, 0, 72, 8), (ALLOC, 1, 16, 8), (DEALLOC, 0, 72, 8), (ALLOC, 2, 64, 8),
                     (ALLOC, 3, 56, 8), (DEALLOC, 1, 16, 8))
    p = linked_list.simulate(events, 256, 64)
    assert p.fits and p.peak_used == 16 + 64 + 56
    assert p.blocks.tolist() == [[0, 56, 3], [88, 64, 2]]
    assert p.holes.tolist() == [[56, 32], [152, 104]]
    small = linked_list.simulate(_events((ALLOC, 0, 1, 1), (REALLOC, 0, 40, 1)), 48, 64)
    assert small.failed_event == 1 and small.holes.tolist() == [[16, 32]]  # realloc: alloc new first


def test_registry_names_every_allocator_model():
    assert simulator("linked-list") is linked_list.simulate
    assert simulator("none") is None
    with pytest.raises(ValueError, match="unknown allocator 'slab'"):
        simulator("slab")


def test_fit_gives_the_real_verdict_and_names_fragmentation():
    result = run("fit", "--target", "x86_64", "--allocator", "linked-list", "--heap-budget", 65536,
                 "--seq-len", 184, "--partitions", 16, "--dim", 32, "--map")
    assert result.exit_code == 1
    assert ("event 532 (sparse_attention: alloc 23,552 B for the output) fails: 41,168 B free but the "
            "largest hole is 23,200 B (fragmentation)") in " ".join(result.output.split())  # (wrapped at 100)
    assert "3 holes, 41,168 B free, largest 23,200 B: 32 B at 17,696, 17,936 B at 17,760, 23,200 B at 42,336" \
        in result.output
    fits = run("fit", "--target", "x86_64", "--allocator", "linked-list", "--heap-budget", 65536,
               "--seq-len", 183, "--partitions", 16, "--dim", 32, "--json")
    out = json.loads(fits.stdout)
    assert fits.exit_code == 0 and out["fits"] and out["placement"]["peak_used"] == 56768


@pytest.mark.parametrize("index", range(0, 12428, 997))
def test_fit_cli_agrees_with_the_real_crate(index):
    r = next(p for i, p in enumerate(_real_points()) if i == index)
    result = run("fit", "--target", "x86_64", "--allocator", "linked-list", "--heap-budget", r["heap"],
                 "--seq-len", r["seq_len"], "--partitions", r["partitions"], "--dim", r["dim"],
                 "--lambda", r["lambda"], "--concentration", r["concentration"], "--json")
    out = json.loads(result.stdout)
    assert result.exit_code == (0 if r["failed_event"] is None else 1)
    assert out["placement"]["failed_event"] == r["failed_event"]


def test_map_png(tmp_path):
    png = tmp_path / "heap.png"
    result = run("fit", "--target", "stm32f411", "--seq-len", 180, "--partitions", 8, "--dim", 32, "--png", png)
    assert result.exit_code == 1 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    none = run("fit", "--target", "x86_64", "--seq-len", 18, "--partitions", 8, "--dim", 32, "--map")
    assert none.exit_code == 2 and "(allocator none places no blocks)" in none.output
    one = run("fit", "--target", "stm32f103", "--seq-len", 256, "--partitions", 4, "--dim", 32, "--map")
    assert one.exit_code == 1 and "  1 hole, 2,048 B free, largest 2,048 B: 2,048 B at 8,192" in one.output


def test_plan_reports_shorter_steps_that_fail():
    """32 KiB, 4 partitions: 83 fails while 84..96 fit (the real crate says the same)."""
    scan = step.scan_seq_len(HOST, CFG, mcsa.GatePacket(lambda_=200, partition_count=4), 32,
                             heap_budget=32768, allocator=LL)
    assert (scan.largest, scan.failing) == (96, [83])
    result = run("plan", "--target", "x86_64", "--allocator", "linked-list", "--heap-budget", 32768,
                 "--dim", 32, "--partitions", "4..4")
    row, why = result.output.split("\n", 2)[2].split("\n", 1)  # the row, then why 97 fails
    assert result.exit_code == 0 and row.split() == ["4", "96", "1224", "32416", "32416", "83"]
    assert why.startswith("  97 fails by bytes: 32,840 B requested, 72 B missing")
    zero = run("plan", "--target", "stm32f411", "--heap-budget", 0, "--dim", 32, "--partitions", "2..2", "--json")
    row = json.loads(zero.stdout)[0]
    assert {k: v for k, v in row.items() if k != "next"} == {
        "partitions": 2, "max_seq_len": None, "num_positions": None, "step_requested_bytes": None,
        "step_peak_bytes": None, "budget_bytes": 0, "failing_below": []}
    assert row["next"]["seq_len"] == 1 and row["next"]["cause"] == "bytes"
    text = run("plan", "--target", "stm32f411", "--heap-budget", 0, "--dim", 32, "--partitions", "2..2")
    assert "heap budget 0 B" in text.output


def test_plan_takes_a_list_of_partition_counts():
    """``2,4..5,4`` is 2, 4, 5 in order, once each; a bad item is a usage error naming the value."""
    rows = json.loads(run("plan", "--target", "stm32f103", "--dim", 32, "--partitions", "2,4..5,4",
                          "--max-seq-len", 64, "--json").stdout)
    assert [r["partitions"] for r in rows] == [2, 4, 5]
    bad = run("plan", "--target", "stm32f103", "--dim", 32, "--partitions", "2,x")
    assert bad.exit_code == 2 and "'2,x'" in bad.output


@pytest.mark.parametrize("args,message", [
    (("--seq-len", 30, "--partitions", 1, "--dim", 0), "does not fit: the build panics with attempt to divide by zero"),
    (("--seq-len", 30000, "--partitions", 1, "--dim", 32), "does not fit: the build panics with capacity overflow"),
    (("--seq-len", 30000, "--partitions", 4, "--dim", 32),
     "does not fit: event 0 (the inputs: alloc 960,000 B for q) fails: only 65,536 B free"),
])
def test_panics_are_verdicts(args, message):
    result = run("fit", "--target", "stm32f411", *args)
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
    assert step.largest_fitting_seq_len(profile_named("stm32f411"), CFG, mcsa.GatePacket(lambda_=200), 0) is None


@pytest.mark.parametrize("option", ["--dim", "--heap-budget", "--seq-len"])
def test_integer_options_have_upper_bounds(option):
    args = {"--dim": 32, "--heap-budget": 65536, "--seq-len": 64}
    args[option] = 10**30
    result = run("fit", "--target", "stm32f411", "--partitions", 4, *sum(([k, v] for k, v in args.items()), []))
    assert result.exit_code == 2 and option in result.output


def test_arguments_are_checked_before_any_kernel():
    mask = mcsa.MincutSparseAttention().build_mask(mcsa.GatePacket(lambda_=200, partition_count=4), 64)
    gate = mcsa.GatePacket(lambda_=200, partition_count=4)
    f411 = profile_named("stm32f411")
    with pytest.raises(ValueError, match="dim"):
        heap.sparse_attention_usage(mask, 64, -1, 32)
    with pytest.raises(TypeError, match="dim"):
        heap.planned_attention_usage(CFG, gate, 64, 64, 1.5, 32)
    with pytest.raises(ValueError, match="hi"):
        step.largest_fitting_seq_len(f411, CFG, gate, 32, hi=-1)
    with pytest.raises(ValueError, match="seq_len"):
        step.representations(mask.stats(), -1)
    for budget in (2**64, 2**63, -1):
        with pytest.raises(ValueError, match="heap_budget"):
            step.fit_step(HOST, CFG, gate, 64, 32, heap_budget=budget)
    with pytest.raises(TypeError, match="heap_budget"):
        step.fit_step(HOST, CFG, gate, 64, 32, heap_budget=1.5)
