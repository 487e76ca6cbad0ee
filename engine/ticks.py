"""Tick data: a hive-partitioned Parquet store, validated and cleaned on read.

Layout: ``PATH/date=YYYY-MM-DD/*.parquet``, one folder per UTC date. Columns (docs/ticks.md):

=============  ===========================================  ==========================
column         stored as                                    read as
=============  ===========================================  ==========================
``time``       timestamp with a time zone (ns, UTC)         ``Datetime("ns", "UTC")``
``symbol``     string or dictionary<string>                 ``String``
``price``      float                                        ``Float64``
``size``       float or integer                             ``Float64``
``bid``        float (optional)                             ``Float64``
``ask``        float (optional)                             ``Float64``
``bid_size``   float or integer (optional)                  ``Float64``
``ask_size``   float or integer (optional)                  ``Float64``
``exchange``   string or dictionary<string> (optional)      ``String``
``condition``  string or dictionary<string> (optional)      ``String``
=============  ===========================================  ==========================

Other columns are passed through unchanged. :class:`TickStore` reads with the column projection,
the date filter (only the partitions in range are listed and opened) and the symbol filter
(row groups whose ``symbol`` statistics exclude every requested symbol are skipped) pushed down
to pyarrow, then applies the validation policies of docs/ticks.md. Problems are either an error
(:class:`TickDataError`, naming the file and the column or row) or a documented repair counted
in the ``"factorflow.ticks"`` log; nothing is silently turned into wrong bars.

How a read stays close to the cost of the Parquet decode: ``symbol`` (and the other string
columns) come back dictionary-encoded, and symbols become int32 codes into the partition's sorted
distinct symbols, so code order is String order. One branch-free pass of a Numba kernel over the
physical arrays (codes, int64 times, prices, sizes) checks that every tick is valid and in
``(symbol, time)`` order; only when it is not does a second kernel count and locate each problem
(file rows are looked up only for what is reported). A symbol filter on a file sorted by symbol is
a binary search of the codes and zero-copy slices. The ``String`` columns are built at the end as
Arrow string views (runs of one 16-byte view per symbol), imported by Polars without a copy.
"""
from __future__ import annotations

import bisect
import datetime as _dt
import difflib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .tickgen import _as_date, generate_ticks

__all__ = ["TICK_COLUMNS", "TickDataError", "TickStore", "generate_ticks"]

log = logging.getLogger("factorflow.ticks")

REQUIRED = ("time", "symbol", "price", "size")
OPTIONAL = ("bid", "ask", "bid_size", "ask_size", "exchange", "condition")
TICK_COLUMNS = REQUIRED + OPTIONAL
_FLOAT_ONLY = ("price", "bid", "ask")
_FLOAT_OR_INT = ("size", "bid_size", "ask_size")
_STRINGS = ("symbol", "exchange", "condition")
_DUPLICATE_KEY = ["time", "symbol", "price", "size"]
_DAY_NS = 86_400 * 1_000_000_000


class TickDataError(ValueError):
    """Bad tick data: the message names the file and the column or row (0-based, in the file).

    Attributes ``file``, ``column`` and ``row`` hold them (``None`` where not applicable).
    """

    def __init__(self, message: str, file=None, column=None, row=None):
        super().__init__(message)
        self.file = None if file is None else str(file)
        self.column = column
        self.row = row


def _source(path: str):
    """What pyarrow reads ``path`` from. Every file access of the store goes through here
    (tests wrap it to count the files opened and the bytes read)."""
    return path


def _is_string(t) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t) or getattr(pa.types, "is_string_view",
                                                                            lambda _: False)(t)


def _canonical_type(name: str, t, file: str):
    """The type ``name`` is read as, or a TickDataError when ``t`` is not acceptable."""
    import pyarrow as pa

    def bad(expected: str):
        return TickDataError(f"{file}: column {name!r} has type {t}; expected {expected}", file=file, column=name)

    if name == "time":
        if not pa.types.is_timestamp(t):
            raise bad("timestamp[ns, tz=UTC]")
        if t.tz is None:
            raise TickDataError(
                f"{file}: column 'time' has type {t} without a time zone; expected timestamp[ns, tz=UTC] "
                "(naive timestamps are ambiguous: local exchange time or UTC?)", file=file, column=name)
        return pa.timestamp("ns", "UTC")
    if name in _STRINGS:
        if not _is_string(t):
            raise bad("string or dictionary<string>")
        return pa.string()
    if name in _FLOAT_ONLY:
        if not pa.types.is_floating(t):
            raise bad("float64" + (" (integer prices are ambiguous: units or ticks?)" if pa.types.is_integer(t)
                                   else ""))
        return pa.float64()
    if name in _FLOAT_OR_INT:
        if not (pa.types.is_floating(t) or pa.types.is_integer(t)):
            raise bad("float64 or an integer type")
        return pa.float64()
    return t


@dataclass
class _FilePlan:
    """One file of a partition, its footer read and its schema validated."""

    path: str
    metadata: object          # pyarrow FileMetaData
    schema: object            # Arrow schema of the file
    columns: list             # columns to read from it


def _date_str(x, what: str) -> str:
    try:
        return _as_date(x).isoformat()
    except (ValueError, TypeError, AttributeError):
        raise ValueError(f"{what}: not a date: {x!r} (use YYYY-MM-DD or a date-like)") from None


class TickStore:
    """A hive-partitioned Parquet tick store, ``path/date=YYYY-MM-DD/*.parquet``.

    Construction is cheap (no file is opened; listings are made lazily and cached), so tasks on
    Dask workers build their own. Reads return validated, cleaned ticks as a Polars DataFrame
    sorted by ``(symbol, time)``; see docs/ticks.md for every policy.

    Parameters
    ----------
    path : str or Path
        The store's root directory.
    strict : bool
        ``False`` (default): ticks with a non-positive, NaN or missing price or size (or a missing
        time or symbol) are dropped and counted in the ``"factorflow.ticks"`` log. ``True``: they
        raise :class:`TickDataError` naming the file, row and column.
    duplicates : {"keep", "drop", "error"}
        Ticks identical in ``(time, symbol, price, size)``. ``"keep"`` (default): exchanges do
        print identical trades (same millisecond, same price and size), so they are real volume.
        ``"drop"``: keep the first, count the rest in the log. ``"error"``: raise naming both rows.

    Examples
    --------
    >>> import tempfile
    >>> from factorflow.engine.ticks import TickStore, generate_ticks
    >>> tmp = tempfile.TemporaryDirectory()
    >>> _ = generate_ticks(tmp.name, symbols=5, days=3, seed=0, ticks_per_day=100)
    >>> store = TickStore(tmp.name)
    >>> store.dates()
    ['2024-01-02', '2024-01-03', '2024-01-04']
    >>> sym = store.symbols()[0]
    >>> df = store.read_day("2024-01-03", symbols=[sym], columns=["price", "size"])
    >>> df.columns, df["symbol"].unique().to_list() == [sym]
    (['time', 'symbol', 'price', 'size'], True)
    >>> tmp.cleanup()
    """

    def __init__(self, path, *, strict: bool = False, duplicates: str = "keep"):
        if duplicates not in ("keep", "drop", "error"):
            raise ValueError(f"duplicates must be 'keep', 'drop' or 'error', got {duplicates!r}")
        if not isinstance(strict, bool):
            raise TypeError(f"strict must be True or False, got {strict!r}")
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"no tick store at {self.path} (not a directory)")
        self.strict = strict
        self.duplicates = duplicates
        self._reset()

    def _reset(self):
        self._dates: list[str] | None = None
        self._files: dict[str, list[str]] = {}
        self._symbols: dict[str, frozenset] = {}
        self._schema = None

    def __getstate__(self):
        return {"path": self.path, "strict": self.strict, "duplicates": self.duplicates}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._reset()

    def __repr__(self) -> str:
        try:
            ds = self.dates()
            what = f"{len(ds)} dates {ds[0]}..{ds[-1]}" if ds else "no dates"
        except Exception as e:  # a repr never raises
            what = f"unreadable: {e}"
        return f"<TickStore {str(self.path)!r}: {what}, strict={self.strict}, duplicates={self.duplicates!r}>"

    # -- listing ----------------------------------------------------------------------------------
    def _all_dates(self) -> list[str]:
        if self._dates is None:
            out = []
            with os.scandir(self.path) as it:
                for entry in it:
                    if not entry.name.startswith("date=") or not entry.is_dir():
                        continue
                    value = entry.name[5:]
                    try:
                        ok = _dt.date.fromisoformat(value).isoformat() == value
                    except ValueError:
                        ok = False
                    if not ok:
                        raise TickDataError(f"{entry.path}: partition folder is not date=YYYY-MM-DD",
                                            file=entry.path)
                    if self._list_files(value):
                        out.append(value)
            self._dates = sorted(out)
        return self._dates

    def _list_files(self, date: str) -> list[str]:
        files = self._files.get(date)
        if files is None:
            directory = self.path / f"date={date}"
            try:
                with os.scandir(directory) as it:
                    files = sorted(e.path for e in it if e.name.endswith(".parquet")
                                   and not e.name.startswith((".", "_")) and e.is_file())
            except FileNotFoundError:
                files = []
            self._files[date] = files
        return files

    def dates(self, start=None, end=None) -> list[str]:
        """Dates (``"YYYY-MM-DD"``, sorted) whose partitions hold Parquet files, within
        ``[start, end]`` (inclusive; strings or date-likes; ``None`` is open-ended).

        Examples
        --------
        >>> import tempfile
        >>> from factorflow.engine.ticks import TickStore, generate_ticks
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     _ = generate_ticks(tmp, symbols=3, days=4, ticks_per_day=20)
        ...     TickStore(tmp).dates("2024-01-03", "2024-01-04")
        ['2024-01-03', '2024-01-04']
        """
        lo = None if start is None else _date_str(start, "start")
        hi = None if end is None else _date_str(end, "end")
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"start {lo} is after end {hi}")
        ds = self._all_dates()
        a = 0 if lo is None else bisect.bisect_left(ds, lo)
        b = len(ds) if hi is None else bisect.bisect_right(ds, hi)
        return ds[a:b]

    def files(self, date) -> list[str]:
        """The Parquet files of one date partition (sorted paths; hidden and ``_`` files skipped).

        Raises ``ValueError`` if the store has no partition for ``date``.
        """
        d = _date_str(date, "date")
        files = self._list_files(d)
        if not files:
            self._files.pop(d, None)  # it may appear later
            near = self._all_dates()
            hint = ""
            if near:
                i = bisect.bisect_left(near, d)
                hint = "; nearest: " + ", ".join(near[max(0, i - 1):i + 1])
            raise ValueError(f"no tick partition date={d} in {self.path}{hint}")
        return list(files)

    # -- schema -----------------------------------------------------------------------------------
    def _plan(self, file: str, columns: list[str] | None) -> _FilePlan:
        """Read and validate ``file``'s footer; ``columns=None`` means every column it has."""
        import pyarrow.parquet as pq

        try:
            size = os.path.getsize(file)
        except FileNotFoundError:
            raise TickDataError(f"{file}: file disappeared (the store changed while reading?)", file=file) from None
        if size == 0:
            raise TickDataError(f"{file}: file is empty (0 bytes), not a Parquet file", file=file)
        try:
            pf = pq.ParquetFile(_source(file))
            try:
                md, schema = pf.metadata, pf.schema_arrow
            finally:
                pf.close()
        except Exception as e:
            raise TickDataError(f"{file}: not a readable Parquet file ({type(e).__name__}: {e})", file=file) from None
        names = schema.names
        for c in REQUIRED:
            if c not in names:
                raise TickDataError(f"{file}: missing required column {c!r} (columns: {', '.join(names)})",
                                    file=file, column=c)
        for f in schema:
            _canonical_type(f.name, f.type, file)
        if columns is None:
            read = list(names)
        else:
            for c in columns:
                if c not in names:
                    close = difflib.get_close_matches(c, names, n=1)
                    hint = f"; did you mean {close[0]!r}?" if close else ""
                    raise TickDataError(f"{file}: no column {c!r} (columns: {', '.join(names)}){hint}",
                                        file=file, column=c)
            read = list(dict.fromkeys([*REQUIRED, *columns]))
        return _FilePlan(file, md, schema, read)

    @property
    def schema(self):
        """The store's schema as read (``pyarrow.Schema``, without the ``date`` partition).

        The required columns, then the optional ones present in any file, in the canonical
        types of the read (``time`` timestamp[ns, UTC], ``symbol`` string, numbers float64),
        then other columns. Reads every file's footer once (validating it) and caches it.
        """
        import pyarrow as pa

        if self._schema is None:
            extra: dict[str, tuple] = {}
            seen: set[str] = set()
            for d in self._all_dates():
                for f in self._list_files(d):
                    plan = self._plan(f, None)
                    for field in plan.schema:
                        seen.add(field.name)
                        if field.name in TICK_COLUMNS:
                            continue
                        if field.name in extra and extra[field.name][0] != field.type:
                            try:
                                t = pa.unify_schemas([pa.schema([(field.name, extra[field.name][0])]),
                                                      pa.schema([field])], promote_options="permissive")[0].type
                            except (pa.ArrowInvalid, pa.ArrowTypeError):
                                raise TickDataError(
                                    f"{f}: column {field.name!r} has type {field.type}, but "
                                    f"{extra[field.name][1]} has {extra[field.name][0]}", file=f,
                                    column=field.name) from None
                            extra[field.name] = (t, extra[field.name][1])
                        elif field.name not in extra:
                            extra[field.name] = (field.type, f)
            fields = [(c, _canonical_type(c, _example_type(c), "")) for c in TICK_COLUMNS
                      if c in REQUIRED or c in seen]
            fields += [(c, t) for c, (t, _) in extra.items()]
            self._schema = pa.schema(fields)
        return self._schema

    # -- symbols ----------------------------------------------------------------------------------
    def _day_symbols(self, date: str) -> frozenset:
        got = self._symbols.get(date)
        if got is None:
            import pyarrow as pa
            import pyarrow.parquet as pq

            out: set[str] = set()
            for f in self.files(date):
                plan = self._plan(f, ["symbol"])
                try:
                    pf = pq.ParquetFile(_source(f), metadata=plan.metadata, pre_buffer=False)
                    try:
                        col = pf.read(columns=["symbol"], use_threads=False).column("symbol")
                    finally:
                        pf.close()
                except TickDataError:
                    raise
                except Exception as e:
                    raise TickDataError(f"{f}: cannot decode column 'symbol' ({type(e).__name__}: {e})",
                                        file=f, column="symbol") from None
                for chunk in col.chunks:
                    if pa.types.is_dictionary(chunk.type):
                        ix = chunk.indices.drop_null() if chunk.null_count else chunk.indices
                        used = np.zeros(len(chunk.dictionary), bool)
                        if len(ix):
                            _kernel("_mark")(ix.to_numpy(zero_copy_only=False), used)
                        values = chunk.dictionary.take(pa.array(np.flatnonzero(used), pa.int64()))
                    else:
                        values = chunk.drop_null().unique()
                    out.update(values.to_pylist())
            got = frozenset(out)
            self._symbols[date] = got
        return got

    def symbols(self, start=None, end=None) -> list[str]:
        """Sorted distinct symbols with ticks in ``[start, end]`` (reads only the ``symbol``
        column; cached per date).

        Examples
        --------
        >>> import tempfile
        >>> from factorflow.engine.ticks import TickStore, generate_ticks
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     summary = generate_ticks(tmp, symbols=6, days=2, ticks_per_day=20, listing_rate=0, delisting_rate=0)
        ...     TickStore(tmp).symbols() == summary["symbols"]
        True
        """
        out: set[str] = set()
        for d in self.dates(start, end):
            out |= self._day_symbols(d)
        return sorted(out)

    def check_symbols(self, symbols, start=None, end=None) -> list[str]:
        """``symbols`` sorted and unique, after checking that each has ticks in ``[start, end]``.

        Raises ``ValueError`` naming every unknown symbol with its closest matches.

        Examples
        --------
        >>> import tempfile
        >>> from factorflow.engine.ticks import TickStore, generate_ticks
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     _ = generate_ticks(tmp, symbols=3, days=1, ticks_per_day=20)
        ...     store = TickStore(tmp)
        ...     s = store.symbols()[0]
        ...     print(store.check_symbols([s, s]) == [s])
        ...     try:
        ...         store.check_symbols([s + "X"])
        ...     except ValueError as e:
        ...         print(str(e).startswith("unknown symbol"), repr(s) in str(e))
        True
        True True
        """
        if isinstance(symbols, str):
            symbols = [symbols]
        wanted = list(symbols)
        for s in wanted:
            if not isinstance(s, str):
                raise TypeError(f"symbols must be strings, got {s!r}")
        wanted = sorted(set(wanted))
        if not wanted:
            return []
        known_list = self.symbols(start, end)
        known = set(known_list)
        unknown = [s for s in wanted if s not in known]
        if unknown:
            parts = []
            for s in unknown[:20]:
                close = difflib.get_close_matches(s, known_list, n=3, cutoff=0.6) or \
                    difflib.get_close_matches(s.upper(), known_list, n=3, cutoff=0.6)
                parts.append(f"{s!r} (did you mean {' or '.join(map(repr, close))}?)" if close
                             else f"{s!r} (no close match)")
            more = f" and {len(unknown) - 20} more" if len(unknown) > 20 else ""
            where = self._range_text(start, end)
            raise ValueError(f"unknown symbol{'s' if len(unknown) > 1 else ''} {', '.join(parts)}{more}: "
                             f"not in the store {where} ({len(known_list)} symbols there)")
        return wanted

    def _range_text(self, start, end) -> str:
        ds = self.dates(start, end)
        if not ds:
            return f"{self.path} between {start} and {end} (no dates in range)"
        return f"{self.path} between {ds[0]} and {ds[-1]}"

    # -- reading ----------------------------------------------------------------------------------
    def read_day(self, date, symbols=None, columns=None):
        """Validated, cleaned ticks of one date partition, sorted by ``(symbol, time)``.

        Parameters
        ----------
        date : str or date-like
            The partition's date (UTC).
        symbols : list of str, optional
            Keep only these symbols; a symbol without ticks that day gives no rows (no unknown-
            symbol check here: use :meth:`check_symbols` or :meth:`read`). Row groups whose
            ``symbol`` statistics exclude all of them are not read.
        columns : list of str, optional
            Columns besides ``time`` and ``symbol`` (default: every column of the day's files).
            ``price`` and ``size`` are always read for the checks; only columns requested (or
            all, by default) are returned.

        Returns
        -------
        polars.DataFrame
            ``time`` (Datetime ns UTC), ``symbol`` (String) and the columns, in canonical types.

        Examples
        --------
        >>> import tempfile
        >>> from factorflow.engine.ticks import TickStore, generate_ticks
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     _ = generate_ticks(tmp, symbols=3, days=1, ticks_per_day=50)
        ...     df = TickStore(tmp).read_day("2024-01-02", columns=["price"])
        >>> df.schema
        Schema([('time', Datetime(time_unit='ns', time_zone='UTC')), ('symbol', String), ('price', Float64)])
        """
        d = _date_str(date, "date")
        cols = self._columns_arg(columns)
        plans = [self._plan(f, cols) for f in self.files(d)]
        wanted = None if symbols is None else self._symbols_arg(symbols)
        return self._read_partition(d, plans, wanted, cols)

    def read(self, start=None, end=None, symbols=None, columns=None):
        """Validated, cleaned ticks of the dates in ``[start, end]``, sorted by ``(symbol, time)``.

        Unknown ``symbols`` (no ticks in the range) raise ``ValueError`` with close matches
        before any tick is read. Every file's footer is validated before the data is read.
        Other parameters as :meth:`read_day`; with ``columns=None`` a column some files lack is
        null in their rows.

        Examples
        --------
        >>> import tempfile
        >>> from factorflow.engine.ticks import TickStore, generate_ticks
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     _ = generate_ticks(tmp, symbols=4, days=3, ticks_per_day=50)
        ...     store = TickStore(tmp)
        ...     s = store.symbols()[:2]
        ...     df = store.read("2024-01-03", "2024-01-04", symbols=s, columns=["price", "size"])
        ...     print(df["symbol"].unique().sort().to_list() == s, df["time"].dt.date().n_unique())
        True 2
        """
        import polars as pl
        import pyarrow as pa

        cols = self._columns_arg(columns)
        dates = self.dates(start, end)
        wanted = None if symbols is None else self.check_symbols(self._symbols_arg(symbols), start, end)
        plans = {d: [self._plan(f, cols) for f in self.files(d)] for d in dates}
        if not dates:
            return self._empty(cols)
        days = [self._partition(d, plans[d], wanted) for d in dates]
        if len(days) == 1:
            return _with_symbols(*days[0], cols)
        values = _sorted_unique(pa.concat_arrays([v for _, v, _ in days]))
        codes = np.concatenate([_remap(v, values, c) for _, v, c in days])
        df = pl.concat([f for f, _, _ in days], how="diagonal_relaxed" if cols is None else "vertical_relaxed")
        if not _kernel("_is_sorted")(codes):
            # each day is sorted by (symbol, time) and days are disjoint in time: a stable sort
            # by symbol (a counting sort of the codes) gives (symbol, time) order and keeps
            # same-time ticks in file order
            perm = _kernel("_order")(codes, np.empty(0, np.int64), np.empty(0, bool), len(values))
            df, codes = df[perm], codes[perm]
        return _with_symbols(df, values, codes, cols)

    def bars(self, freq, start=None, end=None, symbols=None, session="us_equity", ffill_close=False, **kw):
        """Bars (OHLCV, vwap, amount, trade count) as a lazy Panel; see ``engine/bars.py``."""
        from .bars import bars_panel

        return bars_panel(self, freq, start=start, end=end, symbols=symbols, session=session,
                          ffill_close=ffill_close, **kw)

    # -- internals --------------------------------------------------------------------------------
    @staticmethod
    def _columns_arg(columns) -> list[str] | None:
        if columns is None:
            return None
        if isinstance(columns, str):
            columns = [columns]
        out = []
        for c in columns:
            if not isinstance(c, str):
                raise TypeError(f"columns must be strings, got {c!r}")
            if c not in ("time", "symbol") and c not in out:
                out.append(c)
        return out

    @staticmethod
    def _symbols_arg(symbols) -> list[str]:
        if isinstance(symbols, str):
            symbols = [symbols]
        out = sorted(set(symbols))
        for s in out:
            if not isinstance(s, str):
                raise TypeError(f"symbols must be strings, got {s!r}")
        return out

    def _empty(self, cols):
        import polars as pl

        if cols is None:
            sch = self.schema
            names = sch.names
        else:
            names = ["time", "symbol", *cols]
            sch = None
        out = {}
        for n in names:
            t = sch.field(n).type if sch is not None else (
                _canonical_type(n, _example_type(n), "") if n in TICK_COLUMNS else None)
            out[n] = pl.from_arrow(_empty_arrow(n, t)).dtype if t is not None else pl.Null
        return pl.DataFrame(schema=out)

    def _read_file(self, plan: _FilePlan, wanted: list[str] | None) -> _Part:
        """One file's rows: its selected row groups, then (with ``wanted``) only those symbols'
        rows. ``symbol`` becomes codes into the file's sorted distinct symbols; the other columns
        a Polars frame in the canonical types. Zero-copy where Arrow allows: the columns are the
        decoded buffers, and a symbol filter on a file sorted by symbol is a few slices."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        md = plan.metadata
        groups = list(range(md.num_row_groups))
        if wanted is not None:
            leaf = [md.schema.column(i).path for i in range(md.num_columns)]
            j = leaf.index("symbol") if "symbol" in leaf else -1
            groups = [g for g in groups if _may_hold(md.row_group(g), j, wanted)]
        offsets = np.concatenate([[0], np.cumsum([md.row_group(g).num_rows for g in range(md.num_row_groups)])])
        if not groups:
            table = pa.Table.from_arrays([_empty_arrow(c, plan.schema.field(c).type) for c in plan.columns],
                                         names=plan.columns)
        else:
            # string columns come back dictionary-encoded (the Parquet dictionary pages, not a
            # string per row): symbols are compared and filtered as integer codes
            as_dict = [c for c in plan.columns if c in _STRINGS and _is_string(plan.schema.field(c).type)]
            pf = pq.ParquetFile(_source(plan.path), metadata=md, pre_buffer=False, read_dictionary=as_dict)
            try:
                table = pf.read_row_groups(groups, columns=plan.columns, use_threads=True)
            except Exception as e:
                raise TickDataError(self._decode_error(pf, plan, groups, e), file=plan.path) from None
            finally:
                pf.close()
        rows = _RowMap.of_groups(groups, offsets)
        values, codes, nulls = _symbol_codes(table.column("symbol"))
        table = table.drop_columns(["symbol"])
        if wanted is not None and len(codes):
            want = pc.is_in(values, value_set=pa.array(wanted, pa.string())).to_numpy(zero_copy_only=False)
            if nulls is not None:  # rows without a symbol are not of a wanted symbol
                want = np.append(want, False)
                codes = np.where(nulls, len(values), codes).astype(np.int32)
            as_runs, found = _wanted_rows(codes, want)
            if as_runs:  # runs of rows (whole symbols in sorted files): zero-copy slices
                starts, ends = found[0::2], found[1::2]
                if len(starts) != 1 or ends[0] - starts[0] != len(codes):
                    table = pa.concat_tables([table.slice(a, b - a) for a, b in zip(starts, ends)]) \
                        if len(starts) else table.slice(0, 0)
                    codes = np.concatenate([codes[a:b] for a, b in zip(starts, ends)]) if len(starts) \
                        else codes[:0]
                    rows = _RowMap(np.cumsum(ends - starts) - (ends - starts), starts, rows)
            else:  # scattered rows: copied
                table = table.take(found)
                codes = codes[found]
                rows = _RowMap(None, found, rows)
            nulls = None
        return _Part(plan.path, _to_polars(table, plan.path), values, codes, nulls, rows)

    @staticmethod
    def _decode_error(pf, plan, groups, e) -> str:
        md = plan.metadata
        for g in groups:  # name the first row group that fails on its own
            try:
                pf.read_row_group(g, columns=plan.columns, use_threads=False)
            except Exception as e2:
                first = sum(md.row_group(i).num_rows for i in range(g))
                return (f"{plan.path}: cannot decode row group {g} (rows {first}-"
                        f"{first + md.row_group(g).num_rows - 1}): {type(e2).__name__}: {e2}")
        return f"{plan.path}: cannot decode the file: {type(e).__name__}: {e}"

    def _read_partition(self, date: str, plans: list[_FilePlan], wanted, cols):
        """Read one date's files and apply the policies of docs/ticks.md."""
        return _with_symbols(*self._partition(date, plans, wanted), cols)

    def _partition(self, date: str, plans: list[_FilePlan], wanted):
        """One date's validated rows in ``(symbol, time)`` order: ``(frame, values, codes)``, the
        frame without ``symbol``, which is ``values[codes]`` (codes sorted)."""
        import polars as pl
        import pyarrow as pa

        parts = [self._read_file(plan, wanted) for plan in plans]
        if len(parts) == 1:
            p = parts[0]
            frame, values, codes, nulls = p.frame, p.values, p.codes, p.nulls
        else:  # one symbol dictionary for the partition; files in file-name order
            values = _sorted_unique(pa.concat_arrays([p.values for p in parts]))
            codes = np.concatenate([_remap(p.values, values, p.codes) for p in parts])
            nulls = None if all(p.nulls is None for p in parts) else np.concatenate(
                [np.zeros(len(p.codes), bool) if p.nulls is None else p.nulls for p in parts])
            frame = pl.concat([p.frame for p in parts], how="diagonal_relaxed")
        if frame.height:
            starts = np.cumsum([0] + [p.frame.height for p in parts])[:-1]
            sel = self._clean(date, frame, values, codes, nulls, parts, starts)
            if sel is not None:
                frame, codes = frame[sel], codes[sel]
        return frame, values, codes

    def _clean(self, date: str, frame, values, codes, nulls, parts, starts):
        """Apply the policies of docs/ticks.md to a partition's rows (in file order): returns the
        rows to keep, in ``(symbol, time)`` order, as indices into ``frame`` (``None``: all of
        them, as they are). One pass of a compiled kernel over the physical arrays (symbol codes,
        int64 times, prices, sizes) checks everything; file rows and values are looked up only
        for what is reported."""
        where = f"date={date}"
        n = frame.height

        def at(i: int):
            """File, file row and values of the partition's row ``i`` (before any repair)."""
            k = int(np.searchsorted(starts, i, side="right")) - 1
            r = frame.row(i, named=True)
            r["symbol"] = None if nulls is not None and nulls[i] else values[int(codes[i])].as_py()
            return parts[k].path, parts[k].rows.row(i - int(starts[k])), r

        # 1. missing time or symbol
        keep = None
        tcol = frame.get_column("time")
        tnull = tcol.is_null().to_numpy() if tcol.null_count() else None
        for c, null in (("time", tnull), ("symbol", nulls)):
            if null is None:
                continue
            if keep is not None:
                null = null & keep
            cnt = int(null.sum())
            if not cnt:
                continue
            f, row, _ = at(int(np.argmax(null)))
            if self.strict:
                raise TickDataError(f"{f}: row {row}: column {c!r} is null (strict=True)", file=f, column=c, row=row)
            log.warning("%s: dropped %d ticks with a null %r (first: %s row %d)", where, cnt, c, f, row)
            keep = ~null if keep is None else keep & ~null
        t = tcol.to_physical()
        t = (t if tnull is None else t.fill_null(0)).to_numpy()
        price = frame.get_column("price").to_numpy()  # Float64: nulls -> NaN, dropped as bad
        size = frame.get_column("size").to_numpy()
        lo = int(np.datetime64(date, "ns").astype(np.int64))
        drop = None
        if keep is None and _kernel("_clean_sorted")(codes, t, price, size, lo, lo + _DAY_NS):
            st = (0, -1, 0, -1, 0, -1, 0, -1, 0)  # the usual case: all valid, in (symbol, time) order
        else:
            drop = np.zeros(n, bool)
            st = _kernel("_scan")(codes, t, price, size, np.empty(0, bool) if keep is None else keep, lo,
                                  lo + _DAY_NS, len(values), drop)
        n_out, first_out, n_price, first_price, n_size, first_size, late, first_late, unsorted = (int(x) for x in st)
        # 2. timestamps outside the partition's UTC date: the partition is mis-filed
        if n_out:
            f, row, r = at(first_out)
            raise TickDataError(
                f"{f}: row {row}: time {r['time'].isoformat()} is outside the partition's date {date} (UTC)"
                f"{f'; {n_out} such ticks' if n_out > 1 else ''}: the file is in the wrong date= folder",
                file=f, column="time", row=row)
        # 3. prices and sizes must be positive and finite
        drops = []
        for c, cnt, first in (("price", n_price, first_price), ("size", n_size, first_size)):
            if cnt:
                f, row, r = at(first)
                if self.strict:
                    raise TickDataError(f"{f}: row {row}: column {c!r} is {r[c]!r}; a tick's {c} must be positive "
                                        "and finite (strict=True; strict=False drops such ticks)",
                                        file=f, column=c, row=row)
                drops.append((c, cnt, f, row, r[c]))
        for c, cnt, f, row, v in drops:
            log.warning("%s: dropped %d ticks with a non-positive, NaN or missing %s (first: %s row %d, %s=%r)",
                        where, cnt, c, f, row, c, v)
        alive = None
        if drops:
            alive = ~drop if keep is None else keep & ~drop
        elif keep is not None:
            alive = keep
        # 4. order: (symbol, time); count ticks earlier than the previous tick of their symbol
        if late:
            f, row, r = at(first_late)
            log.warning("%s: %d ticks out of time order within their symbol (first: %s row %d, %s); sorted",
                        where, late, f, row, r["symbol"])
        if late or unsorted:  # stable: same-time ticks keep their file order
            sel = _kernel("_order")(codes, t, np.empty(0, bool) if alive is None else alive, len(values))
        elif alive is not None:
            sel = np.flatnonzero(alive)
        else:
            sel = None
        # 5. duplicates: identical (time, symbol, price, size)
        if self.duplicates != "keep":
            arrays = (codes, t, price, size) if sel is None else (codes[sel], t[sel], price[sel], size[sel])
            dup = np.zeros(len(arrays[0]), bool)
            cnt, first, twin = (int(x) for x in _kernel("_duplicates")(*arrays, dup))
            if cnt:
                first, twin = (first, twin) if sel is None else (int(sel[first]), int(sel[twin]))
                f, row, r = at(first)
                if self.duplicates == "error":
                    f2, row2, _ = at(twin)
                    raise TickDataError(
                        f"{f}: row {row} duplicates {f2} row {row2} (time "
                        f"{r['time'].isoformat()}, symbol {r['symbol']!r}, price {r['price']!r}, size {r['size']!r}); "
                        f"{cnt} duplicate ticks in {where} (duplicates='error')", file=f, row=row)
                log.info("%s: dropped %d duplicate ticks (identical time, symbol, price, size; first: %s row %d)",
                         where, cnt, f, row)
                sel = np.flatnonzero(~dup) if sel is None else sel[~dup]
        return sel


def _example_type(name: str):
    """A stored type of a canonical column (to ask :func:`_canonical_type` for its read type)."""
    import pyarrow as pa

    if name == "time":
        return pa.timestamp("ns", "UTC")
    if name in _STRINGS:
        return pa.string()
    return pa.float64()


def _empty_arrow(name: str, t):
    import pyarrow as pa

    return pa.array([], type=t)


def _may_hold(rg, column: int, wanted: list[str]) -> bool:
    """Whether row group ``rg`` may hold one of ``wanted`` (sorted), by its min/max statistics."""
    if column < 0:
        return True
    stats = rg.column(column).statistics
    if stats is None or not stats.has_min_max:
        return True
    lo, hi = stats.min, stats.max
    if isinstance(lo, bytes):
        lo, hi = lo.decode("utf-8", "replace"), hi.decode("utf-8", "replace")
    i = bisect.bisect_left(wanted, lo)
    return i < len(wanted) and wanted[i] <= hi


# -- reading internals --------------------------------------------------------------------------------
_MAX_SLICES = 64  # a symbol filter keeps up to this many runs of rows as zero-copy slices, else copies


class _RowMap:
    """Position in a file's frame -> 0-based row in the file, looked up only to report a row.

    Position ``j`` is in the run ``k`` that starts at ``starts[k]`` (``starts=None``: one run per
    position), where it maps to ``firsts[k] + j - starts[k]`` in the ``parent`` map (none: that
    is the file row)."""

    def __init__(self, starts, firsts, parent=None):
        self.starts, self.firsts, self.parent = starts, firsts, parent

    @classmethod
    def of_groups(cls, groups, offsets):
        starts, firsts, pos = [], [], 0
        for g in groups:
            if not firsts or firsts[-1] + pos - starts[-1] != offsets[g]:
                starts.append(pos)
                firsts.append(int(offsets[g]))
            pos += int(offsets[g + 1] - offsets[g])
        return cls(np.array(starts or [0], np.int64), np.array(firsts or [0], np.int64))

    def row(self, j: int) -> int:
        if self.starts is None:
            r = int(self.firsts[j])
        else:
            k = int(np.searchsorted(self.starts, j, side="right")) - 1
            r = int(self.firsts[k]) + j - int(self.starts[k])
        return r if self.parent is None else self.parent.row(r)


@dataclass
class _Part:
    """One file's rows as read: the non-symbol columns, symbol codes, null symbols, row map."""

    path: str
    frame: object             # polars DataFrame, canonical types, without ``symbol``
    values: object            # pyarrow StringArray: the file's distinct symbols, sorted
    codes: np.ndarray         # int32 index into ``values`` per row (0 where the symbol is null)
    nulls: np.ndarray | None  # bool per row: null symbol (None: no nulls)
    rows: _RowMap


def _sorted_unique(values):
    import pyarrow.compute as pc

    u = pc.unique(values)
    return u.take(pc.array_sort_indices(u))  # by bytes, as Polars compares strings


def _symbol_codes(col):
    """``(values, codes, nulls)`` of a string or dictionary<string> ChunkedArray: its distinct
    values (a sorted StringArray), int32 codes into them, a bool array of nulls (or None).
    Dictionary chunks cost one small remap per chunk and a gather of the indices."""
    import pyarrow as pa
    import pyarrow.compute as pc

    dicts, indices = [], []
    for ch in col.chunks:
        if not pa.types.is_dictionary(ch.type):
            ch = pc.dictionary_encode(ch)
        if ch.dictionary.null_count:  # a null value in the dictionary: move it to the indices
            ch = pc.dictionary_encode(ch.cast(ch.type.value_type))
        d = ch.dictionary
        dicts.append(d if d.type == pa.string() else d.cast(pa.string()))
        indices.append(ch.indices)
    n = len(col)
    if not dicts:
        return pa.array([], pa.string()), np.zeros(0, np.int32), None
    values = _sorted_unique(dicts[0] if len(dicts) == 1 else pa.concat_arrays(dicts))
    codes = np.empty(n, np.int32)
    nulls = None
    pos = 0
    for d, ix in zip(dicts, indices):
        m = len(ix)
        if m and not len(d):  # every index null
            codes[pos:pos + m] = 0
        if ix.null_count:
            if nulls is None:
                nulls = np.zeros(n, bool)
            nulls[pos:pos + m] = ix.is_null().to_numpy(zero_copy_only=False)
            ix = ix.fill_null(0)
        if m and len(d):
            remap = pc.index_in(d, value_set=values).to_numpy(zero_copy_only=False).astype(np.int32)
            _kernel("_gather")(remap, ix.to_numpy(zero_copy_only=False), codes[pos:pos + m])
        pos += m
    return values, codes, nulls


def _wanted_rows(codes: np.ndarray, want: np.ndarray):
    """The rows whose code is wanted: ``(True, [start0, end0, start1, ...])`` as runs if there
    are at most ``_MAX_SLICES`` of them, else ``(False, rows)``. Codes in order (a file sorted by
    symbol): binary searches, nothing per row; else a pass of a kernel."""
    if not _kernel("_is_sorted")(codes):
        return _kernel("_wanted_rows_scan")(codes, want, _MAX_SLICES)
    wc = np.flatnonzero(want).astype(codes.dtype)
    a = np.searchsorted(codes, wc, side="left")
    b = np.searchsorted(codes, wc, side="right")
    some = b > a
    a, b = a[some], b[some]
    if len(a):  # merge touching runs (consecutive wanted symbols)
        cut = np.flatnonzero(a[1:] != b[:-1])
        a, b = a[np.concatenate([[0], cut + 1])], b[np.concatenate([cut, [len(b) - 1]])]
    if len(a) <= _MAX_SLICES:
        out = np.empty(2 * len(a), np.int64)
        out[0::2], out[1::2] = a, b
        return True, out
    lens = b - a
    return False, np.arange(lens.sum(), dtype=np.int64) + np.repeat(a - (np.cumsum(lens) - lens), lens)


def _remap(src, values, codes: np.ndarray) -> np.ndarray:
    """``codes`` into the sorted strings ``src`` as codes into ``values`` (a superset)."""
    import pyarrow.compute as pc

    if not len(src):  # no values: every symbol null (codes 0)
        return np.zeros(len(codes), np.int32)
    remap = pc.index_in(src, value_set=values).to_numpy(zero_copy_only=False).astype(np.int32)
    out = np.empty(len(codes), np.int32)
    _kernel("_gather")(remap, codes, out)
    return out


def _with_symbols(frame, values, codes: np.ndarray, cols):
    """The result frame: ``symbol`` (``values[codes]``, codes sorted) added, columns in order."""
    if cols is None:
        names = ["symbol", *frame.columns]
        order = [c for c in TICK_COLUMNS if c in names] + [c for c in names if c not in TICK_COLUMNS]
    else:
        order = ["time", "symbol", *cols]
    return frame.with_columns(_symbol_series(values, codes)).select(order)


def _view_table(values, buffer_index: int):
    """Arrow string-view structs (16 bytes each, as ``uint64`` pairs) of a string array's values,
    and the data buffer that values longer than 12 bytes point into (buffer ``buffer_index``)."""
    import pyarrow as pa

    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        values = values.cast(pa.string())
    if sys.byteorder != "little":  # the structs below are written little-endian
        raise OverflowError("string views are built for little-endian machines")
    k = len(values)
    bufs = values.buffers()
    if k == 0 or bufs[1] is None:
        return np.zeros((k, 2), np.uint64), None
    width = np.int64 if pa.types.is_large_string(values.type) else np.int32
    offs = np.frombuffer(bufs[1], width)[values.offset:values.offset + k + 1].astype(np.int64)
    data = np.frombuffer(bufs[2], np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    lens = np.diff(offs)
    v = np.zeros((k, 16), np.uint8)
    v[:, :4] = lens.astype("<i4").view(np.uint8).reshape(k, 4)
    short = np.minimum(lens, 12)
    for b in range(12):  # inline bytes (for longer values, the 4-byte prefix is overwritten below)
        r = np.flatnonzero(short > b)
        if not len(r):
            break
        v[r, 4 + b] = data[offs[r] + b]
    long = np.flatnonzero(lens > 12)
    buffer = None
    if len(long):
        if offs[-1] >= 2 ** 31:
            raise OverflowError("string data over 2 GiB")
        v[long, 8:12] = np.full(len(long), buffer_index, "<i4").view(np.uint8).reshape(-1, 4)
        v[long, 12:16] = offs[long].astype("<i4").view(np.uint8).reshape(-1, 4)
        buffer = bufs[2]
    return v.view(np.uint64), buffer


def _string_view_series(name: str, views: np.ndarray, buffers: list):
    """A Polars String Series over string-view structs (zero-copy import)."""
    import polars as pl
    import pyarrow as pa

    arr = pa.Array.from_buffers(pa.string_view(), len(views), [None, pa.py_buffer(views), *buffers])
    return pl.from_arrow(arr).alias(name)


def _symbol_series(values, codes: np.ndarray):
    """The ``symbol`` String column of sorted ``codes`` into ``values``: runs of repeated views."""
    import polars as pl

    try:
        vt, buffer = _view_table(values, 0)
    except OverflowError:
        return pl.from_arrow(values).gather(pl.Series(codes)).alias("symbol")
    lens = np.diff(np.searchsorted(codes, np.arange(len(values) + 1, dtype=codes.dtype)))
    return _string_view_series("symbol", np.repeat(vt, lens, axis=0), [] if buffer is None else [buffer])


def _dict_string_series(name: str, col):
    """A dictionary<string> ChunkedArray as a Polars String Series: a gather of each chunk's
    dictionary views by its indices (rather than a string per row, then a conversion)."""
    import polars as pl

    chunks = col.chunks
    if any(ch.null_count or ch.dictionary.null_count for ch in chunks):
        return pl.from_arrow(col.cast(col.type.value_type)).alias(name)
    views = np.empty((len(col), 2), np.uint64)
    buffers, pos = [], 0
    try:
        for ch in chunks:
            m = len(ch)
            vt, buffer = _view_table(ch.dictionary, len(buffers))
            if buffer is not None:
                buffers.append(buffer)
            if m:
                _kernel("_gather")(vt, ch.indices.to_numpy(zero_copy_only=False), views[pos:pos + m])
            pos += m
    except OverflowError:
        return pl.from_arrow(col.cast(col.type.value_type)).alias(name)
    return _string_view_series(name, views, buffers)


def _to_polars(table, file: str):
    """A file's table (without ``symbol``) as a Polars frame in the canonical types."""
    import polars as pl
    import pyarrow as pa

    strings, names, cols = {}, [], []
    for name in table.column_names:
        col = table.column(name)
        if name in TICK_COLUMNS:
            target = _canonical_type(name, col.type, file)
            if pa.types.is_dictionary(col.type):
                if _is_string(col.type):
                    strings[name] = _dict_string_series(name, col)
                    continue
                col = col.cast(col.type.value_type)
            if col.type != target:
                try:
                    col = col.cast(target)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                    raise TickDataError(f"{file}: column {name!r}: cannot convert {col.type} to "
                                        f"{target} ({e})", file=file, column=name) from None
        elif pa.types.is_dictionary(col.type) and _is_string(col.type):
            strings[name] = _dict_string_series(name, col)
            continue
        names.append(name)
        cols.append(col)
    df = pl.from_arrow(pa.Table.from_arrays(cols, names=names), rechunk=False)
    if strings:
        df = pl.DataFrame([strings[c] if c in strings else df.get_column(c) for c in table.column_names])
    return df


# -- kernels (compiled with Numba on first use; cached on disk) ---------------------------------------
_KERNELS: dict = {}


def _kernel(name: str):
    f = _KERNELS.get(name)
    if f is None:
        from ..kernels.cpu._jit import kernel

        f = _KERNELS[name] = kernel(globals()[name])
    return f


def _gather(table, indices, out):
    """``out[i] = table[indices[i]]`` (rows of a 1-D or 2-D table): faster than ``np.take``."""
    if table.ndim == 1:
        for i in range(len(indices)):
            out[i] = table[indices[i]]
    else:
        for i in range(len(indices)):
            j = indices[i]
            for k in range(table.shape[1]):
                out[i, k] = table[j, k]


def _is_sorted(codes):
    """Whether ``codes`` never decrease (a vectorised pass)."""
    bad = 0
    for i in range(1, len(codes)):
        bad += codes[i] < codes[i - 1]
    return bad == 0


def _mark(indices, used):
    """``used[i] = True`` for every ``i`` in ``indices``."""
    for i in range(len(indices)):
        used[indices[i]] = True


def _wanted_rows_scan(codes, want, max_runs):
    """The rows whose code is wanted: ``(True, [start0, end0, start1, ...])`` as runs if there
    are at most ``max_runs`` of them, else ``(False, rows)``."""
    n = len(codes)
    runs = 0
    kept = 0
    prev = 0
    for i in range(n):  # branch-free: count the wanted rows and the runs they form
        w = np.int64(want[codes[i]])
        kept += w
        runs += w & (1 - prev)
        prev = w
    if runs <= max_runs:
        out = np.empty(2 * runs, np.int64)
        k = 0
        prev = 0
        for i in range(n):
            w = np.int64(want[codes[i]])
            if w != prev:
                out[k] = i
                k += 1
            prev = w
        if prev:
            out[k] = n
        return True, out
    out = np.empty(kept, np.int64)
    k = 0
    for i in range(n):
        out[k] = i  # overwritten unless wanted (out has a slot left until the last wanted row)
        k += np.int64(want[codes[i]])
        if k == kept:
            break
    return False, out


def _clean_sorted(codes, t, price, size, lo, hi):
    """Whether every row is valid (time in ``[lo, hi)``, price and size positive and finite) and
    the rows are in (code, time) order: a branch-free pass that LLVM vectorises (about the memory
    bandwidth); anything else goes to :func:`_scan`."""
    n = len(codes)
    if n == 0:
        return True
    p = price[0]
    s = size[0]
    ti = t[0]
    bad = not ((p > 0.0) & (p < np.inf) & (s > 0.0) & (s < np.inf) & (ti >= lo) & (ti < hi))
    for i in range(1, n):
        p = price[i]
        s = size[i]
        ti = t[i]
        ok = (p > 0.0) & (p < np.inf) & (s > 0.0) & (s < np.inf) & (ti >= lo) & (ti < hi)
        c0 = codes[i - 1]
        c1 = codes[i]
        bad += (not ok) | (c1 < c0) | ((c1 == c0) & (ti < t[i - 1]))
    return bad == 0


def _scan(codes, t, price, size, keep, lo, hi, n_codes, drop):
    """One pass over a partition's rows in file order (rows with ``keep`` False skipped; empty
    ``keep``: none): ticks outside ``[lo, hi)``; bad prices, then bad sizes (flagged in
    ``drop``); among the rest, whether the symbol codes ever decrease and the ticks earlier than
    the previous tick of their symbol. Returns counts and first rows (-1: none)."""
    n = len(codes)
    has_keep = len(keep) > 0
    last = np.full(n_codes, -9223372036854775807 - 1, dtype=np.int64)
    n_out = n_price = n_size = late = 0
    first_out = first_price = first_size = first_late = -1
    unsorted = 0
    prev = -1
    for i in range(n):
        if has_keep and not keep[i]:
            continue
        ti = t[i]
        if ti < lo or ti >= hi:
            if n_out == 0:
                first_out = i
            n_out += 1
        p = price[i]
        if not (p > 0.0 and p < np.inf):
            if n_price == 0:
                first_price = i
            n_price += 1
            drop[i] = True
            continue
        s = size[i]
        if not (s > 0.0 and s < np.inf):
            if n_size == 0:
                first_size = i
            n_size += 1
            drop[i] = True
            continue
        c = codes[i]
        if c < prev:
            unsorted = 1
        if ti < last[c]:
            if late == 0:
                first_late = i
            late += 1
        last[c] = ti
        prev = c
    out = np.empty(9, np.int64)
    out[0] = n_out
    out[1] = first_out
    out[2] = n_price
    out[3] = first_price
    out[4] = n_size
    out[5] = first_size
    out[6] = late
    out[7] = first_late
    out[8] = unsorted
    return out


def _order(codes, t, alive, n_codes):
    """Indices of the rows with ``alive`` (empty: all) sorted by (code, time), stable: a counting
    sort by code, then a merge sort of each symbol's times only where they are out of order
    (empty ``t``: by code only)."""
    n = len(codes)
    has_alive = len(alive) > 0
    bounds = np.zeros(n_codes + 1, np.int64)
    for i in range(n):
        if has_alive and not alive[i]:
            continue
        bounds[codes[i] + 1] += 1
    for c in range(n_codes):
        bounds[c + 1] += bounds[c]
    perm = np.empty(bounds[n_codes], np.int64)
    pos = bounds[:n_codes].copy()
    for i in range(n):
        if has_alive and not alive[i]:
            continue
        c = codes[i]
        perm[pos[c]] = i
        pos[c] += 1
    if len(t) == 0:  # by code only
        return perm
    for c in range(n_codes):
        a, b = bounds[c], bounds[c + 1]
        ok = True
        for k in range(a + 1, b):
            if t[perm[k]] < t[perm[k - 1]]:
                ok = False
                break
        if not ok:
            seg = perm[a:b].copy()
            tt = np.empty(b - a, np.int64)
            for k in range(b - a):
                tt[k] = t[seg[k]]
            o = np.argsort(tt, kind="mergesort")
            for k in range(b - a):
                perm[a + k] = seg[o[k]]
    return perm


def _duplicates(codes, t, price, size, dup):
    """Rows sorted by (code, time) identical in (code, time, price, size) to an earlier row: flags
    them in ``dup``; returns the count, the first such row and the first row of its group."""
    n = len(codes)
    count = 0
    first = -1
    twin = -1
    i = 0
    while i < n:
        j = i + 1
        while j < n and codes[j] == codes[i] and t[j] == t[i]:
            j += 1
        m = j - i
        if m > 1 and m <= 32:
            for a in range(i + 1, j):
                for b in range(i, a):
                    if price[b] == price[a] and size[b] == size[a]:
                        dup[a] = True
                        count += 1
                        if first < 0:
                            first = a
                            twin = b
                        break
        elif m > 32:  # a large same-time group: sort it by (price, size), stable
            o1 = np.argsort(size[i:j], kind="mergesort")
            o2 = np.argsort(price[i:j][o1], kind="mergesort")
            o = o1[o2]
            k = 0
            while k < m:
                e = k + 1
                while e < m and price[i + o[e]] == price[i + o[k]] and size[i + o[e]] == size[i + o[k]]:
                    e += 1
                for q in range(k + 1, e):
                    a = i + o[q]
                    dup[a] = True
                    count += 1
                    if first < 0 or a < first:
                        first = a
                        twin = i + o[k]
                k = e
        i = j
    return count, first, twin
