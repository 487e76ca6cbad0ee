"""Cross-sectional CPU kernels against pandas / NumPy row-wise references."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

# Always through the installed package name: importing the same file as ``kernels.cpu.*`` too
# would share Numba's on-disk cache entries between two module names, and an entry written under
# one name fails to load under the other (ModuleNotFoundError while rebuilding its environment).
from factorflow.kernels.cpu import cross_section as C


def make_panel(T=120, N=300, seed=0, ties=True, infs=True):
    """Rows with NaNs, an all-NaN row, single-valid rows, rows with few valid values (around the
    insertion-sort threshold), constant rows, a 1e6-offset row, integer ties, ±0 and ±inf."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, N))
    x[rng.random((T, N)) < 0.1] = np.nan
    x[1] = np.nan
    x[2] = np.nan
    x[2, 17] = 3.0  # single valid value
    x[3] = 4.25  # constant row
    x[4, ::2] = 1.5  # constant row with NaNs
    x[4, 1::2] = np.nan
    x[5] += 1e6
    x[6] *= 1e-9
    if ties:
        x[10:30] = np.round(x[10:30] * 2)  # many ties
        x[30, :150] = -0.0
        x[30, 150:] = 0.0
    for r, k in zip(range(40, 50), (2, 3, 20, 31, 32, 33, 34, 40, 64, 65)):
        keep = rng.choice(N, size=k, replace=False)
        row = np.full(N, np.nan)
        row[keep] = x[r, keep]
        x[r] = row
    x[50, :] = np.where(np.arange(N) % 3 == 0, 7.0, np.nan)
    if infs:
        x[60, 5] = np.inf
        x[61, 5:9] = [np.inf, -np.inf, np.inf, np.nan]
        x[62, ::7] = -np.inf
        x[63] = np.where(np.arange(N) % 2, np.inf, np.nan)
    return x


def assert_close(got, ref, rtol, atol=0.0):
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg="NaN positions differ")
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol, equal_nan=True)


def call(fn, x, *args):
    out = np.full_like(x, -999.0)  # garbage: every cell must be written
    fn(x, *args, out)
    return out


# --- cs_rank ----------------------------------------------------------------------------------


@pytest.mark.parametrize("N", [1, 5, 32, 33, 300])
def test_cs_rank_matches_pandas(N):
    x = make_panel(N=max(N, 80))[:, :N].copy()
    got = call(C.cs_rank, x)
    ref = pd.DataFrame(x).rank(axis=1, pct=True).to_numpy()
    assert_close(got, ref, rtol=1e-15)


def test_cs_rank_wide_random():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((20, 5000)) * 10.0 ** rng.integers(-300, 300, size=(20, 5000))
    x[rng.random(x.shape) < 0.2] = np.nan
    x[3] = np.round(rng.standard_normal(5000) * 3)  # heavy ties
    x[4] = np.float32(rng.standard_normal(5000))  # low mantissa bytes all zero
    got = call(C.cs_rank, x)
    ref = pd.DataFrame(x).rank(axis=1, pct=True).to_numpy()
    assert_close(got, ref, rtol=1e-15)


def test_cs_rank_basic_values():
    x = np.array([[3.0, np.nan, 1.0, 3.0, -np.inf, 0.0, -0.0, np.inf]])
    got = call(C.cs_rank, x)
    # sorted valid: -inf, (-0, 0), 1, (3, 3), inf -> positions 1, 2.5, 2.5, 4, 5.5, 5.5, 7
    exp = np.array([[5.5, np.nan, 4.0, 5.5, 1.0, 2.5, 2.5, 7.0]]) / 7
    np.testing.assert_array_equal(got, exp)


def test_cs_rank_float32():
    x = make_panel(seed=1).astype(np.float32)
    got = call(C.cs_rank, x)
    assert got.dtype == np.float32
    ref = pd.DataFrame(x.astype(np.float64)).rank(axis=1, pct=True).to_numpy()
    assert_close(got, ref, rtol=1e-6)


# --- cs_demean / cs_zscore ------------------------------------------------------------------------


def pandas_demean(x):
    df = pd.DataFrame(x)
    return df.sub(df.mean(axis=1), axis=0).to_numpy()


def pandas_zscore(x):
    df = pd.DataFrame(x)
    return df.sub(df.mean(axis=1), axis=0).div(df.std(axis=1, ddof=1), axis=0).to_numpy()


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_cs_demean_matches_pandas():
    x = make_panel(seed=2)
    got = call(C.cs_demean, x)
    ref = pandas_demean(x)
    # 1e6-offset row: pandas' plain mean carries ~1e-10 absolute error
    assert_close(got, ref, rtol=1e-9, atol=1e-9)


def test_cs_demean_constant_rows_exact():
    x = make_panel(seed=3)
    got = call(C.cs_demean, x)
    np.testing.assert_array_equal(got[3], np.zeros(x.shape[1]))
    np.testing.assert_array_equal(got[4, ::2], 0.0)
    assert np.isnan(got[4, 1::2]).all()
    np.testing.assert_array_equal(got[2, 17], 0.0)
    assert np.isnan(got[1]).all()


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_cs_zscore_matches_pandas():
    x = make_panel(seed=4)
    got = call(C.cs_zscore, x)
    ref = pandas_zscore(x)
    const = [3, 4, 50]  # pandas gives rounding noise / NaN there; factorflow NaN (0 / 0)
    rows = np.setdiff1d(np.arange(x.shape[0]), const)
    assert_close(got[rows], ref[rows], rtol=1e-9, atol=1e-9)
    assert np.isnan(got[const]).all()
    assert np.isnan(got[2]).all()  # single valid value: std NaN
    assert np.isnan(got[63]).all() and np.isnan(got[61]).all()  # inf in the row: std NaN


def test_cs_zscore_offset_accuracy():
    rng = np.random.default_rng(5)
    base = rng.standard_normal((10, 200))
    got = call(C.cs_zscore, base + 1e6)
    ref = call(C.cs_zscore, base)
    np.testing.assert_allclose(got, ref, atol=1e-9)


def test_cs_demean_inf():
    x = np.array([[1.0, np.inf, np.nan, 3.0], [1.0, np.inf, -np.inf, 2.0], [np.inf, 1.0, 2.0, np.nan]])
    got = call(C.cs_demean, x)
    exp = np.array([[-np.inf, np.nan, np.nan, -np.inf], [np.nan] * 4, [np.nan, -np.inf, -np.inf, np.nan]])
    np.testing.assert_array_equal(got, exp)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(got, pandas_demean(x))


@pytest.mark.parametrize("fn", [C.cs_demean, C.cs_zscore])
def test_float32_center(fn):
    x = make_panel(seed=6, infs=False)
    x[5] -= 1e6
    x32 = x.astype(np.float32)
    got = call(fn, x32)
    assert got.dtype == np.float32
    ref = pandas_demean(x32.astype(np.float64)) if fn is C.cs_demean else pandas_zscore(x32.astype(np.float64))
    rows = np.setdiff1d(np.arange(x.shape[0]), [3, 4, 50])
    assert_close(got[rows], ref[rows], rtol=1e-5, atol=1e-5)


# --- cs_scale -----------------------------------------------------------------------------------


def numpy_scale(x, scale):
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.nansum(np.abs(x), axis=1, keepdims=True)
        s[np.isnan(x).all(axis=1)] = np.nan
        return x * scale / s


@pytest.mark.parametrize("scale", [1.0, 2.5, -1.0])
def test_cs_scale_matches_numpy(scale):
    x = make_panel(seed=7)
    x[70] = 0.0  # sum |x| = 0: 0 / 0 = NaN
    x[71, :] = np.nan
    x[71, 3] = 0.0
    got = call(C.cs_scale, x, scale)
    ref = numpy_scale(x, scale)
    assert_close(got, ref, rtol=1e-12)
    assert np.isnan(got[[1, 70, 71]]).all()
    assert np.isnan(got[63]).all()  # only inf: inf / inf
    np.testing.assert_array_equal(got[60, 6:], 0.0 * np.sign(x[60, 6:]) * scale)  # x / inf


def test_cs_scale_float32():
    x = make_panel(seed=8, infs=False).astype(np.float32)
    got = call(C.cs_scale, x, 1.0)
    assert got.dtype == np.float32
    assert_close(got, numpy_scale(x.astype(np.float64), 1.0), rtol=1e-6)
    rows = np.setdiff1d(np.arange(x.shape[0]), [1, 30])  # all NaN, all zero
    np.testing.assert_allclose(np.nansum(np.abs(got[rows]), axis=1), 1.0, rtol=1e-5)


def test_no_valid_rows_are_nan():
    x = np.full((3, 50), np.nan)
    for fn, args in [(C.cs_rank, ()), (C.cs_demean, ()), (C.cs_zscore, ()), (C.cs_scale, (1.0,))]:
        assert np.isnan(call(fn, x, *args)).all()
        assert np.isnan(call(fn, x.astype(np.float32), *args)).all()


def test_cs_neutralize_reuses_and_refreshes_the_group_order():
    """Constant group codes reuse the previous row's order; a changed code (or NaN) re-sorts."""
    from factorflow.factors import references as R
    from factorflow.kernels.cpu.cross_section import cs_neutralize

    rng = np.random.default_rng(4)
    x = rng.standard_normal((30, 12))
    g = np.broadcast_to(rng.integers(0, 3, 12).astype(float), (30, 12)).copy()
    g[10:, 2] = 5.0          # a symbol changes group for good
    g[20, :4] = np.nan       # one row with missing codes, then back
    x[15, 6] = np.nan
    out = np.empty_like(x)
    cs_neutralize(x, g, out)
    want = R.cs_neutralize(x, g)
    assert np.array_equal(np.isnan(out), np.isnan(want))
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-15)
