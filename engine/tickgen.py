"""Synthetic tick data: a realistic, deterministic, fast sample store for tests and benchmarks.

:func:`generate_ticks` writes a hive-partitioned store ``PATH/date=YYYY-MM-DD/part-0.parquet`` in
the tick schema of :mod:`factorflow.engine.ticks`. What it models, per trading day (weekdays
only, from ``start``):

* a symbol universe of ticker-like names (2-5 capital letters), each with its own price level,
  volatility, activity and spread;
* trades as a Poisson process inside the session's intervals (the ``cn_equity`` lunch break
  stays empty) with a U-shaped intraday intensity: a burst after the open, a quiet middle and a
  rise into the close;
* prices from a Brownian log-price (GBM-like) with overnight gaps, quoted on a tick grid
  (``tick_size``, 0.01 by default): ``bid`` and ``ask`` straddle the latent price by the
  symbol's spread and each trade prints at the bid, the ask or inside, so
  ``bid <= price <= ask`` holds for every tick and every price is a positive grid multiple;
* log-normal trade sizes (half snapped to round lots of 100), round-lot quote sizes, an
  ``exchange`` and a ``condition`` code;
* irregularities a loader must survive: trading halts (no ticks for a stretch of a day, then a
  price jump), missing days (a symbol without ticks for a whole day), listings (symbols that
  start trading after the first day) and delistings (symbols that stop before the last day).

Every day draws from its own random generators seeded by ``(seed, date, symbol batch)``, so days are
independent (they are generated in parallel threads with ``workers > 1``) and the output is the
same, byte for byte, for the same arguments and pyarrow version. Each file is sorted by
``(symbol, time)`` and written in row groups of whole symbols (about ``row_group_rows`` rows)
with ``symbol`` dictionary-encoded, so a symbol filter skips row groups by their statistics.
"""
from __future__ import annotations

import datetime as _dt
import math
import os
import shutil
import time as _time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .sessions import Session, get_session

__all__ = ["generate_ticks", "ticker_names", "trading_days"]

_NS = 1_000_000_000
_US = 1_000
# Venues and their shares by session preset (anything else uses "24h"'s list).
_VENUES = {
    "us_equity": (("XNAS", "XNYS", "ARCX", "BATS", "EDGX", "IEXG"), (0.32, 0.22, 0.14, 0.14, 0.12, 0.06)),
    "cn_equity": (("XSHG", "XSHE"), (0.5, 0.5)),
    "24h": (("BNCE", "CBSE", "KRKN"), (0.6, 0.3, 0.1)),
}
# Trade conditions: "@" regular, "I" odd lot (size < 100), "F" intermarket sweep.
_CONDITIONS = ("@", "I", "F")
_BATCH_TICKS = 1 << 20  # expected ticks per symbol batch of a day


def trading_days(start, days: int) -> list[_dt.date]:
    """The first ``days`` weekdays on or after ``start`` (no holiday calendar).

    Examples
    --------
    >>> from factorflow.engine.tickgen import trading_days
    >>> [str(d) for d in trading_days("2024-01-05", 3)]   # a Friday
    ['2024-01-05', '2024-01-08', '2024-01-09']
    """
    day = _as_date(start)
    out = []
    while len(out) < days:
        if day.weekday() < 5:
            out.append(day)
        day += _dt.timedelta(days=1)
    return out


def ticker_names(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct ticker-like names (2-5 capital letters), sorted.

    Examples
    --------
    >>> import numpy as np
    >>> from factorflow.engine.tickgen import ticker_names
    >>> names = ticker_names(5, np.random.default_rng(0))
    >>> len(set(names)), all(n.isalpha() and n.isupper() for n in names), list(names) == sorted(names)
    (5, True, True)
    """
    lengths, space = [], 0
    for length in (2, 3, 4, 5, 6, 7):
        lengths.append(length)
        space += 26 ** length
        if space >= 4 * n and length >= 4:
            break
    if n > space:
        raise ValueError(f"cannot make {n} distinct ticker names")
    codes = np.sort(rng.choice(space, size=n, replace=False))
    out = []
    offsets = np.cumsum([0] + [26 ** length for length in lengths])
    letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    for k, length in enumerate(lengths):
        sel = codes[(codes >= offsets[k]) & (codes < offsets[k + 1])] - offsets[k]
        digits = np.empty((len(sel), length), dtype=np.int64)
        for j in range(length - 1, -1, -1):
            digits[:, j] = sel % 26
            sel = sel // 26
        out.extend("".join(row) for row in letters[digits])
    return np.array(sorted(out), dtype=object)


@dataclass
class _Universe:
    names: np.ndarray        # (N,) object
    rate: np.ndarray         # expected trades per day
    sigma: np.ndarray        # daily log-price volatility
    opens: np.ndarray        # (D, N) opening (latent) price per day
    spread: np.ndarray       # base spread in ticks
    size_mu: np.ndarray      # log of the median trade size
    first: np.ndarray        # first trading day index (listing)
    last: np.ndarray         # last trading day index (delisting)
    missing: np.ndarray      # (D, N) bool: no ticks that day


def _universe(n: int, dates: list[_dt.date], seed: int, ticks_per_day: float, inv_tick: float,
              listing_rate: float, delisting_rate: float, missing_rate: float) -> _Universe:
    """Per-symbol parameters (seed only) and per-day draws (seed and date: a day does not depend
    on how many days are generated after it)."""
    days = len(dates)
    rng = np.random.default_rng([seed, 0])
    names = ticker_names(n, rng)
    w = rng.lognormal(0.0, 1.0, n)
    rate = ticks_per_day * w / w.mean()
    price0 = np.clip(rng.lognormal(math.log(40.0), 1.0, n), 2.0, 2000.0)
    sigma = np.clip(rng.lognormal(math.log(0.02), 0.4, n), 0.004, 0.12)
    spread = np.maximum(1, np.round(price0 * 2e-4 * inv_tick)).astype(np.int64)
    size_mu = rng.normal(math.log(120.0), 0.5, n)
    overnight = np.empty((days, n))
    missing = np.empty((days, n), dtype=bool)
    for d, date in enumerate(dates):
        day_rng = np.random.default_rng([seed, 2, date.toordinal()])
        overnight[d] = day_rng.standard_normal(n) * sigma
        missing[d] = day_rng.random(n) < missing_rate
    overnight[0] = 0.0
    opens = price0 * np.exp(np.cumsum(overnight, axis=0))
    first = np.zeros(n, dtype=np.int64)
    last = np.full(n, days - 1, dtype=np.int64)
    if days >= 2 and n >= 2:
        life = np.random.default_rng([seed, 3])
        n_list = min(n // 2, math.ceil(listing_rate * n)) if listing_rate > 0 else 0
        n_del = min(n // 2, math.ceil(delisting_rate * n)) if delisting_rate > 0 else 0
        chosen = life.permutation(n)
        listed, delisted = chosen[:n_list], chosen[n_list:n_list + n_del]
        first[listed] = life.integers(1, days, n_list)
        last[delisted] = life.integers(0, days - 1, n_del)
    return _Universe(names, rate, sigma, opens, spread, size_mu, first, last, missing)


def _intensity_grid(points: int = 4097) -> tuple[np.ndarray, np.ndarray]:
    """Inverse-CDF table of the U-shaped intraday intensity over session fraction x in [0, 1]."""
    x = np.linspace(0.0, 1.0, points)
    f = 0.5 + 1.5 * (2 * x - 1) ** 2 + 2.5 * np.exp(-x / 0.03) + 1.2 * np.exp(-(1 - x) / 0.03)
    cdf = np.concatenate([[0.0], np.cumsum((f[1:] + f[:-1]) / 2)])
    return cdf / cdf[-1], x


def _segment_offsets(counts: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)


def _day_table(u: _Universe, d: int, date: _dt.date, batch: int, lo: int, hi: int, session: Session, seed: int,
               inv_tick: float, halt_rate: float, row_group_rows: int, venues):
    """Ticks of day index ``d`` for the universe's symbols ``lo:hi`` (symbol batch ``batch``),
    sorted by (symbol, time): ``((groups, columns, names), events)`` where ``groups`` are the row
    groups ``(first symbol, end symbol, first row, end row, ticks per symbol)``; ``([], events)``
    when none of these symbols trades that day."""
    rng = np.random.default_rng([seed, 1, date.toordinal(), batch])
    active = (u.first[lo:hi] <= d) & (u.last[lo:hi] >= d) & ~u.missing[d, lo:hi]
    idx = lo + np.flatnonzero(active)
    k = len(idx)
    events = {"halts": []}
    if k == 0:
        return [], events
    counts = rng.poisson(u.rate[idx] * rng.lognormal(0.0, 0.3, k))
    # halts: a stretch of the day without ticks, followed by a price jump
    halted = np.flatnonzero(rng.random(k) < halt_rate)
    h0 = np.full(k, 2.0)
    h1 = np.full(k, 2.0)
    if len(halted):
        h0[halted] = rng.uniform(0.1, 0.75, len(halted))
        h1[halted] = h0[halted] + rng.uniform(0.02, 0.15, len(halted))
    jump = np.zeros(k)
    jump[halted] = rng.normal(0.0, 3.0, len(halted)) * u.sigma[idx[halted]]
    total = int(counts.sum())
    seg = np.repeat(np.arange(k), counts)
    starts = _segment_offsets(counts)

    # sorted uniforms per symbol from exponential spacings: O(total), no sort
    e = rng.standard_exponential(total + k)
    c = np.cumsum(e)
    ends = starts + np.arange(k) + counts           # position of each segment's extra spacing
    base = np.where(ends - counts > 0, c[np.maximum(ends - counts - 1, 0)], 0.0)
    keep = np.ones(total + k, dtype=bool)
    keep[ends] = False
    span = c[ends] - base
    uu = (c[keep] - base[seg]) / span[seg]
    cdf, grid = _intensity_grid()
    x = np.interp(uu, cdf, grid)                     # session fraction, non-decreasing per symbol

    # log-price path: Brownian increments over trading time, plus the post-halt jump
    dx = np.diff(x, prepend=0.0)
    dx[starts[counts > 0]] = x[starts[counts > 0]]
    incr = u.sigma[idx][seg] * np.sqrt(np.maximum(dx, 0.0)) * rng.standard_normal(total)
    cs = np.cumsum(incr)
    cs -= np.where(starts > 0, cs[np.maximum(starts - 1, 0)], 0.0)[seg]
    logp = np.log(u.opens[d, idx])[seg] + cs + jump[seg] * (x >= h1[seg])
    mid = np.exp(logp) * inv_tick
    spread = u.spread[idx][seg] + rng.geometric(0.7, total) - 1
    bid = np.maximum(np.floor(mid - spread / 2.0), 1.0)
    ask = bid + spread
    side = rng.random(total)
    inside = bid + np.floor(rng.random(total) * (spread + 1))
    px = np.where(side < 0.46, bid, np.where(side < 0.92, ask, inside))

    size = np.exp(u.size_mu[idx][seg] + 1.1 * rng.standard_normal(total))
    lots = rng.random(total) < 0.5
    size = np.where(lots & (size >= 100), np.round(size / 100) * 100, np.round(size))
    size = np.maximum(size, 1.0)
    bid_size = 100.0 * np.ceil(rng.lognormal(1.0, 0.9, total))
    ask_size = 100.0 * np.ceil(rng.lognormal(1.0, 0.9, total))
    venue_names, venue_p = venues
    exch = rng.choice(len(venue_names), size=total, p=venue_p).astype(np.int32)
    cond = np.where(rng.random(total) < 0.03, 2, np.where(size < 100, 1, 0)).astype(np.int32)

    # session fraction -> wall clock (UTC ns), microsecond stamps
    bounds = session.bounds_utc(date.isoformat())
    starts_ns = np.array([a.astype("datetime64[ns]").astype(np.int64) for a, _ in bounds])
    lens_ns = np.array([(b - a).astype("timedelta64[ns]").astype(np.int64) for a, b in bounds])
    cum = np.concatenate([[0], np.cumsum(lens_ns)])
    off = x * float(cum[-1])
    which = np.clip(np.searchsorted(cum, off, side="right") - 1, 0, len(lens_ns) - 1)
    t = starts_ns[which] + np.minimum(off - cum[which], lens_ns[which] - 1).astype(np.int64)
    t = (t // _US) * _US

    keep = ~((x >= h0[seg]) & (x < h1[seg]))
    for j in halted:
        events["halts"].append({
            "symbol": str(u.names[idx[j]]),
            "start": _frac_to_iso(h0[j], starts_ns, lens_ns, cum),
            "end": _frac_to_iso(min(h1[j], 1.0), starts_ns, lens_ns, cum),
        })
    counts_kept = np.bincount(seg[keep], minlength=k)
    cols = {
        "time": t[keep], "price": px[keep] / inv_tick, "size": size[keep],
        "bid": bid[keep] / inv_tick, "ask": ask[keep] / inv_tick,
        "bid_size": bid_size[keep], "ask_size": ask_size[keep],
        "exchange": exch[keep], "condition": cond[keep],
    }
    # row groups of whole symbols, about row_group_rows rows each
    sym_start = _segment_offsets(counts_kept)
    batch = sym_start // max(1, row_group_rows)
    cuts = np.flatnonzero(np.diff(batch)) + 1
    groups = []
    for a, b in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [k]])):
        r0, r1 = int(sym_start[a]), int(sym_start[b - 1] + counts_kept[b - 1])
        if r1 == r0:
            continue
        groups.append((a, b, r0, r1, counts_kept[a:b]))
    return (groups, cols, u.names[idx]), events


def _frac_to_iso(f: float, starts_ns, lens_ns, cum) -> str:
    off = f * float(cum[-1])
    w = min(int(np.searchsorted(cum, off, side="right") - 1), len(lens_ns) - 1)
    t = int(starts_ns[w] + min(off - cum[w], lens_ns[w]))
    return str(np.datetime64((t // _NS) * _NS, "ns").astype("datetime64[s]")) + "Z"


def _write_day(path: Path, date: _dt.date, batches, venues, compression: str) -> tuple[str, int, int]:
    """Write the day's symbol batches (an iterable of ``_day_table`` results, in symbol order)
    to one file, renamed into place when complete."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory = path / f"date={date.isoformat()}"
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / "part-0.parquet"
    tmp = directory / f".part-0.parquet.{uuid.uuid4().hex}.tmp"
    schema = _schema()
    venue_dict = pa.array(list(venues[0]), pa.string())
    cond_dict = pa.array(list(_CONDITIONS), pa.string())
    rows = 0
    try:
        with pq.ParquetWriter(tmp, schema, compression=compression,
                              use_dictionary=["symbol", "price", "size", "bid", "ask", "bid_size", "ask_size",
                                              "exchange", "condition"],
                              column_encoding={"time": "DELTA_BINARY_PACKED"},
                              write_statistics=True) as w:
            for day in batches:
                if not day:
                    continue
                groups, cols, names = day
                for a, b, r0, r1, cnt in groups:
                    used = cnt > 0  # the row group's dictionary: exactly its symbols
                    sym = pa.DictionaryArray.from_arrays(
                        pa.array(np.repeat(np.arange(int(used.sum()), dtype=np.int32), cnt[used])),
                        pa.array(list(names[a:b][used]), pa.string()))
                    arrays = [
                        pa.array(cols["time"][r0:r1], pa.timestamp("ns", "UTC")), sym,
                        pa.array(cols["price"][r0:r1]), pa.array(cols["size"][r0:r1]),
                        pa.array(cols["bid"][r0:r1]), pa.array(cols["ask"][r0:r1]),
                        pa.array(cols["bid_size"][r0:r1]), pa.array(cols["ask_size"][r0:r1]),
                        pa.DictionaryArray.from_arrays(pa.array(cols["exchange"][r0:r1]), venue_dict),
                        pa.DictionaryArray.from_arrays(pa.array(cols["condition"][r0:r1]), cond_dict),
                    ]
                    w.write_table(pa.Table.from_arrays(arrays, schema=schema), row_group_size=r1 - r0)
                    rows += r1 - r0
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
    return str(final), rows, final.stat().st_size


def _schema():
    import pyarrow as pa

    dict_str = pa.dictionary(pa.int32(), pa.string())
    return pa.schema([
        ("time", pa.timestamp("ns", "UTC")), ("symbol", dict_str), ("price", pa.float64()),
        ("size", pa.float64()), ("bid", pa.float64()), ("ask", pa.float64()),
        ("bid_size", pa.float64()), ("ask_size", pa.float64()), ("exchange", dict_str), ("condition", dict_str),
    ])


def generate_ticks(path, symbols: int = 500, days: int = 20, seed: int = 0, start="2024-01-02",
                   session="us_equity", *, ticks_per_day: float = 2000.0, tick_size: float = 0.01,
                   halt_rate: float = 0.01, missing_rate: float = 0.003, listing_rate: float = 0.02,
                   delisting_rate: float = 0.02, row_group_rows: int = 128_000, compression: str = "zstd",
                   workers: int | None = None, overwrite: bool = False) -> dict:
    """Write a synthetic tick store: ``path/date=YYYY-MM-DD/part-0.parquet`` per trading day.

    Parameters
    ----------
    path : str or Path
        Output directory. It must not hold ``date=`` partitions already unless ``overwrite``.
    symbols : int
        Size of the symbol universe (ticker-like names, the same for every day of a seed).
    days : int
        Number of trading days (weekdays from ``start``; weekends are skipped, no holidays).
    seed : int
        Seed; the same arguments give the same files. Each day has its own generator seeded by
        ``(seed, date)``.
    start : str or date-like
        First calendar day; the first weekday on or after it is the first trading day.
    session : {"us_equity", "cn_equity", "24h"} or Session
        Trading hours; ticks fall only inside its intervals (none in the cn_equity lunch break).
    ticks_per_day : float
        Mean number of trades per symbol and day (activity is log-normal across symbols).
    tick_size : float
        Price grid: every price, bid and ask is a positive multiple of it.
    halt_rate, missing_rate : float
        Probability that a symbol is halted for a stretch of a given day / has no ticks at all
        that day.
    listing_rate, delisting_rate : float
        Share of symbols that start trading after the first day / stop before the last day
        (at least one each when the rate is positive and there are 2+ days and 2+ symbols).
    row_group_rows : int
        Target rows per Parquet row group; row groups hold whole symbols.
    compression : str
        Parquet codec (``"zstd"``, ``"snappy"``, ``"lz4"``, ``"none"``).
    workers : int, optional
        Days generated in parallel threads (default: the machine's cores, at most 8).
    overwrite : bool
        Replace the ``date=`` partitions of an existing store at ``path``.

    Returns
    -------
    dict
        ``path``, ``files`` (count), ``ticks``, ``bytes``, ``seconds``, ``symbols`` (names),
        ``dates`` and ``events``: ``halts`` (date, symbol, start, end in UTC), ``missing``
        (date, symbol), ``listings`` (symbol, first date), ``delistings`` (symbol, last date).

    Examples
    --------
    >>> import tempfile
    >>> from factorflow.engine.tickgen import generate_ticks
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     summary = generate_ticks(tmp, symbols=4, days=2, seed=1, ticks_per_day=50)
    ...     print(summary["files"], summary["dates"], summary["ticks"] > 0)
    2 ['2024-01-02', '2024-01-03'] True
    """
    t0 = _time.perf_counter()
    symbols, days = _positive_int(symbols, "symbols"), _positive_int(days, "days")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    sess = get_session(session)
    if not (ticks_per_day > 0 and math.isfinite(ticks_per_day)):
        raise ValueError(f"ticks_per_day must be positive, got {ticks_per_day!r}")
    if not (tick_size > 0 and math.isfinite(tick_size)):
        raise ValueError(f"tick_size must be positive, got {tick_size!r}")
    for name, v in (("halt_rate", halt_rate), ("missing_rate", missing_rate), ("listing_rate", listing_rate),
                    ("delisting_rate", delisting_rate)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {v!r}")
    if row_group_rows < 1:
        raise ValueError(f"row_group_rows must be positive, got {row_group_rows!r}")
    dates = trading_days(start, days)
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} exists and is not a directory")
    existing = sorted(p for p in path.glob("date=*") if p.is_dir()) if path.exists() else []
    if existing and not overwrite:
        raise ValueError(f"{path} already holds {len(existing)} date partitions (e.g. {existing[0].name}); "
                         "pass overwrite=True (--overwrite) to replace them")
    for p in existing:
        shutil.rmtree(p)
    path.mkdir(parents=True, exist_ok=True)

    # a tick size like 0.01 divides exactly: store ticks / 100 (correctly rounded) not ticks * 0.01
    inv = 1.0 / tick_size
    inv_tick = float(round(inv)) if abs(inv - round(inv)) < 1e-9 else inv
    u = _universe(symbols, dates, int(seed), ticks_per_day, inv_tick, listing_rate, delisting_rate, missing_rate)
    venues = _VENUES.get(sess.name, _VENUES["24h"])

    # symbols are generated in batches of about 1M expected ticks (bounded memory); the batches
    # depend only on the arguments, so the output does not depend on workers
    per_batch = max(1, math.ceil(_BATCH_TICKS / ticks_per_day))
    edges = list(range(0, symbols, per_batch)) + [symbols]

    def one(d: int):
        ev = {"halts": []}

        def batches():
            for b in range(len(edges) - 1):
                day, e = _day_table(u, d, dates[d], b, edges[b], edges[b + 1], sess, int(seed), inv_tick,
                                    halt_rate, row_group_rows, venues)
                ev["halts"].extend(e["halts"])
                yield day

        return _write_day(path, dates[d], batches(), venues, compression), ev

    if workers is None:
        workers = min(os.cpu_count() or 1, 8)
    workers = max(1, min(int(workers), days))
    if workers == 1:
        results = [one(d) for d in range(days)]
    else:
        with ThreadPoolExecutor(workers, thread_name_prefix="factorflow-tickgen") as pool:
            results = list(pool.map(one, range(days)))

    events = {"halts": [], "missing": [], "listings": [], "delistings": []}
    for d, ((_, _, _), ev) in enumerate(results):
        for h in ev["halts"]:
            events["halts"].append({"date": dates[d].isoformat(), **h})
    for d, j in zip(*np.nonzero(u.missing)):
        if u.first[j] <= d <= u.last[j]:
            events["missing"].append({"date": dates[d].isoformat(), "symbol": str(u.names[j])})
    for j in np.flatnonzero(u.first > 0):
        events["listings"].append({"symbol": str(u.names[j]), "first": dates[u.first[j]].isoformat()})
    for j in np.flatnonzero(u.last < days - 1):
        events["delistings"].append({"symbol": str(u.names[j]), "last": dates[u.last[j]].isoformat()})
    return {
        "path": str(path),
        "files": len(results),
        "ticks": int(sum(r[0][1] for r in results)),
        "bytes": int(sum(r[0][2] for r in results)),
        "seconds": _time.perf_counter() - t0,
        "symbols": [str(s) for s in u.names],
        "dates": [d.isoformat() for d in dates],
        "session": sess.name,
        "events": events,
    }


def _positive_int(v, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def _as_date(x) -> _dt.date:
    if isinstance(x, _dt.datetime):
        return x.date()
    if isinstance(x, _dt.date):
        return x
    if isinstance(x, np.datetime64):
        return _dt.date.fromisoformat(str(x.astype("datetime64[D]")))
    if hasattr(x, "date") and callable(x.date):
        return x.date()
    try:
        return _dt.date.fromisoformat(str(x)[:10])
    except ValueError:
        raise ValueError(f"not a date: {x!r} (use YYYY-MM-DD)") from None
