"""Ticks -> bars (engine/bars.py) against a plain pandas aggregation of the same ticks.

The reference (``reference_bars``) is written independently of factorflow: session bounds come
from pandas time zones, bar labels from integer division of the time since the interval start,
statistics from ``groupby([symbol, label])``, the calendar from ``pd.date_range``.
"""
from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import factorflow as ff
from factorflow.engine import bars as bars_mod
from factorflow.engine.bars import BAR_FIELDS, aggregate_day
from factorflow.engine.tickgen import generate_ticks
from factorflow.engine.ticks import TickStore

from patterns import assert_close

SESSIONS = {  # independent copy of the presets: local intervals and zone
    "us_equity": ([("09:30", "16:00")], "America/New_York"),
    "cn_equity": ([("09:30", "11:30"), ("13:00", "15:00")], "Asia/Shanghai"),
}
FREQ_SECONDS = {"1s": 1, "5s": 5, "1min": 60, "5min": 300, "15min": 900, "30min": 1800, "1h": 3600}
FIELDS = BAR_FIELDS + ("bid", "ask")


# -- the reference ---------------------------------------------------------------------------------
def load_ticks(path) -> pd.DataFrame:
    """Every tick of a hive-partitioned store as a pandas frame (pyarrow, no factorflow)."""
    frames = []
    for d in sorted(os.listdir(path)):
        if not d.startswith("date="):
            continue
        for f in sorted(os.listdir(os.path.join(path, d))):
            if f.endswith(".parquet"):
                t = pq.read_table(os.path.join(path, d, f)).to_pandas()
                t["date"] = d[5:]
                frames.append(t)
    df = pd.concat(frames, ignore_index=True)
    df["symbol"] = df["symbol"].astype(str)
    return df


def session_bounds(session: str, date: str):
    intervals, tz = SESSIONS[session]
    return [(pd.Timestamp(f"{date} {a}", tz=tz).tz_convert("UTC"), pd.Timestamp(f"{date} {b}", tz=tz).tz_convert("UTC"))
            for a, b in intervals]


def reference_bars(ticks: pd.DataFrame, dates, symbols, freq: str, session: str, ffill_close=False):
    """{field: (T, N) array} and the bar labels, by pandas groupby."""
    labels, parts = [], []
    for date in dates:
        day = ticks[ticks["date"] == date]
        if freq == "1d":
            labels.append(pd.Timestamp(date))
        for a, b in session_bounds(session, date):
            inside = day[(day["time"] >= a) & (day["time"] < b)].copy()
            if freq == "1d":
                inside["label"] = pd.Timestamp(date, tz="UTC")
            else:
                step = pd.Timedelta(seconds=FREQ_SECONDS[freq])
                n = math.ceil((b - a) / step)
                labels.extend(pd.date_range(a, periods=n, freq=step).tz_convert(None))
                inside["label"] = a + ((inside["time"] - a) // step) * step
            parts.append(inside)
    df = pd.concat(parts)
    df["label"] = df["label"].dt.tz_convert(None)
    df["amount"] = df["price"] * df["size"]
    g = df.groupby(["label", "symbol"], sort=True)
    agg = pd.DataFrame({
        "open": g["price"].first(), "high": g["price"].max(), "low": g["price"].min(),
        "close": g["price"].last(), "volume": g["size"].sum(), "amount": g["amount"].sum(),
        "trades": g["price"].size().astype(float), "bid": g["bid"].last(), "ask": g["ask"].last(),
    })
    index = pd.MultiIndex.from_product([pd.DatetimeIndex(labels), list(symbols)], names=["label", "symbol"])
    agg = agg.reindex(index)
    agg[["volume", "amount", "trades"]] = agg[["volume", "amount", "trades"]].fillna(0.0)
    agg["vwap"] = (agg["amount"] / agg["volume"]).where(agg["volume"] > 0)
    out = {f: agg[f].to_numpy().reshape(len(labels), len(symbols)) for f in FIELDS}
    if ffill_close:
        out["close"] = pd.DataFrame(out["close"]).ffill().to_numpy()
    return out, np.array(labels, dtype="datetime64[ns]")


def check_against_reference(panel, ticks, dates, freq, session, ffill_close=False):
    want, labels = reference_bars(ticks, dates, list(panel.symbols), freq, session, ffill_close)
    np.testing.assert_array_equal(panel.times, labels)
    got = panel.to_numpy()
    for f in FIELDS:
        assert_close(got[f], want[f], rtol=1e-12, what=f"{freq} {f}")
    return got


# -- data ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def us_store(tmp_path_factory):
    """12 symbols over the 2024 US DST change (Sun 10 March): halts, missing days, listings."""
    path = tmp_path_factory.mktemp("us")
    info = generate_ticks(path, symbols=12, days=4, seed=3, start="2024-03-07", ticks_per_day=400,
                          halt_rate=0.3, missing_rate=0.1, listing_rate=0.1, delisting_rate=0.1)
    return TickStore(path), load_ticks(path), info


@pytest.fixture(scope="module")
def cn_store(tmp_path_factory):
    """Hand-written cn_equity ticks around the session edges and in the lunch break, with null
    quotes; plus a generated day."""
    path = tmp_path_factory.mktemp("cn")
    generate_ticks(path, symbols=4, days=1, seed=5, start="2024-06-03", session="cn_equity", ticks_per_day=300)
    # 2024-06-04 by hand (Shanghai = UTC+8): 09:30 = 01:30Z, 11:30 = 03:30Z, 13:00 = 05:00Z, 15:00 = 07:00Z
    rows = {
        "AAA": [("01:29:59.999", 9.0, 1), ("01:30:00", 10.0, 100), ("01:30:30", 10.2, 50), ("01:31:00", 10.1, 10),
                ("03:29:59.999999", 10.3, 5), ("03:30:00", 99.0, 1), ("04:15:00", 99.0, 1),
                ("05:00:00", 10.4, 7), ("06:59:59", 10.5, 3), ("07:00:00", 99.0, 1)],
        "BBB": [("02:00:00", 20.0, 200), ("02:00:00", 20.5, 100), ("02:00:01", 19.5, 300)],
    }
    table = {"time": [], "symbol": [], "price": [], "size": [], "bid": [], "ask": []}
    for sym, ticks in rows.items():
        for k, (t, p, s) in enumerate(ticks):
            table["time"].append(np.datetime64(f"2024-06-04T{t}", "ns"))
            table["symbol"].append(sym)
            table["price"].append(p)
            table["size"].append(float(s))
            table["bid"].append(None if k % 3 == 1 else p - 0.01)
            table["ask"].append(None if k % 3 == 2 else p + 0.01)
    schema = pq.read_schema(next(path.glob("date=*/*.parquet")))
    names = [n for n in schema.names if n in table]
    arrays = {n: table[n] for n in names}
    arrays["time"] = np.array(arrays["time"], dtype="datetime64[ns]")
    tab = pa.table({n: pa.array(arrays[n]).cast(schema.field(n).type) for n in names})
    for n in schema.names:  # other columns of the generated schema: nulls
        if n not in tab.column_names:
            tab = tab.append_column(n, pa.nulls(len(tab), schema.field(n).type))
    (path / "date=2024-06-04").mkdir()
    pq.write_table(tab.select(schema.names).cast(schema), path / "date=2024-06-04" / "part-0.parquet")
    return TickStore(path), load_ticks(path)


# -- tests -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("freq", ["1s", "1min", "5min", "1h", "1d"])
def test_bars_equal_pandas_reference_us_dst(us_store, freq):
    store, ticks, info = us_store
    panel = store.bars(freq)
    assert panel.fields == FIELDS
    assert list(panel.symbols) == sorted(info["symbols"])  # every symbol of the range, sorted
    got = check_against_reference(panel, ticks, info["dates"], freq, "us_equity")
    if freq == "1min":
        # DST: the session opens at 14:30Z before the change and 13:30Z after it
        assert str(panel.times[0]) .startswith("2024-03-07T14:30")
        assert str(panel.times[2 * 390]).startswith("2024-03-11T13:30")
        # halted stretches are empty bars, and a missing day is all empty
        ev = info["events"]
        for h in ev["halts"][:3]:
            j = list(panel.symbols).index(h["symbol"])
            t0, t1 = np.datetime64(h["start"][:-1], "ns"), np.datetime64(h["end"][:-1], "ns")
            inside = (panel.times >= t0 + np.timedelta64(60, "s")) & (panel.times + np.timedelta64(60, "s") <= t1)
            assert inside.any() and (got["trades"][inside, j] == 0).all() and np.isnan(got["close"][inside, j]).all()
        for m in ev["missing"][:3]:
            j = list(panel.symbols).index(m["symbol"])
            day = panel.times.astype("datetime64[D]") == np.datetime64(m["date"])
            assert (got["volume"][day, j] == 0).all() and np.isnan(got["open"][day, j]).all()
    if freq == "1h":  # 6.5 h session: 7 bars, the last one 30 minutes
        assert len(panel.times) == 4 * 7
    if freq == "1d":
        np.testing.assert_array_equal(panel.times, np.array(info["dates"], dtype="datetime64[ns]"))


@pytest.mark.parametrize("freq", ["1min", "5min", "1h", "1d"])
def test_cn_lunch_break_and_session_edges(cn_store, freq):
    store, ticks = cn_store
    panel = store.bars(freq, session="cn_equity", symbols_per_task=2)
    got = check_against_reference(panel, ticks, store.dates(), freq, "cn_equity")
    hand = (panel.times.astype("datetime64[D]") == np.datetime64("2024-06-04"))
    h = got["high"][hand][:, [list(panel.symbols).index("AAA"), list(panel.symbols).index("BBB")]]
    assert np.nanmax(h) < 99  # the 99.0 ticks are outside the session: in no bar
    if freq == "1min":
        day = panel.times.astype("datetime64[D]") == np.datetime64("2024-06-04")
        t = panel.times[day]
        assert len(t) == 240 and str(t[119])[11:16] == "03:29" and str(t[120])[11:16] == "05:00"
        a = list(panel.symbols).index("AAA")
        first = got["open"][day][0, a], got["close"][day][0, a], got["trades"][day][0, a]
        assert first == (10.0, 10.2, 2.0)  # 09:30:00 is in the first bar, 09:29:59.999 is not
        assert got["close"][day][119, a] == 10.3 and got["close"][day][120, a] == 10.4
        assert got["close"][day][239, a] == 10.5  # 15:00:00 is after the session
        # last non-null quote of each column in the bar: 01:30:00 has no bid, 01:30:30 has no ask
        assert got["bid"][day][0, a] == pytest.approx(10.19) and got["ask"][day][0, a] == pytest.approx(10.01)


def test_requested_symbols_order_and_absent(us_store):
    store, ticks, info = us_store
    syms = sorted(info["symbols"])
    late = info["events"]["listings"][0]["symbol"]
    want = [syms[5], late, syms[0]]
    panel = store.bars("5min", symbols=want)
    assert list(panel.symbols) == want
    got = check_against_reference(panel, ticks, info["dates"], "5min", "us_equity")
    first = np.datetime64(info["events"]["listings"][0]["first"])
    before = panel.times.astype("datetime64[D]") < first
    assert (got["trades"][before, 1] == 0).all()


@pytest.mark.parametrize("freq", ["1min", "1d"])
def test_ffill_close_across_days_and_chunk_invariant(us_store, freq, monkeypatch):
    store, ticks, info = us_store
    results = []
    for spt in (1, 5, None):
        results.append(store.bars(freq, ffill_close=True, symbols_per_task=spt).to_numpy())
    monkeypatch.setattr(bars_mod, "MIN_ROWS_PER_TASK", 1)  # 1d: one date per block, a longer chain
    p = store.bars(freq, ffill_close=True, symbols_per_task=4)
    assert len(p._groups[0].data.chunks[1]) == 4
    results.append(p.to_numpy())
    want = check_against_reference(p, ticks, info["dates"], freq, "us_equity", ffill_close=True)
    plain = store.bars(freq).to_numpy()
    for r in results:
        for f in FIELDS:
            np.testing.assert_array_equal(r[f], want[f])
    # only close is filled, and only where the symbol traded before (in the range)
    for f in FIELDS:
        if f != "close":
            np.testing.assert_array_equal(want[f], plain[f])
    filled = np.isnan(plain["close"]) & ~np.isnan(want["close"])
    assert filled.any() and (want["trades"][filled] == 0).all() and np.isnan(want["open"][filled]).all()
    # carried across a day boundary: a symbol missing a whole day keeps its previous close
    m = next(m for m in info["events"]["missing"] if m["date"] != info["dates"][0])
    j = list(p.symbols).index(m["symbol"])
    day = p.times.astype("datetime64[D]") == np.datetime64(m["date"])
    prev = want["close"][:np.flatnonzero(day)[0], j]
    if not np.isnan(prev).all():
        assert (want["close"][day, j] == prev[~np.isnan(prev)][-1]).all()


def test_unknown_symbol_errors_before_any_work(us_store, monkeypatch):
    store, _, info = us_store

    def boom(*a, **k):
        raise AssertionError("no ticks may be read for an invalid request")

    monkeypatch.setattr(TickStore, "read_day", boom)
    monkeypatch.setattr(bars_mod, "_bars_block", boom)
    good = sorted(info["symbols"])[0]
    with pytest.raises(ValueError, match="NOPE"):
        store.bars("1min", symbols=[good, "NOPE"])
    with pytest.raises(ValueError, match="frequency"):
        store.bars("2min")
    with pytest.raises(ValueError, match="repeat"):
        store.bars("1min", symbols=[good, good])


def test_aggregate_day_unsorted_and_types():
    t = pd.to_datetime(["2024-03-04T14:30:20", "2024-03-04T14:30:10", "2024-03-04T14:31:00",
                        "2024-03-04T14:30:30", "2024-03-04T21:00:00"], utc=True)
    df = pl.DataFrame({"time": pl.Series(t).dt.cast_time_unit("ns"), "symbol": ["A", "B", "A", "A", "A"],
                       "price": [2.0, 5.0, 3.0, 1.0, 9.0], "size": [1, 2, 3, 4, 5]})
    want = aggregate_day(df.sort("symbol", "time"), "2024-03-04", "1min", "us_equity", ["A", "B"])
    for variant in (df, df.with_columns(pl.col("symbol").cast(pl.Categorical)), df.reverse()):
        got = aggregate_day(variant, "2024-03-04", "1min", "us_equity", ["A", "B"])
        np.testing.assert_array_equal(got, want)
    k = {f: i for i, f in enumerate(BAR_FIELDS)}
    # A at 14:30: 14:30:20 (2.0) then 14:30:30 (1.0); 21:00Z is after the close (16:00 New York)
    assert want[[k["open"], k["close"], k["low"], k["volume"], k["trades"]], 0, 0].tolist() == [2.0, 1.0, 1.0, 5.0, 2.0]
    assert want[k["trades"], :, 0].sum() == 3
    with pytest.raises(ValueError, match="bid"):
        aggregate_day(df, "2024-03-04", "1min", "us_equity", ["A"], fields=("bid",))


def test_end_to_end_factors_parquet(us_store, tmp_path):
    store, _, info = us_store
    factors = {
        "ret": "close / delay(close, 1) - 1",
        "m": "ts_mean(close, 10) / close",
        "e": "ema(volume, 5)",
        "r": "cs_rank(vwap / close)",
    }
    for freq in ("1min", "1d"):
        bars = store.bars(freq, ffill_close=True, symbols_per_task=5)
        dense = ff.Panel.from_numpy(bars.to_numpy(), times=bars.times, symbols=bars.symbols)
        want = ff.compute(factors, dense).to_numpy()
        lazy = store.bars(freq, ffill_close=True, symbols_per_task=5)
        out = ff.compute(factors, lazy)
        chunked = ff.compute(factors, store.bars(freq, ffill_close=True), chunks={"time": 97, "symbol": 5}).to_numpy()
        written = out.to_parquet(tmp_path / freq)
        assert len(written) == len(info["dates"])
        back = ff.Panel.from_polars(pl.read_parquet(tmp_path / freq, hive_partitioning=False))
        assert list(back.symbols) == list(lazy.symbols)
        np.testing.assert_array_equal(back.times, lazy.times)
        for name in factors:
            assert_close(chunked[name], want[name], rtol=1e-9, what=f"{freq} {name} chunked")
            assert_close(back.to_numpy(name), want[name], rtol=1e-12, what=f"{freq} {name} parquet")


@pytest.mark.cluster
def test_two_worker_processes_read_ticks_in_workers(us_store, tmp_path, monkeypatch):
    store, _ticks, _info = us_store
    factors = {"m": "ts_mean(close, 5) / close", "v": "log(volume + 1)"}
    local = store.bars("1min", ffill_close=True).to_numpy()
    want = ff.compute(factors, ff.Panel.from_numpy(local, times=store.bars("1min").times,
                                                   symbols=store.bars("1min").symbols)).to_numpy()
    with ff.cluster.local(processes=True, n_workers=2, threads_per_worker=1, dashboard_address=None) as c:
        def not_here(*a, **k):
            raise AssertionError("ticks must be read in the worker processes, not in the client")

        monkeypatch.setattr(TickStore, "read_day", not_here)  # this process only
        bars = store.bars("1min", ffill_close=True)
        assert len(bars._groups[0].data.chunks[1]) * len(bars._groups[0].data.chunks[2]) >= 2
        got = bars.to_numpy()
        for f in FIELDS:
            np.testing.assert_array_equal(got[f], local[f])
        out = ff.compute(factors, store.bars("1min", ffill_close=True))
        out.to_parquet(tmp_path / "out")
        mods = c.client.run(lambda: "factorflow.kernels.cpu.bars" in __import__("sys").modules)
        assert any(mods.values())  # the workers aggregated the ticks
    back = ff.Panel.from_polars(pl.read_parquet(tmp_path / "out", hive_partitioning=False))
    for name in factors:
        assert_close(back.to_numpy(name), want[name], rtol=1e-12, what=name)


def test_chunked_read_path_merges_bars_split_across_chunks():
    """Task path: a sorted frame is aggregated chunk by chunk (zero-copy); a bar whose ticks
    straddle a chunk boundary is merged exactly."""
    rng = np.random.default_rng(4)
    n = 3000
    sym = np.sort(rng.choice(["AA", "BB", "CC", "DD"], n))
    t0 = np.datetime64("2024-03-04T14:25", "ns").astype(np.int64)
    t = np.concatenate([np.sort(t0 + rng.integers(0, 7 * 3600 * 10**9, (sym == s).sum())) for s in np.unique(sym)])
    df = pl.DataFrame({"time": pl.Series(t).cast(pl.Datetime("ns", "UTC")), "symbol": sym,
                       "price": rng.uniform(10, 11, n), "size": rng.integers(1, 100, n).astype(float),
                       "bid": np.where(rng.random(n) < 0.3, np.nan, 9.9), "ask": rng.uniform(11, 12, n)})
    df = df.with_columns(pl.col("bid").fill_nan(None))
    cuts = [0, 5, 700, 701, 1500, 2222, n]  # inside runs and inside bars
    chunked = pl.concat([df.slice(a, b - a) for a, b in zip(cuts[:-1], cuts[1:])], rechunk=False)
    assert chunked.get_column("price").n_chunks() == len(cuts) - 1
    symbols = ["DD", "AA", "CC", "BB", "EE"]
    for freq in ("1min", "1h", "1d"):
        want = aggregate_day(df, "2024-03-04", freq, "us_equity", symbols, FIELDS)
        n_bars = want.shape[1]
        out9 = np.empty((9, n_bars, len(symbols)))
        bars_mod._init_stats(out9)
        bars_mod._aggregate_into(chunked, "2024-03-04", freq, bars_mod.get_session("us_equity"),
                                 {s: j for j, s in enumerate(symbols)}, FIELDS, out9, sorted_symbols=True)
        got = np.empty_like(want)
        bars_mod._select(out9, FIELDS, got)
        np.testing.assert_allclose(got, want, rtol=1e-13)  # sums of a split bar: other addition order
