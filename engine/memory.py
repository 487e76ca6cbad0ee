"""Process-wide memory policy: NumPy's transparent-huge-page advice.

NumPy asks the kernel for transparent huge pages (``madvise(MADV_HUGEPAGE)``) on every allocation
of 4 MiB or more. Where the kernel's THP ``defrag`` policy is ``madvise`` or ``always`` (the
bracketed word of ``/sys/kernel/mm/transparent_hugepage/defrag``), such a region is faulted in by
*direct compaction*: the faulting thread stops to defragment memory. factorflow allocates large
blocks all the time (stage outputs, scratch buffers, results), from several threads of one process
(the embedded cluster), and there the stalls serialise the threads. Measured on the 2-core
reference VM (defrag ``madvise``), embedded cluster, 1000 x 2000 panel: Alpha101 56-77 s with the
advice, 7.4-9.0 s without; Alpha158 1.8-5.2 s with, 2.3-3.0 s without; worker *processes* were not
affected (each has its own address space).

So on import, :func:`configure_numpy_hugepages` turns NumPy's advice off when the defrag policy
would stall, and leaves it on otherwise (``defer``, ``defer+madvise``, ``never``: no stall, and
huge pages still help the kernels' TLB reach). ``FACTORFLOW_NUMPY_HUGEPAGE=1`` keeps NumPy's
advice whatever the policy, ``=0`` turns it off whatever the policy.

Not even the one array that every call allocates fresh, the result ``engine/materialize.py`` fills
in place (Alpha158 on 1000 x 2000: 2.5 GB, 620,000 page faults of 4 KiB per call), is advised:
measured on the reference VM (its host takes back the pages the guest frees), filling 2.5 GB of
fresh memory took 0.28 s in huge pages when the process had just freed that much, but 5.1 s when
the free memory had been handed back to the host, against 1.0 s in 4 KiB pages either way (the
guest serves small pages from free fragments it still holds). Advising the result alone: Alpha158
1.1-1.4 s per call when the previous result had just been freed, 3.4-3.9 s on a first call, against
2.0-2.5 s without. The 4 KiB faults cost ~0.42 s per GB per thread and do run in parallel (two
threads or two processes faulting at once each keep that rate).

What does pay, for a result split into symbol blocks, is to fault it in *before* the tasks write
it, from one thread per core (:func:`touch_pages`, called by ``engine/materialize.py`` for such
results of 64 MiB or more): written in place by the kernels, the result's pages are faulted in
one 4 KiB row piece at a time in the middle of vectorised loops (Alpha158's blocks write rows of
500 doubles, 4,000 bytes, into rows 16,000 bytes apart), which costs the call ~0.9 s over backed
memory; zeroed in two contiguous halves by two threads first it costs ~0.6 s, and the kernels
then write into memory that is already there. Alpha158 embedded, 1000 x 2000, float64, paired
calls alternating: 1.90 -> 1.71 s and 1.93 -> 1.76 s (medians, previous result dropped),
float32 1.12 -> 1.06 s, first call of a process 1.97-2.06 -> 1.68-1.74 s; Alpha101 8.27 vs 8.47 s
(no gain). Full-width blocks write contiguous memory and gain nothing (bench_compute, 4000 x 5000
in blocks of 667 x 5000: 1.31 s either way), so they are not touched.

Each thread faults its piece in with ``madvise(MADV_POPULATE_WRITE)`` (Linux 5.14 or later): the
kernel maps and clears the pages in one call, without a trap per page and without the second,
user-space pass of writing zeros over the cleared pages. Alpha158 embedded, 1000 x 2000, float64,
8 calls each alternating: the touch 0.79 -> 0.51 s (medians), the call 1.96 -> 1.68 s. Where the
call is refused (older kernels, other systems) the piece is zeroed as before. Either way the
array's content afterwards is unspecified (zeros for a fresh allocation): the tasks overwrite
every element.

Worker processes get two more settings (:func:`configure_worker_process`, run by the worker
preload and the warm-up plugin):

* **malloc's mmap threshold.** A Dask nanny starts its worker with ``MALLOC_TRIM_THRESHOLD_`` set,
  and setting any malloc tunable freezes glibc's *dynamic* mmap threshold at 128 KiB: every
  stage buffer, Arrow buffer and bars block above that is a fresh ``mmap`` and is page-faulted in
  again on every task. Raising the threshold to 32 MiB (glibc's maximum) serves those from the
  heap and reuses their pages; the nanny's trim threshold still returns free heap tops to the OS.
  Measured, ``benchmarks/bench_cluster.py`` on the 2-core VM: 2-worker job 2.80 -> 2.57 s.
  ``FACTORFLOW_MALLOC_MMAP_THRESHOLD=bytes`` sets another value, ``0`` leaves malloc alone.
* **Polars threads.** Polars sizes its thread pool once, at import, to every core of the host; two
  single-thread workers on two cores then run four busy Polars threads (the bars tasks) against
  each other. ``POLARS_MAX_THREADS`` is set to the worker's thread count before Polars is
  imported (unless already set), as Dask's nanny does for OpenMP/MKL/OpenBLAS.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os
import sys
import threading

import numpy as np

__all__ = ["configure_numpy_hugepages", "configure_worker_process", "empty", "touch_pages"]

_DEFRAG = "/sys/kernel/mm/transparent_hugepage/defrag"


def _stalling_defrag() -> bool:
    try:
        with open(_DEFRAG) as f:
            text = f.read()
    except OSError:  # not Linux, or no THP: nothing to decide
        return False
    chosen = text[text.find("[") + 1:text.find("]")] if "[" in text else text.strip()
    return chosen in ("madvise", "always")


def configure_numpy_hugepages() -> bool | None:
    """Apply the policy above; returns NumPy's resulting setting (None if NumPy cannot tell).

    Examples
    --------
    >>> from factorflow.engine.memory import configure_numpy_hugepages
    >>> configure_numpy_hugepages() in (True, False, None)
    True
    """
    import numpy as np

    try:
        setter = np._core.multiarray._set_madvise_hugepage
    except AttributeError:  # NumPy < 2: np.core
        try:
            setter = np.core.multiarray._set_madvise_hugepage
        except AttributeError:
            return None
    forced = os.environ.get("FACTORFLOW_NUMPY_HUGEPAGE")
    if forced in ("0", "1"):
        enable = forced == "1"
    else:
        enable = not _stalling_defrag()
    setter(enable)  # returns the previous value
    return enable


TOUCH_MIN_BYTES = 64 * 2**20  # below this, one thread's page faults are not worth extra threads
MADV_POPULATE_WRITE = 23  # <linux/mman.h>: fault pages in writable (Linux >= 5.14)
_PAGE = mmap.PAGESIZE
_madvise = None  # libc's madvise (ctypes; the call releases the GIL), False where unavailable or refused


def _libc_function(name: str, argtypes: list, restype=ctypes.c_int):
    """``name`` from the C library (ctypes; calls release the GIL and keep ``errno``), or None
    where there is no such C library or function (not glibc/Linux: nothing to tune)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = getattr(libc, name)
    except (OSError, AttributeError):
        return None
    fn.argtypes = argtypes
    fn.restype = restype
    return fn


def _libc_madvise():
    global _madvise
    if _madvise is None:
        fn = None
        if sys.platform.startswith("linux"):
            fn = _libc_function("madvise", [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int])
        _madvise = fn or False
    return _madvise


def _populate(flat8, lo: int, hi: int) -> tuple[int, int] | None:
    """Fault in the whole pages inside bytes ``lo .. hi`` of the byte view ``flat8`` by
    ``MADV_POPULATE_WRITE``; returns the page-aligned range done (``None``: refused, or no
    ``madvise`` here). Only the pages' mapping changes, never the bytes."""
    global _madvise
    fn = _libc_madvise()
    if not fn:
        return None
    base = flat8.ctypes.data
    a = min(hi, lo + (-(base + lo)) % _PAGE)  # first page boundary at or after lo
    b = max(a, hi - (base + hi) % _PAGE)  # last page boundary at or before hi
    if b > a and fn(base + a, b - a, MADV_POPULATE_WRITE) != 0:
        if ctypes.get_errno() in (errno.EINVAL, errno.ENOSYS, errno.EPERM):
            _madvise = False  # this kernel does not know the advice: do not ask again
        return None
    return a, b


def _fault_in(flat8, lo: int, hi: int) -> None:
    """Fault in bytes ``lo .. hi`` of ``flat8``: the whole pages inside by :func:`_populate`, the
    partial pages at the ends (and everything, where that is refused) by writing zeros."""
    done = _populate(flat8, lo, hi)
    if done is None:
        flat8[lo:hi].fill(0)
    else:
        flat8[lo:done[0]].fill(0)
        flat8[done[1]:hi].fill(0)


POPULATE_MIN_BYTES = 4 * 2**20  # empty(): below this, leave the pages to fault in where written


def empty(shape, dtype=np.float64) -> np.ndarray:
    """``np.empty`` for a buffer the caller writes completely (a stage's output block, a scratch
    buffer, a bars block): from :data:`POPULATE_MIN_BYTES` up, its pages are faulted in at once by
    one ``madvise(MADV_POPULATE_WRITE)`` call instead of one trap per 4 KiB page inside the
    kernels that write it (on the 2-core reference VM, a (14, 4020, 500) float64 block allocated
    and written output by output, 8 times each alternating: 103 -> 84 ms). Where the call is
    refused, a plain ``np.empty``.

    Examples
    --------
    >>> from factorflow.engine.memory import empty
    >>> a = empty((2, 1000, 1000))
    >>> a.shape, a.dtype.name, a.flags.writeable
    ((2, 1000, 1000), 'float64', True)
    """
    a = np.empty(shape, dtype)
    if a.nbytes >= POPULATE_MIN_BYTES and a.flags.c_contiguous:
        _populate(a.reshape(-1).view(np.uint8), 0, a.nbytes)
    return a


def _threads() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 8))  # beyond a few threads the faults are bound by memory bandwidth


def touch_pages(a, threads: int | None = None) -> int:
    """Fault in a freshly allocated array's memory, ``threads`` contiguous pieces at once
    (default: one per available core, at most 8); returns the threads used (0: not touched,
    below ``TOUCH_MIN_BYTES`` or not contiguous). See the module docstring for why and how.

    The content afterwards is unspecified (zeros for a fresh allocation): the caller overwrites
    every element. The pieces are faulted in in parallel (``madvise`` and NumPy's ``fill`` both
    release the GIL): one by the calling thread, the others by threads started for the call
    (~0.1 ms; no pool kept between calls, so nothing for a forked child process to inherit).

    Examples
    --------
    >>> import numpy as np
    >>> from factorflow.engine.memory import touch_pages
    >>> a = np.empty((2, 1000, 5000))
    >>> touch_pages(a, threads=2)
    2
    >>> touch_pages(np.empty(10))  # small arrays are left to fault in where they are written
    0
    """
    if a.nbytes < TOUCH_MIN_BYTES or not a.flags.c_contiguous:
        return 0
    flat8 = a.reshape(-1).view(np.uint8)
    n = _threads() if threads is None else max(1, int(threads))
    step = -(-flat8.size // n)
    step += (-step) % _PAGE  # whole pages per piece where the array allows
    pieces = [(lo, min(lo + step, flat8.size)) for lo in range(0, flat8.size, step)]
    helpers = [threading.Thread(target=_fault_in, args=(flat8, lo, hi), name="factorflow-touch", daemon=True)
               for lo, hi in pieces[1:]]
    for t in helpers:
        t.start()
    _fault_in(flat8, *pieces[0])
    for t in helpers:
        t.join()
    return len(pieces)


MMAP_THRESHOLD = 32 * 2**20  # glibc's upper limit for M_MMAP_THRESHOLD on 64-bit
_M_MMAP_THRESHOLD = -3  # from <malloc.h>


def _set_mmap_threshold(nbytes: int) -> bool:
    mallopt = _libc_function("mallopt", [ctypes.c_int, ctypes.c_int])  # glibc only (not macOS, musl)
    return bool(mallopt and mallopt(_M_MMAP_THRESHOLD, int(nbytes)))


def configure_worker_process(nthreads: int) -> dict:
    """Settings for a Dask worker *process* that runs factorflow tasks (see the module docstring).

    Returns what was applied: ``{"mmap_threshold": bytes or None, "polars_threads": n or None}``.

    Examples
    --------
    In a fresh worker process (process-wide settings, so not run by the doctests; see
    tests/test_placement.py, which runs it in a subprocess):

    >>> from factorflow.engine.memory import configure_worker_process
    >>> configure_worker_process(4)  # doctest: +SKIP
    {'mmap_threshold': 33554432, 'polars_threads': 4}
    """
    done: dict = {"mmap_threshold": None, "polars_threads": None}
    want = int(os.environ.get("FACTORFLOW_MALLOC_MMAP_THRESHOLD", MMAP_THRESHOLD))
    if want > 0 and _set_mmap_threshold(want):
        done["mmap_threshold"] = want
    if "polars" not in sys.modules and "POLARS_MAX_THREADS" not in os.environ:
        os.environ["POLARS_MAX_THREADS"] = str(max(int(nthreads), 1))
        done["polars_threads"] = max(int(nthreads), 1)
    return done
