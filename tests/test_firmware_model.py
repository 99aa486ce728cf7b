"""Allocator models, profiles, the step fit verdict, the planner, representations and op counts."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mcsa
from firmware_model import step
from firmware_model.allocators import ALLOCATORS, allocator_named
from firmware_model.heap import build_mask_usage, planned_attention_usage, sparse_attention_usage
from firmware_model.planned import plan_step
from firmware_model.placement import ALLOC, EVENT_DTYPE, simulator
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
    own.write_text('[board]\ndescription = "x"\narch = "a"\nusize_bits = 16\nram = 1\nheap_budget = 1\n'
                   'fpu = "none"\nexpf = "musl"\nallocator = "tlsf"\nsource = "me"\n')
    with pytest.raises(ValueError, match=r"mine.toml: \[board\] usize_bits must be 32 or 64"):
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
