"""Production runs: ``factorflow run`` -- ticks -> bars -> factors -> committed Parquet partitions.

A job (flags or a TOML file with the same keys, docs/deployment.md) names a tick store, a date
range, a bar frequency, factors (libraries, ``NAME=FORMULA`` strings, formula files) and an output
path. :func:`run_job`:

1. checks everything it can before any work: formulas against the bar fields, the store, the
   dates, the output path, the saved state of an incremental run;
2. connects to the scheduler (``--scheduler-file``/``--scheduler-address``, TLS optional) or
   starts the embedded local cluster;
3. plans all factors together over the bars panel (ticks are read inside the tasks) and builds
   one graph whose leaves commit one date partition each (``engine/manifest.py``): partitions
   already committed from the same formulas, inputs and code are left out of the graph, so Dask
   computes only what the others need;
4. saves the recursive operators' state for the next ``--incremental`` run (``engine/state.py``)
   after every partition is committed.

Errors are typed for the exit code of the command line: :class:`JobError` (bad input, nothing
computed), :class:`ClusterError` (scheduler unreachable or lost; committed partitions stay, a
rerun finishes the rest), :class:`ComputeError` (a task failed; the message names the partition
and, for a worker that died or ran out of memory, suggests smaller chunks).
"""
from __future__ import annotations

import difflib
import itertools
import os
import sys
import time
from dataclasses import dataclass, field, fields as dc_fields

import numpy as np

__all__ = ["JobSpec", "JobError", "ClusterError", "ComputeError", "load_job_file", "load_factors", "run_job",
           "validate_job"]

STATE_DIR = "_factorflow"


class JobError(ValueError):
    """Invalid job input: formulas, data, options. Nothing was computed."""


class ClusterError(RuntimeError):
    """The scheduler could not be reached or was lost during the run."""


class ComputeError(RuntimeError):
    """A task of the run failed (exception, worker killed, out of memory)."""


@dataclass
class JobSpec:
    """Options of a run; the keys of a job TOML file are these names (``-`` or ``_``)."""

    ticks: str | None = None
    out: str | None = None
    freq: str = "1min"
    start: str | None = None
    end: str | None = None
    symbols: list | None = None
    session: str = "us_equity"
    library: list = field(default_factory=list)
    factor: list = field(default_factory=list)
    factors_file: list = field(default_factory=list)
    dialect: str = "native"
    chunks: str | None = None
    scheduler_file: str | None = None
    scheduler_address: str | None = None
    tls_ca_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    backend: str = "cpu"
    incremental: bool = False
    force: bool = False
    performance_report: str | None = None
    dashboard_address: str | None = "127.0.0.1:8787"
    compression: str = "zstd"
    worker_timeout: float = 60.0
    security: object = None  # a distributed.security.Security (Python API only; else the tls_* files)

    @property
    def external(self) -> bool:
        return bool(self.scheduler_file or self.scheduler_address)


_PATH_KEYS = ("ticks", "out", "factors_file", "scheduler_file", "tls_ca_file", "tls_cert", "tls_key",
              "performance_report")
_LIST_KEYS = ("library", "factor", "factors_file", "symbols")


def _expected_type(key: str, value) -> str | None:
    """What a job file's ``key`` must hold, if ``value`` is not that (else None). TOML's types:
    a misspelt ``force = "no"`` would otherwise be true, ``symbols = 5`` a traceback."""
    import datetime

    if key in _LIST_KEYS:
        ok, want = isinstance(value, list) and all(isinstance(v, str) for v in value), "a string or a list of strings"
    elif key in ("incremental", "force"):
        ok, want = isinstance(value, bool), "true or false"
    elif key == "worker_timeout":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
        want = "a positive number of seconds"
    elif key in ("chunks", "dashboard_address"):
        ok, want = isinstance(value, (str, int)) and not isinstance(value, bool), "a string or an integer"
    elif key in ("start", "end"):
        ok, want = isinstance(value, (str, datetime.date)), "a date (2024-01-02 or \"2024-01-02\")"
    else:
        ok, want = isinstance(value, str), "a string"
    return None if ok else want


def load_job_file(path: str) -> dict:
    """Options from a job TOML file; relative paths are relative to the file's folder.

    Examples
    --------
    >>> import tempfile, os
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = os.path.join(d, "job.toml")
    ...     _ = open(p, "w").write('ticks = "ticks"\\nfreq = "1d"\\nfactor = ["m=ts_mean(close, 5)"]\\n')
    ...     opts = load_job_file(p)
    >>> opts["freq"], opts["factor"], os.path.basename(opts["ticks"])
    ('1d', ['m=ts_mean(close, 5)'], 'ticks')
    """
    import tomllib

    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise JobError(f"job file {path!r} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise JobError(f"job file {path}: invalid TOML: {e}") from None
    known = {f.name for f in dc_fields(JobSpec)} - {"security"}
    base = os.path.dirname(os.path.abspath(path))
    out = {}
    for key, value in raw.items():
        k = key.replace("-", "_")
        if k == "factors" and isinstance(value, dict):  # [factors] table: name = formula
            for n, v in value.items():
                if not isinstance(v, str):
                    raise JobError(f"job file {path}: [factors] {n} must be a formula string, "
                                   f"got {type(v).__name__} {v!r}")
            out.setdefault("factor", [])
            out["factor"] += [f"{n}={v}" for n, v in value.items()]
            continue
        if k not in known:
            close = difflib.get_close_matches(k, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise JobError(f"job file {path}: unknown key {key!r}{hint}")
        if k in _LIST_KEYS and isinstance(value, str):
            value = [value]
        want = _expected_type(k, value)
        if want:
            raise JobError(f"job file {path}: {key} must be {want}, got {type(value).__name__} {value!r}")
        if k in _PATH_KEYS and value is not None:
            value = [os.path.join(base, v) for v in value] if isinstance(value, list) else os.path.join(base, value)
        out[k] = value
    return out


def make_spec(file_options: dict, flag_options: dict) -> JobSpec:
    """Merge: flags given on the command line override the job file (lists too)."""
    merged = dict(file_options)
    for k, v in flag_options.items():
        if v is None or (isinstance(v, list) and not v) or v is False:
            continue
        merged[k] = v
    try:
        spec = JobSpec(**merged)
    except TypeError as e:
        raise JobError(str(e)) from None
    if not spec.ticks:
        raise JobError("no tick store: give --ticks PATH (or `ticks = ...` in the job file)")
    if spec.scheduler_file and spec.scheduler_address:
        raise JobError("give --scheduler-file or --scheduler-address, not both")
    tls = [spec.tls_ca_file, spec.tls_cert, spec.tls_key]
    if any(tls) and not all(tls):
        raise JobError("TLS needs all three of --tls-ca-file, --tls-cert and --tls-key")
    if (any(tls) or spec.security is not None) and not spec.external:
        raise JobError("TLS options need --scheduler-file or --scheduler-address: the embedded cluster "
                       "runs in this process and has no network traffic to encrypt")
    for p in tls:
        if p and not os.path.exists(p):
            raise JobError(f"TLS file {p!r} does not exist")
    if spec.backend not in ("cpu", "gpu"):
        raise JobError(f"backend must be 'cpu' or 'gpu', got {spec.backend!r}")
    return spec


# -- factors ---------------------------------------------------------------------------------------
def load_factors(spec: JobSpec) -> dict:
    """``{name: Factor}`` from the libraries, ``NAME=FORMULA`` strings and formula files of a job.

    Formula files are TOML: an optional ``dialect = "native" | "qlib" | "wq"`` and a
    ``[factors]`` table of ``name = "formula"``. A name defined twice is an error naming both
    places; a bad formula is a ``FactorError`` naming the factor (and file), line and column.
    """
    import tomllib

    from ..factors import FactorError, factor

    out: dict = {}
    where: dict[str, str] = {}

    def add(name: str, f, origin: str) -> None:
        if not name.isidentifier():
            raise JobError(f"factor name {name!r} ({origin}) must be an identifier (a Parquet column name)")
        if name in out:
            raise JobError(f"factor {name!r} is defined twice: {where[name]} and {origin}")
        out[name] = f
        where[name] = origin

    for lib in spec.library:
        try:
            from ..factors import libraries, library
        except ImportError:
            raise JobError(f"--library {lib}: factor libraries are not available in this build of factorflow "
                           "(factorflow.factors.library is missing)") from None
        names = list(libraries())
        if lib not in names:
            close = difflib.get_close_matches(lib, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise JobError(f"unknown factor library {lib!r}{hint}; available: {', '.join(names)}")
        for name, f in library(lib).items():
            add(name, f, f"library {lib}")
    for item in spec.factor:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            raise JobError(f"--factor {item!r}: expected NAME=FORMULA")
        name = name.strip()
        try:
            add(name, factor(text.strip(), dialect=spec.dialect), "--factor")
        except FactorError as e:
            raise e.with_name(name) from None
    for path in spec.factors_file:
        try:
            with open(path, "rb") as fh:
                doc = tomllib.load(fh)
        except FileNotFoundError:
            raise JobError(f"factors file {path!r} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise JobError(f"factors file {path}: invalid TOML: {e}") from None
        dialect = doc.get("dialect", "native")
        table = doc.get("factors")
        extra = sorted(set(doc) - {"dialect", "factors"})
        if not isinstance(table, dict) or not table:
            raise JobError(f"factors file {path}: no [factors] table (name = \"formula\" lines)")
        if extra:
            raise JobError(f"factors file {path}: unknown keys {', '.join(extra)} (expected dialect, [factors])")
        for name, text in table.items():
            if not isinstance(text, str):
                raise JobError(f"factors file {path}: factor {name!r} must be a formula string, got "
                               f"{type(text).__name__}")
            try:
                add(name, factor(text, dialect=dialect), f"{path}")
            except FactorError as e:
                raise JobError(f"factors file {path}:\n{e.with_name(name)}") from None
            except ValueError as e:  # unknown dialect
                raise JobError(f"factors file {path}: {e}") from None
    if not out:
        raise JobError("no factors: give --library NAME, --factor NAME=FORMULA or --factors-file F.toml")
    return out


def _chunks(text):
    """``--chunks TIME[,SYMBOL]`` as the planner's chunks dict (``-1``: the whole axis)."""
    if not text:
        return None
    if isinstance(text, dict):
        return text
    t, _, s = str(text).partition(",")
    try:
        sizes = {"time": int(t), "symbol": int(s) if s else -1}
    except ValueError:
        raise JobError(f"--chunks {text!r}: expected TIME[,SYMBOL] block sizes, e.g. 390,200") from None
    for axis, unit in (("time", "rows"), ("symbol", "symbols")):
        if sizes[axis] < 1 and sizes[axis] != -1:
            raise JobError(f"--chunks {text!r}: the {axis} block size must be a positive number of {unit} "
                           "(or -1 for the whole axis), e.g. 390,200")
    return sizes


def _check_scheduler_address(address: str) -> None:
    """A ``--scheduler-address`` Dask can parse: ``[tcp|tls|...]://HOST:PORT``."""
    from distributed.comm import parse_address, parse_host_port

    try:
        scheme, loc = parse_address(address)
        if scheme in ("tcp", "tls", "ws", "wss"):
            parse_host_port(loc)
    except ValueError as e:
        raise JobError(f"--scheduler-address {address!r}: {e} (e.g. tcp://10.0.0.5:8786)") from None


# -- preparing the run -----------------------------------------------------------------------------
@dataclass
class Prepared:
    """Everything decided before the cluster computes (see :func:`prepare`)."""

    spec: JobSpec
    factors: dict
    store: object
    dates: list  # dates of the bars panel (history included)
    out_dates: list  # dates whose partitions this run is responsible for
    symbols: list
    anchor: str  # first date of the computation (full runs: the range start)
    state_meta: dict | None
    state: dict | None
    plan_fp: str
    per_date_fp: dict


def _formulas(factors: dict) -> dict[str, str]:
    return {name: f.canonical for name, f in factors.items()}


def prepare(spec: JobSpec) -> Prepared:
    """Check the job and decide dates, symbols and state; reads no tick data but file footers."""
    from ..factors import FactorError
    from .bars import BAR_FIELDS, QUOTE_FIELDS
    from .manifest import date_fingerprints
    from .plan import check_fields
    from .sessions import freq_to_ns, get_session
    from .state import StateError, load_state, plan_fingerprint
    from .ticks import TickStore

    from .compute import _check_backend

    from .device import GPUUnavailableError
    from ..cluster import check_dashboard_address
    from .io import check_compression

    factors = load_factors(spec)
    try:
        if spec.backend == "gpu" and spec.external:
            pass  # the GPU workers are checked once connected (a remote cluster's client needs no GPU)
        else:
            _check_backend(spec.backend)
    except (ValueError, NotImplementedError, GPUUnavailableError) as e:
        raise JobError(str(e)) from None
    try:
        check_compression(spec.compression)  # Arrow would refuse it only at the first commit
        if not spec.external:
            check_dashboard_address(spec.dashboard_address)
    except ValueError as e:
        raise JobError(str(e)) from None
    _chunks(spec.chunks)  # the plan would refuse bad sizes only once the cluster is up
    if spec.scheduler_address:
        _check_scheduler_address(spec.scheduler_address)
    try:
        freq_to_ns(spec.freq)
        get_session(spec.session)
    except (ValueError, KeyError) as e:
        raise JobError(str(e)) from None
    if not os.path.isdir(spec.ticks):
        raise JobError(f"tick store {spec.ticks!r} is not a directory")
    store = TickStore(spec.ticks)
    names = set(store.schema.names) if store.dates() else set()
    fields = BAR_FIELDS + (QUOTE_FIELDS if {"bid", "ask"} <= names else ())
    try:
        check_fields(factors, fields)
    except FactorError as e:
        raise JobError(f"{e}\n(bars of {spec.ticks} have the fields {', '.join(fields)})") from None
    if not spec.out:
        raise JobError("no output path: give --out PATH")
    if os.path.exists(spec.out) and not os.path.isdir(spec.out):
        raise JobError(f"output path {spec.out!r} exists and is not a directory")
    formulas = _formulas(factors)
    plan_fp = plan_fingerprint(formulas, {"freq": spec.freq, "session": str(spec.session), "dtype": "float64"})
    state_dir = os.path.join(spec.out, STATE_DIR)
    try:
        all_dates = [str(d) for d in store.dates(None, spec.end)]
        range_dates = [str(d) for d in store.dates(spec.start, spec.end)]
    except ValueError as e:
        raise JobError(str(e)) from None
    if not spec.incremental:
        if not range_dates:
            raise JobError(f"no tick data in {spec.ticks} between {spec.start or 'the first date'} and "
                           f"{spec.end or 'the last date'}")
        if spec.symbols:
            try:
                store.check_symbols(spec.symbols, range_dates[0], range_dates[-1])
            except ValueError as e:
                raise JobError(str(e)) from None
            symbols = [str(s) for s in spec.symbols]
            if len(set(symbols)) != len(symbols):
                raise JobError(f"--symbols repeat: {', '.join(sorted({s for s in symbols if symbols.count(s) > 1}))}")
        else:
            symbols = [str(s) for s in store.symbols(range_dates[0], range_dates[-1])]
        per_date = date_fingerprints(store, range_dates)
        return Prepared(spec, factors, store, range_dates, range_dates, symbols, range_dates[0], None, None,
                        plan_fp, per_date)
    # incremental: resume from the saved state
    ahead = {n: getattr(f, "lookahead", 0) for n, f in factors.items()}
    if any(ahead.values()):
        names = ", ".join(f"{n} ({k} rows)" for n, k in ahead.items() if k)
        raise JobError(f"--incremental: factors {names} look ahead (lead): their values on a date depend on "
                       "later dates, so earlier partitions would change as new dates arrive. Run without "
                       "--incremental (a rerun recomputes the partitions whose look-ahead reaches new dates)")
    try:
        meta, state = load_state(state_dir)
    except StateError as e:
        raise JobError(f"--incremental: {e}") from None
    if meta["plan"] != plan_fp:
        old = meta.get("formulas", {})
        changed = sorted(n for n in set(old) | set(formulas) if old.get(n) != formulas.get(n))
        raise JobError("--incremental: the saved state was computed for other formulas or bars "
                       f"(changed: {', '.join(changed) or 'frequency/session'}; state of {meta['last_date']}). "
                       "Its carried values do not apply: rerun without --incremental (a full recompute "
                       f"from {meta['anchor']}), which saves a new state")
    if spec.start and spec.start != meta["anchor"]:
        print(f"note: --incremental continues the computation started at {meta['anchor']}; --start "
              f"{spec.start} is ignored", file=sys.stderr)
    last = meta["last_date"]
    out_dates = [d for d in all_dates if d > last]
    hist = [d for d in all_dates if meta["history_start"] <= d <= last]
    now = date_fingerprints(store, [d for d in all_dates if meta["anchor"] <= d <= last])
    changed = [d for d, h in now.items() if meta["dates"].get(d) != h]
    gone = sorted(set(meta["dates"]) - set(now))
    if changed or gone:
        raise JobError(f"--incremental: tick data changed since the state was saved (dates "
                       f"{', '.join((changed + gone)[:5])}{' ...' if len(changed + gone) > 5 else ''}); "
                       "rerun without --incremental to recompute from the changed data")
    per_date = dict(meta["dates"])
    per_date.update(date_fingerprints(store, out_dates))
    if out_dates:
        new_syms = [str(s) for s in (spec.symbols or store.symbols(out_dates[0], out_dates[-1]))]
    else:
        new_syms = []
    if spec.symbols:  # an explicit universe keeps its order; symbols new to it are appended
        symbols = list(meta["symbols"]) + [x for x in new_syms if x not in set(meta["symbols"])]
    else:  # as a full run: every symbol of the range, sorted
        symbols = sorted(set(meta["symbols"]) | set(new_syms))
    return Prepared(spec, factors, store, hist + out_dates, out_dates, symbols, meta["anchor"], meta, state,
                    plan_fp, per_date)


def _job_plan(factors, panel, chunks, backend: str):
    """``(plan, chunks)`` of a job: unless ``--chunks`` says otherwise, blocks cut along time only
    (``choose_chunks(split_time=True)``). A partition is a date: from a time block its commit
    takes one view of the block's rows, where symbol blocks would make it gather and copy a piece
    of every block, from every worker holding one (Alpha158, 500 symbols x 20 days: 1 x 4 symbol
    blocks on 2 workers sent GBs between them, 23.6 s a run against 13.5 s)."""
    from .compute import plan as make_plan
    from .plan import choose_chunks

    plan = make_plan(factors, panel, chunks=chunks, backend=backend)
    if chunks is None and plan.grid[1] > 1:
        chunks = choose_chunks(plan.shape, plan.stages, plan.nodes, itemsize=plan.dtype.itemsize, split_time=True)
        if chunks[1] != plan.schunks or chunks[0] != plan.tchunks:
            plan = make_plan(factors, panel, chunks=chunks, backend=backend)
    return plan, chunks


def validate_job(spec: JobSpec) -> str:
    """Check a job without computing: formulas, fields, store schema (every file footer), dates,
    state. Returns a report; raises :class:`JobError` / ``FactorError`` / ``TickDataError``."""
    from .bars import bars_panel

    prep = prepare(spec)
    prep.store.schema  # reads and validates every file footer of the store  # noqa: B018
    lines = [f"job ok: {len(prep.factors)} factors, {spec.freq} bars of {len(prep.symbols)} symbols"]
    if prep.out_dates:
        panel = bars_panel(prep.store, spec.freq, prep.dates[0], prep.dates[-1], symbols=prep.symbols,
                           session=spec.session, missing_symbols="empty")
        plan, _ = _job_plan(prep.factors, panel, _chunks(spec.chunks), spec.backend)
        lines.append(f"dates {prep.out_dates[0]} .. {prep.out_dates[-1]} ({len(prep.out_dates)} partitions"
                     + (f", {len(prep.dates) - len(prep.out_dates)} dates of history" if spec.incremental else "")
                     + ")")
        lines.append(str(plan))
    else:
        lines.append(f"nothing new to compute after {prep.state_meta['last_date']}")
    return "\n".join(lines)


# -- the run ---------------------------------------------------------------------------------------
def _security(spec: JobSpec):
    if spec.security is not None:
        return spec.security
    if not spec.tls_ca_file:
        return None
    from distributed.security import Security

    return Security(tls_ca_file=spec.tls_ca_file, tls_client_cert=spec.tls_cert, tls_client_key=spec.tls_key,
                    require_encryption=True)


def open_cluster(spec: JobSpec, echo=print):
    """Connect to the job's scheduler, or start the embedded local cluster (127.0.0.1 only)."""
    from .. import cluster as ffc

    if not spec.external:
        c = ffc.local(dashboard_address=spec.dashboard_address)
        echo(f"cluster: embedded, {c.nthreads} threads")
        echo(f"dashboard: {c.dashboard_link}")
        return c
    where = spec.scheduler_file or spec.scheduler_address
    try:
        c = ffc.connect(address=spec.scheduler_address, scheduler_file=spec.scheduler_file,
                        security=_security(spec), timeout="20s")
    except FileNotFoundError as e:
        raise ClusterError(str(e)) from None
    except (OSError, TimeoutError) as e:
        raise ClusterError(f"cannot reach the Dask scheduler ({where}): {type(e).__name__}: {e}") from None
    except TypeError as e:  # distributed's way of saying a tls:// scheduler got no certificates
        raise ClusterError(f"cannot connect to the Dask scheduler ({where}): {e} -- a tls:// scheduler needs "
                           "--tls-ca-file, --tls-cert and --tls-key") from None
    try:
        c.client.wait_for_workers(1, timeout=spec.worker_timeout)
    except TimeoutError:
        c.close()
        raise ClusterError(f"no worker connected to the scheduler {c.scheduler_address} within "
                           f"{spec.worker_timeout:.0f} s (start `dask worker --scheduler-file ...`)") from None
    from ..cluster.preload import WarmKernels

    c.client.register_plugin(WarmKernels(), name="factorflow-warm-kernels")
    workers = c.client.scheduler_info(n_workers=-1)["workers"]
    echo(f"cluster: scheduler {c.scheduler_address}, {len(workers)} workers, {c.nthreads} threads")
    echo(f"dashboard: {c.dashboard_link}")
    return c


def _partition_rows(times) -> list[tuple[str, int, int]]:
    from .io import _partition_ranges

    return _partition_ranges(np.asarray(times))


def run_job(spec: JobSpec, echo=print, progress: bool = False) -> dict:
    """Run a job to the end; returns the summary (also printed through ``echo``)."""
    t_start = time.perf_counter()
    prep = prepare(spec)
    if spec.incremental and not prep.out_dates:
        echo(f"up to date: no tick data after {prep.state_meta['last_date']} (state of {prep.state_meta['last_date']})")
        return {"written": 0, "skipped": 0, "partitions": 0}
    cluster = open_cluster(spec, echo)
    try:
        return _run(prep, cluster, echo, progress, t_start)
    finally:
        try:
            cluster.close()
        except Exception:  # the scheduler may be gone; closing must not hide the real error
            pass


def _run(prep: Prepared, cluster, echo, progress: bool, t_start: float) -> dict:
    import dask
    from distributed import performance_report

    from .. import __version__
    from .bars import bars_panel
    from .manifest import chain_fingerprints, formula_hash, input_fingerprint, matches
    from .manifest import read_manifest
    from .state import compute_stateful, remap_state, save_state, scan_offsets

    spec = prep.spec
    client = cluster.client
    panel = bars_panel(prep.store, spec.freq, prep.dates[0], prep.dates[-1], symbols=prep.symbols,
                       session=spec.session, missing_symbols="empty")
    chunks = _chunks(spec.chunks)

    try:
        plan, chunks = _job_plan(prep.factors, panel, chunks, spec.backend)
    except RuntimeError as e:  # backend="gpu" on a cluster without GPU workers: GPUUnavailableError
        from .device import GPUUnavailableError

        if isinstance(e, GPUUnavailableError):
            raise JobError(str(e)) from None
        raise
    starts, h = scan_offsets(plan)
    ranges = _partition_rows(panel.times)
    row_of = {d: a for d, a, _ in ranges}
    T = panel.shape[0]
    ahead = getattr(plan, "lookahead", 0)
    row_date = [d for d, a, b in ranges for _ in range(b - a)] if ahead else []
    # where the next incremental run starts: the latest date with >= h rows from it to the end
    hist_start = ranges[0][0]
    for d, a, _ in ranges:
        if T - a >= h:
            hist_start = d
    state_rows = {t: row_of[hist_start] + k for t, k in starts.items()}
    can_save = all(r <= T for r in state_rows.values()) and T - row_of[hist_start] >= h
    initial, scan_start = None, None
    if prep.state is not None:
        initial = remap_state(plan, prep.state, prep.state_meta["symbols"], prep.symbols)
        scan_start = starts
    result, state = compute_stateful(prep.factors, panel, chunks=chunks, backend=spec.backend,
                                     initial_state=initial, scan_start=scan_start,
                                     state_rows=state_rows if can_save else None)

    # manifests: what each partition is computed from
    names = list(prep.factors)
    factors_doc = {n: {"formula": f.canonical, "hash": formula_hash(f.canonical)} for n, f in prep.factors.items()}
    universe = formula_hash("\n".join(prep.symbols))
    params = {"freq": spec.freq, "session": str(spec.session), "anchor": prep.anchor, "symbols": universe,
              "n_symbols": len(prep.symbols), "store": os.path.abspath(spec.ticks)}
    chain = chain_fingerprints({d: prep.per_date_fp[d] for d in prep.per_date_fp if d >= prep.anchor})
    arr = result._groups[0].data
    symbols = np.asarray(prep.symbols)
    to_write, skipped = [], []
    out_set = set(prep.out_dates)
    for d, a, b in ranges:
        if d not in out_set:
            continue
        directory = os.path.join(spec.out, f"date={d}")
        inputs = {"fingerprint": input_fingerprint(chain[d], params), **params}
        if ahead:  # lead(): the partition's last rows read rows of later dates (or stop at the end)
            last = b - 1 + ahead
            reach = row_date[min(last, T - 1)]
            inputs = {"fingerprint": input_fingerprint(chain[reach], params), **params, "lookahead": ahead,
                      "reads_to": reach, "cut_at_end": last > T - 1}
        manifest = {"date": d, "factors": factors_doc, "code_version": __version__, "input": inputs,
                    "mode": "incremental" if spec.incremental else "full"}
        if not spec.force and matches(read_manifest(directory), manifest):
            skipped.append(d)
            continue
        to_write.append((d, a, b, directory, manifest))
    echo(f"job: {len(names)} factors over {spec.freq} bars, {len(prep.symbols)} symbols, "
         f"{len(prep.out_dates)} dates {prep.out_dates[0]} .. {prep.out_dates[-1]}"
         + (f" (+{len(prep.dates) - len(prep.out_dates)} dates of history)" if spec.incremental else "")
         + f"; {len(skipped)} partitions already committed, {len(to_write)} to compute")
    echo(f"plan: {len(plan.stages)} stages, {plan.n_tasks} tasks, grid {plan.grid[0]} x {plan.grid[1]} blocks "
         f"({_runs(plan.tchunks)} rows x {_runs(plan.schunks)} symbols), lookback {h} rows")
    # The graph is written by hand: one commit task per partition reading the final-stage blocks
    # it overlaps. (Passing `arr[:, a:b]` to dask.delayed would optimise each slice's graph on its
    # own: fused, renamed copies of the shared blocks, computed once per partition.) Commits are
    # pinned with their blocks (pin_to_workers below), so a block does not travel to be written;
    # a partition straddling two blocks reads them through row-slice tasks that run next to each
    # block, so only its rows travel when the blocks sit on different workers.
    token = dask.base.tokenize(spec.out, names, prep.out_dates, time.time())
    dsk = dict(arr.__dask_graph__())
    if state is not None:
        dsk.update(state.__dask_graph__())
    toff = np.concatenate([[0], np.cumsum(arr.chunks[1])])
    commits, slices = [], []
    for i, (_, a, b, directory, manifest) in enumerate(to_write):
        i0 = int(np.searchsorted(toff, a, side="right")) - 1
        i1 = int(np.searchsorted(toff, b, side="left"))
        pieces = []
        for bi in range(i0, i1):
            lo, hi = int(max(a, toff[bi]) - toff[bi]), int(min(b, toff[bi + 1]) - toff[bi])
            band = []
            for bj in range(len(arr.chunks[2])):
                if i1 - i0 == 1:
                    band.append([(arr.name, 0, bi, bj), lo, hi])
                    continue
                skey = f"ff-rows-{token}-{i}-{bi}-{bj}"
                dsk[skey] = (_rows, (arr.name, 0, bi, bj), lo, hi)
                slices.append(skey)
                band.append([skey, 0, hi - lo])
            pieces.append(band)
        key = f"ff-commit-{token}-{i}"
        dsk[key] = (_commit_blocks, directory, panel.times[a:b], symbols, names, spec.compression, manifest,
                    pieces)
        commits.append(key)
    new_meta = None
    if can_save:
        new_meta = {"plan": prep.plan_fp, "formulas": _formulas(prep.factors), "freq": spec.freq,
                    "session": str(spec.session), "anchor": prep.anchor, "last_date": prep.out_dates[-1],
                    "history_start": hist_start, "symbols": prep.symbols, "scan_start": starts, "history_rows": h,
                    "dates": {d: prep.per_date_fp[d] for d in sorted(prep.per_date_fp)
                              if prep.anchor <= d <= prep.out_dates[-1]},
                    "code_version": __version__}
    state_dir = os.path.join(spec.out, STATE_DIR)
    need_state = new_meta is not None and (commits or not _state_current(state_dir, new_meta))
    todo = commits + ([state.key] if need_state else [])
    t_compute = time.perf_counter()
    written = []
    saved_state = None
    if todo:
        os.makedirs(spec.out, exist_ok=True)
        report = performance_report(filename=spec.performance_report) if spec.performance_report else _Null()
        with report:
            from dask.optimization import cull

            from .graph import carry_keys
            from .materialize import _resources
            from .placement import pin_to_workers

            resources = _resources(arr.__dask_graph__())  # GPU plans: the flat graph lost them
            dsk, _ = cull(dsk, todo)  # only what the missing partitions (and the state) need
            workers = {a: w.get("nthreads", 1) for a, w in client.scheduler_info(n_workers=-1)["workers"].items()}
            pinned = pin_to_workers(dsk, commits, workers, {"resources": resources} if resources else None,
                                    free=slices + carry_keys(dsk))
            futures = client.get(pinned if pinned is not None else dsk, todo, sync=False, resources=resources)
            bar = _Progress(futures, echo, len(commits)) if progress else None
            try:
                written, saved_state = _gather(client, futures, len(commits), to_write, result, bar, panel)
            finally:
                t_done = time.perf_counter()
                if bar is not None:
                    bar.stop()
    seconds = (t_done if todo else time.perf_counter()) - t_compute
    if need_state:
        save_state(state_dir, new_meta, saved_state)
    elif new_meta is None:
        echo(f"note: no state saved for --incremental: the range has fewer rows than the lookback ({h})")
    rows = sum(w["rows"] for w in written)
    summary = {"partitions": len(prep.out_dates), "written": len(written), "skipped": len(skipped), "rows": rows,
               "factors": len(names), "cells": rows * len(names), "bytes": sum(w["bytes"] for w in written),
               "compute_seconds": seconds, "total_seconds": time.perf_counter() - t_start,
               "state_saved": bool(need_state), "dashboard": cluster.dashboard_link}
    echo(summary_table(summary))
    return summary


def _runs(sizes) -> str:
    """Block sizes, runs of equal ones counted: ``(4020, 3780, 3780)`` -> ``'4020, 2 x 3780'``."""
    out = []
    for size, group in itertools.groupby(sizes):
        n = len(list(group))
        out.append(f"{n} x {size}" if n > 1 else str(size))
    return ", ".join(out)


def _rows(block, lo: int, hi: int):
    """Rows ``lo .. hi`` of a final-stage block ``(factors, rows, symbols)`` (a view)."""
    return block[:, lo:hi]


def _commit_blocks(directory, times, symbols, names, compression, manifest, pieces):
    """Commit one partition from ``pieces[time][symbol] = [array, lo, hi]``: rows ``lo .. hi`` of
    each final-stage block (or row slice) it overlaps."""
    from .manifest import commit_partition

    parts = []
    for band in pieces:
        cut = [x[:, lo:hi] for x, lo, hi in band]
        parts.append(cut[0] if len(cut) == 1 else np.concatenate(cut, axis=2))
    values = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
    return commit_partition(directory, times, symbols, names, compression, manifest, values)


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _state_current(state_dir: str, meta: dict) -> bool:
    from .state import StateError, load_state

    try:
        old, _ = load_state(state_dir)
    except StateError:
        return False
    return all(old.get(k) == v for k, v in meta.items())


def _gather(client, futures, n_commits: int, to_write, result, bar, bars=None):
    """Wait for the commits (and the state); map failures to typed errors."""
    from distributed import as_completed

    index = {f.key: k for k, f in enumerate(futures)}
    written, state = [], None
    try:
        for fut in as_completed(futures):
            k = index[fut.key]
            value = fut.result()
            if k < n_commits:
                written.append(value)
                if bar is not None:
                    bar.partition_done(value)
            else:
                state = value
    except BaseException as e:
        for f in futures:
            f.cancel()
        raise _classify(e, client, to_write, result, bars) from e
    written.sort(key=lambda w: w["date"])
    return written, state


def _classify(e: BaseException, client, to_write, result, bars=None) -> BaseException:
    from distributed import KilledWorker

    try:
        from distributed.client import FutureCancelledError
    except ImportError:  # older distributed
        FutureCancelledError = ()  # noqa: N806
    from concurrent.futures import CancelledError

    if isinstance(e, KeyboardInterrupt):
        return e
    scheduler_gone = client.status not in ("running", "connecting")
    if isinstance(e, (CancelledError, OSError, TimeoutError)) or scheduler_gone or (
            FutureCancelledError and isinstance(e, FutureCancelledError)):
        if scheduler_gone or not isinstance(e, KilledWorker):
            return ClusterError(f"lost the connection to the Dask scheduler during the run ({type(e).__name__}: "
                                f"{e}). Committed partitions are intact; rerun the same command to compute the "
                                "rest")
    where = _describe_key(getattr(e, "task", None) or getattr(e, "key", None), to_write, result, bars)
    if isinstance(e, (KilledWorker, MemoryError)):
        return ComputeError(f"{type(e).__name__} while computing {where}: a worker died or ran out of memory. "
                            f"Hint: use smaller chunks ({_smaller_chunks(result)}), fewer factors per run, or "
                            "more memory per worker (dask worker --memory-limit)")
    return ComputeError(f"a task failed while computing {where}: {type(e).__name__}: {e}")


def _smaller_chunks(result) -> str:
    """The run's block grid and one with blocks a quarter the size, as ``--chunks`` text."""
    try:
        _, tchunks, schunks = result._groups[0].data.chunks
        rows, cols = max(tchunks), max(schunks)
    except (AttributeError, IndexError, TypeError, ValueError):
        return "--chunks TIME,SYMBOL, e.g. --chunks 390,100"
    if cols >= 128:
        smaller = f"{max(rows // 2, 1)},{cols // 2}"
    else:
        smaller = f"{max(rows // 4, 1)},{cols}"
    return (f"this run's blocks were up to {rows:,} rows x {cols:,} symbols ({rows * cols / 1e6:.3g} M cells "
            f"per field); e.g. --chunks {smaller}")


def _describe_key(key, to_write, result, bars=None) -> str:
    """Which partitions a task key belongs to (``bars``: the run's bars panel, whose tasks are
    blocks of whole dates)."""
    if key is None:
        return "the run"
    name = key[0] if isinstance(key, tuple) else str(key)
    if name.startswith("ff-commit-"):
        i = int(name.rsplit("-", 1)[1])
        return f"partition date={to_write[i][0]}"
    if name.startswith("ff-rows-"):  # ff-rows-{token}-{partition}-{time block}-{symbol block}
        i = int(name.rsplit("-", 3)[1])
        return f"partition date={to_write[i][0]}"
    if isinstance(key, tuple) and len(key) == 4:
        source = bars if bars is not None and name.startswith("ff-bars-") else result
        arr = source._groups[0].data
        tchunks = arr.chunks[1]
        i = key[2]
        if i < len(tchunks):
            a = sum(tchunks[:i])
            b = a + tchunks[i]
            dates = sorted({str(d) for d in np.asarray(result.times[a:b]).astype("datetime64[D]")})
            span = dates[0] if len(dates) == 1 else f"{dates[0]} .. {dates[-1]}"
            return f"task {name} (partition date={span})"
    return f"task {key}"


class _Progress:
    """Per-stage task counts (from the scheduler) and committed partitions, on one terminal line."""

    def __init__(self, futures, echo, n_partitions: int):
        import threading

        self.n = n_partitions
        self.done = 0
        self.t0 = time.perf_counter()
        self.stages: dict = {}
        self._stop = threading.Event()
        self._bar = None
        try:
            from distributed.diagnostics.progressbar import MultiProgressBar
            from distributed.utils import LoopRunner

            outer = self

            class _Bar(MultiProgressBar):
                def _draw_bar(self, remaining, all, status, **kwargs):
                    outer.stages = {k: (all[k] - remaining.get(k, 0), all[k]) for k in all}
                    outer.draw()

            def stage_of(key):  # runs on the scheduler: pickled by value (a closure), no imports
                # Dask may fuse linear chains into one key named after all of them: the most
                # downstream stage named in the key labels it
                name = key[0] if isinstance(key, tuple) else str(key)
                for word, label in (("commit", "commit"), ("rows", "commit"), ("state", "state"),
                                    ("cross-section", "cross-section"), ("cross", "cross-section"),
                                    ("recursive", "scan"), ("local", "local"), ("bars", "bars")):
                    if word in name:
                        return label
                return "other"

            self._bar = _Bar(futures, complete=True, interval="200ms", group_by=stage_of)
            runner = LoopRunner(asynchronous=False)
            self._thread = threading.Thread(target=lambda: _quiet(runner.run_sync, self._bar.listen), daemon=True)
            self._thread.start()
        except Exception:  # progress is best effort; never fail the run for it
            self._bar = None

    def partition_done(self, info) -> None:
        self.done += 1
        self.draw()

    def draw(self) -> None:
        width = 24
        frac = self.done / self.n if self.n else 1.0
        bar = "#" * int(width * frac)
        stages = " ".join(f"{k} {d}/{a}" for k, (d, a) in sorted(self.stages.items())
                          if k not in ("other", "commit", "state"))
        line = (f"\r[{bar:<{width}}] partitions {self.done}/{self.n} | {stages} | "
                f"{time.perf_counter() - self.t0:.1f} s")
        sys.stderr.write(line[:200].ljust(120))
        sys.stderr.flush()

    def stop(self) -> None:
        if self._bar is not None:
            self._thread.join(timeout=2)
            time.sleep(0.5)  # let the scheduler's feed see the closed comm before the cluster closes
            if self._thread.is_alive():
                comm = getattr(self._bar, "comm", None)
                if comm is not None:
                    comm.abort()
        sys.stderr.write("\n")
        sys.stderr.flush()


def _quiet(fn, *args):
    try:
        fn(*args)
    except Exception:
        pass


def summary_table(s: dict) -> str:
    """The final summary of a run as aligned text.

    Examples
    --------
    >>> print(summary_table({"partitions": 3, "written": 2, "skipped": 1, "rows": 780, "factors": 2,
    ...                      "cells": 1560, "bytes": 20000, "compute_seconds": 0.5, "total_seconds": 1.25}))
    partitions   3 (2 written, 1 already committed)
    rows         780 written x 2 factors = 1,560 cells (0.02 MB)
    time         0.50 s computing + writing, 1.25 s in all
    throughput   0.00 Mcells/s, 4.0 partitions/s
    """
    secs = s["compute_seconds"]
    rate = s["cells"] / secs / 1e6 if secs > 0 else 0.0
    prate = s["written"] / secs if secs > 0 else 0.0
    rows = [("partitions", f"{s['partitions']} ({s['written']} written, {s['skipped']} already committed)"),
            ("rows", f"{s['rows']:,} written x {s['factors']} factors = {s['cells']:,} cells "
                     f"({s['bytes'] / 1e6:.2f} MB)"),
            ("time", f"{secs:.2f} s computing + writing, {s['total_seconds']:.2f} s in all"),
            ("throughput", f"{rate:.2f} Mcells/s, {prate:.1f} partitions/s")]
    return "\n".join(f"{k:<12} {v}" for k, v in rows)
