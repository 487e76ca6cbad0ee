"""Plan -> Dask graph.

One task per block per stage (one per time block for cross-sectional stages), keys
``(stage_name, 0, i, j)``; the final stage's blocks form the 3-D result array
``(n_factors, T, N)``. Tasks take the blocks they read as arguments (neighbouring time blocks for
the halo, the previous block's state for scans, every symbol block of a time block for
cross-sections) and assemble them themselves, so there are no separate overlap or rechunk tasks.
A scan reads the previous block's states through a tiny ``(name-carry, i, j)`` key, and each input
of a local stage only the halo rows its outputs need (``_input_needs``), so on a cluster a block
travels to the next worker only for rows that are read.

Input data: a NumPy-backed field is handed to tasks directly when the graph runs in this
process (threads: zero-copy), and scattered once to the workers, block by block, when a
distributed client is active (so it is neither pickled into the graph nor shipped twice).
Dask-backed fields (Parquet sources, persisted panels) are read from their own blocks, whatever
their chunking.
"""
from __future__ import annotations

import bisect
import itertools

import numpy as np

from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from .execute import (
    BarrierProgram,
    kernel,
    InputLayout,
    Instruction,
    LocalProgram,
    run_cross_section,
    run_local,
    run_recursive,
)
from .plan import LocalStage, Plan

__all__ = ["build_graph", "Source"]

_counter = itertools.count()


def _offsets(chunks) -> list[int]:
    out = [0]
    for c in chunks:
        out.append(out[-1] + c)
    return out


class Source:
    """Where a materialised node's blocks are: a key name with a block grid, or a NumPy array."""

    def __init__(self, name, index: int, tchunks, schunks, array=None, tuple_output=False, three_d=True):
        self.name = name
        self.index = index
        self.toff = _offsets(tchunks)
        self.soff = _offsets(schunks)
        self.array = array  # NumPy-backed: tasks slice it themselves
        self.tuple_output = tuple_output
        self.three_d = three_d

    def reach(self, top: int, row: int) -> int:
        """The first row a task reads for the rows from ``row`` on, its halo starting at ``top``:
        rows above ``row`` come along as long as they lie in the block ``row`` is in (or in a NumPy
        array this process holds: a view either way); above that block, NaN padding stands in."""
        if self.array is not None:
            return top
        return max(top, self.toff[bisect.bisect_right(self.toff, row) - 1])

    def layout(self, r0: int, r1: int, c0: int, c1: int, args: list, arg_index: dict, pad: int = 0) -> InputLayout:
        """Layout of rows [r0, r1) x cols [c0, c1), below ``pad`` NaN rows; appends the needed
        block refs to ``args``."""
        if self.array is not None:
            key = ("array", id(self.array))
            if key not in arg_index:
                arg_index[key] = len(args)
                args.append(self.array)
            return InputLayout(self.index, (((arg_index[key], slice(r0, r1), slice(c0, c1)),),),
                               r1 - r0 + pad, c1 - c0, pad=pad)
        bands = []
        bi = bisect.bisect_right(self.toff, r0) - 1
        while bi < len(self.toff) - 1 and self.toff[bi] < r1:
            br0, br1 = self.toff[bi], self.toff[bi + 1]
            rs = slice(max(r0, br0) - br0, min(r1, br1) - br0)
            band = []
            bj = bisect.bisect_right(self.soff, c0) - 1
            while bj < len(self.soff) - 1 and self.soff[bj] < c1:
                bc0, bc1 = self.soff[bj], self.soff[bj + 1]
                cs = slice(max(c0, bc0) - bc0, min(c1, bc1) - bc0)
                key = (self.name, 0, bi, bj) if self.three_d else (self.name, bi, bj)
                if key not in arg_index:
                    arg_index[key] = len(args)
                    args.append(key)
                band.append((arg_index[key], rs, cs))
                bj += 1
            bands.append(tuple(band))
            bi += 1
        return InputLayout(self.index, tuple(bands), r1 - r0 + pad, c1 - c0, self.tuple_output, pad)


def _active_client():
    """The distributed ``Client`` Dask would run a graph on now, else None.

    Dask decides (``dask.base.get_scheduler``): the default client, unless
    ``dask.config.set(scheduler="sync" | "threads" | ...)`` names another scheduler -- then
    fields are not scattered to a cluster that will not run the graph (the kernel warm-up runs
    synchronously inside a worker of an in-process cluster whose client is the default).
    """
    try:
        from dask.base import get_scheduler
        from distributed import Client
    except ImportError:
        return None
    client = getattr(get_scheduler(), "__self__", None)
    return client if isinstance(client, Client) else None


def field_sources(panel, plan: Plan, layers: dict, deps: list, keep: list) -> dict[str, Source]:
    """A Source for every field the plan reads."""
    wanted = sorted({n.params[0] for n in plan.nodes if n.kind == "field"})
    client = _active_client()
    sources = {}
    for name in wanted:
        g, k = panel._locate(name)
        if g.is_dask and g._cache is None:
            arr = g.data
            deps.append(arr)
            sources[name] = Source(arr.name, k, arr.chunks[1], arr.chunks[2])
            continue
        data = g.materialize()
        if client is None:
            sources[name] = Source(None, k, plan.tchunks, plan.schunks, array=data)
            continue
        # distributed: scatter the plan's blocks once (hash=False: no 100 ms token of the data)
        from .placement import scatter_blocks

        key_name, futures = scatter_blocks(client, data, plan.tchunks, plan.schunks, token=f"{name}-{id(g)}")
        layers[key_name] = futures
        keep.append(futures)
        sources[name] = Source(key_name, k, plan.tchunks, plan.schunks)
    return sources


def build_graph(plan: Plan, panel, *, initial_state: dict | None = None, scan_start: dict | None = None,
                state_rows: dict | None = None, state_out: dict | None = None):
    """The plan's result as a 3-D array (factors, T, N): ``(graph, name, chunks, keep, origins)``.

    ``keep`` holds scattered input futures (alive as long as the result); ``origins`` maps each
    final-stage key to the (row, col) where its block starts, for writing blocks in place.

    Carried state of recursive operators (incremental runs, ``engine/state.py``); the dicts are
    keyed by the canonical text of recursive nodes, and a recursive stage uses the largest row of
    its nodes. With ``initial_state`` (node -> full-width state array), a stage's scans start at
    row ``scan_start[node]`` (default 0) from that state; rows above it are NaN. With
    ``state_rows``, the graph also holds one key, stored as ``state_out["key"]``, whose value is
    ``{node: state after the rows before state_rows[node]}``.
    """
    layers: dict[str, dict] = {}
    deps: list = []
    keep: list = []
    fsrc = field_sources(panel, plan, layers, deps, keep)
    nodes = plan.nodes
    T, N = plan.shape
    toff, soff = _offsets(plan.tchunks), _offsets(plan.schunks)
    nt, ns = plan.grid
    dtype_str = plan.dtype.str
    token = tokenize(plan.names, [n.text for n in nodes], plan.tchunks, plan.schunks, plan.dtype.str,
                     sorted((k, s.name or id(s.array)) for k, s in fsrc.items()), next(_counter))

    where: dict[int, Source] = {}
    for n in nodes:
        if n.kind == "field":
            where[n.id] = fsrc[n.params[0]]

    final_name = None
    state_parts: list = []  # (node texts, symbol offsets, per symbol block: key or (None, states))
    origins: dict = {}  # final key -> (first row, first col) of its block
    for si, stage in enumerate(plan.stages):
        name = f"ff-{stage.kind.replace('_', '-')}{si}-{token}"
        dsk: dict = {}
        if stage.kind == "local":
            program = _local_program(plan, stage)
            needs = _input_needs(nodes, stage)
            for i in range(nt):
                r0, r1 = toff[i], toff[i + 1]
                skip = min(stage.halo, r0)
                tail = min(stage.ahead, T - r1)
                for j in range(ns):
                    c0, c1 = soff[j], soff[j + 1]
                    args: list = []
                    index: dict = {}
                    # every input spans the stage's halo; rows of it that no output needs and that
                    # lie in a block the task does not otherwise read are NaN padding (so that block
                    # need not travel here)
                    top = r0 - skip
                    layouts = []
                    for m in stage.inputs:
                        a = where[m].reach(top, r0 - min(skip, needs[m]))
                        layouts.append(where[m].layout(a, r1 + tail, c0, c1, args, index, pad=a - top))
                    layouts = tuple(layouts)
                    dsk[(name, 0, i, j)] = (run_local, program, layouts, (skip, tail), r1 - r0, c1 - c0, dtype_str,
                                            *args)
                    if stage.final:
                        origins[(name, 0, i, j)] = (r0, c0)
            if stage.final:
                final_name = name
            else:
                for pos, m in enumerate(stage.targets):
                    where[m] = Source(name, pos, plan.tchunks, plan.schunks)
        elif stage.kind == "recursive":
            program = _barrier_program(plan, stage)
            texts = tuple(nodes[m].text for m in stage.nodes)
            stage_start = max((scan_start or {}).get(t, 0) for t in texts) if initial_state is not None else 0
            state_row = None if state_rows is None else max(state_rows[t] for t in texts)
            if state_row is not None and not stage_start <= state_row <= T:
                raise ValueError(f"state row {state_row} of {', '.join(texts)} outside [{stage_start}, {T}]")
            snaps = []
            for j in range(ns):
                c0, c1 = soff[j], soff[j + 1]
                start = None if initial_state is None else (None, tuple(initial_state[t][:, c0:c1] for t in texts))
                for i in range(nt):
                    r0, r1 = toff[i], toff[i + 1]
                    if r1 <= stage_start:  # before the carried state applies: NaN, no state
                        dsk[(name, 0, i, j)] = (_nan_scan_block, len(texts), r1 - r0, c1 - c0, dtype_str)
                        continue
                    a = max(r0, stage_start)
                    first = start if r0 <= stage_start else _carry_key(dsk, name, i - 1, j)
                    args, index = [], {}
                    layouts = tuple(where[m].layout(a, r1, c0, c1, args, index) for m in stage.inputs)
                    if a > r0:
                        dsk[(name, 0, i, j)] = (_padded_scan, a - r0, program, layouts, r1 - a, c1 - c0, dtype_str,
                                                first, *args)
                    else:
                        dsk[(name, 0, i, j)] = (run_recursive, program, layouts, r1 - r0, c1 - c0, dtype_str,
                                                first, *args)
                if state_row is not None:
                    snaps.append(_snapshot(name, j, program, stage, where, toff, c0, c1, dtype_str, stage_start,
                                           state_row, start, dsk))
            if state_rows is not None:
                state_parts.append([texts, tuple(soff), snaps])  # lists: dask resolves keys inside
            for pos, m in enumerate(stage.nodes):
                where[m] = Source(name, pos, plan.tchunks, plan.schunks, tuple_output=True)
        else:  # cross_section: whole rows, in the plan's (finer) cross-sectional row blocks
            program = _barrier_program(plan, stage)
            cs_chunks = plan.cs_tchunks or plan.tchunks
            coff = _offsets(cs_chunks)
            for i in range(len(cs_chunks)):
                r0, r1 = coff[i], coff[i + 1]
                args, index = [], {}
                layouts = tuple(where[m].layout(r0, r1, 0, N, args, index) for m in stage.inputs)
                dsk[(name, 0, i, 0)] = (run_cross_section, program, layouts, r1 - r0, N, dtype_str, *args)
            for pos, m in enumerate(stage.nodes):
                where[m] = Source(name, pos, cs_chunks, (N,))
        layers[name] = dsk

    if state_rows is not None:
        state_key = f"ff-state-{token}"
        layers[state_key] = {state_key: (_collect_states, plan.dtype.str, N, state_parts)}
        state_out["key"] = state_key
    dsk_all: dict = {}
    for dsk in layers.values():
        dsk_all.update(dsk)
    graph = HighLevelGraph.from_collections(final_name, dsk_all, dependencies=deps)
    if plan.backend == "gpu":  # GPU tasks run only on workers offering the GPU resource
        from .device import GPU_RESOURCES

        graph.layers[final_name].annotations = {"resources": dict(GPU_RESOURCES)}
    chunks = ((len(plan.names),), plan.tchunks, plan.schunks)
    return graph, final_name, chunks, keep, origins


CARRY = "-carry"  # suffix of the keys holding a scan block's states alone (carry_keys)


def _carry_key(dsk: dict, name: str, i: int, j: int):
    """The key of block ``(i, j)``'s ``(None, states)``, added to ``dsk``: the next block's scan
    reads only the states, so only they travel when the two blocks run on different workers
    (the block itself is rows x symbols per operator)."""
    key = (name + CARRY, i, j)
    dsk[key] = (_carry, (name, 0, i, j))
    return key


def _carry(pair):
    return None, pair[1]


def carry_keys(dsk) -> list:
    """The state-only carry keys of a graph: tiny tasks best run beside the block they read
    (``engine/job.py`` leaves them unpinned)."""
    return [k for k in dsk if isinstance(k, tuple) and isinstance(k[0], str) and k[0].endswith(CARRY)]


def _input_needs(nodes, stage) -> dict[int, int]:
    """Rows above a block each input of a local stage must hold real values for: the longest
    chain of lookbacks from the input to what the stage outputs (the largest is the stage's
    halo). An input only element-wise operators read needs none.

    A node's rows above that are computed from NaN padding and are wrong, but nothing the stage
    outputs reads them: a window operator's value at a row depends only on its window.
    """
    need: dict[int, int] = {}
    for m in reversed(stage.nodes):  # topological order: every consumer before its inputs
        n = nodes[m]
        own = need.get(m, 0) + n.own_lookback
        for a in n.args:
            if need.get(a, -1) < own:
                need[a] = own
    return {m: need.get(m, 0) for m in stage.inputs}


def _nan_scan_block(n_ops: int, rows: int, cols: int, dtype_str: str):
    """A recursive stage's block before its scan starts (``stage_start``): NaN, no state."""
    return np.full((n_ops, rows, cols), np.nan, np.dtype(dtype_str)), None


def _padded_scan(pad: int, program, layouts, rows: int, cols: int, dtype_str: str, prev, *blocks):
    """Scan the last ``rows`` rows of a block from ``prev``; the ``pad`` rows above are NaN."""
    out, states = run_recursive(program, layouts, rows, cols, dtype_str, prev, *blocks)
    full = np.full((out.shape[0], pad + rows, cols), np.nan, out.dtype)
    full[:, pad:] = out
    return full, states


def _fresh_states(program, cols: int) -> tuple:
    return tuple(kernel(state_init, program.backend)(cols) for _, _, state_init, _ in program.ops)


def _snapshot(name, j, program, stage, where, toff, c0, c1, dtype_str, stage_start, row, start, dsk):
    """What holds symbol block ``j``'s states after the rows before ``row``: a key of ``dsk`` (a
    ``(block, states)`` task) or a literal ``(None, states)`` pair. Adds a partial scan of the
    time block ``row`` falls in, unless it falls on a block boundary."""
    if row == stage_start:
        return start if start is not None else (None, _fresh_states(program, c1 - c0))
    i = bisect.bisect_left(toff, row) - 1  # toff[i] < row <= toff[i + 1]
    r0, r1 = toff[i], toff[i + 1]
    if row == r1:
        return (name, 0, i, j)
    a = max(r0, stage_start)
    prev = start if r0 <= stage_start else _carry_key(dsk, name, i - 1, j)
    args, index = [], {}
    layouts = tuple(where[m].layout(a, row, c0, c1, args, index) for m in stage.inputs)
    key = (f"{name}-snap", j)
    dsk[key] = (run_recursive, program, layouts, row - a, c1 - c0, dtype_str, prev, *args)
    return key


def _collect_states(dtype_str: str, n: int, parts) -> dict:
    """``{node text: state (rows, N)}`` from the per-symbol-block ``(block, states)`` pairs."""
    out = {}
    for texts, _, items in parts:
        for k, text in enumerate(texts):
            out[text] = np.concatenate([np.asarray(item[1][k]) for item in items], axis=1)
            if out[text].shape[1] != n:  # pragma: no cover - a graph-building bug
                raise RuntimeError(f"state of {text}: {out[text].shape[1]} symbols, expected {n}")
    return out


def _local_program(plan: Plan, stage: LocalStage) -> LocalProgram:
    nodes = plan.nodes
    slot = {m: k for k, m in enumerate(stage.inputs)}
    instructions = []
    for m in stage.nodes:
        n = nodes[m]
        slot[m] = len(slot)
    uses: dict[int, int] = {}
    for idx, m in enumerate(stage.nodes):
        n = nodes[m]
        op = n.factor.operator
        args = []
        for a in n.args:
            if nodes[a].kind == "const":
                args.append(("const", nodes[a].params[0]))
            else:
                args.append(("slot", slot[a]))
                uses[slot[a]] = idx
        instructions.append(Instruction(op.kernel, op.kind, tuple(args), op.kernel_params(n.params), slot[m]))
    if stage.final:
        outputs = []
        for r in plan.roots:
            if nodes[r].kind == "const":
                outputs.append(("const", nodes[r].params[0]))
            else:
                outputs.append(("slot", slot[r]))
    else:
        outputs = [("slot", slot[m]) for m in stage.targets]
    if plan.backend == "cpu":
        instructions = _fuse_siblings(instructions)
    uses = {}
    for idx, ins in enumerate(instructions):
        for what, v in ins.args:
            if what == "slot":
                uses[v] = idx
    out_slots = {v for what, v in outputs if what == "slot"}
    n_slots = len(slot)
    last_use = tuple(-1 if (s in out_slots or s < len(stage.inputs)) else uses.get(s, -1) for s in range(n_slots))
    trimmable = frozenset(ins.out for ins in instructions
                          if ins.kind == "elementwise" and ins.out in out_slots and ins.out not in uses)
    return LocalProgram(len(stage.inputs), tuple(instructions), tuple(outputs), n_slots, last_use, stage.halo,
                        plan.backend, trimmable)


# Sibling window operators computed by one kernel: nodes of these kernels on the same input and
# window (and min_periods) become one instruction writing all their outputs. Alpha158 has five
# QTLU/QTLD pairs and five BETA/RSQR/RESI triples on $close: 0.78 + 0.67 s of a 2.3 s block.
_QUANTILE = "rolling.ts_quantile"
_REGRESSION = {"regression.ts_slope": 1, "regression.ts_rsquare": 2, "regression.ts_resid": 4}


def _fuse_siblings(instructions: list) -> list:
    """Merge sibling ``ts_quantile`` pairs into ``rolling.ts_quantiles`` and ``ts_slope`` /
    ``ts_rsquare`` / ``ts_resid`` on one input into ``regression.ts_regression``, at the position
    of the first sibling (its input is ready there; every reader of the others comes later)."""
    groups: dict = {}
    for idx, ins in enumerate(instructions):
        if ins.kernel == _QUANTILE and len(ins.params) == 3:  # params (window, q, min_periods)
            key = (_QUANTILE, ins.args, ins.params[0], ins.params[2])
        elif ins.kernel in _REGRESSION and len(ins.params) == 2:  # params (window, min_periods)
            key = ("regression", ins.args, ins.params)
        else:
            continue
        groups.setdefault(key, []).append(idx)
    replace: dict = {}
    drop: set = set()
    for key, members in groups.items():
        if key[0] == _QUANTILE:
            for a, b in zip(members[0::2], members[1::2]):
                ia, ib = instructions[a], instructions[b]
                window, q, mp = ia.params
                replace[a] = Instruction("rolling.ts_quantiles", ia.kind, ia.args, (window, q, ib.params[1], mp),
                                         ia.out, (ia.out, ib.out))
                drop.add(b)
        elif len(members) > 1:
            by_kind = {}
            for m in members:
                by_kind.setdefault(instructions[m].kernel, m)
            if len(by_kind) < 2:
                continue  # the same kernel twice cannot happen after CSE
            order = sorted(by_kind.values())
            first = instructions[order[0]]
            mask = 0
            outs = {}
            for m in order:
                mask |= _REGRESSION[instructions[m].kernel]
                outs[_REGRESSION[instructions[m].kernel]] = instructions[m].out
            # ts_regression(x, window, min_periods, what, out_slope, out_rsquare, out_resid); the
            # mask leaves a missing one (-1) unwritten
            replace[order[0]] = Instruction("regression.ts_regression", first.kind, first.args,
                                            (*first.params, mask), first.out,
                                            tuple(outs.get(bit, -1) for bit in (1, 2, 4)))
            drop.update(order[1:])
    if not replace:
        return instructions
    return [replace.get(i, ins) for i, ins in enumerate(instructions) if i not in drop]


def _barrier_program(plan: Plan, stage) -> BarrierProgram:
    nodes = plan.nodes
    pos = {m: k for k, m in enumerate(stage.inputs)}
    ops = []
    for m in stage.nodes:
        n = nodes[m]
        op = n.factor.operator
        srcs = tuple(("const", nodes[a].params[0]) if nodes[a].kind == "const" else pos[a] for a in n.args)
        ops.append((op.kernel, op.kernel_params(n.params), op.state, srcs))
    return BarrierProgram(tuple(ops), plan.backend)
