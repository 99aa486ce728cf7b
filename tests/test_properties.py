"""The kernels against the plain-Python transliteration (tests/naive.py) on random inputs."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mcsa import GatePacket, MaskTooLarge, MincutSparseAttention, SparseMask, SparsityConfig, TargetPanic
from mcsa.core.mask import distinct_codes, distinct_positions, ordered_count, ordered_positions

from . import naive
from .strategies import configs, f32_values, gates, targets, usize


def outcome(fn, *args):
    """The value of fn(*args), or ("panic", message)."""
    try:
        return fn(*args)
    except TargetPanic as panic:
        return ("panic", panic.message)


def small_token_set(config, gate):
    """The naive cross loops are quadratic in boundary tokens, as the Rust is: keep them few."""
    assume(min(config.max_cross_partition_edges, max(gate.partition_count, 1)) <= 300)


def bits(x):
    return int(np.float32(x).view(np.uint32))


def mask_tuple(mask):
    return ([tuple(p) for p in mask.positions.tolist()], bits(mask.density),
            mask.partition_boundaries.tolist(), mask.boundary_tokens.tolist())


def naive_tuple(result):
    positions, density, bounds, tokens = result
    return positions, bits(density), list(bounds), list(tokens)


def assert_mask_matches_naive(config, gate, seq_len, target):
    """build_mask and the transliteration give the same mask, or the same panic."""
    sim = MincutSparseAttention(config, target)
    got = outcome(lambda: mask_tuple(sim.build_mask(gate, seq_len)))
    assert got == outcome(lambda: naive_tuple(naive.build_mask(config, gate, seq_len, target)))


@given(configs(), gates(), targets)
def test_density_matches_naive(config, gate, target):
    got = MincutSparseAttention(config, target).calculate_density(gate)
    assert isinstance(got, np.float32)
    assert bits(got) == bits(naive.calculate_density(config, gate, target))


@st.composite
def partitioned_lengths(draw, gate):
    """seq_len as partitions * size + remainder (remainder < partitions), so short
    partitions and cross windows reaching the last row come up often."""
    if draw(st.integers(0, 3)) == 0:
        return draw(st.integers(0, 160))
    parts = max(gate.partition_count, 1)
    return parts * draw(st.integers(1, 8)) + draw(st.integers(0, parts - 1))


sparse_lambdas = st.one_of(st.integers(30, 400), st.integers(0, 0xFFFF_FFFF), st.integers(0, 40))


@settings(max_examples=400)
@given(
    configs(),
    gates(partition_count=st.one_of(st.integers(0, 12), st.integers(0, 40)), lambda_=sparse_lambdas),
    st.data(),
    targets,
)
def test_build_mask_matches_naive(config, gate, data, target):
    seq_len = data.draw(partitioned_lengths(gate))
    small_token_set(config, gate)
    assert_mask_matches_naive(config, gate, seq_len, target)


@given(
    configs(max_edges=st.integers(0, 24)).filter(lambda c: not c.intra_partition_attention),
    gates(partition_count=st.one_of(st.integers(2, 30), st.integers(2, 0xFFFF)), lambda_=st.integers(30, 0xFFFF_FFFF)),
    st.one_of(st.integers(65500, 65540), st.integers(65536, 300_000)),
    targets,
)
def test_wrapping_masks_match_naive(config, gate, seq_len, target):
    """Past 65535 tokens, `as u16` and `token + offset` wrap: pairs collide and turn non-causal."""
    assert_mask_matches_naive(config, gate, seq_len, target)


@given(
    configs(max_edges=st.integers(0, 4)).filter(lambda c: not c.intra_partition_attention),
    gates(partition_count=st.integers(2, 3), lambda_=st.integers(30, 0xFFFF_FFFF)),
    st.integers(65530, 65536),
    st.integers(0, 2),
    targets,
)
def test_high_tokens_near_u16_end(config, gate, size, extra, target):
    """A boundary token within 3 of 65535: the u16 `token + offset` wraps (release) or panics (debug)."""
    seq_len = gate.partition_count * size + min(extra, gate.partition_count - 1)
    assert_mask_matches_naive(config, gate, seq_len, target)


@given(configs(), gates(), st.one_of(st.integers(0, 300), st.integers(0, 70_000)), targets)
def test_mask_stats_agree_with_build_mask(config, gate, seq_len, target):
    sim = MincutSparseAttention(config, target, position_limit=20_000_000)
    try:
        stats = sim.mask_stats(gate, seq_len)
    except (TargetPanic, MaskTooLarge) as err:
        with pytest.raises(type(err), match=re.escape(str(err))):
            sim.build_mask(gate, seq_len)
        return
    if stats.num_positions > 5_000_000:
        return  # too large to build in a property test; the counting path is still exercised
    mask = sim.build_mask(gate, seq_len)
    assert stats.num_positions == mask.num_positions
    assert bits(stats.density) == bits(mask.density)
    assert stats.sparse == (mask.partition_boundaries.tolist() != [0] or mask.density != 1)


@settings(max_examples=300)
@given(
    configs(max_edges=st.integers(0, 24)).filter(lambda c: not c.intra_partition_attention),
    gates(partition_count=st.one_of(st.integers(2, 40), st.integers(2, 0xFFFF)), lambda_=st.integers(30, 0xFFFF_FFFF)),
    targets,
    st.data(),
)
def test_any_usize_seq_len_matches_naive(config, gate, target, data):
    """seq_len anywhere in usize (2^63 and past on 64-bit) on the sparse path: the
    cross loops only (the naive intra loops, or a full mask, would run seq_len^2 times)."""
    seq_len = data.draw(usize(target).filter(lambda n: n >= 16))
    assert_mask_matches_naive(config, gate, seq_len, target)
    sim = MincutSparseAttention(config, target)
    stats = outcome(lambda: sim.mask_stats(gate, seq_len))
    if not isinstance(stats, tuple):
        expected = naive.build_mask(config, gate, seq_len, target)
        assert (stats.num_positions, bits(stats.density)) == (len(expected[0]), bits(expected[1]))


def test_huge_seq_len_after_a_long_one():
    """issue 10 A: a seq_len >= 2^63 after masks past 65536 in the same process."""
    sim = MincutSparseAttention(SparsityConfig(intra_partition_attention=False), target="x86_64-release")
    gate = GatePacket(lambda_=30, partition_count=2)
    sim.build_mask(gate, 100000)
    for seq_len in (2**63, 2**64 - 1, 2**63 + 5):
        mask = sim.build_mask(gate, seq_len)
        assert mask_tuple(mask) == naive_tuple(naive.build_mask(sim.config, gate, seq_len, sim.target))
        assert sim.mask_stats(gate, seq_len).num_positions == mask.num_positions
    assert mask_tuple(sim.build_mask(gate, 2**63)) == ([(0, 0), (1, 0), (2, 0), (3, 0)], 0x21000000, [0, 0], [0, 0])


@given(configs(), gates(partition_count=st.integers(0, 300), lambda_=st.integers(30, 400)), st.integers(16, 65536))
def test_interval_rows_agree_with_ordered_layout(config, gate, seq_len):
    """Where no index wraps, the row-interval construction used for wrapping masks
    gives exactly the ordered layout's positions."""
    plan = MincutSparseAttention(config).plan_mask(gate, seq_len)
    assume(plan.sparse and plan.ordered)
    args = (plan.seq_len, plan.boundaries, plan.tokens, plan.intra, plan.cross)
    count = ordered_positions(*args, np.zeros((0, 2), np.uint16), False, np.zeros(0, np.int64))
    assume(count <= 3_000_000)
    assert distinct_positions(*args, np.zeros((0, 2), np.uint16), False) == count
    want, got = np.empty((count, 2), np.uint16), np.empty((count, 2), np.uint16)
    ordered_positions(*args, want, True, np.zeros(0, np.int64))
    distinct_positions(*args, got, True)
    assert np.array_equal(want, got)


@given(configs(), gates(lambda_=st.integers(30, 400)), st.integers(16, 65536))
def test_closed_form_count_agrees_with_ordered_layout(config, gate, seq_len):
    """build_mask counts an ordered mask from its partitions and tokens alone: the
    count its layout pass gives, row by row."""
    plan = MincutSparseAttention(config).plan_mask(gate, seq_len)
    assume(plan.sparse and plan.ordered)
    args = (plan.seq_len, plan.boundaries, plan.tokens, plan.intra, plan.cross)
    assert ordered_count(*args) == ordered_positions(*args, np.zeros((0, 2), np.uint16), False, np.zeros(0, np.int64))


@pytest.mark.parametrize("target", ["x86_64-release", "wasm32-release"])
@pytest.mark.parametrize("seq_len,parts,edges", [(65600, 200, 20), (65700, 230, 3), (65537, 250, 0), (65800, 205, 65535)])
def test_wrapping_intra_masks_match_their_insertions(target, seq_len, parts, edges):
    """With intra-partition attention past 65535 tokens: the distinct pairs equal the
    reference's loops enumerated one insertion at a time and deduplicated."""
    sim = MincutSparseAttention(SparsityConfig(max_cross_partition_edges=edges), target)
    plan = sim.plan_mask(GatePacket(lambda_=100, partition_count=parts), seq_len)
    assert plan.sparse and not plan.ordered and plan.intra
    codes = distinct_codes(plan.insertion_codes())
    assert plan.insertion_count() == plan.insertion_codes().size
    mask = sim.mask_from_plan(plan)
    assert np.array_equal(mask.positions[:, 0].astype(np.uint32) << 16 | mask.positions[:, 1], codes)


@st.composite
def attention_inputs(draw):
    dim = draw(st.integers(0, 9))
    seq_len = draw(st.integers(0, 40))
    n = seq_len * max(dim, 1)
    lengths = [n] * 3
    if draw(st.booleans()):  # lengths Rust accepts: q not whole rows, k or v short or long
        lengths = [draw(st.integers(max(n - 12, 0), n + 12)) for _ in range(3)]
    q, k, v = (draw(st.lists(st.integers(-128, 127), min_size=m, max_size=m).map(lambda x: np.array(x, np.int8)))
               for m in lengths)
    if draw(st.booleans()):
        positions = draw(st.lists(st.tuples(st.integers(0, seq_len + 2), st.integers(0, seq_len + 2)), max_size=60))
        mask = SparseMask(np.array(positions, np.int64).reshape(-1, 2), 0.5)
    else:
        mask = None
    scale = draw(st.one_of(f32_values, st.sampled_from([np.float32(0.125), np.float32(1e30), np.float32(1e-30),
                                                        np.float32(np.inf), np.float32(-np.inf)])))
    return q, k, v, mask, dim, scale


@given(attention_inputs(), configs(), gates(), st.integers(0, 48), targets)
def test_attention_matches_naive(inputs, config, gate, mask_len, target):
    small_token_set(config, gate)
    q, k, v, mask, dim, scale = inputs
    sim = MincutSparseAttention(config, target)
    if mask is None:
        mask = outcome(sim.build_mask, gate, mask_len)
        if isinstance(mask, tuple):
            return
    got = outcome(lambda: sim.sparse_attention(q, k, v, mask, dim, scale).view(np.uint32).tolist())
    want = outcome(lambda: naive.sparse_attention(q, k, v, mask.positions.tolist(), dim, scale, target)
                   .view(np.uint32).tolist())
    assert got == want


@pytest.mark.parametrize(
    "x_bits,flavours",
    [
        (0xC27C65D9, {"x86_64-release": 0x11FA2993, "wasm32-release": 0x11FA2992}),
        (0xBD0126DA, None),  # one of the inputs where libm-rs and glibc-fma differ
    ],
)
def test_target_expf_reaches_the_softmax(x_bits, flavours):
    """Scores 0 and x: the softmax weight of the second key is the target's exp(x) / (1 + exp(x))."""
    x = np.uint32(x_bits).view(np.float32)
    q = np.array([1, 1], np.int8)
    k = np.array([0, 1], np.int8)
    v = np.array([0, 100], np.int8)
    mask = SparseMask([[1, 0], [1, 1]], 1.0)
    outputs = {}
    for name in ("x86_64-release", "wasm32-release", "thumbv7em-release"):
        sim = MincutSparseAttention(target=name)
        got = sim.sparse_attention(q, k, v, mask, 1, x)
        want = naive.sparse_attention(q, k, v, [(1, 0), (1, 1)], 1, x, sim.target)
        assert got.view(np.uint32).tolist() == want.view(np.uint32).tolist()
        outputs[name] = int(got.view(np.uint32)[1])
        e = naive.expf(np.array([x], np.float32), sim.target.expf)[0]
        assert got[1] == (e * (np.float32(1) / (np.float32(1) + e))) * np.float32(100)
    if flavours:
        assert outputs["x86_64-release"] != outputs["wasm32-release"]
    else:
        assert outputs["x86_64-release"] != outputs["thumbv7em-release"]


@pytest.mark.parametrize("target", ["x86_64-release", "x86_64-debug", "wasm32-release", "thumbv7em-debug"])
@pytest.mark.parametrize("qk", [(-128, -128), (127, -128), (-128, 127)])
def test_i32_score_overflow_matches_naive(target, qk):
    """dim >= 131072: the i32 score sum overflows; release wraps, debug panics."""
    dim = 131072 + 5
    q = np.full(dim, qk[0], np.int8)
    k = np.full(dim, qk[1], np.int8)
    v = np.arange(dim).astype(np.int8)
    sim = MincutSparseAttention(target=target)
    mask = SparseMask([[0, 0]], 1.0)
    got = outcome(lambda: sim.sparse_attention(q, k, v, mask, dim, np.float32(0.5)).view(np.uint32).tolist())
    want = outcome(lambda: naive.sparse_attention(q, k, v, [(0, 0)], dim, np.float32(0.5), sim.target)
                   .view(np.uint32).tolist())
    assert got == want


@pytest.mark.parametrize("target", ["wasm32-release", "wasm32-debug", "x86_64-release"])
def test_usize_index_wraps_on_32_bit(target):
    """key * dim past 2^32: debug panics on the multiply, release wraps and fails the bounds check."""
    dim = 70_000
    q = k = v = np.ones(dim, np.int8)
    sim = MincutSparseAttention(target=target)
    mask = SparseMask([[0, 65535]], 1.0)
    got = outcome(lambda: sim.sparse_attention(q, k, v, mask, dim, np.float32(1)))
    want = outcome(lambda: naive.sparse_attention(q, k, v, [(0, 65535)], dim, np.float32(1), sim.target))
    assert got == want
    expected = {
        "wasm32-debug": ("panic", "attempt to multiply with overflow"),
        "wasm32-release": ("panic", f"index out of bounds: the len is {dim} but the index is {65535 * dim - 2**32}"),
        "x86_64-release": ("panic", f"index out of bounds: the len is {dim} but the index is {65535 * dim}"),
    }
    assert got == expected[target]


# The kernels under NUMBA_BOUNDSCHECK=1 on wrapping, huge and zero edge cases: no index a
# kernel computes may fall outside its arrays (an IndexError would say so).
BOUNDSCHECK_SCRIPT = r"""
import numpy as np
import mcsa
from mcsa import GatePacket, MaskTooLarge, MincutSparseAttention, SparseMask, SparsityConfig, TargetPanic

outcomes = []
def run(fn):
    try:
        fn()
        outcomes.append("ok")
    except (TargetPanic, MaskTooLarge) as err:
        outcomes.append(type(err).__name__)

for target in ("x86_64-release", "x86_64-debug", "wasm32-release", "wasm32-debug"):
    for intra in (True, False):
        sim = MincutSparseAttention(SparsityConfig(intra_partition_attention=intra), target, position_limit=3_000_000)
        top = sim.target.usize_max
        for parts in (0, 2, 3, 4, 255, 65535):
            gate = GatePacket(lambda_=200, partition_count=parts)
            for seq_len in (0, 1, 16, 17, 65535, 65536, 65537, 65539, 131075, 2**32 - 1, top, top - 1,
                            433305435341373281 % (top + 1), 2**32 % (top + 1)):
                run(lambda: sim.mask_stats(gate, seq_len))
                run(lambda: sim.build_mask(gate, seq_len))
                run(lambda: sim.plan_mask(gate, seq_len).insertion_codes(3_000_000))
        wide = MincutSparseAttention(SparsityConfig(intra_partition_attention=intra), target, position_limit=12_000_000)
        run(lambda: wide.build_mask(GatePacket(lambda_=200, partition_count=400), 65600))  # wraps, intra filled
    sim = MincutSparseAttention(target=target)
    mask = SparseMask([[0, 0], [1, 65535], [2, 1], [3, 3]], 0.5)
    for dim in (0, 1, 3, 70000):
        for lengths in ((0, 0, 0), (4 * max(dim, 1),) * 3, (4 * max(dim, 1), 1, 4 * max(dim, 1)),
                        (4 * max(dim, 1), 4 * max(dim, 1), 2), (4 * max(dim, 1) + 1, 3, 5)):
            q, k, v = (np.ones(n, np.int8) for n in lengths)
            for scale in (np.float32(0.5), np.float32(np.inf), np.float32(np.nan)):
                run(lambda: sim.sparse_attention(q, k, v, mask, dim, scale))
                run(lambda: sim.sparse_attention(q, k, v, SparseMask.full(3), dim, scale))
print(len(outcomes), "calls", sorted(set(outcomes)))
"""


@pytest.mark.slow
def test_kernels_stay_in_bounds(tmp_path):
    env = {**os.environ, "NUMBA_BOUNDSCHECK": "1", "NUMBA_CACHE_DIR": str(tmp_path),
           "PYTHONPATH": str(Path(__file__).parent.parent)}
    done = subprocess.run([sys.executable, "-c", BOUNDSCHECK_SCRIPT], env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "calls" in done.stdout and "IndexError" not in done.stderr
