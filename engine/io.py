"""Panel output: long-format, hive-partitioned Parquet, written atomically per partition."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np

__all__ = ["CODECS", "check_compression", "write_parquet", "write_partition", "write_partition_hashed"]

#: Parquet's codecs, as pyarrow's ``write_table(compression=...)`` names them.
CODECS = ("zstd", "lz4", "snappy", "gzip", "brotli", "none")


def _partition_ranges(times: np.ndarray) -> list[tuple[str, int, int]]:
    """``(date, start, stop)`` row ranges of consecutive times sharing a UTC date."""
    if not np.issubdtype(times.dtype, np.datetime64):
        raise ValueError("partition_by='date' needs datetime64 times; this panel's times are "
                         f"{times.dtype} (use partition_by=None)")
    days = times.astype("datetime64[D]")
    if len(days) > 1 and np.any(days[1:] < days[:-1]):
        raise ValueError("panel times are not sorted; cannot partition by date")
    out = []
    if len(days) == 0:
        return out
    cuts = np.flatnonzero(days[1:] != days[:-1]) + 1
    starts = np.concatenate([[0], cuts])
    stops = np.concatenate([cuts, [len(days)]])
    for a, b in zip(starts, stops):
        out.append((str(days[a]), int(a), int(b)))
    return out


def check_compression(compression) -> str:
    """The Parquet codec ``compression`` names, checked before anything is computed or written
    (Arrow would only refuse it at the first partition's write).

    Examples
    --------
    >>> check_compression("ZSTD")
    'zstd'
    >>> check_compression("lzz")
    Traceback (most recent call last):
    ...
    ValueError: compression 'lzz' is not a Parquet codec; use one of zstd, lz4, snappy, gzip, brotli, none (did you mean 'lz4'?)
    """
    import difflib

    import pyarrow as pa

    name = "none" if compression is None else str(compression).lower()
    if name not in CODECS:
        close = difflib.get_close_matches(name, CODECS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"compression {compression!r} is not a Parquet codec; use one of {', '.join(CODECS)}{hint}")
    if name != "none" and not pa.Codec.is_available(name):
        raise ValueError(f"compression {name!r}: this pyarrow build has no {name} codec; use one of "
                         + ", ".join(c for c in CODECS if c == "none" or pa.Codec.is_available(c)))
    return name


class _HashingFile:
    """A binary file being written that also feeds every byte to a SHA-256 (what the manifest
    records), so the file need not be read back to checksum it."""

    def __init__(self, path: str):
        import hashlib

        self._fh = open(path, "wb")
        self.sha256 = hashlib.sha256()
        self.closed = False

    def write(self, data) -> int:
        self.sha256.update(data)
        return self._fh.write(data)

    def tell(self) -> int:
        return self._fh.tell()

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        if not self.closed:
            self._fh.close()
            self.closed = True


def write_partition(directory: str, times: np.ndarray, symbols: np.ndarray, names: list[str],
                    compression: str, *values: np.ndarray) -> str:
    """Write one partition: a temporary file renamed into place, then stale files removed."""
    return write_partition_hashed(directory, times, symbols, names, compression, *values)[0]


def write_partition_hashed(directory: str, times: np.ndarray, symbols: np.ndarray, names: list[str],
                           compression: str, *values: np.ndarray) -> tuple[str, str, int]:
    """:func:`write_partition`, returning ``(path, sha256 hex digest, bytes)`` of the file written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    T, N = len(times), len(symbols)
    cols = {
        "time": pa.array(np.repeat(times, N)),
        # N strings taken T times (Arrow take: ~1 ms for 200k rows; converting T x N NumPy strings: ~15)
        "symbol": pa.array(symbols.astype(str)).take(pa.array(np.tile(np.arange(N, dtype=np.int32), T))),
    }
    for name, v in zip(names, values):
        cols[name] = pa.array(np.asarray(v).reshape(-1))
    table = pa.table(cols)
    os.makedirs(directory, exist_ok=True)
    final = os.path.join(directory, "part-0.parquet")
    tmp = os.path.join(directory, f".part-0.parquet.{uuid.uuid4().hex}.tmp")
    try:
        sink = _HashingFile(tmp)
        try:
            # dictionary pages for the repeating keys only: a factor column of continuous values fills a
            # dictionary page and then falls back to plain encoding, work thrown away (-20% write time)
            pq.write_table(table, sink, compression=compression, use_dictionary=["time", "symbol"])
            nbytes = sink.tell()
        finally:
            sink.close()
        os.replace(tmp, final)  # atomic on POSIX: readers see the old file or the new one
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    for entry in os.listdir(directory):
        if entry.endswith(".parquet") and entry != "part-0.parquet":
            os.remove(os.path.join(directory, entry))
    return final, sink.sha256.hexdigest(), nbytes


def write_group(jobs: list, symbols: np.ndarray, names: list[str], compression: str, times: np.ndarray,
                offset: int, *values: np.ndarray) -> list[str]:
    """Write several partitions from one task: ``jobs`` are ``(directory, start, stop)`` rows."""
    out = []
    for directory, a, b in jobs:
        vals = [v[a - offset:b - offset] for v in values]
        out.append(write_partition(directory, times[a - offset:b - offset], symbols, names, compression, *vals))
    return out


ROWS_PER_WRITE_TASK = 2_000_000  # cells (rows x symbols) written by one task


def write_parquet(panel, path, partition_by="date", fields=None, compression="zstd") -> list[str]:
    import dask

    compression = check_compression(compression)
    path = Path(path)
    fields = list(fields)
    T, N = panel.shape
    if partition_by == "date":
        ranges = [(os.path.join(path, f"date={d}"), a, b) for d, a, b in _partition_ranges(panel.times)]
    elif partition_by is None:
        ranges = [(str(path), 0, T)]
    else:
        raise ValueError(f"partition_by must be 'date' or None, got {partition_by!r}")
    sources = {}
    for name in fields:
        g, k = panel._locate(name)
        sources[name] = (g.data if g.is_dask and g._cache is None else g.materialize(), k)
    # group whole partitions into tasks of ~ROWS_PER_WRITE_TASK cells: a partition is never
    # split between tasks (each is written whole, atomically), and tasks are not tiny
    groups, current, cells = [], [], 0
    for job in ranges:
        current.append(job)
        cells += (job[2] - job[1]) * max(N, 1)
        if cells >= ROWS_PER_WRITE_TASK:
            groups.append(current)
            current, cells = [], 0
    if current:
        groups.append(current)
    if all(not hasattr(src, "dask") for src, _ in sources.values()):
        # the values are already in this process: write here, partitions in parallel (Arrow and
        # Parquet encoding release the GIL), instead of shipping the arrays through a graph
        from concurrent.futures import ThreadPoolExecutor

        def job(jobs):
            a, b = jobs[0][1], jobs[-1][2]
            vals = [src[k, a:b] for src, k in (sources[n] for n in fields)]
            return write_group(jobs, panel.symbols, fields, compression, panel.times[a:b], a, *vals)

        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            return [p for group in pool.map(job, groups) for p in group]
    writes = []
    for jobs in groups:
        a, b = jobs[0][1], jobs[-1][2]
        vals = [src[k, a:b] for src, k in (sources[n] for n in fields)]
        writes.append(dask.delayed(write_group, pure=False)(
            jobs, panel.symbols, fields, compression, panel.times[a:b], a, *vals))
    return [p for group in dask.compute(*writes) for p in group]
