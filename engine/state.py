"""Carried state of recursive operators, for incremental runs.

A nightly job computes only the new dates. Window operators then need ``lookback`` rows of
history before the first new row, and recursive operators (``ema``, ``ewma``, ``cumsum``) need the
state they had at some row of the previous run. Both are exact: the recursive kernels are
bit-for-bit chunk invariant (``kernels/cpu/recursive.py``), so a scan resumed from a saved state
gives the same numbers as one uninterrupted scan.

How far back (per plan, from the registry's lookbacks):

* ``e(n)``, the rows at the top of a panel where node ``n`` is not yet exact, is 0 for fields and
  constants and ``max(e(args)) + own_lookback`` for local and cross-sectional nodes. The scans of
  a recursive stage start at row ``K = max e(arg)`` over the stage's nodes, from the state saved
  at that row, and ``e = K`` for its nodes (:func:`scan_offsets`).
* ``H = max e(root)`` (:func:`history_rows`): every output row at or after ``H`` is exact.

So a run that should let the next one resume saves, for every recursive node, its state after
the rows before ``first_row(d*) + K``, where ``d*`` is the latest date such that the rows from
``d*`` to the end are at least ``H``; the next run reads bars from ``d*`` on (history) plus its
new dates, starts the scans at rows ``K`` from the saved states, and writes only the new dates. The saved state is keyed by the formulas (:func:`plan_fingerprint`): any change of a
formula, a factor name or the bar frequency invalidates it.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid

import numpy as np

from .manifest import _sha256

__all__ = ["compute_stateful", "history_rows", "scan_offsets", "plan_fingerprint", "save_state", "load_state",
           "StateError"]

STATE_FORMAT = 1


class StateError(ValueError):
    """A saved state that cannot be used for this run (missing, other formulas, corrupt)."""


def scan_offsets(plan) -> tuple[dict[str, int], int]:
    """``({recursive node text: K}, H)`` of a plan (see the module docstring).

    Examples
    --------
    >>> import numpy as np, factorflow as ff
    >>> p = ff.explain({"a": "ema(ts_mean(close, 5), 3)", "b": "ts_sum(cumsum(close), 4)"},
    ...                ff.Panel.from_numpy({"close": np.ones((50, 2))}))
    >>> scan_offsets(p)
    ({'cumsum(close)': 4, 'ema(ts_mean(close, 5), 3)': 4}, 7)
    """
    nodes = plan.nodes
    stage_of = {m: si for si, st in enumerate(plan.stages) if st.kind == "recursive" for m in st.nodes}
    # levels ascending; in a level, barriers (inputs on lower levels) before local nodes
    order = sorted(range(len(nodes)), key=lambda i: (nodes[i].level, 0 if nodes[i].is_barrier else 1, i))
    e: dict[int, int] = {}
    k_stage: dict[int, int] = {}
    for i in order:
        n = nodes[i]
        if n.kind == "recursive":
            si = stage_of[i]
            if si not in k_stage:
                k_stage[si] = max(max((e[a] for a in nodes[m].args), default=0) for m in plan.stages[si].nodes)
            e[i] = k_stage[si]
        else:
            e[i] = max((e[a] for a in n.args), default=0) + n.own_lookback
    starts = {nodes[m].text: k for si, k in k_stage.items() for m in plan.stages[si].nodes}
    return dict(sorted(starts.items())), max((e[r] for r in plan.roots), default=0)


def history_rows(plan) -> int:
    """Rows ``H`` of history before the first new row that make every output exact."""
    return scan_offsets(plan)[1]


def plan_fingerprint(formulas: dict[str, str], extra: dict | None = None) -> str:
    """A hash of the factor names, their canonical formulas and ``extra`` (frequency, session...)."""
    text = json.dumps({"factors": formulas, "extra": extra or {}}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def compute_stateful(factors, panel, *, chunks=None, backend: str = "cpu", initial_state: dict | None = None,
                     scan_start: dict | None = None, state_rows: dict | None = None):
    """:func:`factorflow.compute` that can resume scans from ``initial_state`` and save their state.

    ``scan_start``/``state_rows``: recursive node text -> row (see ``graph.build_graph``); an
    int means that row for every recursive node. Returns ``(result Panel, state)``: ``state`` is a
    ``Delayed`` in the result's graph (``None`` without ``state_rows``) whose value is
    ``{node text: state array}``; compute it together with the result (``dask.compute`` /
    ``client.compute``) so nothing runs twice.

    Examples
    --------
    >>> import numpy as np, dask, factorflow as ff
    >>> x = np.random.default_rng(0).standard_normal((40, 3)).cumsum(0)
    >>> f = {"m": "ema(close, 5)"}
    >>> full = ff.compute(f, ff.Panel.from_numpy({"close": x})).to_numpy("m")
    >>> out, state = compute_stateful(f, ff.Panel.from_numpy({"close": x[:30]}), state_rows=30)
    >>> (saved,) = dask.compute(state)
    >>> tail, _ = compute_stateful(f, ff.Panel.from_numpy({"close": x[30:]}), initial_state=saved)
    >>> bool(np.array_equal(tail.to_numpy("m"), full[30:]))
    True
    """
    import dask.array as da
    from dask.delayed import Delayed

    from .compute import plan as make_plan
    from .graph import build_graph
    from .panel import Panel, _Group

    p = make_plan(factors, panel, chunks=chunks, backend=backend)
    texts = [n.text for n in p.nodes if n.kind == "recursive"]
    if isinstance(scan_start, int):
        scan_start = dict.fromkeys(texts, scan_start)
    if isinstance(state_rows, int):
        state_rows = dict.fromkeys(texts, state_rows)
    if initial_state is not None:
        want = [n.text for n in p.nodes if n.kind == "recursive"]
        missing = [t for t in want if t not in initial_state]
        if missing:
            raise StateError(f"the saved state has no entry for {', '.join(missing)}")
        for t in want:
            if initial_state[t].shape[1] != p.shape[1]:
                raise StateError(f"saved state of {t} has {initial_state[t].shape[1]} symbols, the panel "
                                 f"{p.shape[1]}")
    state_out: dict = {}
    graph, name, chunks3, keep, origins = build_graph(p, panel, initial_state=initial_state, scan_start=scan_start,
                                                      state_rows=state_rows, state_out=state_out)
    arr = da.Array(graph, name, chunks=chunks3, dtype=p.dtype, meta=np.empty((0, 0, 0), p.dtype))
    out = Panel([_Group(tuple(p.names), arr, origins)], panel.times, panel.symbols)
    out.plan = p
    out._keep = keep
    state = Delayed(state_out["key"], dict(graph)) if state_rows is not None else None
    return out, state


def fresh_state(plan, text: str, n: int) -> np.ndarray:
    """The initial state of recursive node ``text`` for ``n`` symbols (a symbol never seen)."""
    from ..kernels import resolve

    node = next(m for m in plan.nodes if m.text == text)
    return resolve(node.factor.operator.state, plan.backend)(n)


def remap_state(plan, state: dict, old_symbols, new_symbols) -> dict:
    """States over ``old_symbols`` re-laid out over ``new_symbols`` (new ones start fresh)."""
    old = {s: k for k, s in enumerate(old_symbols)}
    idx = np.array([old.get(s, -1) for s in new_symbols], dtype=np.int64)
    out = {}
    for text, arr in state.items():
        fresh = fresh_state(plan, text, len(new_symbols))
        hit = idx >= 0
        fresh[:, hit] = arr[:, idx[hit]]
        out[text] = fresh
    return out


def save_state(directory: str, meta: dict, state: dict) -> str:
    """Write ``meta`` (JSON) and ``state`` (NPZ) atomically under ``directory``; returns the path.

    The arrays go to ``state-<id>.npz`` first; ``state.json`` naming that file is renamed into
    place last, so a crash leaves the previous state in force.
    """
    os.makedirs(directory, exist_ok=True)
    npz = f"state-{uuid.uuid4().hex[:12]}.npz"
    names = sorted(state)
    tmp_npz = os.path.join(directory, f".{npz}.tmp")
    with open(tmp_npz, "wb") as fh:
        np.savez(fh, **{f"s{k}": state[t] for k, t in enumerate(names)})
    os.replace(tmp_npz, os.path.join(directory, npz))
    doc = dict(meta, format=STATE_FORMAT, arrays=npz, nodes=names,
               sha256=_sha256(os.path.join(directory, npz)))
    final = os.path.join(directory, "state.json")
    old = _read_json(final)
    tmp = os.path.join(directory, f".state.json.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w") as fh:
        json.dump(doc, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    if old and old.get("arrays") and old["arrays"] != npz:
        try:
            os.remove(os.path.join(directory, old["arrays"]))
        except OSError:
            pass
    return final


def load_state(directory: str) -> tuple[dict, dict]:
    """``(meta, {node text: array})`` saved by :func:`save_state`; :class:`StateError` if absent
    or damaged."""
    path = os.path.join(directory, "state.json")
    if not os.path.exists(path):
        raise StateError(f"no saved state at {path}: run once without --incremental to create it")
    meta = _read_json(path)
    if not meta or meta.get("format") != STATE_FORMAT:
        raise StateError(f"{path} is not a factorflow state file (format {STATE_FORMAT})")
    npz = os.path.join(directory, meta["arrays"])
    if not os.path.exists(npz) or _sha256(npz) != meta.get("sha256"):
        raise StateError(f"state arrays {npz} are missing or do not match {path} (checksum)")
    with np.load(npz) as z:
        state = {t: z[f"s{k}"] for k, t in enumerate(meta["nodes"])}
    return meta, state


def _read_json(path: str):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


