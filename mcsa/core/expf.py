"""``f32::exp`` as the three libms a Rust target may link, written out exactly.

Softmax in the reference module calls ``f32::exp`` on ``s - max``; what that
returns depends on the target's libm, so each flavour is reproduced bit for bit
(verified against the per-chunk hashes of all 2^31 non-positive inputs, and
correct on the whole float range by construction of the same algorithm).
"""

from __future__ import annotations

import numpy as np

from ._jit import bits_f32, bits_f64, f32_bits, f64_bits, fma64, jit
from .target import GLIBC_FMA, LIBM_RS, ExpF

# ARM optimized-routines exp2f_data (EXP2F_TABLE_BITS = 5): tab[i] holds the
# bits of 2^(i/32) minus i << 47, so that adding k << 47 scales by 2^(k/32).
_TAB = np.array(
    [
        0x3FF0000000000000, 0x3FEFD9B0D3158574, 0x3FEFB5586CF9890F, 0x3FEF9301D0125B51,
        0x3FEF72B83C7D517B, 0x3FEF54873168B9AA, 0x3FEF387A6E756238, 0x3FEF1E9DF51FDEE1,
        0x3FEF06FE0A31B715, 0x3FEEF1A7373AA9CB, 0x3FEEDEA64C123422, 0x3FEECE086061892D,
        0x3FEEBFDAD5362A27, 0x3FEEB42B569D4F82, 0x3FEEAB07DD485429, 0x3FEEA47EB03A5585,
        0x3FEEA09E667F3BCD, 0x3FEE9F75E8EC5F74, 0x3FEEA11473EB0187, 0x3FEEA589994CCE13,
        0x3FEEACE5422AA0DB, 0x3FEEB737B0CDC5E5, 0x3FEEC49182A3F090, 0x3FEED503B23E255D,
        0x3FEEE89F995AD3AD, 0x3FEEFF76F2FB5E47, 0x3FEF199BDD85529C, 0x3FEF3720DCEF9069,
        0x3FEF5818DCFBA487, 0x3FEF7C97337B9B5F, 0x3FEFA4AFA2A490DA, 0x3FEFD0765B6E4540,
    ],
    dtype=np.uint64,
)
_N = 32.0
_INVLN2N = float.fromhex("0x1.71547652b82fep+0") * _N
_SHIFT = float.fromhex("0x1.8p+52")
_C0 = float.fromhex("0x1.c6af84b912394p-5") / _N / _N / _N
_C1 = float.fromhex("0x1.ebfce50fac4f3p-3") / _N / _N
_C2 = float.fromhex("0x1.62e42ff0c52d6p-1") / _N
_OFLOW_X = np.float32(float.fromhex("0x1.62e42ep6"))  # log(0x1p128)
_UFLOW_X = np.float32(-float.fromhex("0x1.9fe368p6"))  # log(0x1p-150)
_U64_47 = np.uint64(47)
_U64_31 = np.uint64(31)


@jit
def _expf_optr(x, fused):
    """ARM optimized-routines expf; ``fused`` computes the reduction as one FMA."""
    ux = f32_bits(x)
    abstop = (ux >> np.uint32(20)) & np.uint32(0x7FF)
    if abstop >= np.uint32(0x42B):  # |x| >= 88 or NaN
        if ux == np.uint32(0xFF800000):
            return np.float32(0.0)
        if abstop >= np.uint32(0x7F8):
            return x + x
        if x > _OFLOW_X:
            return np.float32(np.inf)
        if x < _UFLOW_X:
            return np.float32(0.0)
    xd = np.float64(x)
    z = _INVLN2N * xd
    shifted = z + _SHIFT
    ki = f64_bits(shifted)
    kd = shifted - _SHIFT
    if fused:
        r = fma64(_INVLN2N, xd, -kd)
    else:
        r = z - kd
    t = _TAB[ki & _U64_31] + (ki << _U64_47)
    s = bits_f64(t)
    p = _C0 * r + _C1
    r2 = r * r
    y = _C2 * r + 1.0
    y = p * r2 + y
    y = y * s
    return np.float32(y)


_LN2_HI = np.float32(6.9314575195e-01)
_LN2_LO = np.float32(1.4286067653e-06)
_INV_LN2 = np.float32(1.4426950216e00)
_P1 = np.float32(1.6666625440e-1)
_P2 = np.float32(-2.7667332906e-3)
_HALF = np.array([0.5, -0.5], dtype=np.float32)
_F32_ONE = np.float32(1.0)
_F32_TWO = np.float32(2.0)
_X1P127 = np.float32(2.0**127)
_X1P_102 = np.float32(2.0**-102)


@jit
def _scalbnf(x, n):
    """musl/libm ``scalbnf``: x * 2^n with a single final rounding."""
    if n > 127:
        x = x * _X1P127
        n -= 127
        if n > 127:
            x = x * _X1P127
            n -= 127
            if n > 127:
                n = 127
    elif n < -126:
        x = x * _X1P_102
        n += 102
        if n < -126:
            x = x * _X1P_102
            n += 102
            if n < -126:
                n = -126
    return x * bits_f32(np.uint32((0x7F + n) << 23))


@jit
def _expf_libm(x):
    """Rust ``libm`` crate ``expf`` (FreeBSD msun ``e_expf.c``), all in f32."""
    hx = f32_bits(x)
    sign = np.int32(hx >> np.uint32(31))
    hx &= np.uint32(0x7FFFFFFF)
    if hx >= np.uint32(0x42AEAC50):  # |x| >= 87.33655 or NaN
        if hx > np.uint32(0x7F800000):
            return x
        if hx >= np.uint32(0x42B17218) and sign == 0:
            return x * _X1P127
        if sign != 0 and hx >= np.uint32(0x42CFF1B5):
            return np.float32(0.0)
    if hx > np.uint32(0x3EB17218):  # |x| > 0.5 ln2
        if hx > np.uint32(0x3F851592):  # |x| > 1.5 ln2
            k = np.int32(_INV_LN2 * x + _HALF[sign])
        else:
            k = np.int32(1 - sign - sign)
        kf = np.float32(k)
        hi = x - kf * _LN2_HI
        lo = kf * _LN2_LO
        x = hi - lo
    elif hx > np.uint32(0x39000000):  # |x| > 2**-14
        k = np.int32(0)
        hi = x
        lo = np.float32(0.0)
    else:
        return _F32_ONE + x
    xx = x * x
    c = x - xx * (_P1 + xx * _P2)
    y = _F32_ONE + (x * c / (_F32_TWO - c) - lo + hi)
    if k == 0:
        return y
    return _scalbnf(y, k)


@jit
def expf_kernel(x, flavour):
    """``f32::exp(x)`` of one float32 under flavour code ``flavour``."""
    if flavour == LIBM_RS:
        return _expf_libm(x)
    return _expf_optr(x, flavour == GLIBC_FMA)


@jit
def _expf_array(x, flavour, out):
    for i in range(x.size):
        out[i] = expf_kernel(x[i], flavour)


def expf(x: np.ndarray | float, flavour: ExpF | str) -> np.ndarray:
    """Elementwise ``f32::exp`` exactly as the given libm computes it.

    Parameters
    ----------
    x : array_like of float32
        Inputs; must already be float32 (a float64 array is refused, since
        rounding it here would hide where the f32 value came from).
    flavour : ExpF or str
        ``"glibc-fma"``, ``"musl"`` or ``"libm-rs"``.

    Returns
    -------
    numpy.ndarray
        float32 results with the shape of ``x``.

    Raises
    ------
    TypeError
        If ``x`` is not float32.
    ValueError
        If ``flavour`` is unknown.
    """
    code = ExpF.parse(flavour).code
    arr = np.asarray(x)
    if arr.dtype != np.float32:
        raise TypeError(f"x must be float32, got {arr.dtype}")
    flat = np.ascontiguousarray(arr).reshape(-1)
    out = np.empty_like(flat)
    _expf_array(flat, code, out)
    return out.reshape(arr.shape)
