"""Rust's allocation rules for ``Vec``: its growth and its ``capacity overflow``.

One place for what ``alloc::raw_vec`` does, used by the core's panics and by
``firmware_model``'s byte counter and event trace (its jitted kernels included).
"""

from __future__ import annotations

from mcsa.core._jit import jit
from mcsa.core.target import Target, TargetPanic


@jit
def min_non_zero_cap(elem_size):
    """``RawVec::MIN_NON_ZERO_CAP``: 8 for 1-byte elements, 4 up to 1 KiB, else 1."""
    return 8 if elem_size == 1 else 4 if elem_size <= 1024 else 1


@jit
def grown_capacity(cap, elem_size):
    """The capacity after a ``push`` into a full ``Vec`` of capacity ``cap``
    (``grow_amortized`` for one more element: double, at least the minimum)."""
    return max(cap * 2, cap + 1, min_non_zero_cap(elem_size))


def check_layout(count: int, elem_size: int, target: Target) -> None:
    """``Vec::with_capacity(count)`` / ``vec![x; count]``: past ``isize::MAX`` bytes Rust panics.

    Raises
    ------
    TargetPanic
        ``capacity overflow``.
    """
    if count * elem_size > target.isize_max:
        raise TargetPanic("capacity overflow")


def check_growth(initial_capacity: int, final_len: int, elem_size: int, target: Target) -> None:
    """A ``Vec`` created ``with_capacity(initial_capacity)`` and pushed to ``final_len``
    elements: panics where a capacity it grows to needs more than ``isize::MAX`` bytes.

    Raises
    ------
    TargetPanic
        ``capacity overflow``.
    """
    check_layout(initial_capacity, elem_size, target)
    cap = initial_capacity
    while cap < final_len:
        cap = grown_capacity.py_func(cap, elem_size)  # in Python ints: no wrap past 2^63
        check_layout(cap, elem_size, target)
