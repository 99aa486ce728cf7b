"""Kernel flags and bit-level helpers shared by every Numba kernel.

All exact kernels are compiled through :func:`jit`: nopython, cached on disk,
never ``fastmath`` (LLVM must neither fuse nor reorder float operations).
The intrinsics below reinterpret bits and fuse a multiply-add on purpose, the
one place where a fused operation is what the modelled target does.
"""

from __future__ import annotations

import functools

import numba
from numba import types
from numba.extending import intrinsic

jit = functools.partial(numba.njit, cache=True, fastmath=False, nogil=True)
"""Decorator for every exact kernel: nopython, cached, no fast-math."""


def _bitcast(src, dst):
    @intrinsic
    def cast(typingctx, value):
        if value != src:
            return None

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(dst))

        return dst(src), codegen

    return cast


f32_bits = _bitcast(types.float32, types.uint32)
"""The IEEE-754 bit pattern of a float32 as uint32 (Rust ``f32::to_bits``)."""
bits_f32 = _bitcast(types.uint32, types.float32)
"""The float32 with a given uint32 bit pattern (Rust ``f32::from_bits``)."""
f64_bits = _bitcast(types.float64, types.uint64)
"""The IEEE-754 bit pattern of a float64 as uint64."""
bits_f64 = _bitcast(types.uint64, types.float64)
"""The float64 with a given uint64 bit pattern."""


@intrinsic
def fma64(typingctx, a, b, c):
    """``a * b + c`` with one rounding (LLVM ``llvm.fma.f64``; exact on any host)."""
    if not all(t == types.float64 for t in (a, b, c)):
        return None

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return types.float64(types.float64, types.float64, types.float64), codegen
