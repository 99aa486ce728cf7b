"""Public API behaviour: validation messages, serde forms, packet helpers, guards."""

import json

import numpy as np
import pytest

import mcsa
from mcsa import (
    Adaptive, GatePacket, Linear, MaskTooLarge, MincutSparseAttention, SparseMask, SparsityConfig, Target,
    TargetPanic, Threshold,
)


def test_issue_example_runs_on_a_microcontroller_target():
    cfg = mcsa.SparsityConfig()
    gate = mcsa.GatePacket(lambda_=100, lambda_prev=95, boundary_edges=5,
                           boundary_concentration_q15=8192, partition_count=3, flags=0)
    sim = mcsa.MincutSparseAttention(cfg, target=mcsa.Target.named("thumbv7em-release"))
    mask = sim.build_mask(gate, seq_len=128)
    rng = np.random.default_rng(7)
    q, k, v = (rng.integers(-128, 128, 128 * 32).astype(np.int8) for _ in range(3))
    out = sim.sparse_attention(q, k, v, mask, dim=32, scale=np.float32(0.125))
    assert out.dtype == np.float32 and out.shape == (128 * 32,)
    assert mask.partition_boundaries.tolist() == [0, 42, 84]
    assert mask.positions.dtype == np.uint16 and mask.positions.shape == (mask.num_positions, 2)
    # positions are in BTreeSet order: sorted by (query, key), no duplicates
    codes = mask.positions[:, 0].astype(np.int64) << 16 | mask.positions[:, 1]
    assert np.all(np.diff(codes) > 0)


@pytest.mark.parametrize(
    "field,value,error,match",
    [
        ("lambda_", -1, ValueError, r"lambda must be in 0..=4294967295 \(u32\), got -1"),
        ("lambda_prev", 1 << 32, ValueError, "lambda_prev must be in 0..=4294967295"),
        ("partition_count", 65536, ValueError, r"partition_count must be in 0..=65535 \(u16\), got 65536"),
        ("flags", 1.5, TypeError, "flags must be an integer, got float"),
        ("boundary_edges", True, TypeError, "boundary_edges must be an integer"),
    ],
)
def test_gate_fields_are_range_checked(field, value, error, match):
    with pytest.raises(error, match=match):
        GatePacket(**{field: value})


def test_gate_serde_and_struct_round_trip():
    record = json.loads('{"lambda":100,"lambda_prev":95,"boundary_edges":5,'
                        '"boundary_concentration_q15":8192,"partition_count":3,"flags":0}')
    gate = GatePacket.from_dict(record)
    assert gate.lambda_ == 100 and gate.to_dict() == record
    raw = gate.to_bytes()
    assert len(raw) == 16 and raw[:4] == (100).to_bytes(4, "little")
    assert GatePacket.from_bytes(raw) == gate
    with pytest.raises(ValueError, match="missing field.*flags"):
        GatePacket.from_dict({k: v for k, v in record.items() if k != "flags"})


def test_gate_helpers():
    gate = GatePacket(lambda_=5, lambda_prev=0xFFFF_FFFF)
    assert gate.lambda_delta() == 6  # 5 - (-1), as i32
    assert GatePacket(lambda_=0x8000_0000, lambda_prev=1).lambda_delta() == 0x7FFF_FFFF
    with pytest.raises(TargetPanic, match="attempt to subtract with overflow"):
        GatePacket(lambda_=0x8000_0000, lambda_prev=1).lambda_delta("x86_64-debug")
    assert GatePacket(lambda_=50, lambda_prev=100).drop_ratio_q15() == 16384
    assert GatePacket(lambda_=100, lambda_prev=50).drop_ratio_q15() == 0
    assert GatePacket(lambda_=0, lambda_prev=0).drop_ratio_q15() == 0
    flags = GatePacket(flags=0b011)
    assert flags.force_safe() and flags.skip_requested() and not flags.boundary_ids_available()


def test_config_defaults_and_serde():
    cfg = SparsityConfig()
    assert cfg.to_dict() == {
        "intra_partition_attention": True, "boundary_cross_attention": True,
        "lambda_based_density": "Adaptive", "max_cross_partition_edges": 20,
        "min_density_q15": 3277, "max_density_q15": 29491,
    }
    for sched, form in [
        (None, None),
        (Adaptive(), "Adaptive"),
        (Threshold(150), {"Threshold": {"dense_above_lambda": 150}}),
        (Linear(0.1, 0.9), {"Linear": {"min_density": 0.1, "max_density": 0.9}}),
    ]:
        record = {**cfg.to_dict(), "lambda_based_density": form}
        parsed = SparsityConfig.from_dict(record)
        assert parsed.lambda_based_density == sched and parsed.to_dict() == record
    linear = Linear("7fc00000", "3dcccccd")
    assert np.isnan(linear.min_density) and linear.max_density == np.float32(0.1)
    assert SparsityConfig(lambda_based_density=linear).to_dict(f32_as_bits=True)["lambda_based_density"] == {
        "Linear": {"min_density": "7fc00000", "max_density": "3dcccccd"}}


@pytest.mark.parametrize(
    "record,error,match",
    [
        ({"max_cross_partition_edges": 70000}, ValueError, "max_cross_partition_edges must be in 0..=65535"),
        ({"intra_partition_attention": 1}, TypeError, "intra_partition_attention must be a bool"),
        ({"lambda_based_density": "Fast"}, ValueError, "lambda_based_density must be"),
        ({"lambda_based_density": {"Threshold": {"dense_above_lambda": -5}}}, ValueError, "dense_above_lambda"),
    ],
)
def test_config_errors_name_the_field(record, error, match):
    with pytest.raises(error, match=match):
        SparsityConfig.from_dict({**SparsityConfig().to_dict(), **record})


def test_unknown_keys_are_ignored_and_missing_ones_named_as_serde_does():
    assert SparsityConfig.from_dict({**SparsityConfig().to_dict(), "extra": 1}) == SparsityConfig()
    record = SparsityConfig().to_dict()
    del record["max_density_q15"]
    with pytest.raises(ValueError, match="sparsity config is missing field.*max_density_q15"):
        SparsityConfig.from_dict(record)


def test_targets():
    t = Target.named("thumbv7em-release")
    assert (t.usize_bits, t.overflow, t.expf) == (32, mcsa.Overflow.WRAP, mcsa.ExpF.LIBM_RS)
    assert Target(32, "panic", "musl") == Target(32, mcsa.Overflow.PANIC, mcsa.ExpF.MUSL)
    for name in ("x86_64-release", "x86_64-debug", "wasm32-release", "wasm32-debug", "thumbv7em-debug"):
        assert Target.named(name).name == name
    with pytest.raises(ValueError, match=r"unknown target 'avr'; no target has a close name \(`mcsa targets`"):
        Target.named("avr")
    with pytest.raises(ValueError, match="usize_bits must be 32 or 64"):
        Target(16)
    with pytest.raises(ValueError, match="unknown overflow mode"):
        Target(32, "saturate")


def test_build_mask_argument_errors():
    sim = MincutSparseAttention(target="wasm32-release")
    gate = GatePacket(lambda_=100, partition_count=3)
    with pytest.raises(ValueError, match="seq_len must be in 0..=4294967295"):
        sim.build_mask(gate, -1)
    with pytest.raises(ValueError, match="seq_len must be in 0..=4294967295 \\(usize on wasm32-release\\)"):
        sim.build_mask(gate, 1 << 32)
    with pytest.raises(TypeError, match="seq_len must be an integer"):
        sim.build_mask(gate, 12.0)
    with pytest.raises(TypeError, match="gate must be a GatePacket"):
        sim.build_mask({"lambda": 100}, 32)
    with pytest.raises(TypeError, match="config must be a SparsityConfig"):
        MincutSparseAttention({"intra_partition_attention": True})


def test_sparse_attention_argument_errors():
    sim = MincutSparseAttention()
    mask = sim.build_mask(GatePacket(lambda_=100, partition_count=2), 16)
    ok = np.zeros(16 * 4, np.int8)
    with pytest.raises(TypeError, match="q must be an int8 array, got dtype int64"):
        sim.sparse_attention(ok.astype(np.int64), ok, ok, mask, 4, 0.5)
    # lengths Rust accepts are modelled: a short v is read past, as Rust's bounds check says
    with pytest.raises(TargetPanic, match="^index out of bounds: the len is 60 but the index is 60$"):
        sim.sparse_attention(ok, ok, ok[:60], mask, 4, 0.5)
    assert sim.sparse_attention(ok, ok, ok, SparseMask.full(12), 5, 0.5).size == 60  # 64 // 5 = 12 rows
    with pytest.raises(TargetPanic, match="^index out of bounds: the len is 12 but the index is 12$"):
        sim.sparse_attention(ok, ok, ok, mask, 5, 0.5)  # the mask reaches row 15
    for bad in (None, "0.25", [1, 2], True):
        with pytest.raises(TypeError, match="^scale must be a real number"):
            sim.sparse_attention(ok, ok, ok, mask, 4, bad)
    assert sim.sparse_attention(ok, ok, ok, SparseMask.empty(), 2**64 - 1, 0.5).size == 0  # no rows
    with pytest.raises(TargetPanic, match="^index out of bounds: the len is 0 but the index is 0$"):
        sim.sparse_attention(ok, ok, ok, mask, 2**63, 0.5)
    with pytest.raises(TypeError, match="q must be an int8 numpy array, got list"):
        sim.sparse_attention([0] * 64, ok, ok, mask, 4, 0.5)
    with pytest.raises(ValueError, match=r"k has shape \(16, 3\), whose rows are not dim=4 long"):
        sim.sparse_attention(ok, ok.reshape(16, 4)[:, :3].copy().reshape(16, 3), ok, mask, 4, 0.5)
    with pytest.raises(ValueError, match="dim must be in"):
        sim.sparse_attention(ok, ok, ok, mask, -4, 0.5)
    with pytest.raises(TypeError, match="mask must be a SparseMask"):
        sim.sparse_attention(ok, ok, ok, mask.positions, 4, 0.5)
    with pytest.raises(TargetPanic, match="^attempt to divide by zero$"):
        sim.sparse_attention(ok, ok, ok, mask, 0, 0.5)
    with pytest.raises(TargetPanic, match="^index out of bounds: the len is 8 but the index is 8$"):
        sim.sparse_attention(ok[:32], ok[:32], ok[:32], mask, 4, 0.5)


def test_position_guard_and_stats_without_positions():
    sim = MincutSparseAttention(target="thumbv7em-release", position_limit=1_000_000)
    gate = GatePacket(lambda_=200, partition_count=8)
    stats = sim.mask_stats(gate, 32768)
    # 8 partitions of 4096 tokens: 8 * 4096 * 4097 / 2 intra pairs, plus cross pairs
    assert stats.sparse and stats.num_positions >= 8 * 4096 * 4097 // 2
    assert stats.num_positions == MincutSparseAttention(target="thumbv7em-release", position_limit=10**9) \
        .build_mask(gate, 32768).num_positions
    with pytest.raises(MaskTooLarge, match=r"would hold 67,\d+,\d+ positions .*position limit of 1,000,000.*mask_stats"):
        sim.build_mask(gate, 32768)
    ratio = sim.estimated_flops_ratio(stats, 32768)
    assert isinstance(ratio, np.float32) and 0.1 < ratio < 0.2


def test_full_mask_capacity_overflow_on_32_bit():
    """Vec::with_capacity(seq_len * seq_len) of 4-byte pairs: past isize::MAX on 32-bit."""
    with pytest.raises(TargetPanic, match="^capacity overflow$"):
        SparseMask.full(23171, "wasm32-release")  # 23171^2 * 4 > 2^31 - 1
    with pytest.raises(TargetPanic, match="^attempt to multiply with overflow$"):
        SparseMask.full(65536, "wasm32-debug")
    with pytest.raises(TargetPanic, match="^capacity overflow$"):
        SparseMask.full(65536, "wasm32-release")  # the product wraps to 0, then the pushes overflow
    stats = MincutSparseAttention(target="x86_64-release").mask_stats(GatePacket(lambda_=10), 23171)
    assert not stats.sparse and stats.num_positions == 23171 * 23172 // 2


def test_sparse_mask_api():
    full = SparseMask.full(4)
    assert full.num_positions == 10 and full.density == 1.0 and full.sparsity() == 0.0
    assert full.can_attend(3, 0) and not full.can_attend(0, 3)
    assert full.max_positions(4) == 10
    with pytest.raises(TargetPanic, match="attempt to add with overflow"):
        full.max_positions(2**32 - 1, "wasm32-debug")
    assert full.max_positions(2**32 - 1, "wasm32-release") == 0
    empty = SparseMask.empty()
    assert empty.num_positions == 0 and empty.density == 0.0
    with pytest.raises(ValueError, match=r"positions must have shape \(N, 2\)"):
        SparseMask(np.zeros((3, 3), np.int64), 0.5)
    with pytest.raises(ValueError, match="positions must hold u16 values"):
        SparseMask([[0, 70000]], 0.5)


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda: Target(usize_bits=32.0), TypeError, "usize_bits must be an integer"),
        (lambda: Target(32, nan="ieee"), ValueError, "unknown NaN rules 'ieee'"),
        (lambda: Linear(10**400, 0.9), ValueError, "min_density must be a number within f64 range"),
        (lambda: Linear(None, 0.9), TypeError, "min_density must be a number"),
        (lambda: SparseMask([[0, 0]], None), TypeError, "density must be a real number"),
        (lambda: MincutSparseAttention().estimated_flops_ratio(None, 64), TypeError, "mask must be a SparseMask or MaskStats"),
        (lambda: mcsa.fnv1a64(np.zeros(3, np.uint8), seed=1.5), TypeError, "seed must be an integer"),
        (lambda: mcsa.fnv1a64(np.zeros(3, np.uint8), seed=-1), ValueError, r"seed must be in 0..=18446744073709551615 \(u64\), got -1"),
        (lambda: mcsa.fnv1a64([1, 2]), TypeError, "array must be a numeric numpy array"),
        (lambda: MincutSparseAttention(position_limit=1.5), TypeError, "position_limit must be an integer"),
        (lambda: SparseMask.full(4, position_limit=-1), ValueError, "position_limit must be >= 0"),
        (lambda: GatePacket(lambda_=5).lambda_delta(3), TypeError, "target must be a Target or a build name"),
        (lambda: MincutSparseAttention().should_use_sparse(GatePacket(), -1), ValueError, "seq_len must be in"),
    ],
)
def test_core_arguments_are_validated(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_int_densities_round_once():
    """An integer density is rounded to f32 once (no detour through a rounded float64)."""
    assert Linear(2**60 + 2**36 + 1, 0).min_density.view(np.uint32) == np.float32(2**60 + 2**37).view(np.uint32)


def test_nan_rules_are_a_documented_target_field():
    assert Target.named("x86_64-release").nan.name == "x86-sse"
    assert Target.named("wasm32-debug").nan.name == "wasm-wasmtime"
    assert Target.named("thumbv7em-release").nan.name == "arm-vfp"
    assert {Target.named(f"{a}-release").nan.name for a in ("thumbv6m", "thumbv7m", "riscv32imc")} == {"soft-float"}
    assert Target.named("xtensa-debug").nan.name == "xtensa-fpu"
    assert all("measured" in r.source or "read, not measured" in r.source for r in mcsa.core.target.NAN_RULES.values())
    own = mcsa.core.target.NanRules("mine", 0x7FC0_0001, propagate=False)
    sim = MincutSparseAttention(SparsityConfig(lambda_based_density=Linear("7fa12345", "3f000000")),
                                Target(32, nan=own))
    assert sim.calculate_density(GatePacket(lambda_=100)).view(np.uint32) == 0x7FC0_0001


@pytest.mark.parametrize("build,expected", [("x86_64-release", 0xFFC00000), ("wasm32-release", 0x7FC00000),
                                            ("thumbv6m-release", 0x7FC00000)])
def test_linear_both_nan_follows_the_target(build, expected):
    """issue 10 B: (min, max) = (7fc00000, ffc00000); x86-64 returns max's NaN."""
    sim = MincutSparseAttention(SparsityConfig(lambda_based_density=Linear("7fc00000", "ffc00000")), build)
    assert sim.calculate_density(GatePacket(lambda_=100)).view(np.uint32) == expected


def test_mask_stats_for_huge_and_wrapping_seq_len():
    """issue 7: the seq_len that crashed the process, and the count that wrapped negative."""
    sim = MincutSparseAttention(target="x86_64-release")
    for parts, seq_len in ((2, 433305435341373281), (4, 2**32), (4, 2**64 - 1)):
        stats = sim.mask_stats(GatePacket(lambda_=200, partition_count=parts), seq_len)
        assert stats.num_positions == 2**32  # every (u16, u16) pair: the last partition wraps past 65536 rows
        with pytest.raises(MaskTooLarge, match=r"4,294,967,296 positions \(16,384 MiB on the host\)"):
            sim.build_mask(GatePacket(lambda_=200, partition_count=parts), seq_len)
    plan = sim.plan_mask(GatePacket(lambda_=200, partition_count=2), 433305435341373281)
    assert plan.insertion_count() > 2**64
    with pytest.raises(MaskTooLarge, match="insertions"):
        plan.insertion_codes()


@pytest.mark.parametrize("name,expected", [
    ("stm32f411", "stm32f411-release"), ("STM32F411", "stm32f411-release"), ("stm32f411_debug", "stm32f411-debug"),
    ("thumbv7em", "thumbv7em-release"), ("THUMBV7EM-Debug", "thumbv7em-debug"), ("x86-64", "x86_64-release"),
    ("esp32-s3", "esp32s3-release"), ("wasm32_unknown", "wasm32-unknown-release"),
])
def test_the_python_api_takes_every_name_the_cli_takes(name, expected):
    """issue 16.2: case, - and _ alike, no suffix is -release, profiles too (through the mcsa.targets entry point)."""
    from firmware_model.profiles import build_named

    sim = MincutSparseAttention(target=name)
    assert sim.target.name == expected and sim.target == build_named(name).target == Target.named(name)


@pytest.mark.parametrize("name,suggested", [
    ("stm32f412", "did you mean stm32f411, stm32f103 or stm32h743?"),
    ("thumbv7em-dbg", "did you mean thumbv7em-debug, thumbv7m-debug or thumbv6m-debug?"),
    ("esp32s4", "did you mean esp32s3 or esp32?"),
])
def test_an_unknown_name_gets_a_few_close_ones(name, suggested):
    with pytest.raises(ValueError) as err:
        MincutSparseAttention(target=name)
    assert str(err.value) == f"unknown target {name!r}; {suggested} (`mcsa targets` lists every profile and preset)"
