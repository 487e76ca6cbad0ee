"""The GPU backend seen from a process without CUDA (CI): what ``backend="gpu"`` says, and that the
CPU path never imports the CUDA stack. The CUDA kernels and the GPU engine are tested in
``tests/gpu/`` (under the simulator, or on a GPU)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from factorflow.engine.device import GPUUnavailableError, gpu_status

import factorflow as ff

PANEL = ff.Panel.from_numpy({"close": np.arange(20.0).reshape(10, 2) + 1})


def _run(code: str, **env) -> subprocess.CompletedProcess:
    import os

    full = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    full.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=120)


def test_cpu_path_never_imports_cuda():
    r = _run("import sys, numpy as np, factorflow as ff\n"
             "p = ff.Panel.from_numpy({'close': np.ones((30, 3))})\n"
             "ff.compute({'m': 'ema(close, 3) + ts_mean(close, 5) + cs_rank(close)'}, p).to_numpy('m')\n"
             "bad = sorted(m for m in sys.modules if m.startswith(('numba.cuda', 'numba_cuda', 'cupy', "
             "'factorflow.kernels.cuda', 'factorflow.engine.device')))\n"
             "print(bad)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", r.stdout


@pytest.mark.skipif(gpu_status()[0], reason="this process has CUDA")
def test_no_driver_is_named_before_any_work():
    with pytest.raises(GPUUnavailableError, match="CUDA driver or GPU"):
        ff.compute({"a": "ts_mean(close, 3)"}, PANEL, backend="gpu")
    with pytest.raises(GPUUnavailableError, match="needs a GPU"):
        ff.explain({"a": "close"}, PANEL, backend="gpu")
    with pytest.raises(GPUUnavailableError, match="needs a GPU"):
        ff.cluster.local(gpu=True, dashboard_address=None)


def test_missing_numba_cuda_is_named():
    r = _run("import sys; sys.modules['numba_cuda'] = None\n"
             "from factorflow.engine.device import gpu_status\n"
             "print(gpu_status())")
    assert r.returncode == 0, r.stderr
    assert "numba-cuda package is not installed" in r.stdout and "factorflow[gpu]" in r.stdout


def test_simulator_is_reported_as_such():
    r = _run("from factorflow.engine.device import gpu_status; print(gpu_status())", NUMBA_ENABLE_CUDASIM="1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("(True, 'Numba CUDA simulator")


class _FakeClient:
    def __init__(self, resources):
        self._workers = {f"tcp://127.0.0.1:{i}": {"resources": r} for i, r in enumerate(resources)}

    def scheduler_info(self, n_workers=-1):
        return {"workers": self._workers}


def test_client_needs_gpu_workers_not_a_local_gpu():
    """With a cluster, the client needs no GPU (a notebook on a CPU machine driving GPU workers);
    the workers need the resource."""
    from factorflow.engine.device import check_environment

    check_environment(_FakeClient([{}, {"GPU": 1}]))  # no local CUDA here: still fine
    with pytest.raises(GPUUnavailableError, match="none of the 2 worker"):
        check_environment(_FakeClient([{}, {"CPU": 4}]))
