"""The tick store (engine/ticks.py): listing, reads, pushdown, validation policies and errors."""
from __future__ import annotations

import datetime as dt
import io
import logging
import pickle

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from factorflow.engine import ticks as ticks_mod
from factorflow.engine.tickgen import generate_ticks
from factorflow.engine.ticks import TickDataError, TickStore

DAY = "2024-01-02"
LOGGER = "factorflow.ticks"


# -- data ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """20 days x 10 symbols, row groups of about one symbol, files well over the 64 KiB that
    pyarrow reads speculatively for a footer."""
    path = tmp_path_factory.mktemp("big")
    info = generate_ticks(path, symbols=10, days=20, seed=2, ticks_per_day=3000, row_group_rows=3000,
                          halt_rate=0.05, missing_rate=0.02)
    return path, info


def raw(path) -> pl.DataFrame:
    """The store's files read directly, in the types TickStore returns."""
    frames = [pl.read_parquet(f) for f in sorted(path.glob("date=*/*.parquet"))]
    return pl.concat(frames).with_columns(pl.col("symbol", "exchange", "condition").cast(pl.String))


def tick_table(times, symbols, prices, sizes, day=DAY, **extra) -> pa.Table:
    t = pa.array(np.array([f"{day}T{x}" for x in times], "datetime64[ns]")).cast(pa.timestamp("ns", "UTC"))
    return pa.table({"time": t, "symbol": pa.array(symbols, pa.string()), "price": pa.array(prices, pa.float64()),
                     "size": pa.array(sizes, pa.float64()), **extra})


def write(root, table, day=DAY, name="part-0.parquet"):
    d = root / f"date={day}"
    d.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, d / name)
    return str(d / name)


def simple(times=("14:30:00", "14:30:01", "14:30:02", "14:30:03"), symbols=("AAA", "AAA", "BBB", "BBB"),
           prices=(10.0, 10.01, 20.0, 20.02), sizes=(100.0, 200.0, 300.0, 400.0), **extra) -> pa.Table:
    return tick_table(list(times), list(symbols), list(prices), list(sizes), **extra)


# -- listing and schema ----------------------------------------------------------------------------
def test_listing_schema_symbols(big):
    path, info = big
    store = TickStore(path)
    assert store.dates() == info["dates"]
    assert store.files(info["dates"][3]) == [str(path / f"date={info['dates'][3]}" / "part-0.parquet")]
    df = raw(path)
    assert store.symbols() == sorted(set(df["symbol"]))
    day = info["dates"][5]
    assert store.symbols(day, day) == sorted(set(pq.read_table(store.files(day)[0], columns=["symbol"])
                                                 .column("symbol").to_pylist()))
    schema = store.schema
    assert schema.names == ["time", "symbol", "price", "size", "bid", "ask", "bid_size", "ask_size", "exchange",
                            "condition"]
    assert schema.field("time").type == pa.timestamp("ns", "UTC") and schema.field("symbol").type == pa.string()
    assert "date" not in schema.names
    r = repr(store)
    assert str(path) in r and "20 dates" in r and info["dates"][0] in r


def test_dates_arguments(big):
    path, info = big
    store = TickStore(path)
    d = info["dates"]
    assert store.dates(d[2], d[4]) == d[2:5]
    assert store.dates(dt.date.fromisoformat(d[2]), np.datetime64(d[4])) == d[2:5]
    assert store.dates(dt.datetime.fromisoformat(d[2] + "T23:00"), None) == d[2:]
    assert store.dates(None, d[1]) == d[:2]
    assert store.dates("2024-01-06", "2024-01-07") == []  # a weekend
    with pytest.raises(ValueError, match="after end"):
        store.dates(d[4], d[2])
    with pytest.raises(ValueError, match="not a date"):
        store.dates("yesterday")
    with pytest.raises(ValueError, match="no tick partition date=2024-01-06.*nearest: 2024-01-05, 2024-01-08"):
        store.files("2024-01-06")


def test_constructor_is_cheap_and_pickles(big, monkeypatch):
    path, _ = big

    def boom(p):
        raise AssertionError("a file was opened")

    monkeypatch.setattr(ticks_mod, "_source", boom)
    store = TickStore(path, strict=True, duplicates="drop")
    assert store._dates is None  # nothing listed yet
    clone = pickle.loads(pickle.dumps(store))
    assert (clone.path, clone.strict, clone.duplicates) == (path, True, "drop")
    with pytest.raises(ValueError, match="duplicates must be"):
        TickStore(path, duplicates="maybe")
    with pytest.raises(FileNotFoundError, match="no tick store"):
        TickStore(path / "nope")


# -- reads -----------------------------------------------------------------------------------------
def test_read_returns_the_files_sorted_and_typed(big):
    path, _ = big
    store = TickStore(path)
    got = store.read()
    want = raw(path).sort(["symbol", "time"], maintain_order=True)
    assert got.schema == pl.Schema({"time": pl.Datetime("ns", "UTC"), "symbol": pl.String, "price": pl.Float64,
                                    "size": pl.Float64, "bid": pl.Float64, "ask": pl.Float64,
                                    "bid_size": pl.Float64, "ask_size": pl.Float64, "exchange": pl.String,
                                    "condition": pl.String})
    assert got.equals(want)


def test_filtered_reads_equal_filtering_the_full_read(big):
    path, info = big
    store = TickStore(path)
    full = store.read()
    syms = store.symbols()
    d = info["dates"]
    for start, end, symbols, columns in [
        (d[3], d[6], syms[2:5], ["price", "size"]),
        (d[0], d[0], None, ["bid", "ask"]),
        (None, d[1], [syms[-1]], None),
        (d[10], None, syms[::3], ["exchange", "price"]),
    ]:
        got = store.read(start, end, symbols=symbols, columns=columns)
        q = full
        if start is not None:
            q = q.filter(pl.col("time").dt.date() >= dt.date.fromisoformat(start))
        if end is not None:
            q = q.filter(pl.col("time").dt.date() <= dt.date.fromisoformat(end))
        if symbols is not None:
            q = q.filter(pl.col("symbol").is_in(symbols))
        if columns is not None:
            q = q.select(["time", "symbol", *columns])
        assert got.equals(q), (start, end, symbols, columns)
    day = store.read_day(d[7], symbols=syms[:2], columns=["size"])
    assert day.equals(full.filter((pl.col("time").dt.date() == dt.date.fromisoformat(d[7]))
                                  & pl.col("symbol").is_in(syms[:2])).select("time", "symbol", "size"))


def test_unknown_symbols_close_matches(big):
    path, _ = big
    store = TickStore(path)
    s = store.symbols()[3]
    typo = s[:-1] + ("A" if s[-1] != "A" else "B")
    with pytest.raises(ValueError, match=rf"unknown symbol {typo!r} \(did you mean .*{s!r}") as e:
        store.read(symbols=[s, typo])
    assert str(path) in str(e.value)
    with pytest.raises(ValueError, match=r"'NOPE123' \(no close match\)"):
        store.check_symbols(["NOPE123"])
    assert store.check_symbols([s, s]) == [s]
    assert store.check_symbols(s) == [s]
    with pytest.raises(TypeError):
        store.check_symbols([1])
    # read_day: a symbol absent that day is simply absent (no unknown-symbol check per day)
    assert store.read_day(store.dates()[0], symbols=["ZZZZZZ"]).height == 0


def test_unknown_column(big):
    path, info = big
    with pytest.raises(TickDataError, match=r"no column 'bidd' .*did you mean 'bid'\?") as e:
        TickStore(path).read_day(info["dates"][0], columns=["bidd"])
    assert e.value.column == "bidd" and e.value.file.endswith("part-0.parquet")


class _Counting(io.RawIOBase):
    """A file that records every (path, offset, length) read."""

    def __init__(self, path, log):
        self._f, self._path, self._log = open(path, "rb"), path, log

    def readable(self):
        return True

    def seekable(self):
        return True

    def seek(self, offset, whence=0):
        return self._f.seek(offset, whence)

    def tell(self):
        return self._f.tell()

    def readinto(self, b):
        pos = self._f.tell()
        n = self._f.readinto(b)
        self._log.append((self._path, pos, n))
        return n

    def close(self):
        self._f.close()
        super().close()


def _chunks(md):
    """``(row_group, column, start, stop)`` byte range of every column chunk of a file."""
    out = []
    for g in range(md.num_row_groups):
        rg = md.row_group(g)
        for j in range(rg.num_columns):
            c = rg.column(j)
            start = c.dictionary_page_offset if c.has_dictionary_page else c.data_page_offset
            out.append((g, c.path_in_schema, start, start + c.total_compressed_size))
    return out


def test_pushdown_dates_symbols_columns(big, monkeypatch):
    """Proof from the bytes read: every file access goes through ``ticks._source``, which this
    test wraps with a file recording each (offset, length). A read that ends at the end of the
    file is the footer (pyarrow reads up to 64 KiB speculatively; the files here are larger);
    every other read must fall inside a column chunk that the query needs, by the Parquet
    footer's own byte ranges. Robust: it depends on neither timing nor pyarrow internals beyond
    reading whole column chunks."""
    path, info = big
    reads = []
    monkeypatch.setattr(ticks_mod, "_source", lambda p: pa.PythonFile(_Counting(p, reads), mode="r"))
    store = TickStore(path)
    day = info["dates"][7]
    syms = store.symbols(day, day)
    want = syms[4:7]
    (f,) = store.files(day)
    assert {p for p, _, _ in reads} == {f}  # listing one day's symbols opens only its file
    md = pq.read_metadata(f)
    size = (path / f"date={day}" / "part-0.parquet").stat().st_size
    assert size > 4 * 65536 and md.num_row_groups >= 5
    sym_col = [md.schema.column(j).path for j in range(md.num_columns)].index("symbol")
    selected = {g for g in range(md.num_row_groups)
                if md.row_group(g).column(sym_col).statistics.max >= want[0]
                and md.row_group(g).column(sym_col).statistics.min <= want[-1]}
    assert 0 < len(selected) <= md.num_row_groups - 2

    def check(query, allowed):
        reads.clear()
        df = query()
        assert {p for p, _, _ in reads} == {f}, "another day's file was opened"
        touched = set()
        for _, off, n in reads:
            if off + n == size or n == 0:
                continue  # the footer
            hit = [(g, c) for g, c, a, b in _chunks(md) if off < b and off + n > a]
            assert hit, (off, n)
            touched.update(hit)
        bad = {(g, c) for g, c in touched if not allowed(g, c)}
        assert not bad, f"read column chunks the query does not need: {sorted(bad)}"
        return df, touched

    # read_day: only the 3 symbols' row groups, only the needed columns (price/size for the checks)
    df, touched = check(lambda: store.read_day(day, symbols=want, columns=["price"]),
                        lambda g, c: g in selected and c in ("time", "symbol", "price", "size"))
    assert sorted(set(df["symbol"])) == want
    assert {g for g, c in touched if c == "price"} == selected
    # read(): the symbol check reads the (tiny) symbol column of that day; data as above
    store2 = TickStore(path)
    df2, _ = check(lambda: store2.read(day, day, symbols=want, columns=["bid"]),
                   lambda g, c: c == "symbol" or (g in selected and c in ("time", "price", "size", "bid")))
    assert df2.columns == ["time", "symbol", "bid"] and df2.height == df.height


# -- validation and repairs ------------------------------------------------------------------------
def test_missing_column(tmp_path):
    f = write(tmp_path, simple().drop_columns(["size"]))
    with pytest.raises(TickDataError, match="missing required column 'size'") as e:
        TickStore(tmp_path).read_day(DAY)
    assert e.value.file == f and e.value.column == "size" and f in str(e.value)


@pytest.mark.parametrize("column, array, match", [
    ("price", pa.array(["1", "2", "3", "4"]), "column 'price' has type string; expected float64"),
    ("price", pa.array([1, 2, 3, 4], pa.int64()), "integer prices are ambiguous"),
    ("time", pa.array(np.arange(4).astype("datetime64[ns]")), "without a time zone"),
    ("time", pa.array([1, 2, 3, 4]), "column 'time' has type int64"),
    ("symbol", pa.array([1, 1, 2, 2]), "column 'symbol' has type int64; expected string"),
    ("size", pa.array(["a", "b", "c", "d"]), "column 'size' has type string"),
    ("bid", pa.array(["a", "b", "c", "d"]), "column 'bid' has type string"),
])
def test_wrong_types(tmp_path, column, array, match):
    t = simple(bid=pa.array([1.0] * 4))
    t = t.set_column(t.schema.get_field_index(column), column, array)
    f = write(tmp_path, t)
    with pytest.raises(TickDataError, match=match) as e:
        TickStore(tmp_path).read_day(DAY)
    assert e.value.file == f and e.value.column == column and f in str(e.value)
    with pytest.raises(TickDataError, match=match):  # the schema reads every footer: same error
        _ = TickStore(tmp_path).schema


def test_accepted_types_are_normalised(tmp_path):
    t = simple()
    t = t.set_column(0, "time", t.column("time").cast(pa.timestamp("ms", "America/New_York")))
    t = t.set_column(1, "symbol", t.column("symbol").dictionary_encode())
    t = t.set_column(3, "size", t.column("size").cast(pa.int32()))
    t = t.append_column("ask", pa.array([1, 2, 3, 4], pa.float32()))
    t = t.append_column("venue_id", pa.array([7, 8, 9, 10], pa.int16()))  # other columns pass through
    write(tmp_path, t)
    store = TickStore(tmp_path)
    df = store.read_day(DAY)
    assert df.schema == pl.Schema({"time": pl.Datetime("ns", "UTC"), "symbol": pl.String, "price": pl.Float64,
                                   "size": pl.Float64, "ask": pl.Float64, "venue_id": pl.Int16})
    assert df["time"][0] == dt.datetime(2024, 1, 2, 14, 30, tzinfo=dt.timezone.utc)
    assert df["size"].to_list() == [100.0, 200.0, 300.0, 400.0]
    assert store.schema.names == ["time", "symbol", "price", "size", "ask", "venue_id"]
    assert store.read_day(DAY, symbols=["BBB"])["price"].to_list() == [20.0, 20.02]


def test_large_string_symbols(tmp_path):
    t = simple()
    write(tmp_path, t.set_column(1, "symbol", t.column("symbol").cast(pa.large_string())))
    store = TickStore(tmp_path)
    assert store.symbols() == ["AAA", "BBB"]
    assert store.read(symbols=["AAA"])["symbol"].to_list() == ["AAA", "AAA"]


def test_corrupt_and_empty_files(tmp_path):
    (tmp_path / f"date={DAY}").mkdir()
    empty = tmp_path / f"date={DAY}" / "part-0.parquet"
    empty.write_bytes(b"")
    with pytest.raises(TickDataError, match="empty") as e:
        TickStore(tmp_path).read_day(DAY)
    assert e.value.file == str(empty) and str(empty) in str(e.value)
    empty.write_bytes(b"this is not parquet at all" * 10)
    with pytest.raises(TickDataError, match="not a readable Parquet file") as e:
        TickStore(tmp_path).read_day(DAY)
    assert str(empty) in str(e.value)
    # a valid footer over damaged data pages: the error names the file and the row group
    n = 5000
    t = tick_table([f"14:{30 + i // 3000:02d}:{(i // 50) % 60:02d}" for i in range(n)], ["AAA"] * n,
                   list(np.linspace(10, 11, n)), [100.0] * n)
    pq.write_table(t, empty, row_group_size=2500, compression="zstd")
    md = pq.read_metadata(empty)
    col = md.row_group(1).column(2)  # price, row group 1
    data = bytearray(empty.read_bytes())
    start = col.dictionary_page_offset if col.has_dictionary_page else col.data_page_offset
    data[start:start + col.total_compressed_size] = b"\xff" * col.total_compressed_size
    empty.write_bytes(bytes(data))
    with pytest.raises(TickDataError, match=r"cannot decode row group 1 \(rows 2500-4999\)") as e:
        TickStore(tmp_path).read_day(DAY)
    assert str(empty) in str(e.value)


def test_out_of_order_ticks_are_sorted_and_counted(tmp_path, caplog):
    write(tmp_path, simple(times=["14:30:05", "14:30:01", "14:30:02", "14:30:00"]))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        df = TickStore(tmp_path).read_day(DAY)
    assert df["time"].dt.second().to_list() == [1, 5, 0, 2]
    assert df["symbol"].to_list() == ["AAA", "AAA", "BBB", "BBB"]
    msgs = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(msgs) == 1 and "2 ticks out of time order" in msgs[0] and "row 1" in msgs[0]
    assert f"date={DAY}" in msgs[0]


def test_time_ordered_file_across_symbols_is_not_a_repair(tmp_path, caplog):
    """A feed sorted by time (symbols interleaved) is sorted by (symbol, time) without a warning;
    same-time ticks keep their file order."""
    write(tmp_path, simple(times=["14:30:00", "14:30:00", "14:30:01", "14:30:01"],
                           symbols=["BBB", "AAA", "BBB", "AAA"], prices=[1.0, 2.0, 3.0, 4.0]))
    with caplog.at_level(logging.INFO, logger=LOGGER):
        df = TickStore(tmp_path).read_day(DAY)
    assert df["price"].to_list() == [2.0, 4.0, 1.0, 3.0]
    assert not [r for r in caplog.records if r.name == LOGGER]


def test_several_files_in_a_partition(tmp_path, caplog):
    write(tmp_path, simple(times=["15:00:00", "15:00:01", "15:00:00", "15:00:01"]), name="part-1.parquet")
    write(tmp_path, simple(prices=[1.0, 2.0, 3.0, 4.0]), name="part-0.parquet")
    write(tmp_path, simple(), name=".hidden.parquet")
    (tmp_path / f"date={DAY}" / "_SUCCESS").write_text("")
    store = TickStore(tmp_path)
    assert [f.rsplit("/", 1)[1] for f in store.files(DAY)] == ["part-0.parquet", "part-1.parquet"]
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        df = store.read_day(DAY)
    assert df.height == 8 and df.equals(df.sort(["symbol", "time"]))
    assert not caplog.records  # part-0 then part-1 is in time order for each symbol


@pytest.mark.parametrize("policy", ["keep", "drop", "error"])
def test_duplicates(tmp_path, caplog, policy):
    f = write(tmp_path, simple(times=["14:30:00", "14:30:00", "14:30:00", "14:30:00"],
                               prices=[10.0, 10.0, 20.0, 20.0], sizes=[100.0, 100.0, 100.0, 50.0],
                               symbols=["AAA", "AAA", "AAA", "AAA"]))
    store = TickStore(tmp_path, duplicates=policy)
    if policy == "error":
        with pytest.raises(TickDataError, match=r"row 1 duplicates .*part-0.parquet row 0 .*price 10.0, size 100.0") as e:
            store.read_day(DAY)
        assert e.value.file == f and e.value.row == 1
        return
    with caplog.at_level(logging.INFO, logger=LOGGER):
        df = store.read_day(DAY)
    if policy == "keep":
        assert df.height == 4 and not caplog.records
    else:
        assert df["price"].to_list() == [10.0, 20.0, 20.0]
        (rec,) = [r for r in caplog.records if r.name == LOGGER]
        assert "dropped 1 duplicate ticks" in rec.getMessage() and "row 1" in rec.getMessage()


def test_bad_prices_and_sizes_dropped_and_counted(tmp_path, caplog):
    f = write(tmp_path, simple(times=[f"14:30:0{i}" for i in range(6)], symbols=["AAA"] * 6,
                               prices=[10.0, -1.0, float("nan"), 10.0, 0.0, 10.0],
                               sizes=[1.0, 1.0, 1.0, 0.0, 1.0, float("nan")]))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        df = TickStore(tmp_path).read_day(DAY)
    assert df["time"].dt.second().to_list() == [0]
    msgs = " | ".join(r.getMessage() for r in caplog.records if r.name == LOGGER)
    assert "dropped 3 ticks with a non-positive, NaN or missing price" in msgs and f"{f} row 1" in msgs
    assert "dropped 2 ticks with a non-positive, NaN or missing size" in msgs and f"{f} row 3" in msgs
    with pytest.raises(TickDataError, match=r"row 1: column 'price' is -1.0.*strict=True") as e:
        TickStore(tmp_path, strict=True).read_day(DAY)
    assert e.value.file == f and e.value.row == 1 and e.value.column == "price" and f in str(e.value)


def test_null_price_and_null_time(tmp_path, caplog):
    t = simple()
    t = t.set_column(2, "price", pa.array([10.0, None, 20.0, 20.0]))
    t = t.set_column(0, "time", pa.array([t.column("time")[0].as_py(), None, None, t.column("time")[3].as_py()],
                                         pa.timestamp("ns", "UTC")))
    f = write(tmp_path, t)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        df = TickStore(tmp_path).read_day(DAY)
    assert df.height == 2
    assert any("dropped 2 ticks with a null 'time'" in r.getMessage() for r in caplog.records)
    with pytest.raises(TickDataError, match=r"row 1: column 'time' is null") as e:
        TickStore(tmp_path, strict=True).read_day(DAY)
    assert e.value.file == f


@pytest.mark.parametrize("strict", [False, True])
def test_time_outside_the_partition_date_is_an_error(tmp_path, strict):
    t = tick_table(["23:59:59", "00:00:01"], ["AAA", "AAA"], [1.0, 1.0], [1.0, 1.0])
    t = t.set_column(0, "time", pa.array(np.array(["2024-01-02T23:59:59", "2024-01-03T00:00:01"], "datetime64[ns]"))
                     .cast(pa.timestamp("ns", "UTC")))
    f = write(tmp_path, t)
    with pytest.raises(TickDataError, match=r"row 1: time 2024-01-03T00:00:01.* outside the partition's date "
                                            r"2024-01-02 \(UTC\).*wrong date= folder") as e:
        TickStore(tmp_path, strict=strict).read_day(DAY)
    assert e.value.file == f and e.value.row == 1 and e.value.column == "time"


def test_rows_are_file_rows_after_row_group_skipping(tmp_path):
    """Error rows count from the file's first row even when earlier row groups were skipped."""
    n = 30
    t = tick_table([f"14:30:{i % 60:02d}" for i in range(n)], ["AAA"] * 10 + ["BBB"] * 10 + ["CCC"] * 10,
                   [1.0] * 25 + [-1.0] + [1.0] * 4, [1.0] * n)
    d = tmp_path / f"date={DAY}"
    d.mkdir()
    pq.write_table(t, d / "p.parquet", row_group_size=10)
    with pytest.raises(TickDataError, match="row 25: column 'price'"):
        TickStore(tmp_path, strict=True).read_day(DAY, symbols=["CCC"])
    assert TickStore(tmp_path).read_day(DAY, symbols=["CCC"]).height == 9


def test_columns_missing_in_some_files(tmp_path):
    write(tmp_path, simple(bid=pa.array([1.0, 1.0, 2.0, 2.0])))
    write(tmp_path, simple(day="2024-01-03"), day="2024-01-03")
    store = TickStore(tmp_path)
    df = store.read()
    assert df.columns == ["time", "symbol", "price", "size", "bid"]
    assert df["bid"].null_count() == 4
    with pytest.raises(TickDataError, match="date=2024-01-03.*no column 'bid'") as e:
        store.read(columns=["bid"])
    assert e.value.column == "bid"


def test_bad_partition_folder(tmp_path):
    write(tmp_path, simple())
    (tmp_path / "date=2024-1-2").mkdir()
    (tmp_path / "README.txt").write_text("not a partition")
    with pytest.raises(TickDataError, match=r"date=2024-1-2: partition folder is not date=YYYY-MM-DD"):
        TickStore(tmp_path).dates()


def test_empty_results_have_the_schema(big):
    path, _ = big
    store = TickStore(path)
    e = store.read("2024-01-06", "2024-01-07", columns=["price"])
    assert e.height == 0 and e.schema == pl.Schema({"time": pl.Datetime("ns", "UTC"), "symbol": pl.String,
                                                    "price": pl.Float64})
    assert store.read(symbols=[], columns=["size"]).height == 0


# -- physical checks (codes, int64 times) match the String semantics ------------------------------------
def _ticks(times_ns, symbols, prices, sizes, day=DAY) -> pa.Table:
    base = np.datetime64(f"{day}T14:30", "ns").astype(np.int64)
    t = pa.array(base + np.asarray(times_ns, np.int64)).cast(pa.timestamp("ns", "UTC"))
    return pa.table({"time": t, "symbol": pa.array(list(symbols), pa.string()),
                     "price": pa.array(prices, pa.float64()), "size": pa.array(sizes, pa.float64())})


def test_any_utf8_symbols_sort_and_filter_like_strings(tmp_path):
    """Symbols are compared as dictionary codes: the order must be the String order (bytes),
    for empty, non-ASCII and long (> 12 bytes) symbols, across files with different dictionaries."""
    rng = np.random.default_rng(5)
    names = ["", "A", "ÉCU", "LONGSYMBOLNAME_XYZ", "ZZ", "ß", "日本語テキスト", "AB"]
    tables = []
    for k in range(2):
        n = 200
        t = _ticks(rng.integers(0, 10_000, n) * 1000 + k * 10**7, rng.choice(names, n), rng.uniform(1, 2, n),
                   rng.integers(1, 9, n).astype(float))
        if k == 0:
            t = t.set_column(1, "symbol", t.column("symbol").dictionary_encode())
        tables.append(t)
        d = tmp_path / f"date={DAY}"
        d.mkdir(exist_ok=True)
        pq.write_table(t, d / f"part-{k}.parquet", row_group_size=37)
    want = pl.concat([pl.from_arrow(t).with_columns(pl.col("symbol").cast(pl.String)) for t in tables])
    want = want.sort(["symbol", "time"], maintain_order=True)
    store = TickStore(tmp_path)
    got = store.read_day(DAY)
    assert got.equals(want) and got["symbol"].dtype == pl.String
    for subset in (["ÉCU"], ["LONGSYMBOLNAME_XYZ", ""], ["日本語テキスト", "A", "ZZ"], ["nope"]):
        assert store.read_day(DAY, symbols=subset).equals(want.filter(pl.col("symbol").is_in(subset))), subset


@pytest.mark.parametrize("time_ordered", [False, True])
def test_filtered_reads_of_scattered_symbols(tmp_path, time_ordered):
    """A filter keeping many separate runs of rows (or a file not sorted by symbol) copies the
    rows instead of slicing; the result is the same as filtering the whole read."""
    rng = np.random.default_rng(6)
    syms = [f"S{i:03d}" for i in range(150)]
    n = 6000
    s = rng.choice(syms, n)
    t = np.sort(rng.integers(0, 10**9, n)) * 1000
    if not time_ordered:
        o = np.lexsort((t, s))
        s, t = s[o], t[o]
    d = tmp_path / f"date={DAY}"
    d.mkdir()
    pq.write_table(_ticks(t, s, rng.uniform(1, 2, n), np.ones(n)), d / "part-0.parquet", row_group_size=700)
    store = TickStore(tmp_path)
    full = store.read_day(DAY)
    assert full.height == n and full.equals(full.sort(["symbol", "time"], maintain_order=True))
    for subset in (syms[::2], syms[:3], syms[40:41] + syms[100:]):
        assert store.read_day(DAY, symbols=subset).equals(full.filter(pl.col("symbol").is_in(subset))), subset


def test_duplicates_in_a_large_same_time_group(tmp_path, caplog):
    n = 100
    rng = np.random.default_rng(7)
    prices, sizes = rng.choice([10.0, 10.01], n), rng.choice([100.0, 200.0, 300.0], n)
    write(tmp_path, _ticks(np.zeros(n), ["AAA"] * n, prices, sizes))
    keys = list(zip(prices, sizes))
    first = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    dup_rows = [i for i, k in enumerate(keys) if first[k] != i]
    with caplog.at_level(logging.INFO, logger=LOGGER):
        df = TickStore(tmp_path, duplicates="drop").read_day(DAY)
    assert list(zip(df["price"], df["size"])) == list(first)
    (rec,) = [r for r in caplog.records if r.name == LOGGER]
    assert f"dropped {len(dup_rows)} duplicate ticks" in rec.getMessage() and f"row {dup_rows[0]})" in rec.getMessage()
    with pytest.raises(TickDataError, match=rf"row {dup_rows[0]} duplicates .* row {first[keys[dup_rows[0]]]} ") as e:
        TickStore(tmp_path, duplicates="error").read_day(DAY)
    assert e.value.row == dup_rows[0]


def test_duplicate_twin_at_nanosecond_precision(tmp_path):
    """The row named as the duplicated one has the same time to the nanosecond."""
    write(tmp_path, _ticks([1, 2, 2], ["AAA"] * 3, [10.0] * 3, [100.0] * 3))
    with pytest.raises(TickDataError, match=r"row 2 duplicates .*part-0.parquet row 1 \(") as e:
        TickStore(tmp_path, duplicates="error").read_day(DAY)
    assert e.value.row == 2


def test_order_is_checked_after_the_drops(tmp_path, caplog):
    """A dropped tick is not the 'previous tick' of the order check; nulls and bad values are
    dropped before, and the counts are of the ticks each step dropped."""
    t = _ticks([0, 3, 2, 1, 5], ["AAA"] * 5, [10.0, -1.0, 10.0, 10.0, float("nan")], [1.0] * 5)
    write(tmp_path, t)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        df = TickStore(tmp_path).read_day(DAY)
    assert df["time"].dt.nanosecond().to_list() == [0, 1, 2]
    msgs = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(msgs) == 2 and "dropped 2 ticks with a non-positive, NaN or missing price" in msgs[0]
    assert "1 ticks out of time order" in msgs[1] and "row 3, AAA" in msgs[1]


def test_whole_day_read_is_contiguous(big):
    """A whole-day read of one file: one chunk per column (the kernel of ``bars`` reads them as
    zero-copy NumPy views), sorted, in the documented types."""
    path, info = big
    df = TickStore(path).read_day(info["dates"][2], columns=["price", "size", "bid", "ask", "exchange"])
    assert all(s.n_chunks() == 1 for s in df.get_columns())
    assert df.equals(df.sort(["symbol", "time"], maintain_order=True))
