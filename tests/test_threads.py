"""sparse_attention on several threads: the one-thread bits and the one-thread panic
(Rust's first, in query order), and the thread count it is given."""

import os
import platform
import re
import subprocess
import sys

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcsa import GatePacket, MincutSparseAttention, SparseMask, TargetPanic
from mcsa.core import attention

from .strategies import f32_values, nan_bits, targets

THREADS = numba.config.NUMBA_NUM_THREADS


def outcome(sim, q, k, v, mask, dim, scale):
    """The output bits, or ("panic", message)."""
    try:
        return sim.sparse_attention(q, k, v, mask, dim, scale).view(np.uint32).tolist()
    except TargetPanic as panic:
        return ("panic", panic.message)


def one_and_all(target, *call):
    """The outcome on 1 thread and on every thread, the parallel path taken however small the mask."""
    assert THREADS >= 2, "these tests need NUMBA_NUM_THREADS >= 2 (any machine accepts it)"
    alone = outcome(MincutSparseAttention(target=target, threads=1), *call)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(attention, "_PARALLEL_MIN", 0)
        shared = outcome(MincutSparseAttention(target=target, threads=THREADS), *call)
    return alone, shared


@st.composite
def attention_calls(draw):
    """Random masks (out-of-range queries and keys, unsorted, repeated) over q, k, v
    of lengths Rust accepts (short k or v panic), with NaN and infinite scales."""
    dim = draw(st.integers(0, 9))
    rows = draw(st.integers(0, 30))
    n = rows * max(dim, 1)
    lengths = [n] * 3
    if draw(st.booleans()):
        lengths = [draw(st.integers(max(n - 12, 0), n + 12)) for _ in range(3)]
    q, k, v = (np.array(draw(st.lists(st.integers(-128, 127), min_size=m, max_size=m)), np.int8) for m in lengths)
    pairs = st.tuples(st.integers(0, rows + 1), st.integers(0, rows + 1))
    positions = draw(st.lists(pairs, max_size=80))
    if draw(st.booleans()):
        positions.sort(key=lambda p: p[0])
    scale = draw(st.one_of(f32_values, nan_bits, st.sampled_from([np.float32(x) for x in (np.inf, -np.inf, 1e30)])))
    return q, k, v, SparseMask(np.array(positions, np.int64).reshape(-1, 2), 0.5), dim, scale


@settings(max_examples=300)
@given(attention_calls(), targets)
def test_threads_give_the_one_thread_bits_and_panic(call, target):
    alone, shared = one_and_all(target, *call)
    assert shared == alone


@pytest.mark.parametrize("target", ["x86_64-release", "x86_64-debug", "wasm32-release", "wasm32-debug"])
def test_first_panic_in_query_order(target):
    """Rows 2 and 9 both read past k (at different indices), each in its own run of
    rows: the panic is row 2's, as Rust's query loop meets it first; then row 9's alone."""
    dim, rows = 4, 12
    q = np.ones(rows * dim, np.int8)
    k = v = np.ones(8 * dim, np.int8)  # keys 8.. are past k and v
    good = [(i, j) for i in range(rows) for j in range(min(i + 1, 8))]
    for bad in ([(2, 10), (9, 11)], [(9, 11)]):
        mask = SparseMask(sorted(good + bad), 0.5)
        alone, shared = one_and_all(target, q, k, v, mask, dim, np.float32(0.5))
        first = bad[0][1] * dim
        assert alone == shared == ("panic", f"index out of bounds: the len is {k.size} but the index is {first}")


@pytest.mark.parametrize("target", ["x86_64-debug", "wasm32-release", "wasm32-debug", "thumbv7em-debug"])
def test_wide_rows_panic_alike(target):
    """dim 131077 (the i32 score overflows: debug panics) and key 65535 at dim 70000 (the
    32-bit index wraps): the checked paths on several threads."""
    for dim, key, fill in ((131077, 1, -128), (70000, 65535, 1)):
        q = np.full(2 * dim, fill, np.int8)
        k = v = np.full(2 * dim, fill, np.int8)
        mask = SparseMask([[0, 0], [1, 0], [1, key]], 0.5)
        alone, shared = one_and_all(target, q, k, v, mask, dim, np.float32(0.5))
        assert shared == alone


@pytest.mark.parametrize("scale", [np.float32(0.125), np.float32(np.nan), np.float32(np.inf), np.float32(-np.inf),
                                   np.uint32(0x7FA0_0001).view(np.float32), np.float32(3e38)])
@pytest.mark.parametrize("target", ["x86_64-release", "wasm32-debug", "thumbv7em-release"])
def test_a_real_mask_on_all_threads(target, scale):
    """build_mask at 1,024 tokens (the parallel path on its own, no patch) with random
    int8 data: the same bits on 1 and on every thread."""
    sim = MincutSparseAttention(target=target, threads=1)
    mask = sim.build_mask(GatePacket(lambda_=200, partition_count=8), 1024)
    assert mask.num_positions >= attention._PARALLEL_MIN
    rng = np.random.default_rng(17)
    q, k, v = (rng.integers(-128, 128, 1024 * 64).astype(np.int8) for _ in range(3))
    alone = outcome(sim, q, k, v, mask, 64, scale)
    shared = outcome(MincutSparseAttention(target=target, threads=THREADS), q, k, v, mask, 64, scale)
    assert shared == alone


def test_thread_count_is_honoured(monkeypatch):
    """threads=1 runs the one-thread kernel; threads=N the parallel one on N threads
    (Numba's count inside the launch) with N workers claiming runs of whole rows that
    cover every row once; None takes Numba's count; Numba's count is restored after the call."""
    assert THREADS >= 2, "this test needs NUMBA_NUM_THREADS >= 2 (any machine accepts it)"
    launches = []
    rows, rows_parallel = attention._rows, attention._rows_parallel

    def serial(*args):
        launches.append(("serial", numba.get_num_threads(), 1))
        return rows(*args)

    def parallel(*args):
        runs, workers = args[5], args[6]
        assert runs[0] == 0 and runs[-1] == 1024 and (np.diff(runs) > 0).all()
        assert workers < runs.size - 1 <= workers * attention._RUNS_PER_THREAD
        launches.append(("parallel", numba.get_num_threads(), workers))
        return rows_parallel(*args)

    monkeypatch.setattr(attention, "_rows", serial)
    monkeypatch.setattr(attention, "_rows_parallel", parallel)
    mask = MincutSparseAttention().build_mask(GatePacket(lambda_=200, partition_count=8), 1024)
    data = np.ones(1024 * 16, np.int8)
    before = numba.get_num_threads()
    for threads in (1, 2, THREADS, None):
        MincutSparseAttention(threads=threads).sparse_attention(data, data, data, mask, 16, 0.5)
    assert launches == [("serial", before, 1), ("parallel", 2, 2), ("parallel", THREADS, THREADS),
                        ("parallel", before, before)]
    assert numba.get_num_threads() == before
    numba.set_num_threads(1)  # None follows numba.set_num_threads
    try:
        launches.clear()
        MincutSparseAttention().sparse_attention(data, data, data, mask, 16, 0.5)
        assert launches == [("serial", 1, 1)]
    finally:
        numba.set_num_threads(before)


def test_tbb_is_the_threading_layer():
    """A fresh process, with no threading layer chosen by the user, runs sparse_attention's
    threads on TBB where mcsa depends on the ``tbb`` package (x86-64 Linux, whose pip
    install puts the library where the loader does not look), else on Numba's workqueue."""
    script = ("import numpy as np, numba, mcsa; "
              "sim = mcsa.MincutSparseAttention(threads=2); "
              "mask = sim.build_mask(mcsa.GatePacket(lambda_=200, partition_count=8), 1024); "
              "z = np.ones(1024 * 8, np.int8); sim.sparse_attention(z, z, z, mask, 8, 0.5); "
              "print(numba.threading_layer())")
    env = {name: value for name, value in os.environ.items() if not name.startswith("NUMBA_THREADING_LAYER")}
    layer = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    linux_x86_64 = sys.platform.startswith("linux") and platform.machine() == "x86_64"
    assert layer.stdout.strip() == ("tbb" if linux_x86_64 else "workqueue"), layer.stderr


@pytest.mark.parametrize("threads,error,message", [
    (0, ValueError, f"threads must be in 1..={THREADS} (NUMBA_NUM_THREADS), got 0"),
    (THREADS + 1, ValueError, f"threads must be in 1..={THREADS} (NUMBA_NUM_THREADS), got {THREADS + 1}"),
    (2.0, TypeError, "threads must be an integer, got float 2.0"),
    (True, TypeError, "threads must be an integer, got bool True"),
])
def test_bad_thread_counts_are_refused(threads, error, message):
    with pytest.raises(error, match=re.escape(message)):
        MincutSparseAttention(threads=threads)


def test_masks_hold_read_only_positions_in_known_order():
    """What sparse_attention knows of a mask's order stays true: its positions cannot be changed."""
    built = MincutSparseAttention().build_mask(GatePacket(lambda_=200, partition_count=4), 64)
    given_ = SparseMask([[3, 1], [1, 0]], 0.5)
    full = SparseMask.full(8)
    assert (built.sorted_by_query(), given_.sorted_by_query(), full.sorted_by_query()) == (True, False, True)
    for mask in (built, given_, full):
        with pytest.raises(ValueError, match="read-only"):
            mask.positions[0, 0] = 7
        with pytest.raises(AttributeError):
            mask.positions = np.zeros((0, 2), np.uint16)
    plan = MincutSparseAttention().plan_mask(GatePacket(lambda_=200, partition_count=4), 64)
    for kept in (plan.boundaries, plan.tokens):  # kept for the next plan of the same figures
        with pytest.raises(ValueError, match="read-only"):
            kept[1] = 7
    assert built.partition_boundaries.tolist() == [0, 16, 32, 48]


@settings(max_examples=200)
@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), max_size=60), st.booleans(),
       st.lists(st.integers(0, 24), min_size=1, max_size=4))
def test_by_query_is_rusts_grouping_for_each_length_in_turn(pairs, sort, lengths):
    """``positions_by_query`` of one mask for q of several lengths in turn (the grouping
    of the last length is kept): the first query out of bounds, in mask order, or each
    query's keys in mask order; the arrays are read-only."""
    if sort:
        pairs.sort(key=lambda p: p[0])
    mask = SparseMask(np.array(pairs, np.int64).reshape(-1, 2), 0.5)
    for seq_len in lengths + lengths:
        bad, offsets, grouped = mask.by_query(seq_len)
        outside = [q for q, _ in pairs if q >= seq_len]
        assert bad == (outside[0] if outside else -1)
        if bad < 0:
            keys = [[k for q, k in pairs if q == row] for row in range(seq_len)]
            assert [grouped[offsets[i]:offsets[i + 1], 1].tolist() for i in range(seq_len)] == keys
        assert not offsets.flags.writeable and not grouped.flags.writeable
