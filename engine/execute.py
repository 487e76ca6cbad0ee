"""What runs inside a task: stage programs evaluated on blocks.

A stage program is a small, picklable description (kernel *names*, slots, parameters) built by
``engine/graph.py`` from the plan. Tasks assemble their input blocks (with the halo rows of the
previous time blocks), run the kernels in topological order into scratch buffers, and write the
stage's outputs into one fresh ``(n_outputs, rows, cols)`` block.

Scratch buffers come from a per-thread arena: a fresh page-faulting allocation halves kernel
throughput (measured), so intermediates reuse memory across the tasks a thread runs, and a
buffer is recycled within a task as soon as its last reader has run.
"""
from __future__ import annotations

import hashlib
import pickle
import threading
from dataclasses import dataclass

import numpy as np

from ..kernels import resolve
from .memory import empty

__all__ = ["LocalProgram", "BarrierProgram", "run_local", "run_recursive", "run_cross_section"]

_KERNELS: dict[tuple[str, str], object] = {}


def kernel(name: str, backend: str = "cpu"):
    fn = _KERNELS.get((name, backend))
    if fn is None:
        fn = _KERNELS[(name, backend)] = resolve(name, backend)
    return fn


# ------------------------------------------------------------------------------------------------
# Scratch arena
# ------------------------------------------------------------------------------------------------
ARENA_LIMIT_BYTES = 1 << 30  # per thread; beyond this, buffers are dropped instead of kept


class _Arena(threading.local):
    """Per-thread pool of buffers by (shape, dtype): ``take`` pops one or allocates with
    ``alloc``; ``give`` returns one, and when the pool would hold more than ``limit`` bytes it is
    emptied (the buffers are left to the garbage collector). Also the GPU backend's pool of
    pinned host staging buffers (``engine/device.py``)."""

    def __init__(self, alloc=empty, limit: int = ARENA_LIMIT_BYTES):
        self.alloc = alloc
        self.limit = limit
        self.free: dict[tuple, list[np.ndarray]] = {}
        self.bytes = 0

    def take(self, shape, dtype) -> np.ndarray:
        key = (tuple(shape), np.dtype(dtype).str)
        stack = self.free.get(key)
        if stack:
            a = stack.pop()
            self.bytes -= a.nbytes
            return a
        return self.alloc(shape, dtype)

    def give(self, a: np.ndarray) -> None:
        if self.bytes + a.nbytes > self.limit:
            self.free.clear()
            self.bytes = 0
        self.free.setdefault((a.shape, a.dtype.str), []).append(a)
        self.bytes += a.nbytes


_arena = _Arena()


def clear_arena() -> None:
    """Release this thread's scratch buffers."""
    _arena.free.clear()
    _arena.bytes = 0


# ------------------------------------------------------------------------------------------------
# Input assembly
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InputLayout:
    """Where the rows/cols one task needs of one materialised node come from.

    ``bands`` is a list of row bands (top to bottom); each band a list of pieces
    ``(arg_index, row_slice, col_slice)`` (left to right) into the task's block arguments.
    ``index`` selects the node inside a 3-D block; ``tuple_output`` marks blocks that are
    ``(block, state)`` pairs from recursive stages. ``pad`` rows above the bands (counted in
    ``rows``) are NaN: halo rows of the stage that no output needs from this input and that lie
    in a block the task does not otherwise read (``engine/graph.py: _input_needs``,
    ``Source.reach``), so that block need not travel to the task.
    """

    index: int
    bands: tuple
    rows: int
    cols: int
    tuple_output: bool = False
    pad: int = 0


def _piece(blocks, layout: InputLayout, arg: int, rs: slice, cs: slice) -> np.ndarray:
    b = blocks[arg]
    if layout.tuple_output:
        b = b[0]
    return b[layout.index, rs, cs]


def assemble(blocks, layout: InputLayout, dtype, owned: list) -> np.ndarray:
    """The input array for one node: a view when one block covers it, else a copy."""
    bands = layout.bands
    if len(bands) == 1 and len(bands[0]) == 1 and not layout.pad:
        arg, rs, cs = bands[0][0]
        a = _piece(blocks, layout, arg, rs, cs)
        if a.dtype == dtype and a.flags.c_contiguous:
            return a
    out = _arena.take((layout.rows, layout.cols), dtype)
    owned.append(out)
    r = layout.pad
    if r:
        out[:r] = np.nan
    for band in bands:
        c = 0
        h = 0
        for arg, rs, cs in band:
            a = _piece(blocks, layout, arg, rs, cs)
            h, w = a.shape
            out[r:r + h, c:c + w] = a
            c += w
        r += h
    return out


# ------------------------------------------------------------------------------------------------
# Local (fused) stages
# ------------------------------------------------------------------------------------------------
def _pickle_token(program) -> tuple:
    """What Dask's ``tokenize`` hashes for a stage program (its ``__dask_tokenize__``): the SHA-1
    of the program's pickle. A distributed client tokenizes every graph it submits (the name of
    the graph's expression), and Dask's generic walk over a frozen dataclass's fields took ~12 ms
    per task for Alpha158's fused stage (~400 ``Instruction`` objects per program, one program
    per task) where the pickle takes ~0.3 ms. Different programs pickle to different bytes, so
    never share a token; equal ones built alike (as every graph builds them) pickle alike. At
    worst two equal programs built differently get two tokens: a missed deduplication, never a
    wrong one."""
    return type(program).__name__, hashlib.sha1(pickle.dumps(program, protocol=5)).hexdigest()


@dataclass(frozen=True)
class Instruction:
    kernel: str
    kind: str
    args: tuple  # ("slot", i) or ("const", value)
    params: tuple  # kernel params after the series args
    out: int  # slot
    # a kernel writing several outputs (engine/graph.py: _fuse_siblings): every output slot in
    # the kernel's argument order, ``out`` among them; -1 where the kernel writes nothing
    outs: tuple = ()


@dataclass(frozen=True)
class LocalProgram:
    """A fused local stage: inputs -> instructions -> outputs.

    ``inputs[k]`` is the InputLayout for slot k (per task: layouts differ per block, so the
    program holds only the static parts and the task receives layouts as an argument).
    ``outputs`` are ``("slot", i)`` or ``("const", v)`` per output position.
    ``last_use[i]`` is the index of the last instruction reading slot i (-1: never freed).
    """

    n_inputs: int
    instructions: tuple
    outputs: tuple
    n_slots: int
    last_use: tuple
    halo: int
    backend: str = "cpu"
    trimmable: frozenset = frozenset()  # element-wise output slots no instruction reads

    __dask_tokenize__ = _pickle_token


def run_local(program: LocalProgram, layouts: tuple, edges: tuple, rows: int, cols: int, dtype_str: str, *blocks):
    """Evaluate a fused local stage for one block; returns ``(n_outputs, rows, cols)``.

    ``edges = (skip, tail)``: every assembled input has ``skip`` halo rows above the block's
    ``rows`` and ``tail`` rows after them (operators reading later rows, ``lead``); the output
    holds the block's rows only.
    """
    out = empty((len(program.outputs), rows, cols), np.dtype(dtype_str))
    if program.backend == "gpu":
        from . import device

        device.run_local(program, layouts, edges, rows, cols, out, blocks)
        return out
    _run_local(program, layouts, edges, rows, cols, out, blocks)
    return out


# Result arrays being filled in place by tasks running in this process (see materialize.py):
# token -> ndarray. Tasks refer to the token, never to the array, so no graph ever carries it.
TARGETS: dict[str, np.ndarray] = {}


def run_local_into(token: str, r0: int, c0: int, program: LocalProgram, layouts: tuple, edges: tuple, rows: int,
                   cols: int, dtype_str: str, *blocks) -> None:
    """Like :func:`run_local`, writing the block straight into ``TARGETS[token][:, r0:, c0:]``."""
    target = TARGETS[token]
    if program.backend == "gpu":
        from . import device

        device.run_local(program, layouts, edges, rows, cols, target[:, r0:r0 + rows, c0:c0 + cols], blocks)
        return
    _run_local(program, layouts, edges, rows, cols, target[:, r0:r0 + rows, c0:c0 + cols], blocks)


def _run_local(program, layouts, edges, rows, cols, out, blocks):
    skip, tail = edges
    dtype = out.dtype
    owned: list[np.ndarray] = []
    slots: list = [None] * program.n_slots
    for k, layout in enumerate(layouts):
        slots[k] = assemble(blocks, layout, dtype, owned)
    full_rows = rows + skip + tail
    stop = skip + rows
    # Outputs written by their kernel straight into the output block, saving a copy per output:
    # element-wise outputs that nothing else reads are computed on the rows after the halo only;
    # other outputs when there is no halo to trim and the block is contiguous.
    direct = {}
    contiguous = all(o.flags.c_contiguous for o in out)
    for pos, (what, v) in enumerate(program.outputs):
        if what == "slot" and v >= program.n_inputs and v not in direct:
            if v in program.trimmable or (skip == 0 and tail == 0 and contiguous):
                direct[v] = pos
    temps: dict[int, np.ndarray] = {}
    with np.errstate(all="ignore"):
        for idx, ins in enumerate(program.instructions):
            args = []
            for what, v in ins.args:
                if what == "slot":
                    args.append(slots[v])
                else:
                    args.append(v)
            if ins.kind != "elementwise":
                args = [a if isinstance(a, np.ndarray) else np.full((full_rows, cols), a, dtype) for a in args]
            if ins.out in direct:
                dest = out[direct[ins.out]]
                if (skip or tail) and ins.kind == "elementwise":
                    args = [a[skip:stop] if isinstance(a, np.ndarray) else a for a in args]
            else:
                dest = _arena.take((full_rows, cols), dtype)
                temps[ins.out] = dest
            dests = [dest]
            if ins.outs:  # window kernels only: every output has the rows of `dest`
                dests = []
                for s in ins.outs:
                    if s == -1 or s == ins.out:
                        dests.append(dest)
                        continue
                    if s in direct:
                        d = out[direct[s]]
                    else:
                        d = temps[s] = _arena.take((full_rows, cols), dtype)
                    slots[s] = d
                    dests.append(d)
            kernel(ins.kernel, program.backend)(*args, *ins.params, *dests)
            slots[ins.out] = dest
            # recycle buffers whose last reader was this instruction
            for what, v in ins.args:
                if what == "slot" and program.last_use[v] == idx and v in temps:
                    _arena.give(temps.pop(v))
        for pos, (what, v) in enumerate(program.outputs):
            if what == "const":
                out[pos] = v
            elif direct.get(v) == pos:
                continue
            else:
                out[pos] = slots[v][skip:stop]
    for a in temps.values():
        _arena.give(a)
    for a in owned:
        _arena.give(a)


# ------------------------------------------------------------------------------------------------
# Barrier stages
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BarrierProgram:
    """Barrier operators of one kind and level: ``ops[k] = (kernel, params, state_init, inputs)``
    where each of ``inputs`` indexes the task's layouts or is ``("const", value)``."""

    ops: tuple
    backend: str = "cpu"

    __dask_tokenize__ = _pickle_token


def _barrier_args(inputs, srcs, rows, cols, dtype) -> list:
    """The operator's series arguments: an input layout index, or ``("const", v)`` broadcast."""
    return [inputs[s] if not isinstance(s, tuple) else np.full((rows, cols), s[1], dtype) for s in srcs]


def run_recursive(program: BarrierProgram, layouts: tuple, rows: int, cols: int, dtype_str: str, prev, *blocks):
    """Scan one block with the state carried from the previous time block (``prev``).

    Returns ``(block, states)``; the states are copied first so a retried task is idempotent.
    """
    if program.backend == "gpu":
        from . import device

        return device.run_recursive(program, layouts, rows, cols, dtype_str, prev, blocks)
    dtype = np.dtype(dtype_str)
    owned: list[np.ndarray] = []
    inputs = [assemble(blocks, lay, dtype, owned) for lay in layouts]
    out = empty((len(program.ops), rows, cols), dtype)
    states = []
    with np.errstate(all="ignore"):
        for k, (kname, params, state_init, inp) in enumerate(program.ops):
            if prev is None:
                state = kernel(state_init, program.backend)(cols)
            else:
                state = prev[1][k].copy()
            xs = _barrier_args(inputs, inp, rows, cols, dtype)
            kernel(kname, program.backend)(*xs, *params, state, out[k])
            states.append(state)
    for a in owned:
        _arena.give(a)
    return out, tuple(states)


def run_cross_section(program: BarrierProgram, layouts: tuple, rows: int, cols: int, dtype_str: str, *blocks):
    """Apply cross-sectional operators to a time block spanning every symbol."""
    if program.backend == "gpu":
        from . import device

        return device.run_cross_section(program, layouts, rows, cols, dtype_str, blocks)
    dtype = np.dtype(dtype_str)
    owned: list[np.ndarray] = []
    inputs = [assemble(blocks, lay, dtype, owned) for lay in layouts]
    out = empty((len(program.ops), rows, cols), dtype)
    with np.errstate(all="ignore"):
        for k, (kname, params, _, inp) in enumerate(program.ops):
            xs = _barrier_args(inputs, inp, rows, cols, dtype)
            kernel(kname, program.backend)(*xs, *params, out[k])
    for a in owned:
        _arena.give(a)
    return out
