"""Element-wise CPU kernels against NumPy with factorflow's NaN rules."""
from __future__ import annotations

import operator

import numpy as np
import pytest

# Always through the installed package name: importing the same file as ``kernels.cpu.*`` too
# would share Numba's on-disk cache entries between two module names, and an entry written under
# one name fails to load under the other (ModuleNotFoundError while rebuilding its environment).
from factorflow.kernels.cpu import elementwise as E

SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 2.5, -2.5, 1e-300, 1e6])
OPS = [operator.lt, operator.le, operator.gt, operator.ge, operator.eq, operator.ne]


def make_pair(dtype=np.float64, seed=0):
    """All pairs of special values, plus random values with ties and NaNs."""
    rng = np.random.default_rng(seed)
    a, b = np.meshgrid(SPECIAL, SPECIAL, indexing="ij")
    r = np.round(rng.standard_normal((2, 30, 121)) * 2)
    r[rng.random(r.shape) < 0.1] = np.nan
    x = np.vstack([a.reshape(1, -1), r[0]]).astype(dtype)
    y = np.vstack([b.reshape(1, -1), r[1]]).astype(dtype)
    return x, y


def make_bool(seed):
    rng = np.random.default_rng(seed)
    c = (rng.random((40, 33)) < 0.5).astype(np.float64)
    c[rng.random(c.shape) < 0.15] = np.nan
    return c


def call(fn, *args):
    out = np.full_like(args[0], -999.0)
    fn(*args, out)
    return out


def nan_or(mask, values):
    return np.where(mask, np.nan, values)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sign(dtype):
    x, _ = make_pair(dtype)
    got = call(E.sign, x)
    np.testing.assert_array_equal(got, np.sign(x))
    assert not np.signbit(call(E.sign, np.array([[-0.0]], dtype=dtype))).any()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_signed_power(dtype):
    x, y = make_pair(dtype)
    y = np.abs(y) if dtype == np.float32 else y  # avoid float32 overflow noise
    got = call(E.signed_power, x, y)
    with np.errstate(all="ignore"):
        ref = np.sign(x.astype(np.float64)) * np.abs(x.astype(np.float64)) ** y.astype(np.float64)
    ref = nan_or(np.isnan(x) | np.isnan(y), ref).astype(dtype)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_allclose(got, ref, rtol=1e-6 if dtype == np.float32 else 1e-15)


def test_signed_power_values():
    x = np.array([[-8.0, 8.0, 0.0, 0.0, 1.0, -1.0, np.nan, -4.0]])
    a = np.array([[1 / 3, 1 / 3, 2.0, -1.0, np.nan, np.nan, 1.0, 0.5]])
    got = call(E.signed_power, x, a)
    np.testing.assert_allclose(got, [[-2.0, 2.0, 0.0, np.nan, np.nan, np.nan, np.nan, -2.0]], rtol=1e-15)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("op", range(6))
def test_compare(op, dtype):
    x, y = make_pair(dtype)
    got = call(E.compare, x, y, op)
    ref = nan_or(np.isnan(x) | np.isnan(y), OPS[op](x, y).astype(np.float64))
    np.testing.assert_array_equal(got, ref)
    assert [E.LT, E.LE, E.GT, E.GE, E.EQ, E.NE] == list(range(6))


def test_compare_mixed_dtypes():
    x, y = make_pair()
    x32 = x.astype(np.float32)
    got = call(E.compare, x32, y, 2)
    ref = nan_or(np.isnan(x32) | np.isnan(y), (x32.astype(np.float64) > y).astype(np.float64))
    np.testing.assert_array_equal(got, ref)
    assert got.dtype == np.float32


def test_compare_bad_op():
    x, y = make_pair()
    with pytest.raises(ValueError):
        E.compare(x, y, 6, np.empty_like(x))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_logical(dtype):
    c1, c2 = make_bool(1).astype(dtype), make_bool(2).astype(dtype)
    c1[0, :3] = [np.inf, -2.0, -0.0]  # any nonzero is true, -0.0 is false
    nan = np.isnan(c1) | np.isnan(c2)
    t1, t2 = c1 != 0, c2 != 0
    np.testing.assert_array_equal(call(E.logical_and, c1, c2), nan_or(nan, (t1 & t2).astype(float)))
    np.testing.assert_array_equal(call(E.logical_or, c1, c2), nan_or(nan, (t1 | t2).astype(float)))
    np.testing.assert_array_equal(call(E.logical_not, c1), nan_or(np.isnan(c1), (~t1).astype(float)))


def test_logical_nan_beats_short_circuit():
    x = np.array([[0.0, np.nan, 1.0, np.nan]])
    y = np.array([[np.nan, 0.0, np.nan, 1.0]])
    assert np.isnan(call(E.logical_and, x, y)).all()
    assert np.isnan(call(E.logical_or, x, y)).all()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_where(dtype):
    c = make_bool(3).astype(dtype)
    c[0, :3] = [np.inf, -0.0, -5.0]
    rng = np.random.default_rng(4)
    a = rng.standard_normal(c.shape).astype(dtype)
    b = rng.standard_normal(c.shape).astype(dtype)
    a[5] = np.nan
    b[6, ::2] = np.inf
    got = call(E.where, c, a, b)
    ref = nan_or(np.isnan(c), np.where(c != 0, a, b))
    np.testing.assert_array_equal(got, ref)
