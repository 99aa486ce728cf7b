"""``calculate_density``: the f32 target density a schedule gives a gate packet."""

from __future__ import annotations

import numpy as np

from ._jit import bits_f32, f32_bits, jit
from .packets import Adaptive, Linear, SparsityConfig, Threshold
from .target import Target

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


_SIGN, _ABS, _QUIET, _INF = np.uint32(0x8000_0000), np.uint32(0x7FFF_FFFF), np.uint32(0x0040_0000), np.uint32(0x7F80_0000)


@jit
def _nan_of(a, b, second, negate_b, by_add, rules):
    """The NaN ``a op b`` returns on the target when its result is NaN; ``rules``
    is :attr:`mcsa.core.target.NanRules.code`, ``second`` the rule's operand choice,
    ``by_add`` whether the operation is an add or subtract."""
    abits, bbits = f32_bits(a), f32_bits(b)
    a_nan, b_nan = (abits & _ABS) > _INF, (bbits & _ABS) > _INF
    if rules[1] == 0 or not (a_nan or b_nan):
        return bits_f32(np.uint32(rules[0]))
    if negate_b:
        bbits ^= _SIGN
    pick_b = b_nan
    if a_nan and b_nan:
        a_snan, b_snan = (abits & _QUIET) == 0, (bbits & _QUIET) == 0
        pick_b = b_snan if rules[3] != 0 and a_snan != b_snan else second != 0
    bits = bbits if pick_b else abits
    if rules[2] != 0:
        bits |= _QUIET
    if by_add and rules[8] != 0:
        bits &= _ABS
    return bits_f32(np.uint32(bits))


@jit
def f32_add(a, b, rules):
    """``a + b`` in f32 with the target's NaN rules."""
    r = a + b
    return _nan_of(a, b, rules[4], False, True, rules) if r != r else r


@jit
def f32_sub(a, b, rules):
    """``a - b`` in f32 with the target's NaN rules."""
    r = a - b
    return _nan_of(a, b, rules[5], rules[7] != 0, True, rules) if r != r else r


@jit
def f32_mul(a, b, rules):
    """``a * b`` in f32 with the target's NaN rules."""
    r = a * b
    return _nan_of(a, b, rules[6], False, False, rules) if r != r else r


@jit
def _f32_clamp(x, lo, hi):
    """Rust ``f32::clamp``: NaN passes through."""
    if x < lo:
        x = lo
    if x > hi:
        x = hi
    return x


@jit
def density_kernel(kind, min_density, max_density, dense_above_lambda, rules, lam, concentration_q15, partition_count):
    """``MincutSparseAttention::calculate_density`` for a schedule given by its
    parts and the target's NaN rules (only ``Linear`` can meet a NaN)."""
    if kind == LINEAR:
        normalized = _f32_clamp((np.float32(min(lam, 300)) - _30) / _270, _0, _1)
        return f32_add(min_density, f32_mul(normalized, f32_sub(max_density, min_density, rules), rules), rules)
    if kind == THRESHOLD:
        return _09 if lam >= dense_above_lambda else _01
    if kind == ADAPTIVE:
        base = _f32_clamp(np.float32(lam) / _150, _0, _1) * _06 + _01
        boundary = (np.float32(concentration_q15) / _32768) * _02
        partition = f32_max(_M005 * np.float32(partition_count), _M02)
        return _f32_clamp(base + boundary + partition, _01, _09)
    return _05


def schedule_args(config: SparsityConfig, target: Target) -> tuple:
    """The schedule of ``config`` and the NaN rules of ``target`` as the first
    five arguments of :func:`density_kernel`."""
    rules = target.nan.code
    sched = config.lambda_based_density
    if isinstance(sched, Linear):
        return LINEAR, sched.min_density, sched.max_density, 0, rules
    if isinstance(sched, Threshold):
        return THRESHOLD, _0, _0, sched.dense_above_lambda, rules
    return (NONE if sched is None else ADAPTIVE), _0, _0, 0, rules
