"""Factor evaluation: ``ff.evaluate`` versus alphalens-reloaded on the same factors and prices.

Method
------
* Data: ``ff.sample_panel(times, symbols, seed=0)`` closes (float64, isolated missing bars) on
  business days, and the demo's 10 factors (``factorflow.demo.DEMO_FACTORS``) computed once with
  ``ff.compute`` beforehand (untimed): both sides evaluate the same ready factor values.
* Work per factor (the same on both sides): forward returns at periods 1, 5, 10 on
  forward-filled prices, the clean sample, quintiles per date, rank IC per date and period,
  mean (demeaned) quantile returns, quantile turnover at lag 1 for every quintile, factor rank
  autocorrelation at lag 1. alphalens: ``get_clean_factor_and_forward_returns(...,
  filter_zscore=None)``, ``factor_information_coefficient``, ``mean_return_by_quantile``,
  ``quantile_turnover`` (q = 1..5), ``factor_rank_autocorrelation``. factorflow does more in its
  call (Pearson IC, turnover and autocorrelation at lags 5 and 10 too, coverage).
* Rows: ``ff.evaluate`` of all factors at once on Dask's threaded scheduler and in the embedded
  cluster (``ff.cluster.local()``); alphalens one factor after the other in this process. alphalens
  on the full set takes many minutes, so it is timed on the first ``--al-factors`` factors and
  scaled linearly to the full set (its cost is per factor; the row says so).
* Checked: the rank IC and quantile mean returns of each factor alphalens ran agree with
  factorflow's (max abs difference printed; 1e-9 expected).
* Timing: one warm-up call, then the median of ``--repeat`` calls (alphalens: ``--al-repeat``,
  default 1 with no warm-up: it has nothing to compile). Throughput = T * N * factors / time.

Run: ``python benchmarks/bench_evaluate.py [--times 2000 --symbols 3000 --al-factors 1]``.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import environment, fmt_cpu, fmt_ms, fmt_other, measure, table, wait_quiet  # noqa: E402

import factorflow as ff  # noqa: E402
from factorflow.demo import DEMO_FACTORS  # noqa: E402

PERIODS = (1, 5, 10)
Q = 5


def alphalens_one(al, pd, fac, prices, times, symbols):
    idx = pd.MultiIndex.from_product([times, symbols], names=["date", "asset"])
    factor = pd.Series(fac.reshape(-1), index=idx).dropna()
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fd = al.utils.get_clean_factor_and_forward_returns(factor, prices, quantiles=Q, periods=PERIODS,
                                                           filter_zscore=None, max_loss=1.0)
        ic = al.performance.factor_information_coefficient(fd)
        mean_ret, _ = al.performance.mean_return_by_quantile(fd)
        turnover = [al.performance.quantile_turnover(fd["factor_quantile"], q, period=1) for q in range(1, Q + 1)]
        autocorr = al.performance.factor_rank_autocorrelation(fd, period=1)
    return ic, mean_ret, turnover, autocorr


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--times", type=int, default=2000)
    ap.add_argument("--symbols", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--al-factors", type=int, default=1, help="factors alphalens is timed on (scaled to all)")
    ap.add_argument("--al-repeat", type=int, default=1)
    ap.add_argument("--quiet-wait", type=float, default=15.0)
    args = ap.parse_args(argv)

    import alphalens as al
    import pandas as pd
    import polars as pl

    T, N = args.times, args.symbols
    print(environment(["alphalens", "pandas", "polars", "numba", "dask"]))
    print(f"load average before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    src = ff.sample_panel(T, N, seed=0)
    t0 = time.perf_counter()
    values = ff.compute(DEMO_FACTORS, src).to_numpy()
    print(f"data: {T} dates x {N} symbols, {len(values)} factors (computed in {time.perf_counter() - t0:.1f} s, untimed), "
          f"periods {PERIODS}, {Q} quantiles", file=sys.stderr)
    times = pd.bdate_range("2015-01-02", periods=T)
    symbols = np.array([f"S{j:05d}" for j in range(N)])
    close = src.to_numpy("close")
    panel = ff.Panel.from_numpy({"close": close, **values}, times=times.values, symbols=symbols)
    names = list(DEMO_FACTORS)
    F = len(names)
    cells = T * N * F

    rows = []

    def run_ff():
        return ff.evaluate(names, panel, periods=PERIODS, quantiles=Q)

    wait_quiet(args.quiet_wait)
    ev, t_thr = measure(run_ff, repeat=args.repeat)
    rows.append(["factorflow, threaded scheduler", F, fmt_ms(t_thr.median_s), t_thr.n, f"{cells / t_thr.median_s / 1e6:.1f}",
                 fmt_cpu(t_thr), fmt_other(t_thr)])
    print("factorflow threaded done", file=sys.stderr)
    with ff.cluster.local(dashboard_address=None):
        wait_quiet(args.quiet_wait)
        _, t_cl = measure(run_ff, repeat=args.repeat, keep_first=False)
    rows.append(["factorflow, embedded cluster", F, fmt_ms(t_cl.median_s), t_cl.n, f"{cells / t_cl.median_s / 1e6:.1f}",
                 fmt_cpu(t_cl), fmt_other(t_cl)])
    print("factorflow cluster done", file=sys.stderr)

    k = max(1, min(args.al_factors, F))
    prices = pd.DataFrame(close, index=times, columns=symbols)
    wait_quiet(args.quiet_wait)
    walls = []
    worst = 0.0
    for rep in range(args.al_repeat):
        t0 = time.perf_counter()
        results = [alphalens_one(al, pd, values[n], prices, times, symbols) for n in names[:k]]
        walls.append(time.perf_counter() - t0)
        print(f"alphalens pass {rep + 1}: {walls[-1]:.1f} s for {k} factor(s)", file=sys.stderr)
    for n, (ic, mean_ret, _, _) in zip(names[:k], results):
        o = ev.ic.filter(pl.col("factor") == n)
        for per, col in zip(PERIODS, ic.columns):
            ours = o.filter(pl.col("period") == per)["rank_ic"].to_numpy()
            ref = ic[col].dropna().to_numpy()
            ours = ours[~np.isnan(ours)]
            worst = max(worst, float(np.max(np.abs(ours - ref))) if len(ours) == len(ref) else np.inf)
            qr = ev.quantile_returns.filter((pl.col("factor") == n) & (pl.col("period") == per)).sort("quantile")
            worst = max(worst, float(np.max(np.abs(qr["mean_return"].to_numpy() - mean_ret[col].to_numpy()))))
    al_med = float(np.median(walls))
    al_full = al_med * F / k
    rows.append([f"alphalens-reloaded ({k} factor{'s' if k > 1 else ''} timed, x{F / k:g})", F, fmt_ms(al_full),
                 len(walls), f"{cells / al_full / 1e6:.2f}", "-", "-"])
    print()
    print(table(["row", "factors", "median", "n", "Mcells/s", "cpu/wall", "other"], rows))
    print()
    print(f"speed-up vs alphalens (scaled to {F} factors): threaded {al_full / t_thr.median_s:.1f}x, "
          f"embedded cluster {al_full / t_cl.median_s:.1f}x (target >= 20x)")
    print(f"alphalens per factor: {al_med / k:.1f} s; check: max |rank IC or quantile return difference| over "
          f"{k} factor(s) = {worst:.2e}")
    print(f"load average after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")


if __name__ == "__main__":
    main()
