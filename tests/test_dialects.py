"""The ``qlib`` and ``wq`` dialects against independent pandas references.

Each dialect operator is computed through ``ff.factor(..., dialect=...)`` and ``ff.compute`` and
compared with a pandas (or NumPy) implementation of the operator's published definition -- Qlib
0.9's ``qlib/data/ops.py`` for ``qlib``, the paper's Appendix A.1 for ``wq`` -- written here from
those definitions, not from factorflow's registry. Data: the patterned panel (NaNs, gaps,
constant runs, 1e6 offsets) plus group codes. pandas' rolling moments (std, var, skew, cov,
corr) drift by ~1e-8 relative on the 1e6-offset columns (DESIGN.md, "Testing"), so for those the
reference is the exact two-pass oracle of ``factorflow.factors.references`` with the dialect's
``min_periods``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import factorflow as ff
from factorflow.factors import references as R

from patterns import assert_close, make_patterned

T, N = 90, 9
X = make_patterned(T, N, seed=10)
Y = make_patterned(T, N, seed=11) * 0.5 + X * 0.5
POS = make_patterned(T, N, seed=12, positive=True)
GRP = np.random.default_rng(13).integers(0, 3, (T, N)).astype(float)
GRP[4, :3] = np.nan
PANEL = ff.Panel.from_numpy({"x": X, "y": Y, "pos": POS, "industry": GRP, "close": POS,
                             "volume": POS[::-1].copy(), "vwap": POS * 1.01})
CHUNKS = (None, {"time": 13, "symbol": 4})


def _df(a):
    return pd.DataFrame(a)


def _compute(text, dialect, chunks=None):
    return ff.compute({"f": ff.factor(text, dialect=dialect)}, PANEL, chunks=chunks).to_numpy("f")


def _check(text, dialect, want, rtol=1e-9):
    want = np.asarray(want, dtype=np.float64)
    for chunks in CHUNKS:
        assert_close(_compute(text, dialect, chunks), want, rtol=rtol, what=f"{dialect}: {text} chunks={chunks}")


# ------------------------------------------------------------------------------------------------
# qlib: pandas transcriptions of qlib/data/ops.py (rolling with min_periods=1, per column)
# ------------------------------------------------------------------------------------------------
def _roll(a, n):
    return _df(a).rolling(n, min_periods=1)


def _apply(a, n, fn):
    return _roll(a, n).apply(fn, raw=True).to_numpy()


def _qlib_corr(a, b, n):
    res = R.ts_corr(a, b, n, 1)
    flat = np.isclose(_roll(a, n).std().to_numpy(), 0, atol=2e-5) | np.isclose(_roll(b, n).std().to_numpy(), 0,
                                                                                atol=2e-5)
    res[flat] = np.nan
    return res


def _ols(x):
    """(slope, rsquare, resid) of the valid values on positions 1..len (Qlib's Cython rolling_*)."""
    p = np.arange(1, len(x) + 1, dtype=float)
    m = ~np.isnan(x)
    if m.sum() < 2:
        return np.nan, np.nan, np.nan
    pm, xm = p[m], x[m] - x[m][-1]  # shifted by a window value: same slope/R^2/residual, no 1e6 cancellation
    sxx = ((pm - pm.mean()) ** 2).sum()
    sxy = ((pm - pm.mean()) * (xm - xm.mean())).sum()
    syy = ((xm - xm.mean()) ** 2).sum()
    slope = sxy / sxx
    resid = (x[-1] - x[m][-1]) - (xm.mean() + slope * (p[-1] - pm.mean()))
    return slope, sxy * sxy / (sxx * syy) if syy > 0 else np.nan, resid


def _idx(a, n, fn):
    def f(w):
        v = np.where(np.isnan(w), np.nan, w)
        return fn(np.where(np.isnan(v), -np.inf if fn is np.nanargmax else np.inf, v)) + 1.0
    return _apply(a, n, f)


def _mad(w):
    v = w[~np.isnan(w)]
    v = v - v[-1]  # shift-invariant; avoids the 1e6-offset cancellation of a plain mean
    return np.mean(np.abs(v - v.mean()))


def _wma(w):
    wt = np.arange(1, len(w) + 1, dtype=float)
    m = ~np.isnan(w)
    return (wt[m] * w[m]).sum() / wt[m].sum()


def _gt(a, b):
    with np.errstate(invalid="ignore"):
        return (a > b).astype(float)  # NaN compares false, as in pandas


QLIB_CASES = [
    ("Mean($x, 5)", lambda: _roll(X, 5).mean()),
    ("Sum($x, 5)", lambda: _roll(X, 5).sum()),
    ("Std($x, 5)", lambda: R.ts_std(X, 5, 1)),
    ("Var($x, 5)", lambda: R.ts_var(X, 5, 1)),
    ("Skew($x, 6)", lambda: R.ts_skew(X, 6, 1)),
    ("Max($x, 5)", lambda: _roll(X, 5).max()),
    ("Min($x, 5)", lambda: _roll(X, 5).min()),
    ("Med($x, 6)", lambda: _roll(X, 6).median()),
    ("Quantile($x, 7, 0.8)", lambda: _roll(X, 7).quantile(0.8)),
    ("Count($x, 5)", lambda: _roll(X, 5).count()),
    ("Rank($x, 6)", lambda: _roll(X, 6).rank(pct=True)),
    ("Mad($x, 6)", lambda: _apply(X, 6, _mad)),
    ("IdxMax($x, 6)", lambda: _idx(X, 6, np.nanargmax)),
    ("IdxMin($x, 6)", lambda: _idx(X, 6, np.nanargmin)),
    ("WMA($x, 6)", lambda: _apply(X, 6, _wma)),
    ("Slope($x, 8)", lambda: _apply(X, 8, lambda w: _ols(w)[0])),
    ("Resi($x, 8)", lambda: _apply(X, 8, lambda w: _ols(w)[2])),
    ("Ref($x, 2)", lambda: _df(X).shift(2)),
    ("Ref($x, -3)", lambda: _df(X).shift(-3)),
    ("Delta($x, 2)", lambda: _df(X) - _df(X).shift(2)),
    ("EMA($x, 8)", lambda: _df(X).ewm(span=8, min_periods=1).mean()),
    ("EMA($x, 0.3)", lambda: _df(X).ewm(alpha=0.3, min_periods=1).mean()),
    ("Cov($x, $y, 6)", lambda: R.ts_cov(X, Y, 6, 1)),
    ("Corr($x, $y, 6)", lambda: _qlib_corr(X, Y, 6)),
    ("Greater($x, $y)", lambda: np.maximum(X, Y)),
    ("Less($x, $y)", lambda: np.minimum(X, Y)),
    ("Mean($x>Ref($x, 1), 5)", lambda: _roll(_gt(X, _df(X).shift(1).to_numpy()), 5).mean()),
    ("Gt($x, $y) + Le($x, $y)", lambda: _gt(X, Y) + (X <= Y).astype(float)),
    ("Ne($x, $y) + ($x == $y)", lambda: (X != Y).astype(float) + (X == Y).astype(float)),
    ("If($x > $y, $x, $y)", lambda: np.where(_gt(X, Y) != 0, X, Y)),
    ("If($x, 1, 2)", lambda: np.where(X, 1.0, 2.0)),  # np.where: NaN is true
    ("Abs($x) + Sign($x)", lambda: np.abs(X) + np.sign(X)),
    ("Log($pos+1)", lambda: np.log(POS + 1)),
    ("Power($pos, 0.5)", lambda: np.power(POS, 0.5)),
    ("($x > 0) & ($y > 0)", lambda: (_gt(X, 0).astype(bool) & _gt(Y, 0).astype(bool)).astype(float)),
    ("($x > 0) | ($y > 0)", lambda: (_gt(X, 0).astype(bool) | _gt(Y, 0).astype(bool)).astype(float)),
    ("-$x + 2 * $y ** 2", lambda: -X + 2 * Y**2),
]


@pytest.mark.parametrize("text,ref", QLIB_CASES, ids=[c[0] for c in QLIB_CASES])
def test_qlib_operator_matches_pandas(text, ref):
    want = ref()
    want = want.to_numpy() if isinstance(want, pd.DataFrame) else want
    _check(text, "qlib", want, rtol=1e-8)


def test_qlib_rsquare_is_masked_where_the_std_is_near_zero():
    flat = np.full((T, 2), 3.0)
    flat[:, 1] += np.arange(T) * 1e-7  # std ~ 1e-7 < 2e-5: Qlib masks it
    p = ff.Panel.from_numpy({"x": np.hstack([X[:, :2], flat])})
    got = ff.compute({"r": ff.factor("Rsquare($x, 8)", dialect="qlib")}, p).to_numpy("r")
    want = _apply(np.hstack([X[:, :2], flat]), 8, lambda w: _ols(w)[1]).copy()
    std = _roll(np.hstack([X[:, :2], flat]), 8).std().to_numpy()
    want[np.isclose(std, 0, atol=2e-5)] = np.nan
    assert np.isnan(got[:, 2:]).all()
    assert_close(got, want, what="Rsquare")


def test_qlib_compat_wma_reproduces_the_qlib_bug():
    def buggy(w):
        wt = np.arange(1, len(w) + 1, dtype=float)
        return np.nanmean(wt / wt.sum() * w)

    _check("WMA($x, 6)", "qlib-compat", _apply(X, 6, buggy))


def test_qlib_label_reads_ahead_across_chunks():
    f = ff.factor("Ref($close, -2)/Ref($close, -1) - 1", dialect="qlib")
    assert f.lookahead == 2 and f.lookback == 0
    c = _df(POS)
    _check("Ref($close, -2)/Ref($close, -1) - 1", "qlib", (c.shift(-2) / c.shift(-1) - 1).to_numpy())
    plan = ff.explain({"label": f}, PANEL, chunks={"time": 10, "symbol": 9})
    assert "lookahead: 2 rows" in str(plan)


# ------------------------------------------------------------------------------------------------
# wq: pandas transcriptions of the paper's Appendix A.1 (windows need d valid values)
# ------------------------------------------------------------------------------------------------
def _wroll(a, d):
    return _df(a).rolling(d)


def _cs_rank(a):
    return _df(a).rank(axis=1, pct=True).to_numpy()


def _decay(a, d):
    w = np.arange(1, d + 1, dtype=float)
    return _wroll(a, d).apply(lambda v: (w[~np.isnan(v)] * v[~np.isnan(v)]).sum() / w[~np.isnan(v)].sum(),
                              raw=True).to_numpy()


def _neutralize(a, g):
    out = np.full_like(a, np.nan)
    for t in range(a.shape[0]):
        s = pd.DataFrame({"x": a[t], "g": g[t]}).dropna()
        out[t, s.index] = (s.x - s.groupby("g").x.transform("mean")).to_numpy()
    return out


def _argext(a, d, fn):
    return _wroll(a, d).apply(lambda v: fn(np.where(np.isnan(v), -np.inf if fn is np.argmax else np.inf, v)) + 1.0,
                              raw=True).to_numpy()


def _wq_cmp(a, b, op):
    with np.errstate(invalid="ignore"):
        r = op(a, b).astype(float)
    r[np.isnan(a) | np.isnan(b)] = np.nan  # wq comparisons keep NaN (docs/dialects.md)
    return r


RET = POS / _df(POS).shift(1).to_numpy() - 1
WQ_CASES = [
    ("rank(x)", lambda: _cs_rank(X)),
    ("delay(x, 3)", lambda: _df(X).shift(3)),
    ("delta(x, 2.7)", lambda: _df(X) - _df(X).shift(2)),
    ("correlation(x, y, 6)", lambda: R.ts_corr(X, Y, 6)),
    ("covariance(x, y, 6.9)", lambda: R.ts_cov(X, Y, 6)),
    ("scale(x)", lambda: X / np.nansum(np.abs(X), axis=1, keepdims=True)),
    ("scale(x, 3)", lambda: 3 * X / np.nansum(np.abs(X), axis=1, keepdims=True)),
    ("signedpower(x, 2)", lambda: np.sign(X) * np.abs(X) ** 2),
    ("SignedPower(x, 0.5)", lambda: np.sign(X) * np.abs(X) ** 0.5),
    ("decay_linear(x, 5)", lambda: _decay(X, 5)),
    ("indneutralize(x, IndClass.industry)", lambda: _neutralize(X, GRP)),
    ("IndNeutralize(x, IndClass.industry)", lambda: _neutralize(X, GRP)),
    ("ts_min(x, 5)", lambda: _wroll(X, 5).min()),
    ("ts_max(x, 5.99)", lambda: _wroll(X, 5).max()),
    ("ts_argmax(x, 5)", lambda: _argext(X, 5, np.argmax)),
    ("Ts_ArgMin(x, 5)", lambda: _argext(X, 5, np.argmin)),
    ("Ts_Rank(x, 6)", lambda: _wroll(X, 6).rank(pct=True)),
    ("min(x, 4)", lambda: _wroll(X, 4).min()),
    ("max(x, 4.5)", lambda: _wroll(X, 4).max()),
    ("min(x, y)", lambda: np.minimum(X, Y)),
    ("max(x, y)", lambda: np.maximum(X, Y)),
    ("sum(x, 5)", lambda: _wroll(X, 5).sum()),
    ("product(pos, 4)", lambda: _wroll(POS, 4).apply(np.prod, raw=True)),
    ("stddev(x, 5)", lambda: R.ts_std(X, 5)),
    ("abs(x) + log(pos) + sign(x)", lambda: np.abs(X) + np.log(POS) + np.sign(X)),
    ("pos ^ 0.5", lambda: POS**0.5),
    ("(x < y) ? x : y", lambda: np.where(np.isnan(X) | np.isnan(Y), np.nan, np.where(X < Y, X, Y))),
    ("(x < y) * -1", lambda: _wq_cmp(X, Y, np.less) * -1),
    ("((x < 0) || (y > 0)) ? 1 : 2",
     lambda: np.where(np.isnan(X) | np.isnan(Y), np.nan, np.where((X < 0) | (Y > 0), 1.0, 2.0))),
    ("((x < 0) && (y == y)) ? 1 : 2", lambda: np.where(np.isnan(X) | np.isnan(Y), np.nan, np.where(X < 0, 1.0, 2.0))),
    ("returns", lambda: RET),
    ("adv5", lambda: _wroll(POS[::-1] * POS * 1.01, 5).mean()),
    ("close \u2212 vwap", lambda: POS - POS * 1.01),
]


@pytest.mark.parametrize("text,ref", WQ_CASES, ids=[c[0] for c in WQ_CASES])
def test_wq_operator_matches_pandas(text, ref):
    want = ref()
    want = want.to_numpy() if isinstance(want, pd.DataFrame) else want
    _check(text, "wq", want, rtol=1e-8)


# ------------------------------------------------------------------------------------------------
# dialect mix-ups and bad input
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,dialect,message,hint", [
    ("$close / open", "native", "unexpected character '$'", "dialect='qlib'"),
    ("Mean(close, 5)", "native", "unknown function 'Mean'", "dialect='qlib'"),
    ("rank(close)", "native", "unknown function 'rank'", "dialect='wq'"),
    ("(close > open) ? 1 : 0", "native", "unexpected character '?'", "dialect='wq'"),
    ("close ^ 2", "native", "unexpected character '^'", "dialect='wq'"),
    ("Mean(close, 5)", "qlib", "unknown name 'close'", "$close"),
    ("ts_mean($close, 5)", "qlib", "unknown function 'ts_mean'", "dialect='native'"),
    ("mean($close, 5)", "qlib", "unknown function 'mean'", "'Mean'"),
    ("Mean($close, 0)", "qlib", "N=0", "window"),
    ("Mean($close, 2.5)", "qlib", "positive integer", None),
    ("Skew($close, 2)", "qlib", "integer >= 3", "Qlib raises"),
    ("Ref($close, 0)", "qlib", "Ref(x, 0)", None),
    ("Mask($close, 'SH000300')", "qlib", None, None),
    ("$close", "wq", "unexpected character '$'", "dialect='qlib'"),
    ("ts_mean(close, 5)", "wq", "unknown function 'ts_mean'", "dialect='native'"),
    ("ts_rank(close, 0.5)", "wq", "must be >= 1", None),
    ("indneutralize(close, IndClass.country)", "wq", "unknown industry classification", "IndClass.sector"),
    ("correlation(close, volume)", "wq", "takes (x, y, d)", None),
])
def test_dialect_errors_are_clear(text, dialect, message, hint):
    with pytest.raises(ff.FactorError) as info:
        ff.factor(text, dialect=dialect)
    e = str(info.value)
    if message:
        assert message in e
    if hint:
        assert hint in e
    assert "^" in e  # a caret under the offending part


def test_unknown_dialect():
    with pytest.raises(ValueError, match="unknown dialect 'qlb'.*native, qlib, qlib-compat, wq"):
        ff.factor("close", dialect="qlb")


def test_the_paper_spellings_parse_to_the_same_nodes():
    a = ff.factor("(rank(Ts_ArgMax(SignedPower(((returns < 0) ? stddev(returns, 20) : close), 2.), 5)) -0.5)",
                  dialect="wq")
    b = ff.factor("cs_rank(ts_argmax(signed_power(where(close / delay(close, 1) - 1 < 0, "
                  "ts_std(close / delay(close, 1) - 1, 20), close), 2), 5)) - 0.5")
    assert a.equals(b)
    assert ff.factor("Mean($close, 5)/$close", dialect="qlib").equals(ff.factor("ts_mean(close, 5, 1) / close"))


def test_qlib_compat_idxmax_takes_the_first_nan_as_qlib_does():
    def qlib_argmax(w):  # qlib/data/ops.py IdxMax: rolling(N, min_periods=1).apply(lambda x: x.argmax() + 1)
        return float(np.argmax(w) + 1)

    def qlib_argmin(w):
        return float(np.argmin(w) + 1)

    _check("IdxMax($x, 6)", "qlib-compat", _apply(X, 6, qlib_argmax))
    _check("IdxMin($x, 6)", "qlib-compat", _apply(X, 6, qlib_argmin))
