"""Ticks -> 1min bars: factorflow's ``TickStore.bars`` against plain Polars and pandas pipelines.

Method
------
* Data: a synthetic store from ``factorflow.engine.tickgen.generate_ticks`` (``--symbols`` x
  ``--days``, ``--ticks-per-day`` trades per symbol and day on average; default 500 x 5 x 10000
  = about 25 M ticks, 250 MB of zstd Parquet), generated once and cached under ``--data-dir``
  (default ``$TMPDIR/factorflow-bench``).
* Work: every tick of the store -> 1min bars of every symbol: open, high, low, close, volume,
  amount, trades, last bid and ask (plus vwap for factorflow). Throughput = ticks / wall time.
* Rows:

  - ``factorflow``: ``store.bars("1min")`` materialised in this process (``Panel.compute()``):
    graph building, Parquet reads with validation (``TickStore.read_day``), aggregation, and for
    worker processes the transfer of the bars back. On Dask's threaded scheduler (no client), on
    a ``LocalCluster`` of 1 worker process x 1 thread and of 2 worker processes x 1 thread. The
    "kept on workers" row persists the bars on the 2 workers instead (nothing comes back).
  - ``polars``: ``scan_parquet`` of the same files -> ``group_by_dynamic("time", every="1m",
    group_by="symbol")`` -> ``collect()``: the plain single-process pipeline (Polars uses every
    core; no validation, no dense panel). Its bars are checked against factorflow's.
  - ``pandas``: ``read_parquet`` -> ``groupby("symbol").resample("1min", on="time")`` on the
    first ``--pandas-symbols`` symbols only (labelled; its throughput is over the ticks it read).

* Timing: one warm-up call, then the median of ``--repeat`` calls (``common.measure``).
  ``vs polars`` = row throughput / Polars throughput.
* Memory: while the factorflow rows run, the resident set size (RSS) of every Dask worker
  process (or of this process for the threaded row) is sampled every 10 ms; the table shows
  the peak increase over the idle RSS before the calls, against the largest partition: the
  in-memory size (Polars ``estimated_size``) of the largest (date x symbol bucket) frame
  ``read_day`` returns for one task. Target: below 4x.

Run: ``python benchmarks/bench_ticks.py [--symbols 500 --days 5 --ticks-per-day 10000 --repeat 3]``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RssSampler, compare, environment, fmt_cpu, fmt_other, measure, table, wait_quiet  # noqa: E402

import factorflow as ff  # noqa: E402
from factorflow.engine.tickgen import generate_ticks  # noqa: E402
from factorflow.engine.ticks import TickStore  # noqa: E402

try:
    import psutil
except ImportError:  # pragma: no cover
    psutil = None

STATS = ("open", "high", "low", "close", "volume", "amount", "trades", "bid", "ask")


def ensure_store(args) -> tuple[str, dict]:
    """The cached store for these arguments (generated on first use)."""
    name = f"ticks-{args.symbols}x{args.days}-seed{args.seed}-rate{args.ticks_per_day:g}"
    path = os.path.join(args.data_dir, name)
    marker = os.path.join(path, ".generated.json")
    if os.path.exists(marker):
        with open(marker) as f:
            return path, json.load(f)
    print(f"generating {name} under {args.data_dir} ...", file=sys.stderr, flush=True)
    info = generate_ticks(path, symbols=args.symbols, days=args.days, seed=args.seed,
                          ticks_per_day=args.ticks_per_day, overwrite=True)
    info = {k: info[k] for k in ("ticks", "bytes", "seconds", "dates", "files")}
    with open(marker, "w") as f:
        json.dump(info, f)
    return path, info


def warm_process() -> int:
    """Import what a bars task uses and load the kernel (so the idle RSS baseline includes the
    libraries, not just the data); returns the pid."""
    import polars as pl
    from factorflow.engine.bars import aggregate_day

    ticks = pl.DataFrame({"time": pl.Series([0], dtype=pl.Datetime("ns", "UTC")), "symbol": ["A"], "price": [1.0],
                          "size": [1.0], "bid": [1.0], "ask": [1.0]})
    aggregate_day(ticks, "1970-01-01", "1min", "24h", ["A"])
    return os.getpid()


def polars_pipeline(path: str):
    import polars as pl

    def run():
        return (pl.scan_parquet(os.path.join(path, "date=*", "*.parquet"), hive_partitioning=False)
                .select("time", "symbol", "price", "size", "bid", "ask")
                .group_by_dynamic("time", every="1m", group_by="symbol")
                .agg(pl.col("price").first().alias("open"), pl.col("price").max().alias("high"),
                     pl.col("price").min().alias("low"), pl.col("price").last().alias("close"),
                     pl.col("size").sum().alias("volume"), (pl.col("price") * pl.col("size")).sum().alias("amount"),
                     pl.len().alias("trades"), pl.col("bid").drop_nulls().last().alias("bid"),
                     pl.col("ask").drop_nulls().last().alias("ask"))
                .collect())
    return run


def pandas_pipeline(path: str, symbols: list[str]):
    import pandas as pd
    import pyarrow.dataset as ds

    dataset = ds.dataset(path, format="parquet", partitioning="hive")
    flt = ds.field("symbol").isin(symbols)

    def run():
        df = dataset.to_table(columns=["time", "symbol", "price", "size", "bid", "ask"], filter=flt).to_pandas()
        df["symbol"] = df["symbol"].astype(str)
        df["amount"] = df["price"] * df["size"]
        r = df.groupby("symbol").resample("1min", on="time")
        out = pd.DataFrame({"open": r["price"].first(), "high": r["price"].max(), "low": r["price"].min(),
                            "close": r["price"].last(), "volume": r["size"].sum(), "amount": r["amount"].sum(),
                            "trades": r["price"].count(), "bid": r["bid"].last(), "ask": r["ask"].last()})
        return out[out["trades"] > 0], len(df)
    return run


def check_against_polars(bars: dict, times, symbols, pol) -> str:
    """factorflow's dense bars vs the Polars long result (every non-empty bar, both ways)."""
    import polars as pl

    t_index = {int(t): i for i, t in enumerate(times.astype("datetime64[ns]").astype(np.int64))}
    s_index = {s: j for j, s in enumerate(symbols)}
    ti = np.array([t_index.get(int(t), -1) for t in pol["time"].dt.cast_time_unit("ns").to_physical().to_numpy()])
    si = np.array([s_index.get(s, -1) for s in pol["symbol"].cast(pl.String).to_list()])
    if (ti < 0).any() or (si < 0).any():
        return "MISMATCH: Polars has bars outside factorflow's calendar"
    if (bars["trades"] > 0).sum() != len(pol):
        return f"MISMATCH: {(bars['trades'] > 0).sum()} non-empty bars vs {len(pol)}"
    for f in STATS:
        ok, msg = compare(bars[f][ti, si], pol[f].cast(pl.Float64).to_numpy(), rtol=1e-9, atol=0)
        if not ok:
            return f"MISMATCH {f}: {msg}"
    return "ok"


def largest_partition(store, freq="1min", symbols_per_task=None):
    """(bytes, date, symbols) of the largest (date x bucket) frame one task reads, per the
    default layout of ``bars_panel`` (estimated from a planned panel's buckets)."""
    panel = store.bars(freq, symbols_per_task=symbols_per_task)
    arr = panel._groups[0].data
    graph = arr.__dask_graph__()
    best = (0, None, 0)
    specs = [v for k, v in dict(graph).items() if isinstance(k, tuple) and k[0] == arr.name]
    # the largest day by rows, then its buckets
    import pyarrow.parquet as pq

    rows = {d: sum(pq.read_metadata(f).num_rows for f in store.files(d)) for d in store.dates()}
    day = max(rows, key=rows.get)
    seen = set()
    for task in specs:
        spec = _spec_of(task)
        if spec is None or day not in spec.dates or spec.symbols in seen:
            continue
        seen.add(spec.symbols)
        df = store.read_day(day, symbols=spec.read_symbols, columns=list(spec.columns))
        size = df.estimated_size()
        if size > best[0]:
            best = (size, day, len(spec.symbols))
        del df
    return best


def _spec_of(task):
    from factorflow.engine.bars import _BlockSpec

    for a in getattr(task, "args", ()) or ():
        v = getattr(a, "value", a)
        if isinstance(v, _BlockSpec):
            return v
    if isinstance(task, tuple):
        for a in task:
            if isinstance(a, _BlockSpec):
                return a
    return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--symbols", type=int, default=500)
    ap.add_argument("--days", type=int, default=5)
    ap.add_argument("--ticks-per-day", type=float, default=10000.0, help="mean trades per symbol and day")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--pandas-symbols", type=int, default=20, help="pandas runs on this many symbols only")
    ap.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "factorflow-bench"))
    ap.add_argument("--symbols-per-task", type=int, default=None,
                    help="bucket size for factorflow (default: bars_panel's rule)")
    ap.add_argument("--quiet-wait", type=float, default=15.0)
    ap.add_argument("--only-factorflow", action="store_true", help="skip pandas (Polars still runs: checks)")
    args = ap.parse_args(argv)
    R = args.repeat

    path, info = ensure_store(args)
    n_ticks = info["ticks"]
    print(f"bench_ticks: ticks -> 1min bars, {args.symbols} symbols x {args.days} days, {n_ticks / 1e6:.1f} M ticks, "
          f"{info['bytes'] / 1e6:.0f} MB Parquet ({path}); median of {R} after 1 warm-up")
    print(environment(["dask", "distributed", "polars", "pyarrow", "pandas"]))
    store = TickStore(path)
    symbols = store.symbols()
    rows = []
    results = {}

    def timed(fn, keep_first=True):
        wait_quiet(args.quiet_wait)
        return measure(fn, R, keep_first=keep_first)

    def add(label, t, ticks, check="", mem="", layout=""):
        rows.append(dict(label=label, t=t, ticks=ticks, check=check, mem=mem, layout=layout))
        print(f"  {label}: {t.median_s * 1e3:.0f} ms {check}", file=sys.stderr, flush=True)

    # 1. plain Polars -----------------------------------------------------------------------------
    pol, t_pol = timed(polars_pipeline(path))
    add("polars scan_parquet -> group_by_dynamic", t_pol, n_ticks, check="reference")

    # 2. pandas (subset) ----------------------------------------------------------------------------
    if not args.only_factorflow:
        subset = symbols[:args.pandas_symbols]
        (pd_out, pd_ticks), t_pd = timed(pandas_pipeline(path, subset))
        add(f"pandas groupby.resample ({len(subset)} symbols, {pd_ticks / 1e6:.1f} M ticks)", t_pd, pd_ticks)
        del pd_out

    # 3. factorflow --------------------------------------------------------------------------------
    part_bytes, part_day, part_syms = largest_partition(store, symbols_per_task=args.symbols_per_task)

    def ff_run():
        return store.bars("1min", symbols_per_task=args.symbols_per_task).compute()

    def layout_of(p):
        c = p._groups[0].data.chunks
        return f"{len(c[1])}x{len(c[2])} tasks ({max(c[2])} sym)"

    def ff_row(label, pids):
        sampler = RssSampler(pids) if psutil else None
        if sampler:
            with sampler:
                res, t = timed(ff_run)
            mem = max(sampler.growth) / part_bytes
            mem_s = f"{max(sampler.growth) / 1e6:.0f} MB = {mem:.1f}x"
        else:
            res, t = timed(ff_run)
            mem_s = "?"
        bars = res.to_numpy()
        check = check_against_polars(bars, res.times, list(res.symbols), pol)
        results[label] = bars
        add(label, t, n_ticks, check=check, mem=mem_s,
            layout=layout_of(store.bars("1min", symbols_per_task=args.symbols_per_task)))
        del res

    ff_row("factorflow bars, threaded scheduler (RSS: this process)", [warm_process()])
    for n in (1, 2):
        with ff.cluster.local(processes=True, n_workers=n, threads_per_worker=1, dashboard_address=None) as c:
            pids = list(c.client.run(warm_process).values())
            ff_row(f"factorflow bars, {n} worker process{'es' if n > 1 else ''}", pids)
            if n == 2:
                from distributed import wait

                def kept():
                    arr = store.bars("1min", symbols_per_task=args.symbols_per_task)._groups[0].data
                    fut = c.client.persist(arr)
                    wait(fut)
                    return fut
                sampler = RssSampler(pids) if psutil else None
                with sampler:
                    _, t = timed(kept, keep_first=False)
                add("factorflow bars, 2 worker processes, kept on workers", t, n_ticks, check="not gathered",
                    mem=f"{max(sampler.growth) / 1e6:.0f} MB = {max(sampler.growth) / part_bytes:.1f}x")

    # table -----------------------------------------------------------------------------------------
    pol_rate = n_ticks / t_pol.median_s
    out = []
    for r in rows:
        rate = r["ticks"] / r["t"].median_s
        out.append([r["label"], f"{r['t'].median_s * 1e3:.0f}", f"{min(r['t'].all_s) * 1e3:.0f}-{max(r['t'].all_s) * 1e3:.0f}",
                    f"{rate / 1e6:.1f}", f"{rate / pol_rate:.2f}x", r["layout"], r["mem"], fmt_cpu(r["t"]),
                    fmt_other(r["t"]), r["check"]])
    print()
    print(table(["path", "median ms", "min-max ms", "Mticks/s", "vs polars", "tasks", "peak mem/worker",
                 "cpu/wall", "other", "check"], out))
    print()
    print(f"largest partition: {part_bytes / 1e6:.0f} MB in memory ({part_day}, {part_syms} symbols); "
          "peak mem/worker = peak RSS growth of each worker over its idle RSS, as a multiple of it (target < 4x)")
    t1 = next(r for r in rows if r["label"].endswith("1 worker process"))["t"].median_s
    t2 = next(r for r in rows if r["label"].endswith("2 worker processes"))["t"].median_s
    print(f"targets: 1 worker >= polars: {t_pol.median_s / t1:.2f}x ({'met' if t_pol.median_s / t1 >= 1 else 'NOT met'}); "
          f"2 workers >= 1.7x polars: {t_pol.median_s / t2:.2f}x ({'met' if t_pol.median_s / t2 >= 1.7 else 'NOT met'})")


if __name__ == "__main__":
    main()
