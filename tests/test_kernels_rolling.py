"""Time-series window kernels (``kernels/cpu/rolling.py``) against independent references.

The main table compares every kernel, window, ``min_periods`` and dtype with a NumPy reference
written straight from ``docs/semantics.md`` (one fresh computation per window over a NaN-padded
sliding view; var/std/skew/kurt/cov/corr as exact corrected two-pass sums), on a panel whose
columns each stress one thing: scattered NaNs, leading NaNs, a NaN gap longer than the window,
constant runs longer than the window, 1e6 + 1e-3 noise, 1e-300 values, ±inf, ties, an all-NaN
column, a drifting price, 1e8 spikes, mostly-NaN. Further tests cross-check the reference reading
with pandas / bottleneck on plain data, and check chunk invariance and edge cases.
"""
from __future__ import annotations

import functools
import warnings

import bottleneck as bn
import numpy as np
import pandas as pd
import pytest
from numpy.lib.stride_tricks import sliding_window_view

try:
    from factorflow.kernels.cpu import rolling as R
except ImportError:  # plain source checkout, nothing installed
    import pathlib
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    from kernels.cpu import rolling as R

T = 300
WINDOWS = [1, 2, 3, 5, 8, 20, 400]   # 8: first window of the running var/corr and argmin blocks
DTYPES = [np.float64, np.float32]


# ----------------------------------------------------------------------------------------------
# data


def _panel(seed):
    rng = np.random.default_rng(seed)
    cols = []
    c = rng.standard_normal(T)                                  # 0 scattered NaNs
    c[rng.random(T) < 0.1] = np.nan
    cols.append(c)
    c = 3.0 * rng.standard_normal(T) + 5.0                      # 1 leading NaNs
    c[:40] = np.nan
    cols.append(c)
    c = rng.standard_normal(T)                                  # 2 gap longer than window 20
    c[100:170] = np.nan
    cols.append(c)
    levels = np.array([1.5, 2.25, 4.0, 1.5, 0.75, 3.0])         # 3 constant runs of 25-45 rows
    c = np.repeat(levels, rng.integers(25, 46, len(levels)))
    c = np.resize(np.concatenate([c, c[::-1]]), T).astype(float)
    c[rng.random(T) < 0.05] = np.nan
    cols.append(c)
    cols.append(1e6 + 1e-3 * rng.standard_normal(T))            # 4 large offset
    cols.append(1e-300 * rng.standard_normal(T))                # 5 tiny values
    c = rng.standard_normal(T)                                  # 6 ±inf
    c[[50, 120, 201, 260]] = np.inf
    c[[52, 200, 262, 263]] = -np.inf
    c[[61]] = np.nan
    cols.append(c)
    c = rng.integers(0, 4, T).astype(float)                     # 7 ties
    c[rng.random(T) < 0.1] = np.nan
    cols.append(c)
    cols.append(np.full(T, np.nan))                             # 8 all NaN
    cols.append(100.0 * np.exp(np.cumsum(0.02 * rng.standard_normal(T))))  # 9 drifting price
    c = rng.standard_normal(T)                                  # 10 spikes
    c[rng.random(T) < 0.03] = 1e8
    cols.append(c)
    c = rng.standard_normal(T)                                  # 11 mostly NaN
    c[rng.random(T) < 0.6] = np.nan
    cols.append(c)
    return np.ascontiguousarray(np.column_stack(cols))


@functools.lru_cache(maxsize=None)
def _data(dtype):
    """``(x, y)`` in ``dtype``; y is correlated with x, with its own NaNs, infs and constants."""
    x = _panel(0)
    rng = np.random.default_rng(1)
    y = 0.6 * np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0) + rng.standard_normal(x.shape)
    y[:, 4] = -2e6 + 1e-3 * (0.5 * (x[:, 4] - 1e6) / 1e-3 + rng.standard_normal(T))
    y[:, 5] = 1e-300 * rng.standard_normal(T)
    y[:, 3] = np.where(np.arange(T) % 60 < 30, 2.0, y[:, 3])   # constant y while x varies ...
    y[150:190, 0] = 7.0
    y[rng.random(x.shape) < 0.07] = np.nan
    y[[30, 140], 6] = np.inf
    y[[141], 6] = -np.inf
    x = x.astype(dtype)
    y = np.ascontiguousarray(y.astype(dtype))
    return x, y


@functools.lru_cache(maxsize=None)
def _windows(dtype, window, which=0):
    """(T, N, window) view of the NaN-padded data (float64), oldest row first."""
    a = _data(dtype)[which].astype(np.float64)
    pad = np.full((window - 1, a.shape[1]), np.nan)
    return sliding_window_view(np.vstack([pad, a]), window, axis=0)


# ----------------------------------------------------------------------------------------------
# references, straight from docs/semantics.md


def _central(W):
    """Corrected two-pass central sums of the finite values of each window: n, mean, sum d^k."""
    fin = np.isfinite(W)
    X = np.where(fin, W, np.nan)
    n = fin.sum(-1).astype(float)
    m = np.nanmean(X, -1)
    d = X - m[..., None]
    a = np.nansum(d, -1) / n                       # the rounding of m, removed exactly below
    s2 = np.nansum(d * d, -1) / n
    s3 = np.nansum(d ** 3, -1) / n
    s4 = np.nansum(d ** 4, -1) / n
    m2 = s2 - a * a
    m3 = s3 - 3 * a * s2 + 2 * a ** 3
    m4 = s4 - 4 * a * s3 + 6 * a * a * s2 - 3 * a ** 4
    const = np.nanmax(X, -1) == np.nanmin(X, -1)
    return n, m2, m3, m4, const


def _reference(name, dtype, window, mp):
    W = _windows(dtype, window)
    valid = ~np.isnan(W)
    cnt = valid.sum(-1)
    has_inf = np.isinf(W).any(-1)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        if name == "ts_sum":
            r = np.nansum(W, -1)
        elif name == "ts_mean":
            r = np.nansum(W, -1) / cnt
        elif name in ("ts_var", "ts_std"):
            n, m2, _, _, const = _central(W)
            r = np.where(const, 0.0, m2 * n / (n - 1))
            r = np.where((n < 2) | has_inf, np.nan, r)
            r = np.sqrt(r) if name == "ts_std" else r
        elif name in ("ts_skew", "ts_kurt"):
            n, m2, m3, m4, const = _central(W)
            if name == "ts_skew":
                r = np.sqrt(n * (n - 1)) / (n - 2) * m3 / m2 ** 1.5
                short = n < 3
            else:
                r = ((n * n - 1) * m4 / m2 ** 2 - 3 * (n - 1) ** 2) / ((n - 2) * (n - 3))
                short = n < 4
            r = np.where(short | has_inf | const | (m2 == 0), np.nan, r)
        elif name == "ts_min":
            r = np.nanmin(W, -1)
        elif name == "ts_max":
            r = np.nanmax(W, -1)
        elif name in ("ts_argmin", "ts_argmax"):
            key = np.where(valid, W, np.inf if name == "ts_argmin" else -np.inf)
            best = key.min(-1) if name == "ts_argmin" else key.max(-1)
            first = (valid & (W == best[..., None])).argmax(-1)      # ties -> oldest
            pad = np.maximum(0, window - 1 - np.arange(T))[:, None]  # window starts at row 0
            r = (first - pad + 1).astype(float)
        elif name == "ts_rank":
            cur = _data(dtype)[0].astype(np.float64)[..., None]
            less = (W < cur).sum(-1)
            equal = (W == cur).sum(-1)                                # counts the value itself
            r = (less + (equal + 1) / 2) / cnt
            r = np.where(np.isnan(cur[..., 0]), np.nan, r)
        elif name == "ts_median":
            r = np.nanmedian(W, -1)
        elif name == "ts_prod":
            r = np.nanprod(W, -1)
        elif name == "decay_linear":
            w = np.arange(1.0, window + 1)                            # newest row weighs `window`
            r = np.nansum(W * w, -1) / (valid * w).sum(-1)
        elif name in ("ts_cov", "ts_corr"):
            return _reference_pair(name, dtype, window, mp)
        else:
            raise AssertionError(name)
    return np.where(cnt >= mp, r, np.nan)


def _reference_pair(name, dtype, window, mp):
    Wx = _windows(dtype, window, 0)
    Wy = _windows(dtype, window, 1)
    pair = ~np.isnan(Wx) & ~np.isnan(Wy)
    npair = pair.sum(-1)
    pinf = (pair & (np.isinf(Wx) | np.isinf(Wy))).any(-1)
    fin = pair & np.isfinite(Wx) & np.isfinite(Wy)
    X = np.where(fin, Wx, np.nan)
    Y = np.where(fin, Wy, np.nan)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        n = fin.sum(-1).astype(float)
        dx = X - np.nanmean(X, -1)[..., None]
        dy = Y - np.nanmean(Y, -1)[..., None]
        ax = np.nansum(dx, -1)
        ay = np.nansum(dy, -1)
        sxx = np.nansum(dx * dx, -1) - ax * ax / n
        syy = np.nansum(dy * dy, -1) - ay * ay / n
        sxy = np.nansum(dx * dy, -1) - ax * ay / n
        cx = np.nanmax(X, -1) == np.nanmin(X, -1)
        cy = np.nanmax(Y, -1) == np.nanmin(Y, -1)
        if name == "ts_cov":
            r = np.where(cx | cy, 0.0, sxy / (n - 1))
        else:
            r = np.clip(sxy / np.sqrt(sxx * syy), -1.0, 1.0)
            r = np.where(cx | cy | (sxx <= 0) | (syy <= 0), np.nan, r)
        r = np.where((n < 2) | pinf | (npair < mp), np.nan, r)
    return r


def _scale_tol(name, dtype, window):
    """Per-cell absolute tolerance where the result can be ~0 with O(scale) rounding."""
    if name in ("ts_skew", "ts_kurt"):
        return 1e-10          # dimensionless; exact 0 happens (two-level symmetric windows)
    if name == "ts_corr":
        return 1e-12
    if name == "ts_cov":
        Wx = _windows(dtype, window, 0)
        Wy = _windows(dtype, window, 1)
        fin = np.isfinite(Wx) & np.isfinite(Wy)
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            sx = np.nanstd(np.where(fin, Wx, np.nan), -1)
            sy = np.nanstd(np.where(fin, Wy, np.nan), -1)
        return np.nan_to_num(1e-12 * sx * sy)
    return 0.0


def _assert_close(out, ref, rtol, atol=0.0):
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref), err_msg="NaN positions differ")
    np.testing.assert_array_equal(np.isinf(out) & (out > 0), np.isinf(ref) & (ref > 0))
    np.testing.assert_array_equal(np.isinf(out) & (out < 0), np.isinf(ref) & (ref < 0))
    ok = np.isfinite(ref)
    err = np.abs(out[ok] - ref[ok])
    lim = rtol * np.abs(ref[ok]) + np.broadcast_to(atol, ref.shape)[ok]
    if not (err <= lim).all():
        i = np.argmax(err - lim)
        idx = np.argwhere(ok)[i]
        raise AssertionError(
            f"{(err > lim).sum()} cells differ; worst at (t, j)={tuple(idx)}: "
            f"got {out[ok][i]!r}, expected {ref[ok][i]!r} (rel {err[i] / abs(ref[ok][i]):.3g})")


def _run(name, x, y, window, mp):
    out = np.full_like(x, -12345.0)
    fn = getattr(R, name)
    if name in ("ts_corr", "ts_cov"):
        fn(x, y, window, mp, out)
    else:
        fn(x, window, mp, out)
    return out


WINDOW_KERNELS = ["ts_sum", "ts_mean", "ts_var", "ts_std", "ts_min", "ts_max", "ts_argmin",
                  "ts_argmax", "ts_rank", "ts_median", "ts_prod", "ts_skew", "ts_kurt",
                  "decay_linear", "ts_corr", "ts_cov"]


def _cases():
    for window in WINDOWS:
        for mp in sorted({window, 1}):
            for dtype in DTYPES:
                yield pytest.param(window, mp, dtype, id=f"w{window}-mp{mp}-{np.dtype(dtype).name}")


# ----------------------------------------------------------------------------------------------
# the main table


@pytest.mark.parametrize("name", WINDOW_KERNELS)
@pytest.mark.parametrize("window, mp, dtype", list(_cases()))
def test_window_kernel_matches_reference(name, window, mp, dtype):
    x, y = _data(dtype)
    out = _run(name, x, y, window, mp)
    assert out.dtype == x.dtype
    ref = _reference(name, dtype, window, mp)
    if dtype == np.float64:
        _assert_close(out, ref, rtol=1e-9, atol=_scale_tol(name, dtype, window))
    else:
        # float32 in, float64 accumulation, one rounding on the store: compare with the float64
        # reference on the same float32 values, rounded to float32 (overflow included)
        with np.errstate(over="ignore"):
            ref32 = ref.astype(np.float32)
        _assert_close(out, ref32, rtol=1e-6, atol=np.float32(_scale_tol(name, dtype, window)))


@pytest.mark.parametrize("periods", [0, 1, 3, T + 5, -2])
@pytest.mark.parametrize("dtype", DTYPES)
def test_delay_delta(periods, dtype):
    x, _ = _data(dtype)
    expected = pd.DataFrame(x).shift(periods).to_numpy()
    out = np.full_like(x, -1.0)
    R.delay(x, periods, out)
    np.testing.assert_array_equal(out, expected)
    R.delta(x, periods, out)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(out, x - expected)
    # in place
    z = x.copy()
    R.delay(z, periods, z)
    np.testing.assert_array_equal(z, expected)
    z = x.copy()
    R.delta(z, periods, z)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(z, x - expected)


# ----------------------------------------------------------------------------------------------
# the references agree with the peers on plain data


def _plain(seed=5, n=6):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((T, n))
    a[rng.random(a.shape) < 0.08] = np.nan
    a[:25, 1] = np.nan
    a[90:130, 2] = np.nan
    return a


@pytest.mark.parametrize("window, mp", [(3, 3), (20, 20), (20, 1), (400, 1)])
def test_matches_pandas(window, mp):
    a = _plain()
    b = 0.5 * np.nan_to_num(a) + np.random.default_rng(7).standard_normal(a.shape)
    b[np.random.default_rng(8).random(b.shape) < 0.05] = np.nan
    r = pd.DataFrame(a).rolling(window, min_periods=mp)
    peers = {
        "ts_sum": r.sum(), "ts_mean": r.mean(), "ts_var": r.var(), "ts_std": r.std(),
        "ts_min": r.min(), "ts_max": r.max(), "ts_rank": r.rank(pct=True),
        "ts_median": r.median(), "ts_skew": r.skew(), "ts_kurt": r.kurt(),
        "ts_corr": r.corr(pd.DataFrame(b)), "ts_cov": r.cov(pd.DataFrame(b)),
    }
    for name, expected in peers.items():
        out = _run(name, a, b, window, mp)
        atol = 1e-9 if name in ("ts_skew", "ts_kurt") else 1e-12
        _assert_close(out, expected.to_numpy(), rtol=1e-8, atol=atol)
    periods = min(window, T + 1)
    out = np.empty_like(a)
    R.delay(a, periods, out)
    _assert_close(out, pd.DataFrame(a).shift(periods).to_numpy(), rtol=0.0)
    R.delta(a, periods, out)
    _assert_close(out, pd.DataFrame(a).diff(periods).to_numpy(), rtol=0.0)


@pytest.mark.parametrize("window, mp", [(5, 5), (20, 20), (20, 1)])
def test_argmin_argmax_match_bottleneck(window, mp):
    a = _plain()   # continuous values: no ties
    t = np.arange(T)[:, None]
    start = np.maximum(0, t - window + 1)
    for name, peer in (("ts_argmin", bn.move_argmin), ("ts_argmax", bn.move_argmax)):
        idx = peer(a, window, min_count=mp, axis=0)        # 0 = newest row of the window
        out = _run(name, a, None, window, mp)
        _assert_close(out, t - idx - start + 1, rtol=0.0)


# ----------------------------------------------------------------------------------------------
# properties and edge cases


@pytest.mark.parametrize("name", WINDOW_KERNELS)
def test_chunk_invariance(name):
    """A block starting window - 1 rows early reproduces the full-series rows (engine halo)."""
    x, y = _data(np.float64)
    window, t0 = 20, 170
    full = _run(name, x, y, window, 5)
    lo = t0 - (window - 1)
    part = _run(name, x[lo:].copy(), y[lo:].copy(), window, 5)
    atol = _scale_tol(name, np.float64, window)
    atol = atol[t0:] if np.ndim(atol) else atol
    _assert_close(part[window - 1:], full[t0:], rtol=1e-9, atol=atol)


def test_inf_leaves_window():
    x = np.array([1.0, np.inf, 2.0, -np.inf, 3.0, 4.0, np.inf, -np.inf, 5.0, 6.0, 7.0])[:, None]
    out = np.empty_like(x)
    R.ts_sum(x, 2, 1, out)
    np.testing.assert_array_equal(
        out[:, 0],
        [1.0, np.inf, np.inf, -np.inf, -np.inf, 7.0, np.inf, np.nan, -np.inf, 11.0, 13.0])
    R.ts_var(x, 2, 1, out)
    np.testing.assert_array_equal(
        out[:, 0], [np.nan, np.nan, np.nan, np.nan, np.nan, 0.5, np.nan, np.nan, np.nan, 0.5, 0.5])


def test_sum_overflow_recovers():
    """A finite sum that overflows is inf, and exact again once the huge values have left."""
    x = np.array([1e308, 1e308, 1.0, 2.0, 3.0, 1e308, -1e308, 4.0, 5.0])[:, None]
    out = np.empty_like(x)
    R.ts_sum(x, 2, 2, out)
    np.testing.assert_array_equal(
        out[:, 0], [np.nan, np.inf, 1e308, 3.0, 5.0, 1e308, 0.0, -1e308, 9.0])


def test_var_exact_zero_and_nonnegative():
    rng = np.random.default_rng(3)
    base = np.repeat(1e6 + rng.standard_normal(20) * 1e-3, 40)   # constant runs of 40 rows
    x = np.column_stack([base, base * 1e-7, np.full(800, 0.1)])
    x[::17, 0] = np.nan
    for window in (3, 8, 20):
        out = np.empty_like(x)
        R.ts_var(x, window, 2, out)
        assert (out[~np.isnan(out)] >= 0).all()
        padded = np.vstack([np.full((window - 1, 3), np.nan), x])
        const = sliding_window_view(padded, window, axis=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            const = np.nanmax(const, -1) == np.nanmin(const, -1)
        assert (out[const & ~np.isnan(out)] == 0.0).all()
        R.ts_corr(x, x[:, ::-1].copy(), window, 2, out)
        assert np.isnan(out[const]).all()


def test_var_exact_on_offset_data():
    """1e6 + 1e-3 noise over 4000 rows: within 1e-9 of the exact two-pass result (pandas is not)."""
    rng = np.random.default_rng(4)
    x = 1e6 + 1e-3 * rng.standard_normal((4000, 3))
    x[1000:1050, 1] += 5e3                          # a level shift that comes and goes
    y = -3e6 + 1e-3 * rng.standard_normal((4000, 3)) + 0.3 * (x - 1e6)
    for window in (5, 20, 250):
        W = sliding_window_view(x, window, axis=0)
        n, m2, _, _, _ = _central(W)
        out = np.empty_like(x)
        R.ts_var(x, window, window, out)
        _assert_close(out[window - 1:], m2 * n / (n - 1), rtol=1e-9)
        R.ts_corr(x, y, window, window, out)
        Wy = sliding_window_view(y, window, axis=0)
        dx = W - W.mean(-1, keepdims=True)
        dy = Wy - Wy.mean(-1, keepdims=True)
        ref = (dx * dy).sum(-1) / np.sqrt((dx * dx).sum(-1) * (dy * dy).sum(-1))
        _assert_close(out[window - 1:], ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("shape", [(0, 4), (5, 0), (1, 1)])
def test_empty_and_tiny_shapes(shape):
    x = np.ones(shape)
    for name in WINDOW_KERNELS:
        out = _run(name, x, x, 3, 1)
        assert out.shape == shape
    R.delay(x, 2, np.zeros(shape))
    R.delta(x, 2, np.zeros(shape))


def test_min_periods_zero():
    """Not used by the dialects, but well defined: an empty window sums to 0, multiplies to 1
    and is NaN for everything else (as the project's references)."""
    nan = np.nan
    x = np.array([[nan], [nan], [2.0], [nan], [nan], [nan]])
    one = [nan, nan, 2.0, 2.0, nan, nan]        # windows [.., 2] and [2, ..]
    none = [nan] * 6
    expected = {
        "ts_sum": [0, 0, 2, 2, 0, 0], "ts_prod": [1, 1, 2, 2, 1, 1], "ts_mean": one,
        "ts_min": one, "ts_max": one, "ts_median": one, "decay_linear": one,
        "ts_argmin": [nan, nan, 2, 1, nan, nan], "ts_argmax": [nan, nan, 2, 1, nan, nan],
        "ts_rank": [nan, nan, 1, nan, nan, nan],
        "ts_var": none, "ts_std": none, "ts_skew": none, "ts_kurt": none, "ts_cov": none,
        "ts_corr": none,
    }
    for name in WINDOW_KERNELS:
        out = _run(name, x, x, 2, 0)
        np.testing.assert_array_equal(out[:, 0], expected[name], err_msg=name)


def test_constant_windows_are_exact():
    """Mean, sum, median and decay_linear of equal values give exactly that value (sum: rounded
    once), whatever came before; var exactly 0."""
    vals = np.array([0.1, 1e6 + 0.3, 1.0 / 3.0, -2.7e-5])
    x = np.repeat(vals, 25)[:, None] * np.array([1.0, 1.0])
    x[::7, 1] = np.nan
    x[:, 1] += 1e-3 * (np.arange(100) < 10)      # a different start, then the same runs
    const = np.repeat(np.arange(4), 25)
    for window in (3, 8, 20):
        ok = np.array([t >= window - 1 and const[t - window + 1] == const[t] for t in range(100)])
        for name, f in (("ts_mean", lambda v, n: v), ("ts_median", lambda v, n: v),
                        ("decay_linear", lambda v, n: v), ("ts_sum", lambda v, n: v * n),
                        ("ts_var", lambda v, n: 0.0), ("ts_min", lambda v, n: v)):
            out = _run(name, x, x, window, 1)
            for j in range(2):
                col = x[:, j]
                for t in np.flatnonzero(ok & (np.arange(100) - window + 1 >= 10)):
                    win = col[t - window + 1:t + 1]
                    n = np.count_nonzero(~np.isnan(win))
                    if name == "ts_var" and n < 2:
                        continue
                    assert out[t, j] == f(vals[const[t]], n), (name, window, t, j)


# ----------------------------------------------------------------------------------------------
# running var / std / cov / corr on long series: several re-anchoring periods, spikes that leave,
# level shifts, regime changes, constant runs, extreme scales


def _long_panel(seed=11, T=1500):
    rng = np.random.default_rng(seed)
    rw = lambda: 100.0 + np.cumsum(rng.standard_normal(T))  # noqa: E731
    cols = []
    c = rw()                                                     # 0 random walk, 5% NaN
    c[rng.random(T) < 0.05] = np.nan
    cols.append(c)
    c = rw()                                                     # 1 NaN-free, 1% set to 0
    c[rng.random(T) < 0.01] = 0.0
    cols.append(c)
    c = rng.standard_normal(T)                                   # 2 1e8 spikes
    c[rng.random(T) < 0.02] = 1e8
    cols.append(c)
    c = 1e6 + 1e-3 * rng.standard_normal(T)                      # 3 level shifts on 1e6 + noise
    c += 5e3 * (rng.random(T) < 0.004).cumsum()
    cols.append(c)
    s = np.where((np.arange(T) // 200) % 2 == 0, 1.0, 1e-4)      # 4 volatility regimes
    cols.append(50.0 + np.cumsum(rng.standard_normal(T) * s))
    c = np.repeat(rng.integers(0, 3, T // 150 + 1).astype(float), 150)[:T]   # 5 constant runs
    noisy = (np.arange(T) // 150) % 3 == 2                      # (0.0 among them), some noisy
    c[noisy] = rng.standard_normal(T)[noisy]
    cols.append(c)
    c = rw()                                                     # 6 leading NaNs, then data
    c[:200] = np.nan
    cols.append(c)
    c = rng.standard_normal(T)                                   # 7 ±inf and NaN
    c[rng.random(T) < 0.004] = np.inf
    c[rng.random(T) < 0.004] = -np.inf
    c[rng.random(T) < 0.05] = np.nan
    cols.append(c)
    cols.append((rw() - 100.0) * 1e-100)                         # 8 tiny scale
    cols.append((rw() - 100.0) * 1e100)                          # 9 huge scale
    x = np.ascontiguousarray(np.column_stack(cols))
    y = 0.5 * np.nan_to_num(x - np.nanmean(np.where(np.isfinite(x), x, np.nan), 0), nan=0.0,
                            posinf=0.0, neginf=0.0)
    y = y + rng.standard_normal(x.shape) * np.nanstd(np.where(np.isfinite(x), x, np.nan), 0)
    y[:, 5] = np.where((np.arange(T) // 100) % 2 == 0, 0.0, y[:, 5])   # y constant 0 runs
    y[rng.random(x.shape) < 0.03] = np.nan
    return x, np.ascontiguousarray(y)


def _pair_reference(x, y, window, mp, name):
    """Exact two-pass references for var / std (y ignored), cov, corr on arbitrary data."""
    pad = np.full((window - 1, x.shape[1]), np.nan)
    X = sliding_window_view(np.vstack([pad, x]), window, axis=0)
    Y = sliding_window_view(np.vstack([pad, y if name in ("ts_cov", "ts_corr") else x]), window,
                            axis=0)
    pair = ~np.isnan(X) & ~np.isnan(Y)
    npair = pair.sum(-1)
    pinf = (pair & (np.isinf(X) | np.isinf(Y))).any(-1)
    fin = pair & np.isfinite(X) & np.isfinite(Y)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        Xf = np.where(fin, X, np.nan)
        Yf = np.where(fin, Y, np.nan)
        n = fin.sum(-1).astype(float)
        dx = Xf - np.nanmean(Xf, -1)[..., None]
        dy = Yf - np.nanmean(Yf, -1)[..., None]
        ax = np.nansum(dx, -1)
        ay = np.nansum(dy, -1)
        sxx = np.nansum(dx * dx, -1) - ax * ax / n
        syy = np.nansum(dy * dy, -1) - ay * ay / n
        sxy = np.nansum(dx * dy, -1) - ax * ay / n
        cx = np.nanmax(Xf, -1) == np.nanmin(Xf, -1)
        cy = np.nanmax(Yf, -1) == np.nanmin(Yf, -1)
        if name in ("ts_var", "ts_std"):
            r = np.where(cx, 0.0, sxx / (n - 1))
            r = np.sqrt(r) if name == "ts_std" else r
            atol = 0.0
        elif name == "ts_cov":
            r = np.where(cx | cy, 0.0, sxy / (n - 1))
            atol = np.nan_to_num(1e-12 * np.sqrt(np.abs(sxx)) * np.sqrt(np.abs(syy)) / (n - 1))
        else:
            r = np.clip(sxy / (np.sqrt(sxx) * np.sqrt(syy)), -1.0, 1.0)
            r = np.where(cx | cy | (sxx <= 0) | (syy <= 0), np.nan, r)
            atol = 1e-12
        r = np.where((n < 2) | pinf | (npair < mp), np.nan, r)
    return r, atol


@pytest.mark.parametrize("window", [7, 20, 61])
@pytest.mark.parametrize("name", ["ts_var", "ts_std", "ts_cov", "ts_corr"])
def test_running_moments_long_series(name, window):
    """Several re-anchoring periods of spiky, shifting, constant, inf and extreme-scale data:
    within 1e-9 of an exact two-pass computation (1e-12 of the scale for cov / corr near 0)."""
    x, y = _long_panel()
    for mp in (window, 1):
        out = _run(name, x, y, window, mp)
        ref, atol = _pair_reference(x, y, window, mp, name)
        _assert_close(out, ref, rtol=1e-9, atol=atol)


def test_running_moments_exact_on_constant_windows_long_series():
    """Constant windows anywhere in a long series (after spikes and drift): var exactly 0, cov
    exactly 0, corr NaN."""
    x, y = _long_panel()
    window = 20
    pad = np.full((window - 1, x.shape[1]), np.nan)
    W = sliding_window_view(np.vstack([pad, x]), window, axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        const = (np.nanmax(W, -1) == np.nanmin(W, -1)) & (np.isfinite(W).sum(-1) == window)
    assert const[:, 5].sum() > 100
    var = _run("ts_var", x, y, window, window)
    assert (var[const] == 0.0).all()
    cov = _run("ts_cov", x, y, window, 2)
    corr = _run("ts_corr", x, y, window, 2)
    assert (cov[const & ~np.isnan(cov)] == 0.0).all()
    assert np.isnan(corr[const]).all()


@pytest.mark.parametrize("name", ["ts_var", "ts_std", "ts_cov", "ts_corr"])
def test_running_moments_chunk_invariance_long(name):
    """Blocks starting anywhere (re-anchoring at other rows) agree with the full series."""
    x, y = _long_panel(T=900)
    window = 20
    full = _run(name, x, y, window, window)
    ref, atol = _pair_reference(x, y, window, window, name)
    for t0 in (137, 401, 650):
        lo = t0 - (window - 1)
        part = _run(name, x[lo:].copy(), y[lo:].copy(), window, window)
        a = atol[t0:] if np.ndim(atol) else atol
        _assert_close(part[window - 1:], full[t0:], rtol=1e-9, atol=2 * a)


def test_corr_scale_invariant_extreme_scales():
    """corr of data at 1e-100 or 1e100 scale (the product of the variances leaves the float64
    range) equals corr at unit scale."""
    x, y = _long_panel(T=600)
    x, y = x[:, :2].copy(), y[:, :2].copy()
    base = _run("ts_corr", x, y, 20, 20)
    for s in (1e-100, 1e100):
        _assert_close(_run("ts_corr", x * s, y * s, 20, 20), base, rtol=1e-9, atol=1e-12)
