"""The GPU side of the engine: capability checks, host <-> device transfers, GPU stage runners.

``backend="gpu"`` runs the same plans and graphs as the CPU backend: every task still receives
and returns host (NumPy) blocks, so stage outputs chain between tasks and workers exactly as on
the CPU. Inside a task the stage runs on the device:

* **stage inputs** are assembled on the host (halo rows, neighbouring blocks), staged through
  pinned (page-locked) host buffers and copied to the device once;
* **inside a fused stage** every intermediate stays on the device (the kernels of
  ``kernels/cuda/`` read and write device arrays; constants are passed as numbers);
* **stage outputs** are copied back once, through pinned buffers, into the task's result block
  (or straight into the result array, ``materialize.py``); scan states (a few rows) travel with
  the recursive stage's blocks as on the CPU.

Nothing here imports ``numba.cuda`` until a GPU plan is checked or run, so ``import factorflow``
and the CPU backend never load it. :func:`check_environment` and :func:`check_plan` run before
any work and name the missing piece: the ``numba-cuda`` package, a CUDA driver / visible GPU (or
the simulator) when the graph runs in this process, GPU workers on an active Dask cluster (the
client then needs no GPU), or a GPU kernel for an operator of the plan. A GPU task checks CUDA
once on its worker (:func:`check_gpu`), so a worker without it fails with the same message.

GPU tasks carry the Dask resource ``GPU=1`` (``graph.py`` annotates the stage layers and
``materialize.py`` passes the same restriction to ``Client.get``), so on a cluster they run only
on workers started with ``--resources GPU=1`` (or ``dask cuda worker``); see docs/gpu.md.
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np

from .execute import _Arena

__all__ = ["GPUUnavailableError", "GPU_RESOURCES", "check_gpu", "check_environment", "check_plan", "check_workers",
           "run_local", "run_recursive", "run_cross_section", "gpu_status"]

GPU_RESOURCES = {"GPU": 1}
"""The Dask resource every GPU task needs (one unit per task)."""


class GPUUnavailableError(RuntimeError):
    """``backend="gpu"`` cannot run here; the message names the missing piece."""


def gpu_status() -> tuple[bool, str]:
    """``(usable, why)``: whether CUDA kernels can run in this process, and a sentence saying
    what was found (the simulator, the device name, or the missing piece).

    Examples
    --------
    >>> ok, why = gpu_status()
    >>> isinstance(ok, bool) and isinstance(why, str)
    True
    """
    try:
        from numba import config, cuda
    except ImportError as e:  # pragma: no cover - numba is a core dependency
        return False, f"numba is not importable ({e})"
    if config.ENABLE_CUDASIM:
        return True, "Numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1): correct but far too slow for real work"
    try:
        import numba_cuda  # noqa: F401 - the maintained CUDA target (numba.cuda is deprecated)
    except ImportError:
        return False, ("the numba-cuda package is not installed (pip install 'factorflow[gpu]', "
                       "which also brings the CUDA 12 runtime libraries)")
    try:
        if not cuda.is_available():
            return False, ("no usable CUDA driver or GPU in this process (numba.cuda.is_available() is False: "
                           "install the NVIDIA driver and check nvidia-smi / CUDA_VISIBLE_DEVICES)")
        dev = cuda.get_current_device()
        name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
        return True, f"CUDA device {name} (compute capability {dev.compute_capability})"
    except Exception as e:
        return False, f"the CUDA driver failed to initialise: {type(e).__name__}: {e}"


def check_gpu() -> None:
    """Raise :class:`GPUUnavailableError` unless CUDA kernels can run in this process."""
    ok, why = gpu_status()
    if not ok:
        raise GPUUnavailableError(f"backend='gpu' needs a GPU: {why}; or use backend='cpu'")


def check_environment(client) -> None:
    """The checks ``backend="gpu"`` makes before planning: with an active Dask client, some worker
    must offer the ``GPU`` resource (the client itself needs no GPU, only ``numba-cuda`` to check
    the plan's kernels); without one, CUDA must run in this process."""
    if client is None:
        check_gpu()
        return
    try:
        import numba_cuda  # noqa: F401
    except ImportError:
        from numba import config

        if not config.ENABLE_CUDASIM:
            raise GPUUnavailableError("backend='gpu' needs the numba-cuda package in this process too "
                                      "(pip install 'factorflow[gpu]'), to check the plan's kernels") from None
    check_workers(client)


_WORKER_CHECKED = False


def _check_worker() -> None:
    """Once per process, in the task: CUDA must run on this worker."""
    global _WORKER_CHECKED
    if not _WORKER_CHECKED:
        check_gpu()
        _WORKER_CHECKED = True


def check_plan(plan) -> None:
    """Raise :class:`GPUUnavailableError` naming the first operator of ``plan`` that has no GPU
    kernel (before anything runs)."""
    from ..kernels import resolve

    missing = []
    for n in plan.nodes:
        op = getattr(n.factor, "operator", None) if n.kind not in ("field", "const") else None
        if op is None or op.kernel is None:
            continue
        for name in (op.kernel, op.state):
            if name is None:
                continue
            try:
                resolve(name, "gpu")
            except (LookupError, ModuleNotFoundError):
                if op.name not in missing:
                    missing.append(op.name)
    if missing:
        raise GPUUnavailableError(
            f"backend='gpu' has no kernel yet for operator{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(m) for m in missing)} (see docs/gpu.md); compute these factors with backend='cpu'")


def check_workers(client) -> None:
    """Raise :class:`GPUUnavailableError` when the active Dask cluster has no worker offering the
    ``GPU`` resource (the GPU tasks would wait forever)."""
    if client is None:
        return
    try:
        workers = client.scheduler_info(n_workers=-1)["workers"]
    except TypeError:  # older distributed
        workers = client.scheduler_info()["workers"]
    if not any((w.get("resources") or {}).get("GPU", 0) >= 1 for w in workers.values()):
        raise GPUUnavailableError(
            f"backend='gpu' needs a Dask worker with the GPU resource, and none of the {len(workers)} "
            "worker(s) of the active cluster has one: start workers with 'dask worker ... --resources GPU=1' "
            "(or 'dask cuda worker'), or use ff.cluster.local(gpu=True)")


# ------------------------------------------------------------------------------------------------
# Transfers: pinned host staging buffers, reused per thread
# ------------------------------------------------------------------------------------------------
_PINNED_LIMIT = 256 << 20  # bytes of pinned staging kept per thread


def _pinned_alloc(shape, dtype):
    from numba import cuda

    return cuda.pinned_array(shape, dtype=dtype)


_pinned = _Arena(_pinned_alloc, _PINNED_LIMIT)
_take_pinned = _pinned.take
_give_pinned = _pinned.give


def to_device(a: np.ndarray):
    """Copy a host array to a new device array through a pinned staging buffer."""
    from numba import cuda

    stage = _take_pinned(a.shape, a.dtype)
    stage[...] = a
    try:
        return cuda.to_device(stage)
    finally:
        _give_pinned(stage)


def to_host(d, out: np.ndarray) -> None:
    """Copy a device array into the host array ``out`` (any strides) through a pinned buffer."""
    stage = _take_pinned(d.shape, d.dtype)
    try:
        d.copy_to_host(stage)
        out[...] = stage
    finally:
        _give_pinned(stage)


_SIM_LOCK = threading.Lock()


def _serial():
    """Under the simulator, one GPU task at a time per process: it runs kernels on Python threads
    and swaps module globals while a kernel runs, so concurrent launches from several Dask
    threads break it. Real devices take concurrent launches (a nullcontext)."""
    from numba import config

    return _SIM_LOCK if config.ENABLE_CUDASIM else contextlib.nullcontext()


def _device_const(value, rows, cols, dtype):
    from numba import cuda

    return cuda.to_device(np.full((rows, cols), value, dtype))


# ------------------------------------------------------------------------------------------------
# Stage runners (called from engine/execute.py when program.backend == "gpu")
# ------------------------------------------------------------------------------------------------
def _inputs(blocks, layouts, dtype):
    from .execute import _arena, assemble

    owned: list = []
    try:
        return [to_device(assemble(blocks, lay, dtype, owned)) for lay in layouts]
    finally:
        for a in owned:
            _arena.give(a)


def run_local(program, layouts, edges, rows, cols, out: np.ndarray, blocks) -> None:
    """A fused local stage on the device, writing the block's outputs into host ``out``
    (``(n_outputs, rows, cols)``)."""
    _check_worker()
    with _serial():
        _run_local(program, layouts, edges, rows, cols, out, blocks)


def _run_local(program, layouts, edges, rows, cols, out, blocks):
    from numba.cuda import device_array

    from .execute import kernel

    skip, tail = edges
    dtype = out.dtype
    slots: list = [None] * program.n_slots
    for k, d in enumerate(_inputs(blocks, layouts, dtype)):
        slots[k] = d
    full_rows = rows + skip + tail
    for idx, ins in enumerate(program.instructions):
        args = [slots[v] if what == "slot" else v for what, v in ins.args]
        if ins.kind != "elementwise":
            args = [a if not isinstance(a, (int, float)) else _device_const(a, full_rows, cols, dtype) for a in args]
        dest = device_array((full_rows, cols), dtype=dtype)
        kernel(ins.kernel, "gpu")(*args, *ins.params, dest)
        slots[ins.out] = dest
        for what, v in ins.args:  # drop device buffers after their last reader
            if what == "slot" and program.last_use[v] == idx:
                slots[v] = None
    for pos, (what, v) in enumerate(program.outputs):
        if what == "const":
            out[pos] = v
        else:
            to_host(slots[v][skip:skip + rows], out[pos])


def run_recursive(program, layouts, rows, cols, dtype_str, prev, blocks):
    """A recursive stage block on the device; returns ``(block, states)`` with host states."""
    _check_worker()
    with _serial():
        return _run_recursive(program, layouts, rows, cols, dtype_str, prev, blocks)


def _run_recursive(program, layouts, rows, cols, dtype_str, prev, blocks):
    from numba.cuda import device_array
    from numba.cuda import to_device as _to_device

    from .execute import kernel

    dtype = np.dtype(dtype_str)
    inputs = _inputs(blocks, layouts, dtype)
    out = np.empty((len(program.ops), rows, cols), dtype)
    states = []
    for k, (kname, params, state_init, inp) in enumerate(program.ops):
        state = kernel(state_init, "gpu")(cols) if prev is None else prev[1][k].copy()
        d_state = _to_device(np.ascontiguousarray(state))
        xs = [inputs[s] if not isinstance(s, tuple) else _device_const(s[1], rows, cols, dtype) for s in inp]
        d_out = device_array((rows, cols), dtype=dtype)
        kernel(kname, "gpu")(*xs, *params, d_state, d_out)
        to_host(d_out, out[k])
        d_state.copy_to_host(state)
        states.append(state)
    return out, tuple(states)


def run_cross_section(program, layouts, rows, cols, dtype_str, blocks) -> np.ndarray:
    """A cross-sectional stage block (every symbol) on the device."""
    _check_worker()
    with _serial():
        return _run_cross_section(program, layouts, rows, cols, dtype_str, blocks)


def _run_cross_section(program, layouts, rows, cols, dtype_str, blocks):
    from numba.cuda import device_array

    from .execute import kernel

    dtype = np.dtype(dtype_str)
    inputs = _inputs(blocks, layouts, dtype)
    out = np.empty((len(program.ops), rows, cols), dtype)
    for k, (kname, params, _, inp) in enumerate(program.ops):
        xs = [inputs[s] if not isinstance(s, tuple) else _device_const(s[1], rows, cols, dtype) for s in inp]
        d_out = device_array((rows, cols), dtype=dtype)
        kernel(kname, "gpu")(*xs, *params, d_out)
        to_host(d_out, out[k])
    return out
