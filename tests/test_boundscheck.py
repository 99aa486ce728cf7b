"""The kernels under NUMBA_BOUNDSCHECK=1 on wrapping, huge and zero edge cases: no
index a kernel computes may fall outside its arrays (an IndexError would say so)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = r"""
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
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "calls" in done.stdout and "IndexError" not in done.stderr
