"""Launch helpers shared by the CUDA kernels.

``numba.cuda`` is imported here, so importing any ``factorflow.kernels.cuda`` module needs the
``numba-cuda`` package (``pip install factorflow[gpu]``) and either a CUDA driver or the simulator
(``NUMBA_ENABLE_CUDASIM=1``). ``engine/device.py`` checks both before any work.

Grids are 2-D over ``(symbol, time)``: ``x`` runs along symbols so consecutive threads of a warp
read consecutive addresses of a C-contiguous ``(time, symbol)`` row (coalesced), ``y`` runs along
time. Blocks are 32 x 8 threads on a device (8 x 4 under the simulator); a panel narrower than 32 symbols wastes lanes but still spreads
its rows over the whole GPU.

Under the simulator every thread of a block is a Python thread, so per-element math is Python's:
``math.log(-1)`` or ``math.exp(1000)`` raise there (on a device they give NaN / inf). Kernels
therefore spell out domain edges explicitly (see ``elementwise.py``), which also documents them.
"""
from __future__ import annotations

import numpy as np
from numba import config, cuda
from numba.cuda import device_array, to_device

# Host code here and in the kernel modules calls ``device_array`` / ``to_device`` by these names,
# never as ``cuda.<name>``: the simulator swaps a module's global ``cuda`` for a fake one while a
# kernel of that module runs, which other threads (Dask workers) would see mid-call.

__all__ = ["SIMULATOR", "cuda", "device_array", "to_device", "device", "BLOCK", "grid2d", "launch2d", "operand", "at", "is_device_array", "empty_like"]

SIMULATOR = bool(config.ENABLE_CUDASIM)
"""True under the Numba CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``)."""

BLOCK = (8, 4) if SIMULATOR else (32, 8)
"""Threads per block along (symbol, time); smaller under the simulator, where every thread is a
Python thread."""

device = cuda.jit(device=True, inline=True)
"""Decorator of a device function (called from kernels only)."""


def grid2d(rows: int, cols: int) -> tuple:
    """Blocks per grid covering ``rows x cols`` cells with :data:`BLOCK`."""
    return ((cols + BLOCK[0] - 1) // BLOCK[0], (rows + BLOCK[1] - 1) // BLOCK[1])


def launch2d(kern, rows: int, cols: int, *args) -> None:
    """Launch ``kern`` on one thread per cell of a ``rows x cols`` array (no-op when empty)."""
    if rows == 0 or cols == 0:
        return
    kern[grid2d(rows, cols), BLOCK](*args)


def is_device_array(a) -> bool:
    """True for CUDA device arrays (Numba, CuPy, anything with ``__cuda_array_interface__``)."""
    return hasattr(a, "__cuda_array_interface__") or type(a).__name__ == "FakeCUDAArray"


def operand(v, out):
    """A kernel operand for ``v``: a device array as is, a number as a ``(1, 1)`` device array of
    ``out``'s dtype, which the kernels broadcast (:func:`at`)."""
    if is_device_array(v):
        return v
    if isinstance(v, np.ndarray):
        raise TypeError("CUDA kernels take device arrays; copy host arrays with engine/device.py first")
    return to_device(np.full((1, 1), v, dtype=out.dtype))


def empty_like(a):
    """An uninitialised device array of ``a``'s shape and dtype."""
    return device_array(a.shape, dtype=a.dtype)


@device
def at(x, t, j):
    """``x[t, j]`` with ``(1, 1)`` operands broadcast (see :func:`operand`)."""
    return x[t if x.shape[0] > 1 else 0, j if x.shape[1] > 1 else 0]
