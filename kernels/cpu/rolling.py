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
  - ``ts_var``, ``ts_std``, ``ts_cov``, ``ts_corr``: sums of ``v - K`` and its squares / products,
    with the anchor ``K`` moved to the window mean on every row (the sums are shifted by the exact
    difference of the anchors; s2 is at its minimum over ``K`` there, so the shift's rounding
    barely moves it), which keeps them the sums of a centred window however far the data drift
    (1e6 + 1e-3 noise, random walks). A per-symbol budget bounds the rounding accumulated since
    the sums were last computed from scratch; when ``eps * budget`` could reach ``_TOL`` of the
    centred sum of squares (after ~5 * 10^4 rows of steady data, or when a window's variance
    collapses, e.g. turns constant), that symbol's window is recomputed by an exact two-pass walk
    about its mean. Results stay within ~1e-10 relative of an exact two-pass computation, the
    variance of a constant window is exactly 0 and never negative, and a constant side makes
    ``ts_cov`` exactly 0 and ``ts_corr`` NaN. Windows up to ``_DIRECT_MAX`` are computed directly.

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
    "delay", "delta",
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
# var / std: anchored moments, re-centred every row, exact recompute on an error budget


@kernel
def _var_window(x, t, window, j):
    """Exact sums of symbol ``j``'s window about its mean, walking the column: returns
    ``(mean, sum d, sum d^2)`` with ``d = v - mean`` over the finite values.

    The mean is ``K0 + sum(v - K0) / n`` with ``K0`` the newest finite value, so a constant
    window has mean exactly ``K0`` and sums exactly 0."""
    t0 = max(0, t - window + 1)
    k0 = 0.0
    n = 0.0
    for k in range(t, t0 - 1, -1):
        v = np.float64(x[k, j])
        if v - v == 0.0:
            if n == 0.0:
                k0 = v
            n += 1.0
    if n == 0.0:
        return 0.0, 0.0, 0.0
    acc = 0.0
    for k in range(t0, t + 1):
        v = np.float64(x[k, j])
        if v - v == 0.0:
            acc += v - k0
    m = k0 + acc / n
    a = 0.0
    b = 0.0
    for k in range(t0, t + 1):
        v = np.float64(x[k, j])
        if v - v == 0.0:
            d = v - m
            a += d
            b += d * d
    return m, a, b


@kernel(inline="always")
def _var_result(ssd, n, nfin, ninf, mp, take_sqrt):
    ssd = ssd if ssd > 0.0 else 0.0       # never negative
    var = ssd / (nfin - 1.0)
    r = np.sqrt(var) if take_sqrt else var
    ok = (n >= mp) & (nfin >= 2.0) & (ninf == 0.0)
    return r if ok else np.nan


@kernel(inline="always")
def _var_std(x, window, min_periods, out, take_sqrt):
    T, N = x.shape
    anchor = np.zeros(N)  # K: the sums are of v - K over the window's finite values
    s1 = np.zeros(N)
    s2 = np.zeros(N)
    budget = np.zeros(N)  # sum of the partial s2 since the sums were last computed from scratch
    code = np.zeros(N)    # valid count + base * inf count
    base = _count_base(window)
    inv_base = 1.0 / base
    nanrow = _nan_row(x)
    mp = float(min_periods)
    for t in range(T):
        xt = x[t]
        xo = _leaving(x, nanrow, t, window)
        o = out[t]
        # First and last symbol to recompute: integer min/max reductions vectorise (a float one
        # would not: no reassociation), and the scan after the loop stays short (scanning all
        # symbols on every row with a recompute halved the kernel's speed).
        lo = N
        hi = -1
        for j in range(N):
            v = np.float64(xt[j])
            w = np.float64(xo[j])
            k = anchor[j]
            dv = v - k if v - v == 0.0 else 0.0
            dw = w - k if w - w == 0.0 else 0.0
            a = s1[j] + dv - dw
            b = s2[j] + dv * dv - dw * dw
            c = code[j] + _fin_inf(v, base) - _fin_inf(w, base)
            code[j] = c
            ninf = np.floor(c * inv_base)
            n = c - ninf * base
            nfin = n - ninf
            e = budget[j] + b
            inv = 1.0 / nfin      # one division per cell (inf when empty, then masked)
            # Re-centre on the window mean: K' = K + s1/n, with the sums shifted by the exact
            # difference K' - K. s2 is at its minimum over K there, so the shift's own rounding
            # barely moves it, and the sums stay those of a centred window however the data drift.
            kn = k + (a * inv if nfin > 0.0 else 0.0)
            kn = kn if kn - kn == 0.0 else 0.0     # after an overflow
            da = kn - k
            b = b - da * (2.0 * a - nfin * da)
            a = a - nfin * da
            empty = nfin == 0.0
            a = 0.0 if empty else a
            b = 0.0 if empty else b
            e = 0.0 if empty else e
            anchor[j] = kn
            s1[j] = a
            s2[j] = b
            budget[j] = e
            ssd = b - a * a * inv
            o[j] = _var_result(ssd, n, nfin, ninf, mp, take_sqrt)
            need = (n >= mp) & (nfin >= 2.0) & (ninf == 0.0)
            # recompute when the rounding bound may reach _TOL of the result (this includes a
            # window that turned constant: ssd ~ 0 with a non-zero budget) or on overflow
            bad = need & ((e * _BUDGET > ssd) | (ssd - ssd != 0.0))
            lo = min(lo, j if bad else N)
            hi = max(hi, j if bad else -1)
        for j in range(lo, hi + 1):
            c = code[j]
            ninf = np.floor(c * inv_base)
            n = c - ninf * base
            nfin = n - ninf
            ssd = s2[j] - s1[j] * s1[j] / nfin
            if ((n >= mp) and (nfin >= 2.0) and (ninf == 0.0)
                    and (budget[j] * _BUDGET > ssd or ssd - ssd != 0.0)):
                m, a, b = _var_window(x, t, window, j)
                anchor[j] = m
                s1[j] = a
                s2[j] = b
                budget[j] = b
                o[j] = _var_result(b - a * a / nfin, n, nfin, ninf, mp, take_sqrt)


@kernel
def ts_var(x, window, min_periods, out):
    """Variance (ddof=1) of the valid values; NaN with fewer than 2, exactly 0 when all equal."""
    if window <= _DIRECT_MAX:
        _moments(x, window, min_periods, out, 0)
    else:
        _var_std(x, window, min_periods, out, False)


@kernel
def ts_std(x, window, min_periods, out):
    """Standard deviation (ddof=1) of the valid values; see :func:`ts_var`."""
    if window <= _DIRECT_MAX:
        _moments(x, window, min_periods, out, 1)
    else:
        _var_std(x, window, min_periods, out, True)


# ----------------------------------------------------------------------------------------------
# cov / corr: the same scheme on pairwise-complete rows


@kernel
def _cov_window(x, y, t, window, j):
    """Exact sums of symbol ``j``'s complete pairs about their means, walking the columns:
    returns ``(mx, my, sx, sy, sxx, syy, sxy)`` (see ``_var_window``)."""
    t0 = max(0, t - window + 1)
    kx = 0.0
    ky = 0.0
    n = 0.0
    for k in range(t, t0 - 1, -1):
        u = np.float64(x[k, j])
        v = np.float64(y[k, j])
        if (u - u == 0.0) and (v - v == 0.0):
            if n == 0.0:
                kx = u
                ky = v
            n += 1.0
    if n == 0.0:
        return 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    ax = 0.0
    ay = 0.0
    for k in range(t0, t + 1):
        u = np.float64(x[k, j])
        v = np.float64(y[k, j])
        if (u - u == 0.0) and (v - v == 0.0):
            ax += u - kx
            ay += v - ky
    mx = kx + ax / n
    my = ky + ay / n
    sx = 0.0
    sy = 0.0
    sxx = 0.0
    syy = 0.0
    sxy = 0.0
    for k in range(t0, t + 1):
        u = np.float64(x[k, j])
        v = np.float64(y[k, j])
        if (u - u == 0.0) and (v - v == 0.0):
            du = u - mx
            dv = v - my
            sx += du
            sy += dv
            sxx += du * du
            syy += dv * dv
            sxy += du * dv
    return mx, my, sx, sy, sxx, syy, sxy


@kernel(inline="always")
def _cov_result(vx, vy, cxy, n, nfin, ninf, mp, corr):
    """cov / corr from the centred sums ``vx = sum dx^2``, ``vy``, ``cxy = sum dx dy``."""
    ok = (n >= mp) & (nfin >= 2.0) & (ninf == 0.0)
    if corr:
        r = cxy / (np.sqrt(vx) * np.sqrt(vy))    # vx * vy could under/overflow
        r = r if r < 1.0 else 1.0       # clip; NaN passes through both selects
        r = r if r > -1.0 else -1.0
        r = r if r == r else np.nan
        ok = ok & (vx > 0.0) & (vy > 0.0)
    else:
        r = cxy / (nfin - 1.0)
    return r if ok else np.nan


@kernel(inline="always")
def _cov_corr(x, y, window, min_periods, out, corr):
    T, N = x.shape
    kx_ = np.zeros(N)   # anchors: the sums are of x - kx, y - ky over complete finite pairs
    ky_ = np.zeros(N)
    sx_ = np.zeros(N)
    sy_ = np.zeros(N)
    sxx_ = np.zeros(N)
    syy_ = np.zeros(N)
    sxy_ = np.zeros(N)
    bx_ = np.zeros(N)   # rounding budgets of sxx and syy (see _var_std)
    by_ = np.zeros(N)
    code = np.zeros(N)  # complete pairs + base * pairs holding an inf
    base = _count_base(window)
    inv_base = 1.0 / base
    nanrow = _nan_row(x)
    nanrow_y = _nan_row(y)
    mp = float(min_periods)
    for t in range(T):
        xt = x[t]
        yt = y[t]
        xo = _leaving(x, nanrow, t, window)
        yo = _leaving(y, nanrow_y, t, window)
        o = out[t]
        lo = N      # first and last symbol to recompute (see _var_std)
        hi = -1
        for j in range(N):
            u = np.float64(xt[j])
            v = np.float64(yt[j])
            p = np.float64(xo[j])
            q = np.float64(yo[j])
            new_ok = (u == u) & (v == v)
            new_fin = (u - u == 0.0) & (v - v == 0.0)
            old_ok = (p == p) & (q == q)
            old_fin = (p - p == 0.0) & (q - q == 0.0)
            kx = kx_[j]
            ky = ky_[j]
            dun = u - kx if new_fin else 0.0
            dvn = v - ky if new_fin else 0.0
            duo = p - kx if old_fin else 0.0
            dvo = q - ky if old_fin else 0.0
            sx = sx_[j] + dun - duo
            sy = sy_[j] + dvn - dvo
            sxx = sxx_[j] + dun * dun - duo * duo
            syy = syy_[j] + dvn * dvn - dvo * dvo
            sxy = sxy_[j] + dun * dvn - duo * dvo
            c = code[j]
            c += (1.0 if new_fin else 1.0 + base) if new_ok else 0.0
            c -= (1.0 if old_fin else 1.0 + base) if old_ok else 0.0
            code[j] = c
            ninf = np.floor(c * inv_base)
            n = c - ninf * base
            nfin = n - ninf
            ex = bx_[j] + sxx
            ey = by_[j] + syy
            inv = 1.0 / nfin
            # re-centre both anchors on the window means (see _var_std)
            pos = nfin > 0.0
            kxn = kx + (sx * inv if pos else 0.0)
            kyn = ky + (sy * inv if pos else 0.0)
            kxn = kxn if kxn - kxn == 0.0 else 0.0     # after an overflow
            kyn = kyn if kyn - kyn == 0.0 else 0.0
            dx = kxn - kx
            dy = kyn - ky
            sxy = sxy - dy * sx - dx * sy + nfin * dx * dy
            sxx = sxx - dx * (2.0 * sx - nfin * dx)
            syy = syy - dy * (2.0 * sy - nfin * dy)
            sx = sx - nfin * dx
            sy = sy - nfin * dy
            empty = nfin == 0.0
            sx = 0.0 if empty else sx
            sy = 0.0 if empty else sy
            sxx = 0.0 if empty else sxx
            syy = 0.0 if empty else syy
            sxy = 0.0 if empty else sxy
            ex = 0.0 if empty else ex
            ey = 0.0 if empty else ey
            kx_[j] = kxn
            ky_[j] = kyn
            sx_[j] = sx
            sy_[j] = sy
            sxx_[j] = sxx
            syy_[j] = syy
            sxy_[j] = sxy
            bx_[j] = ex
            by_[j] = ey
            vx = sxx - sx * sx * inv
            vy = syy - sy * sy * inv
            o[j] = _cov_result(vx, vy, sxy - sx * sy * inv, n, nfin, ninf, mp, corr)
            need = (n >= mp) & (nfin >= 2.0) & (ninf == 0.0)
            # |error of sxy| <= eps * sqrt(ex * ey) relative to sqrt(vx * vy): checking both
            # sides covers it; a constant side (v ~ 0, budget > 0) is recomputed to exactly 0
            bad = (ex * _BUDGET > vx) | (ey * _BUDGET > vy) | (vx - vx != 0.0) | (vy - vy != 0.0)
            bad = need & bad
            lo = min(lo, j if bad else N)
            hi = max(hi, j if bad else -1)
        if hi >= 0:
            # recompute the symbols whose rounding bound is too large
            for j in range(lo, hi + 1):
                c = code[j]
                ninf = np.floor(c * inv_base)
                n = c - ninf * base
                nfin = n - ninf
                sx = sx_[j]
                sy = sy_[j]
                vx = sxx_[j] - sx * sx / nfin
                vy = syy_[j] - sy * sy / nfin
                if ((n >= mp) and (nfin >= 2.0) and (ninf == 0.0)
                        and (bx_[j] * _BUDGET > vx or by_[j] * _BUDGET > vy
                             or vx - vx != 0.0 or vy - vy != 0.0)):
                    mx, my, sx, sy, sxx, syy, sxy = _cov_window(x, y, t, window, j)
                    kx_[j] = mx
                    ky_[j] = my
                    sx_[j] = sx
                    sy_[j] = sy
                    sxx_[j] = sxx
                    syy_[j] = syy
                    sxy_[j] = sxy
                    bx_[j] = sxx
                    by_[j] = syy
                    o[j] = _cov_result(sxx - sx * sx / nfin, syy - sy * sy / nfin,
                                       sxy - sx * sy / nfin, n, nfin, ninf, mp, corr)


@kernel
def ts_cov(x, y, window, min_periods, out):
    """Covariance (ddof=1) over the window's pairwise-complete rows; exactly 0 when a side is
    constant."""
    if window <= _DIRECT_MAX:
        _cov_direct(x, y, window, min_periods, out, False)
    else:
        _cov_corr(x, y, window, min_periods, out, False)


@kernel
def ts_corr(x, y, window, min_periods, out):
    """Pearson correlation over the window's pairwise-complete rows, clipped to [-1, 1]; NaN when
    either side is constant."""
    if window <= _DIRECT_MAX:
        _cov_direct(x, y, window, min_periods, out, True)
    else:
        _cov_corr(x, y, window, min_periods, out, True)


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


@kernel
def decay_linear(x, window, min_periods, out):
    """Linearly weighted mean: weight ``window`` for the current row, ``window - 1`` for the row
    before ... 1 for the oldest row of a full window, normalised by the weights of the valid
    values. Weights follow a row's age, so a series that starts inside the block weighs its
    first rows exactly as if NaN rows preceded it. Computed as ``K + sum(w (v - K)) / sum(w)``
    with ``K`` the newest finite value: a constant window gives exactly that constant."""
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
        for j in range(N):
            v = np.float64(xt[j])
            anchor[j] = v if v - v == 0.0 else anchor[j]
        for j0 in range(0, N, _TILE):
            j1 = min(N, j0 + _TILE)
            nb = j1 - j0
            kk = anchor[j0:j1]
            for j in range(nb):
                num[j] = 0.0
                den[j] = 0.0
            for k in range(t0, t + 1):
                xk = x[k, j0:j1]
                wk = float(window - (t - k))
                for j in range(nb):
                    v = np.float64(xk[j])
                    ok = v == v
                    num[j] += wk * (v - kk[j]) if ok else 0.0    # ±inf: ±inf, both: NaN
                    den[j] += wk if ok else 0.0
            o = out[t, j0:j1]
            cn = cnt[j0:j1]
            for j in range(nb):
                o[j] = kk[j] + num[j] / den[j] if cn[j] >= mp else np.nan


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


@kernel
def ts_median(x, window, min_periods, out):
    """Median of the valid values of the window (mean of the two middle ones for an even count).

    One symbol at a time: a sorted buffer of the window's valid values; the leaving value is
    found by binary search and replaced by the entering one, which is then moved into place."""
    T, N = x.shape
    buf = np.empty(max(1, min(window, T)))
    mp = max(1, min_periods)
    for j in range(N):
        m = 0
        for t in range(T):
            v = np.float64(x[t, j])
            w = np.float64(x[t - window, j]) if t >= window else np.nan
            if w == w:
                # position of the leaving value (any equal element will do)
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
            if m >= mp:
                h = m >> 1
                out[t, j] = buf[h] if m & 1 else _midpoint(buf[h - 1], buf[h])
            else:
                out[t, j] = np.nan


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
