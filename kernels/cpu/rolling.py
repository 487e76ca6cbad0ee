"""Time-series window kernels (the ``rolling`` family): ``ts_*``, ``decay_linear``, ``delay``,
``delta``.

Every kernel takes C-contiguous ``(time, symbol)`` blocks (float32 or float64) and writes an
``out`` of the same shape and dtype, returning None; ``out`` must not overlap the inputs
(``delay`` and ``delta`` excepted: they also work in place). The window at row ``t`` is rows
``max(0, t - window + 1) .. t`` of the block. NaN skipping, ``min_periods`` (counted on valid
values, ±inf included), ±inf, ddof and ties follow ``docs/semantics.md``.

All kernels loop time outside and symbols inside, so the inner loop streams contiguous rows and
LLVM vectorises it across symbols. Three kinds of algorithm:

* O(1) running windows, updated with the row entering and the row leaving the window:

  - ``ts_sum``, ``ts_mean``: running sum of the finite values with a two-sum compensation, so a
    large value leaving the window leaves no residue (error: a few ulps of the result plus eps^2
    times what has passed through). ±inf are counted, never added: a sum is finite again once
    the inf has left (the rare windows holding one, and overflowed sums, are resolved by a walk
    of the window). A run of equal values as long as the window's valid count (tracked as pandas
    does) gives exactly that value as the mean and the sum rounded once.
  - ``ts_var``, ``ts_std``, ``ts_cov``, ``ts_corr``: sums of ``v - K`` and its squares /
    products about a per-symbol anchor ``K`` (var/std: fixed between re-anchorings; cov/corr:
    moved to the window means every ``_RECENTRE`` rows), recomputed from scratch for all symbols
    on a fixed cadence (amortised O(1)), with ``n S_dd - S_d^2`` forms (corr: one sqrt and one
    division per cell). A per-symbol budget bounds the rounding accumulated since the last exact
    computation; when it could reach ``_TOL`` of the centred sum of squares (a spike or level
    shift that left the window, a window turned constant, an inf or overflow poisoning the
    sums), that symbol's window is recomputed out of line by an exact two-pass walk. Results stay
    within ~1e-10 relative of an exact two-pass computation, the variance of a constant window is
    exactly 0 and never negative, and a constant side makes ``ts_cov`` exactly 0 and ``ts_corr``
    NaN. Windows up to ``_DIRECT_MAX`` are computed directly. See the section comment.

* van Herk / Gil-Werman blocks (``ts_min``, ``ts_max``, ``ts_argmin``, ``ts_argmax``): the
  window ending in a block of ``window`` rows is a suffix of the previous block plus a prefix of
  the current one, so prefix extremes (running) and suffix extremes (one backward pass per block)
  give every window's extreme in O(1) per cell whatever the window. Short argmin/argmax windows
  scan directly.

* exact O(window) per cell, vectorised across symbols on column tiles whose accumulators stay
  in L1 (``ts_rank``, ``ts_prod``, ``ts_skew``, ``ts_kurt``, ``decay_linear``, short var/std/cov/
  corr windows). Moments and ``decay_linear`` there are sums about the window's newest finite
  value (so a constant window gives exactly 0, or exactly the constant). ``ts_median`` keeps a
  sorted buffer per symbol.

float32 input is accumulated in float64 and rounded once on the store. ``min_periods`` 0 is
accepted too (an empty window sums to 0, multiplies to 1, and is NaN otherwise).

LLVM constraints shape the loops: no early exit, branch-free selects, and integer reductions only
inside a vectorised loop (a float reduction needs reassociation, which it may not do here).
"""
from __future__ import annotations

import numpy as np

from ._jit import kernel

__all__ = [
    "ts_sum", "ts_mean", "ts_var", "ts_std", "ts_min", "ts_max", "ts_argmin", "ts_argmax",
    "ts_rank", "ts_median", "ts_prod", "ts_skew", "ts_kurt", "decay_linear", "ts_corr", "ts_cov",
    "delay", "delta", "ts_count", "ts_mad", "ts_quantile", "ts_wma", "ts_quantiles",
]

# Running-moment accuracy target: a symbol's window is recomputed from scratch once the rounding
# bound ``eps * budget`` of its running sums could exceed ``_TOL`` times the centred sum of
# squares. The bound counts ~8 roundings of the largest partial sum per row.
_TOL = 1e-10
_BUDGET = 8.0 * 2.220446049250313e-16 / _TOL

# var/std/cov/corr windows up to this length are computed directly (O(window) per cell): with few
# values the centred sum of squares is often tiny next to its recent history, and the running
# sums would be recomputed on most rows.
_DIRECT_MAX = 6

# Columns per tile for the O(window) kernels: their accumulators stay in L1 across the window.
_TILE = 512

# argmin/argmax windows up to this length take a direct scan (faster than the van Herk blocks,
# which carry a row index next to each value, for short windows; measured crossover ~8).
_SCAN_MAX = 7


# ----------------------------------------------------------------------------------------------
# shared helpers


@kernel
def _count_base(window):
    """Smallest power of two above ``window``: two counts ``a, b <= window`` pack exactly into one
    float64 as ``a + base * b`` (decoded with a floor), one state array fewer in the hot loop."""
    base = 1.0
    while base <= window:
        base *= 2.0
    return base


@kernel
def _nan_row(x):
    """A row of NaN standing in for the row leaving the window before the first full window."""
    row = np.empty(x.shape[1], x.dtype)
    row[:] = np.nan
    return row


@kernel(inline="always")
def _leaving(x, nanrow, t, window):
    return x[t - window] if t >= window else nanrow


@kernel(inline="always")
def _valid(v):
    return 1.0 if v == v else 0.0


@kernel(inline="always")
def _count_valid(cnt, xt, xo):
    """Running count of the valid values: add the entering row, drop the leaving one."""
    for j in range(cnt.shape[0]):
        cnt[j] += _valid(xt[j]) - _valid(xo[j])


@kernel(inline="always")
def _fin_inf(v, base):
    """Count code of one value: 1 for a finite value, 1 + base for ±inf, 0 for NaN."""
    return (1.0 if v - v == 0.0 else 1.0 + base) if v == v else 0.0


# ----------------------------------------------------------------------------------------------
# sum / mean: compensated running sum of the finite values


@kernel(inline="always")
def _sum_result(tot, nfin, ninf, prev, run, mp, mean):
    """sum / mean of a window without ±inf (those are resolved by ``_sum_fix``)."""
    cnt = nfin + ninf
    r = tot / nfin if mean else tot
    # all valid values of the window equal (the last `run` valid values are): exactly that
    # value, and the sum rounded once
    r = (prev if mean else prev * cnt) if (run >= cnt) & (cnt > 0.0) else r
    return r if cnt >= mp else np.nan


@kernel(inline="always")
def _sum_mean(x, window, min_periods, out, mean):
    T, N = x.shape
    s = np.zeros(N)      # running sum of the window's finite values ...
    comp = np.zeros(N)   # ... and its compensation (the rounding errors of the two-sums)
    code = np.zeros(N)   # finite count + base * inf count
    prev = np.full(N, np.nan)   # last valid value and the number of valid values in a row
    run = np.zeros(N)           # equal to it (NaN rows skipped), as pandas does
    base = _count_base(window)
    inv_base = 1.0 / base
    nanrow = _nan_row(x)
    mp = float(min_periods)
    for t in range(T):
        xt = x[t]
        xo = _leaving(x, nanrow, t, window)
        o = out[t]
        lo = N      # first and last symbol to fix (see _var_std)
        hi = -1
        for j in range(N):
            v = np.float64(xt[j])
            w = np.float64(xo[j])
            vf = v - v == 0.0
            wf = w - w == 0.0
            a = v if vf else 0.0
            b = -w if wf else 0.0
            # Knuth two-sums s + a + b: the running sum is s + comp with an error of a few ulps of
            # the result plus eps^2 times what has passed through, so a large value that left the
            # window leaves no residue that would swamp a small remaining sum.
            s0 = s[j]
            s1 = s0 + a
            z = s1 - s0
            e = (s0 - (s1 - z)) + (a - z)
            s2 = s1 + b
            z = s2 - s1
            e += (s1 - (s2 - z)) + (b - z)
            cm = comp[j] + e
            c = (code[j] + (1.0 if vf else (base if v == v else 0.0))
                 - (1.0 if wf else (base if w == w else 0.0)))
            code[j] = c
            ninf = np.floor(c * inv_base)
            nf = c - ninf * base
            # no finite value left: restart the sums exactly at 0
            empty = nf == 0.0
            s2 = 0.0 if empty else s2
            cm = 0.0 if empty else cm
            s[j] = s2
            comp[j] = cm
            p = prev[j]
            rn = (run[j] + 1.0 if v == p else 1.0) if v == v else run[j]
            p = v if v == v else p
            prev[j] = p
            run[j] = rn
            tot = s2 + cm
            o[j] = _sum_result(tot, nf, ninf, p, rn, mp, mean)
            # out of line: windows holding ±inf (their sign mix decides), and finite sums that
            # overflowed (values near the float64 limit make the two-sum NaN)
            bad = (ninf > 0.0) | (tot - tot != 0.0)
            lo = min(lo, j if bad else N)
            hi = max(hi, j if bad else -1)
        # the rare cases, walking the window (a call that takes the state arrays would slow the
        # loop above): windows holding ±inf (+inf, -inf, or NaN for both), and a from-scratch
        # compensated sum after an overflow
        for j in range(lo, hi + 1):
            c = code[j]
            ninf = np.floor(c * inv_base)
            nf = c - ninf * base
            acc, cm, pos, neg = _sum_window(x, t, window, j)
            tot = s[j] + comp[j]
            if tot - tot != 0.0:
                s[j] = acc
                comp[j] = cm
                tot = acc + cm
            r = _sum_result(tot, nf, ninf, prev[j], run[j], mp, mean)
            if ninf > 0.0 and nf + ninf >= mp:
                r = np.nan if pos and neg else (np.inf if pos else -np.inf)
            o[j] = r


@kernel
def _sum_window(x, t, window, j):
    """Walk symbol ``j``'s window: its compensated finite sum ``(sum, compensation)`` and
    whether it holds +inf and -inf."""
    acc = 0.0
    cm = 0.0
    pos = False
    neg = False
    for k in range(max(0, t - window + 1), t + 1):
        v = np.float64(x[k, j])
        pos = pos or v == np.inf
        neg = neg or v == -np.inf
        a = v if v - v == 0.0 else 0.0
        s1 = acc + a
        z = s1 - acc
        cm += (acc - (s1 - z)) + (a - z)
        acc = s1
    cm = cm if cm - cm == 0.0 else 0.0   # the sum itself overflowed: no compensation
    return acc, cm, pos, neg


@kernel
def ts_sum(x, window, min_periods, out):
    """Sum of the valid values of the window (NaN while fewer than ``min_periods``)."""
    _sum_mean(x, window, min_periods, out, False)


@kernel
def ts_mean(x, window, min_periods, out):
    """Mean of the valid values of the window (NaN while fewer than ``min_periods``)."""
    _sum_mean(x, window, min_periods, out, True)


# ----------------------------------------------------------------------------------------------
# var / std / cov / corr: running sums about a per-symbol anchor
#
# Numerical scheme:
#
# * The sums are of ``d = v - K`` over the window's valid values (pairs for cov / corr). For
#   var / std the anchor ``K`` of a symbol is fixed between re-anchorings, so a value enters and
#   leaves with the same rounded ``d`` and the sums are exact sums of those ``d`` up to the
#   rounding of the running additions. For cov / corr the anchors move to the window means every
#   ``_RECENTRE`` rows (``K' = K + S_d / n``, the sums shifted by the exact difference
#   ``K' - K``): the co-moment ``n S_xy - S_x S_y`` cancels ``n^2 (mean_x - K_x)(mean_y - K_y)``,
#   so with a fixed anchor on drifting data (random walks) its rounding grew with the distance
#   travelled since the last re-anchoring (measured: up to ~2e-12 absolute in corr, ~10x the old
#   per-row re-centring; with the anchors following the means it is back to ~1e-13).
# * Re-anchoring / exact recomputation on a cadence, for all symbols at once (vectorised passes
#   over the window's rows, amortised O(1)): this drops the rounding accumulated so far, which a
#   per-row error bound would otherwise carry for ever (the old kernels never reset it: a budget
#   that only grows made the guard fire more and more often, e.g. on NaN-free data with spikes:
#   ts_std 54 -> 123 ms, ts_corr 107 -> 214 ms with 1% of a random walk set to 0). var / std
#   reset every ``_RESET_WINDOWS`` windows (their fixed anchors drift); cov / corr every
#   ``_RESET_LONG`` windows, or ``_RESET_WINDOWS`` while walks are frequent (spiky data: each
#   spike's rounding stays in the budget until the next exact computation).
# * The results use ``n S_dd - S_d^2`` (``n`` times the centred sum of squares, no division by
#   ``n``); corr is ``(n S_xy - S_x S_y) / sqrt((n S_xx - S_x^2)(n S_yy - S_y^2))``: one sqrt and
#   one division per cell (the old two sqrt and two divisions kept the divider busy ~5 cycles a
#   cell). The product must stay a normal float64 (both variances non-zero and the data not
#   below ~1e-75 or above ~1e75 in scale), otherwise the cell goes to the walk (two sqrt).
# * Guard: a per-symbol budget accumulates ``_BUDGET * S_dd`` each row since the last exact
#   computation (about eight roundings of the largest partial sum per row), so when
#   ``budget * n <= n S_dd - S_d^2`` the sums are within ``_TOL`` of exact. Otherwise (a spike or
#   level shift that left the window, a window turned constant, an inf or overflow poisoning the
#   sums, which are NaN / inf then) the budget is marked NaN and that symbol's window is
#   recomputed out of line by an exact two-pass walk about its mean (``_var_walk`` /
#   ``_cov_walk``, which copy the column first: independent strided loads), which also
#   re-anchors it. The hot loop counts the marked symbols and keeps the last one, so the repair
#   needs no scan of the row.
# * ±inf are not counted separately: they poison the running sums (inf, then NaN when they
#   leave), which the guard sends to the walk; the walk gives NaN while an inf is in the window
#   and leaves the sums poisoned, and computes them afresh once it has left.
# * ``n`` counts the valid (non-NaN) values / pairs, ±inf included (``min_periods``); with no inf
#   in the window it is the count of the finite ones the sums hold.
# * The kernels are compiled with FMA contraction; the bounds hold either way.
# Results stay within ~1e-10 relative of an exact two-pass computation (of the variances; for
# corr / cov near 0, ~1e-13 of sqrt(var_x var_y)); constant windows give an exact 0 variance /
# covariance (the walk's anchor is the newest value, so every ``d`` is 0) and a NaN correlation.

_RESET_WINDOWS = 4     # reset cadence in windows (var / std; cov / corr on spiky data) ...
_RESET_LONG = 16       # ... and for cov / corr otherwise
_RESET_MIN = 128       # at least this many rows between resets
_RECENTRE = 4          # cov / corr: anchors moved to the window means every this many rows

# corr: the product of the two scaled variances must stay a normal float64 (data below ~1e-75
# or above ~1e75 in scale); otherwise the cell goes to the walk, which takes two square roots.
_TINY = 1e-290
_HUGE = 1e290


@kernel(inline="always")
def _reset_period(window):
    return max(_RESET_WINDOWS * window, _RESET_MIN)


@kernel(inline="always")
def _fresh_budget(window):
    """Budget factor of freshly computed sums: a sequential sum of ``window`` terms may round
    ``window / 2`` times its total, the running update ~8 times per row."""
    return _BUDGET * max(1.0, window / 16.0)


@kernel
def _var_walk(x, t, window, j, buf):
    """Symbol ``j``'s window walked exactly: ``(has_inf, n, mean, sum d, sum d^2)`` with
    ``d = v - mean`` over the finite values. The mean is ``K0 + sum(v - K0) / n`` with ``K0`` the
    newest finite value, so a constant window has mean exactly ``K0`` and sums exactly 0. The
    column is copied to ``buf`` first (independent strided loads, then passes in L1)."""
    t0 = max(0, t - window + 1)
    m = t + 1 - t0
    for i in range(m):
        buf[i] = np.float64(x[t0 + i, j])
    k0 = 0.0
    n = 0.0
    has_inf = False
    for i in range(m):
        v = buf[i]
        fin = v - v == 0.0
        k0 = v if fin else k0
        n += 1.0 if fin else 0.0
        has_inf = has_inf | ((v == v) & (not fin))
    if n == 0.0 or has_inf:
        return has_inf, n, k0, 0.0, 0.0
    acc = 0.0
    for i in range(m):
        v = buf[i]
        acc += v - k0 if v - v == 0.0 else 0.0
    mean = k0 + acc / n
    a = 0.0
    b = 0.0
    for i in range(m):
        v = buf[i]
        d = v - mean if v - v == 0.0 else 0.0
        a += d
        b += d * d
    return False, n, mean, a, b


@kernel(inline="always")
def _var_reset(x, t0, window, anchor, cnt, s1, s2, eb, wfac):
    """Re-anchor every symbol and compute the sums of the window ending at row ``t0 - 1`` from
    scratch. The anchor is the newest finite value of the window's last three rows, else the
    oldest of rows ``t0 .. t0 + 3`` (those about to enter), else the old one: a value in (or next
    to) the window, so the one-pass sums about it lose at most ~eps * window relative to the
    centred sum."""
    N = x.shape[1]
    lo = max(0, t0 - window)
    last = x.shape[0] - 1
    for i in range(7):      # rows t0 + 3 .. t0, then t0 - 3 .. t0 - 1 (rows before lo repeat lo)
        xk = x[min(last, t0 + 3 - i) if i < 4 else max(lo, t0 - 7 + i)]
        for j in range(N):
            v = np.float64(xk[j])
            anchor[j] = v if v - v == 0.0 else anchor[j]
    for j in range(N):
        cnt[j] = 0.0
        s1[j] = 0.0
        s2[j] = 0.0
    # four rows per pass over the sums (their loads and stores dominate a one-row pass)
    k = lo
    while k < t0:
        xa = x[k]
        xb = x[min(k + 1, t0 - 1)]
        xc = x[min(k + 2, t0 - 1)]
        xd = x[min(k + 3, t0 - 1)]
        wb = 1.0 if k + 1 < t0 else 0.0   # rows past the window's end repeat its last: weight 0
        wc = 1.0 if k + 2 < t0 else 0.0
        wd = 1.0 if k + 3 < t0 else 0.0
        for j in range(N):
            kj = anchor[j]
            va = np.float64(xa[j])
            vb = np.float64(xb[j])
            vc = np.float64(xc[j])
            vd = np.float64(xd[j])
            oa = va == va
            ob = (vb == vb) & (wb > 0.0)
            oc = (vc == vc) & (wc > 0.0)
            od = (vd == vd) & (wd > 0.0)
            da = va - kj if oa else 0.0
            db = vb - kj if ob else 0.0
            dc = vc - kj if oc else 0.0
            dd = vd - kj if od else 0.0
            cnt[j] += ((1.0 if oa else 0.0) + (1.0 if ob else 0.0)) + (
                (1.0 if oc else 0.0) + (1.0 if od else 0.0))
            s1[j] += (da + db) + (dc + dd)
            s2[j] += (da * da + db * db) + (dc * dc + dd * dd)
        k += 4
    for j in range(N):
        eb[j] = wfac * s2[j]


@kernel
def _var_fix(x, t, window, mp2, anchor, cnt, s1, s2, eb, o, take_sqrt, wfac, nbad, hi, buf):
    """Walk the windows of the ``nbad`` symbols the running loop marked (NaN budget, result
    needed), the last of them ``hi``."""
    # the loop counted the marked symbols and kept the last one: walk down from there
    # (usually a single symbol, no scan)
    j = hi + 1
    while nbad > 0 and j > 0:
        j -= 1
        if eb[j] == eb[j] or cnt[j] < mp2:
            continue
        nbad -= 1
        has_inf, n, m, a, b = _var_walk(x, t, window, j, buf)
        if has_inf:
            # NaN while the inf is in the window; the sums stay poisoned (and marked) until then
            s1[j] = np.nan
            s2[j] = np.nan
            o[j] = np.nan
            continue
        anchor[j] = m
        s1[j] = a
        s2[j] = b
        eb[j] = wfac * b
        ssd = b - a * a / n
        var = (ssd if ssd > 0.0 else 0.0) / (n - 1.0)
        o[j] = np.sqrt(var) if take_sqrt else var


@kernel(inline="always")
def _var_run(x, window, min_periods, out, take_sqrt):
    T, N = x.shape
    anchor = np.zeros(N)  # K
    cnt = np.zeros(N)     # valid values in the window
    s1 = np.zeros(N)      # sum d, d = v - K over the finite values
    s2 = np.zeros(N)      # sum d^2
    eb = np.zeros(N)      # rounding budget (NaN: the symbol's window needs the walk)
    buf = np.empty(max(1, min(window, T)))   # the walk's copy of a column
    nanrow = _nan_row(x)
    mp2 = float(max(min_periods, 2))
    period = _reset_period(window)
    wfac = _fresh_budget(window)
    for t in range(T):
        if t % period == 0:
            _var_reset(x, t, window, anchor, cnt, s1, s2, eb, wfac)
        xt = x[t]
        xo = _leaving(x, nanrow, t, window)
        o = out[t]
        nbad = 0
        hi = -1
        for j in range(N):
            v = np.float64(xt[j])
            w = np.float64(xo[j])
            k = anchor[j]
            okv = v == v
            okw = w == w
            dv = v - k if okv else 0.0
            dw = w - k if okw else 0.0
            n = cnt[j] + ((1.0 if okv else 0.0) - (1.0 if okw else 0.0))
            a = s1[j] + dv - dw
            b = s2[j] + dv * dv - dw * dw
            e = eb[j] + _BUDGET * b
            cnt[j] = n
            s1[j] = a
            s2[j] = b
            vx = n * b - a * a       # n * centred sum of squares
            r = vx / (n * n - n)
            r = np.sqrt(r) if take_sqrt else r
            need = n >= mp2
            o[j] = r if need else np.nan
            # written so that NaN (poisoned sums or budget) counts as bad; a negative vx always does
            bad = need & ~(e * n - vx <= 0.0)
            eb[j] = np.nan if bad else e
            nbad += 1 if bad else 0
            hi = max(hi, j if bad else -1)
        if nbad > 0:
            _var_fix(x, t, window, mp2, anchor, cnt, s1, s2, eb, o, take_sqrt, wfac, nbad, hi,
                     buf)


# The running kernels are compiled with FMA contraction (``a * b + c`` in one rounding): fewer
# instructions in the hot loop and slightly smaller rounding errors; the error bounds above hold
# either way. One specialisation per result kind keeps the hot loop free of untaken branches.
@kernel(fastmath={"contract"})
def _var_run_var(x, window, min_periods, out):
    _var_run(x, window, min_periods, out, False)


@kernel(fastmath={"contract"})
def _var_run_std(x, window, min_periods, out):
    _var_run(x, window, min_periods, out, True)


@kernel
def ts_var(x, window, min_periods, out):
    """Variance (ddof=1) of the valid values; NaN with fewer than 2, exactly 0 when all equal."""
    if window <= _DIRECT_MAX:
        _moments(x, window, min_periods, out, 0)
    else:
        _var_run_var(x, window, min_periods, out)


@kernel
def ts_std(x, window, min_periods, out):
    """Standard deviation (ddof=1) of the valid values; see :func:`ts_var`."""
    if window <= _DIRECT_MAX:
        _moments(x, window, min_periods, out, 1)
    else:
        _var_run_std(x, window, min_periods, out)


# ----------------------------------------------------------------------------------------------
# cov / corr: the same scheme on pairwise-complete rows


@kernel
def _cov_walk(x, y, t, window, j, buf):
    """Symbol ``j``'s complete pairs walked exactly (see ``_var_walk``; ``buf`` has two rows):
    returns ``(has_inf, n, mx, my, sx, sy, sxx, syy, sxy)`` about the means of the finite
    pairs."""
    t0 = max(0, t - window + 1)
    m = t + 1 - t0
    bx = buf[0]
    by = buf[1]
    for i in range(m):
        bx[i] = np.float64(x[t0 + i, j])
        by[i] = np.float64(y[t0 + i, j])
    kx = 0.0
    ky = 0.0
    n = 0.0
    has_inf = False
    for i in range(m):
        u = bx[i]
        v = by[i]
        fin = (u - u == 0.0) & (v - v == 0.0)
        kx = u if fin else kx
        ky = v if fin else ky
        n += 1.0 if fin else 0.0
        has_inf = has_inf | ((u == u) & (v == v) & (not fin))
    if n == 0.0 or has_inf:
        return has_inf, n, kx, ky, 0.0, 0.0, 0.0, 0.0, 0.0
    ax = 0.0
    ay = 0.0
    for i in range(m):
        u = bx[i]
        v = by[i]
        fin = (u - u == 0.0) & (v - v == 0.0)
        ax += u - kx if fin else 0.0
        ay += v - ky if fin else 0.0
    mx = kx + ax / n
    my = ky + ay / n
    sx = 0.0
    sy = 0.0
    sxx = 0.0
    syy = 0.0
    sxy = 0.0
    for i in range(m):
        u = bx[i]
        v = by[i]
        fin = (u - u == 0.0) & (v - v == 0.0)
        du = u - mx if fin else 0.0
        dv = v - my if fin else 0.0
        sx += du
        sy += dv
        sxx += du * du
        syy += dv * dv
        sxy += du * dv
    return False, n, mx, my, sx, sy, sxx, syy, sxy


@kernel(inline="always")
def _cov_pair(u, v, kx, ky, ok):
    du = u - kx if ok else 0.0
    dv = v - ky if ok else 0.0
    return du, dv


@kernel(inline="always")
def _cov_reset(x, y, t0, window, kx, ky, cnt, sx, sy, sxx, syy, sxy, ebx, eby, wfac):
    """``_var_reset`` for pairs. The running loop keeps the anchors at the window means, so they
    are kept (a non-finite one, left by an overflow, is reset to 0); at the start of the block
    they come from the first finite pair of rows 0 .. 3."""
    N = x.shape[1]
    lo = max(0, t0 - window)
    last = x.shape[0] - 1
    if t0 == 0:
        for i in range(4):      # rows 3 .. 0: the oldest finite pair wins
            k = min(last, 3 - i)
            xk = x[k]
            yk = y[k]
            for j in range(N):
                u = np.float64(xk[j])
                v = np.float64(yk[j])
                fin = (u - u == 0.0) & (v - v == 0.0)
                kx[j] = u if fin else kx[j]
                ky[j] = v if fin else ky[j]
    else:
        for j in range(N):
            a = kx[j]
            b = ky[j]
            kx[j] = a if a - a == 0.0 else 0.0
            ky[j] = b if b - b == 0.0 else 0.0
    for j in range(N):
        cnt[j] = 0.0
        sx[j] = 0.0
        sy[j] = 0.0
        sxx[j] = 0.0
        syy[j] = 0.0
        sxy[j] = 0.0
    # two rows per pass over the sums
    k = lo
    while k < t0:
        xa = x[k]
        ya = y[k]
        xb = x[min(k + 1, t0 - 1)]
        yb = y[min(k + 1, t0 - 1)]
        wb = 1.0 if k + 1 < t0 else 0.0
        for j in range(N):
            a = kx[j]
            b = ky[j]
            ua = np.float64(xa[j])
            va = np.float64(ya[j])
            ub = np.float64(xb[j])
            vb = np.float64(yb[j])
            oa = (ua == ua) & (va == va)
            ob = (ub == ub) & (vb == vb) & (wb > 0.0)
            dua, dva = _cov_pair(ua, va, a, b, oa)
            dub, dvb = _cov_pair(ub, vb, a, b, ob)
            cnt[j] += (1.0 if oa else 0.0) + (1.0 if ob else 0.0)
            sx[j] += dua + dub
            sy[j] += dva + dvb
            sxx[j] += dua * dua + dub * dub
            syy[j] += dva * dva + dvb * dvb
            sxy[j] += dua * dva + dub * dvb
        k += 2
    for j in range(N):
        ebx[j] = wfac * sxx[j]
        eby[j] = wfac * syy[j]


@kernel
def _cov_fix(x, y, t, window, mp2, kx, ky, cnt, sx, sy, sxx, syy, sxy, ebx, eby, o, corr,
             wfac, nbad, hi, buf):
    """Walk the windows of the ``nbad`` symbols the running loop marked (NaN ``ebx``, result
    needed), the last of them ``hi``."""
    # the loop counted the marked symbols and kept the last one: walk down from there
    # (usually a single symbol, no scan)
    j = hi + 1
    while nbad > 0 and j > 0:
        j -= 1
        if ebx[j] == ebx[j] or cnt[j] < mp2:
            continue
        nbad -= 1
        has_inf, n, mx, my, a, b, aa, bb, ab = _cov_walk(x, y, t, window, j, buf)
        if has_inf:
            sx[j] = np.nan
            sy[j] = np.nan
            sxx[j] = np.nan
            syy[j] = np.nan
            sxy[j] = np.nan
            o[j] = np.nan
            continue
        kx[j] = mx
        ky[j] = my
        sx[j] = a
        sy[j] = b
        sxx[j] = aa
        syy[j] = bb
        sxy[j] = ab
        ebx[j] = wfac * aa
        eby[j] = wfac * bb
        vx = aa - a * a / n
        vy = bb - b * b / n
        cxy = ab - a * b / n
        if corr:
            if vx > 0.0 and vy > 0.0:
                r = cxy / (np.sqrt(vx) * np.sqrt(vy))     # vx * vy could under/overflow
                r = min(1.0, max(-1.0, r))
            else:
                r = np.nan
        else:
            r = cxy / (n - 1.0)
        o[j] = r


@kernel(inline="always")
def _cov_row(xt, yt, xo, yo, o, kx, ky, cnt, sx, sy, sxx, syy, sxy, ebx, eby, mp2, corr, recentre):
    """One row of the running cov / corr; returns the number of symbols marked for the walk and
    the last of them."""
    nbad = 0
    hi = -1
    for j in range(xt.shape[0]):
        u = np.float64(xt[j])
        v = np.float64(yt[j])
        p = np.float64(xo[j])
        q = np.float64(yo[j])
        okn = (u == u) & (v == v)
        oko = (p == p) & (q == q)
        a = kx[j]
        b = ky[j]
        du = u - a if okn else 0.0
        dv = v - b if okn else 0.0
        eu = p - a if oko else 0.0
        ev = q - b if oko else 0.0
        n = cnt[j] + ((1.0 if okn else 0.0) - (1.0 if oko else 0.0))
        s1 = sx[j] + du - eu
        s2 = sy[j] + dv - ev
        q11 = sxx[j] + du * du - eu * eu
        q22 = syy[j] + dv * dv - ev * ev
        q12 = sxy[j] + du * dv - eu * ev
        bx = ebx[j] + _BUDGET * q11
        by = eby[j] + _BUDGET * q22
        vx = n * q11 - s1 * s1      # n times the centred sums
        vy = n * q22 - s2 * s2
        cxy = n * q12 - s1 * s2
        need = n >= mp2
        if corr:
            pr = vx * vy
            r = cxy / np.sqrt(pr)
            r = max(min(r, 1.0), -1.0)      # clip (vminpd / vmaxpd; r is finite where ok)
            ok = need & (pr > 0.0)
            # pr not a normal float64 while both variances are non-zero: to the walk
            rng = (~(pr <= _HUGE)) | ((pr < _TINY) & (vx != 0.0) & (vy != 0.0))
        else:
            r = cxy / (n * n - n)
            ok = need
            rng = False
        o[j] = r if ok else np.nan
        # |error of cxy| <= eps * sqrt(bx * by) relative to sqrt(vx * vy): checking both sides
        # covers it; a constant side (v ~ 0 with a budget) goes to the walk, which makes it 0
        bad = need & ((~(bx * n - vx <= 0.0)) | (~(by * n - vy <= 0.0)) | rng)
        if recentre:
            # move the anchors to the window means: K' = K + S_d / n, the sums shifted by the
            # exact difference K' - K (the co-moment's cancellation, and so its rounding, grows
            # with the squared distance of K from the means); NaN / inf keep the old anchor
            inv = 1.0 / n
            ax = a + s1 * inv
            ay = b + s2 * inv
            ax = ax if ax - ax == 0.0 else a
            ay = ay if ay - ay == 0.0 else b
            hx = ax - a
            hy = ay - b
            t1 = s1 - n * hx
            t2 = s2 - n * hy
            q11 = q11 - hx * (s1 + t1)
            q22 = q22 - hy * (s2 + t2)
            q12 = q12 - hy * s1 - hx * t2
            s1 = t1
            s2 = t2
            kx[j] = ax
            ky[j] = ay
        cnt[j] = n
        sx[j] = s1
        sy[j] = s2
        sxx[j] = q11
        syy[j] = q22
        sxy[j] = q12
        ebx[j] = np.nan if bad else bx
        eby[j] = by
        nbad += 1 if bad else 0
        hi = max(hi, j if bad else -1)
    return nbad, hi


@kernel(inline="always")
def _cov_run(x, y, window, min_periods, out, corr):
    T, N = x.shape
    kx = np.zeros(N)    # anchors: the sums are of x - kx, y - ky over complete pairs
    ky = np.zeros(N)
    cnt = np.zeros(N)   # complete (non-NaN) pairs in the window
    sx = np.zeros(N)
    sy = np.zeros(N)
    sxx = np.zeros(N)
    syy = np.zeros(N)
    sxy = np.zeros(N)
    ebx = np.zeros(N)   # rounding budgets of sxx and syy (NaN in ebx: needs the walk)
    eby = np.zeros(N)
    buf = np.empty((2, max(1, min(window, T))))   # the walk's copy of the columns
    nanrow = _nan_row(x)
    nanrow_y = _nan_row(y)
    mp2 = float(max(min_periods, 2))
    wfac = _fresh_budget(window)
    # Reset cadence, adapted to the data: the anchors follow the means, so the budgets grow
    # slowly and long blocks need few walks; spiky data (each spike's rounding stays in the
    # budget until the next exact computation) walks less with short blocks.
    short = _reset_period(window)
    long = max(_RESET_LONG * window, _RESET_MIN)
    period = long
    next_reset = 0
    walks = 0
    for t in range(T):
        if t == next_reset:
            _cov_reset(x, y, t, window, kx, ky, cnt, sx, sy, sxx, syy, sxy, ebx, eby, wfac)
            # walks per row in the block that ended: switch when one walk (~1 us) per row or
            # more would be saved against the cost of the extra resets (~period / 5 row passes)
            rate = walks / period
            period = short if rate > 1.0 else (long if rate < 0.3 else period)
            next_reset = t + period
            walks = 0
        xt = x[t]
        yt = y[t]
        xo = _leaving(x, nanrow, t, window)
        yo = _leaving(y, nanrow_y, t, window)
        o = out[t]
        if t % _RECENTRE == _RECENTRE - 1:
            nbad, hi = _cov_row(xt, yt, xo, yo, o, kx, ky, cnt, sx, sy, sxx, syy, sxy, ebx, eby, mp2,
                            corr, True)
        else:
            nbad, hi = _cov_row(xt, yt, xo, yo, o, kx, ky, cnt, sx, sy, sxx, syy, sxy, ebx, eby, mp2,
                            corr, False)
        if nbad > 0:
            _cov_fix(x, y, t, window, mp2, kx, ky, cnt, sx, sy, sxx, syy, sxy, ebx, eby, o, corr,
                     wfac, nbad, hi, buf)
            walks += nbad


@kernel(fastmath={"contract"})
def _cov_run_cov(x, y, window, min_periods, out):
    _cov_run(x, y, window, min_periods, out, False)


@kernel(fastmath={"contract"})
def _cov_run_corr(x, y, window, min_periods, out):
    _cov_run(x, y, window, min_periods, out, True)


@kernel
def ts_cov(x, y, window, min_periods, out):
    """Covariance (ddof=1) over the window's pairwise-complete rows; exactly 0 when a side is
    constant."""
    if window <= _DIRECT_MAX:
        _cov_direct(x, y, window, min_periods, out, False)
    else:
        _cov_run_cov(x, y, window, min_periods, out)


@kernel
def ts_corr(x, y, window, min_periods, out):
    """Pearson correlation over the window's pairwise-complete rows, clipped to [-1, 1]; NaN when
    either side is constant."""
    if window <= _DIRECT_MAX:
        _cov_direct(x, y, window, min_periods, out, True)
    else:
        _cov_run_corr(x, y, window, min_periods, out)


# ----------------------------------------------------------------------------------------------
# min / max / argmin / argmax


@kernel(inline="always")
def _extreme_blocks(x, window, min_periods, out, is_max):
    """van Herk / Gil-Werman: the window ending at row t of block [b0, b0 + window) is the suffix
    of the previous block from offset t - b0 + 1 plus the prefix of the current block up to t."""
    T, N = x.shape
    nanrow = _nan_row(x)
    suffix = np.empty((max(1, min(window, T)), N), x.dtype)
    prefix = np.empty(N, x.dtype)
    cnt = np.zeros(N)
    mp = float(min_periods)
    for b0 in range(0, T, window):
        b1 = min(T, b0 + window)
        prefix[:] = np.nan
        for t in range(b0, b1):
            xt = x[t]
            xo = _leaving(x, nanrow, t, window)
            o = out[t]
            i = t - b0 + 1
            h = suffix[i] if (b0 > 0) & (i < window) else nanrow
            for j in range(N):
                v = xt[j]
                g = prefix[j]
                better = (v > g) if is_max else (v < g)
                g = v if better | (g != g) else g
                prefix[j] = g
                hj = h[j]
                better = (hj > g) if is_max else (hj < g)
                r = hj if better | (g != g) else g
                c = cnt[j] + _valid(v) - _valid(xo[j])
                cnt[j] = c
                o[j] = r if c >= mp else np.nan
        if b1 < T:
            # suffix extremes of this block, newest row first
            suffix[window - 1] = x[b0 + window - 1]
            for i in range(window - 2, -1, -1):
                xi = x[b0 + i]
                hn = suffix[i + 1]
                hi = suffix[i]
                for j in range(N):
                    v = xi[j]
                    h = hn[j]
                    better = (v > h) if is_max else (v < h)
                    hi[j] = v if better | (h != h) else h


@kernel
def ts_min(x, window, min_periods, out):
    """Minimum of the valid values of the window."""
    _extreme_blocks(x, window, min_periods, out, False)


@kernel
def ts_max(x, window, min_periods, out):
    """Maximum of the valid values of the window."""
    _extreme_blocks(x, window, min_periods, out, True)


@kernel(inline="always")
def _arg_scan(x, window, min_periods, out, is_max):
    T, N = x.shape
    best = np.empty(_TILE)
    pos = np.empty(_TILE)
    cnt = np.empty(_TILE)
    mp = float(max(1, min_periods))     # no valid value, no position
    for t in range(T):
        t0 = max(0, t - window + 1)
        for j0 in range(0, N, _TILE):
            j1 = min(N, j0 + _TILE)
            nb = j1 - j0
            for j in range(nb):
                best[j] = np.nan
                pos[j] = 0.0
                cnt[j] = 0.0
            for k in range(t0, t + 1):
                xk = x[k, j0:j1]
                p = float(k - t0 + 1)
                for j in range(nb):
                    v = np.float64(xk[j])
                    b = best[j]
                    # strictly better only: ties keep the oldest row
                    take = ((v > b) if is_max else (v < b)) | ((b != b) & (v == v))
                    best[j] = v if take else b
                    pos[j] = p if take else pos[j]
                    cnt[j] += _valid(v)
            o = out[t, j0:j1]
            for j in range(nb):
                o[j] = pos[j] if cnt[j] >= mp else np.nan


@kernel(inline="always")
def _arg_blocks(x, window, min_periods, out, is_max):
    """van Herk blocks carrying the row index of the extreme; ties go to the older row."""
    T, N = x.shape
    nanrow = _nan_row(x)
    rows = max(1, min(window, T))
    sval = np.empty((rows, N), x.dtype)
    sidx = np.empty((rows, N))
    pval = np.empty(N, x.dtype)
    pidx = np.empty(N)
    cnt = np.zeros(N)
    mp = float(max(1, min_periods))     # no valid value, no position
    for b0 in range(0, T, window):
        b1 = min(T, b0 + window)
        pval[:] = np.nan
        pidx[:] = 0.0
        for t in range(b0, b1):
            xt = x[t]
            xo = _leaving(x, nanrow, t, window)
            o = out[t]
            i = t - b0 + 1
            use = (b0 > 0) & (i < window)
            hv = sval[i] if use else nanrow
            hx = sidx[i if use else 0]
            start = float(max(0, t - window + 1)) - 1.0
            ft = float(t)
            for j in range(N):
                v = xt[j]
                g = pval[j]
                take = ((v > g) if is_max else (v < g)) | ((g != g) & (v == v))
                g = v if take else g
                gi = ft if take else pidx[j]
                pval[j] = g
                pidx[j] = gi
                h = hv[j]
                # the suffix part is older: it wins ties
                older = ((h >= g) if is_max else (h <= g)) | ((g != g) & (h == h))
                r = hx[j] if older else gi
                c = cnt[j] + _valid(v) - _valid(xo[j])
                cnt[j] = c
                o[j] = r - start if c >= mp else np.nan
        if b1 < T:
            last = b0 + window - 1
            sval[window - 1] = x[last]
            sidx[window - 1] = float(last)
            for i in range(window - 2, -1, -1):
                xi = x[b0 + i]
                fi = float(b0 + i)
                hn = sval[i + 1]
                hxn = sidx[i + 1]
                hi = sval[i]
                hxi = sidx[i]
                for j in range(N):
                    v = xi[j]
                    h = hn[j]
                    # going back in time, an equal value is older: take it
                    take = ((v >= h) if is_max else (v <= h)) | ((h != h) & (v == v))
                    hi[j] = v if take else h
                    hxi[j] = fi if take else hxn[j]


@kernel
def ts_argmin(x, window, min_periods, out):
    """1-based position of the window minimum, counted from the window's oldest row (row 0 at
    the start of the series); ties go to the oldest."""
    if window <= _SCAN_MAX:
        _arg_scan(x, window, min_periods, out, False)
    else:
        _arg_blocks(x, window, min_periods, out, False)


@kernel
def ts_argmax(x, window, min_periods, out):
    """1-based position of the window maximum; see :func:`ts_argmin`."""
    if window <= _SCAN_MAX:
        _arg_scan(x, window, min_periods, out, True)
    else:
        _arg_blocks(x, window, min_periods, out, True)


# ----------------------------------------------------------------------------------------------
# O(window) kernels on column tiles


@kernel(inline="always")
def _rank_step(v, c):
    return (1.0 if v < c else 0.0) + (0.5 if v == c else 0.0)


@kernel
def ts_rank(x, window, min_periods, out):
    """Percentile rank of the current value among the window's valid values, ties averaged:
    ``(less + (equal + 1) / 2) / n_valid``; NaN when the current value is NaN."""
    T, N = x.shape
    acc = np.empty(_TILE)
    cnt = np.zeros(N)
    nanrow = _nan_row(x)
    mp = float(min_periods)
    for t in range(T):
        t0 = max(0, t - window + 1)
        _count_valid(cnt, x[t], _leaving(x, nanrow, t, window))
        for j0 in range(0, N, _TILE):
            j1 = min(N, j0 + _TILE)
            nb = j1 - j0
            cur = x[t, j0:j1]
            # acc = less + equal / 2 (the current value counts itself as one equal) + 1/2;
            # comparisons in the input dtype (8 float32 lanes), counts exact in float64.
            # Four window rows per pass over acc: +20% at window 20.
            for j in range(nb):
                acc[j] = 0.5
            k = t0
            while k + 3 <= t:
                xa = x[k, j0:j1]
                xb = x[k + 1, j0:j1]
                xc = x[k + 2, j0:j1]
                xd = x[k + 3, j0:j1]
                for j in range(nb):
                    c = cur[j]
                    acc[j] += (_rank_step(xa[j], c) + _rank_step(xb[j], c)) + (
                        _rank_step(xc[j], c) + _rank_step(xd[j], c))
                k += 4
            while k <= t:
                xk = x[k, j0:j1]
                for j in range(nb):
                    acc[j] += _rank_step(xk[j], cur[j])
                k += 1
            o = out[t, j0:j1]
            cn = cnt[j0:j1]
            for j in range(nb):
                c = cur[j]
                n = cn[j]
                o[j] = acc[j] / n if (n >= mp) & (c == c) else np.nan


@kernel
def ts_prod(x, window, min_periods, out):
    """Product of the valid values of the window, multiplied oldest to newest (a fresh product
    per window: no division, so zeros, infs and over/underflow behave as in ``np.nanprod``)."""
    T, N = x.shape
    acc = np.empty(_TILE)
    cnt = np.zeros(N)
    nanrow = _nan_row(x)
    mp = float(min_periods)
    for t in range(T):
        t0 = max(0, t - window + 1)
        _count_valid(cnt, x[t], _leaving(x, nanrow, t, window))
        for j0 in range(0, N, _TILE):
            j1 = min(N, j0 + _TILE)
            nb = j1 - j0
            for j in range(nb):
                acc[j] = 1.0
            for k in range(t0, t + 1):
                xk = x[k, j0:j1]
                for j in range(nb):
                    v = np.float64(xk[j])
                    acc[j] *= v if v == v else 1.0
            o = out[t, j0:j1]
            cn = cnt[j0:j1]
            for j in range(nb):
                o[j] = acc[j] if cn[j] >= mp else np.nan


@kernel(inline="always")
def _linear_weighted(x, window, min_periods, out, mode):
    """Linearly weighted means of the windows (see ``decay_linear`` and ``ts_wma``).

    ``mode`` 0: weight ``window - age`` (age 0 = the current row); 1: weight ``1 + position`` in
    the rows the window actually has (``1..window`` once full, ``1..t+1`` before); both
    normalised by the weights of the valid values. ``mode`` 2 is Qlib 0.9's ``WMA`` as it is
    (microsoft/qlib#1993): the mode-1 weights normalised over *all* rows of the window, then
    averaged over the valid values (``np.nanmean(w * x)``). Computed as
    ``K + sum(w (v - K)) / sum(w)`` with ``K`` the newest finite value (modes 0 and 1): a
    constant window gives exactly that constant."""
    T, N = x.shape
    num = np.empty(_TILE)
    den = np.empty(_TILE)
    cnt = np.zeros(N)
    anchor = np.zeros(N)
    nanrow = _nan_row(x)
    mp = float(min_periods)
    for t in range(T):
        t0 = max(0, t - window + 1)
        xt = x[t]
        _count_valid(cnt, xt, _leaving(x, nanrow, t, window))
        if mode != 2:
            for j in range(N):
                v = np.float64(xt[j])
                anchor[j] = v if v - v == 0.0 else anchor[j]
        nrows = float(t - t0 + 1)
        wall = nrows * (nrows + 1.0) / 2.0
        for j0 in range(0, N, _TILE):
            j1 = min(N, j0 + _TILE)
            nb = j1 - j0
            kk = anchor[j0:j1]
            for j in range(nb):
                num[j] = 0.0
                den[j] = 0.0
            for k in range(t0, t + 1):
                xk = x[k, j0:j1]
                wk = float(window - (t - k)) if mode == 0 else float(k - t0 + 1)
                for j in range(nb):
                    v = np.float64(xk[j])
                    ok = v == v
                    num[j] += wk * (v - kk[j]) if ok else 0.0    # ±inf: ±inf, both: NaN
                    den[j] += wk if ok else 0.0
            o = out[t, j0:j1]
            cn = cnt[j0:j1]
            if mode == 2:
                for j in range(nb):
                    o[j] = num[j] / wall / cn[j] if cn[j] >= mp else np.nan
            else:
                for j in range(nb):
                    o[j] = kk[j] + num[j] / den[j] if cn[j] >= mp else np.nan


@kernel
def decay_linear(x, window, min_periods, out):
    """Linearly weighted mean: weight ``window`` for the current row, ``window - 1`` for the row
    before ... 1 for the oldest row of a full window, normalised by the weights of the valid
    values. Weights follow a row's age, so a series that starts inside the block weighs its
    first rows exactly as if NaN rows preceded it. Computed as ``K + sum(w (v - K)) / sum(w)``
    with ``K`` the newest finite value: a constant window gives exactly that constant."""
    _linear_weighted(x, window, min_periods, out, 0)


@kernel
def ts_wma(x, window, min_periods, compat, out):
    """Qlib's ``WMA``: weights ``1..n`` over the ``n`` rows the window has (``n = window`` once
    the series is ``window`` rows long), newest heaviest, normalised by the weights of the valid
    values. ``compat=True`` reproduces Qlib 0.9 exactly, including its normalisation bug
    (microsoft/qlib#1993: ``nanmean`` of the weighted values)."""
    _linear_weighted(x, window, min_periods, out, 2 if compat else 1)


@kernel
def ts_count(x, window, out):
    """Number of valid (non-NaN) values among the last ``window`` rows; rows before the start
    of the series count as missing, so the first rows give 0, 1, ... (pandas
    ``rolling(window, min_periods=0).count()``)."""
    T, N = x.shape
    cnt = np.zeros(N)
    nanrow = _nan_row(x)
    for t in range(T):
        _count_valid(cnt, x[t], _leaving(x, nanrow, t, window))
        o = out[t]
        for j in range(N):
            o[j] = cnt[j]


@kernel
def ts_mad(x, window, min_periods, out):
    """Mean absolute deviation about the mean of the window's valid values,
    ``mean(|v - mean(v)|)`` (Qlib ``Mad``), two exact passes per window: the mean about the
    newest finite value, then the deviations."""
    T, N = x.shape
    s1 = np.empty(_TILE)
    ad = np.empty(_TILE)
    cnt = np.zeros(N)
    anchor = np.zeros(N)
    nanrow = _nan_row(x)
    mp = float(max(1, min_periods))
    for t in range(T):
        t0 = max(0, t - window + 1)
        xt = x[t]
        _count_valid(cnt, xt, _leaving(x, nanrow, t, window))
        for j in range(N):
            v = np.float64(xt[j])
            anchor[j] = v if v - v == 0.0 else anchor[j]
        for j0 in range(0, N, _TILE):
            j1 = min(N, j0 + _TILE)
            nb = j1 - j0
            kk = anchor[j0:j1]
            cn = cnt[j0:j1]
            for j in range(nb):
                s1[j] = 0.0
                ad[j] = 0.0
            for k in range(t0, t + 1):
                xk = x[k, j0:j1]
                for j in range(nb):
                    v = np.float64(xk[j])
                    s1[j] += (v - kk[j]) if v == v else 0.0
            for j in range(nb):
                s1[j] = s1[j] / cn[j]       # mean - K
            for k in range(t0, t + 1):
                xk = x[k, j0:j1]
                for j in range(nb):
                    v = np.float64(xk[j])
                    ad[j] += np.abs((v - kk[j]) - s1[j]) if v == v else 0.0
            o = out[t, j0:j1]
            for j in range(nb):
                o[j] = ad[j] / cn[j] if cn[j] >= mp else np.nan


@kernel(inline="always")
def _moments(x, window, min_periods, out, kind):
    """Direct moments of each window: power sums of ``d = v - K`` with ``K`` the newest finite
    value (kind 0 var, 1 std, 2 skew, 3 kurt).

    ``K`` lies in the window, so ``(mean - K)^2 <= n * m2`` and the shift formulas lose at most
    ~eps * n (var), eps * n^1.5 (skew), eps * n^2 (kurt) to cancellation; a constant window gives
    d == 0 and m2 == 0 exactly."""
    T, N = x.shape
    anchor = np.zeros(N)
    code = np.zeros(N)    # valid count + base * inf count
    s1 = np.empty(_TILE)
    s2 = np.empty(_TILE)
    s3 = np.empty(_TILE)
    s4 = np.empty(_TILE)
    base = _count_base(window)
    inv_base = 1.0 / base
    nanrow = _nan_row(x)
    mp = float(min_periods)
    need = 2.0 if kind <= 1 else float(kind + 1)   # fewest valid values: 2, 2, 3, 4
    for t in range(T):
        t0 = max(0, t - window + 1)
        xt = x[t]
        xo = _leaving(x, nanrow, t, window)
        for j in range(N):
            v = np.float64(xt[j])
            anchor[j] = v if v - v == 0.0 else anchor[j]
            code[j] += _fin_inf(v, base) - _fin_inf(np.float64(xo[j]), base)
        for j0 in range(0, N, _TILE):
            j1 = min(N, j0 + _TILE)
            nb = j1 - j0
            kk = anchor[j0:j1]
            for j in range(nb):
                s1[j] = 0.0
                s2[j] = 0.0
                s3[j] = 0.0
                s4[j] = 0.0
            for k in range(t0, t + 1):
                xk = x[k, j0:j1]
                for j in range(nb):
                    v = np.float64(xk[j])
                    d = v - kk[j] if v - v == 0.0 else 0.0
                    d2 = d * d
                    s1[j] += d
                    s2[j] += d2
                    if kind >= 2:
                        s3[j] += d2 * d
                    if kind == 3:
                        s4[j] += d2 * d2
            o = out[t, j0:j1]
            cd = code[j0:j1]
            for j in range(nb):
                c = cd[j]
                ninf = np.floor(c * inv_base)
                cnt = c - ninf * base
                n = cnt - ninf
                a = s1[j] / n
                b2 = s2[j] / n
                m2 = b2 - a * a
                if kind <= 1:
                    r = (m2 if m2 > 0.0 else 0.0) * (n / (n - 1.0))
                    r = np.sqrt(r) if kind == 1 else r
                    ok = (cnt >= mp) & (n >= need) & (ninf == 0.0)
                else:
                    b3 = s3[j] / n
                    m3 = b3 - 3.0 * a * b2 + 2.0 * a * a * a
                    if kind == 3:
                        m4 = s4[j] / n - a * (4.0 * b3 - a * (6.0 * b2 - 3.0 * a * a))
                        r = (((n * n - 1.0) * m4 / (m2 * m2) - 3.0 * (n - 1.0) * (n - 1.0))
                             / ((n - 2.0) * (n - 3.0)))
                    else:
                        r = np.sqrt(n * (n - 1.0)) * m3 / ((n - 2.0) * m2 * np.sqrt(m2))
                    ok = (cnt >= mp) & (n >= need) & (ninf == 0.0) & (m2 > 0.0)
                o[j] = r if ok else np.nan


@kernel(inline="always")
def _cov_result(vx, vy, cxy, n, nfin, ninf, mp, corr):
    """cov / corr from the centred sums ``vx = sum dx^2``, ``vy``, ``cxy = sum dx dy``."""
    ok = (n >= mp) & (nfin >= 2.0) & (ninf == 0.0)
    if corr:
        r = cxy / (np.sqrt(vx) * np.sqrt(vy))    # vx * vy could under/overflow
        r = r if r < 1.0 else 1.0       # clip (NaN does not reach here: ok needs vx, vy > 0)
        r = r if r > -1.0 else -1.0
        ok = ok & (vx > 0.0) & (vy > 0.0)
    else:
        r = cxy / (nfin - 1.0)
    return r if ok else np.nan


@kernel(inline="always")
def _cov_direct(x, y, window, min_periods, out, corr):
    """Direct cov / corr of each window from sums about the newest complete finite pair (see
    ``_moments``); for short windows, where the running sums would be recomputed too often."""
    T, N = x.shape
    ax = np.zeros(N)
    ay = np.zeros(N)
    code = np.zeros(N)    # complete pairs + base * pairs holding an inf
    sx = np.empty(_TILE)
    sy = np.empty(_TILE)
    sxx = np.empty(_TILE)
    syy = np.empty(_TILE)
    sxy = np.empty(_TILE)
    base = _count_base(window)
    inv_base = 1.0 / base
    nanrow = _nan_row(x)
    nanrow_y = _nan_row(y)
    mp = float(min_periods)
    for t in range(T):
        t0 = max(0, t - window + 1)
        xt = x[t]
        yt = y[t]
        xo = _leaving(x, nanrow, t, window)
        yo = _leaving(y, nanrow_y, t, window)
        for j in range(N):
            u = np.float64(xt[j])
            v = np.float64(yt[j])
            fin = (u - u == 0.0) & (v - v == 0.0)
            ax[j] = u if fin else ax[j]
            ay[j] = v if fin else ay[j]
            p = np.float64(xo[j])
            q = np.float64(yo[j])
            c = code[j]
            c += (1.0 if fin else 1.0 + base) if (u == u) & (v == v) else 0.0
            c -= ((1.0 if (p - p == 0.0) & (q - q == 0.0) else 1.0 + base)
                  if (p == p) & (q == q) else 0.0)
            code[j] = c
        for j0 in range(0, N, _TILE):
            j1 = min(N, j0 + _TILE)
            nb = j1 - j0
            kx = ax[j0:j1]
            ky = ay[j0:j1]
            for j in range(nb):
                sx[j] = 0.0
                sy[j] = 0.0
                sxx[j] = 0.0
                syy[j] = 0.0
                sxy[j] = 0.0
            for k in range(t0, t + 1):
                xk = x[k, j0:j1]
                yk = y[k, j0:j1]
                for j in range(nb):
                    u = np.float64(xk[j])
                    v = np.float64(yk[j])
                    fin = (u - u == 0.0) & (v - v == 0.0)
                    du = u - kx[j] if fin else 0.0
                    dv = v - ky[j] if fin else 0.0
                    sx[j] += du
                    sy[j] += dv
                    sxx[j] += du * du
                    syy[j] += dv * dv
                    sxy[j] += du * dv
            o = out[t, j0:j1]
            cd = code[j0:j1]
            for j in range(nb):
                c = cd[j]
                ninf = np.floor(c * inv_base)
                n = c - ninf * base
                nfin = n - ninf
                inv = 1.0 / nfin
                a = sx[j]
                b = sy[j]
                o[j] = _cov_result(sxx[j] - a * a * inv, syy[j] - b * b * inv, sxy[j] - a * b * inv,
                                   n, nfin, ninf, mp, corr)


@kernel
def ts_skew(x, window, min_periods, out):
    """Bias-corrected sample skewness (pandas ``rolling.skew``); NaN with fewer than 3 valid
    values or when they are all equal."""
    _moments(x, window, min_periods, out, 2)


@kernel
def ts_kurt(x, window, min_periods, out):
    """Bias-corrected excess kurtosis (pandas ``rolling.kurt``); NaN with fewer than 4 valid
    values or when they are all equal."""
    _moments(x, window, min_periods, out, 3)


# ----------------------------------------------------------------------------------------------
# median: a sorted buffer per symbol


@kernel(inline="always")
def _midpoint(a, b):
    """(a + b) / 2 rounded once; halves first when the sum of two finite values overflows."""
    m = 0.5 * (a + b)
    if m - m != 0.0 and a - a == 0.0 and b - b == 0.0:
        m = 0.5 * a + 0.5 * b
    return m


@kernel(inline="always")
def _sorted_window(x, window, min_periods, out, q, out2, q2):
    """Order statistics of the window's valid values, one symbol at a time: a sorted buffer of
    the window's valid values; the leaving value is found by binary search and replaced by the
    entering one, which is then moved into place. ``q < 0``: the median; else the ``q`` quantile
    with linear interpolation (pandas/NumPy ``'linear'``), into ``out``. ``q2 >= 0``: also the
    ``q2`` quantile of the same window into ``out2`` (``ts_quantiles``); else ``out2`` is untouched."""
    T, N = x.shape
    buf = np.empty(max(1, min(window, T)))
    mp = max(1, min_periods)
    for j in range(N):
        m = 0
        for t in range(T):
            v = np.float64(x[t, j])
            w = np.float64(x[t - window, j]) if t >= window else np.nan
            if w == w:
                # position of the leaving value (any equal element will do). A branch-free lower
                # bound measured 4-24% slower here: consecutive windows differ by one value, so the
                # branches are well predicted, and selects chain every step on the previous load
                lo = 0
                hi = m
                while lo < hi:
                    mid = (lo + hi) >> 1
                    if buf[mid] < w:
                        lo = mid + 1
                    else:
                        hi = mid
                p = lo
                if v == v:
                    # replace it, then move the new value to its place
                    while p > 0 and buf[p - 1] > v:
                        buf[p] = buf[p - 1]
                        p -= 1
                    while p < m - 1 and buf[p + 1] < v:
                        buf[p] = buf[p + 1]
                        p += 1
                    buf[p] = v
                else:
                    for i in range(p, m - 1):
                        buf[i] = buf[i + 1]
                    m -= 1
            elif v == v:
                p = m
                while p > 0 and buf[p - 1] > v:
                    buf[p] = buf[p - 1]
                    p -= 1
                buf[p] = v
                m += 1
            if m < mp:
                out[t, j] = np.nan
                if q2 >= 0.0:
                    out2[t, j] = np.nan
                continue
            if q < 0.0:     # median
                h = m >> 1
                out[t, j] = buf[h] if m & 1 else _midpoint(buf[h - 1], buf[h])
            else:
                out[t, j] = _order_quantile(buf, m, q)
            if q2 >= 0.0:   # a second quantile of the same window (``ts_quantiles``)
                out2[t, j] = _order_quantile(buf, m, q2)


@kernel(inline="always")
def _order_quantile(buf, m, q):
    """Linear interpolation between the order statistics around ``q (m - 1)`` of ``buf[:m]``."""
    pos = q * (m - 1)
    lo = int(np.floor(pos))
    hi = min(lo + 1, m - 1)
    a = buf[lo]
    b = buf[hi]
    return a + (b - a) * (pos - lo) if b != a else a


@kernel
def ts_median(x, window, min_periods, out):
    """Median of the valid values of the window (mean of the two middle ones for an even count)."""
    _sorted_window(x, window, min_periods, out, -1.0, out, -1.0)


@kernel
def ts_quantile(x, window, q, min_periods, out):
    """``q`` quantile (0 <= q <= 1) of the valid values of the window, linearly interpolated
    between order statistics (pandas ``rolling.quantile(q)``, NumPy ``quantile`` 'linear')."""
    _sorted_window(x, window, min_periods, out, q, out, -1.0)


@kernel
def ts_quantiles(x, window, q, q2, min_periods, out, out2):
    """``ts_quantile`` at ``q`` into ``out`` and at ``q2`` into ``out2`` from one sorted window.
    Not an operator: the engine's instruction for two sibling ``ts_quantile`` nodes on one input
    and window (``engine/graph.py: _fuse_siblings``)."""
    _sorted_window(x, window, min_periods, out, q, out2, q2)


# ----------------------------------------------------------------------------------------------
# delay / delta


@kernel
def delay(x, periods, out):
    """``x`` shifted down ``periods`` rows (up for a negative ``periods``), NaN where no row
    comes in (pandas ``shift``). ``out`` may be ``x``: rows are written away from the source."""
    T, N = x.shape
    rows = range(T - 1, -1, -1) if periods >= 0 else range(T)
    for t in rows:
        o = out[t]
        s = t - periods
        if 0 <= s < T:
            xs = x[s]
            for j in range(N):
                o[j] = xs[j]
        else:
            for j in range(N):
                o[j] = np.nan


@kernel
def delta(x, periods, out):
    """``x - delay(x, periods)`` (``out`` may be ``x``)."""
    T, N = x.shape
    rows = range(T - 1, -1, -1) if periods >= 0 else range(T)
    for t in rows:
        o = out[t]
        s = t - periods
        if 0 <= s < T:
            xt = x[t]
            xs = x[s]
            for j in range(N):
                o[j] = xt[j] - xs[j]
        else:
            for j in range(N):
                o[j] = np.nan
