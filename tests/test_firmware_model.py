"""Allocator models, profiles, the step fit verdict, the planner, representations and op counts."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mcsa
from firmware_model import bounds, step
from firmware_model.allocators import ALLOCATORS, allocator_named
from firmware_model.heap import build_mask_usage, planned_attention_usage, sparse_attention_usage
from firmware_model.planned import plan_step
from firmware_model.placement import ALLOC, EVENT_DTYPE, loop, simulator
from firmware_model.profiles import load_profiles, profile_named

CFG = mcsa.SparsityConfig()


@pytest.mark.parametrize(
    "name,size,bits,cost",
    [
        ("none", 13, 32, 13),
        ("linked-list", 1, 32, 8), ("linked-list", 13, 32, 16), ("linked-list", 13, 64, 16),
        ("tlsf", 1, 32, 16), ("tlsf", 8, 32, 16), ("tlsf", 9, 32, 32), ("tlsf", 16, 64, 32), ("tlsf", 17, 64, 64),
        ("newlib", 1, 32, 12), ("newlib", 12, 32, 20), ("newlib", 13, 32, 24), ("newlib", 1, 64, 16),
        ("freertos-heap4", 1, 32, 16), ("freertos-heap4", 9, 32, 24), ("freertos-heap4", 1, 64, 24),
        ("esp-idf", 1, 32, 16), ("esp-idf", 13, 32, 20), ("esp-idf", 1000, 32, 1028),
    ],
)
def test_allocator_block_costs(name, size, bits, cost):
    """Hand-worked from each allocator's rule (the docstrings of firmware_model.placement's
    simulators); ESP-IDF's 1000 B rounds up to its 32 B wide class on a 160 KiB heap."""
    assert allocator_named(name).cost(size, bits, 160 * 1024) == cost
    assert allocator_named(name).cost(0, bits) == 0


@pytest.mark.parametrize("name", [n for n in ALLOCATORS if n != "none"])
@settings(max_examples=40)
@given(size=st.integers(1, 70_000), bits=st.sampled_from([32, 64]), heap=st.sampled_from([8192, 163840, 1 << 20]))
def test_allocator_cost_is_what_its_simulator_takes_for_a_lone_block(name, size, bits, heap):
    """The byte model and the placement simulator agree block by block: one block of
    ``size`` bytes on an empty heap takes ``cost`` bytes (blocks as the simulator reports
    them: header, padding and rounding included)."""
    bits = 32 if name == "esp-idf" else bits
    size = min(size, heap // 2)
    events = np.array([(ALLOC, 0, size, 1)], dtype=EVENT_DTYPE)
    p = simulator(name)(events, heap, bits)
    assert p.fits and p.blocks[0, 1] == allocator_named(name).cost(size, bits, heap)


def test_heap_usage_under_an_allocator_is_never_below_the_request():
    gate = mcsa.GatePacket(lambda_=200, partition_count=4)
    raw = build_mask_usage(CFG, gate, 256, 32)
    for name in ALLOCATORS:
        u = build_mask_usage(CFG, gate, 256, 32, allocator_named(name))
        assert u.peak_bytes >= raw.peak_bytes and u.peak_blocks == raw.peak_blocks
        assert u.allocations == raw.allocations


def test_profiles_load_and_carry_their_sources():
    profiles = load_profiles()
    expected = {"stm32f103": 20480, "stm32f411": 131072, "nrf52840": 262144, "rp2040": 270336,
                "esp32": 532480, "esp32s3": 524288, "samd21": 32768}
    for name, ram in expected.items():
        assert profiles[name].ram == ram and profiles[name].source and profiles[name].usize_bits == 32
    assert profiles["stm32h743"].regions["axi_sram"] == 512 * 1024
    assert profiles["x86_64"].target().expf is mcsa.ExpF.GLIBC_FMA
    assert profiles["rp2040"].target("debug").overflow is mcsa.Overflow.PANIC


def test_user_profile_file_overrides_and_errors_name_the_row(tmp_path):
    own = tmp_path / "mine.toml"
    own.write_text('[board]\ndescription = "x"\narch = "thumbv7em"\nusize_bits = 32\nram = 4096\n'
                   'heap_budget = 2048\nfpu = "none"\nexpf = "libm-rs"\nallocator = "tlsf"\nsource = "me"\n')
    assert profile_named("board", own).heap_budget == 2048
    own.write_text('[board]\ndescription = "x"\narch = "thumbv7em"\nusize_bits = 16\nram = 1\nheap_budget = 1\n'
                   'fpu = "none"\nexpf = "musl"\nallocator = "tlsf"\nsource = "me"\n')
    with pytest.raises(ValueError, match=r"mine.toml: \[board\] usize_bits 16 does not match arch thumbv7em"):
        load_profiles(own)
    own.write_text("[board\n")
    with pytest.raises(ValueError, match="mine.toml: not valid TOML"):
        load_profiles(own)
    with pytest.raises(ValueError, match="unknown profile 'nope'"):
        profile_named("nope")


def test_readme_example_256_tokens_4_partitions_on_stm32f411():
    profile = profile_named("stm32f411")
    gate = mcsa.GatePacket(lambda_=200, partition_count=4)
    report = step.fit_step(profile, CFG, gate, 256, 32)
    assert (report.step_requested_bytes, report.budget_bytes, report.num_positions) == (139548, 65536, 8344)
    assert not report.fits and report.crossing.call == "build_mask"
    assert report.verdict() == ("does not fit: event 701 (build_mask: alloc 52 B for a B-tree leaf) fails: only 48 B "
                                "free; requested 139,548 B, available 65,536 B, missing 74,012 B")
    bigger = step.fit_step(profile, CFG, gate, 256, 32, heap_budget=140_000)
    assert bigger.fits and bigger.headroom == 140_000 - 139548 and bigger.crossing is None


def test_step_peak_is_the_sum_of_its_parts_with_no_allocator_overhead():
    profile = profile_named("x86_64")
    gate = mcsa.GatePacket(lambda_=100, partition_count=3)
    report = step.fit_step(profile, CFG, gate, 128, 16, allocator=allocator_named("none"))
    sim = mcsa.MincutSparseAttention(CFG, profile.target())
    mask = sim.build_mask(gate, 128)
    mask_usage = build_mask_usage(CFG, gate, 128, 64)
    attention = sparse_attention_usage(mask, 128, 16, 64)
    inputs = 3 * 128 * 16
    assert report.inputs_bytes == inputs
    assert (report.build_mask_peak_bytes, report.mask_bytes) == (mask_usage.peak_bytes, mask_usage.live_bytes)
    assert report.attention_peak_bytes == attention.peak_bytes
    assert report.step_requested_bytes == report.step_peak_bytes == max(
        inputs + mask_usage.peak_bytes, inputs + mask_usage.live_bytes + attention.peak_bytes)


def test_planner_answer_is_a_boundary_and_lists_the_shorter_failures():
    """As in the README: on the F411, 8 partitions fit up to 198 tokens but 171..195 do not."""
    profile = profile_named("stm32f411")
    rows = step.capacity_table(profile, CFG, 32, [2, 8])
    assert [(r["max_seq_len"], r["failing_below"]) for r in rows] == [(123, []), (198, list(range(171, 196)))]
    for row in rows:
        n = row["max_seq_len"]
        gate = mcsa.GatePacket(lambda_=200, partition_count=row["partitions"])
        assert step.fit_step(profile, CFG, gate, n, 32).fits
        assert not step.fit_step(profile, CFG, gate, n + 1, 32).fits
        assert all(not step.fit_step(profile, CFG, gate, m, 32).fits for m in row["failing_below"])
        assert row["step_peak_bytes"] <= row["budget_bytes"]


def test_representations_and_op_counts():
    sim = mcsa.MincutSparseAttention(CFG)
    gate = mcsa.GatePacket(lambda_=200, partition_count=4)
    mask = sim.build_mask(gate, 256)
    reps = step.representations(mask.stats(), 256)
    assert reps["vec_pairs"] == 4 * mask.num_positions
    assert reps["csr"] == 2 * mask.num_positions + 4 * 257
    runs = plan_step(CFG, gate, 256, 32, sim.target, position_limit=sim.position_limit).query_runs()
    counts = np.bincount(mask.positions[:, 0], minlength=256)
    assert np.array_equal(runs[1], counts[runs[0]])
    ops = step.op_counts(runs, 32)
    assert ops["i8_macs"] == mask.num_positions * 32 and ops["exp_calls"] == mask.num_positions
    assert ops["f32_div"] == 256


@given(st.integers(2, 12), st.integers(0, 300), st.sampled_from([32, 64]), st.booleans())
def test_planned_attention_usage_equals_the_built_mask(partitions, seq_len, bits, intra):
    config = mcsa.SparsityConfig(intra_partition_attention=intra)
    gate = mcsa.GatePacket(lambda_=120, partition_count=partitions)
    mask = mcsa.MincutSparseAttention(config, mcsa.Target(bits)).build_mask(gate, seq_len)
    for name in ("none", "tlsf"):
        alloc = allocator_named(name)
        assert planned_attention_usage(config, gate, seq_len, seq_len, 16, bits, alloc) == \
            sparse_attention_usage(mask, seq_len, 16, bits, alloc)


def exhaustive(profile, config, gate, dim, hi, **kwargs):
    """The scan made step by step: fit_step on every seq_len (an independent reference
    for scan_seq_len, which decides most steps by bounds)."""
    per_token = 7 * dim + 3 * profile.usize_bits // 8
    budget = kwargs.get("heap_budget") or profile.heap_budget
    top = min(hi, budget // per_token)
    fits = [n for n in range(1, top + 1) if dim > 0 and step.fit_step(profile, config, gate, n, dim, **kwargs).fits]
    largest = fits[-1] if fits else None
    return largest, sorted(set(range(1, (largest or 0) + 1)) - set(fits))


ALLOCATOR_NAMES = [n for n in ALLOCATORS]


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(ALLOCATOR_NAMES), st.sampled_from([32, 64]), st.integers(1, 48), st.integers(0, 20),
       st.sampled_from([0, 29, 30, 200, 4000]), st.booleans(), st.booleans(), st.integers(0, 24),
       st.integers(300, 40_000), st.integers(0, 3))
def test_scan_equals_the_step_by_step_scan(name, bits, dim, partitions, lambda_, intra, cross, edges, budget, pick):
    """Every verdict the bounds decide is the verdict of the planned, placed step: the
    largest seq_len and the failing list equal fit_step's on every seq_len. Budgets
    are drawn near a step's own peak, where the bounds are tightest."""
    bits = 32 if name == "esp-idf" else bits
    profile = profile_named("x86_64" if bits == 64 else "stm32f411")
    config = mcsa.SparsityConfig(intra_partition_attention=intra, boundary_cross_attention=cross,
                                 max_cross_partition_edges=edges)
    gate = mcsa.GatePacket(lambda_=lambda_, partition_count=partitions)
    allocator = allocator_named(name)
    budget = max(budget, allocator.min_heap[bits == 64])
    if pick:  # a budget at a step's own peak, give or take a little
        n = 1 + budget % 150
        report = step.fit_step(profile, config, gate, n, dim, heap_budget=budget, allocator=allocator)
        if report.step_peak_bytes is not None:
            budget = max(allocator.min_heap[bits == 64], report.step_peak_bytes + (pick - 2) * 8)
    kwargs = {"heap_budget": budget, "allocator": allocator}
    scan = step.scan_seq_len(profile, config, gate, dim, 400, **kwargs)
    largest, failing = exhaustive(profile, config, gate, dim, 400, **kwargs)
    assert (scan.largest, scan.failing) == (largest, failing)


@pytest.mark.parametrize("name", ALLOCATOR_NAMES)
def test_scan_decides_a_large_heap_without_placing(name):
    """On a heap far larger than every step, bounds prove every step fits: nothing is
    placed one by one (the plan scan of tools/bench_fit.py)."""
    profile = profile_named("stm32f411")
    gate = mcsa.GatePacket(lambda_=200, partition_count=4)
    scan = step.scan_seq_len(profile, CFG, gate, 32, 1024, heap_budget=8 * 2**20, allocator=allocator_named(name))
    assert (scan.largest, scan.failing, scan.judged) == (1024, [], 0)


@pytest.mark.parametrize("name", [n for n in ALLOCATOR_NAMES if loop.CODES.get(n) in bounds.FREED_NODES_MERGE])
def test_freed_btree_nodes_decide_steps_of_a_large_heap(name):
    """On 4 MiB the untouched end alone leaves about 500 steps to place: once
    build_mask has freed its B-tree, what sparse_attention allocates fits in the block
    the nodes leave, which decides most of them (the plan of an ESP32 with 8 MiB of
    PSRAM went from 26 s to 2.7 s). The verdicts are the placed steps': the largest
    fits, the next fails, and every 25th shorter one is what fit_step says."""
    profile = profile_named("stm32f411")
    gate = mcsa.GatePacket(lambda_=200, partition_count=4)
    kwargs = {"heap_budget": 4 << 20, "allocator": allocator_named(name)}
    scan = step.scan_seq_len(profile, CFG, gate, 32, 65536, **kwargs)
    assert scan.judged < 350, scan
    for n in [*range(scan.largest - 300, scan.largest, 25), scan.largest, scan.largest + 1]:
        fits = n <= scan.largest and n not in scan.failing
        assert step.fit_step(profile, CFG, gate, n, 32, **kwargs).fits == fits, n


def test_step_figures_are_the_figures_of_each_call():
    """One planned step gives what the separate models give: the mask's statistics,
    the heap use of build_mask and of sparse_attention (bytes requested), and fit_step's
    step peak and verdict."""
    for name, seq_len, parts, dim in (("stm32f411", 128, 4, 32), ("x86_64", 300, 8, 16), ("esp32", 90, 2, 8),
                                      ("stm32f103", 10, 4, 32), ("samd21", 200, 3, 64)):
        profile = profile_named(name)
        gate = mcsa.GatePacket(lambda_=200, partition_count=parts)
        figures = step.step_figures(profile, "release", CFG, gate, seq_len, dim, profile.heap_budget)
        sim = mcsa.MincutSparseAttention(CFG, profile.target())
        stats = sim.mask_stats(gate, seq_len)
        report = step.fit_step(profile, CFG, gate, seq_len, dim)
        bits = profile.usize_bits
        assert figures == {
            "sparse": stats.sparse, "num_positions": stats.num_positions, "density": stats.density,
            "partitions": int(stats.partition_boundaries.size), "boundary_tokens": int(stats.boundary_tokens.size),
            "flops_ratio": sim.estimated_flops_ratio(stats, seq_len),
            "build_mask_peak_bytes": build_mask_usage(CFG, gate, seq_len, bits).peak_bytes,
            "mask_bytes": build_mask_usage(CFG, gate, seq_len, bits).live_bytes,
            "attention_peak_bytes": planned_attention_usage(CFG, gate, seq_len, seq_len, dim, bits).peak_bytes,
            "inputs_bytes": 3 * seq_len * dim, "step_requested_bytes": report.step_requested_bytes,
            "step_peak_bytes": report.step_peak_bytes, "fits": report.fits, "panic": None,
        }
    debug = step.step_figures(profile_named("stm32f411"), "debug", CFG, mcsa.GatePacket(lambda_=200), 70000, 32,
                              65536)
    assert debug["panic"] and not debug["fits"] and debug["num_positions"] is None


def test_a_step_is_planned_once(monkeypatch):
    """fit_step and step_figures plan the mask, insert into the B-tree and lay out the
    query runs once each."""
    from firmware_model import btree, planned

    calls = {"plan_mask": 0, "insertions": 0, "insert": 0, "runs": 0}

    def counting(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(mcsa.MincutSparseAttention, "plan_mask",
                        counting("plan_mask", mcsa.MincutSparseAttention.plan_mask))
    monkeypatch.setattr(btree, "insertions", counting("insertions", btree.insertions))
    monkeypatch.setattr(btree, "insert", counting("insert", btree.insert))
    monkeypatch.setattr(planned, "query_runs", counting("runs", planned.query_runs))
    profile = profile_named("stm32f411")
    gate = mcsa.GatePacket(lambda_=200, partition_count=4)
    step.fit_step(profile, CFG, gate, 256, 32)
    assert calls == {"plan_mask": 1, "insertions": 1, "insert": 1, "runs": 1}
    step.step_figures(profile, "release", CFG, gate, 256, 32, 65536)
    assert calls == {"plan_mask": 2, "insertions": 2, "insert": 2, "runs": 2}


class Odd:
    """Not an integer, not a profile, not anything the API takes."""


@pytest.mark.parametrize("bad", ["4096", 4096.9, True, Odd(), complex(4096), float("inf"), None, [4096]])
def test_simulators_refuse_a_heap_size_that_is_not_an_integer(bad):
    from decimal import Decimal

    events = np.array([(ALLOC, 0, 16, 4)], dtype=EVENT_DTYPE)
    for name in ("linked-list", "tlsf", "newlib", "freertos-heap4", "esp-idf"):
        with pytest.raises(TypeError, match="heap_size"):
            simulator(name)(events, bad, 32)
        with pytest.raises(TypeError, match="heap_size"):
            simulator(name)(events, Decimal(4096), 32)
        with pytest.raises(TypeError, match="usize_bits"):
            simulator(name)(events, 4096, bad if bad is not None else "32")
        with pytest.raises(ValueError, match="heap_size"):
            simulator(name)(events, -1, 32)
        with pytest.raises(ValueError, match="usize_bits"):
            simulator(name)(events, 4096, 48)


@pytest.mark.parametrize("argument,value,error", [
    ("profile", "stm32f411", TypeError), ("profile", None, TypeError),
    ("config", {"intra_partition_attention": True}, TypeError), ("gate", (200, 0, 0, 0, 4, 0), TypeError),
    ("seq_len", 1.5, TypeError), ("seq_len", -1, ValueError), ("seq_len", "64", TypeError),
    ("dim", True, TypeError), ("dim", 2**64, ValueError),
    ("build", "fast", ValueError), ("heap_budget", 65536.0, TypeError), ("heap_budget", -5, ValueError),
    ("allocator", "tlsf", TypeError), ("inputs_on_heap", 1, TypeError), ("position_limit", -1, ValueError),
])
def test_fit_step_names_every_wrong_argument(argument, value, error):
    args = {"profile": profile_named("stm32f411"), "config": CFG, "gate": mcsa.GatePacket(lambda_=200, partition_count=4),
            "seq_len": 64, "dim": 32}
    kwargs = {}
    if argument in args:
        args[argument] = value
    else:
        kwargs[argument] = value
    with pytest.raises(error, match=argument):
        step.fit_step(*args.values(), **kwargs)


def test_every_public_function_names_its_wrong_argument():
    f411 = profile_named("stm32f411")
    gate = mcsa.GatePacket(lambda_=200, partition_count=4)
    with pytest.raises(TypeError, match="profile"):
        step.scan_seq_len("stm32f411", CFG, gate, 32)
    with pytest.raises(TypeError, match="hi"):
        step.scan_seq_len(f411, CFG, gate, 32, hi="1024")
    with pytest.raises(TypeError, match="profile"):
        step.capacity_table(None, CFG, 32, [2])
    with pytest.raises(TypeError, match="profile"):
        step.step_figures("x", "release", CFG, gate, 64, 32, 65536)
    with pytest.raises(TypeError, match="stats"):
        step.representations({"num_positions": 3}, 64)
    with pytest.raises(TypeError, match="runs"):
        step.op_counts([1, 2], 32)
    with pytest.raises(TypeError, match="dim"):
        step.op_counts((np.arange(3), np.ones(3, np.int64)), 1.5)
    with pytest.raises(TypeError, match="allocator"):
        allocator_named(3)
    with pytest.raises(TypeError, match="allocator"):
        build_mask_usage(CFG, gate, 64, 32, "tlsf")
    with pytest.raises(TypeError, match="usize_bits"):
        build_mask_usage(CFG, gate, 64, "32")
    with pytest.raises(ValueError, match="usize_bits"):
        build_mask_usage(CFG, gate, 64, 16)
    with pytest.raises(TypeError, match="mask"):
        sparse_attention_usage("mask", 64, 32, 32)
    with pytest.raises(TypeError, match="position_limit"):
        build_mask_usage(CFG, gate, 64, 32, position_limit=1.0)
    from firmware_model.heapmap import heap_map_lines
    with pytest.raises(TypeError, match="report"):
        heap_map_lines("a report")
    report = step.fit_step(f411, CFG, gate, 64, 32)
    with pytest.raises(ValueError, match="width"):
        heap_map_lines(report, width=0)
