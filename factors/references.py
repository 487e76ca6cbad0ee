"""Reference implementations (test oracles) of the factorflow operators.

Plain, deliberately slow NumPy code derived only from ``docs/semantics.md``: every window is
recomputed from scratch with explicit Python loops, so there is no running state to get wrong
and every window result is what a fresh computation over the window's values gives. Variance,
standard deviation, skewness, kurtosis, covariance and correlation use an exact two-pass scheme:
the window mean is computed with ``math.fsum`` (a correctly rounded sum), the deviations from it
are refined by the (tiny) mean of the deviations, and the central power sums are again taken
with ``math.fsum``. On data such as ``1e6 + 1e-3 * noise`` this is accurate to a few ulps where
one-pass / online algorithms (pandas included) lose ~8 digits.

Conventions shared by every function:

* Inputs are converted to float64; time-series and cross-sectional operators take a 2-D array
  ``x[t, j]`` of shape ``(T, N)`` (a 1-D array is treated as a single column and returned 1-D).
  Time-series operators work along axis 0, cross-sectional ones along axis 1.
* Every function returns a new float64 array of the input's shape.
* ``min_periods=None`` means ``min_periods = window`` (the pandas default).
* Element-wise operators accept arrays or Python scalars, broadcast with ``np.broadcast_arrays``.

This module depends on NumPy only (no pandas, no numba).
"""
from __future__ import annotations

import builtins
import math
from fractions import Fraction

import numpy as np

__all__ = [
    "ts_sum", "ts_mean", "ts_var", "ts_std", "ts_min", "ts_max", "ts_argmin", "ts_argmax",
    "ts_rank", "ts_median", "ts_prod", "ts_skew", "ts_kurt", "decay_linear", "ts_corr",
    "ts_cov", "delay", "delta", "ema", "ewma", "cumsum", "cs_rank", "cs_zscore", "cs_demean",
    "cs_scale", "abs", "log", "sqrt", "exp", "sign", "power", "signed_power", "min", "max",
    "where", "add", "sub", "mul", "div", "neg", "lt", "le", "gt", "ge", "eq", "ne", "and_",
    "or_", "not_", "lead", "fill_nan", "mask", "ts_count", "ts_quantile", "ts_mad", "ts_wma", "ts_slope",
    "ts_rsquare", "ts_resid", "cs_neutralize",
]

# This module defines ``abs``, ``min`` and ``max``; internal code uses the builtins explicitly.
_babs = builtins.abs
_bmin = builtins.min
_bmax = builtins.max

NAN = float("nan")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _as_2d(x):
    """float64 copy of ``x`` as 2-D ``(T, N)`` plus a function restoring the original shape."""
    a = np.array(x, dtype=np.float64, copy=True)
    if a.ndim == 1:
        return a.reshape(-1, 1), (lambda r: r.reshape(-1))
    if a.ndim != 2:
        raise ValueError(f"expected a 1-D or 2-D array, got shape {a.shape}")
    return a, (lambda r: r)


def _check_window(window, min_periods):
    if isinstance(window, bool) or int(window) != window or window < 1:
        raise ValueError(f"window must be a positive integer, got {window!r}")
    window = int(window)
    if min_periods is None:
        min_periods = window
    if int(min_periods) != min_periods or min_periods < 0:
        raise ValueError(f"min_periods must be a non-negative integer, got {min_periods!r}")
    return window, int(min_periods)


def _exact_sum(vals):
    """Correctly rounded sum of floats with IEEE semantics for NaN / inf / overflow."""
    vals = [float(v) for v in vals]
    if not vals:
        return 0.0
    if any(v != v for v in vals):
        return NAN
    pos = any(v == math.inf for v in vals)
    neg = any(v == -math.inf for v in vals)
    if pos and neg:
        return NAN
    if pos:
        return math.inf
    if neg:
        return -math.inf
    try:
        return math.fsum(vals)
    except OverflowError:  # intermediate overflow: the true sum is beyond float range
        s = 0.0
        for v in vals:
            s += v
        return s


def _exact_mean(vals):
    """Correctly rounded mean of floats (exact rational sum divided by the count, rounded once),
    so that the mean of equal values is that value; IEEE semantics for NaN / inf; NaN if empty."""
    vals = [float(v) for v in vals]
    if not vals:
        return NAN
    if not _all_finite(vals):
        return _exact_sum(vals) / len(vals)
    return float(sum(Fraction(v) for v in vals) / len(vals))


def _all_finite(vals):
    return all(math.isfinite(v) for v in vals)


def _all_equal(vals):
    return all(v == vals[0] for v in vals)


def _deviations(vals):
    """Deviations of ``vals`` (finite floats) from their mean, computed as exactly as doubles allow.

    ``m = fsum(vals) / n`` is within an ulp of the true mean; ``d_i = v_i - m`` is then (nearly
    always exactly) representable, and the residual mean ``c = fsum(d) / n`` of the deviations
    is subtracted so that the deviations are centred to within rounding of their own size.
    """
    n = len(vals)
    m = math.fsum(vals) / n
    d = [v - m for v in vals]
    c = math.fsum(d) / n
    return [di - c for di in d]


def _rolling(x, window, min_periods, fn):
    """Apply ``fn(win, start)`` to every window; ``win`` is the raw 1-D window (NaNs included,
    truncated at row 0), ``start`` the row index of its oldest row. NaN while the number of valid
    values is below ``min_periods``."""
    window, min_periods = _check_window(window, min_periods)
    a, restore = _as_2d(x)
    T, N = a.shape
    out = np.full((T, N), np.nan)
    for j in range(N):
        col = a[:, j]
        for t in range(T):
            start = _bmax(0, t - window + 1)
            win = col[start:t + 1]
            n_valid = int(np.count_nonzero(~np.isnan(win)))
            if n_valid < min_periods:
                continue
            out[t, j] = fn(win, start, t)
    return restore(out)


def _valid(win):
    return [float(v) for v in win if not math.isnan(v)]


# --------------------------------------------------------------------------------------------
# time-series window operators
# --------------------------------------------------------------------------------------------
def _sum_fn(win, start, t):
    return _exact_sum(_valid(win))


def ts_sum(x, window, min_periods=None):
    """Rolling sum: over the last ``window`` rows including the current one (truncated at row 0),
    the correctly rounded sum (``math.fsum``) of the valid (non-NaN) values; NaN while fewer than
    ``min_periods`` valid values are in the window (an empty window with ``min_periods=0`` sums to
    0). ±inf follow IEEE for that window alone: +inf gives +inf, +inf with -inf gives NaN, and the
    result is finite again once the inf has left the window."""
    return _rolling(x, window, min_periods, _sum_fn)


def _mean_fn(win, start, t):
    return _exact_mean(_valid(win))


def ts_mean(x, window, min_periods=None):
    """Rolling mean: the correctly rounded mean (exact rational sum / count, rounded once) of the
    valid values of the window (last ``window`` rows including the current one, truncated at row
    0), so a window of equal values gives exactly that value; NaN while fewer than
    ``min_periods`` valid values are present (and for an empty window). ±inf follow IEEE for
    that window alone."""
    return _rolling(x, window, min_periods, _mean_fn)


def _var_of(v):
    """Sample variance (ddof = 1) of a list of non-NaN floats, exact two-pass; NaN if n < 2 or
    an inf is present, exactly 0 if all values are equal."""
    n = len(v)
    if n < 2:
        return NAN
    if not _all_finite(v):
        return NAN
    if _all_equal(v):
        return 0.0
    e = _deviations(v)
    return math.fsum(di * di for di in e) / (n - 1)


def _var_fn(win, start, t):
    return _var_of(_valid(win))


def ts_var(x, window, min_periods=None):
    """Rolling sample variance (ddof = 1) of the valid values of the window (last ``window`` rows
    including the current one, truncated at row 0), by the exact two-pass formula (fsum mean,
    refined deviations, fsum of squared deviations). NaN while fewer than ``min_periods`` valid
    values are present and whenever fewer than 2 are; exactly 0 when all valid values of the
    window are equal; NaN when the window holds ±inf."""
    return _rolling(x, window, min_periods, _var_fn)


def _std_fn(win, start, t):
    return math.sqrt(_var_of(_valid(win)))


def ts_std(x, window, min_periods=None):
    """Rolling sample standard deviation (ddof = 1): ``sqrt(ts_var)`` with exactly the same
    window, NaN and inf rules as ``ts_var`` (needs >= 2 valid values, exactly 0 for a window
    of equal values, NaN with an inf)."""
    return _rolling(x, window, min_periods, _std_fn)


def _min_fn(win, start, t):
    v = _valid(win)
    return _bmin(v) if v else NAN


def _max_fn(win, start, t):
    v = _valid(win)
    return _bmax(v) if v else NAN


def ts_min(x, window, min_periods=None):
    """Rolling minimum of the valid values of the window (last ``window`` rows including the
    current one, truncated at row 0); NaN while fewer than ``min_periods`` valid values are
    present or when none is. ±inf are ordinary values."""
    return _rolling(x, window, min_periods, _min_fn)


def ts_max(x, window, min_periods=None):
    """Rolling maximum of the valid values of the window (last ``window`` rows including the
    current one, truncated at row 0); NaN while fewer than ``min_periods`` valid values are
    present or when none is. ±inf are ordinary values."""
    return _rolling(x, window, min_periods, _max_fn)


def _argext(win, better):
    best_pos = None
    best_val = None
    for i, v in enumerate(win):  # oldest first; strict comparison keeps the oldest on ties
        v = float(v)
        if math.isnan(v):
            continue
        if best_val is None or better(v, best_val):
            best_val = v
            best_pos = i + 1
    return NAN if best_pos is None else float(best_pos)


def ts_argmin(x, window, min_periods=None):
    """Rolling arg-min: the 1-based position, counted from the oldest row of the window (row
    ``t - window + 1``, or row 0 while the series is shorter than ``window``), of the minimum
    valid value; ties go to the oldest row; NaN rows are skipped. NaN while fewer than
    ``min_periods`` valid values are present or when none is."""
    return _rolling(x, window, min_periods, lambda win, s, t: _argext(win, lambda a, b: a < b))


def ts_argmax(x, window, min_periods=None):
    """Rolling arg-max: the 1-based position, counted from the oldest row of the window (row
    ``t - window + 1``, or row 0 while the series is shorter than ``window``), of the maximum
    valid value; ties go to the oldest row; NaN rows are skipped. NaN while fewer than
    ``min_periods`` valid values are present or when none is."""
    return _rolling(x, window, min_periods, lambda win, s, t: _argext(win, lambda a, b: a > b))


def _pct_rank(cur, vals):
    less = sum(1 for v in vals if v < cur)
    equal = sum(1 for v in vals if v == cur)  # includes the current value itself
    return (less + (equal + 1) / 2.0) / len(vals)


def _rank_fn(win, start, t):
    cur = float(win[-1])
    if math.isnan(cur):
        return NAN
    return _pct_rank(cur, _valid(win))


def ts_rank(x, window, min_periods=None):
    """Rolling percentile rank of the current value among the valid values of the window (last
    ``window`` rows including the current one, truncated at row 0), ties averaged:
    ``(less + (equal + 1) / 2) / n_valid`` with ``equal`` counting the current value itself
    (pandas ``rolling.rank(pct=True)``). NaN when the current value is NaN or while fewer than
    ``min_periods`` valid values are present."""
    return _rolling(x, window, min_periods, _rank_fn)


def _median_fn(win, start, t):
    v = sorted(_valid(win))
    n = len(v)
    if n == 0:
        return NAN
    if n % 2:
        return v[n // 2]
    a, b = v[n // 2 - 1], v[n // 2]
    if a == b:
        return a
    m = (a + b) / 2.0  # one rounding: the correctly rounded midpoint
    if math.isinf(m) and math.isfinite(a) and math.isfinite(b):  # a + b overflowed
        m = a / 2.0 + b / 2.0
    return m


def ts_median(x, window, min_periods=None):
    """Rolling median of the valid values of the window (last ``window`` rows including the
    current one, truncated at row 0): the middle value, or the mean of the two middle values for
    an even count; NaN while fewer than ``min_periods`` valid values are present or when none
    is. ±inf are ordinary values (-inf and +inf as the two middle values give NaN)."""
    return _rolling(x, window, min_periods, _median_fn)


def _prod_fn(win, start, t):
    p = 1.0
    for v in _valid(win):
        p *= v
    return p


def ts_prod(x, window, min_periods=None):
    """Rolling product of the valid values of the window (last ``window`` rows including the
    current one, truncated at row 0), multiplied oldest to newest with IEEE semantics (0 * inf is
    NaN, overflow gives ±inf); NaN while fewer than ``min_periods`` valid values are present (an
    empty window with ``min_periods=0`` gives 1)."""
    return _rolling(x, window, min_periods, _prod_fn)


def _skew_of(v):
    n = len(v)
    if n < 3 or not _all_finite(v) or _all_equal(v):
        return NAN
    e = _deviations(v)
    s2 = math.fsum(di * di for di in e)
    s3 = math.fsum(di * di * di for di in e)
    if s2 == 0.0:
        return NAN
    return n * math.sqrt(n - 1) / (n - 2) * s3 / s2 ** 1.5


def ts_skew(x, window, min_periods=None):
    """Rolling bias-corrected sample skewness of the valid values of the window (last ``window``
    rows including the current one, truncated at row 0), as pandas ``rolling.skew``:
    ``G1 = sqrt(n (n-1)) / (n-2) * m3 / m2**1.5`` with central moments ``m_k = sum(d**k) / n``
    from the exact two-pass deviations. NaN with fewer than 3 valid values, while fewer than
    ``min_periods`` are present, when all valid values are equal, or when the window holds ±inf."""
    return _rolling(x, window, min_periods, lambda win, s, t: _skew_of(_valid(win)))


def _kurt_of(v):
    n = len(v)
    if n < 4 or not _all_finite(v) or _all_equal(v):
        return NAN
    e = _deviations(v)
    s2 = math.fsum(di * di for di in e)
    s4 = math.fsum((di * di) * (di * di) for di in e)
    if s2 == 0.0:
        return NAN
    k = (n - 2) * (n - 3)
    return (n + 1) * n * (n - 1) / k * (s4 / (s2 * s2)) - 3.0 * (n - 1) ** 2 / k


def ts_kurt(x, window, min_periods=None):
    """Rolling bias-corrected sample excess kurtosis of the valid values of the window (last
    ``window`` rows including the current one, truncated at row 0), as pandas ``rolling.kurt``:
    ``G2 = (n+1) n (n-1) / ((n-2)(n-3)) * S4 / S2**2 - 3 (n-1)**2 / ((n-2)(n-3))`` with
    ``S_k = sum(d**k)`` over the exact two-pass deviations. NaN with fewer than 4 valid values,
    while fewer than ``min_periods`` are present, when all valid values are equal, or when the
    window holds ±inf."""
    return _rolling(x, window, min_periods, lambda win, s, t: _kurt_of(_valid(win)))


def decay_linear(x, window, min_periods=None):
    """Linearly decaying weighted mean: row ``t - k`` (k = 0 .. window-1) gets weight
    ``window - k``, i.e. weights ``1..window`` from the oldest to the newest row of the full
    window (the newest row always weighs ``window``; rows before row 0 count as missing), and
    the result is ``sum(w * x) / sum(w)`` over the valid values only (computed exactly and
    rounded once, so a constant window gives exactly that constant). NaN while fewer than
    ``min_periods`` valid values are present or when none is; ±inf follow IEEE."""
    window, mp = _check_window(window, min_periods)

    def fn(win, start, t):
        vals, wts = [], []
        for r in range(start, t + 1):
            v = float(win[r - start])
            if math.isnan(v):
                continue
            vals.append(v)
            wts.append(window - (t - r))
        if not wts:
            return NAN
        if not _all_finite(vals):
            return _exact_sum([w * v for w, v in zip(wts, vals)]) / float(sum(wts))
        # exact rational weighted sum, rounded once
        return float(sum(w * Fraction(v) for w, v in zip(wts, vals)) / sum(wts))

    return _rolling(x, window, mp, fn)


def _rolling_pair(x, y, window, min_periods, fn):
    window, min_periods = _check_window(window, min_periods)
    a, restore = _as_2d(x)
    b, _ = _as_2d(y)
    a, b = np.broadcast_arrays(a, b)
    T, N = a.shape
    out = np.full((T, N), np.nan)
    for j in range(N):
        for t in range(T):
            start = _bmax(0, t - window + 1)
            xs, ys = [], []
            for r in range(start, t + 1):
                u, v = float(a[r, j]), float(b[r, j])
                if math.isnan(u) or math.isnan(v):
                    continue
                xs.append(u)
                ys.append(v)
            if len(xs) < min_periods:
                continue
            out[t, j] = fn(xs, ys)
    return restore(out)


def _cov_of(xs, ys):
    n = len(xs)
    if n < 2 or not _all_finite(xs) or not _all_finite(ys):
        return NAN
    if _all_equal(xs) or _all_equal(ys):
        return 0.0
    ex, ey = _deviations(xs), _deviations(ys)
    return math.fsum(u * v for u, v in zip(ex, ey)) / (n - 1)


def _corr_of(xs, ys):
    n = len(xs)
    if n < 2 or not _all_finite(xs) or not _all_finite(ys):
        return NAN
    if _all_equal(xs) or _all_equal(ys):
        return NAN
    ex, ey = _deviations(xs), _deviations(ys)
    sxy = math.fsum(u * v for u, v in zip(ex, ey))
    sxx = math.fsum(u * u for u in ex)
    syy = math.fsum(v * v for v in ey)
    if sxx == 0.0 or syy == 0.0:
        return NAN
    den = sxx * syy
    if den == 0.0 or math.isinf(den):  # product under/overflowed: take the roots separately
        den = math.sqrt(sxx) * math.sqrt(syy)
    else:
        den = math.sqrt(den)
    r = sxy / den
    return _bmin(1.0, _bmax(-1.0, r))


def ts_cov(x, y, window, min_periods=None):
    """Rolling sample covariance (ddof = 1) of ``x`` and ``y`` over the rows of the window (last
    ``window`` rows including the current one, truncated at row 0) where both are valid
    (pairwise complete), by the exact two-pass formula. NaN while fewer than ``min_periods``
    pairs are present, with fewer than 2 pairs, or when a window value is ±inf; exactly 0 when
    either side is constant over the pairs."""
    return _rolling_pair(x, y, window, min_periods, _cov_of)


def ts_corr(x, y, window, min_periods=None):
    """Rolling Pearson correlation of ``x`` and ``y`` over the pairwise-complete rows of the
    window (last ``window`` rows including the current one, truncated at row 0), exact two-pass
    ``Sxy / sqrt(Sxx * Syy)`` clipped to [-1, 1]. NaN while fewer than ``min_periods`` pairs
    are present, with fewer than 2 pairs, when either side is constant over the pairs (zero
    variance), or when a window value is ±inf."""
    return _rolling_pair(x, y, window, min_periods, _corr_of)


def delay(x, periods):
    """``x`` shifted down by ``periods`` rows along time: ``out[t] = x[t - periods]``, NaN for the
    first ``periods`` rows (pandas ``shift(periods)``; a negative ``periods`` shifts up with NaN
    in the last rows, 0 copies)."""
    a, restore = _as_2d(x)
    periods = int(periods)
    T = a.shape[0]
    out = np.full_like(a, np.nan)
    for t in range(T):
        s = t - periods
        if 0 <= s < T:
            out[t] = a[s]
    return restore(out)


def delta(x, periods):
    """``x - delay(x, periods)``: the change over ``periods`` rows, NaN for the first
    ``periods`` rows and wherever either value is NaN (IEEE subtraction, inf - inf is NaN)."""
    a, restore = _as_2d(x)
    with np.errstate(all="ignore"):
        return restore(a - _as_2d(delay(a, periods))[0])


# --------------------------------------------------------------------------------------------
# recursive operators
# --------------------------------------------------------------------------------------------
def ema(x, span):
    """Exponential moving average, pandas ``ewm(span, adjust=False).mean()`` with ``ignore_na=
    False`` (without pandas 3's alpha == 0.5 special case): ``alpha = 2 / (span + 1)``; NaN before
    the first valid value, ``y = x`` at it; then on each valid row ``y = (w * y_prev + alpha * x)
    / (w + alpha)`` with ``w = (1 - alpha) ** g``, ``g`` the number of rows since the previous
    valid value (the update is skipped when ``y_prev == x``, which is exact); a NaN row outputs
    the carried previous value."""
    a, restore = _as_2d(x)
    alpha = 2.0 / (float(span) + 1.0)
    T, N = a.shape
    out = np.full((T, N), np.nan)
    for j in range(N):
        y = None
        last = None
        for t in range(T):
            v = float(a[t, j])
            if not math.isnan(v):
                if y is None:
                    y = v
                else:
                    g = t - last
                    w = (1.0 - alpha) ** g
                    if not (y == v):
                        y = (w * y + alpha * v) / (w + alpha)
                last = t
            if y is not None:
                out[t, j] = y
    return restore(out)


def ewma(x, span):
    """Exponentially weighted moving average, pandas ``ewm(span, adjust=True).mean()``:
    ``alpha = 2 / (span + 1)``; NaN before the first valid value; state ``(avg, old_wt)`` set to
    ``(x, 1)`` at the first valid value; on every later row ``old_wt *= 1 - alpha`` and on a valid
    row ``avg = (old_wt * avg + x) / (old_wt + 1)`` (skipped when ``avg == x``, keeping constant
    series exact) then ``old_wt += 1``. A NaN row outputs the carried average."""
    a, restore = _as_2d(x)
    alpha = 2.0 / (float(span) + 1.0)
    T, N = a.shape
    out = np.full((T, N), np.nan)
    for j in range(N):
        avg = None
        old_wt = 1.0
        for t in range(T):
            v = float(a[t, j])
            if avg is None:
                if not math.isnan(v):
                    avg = v
                    old_wt = 1.0
            else:
                old_wt *= 1.0 - alpha
                if not math.isnan(v):
                    if not (avg == v):
                        avg = (old_wt * avg + v) / (old_wt + 1.0)
                    old_wt += 1.0
            if avg is not None:
                out[t, j] = avg
    return restore(out)


def cumsum(x):
    """Running sum along time of the valid values (correctly rounded prefix sums, IEEE for ±inf),
    with NaN output on NaN rows (pandas ``cumsum(skipna=True)``); before the first valid value
    the output is NaN on NaN rows and the value itself on valid rows."""
    a, restore = _as_2d(x)
    T, N = a.shape
    out = np.full((T, N), np.nan)
    for j in range(N):
        seen = []
        for t in range(T):
            v = float(a[t, j])
            if math.isnan(v):
                continue
            seen.append(v)
            out[t, j] = _exact_sum(seen)
    return restore(out)


# --------------------------------------------------------------------------------------------
# cross-sectional operators
# --------------------------------------------------------------------------------------------
def _cs_apply(x, fn):
    a, restore = _as_2d(x)
    T, N = a.shape
    out = np.full((T, N), np.nan)
    for t in range(T):
        row = a[t]
        idx = [j for j in range(N) if not math.isnan(row[j])]
        if not idx:
            continue
        vals = [float(row[j]) for j in idx]
        res = fn(vals)
        for j, r in zip(idx, res):
            out[t, j] = r
    return restore(out)


def cs_rank(x):
    """Cross-sectional percentile rank of each valid value among the valid values of its row
    (time step), in (0, 1], ties averaged: ``(less + (equal + 1) / 2) / n_valid`` (pandas
    ``rank(axis=1, pct=True)``); NaN stays NaN and a row without valid values is all NaN."""
    return _cs_apply(x, lambda v: [_pct_rank(c, v) for c in v])


def _cs_zscore_row(v):
    n = len(v)
    mean = _exact_mean(v)
    sd = math.sqrt(_var_of(v)) if n >= 2 else NAN
    with np.errstate(all="ignore"):
        return [float(np.float64(c - mean) / np.float64(sd)) for c in v]


def cs_zscore(x):
    """Cross-sectional z-score ``(x - mean) / std`` per row, mean and std (ddof = 1, exact
    two-pass) over the row's valid values; NaN stays NaN. With a single valid value the std is
    NaN; with all valid values equal the std is 0 and the result is 0/0 = NaN; an inf in the
    row gives NaN. A row without valid values is all NaN."""
    return _cs_apply(x, _cs_zscore_row)


def _cs_demean_row(v):
    mean = _exact_mean(v)
    with np.errstate(all="ignore"):
        return [float(np.float64(c) - np.float64(mean)) for c in v]


def cs_demean(x):
    """Cross-sectional demeaning ``x - mean`` per row, the mean being the correctly rounded mean
    of the row's valid values; NaN stays NaN, a row without valid values is all NaN, ±inf follow
    IEEE."""
    return _cs_apply(x, _cs_demean_row)


def cs_scale(x, scale=1.0):
    """Cross-sectional scaling ``x * scale / sum(|x|)`` per row, the sum (correctly rounded) over
    the row's valid values, so the absolute values of a row sum to ``scale``; NaN stays NaN, a
    row without valid values is all NaN; a row of zeros gives 0/0 = NaN, an inf gives NaN/0."""
    scale = float(scale)

    def fn(v):
        s = _exact_sum([_babs(c) for c in v])
        with np.errstate(all="ignore"):
            return [float(np.float64(c) * np.float64(scale) / np.float64(s)) for c in v]

    return _cs_apply(x, fn)


# --------------------------------------------------------------------------------------------
# element-wise operators
# --------------------------------------------------------------------------------------------
def _f(*args):
    arrs = np.broadcast_arrays(*[np.asarray(a, dtype=np.float64) for a in args])
    return [np.array(a, dtype=np.float64, copy=True) for a in arrs]


def _unary(fn, x):
    (a,) = _f(x)
    with np.errstate(all="ignore"):
        return np.asarray(fn(a), dtype=np.float64)


def _binary(fn, x, y):
    a, b = _f(x, y)
    with np.errstate(all="ignore"):
        return np.asarray(fn(a, b), dtype=np.float64)


def abs(x):  # noqa: A001 - operator name
    """Element-wise absolute value (NumPy ``abs``); NaN stays NaN, |±inf| = inf."""
    return _unary(np.abs, x)


def log(x):
    """Element-wise natural logarithm (NumPy ``log``): log(0) = -inf, log of a negative = NaN,
    no error raised."""
    return _unary(np.log, x)


def sqrt(x):
    """Element-wise square root (NumPy ``sqrt``): sqrt of a negative = NaN, no error raised."""
    return _unary(np.sqrt, x)


def exp(x):
    """Element-wise exponential (NumPy ``exp``): overflow gives inf, no error raised."""
    return _unary(np.exp, x)


def sign(x):
    """Element-wise sign (NumPy ``sign``): -1.0, 0.0 or 1.0; NaN stays NaN."""
    return _unary(np.sign, x)


def power(x, a):
    """Element-wise ``x ** a`` (NumPy ``power`` in float64): a negative base with a non-integer
    exponent gives NaN, 0 ** negative gives inf, no error raised."""
    return _binary(np.power, x, a)


def signed_power(x, a):
    """Element-wise ``sign(x) * |x| ** a``; NaN where either operand is NaN."""
    return _binary(lambda u, v: np.sign(u) * np.power(np.abs(u), v), x, a)


def min(x, y):  # noqa: A001 - operator name
    """Element-wise minimum propagating NaN (NumPy ``minimum``)."""
    return _binary(np.minimum, x, y)


def max(x, y):  # noqa: A001 - operator name
    """Element-wise maximum propagating NaN (NumPy ``maximum``)."""
    return _binary(np.maximum, x, y)


def where(cond, a, b):
    """Element-wise selection: ``a`` where ``cond`` is nonzero (true), ``b`` where it is 0,
    NaN where ``cond`` is NaN (the chosen operand's NaN passes through)."""
    c, u, v = _f(cond, a, b)
    out = np.where(c != 0, u, v)
    out[np.isnan(c)] = np.nan
    return np.asarray(out, dtype=np.float64)


def add(x, y):
    """Element-wise ``x + y`` (IEEE float64: inf - inf is NaN)."""
    return _binary(np.add, x, y)


def sub(x, y):
    """Element-wise ``x - y`` (IEEE float64)."""
    return _binary(np.subtract, x, y)


def mul(x, y):
    """Element-wise ``x * y`` (IEEE float64: 0 * inf is NaN)."""
    return _binary(np.multiply, x, y)


def div(x, y):
    """Element-wise ``x / y`` (IEEE float64): division by zero gives ±inf, 0/0 gives NaN, never
    an error."""
    return _binary(np.true_divide, x, y)


def neg(x):
    """Element-wise negation ``-x``."""
    return _unary(np.negative, x)


def _cmp(op, x, y):
    a, b = _f(x, y)
    out = op(a, b).astype(np.float64)
    out[np.isnan(a) | np.isnan(b)] = np.nan
    return out


def lt(x, y):
    """Element-wise ``x < y`` as 1.0 / 0.0; NaN where either operand is NaN."""
    return _cmp(np.less, x, y)


def le(x, y):
    """Element-wise ``x <= y`` as 1.0 / 0.0; NaN where either operand is NaN."""
    return _cmp(np.less_equal, x, y)


def gt(x, y):
    """Element-wise ``x > y`` as 1.0 / 0.0; NaN where either operand is NaN."""
    return _cmp(np.greater, x, y)


def ge(x, y):
    """Element-wise ``x >= y`` as 1.0 / 0.0; NaN where either operand is NaN."""
    return _cmp(np.greater_equal, x, y)


def eq(x, y):
    """Element-wise ``x == y`` as 1.0 / 0.0; NaN where either operand is NaN."""
    return _cmp(np.equal, x, y)


def ne(x, y):
    """Element-wise ``x != y`` as 1.0 / 0.0; NaN where either operand is NaN."""
    return _cmp(np.not_equal, x, y)


def and_(x, y):
    """Element-wise logical and (nonzero = true) as 1.0 / 0.0; NaN where either operand is NaN
    (even when the other operand alone would decide the result)."""
    return _cmp(lambda a, b: (a != 0) & (b != 0), x, y)


def or_(x, y):
    """Element-wise logical or (nonzero = true) as 1.0 / 0.0; NaN where either operand is NaN
    (even when the other operand alone would decide the result)."""
    return _cmp(lambda a, b: (a != 0) | (b != 0), x, y)


def not_(x):
    """Element-wise logical not (nonzero = true): 1.0 where ``x == 0``, 0.0 where ``x`` is
    nonzero, NaN where ``x`` is NaN."""
    (a,) = _f(x)
    out = (a == 0).astype(np.float64)
    out[np.isnan(a)] = np.nan
    return out


# --------------------------------------------------------------------------------------------
# operators added for the qlib / wq dialects
# --------------------------------------------------------------------------------------------
def lead(x, periods):
    """Value ``periods`` rows *later*: ``out[t] = x[t + periods]``, NaN for the last rows (pandas
    ``shift(-periods)``; Qlib ``Ref(x, -periods)``)."""
    return delay(x, -int(periods))


def mask(x, cond):
    """``x`` where ``cond`` is 0 (false), NaN where ``cond`` is nonzero (true) or NaN."""
    x, c = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(cond, dtype=np.float64))
    return np.where(c == 0.0, x, np.nan)


def fill_nan(x, value):
    """``x`` with every NaN replaced by ``value``."""
    a = np.array(x, dtype=np.float64, copy=True)
    a[np.isnan(a)] = float(value)
    return a


def ts_count(x, window):
    """Number of valid (non-NaN) values among the last ``window`` rows (rows before row 0 count
    as missing: 0, 1, ... at the start; never NaN)."""
    window, _ = _check_window(window, 0)
    return _rolling(x, window, 0, lambda win, start, t: float(len(_valid(win))))


def ts_quantile(x, window, q, min_periods=None):
    """``q`` quantile of the valid values of the window with linear interpolation between the
    order statistics ``v[floor(h)]`` and ``v[floor(h) + 1]``, ``h = q (n - 1)`` (NumPy's and
    pandas' ``'linear'``), computed exactly and rounded once."""
    q = float(q)

    def fn(win, start, t):
        v = sorted(_valid(win))
        if not v:
            return NAN
        h = Fraction(q) * (len(v) - 1)
        lo = int(math.floor(h))
        hi = _bmin(lo + 1, len(v) - 1)
        a, b = v[lo], v[hi]
        if a == b or not (math.isfinite(a) and math.isfinite(b)):
            return a if a == b else a + (b - a) * float(h - lo)
        return float(Fraction(a) + (Fraction(b) - Fraction(a)) * (h - lo))

    return _rolling(x, window, min_periods, fn)


def ts_mad(x, window, min_periods=None):
    """Mean absolute deviation ``mean(|v - mean(v)|)`` of the window's valid values (Qlib
    ``Mad``), exact rational arithmetic rounded once."""
    def fn(win, start, t):
        v = _valid(win)
        if not v:
            return NAN
        if not _all_finite(v):
            return NAN
        m = sum(Fraction(a) for a in v) / len(v)
        return float(sum(_babs(Fraction(a) - m) for a in v) / len(v))

    return _rolling(x, window, min_periods, fn)


def ts_wma(x, window, min_periods=None, compat=False):
    """Qlib ``WMA``: the window's rows ``start..t`` get weights ``1..n`` (``n = t - start + 1``,
    the rows the window has), and the result is ``sum(w v) / sum(w)`` over the valid values
    (exact, rounded once). ``compat=True`` is Qlib 0.9 verbatim: weights normalised over all
    ``n`` rows, then ``nanmean`` of ``w v`` (microsoft/qlib#1993)."""
    def fn(win, start, t):
        n = t - start + 1
        pairs = [(k + 1, float(win[k])) for k in range(n) if not math.isnan(win[k])]
        if not pairs:
            return NAN
        if not _all_finite([v for _, v in pairs]):
            return NAN if compat else _exact_sum([w * v for w, v in pairs]) / float(sum(w for w, _ in pairs))
        num = sum(w * Fraction(v) for w, v in pairs)
        if compat:
            return float(num / (n * (n + 1) // 2) / len(pairs))
        return float(num / sum(w for w, _ in pairs))

    return _rolling(x, window, min_periods, fn)


def _ols_of(win, start, t):
    """``(slope, rsquare, resid)`` of the valid values of ``win`` on their positions, exact."""
    pts = [(Fraction(k), Fraction(float(win[k]))) for k in range(len(win)) if not math.isnan(win[k])]
    if len(pts) < 2 or not _all_finite([float(v) for _, v in pts]):
        return NAN, NAN, NAN
    n = len(pts)
    mp = sum(p for p, _ in pts) / n
    mv = sum(v for _, v in pts) / n
    sxx = sum((p - mp) ** 2 for p, _ in pts)
    sxy = sum((p - mp) * (v - mv) for p, v in pts)
    syy = sum((v - mv) ** 2 for _, v in pts)
    slope = sxy / sxx
    rsq = float(sxy * sxy / (sxx * syy)) if syy != 0 else NAN
    cur = float(win[-1])
    resid = NAN if math.isnan(cur) else float(Fraction(cur) - (mv + slope * (len(win) - 1 - mp)))
    return float(slope), rsq, resid


def ts_slope(x, window, min_periods=None):
    """Slope of the least-squares line of the window's valid values on their row positions
    (Qlib ``Slope``); NaN with fewer than two valid values. Exact, rounded once."""
    return _rolling(x, window, min_periods, lambda w, s, t: _ols_of(w, s, t)[0])


def ts_rsquare(x, window, min_periods=None):
    """R^2 of that line (Qlib ``Rsquare`` without its small-std mask); NaN for a constant window."""
    return _rolling(x, window, min_periods, lambda w, s, t: _ols_of(w, s, t)[1])


def ts_resid(x, window, min_periods=None):
    """Residual of the current row from that line (Qlib ``Resi``); NaN where the current value is NaN."""
    return _rolling(x, window, min_periods, lambda w, s, t: _ols_of(w, s, t)[2])


def cs_neutralize(x, group):
    """``x`` minus the mean of ``x`` over the symbols with the same group code in the same row
    (the correctly rounded mean of the group's valid values); NaN where ``x`` or the code is NaN."""
    a, restore = _as_2d(x)
    g, _ = _as_2d(group)
    T, N = a.shape
    out = np.full((T, N), np.nan)
    for t in range(T):
        groups = {}
        for j in range(N):
            if not math.isnan(g[t, j]) and not math.isnan(a[t, j]):
                groups.setdefault(float(g[t, j]), []).append(j)
        for members in groups.values():
            vals = [float(a[t, j]) for j in members]
            mean = _exact_mean(vals)
            with np.errstate(all="ignore"):
                for j, v in zip(members, vals):
                    out[t, j] = float(np.float64(v) - np.float64(mean))
    return restore(out)
