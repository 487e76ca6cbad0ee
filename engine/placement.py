"""Putting data and tasks where the computation runs.

With a distributed client, a NumPy-backed field is split into the plan's blocks and scattered
to the workers once (``hash=False``: no token of the data is computed). In-process workers
(``ff.cluster.local()``, threads) receive references, not copies; worker processes receive each
block once. Scattered blocks are cached per (array, grid, client) so repeated ``compute`` calls on
the same panel do not ship it again.

A batch job's graph is pinned loosely to workers (:func:`pin_to_workers`): each worker gets a
contiguous run of output partitions and the tasks that feed them, so that bars, stage blocks and
commits of one date range stay in one process instead of crossing between workers.
"""
from __future__ import annotations

import threading
import uuid
import weakref

import numpy as np

__all__ = ["scatter_blocks", "persist_groups", "pin_to_workers"]

_cache_lock = threading.Lock()
# id(base array) -> (weakref to it, {(grid, data pointer, shape): (name, futures)}). NumPy arrays are
# weak-referenceable but not hashable, so entries are keyed by id and dropped by a finalizer.
_cache: dict[int, tuple] = {}


def _offsets(chunks):
    out = [0]
    for c in chunks:
        out.append(out[-1] + c)
    return out


def _entries(base: np.ndarray) -> dict:
    key = id(base)
    hit = _cache.get(key)
    if hit is not None and hit[0]() is base:
        return hit[1]
    entries: dict = {}
    try:
        ref = weakref.ref(base)
        weakref.finalize(base, _cache.pop, key, None)
    except TypeError:  # not weak-referenceable: no caching
        return entries
    _cache[key] = (ref, entries)
    return entries


def scatter_blocks(client, data: np.ndarray, tchunks, schunks, token: str):
    """Scatter ``data`` (G, T, N) as blocks of the grid; returns ``(name, {key: future})``.

    Cached per (array, grid, client): a later ``compute`` over the same NumPy data reuses the
    blocks already on the workers while any result still holds them. Key names are unique per
    scatter, so a new scatter never collides with blocks the scheduler is still forgetting.
    """
    base = data.base if isinstance(data.base, np.ndarray) else data
    slot = (tuple(tchunks), tuple(schunks), client.id, data.__array_interface__["data"][0], data.shape)
    with _cache_lock:
        entries = _entries(base)
        hit = entries.get(slot)
        if hit is not None:
            futures = [f() for f in hit[1]]
            if all(f is not None and f.status == "finished" for f in futures):
                return hit[0], {f.key: f for f in futures}
    name = f"ff-input-{token}-{uuid.uuid4().hex[:12]}"
    toff, soff = _offsets(tchunks), _offsets(schunks)
    blocks = {}
    for i in range(len(tchunks)):
        for j in range(len(schunks)):
            blocks[(name, 0, i, j)] = data[:, toff[i]:toff[i + 1], soff[j]:soff[j + 1]]
    futures = client.scatter(blocks, hash=False)
    with _cache_lock:
        # weak references: the cache never keeps data on the workers by itself; results that
        # read the blocks hold the futures (Panel._keep)
        entries[slot] = (name, [weakref.ref(f) for f in futures.values()])
    return name, futures


def persist_groups(groups, shape):
    """Dask-backed, persisted copies of every group (see ``Panel.persist``).

    Blocks span every symbol and split time into a whole number of blocks per worker thread:
    the grid the planner picks for plans with cross-sectional stages, and one that plans without
    them read with no halo cost beyond a few rows (the planner adopts a stored grid that suits it).
    """
    import dask.array as da
    from dask.highlevelgraph import HighLevelGraph

    from .panel import _Group
    from .plan import choose_chunks, default_nthreads

    class _Rows:  # a stand-in stage that asks choose_chunks for whole rows
        kind, halo = "cross_section", 0

    T, N = shape
    tchunks, schunks = choose_chunks(shape, [_Rows()], [], nthreads=default_nthreads())
    client = None
    try:
        from distributed import default_client

        client = default_client()
    except Exception:
        pass
    out = []
    for g in groups:
        if g.is_dask and g._cache is None:
            out.append(_Group(g.names, g.data.rechunk((-1, tchunks, schunks)).persist()))
            continue
        data = g.materialize()
        if client is None:
            arr = da.from_array(data, chunks=(data.shape[0], tchunks, schunks))
            out.append(_Group(g.names, arr.persist()))
            continue
        name, futures = scatter_blocks(client, data, tchunks, schunks, token="persist")
        graph = HighLevelGraph.from_collections(name, dict(futures), dependencies=[])
        arr = da.Array(graph, name, chunks=((data.shape[0],), tchunks, schunks), dtype=data.dtype,
                       meta=np.empty((0, 0, 0), data.dtype))
        out.append(_Group(g.names, arr))
    return out


def pin_to_workers(dsk: dict, sinks: list, workers: dict, annotations: dict | None = None, free=()):
    """A HighLevelGraph of ``dsk`` whose tasks each prefer one worker (loose restrictions).

    ``sinks`` (output partitions in time order) are dealt to ``workers`` (``{address: nthreads}``)
    in contiguous runs, in proportion to their threads; every other task goes to the worker of the
    earliest sink that depends on it (a halo or a scan carry read by the next block belongs to
    the block it comes from). So each worker computes the bars, stage blocks and commits of its
    own date range, and only halos and scan carries cross between workers, forward in time; the
    tasks such a crossing waits for, and their ancestors on the same worker, get priority 1 (they
    run before the worker's other tasks, so the other worker does not idle), as do the ``free``
    keys.

    The restrictions are loose (``allow_other_workers``): a task whose worker died, or that work
    stealing moves to an idle worker, runs elsewhere. Tasks no sink depends on (the saved state)
    are not pinned, nor are the keys in ``free``: they run where the scheduler puts them, next to
    their inputs (e.g. the row slices a partition straddling two blocks reads). ``annotations``
    are added to every layer (e.g. GPU resources, which a flattened graph would lose). Returns
    None for fewer than two workers or sinks.

    Examples
    --------
    >>> from operator import add
    >>> dsk = {"a": 1, "b": 2, "x": (add, "a", 1), "y": (add, "b", 1)}
    >>> hlg = pin_to_workers(dsk, ["x", "y"], {"tcp://w1": 1, "tcp://w2": 1})
    >>> sorted((name, sorted(layer), (layer.annotations or {}).get("workers"))
    ...        for name, layer in hlg.layers.items())  # doctest: +NORMALIZE_WHITESPACE
    [('ff-pin-0', ['a', 'x'], ['tcp://w1']), ('ff-pin-1', ['b', 'y'], ['tcp://w2'])]
    """
    from dask.core import get_dependencies, reverse_dict, toposort
    from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

    addresses = sorted(workers)
    if len(addresses) < 2 or len(sinks) < 2:
        return None
    # contiguous runs of sinks, sized by thread share
    threads = np.array([max(int(workers[a]), 1) for a in addresses], dtype=float)
    bounds = np.cumsum(threads) / threads.sum() * len(sinks)
    owner: dict = {}
    for k, key in enumerate(sinks):
        owner[key] = int(np.searchsorted(bounds, k + 0.5))
    deps = {k: get_dependencies(dsk, k) for k in dsk}
    dependents = reverse_dict(deps)
    free = set(free)
    # every other task goes with the first partition that needs it: halos and scan carries are
    # read by later blocks, so they stay with the block they come from and only they travel
    # forward (a vote of dependents would move a scan block whose carry and halo the next
    # block reads to that block's worker, and with it every input of the scan)
    first = {key: k for k, key in enumerate(sinks)}
    for key in reversed(toposort(dsk, dependencies=deps)):
        if key in first:
            continue
        needs = [first[d] for d in dependents.get(key, ()) if d in first]
        if needs:
            first[key] = min(needs)
            if key not in free:
                owner[key] = owner[sinks[first[key]]]
    # what another worker waits for (scan carries, halos) runs first on its own worker, with all
    # its ancestors there: otherwise the other worker idles until this one gets round to it
    urgent: set = set()
    stack = [k for k, w in owner.items() if any(owner.get(d, w) != w for d in dependents.get(k, ()))]
    while stack:
        k = stack.pop()
        if k in urgent:
            continue
        urgent.add(k)
        stack.extend(d for d in deps[k] if owner.get(d) == owner[k])
    layers, extra = {}, dict(annotations or {})
    for w, address in enumerate(addresses):
        for flag in (True, False):
            tasks = {k: dsk[k] for k, o in owner.items() if o == w and (k in urgent) == flag}
            if tasks:
                ann = {**extra, "workers": [address], "allow_other_workers": True}
                if flag:
                    ann["priority"] = 1
                layers[f"ff-pin-{w}" + ("-first" if flag else "")] = MaterializedLayer(tasks, annotations=ann)
    # free keys (row slices of a block for a partition on another worker): as soon as the block
    # is there, before the commits of the block's own worker
    crossing = {k: dsk[k] for k in free if k in dsk}
    if crossing:
        layers["ff-pin-free-first"] = MaterializedLayer(crossing, annotations={**extra, "priority": 1})
    rest = {k: v for k, v in dsk.items() if k not in owner and k not in crossing}
    if rest:
        layers["ff-pin-free"] = MaterializedLayer(rest, annotations=extra or None)
    return HighLevelGraph(layers, {name: set() for name in layers})
