"""Ticks -> bars: a lazy, dask-backed :class:`~factorflow.engine.panel.Panel` of OHLCV bars.

Semantics
---------
* **Calendar.** The time axis is the session calendar (:meth:`Session.bar_times
  <factorflow.engine.sessions.Session.bar_times>`) of every date of the store in
  ``[start, end]`` (``TickStore.dates``), concatenated. Bars are left-closed and labelled by
  their start time in UTC; the last bar of a session interval that is not a multiple of the bar
  length is shorter (``1h`` on ``us_equity``: 15:30-16:00 local). ``1d`` bars are one per date,
  labelled by the date (midnight UTC), aggregated over the session's intervals.
* **Which ticks.** A tick belongs to the bar whose ``[start, start + freq)`` holds its time,
  cut at the end of its session interval. Ticks outside every session interval of their date
  partition (pre-market, after hours, the ``cn_equity`` lunch break) are in no bar.
* **Fields** (:data:`BAR_FIELDS`): ``open``/``close`` = price of the first/last tick of the bar
  (ticks in time order; equal times keep file order), ``high``/``low`` = max/min price,
  ``volume`` = sum of ``size``, ``amount`` = sum of ``price * size``, ``vwap`` =
  ``amount / volume`` (NaN when the volume is 0), ``trades`` = number of ticks. When the store
  has ``bid`` and ``ask`` columns, the panel also has ``bid`` and ``ask``: the last non-null
  quote of each column within the bar.
* **Empty bars** (no tick of the symbol in the bar: before listing, after delisting, in a halt,
  on a day the symbol is absent): ``open``, ``high``, ``low``, ``close``, ``vwap``, ``bid``,
  ``ask`` are NaN; ``volume``, ``amount``, ``trades`` are 0.
* **ffill_close=True** fills only ``close``: an empty bar's close becomes the close of the
  symbol's last non-empty bar at or after ``start`` (across days, whatever the chunking). Before
  a symbol's first tick in the range it stays NaN; ``open``, ``high``, ``low``, ``vwap``, ``bid``
  and ``ask`` stay NaN and ``volume``/``amount``/``trades`` stay 0.

Task layout
-----------
One Dask task per (date group x symbol bucket) builds one block ``(fields, rows, symbols)`` of a
3-D dask array: it opens the :class:`TickStore` itself from the store's path and options,
reads its ticks with ``store.read_day(date, symbols=bucket, columns=needed)`` one date at a time
(so a worker holds one day of one bucket at a time) and aggregates them with a one-pass Numba
kernel (:mod:`factorflow.kernels.cpu.bars`). Only small things (path, dates, symbol names) go
through the graph; ticks never leave the worker that reads them.

* A date group is one date for intraday bars with at least :data:`MIN_ROWS_PER_TASK` bars a day
  (``5min`` and finer on both equity sessions); coarser bars group consecutive dates until a block
  has that many rows (``1d``: 64 dates a task, ``1h`` on ``us_equity``: 10).
* Symbol buckets (``symbols_per_task``, default): as many symbols as keep one date's ticks of
  the bucket under :data:`TARGET_PARTITION_BYTES` (384 MiB) in memory, estimated from the
  Parquet footers of up to 8 dates (the largest) at 8 bytes per column read plus 16 for the
  symbol, and blocks under :data:`MAX_BLOCK_CELLS` (2 M) rows x symbols (``1s`` bars: 85
  symbols). So all symbols of a small day go in one bucket; a large day is cut into buckets of
  a few hundred symbols. With fewer date groups than 2 per worker thread (of the active Dask
  client, else of Dask's local thread pool), buckets are split further (not below 64 symbols)
  to give every thread two tasks. Fewer, larger tasks cost less in scheduling, so symbols are
  not split more than that (a bucket of adjacent symbols reads at the cost per tick of a whole
  day: ``read_day`` selects it by binary search on the sorted symbol codes).
* ``ffill_close`` adds a chain per bucket: a tiny task per block carries the last known close
  per symbol to the next block, and a fill task per block applies it.
"""
from __future__ import annotations

import itertools
import math
import uuid
from dataclasses import dataclass

import numpy as np

from . import memory
from .panel import Panel, _Group
from .sessions import freq_to_ns, get_session

__all__ = ["BAR_FIELDS", "QUOTE_FIELDS", "aggregate_day", "bars_panel"]

BAR_FIELDS = ("open", "high", "low", "close", "volume", "amount", "vwap", "trades")
QUOTE_FIELDS = ("bid", "ask")

TARGET_PARTITION_BYTES = 384 * 2 ** 20  # ticks of one (date x bucket) read by a task, in memory
MAX_BLOCK_CELLS = 2_000_000         # rows x symbols of one block (x ~10 fields x 8 bytes)
MIN_ROWS_PER_TASK = 64              # coarse bars: consecutive dates share a task up to this height
MIN_SYMBOLS_PER_TASK = 64           # do not split buckets below this for parallelism alone
TASKS_PER_THREAD = 2                # split symbols for parallelism only with fewer date groups
_SYMBOL_BYTES = 16                  # in-memory bytes of a tick's symbol string (offset + text)

_STATS = ("open", "high", "low", "close", "volume", "amount", "trades", "bid", "ask")
_PRICE_FIELDS = {"open", "high", "low", "close", "amount", "vwap"}
_SIZE_FIELDS = {"volume", "amount", "vwap"}
_counter = itertools.count()


# -- one day ---------------------------------------------------------------------------------------
def _bar_grid(session, date: str, freq: str):
    """Session intervals of ``date`` as int64 ns (starts, ends), the bar offset of each
    interval, the bar length and the number of bars (matches ``Session.bar_times``)."""
    bounds = session.bounds_utc(date)
    starts = np.array([a.astype("datetime64[ns]").astype(np.int64) for a, _ in bounds], dtype=np.int64)
    ends = np.array([b.astype("datetime64[ns]").astype(np.int64) for _, b in bounds], dtype=np.int64)
    if freq == "1d":
        return starts, ends, np.zeros(len(starts), dtype=np.int64), np.int64(2 ** 62), 1
    step = freq_to_ns(freq)
    counts = np.maximum(0, -((starts - ends) // step))  # ceil((end - start) / step)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return starts, ends, offsets, np.int64(step), int(counts.sum())


def _check_fields(fields, has_quotes: bool) -> tuple[str, ...]:
    fields = tuple(fields)
    allowed = BAR_FIELDS + QUOTE_FIELDS
    for f in fields:
        if f not in allowed:
            raise ValueError(f"unknown bar field {f!r}; bar fields are {', '.join(allowed)}")
        if f in QUOTE_FIELDS and not has_quotes:
            raise ValueError(f"bar field {f!r} needs 'bid' and 'ask' columns in the ticks")
    if len(set(fields)) != len(fields):
        raise ValueError(f"bar fields repeat: {fields}")
    return fields


def _needed_columns(fields) -> list[str]:
    cols = []
    if _PRICE_FIELDS.intersection(fields):
        cols.append("price")
    if _SIZE_FIELDS.intersection(fields):
        cols.append("size")
    if QUOTE_FIELDS[0] in fields or QUOTE_FIELDS[1] in fields:
        cols += ["bid", "ask"]
    return cols


def _numeric(series, integer_ok: bool):
    """A Polars column as a 1-D NumPy array: float64, or int64 for integer sizes."""
    import polars as pl

    if integer_ok and series.dtype.is_integer() and series.null_count() == 0:
        return series.cast(pl.Int64).to_numpy()
    return series.cast(pl.Float64).to_numpy()  # nulls -> NaN


def _sorted_runs(sym, col_of: dict):
    """Runs of a symbol column known to be sorted, found by binary search (O(symbols log n)
    instead of a pass over the strings); None unless the runs of ``col_of``'s symbols cover every
    row (then the caller falls back to a run-length encoding of the column)."""
    import polars as pl

    if sym.dtype != pl.String or sym.null_count():
        return None
    keys = sorted(col_of)
    probe = pl.Series(keys, dtype=pl.String)
    lo = sym.search_sorted(probe, side="left").to_numpy().astype(np.int64)
    hi = sym.search_sorted(probe, side="right").to_numpy().astype(np.int64)
    n = hi - lo
    keep = n > 0
    lo, n = lo[keep], n[keep]
    if n.sum() != len(sym) or (len(lo) and (lo[0] != 0 or np.any(lo[1:] != lo[:-1] + n[:-1]))):
        return None
    cols = np.array([col_of[k] for k, kp in zip(keys, keep) if kp], dtype=np.int64)
    return n, cols


def _pieces(ticks, columns) -> list[tuple[int, int]]:
    """Row ranges of the frame's chunks when every column has the same chunks (so each range is
    a zero-copy NumPy view per column), else the whole frame."""
    lengths = ticks.get_column(columns[0]).chunk_lengths()
    if len(lengths) > 1 and all(ticks.get_column(c).chunk_lengths() == lengths for c in columns[1:]):
        edges = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]
    return [(0, ticks.height)]


def _aggregate_into(ticks, date: str, freq: str, session, col_of: dict, fields, out9: np.ndarray,
                    sorted_symbols: bool = False) -> None:
    """Aggregate ``ticks`` into ``out9`` (9, bars, symbols), pre-filled (NaN / 0).

    ``sorted_symbols``: the caller guarantees that the frame is sorted by (symbol, time)
    (``read_day`` output): runs are found by binary search and the frame is fed to the kernel
    chunk by chunk, without copying a column. Otherwise, or if the runs found that way do not
    cover the frame, runs come from a run-length encoding of the ``symbol`` column, after a
    stable sort by (symbol, time) if a symbol's ticks are not contiguous or not in time order.
    """
    import polars as pl

    from ..kernels.cpu.bars import aggregate_runs

    if ticks.height == 0:
        return
    for c in ("time", "symbol"):
        if c not in ticks.columns:
            raise ValueError(f"ticks of {date} have no {c!r} column (columns: {', '.join(ticks.columns)})")
    tcol = ticks.get_column("time")
    if not isinstance(tcol.dtype, pl.Datetime):
        raise TypeError(f"ticks of {date}: column 'time' must be a Datetime, got {tcol.dtype}")
    if tcol.null_count():
        raise ValueError(f"ticks of {date}: column 'time' has {tcol.null_count()} nulls")
    starts, ends, offsets, step, _ = _bar_grid(session, date, freq)
    use_price = bool(_PRICE_FIELDS.intersection(fields))
    use_size = bool(_SIZE_FIELDS.intersection(fields))
    use_quotes = bool(set(QUOTE_FIELDS).intersection(fields))
    used = ["time"] + (["price"] if use_price else []) + (["size"] if use_size else []) + \
        (["bid", "ask"] if use_quotes else [])
    empty = np.empty(0, dtype=np.float64)

    def run(frame, run_len, run_col) -> int:
        time = frame.get_column("time").dt.cast_time_unit("ns").to_physical().to_numpy()
        price = _numeric(frame.get_column("price"), False) if use_price else empty
        size = _numeric(frame.get_column("size"), True) if use_size else empty
        bid = _numeric(frame.get_column("bid"), False) if use_quotes else empty
        ask = _numeric(frame.get_column("ask"), False) if use_quotes else empty
        return aggregate_runs(time, run_len, run_col, price, size, bid, ask, starts, ends, offsets, step,
                              use_price, use_size, use_quotes, out9)

    if sorted_symbols:
        runs = _sorted_runs(ticks.get_column("symbol"), col_of)
        if runs is not None:
            run_len, run_col = runs
            run_end = np.cumsum(run_len)
            run_start = run_end - run_len
            ok = True
            for c0, c1 in _pieces(ticks, used):
                a = int(np.searchsorted(run_end, c0, side="right"))
                b = int(np.searchsorted(run_start, c1, side="left"))
                lens = np.minimum(run_end[a:b], c1) - np.maximum(run_start[a:b], c0)
                if run(ticks.slice(c0, c1 - c0), lens, run_col[a:b]) >= 0:
                    ok = False
                    break
            if ok:
                return
            _init_stats(out9)
    for attempt in (0, 1):
        runs = ticks.get_column("symbol").rle()
        values = runs.struct.field("value")
        if attempt == 0 and values.n_unique() != len(values):  # a symbol's ticks are not contiguous
            ticks = ticks.sort("symbol", "time", maintain_order=True)
            continue
        run_len = runs.struct.field("len").cast(pl.Int64).to_numpy()
        run_col = np.array([col_of.get(v, -1) for v in values.cast(pl.String).to_list()], dtype=np.int64)
        if run(ticks, run_len, run_col) < 0:
            return
        if attempt == 1:  # pragma: no cover - sorted input cannot be out of time order
            raise AssertionError("ticks still out of order after sorting")
        # a symbol's ticks are out of time order: sort (stable: equal times keep their order)
        _init_stats(out9)
        ticks = ticks.sort("symbol", "time", maintain_order=True)


def _init_stats(out9: np.ndarray) -> None:
    out9[:4] = np.nan
    out9[4:7] = 0.0
    out9[7:] = np.nan


def _select(out9: np.ndarray, fields, dest: np.ndarray) -> None:
    """Write ``fields`` from the 9 raw statistics into ``dest`` (len(fields), bars, symbols)."""
    for k, f in enumerate(fields):
        if f == "vwap":
            amount, volume = out9[5], out9[4]
            with np.errstate(invalid="ignore", divide="ignore"):
                np.divide(amount, volume, out=dest[k])
            dest[k][volume == 0] = np.nan
        else:
            dest[k] = out9[_STATS.index(f)]


def aggregate_day(ticks, date: str, freq: str, session, symbols, fields=BAR_FIELDS) -> np.ndarray:
    """Bars of one date from its ticks: an array ``(len(fields), n_bars, len(symbols))`` float64.

    Parameters
    ----------
    ticks : polars.DataFrame
        Columns ``time`` (Datetime), ``symbol`` and those the fields need (``price``, ``size``,
        ``bid``/``ask``). Best sorted by (symbol, time), as ``TickStore.read_day`` returns them;
        otherwise they are sorted first (stable: equal times keep their order).
    date : str
        ``"YYYY-MM-DD"``: the session calendar of that date is the bar axis.
    freq : str
        One of ``FREQUENCIES`` (``"1s"`` ... ``"1h"``, ``"1d"``).
    session : str or Session
        ``"us_equity"``, ``"cn_equity"``, ``"24h"`` or a :class:`Session`.
    symbols : list of str
        Output columns, in order; ticks of other symbols are ignored.
    fields : sequence of str
        From :data:`BAR_FIELDS` and, with quote columns, ``"bid"``, ``"ask"``.

    Returns
    -------
    numpy.ndarray
        Row ``k`` of axis 1 is the bar starting at ``Session.bar_times(date, freq)[k]``. Empty
        bars: NaN prices, zero volume, amount and trades. Ticks outside the session are dropped.

    Examples
    --------
    >>> import polars as pl
    >>> from factorflow.engine.bars import aggregate_day
    >>> ticks = pl.DataFrame({
    ...     "time": pl.Series(["2024-03-04T14:30:05", "2024-03-04T14:30:40", "2024-03-04T14:31:10",
    ...                        "2024-03-04T14:29:59"]).str.to_datetime(time_unit="ns", time_zone="UTC"),
    ...     "symbol": ["A", "A", "A", "B"], "price": [10.0, 11.0, 10.5, 3.0], "size": [100.0, 300.0, 50.0, 1.0]})
    >>> b = aggregate_day(ticks, "2024-03-04", "1min", "us_equity", ["A", "B"],
    ...                   fields=("open", "high", "close", "volume", "vwap", "trades"))
    >>> b.shape  # fields, 390 one-minute bars (09:30-16:00 New York), symbols
    (6, 390, 2)
    >>> b[:, 0, 0].tolist()   # A's 14:30Z bar
    [10.0, 11.0, 11.0, 400.0, 10.75, 2.0]
    >>> b[:, 0, 1].tolist()   # B traded at 14:29:59Z, before the open: no bar holds it
    [nan, nan, nan, 0.0, nan, 0.0]
    """
    session = get_session(session)
    freq_to_ns(freq)
    fields = _check_fields(fields, "bid" in ticks.columns and "ask" in ticks.columns)
    for c in _needed_columns(fields):
        if c not in ticks.columns:
            raise ValueError(f"ticks have no {c!r} column, needed for fields {fields}")
    symbols = [str(s) for s in symbols]
    col_of = {s: j for j, s in enumerate(symbols)}
    if len(col_of) != len(symbols):
        raise ValueError("symbols must be unique")
    n_bars = _bar_grid(session, date, freq)[4]
    out9 = np.empty((len(_STATS), n_bars, len(symbols)))
    _init_stats(out9)
    _aggregate_into(ticks, date, freq, session, col_of, fields, out9)
    dest = np.empty((len(fields), n_bars, len(symbols)))
    _select(out9, fields, dest)
    return dest


# -- tasks -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _BlockSpec:
    """Everything one block's task needs (small; an opaque object, so Dask does not look inside)."""

    store_class: type
    path: str
    options: tuple          # (name, value) pairs for the store's constructor
    dates: tuple
    read_symbols: tuple | None  # symbols filter for read_day (None: every symbol of the day)
    symbols: tuple          # the block's columns
    freq: str
    session: object
    fields: tuple
    columns: tuple
    rows: int


def _store_options(store) -> tuple:
    """The constructor options a worker needs to open the same store."""
    return tuple((name, getattr(store, name)) for name in ("strict", "duplicates") if hasattr(store, name))


def _bars_block(spec: _BlockSpec) -> np.ndarray:
    """One block (fields, rows, symbols): read and aggregate the dates one at a time."""
    store = spec.store_class(spec.path, **dict(spec.options))
    dates, read_symbols, symbols, freq = spec.dates, spec.read_symbols, spec.symbols, spec.freq
    session, fields, columns, rows = spec.session, spec.fields, list(spec.columns), spec.rows
    col_of = {s: j for j, s in enumerate(symbols)}
    block = memory.empty((len(fields), rows, len(symbols)))  # every element written by _select
    out9 = None
    r = 0
    for date in dates:
        n = _bar_grid(session, date, freq)[4]
        if out9 is None or out9.shape[1] != n:
            out9 = memory.empty((len(_STATS), n, len(symbols)))  # every element set by _init_stats
        _init_stats(out9)
        ticks = store.read_day(date, symbols=read_symbols, columns=columns)
        # read_day returns ticks sorted by (symbol, time) (and the kernel checks the times)
        _aggregate_into(ticks, date, freq, session, col_of, fields, out9, sorted_symbols=True)
        del ticks
        _select(out9, fields, block[:, r:r + n])
        r += n
    assert r == rows, (r, rows)
    return block


def _last_close(block, carry, ci):
    """Last non-NaN close per symbol of ``block``, else ``carry`` (NaN when None)."""
    close = block[ci]
    rows = close.shape[0]
    if rows == 0:
        return np.full(close.shape[1], np.nan) if carry is None else carry
    valid = ~np.isnan(close)
    last = rows - 1 - np.argmax(valid[::-1], axis=0)
    out = close[last, np.arange(close.shape[1])]
    none = ~valid.any(axis=0)
    if carry is None:
        out = np.where(none, np.nan, out)
    else:
        out = np.where(none, carry, out)
    return out


def _ffill_block(block, carry, ci):
    """``block`` with NaN closes replaced by the last known close (``carry`` before the block)."""
    out = block.copy()
    close = out[ci]
    rows, n = close.shape
    if rows == 0:
        return out
    valid = ~np.isnan(close)
    idx = np.where(valid, np.arange(rows)[:, None], -1)
    np.maximum.accumulate(idx, axis=0, out=idx)
    filled = close[np.maximum(idx, 0), np.arange(n)[None, :]]
    if carry is None:
        filled[idx < 0] = np.nan
    else:
        filled = np.where(idx < 0, carry[None, :], filled)
    out[ci] = filled
    return out


# -- layout ----------------------------------------------------------------------------------------
def _estimate_ticks_per_day(store, dates) -> int:
    """Largest tick count of a date among up to 8 sampled dates (from Parquet footers)."""
    import pyarrow.parquet as pq

    if not dates:
        return 0
    k = min(8, len(dates))
    sample = sorted({dates[round(i * (len(dates) - 1) / max(k - 1, 1))] for i in range(k)})
    best = 0
    for d in sample:
        rows = 0
        for f in store.files(d):
            try:
                rows += pq.read_metadata(str(f)).num_rows
            except Exception:  # unreadable footers: the read in the task reports it properly
                pass
        best = max(best, rows)
    return best


def _worker_threads() -> int:
    """Threads that will run the tasks: the active client's, else Dask's local pool's."""
    from .graph import _active_client

    client = _active_client()
    n = sum(client.nthreads().values()) if client is not None else 0
    if n:
        return n
    import os

    import dask

    return int(dask.config.get("num_workers", None) or os.cpu_count() or 1)


def _date_groups(dates, rows_per_date):
    """Consecutive dates grouped until a group has MIN_ROWS_PER_TASK rows."""
    groups, cur, rows = [], [], 0
    for d, n in zip(dates, rows_per_date):
        cur.append(d)
        rows += n
        if rows >= MIN_ROWS_PER_TASK:
            groups.append(cur)
            cur, rows = [], 0
    if cur:
        groups.append(cur)
    return groups


def _symbols_per_task(store, dates, n_symbols: int, n_columns: int, max_rows: int, n_groups: int) -> int:
    """Default bucket size (see the module docstring)."""
    if n_symbols == 0:
        return 1
    per_day = _estimate_ticks_per_day(store, dates)
    tick_bytes = 8 * (1 + n_columns) + _SYMBOL_BYTES  # time + numeric columns + symbol
    per_symbol = max(per_day * tick_bytes / n_symbols, 1.0)
    spt = min(n_symbols, max(1, int(TARGET_PARTITION_BYTES / per_symbol)),
              max(1, MAX_BLOCK_CELLS // max(max_rows, 1)))
    threads = _worker_threads()
    if n_groups < TASKS_PER_THREAD * threads:
        want_buckets = math.ceil(TASKS_PER_THREAD * threads / max(n_groups, 1))
        spt = min(spt, max(MIN_SYMBOLS_PER_TASK, math.ceil(n_symbols / want_buckets)))
    return spt


def _buckets(symbols: list, spt: int) -> list[list]:
    n = len(symbols)
    if n == 0:
        return [[]]
    k = math.ceil(n / max(1, spt))
    size = math.ceil(n / k)
    return [symbols[i:i + size] for i in range(0, n, size)]


def bars_panel(store, freq: str, start=None, end=None, symbols=None, session="us_equity", ffill_close=False,
               symbols_per_task=None, missing_symbols: str = "error") -> Panel:
    """Bars of a tick store as a lazy, dask-backed Panel (ticks are read inside the tasks).

    Parameters
    ----------
    store : TickStore
    freq : str
        ``"1s"``, ``"5s"``, ``"1min"``, ``"5min"``, ``"15min"``, ``"30min"``, ``"1h"`` or ``"1d"``.
    start, end : str, optional
        First and last date (``"YYYY-MM-DD"``, inclusive); default: the whole store.
    symbols : list of str, optional
        Symbols (the panel's columns, in this order); checked against the store before anything
        runs. Default: every symbol with ticks in the range, sorted.
    session : str or Session
        Trading hours giving the bar calendar (``"us_equity"``, ``"cn_equity"``, ``"24h"``).
    ffill_close : bool
        Fill the ``close`` of empty bars with the symbol's last known close (see the module
        docstring; only ``close`` is filled).
    symbols_per_task : int, optional
        Symbols per task (bucket size); default from the data size (module docstring).
    missing_symbols : {"error", "empty"}
        A listed symbol without ticks in the range: a ``ValueError`` with close matches
        (default), or empty bars (a fixed universe across runs, as ``factorflow run
        --incremental`` keeps).

    Returns
    -------
    Panel
        Fields :data:`BAR_FIELDS` (+ ``bid``, ``ask`` when the store has quotes), times = the
        concatenated session calendars (``datetime64[ns]``, UTC), symbols as above. One group,
        a 3-D dask array whose blocks are (date group x symbol bucket).

    Examples
    --------
    >>> import tempfile, numpy as np, factorflow as ff
    >>> from factorflow.engine.tickgen import generate_ticks
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = generate_ticks(tmp, symbols=3, days=2, seed=0, ticks_per_day=200)
    ...     bars = ff.TickStore(tmp).bars("1h")
    ...     print(bars)
    ...     close = bars.to_numpy("close")
    <Panel 14 times x 3 symbols, 10 fields (open, high, low, close, volume, amount, vwap, trades, ...), float64, dask>
    >>> str(bars.times[0]), str(bars.times[6])   # 09:30 New York = 14:30Z; the last bar is 30 min
    ('2024-01-02T14:30:00.000000000', '2024-01-02T20:30:00.000000000')
    """
    import dask.array as da
    from dask.highlevelgraph import HighLevelGraph

    sess = get_session(session)
    freq_to_ns(freq)
    dates = [str(d) for d in store.dates(start, end)]
    if not dates:
        raise ValueError(f"no tick data in {store.path} between {start or 'the first date'} and "
                         f"{end or 'the last date'}")
    if symbols is None:
        syms = [str(s) for s in store.symbols(start, end)]
        read_all = True
    else:
        if isinstance(symbols, str):
            symbols = [symbols]
        symbols = [str(s) for s in symbols]
        dup = sorted({s for s in symbols if symbols.count(s) > 1})
        if dup:
            raise ValueError(f"symbols repeat: {', '.join(dup)}")
        if missing_symbols == "error":
            store.check_symbols(symbols, start, end)  # ValueError naming unknown symbols, before any work
        elif missing_symbols != "empty":
            raise ValueError(f"missing_symbols must be 'error' or 'empty', got {missing_symbols!r}")
        syms = symbols
        read_all = False
    names = set(store.schema.names)
    fields = BAR_FIELDS + (QUOTE_FIELDS if {"bid", "ask"} <= names else ())
    columns = _needed_columns(fields)

    times_per_date = [sess.bar_times(d, freq) for d in dates]
    rows_per_date = [len(t) for t in times_per_date]
    groups = _date_groups(dates, rows_per_date)
    group_rows = []
    pos = 0
    for g in groups:
        group_rows.append(sum(rows_per_date[pos:pos + len(g)]))
        pos += len(g)
    if symbols_per_task is None:
        spt = _symbols_per_task(store, dates, len(syms), len(columns), max(group_rows), len(groups))
    else:
        spt = int(symbols_per_task)
        if spt < 1:
            raise ValueError(f"symbols_per_task must be a positive integer, got {symbols_per_task!r}")
    buckets = _buckets(syms, spt)
    one_bucket = len(buckets) == 1

    options = _store_options(store)
    ci = fields.index("close")
    token = f"{freq}-{uuid.uuid4().hex[:16]}-{next(_counter)}"
    raw = f"ff-bars-{token}" if not ffill_close else f"ff-bars-raw-{token}"
    raw_dsk = {}
    for i, (g, rows) in enumerate(zip(groups, group_rows)):
        for j, b in enumerate(buckets):
            read = None if (read_all and one_bucket) else tuple(b)
            raw_dsk[(raw, 0, i, j)] = (_bars_block, _BlockSpec(type(store), str(store.path), options, tuple(g),
                                                               read, tuple(b), freq, sess, fields,
                                                               tuple(columns), rows))
    layers, deps, name = {raw: raw_dsk}, {raw: set()}, raw
    if ffill_close:
        # a chain per bucket: carry (i, j) = last known close after block i; fill reads carry i-1
        name, carry = f"ff-bars-{token}", f"ff-bars-carry-{token}"
        fill_dsk, carry_dsk = {}, {}
        for j in range(len(buckets)):
            prev = None
            for i in range(len(groups)):
                fill_dsk[(name, 0, i, j)] = (_ffill_block, (raw, 0, i, j), prev, ci)
                carry_dsk[(carry, i, j)] = (_last_close, (raw, 0, i, j), prev, ci)
                prev = (carry, i, j)
        layers.update({carry: carry_dsk, name: fill_dsk})
        deps.update({carry: {raw}, name: {raw, carry}})
    graph = HighLevelGraph(layers, deps)
    chunks = ((len(fields),), tuple(group_rows), tuple(len(b) for b in buckets))
    arr = da.Array(graph, name, chunks=chunks, dtype=np.float64, meta=np.empty((0, 0, 0), np.float64))
    times = (np.concatenate(times_per_date) if times_per_date else np.array([], dtype="datetime64[ns]"))
    panel = Panel([_Group(fields, arr)], times.astype("datetime64[ns]"), np.array(syms, dtype=str))
    return panel
