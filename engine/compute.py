"""``ff.compute`` and ``ff.explain``: the public entry points of the engine."""
from __future__ import annotations

import numpy as np

from .graph import build_graph
from .panel import Panel, _Group
from .plan import Plan, make_plan

__all__ = ["compute", "explain", "plan"]

BACKENDS = ("cpu", "gpu")


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "gpu":
        from .device import check_environment
        from .graph import _active_client

        # names the missing piece: numba-cuda, CUDA driver / GPU here, or GPU workers
        check_environment(_active_client())


def plan(factors, panel: Panel, *, chunks=None, backend: str = "cpu") -> Plan:
    """The :class:`~factorflow.engine.plan.Plan` for ``factors`` over ``panel`` (nothing computed)."""
    if not isinstance(panel, Panel):
        raise TypeError(f"panel must be a factorflow Panel, got {type(panel).__name__}")
    _check_backend(backend)
    p = make_plan(factors, panel.shape, panel.fields, dtype=panel.dtype, chunks=chunks, backend=backend,
                  prefer=_stored_grid(panel))
    if backend == "gpu":
        from .device import check_plan

        check_plan(p)  # every operator has a CUDA kernel
    return p


def _stored_grid(panel: Panel):
    """The common (time, symbol) block sizes of the panel's dask-backed groups, if they agree."""
    grids = {(g.data.chunks[1], g.data.chunks[2]) for g in panel._groups if g.is_dask and g._cache is None}
    if len(grids) == 1 and all(g.is_dask and g._cache is None for g in panel._groups):
        return grids.pop()
    return None


def explain(factors, panel: Panel, *, chunks=None, backend: str = "cpu") -> Plan:
    """Show how ``factors`` would be computed over ``panel``: stages, lookback, chunks, tasks.

    Returns the plan, whose text form is the explanation (also for Jupyter display).

    Examples
    --------
    >>> import numpy as np, factorflow as ff
    >>> p = ff.Panel.from_numpy({"close": np.ones((1000, 50))})
    >>> plan = ff.explain({"macd": "ema(close, 12) - ema(close, 26)",
    ...                    "mom": "close / delay(close, 5) - 1"}, p)
    >>> print(plan)  # doctest: +ELLIPSIS
    factorflow plan: 2 factors over 1000 times x 50 symbols (float64), backend=cpu
    ...
    >>> plan.n_tasks
    2
    """
    return plan(factors, panel, chunks=chunks, backend=backend)


def compute(factors, panel: Panel, *, chunks=None, backend: str = "cpu", progress: bool = False) -> Panel:
    """Compute factors over a panel; returns a dask-backed :class:`Panel` of the results.

    Parameters
    ----------
    factors : mapping of str to (str or Factor)
        Output name -> formula (native dialect) or :class:`~factorflow.Factor`. All factors are
        planned together: a subexpression shared by several is computed once.
    panel : Panel
        Input fields.
    chunks : dict, optional
        ``{"time": rows, "symbol": cols}`` (-1 for a whole axis); planned from the data size,
        the stages and the worker count when omitted.
    backend : {"cpu", "gpu"}
    progress : bool
        Compute now and show progress: Dask's progress widget in a notebook with a distributed
        client (``ff.cluster.local()``), a text bar in a terminal (see ``engine/progress.py``).

    Returns
    -------
    Panel
        One field per factor; computed on first access (``to_numpy``, ``to_polars``) or written
        by ``to_parquet``. Runs on the active Dask client (``ff.cluster.local()`` /
        ``ff.cluster.connect()``), else on Dask's local threaded scheduler.

    Raises
    ------
    FactorSyntaxError, FactorTypeError
        Before anything runs, naming the factor, line, column, with a caret.

    Examples
    --------
    >>> import numpy as np, factorflow as ff
    >>> close = 100 + np.cumsum(np.random.default_rng(1).standard_normal((500, 3)), axis=0)
    >>> out = ff.compute({"macd": "ema(close, 12) - ema(close, 26)",
    ...                   "z": "(close - ts_mean(close, 20)) / ts_std(close, 20)"},
    ...                  ff.Panel.from_numpy({"close": close}), chunks={"time": 100})
    >>> out.fields
    ('macd', 'z')
    >>> bool(np.isnan(out.to_numpy("z")[:19]).all() and np.isfinite(out.to_numpy("z")[19:]).all())
    True
    """
    import dask.array as da

    p = plan(factors, panel, chunks=chunks, backend=backend)
    graph, name, chunks3, keep, origins = build_graph(p, panel)
    arr = da.Array(graph, name, chunks=chunks3, dtype=p.dtype, meta=np.empty((0, 0, 0), p.dtype))
    out = Panel([_Group(tuple(p.names), arr, origins)], panel.times, panel.symbols)
    out.plan = p
    out._keep = keep  # scattered inputs stay alive as long as the result
    if progress:
        from .progress import compute_with_progress

        compute_with_progress(out)
    return out
