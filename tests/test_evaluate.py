"""ff.evaluate against alphalens-reloaded (the reference) and SciPy, on the same factor and prices.

alphalens is called exactly as a researcher would (``get_clean_factor_and_forward_returns``
with ``filter_zscore=None``, then ``factor_information_coefficient``,
``mean_return_by_quantile``, ``quantile_turnover``, ``factor_rank_autocorrelation``); every
number must agree within 1e-9. The data has missing prices (forward-filled), late listings,
NaN factor values, heavy ties and a date whose quantile edges collide (alphalens drops it).
"""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pandas as pd
import polars as pl
import pytest
from scipy import stats

import factorflow as ff

al = pytest.importorskip("alphalens")

T, N = 90, 48
PERIODS = (1, 3, 5)
Q = 5
TOL = 1e-9


def make_data(seed=0):
    rng = np.random.default_rng(seed)
    ret = 0.02 * rng.standard_normal((T, N))
    close = 50 * np.exp(np.cumsum(ret, axis=0))
    close[rng.random((T, N)) < 0.05] = np.nan  # missing bars: forward-filled
    close[:12, 3] = np.nan  # listed late
    close[:, 7] = np.nan  # never traded
    signal = np.roll(ret, -1, axis=0) + 0.03 * rng.standard_normal((T, N))  # predicts the next return
    signal[rng.random((T, N)) < 0.08] = np.nan
    ties = np.round(rng.standard_normal((T, N)) * 1.5)  # few distinct values: many ties
    ties[20, :] = 1.0  # one value on a date: quantile edges collide, the date is dropped
    ties[21, :] = np.where(np.arange(N) < 40, 0.0, 1.0)  # collide too
    ties[30, :] = np.nan  # no values
    times = pd.bdate_range("2024-01-02", periods=T)
    symbols = np.array([f"S{j:02d}" for j in range(N)])
    return close, {"signal": signal, "ties": ties}, times, symbols


@pytest.fixture(scope="module")
def data():
    return make_data()


def alphalens_clean(close, fac, times, symbols, groups=None):
    idx = pd.MultiIndex.from_product([times, symbols], names=["date", "asset"])
    factor = pd.Series(fac.reshape(-1), index=idx).dropna()
    prices = pd.DataFrame(close, index=times, columns=symbols)
    with contextlib.redirect_stdout(io.StringIO()):
        return al.utils.get_clean_factor_and_forward_returns(
            factor, prices, groupby=groups, quantiles=Q, periods=PERIODS, filter_zscore=None, max_loss=1.0)


@pytest.fixture(scope="module")
def evaluation(data):
    close, facs, times, symbols = data
    panel = ff.Panel.from_numpy({"close": close, **facs}, times=times.values, symbols=symbols)
    # 13-row tasks: several chunks, so halos (forward returns, lags) and the price carry are exercised
    return ff.evaluate(["signal", "ties"], panel, periods=PERIODS, quantiles=Q, chunks=13)


def _ours_ic(ev, name):
    df = ev.ic.filter(pl.col("factor") == name).to_pandas()
    df["time"] = pd.to_datetime(df["time"])
    return df


@pytest.mark.parametrize("name", ["signal", "ties"])
def test_ic_and_rank_ic_match_alphalens_and_scipy(data, evaluation, name):
    close, facs, times, symbols = data
    fd = alphalens_clean(close, facs[name], times, symbols)
    ref = al.performance.factor_information_coefficient(fd).dropna(how="all")
    ours = _ours_ic(evaluation, name)
    cols = al.utils.get_forward_returns_columns(fd.columns)
    assert len(cols) == len(PERIODS)
    dates = fd.index.get_level_values("date").unique()
    for per, col in zip(PERIODS, cols):
        o = ours[ours.period == per].set_index("time")
        # same dates in the sample (dropped dates included)
        assert list(o.index) == list(dates), f"{name} {col}: sample dates differ"
        r = ref[col].reindex(o.index)
        np.testing.assert_allclose(o["rank_ic"].to_numpy(float), r.to_numpy(float), rtol=0, atol=TOL, equal_nan=True)
        # Pearson IC: SciPy on alphalens' clean sample
        pear = fd.groupby(level="date")[[col, "factor"]].apply(
            lambda g, c=col: stats.pearsonr(g[c], g["factor"])[0] if len(g) > 1 else np.nan)
        np.testing.assert_allclose(o["ic"].to_numpy(float), pear.reindex(o.index).to_numpy(float),
                                   rtol=0, atol=TOL, equal_nan=True)
    if name == "ties":  # the collided dates are gone from every statistic, as in alphalens
        assert times[20] not in set(o.index) and times[21] not in set(o.index) and times[30] not in set(o.index)


@pytest.mark.parametrize("name", ["signal", "ties"])
def test_quantile_returns_match_alphalens(data, evaluation, name):
    close, facs, times, symbols = data
    fd = alphalens_clean(close, facs[name], times, symbols)
    mean_ret, std_err = al.performance.mean_return_by_quantile(fd)
    cols = al.utils.get_forward_returns_columns(fd.columns)
    ours = evaluation.quantile_returns.filter(pl.col("factor") == name)
    for per, col in zip(PERIODS, cols):
        o = ours.filter(pl.col("period") == per).sort("quantile")
        assert o["quantile"].to_list() == list(mean_ret.index)
        np.testing.assert_allclose(o["mean_return"].to_numpy(), mean_ret[col].to_numpy(), rtol=0, atol=TOL)
        np.testing.assert_allclose(o["std_error"].to_numpy(), std_err[col].to_numpy(), rtol=0, atol=TOL)
        # per date, before averaging
        by_date, _ = al.performance.mean_return_by_quantile(fd, by_date=True)
        ob = evaluation.quantile_returns_by_date.filter((pl.col("factor") == name) & (pl.col("period") == per))
        ob = ob.to_pandas()
        ob["time"] = pd.to_datetime(ob["time"])
        ob = ob.set_index(["quantile", "time"])["mean_return"].sort_index()
        rb = by_date[col].sort_index()
        assert list(ob.index) == list(rb.index)
        np.testing.assert_allclose(ob.to_numpy(), rb.to_numpy(), rtol=0, atol=TOL)


@pytest.mark.parametrize("name", ["signal", "ties"])
def test_turnover_and_rank_autocorrelation_match_alphalens(data, evaluation, name):
    close, facs, times, symbols = data
    fd = alphalens_clean(close, facs[name], times, symbols)
    for lag in (1,) + PERIODS[1:]:
        ours = (evaluation.turnover if lag == 1 else evaluation.turnover_at(lag)).filter(pl.col("factor") == name)
        for q in range(1, Q + 1):
            ref = al.performance.quantile_turnover(fd["factor_quantile"], q, period=lag).dropna()
            o = ours.filter(pl.col("quantile") == q).to_pandas()
            o = o.set_index(pd.to_datetime(o["time"]))["turnover"]
            assert list(o.index) == list(ref.index), f"{name} q{q} lag {lag}: dates differ"
            np.testing.assert_allclose(o.to_numpy(), ref.to_numpy(float), rtol=0, atol=TOL)
        ref = al.performance.factor_rank_autocorrelation(fd, period=lag)
        o = evaluation.rank_autocorrelation.filter((pl.col("factor") == name) & (pl.col("lag") == lag)).to_pandas()
        o = o.set_index(pd.to_datetime(o["time"]))["rank_autocorr"]
        r = ref.reindex(o.index)
        np.testing.assert_allclose(o.to_numpy(float), r.to_numpy(float), rtol=0, atol=TOL, equal_nan=True)
        assert ref.dropna().index.isin(o.dropna().index).all()


def test_group_neutral_variants_match_alphalens(data):
    close, facs, times, symbols = data
    rng = np.random.default_rng(5)
    labels = np.array(["tech", "energy", "banks", "retail"])[rng.integers(0, 4, N)]
    group_map = dict(zip(symbols, labels))
    panel = ff.Panel.from_numpy({"close": close, "signal": facs["signal"]}, times=times.values, symbols=symbols)
    ev = ff.evaluate({"signal": "signal"}, panel, periods=PERIODS, groups=group_map, chunks=29)
    fd = alphalens_clean(close, facs["signal"], times, symbols, groups=group_map)
    cols = al.utils.get_forward_returns_columns(fd.columns)
    ic_gn = al.performance.factor_information_coefficient(fd, group_adjust=True)
    mean_gn, _ = al.performance.mean_return_by_quantile(fd, group_adjust=True)
    ours = _ours_ic(ev, "signal")
    for per, col in zip(PERIODS, cols):
        o = ours[ours.period == per].set_index("time")
        np.testing.assert_allclose(o["rank_ic_group_neutral"].to_numpy(float),
                                   ic_gn[col].reindex(o.index).to_numpy(float), rtol=0, atol=TOL)
        oq = ev.quantile_returns.filter(pl.col("period") == per).sort("quantile")
        np.testing.assert_allclose(oq["mean_return_group_neutral"].to_numpy(), mean_gn[col].to_numpy(),
                                   rtol=0, atol=TOL)


def test_results_do_not_depend_on_chunking_or_cluster(data, evaluation):
    close, facs, times, symbols = data
    panel = ff.Panel.from_numpy({"close": close, **facs}, times=times.values, symbols=symbols)
    whole = ff.evaluate(["signal", "ties"], panel, periods=PERIODS, chunks=-1)
    with ff.cluster.local(n_workers=1, threads_per_worker=2, dashboard_address=None):
        dist = ff.evaluate(["signal", "ties"], panel, periods=PERIODS, chunks=7)
    for other in (whole, dist):
        for attr in ("ic", "quantile_returns", "turnover", "rank_autocorrelation", "coverage"):
            a, b = getattr(evaluation, attr), getattr(other, attr)
            assert a.columns == b.columns and a.height == b.height, attr
            for c in a.columns:
                if a[c].dtype == pl.Float64:
                    np.testing.assert_allclose(a[c].to_numpy(), b[c].to_numpy(), rtol=0, atol=1e-12, equal_nan=True)
                else:
                    assert a[c].to_list() == b[c].to_list()


def test_formulas_are_computed_and_summary_is_consistent(data):
    close, _, times, symbols = data
    panel = ff.Panel.from_numpy({"close": close}, times=times.values, symbols=symbols)
    ev = ff.evaluate({"rev": "-(close / delay(close, 3) - 1)", "mom": ff.field("close").ts_mean(5) / ff.field("close")},
                     panel, periods=(1, 5))
    s = ev.summary()
    assert s.select("factor", "period").rows() == [("rev", 1), ("rev", 5), ("mom", 1), ("mom", 5)]
    ic = ev.ic
    for f, p in s.select("factor", "period").rows():
        x = ic.filter((pl.col("factor") == f) & (pl.col("period") == p))["ic"].drop_nulls().to_numpy()
        row = s.filter((pl.col("factor") == f) & (pl.col("period") == p)).row(0, named=True)
        assert row["ic_mean"] == pytest.approx(x.mean(), abs=1e-12)
        assert row["ic_std"] == pytest.approx(x.std(ddof=1), abs=1e-12)
        assert row["ic_tstat"] == pytest.approx(stats.ttest_1samp(x, 0).statistic, rel=1e-9)
        qr = ev.quantile_returns.filter((pl.col("factor") == f) & (pl.col("period") == p)).sort("quantile")
        assert row["spread"] == pytest.approx(qr["mean_return"][-1] - qr["mean_return"][0], abs=1e-15)
    cov = ev.coverage.filter(pl.col("factor") == "rev")
    finite = np.isfinite(ff.compute({"rev": "-(close / delay(close, 3) - 1)"}, panel).to_numpy("rev"))
    np.testing.assert_allclose(cov["coverage"].to_numpy(), finite.mean(axis=1))
    cum = ev.cumulative_returns.filter((pl.col("factor") == "rev") & (pl.col("quantile") == 5))
    qbd = ev.quantile_returns_by_date.filter((pl.col("factor") == "rev") & (pl.col("period") == 1)
                                              & (pl.col("quantile") == 5))
    assert cum["cumulative_return"][-1] == pytest.approx(float(np.prod(1 + qbd["mean_return"].to_numpy())), rel=1e-12)


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"prices": "clsoe"}, KeyError, "prices field 'clsoe'"),
    ({"periods": (1, 0)}, ValueError, "periods must be positive"),
    ({"periods": (1, 1)}, ValueError, "duplicates"),
    ({"periods": (200,)}, ValueError, "longest horizon"),
    ({"quantiles": 1}, ValueError, "quantiles must be an integer >= 2"),
    ({"groups": ["a", "b"]}, ValueError, "groups has 2 entries"),
    ({"chunks": 0}, ValueError, "chunks must be"),
])
def test_bad_arguments_are_named_before_any_work(data, kwargs, exc, match):
    close, _, times, symbols = data
    panel = ff.Panel.from_numpy({"close": close}, times=times.values, symbols=symbols)
    with pytest.raises(exc, match=match):
        ff.evaluate({"m": "ts_mean(close, 3)"}, panel, **kwargs)


def test_bad_formula_is_reported_with_a_caret(data):
    close, _, times, symbols = data
    panel = ff.Panel.from_numpy({"close": close}, times=times.values, symbols=symbols)
    with pytest.raises(ff.FactorTypeError, match="clsoe"):
        ff.evaluate({"m": "ts_mean(clsoe, 3)"}, panel)


def test_float32_panel_and_a_computed_panel_as_factors(data, evaluation):
    close, facs, times, symbols = data
    p32 = ff.Panel.from_numpy({"close": close.astype(np.float32), "signal": facs["signal"].astype(np.float32)},
                              times=times.values, symbols=symbols)
    p64 = ff.Panel.from_numpy({"close": close.astype(np.float32).astype(np.float64),
                               "signal": facs["signal"].astype(np.float32).astype(np.float64)},
                              times=times.values, symbols=symbols)
    a = ff.evaluate(["signal"], p32, periods=PERIODS, chunks=20).ic
    b = ff.evaluate(["signal"], p64, periods=PERIODS).ic
    assert a.equals(b)
    # a Panel of computed factors (ff.compute's lazy result) is evaluated field by field
    panel = ff.Panel.from_numpy({"close": close}, times=times.values, symbols=symbols)
    out = ff.compute({"rev": "-(close / delay(close, 3) - 1)"}, panel)
    direct = ff.evaluate({"rev": "-(close / delay(close, 3) - 1)"}, panel, periods=PERIODS)
    assert ff.evaluate(out, panel, periods=PERIODS).summary().equals(direct.summary())
    other = ff.Panel.from_numpy({"close": close}, symbols=symbols)  # default times 0..T-1
    with pytest.raises(ValueError, match="times or symbols differ"):
        ff.evaluate(out, other)


def test_time_varying_groups_from_a_field_match_alphalens(data):
    close, facs, times, symbols = data
    rng = np.random.default_rng(9)
    codes = rng.integers(0, 4, (T, N)).astype(float)
    codes[rng.random((T, N)) < 0.05] = np.nan  # no group: the cell leaves the sample
    codes[:, 0] = 7.5  # any finite number is a label
    panel = ff.Panel.from_numpy({"close": close, "signal": facs["signal"], "industry": codes},
                                times=times.values, symbols=symbols)
    ev = ff.evaluate(["signal"], panel, periods=PERIODS, groups="industry", chunks=17)
    idx = pd.MultiIndex.from_product([times, symbols], names=["date", "asset"])
    groupby = pd.Series(codes.reshape(-1), index=idx).dropna()
    fd = alphalens_clean(close, facs["signal"], times, symbols, groups=groupby)
    cols = al.utils.get_forward_returns_columns(fd.columns)
    ic = al.performance.factor_information_coefficient(fd)
    ic_gn = al.performance.factor_information_coefficient(fd, group_adjust=True)
    mean_gn, _ = al.performance.mean_return_by_quantile(fd, group_adjust=True)
    mean_ret, _ = al.performance.mean_return_by_quantile(fd)
    ours = _ours_ic(ev, "signal")
    for per, col in zip(PERIODS, cols):
        o = ours[ours.period == per].set_index("time")
        assert list(o.index) == list(fd.index.get_level_values("date").unique())
        np.testing.assert_allclose(o["rank_ic"].to_numpy(float), ic[col].reindex(o.index).to_numpy(float),
                                   rtol=0, atol=TOL)
        np.testing.assert_allclose(o["rank_ic_group_neutral"].to_numpy(float),
                                   ic_gn[col].reindex(o.index).to_numpy(float), rtol=0, atol=TOL)
        oq = ev.quantile_returns.filter(pl.col("period") == per).sort("quantile")
        np.testing.assert_allclose(oq["mean_return"].to_numpy(), mean_ret[col].to_numpy(), rtol=0, atol=TOL)
        np.testing.assert_allclose(oq["mean_return_group_neutral"].to_numpy(), mean_gn[col].to_numpy(),
                                   rtol=0, atol=TOL)
    with pytest.raises(KeyError, match="groups field 'sector'"):
        ff.evaluate(["signal"], panel, groups="sector")
