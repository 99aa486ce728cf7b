"""Hypothesis strategies for gates, configs and targets."""

import numpy as np
from hypothesis import strategies as st

from mcsa import Adaptive, GatePacket, Linear, SparsityConfig, Target, Threshold
from mcsa.core.target import NAN_RULES

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
f32_bits = st.integers(0, 0xFFFF_FFFF).map(lambda b: np.uint32(b).view(np.float32))
f32_values = st.one_of(
    st.floats(-2, 2, width=32).map(np.float32),
    f32_bits,
    st.sampled_from([np.float32(v) for v in (0.0, -0.0, np.inf, -np.inf, np.nan, 0.1, 0.9)]),
)

targets = st.builds(
    Target,
    usize_bits=st.sampled_from([32, 64]),
    overflow=st.sampled_from(["wrap", "panic"]),
    expf=st.sampled_from(["glibc-fma", "musl", "libm-rs"]),
    nan=st.sampled_from(sorted(NAN_RULES)),
)
nan_bits = st.one_of(st.integers(0x7F80_0001, 0x7FFF_FFFF), st.integers(0xFF80_0001, 0xFFFF_FFFF)).map(
    lambda b: np.uint32(b).view(np.float32))
"""f32 NaNs, signalling and quiet, of both signs."""


def usize(target):
    """seq_len from the whole usize range of ``target``, edges favoured."""
    top = target.usize_max
    edges = [v for v in (top, top - 1, 1 << (target.usize_bits - 1), 1 << 32, 65536) if v <= top]
    return st.one_of(st.integers(0, top), st.sampled_from(edges), st.integers(65_000, 200_000),
                     st.integers(top - 200_000, top))

schedules = st.one_of(
    st.none(),
    st.just(Adaptive()),
    st.builds(Linear, f32_values, f32_values),
    st.builds(Linear, st.one_of(f32_bits, nan_bits), st.one_of(f32_bits, nan_bits)),
    st.builds(Threshold, st.one_of(st.integers(0, 400), u32)),
)


def configs(max_edges=st.one_of(st.integers(0, 24), u16)):
    return st.builds(
        SparsityConfig,
        intra_partition_attention=st.booleans(),
        boundary_cross_attention=st.booleans(),
        lambda_based_density=schedules,
        max_cross_partition_edges=max_edges,
        min_density_q15=u16,
        max_density_q15=u16,
    )


def gates(partition_count=st.one_of(st.integers(0, 12), st.integers(0, 300), u16),
          lambda_=st.one_of(st.integers(0, 400), u32)):
    return st.builds(
        GatePacket,
        lambda_=lambda_,
        lambda_prev=u32,
        boundary_edges=u16,
        boundary_concentration_q15=u16,
        partition_count=partition_count,
        flags=u16,
    )
