"""Time-series window CUDA kernels: twins of ``kernels/cpu/rolling.py`` (same names and calls).

Algorithm: one thread per output cell walks its own window (2-D grid over time and symbol,
``_jit.launch2d``). Every cell is independent, so the GPU is filled along time as well as along
symbols: a single long series and a wide panel both give ``T * N`` threads. The walk costs
O(window) reads per cell, but neighbouring threads read overlapping rows, which the L1/L2 caches
serve; for the short windows of factor libraries this is memory-bound like one pass. It is also
exact: windows are recomputed from their values rather than from running or prefix sums, whose
cancellation on 1e6-offset data is what the CPU kernels work hard to avoid.

Semantics as the CPU kernels (docs/semantics.md): NaN skipped, ``min_periods`` counted on valid
values (±inf included), ddof = 1, ties to the oldest row for arg-extremes, ``min_periods=0``
accepted (an empty window sums to 0, multiplies to 1, is NaN otherwise). Sums are Neumaier-
compensated over the finite values, with ±inf counted apart; moments are two-pass about the
window's newest finite value, so a constant window gives exactly 0 (variance) or exactly the
constant (means). float32 input is accumulated in float64 and rounded once on the store.

Order statistics (``ts_median``, ``ts_quantile``) select the k-th smallest valid value by
counting, O(window^2) per cell: meant for the short windows of factor libraries.
"""
from __future__ import annotations

import math

from ._jit import cuda, device, launch2d

__all__ = [
    "ts_sum", "ts_mean", "ts_var", "ts_std", "ts_min", "ts_max", "ts_argmin", "ts_argmax",
    "ts_rank", "ts_prod", "decay_linear", "ts_corr", "ts_cov", "delay", "delta", "ts_count",
]

_NAN = math.nan
_INF = math.inf


@device
def _finite(v):
    return v - v == 0.0


@device
def window_anchor(x, j, start, t):
    """``(n, bad, k)`` of column ``j``, rows ``start .. t``: the valid (non-NaN) count, whether an
    ±inf is among them, and the newest finite value (NaN if none): the anchor the two-pass
    moments and regressions subtract, so a constant window gives exact results."""
    n = 0
    bad = False
    k = _NAN
    for r in range(t, start - 1, -1):  # newest first
        v = float(x[r, j])
        if v != v:
            continue
        n += 1
        if v - v != 0.0:
            bad = True
        elif k != k:
            k = v
    return n, bad, k


@cuda.jit
def _sum_kernel(x, window, mp, mean, out):
    j, t = cuda.grid(2)
    if t >= out.shape[0] or j >= out.shape[1]:
        return
    start = max(0, t - window + 1)
    s = 0.0
    c = 0.0
    n = 0
    npos = 0
    nneg = 0
    for r in range(start, t + 1):
        v = float(x[r, j])
        if v != v:
            continue
        n += 1
        if v - v != 0.0:  # ±inf: counted, never added
            if v > 0.0:
                npos += 1
            else:
                nneg += 1
            continue
        u = s + v  # Neumaier's compensated sum
        if abs(s) >= abs(v):
            c += (s - u) + v
        else:
            c += (v - u) + s
        s = u
    if n < mp:
        out[t, j] = _NAN
        return
    tot = s + c
    if npos > 0 and nneg > 0:
        tot = _NAN
    elif npos > 0:
        tot = _INF
    elif nneg > 0:
        tot = -_INF
    if mean:
        out[t, j] = tot / n if n > 0 else _NAN
    else:
        out[t, j] = tot


def ts_sum(x, window, min_periods, out):
    """Sum of the valid values of the window (NaN while fewer than ``min_periods``)."""
    launch2d(_sum_kernel, out.shape[0], out.shape[1], x, int(window), int(min_periods), False, out)


def ts_mean(x, window, min_periods, out):
    """Mean of the valid values of the window (NaN while fewer than ``min_periods``)."""
    launch2d(_sum_kernel, out.shape[0], out.shape[1], x, int(window), int(min_periods), True, out)


@cuda.jit
def _var_kernel(x, window, mp, take_sqrt, out):
    j, t = cuda.grid(2)
    if t >= out.shape[0] or j >= out.shape[1]:
        return
    start = max(0, t - window + 1)
    n, bad, k = window_anchor(x, j, start, t)
    if n < mp or n < 2 or bad:
        out[t, j] = _NAN
        return
    sd = 0.0
    for r in range(start, t + 1):
        v = float(x[r, j])
        if v == v:
            sd += v - k
    md = sd / n
    ss = 0.0
    for r in range(start, t + 1):
        v = float(x[r, j])
        if v == v:
            e = (v - k) - md
            ss += e * e
    var = ss / (n - 1)
    out[t, j] = math.sqrt(var) if take_sqrt else var


def ts_var(x, window, min_periods, out):
    """Variance (ddof=1) of the valid values; NaN with fewer than 2, exactly 0 when all equal."""
    launch2d(_var_kernel, out.shape[0], out.shape[1], x, int(window), int(min_periods), False, out)


def ts_std(x, window, min_periods, out):
    """Standard deviation (ddof=1) of the valid values; see :func:`ts_var`."""
    launch2d(_var_kernel, out.shape[0], out.shape[1], x, int(window), int(min_periods), True, out)


@cuda.jit
def _extreme_kernel(x, window, mp, op, out):
    """op 0: min, 1: max, 2: argmin, 3: argmax (1-based from the window's oldest row)."""
    j, t = cuda.grid(2)
    if t >= out.shape[0] or j >= out.shape[1]:
        return
    start = max(0, t - window + 1)
    n = 0
    best = _NAN
    pos = 0
    for r in range(start, t + 1):
        v = float(x[r, j])
        if v != v:
            continue
        n += 1
        if n == 1:
            best = v
            pos = r
        elif (op == 0 or op == 2) and v < best:
            best = v
            pos = r
        elif (op == 1 or op == 3) and v > best:
            best = v
            pos = r
    if n < mp or n == 0:
        out[t, j] = _NAN
    elif op < 2:
        out[t, j] = best
    else:
        out[t, j] = pos - start + 1


def ts_min(x, window, min_periods, out):
    """Minimum of the valid values of the window."""
    launch2d(_extreme_kernel, out.shape[0], out.shape[1], x, int(window), int(min_periods), 0, out)


def ts_max(x, window, min_periods, out):
    """Maximum of the valid values of the window."""
    launch2d(_extreme_kernel, out.shape[0], out.shape[1], x, int(window), int(min_periods), 1, out)


def ts_argmin(x, window, min_periods, out):
    """1-based position of the minimum from the window's oldest row (ties: oldest)."""
    launch2d(_extreme_kernel, out.shape[0], out.shape[1], x, int(window), int(min_periods), 2, out)


def ts_argmax(x, window, min_periods, out):
    """1-based position of the maximum from the window's oldest row (ties: oldest)."""
    launch2d(_extreme_kernel, out.shape[0], out.shape[1], x, int(window), int(min_periods), 3, out)


@cuda.jit
def _prod_kernel(x, window, mp, out):
    j, t = cuda.grid(2)
    if t >= out.shape[0] or j >= out.shape[1]:
        return
    start = max(0, t - window + 1)
    n = 0
    p = 1.0
    for r in range(start, t + 1):
        v = float(x[r, j])
        if v == v:
            n += 1
            p *= v
    out[t, j] = p if n >= mp else _NAN


def ts_prod(x, window, min_periods, out):
    """Product of the valid values, oldest to newest (an empty window with ``min_periods=0``: 1)."""
    launch2d(_prod_kernel, out.shape[0], out.shape[1], x, int(window), int(min_periods), out)


@cuda.jit
def _rank_kernel(x, window, mp, out):
    j, t = cuda.grid(2)
    if t >= out.shape[0] or j >= out.shape[1]:
        return
    cur = float(x[t, j])
    start = max(0, t - window + 1)
    n = 0
    less = 0
    equal = 0
    for r in range(start, t + 1):
        v = float(x[r, j])
        if v == v:
            n += 1
            if v < cur:
                less += 1
            elif v == cur:
                equal += 1
    if cur != cur or n < mp or n == 0:
        out[t, j] = _NAN
    else:
        out[t, j] = (less + (equal + 1) / 2.0) / n


def ts_rank(x, window, min_periods, out):
    """Percentile rank of the current value among the window's valid values, ties averaged."""
    launch2d(_rank_kernel, out.shape[0], out.shape[1], x, int(window), int(min_periods), out)


@cuda.jit
def _decay_kernel(x, window, mp, out):
    j, t = cuda.grid(2)
    if t >= out.shape[0] or j >= out.shape[1]:
        return
    start = max(0, t - window + 1)
    n = 0
    k = _NAN
    finite = True
    sw = 0.0
    for r in range(t, start - 1, -1):
        v = float(x[r, j])
        if v != v:
            continue
        n += 1
        sw += window - (t - r)
        if v - v != 0.0:
            finite = False
        elif k != k:
            k = v
    if n < mp or n == 0:
        out[t, j] = _NAN
        return
    s = 0.0
    for r in range(start, t + 1):
        v = float(x[r, j])
        if v == v:
            w = window - (t - r)
            s += w * (v - k) if finite else w * v
    out[t, j] = k + s / sw if finite else s / sw


def decay_linear(x, window, min_periods, out):
    """Weighted mean with weights ``1..window`` from the oldest to the newest row, over the valid
    values (about the newest finite value: a constant window gives exactly the constant)."""
    launch2d(_decay_kernel, out.shape[0], out.shape[1], x, int(window), int(min_periods), out)


@cuda.jit
def _cov_kernel(x, y, window, mp, corr, out):
    j, t = cuda.grid(2)
    if t >= out.shape[0] or j >= out.shape[1]:
        return
    start = max(0, t - window + 1)
    n = 0
    bad = False
    kx = _NAN
    ky = _NAN
    for r in range(t, start - 1, -1):
        u = float(x[r, j])
        v = float(y[r, j])
        if u != u or v != v:
            continue
        n += 1
        if u - u != 0.0 or v - v != 0.0:
            bad = True
        elif kx != kx:
            kx = u
            ky = v
    if n < mp or n < 2 or bad:
        out[t, j] = _NAN
        return
    sx = 0.0
    sy = 0.0
    for r in range(start, t + 1):
        u = float(x[r, j])
        v = float(y[r, j])
        if u == u and v == v:
            sx += u - kx
            sy += v - ky
    mx = sx / n
    my = sy / n
    sxx = 0.0
    syy = 0.0
    sxy = 0.0
    for r in range(start, t + 1):
        u = float(x[r, j])
        v = float(y[r, j])
        if u == u and v == v:
            du = (u - kx) - mx
            dv = (v - ky) - my
            sxx += du * du
            syy += dv * dv
            sxy += du * dv
    if not corr:
        out[t, j] = sxy / (n - 1) if (sxx > 0.0 and syy > 0.0) else 0.0
    elif sxx > 0.0 and syy > 0.0:
        out[t, j] = sxy / math.sqrt(sxx * syy)
    else:
        out[t, j] = _NAN


def ts_cov(x, y, window, min_periods, out):
    """Covariance (ddof=1) over the window's pairwise-complete rows; exactly 0 when a side is
    constant."""
    launch2d(_cov_kernel, out.shape[0], out.shape[1], x, y, int(window), int(min_periods), False, out)


def ts_corr(x, y, window, min_periods, out):
    """Pearson correlation over the window's pairwise-complete rows; NaN when a side is constant."""
    launch2d(_cov_kernel, out.shape[0], out.shape[1], x, y, int(window), int(min_periods), True, out)


@cuda.jit
def _shift_kernel(x, periods, diff, out):
    j, t = cuda.grid(2)
    if t >= out.shape[0] or j >= out.shape[1]:
        return
    s = t - periods
    if s < 0 or s >= x.shape[0]:
        out[t, j] = _NAN
    elif diff:
        out[t, j] = x[t, j] - x[s, j]
    else:
        out[t, j] = x[s, j]


def delay(x, periods, out):
    """Value ``periods`` rows earlier (later for negative ``periods``: ``lead``); NaN outside."""
    launch2d(_shift_kernel, out.shape[0], out.shape[1], x, int(periods), False, out)


def delta(x, periods, out):
    """``x - delay(x, periods)``."""
    launch2d(_shift_kernel, out.shape[0], out.shape[1], x, int(periods), True, out)


@cuda.jit
def _count_kernel(x, window, out):
    j, t = cuda.grid(2)
    if t >= out.shape[0] or j >= out.shape[1]:
        return
    n = 0
    for r in range(max(0, t - window + 1), t + 1):
        v = x[r, j]
        if v == v:
            n += 1
    out[t, j] = n


def ts_count(x, window, out):
    """Number of valid values among the last ``window`` rows (never NaN)."""
    launch2d(_count_kernel, out.shape[0], out.shape[1], x, int(window), out)


@cuda.jit
def _moment_kernel(x, window, mp, op, out):
    """op 0: skew, 1: kurt, 2: mad; two passes about the newest finite value, then the
    deviations from the mean."""
    j, t = cuda.grid(2)
    if t >= out.shape[0] or j >= out.shape[1]:
        return
    start = max(0, t - window + 1)
    n, bad, k = window_anchor(x, j, start, t)
    need = 3 if op == 0 else (4 if op == 1 else 1)
    if n < mp or n < need or bad:
        out[t, j] = _NAN
        return
    sd = 0.0
    for r in range(start, t + 1):
        v = float(x[r, j])
        if v == v:
            sd += v - k
    md = sd / n
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    s4 = 0.0
    equal = True
    for r in range(start, t + 1):
        v = float(x[r, j])
        if v == v:
            if v != k:
                equal = False
            e = (v - k) - md
            s1 += abs(e)
            e2 = e * e
            s2 += e2
            s3 += e2 * e
            s4 += e2 * e2
    if op == 2:
        out[t, j] = s1 / n
    elif equal or s2 == 0.0:
        out[t, j] = _NAN
    elif op == 0:
        out[t, j] = n * math.sqrt(n - 1.0) / (n - 2.0) * s3 / s2 ** 1.5
    else:
        c = (n - 2.0) * (n - 3.0)
        out[t, j] = (n + 1.0) * n * (n - 1.0) / c * (s4 / (s2 * s2)) - 3.0 * (n - 1.0) ** 2 / c


def ts_skew(x, window, min_periods, out):
    """Bias-corrected sample skewness (pandas ``rolling.skew``); NaN with fewer than 3 valid
    values, when they are all equal, or with ±inf in the window."""
    launch2d(_moment_kernel, out.shape[0], out.shape[1], x, int(window), int(min_periods), 0, out)


def ts_kurt(x, window, min_periods, out):
    """Bias-corrected excess kurtosis (pandas ``rolling.kurt``); NaN with fewer than 4 valid
    values, when they are all equal, or with ±inf in the window."""
    launch2d(_moment_kernel, out.shape[0], out.shape[1], x, int(window), int(min_periods), 1, out)


def ts_mad(x, window, min_periods, out):
    """Mean absolute deviation about the mean of the window's valid values (Qlib ``Mad``)."""
    launch2d(_moment_kernel, out.shape[0], out.shape[1], x, int(window), int(min_periods), 2, out)


@cuda.jit
def _wma_kernel(x, window, mp, compat, out):
    j, t = cuda.grid(2)
    if t >= out.shape[0] or j >= out.shape[1]:
        return
    start = max(0, t - window + 1)
    n = 0
    k = _NAN
    finite = True
    sw = 0.0
    for r in range(t, start - 1, -1):
        v = float(x[r, j])
        if v != v:
            continue
        n += 1
        sw += r - start + 1.0
        if v - v != 0.0:
            finite = False
        elif k != k:
            k = v
    if n < mp or n == 0 or (compat and not finite):
        out[t, j] = _NAN
        return
    s = 0.0
    for r in range(start, t + 1):
        v = float(x[r, j])
        if v == v:
            w = r - start + 1.0
            s += w * (v - k) if finite else w * v
    if not finite:
        out[t, j] = s / sw
    elif compat:  # Qlib 0.9: sum(w v) / (rows (rows + 1) / 2) / n_valid (microsoft/qlib#1993)
        rows = t - start + 1.0
        out[t, j] = (k * sw + s) / (rows * (rows + 1.0) / 2.0) / n
    else:
        out[t, j] = k + s / sw


def ts_wma(x, window, min_periods, compat, out):
    """Qlib's ``WMA``: weights ``1..n`` over the ``n`` rows the window has, newest heaviest,
    normalised by the valid values' weights (about the newest finite value: a constant window
    gives exactly the constant); ``compat=True`` is Qlib 0.9's normalisation."""
    launch2d(_wma_kernel, out.shape[0], out.shape[1], x, int(window), int(min_periods), bool(compat), out)


@device
def _kth(x, j, start, t, kth):
    """The ``kth`` (0-based) smallest valid value of rows ``start..t`` of column ``j``: the value
    ``c`` with ``less(c) <= kth < less_or_equal(c)``."""
    for r in range(start, t + 1):
        c = float(x[r, j])
        if c != c:
            continue
        less = 0
        leq = 0
        for s in range(start, t + 1):
            v = float(x[s, j])
            if v < c:
                less += 1
                leq += 1
            elif v == c:
                leq += 1
        if less <= kth < leq:
            return c
    return _NAN


@cuda.jit
def _quantile_kernel(x, window, q, mp, median, out):
    j, t = cuda.grid(2)
    if t >= out.shape[0] or j >= out.shape[1]:
        return
    start = max(0, t - window + 1)
    n = 0
    for r in range(start, t + 1):
        v = x[r, j]
        if v == v:
            n += 1
    if n < mp or n == 0:
        out[t, j] = _NAN
        return
    if median:
        if n % 2 == 1:
            out[t, j] = _kth(x, j, start, t, n // 2)
            return
        a = _kth(x, j, start, t, n // 2 - 1)
        b = _kth(x, j, start, t, n // 2)
        if a == b:
            out[t, j] = a
            return
        m = (a + b) / 2.0
        if m - m != 0.0 and a - a == 0.0 and b - b == 0.0:  # a + b overflowed
            m = a / 2.0 + b / 2.0
        out[t, j] = m
        return
    h = q * (n - 1)
    lo = int(math.floor(h))
    hi = min(lo + 1, n - 1)
    a = _kth(x, j, start, t, lo)
    b = _kth(x, j, start, t, hi) if hi != lo else a
    out[t, j] = a if a == b else a + (b - a) * (h - lo)


def ts_median(x, window, min_periods, out):
    """Median of the window's valid values (mean of the two middle ones for an even count)."""
    launch2d(_quantile_kernel, out.shape[0], out.shape[1], x, int(window), 0.5, int(min_periods), True, out)


def ts_quantile(x, window, q, min_periods, out):
    """``q`` quantile of the window's valid values, linear interpolation between order statistics
    (pandas ``rolling.quantile(q)``)."""
    launch2d(_quantile_kernel, out.shape[0], out.shape[1], x, int(window), float(q), int(min_periods), False, out)
