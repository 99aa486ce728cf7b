"""The heap model: its shortcut against a full B-tree replay, and the shapes its figures must have.
(Every golden heap figure, both widths, is checked in test_golden.py.)"""

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import mcsa
from firmware_model import btree
from firmware_model.btree import node_counts as btree_node_counts
from firmware_model.heap import build_mask_usage, full_mask_usage, sparse_attention_usage

from .strategies import configs, gates

NO_RANKS = np.zeros(1, np.int64)


def replay_counts(codes):
    """Node counts when every insertion is replayed explicitly."""
    return btree_node_counts(0, NO_RANKS, NO_RANKS, codes)


@given(
    configs(max_edges=st.integers(0, 30)),
    gates(partition_count=st.integers(2, 40), lambda_=st.integers(30, 1000)),
    st.integers(16, 3000),
)
def test_ascending_shortcut_equals_full_replay(config, gate, seq_len):
    """The intra pairs, never materialised, give the same tree as replaying them one by
    one: the same nodes, allocated in the same order and freed by into_iter in the same order."""
    plan = mcsa.MincutSparseAttention(config).plan_mask(gate, seq_len)
    prefix, lo = btree.intra_ranks(plan)
    cross = replace(plan, intra=False).insertion_codes()
    assert btree_node_counts(int(prefix[-1]), prefix, lo, cross) == replay_counts(plan.insertion_codes())
    short = btree.insert(int(prefix[-1]), prefix, lo, cross, True)
    full = btree.insert(0, NO_RANKS, NO_RANKS, plan.insertion_codes(), True)
    assert np.array_equal(short[2], full[2]) and np.array_equal(short[3], full[3])
    assert sorted(short[3][:, 1]) == list(range(len(short[2])))  # every node freed once


@pytest.mark.parametrize("n", [0, 1, 11, 12, 18, 19, 20, 143, 144, 1000, 12345])
def test_ascending_tree_shape(n):
    prefix = np.arange(n + 1, dtype=np.int64)  # one key per row: rank r is (r, 0)
    lo = np.zeros(n, np.int64)
    shortcut = btree_node_counts(n, prefix, lo, np.zeros(0, np.uint32))
    assert shortcut == replay_counts((np.arange(n, dtype=np.uint32) << 16))
    if 12 <= n:
        assert shortcut[0] == (n - 12) // 7 + 2  # leaves of 6 keys, one key up per 7


@pytest.mark.parametrize("bits,leaf,internal", [(64, 56, 152), (32, 52, 100)])
def test_node_sizes(bits, leaf, internal):
    assert btree.node_bytes(bits) == (leaf, internal)


@given(configs(), gates(), st.integers(0, 600), st.sampled_from([32, 64]))
def test_usage_shape(config, gate, seq_len, bits):
    try:
        u = build_mask_usage(config, gate, seq_len, bits)
    except mcsa.TargetPanic:
        return
    assert u.peak_bytes >= u.live_bytes >= 0
    assert u.allocations >= u.peak_blocks >= 0 and u.peak_blocks >= 1
    assert u.live_blocks in (1, 2, 3)  # positions (if any), boundaries, tokens / full's vec![0]
    stats = mcsa.MincutSparseAttention(config, mcsa.Target(bits)).mask_stats(gate, seq_len)
    assert u.live_bytes >= stats.num_positions * 4  # the returned Vec holds every position


@given(st.integers(0, 3000), st.integers(0, 3000))
def test_full_mask_usage_is_monotone(a, b):
    a, b = sorted((a, b))
    for bits in (32, 64):
        ua, ub = full_mask_usage(a, bits), full_mask_usage(b, bits)
        assert ua.peak_bytes <= ub.peak_bytes
        assert ub.peak_bytes == b * b * 4 + 2


def test_attention_usage_grows_with_the_mask():
    sim = mcsa.MincutSparseAttention()
    small = sim.build_mask(mcsa.GatePacket(lambda_=100, partition_count=8), 256)
    big = sim.build_mask(mcsa.GatePacket(lambda_=100, partition_count=2), 256)
    us, ub = (sparse_attention_usage(m, 256, 16, 32) for m in (small, big))
    assert us.live_bytes == ub.live_bytes == 256 * 16 * 4
    assert us.peak_bytes < ub.peak_bytes
    with pytest.raises(ValueError, match="past qkv_seq_len=128"):
        sparse_attention_usage(big, 128, 16, 32)


def test_heap_model_answers_65535_tokens_quickly():
    u = build_mask_usage(mcsa.SparsityConfig(), mcsa.GatePacket(lambda_=200, partition_count=8), 65535, 32)
    assert u.live_bytes > 2**30 and u.peak_bytes > 3 * 2**30
