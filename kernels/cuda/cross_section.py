"""Cross-sectional CUDA kernels: twins of ``kernels/cpu/cross_section.py`` (``cs_rank``,
``cs_zscore``, ``cs_demean``, ``cs_scale``).

One thread block per time row (``ROW_THREADS`` threads striding over the row's symbols, so reads
are coalesced), with block reductions in shared memory. Statistics as the CPU kernels: NaN
excluded and kept, ±inf valid, means shifted by the row's first finite valid value ``x0`` (a
constant row gives exactly 0 for ``cs_demean`` and 0 / 0 = NaN for ``cs_zscore``), accumulation in
float64.

``cs_rank`` sorts each row (a block-wide bitonic sort of the row padded to a power of two, NaN as
+inf, in a scratch row per block that stays in L1/L2), then finds each valid value's ``less`` and
``less + equal`` counts by two binary searches: ``(less + (equal + 1) / 2) / n``, ties averaged,
O(N log^2 N) per row.

``cs_neutralize`` gives each symbol its group's mean by comparing its code with every symbol's of
the row (streamed through shared-memory tiles): O(N^2) per row, exact, meant for moderate
widths; a sort by code (as ``cs_rank`` sorts values) is the change for very wide panels.
"""
from __future__ import annotations

import math

import numpy as np

from ._jit import SIMULATOR, cuda, device_array

__all__ = ["cs_rank", "cs_zscore", "cs_demean", "cs_scale", "cs_neutralize", "ROW_THREADS"]

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
def _rank_kernel(x, keys, out):
    """Rows ``blockIdx.x, blockIdx.x + gridDim.x, ...``; ``keys`` is this block's scratch row."""
    buf = cuda.shared.array(ROW_THREADS, dtype=np.float64)
    N = x.shape[1]
    n2 = keys.shape[1]
    i = cuda.threadIdx.x
    b = cuda.blockIdx.x
    for t in range(b, x.shape[0], cuda.gridDim.x):
        # keys: the row's values, NaN (and padding) as +inf, which sorts them after every valid
        # value but the valid +inf, and those are interchangeable: the first n keys after the
        # sort are exactly the valid values in order
        nv = 0.0
        for j in range(i, n2, ROW_THREADS):
            v = float(x[t, j]) if j < N else _NAN
            if v == v:
                nv += 1.0
                keys[b, j] = v
            else:
                keys[b, j] = math.inf
        n = int(_block_sum(buf, nv))
        cuda.syncthreads()
        # bitonic sort of keys[b, :n2], ascending
        k = 2
        while k <= n2:
            h = k // 2
            while h > 0:
                for a in range(i, n2, ROW_THREADS):
                    c = a ^ h
                    if c > a:
                        ka = keys[b, a]
                        kc = keys[b, c]
                        if (ka > kc) if (a & k) == 0 else (ka < kc):
                            keys[b, a] = kc
                            keys[b, c] = ka
                cuda.syncthreads()
                h //= 2
            k *= 2
        # rank = less + (equal + 1) / 2 over n, from two binary searches in the sorted valid keys
        for j in range(i, N, ROW_THREADS):
            v = float(x[t, j])
            if v != v:
                out[t, j] = _NAN
                continue
            lo = 0
            hi = n
            while lo < hi:  # first key >= v
                m = (lo + hi) // 2
                if keys[b, m] < v:
                    lo = m + 1
                else:
                    hi = m
            less = lo
            hi = n
            while lo < hi:  # first key > v
                m = (lo + hi) // 2
                if keys[b, m] <= v:
                    lo = m + 1
                else:
                    hi = m
            out[t, j] = (less + (lo - less + 1) / 2.0) / n
        cuda.syncthreads()


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


RANK_BLOCKS = 1024
"""Thread blocks of ``cs_rank`` (each loops over rows with its own scratch row)."""


def cs_rank(x, out):
    """Percentile rank in (0, 1] among the valid values of each row, ties averaged, NaN kept."""
    rows, cols = out.shape
    if rows == 0 or cols == 0:
        return
    n2 = 1
    while n2 < cols:
        n2 *= 2
    blocks = min(rows, RANK_BLOCKS)
    keys = device_array((blocks, n2), dtype=np.float64)
    _rank_kernel[blocks, ROW_THREADS](x, keys, out)


@cuda.jit
def _neutralize_kernel(x, group, out):
    t = cuda.blockIdx.x
    tx = cuda.shared.array(ROW_THREADS, dtype=np.float64)
    tg = cuda.shared.array(ROW_THREADS, dtype=np.float64)
    N = x.shape[1]
    i = cuda.threadIdx.x
    for base in range(0, N, ROW_THREADS):
        j = base + i
        v = float(x[t, j]) if j < N else _NAN
        g = float(group[t, j]) if j < N else _NAN
        # the group's first finite valid value (in symbol order) anchors the mean, as cs_demean
        x0 = _NAN
        n = 0.0
        s = 0.0
        for tb in range(0, N, ROW_THREADS):
            k = tb + i
            tx[i] = float(x[t, k]) if k < N else _NAN
            tg[i] = float(group[t, k]) if k < N else _NAN
            cuda.syncthreads()
            for m in range(min(ROW_THREADS, N - tb)):
                w = tx[m]
                if tg[m] == g and w == w:
                    if x0 != x0 and w - w == 0.0:
                        x0 = w
                    n += 1.0
            cuda.syncthreads()
        if x0 != x0:
            x0 = 0.0
        for tb in range(0, N, ROW_THREADS):
            k = tb + i
            tx[i] = float(x[t, k]) if k < N else _NAN
            tg[i] = float(group[t, k]) if k < N else _NAN
            cuda.syncthreads()
            for m in range(min(ROW_THREADS, N - tb)):
                w = tx[m]
                if tg[m] == g and w == w:
                    s += w - x0
            cuda.syncthreads()
        if j < N:
            if v != v or g != g or n == 0.0:
                out[t, j] = _NAN
            else:
                out[t, j] = (v - x0) - s / n


def cs_neutralize(x, group, out):
    """``x`` minus the mean of ``x`` over the symbols with the same group code, per row; NaN where
    ``x`` or the code is NaN (WorldQuant's ``indneutralize``)."""
    _rows(_neutralize_kernel, x, out, group)
