"""Turning a lazy result into one NumPy array without concatenating blocks afterwards.

Dask's ``compute`` of a chunked array gathers every block and then concatenates them in one
single-threaded step (measured: 2.1 s of a 4.3 s run for a 1.6 GB result). Instead the result
array is allocated once and filled block by block:

* when the tasks run in this process (threaded scheduler, or ``ff.cluster.local()`` whose
  workers are threads), the final-stage tasks write their outputs straight into it — in
  parallel, with no block ever allocated (``execute.run_local_into``);
* when they run in worker processes, the blocks are gathered and copied into place.
"""
from __future__ import annotations

import uuid

import numpy as np

from .execute import TARGETS, run_local, run_local_into

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
        graph = dict(arr.__dask_graph__())
        keys = [k for k in _flat(arr.__dask_keys__())]
        if origins and _in_process(scheduler):
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


def _flat(keys):
    if isinstance(keys, list):
        for k in keys:
            yield from _flat(k)
    else:
        yield keys
