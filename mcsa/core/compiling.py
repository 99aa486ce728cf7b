"""Who hears that Numba compiles a kernel (the command line's first-compile note).

Light on purpose (no Numba): a listener registers here before the kernels load, and
:mod:`mcsa.core._jit`, which every kernel comes through, forwards Numba's
``numba:compile`` events to it; a command that stops at an argument error never
loads Numba at all.
"""

from __future__ import annotations

listeners: list = []
"""Objects with ``start()`` and ``end()``, called as a compile starts and ends (compiles nest)."""
