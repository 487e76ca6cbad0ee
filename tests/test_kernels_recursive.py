"""Recursive CPU kernels (ema, ewma, cumsum) against pandas, the docs/semantics.md formulas, and
chunk invariance of the carried state."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

# Always through the installed package name: importing the same file as ``kernels.cpu.*`` too
# would share Numba's on-disk cache entries between two module names, and an entry written under
# one name fails to load under the other (ModuleNotFoundError while rebuilding its environment).
from factorflow.kernels.cpu import recursive as R

SPANS = [2, 3, 5, 10, 20.5, 60]
BLOCKS = (1, 7, 50)


def make_panel(T=400, N=41, seed=0, gaps=True):
    """float64 panel: random walk-ish data with isolated NaNs, leading NaNs, long gaps, an all-NaN
    column, constant runs, a 1e6-offset column and a column with tiny values."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, N)).cumsum(axis=0) * 0.1 + rng.standard_normal((T, N))
    x[:, 3] += 1e6
    x[:, 4] *= 1e-8
    x[40:120, 5] = 2.5  # constant run
    x[:, 6] = 7.0  # constant column
    if gaps:
        x[rng.random((T, N)) < 0.15] = np.nan
        x[:30, 7:12] = np.nan  # leading NaNs
        x[:, 12] = np.nan  # never valid
        x[100:180, 13] = np.nan  # long gap
        x[200:203, 14] = np.nan
        x[x[:, 15] > 0.5, 15] = np.nan
        x[: T - 1, 16] = np.nan  # valid only on the last row
    return x


def run_ewm(x, alpha, adjust, blocks=None):
    out = np.empty_like(x)
    state = R.ewm_init_state(x.shape[1])
    if blocks is None:
        R.ewm_mean(x, alpha, adjust, state, out)
    else:
        for a, b in blocks:
            R.ewm_mean(x[a:b], alpha, adjust, state, out[a:b])
    return out, state


def run_cumsum(x, blocks=None):
    out = np.empty_like(x)
    state = R.cumsum_init_state(x.shape[1])
    if blocks is None:
        R.cumsum(x, state, out)
    else:
        for a, b in blocks:
            R.cumsum(x[a:b], state, out[a:b])
    return out, state


def block_bounds(T, sizes=BLOCKS):
    bounds, a = [], 0
    for s in sizes:
        if a >= T:
            break
        bounds.append((a, min(a + s, T)))
        a += s
    if a < T:
        bounds.append((a, T))
    return bounds


def assert_close(got, ref, rtol, atol=0.0):
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg="NaN positions differ")
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol, equal_nan=True)


@np.errstate(invalid="ignore")
def ref_ewm_doc(col, alpha, adjust):
    """docs/semantics.md ema / ewma, written as stated (state: started, avg, old_wt); the NaN-gap
    weight of ``ema`` computed with ``pow`` rather than repeated multiplication."""
    out = np.empty(len(col))
    started, avg, old_wt, gap = False, np.nan, 1.0, 0
    for i, v in enumerate(col):
        if started:
            gap += 1
            old_wt *= 1 - alpha
        if v == v:
            if not started:
                started, avg, old_wt = True, v, 1.0
            elif adjust:
                if avg != v:
                    avg = (old_wt * avg + v) / (old_wt + 1)
                old_wt += 1
            else:
                w = (1 - alpha) ** gap
                if avg != v:
                    avg = (w * avg + alpha * v) / (w + alpha)
                old_wt = 1.0
            gap = 0
        out[i] = avg
    return out


# --- ewm against pandas -------------------------------------------------------------------------


@pytest.mark.parametrize("span", [s for s in SPANS if s != 3])
def test_ema_matches_pandas_gapped(span):
    x = make_panel()
    got, _ = run_ewm(x, 2 / (span + 1), False)
    ref = pd.DataFrame(x).ewm(span=span, adjust=False).mean().to_numpy()
    assert_close(got, ref, rtol=1e-9)


@pytest.mark.parametrize("span", SPANS)
def test_ema_matches_pandas_gap_free(span):
    x = make_panel(gaps=False, seed=1)
    got, _ = run_ewm(x, 2 / (span + 1), False)
    ref = pd.DataFrame(x).ewm(span=span, adjust=False).mean().to_numpy()
    assert_close(got, ref, rtol=1e-9)


@pytest.mark.parametrize("span", SPANS)
def test_ewma_matches_pandas_gapped(span):
    x = make_panel()
    got, _ = run_ewm(x, 2 / (span + 1), True)
    ref = pd.DataFrame(x).ewm(span=span, adjust=True).mean().to_numpy()
    assert_close(got, ref, rtol=1e-9)


@pytest.mark.parametrize("adjust", [False, True])
@pytest.mark.parametrize("span", SPANS)
def test_ewm_matches_doc_formula(span, adjust):
    """All spans including 3 on gapped data, against the semantics.md formulas (pow weights)."""
    x = make_panel(T=250, N=20, seed=2)
    alpha = 2 / (span + 1)
    got, _ = run_ewm(x, alpha, adjust)
    ref = np.column_stack([ref_ewm_doc(x[:, j], alpha, adjust) for j in range(x.shape[1])])
    assert_close(got, ref, rtol=1e-12)


@pytest.mark.parametrize("span", [3, 9])
def test_ema_gap_weight_rule(span):
    """y_t = (w y_prev + alpha x_t) / (w + alpha), w = (1 - alpha) ** g, g = rows since the last
    valid value; NaN rows carry the previous value; NaN before the first valid value."""
    a = 2 / (span + 1)
    col = np.array([np.nan, np.nan, 4.0, 1.0, np.nan, np.nan, np.nan, 10.0, np.nan, -2.0])
    y2 = 4.0
    y3 = (1 - a) * y2 + a * 1.0
    w = (1 - a) ** 4
    y7 = (w * y3 + a * 10.0) / (w + a)
    w = (1 - a) ** 2
    y9 = (w * y7 + a * -2.0) / (w + a)
    expected = [np.nan, np.nan, y2, y3, y3, y3, y3, y7, y7, y9]
    got, _ = run_ewm(col[:, None], a, False)
    assert_close(got[:, 0], expected, rtol=1e-13)


def test_ewm_constant_series_exact():
    x = np.full((300, 4), 0.1)
    x[50:90, 1] = np.nan
    x[1::3, 2] = np.nan
    x[:20, 3] = np.nan
    expected = np.full((300, 4), 0.1)
    expected[:20, 3] = np.nan
    for adjust in (False, True):
        got, _ = run_ewm(x, 2 / 11, adjust)
        np.testing.assert_array_equal(got, expected)


def test_ewm_inf_is_a_valid_value():
    """±inf are values (pandas ewm would drop them as NaN): inf dominates from then on, +inf
    meeting -inf gives NaN from then on."""
    col = np.array([1.0, np.inf, 2.0, np.nan, 5.0, -np.inf, 3.0, np.nan, 4.0])
    exp = [1.0, np.inf, np.inf, np.inf, np.inf, np.nan, np.nan, np.nan, np.nan]
    col2 = np.array([np.nan, -np.inf, 2.0, -np.inf, np.nan])
    exp2 = [np.nan, -np.inf, -np.inf, -np.inf, -np.inf]
    x = np.column_stack([col, np.r_[col2, [1.0] * 4]])
    for adjust in (False, True):
        got, _ = run_ewm(x, 0.3, adjust)
        np.testing.assert_array_equal(got[:, 0], exp)
        np.testing.assert_array_equal(got[:5, 1], exp2)
        ref = np.column_stack([ref_ewm_doc(x[:, j], 0.3, adjust) for j in range(2)])
        np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("adjust", [False, True])
def test_ewm_float32(adjust):
    x = make_panel(seed=3)
    x[:, 3] -= 1e6  # the 1e6 offset is below float32 resolution for this comparison
    x32 = x.astype(np.float32)
    got, state = run_ewm(x32, 2 / 11, adjust)
    assert got.dtype == np.float32 and state.dtype == np.float64
    ref = pd.DataFrame(x32.astype(np.float64)).ewm(span=10, adjust=adjust).mean().to_numpy()
    assert_close(got, ref, rtol=1e-5, atol=1e-6)


# --- chunk invariance -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("adjust", [False, True])
@pytest.mark.parametrize("sizes", [BLOCKS, (1,) * 12 + (3,), (200,), (399, 1)])
def test_ewm_chunk_invariance(sizes, adjust, dtype):
    x = make_panel(seed=4).astype(dtype)
    x[5, 20] = np.inf
    whole, s_whole = run_ewm(x, 2 / 7, adjust)
    parts, s_parts = run_ewm(x, 2 / 7, adjust, blocks=block_bounds(x.shape[0], sizes))
    np.testing.assert_array_equal(parts, whole)
    np.testing.assert_array_equal(s_parts, s_whole)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("sizes", [BLOCKS, (1,) * 12 + (3,), (399, 1)])
def test_cumsum_chunk_invariance(sizes, dtype):
    x = make_panel(seed=5).astype(dtype)
    whole, s_whole = run_cumsum(x)
    parts, s_parts = run_cumsum(x, blocks=block_bounds(x.shape[0], sizes))
    np.testing.assert_array_equal(parts, whole)
    np.testing.assert_array_equal(s_parts, s_whole)


def test_state_layout():
    s = R.ewm_init_state(5)
    assert s.shape == (3, 5) and s.dtype == np.float64
    c = R.cumsum_init_state(5)
    assert c.shape == (1, 5) and c.dtype == np.float64
    x = np.array([[np.nan, 1.0], [2.0, np.nan], [3.0, 4.0]])
    _, s = run_ewm(x, 0.5, False)
    np.testing.assert_array_equal(s[2], [2.0, 2.0])  # nobs
    np.testing.assert_array_equal(s[1], [1.0, 1.0])  # old_wt after a valid row
    _, c = run_cumsum(x)
    np.testing.assert_array_equal(c[0], [5.0, 5.0])


def test_empty_blocks():
    x = np.empty((0, 3))
    out = np.empty_like(x)
    s = R.ewm_init_state(3)
    R.ewm_mean(x, 0.2, True, s, out)
    np.testing.assert_array_equal(s, R.ewm_init_state(3))
    c = R.cumsum_init_state(3)
    R.cumsum(x, c, out)
    assert np.all(c == 0)


# --- cumsum -----------------------------------------------------------------------------------------


def test_cumsum_matches_pandas():
    x = make_panel(seed=6)
    got, _ = run_cumsum(x)
    ref = pd.DataFrame(x).cumsum().to_numpy()
    assert_close(got, ref, rtol=1e-12)
    np.testing.assert_array_equal(got, ref)  # same operation order: identical


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_cumsum_inf():
    col = np.array([np.nan, 1.0, np.inf, 2.0, np.nan, -np.inf, 3.0])
    got, _ = run_cumsum(col[:, None])
    ref = pd.Series(col).cumsum().to_numpy()
    np.testing.assert_array_equal(got[:, 0], ref)
    np.testing.assert_array_equal(got[:, 0], [np.nan, 1.0, np.inf, np.inf, np.nan, np.nan, np.nan])


def test_cumsum_float32_accumulates_in_float64():
    x = make_panel(seed=7)
    x[:, 3] -= 1e6
    x32 = x.astype(np.float32)
    got, _ = run_cumsum(x32)
    assert got.dtype == np.float32
    ref = pd.DataFrame(x32.astype(np.float64)).cumsum().to_numpy()
    assert_close(got, ref.astype(np.float32), rtol=1e-6, atol=1e-6)
