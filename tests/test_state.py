"""Carried state of recursive operators (engine/state.py): resume a computation exactly."""
from __future__ import annotations

import dask
import numpy as np
import pytest

import factorflow as ff
from factorflow.engine.state import compute_stateful, remap_state, scan_offsets

from patterns import assert_close, make_patterned

T, N = 300, 70
X = make_patterned(T, N, seed=3)
V = np.abs(make_patterned(T, N, seed=4)) + 1
FACTORS = {
    "macd": "ema(close, 12) - ema(close, 26)",
    "nested": "ema(ts_mean(ema(close, 3), 5), 4)",
    "cum": "ts_sum(cumsum(close / delay(close, 1) - 1), 6)",
    "ew": "cs_rank(ewma(delta(volume, 2), 7))",
    "plain": "(close - ts_mean(close, 20)) / ts_std(close, 20)",
}


def _panel(rows, cols=slice(None)):
    return ff.Panel.from_numpy({"close": X[rows, cols], "volume": V[rows, cols]})


@pytest.fixture(scope="module")
def full():
    with dask.config.set(scheduler="threads"):
        return ff.compute(FACTORS, _panel(slice(None))).to_numpy()


def test_offsets_follow_the_lookbacks():
    plan = ff.explain(FACTORS, _panel(slice(None)))
    starts, h = scan_offsets(plan)
    # one recursive stage per level: its scans start where its slowest input is exact
    level1 = ["ema(close, 12)", "ema(close, 3)", "cumsum(close / delay(close, 1) - 1)", "ewma(delta(volume, 2), 7)"]
    assert {starts[t] for t in level1} == {2}  # delta(volume, 2)
    assert starts["ema(ts_mean(ema(close, 3), 5), 4)"] == 6  # inner ema exact from 2, ts_mean adds 4
    assert h == 19  # ts_std(close, 20)


@pytest.mark.parametrize("split", [60, 137, 250])
@pytest.mark.parametrize("chunks", [None, {"time": 37, "symbol": 30}, {"time": 200, "symbol": -1}])
def test_resume_equals_full(full, split, chunks):
    """Run 1 over [0, split) saves states at split - H + K; run 2 reads H rows of history."""
    plan = ff.explain(FACTORS, _panel(slice(None)))
    starts, h = scan_offsets(plan)
    base = split - h
    with dask.config.set(scheduler="threads"):
        first, state = compute_stateful(FACTORS, _panel(slice(0, split)), chunks=chunks,
                                        state_rows={t: base + k for t, k in starts.items()})
        head, saved = dask.compute(first._groups[0].data, state)
        tail, _ = compute_stateful(FACTORS, _panel(slice(base, None)), chunks=chunks, initial_state=saved,
                                   scan_start=starts)
        got = tail.to_numpy()
    for k, name in enumerate(FACTORS):
        assert_close(head[k], full[name][:split], rtol=1e-12, what=name)
        assert_close(got[name][h:], full[name][split:], rtol=1e-9, what=name)


def test_new_symbols_start_fresh(full):
    """A symbol absent from the first run (all-NaN before) resumes from a fresh state."""
    plan = ff.explain(FACTORS, _panel(slice(None)))
    starts, h = scan_offsets(plan)
    split, base = 150, 150 - h
    cols = np.r_[0:30, 31:N]
    with dask.config.set(scheduler="threads"):
        x = X.copy()
        x[:split, 30] = np.nan
        v = V.copy()
        v[:split, 30] = np.nan
        ref = ff.compute(FACTORS, ff.Panel.from_numpy({"close": x, "volume": v})).to_numpy()
        first, state = compute_stateful(FACTORS, ff.Panel.from_numpy({"close": x[:split, cols],
                                                                      "volume": v[:split, cols]}),
                                        state_rows={t: base + k for t, k in starts.items()})
        (saved,) = dask.compute(state)
        saved = remap_state(first.plan, saved, [str(c) for c in cols], [str(c) for c in range(N)])
        tail, _ = compute_stateful(FACTORS, ff.Panel.from_numpy({"close": x[base:], "volume": v[base:]}),
                                   initial_state=saved, scan_start=starts)
        got = tail.to_numpy()
    for name in FACTORS:
        assert_close(got[name][h:], ref[name][split:], rtol=1e-9, what=name)
