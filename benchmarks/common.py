"""Shared helpers for the benchmark scripts: timing, result checks, plain-text tables.

Timing method (``measure``): one warm-up call (Numba compilation or cache load, page faults of
reused buffers, Dask worker start-up), then ``repeat`` timed calls; the median wall time is
reported with two load figures over the same calls:

* ``cpu/wall``: CPU seconds of this process *and its child processes* (Dask worker processes of a
  ``LocalCluster``) per wall second: ~1 for single-threaded code, up to the core count when
  several threads or processes work;
* ``other``: CPU seconds per wall second that the rest of the machine used meanwhile (system-wide
  busy time, hypervisor steal included, minus ours). The benchmark machine is shared: above ~0.2
  another job competed for the cores and that row's time is pessimistic; rerun it. The scripts
  call ``wait_quiet`` before each case to start when the cores are free (bounded wait).

Both come from psutil (``/proc/stat`` resolution is 10 ms: they are rough for short calls and
shown as "?" when the timed calls total less than 0.1 s); without psutil ``cpu/wall`` counts this
process only and ``other`` is not available.
"""
from __future__ import annotations

import gc
import os
import platform
import statistics
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

try:
    import psutil
except ImportError:  # pragma: no cover - psutil comes with distributed
    psutil = None

__all__ = ["Timing", "measure", "compare", "table", "environment", "fmt_ms", "fmt_rate", "fmt_cpu", "fmt_other",
           "wait_quiet", "RssSampler"]

MIN_LOAD_WALL_S = 0.1  # below this much timed wall time, cpu/wall and other are reported as "?"


@dataclass
class Timing:
    """Median wall seconds of ``n`` timed calls; our CPU and other jobs' CPU per wall second."""

    median_s: float
    n: int
    cpu_ratio: float | None
    other_load: float | None
    all_s: tuple

    @property
    def min_s(self) -> float:
        return min(self.all_s)


def _cpu_snapshot():
    """(CPU seconds of this process tree, system-wide busy CPU seconds or None)."""
    if psutil is None:
        return time.process_time(), None
    me = psutil.Process()
    ours = 0.0
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
            ours += t.user + t.system
        except psutil.Error:  # a child exited meanwhile
            pass
    t = psutil.cpu_times()
    busy = t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0) + getattr(t, "steal", 0.0)
    return ours, busy


def measure(fn, repeat: int = 5, budget_s: float | None = None, keep_first: bool = True):
    """Call ``fn`` once to warm up, then ``repeat`` timed times; returns ``(first_result, Timing)``.

    ``budget_s``: stop repeating (after at least 2 timed calls) once the timed calls have taken
    this long, so slow peers do not dominate the run; the Timing's ``n`` says how many ran.
    ``keep_first=False`` drops the warm-up result before timing (returns None for it), to keep
    memory down when it is not needed.
    """
    first = fn()
    if not keep_first:
        first = None
    walls, ours, others = [], 0.0, 0.0
    for _ in range(max(1, repeat)):
        gc.collect()
        o0, b0 = _cpu_snapshot()
        w0 = time.perf_counter()
        r = fn()
        w1 = time.perf_counter()
        o1, b1 = _cpu_snapshot()
        del r
        walls.append(w1 - w0)
        ours += o1 - o0
        if b0 is not None:
            others += max(0.0, (b1 - b0) - (o1 - o0))
        if budget_s is not None and len(walls) >= 2 and sum(walls) > budget_s:
            break
    total = max(sum(walls), 1e-12)
    cpu = ours / total
    other = others / total if psutil is not None else None
    if psutil is not None and total < MIN_LOAD_WALL_S:  # 10 ms counters: meaningless this short
        cpu = other = None
    return first, Timing(statistics.median(walls), len(walls), cpu, other, tuple(walls))


def wait_quiet(max_wait_s: float, threshold: float = 0.3, sample_s: float = 0.3) -> float:
    """Wait (at most ``max_wait_s``) until other jobs use less than ``threshold`` cores; returns
    the seconds waited. The machine is shared: this keeps a benchmark from starting its timed
    calls while someone else's test run holds a core (the ``other`` column still reports it)."""
    if psutil is None or max_wait_s <= 0:
        return 0.0
    t0 = time.perf_counter()
    while True:
        o0, b0 = _cpu_snapshot()
        time.sleep(sample_s)
        o1, b1 = _cpu_snapshot()
        waited = time.perf_counter() - t0
        if ((b1 - b0) - (o1 - o0)) / sample_s < threshold or waited >= max_wait_s:
            if waited > 2 * sample_s + 0.5:
                print(f"  (waited {waited:.0f} s for other jobs to leave the cores)", file=sys.stderr, flush=True)
            return waited


def fmt_other(t: Timing) -> str:
    return "?" if t.other_load is None else f"{t.other_load:.1f}"


def fmt_cpu(t: Timing) -> str:
    return "?" if t.cpu_ratio is None else f"{t.cpu_ratio:.1f}"


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


class RssSampler:
    """Peak RSS of a set of processes, sampled in a background thread."""

    def __init__(self, pids, interval=0.01):
        self.procs = [psutil.Process(p) for p in pids] if psutil else []
        self.base = [p.memory_info().rss for p in self.procs]
        self.peak = list(self.base)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, args=(interval,), daemon=True)

    def _run(self, interval):
        while not self._stop.is_set():
            for k, p in enumerate(self.procs):
                try:
                    self.peak[k] = max(self.peak[k], p.memory_info().rss)
                except psutil.Error:
                    pass
            time.sleep(interval)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()

    @property
    def growth(self) -> list[int]:
        return [p - b for p, b in zip(self.peak, self.base)]
