"""One gate packet on a Cortex-M4 build and on the x86-64 host: same mask, different softmax bits.

    python examples/demo.py
"""

import numpy as np

import mcsa

gate = mcsa.GatePacket(lambda_=100, lambda_prev=95, boundary_edges=5,
                       boundary_concentration_q15=8192, partition_count=3, flags=0)
seq_len, dim = 128, 32
scale = np.float32(1 / np.sqrt(dim))  # f32 0.17677669
rng = np.random.default_rng(2026)
q, k = (rng.integers(-8, 8, seq_len * dim).astype(np.int8) for _ in range(2))  # small activations
v = rng.integers(-128, 128, seq_len * dim).astype(np.int8)

outputs = {}
for name in ("thumbv7em-release", "x86_64-release"):
    sim = mcsa.MincutSparseAttention(mcsa.SparsityConfig(), target=name)
    mask = sim.build_mask(gate, seq_len)
    out = sim.sparse_attention(q, k, v, mask, dim, scale)
    outputs[name] = out.view(np.uint32)
    print(f"{name:>18}: target density {sim.calculate_density(gate)!s}, {mask.num_positions} positions, "
          f"mask density {mask.density!s}, flops ratio {sim.estimated_flops_ratio(mask, seq_len)!s}, "
          f"output fnv1a64 {mcsa.fnv1a64(out):016x}")

mcu, host = outputs["thumbv7em-release"], outputs["x86_64-release"]
differ = np.flatnonzero(mcu != host)
print(f"outputs differing between the no_std libm build and the glibc host: {differ.size} of {seq_len * dim}")
if differ.size:
    i = differ[0]
    print(f"first at [{i // dim}, {i % dim}]: {mcu[i]:08x} ({mcu[i:i + 1].view(np.float32)[0]!s}) on the MCU, "
          f"{host[i]:08x} ({host[i:i + 1].view(np.float32)[0]!s}) on the host")
