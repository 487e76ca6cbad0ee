"""Putting NumPy data where the computation runs.

With a distributed client, a NumPy-backed field is split into the plan's blocks and scattered
to the workers once (``hash=False``: no token of the data is computed). In-process workers
(``ff.cluster.local()``, threads) receive references, not copies; worker processes receive each
block once. Scattered blocks are cached per (array, grid, client) so repeated ``compute`` calls on
the same panel do not ship it again.
"""
from __future__ import annotations

import threading
import weakref

import numpy as np

__all__ = ["scatter_blocks", "persist_groups"]

_cache_lock = threading.Lock()
_cache: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


class _Holder:
    """Weak-referenceable handle for a cache entry keyed by the data array."""


def _offsets(chunks):
    out = [0]
    for c in chunks:
        out.append(out[-1] + c)
    return out


def scatter_blocks(client, data: np.ndarray, tchunks, schunks, token: str):
    """Scatter ``data`` (G, T, N) as blocks of the grid; returns ``(name, {key: future})``."""
    grid = (tuple(tchunks), tuple(schunks), client.id)
    base = data.base if data.base is not None else data
    with _cache_lock:
        try:
            per_array = _cache.setdefault(base, {})
        except TypeError:  # not weak-referenceable
            per_array = {}
        hit = per_array.get((grid, data.__array_interface__["data"][0], data.shape))
        if hit is not None and all(f.status == "finished" for f in hit[1].values()):
            return hit
    name = f"ff-input-{token}-{id(data):x}-{abs(hash(grid)):x}"
    toff, soff = _offsets(tchunks), _offsets(schunks)
    blocks = {}
    for i in range(len(tchunks)):
        for j in range(len(schunks)):
            blocks[(name, 0, i, j)] = data[:, toff[i]:toff[i + 1], soff[j]:soff[j + 1]]
    futures = client.scatter(blocks, hash=False)
    result = (name, futures)
    with _cache_lock:
        per_array[(grid, data.__array_interface__["data"][0], data.shape)] = result
    return result


def persist_groups(groups, shape):
    """Dask-backed, persisted copies of every group (see ``Panel.persist``)."""
    import dask
    import dask.array as da

    from .panel import _Group
    from .plan import MIN_SYMBOL_BLOCK, TARGET_BLOCK_CELLS

    T, N = shape
    out = []
    client = None
    try:
        from distributed import default_client

        client = default_client()
    except Exception:
        pass
    for g in groups:
        if g.is_dask:
            arr = g.data if g._cache is None else da.from_array(g._cache, chunks=(-1, "auto", "auto"))
            out.append(_Group(g.names, arr.persist()))
            continue
        data = g.data
        cols = max(MIN_SYMBOL_BLOCK, min(N, TARGET_BLOCK_CELLS // max(T, 1)))
        tchunks = (T,) if T else ()
        schunks = tuple([cols] * (N // cols) + ([N % cols] if N % cols else []))
        if client is None:
            arr = da.from_array(data, chunks=(data.shape[0], T, cols))
            out.append(_Group(g.names, arr.persist()))
            continue
        name, futures = scatter_blocks(client, data, tchunks, schunks, token="persist")
        from dask.highlevelgraph import HighLevelGraph

        graph = HighLevelGraph.from_collections(name, dict(futures), dependencies=[])
        arr = da.Array(graph, name, chunks=((data.shape[0],), tchunks, schunks), dtype=data.dtype,
                       meta=np.empty((0, 0, 0), data.dtype))
        out.append(_Group(g.names, arr))
    return out
