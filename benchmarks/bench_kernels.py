"""Kernel micro-benchmark: factorflow's Numba kernels against pandas, bottleneck, numbagg, Polars.

Method
------
* Data: a ``(times, symbols)`` float64 panel, ``x`` and ``y`` independent random walks
  (``100 + cumsum(N(0, 1))`` along time) with ~1% of the cells set to NaN at random; window 20.
* Operators: ``ts_mean``, ``ts_std`` (ddof 1), ``ema`` (span 20, pandas ``adjust=False``),
  ``ewma`` (span 20, ``adjust=True``: numbagg's only EWM flavour, so it is compared like for
  like), ``ts_rank`` (pct rank, ties averaged), ``ts_corr``, ``ts_median``, ``ts_quantile``
  (q = 0.8, linear interpolation); all with ``min_periods = window``.
* factorflow rows call the kernels directly on the whole C-contiguous ``(T, N)`` array, single
  threaded: "prealloc" writes into one reused output, "fresh out" allocates ``np.empty`` per call
  (the page faults of a new 160 MB array are part of the cost).
* Peers run in the same process on the same data. Layout matters to them, so each is labelled:
  ``(T,N) axis 0`` is the panel as is; ``(N,T) copy`` is a time-contiguous transposed copy made
  before timing (transposing is not timed); pandas and Polars frames are built before timing, with
  Polars NaNs turned into nulls (Polars' missing value). Polars "long" is a one-row-per-cell frame
  sorted by (symbol, time) using ``.over("symbol")``.
* Results are cross-checked against factorflow's on the warm-up call (``np.allclose``,
  ``equal_nan``, rtol 1e-6, atol 1e-8). Where a peer's native output differs in form (bottleneck's
  rank in [-1, 1], Polars' 1-based rank and null on missing input rows for ``ewm_mean``) the
  conversion is applied for the check only and the row says so. A mismatching peer is reported and
  left out of the verdict.
* Slow peers: pandas ``rolling.rank`` / ``rolling.corr`` / ``rolling.median`` /
  ``rolling.quantile`` and Polars ``rolling_rank`` / ``rolling_median`` / ``rolling_quantile`` run on the
  first ``--slow-cols`` symbols and their time is scaled up to the full panel (labelled; their cost
  is linear in the number of symbols); any case stops repeating once its timed calls exceed
  ``--budget`` seconds (after at least 2), the ``n`` column says how many ran.
* Timing: one warm-up call (Numba compilation, page faults), then the median of ``--repeat``
  calls. ``cpu/wall`` is process CPU time over wall time: > 1 means the implementation used
  several threads (factorflow's kernels use one).
* Roofline: ``np.copyto(out, x)`` into a reused output reads and writes as many bytes as a
  one-pass window kernel, so ``copy time / kernel time`` is the fraction of the memory-bandwidth
  bound reached (reported for ts_mean and ema).

Run: ``python benchmarks/bench_kernels.py [--times 4000 --symbols 5000 --repeat 5]``.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import compare, environment, fmt_cpu, fmt_ms, fmt_other, fmt_rate, measure, table, wait_quiet  # noqa: E402

OPS = ("ts_mean", "ts_std", "ema", "ewma", "ts_rank", "ts_corr", "ts_median", "ts_quantile")
Q = 0.8  # ts_quantile's q
FF_PRE = "factorflow (prealloc)"
FF_FRESH = "factorflow (fresh out)"


def make_data(T: int, N: int, seed: int = 0, nan_frac: float = 0.01):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(2):
        a = 100.0 + np.cumsum(rng.standard_normal((T, N)), axis=0)
        a[rng.random((T, N)) < nan_frac] = np.nan
        out.append(a)
    return out


class Runner:
    """Runs cases, checks them against factorflow's reference results, keeps the rows."""

    def __init__(self, args, refs: dict, N: int):
        self.args = args
        self.refs = refs
        self.N = N
        self.rows: list[dict] = []

    def case(self, op, impl, layout, fn, to_array=None, cols=None, note=""):
        """Time ``fn``; ``to_array`` turns its result into a (T, N[:cols]) float array for the check;
        ``cols``: the case runs on the first ``cols`` symbols only and its time is scaled up."""
        row = dict(op=op, impl=impl, layout=layout, note=note, scale=1.0)
        if cols is not None and cols < self.N:
            row["scale"] = self.N / cols
            row["note"] = (note + "; " if note else "") + f"run on {cols} of {self.N} symbols, time x{self.N / cols:.0f}"
        try:
            wait_quiet(self.args.quiet_wait)
            first, t = measure(fn, self.args.repeat, self.args.budget)
            want = self.refs[op] if cols is None else self.refs[op][:, :cols]
            got = first if to_array is None else to_array(first)
            row["ok"], row["check"] = compare(got, want)
            del first, got
            row["timing"] = t
        except Exception as e:  # a peer failing is a result, not a crash
            row["ok"], row["check"], row["timing"] = False, f"FAILED: {type(e).__name__}: {e}"[:160], None
        self.rows.append(row)
        status = "ok" if row["ok"] else row["check"]
        ms = fmt_ms(row["timing"].median_s * row["scale"]) if row["timing"] else "-"
        print(f"  {op:<8} {impl:<32} {layout:<14} {ms:>8} ms  {status}", file=sys.stderr, flush=True)

    def missing(self, impl, why):
        self.rows.append(dict(op="*", impl=impl, layout="", note="", scale=1.0, ok=False,
                              check=f"not run: {why}", timing=None))
        print(f"  {impl}: not run: {why}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
def factorflow_cases(run: Runner, x, y, W):
    from factorflow.kernels.cpu import recursive, rolling

    T, N = x.shape
    alpha = 2.0 / (W + 1.0)
    kernels = {
        "ts_mean": lambda o: rolling.ts_mean(x, W, W, o),
        "ts_std": lambda o: rolling.ts_std(x, W, W, o),
        "ema": lambda o: recursive.ewm_mean(x, alpha, False, recursive.ewm_init_state(N), o),
        "ewma": lambda o: recursive.ewm_mean(x, alpha, True, recursive.ewm_init_state(N), o),
        "ts_rank": lambda o: rolling.ts_rank(x, W, W, o),
        "ts_corr": lambda o: rolling.ts_corr(x, y, W, W, o),
        "ts_median": lambda o: rolling.ts_median(x, W, W, o),
        "ts_quantile": lambda o: rolling.ts_quantile(x, W, Q, W, o),
    }
    out = np.empty_like(x)
    for op, k in kernels.items():
        ref = np.empty_like(x)
        k(ref)  # compiles (or loads from Numba's cache)
        run.refs[op] = ref

        def pre(k=k):
            k(out)
            return out

        def fresh(k=k):
            o = np.empty_like(x)
            k(o)
            return o

        run.case(op, FF_PRE, "(T,N)", pre)
        run.case(op, FF_FRESH, "(T,N)", fresh)


def pandas_cases(run: Runner, x, y, W, k):
    import pandas as pd

    dx = pd.DataFrame(x)
    dxs, dys = pd.DataFrame(x[:, :k]), pd.DataFrame(y[:, :k])
    arr = lambda r: r.to_numpy()  # noqa: E731
    lay = "DataFrame"
    run.case("ts_mean", "pandas rolling.mean", lay, lambda: dx.rolling(W).mean(), arr)
    run.case("ts_std", "pandas rolling.std", lay, lambda: dx.rolling(W).std(), arr)
    run.case("ema", "pandas ewm(adjust=False).mean", lay, lambda: dx.ewm(span=W, adjust=False).mean(), arr)
    run.case("ewma", "pandas ewm(adjust=True).mean", lay, lambda: dx.ewm(span=W, adjust=True).mean(), arr)
    run.case("ts_rank", "pandas rolling.rank(pct=True)", lay, lambda: dxs.rolling(W).rank(pct=True), arr, cols=k)
    run.case("ts_corr", "pandas rolling.corr", lay, lambda: dxs.rolling(W).corr(dys), arr, cols=k)
    run.case("ts_median", "pandas rolling.median", lay, lambda: dxs.rolling(W).median(), arr, cols=k)
    run.case("ts_quantile", "pandas rolling.quantile", lay, lambda: dxs.rolling(W).quantile(Q), arr, cols=k)


def bottleneck_cases(run: Runner, x, xt, W):
    import bottleneck as bn

    n = W - 1
    rank_note = "native rank in [-1, 1], rescaled to pct for the check"
    to_pct = lambda r: ((r + 1.0) / 2.0 * n + 1.0) / W  # noqa: E731
    for a, axis, lay, tr in ((x, 0, "(T,N) axis 0", None), (xt, 1, "(N,T) copy", lambda r: r.T)):
        t = tr or (lambda r: r)
        run.case("ts_mean", "bottleneck move_mean", lay, lambda: bn.move_mean(a, W, axis=axis), tr)
        run.case("ts_std", "bottleneck move_std(ddof=1)", lay, lambda: bn.move_std(a, W, axis=axis, ddof=1), tr)
        run.case("ts_rank", "bottleneck move_rank", lay, lambda: bn.move_rank(a, W, axis=axis),
                 lambda r, t=t: to_pct(t(r)), note=rank_note)
        run.case("ts_median", "bottleneck move_median", lay, lambda: bn.move_median(a, W, axis=axis), tr)


def numbagg_cases(run: Runner, x, y, xt, yt, W):
    import numbagg as nb

    alpha = 2.0 / (W + 1.0)
    for a, b, axis, lay, tr in ((x, y, 0, "(T,N) axis 0", None), (xt, yt, -1, "(N,T) copy", lambda r: r.T)):
        run.case("ts_mean", "numbagg move_mean", lay, lambda: nb.move_mean(a, window=W, axis=axis), tr)
        run.case("ts_std", "numbagg move_std", lay, lambda: nb.move_std(a, window=W, axis=axis), tr)
        run.case("ewma", "numbagg move_exp_nanmean", lay, lambda: nb.move_exp_nanmean(a, alpha=alpha, axis=axis), tr)
        run.case("ts_corr", "numbagg move_corr", lay, lambda: nb.move_corr(a, b, window=W, axis=axis), tr)


def polars_cases(run: Runner, x, y, W, k):
    import polars as pl

    T, N = x.shape
    xnan = np.isnan(x)
    ema_note = "null on missing input rows (ff carries the average); compared on the other cells"

    def fill_missing_rows(op):
        def f(r):
            r = np.array(r, dtype=np.float64)
            r[xnan] = run.refs[op][xnan]
            return r
        return f

    rank_note = "native 1-based rank, divided by the window for the check"
    # wide: one column per symbol
    xcols = [f"x{j}" for j in range(N)]
    ycols = [f"y{j}" for j in range(N)]
    wx = pl.from_numpy(x, schema=xcols, orient="row").fill_nan(None)
    lay = "wide frame"
    wide = lambda r: r.to_numpy()  # noqa: E731
    run.case("ts_mean", "polars rolling_mean", lay, lambda: wx.select(pl.all().rolling_mean(W)), wide)
    run.case("ts_std", "polars rolling_std", lay, lambda: wx.select(pl.all().rolling_std(W)), wide)
    run.case("ema", "polars ewm_mean(adjust=False)", lay,
             lambda: wx.select(pl.all().ewm_mean(span=W, adjust=False)), lambda r: fill_missing_rows("ema")(wide(r)),
             note=ema_note)
    run.case("ewma", "polars ewm_mean(adjust=True)", lay,
             lambda: wx.select(pl.all().ewm_mean(span=W, adjust=True)), lambda r: fill_missing_rows("ewma")(wide(r)),
             note=ema_note)
    wxs = wx.select(xcols[:k])
    run.case("ts_rank", "polars rolling_rank", lay, lambda: wxs.select(pl.all().rolling_rank(W)),
             lambda r: wide(r) / W, cols=k, note=rank_note)
    wxy = pl.concat([wx, pl.from_numpy(y, schema=ycols, orient="row").fill_nan(None)], how="horizontal")
    corr_exprs = [pl.rolling_corr(a, b, window_size=W).alias(a) for a, b in zip(xcols, ycols)]
    run.case("ts_corr", "polars rolling_corr", lay, lambda: wxy.select(corr_exprs), wide)
    run.case("ts_median", "polars rolling_median", lay, lambda: wxs.select(pl.all().rolling_median(W)), wide, cols=k)
    run.case("ts_quantile", "polars rolling_quantile", lay,
             lambda: wxs.select(pl.all().rolling_quantile(Q, interpolation="linear", window_size=W)), wide, cols=k)
    del wx, wxs, wxy

    # long: one row per (symbol, time), sorted by symbol then time
    lf = pl.DataFrame({
        "symbol": np.repeat(np.arange(N, dtype=np.int32), T),
        "x": np.ascontiguousarray(x.T).ravel(),
        "y": np.ascontiguousarray(y.T).ravel(),
    }).with_columns(pl.col("x").fill_nan(None), pl.col("y").fill_nan(None))
    lay = "long .over"
    long = lambda r: r.to_series(0).to_numpy().reshape(N, T).T  # noqa: E731
    over = lambda e: lf.select(e.over("symbol"))  # noqa: E731
    run.case("ts_mean", "polars rolling_mean", lay, lambda: over(pl.col("x").rolling_mean(W)), long)
    run.case("ts_std", "polars rolling_std", lay, lambda: over(pl.col("x").rolling_std(W)), long)
    run.case("ema", "polars ewm_mean(adjust=False)", lay, lambda: over(pl.col("x").ewm_mean(span=W, adjust=False)),
             lambda r: fill_missing_rows("ema")(long(r)), note=ema_note)
    run.case("ewma", "polars ewm_mean(adjust=True)", lay, lambda: over(pl.col("x").ewm_mean(span=W, adjust=True)),
             lambda r: fill_missing_rows("ewma")(long(r)), note=ema_note)
    lfs = lf.filter(pl.col("symbol") < k)
    run.case("ts_rank", "polars rolling_rank", lay, lambda: lfs.select(pl.col("x").rolling_rank(W).over("symbol")),
             lambda r: r.to_series(0).to_numpy().reshape(k, T).T / W, cols=k, note=rank_note)
    run.case("ts_corr", "polars rolling_corr", lay, lambda: over(pl.rolling_corr("x", "y", window_size=W)), long)


# ------------------------------------------------------------------------------------------------
def report(run: Runner, copy_s: float, cells: int) -> str:
    lines = []
    head = ["operator", "implementation", "layout", "n", "median ms", "Mcells/s", "cpu/wall", "other", "time/ff",
            "copy/time", "check"]
    body = []
    verdicts = []
    for op in OPS:
        rows = [r for r in run.rows if r["op"] == op]
        if not rows:
            continue
        ff = next((r for r in rows if r["impl"] == FF_PRE and r["timing"]), None)
        ff_s = ff["timing"].median_s if ff else None
        for r in rows:
            t = r["timing"]
            if t is None:
                body.append([op, r["impl"], r["layout"], "", "-", "-", "-", "-", "-", "-", r["check"]])
                continue
            s = t.median_s * r["scale"]
            check = "ok" if r["ok"] else "MISMATCH: " + r["check"]
            if r["note"]:
                check += f" ({r['note']})"
            body.append([
                op, r["impl"], r["layout"], t.n, fmt_ms(s), fmt_rate(cells, s), fmt_cpu(t), fmt_other(t),
                f"{s / ff_s:.2f}" if ff_s else "-",
                f"{copy_s / s:.0%}" if op in ("ts_mean", "ema") else "",
                check,
            ])
        peers = [r for r in rows if not r["impl"].startswith("factorflow") and r["timing"] and r["ok"]]
        bad = [r for r in rows if not r["impl"].startswith("factorflow") and not r["ok"]]
        if ff_s is None:
            verdicts.append(f"{op}: factorflow did not run")
        elif not peers:
            verdicts.append(f"{op}: factorflow {fmt_ms(ff_s)} ms; no peer ran with matching results")
        else:
            best = min(peers, key=lambda r: r["timing"].median_s * r["scale"])
            bs = best["timing"].median_s * best["scale"]
            how = f"{bs / ff_s:.2f}x faster" if bs >= ff_s else f"{ff_s / bs:.2f}x slower"
            v = (f"{op}: factorflow {fmt_ms(ff_s)} ms is {how} than the fastest peer, {best['impl']} "
                 f"[{best['layout']}] {fmt_ms(bs)} ms")
            cpu = best["timing"].cpu_ratio
            if cpu is not None and cpu > 1.2:  # the peer used several threads: compare CPU time too
                ff_cpu = ff_s * (ff["timing"].cpu_ratio or 1.0)
                r = bs * cpu / ff_cpu
                v += (f" using {cpu:.1f} cores; per CPU-second factorflow is "
                      + (f"{r:.2f}x faster" if r >= 1 else f"{1 / r:.2f}x slower"))
            if bad:
                v += f"; excluded (mismatch/failed): {', '.join(r['impl'] + ' [' + r['layout'] + ']' for r in bad)}"
            verdicts.append(v)
    lines.append(table(head, body, right={3, 4, 5, 6, 7, 8, 9}))
    for r in run.rows:
        if r["op"] == "*":
            lines.append(f"{r['impl']}: {r['check']}")
    lines.append("")
    lines.append("Verdict (factorflow = preallocated output, single thread):")
    lines += ["  " + v for v in verdicts]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--times", type=int, default=4000)
    ap.add_argument("--symbols", type=int, default=5000)
    ap.add_argument("--window", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=5, help="timed calls per case (median reported)")
    ap.add_argument("--budget", type=float, default=5.0, help="seconds of timed calls after which a case stops repeating")
    ap.add_argument("--slow-cols", type=int, default=1000,
                    help="symbols the slow peers (pandas rolling.rank/corr, polars rolling_rank) run on; time scaled up")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quiet-wait", type=float, default=15.0,
                    help="before each case, wait up to this many seconds for other jobs to leave the cores (0: off)")
    ap.add_argument("--peers", default="pandas,bottleneck,numbagg,polars", help="comma-separated peers to run")
    args = ap.parse_args(argv)

    T, N, W = args.times, args.symbols, args.window
    cells = T * N
    print(f"bench_kernels: {T} times x {N} symbols float64 ({cells / 1e6:.0f} M cells, {cells * 8 / 2**20:.0f} MiB "
          f"per array), window {W}, ~1% NaN, median of {args.repeat} after 1 warm-up")
    print(environment(["pandas", "bottleneck", "numbagg", "polars"]))
    x, y = make_data(T, N, args.seed)
    run = Runner(args, {}, N)

    out = np.empty_like(x)
    wait_quiet(args.quiet_wait)
    _, copy_t = measure(lambda: np.copyto(out, x), args.repeat)
    del out
    print(f"roofline: np.copyto(out, x) into a reused output: {fmt_ms(copy_t.median_s)} ms = "
          f"{cells * 16 / copy_t.median_s / 1e9:.1f} GB/s read+write, {fmt_rate(cells, copy_t.median_s)} Mcells/s")

    factorflow_cases(run, x, y, W)
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    xt = yt = None
    if {"bottleneck", "numbagg"} & set(peers):
        xt, yt = np.ascontiguousarray(x.T), np.ascontiguousarray(y.T)
    for name in peers:
        try:
            __import__(name)
        except Exception as e:
            run.missing(name, f"import failed ({type(e).__name__}: {e})")
            continue
        try:
            if name == "pandas":
                pandas_cases(run, x, y, W, min(args.slow_cols, N))
            elif name == "bottleneck":
                bottleneck_cases(run, x, xt, W)
            elif name == "numbagg":
                numbagg_cases(run, x, y, xt, yt, W)
            elif name == "polars":
                polars_cases(run, x, y, W, min(args.slow_cols, N))
            else:
                run.missing(name, "unknown peer")
        except Exception as e:  # e.g. an API missing in this version while building the cases
            run.missing(name, f"setup failed ({type(e).__name__}: {e})"[:200])
    print()
    print(report(run, copy_t.median_s, cells))


if __name__ == "__main__":
    main()
