"""The planner: factor expressions -> a DAG of distinct nodes -> stages -> a chunk grid.

Steps (DESIGN.md "Compilation"):

1. **Validate** every factor against the panel (unknown fields raise with the formula, a caret and
   the available fields) before anything is computed.
2. **CSE**: nodes are interned by canonical key across *all* requested factors, so a
   subexpression shared by several factors is computed once.
3. **Levels**: fields are level 0; a local node (element-wise, window) takes the highest level
   of its inputs; a *barrier* (recursive scan, cross-sectional operator) is one level above its
   inputs. Barriers at one level run as one barrier stage per kind; local nodes run in *local
   stages*, each one task per chunk with a halo equal to the stage's longest lookback path.
4. **Placement of local nodes**: a local node runs in the earliest stage that needs it
   (a barrier at level L needs its input by local stage L-1; a root is needed by the final
   stage). It is *materialised* (written to the stage's output block) only if a barrier or a
   later stage reads it; otherwise it lives in scratch buffers of its task.
5. **Chunk grid** from the data size, the stage structure and the worker count (see
   :func:`choose_chunks`), unless the caller fixes it.
"""
from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from ..factors import Factor, FactorTypeError, factor as parse_factor
from ..factors.registry import get_operator

__all__ = ["Plan", "Node", "LocalStage", "BarrierStage", "make_plan", "choose_chunks"]

BARRIER_KINDS = ("recursive", "cross_section")

# Chunk sizing (see choose_chunks). Measured on the 2-core reference machine: a distributed task
# costs ~2 ms of scheduler time and fused kernels run at 200-800 Mcells/s, so a block of 1-4 M
# cells carries 10-100 ms per operator. Symbol blocks narrower than 64 lose SIMD width.
TARGET_BLOCK_CELLS = 4_000_000
MIN_BLOCK_CELLS = 250_000
MIN_SYMBOL_BLOCK = 64


@dataclass
class Node:
    id: int
    factor: Factor
    op: str
    kind: str  # field | const | elementwise | window | recursive | cross_section
    args: tuple[int, ...]
    params: tuple
    level: int = 0
    stage: int = -1  # local nodes: index of the local stage level they run in
    own_lookback: int = 0
    own_lookahead: int = 0
    consumers: list[int] = field(default_factory=list)
    materialized: bool = False

    @property
    def is_local(self) -> bool:
        return self.kind in ("elementwise", "window")

    @property
    def is_barrier(self) -> bool:
        return self.kind in BARRIER_KINDS

    @property
    def text(self) -> str:
        return self.factor.canonical


@dataclass
class LocalStage:
    level: int
    nodes: list[int]
    inputs: list[int]
    targets: list[int]  # materialised outputs, in output-block order
    halo: int
    final: bool = False
    kind: str = "local"
    ahead: int = 0  # rows after each block the stage reads (lead)

    @property
    def outputs(self) -> list[int]:
        return self.targets


@dataclass
class BarrierStage:
    level: int
    kind: str  # recursive | cross_section
    nodes: list[int]
    inputs: list[int]
    halo: int = 0

    @property
    def outputs(self) -> list[int]:
        return self.nodes


@dataclass
class Plan:
    """A compiled plan: distinct nodes, stages in execution order, chunk grid.

    ``str(plan)`` (what :func:`factorflow.explain` shows) lists the stages with their halo
    (lookback), chunking and task counts.
    """

    names: list[str]
    roots: list[int]
    nodes: list[Node]
    stages: list
    shape: tuple[int, int]
    dtype: np.dtype
    tchunks: tuple[int, ...]
    schunks: tuple[int, ...]
    n_factor_nodes: int = 0  # nodes before CSE (sum over factor trees)
    backend: str = "cpu"
    cs_tchunks: tuple[int, ...] = ()  # row blocks of cross-sectional stages (finer than tchunks)

    @property
    def grid(self) -> tuple[int, int]:
        return len(self.tchunks), len(self.schunks)

    @property
    def final_stage(self) -> LocalStage:
        return self.stages[-1]

    def stage_tasks(self, stage) -> int:
        nt, ns = self.grid
        if stage.kind == "cross_section":
            return len(self.cs_tchunks) or nt
        return nt * ns

    @property
    def n_tasks(self) -> int:
        """Tasks of the computation proper (input slicing, gathering and the tiny tasks passing a
        scan block's states to the next, ``engine/graph.py: _carry_key``, excluded)."""
        return sum(self.stage_tasks(s) for s in self.stages)

    @property
    def lookback(self) -> int:
        """Longest history any requested factor reads."""
        return max((self.nodes[r].factor.lookback for r in self.roots), default=0)

    @property
    def lookahead(self) -> int:
        """Longest look into later rows (``lead``) of any requested factor; usually 0."""
        return max((self.nodes[r].factor.lookahead for r in self.roots), default=0)

    def summary(self) -> dict:
        ops = [n for n in self.nodes if n.kind not in ("field", "const")]
        return {
            "factors": len(self.names),
            "nodes_before_cse": self.n_factor_nodes,
            "distinct_operator_nodes": len(ops),
            "stages": len(self.stages),
            "tasks": self.n_tasks,
            "chunks": {"time": self.tchunks[0] if self.tchunks else 0,
                       "symbol": self.schunks[0] if self.schunks else 0},
            "grid": self.grid,
            "lookback": self.lookback,
            "lookahead": self.lookahead,
        }

    def __str__(self) -> str:
        T, N = self.shape
        nt, ns = self.grid
        ops = [n for n in self.nodes if n.kind not in ("field", "const")]
        fields = sorted(n.params[0] for n in self.nodes if n.kind == "field")
        lines = [
            f"factorflow plan: {len(self.names)} factor{'s' if len(self.names) != 1 else ''} over "
            f"{T} times x {N} symbols ({self.dtype}), backend={self.backend}",
            f"  fields read: {', '.join(fields) if fields else '(none)'}",
            f"  operator nodes: {self.n_factor_nodes} in the formulas, {len(ops)} distinct after CSE",
            f"  chunks: time={_fmt_chunks(self.tchunks)} x symbol={_fmt_chunks(self.schunks)} "
            f"-> {nt} x {ns} = {nt * ns} blocks",
            f"  longest lookback: {self.lookback} rows" + (f", lookahead: {self.lookahead} rows" if self.lookahead else ""),
            f"  stages ({len(self.stages)}), {self.n_tasks} tasks:",
        ]
        for i, s in enumerate(self.stages):
            tasks = self.stage_tasks(s)
            if s.kind == "local":
                what = "final local" if s.final else "local"
                n_out = len(self.names) if s.final else len(s.targets)
                lines.append(f"    [{i}] {what:<13} level {s.level}: {len(s.nodes)} fused ops, "
                             f"halo {s.halo} rows{f' + {s.ahead} ahead' if s.ahead else ''}, {len(s.inputs)} inputs -> {n_out} outputs, {tasks} tasks")
                for nid in s.nodes[:12]:
                    lines.append(f"          {self.nodes[nid].text}")
                if len(s.nodes) > 12:
                    lines.append(f"          ... {len(s.nodes) - 12} more")
            else:
                how = ("scan, state carried across time chunks" if s.kind == "recursive"
                       else "all symbols per time chunk")
                lines.append(f"    [{i}] {s.kind:<13} level {s.level}: {len(s.nodes)} ops ({how}), {tasks} tasks")
                for nid in s.nodes[:12]:
                    lines.append(f"          {self.nodes[nid].text}")
        lines.append("  outputs: " + ", ".join(self.names))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self):  # Jupyter
        from .html import plan_html

        return plan_html(self)

    def _repr_pretty_(self, p, cycle):  # IPython
        p.text(str(self))


def _fmt_chunks(chunks: tuple[int, ...]) -> str:
    if not chunks:
        return "0"
    if len(set(chunks[:-1])) <= 1 and chunks[-1] <= chunks[0]:
        return f"{chunks[0]}" + (f" ({len(chunks)} chunks)" if len(chunks) > 1 else "")
    return str(chunks)


def _normalize_factors(factors) -> dict[str, Factor]:
    if isinstance(factors, (str, Factor)):
        factors = {"factor": factors}
    if not isinstance(factors, Mapping):
        raise TypeError("factors must be a mapping name -> formula string or Factor")
    if not factors:
        raise ValueError("no factors requested")
    out = {}
    for name, f in factors.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"factor names must be non-empty strings, got {name!r}")
        if name in ("time", "symbol"):
            raise ValueError(f"{name!r} is reserved for the output's axes; rename the factor")
        try:
            out[name] = parse_factor(f) if isinstance(f, str) else f
        except Exception as e:
            from ..factors import FactorError

            if isinstance(e, FactorError):
                raise e.with_name(name) from None
            raise
        if not isinstance(out[name], Factor):
            raise TypeError(f"factor {name!r} must be a formula string or a Factor, got {type(f).__name__}")
    return out


def check_fields(factors: dict[str, Factor], available) -> None:
    """Raise FactorTypeError for the first field not in ``available``, with a caret."""
    available = tuple(available)
    for name, f in factors.items():
        for node in f.walk():
            if node.op == "field" and node.params[0] not in available:
                fname = node.params[0]
                close = difflib.get_close_matches(fname, available, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                hint += f"the panel has: {', '.join(available)}"
                if node.source is not None:
                    raise FactorTypeError(f"unknown field {fname!r}", node.source.text, node.span, hint, name)
                raise FactorTypeError(f"unknown field {fname!r} in {f.canonical}", None, None, hint, name)


def make_plan(factors, shape: tuple[int, int], fields, dtype=np.float64, chunks=None,
              nthreads: int | None = None, backend: str = "cpu", prefer=None) -> Plan:
    """Plan ``factors`` (mapping name -> formula/Factor) over a panel of ``shape`` with ``fields``.

    ``prefer``: the ``(time, symbol)`` block sizes the input data already has (a persisted or
    Parquet-backed panel); used when it suits the plan, so tasks read whole stored blocks.
    """
    factors = _normalize_factors(factors)
    check_fields(factors, fields)
    T, N = shape

    # -- CSE: intern nodes by canonical key ---------------------------------------------------
    nodes: list[Node] = []
    by_key: dict[tuple, int] = {}
    n_factor_nodes = 0

    def intern(f: Factor) -> int:
        nid = by_key.get(f.key)
        if nid is not None:
            return nid
        args = tuple(intern(a) for a in f.args)
        if f.op == "field":
            kind, own = "field", 0
        elif f.op == "const":
            kind, own = "const", 0
        else:
            op = get_operator(f.op)
            kind, own = op.kind, op.lookback_of(f.params)
        ahead = get_operator(f.op).lookahead_of(f.params) if kind == "window" else 0
        nid = len(nodes)
        nodes.append(Node(nid, f, f.op, kind, args, f.params, own_lookback=own, own_lookahead=ahead))
        for a in args:
            nodes[a].consumers.append(nid)
        by_key[f.key] = nid
        return nid

    names = list(factors)
    roots = []
    for name in names:
        f = factors[name]
        n_factor_nodes += _tree_size(f)
        roots.append(intern(f))

    # -- levels -----------------------------------------------------------------------------------
    for n in nodes:  # nodes are in topological order (inputs interned first)
        lv = max((nodes[a].level for a in n.args), default=0)
        n.level = lv + 1 if n.is_barrier else lv
    final_level = max(nodes[r].level for r in roots)

    # -- place local nodes: earliest stage that needs them ------------------------------------
    root_set = set(roots)
    for n in reversed(nodes):
        if not n.is_local:
            continue
        need = []
        for c in n.consumers:
            cn = nodes[c]
            need.append(cn.level - 1 if cn.is_barrier else cn.stage)
        if n.id in root_set:
            need.append(final_level)
        n.stage = min(need)
        n.materialized = any(nodes[c].is_barrier for c in n.consumers) or any(s > n.stage for s in need)

    # -- stages in execution order ---------------------------------------------------------------
    stages: list = []
    for level in range(final_level + 1):
        if level > 0:
            for kind in BARRIER_KINDS:
                members = [n.id for n in nodes if n.is_barrier and n.level == level and n.kind == kind]
                if members:
                    inputs = _unique(a for m in members for a in nodes[m].args if nodes[a].kind != "const")
                    stages.append(BarrierStage(level, kind, members, inputs))
        members = [n.id for n in nodes if n.is_local and n.stage == level]
        final = level == final_level
        if not members and not final:
            continue
        member_set = set(members)
        inputs = []
        for m in members:
            for a in nodes[m].args:
                if a not in member_set and nodes[a].kind != "const":
                    inputs.append(a)
        if final:
            for r in roots:
                if r not in member_set and nodes[r].kind != "const":
                    inputs.append(r)
            targets = [m for m in members if nodes[m].materialized]
        else:
            targets = [m for m in members if nodes[m].materialized]
        halo = _stage_halo(nodes, members, member_set)
        ahead = _stage_halo(nodes, members, member_set, "own_lookahead")
        stages.append(LocalStage(level, members, _unique(inputs), targets, halo, final, ahead=ahead))

    if chunks is None and prefer is not None and _grid_fits(prefer, stages):
        tchunks, schunks = prefer
    elif chunks is None:
        tchunks, schunks = choose_chunks(shape, stages, nodes, nthreads=nthreads, itemsize=np.dtype(dtype).itemsize)
    else:
        tchunks, schunks = normalize_chunks(chunks, shape)
    cs_tchunks = ()
    if any(s.kind == "cross_section" for s in stages):
        cs_tchunks = split_rows(tchunks, N, nthreads or default_nthreads())
    return Plan(names, roots, nodes, stages, (T, N), np.dtype(dtype), tchunks, schunks, n_factor_nodes, backend,
                cs_tchunks)


def split_rows(tchunks, N: int, nthreads: int) -> tuple[int, ...]:
    """Row blocks for cross-sectional stages: each time block cut into pieces, so that there are
    at least two pieces per worker thread when the data allows it, each of at least
    ``MIN_BLOCK_CELLS`` cells. A cross-sectional operator works row by row and needs no halo,
    so it need not inherit the (halo-driven, often whole-axis) time blocks of the local stages:
    with one time block, every cross-section would otherwise be a single task on one core."""
    nt = len(tchunks)
    if nt == 0 or N == 0:
        return tuple(tchunks)
    want = max(1, math.ceil(2 * nthreads / nt))
    out = []
    for rows in tchunks:
        pieces = max(1, min(want, rows * N // MIN_BLOCK_CELLS, rows))
        base, extra = divmod(rows, pieces)
        out.extend([base + 1] * extra + [base] * (pieces - extra))
    return tuple(out)


def _tree_size(f: Factor) -> int:
    if f.op in ("field", "const"):
        return 0
    return 1 + sum(_tree_size(a) for a in f.args)


def _unique(seq) -> list:
    seen, out = set(), []
    for x in seq:
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out


def _stage_halo(nodes: list[Node], members: list[int], member_set: set[int], attr: str = "own_lookback") -> int:
    """Longest chain of rows read before (``own_lookback``) or after (``own_lookahead``) a block."""
    path: dict[int, int] = {}
    for m in members:  # topological order
        n = nodes[m]
        path[m] = getattr(n, attr) + max((path[a] for a in n.args if a in member_set), default=0)
    return max(path.values(), default=0)


def _grid_fits(grid, stages) -> bool:
    """A stored grid is adopted if its blocks are neither tiny, huge nor shorter than 4x any halo."""
    tchunks, schunks = grid
    halo = max((s.halo + getattr(s, "ahead", 0) for s in stages), default=0)
    if any(t < 4 * halo for t in tchunks[:-1]):
        return False
    if any(s.kind == "cross_section" for s in stages) and len(schunks) > 1:
        return False
    cells = max(tchunks) * max(schunks)
    if cells < MIN_BLOCK_CELLS and len(tchunks) * len(schunks) > 1:
        return False  # many small stored blocks: tasks reading several of them are cheaper
    return cells <= 2 * TARGET_BLOCK_CELLS


def normalize_chunks(chunks, shape) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``{"time": 250, "symbol": 500}`` (or ``(250, 500)``; -1/None = whole axis) -> block sizes."""
    T, N = shape
    if isinstance(chunks, Mapping):
        unknown = set(chunks) - {"time", "symbol"}
        if unknown:
            raise ValueError(f"chunks keys must be 'time' and/or 'symbol', got {sorted(unknown)}")
        tc, sc = chunks.get("time", -1), chunks.get("symbol", -1)
    elif isinstance(chunks, (tuple, list)) and len(chunks) == 2:
        tc, sc = chunks
    else:
        raise TypeError("chunks must be None, a dict {'time': rows, 'symbol': cols} or a (rows, cols) pair")

    def sizes(c, n, axis):
        if c is None or c == -1:
            return (n,) if n else ()
        if isinstance(c, (tuple, list)):
            c = tuple(int(v) for v in c)
            if sum(c) != n or any(v <= 0 for v in c):
                raise ValueError(f"{axis} chunks {c} must be positive and sum to {n}")
            return c
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 1:
            raise ValueError(f"{axis} chunk size must be a positive integer (or -1 for the whole axis), got {c!r}")
        c = int(c)
        return tuple([c] * (n // c) + ([n % c] if n % c else []))

    return sizes(tc, T, "time"), sizes(sc, N, "symbol")


def default_nthreads() -> int:
    """Threads of the active distributed client (``engine.graph._active_client``), else the cores."""
    from .graph import _active_client

    client = _active_client()
    n = sum(client.nthreads().values()) if client is not None else 0
    return max(1, n) if n else (os.cpu_count() or 1)


def choose_chunks(shape, stages, nodes, nthreads: int | None = None, itemsize: int = 8, split_time: bool = False):
    """Pick the chunk grid.

    Rules, in order: (1) a block carries 0.25-4 M cells, so each task does tens of milliseconds
    of work per operator and the per-task scheduler cost (~2 ms) stays small; (2) at least two
    blocks per worker thread when the data allows it, and a whole number of blocks per thread,
    so both cores stay busy to the end; (3) split
    symbols before time when no stage is cross-sectional -- symbol blocks need no halo and no
    state chain -- but keep symbol blocks >= 64 wide for SIMD; (4) with cross-sectional stages,
    split time (those stages need whole rows); then, with a halo, into one block per thread
    rather than two (unless (1) needs more), each block after the first shorter by the halo rows
    it recomputes, so all are of equal work (:func:`halo_balanced`; bench_cluster's job, 7800 x
    500 rows with a 239-row halo: 2 workers get 4020 + 3780 rows instead of 4 x 1950, 1 worker
    one block instead of 2); (5) a time block is at least 4x the largest stage halo, so halo rows
    cost at most ~25% extra.

    ``split_time=True`` applies (4) to every plan (symbols are split only where time cannot be
    cut finer): a batch job (``engine/job.py: _job_plan``) commits one partition per date, which
    from a time block is one view of its rows. With symbol blocks every partition gathers and
    copies a piece of every block, from every worker holding one (Alpha158, 500 symbols x 20
    days on 2 workers: 1 x 4 symbol blocks moved ~2.5 GB between the workers per run).
    """
    T, N = shape
    if T == 0 or N == 0:
        return ((T,) if T else (), (N,) if N else ())
    nthreads = nthreads or default_nthreads()
    cells = T * N
    halo = max((s.halo + getattr(s, "ahead", 0) for s in stages), default=0)
    has_cs = any(s.kind == "cross_section" for s in stages)
    n_blocks = max(math.ceil(cells / TARGET_BLOCK_CELLS), min(2 * nthreads, cells // MIN_BLOCK_CELLS), 1)
    if n_blocks > nthreads:  # whole rounds: 5 blocks on 2 threads would leave one idle a third of the time
        n_blocks = math.ceil(n_blocks / nthreads) * nthreads
    min_rows = max(4 * halo, 32)

    def even(n, parts):
        parts = max(1, min(parts, n))
        base, extra = divmod(n, parts)
        size = base + (1 if extra else 0)
        return tuple([size] * (n // size) + ([n % size] if n % size else []))

    if has_cs or split_time:
        nt = min(n_blocks, max(1, T // min_rows))
        ns = 1
        if nt < n_blocks:  # time can't be cut finer: split symbols for the local stages
            ns = min(math.ceil(n_blocks / nt), max(1, N // MIN_SYMBOL_BLOCK))
        elif halo and nt > nthreads:
            # every time block after the first recomputes the halo rows: one block per thread
            # (or as many as the block size needs) keeps the cores busy when the blocks are of
            # equal work (halo_balanced); a second round would only add halos
            nt = max(nthreads, math.ceil(math.ceil(cells / TARGET_BLOCK_CELLS) / nthreads) * nthreads)
        return (halo_balanced(T, nt, halo) if halo else even(T, nt)), even(N, ns)
    ns = min(n_blocks, max(1, N // MIN_SYMBOL_BLOCK))
    nt = min(math.ceil(n_blocks / ns), max(1, T // min_rows))
    return even(T, nt), even(N, ns)


def halo_balanced(T: int, nt: int, halo: int) -> tuple[int, ...]:
    """``nt`` time blocks of equal work: every block after the first also computes the ``halo``
    rows before it, so the first block is longer by about the halo.

    Examples
    --------
    >>> halo_balanced(7800, 2, 239)  # 4020 rows, and 3780 + 239 halo rows
    (4020, 3780)
    >>> halo_balanced(100, 3, 10)  # 40, 30 + 10, 30 + 10
    (40, 30, 30)
    """
    nt = min(nt, T)
    if nt <= 1:
        return (T,) if T else ()
    rest, extra = divmod(T - halo, nt)  # blocks after the first: `rest` rows, some one more
    if rest < 1:  # a halo as long as the axis: plain even blocks
        base, extra = divmod(T, nt)
        return tuple([base + 1] * extra + [base] * (nt - extra))
    longer = max(0, extra - 1)  # the first takes one of the `extra` rows, as many others one each
    first = T - (nt - 1) * rest - longer  # = rest + halo (+1)
    return (first,) + (rest + 1,) * longer + (rest,) * (nt - 1 - longer)
