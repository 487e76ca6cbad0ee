"""Data patterns every operator is checked on (shared by tests and benchmarks)."""
from __future__ import annotations

import numpy as np


def make_patterned(T: int = 120, N: int = 9, seed: int = 0, offset: float = 0.0, scale: float = 1.0,
                   positive: bool = False) -> np.ndarray:
    """A (T, N) float64 array whose columns carry the patterns the operators must handle:

    0: clean random walk            1: scattered NaNs (10%)
    2: leading NaNs (first 30 rows) 3: a NaN gap of 25 rows mid-series
    4: constant runs (30 rows)      5: 1e6 + 1e-3 noise (cancellation)
    6: tiny values (~1e-300 scale)  7: integer ties (values in 0..4)
    8: all NaN
    Extra columns repeat the pattern with other seeds.
    """
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.standard_normal((T, N)), axis=0) * scale + offset
    for j in range(N):
        kind = j % 9
        col = x[:, j]
        if kind == 1:
            col[rng.random(T) < 0.1] = np.nan
        elif kind == 2:
            col[:30] = np.nan
        elif kind == 3:
            col[T // 3: T // 3 + 25] = np.nan
        elif kind == 4:
            col[10:40] = 3.25
            col[60:90] = col[59]
        elif kind == 5:
            col[:] = 1e6 + rng.standard_normal(T) * 1e-3
        elif kind == 6:
            col[:] = rng.standard_normal(T) * 1e-300
        elif kind == 7:
            col[:] = rng.integers(0, 5, T).astype(float)
        elif kind == 8:
            col[:] = np.nan
    if positive:
        x = np.abs(x) + 1e-3
        x[:, 8 % N] = np.nan
    return x


def assert_close(got, want, rtol=1e-9, what=""):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape
    nan_g, nan_w = np.isnan(got), np.isnan(want)
    bad = np.argwhere(nan_g != nan_w)
    assert not len(bad), f"{what}: NaN mismatch at {bad[:5].tolist()} got={got[tuple(bad[0])]} want={want[tuple(bad[0])]}"
    ok = ~nan_w
    # relative tolerance, with an absolute floor scaled to the column's magnitude (differences of
    # nearly equal values cannot be relatively exact in any implementation)
    scale = np.nanmax(np.abs(np.where(np.isfinite(want), want, np.nan)), axis=0, initial=0.0)
    atol = 1e-13 * np.broadcast_to(scale, want.shape)
    with np.errstate(invalid="ignore"):
        diff = np.abs(got[ok] - want[ok])
    lim = rtol * np.abs(want[ok]) + atol[ok]
    inf_same = (got[ok] == want[ok])
    fail = ~(inf_same | (diff <= lim))
    if fail.any():
        idx = np.argwhere(ok)[np.flatnonzero(fail)[:5]]
        raise AssertionError(f"{what}: {int(fail.sum())} mismatches, e.g. at {idx.tolist()}: "
                             f"got {got[tuple(idx[0])]!r} want {want[tuple(idx[0])]!r}")
