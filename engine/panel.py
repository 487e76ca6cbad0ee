"""The Panel: named (time x symbol) arrays, NumPy- or Dask-backed.

A panel holds *groups*: a group is one 3-D array ``(fields, time, symbol)`` whose first axis
is a single chunk, with the names of its fields. ``from_numpy`` keeps each caller's array as a
zero-copy view (a group of one field); ``ff.compute`` returns one dask-backed group holding every
requested factor, written block by block by the final stage of the plan. Values stay lazy until
asked for; the first ``to_numpy``/``to_polars`` computes the whole group once and keeps it.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping

import numpy as np

__all__ = ["Panel"]

_DTYPES = (np.dtype("float64"), np.dtype("float32"))


def _is_dask(a) -> bool:
    return hasattr(a, "dask") and hasattr(a, "chunks") and hasattr(a, "__dask_graph__")


class _Group:
    """One 3-D array ``(len(names), T, N)`` plus its field names."""

    __slots__ = ("names", "data", "_cache", "origins")

    def __init__(self, names: tuple[str, ...], data, origins: dict | None = None):
        self.names = tuple(names)
        self.data = data
        self._cache = None
        self.origins = origins  # final-stage block origins, when factorflow built the graph

    @property
    def is_dask(self) -> bool:
        return _is_dask(self.data)

    def materialize(self) -> np.ndarray:
        if not self.is_dask:
            return self.data
        if self._cache is None:
            from .materialize import materialize

            (self._cache,) = materialize([self.data], [self.origins])
        return self._cache


class Panel:
    """A (time x symbol) panel of named float fields.

    Build with :meth:`from_numpy` or :meth:`from_polars`; :func:`factorflow.compute` returns one.

    Examples
    --------
    >>> import numpy as np, factorflow as ff
    >>> p = ff.Panel.from_numpy({"close": np.ones((3, 2)), "volume": np.zeros((3, 2))},
    ...                         symbols=["AAA", "BBB"])
    >>> p
    <Panel 3 times x 2 symbols, 2 fields (close, volume), float64, numpy>
    >>> p.to_numpy("close").shape
    (3, 2)
    """

    def __init__(self, groups: list[_Group], times: np.ndarray, symbols: np.ndarray):
        self._groups = groups
        self._index: dict[str, tuple[int, int]] = {}
        for gi, g in enumerate(groups):
            for k, name in enumerate(g.names):
                if name in self._index:
                    raise ValueError(f"field {name!r} appears twice in the panel")
                self._index[name] = (gi, k)
        self.times = np.asarray(times)
        self.symbols = np.asarray(symbols)
        shapes = {tuple(g.data.shape[1:]) for g in groups}
        if len(shapes) > 1:
            raise ValueError(f"panel groups disagree on shape: {sorted(shapes)}")
        self.shape = shapes.pop() if shapes else (len(self.times), len(self.symbols))
        if self.shape != (len(self.times), len(self.symbols)):
            raise ValueError(f"panel shape {self.shape} does not match {len(self.times)} times x "
                             f"{len(self.symbols)} symbols")
        dtypes = {np.dtype(g.data.dtype) for g in groups}
        if len(dtypes) > 1:
            raise ValueError(f"panel fields mix dtypes {sorted(map(str, dtypes))}; use one of float64, float32")
        self.dtype = dtypes.pop() if dtypes else np.dtype("float64")

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def from_numpy(cls, fields: Mapping[str, np.ndarray], times: Iterable | None = None,
                   symbols: Iterable | None = None, dtype=None) -> "Panel":
        """A panel over NumPy arrays of shape ``(T, N)``, one per field (zero-copy when possible).

        Parameters
        ----------
        fields : mapping of str to array-like (T, N)
            Field name -> values; missing bars are NaN.
        times : array-like of length T, optional
            Time labels (``datetime64`` for partitioned Parquet output); default ``0..T-1``.
        symbols : array-like of length N, optional
            Symbol labels; default ``"s0", "s1", ...``.
        dtype : {None, "float64", "float32"}
            Storage dtype. Default: float32 if every field is float32, else float64. Arrays
            already C-contiguous in that dtype are used without copying.

        Examples
        --------
        >>> import numpy as np, factorflow as ff
        >>> c = np.arange(6.0).reshape(3, 2)
        >>> p = ff.Panel.from_numpy({"close": c})
        >>> np.shares_memory(p.to_numpy("close"), c)
        True
        """
        if not fields:
            raise ValueError("a panel needs at least one field")
        arrays = {}
        for name, a in fields.items():
            _check_field_name(name)
            if _is_dask(a):
                arrays[name] = a
            else:
                arrays[name] = np.asarray(a)
        shapes = {n: tuple(a.shape) for n, a in arrays.items()}
        for n, s in shapes.items():
            if len(s) != 2:
                raise ValueError(f"field {n!r} must be 2-D (time, symbol), got shape {s}")
        if len(set(shapes.values())) > 1:
            raise ValueError("fields differ in shape: " + ", ".join(f"{n}={s}" for n, s in shapes.items()))
        if dtype is None:
            dtype = np.float32 if all(a.dtype == np.float32 for a in arrays.values()) else np.float64
        dtype = np.dtype(dtype)
        if dtype not in _DTYPES:
            raise ValueError(f"panel dtype must be float64 or float32, got {dtype}")
        T, N = next(iter(shapes.values()))
        groups = []
        for name, a in arrays.items():
            if _is_dask(a):
                groups.append(_Group((name,), a.astype(dtype)[None]))
                continue
            if a.dtype.kind not in "fiub":
                raise TypeError(f"field {name!r} has non-numeric dtype {a.dtype}")
            a = np.ascontiguousarray(a, dtype=dtype)
            groups.append(_Group((name,), a[None]))
        return cls(groups, _default_times(times, T), _default_symbols(symbols, N))

    @classmethod
    def from_polars(cls, df, time: str = "time", symbol: str = "symbol", fields: Iterable[str] | None = None,
                    dtype=None) -> "Panel":
        """A panel from a long-format Polars DataFrame (one row per time and symbol).

        Times and symbols are sorted; a (time, symbol) pair absent from the frame is NaN.
        Duplicate (time, symbol) rows are an error naming the first duplicate.

        Examples
        --------
        >>> import polars as pl, factorflow as ff
        >>> df = pl.DataFrame({"time": [1, 1, 2], "symbol": ["A", "B", "A"], "close": [1.0, 2.0, 3.0]})
        >>> ff.Panel.from_polars(df).to_numpy("close")
        array([[ 1.,  2.],
               [ 3., nan]])
        """
        import polars as pl

        if not isinstance(df, pl.DataFrame):
            if isinstance(df, pl.LazyFrame):
                df = df.collect()
            else:
                raise TypeError(f"from_polars expects a polars DataFrame, got {type(df).__name__}")
        for c in (time, symbol):
            if c not in df.columns:
                raise ValueError(f"column {c!r} not in the frame (columns: {', '.join(df.columns)})")
        if fields is None:
            fields = [c for c in df.columns if c not in (time, symbol)]
        fields = list(fields)
        if not fields:
            raise ValueError("the frame has no field columns besides time and symbol")
        for f in fields:
            _check_field_name(f)
            if f not in df.columns:
                raise ValueError(f"field column {f!r} not in the frame")
            if not df.schema[f].is_numeric():
                raise TypeError(f"field column {f!r} has non-numeric type {df.schema[f]}")
        if dtype is None:
            dtype = np.float32 if all(df.schema[f] == pl.Float32 for f in fields) else np.float64
        dtype = np.dtype(dtype)
        if dtype not in _DTYPES:
            raise ValueError(f"panel dtype must be float64 or float32, got {dtype}")
        nulls = df.select(pl.col(time).null_count(), pl.col(symbol).null_count()).row(0)
        if nulls[0] or nulls[1]:
            bad = time if nulls[0] else symbol
            row = df.with_row_index("__row").filter(pl.col(bad).is_null())["__row"][0]
            raise ValueError(f"column {bad!r} has nulls (first at row {row})")
        times = df.get_column(time).unique().sort()
        symbols = df.get_column(symbol).unique().sort()
        indexed = df.select(
            pl.col(time).rank("dense").cast(pl.Int64).alias("__t") - 1,
            pl.col(symbol).rank("dense").cast(pl.Int64).alias("__s") - 1,
            *[pl.col(f).cast(pl.Float64 if dtype == np.float64 else pl.Float32).fill_null(float("nan")) for f in fields],
        )
        T, N = len(times), len(symbols)
        ti = indexed.get_column("__t").to_numpy()
        si = indexed.get_column("__s").to_numpy()
        flat = ti * N + si
        if len(flat) != len(np.unique(flat)):
            dup = df.with_row_index("__row").filter(pl.struct(time, symbol).is_duplicated())
            r = dup.row(1, named=True)
            raise ValueError(f"duplicate (time, symbol) rows: {r[time]!r}, {r[symbol]!r} at rows "
                             f"{dup['__row'][0]} and {r['__row']}")
        data = np.full((len(fields), T, N), np.nan, dtype=dtype)
        for k, f in enumerate(fields):
            data[k].reshape(-1)[flat] = indexed.get_column(f).to_numpy()
        return cls([_Group(tuple(fields), data)], times.to_numpy(), symbols.to_numpy())

    # -- access -----------------------------------------------------------------------------------
    @property
    def fields(self) -> tuple[str, ...]:
        """Field names, in order."""
        return tuple(n for g in self._groups for n in g.names)

    def __contains__(self, name: str) -> bool:
        return name in self._index

    def __len__(self) -> int:
        return len(self._index)

    def _locate(self, name: str) -> tuple[_Group, int]:
        try:
            gi, k = self._index[name]
        except KeyError:
            raise KeyError(f"no field {name!r} in the panel (fields: {', '.join(self.fields)})") from None
        return self._groups[gi], k

    def __getitem__(self, name: str):
        """The field as a dask array ``(T, N)`` (lazy)."""
        import dask.array as da

        g, k = self._locate(name)
        if g.is_dask:
            return g.data[k]
        return da.from_array(g.data[k], chunks="auto")

    @property
    def is_lazy(self) -> bool:
        """True while some field is dask-backed and not yet computed."""
        return any(g.is_dask and g._cache is None for g in self._groups)

    def to_numpy(self, name: str | None = None):
        """Values of field ``name`` as an ndarray ``(T, N)``; all fields as a dict if no name.

        Computing one field of a dask-backed group computes (and keeps) the whole group: the
        plan writes every factor of a block in one task, so the others come at no extra cost.
        """
        if name is None:
            return {n: self.to_numpy(n) for n in self.fields}
        g, k = self._locate(name)
        return g.materialize()[k]

    def compute(self) -> "Panel":
        """Compute every dask-backed group now; returns ``self`` (values are kept)."""
        for g in self._groups:
            g.materialize()
        return self

    def persist(self) -> "Panel":
        """A panel whose data lives in the active Dask cluster's memory (or in this process).

        With worker processes, this ships a NumPy-backed panel to the workers once, so later
        ``ff.compute`` calls read it where they run instead of sending it with every graph.
        """
        from .placement import persist_groups

        return Panel(persist_groups(self._groups, self.shape), self.times, self.symbols)

    def select(self, fields: Iterable[str]) -> "Panel":
        """A panel with only ``fields`` (shares data)."""
        groups = []
        for name in fields:
            g, k = self._locate(name)
            groups.append(_Group((name,), g.data[k:k + 1]))
        return Panel(groups, self.times, self.symbols)

    def to_polars(self, fields: Iterable[str] | None = None):
        """Long format: one row per (time, symbol) with columns ``time``, ``symbol``, fields.

        Examples
        --------
        >>> import numpy as np, factorflow as ff
        >>> p = ff.Panel.from_numpy({"x": np.array([[1.0, 2.0]])}, symbols=["A", "B"])
        >>> p.to_polars().rows()
        [(0, 'A', 1.0), (0, 'B', 2.0)]
        """
        import polars as pl

        names = list(self.fields if fields is None else fields)
        T, N = self.shape
        cols = {
            "time": pl.Series("time", np.repeat(self.times, N)),
            "symbol": pl.Series("symbol", np.tile(self.symbols, T)),
        }
        for n in names:
            cols[n] = pl.Series(n, self.to_numpy(n).reshape(-1))
        return pl.DataFrame(cols)

    def to_parquet(self, path, partition_by: str | None = "date", fields: Iterable[str] | None = None,
                   compression: str = "zstd") -> list[str]:
        """Write long format Parquet, hive-partitioned by date, one atomic file per partition.

        Parameters
        ----------
        path : str or Path
            Output directory; partitions go to ``path/date=YYYY-MM-DD/part-0.parquet``.
        partition_by : {"date", None}
            ``"date"`` needs ``datetime64`` times; ``None`` writes ``path/part-0.parquet``.
        fields : iterable of str, optional
            Fields to write (default: all).
        compression : {"zstd", "lz4", "snappy", "gzip", "brotli", "none"}
            Parquet codec, checked before anything is computed. zstd is the smallest of the
            fast ones; lz4 writes ~40% faster and ~30% larger on float factor columns.

        Each partition is written from a Dask task (on the workers of the active cluster) to a
        temporary name and renamed into place, so a crash never leaves a half-written partition;
        rewriting a date replaces it. Returns the paths written.
        """
        from .io import write_parquet

        return write_parquet(self, path, partition_by=partition_by,
                             fields=list(self.fields if fields is None else fields), compression=compression)

    def _repr_html_(self):
        from .html import panel_html

        return panel_html(self)

    def plot(self, field: str, symbols=None, **kwargs):
        """A bokeh figure of ``field`` over time for ``symbols`` (default: the first 10); see
        :func:`factorflow.engine.plots.plot_panel`. Show it with ``bokeh.io.show``.

        Examples
        --------
        >>> import numpy as np, factorflow as ff
        >>> p = ff.Panel.from_numpy({"x": np.arange(6.0).reshape(3, 2)}, symbols=["A", "B"])
        >>> fig = p.plot("x", symbols=["B"])
        >>> fig.renderers[0].data_source.data["y"].tolist()
        [1.0, 3.0, 5.0]
        """
        from .plots import plot_panel

        return plot_panel(self, field, symbols, **kwargs)

    def __repr__(self):
        T, N = self.shape
        names = ", ".join(self.fields[:8]) + (", ..." if len(self.fields) > 8 else "")
        backing = "dask" if self.is_lazy else "numpy"
        return f"<Panel {T} times x {N} symbols, {len(self.fields)} fields ({names}), {self.dtype}, {backing}>"


def _check_field_name(name) -> None:
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"field names must be identifiers (usable in formulas), got {name!r}")
    if name in ("time", "symbol"):
        raise ValueError(f"{name!r} is reserved for the panel's axes and cannot be a field name")


def _default_times(times, T: int) -> np.ndarray:
    if times is None:
        return np.arange(T)
    t = np.asarray(times)
    if t.shape != (T,):
        raise ValueError(f"times has shape {t.shape}, expected ({T},)")
    return t


def _default_symbols(symbols, N: int) -> np.ndarray:
    if symbols is None:
        width = max(1, int(math.log10(max(N - 1, 1))) + 1)
        return np.array([f"s{j:0{width}d}" for j in range(N)])
    s = np.asarray(symbols)
    if s.shape != (N,):
        raise ValueError(f"symbols has shape {s.shape}, expected ({N},)")
    if len(np.unique(s)) != N:
        raise ValueError("symbols must be unique")
    return s
