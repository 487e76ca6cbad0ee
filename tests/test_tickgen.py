"""The synthetic tick generator (engine/tickgen.py) and ``factorflow generate-ticks``."""
from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from factorflow.cli import main
from factorflow.engine.sessions import get_session
from factorflow.engine.tickgen import generate_ticks, trading_days

NS = 1_000_000_000


def load(path) -> pl.DataFrame:
    """Every file of a store as written (no TickStore), with its date."""
    frames = []
    for f in sorted(path.glob("date=*/*.parquet")):
        df = pl.read_parquet(f).with_columns(pl.col("symbol").cast(pl.String), pl.lit(f.parent.name[5:]).alias("date"))
        frames.append(df)
    return pl.concat(frames)


@pytest.fixture(scope="module")
def us(tmp_path_factory):
    """Over the US DST change (Sun 2024-03-10), with every irregularity made frequent."""
    path = tmp_path_factory.mktemp("us")
    info = generate_ticks(path, symbols=12, days=5, seed=7, start="2024-03-07", ticks_per_day=800, halt_rate=0.15,
                          missing_rate=0.05, listing_rate=0.1, delisting_rate=0.1, row_group_rows=2000)
    return path, info, load(path)


@pytest.fixture(scope="module")
def cn(tmp_path_factory):
    path = tmp_path_factory.mktemp("cn")
    info = generate_ticks(path, symbols=6, days=2, seed=1, start="2024-06-03", session="cn_equity", ticks_per_day=1000)
    return path, info, load(path)


def test_summary_matches_the_files(us):
    path, info, df = us
    files = sorted(path.glob("date=*/*.parquet"))
    assert info["files"] == len(files) == 5
    assert info["ticks"] == df.height == sum(pq.read_metadata(f).num_rows for f in files)
    assert info["bytes"] == sum(f.stat().st_size for f in files)
    assert info["seconds"] > 0 and info["session"] == "us_equity"
    assert info["dates"] == ["2024-03-07", "2024-03-08", "2024-03-11", "2024-03-12", "2024-03-13"]  # no weekend
    assert set(df["symbol"]) <= set(info["symbols"]) and len(info["symbols"]) == 12


def test_trading_days_skip_weekends():
    days = trading_days("2024-01-06", 6)  # a Saturday
    assert [d.weekday() for d in days] == [0, 1, 2, 3, 4, 0]
    assert days[0] == dt.date(2024, 1, 8)


def test_schema_sorting_and_row_groups(us):
    path, _, _ = us
    f = min(path.glob("date=*/*.parquet"))
    pf = pq.ParquetFile(f)
    schema = pf.schema_arrow
    assert schema.field("time").type == pa.timestamp("ns", "UTC")
    assert pa.types.is_dictionary(schema.field("symbol").type)
    for c in ("price", "size", "bid", "ask", "bid_size", "ask_size"):
        assert schema.field(c).type == pa.float64()
    assert pf.metadata.num_row_groups > 1
    # row groups hold whole symbols: their symbol ranges do not overlap, so statistics can skip them
    ranges = []
    for g in range(pf.metadata.num_row_groups):
        st = pf.metadata.row_group(g).column(schema.get_field_index("symbol")).statistics
        assert st is not None and st.has_min_max
        ranges.append((st.min, st.max))
    assert all(ranges[i][1] < ranges[i + 1][0] for i in range(len(ranges) - 1))
    df = pl.read_parquet(f).with_columns(pl.col("symbol").cast(pl.String))
    assert df.equals(df.sort(["symbol", "time"], maintain_order=True))


def test_deterministic_byte_for_byte(tmp_path):
    kw = {"symbols": 8, "days": 3, "seed": 11, "ticks_per_day": 300, "halt_rate": 0.2}
    a = generate_ticks(tmp_path / "a", workers=1, **kw)
    b = generate_ticks(tmp_path / "b", workers=2, **kw)
    c = generate_ticks(tmp_path / "c", workers=1, **{**kw, "seed": 12})
    assert a["events"] == b["events"] and a["ticks"] == b["ticks"]
    for fa in sorted((tmp_path / "a").glob("date=*/*.parquet")):
        rel = fa.relative_to(tmp_path / "a")
        assert fa.read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
        assert fa.read_bytes() != (tmp_path / "c" / rel).read_bytes()
    assert a["symbols"] == b["symbols"] != c["symbols"]


def test_days_are_independent(tmp_path):
    """A day's ticks depend on (seed, date), not on how many other days are generated with it."""
    kw = {"symbols": 6, "seed": 3, "ticks_per_day": 200, "listing_rate": 0, "delisting_rate": 0, "missing_rate": 0}
    generate_ticks(tmp_path / "short", days=2, **kw)
    generate_ticks(tmp_path / "long", days=4, **kw)
    a = pl.read_parquet(tmp_path / "short" / "date=2024-01-02" / "part-0.parquet")
    b = pl.read_parquet(tmp_path / "long" / "date=2024-01-02" / "part-0.parquet")
    assert a.equals(b)


@pytest.mark.parametrize("which", ["us", "cn"])
def test_ticks_inside_the_session(which, us, cn):
    _, info, df = {"us": us, "cn": cn}[which]
    session = get_session(info["session"])
    t = df["time"].to_physical().to_numpy()
    dates = df["date"].to_numpy()
    inside = np.zeros(len(t), dtype=bool)
    for d in info["dates"]:
        sel = dates == d
        for a, b in session.bounds_utc(d):
            inside[sel] |= (t[sel] >= a.astype(np.int64)) & (t[sel] < b.astype(np.int64))
    assert inside.all()
    if which == "cn":  # the lunch break 11:30-13:00 Shanghai = 03:30-05:00 UTC is empty
        hours = df["time"].dt.hour().to_numpy() + df["time"].dt.minute().to_numpy() / 60
        assert not ((hours >= 3.5) & (hours < 5.0)).any()
        assert ((hours >= 1.5) & (hours < 3.5)).any() and ((hours >= 5.0) & (hours < 7.0)).any()
    else:  # DST: 09:30 New York is 14:30 UTC before 10 March and 13:30 UTC after
        first = df.group_by("date").agg(pl.col("time").min()).sort("date")["time"].dt.hour().to_list()
        assert first == [14, 14, 13, 13, 13]


def test_u_shaped_intensity(tmp_path):
    generate_ticks(tmp_path, symbols=10, days=2, seed=0, ticks_per_day=3000, halt_rate=0)
    df = load(tmp_path)
    session = get_session("us_equity")
    counts = np.zeros(13)  # 13 half-hours in 09:30-16:00
    for d in df["date"].unique():
        (a, _), = session.bounds_utc(d)
        t = df.filter(pl.col("date") == d)["time"].to_physical().to_numpy() - a.astype(np.int64)
        counts += np.bincount(t // (1800 * NS), minlength=13)[:13]
    middle = counts[3:10].mean()
    assert counts[0] > 1.5 * middle and counts[-1] > 1.5 * middle


def test_prices_on_the_grid_inside_the_quote(us):
    _, _, df = us
    for c in ("price", "bid", "ask"):
        v = df[c].to_numpy()
        assert (v > 0).all() and np.isfinite(v).all()
        assert np.abs(v * 100 - np.round(v * 100)).max() < 1e-6, c
        assert np.array_equal(v, np.round(v * 100) / 100), c  # exactly the double nearest k/100
    assert (df["bid"] <= df["price"]).all() and (df["price"] <= df["ask"]).all()
    assert (df["bid"] < df["ask"]).all()
    for c in ("size", "bid_size", "ask_size"):
        v = df[c].to_numpy()
        assert (v >= 1).all() and np.array_equal(v, np.round(v))
    assert (df["bid_size"] % 100 == 0).all()
    assert set(df["exchange"].cast(pl.String)) <= {"XNAS", "XNYS", "ARCX", "BATS", "EDGX", "IEXG"}
    assert set(df["condition"].cast(pl.String)) == {"@", "I", "F"}


def test_prices_follow_a_continuous_path(us):
    """GBM-like: tick-to-tick log returns are small; day-to-day opens move but stay related."""
    _, _, df = us
    r = df.sort(["symbol", "time"]).select(pl.col("price").log().diff().over(["symbol", "date"]).abs().alias("r"))
    assert r["r"].drop_nulls().median() < 0.01


def test_halts_missing_days_listings(us):
    _, info, df = us
    ev = info["events"]
    assert ev["halts"] and ev["missing"] and ev["listings"] and ev["delistings"]
    for h in ev["halts"]:
        t = df.filter((pl.col("date") == h["date"]) & (pl.col("symbol") == h["symbol"]))["time"]
        start = np.datetime64(h["start"].rstrip("Z"), "ns")
        end = np.datetime64(h["end"].rstrip("Z"), "ns")
        tt = t.to_physical().to_numpy()
        # no ticks inside the halt (the record is rounded to the second)
        assert not ((tt >= start.astype(np.int64) + NS) & (tt < end.astype(np.int64) - NS)).any()
        assert (tt < start.astype(np.int64) + NS).any() and (tt >= end.astype(np.int64) - NS).any()
    for m in ev["missing"]:
        assert df.filter((pl.col("date") == m["date"]) & (pl.col("symbol") == m["symbol"])).height == 0
    days = df.group_by("symbol").agg(pl.col("date").min().alias("first"), pl.col("date").max().alias("last"))
    first = dict(zip(days["symbol"], days["first"]))
    last = dict(zip(days["symbol"], days["last"]))
    for e in ev["listings"]:
        assert e["first"] > info["dates"][0] and first[e["symbol"]] >= e["first"]
    for e in ev["delistings"]:
        assert e["last"] < info["dates"][-1] and last[e["symbol"]] <= e["last"]


def test_24h_session(tmp_path):
    info = generate_ticks(tmp_path, symbols=3, days=1, session="24h", ticks_per_day=2000, start="2024-01-03")
    df = load(tmp_path)
    assert info["session"] == "24h"
    hours = df["time"].dt.hour()
    assert hours.min() == 0 and hours.max() == 23
    assert df["exchange"].cast(pl.String).is_in(["BNCE", "CBSE", "KRKN"]).all()


@pytest.mark.parametrize("kw, match", [
    ({"symbols": 0}, "symbols must be a positive integer"),
    ({"days": -1}, "days must be a positive integer"),
    ({"start": "2024-13-01"}, "not a date"),
    ({"session": "mars"}, "unknown session"),
    ({"ticks_per_day": 0}, "ticks_per_day must be positive"),
    ({"halt_rate": 2}, "halt_rate must be in"),
    ({"seed": -3}, "seed must be a non-negative integer"),
])
def test_bad_arguments(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        generate_ticks(tmp_path / "x", **{"symbols": 3, "days": 1, **kw})
    assert not list((tmp_path).glob("x/date=*"))


def test_existing_store_needs_overwrite(tmp_path):
    generate_ticks(tmp_path, symbols=3, days=2, ticks_per_day=20)
    with pytest.raises(ValueError, match="already holds 2 date partitions.*overwrite"):
        generate_ticks(tmp_path, symbols=3, days=1, ticks_per_day=20)
    generate_ticks(tmp_path, symbols=3, days=1, ticks_per_day=20, start="2024-02-01", overwrite=True)
    assert [p.name for p in sorted(tmp_path.glob("date=*"))] == ["date=2024-02-01"]


def test_cli(tmp_path, capsys):
    out = tmp_path / "ticks"
    assert main(["generate-ticks", str(out), "--symbols", "4", "--days", "2", "--seed", "3",
                 "--start", "2024-05-01", "--session", "cn_equity", "--ticks-per-day", "100"]) == 0
    text = capsys.readouterr().out
    assert "2 files" in text and "Mticks/s" in text and " MB " in text and "cn_equity" in text
    assert len(list(out.glob("date=2024-05-0*/part-0.parquet"))) == 2
    assert main(["generate-ticks", str(out), "--symbols", "4", "--days", "2"]) == 1  # exists
    assert "overwrite" in capsys.readouterr().err
    assert main(["generate-ticks", str(tmp_path / "y"), "--symbols", "-4"]) == 1
    assert "symbols must be" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["generate-ticks", str(tmp_path / "z"), "--session", "mars"])
    assert e.value.code == 2
