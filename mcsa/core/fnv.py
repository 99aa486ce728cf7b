"""64-bit FNV-1a, the hash the golden vectors use for positions and outputs."""

from __future__ import annotations

import numpy as np

from ._jit import jit
from .checks import check_uint

OFFSET_BASIS = 0xCBF29CE484222325
_PRIME = np.uint64(0x100000001B3)


@jit
def _fnv1a64(data, h):
    for b in data:
        h = (h ^ np.uint64(b)) * _PRIME
    return h


def fnv1a64(array: np.ndarray, seed: int = OFFSET_BASIS) -> int:
    """FNV-1a 64 over the little-endian bytes of ``array``.

    Parameters
    ----------
    array : numpy.ndarray
        Any array; its elements are hashed as little-endian bytes in C order.
    seed : int
        Running hash to continue from (the offset basis for a fresh hash).

    Returns
    -------
    int
        The 64-bit hash.

    Raises
    ------
    TypeError
        If ``array`` is not a numeric NumPy array or ``seed`` not an integer.
    ValueError
        If ``seed`` is outside u64.
    """
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biufc":
        raise TypeError(f"array must be a numeric numpy array, got {type(array).__name__}")
    seed = check_uint(seed, "seed", (1 << 64) - 1)
    arr = np.ascontiguousarray(array)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return int(_fnv1a64(arr.reshape(-1).view(np.uint8), np.uint64(seed)))
