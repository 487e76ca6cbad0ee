"""The one Numba decorator used by every CPU kernel.

``error_model="numpy"``: float division by zero gives inf/NaN as NumPy does instead of raising
``ZeroDivisionError``. Besides being the DESIGN.md semantics, the Python error model puts an early
exit in every loop that divides, which stops LLVM from vectorising it (measured: 265 -> 650
Mcells/s for the rolling mean).

``nogil=True``: Dask runs chunks on threads of one process in the embedded cluster.

``cache=True``: compiled code is cached on disk next to the module (or under
``NUMBA_CACHE_DIR``); Numba writes cache files to a temporary name and renames them into place,
so several worker processes starting together do not corrupt each other's entries.

A note for kernel authors: LLVM only vectorises a loop when it can prove, with at most 8 run-time
overlap checks, that the arrays written do not alias the arrays read. Keep the arrays touched in
one inner loop to about five (for example: two input rows, one or two state arrays, one output
row); split the loop or pack state otherwise.
"""
from __future__ import annotations

import functools

import numba

kernel = functools.partial(numba.njit, nogil=True, cache=True, error_model="numpy")
"""Decorator for a chunk kernel: ``@kernel`` or ``@kernel(inline="always")``."""
