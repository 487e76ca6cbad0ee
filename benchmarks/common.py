"""Shared helpers for the benchmark scripts: timing, result checks, plain-text tables.

Timing method (``measure``): one warm-up call (Numba compilation or cache load, page faults of
reused buffers, Dask worker start-up), then ``repeat`` timed calls; the median wall time is
reported, with the process CPU time of the same calls divided by their wall time (``cpu/wall``:
~1 for single-threaded code, up to the core count for code using several threads of this
process; CPU time spent in other processes, e.g. Dask worker processes, is not counted).
"""
from __future__ import annotations

import gc
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np

__all__ = ["Timing", "measure", "compare", "table", "environment", "fmt_ms", "fmt_rate"]


@dataclass
class Timing:
    """Median wall seconds of ``n`` timed calls, and CPU seconds per wall second."""

    median_s: float
    n: int
    cpu_ratio: float
    all_s: tuple


def measure(fn, repeat: int = 5, budget_s: float | None = None):
    """Call ``fn`` once to warm up, then ``repeat`` timed times; returns ``(first_result, Timing)``.

    ``budget_s``: stop repeating (after at least 2 timed calls) once the timed calls have taken
    this long, so slow peers do not dominate the run; the Timing's ``n`` says how many ran.
    """
    first = fn()
    walls, cpus = [], []
    for _ in range(max(1, repeat)):
        gc.collect()
        c0, w0 = time.process_time(), time.perf_counter()
        r = fn()
        w1, c1 = time.perf_counter(), time.process_time()
        del r
        walls.append(w1 - w0)
        cpus.append(c1 - c0)
        if budget_s is not None and len(walls) >= 2 and sum(walls) > budget_s:
            break
    return first, Timing(statistics.median(walls), len(walls), sum(cpus) / max(sum(walls), 1e-12), tuple(walls))


def compare(got, want, rtol: float = 1e-6, atol: float = 1e-8) -> tuple[bool, str]:
    """``np.allclose(got, want, equal_nan=True)`` plus a short description of any difference."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return False, f"shape {got.shape} != {want.shape}"
    with np.errstate(all="ignore"):
        ok = np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True)
        if ok:
            return True, "ok"
        gn, wn = np.isnan(got), np.isnan(want)
        nan_diff = int(np.count_nonzero(gn != wn))
        both = ~gn & ~wn
        bad = both & ~np.isclose(got, want, rtol=rtol, atol=atol)
        parts = []
        if nan_diff:
            parts.append(f"NaN pattern differs at {nan_diff} cells")
        if bad.any():
            err = np.abs(got[bad] - want[bad])
            parts.append(f"{int(bad.sum())} values differ (max abs diff {err.max():.3g})")
    return False, "; ".join(parts) or "differs"


def table(headers, rows, right=None) -> str:
    """A plain-text table; ``right`` lists the column indexes to right-align (default: numbers)."""
    rows = [[("" if c is None else str(c)) for c in r] for r in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(str(h)) for i, h in enumerate(headers)]
    if right is None:
        right = {i for i in range(len(headers)) if rows and all(_numeric(r[i]) for r in rows if r[i])}

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [line([str(h) for h in headers]), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    return "\n".join(out)


def _numeric(s: str) -> bool:
    try:
        float(s.rstrip("x%").replace(",", ""))
        return True
    except ValueError:
        return False


def fmt_ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.1f}" if ms < 1000 else f"{ms:.0f}"


def fmt_rate(cells: float, seconds: float) -> str:
    return f"{cells / seconds / 1e6:.0f}" if seconds > 0 else "-"


def environment(extra_modules=()) -> str:
    """One paragraph on the machine and library versions, for the report header."""
    import numba

    mods = ["numpy", "numba", *extra_modules]
    vers = []
    for m in mods:
        try:
            mod = __import__(m)
            vers.append(f"{m} {getattr(mod, '__version__', '?')}")
        except Exception:
            vers.append(f"{m} (missing)")
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (f"machine: {platform.machine()} {os.cpu_count()} logical cores, Python {sys.version.split()[0]}, "
            f"load average {load}\n"
            f"versions: {', '.join(vers)}; numba threads {numba.config.NUMBA_NUM_THREADS}")
