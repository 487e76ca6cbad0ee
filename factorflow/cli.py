"""Command line: ``factorflow <command>`` (also ``python -m factorflow``).

Commands: ``run`` (a production job: ticks -> bars -> factors -> committed Parquet partitions, on
the embedded cluster or a Dask scheduler; docs/deployment.md), ``list-factors`` (the operator
registry), ``validate`` (parse formulas, or check a whole job without computing), ``explain``
(show the plan over a panel shape), ``demo`` and ``generate-ticks`` (a synthetic tick store,
docs/ticks.md).

Exit codes, for cron / Airflow: 0 ok (also: nothing new to compute), 1 invalid input (formula,
data, job options; nothing computed), 2 usage errors, 3 cluster errors (scheduler unreachable or
lost mid-run: committed partitions are intact, rerun to finish), 4 a task failed (the message
names the partition; worker killed / out of memory suggests smaller chunks), 130 interrupted.
"""
from __future__ import annotations

import argparse
import sys


def _parse_factor_args(items: list[str]) -> dict[str, str]:
    out = {}
    for i, item in enumerate(items):
        name, sep, formula = item.partition("=")
        if not sep:
            name, formula = f"f{i}", item
        name = name.strip()
        if name in out:
            raise SystemExit(f"factorflow: factor name {name!r} given twice")
        out[name] = formula.strip()
    return out


def cmd_list_factors(args) -> int:
    from .factors import libraries, library, library_text
    from .factors.registry import operator_names, operators

    if args.library:
        if args.library not in libraries():
            print(f"factorflow list-factors: unknown library {args.library!r}; available: {', '.join(libraries())}",
                  file=sys.stderr)
            return EXIT_USAGE
        text = library_text(args.library)
        lib = library(args.library)
        width = max(len(k) for k in text)
        for name, formula in text.items():
            print(f"{name:<{width}}  {formula}")
            if args.canonical:
                print(f"{'':<{width}}  = {lib[name].canonical}")
        return EXIT_OK
    if args.libraries:
        for name in libraries():
            print(f"{name:<10} {len(library_text(name)):>4} factors")
        return EXIT_OK
    ops = operators()
    kinds = ["elementwise", "window", "recursive", "cross_section"]
    for kind in kinds:
        print(f"{kind}:")
        for name in operator_names():
            op = ops[name]
            if op.kind == kind:
                print(f"  {op.signature:<46} {op.doc.split('. ')[0].rstrip('.')}")
    return 0


EXIT_OK, EXIT_INPUT, EXIT_USAGE, EXIT_CLUSTER, EXIT_COMPUTE, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130

_JOB_FLAGS = ("ticks", "out", "freq", "start", "end", "symbols", "session", "library", "factor", "factors_file",
              "dialect", "chunks", "scheduler_file", "scheduler_address", "tls_ca_file", "tls_cert", "tls_key",
              "backend", "incremental", "force", "performance_report", "dashboard_address", "compression")


def _add_job_options(p) -> None:
    p.add_argument("job", nargs="?", help="job file (TOML; keys as the flags below, which override it)")
    g = p.add_argument_group("data")
    g.add_argument("--ticks", help="tick store (hive-partitioned Parquet, docs/ticks.md)")
    g.add_argument("--freq", help="bar frequency: 1s 5s 1min 5min 15min 30min 1h 1d (default 1min)")
    g.add_argument("--start", help="first date YYYY-MM-DD (default: the store's first)")
    g.add_argument("--end", help="last date YYYY-MM-DD (default: the store's last)")
    g.add_argument("--symbols", nargs="+", help="symbols (default: every symbol with ticks in the range)")
    g.add_argument("--session", help="trading session of the bars (default us_equity)")
    g = p.add_argument_group("factors")
    g.add_argument("--library", action="append", help="factor library by name (repeatable)")
    g.add_argument("--factor", action="append", help="NAME=FORMULA (repeatable)")
    g.add_argument("--factors-file", action="append", help="TOML file: dialect = ..., [factors] name = formula")
    g.add_argument("--dialect", help="dialect of --factor formulas (default native)")
    g = p.add_argument_group("output")
    g.add_argument("--out", help="output directory: OUT/date=YYYY-MM-DD/part-0.parquet + _manifest.json")
    g.add_argument("--force", action="store_true", help="recompute partitions already committed")
    g.add_argument("--incremental", action="store_true",
                   help="compute only dates after the last run, from its saved state")
    g.add_argument("--compression", help="Parquet codec of the partitions: zstd (default), lz4, snappy, gzip, "
                                         "brotli, none")
    g = p.add_argument_group("cluster")
    g.add_argument("--scheduler-file", help="file written by `dask scheduler --scheduler-file`")
    g.add_argument("--scheduler-address", help="tcp://host:8786 or tls://host:8786")
    g.add_argument("--tls-ca-file", help="CA certificate (PEM) for TLS to the scheduler")
    g.add_argument("--tls-cert", help="client certificate (PEM)")
    g.add_argument("--tls-key", help="client private key (PEM)")
    g.add_argument("--backend", choices=["cpu", "gpu"])
    g.add_argument("--chunks", help="TIME[,SYMBOL] block sizes (default: planned)")
    g.add_argument("--dashboard-address", help="embedded cluster dashboard (default 127.0.0.1:8787)")
    g.add_argument("--performance-report", help="write Dask's performance report (HTML) here")


def _job_spec(args):
    from .engine.job import load_job_file, make_spec

    file_opts = load_job_file(args.job) if args.job else {}
    flags = {k: getattr(args, k, None) for k in _JOB_FLAGS}
    return make_spec(file_opts, flags)


def _run_guarded(fn) -> int:
    """Run ``fn`` mapping the typed errors of a job to messages and exit codes."""
    from .engine.job import ClusterError, ComputeError, JobError
    from .engine.ticks import TickDataError
    from .factors import FactorError

    try:
        fn()
        return EXIT_OK
    except (JobError, FactorError, TickDataError) as e:
        print(f"factorflow: invalid job: {e}", file=sys.stderr)
        return EXIT_INPUT
    except ClusterError as e:
        print(f"factorflow: cluster error: {e}", file=sys.stderr)
        return EXIT_CLUSTER
    except ComputeError as e:
        print(f"factorflow: computation failed: {e}", file=sys.stderr)
        return EXIT_COMPUTE
    except KeyboardInterrupt:
        print("factorflow: interrupted; committed partitions are intact, rerun to finish", file=sys.stderr)
        return EXIT_INTERRUPTED


def cmd_run(args) -> int:
    from .engine.job import run_job

    def go():
        spec = _job_spec(args)
        progress = sys.stderr.isatty() and not args.no_progress
        run_job(spec, echo=lambda s: print(s, flush=True), progress=progress)

    return _run_guarded(go)


def cmd_validate(args) -> int:
    import factorflow as ff

    import os

    if args.job and not (args.job.endswith(".toml") and os.path.isfile(args.job)):
        args.formula, args.job = [args.job] + args.formula, None  # a formula, not a job file
    if args.job or args.ticks:
        from .engine.job import validate_job

        return _run_guarded(lambda: print(validate_job(_job_spec(args))))
    formulas = _parse_factor_args(args.formula + (args.factor or []))
    if not formulas:
        print("factorflow validate: give formulas as arguments or --factor NAME=FORMULA", file=sys.stderr)
        return 2
    bad = 0
    for name, text in formulas.items():
        try:
            f = ff.factor(text, dialect=args.dialect or "native")
        except ff.FactorError as e:
            bad += 1
            print(f"{name}: INVALID\n{e.with_name(name)}\n", file=sys.stderr)
            continue
        print(f"{name}: ok  {f.canonical}  (fields: {', '.join(f.fields) or '-'}; lookback {f.lookback})")
    return 1 if bad else 0


def cmd_explain(args) -> int:
    import numpy as np

    import factorflow as ff

    formulas = _parse_factor_args(args.formula + (args.factor or []))
    if not formulas:
        print("factorflow explain: give formulas as arguments or --factor NAME=FORMULA", file=sys.stderr)
        return 2
    T, N = args.shape
    fields = args.fields.split(",")
    panel = ff.Panel.from_numpy({f: np.broadcast_to(np.float64(0), (T, N)) for f in fields})
    try:
        plan = ff.explain(formulas, panel, chunks=_chunks(args.chunks))
    except ff.FactorError as e:
        print(e, file=sys.stderr)
        return 1
    print(plan)
    return 0


def _chunks(text: str | None):
    if not text:
        return None
    t, _, s = text.partition(",")
    return {"time": int(t), "symbol": int(s) if s else -1}


def cmd_demo(args) -> int:
    from .cluster import check_dashboard_address
    from .demo import run_demo

    try:
        check_dashboard_address(args.dashboard_address)  # before the sample data is generated
    except ValueError as e:
        print(f"factorflow demo: {e}", file=sys.stderr)
        return 1
    return run_demo(symbols=args.symbols, days=args.days, out=args.out, data=args.data, processes=args.processes,
                    dashboard_address=args.dashboard_address, seed=args.seed)


def cmd_generate_ticks(args) -> int:
    from .engine.tickgen import generate_ticks

    try:
        s = generate_ticks(args.path, symbols=args.symbols, days=args.days, seed=args.seed, start=args.start,
                           session=args.session, ticks_per_day=args.ticks_per_day, workers=args.workers,
                           overwrite=args.overwrite)
    except (ValueError, OSError) as e:
        print(f"factorflow generate-ticks: {e}", file=sys.stderr)
        return 1
    rate = s["ticks"] / s["seconds"] / 1e6 if s["seconds"] > 0 else float("nan")
    print(f"wrote {s['path']}: {s['files']} files, {s['ticks']:,} ticks, {s['bytes'] / 1e6:.1f} MB "
          f"in {s['seconds']:.2f} s ({rate:.2f} Mticks/s)")
    ev = s["events"]
    print(f"{len(s['symbols'])} symbols, {s['dates'][0]} .. {s['dates'][-1]} ({s['session']}); "
          f"{len(ev['halts'])} halts, {len(ev['missing'])} missing symbol-days, "
          f"{len(ev['listings'])} listings, {len(ev['delistings'])} delistings")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="factorflow", description="Quant factor computation on Dask + Numba.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("list-factors", help="list the operators of the registry, or a factor library's formulas")
    p.add_argument("--library", help="print the formulas of this library (alpha158, alpha360, alpha101)")
    p.add_argument("--libraries", action="store_true", help="list the factor libraries")
    p.add_argument("--canonical", action="store_true", help="with --library: also the parsed native form")
    p.set_defaults(func=cmd_list_factors)

    p = sub.add_parser("run", help="run a job: ticks -> bars -> factors -> committed Parquet partitions")
    _add_job_options(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: on a terminal)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("validate", help="check formulas, or a whole job (--ticks / JOB.toml), without computing",
                       description="validate FORMULA...  or  validate JOB.toml / --ticks ... (job options as run)")
    _add_job_options(p)
    p.add_argument("formula", nargs="*", help="NAME=FORMULA or FORMULA")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("explain", help="show the plan: stages, lookback, chunks, tasks")
    p.add_argument("formula", nargs="*", help="NAME=FORMULA or FORMULA")
    p.add_argument("--factor", action="append", help="NAME=FORMULA (repeatable)")
    p.add_argument("--shape", nargs=2, type=int, default=(4000, 5000), metavar=("TIMES", "SYMBOLS"))
    p.add_argument("--fields", default="open,high,low,close,volume,vwap,amount")
    p.add_argument("--chunks", help="TIME[,SYMBOL] block sizes (default: planned)")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("demo", help="ticks -> 1min and 1d bars -> factor set on the embedded cluster -> Parquet")
    p.add_argument("--symbols", type=int, default=200)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default="demo-data/ticks", help="tick store to generate (reused if present)")
    p.add_argument("--out", default="demo-out")
    p.add_argument("--processes", action="store_true", help="worker processes instead of threads")
    p.add_argument("--dashboard-address", default="127.0.0.1:8787")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("generate-ticks", help="write a synthetic tick store (hive-partitioned Parquet)")
    p.add_argument("path", help="output directory: PATH/date=YYYY-MM-DD/part-0.parquet")
    p.add_argument("--symbols", type=int, default=500)
    p.add_argument("--days", type=int, default=20, help="trading days (weekdays)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start", default="2024-01-02", help="first day (YYYY-MM-DD)")
    p.add_argument("--session", default="us_equity", choices=["us_equity", "cn_equity", "24h"],
                   help="trading hours preset (default: us_equity)")
    p.add_argument("--ticks-per-day", type=float, default=2000.0, help="mean trades per symbol and day")
    p.add_argument("--workers", type=int, default=None, help="days generated in parallel (default: cores)")
    p.add_argument("--overwrite", action="store_true", help="replace the date partitions of an existing store")
    p.set_defaults(func=cmd_generate_ticks)

    args = parser.parse_args(argv)
    if args.version:
        from . import __version__

        print(__version__)
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except BrokenPipeError:  # `factorflow list-factors | head`: the reader left; not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
