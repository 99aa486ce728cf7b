"""``calculate_density``: the f32 target density a schedule gives a gate packet."""

from __future__ import annotations

import numpy as np

from ._jit import jit
from .packets import Adaptive, Linear, SparsityConfig, Threshold

NONE, ADAPTIVE, LINEAR, THRESHOLD = 0, Adaptive.KIND, Linear.KIND, Threshold.KIND

_0, _1 = np.float32(0.0), np.float32(1.0)
_01, _02, _05, _06, _09 = (np.float32(v) for v in (0.1, 0.2, 0.5, 0.6, 0.9))
_30, _150, _270, _32768 = (np.float32(v) for v in (30.0, 150.0, 270.0, 32768.0))
_M005, _M02 = np.float32(-0.05), np.float32(-0.2)


@jit
def f32_max(a, b):
    """Rust ``f32::max``: the non-NaN operand when one is NaN."""
    if a != a:
        return b
    if b != b:
        return a
    return a if a > b else b


@jit
def _f32_clamp(x, lo, hi):
    """Rust ``f32::clamp``: NaN passes through."""
    if x < lo:
        x = lo
    if x > hi:
        x = hi
    return x


@jit
def density_kernel(kind, min_density, max_density, dense_above_lambda, lam, concentration_q15, partition_count):
    """``MincutSparseAttention::calculate_density`` for a schedule given by its parts."""
    if kind == LINEAR:
        normalized = _f32_clamp((np.float32(min(lam, 300)) - _30) / _270, _0, _1)
        return min_density + normalized * (max_density - min_density)
    if kind == THRESHOLD:
        return _09 if lam >= dense_above_lambda else _01
    if kind == ADAPTIVE:
        base = _f32_clamp(np.float32(lam) / _150, _0, _1) * _06 + _01
        boundary = (np.float32(concentration_q15) / _32768) * _02
        partition = f32_max(_M005 * np.float32(partition_count), _M02)
        return _f32_clamp(base + boundary + partition, _01, _09)
    return _05


def schedule_args(config: SparsityConfig) -> tuple:
    """The schedule of ``config`` as the first four arguments of :func:`density_kernel`."""
    sched = config.lambda_based_density
    if isinstance(sched, Linear):
        return LINEAR, sched.min_density, sched.max_density, 0
    if isinstance(sched, Threshold):
        return THRESHOLD, _0, _0, sched.dense_above_lambda
    return (NONE if sched is None else ADAPTIVE), _0, _0, 0
