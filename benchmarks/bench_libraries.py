"""Factor libraries end to end: Alpha158 and Alpha101 through ``ff.compute`` against Qlib's
engine and a hand-written Polars lazy Alpha158, in the same run.

    .venv/bin/python benchmarks/bench_libraries.py                      # 1000 days x 2000 symbols
    .venv/bin/python benchmarks/bench_libraries.py --times 300 --symbols 200 --repeat 2   # quick look

Rows (median of ``--repeat`` timed calls after one warm-up; see benchmarks/README.md):

* ``factorflow ..., embedded cluster``: ``ff.cluster.local(n_workers=2, threads_per_worker=1)``
  (a LocalCluster with 2 workers in this process, the Jupyter default): ``ff.compute(lib,
  panel).compute()``, the result in this process.
* ``factorflow alpha158 float32 (Qlib's precision)``: the same, on the panel rounded to float32
  (every node stored in float32 as Qlib stores its features; kernels accumulate in float64).
  Its Alpha158 equals Qlib's within the parity tolerance
  (``tests/test_qlib_parity.py::test_alpha158_parity[float32]``), so it is the like-for-like row
  for the Qlib ratio; the float64 row is factorflow's default.
* ``factorflow ..., 2 worker processes``: ``ff.cluster.local(processes=True, n_workers=2,
  threads_per_worker=1)``, the panel persisted on the workers once, the result persisted there
  (nothing comes back).
* ``polars lazy``: ``benchmarks/alpha158_polars.py`` (158 features as one lazy query,
  ``rolling_*().over("symbol")`` on a long frame sorted by symbol and time, built before
  timing); Polars uses both cores.
* ``qlib``: Qlib 0.9's expression engine (``D.features``, one process) on the first
  ``--qlib-instruments`` symbols only, in its own virtualenv (``make qlib-venv``); its time per
  instrument-feature is scaled to the full panel (Qlib computes instrument by instrument, so
  its cost is linear in the number of instruments), and labelled as such.

Columns: ``median s``, ``min-max s``, ``M f-cells/s`` = times x symbols x features / time,
``vs polars`` / ``vs qlib`` = peer time / this row's time (per instrument-feature for Qlib),
``peak mem`` = the largest RSS growth of this process plus its worker processes during the
row's calls, ``cpu/wall``, ``other`` (see common.py). Checks: factorflow's Alpha158 against
Polars on every feature (relative 1e-6; IMAX/IMIN/IMXD compared where no window holds a NaN:
Qlib's and the Polars peer's IdxMax take a NaN as the maximum, factorflow skips it).
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from common import RssSampler, environment, fmt_cpu, fmt_other, measure, table, wait_quiet  # noqa: E402

import factorflow as ff  # noqa: E402

FIELDS = ("open", "high", "low", "close", "volume", "vwap")


def _pids(client=None):
    pids = [os.getpid()]
    if client is not None:
        try:
            pids += [int(p) for p in client.run(os.getpid).values() if int(p) != os.getpid()]
        except Exception:
            pass
    return sorted(set(pids))


def _row(label, timing, cells, peak, peers, check=""):
    return [label, f"{timing.median_s:.2f}", f"{min(timing.all_s):.2f}-{max(timing.all_s):.2f}",
            f"{cells / timing.median_s / 1e6:.0f}", *peers, f"{peak / 2**30:.1f} GB", fmt_cpu(timing),
            fmt_other(timing), check]


def _nan_windows(a, n):
    m = np.isnan(a).astype(np.float64)
    c = np.cumsum(m, axis=0)
    c[n:] = c[n:] - c[:-n]
    return c > 0


def check_against_polars(out, pl_df, panel, lib_names) -> str:
    T, N = len(panel.times), len(panel.symbols)
    bad = []
    holes = {n: _nan_windows(panel.to_numpy("high"), n) | _nan_windows(panel.to_numpy("low"), n)
             for n in (5, 10, 20, 30, 60)}
    for name in lib_names:
        ours = out.to_numpy(name)
        theirs = pl_df[name].to_numpy().astype(np.float64).reshape(N, T).T  # long (symbol, time) -> (T, N)
        if name[:4] in ("IMAX", "IMIN", "IMXD"):
            m = holes[int(name[4:])]
            ours, theirs = np.where(m, np.nan, ours), np.where(m, np.nan, theirs)
        with np.errstate(invalid="ignore"):
            ok = (np.isnan(ours) & np.isnan(theirs)) | np.isclose(ours, theirs, rtol=1e-6, atol=1e-9)
        frac = 1 - ok.mean()
        if frac > 1e-4:  # NaN-vs-inf conventions of derived inputs may differ on a handful of cells
            bad.append(f"{name} {frac:.2%}")
    return "ok (158 features)" if not bad else "differs: " + ", ".join(bad[:6])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--times", type=int, default=1000)
    ap.add_argument("--symbols", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--qlib-instruments", type=int, default=20)
    ap.add_argument("--quiet-wait", type=float, default=15.0)
    ap.add_argument("--skip", default="", help="comma-separated: polars,qlib,processes,alpha101,float32")
    args = ap.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    T, N = args.times, args.symbols

    print(f"bench_libraries: Alpha158 and Alpha101 on {T} days x {N} symbols, float64, median of "
          f"{args.repeat} after 1 warm-up")
    print(environment(("dask", "distributed", "polars")))
    panel = ff.sample_panel(T, N, seed=args.seed, groups=True)
    panel158 = panel.select(list(FIELDS))
    a158, a101 = ff.library("alpha158"), ff.library("alpha101")
    for name, lib, p in (("alpha158", a158, panel158), ("alpha101", a101, panel)):
        s = ff.explain(lib, p).summary()
        print(f"  {name}: {s['factors']} factors, {s['nodes_before_cse']} operator nodes in the formulas, "
              f"{s['distinct_operator_nodes']} distinct after CSE, {s['stages']} stages, {s['tasks']} tasks, "
              f"chunks {s['chunks']}")
    rows = []
    results = {}

    # --- factorflow, embedded cluster --------------------------------------------------------
    # float32: the same panel rounded to float32 and every node stored in float32, as Qlib stores
    # its features (the kernels accumulate in float64); Alpha158 in float32 matches Qlib within the
    # parity tolerance (tests/test_qlib_parity.py::test_alpha158_parity[float32])
    panel158_32 = None if "float32" in skip else ff.Panel.from_numpy(
        {f: panel158.to_numpy(f).astype(np.float32) for f in FIELDS}, times=panel158.times, symbols=panel158.symbols)
    with ff.cluster.local(n_workers=2, threads_per_worker=1, dashboard_address=None) as cl:
        for name, lib, p in (("alpha158", a158, panel158), ("alpha158-float32", a158, panel158_32),
                             ("alpha101", a101, panel)):
            if (name == "alpha101" and "alpha101" in skip) or p is None:
                continue
            wait_quiet(args.quiet_wait)
            print(f"  factorflow {name}, embedded cluster ...", file=sys.stderr, flush=True)
            with RssSampler(_pids(cl.client)) as rss:
                first, t = measure(lambda: ff.compute(lib, p).compute(), repeat=args.repeat)
            results[name] = (t, first, sum(rss.growth), T * N * len(lib))
            if name != "alpha158":
                del first
                results[name] = (t, None, sum(rss.growth), T * N * len(lib))

    # --- factorflow, 2 worker processes, resident -------------------------------------------
    proc = {}
    if "processes" not in skip:
        from distributed import wait

        with ff.cluster.local(processes=True, n_workers=2, threads_per_worker=1, dashboard_address=None) as cl:
            client = cl.client
            for name, lib, p in (("alpha158", a158, panel158), ("alpha101", a101, panel)):
                if name == "alpha101" and "alpha101" in skip:
                    continue
                resident = p.persist()
                wait([g.data for g in resident._groups])

                def run(lib=lib, resident=resident):
                    out = ff.compute(lib, resident)
                    kept = client.persist(out._groups[0].data)
                    wait(kept)
                    return kept

                wait_quiet(args.quiet_wait)
                print(f"  factorflow {name}, 2 worker processes ...", file=sys.stderr, flush=True)
                with RssSampler(_pids(client)) as rss:
                    _, t = measure(run, repeat=args.repeat, keep_first=False)
                proc[name] = (t, sum(rss.growth), T * N * len(lib))
                del resident

    # --- Polars ----------------------------------------------------------------------------------
    pl_t = None
    check = ""
    if "polars" not in skip:
        import polars as pl
        from alpha158_polars import alpha158_polars

        times = panel.times
        long = pl.DataFrame({
            "time": np.tile(times, N),
            "symbol": np.repeat(np.asarray(panel.symbols).astype(str), T),
            **{f: panel.to_numpy(f).T.ravel() for f in FIELDS},
        })
        wait_quiet(args.quiet_wait)
        print("  polars lazy alpha158 ...", file=sys.stderr, flush=True)
        with RssSampler(_pids()) as rss:
            pl_first, pl_t = measure(lambda: alpha158_polars(long.lazy(), presorted=True).collect(),
                                     repeat=args.repeat)
        pl_peak = sum(rss.growth)
        check = check_against_polars(results["alpha158"][1], pl_first, panel158, list(a158))
        del pl_first

    # --- Qlib ------------------------------------------------------------------------------------
    q = None
    if "qlib" not in skip:
        from qlib_harness import qlib_python, qlib_time_per_instrument, why_unavailable

        if qlib_python() is None:
            print(f"  qlib: skipped ({why_unavailable()})")
        else:
            k = min(args.qlib_instruments, N)
            print(f"  qlib alpha158 on {k} instruments ...", file=sys.stderr, flush=True)
            arrays = {f: panel.to_numpy(f)[:, :k] for f in FIELDS}
            q = qlib_time_per_instrument(arrays, panel.times.astype("datetime64[D]"),
                                         list(ff.factors.library_text("alpha158").values()),
                                         instruments=k, repeats=max(1, min(args.repeat, 3)))

    # --- report ----------------------------------------------------------------------------------
    headers = ["path", "median s", "min-max s", "M f-cells/s", "vs polars", "vs qlib", "peak mem", "cpu/wall",
               "other", "check"]
    q_feat = q["sec_per_instrument_feature"] if q else None

    def peers(t, n_feat, name):
        vp = f"{pl_t.median_s / t.median_s:.2f}x" if (pl_t and name.startswith("alpha158")) else "-"
        vq = f"{q_feat * N * n_feat / t.median_s:.0f}x" if (q_feat and name.startswith("alpha158")) else "-"
        return [vp, vq]

    t, _, peak, cells = results["alpha158"]
    rows.append(_row("factorflow alpha158, embedded cluster (2 workers)", t, cells, peak, peers(t, 158, "alpha158"),
                     check))
    if "alpha158-float32" in results:
        t, _, peak, cells = results["alpha158-float32"]
        rows.append(_row("factorflow alpha158 float32 (Qlib's precision), embedded", t, cells, peak,
                         peers(t, 158, "alpha158-float32"), "parity-tested"))
    if "alpha158" in proc:
        t, peak, cells = proc["alpha158"]
        rows.append(_row("factorflow alpha158, 2 worker processes, resident", t, cells, peak,
                         peers(t, 158, "alpha158"), "kept on workers"))
    if pl_t:
        rows.append(_row("polars lazy alpha158 (hand-written)", pl_t, T * N * 158, pl_peak, ["1.00x", "-"], ""))
    if q:
        full = q_feat * N * 158
        rows.append([f"qlib alpha158 ({q['instruments']} instruments, scaled x{N / q['instruments']:.0f})",
                     f"{full:.0f}", "", f"{T * N * 158 / full / 1e6:.2f}", "-", "1x", "", "1.0", "", "measured on subset"])
    if "alpha101" in results:
        t, _, peak, cells = results["alpha101"]
        rows.append(_row("factorflow alpha101, embedded cluster (2 workers)", t, cells, peak, ["-", "-"], ""))
    if "alpha101" in proc:
        t, peak, cells = proc["alpha101"]
        rows.append(_row("factorflow alpha101, 2 worker processes, resident", t, cells, peak, ["-", "-"],
                         "kept on workers"))
    print()
    print(table(headers, rows))
    if q:
        print(f"qlib: {q_feat * 1e6:.0f} us per instrument-feature ({q['instruments']} instruments x "
              f"{T} days, D.features, one process); factorflow alpha158 embedded: "
              f"{results['alpha158'][0].median_s / (N * 158) * 1e6:.2f} us per instrument-feature")
    targets = []
    if q:
        targets.append(f">= 100x Qlib per instrument-feature: "
                       f"{q_feat * N * 158 / results['alpha158'][0].median_s:.0f}x")
        if "alpha158-float32" in results:
            targets.append(f"in float32 (Qlib's precision): "
                           f"{q_feat * N * 158 / results['alpha158-float32'][0].median_s:.0f}x")
    if pl_t:
        targets.append(f">= 2x Polars: {pl_t.median_s / results['alpha158'][0].median_s:.2f}x")
    print("targets (embedded cluster row): " + "; ".join(targets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
