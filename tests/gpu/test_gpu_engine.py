"""``ff.compute(..., backend="gpu")`` against the CPU backend, the errors raised before any work,
and GPU task placement on a real ``dask scheduler`` with one GPU and one CPU-only worker."""
from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest
from factorflow.engine.device import GPUUnavailableError
from patterns import assert_close, make_patterned

import factorflow as ff
from run_helpers import start_process, stop_processes

CLOSE = make_patterned(64, 9, seed=11, positive=True)
VOLUME = make_patterned(64, 9, seed=12, positive=True) * 1000
PANEL = ff.Panel.from_numpy({"close": CLOSE, "volume": VOLUME})
# every family, chained across stages: local -> recursive -> cross-section -> local
FACTORS = {
    "mom": "close / delay(close, 5) - 1",
    "z": "(close - ts_mean(close, 10)) / ts_std(close, 10)",
    "macd": "ema(close, 6) / ewma(close, 13)",
    "rank": "cs_rank(ts_corr(close, volume, 8))",
    "mix": "cs_zscore(cumsum(log(volume))) + where(close > lead(close, 2), ts_max(close, 4), -close)",
    "dl": "decay_linear(delta(close, 1), 6) + ts_argmin(close, 5) + ts_rank(volume, 7)",
}
CHUNKS = {"time": 24, "symbol": 5}  # 3 x 2 blocks: halos, scan carries and cross-sections cross them


def _parity(panel, factors, chunks, rtol):
    want = ff.compute(factors, panel, chunks=chunks, backend="cpu")
    got = ff.compute(factors, panel, chunks=chunks, backend="gpu")
    assert got.plan.backend == "gpu"
    for name in factors:
        assert_close(got.to_numpy(name), want.to_numpy(name), rtol=rtol, what=name)


def test_parity_float64_threads():
    _parity(PANEL, FACTORS, CHUNKS, 1e-9)


def test_parity_float32_one_block():
    p32 = ff.Panel.from_numpy({"close": CLOSE.astype(np.float32), "volume": VOLUME.astype(np.float32)})
    _parity(p32, {k: FACTORS[k] for k in ("mom", "z", "macd")}, None, 1e-4)


def test_local_gpu_cluster():
    with ff.cluster.local(gpu=True, dashboard_address=None) as c:
        info = c.client.scheduler_info(n_workers=-1)["workers"]
        assert [w["resources"] for w in info.values()] == [{"GPU": 1}]
        _parity(PANEL, {k: FACTORS[k] for k in ("z", "macd", "rank")}, CHUNKS, 1e-9)


def test_every_registry_operator_has_a_gpu_kernel():
    from factorflow.kernels import resolve

    for op in ff.operators().values():
        for name in (op.kernel, op.state):
            if name is not None:
                assert callable(resolve(name, "gpu")), (op.name, name)


def test_missing_gpu_kernel_is_named_before_work(monkeypatch):
    import factorflow.kernels as K

    real = K.resolve

    def resolve(name, backend="cpu"):
        if backend == "gpu" and name == "rolling.ts_median":
            raise LookupError(f"backend 'gpu' has no kernel {name!r}")
        return real(name, backend)

    monkeypatch.setattr(K, "resolve", resolve)
    with pytest.raises(GPUUnavailableError, match="no kernel yet for operator 'ts_median'"):
        ff.compute({"m": "ts_median(close, 5) + ts_mean(close, 3)"}, PANEL, backend="gpu")


def test_cluster_without_gpu_worker():
    with ff.cluster.local(dashboard_address=None):
        with pytest.raises(GPUUnavailableError, match="--resources GPU=1"):
            ff.compute({"m": "ts_mean(close, 5)"}, PANEL, backend="gpu")


@pytest.mark.cluster
def test_gpu_tasks_run_only_on_gpu_worker(tmp_path):
    """A real scheduler, one worker with ``--resources GPU=1`` and one without: every task of a
    GPU plan runs on the GPU worker, while a CPU plan uses both (so the check can fail)."""
    from distributed import get_task_stream

    env = dict(os.environ)  # the workers inherit NUMBA_ENABLE_CUDASIM from this process
    sched_file = tmp_path / "scheduler.json"
    log = open(tmp_path / "cluster.log", "w")
    dask_cli = [sys.executable, "-m", "dask"]
    procs = [start_process(dask_cli + ["scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address",
                                "127.0.0.1:0", "--scheduler-file", str(sched_file)], log, env)]
    try:
        deadline = time.time() + 60
        while not sched_file.exists():
            assert procs[0].poll() is None, (tmp_path / "cluster.log").read_text()
            assert time.time() < deadline, "scheduler did not start"
            time.sleep(0.2)
        common = ["worker", "--scheduler-file", str(sched_file), "--host", "127.0.0.1", "--nthreads", "2",
                  "--dashboard-address", "127.0.0.1:0", "--memory-limit", "2GiB"]
        procs.append(start_process(dask_cli + common + ["--resources", "GPU=1", "--name", "gpu-worker"], log, env))
        procs.append(start_process(dask_cli + common + ["--name", "cpu-worker"], log, env))
        with ff.cluster.connect(scheduler_file=str(sched_file)) as c:
            c.client.wait_for_workers(2, timeout=90)
            names = {a: w["name"] for a, w in c.client.scheduler_info(n_workers=-1)["workers"].items()}
            factors = {k: FACTORS[k] for k in ("z", "macd", "rank")}
            chunks = {"time": 16, "symbol": 3}
            want = ff.compute(factors, PANEL, chunks=chunks, backend="cpu")
            with get_task_stream(c.client) as ts_cpu:
                want_arrays = {k: want.to_numpy(k) for k in factors}
            got = ff.compute(factors, PANEL, chunks=chunks, backend="gpu")
            with get_task_stream(c.client) as ts_gpu:
                for k in factors:
                    assert_close(got.to_numpy(k), want_arrays[k], what=k)
            ran_cpu = {names[t["worker"]] for t in ts_cpu.data if "ff-" in str(t["key"])}
            ran_gpu = {names[t["worker"]] for t in ts_gpu.data if "ff-" in str(t["key"])}
            assert ran_cpu == {"gpu-worker", "cpu-worker"}, ran_cpu  # both are used without the restriction
            assert ran_gpu == {"gpu-worker"}, ran_gpu
            # every stage task was seen (besides them: the scans' state carries, graph.py: _carry_key)
            n_gpu_tasks = sum("ff-" in str(t["key"]) and "-carry" not in str(t["key"]) for t in ts_gpu.data)
            assert n_gpu_tasks == got.plan.n_tasks
    finally:
        stop_processes(procs)
        log.close()


# BETA10/RSQR10/RESI10 and QTLU10/QTLD10: the CPU backend runs each group as one fused instruction
# (engine/graph.py: _fuse_siblings), the GPU backend as single kernels; they must agree
ALPHA158_PREFIXES = ("KMID", "KLOW", "ROC5", "MA10", "STD20", "BETA10", "RSQR10", "RESI5", "RESI10", "QTLU10",
                     "QTLD10", "RANK5", "CORR10", "CNTP10", "SUMD10", "VSUMP5", "WVMA5", "IMAX10")


@pytest.mark.parametrize("name, pick", [
    ("alpha101", ("alpha006", "alpha012", "alpha048", "alpha101")),  # corr, sign/delta, indneutralize, ratios
    ("alpha158", ALPHA158_PREFIXES),  # every Qlib operator family: regression, quantile, rank, corr, sums
])
def test_library_subset_parity(name, pick):
    """A subset of each library (the simulator is slow) covering its operator families; the whole
    libraries are for a device run (FACTORFLOW_TEST_BACKEND=gpu)."""
    panel = ff.sample_panel(70, 5, seed=3, groups=True)
    lib = ff.library(name)
    sub = {k: f for k, f in lib.items() if k in pick or (name == "alpha158" and k.startswith(pick))}
    assert len(sub) >= len(pick)
    _parity(panel, sub, None, 1e-9)
