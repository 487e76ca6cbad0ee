"""Committed output partitions: data file, then a manifest saying what it was computed from.

A partition of a ``factorflow run`` output, ``OUT/date=YYYY-MM-DD/``, is *committed* when its
``_manifest.json`` is valid: it parses, has this format, and the data file it names exists with
the recorded size and SHA-256. :func:`commit_partition` removes the old manifest, writes the data
(temporary file renamed into place, ``engine/io.py``), then writes the manifest the same way, so
at every instant a partition is either committed with matching data or not committed at all; a
process killed in between leaves an uncommitted partition that the next run recomputes.

The manifest records the factors (name, canonical formula, hash), the input fingerprint (tick
files read, bar frequency, session, symbol universe, the first date of the computation) and the
code version. A rerun skips a partition whose manifest matches on all three (:func:`matches`);
``--force`` recomputes it anyway.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import uuid

import numpy as np

from .io import write_partition_hashed

__all__ = ["MANIFEST", "commit_partition", "read_manifest", "matches", "formula_hash", "date_fingerprints",
           "input_fingerprint"]

MANIFEST = "_manifest.json"
FORMAT = 1
DATA_FILE = "part-0.parquet"


def formula_hash(canonical: str) -> str:
    """SHA-256 of a factor's canonical native formula (dialect-independent).

    Examples
    --------
    >>> formula_hash("ema(close, 12)")[:12]
    '2ddca6436444'
    """
    return hashlib.sha256(canonical.encode()).hexdigest()


def date_fingerprints(store, dates) -> dict[str, str]:
    """Per date, a hash of its tick files (name, size, modification time in ns).

    Rewriting a partition of the store (``generate-ticks --overwrite``, a late correction) changes
    it; reading the files is not needed.
    """
    out = {}
    for d in dates:
        h = hashlib.sha256(d.encode())
        for f in store.files(d):
            st = os.stat(f)
            h.update(f"\0{os.path.basename(f)}\0{st.st_size}\0{st.st_mtime_ns}".encode())
        out[d] = h.hexdigest()
    return out


def input_fingerprint(chain: str, params: dict) -> str:
    """The input fingerprint of a partition: the chained tick fingerprints of every date from the
    first date of the computation to the partition's date, plus the run parameters that shape it
    (frequency, session, symbol universe...)."""
    text = json.dumps({"ticks": chain, "params": params}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def chain_fingerprints(per_date: dict[str, str], seed: str = "") -> dict[str, str]:
    """Running hash over dates in order: the value at ``d`` covers every date up to ``d``."""
    out, h = {}, seed
    for d in sorted(per_date):
        h = hashlib.sha256(f"{h}\0{d}\0{per_date[d]}".encode()).hexdigest()
        out[d] = h
    return out


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(directory: str, verify: bool = True) -> dict | None:
    """The partition's manifest if it is committed (see the module docstring), else None."""
    path = os.path.join(directory, MANIFEST)
    try:
        with open(path) as fh:
            m = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        return None
    data = os.path.join(directory, m.get("file", ""))
    try:
        if os.path.getsize(data) != m.get("bytes"):
            return None
    except OSError:
        return None
    if verify and _sha256(data) != m.get("sha256"):
        return None
    return m


def matches(manifest: dict | None, expected: dict) -> bool:
    """True if a committed partition was computed from the same factors, inputs and code."""
    if manifest is None:
        return False
    return all(manifest.get(k) == expected[k] for k in ("factors", "input", "code_version"))


def commit_partition(directory: str, times: np.ndarray, symbols: np.ndarray, names: list[str], compression: str,
                     manifest: dict, values: np.ndarray) -> dict:
    """Write one partition's data (``values``: ``(factors, rows, symbols)``) and then its manifest.

    Returns ``{"date", "rows", "bytes", "path"}``. Runs inside a Dask task (on a worker).
    """
    t0 = time.perf_counter()
    old = os.path.join(directory, MANIFEST)
    if os.path.exists(old):
        os.remove(old)  # from here until the new manifest lands, the partition is uncommitted
    path, digest, nbytes = write_partition_hashed(directory, times, symbols, list(names), compression, *values)
    doc = dict(manifest, format=FORMAT, file=os.path.basename(path), bytes=nbytes,
               sha256=digest, rows=int(len(times) * len(symbols)),
               written_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    tmp = os.path.join(directory, f".{MANIFEST}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "w") as fh:
            json.dump(doc, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, old)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    _fault_hook()
    return {"date": manifest.get("date"), "rows": doc["rows"], "bytes": doc["bytes"], "path": path,
            "seconds": time.perf_counter() - t0}


def _fault_hook() -> None:
    """``FACTORFLOW_TEST_COMMIT_DELAY=seconds``: sleep after each commit. Used by the fault tests
    (tests/test_run_faults.py) to keep a run going long enough to kill a process mid-run;
    never set in production."""
    delay = os.environ.get("FACTORFLOW_TEST_COMMIT_DELAY")
    if delay:
        time.sleep(float(delay))
