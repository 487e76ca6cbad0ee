"""Validate the reference implementations (test oracles) in ``factors/references.py``.

Three kinds of checks:

* agreement with pandas on small, well-conditioned panels that contain scattered NaNs, gaps
  (runs of NaN), constant runs, integer ties and leading NaNs, for windows 1/2/3/5/20 and one
  longer than the series, with ``min_periods`` equal to the window and 1;
* hand-computed tiny cases for what pandas does not cover directly (argmin/argmax, decay_linear,
  prod, rank ties, inf handling, exact zeros, element-wise NaN rules);
* the exactness claim: on ``1e6 + 1e-3 * noise`` the reference variance (and friends) agree with
  exact rational arithmetic (``fractions.Fraction``) to 1e-12 relative.
"""
from __future__ import annotations

import importlib
import importlib.util
import math
import pathlib
import sys
from fractions import Fraction

import numpy as np
import pytest

pd = pytest.importorskip("pandas")


def _load_references():
    try:
        return importlib.import_module("factorflow.factors.references")
    except ImportError:
        pass
    path = pathlib.Path(__file__).resolve().parents[1] / "factors" / "references.py"
    spec = importlib.util.spec_from_file_location("_factorflow_references", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


R = _load_references()
nan = np.nan
inf = np.inf

T = 40
WINDOWS = [1, 2, 3, 5, 20, 50]  # 50 > T


def make_panel(seed: int, t: int = T) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cols = []
    cols.append(rng.normal(size=t))                                  # clean
    b = rng.normal(size=t)
    b[rng.random(t) < 0.2] = nan                                     # scattered NaN
    cols.append(b)
    c = rng.normal(size=t)
    c[5:12] = nan                                                    # a long gap
    c[18:26] = 0.1                                                   # a constant run
    c[30:32] = nan
    cols.append(c)
    d = np.round(rng.normal(size=t) * 2.0)                           # integer values: ties
    d[:4] = nan                                                      # leading NaNs
    d[25] = nan
    cols.append(d)
    e = rng.normal(size=t) * 10 + 3
    e[: t // 2] = nan                                                # first half missing
    cols.append(e)
    return np.column_stack(cols)


PANELS = [make_panel(s) for s in (0, 1)]


def close(actual, expected, rtol=1e-9, atol=1e-10):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected, dtype=np.float64),
                               rtol=rtol, atol=atol, equal_nan=True)


def same(actual, expected):
    """Bit-for-bit equality (NaN positions included)."""
    np.testing.assert_array_equal(np.asarray(actual), np.asarray(expected, dtype=np.float64))


# ---------------------------------------------------------------------------------------------
# rolling operators against pandas
# ---------------------------------------------------------------------------------------------
ROLLING = {
    "ts_sum": ("sum", 1e-12),
    "ts_mean": ("mean", 1e-12),
    "ts_var": ("var", 1e-11),
    "ts_std": ("std", 1e-11),
    "ts_min": ("min", 0.0),
    "ts_max": ("max", 0.0),
    "ts_median": ("median", 0.0),
    "ts_skew": ("skew", 1e-9),
    "ts_kurt": ("kurt", 1e-8),
}


@pytest.mark.parametrize("name", sorted(ROLLING))
@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("mp_kind", ["window", "one"])
def test_rolling_vs_pandas(name, window, mp_kind):
    method, tol = ROLLING[name]
    mp = window if mp_kind == "window" else 1
    for x in PANELS:
        got = getattr(R, name)(x, window, mp)
        exp = getattr(pd.DataFrame(x).rolling(window, min_periods=mp), method)().to_numpy()
        assert got.dtype == np.float64 and got.shape == x.shape
        close(got, exp, rtol=tol, atol=tol)


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("mp_kind", ["window", "one"])
def test_rank_vs_pandas(window, mp_kind):
    mp = window if mp_kind == "window" else 1
    for x in PANELS:
        got = R.ts_rank(x, window, mp)
        exp = pd.DataFrame(x).rolling(window, min_periods=mp).rank(pct=True).to_numpy()
        close(got, exp, rtol=1e-14, atol=1e-14)


def _pandas_apply(x, window, mp, fn):
    def safe(a):
        a = np.asarray(a, dtype=np.float64)
        return fn(a) if np.any(~np.isnan(a)) else nan
    return pd.DataFrame(x).rolling(window, min_periods=mp).apply(safe, raw=True).to_numpy()


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("mp_kind", ["window", "one"])
def test_argminmax_prod_vs_pandas_apply(window, mp_kind):
    # np.nanargmin / nanargmax return the first (= oldest) occurrence; pandas hands apply the
    # truncated window at the start of the series, so the position counts from row 0 there.
    mp = window if mp_kind == "window" else 1
    for x in PANELS:
        close(R.ts_argmin(x, window, mp),
              _pandas_apply(x, window, mp, lambda a: np.nanargmin(a) + 1.0), rtol=0, atol=0)
        close(R.ts_argmax(x, window, mp),
              _pandas_apply(x, window, mp, lambda a: np.nanargmax(a) + 1.0), rtol=0, atol=0)
        close(R.ts_prod(x, window, mp), _pandas_apply(x, window, mp, np.nanprod),
              rtol=1e-12, atol=0)


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("mp_kind", ["window", "one"])
def test_decay_linear_vs_pandas_apply(window, mp_kind):
    mp = window if mp_kind == "window" else 1

    def wmean(a):
        w = np.arange(window - len(a) + 1, window + 1, dtype=np.float64)  # newest weighs window
        ok = ~np.isnan(a)
        return np.sum(w[ok] * a[ok]) / np.sum(w[ok])

    for x in PANELS:
        close(R.decay_linear(x, window, mp), _pandas_apply(x, window, mp, wmean), rtol=1e-12,
              atol=1e-13)


def _corr_inputs(seed):
    rng = np.random.default_rng(100 + seed)
    x = make_panel(seed)
    y = 0.6 * np.nan_to_num(x, nan=0.0) + rng.normal(size=x.shape)
    y[rng.random(x.shape) < 0.15] = nan  # NaNs in other places than x: pairwise completeness
    return x, y


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("mp_kind", ["window", "one"])
def test_cov_corr_vs_pandas(window, mp_kind):
    mp = window if mp_kind == "window" else 1
    for seed in (0, 1):
        x, y = _corr_inputs(seed)
        got_cov = R.ts_cov(x, y, window, mp)
        got_corr = R.ts_corr(x, y, window, mp)
        for j in range(x.shape[1]):
            sx, sy = pd.Series(x[:, j]), pd.Series(y[:, j])
            exp_cov = sx.rolling(window, min_periods=mp).cov(sy).to_numpy()
            close(got_cov[:, j], exp_cov, rtol=1e-9, atol=1e-12)
            exp_corr = sx.rolling(window, min_periods=mp).corr(sy).to_numpy()
            # pandas' one-pass corr on an x-constant window (column 2 has a constant run) gives
            # garbage/inf rather than NaN; the contract is NaN there, checked separately below.
            xs_const = ts_all_equal_pairs(x[:, j], y[:, j], window)
            exp_corr = np.where(xs_const, nan, exp_corr)
            close(got_corr[:, j], np.clip(exp_corr, -1, 1), rtol=1e-8, atol=1e-9)


def ts_all_equal_pairs(xc, yc, window):
    out = np.zeros(len(xc), dtype=bool)
    for t in range(len(xc)):
        s = max(0, t - window + 1)
        ok = ~np.isnan(xc[s:t + 1]) & ~np.isnan(yc[s:t + 1])
        a, b = xc[s:t + 1][ok], yc[s:t + 1][ok]
        out[t] = len(a) >= 1 and (np.all(a == a[0]) or np.all(b == b[0]))
    return out


# ---------------------------------------------------------------------------------------------
# shift / recursive / cross-sectional against pandas
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("periods", [0, 1, 3, 39, 50, -2])
def test_delay_delta_vs_pandas(periods):
    for x in PANELS:
        df = pd.DataFrame(x)
        same(R.delay(x, periods), df.shift(periods).to_numpy())
        same(R.delta(x, periods), (df - df.shift(periods)).to_numpy())


@pytest.mark.parametrize("span", [1, 2, 5, 10, 30.5])
def test_ema_vs_pandas(span):
    # the panels have gaps: span 3 (alpha 0.5) is special-cased by pandas 3 after gaps
    for x in PANELS:
        exp = pd.DataFrame(x).ewm(span=span, adjust=False).mean().to_numpy()
        close(R.ema(x, span), exp, rtol=1e-13, atol=1e-14)


def test_ema_span3_without_gaps_vs_pandas():
    x = np.random.default_rng(7).normal(size=(T, 3))
    x[:3, 1] = nan  # leading NaNs are not gaps
    exp = pd.DataFrame(x).ewm(span=3, adjust=False).mean().to_numpy()
    close(R.ema(x, 3), exp, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("span", [1, 2, 3, 5, 10, 30.5])
def test_ewma_vs_pandas(span):
    for x in PANELS:
        exp = pd.DataFrame(x).ewm(span=span, adjust=True).mean().to_numpy()
        close(R.ewma(x, span), exp, rtol=1e-13, atol=1e-14)


def test_cumsum_vs_pandas():
    for x in PANELS:
        close(R.cumsum(x), pd.DataFrame(x).cumsum().to_numpy(), rtol=1e-13, atol=1e-13)


def test_cs_vs_pandas():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(12, 7))
    x[rng.random(x.shape) < 0.25] = nan
    x[3] = nan                      # a row without valid values
    x[4] = [1, 1, 2, 2, nan, 3, 1]  # ties
    x[5] = [nan] * 6 + [4.0]        # a single valid value
    df = pd.DataFrame(x)
    close(R.cs_rank(x), df.rank(axis=1, pct=True).to_numpy(), rtol=1e-15, atol=0)
    close(R.cs_demean(x), df.sub(df.mean(axis=1), axis=0).to_numpy(), rtol=1e-12, atol=1e-14)
    close(R.cs_zscore(x), df.sub(df.mean(axis=1), axis=0).div(df.std(axis=1), axis=0).to_numpy(),
          rtol=1e-12, atol=1e-14)
    for scale in (1.0, 2.5):
        exp = df.mul(scale).div(df.abs().sum(axis=1), axis=0).to_numpy().copy()
        exp[3] = nan
        close(R.cs_scale(x, scale), exp, rtol=1e-13, atol=0)
    close(R.cs_scale(x), R.cs_scale(x, 1.0), rtol=0, atol=0)
    # the absolute values of a scaled row sum to the scale
    s = np.nansum(np.abs(R.cs_scale(x, 3.0)), axis=1)
    close(s[[0, 1, 2, 4, 5]], np.full(5, 3.0), rtol=1e-14)


def test_cs_constant_row():
    x = np.array([[0.1, 0.1, 0.1, nan], [nan, nan, nan, nan], [-1.0, 0.0, 1.0, nan]])
    same(R.cs_rank(x), [[2 / 3, 2 / 3, 2 / 3, nan], [nan] * 4, [1 / 3, 2 / 3, 1.0, nan]])
    same(R.cs_demean(x), [[0.0, 0.0, 0.0, nan], [nan] * 4, [-1.0, 0.0, 1.0, nan]])
    same(R.cs_zscore(x), [[nan, nan, nan, nan], [nan] * 4, [-1.0, 0.0, 1.0, nan]])
    same(R.cs_scale(np.array([[0.0, 0.0, nan], [1.0, -3.0, nan]])), [[nan, nan, nan],
                                                                     [0.25, -0.75, nan]])


# ---------------------------------------------------------------------------------------------
# hand-computed cases
# ---------------------------------------------------------------------------------------------
def col(*v):
    return np.array(v, dtype=np.float64).reshape(-1, 1)


def test_argmin_argmax_hand():
    x = col(3, 1, 2, 1, 5, nan, 0)
    same(R.ts_argmin(x, 3, 1), col(1, 2, 2, 1, 2, 1, 3))
    same(R.ts_argmax(x, 3, 1), col(1, 1, 1, 2, 3, 2, 1))
    same(R.ts_argmin(x, 3), col(nan, nan, 2, 1, 2, nan, nan))    # min_periods = window
    same(R.ts_argmin(x, 3, 2), col(nan, 2, 2, 1, 2, 1, 3))
    # ties go to the oldest row
    y = col(2, 2, 1, 1, 2, 2)
    same(R.ts_argmax(y, 3, 1), col(1, 1, 1, 1, 3, 2))
    same(R.ts_argmin(y, 3, 1), col(1, 1, 3, 2, 1, 1))
    # truncated window at the start: positions count from row 0
    same(R.ts_argmin(x, 5, 1)[:3], col(1, 2, 2))
    same(R.ts_argmax(x, 10, 1), col(1, 1, 1, 1, 5, 5, 5))
    # all-NaN window
    same(R.ts_argmin(col(nan, nan, 1), 2, 1), col(nan, nan, 2))
    # inf is an ordinary value
    same(R.ts_argmax(col(1, inf, 2), 3, 1), col(1, 2, 2))
    same(R.ts_argmin(col(1, -inf, -inf), 3, 1), col(1, 2, 2))


def test_decay_linear_hand():
    same(R.decay_linear(col(1, 2, 3, 4), 3), col(nan, nan, 14 / 6, 20 / 6))
    same(R.decay_linear(col(1, nan, 3, 4), 3, 2), col(nan, nan, 10 / 4, 18 / 5))
    # truncated window: the newest row always weighs `window`, row 0 weighs window - t
    same(R.decay_linear(col(1, 2, 3), 3, 1), col(1, 8 / 5, 14 / 6))
    same(R.decay_linear(col(1, nan), 3, 1), col(1, 1))
    same(R.decay_linear(col(5, 6, 7), 1), col(5, 6, 7))
    same(R.decay_linear(col(1, inf, 2, 3, 4), 2), col(nan, inf, inf, 8 / 3, 11 / 3))


def test_prod_hand():
    x = col(1, 2, nan, 3, -0.5)
    same(R.ts_prod(x, 3, 1), col(1, 2, 2, 6, -1.5))
    same(R.ts_prod(x, 3, 2), col(nan, 2, 2, 6, -1.5))
    same(R.ts_prod(x, 3), col(nan, nan, nan, nan, nan))
    same(R.ts_prod(col(0, inf, 2), 2, 1), col(0, nan, inf))


def test_rank_median_hand():
    same(R.ts_rank(col(1, 2, 2), 3), col(nan, nan, 2.5 / 3))
    same(R.ts_rank(col(2, 2, 2), 3, 1), col(1.0, 0.75, 2 / 3))
    same(R.ts_rank(col(3, 1, nan, 2), 4, 1), col(1.0, 0.5, nan, 2 / 3))
    same(R.ts_rank(col(1, -inf, inf), 3, 1), col(1.0, 0.5, 1.0))
    same(R.ts_median(col(1, nan, 4, 2), 4, 1), col(1, 1, 2.5, 2))
    same(R.ts_median(col(-inf, inf, 1), 2, 1), col(-inf, nan, inf))


def test_min_periods_zero():
    x = col(nan, nan, 1)
    same(R.ts_sum(x, 2, 0), col(0, 0, 1))
    same(R.ts_mean(x, 2, 0), col(nan, nan, 1))
    same(R.ts_prod(x, 2, 0), col(1, 1, 1))


def test_inf_handling():
    same(R.ts_sum(col(1, inf, 2, 3, 4), 2), col(nan, inf, inf, 5, 7))
    same(R.ts_sum(col(1, inf, -inf, 2, 3), 2, 1), col(1, inf, nan, -inf, 5))
    same(R.ts_sum(col(1, inf, -inf, 2, 3), 3), col(nan, nan, nan, nan, -inf))
    same(R.ts_mean(col(1, inf, 2, 3, 4), 2), col(nan, inf, inf, 2.5, 3.5))
    same(R.ts_var(col(1, inf, 2, 3, 4), 2), col(nan, nan, nan, 0.5, 0.5))
    same(R.ts_std(col(1, inf, inf, 3, 3), 2), col(nan, nan, nan, nan, 0))
    same(R.ts_skew(col(1, inf, 2, 3, 5, 6), 3), col(nan, nan, nan, nan, R.ts_skew(
        col(2, 3, 5), 3)[2, 0], R.ts_skew(col(3, 5, 6), 3)[2, 0]))
    assert np.isnan(R.ts_kurt(col(1, 2, inf, 3, 5), 4)[3:]).all()
    same(R.ts_min(col(1, -inf, 2, 3), 2), col(nan, -inf, -inf, 2))
    same(R.ts_max(col(1, inf, 2, 3), 2), col(nan, inf, inf, 3))
    same(R.ts_cov(col(1, 2, 3, 4), col(1, inf, 3, 5), 2), col(nan, nan, nan, 1.0))
    same(R.ts_corr(col(1, 2, 3, 4), col(1, inf, 3, 5), 2), col(nan, nan, nan, 1.0))
    same(R.cumsum(col(1, inf, nan, 2)), col(1, inf, nan, inf))
    same(R.cumsum(col(1, inf, -inf, 2)), col(1, inf, nan, nan))


def test_constant_windows_exact():
    for c in (0.1, 1e6 + 0.1, -3.7e-5, 1e300):
        x = col(*([c] * 8)) + np.zeros((1, 2))
        x[2, 1] = nan
        for w in (2, 3, 5, 8):
            v = R.ts_var(x, w, 2)[w:]
            assert np.all((v == 0.0) | np.isnan(v)) and np.all(v[:, 0] == 0.0), (c, w, v)
            s = R.ts_std(x, w, 2)[w:]
            assert np.all((s == 0.0) | np.isnan(s)) and np.all(s[:, 0] == 0.0)
            assert np.isnan(R.ts_skew(x, w, 1)).all()
            assert np.isnan(R.ts_kurt(x, w, 1)).all()
            assert np.isnan(R.ts_corr(x, np.arange(16.0).reshape(8, 2), w, 1)).all()
            cv = R.ts_cov(x, np.arange(16.0).reshape(8, 2), w, 2)[w:]
            assert np.all((cv == 0.0) | np.isnan(cv)) and np.all(cv[:, 0] == 0.0)
            assert np.all(R.ts_mean(x, w, 1)[:, 0] == c)
        same(R.ewma(x, 5)[:, 0], np.full(8, c))
        same(R.ema(x, 5)[:, 0], np.full(8, c))
    x = col(0.1, nan, nan, 0.1, 0.1, nan, 0.1)
    same(R.ewma(x, 4), col(*([0.1] * 7)))
    same(R.ema(x, 4), col(*([0.1] * 7)))


def test_var_skew_kurt_min_counts():
    x = col(1, 2, 4, 8, 16)
    assert np.isnan(R.ts_var(x, 5, 1)[0, 0]) and R.ts_var(x, 5, 1)[1, 0] == 0.5
    assert np.isnan(R.ts_skew(x, 5, 1)[:2]).all() and np.isfinite(R.ts_skew(x, 5, 1)[2:]).all()
    assert np.isnan(R.ts_kurt(x, 5, 1)[:3]).all() and np.isfinite(R.ts_kurt(x, 5, 1)[3:]).all()
    # skew of 1, 2, 4: m2 = 14/9, m3 = 20/27 -> sqrt(6) * m3 / m2**1.5
    close(R.ts_skew(x, 3)[2, 0], math.sqrt(6) * (20 / 27) / (14 / 9) ** 1.5, rtol=1e-15)


def test_corr_clipped():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(60, 3)) * 1e3 + 7
    y = 3 * x - 2
    r = R.ts_corr(x, y, 4)
    assert np.nanmax(r) <= 1.0
    close(r[3:], np.ones((57, 3)), rtol=1e-14)
    r = R.ts_corr(x, -y, 2)
    close(r[1:], -np.ones((59, 3)), rtol=1e-15, atol=0)


def test_delay_delta_hand():
    x = col(1, 2, nan, 4)
    same(R.delay(x, 1), col(nan, 1, 2, nan))
    same(R.delta(x, 1), col(nan, 1, nan, nan))
    same(R.delay(x, 0), x)
    same(R.delay(x, -1), col(2, nan, 4, nan))


def test_ema_ewma_hand():
    # span 3: alpha 0.5; gap of g = 3 rows: w = 0.125 -> (0.125 * 1 + 0.5 * 4) / 0.625 = 3.4
    same(R.ema(col(nan, 1, nan, nan, 4), 3), col(nan, 1, 1, 1, 3.4))
    # ewma span 3: weights on x_t, x_{t-1}, ... are 1, 0.5, 0.25 (decayed over NaN rows too)
    close(R.ewma(col(1, 2, nan, 4), 3), col(1, (0.5 * 1 + 2) / 1.5, (0.5 * 1 + 2) / 1.5,
                                            (0.125 * 1 + 0.25 * 2 + 4) / (0.125 + 0.25 + 1)),
          rtol=1e-15)
    same(R.ema(col(1, 2), 1), col(1, 2))  # alpha 1: no memory


def test_cumsum_hand():
    same(R.cumsum(col(nan, 1, nan, 2, 0.5)), col(nan, 1, nan, 3, 3.5))
    # correctly rounded prefix sums
    same(R.cumsum(col(1e16, 1, 1, -1e16)), col(1e16, 1e16, 1e16 + 2, 2))


def test_elementwise():
    a = np.array([[1.0, -2.0, nan, 0.0], [inf, -inf, 4.0, 0.5]])
    b = np.array([[1.0, 3.0, 1.0, nan], [inf, 0.0, 0.0, 2.0]])
    same(R.lt(a, b), [[0, 1, nan, nan], [0, 1, 0, 1]])
    same(R.le(a, b), [[1, 1, nan, nan], [1, 1, 0, 1]])
    same(R.gt(a, b), [[0, 0, nan, nan], [0, 0, 1, 0]])
    same(R.ge(a, b), [[1, 0, nan, nan], [1, 0, 1, 0]])
    same(R.eq(a, b), [[1, 0, nan, nan], [1, 0, 0, 0]])
    same(R.ne(a, b), [[0, 1, nan, nan], [0, 1, 1, 1]])
    same(R.and_(a, b), [[1, 1, nan, nan], [1, 0, 0, 1]])
    same(R.or_(a, b), [[1, 1, nan, nan], [1, 1, 1, 1]])
    same(R.not_(a), [[0, 0, nan, 1], [0, 0, 0, 0]])
    same(R.where(a, b, -b), [[1, 3, nan, nan], [inf, 0, 0, 2]])
    same(R.where(np.array([[0.0, nan]]), 1.0, 2.0), [[2.0, nan]])
    same(R.where(1.0, a, 0.0), a)
    same(R.div(a, b), [[1, -2 / 3, nan, nan], [nan, -inf, inf, 0.25]])
    same(R.div(1.0, np.array([0.0, -0.0])), [inf, -inf])
    same(R.add(a, 1), a + 1)
    with np.errstate(invalid="ignore"):
        same(R.sub(a, b), a - b)
    same(R.mul(a, b), [[1, -6, nan, nan], [inf, nan, 0, 1]])
    same(R.neg(a), -a)
    same(R.min(a, b), [[1, -2, nan, nan], [inf, -inf, 0, 0.5]])
    same(R.max(a, b), [[1, 3, nan, nan], [inf, 0, 4, 2]])
    same(R.abs(a), np.abs(a))
    same(R.sign(a), [[1, -1, nan, 0], [1, -1, 1, 1]])
    same(R.log(np.array([1.0, 0.0, -1.0])), [0, -inf, nan])
    same(R.sqrt(np.array([4.0, -1.0])), [2, nan])
    same(R.exp(np.array([0.0, 1000.0])), [1, inf])
    same(R.power(np.array([2.0, -8.0, 0.0]), 0.5), [math.sqrt(2), nan, 0])
    same(R.power(np.array([-2.0]), 2), [4])
    same(R.signed_power(np.array([-4.0, 9.0, 0.0, nan]), 0.5), [-2, 3, 0, nan])
    assert R.add(1, 2) == 3.0 and R.add(1, 2).dtype == np.float64
    same(R.lt(np.array([1.0, 2.0]), 1.5), [1, 0])


def test_shapes_dtypes_and_no_mutation():
    x32 = PANELS[0].astype(np.float32)
    keep = x32.copy()
    for fn in (R.ts_mean, R.ts_var, R.ts_rank, R.decay_linear):
        out = fn(x32, 3, 1)
        assert out.dtype == np.float64 and out.shape == x32.shape
        close(out, fn(x32.astype(np.float64), 3, 1), rtol=0, atol=0)
    for fn in (R.cumsum, R.cs_rank, R.cs_zscore, R.cs_scale, R.cs_demean):
        assert fn(x32).dtype == np.float64
    same(x32, keep)
    one_d = PANELS[0][:, 1]
    assert R.ts_sum(one_d, 3).shape == one_d.shape
    same(R.ts_sum(one_d, 3, 1), R.ts_sum(one_d[:, None], 3, 1)[:, 0])
    out = R.ts_sum(PANELS[0], 1, 1)
    assert out is not PANELS[0]
    same(out, PANELS[0])


# ---------------------------------------------------------------------------------------------
# exactness against rational arithmetic
# ---------------------------------------------------------------------------------------------
def _exact_moments(vals):
    fr = [Fraction(float(v)) for v in vals]
    n = len(fr)
    m = sum(fr) / n
    d = [v - m for v in fr]
    return n, m, sum(e * e for e in d), sum(e ** 3 for e in d), sum(e ** 4 for e in d), d


@pytest.fixture(scope="module")
def hard_data():
    rng = np.random.default_rng(2024)
    return 1e6 + 1e-3 * rng.normal(size=(30, 2)), 1e6 + 1e-3 * rng.normal(size=(30, 2))


@pytest.mark.parametrize("window", [3, 5, 12, 30])
def test_exact_var_vs_fractions(hard_data, window):
    x, y = hard_data
    var = R.ts_var(x, window)
    std = R.ts_std(x, window)
    mean = R.ts_mean(x, window)
    skew = R.ts_skew(x, window)
    kurt = R.ts_kurt(x, window)
    cov = R.ts_cov(x, y, window)
    corr = R.ts_corr(x, y, window)
    for t in range(window - 1, x.shape[0], 3):
        for j in range(x.shape[1]):
            n, m, s2, s3, s4, d = _exact_moments(x[t - window + 1:t + 1, j])
            exact_var = float(s2 / (n - 1))
            assert abs(var[t, j] - exact_var) <= 1e-12 * exact_var
            assert abs(std[t, j] - math.sqrt(exact_var)) <= 1e-12 * math.sqrt(exact_var)
            assert abs(mean[t, j] - float(m)) <= 1e-15 * float(m)
            g1 = n * math.sqrt(n - 1) / (n - 2) * float(s3 / s2) / math.sqrt(float(s2))
            assert abs(skew[t, j] - g1) <= 1e-10 * max(1.0, abs(g1))
            if n >= 4:
                k = (n - 2) * (n - 3)
                g2 = float(Fraction((n + 1) * n * (n - 1), k) * s4 / (s2 * s2)
                           - Fraction(3 * (n - 1) ** 2, k))
                assert abs(kurt[t, j] - g2) <= 1e-10 * max(1.0, abs(g2))
            _, _, t2, _, _, dy = _exact_moments(y[t - window + 1:t + 1, j])
            sxy = sum(a * b for a, b in zip(d, dy))
            exact_cov = float(sxy / (n - 1))
            assert abs(cov[t, j] - exact_cov) <= 1e-12 * abs(exact_cov) + 1e-24
            exact_corr = float(sxy / s2) * math.sqrt(float(s2 / t2))
            assert abs(corr[t, j] - exact_corr) <= 1e-12
