"""Command line: ``factorflow <command>`` (also ``python -m factorflow``).

Commands of this release: ``list-factors`` (the operator registry), ``validate`` (parse formulas
without computing), ``explain`` (show the plan over a panel shape), ``demo`` (sample panel ->
factor set on the embedded local cluster -> Parquet) and ``generate-ticks`` (a synthetic tick
store, docs/ticks.md). Exit codes: 0 ok, 1 invalid input
(formula or data errors), 2 usage errors.
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
    from .factors.registry import operator_names, operators

    ops = operators()
    kinds = ["elementwise", "window", "recursive", "cross_section"]
    for kind in kinds:
        print(f"{kind}:")
        for name in operator_names():
            op = ops[name]
            if op.kind == kind:
                print(f"  {op.signature:<46} {op.doc.split('. ')[0].rstrip('.')}")
    return 0


def cmd_validate(args) -> int:
    import factorflow as ff

    formulas = _parse_factor_args(args.formula + (args.factor or []))
    if not formulas:
        print("factorflow validate: give formulas as arguments or --factor NAME=FORMULA", file=sys.stderr)
        return 2
    bad = 0
    for name, text in formulas.items():
        try:
            f = ff.factor(text, dialect=args.dialect)
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
    from .demo import run_demo

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

    p = sub.add_parser("list-factors", help="list the operators of the registry")
    p.set_defaults(func=cmd_list_factors)

    p = sub.add_parser("validate", help="parse and check formulas without computing")
    p.add_argument("formula", nargs="*", help="NAME=FORMULA or FORMULA")
    p.add_argument("--factor", action="append", help="NAME=FORMULA (repeatable)")
    p.add_argument("--dialect", default="native")
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
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
