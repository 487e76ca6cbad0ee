"""Turning a lazy result into one NumPy array without concatenating blocks afterwards.

Dask's ``compute`` of a chunked array gathers every block and then concatenates them in one
single-threaded step (measured: 2.1 s of a 4.3 s run for a 1.6 GB result). Instead the result
array is allocated once and filled block by block:

* when the tasks run in this process (threaded scheduler, or ``ff.cluster.local()`` whose
  workers are threads), the final-stage tasks write their outputs straight into it — in
  parallel, with no block ever allocated (``execute.run_local_into``);
* when they run in worker processes, the blocks are gathered and copied into place.

A large result split into several symbol blocks and written in place by tasks of this process
is faulted in from every core before they run (``engine/memory.py: touch_pages``): Alpha158 on
1000 x 2000 in float64 (blocks of 500 symbols), 1.90 -> 1.71 s per call by zeroing it first, 1.96
-> 1.68 s more by ``madvise(MADV_POPULATE_WRITE)`` instead of zeroing (paired calls). Results in full-width
blocks (each task writes whole rows, contiguous memory) gain nothing from it (bench_compute's
4000 x 5000 in blocks of 667 x 5000: 1.31 s either way), and results gathered from worker
processes would only see their workers wait for it: both are left alone.
"""
from __future__ import annotations

import functools
import uuid

import numpy as np

from .execute import TARGETS, run_local, run_local_into
from .memory import touch_pages

__all__ = ["materialize"]


def _in_process(scheduler) -> bool:
    client = getattr(scheduler, "__self__", None)
    if client is None:
        return True  # dask's local threaded / synchronous schedulers
    try:
        return client.scheduler.address.startswith("inproc://")
    except Exception:
        return False


def materialize(arrays, origins_list) -> list[np.ndarray]:
    """Compute dask arrays into fresh NumPy arrays; ``origins_list[k]`` as from ``build_graph``
    (or None for arrays factorflow did not build)."""
    import dask
    from dask.base import get_scheduler

    out = []
    for arr, origins in zip(arrays, origins_list):
        scheduler = get_scheduler(collections=[arr]) or dask.threaded.get
        target = np.empty(arr.shape, arr.dtype)
        hlg = arr.__dask_graph__()
        graph = dict(hlg)
        in_process = _in_process(scheduler)
        resources = _resources(hlg)
        if resources and getattr(scheduler, "__self__", None) is not None:
            # the flattened graph loses the layers' annotations (dask/dask#7036): restrict here
            scheduler = functools.partial(scheduler, resources=resources)
        keys = [k for k in _flat(arr.__dask_keys__())]
        if origins and in_process:
            if len(arr.chunks[-1]) > 1:
                # the tasks (threads of this process) will write strided row pieces of blocks
                # narrower than a row: fault the result in from every core first rather than one
                # row piece at a time inside the kernels. Not for results gathered from worker
                # processes: touching before submitting would only delay those workers
                touch_pages(target)
            token = uuid.uuid4().hex
            TARGETS[token] = target
            try:
                for k, (r0, c0) in origins.items():
                    task = graph[k]
                    assert task[0] is run_local
                    graph[k] = (run_local_into, token, r0, c0, *task[1:])
                scheduler(graph, keys)
            finally:
                del TARGETS[token]
        else:
            blocks = scheduler(graph, keys)
            starts = [np.cumsum((0,) + c[:-1]) for c in arr.chunks]
            for k, b in zip(keys, blocks):
                idx = tuple(slice(s[i], s[i] + n) for s, i, n in zip(starts, k[1:], b.shape))
                target[idx] = b
        out.append(target)
    return out


def _resources(hlg) -> dict | None:
    """The Dask resources the graph's layers are annotated with (GPU plans), merged."""
    out: dict = {}
    for layer in getattr(hlg, "layers", {}).values():
        out.update((getattr(layer, "annotations", None) or {}).get("resources") or {})
    return out or None


def _flat(keys):
    if isinstance(keys, list):
        for k in keys:
            yield from _flat(k)
    else:
        yield keys
