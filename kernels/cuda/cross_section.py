"""Cross-sectional CUDA kernels: twins of ``kernels/cpu/cross_section.py`` (``cs_rank``,
``cs_zscore``, ``cs_demean``, ``cs_scale``).

One thread block per time row (``ROW_THREADS`` threads striding over the row's symbols, so reads
are coalesced), with block reductions in shared memory. Statistics as the CPU kernels: NaN
excluded and kept, ±inf valid, means shifted by the row's first finite valid value ``x0`` (a
constant row gives exactly 0 for ``cs_demean`` and 0 / 0 = NaN for ``cs_zscore``), accumulation in
float64.

``cs_rank`` counts, for every valid value, the valid values below and equal to it in the row
(``(less + (equal + 1) / 2) / n``, ties averaged): O(N^2) compares per row, streamed through
shared-memory tiles. Exact and simple; for very wide panels a segmented sort would be cheaper
(docs/gpu.md lists it as unmeasured). ``cs_neutralize`` has no GPU kernel yet (the planner
refuses it for ``backend="gpu"``).
"""
from __future__ import annotations

import math

import numpy as np

from ._jit import SIMULATOR, cuda

__all__ = ["cs_rank", "cs_zscore", "cs_demean", "cs_scale", "ROW_THREADS"]

ROW_THREADS = 16 if SIMULATOR else 128
"""Threads per row block (a power of two; fewer under the simulator, where threads are Python
threads)."""
_NAN = math.nan
_BIG = 1 << 62


@cuda.jit(device=True)
def _block_sum(buf, v):
    """Sum of ``v`` over the block's threads (every thread gets it)."""
    i = cuda.threadIdx.x
    buf[i] = v
    cuda.syncthreads()
    step = ROW_THREADS // 2
    while step > 0:
        if i < step:
            buf[i] += buf[i + step]
        cuda.syncthreads()
        step //= 2
    r = buf[0]
    cuda.syncthreads()
    return r


@cuda.jit(device=True)
def _block_min(ibuf, v):
    i = cuda.threadIdx.x
    ibuf[i] = v
    cuda.syncthreads()
    step = ROW_THREADS // 2
    while step > 0:
        if i < step and ibuf[i + step] < ibuf[i]:
            ibuf[i] = ibuf[i + step]
        cuda.syncthreads()
        step //= 2
    r = ibuf[0]
    cuda.syncthreads()
    return r


@cuda.jit(device=True)
def _row_stats(x, t, buf, ibuf):
    """``(n_valid, x0, mean(x - x0))`` of row ``t`` (``x0``: first finite valid value, 0 if none)."""
    N = x.shape[1]
    i = cuda.threadIdx.x
    first = _BIG
    for j in range(i, N, ROW_THREADS):
        v = float(x[t, j])
        if v - v == 0.0:
            first = j
            break
    first = _block_min(ibuf, first)
    x0 = float(x[t, first]) if first < N else 0.0
    n = 0.0
    s = 0.0
    for j in range(i, N, ROW_THREADS):
        v = float(x[t, j])
        if v == v:
            n += 1.0
            s += v - x0
    n = _block_sum(buf, n)
    s = _block_sum(buf, s)
    md = s / n if n > 0.0 else _NAN
    return n, x0, md


@cuda.jit
def _moment_kernel(x, op, scale, out):
    """op 0: demean, 1: zscore, 2: scale."""
    t = cuda.blockIdx.x
    buf = cuda.shared.array(ROW_THREADS, dtype=np.float64)
    ibuf = cuda.shared.array(ROW_THREADS, dtype=np.int64)
    N = x.shape[1]
    i = cuda.threadIdx.x
    if op == 2:
        n = 0.0
        s = 0.0
        for j in range(i, N, ROW_THREADS):
            v = float(x[t, j])
            if v == v:
                n += 1.0
                s += abs(v)
        n = _block_sum(buf, n)
        s = _block_sum(buf, s)
        for j in range(i, N, ROW_THREADS):
            v = float(x[t, j])
            if n == 0.0 or v != v:
                out[t, j] = _NAN
            elif s == 0.0:  # x * scale / 0, spelled out (Python floats raise under the simulator)
                num = v * scale
                out[t, j] = _NAN if (num == 0.0 or num != num) else math.copysign(math.inf, num)
            else:
                out[t, j] = v * scale / s
        return
    n, x0, md = _row_stats(x, t, buf, ibuf)
    if op == 0:
        for j in range(i, N, ROW_THREADS):
            v = float(x[t, j])
            out[t, j] = (v - x0) - md if n > 0.0 else _NAN
        return
    ss = 0.0
    for j in range(i, N, ROW_THREADS):
        v = float(x[t, j])
        if v == v:
            d = (v - x0) - md
            ss += d * d
    ss = _block_sum(buf, ss)
    std = math.sqrt(ss / (n - 1.0)) if n > 1.0 else _NAN
    for j in range(i, N, ROW_THREADS):
        d = (float(x[t, j]) - x0) - md
        if n == 0.0 or d != d or std != std:
            out[t, j] = _NAN
        elif std == 0.0:  # d / 0 spelled out, as NumPy gives it
            out[t, j] = _NAN if d == 0.0 else math.copysign(math.inf, d)
        else:
            out[t, j] = d / std


@cuda.jit
def _rank_kernel(x, out):
    t = cuda.blockIdx.x
    tile = cuda.shared.array(ROW_THREADS, dtype=np.float64)
    buf = cuda.shared.array(ROW_THREADS, dtype=np.float64)
    N = x.shape[1]
    i = cuda.threadIdx.x
    nv = 0.0
    for j in range(i, N, ROW_THREADS):
        v = float(x[t, j])
        if v == v:
            nv += 1.0
    n = _block_sum(buf, nv)
    # each thread ranks the symbols j = i, i + ROW_THREADS, ...; the row is streamed through
    # shared memory one tile at a time
    for base in range(0, N, ROW_THREADS):
        j = base + i
        cur = float(x[t, j]) if j < N else _NAN
        less = 0.0
        equal = 0.0
        for tb in range(0, N, ROW_THREADS):
            k = tb + i
            tile[i] = float(x[t, k]) if k < N else _NAN
            cuda.syncthreads()
            for m in range(min(ROW_THREADS, N - tb)):
                v = tile[m]
                if v < cur:
                    less += 1.0
                elif v == cur:
                    equal += 1.0
            cuda.syncthreads()
        if j < N:
            out[t, j] = (less + (equal + 1.0) / 2.0) / n if cur == cur else _NAN


def _rows(kern, x, out, *args):
    if out.shape[0] and out.shape[1]:
        kern[out.shape[0], ROW_THREADS](x, *args, out)


def cs_demean(x, out):
    """``x - mean(x)`` over the valid values of each row."""
    _rows(_moment_kernel, x, out, 0, 1.0)


def cs_zscore(x, out):
    """``(x - mean) / std`` over the valid values of each row (ddof=1)."""
    _rows(_moment_kernel, x, out, 1, 1.0)


def cs_scale(x, scale, out):
    """``x * scale / sum(|x|)`` over the valid values of each row."""
    _rows(_moment_kernel, x, out, 2, float(scale))


def cs_rank(x, out):
    """Percentile rank in (0, 1] among the valid values of each row, ties averaged, NaN kept."""
    _rows(_rank_kernel, x, out)
