"""Kernel flags and bit-level helpers shared by every Numba kernel.

All exact kernels are compiled through :func:`jit`: nopython, cached on disk,
never ``fastmath`` (LLVM must neither fuse nor reorder float operations).
The intrinsics below reinterpret bits and fuse a multiply-add on purpose, the
one place where a fused operation is what the modelled target does.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.metadata
import os
import re
import sys
import threading
from contextlib import contextmanager

import numba
from numba import types
from numba.core import cgutils, event
from numba.extending import intrinsic

from . import compiling

jit = functools.partial(numba.njit, cache=True, fastmath=False, nogil=True)
"""Decorator for every exact kernel: nopython, cached, no fast-math.
``jit(parallel=True)`` kernels only ``prange`` over independent work: no parallel reductions."""

_LAUNCH = threading.Lock()


class _Forward(event.Listener):
    """Numba's compile events, passed on to :data:`mcsa.core.compiling.listeners`."""

    def on_start(self, ev):
        for listener in list(compiling.listeners):
            listener.start()

    def on_end(self, ev):
        for listener in list(compiling.listeners):
            listener.end()


event.register("numba:compile", _Forward())


@functools.cache
def _load_tbb() -> None:
    """Load the TBB library of the ``tbb`` dependency by its path, so that Numba's
    TBB layer finds it by name. pip puts it in the environment's ``lib`` folder,
    where the dynamic loader does not look (numba#6108), and Numba would fall
    back to its workqueue. Where it cannot be loaded, Numba falls back all the same."""
    if not sys.platform.startswith("linux"):
        return
    try:
        files = importlib.metadata.files("tbb") or ()
    except importlib.metadata.PackageNotFoundError:
        return
    for file in files:
        if re.fullmatch(r"libtbb\.so\.\d+", file.name):
            try:
                ctypes.CDLL(os.fspath(file.locate()), mode=ctypes.RTLD_GLOBAL)
            except OSError:
                pass
            return


def _prefer_layer() -> None:
    """Where the user chose no threading layer: TBB, else Numba's workqueue
    rather than GNU OpenMP, whose threads spin between launches (on a shared
    machine 2 threads ran 6-10x slower than 1, measured) and which aborts a
    child forked after a launch. At 4,096 tokens 2 threads ran 1.83x one thread
    on TBB and 1.45x on the workqueue (medians of 31 calls, one script): after a
    pause, TBB's threads started 60-130 us into a launch, the workqueue's 150-300 us
    and at times 2-5 ms, and at times the guest ran both of the workqueue's threads
    on one core. Set before each launch, as Numba re-reads its configuration from
    the environment when that changes, until its threads start."""
    if not {"NUMBA_THREADING_LAYER", "NUMBA_THREADING_LAYER_PRIORITY"} & set(os.environ):
        _load_tbb()
        numba.config.THREADING_LAYER_PRIORITY = ["tbb", "workqueue", "omp"]


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def thread_count() -> int:
    """Numba's thread count for the calling thread: every core unless
    ``NUMBA_NUM_THREADS`` or ``numba.set_num_threads`` lowers it."""
    _prefer_layer()
    return numba.get_num_threads()


@contextmanager
def numba_threads(threads: int):
    """Run ``parallel=True`` kernels on ``threads`` threads (1..=NUMBA_NUM_THREADS),
    one launch at a time in the process: the workqueue layer aborts the process
    on concurrent launches."""
    with _LAUNCH:
        before = thread_count()
        numba.set_num_threads(threads)
        try:
            yield
        finally:
            numba.set_num_threads(before)


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


@intrinsic
def claim(typingctx, counter):
    """``counter[0] += 1`` as one atomic step, returning the value before: how the
    threads of a ``parallel=True`` kernel hand out work items one at a time, so that
    a thread the machine slows down takes fewer of them (a static split waits for it)."""
    if not (isinstance(counter, types.Array) and counter.dtype == types.int64 and counter.ndim == 1):
        return None

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        first = cgutils.get_item_pointer(context, builder, signature.args[0], array, [context.get_constant(types.intp, 0)])
        return builder.atomic_rmw("add", first, context.get_constant(types.int64, 1), "monotonic")

    return types.int64(counter), codegen
