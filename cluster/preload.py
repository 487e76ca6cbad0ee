"""Worker warm-up: load (or compile once per host) every Numba kernel when a worker starts.

Use it as a Dask preload module::

    dask worker --scheduler-file s.json --preload factorflow.cluster.preload

or as a plugin registered by a client (``factorflow run`` does this on external clusters)::

    client.register_plugin(WarmKernels(), name="factorflow-warm-kernels")

Either way, each worker runs :func:`warm_kernels` before its first factorflow task, so no task
pays for compilation. The kernels use ``cache=True``; several worker processes on one host
starting together would all compile the same kernels and write the same cache files
(numba/numba#4807), so the first compile is serialised by a file lock per host and cache
directory: the first worker compiles and writes the cache, the others then load from it.
"""
from __future__ import annotations

import os
import tempfile
import time

__all__ = ["warm_kernels", "WarmKernels", "dask_setup"]


def _lock_path() -> str:
    base = os.environ.get("NUMBA_CACHE_DIR") or tempfile.gettempdir()
    os.makedirs(base, exist_ok=True)
    user = os.environ.get("USER") or str(os.getuid() if hasattr(os, "getuid") else "")
    return os.path.join(base, f".factorflow-numba-warm-{user}.lock")


class _FileLock:
    """An exclusive ``flock`` on a file (POSIX); a no-op where ``fcntl`` is missing."""

    def __init__(self, path: str):
        self.path = path
        self.fh = None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return self
        self.fh = open(self.path, "a")
        fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self.fh is not None:
            import fcntl

            fcntl.flock(self.fh.fileno(), fcntl.LOCK_UN)
            self.fh.close()
        return False


def warm_kernels() -> dict:
    """Run every operator of the registry once on a tiny panel, in this process (float64).

    Returns ``{"operators": n, "seconds": s, "lock_wait_seconds": w, "held": [t0, t1]}``: the whole
    call, the wait for the per-host lock, and when this process held it (``time.time()``), so that
    a cluster's warm-up events show the compiles were serialised (tests/test_run_cluster.py).

    Examples
    --------
    >>> info = warm_kernels()
    >>> info["operators"] > 20
    True
    """
    import dask
    import numpy as np

    from ..engine.compute import compute
    from ..engine.panel import Panel
    from ..factors import factor
    from ..factors.registry import operators

    t0 = time.perf_counter()
    formulas = {f"w{k}": factor(op.example) for k, op in enumerate(operators().values())}
    fields = sorted({f for fm in formulas.values() for f in fm.fields})
    rng = np.random.default_rng(0)
    panel = Panel.from_numpy({f: 1 + rng.random((64, 8)) for f in fields})
    t_wait = time.perf_counter()
    with _FileLock(_lock_path()), dask.config.set(scheduler="sync"):
        held = [time.time()]
        waited = time.perf_counter() - t_wait
        compute(formulas, panel).to_numpy()
        held.append(time.time())
    return {"operators": len(formulas), "seconds": time.perf_counter() - t0, "lock_wait_seconds": waited,
            "held": held}


try:
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError:  # pragma: no cover - distributed is a dependency
    WorkerPlugin = object


class WarmKernels(WorkerPlugin):
    """A worker plugin running :func:`warm_kernels` on every worker (off the event loop).

    In a worker that is a process of its own (a nanny's child, ``ff.cluster.local(processes=True)``)
    it first applies :func:`factorflow.engine.memory.configure_worker_process` (malloc's mmap
    threshold, Polars threads); a worker living in the client's process (threads) is left alone.
    """

    name = "factorflow-warm-kernels"

    def __init__(self, own_process: bool | None = None):
        self.own_process = own_process

    async def setup(self, worker):
        import asyncio
        import multiprocessing

        own = self.own_process if self.own_process is not None else multiprocessing.parent_process() is not None
        applied = {}
        if own:
            from ..engine.memory import configure_worker_process

            applied = configure_worker_process(worker.state.nthreads)
        info = await asyncio.get_running_loop().run_in_executor(None, warm_kernels)
        event = {"action": "warm-kernels", **info, **applied}
        if _registered(worker):
            worker.log_event("factorflow", event)
        else:  # a preload runs before the worker registers: an event logged now would sit unsent
            asyncio.ensure_future(_log_when_registered(worker, event))


def _registered(worker) -> bool:
    from distributed.core import Status

    return worker.status in (Status.running, Status.paused)


async def _log_when_registered(worker, event: dict, timeout: float = 600.0) -> None:
    import asyncio

    from distributed.core import Status

    t0 = time.monotonic()
    while not _registered(worker):
        if worker.status in (Status.closing, Status.closed, Status.failed) or time.monotonic() - t0 > timeout:
            return
        await asyncio.sleep(0.05)
    worker.log_event("factorflow", event)


async def dask_setup(worker):
    """Entry point of ``dask worker --preload factorflow.cluster.preload`` (a worker process)."""
    await WarmKernels(own_process=True).setup(worker)
