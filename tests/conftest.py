"""Shared fixtures."""
from __future__ import annotations

import pytest

from patterns import make_patterned


@pytest.fixture(scope="session")
def patterned():
    return make_patterned()


# ------------------------------------------------------------------------------------------------
# FACTORFLOW_TEST_BACKEND=gpu: the suite's ff.compute calls that name no backend run on the GPU
# backend (on a GPU machine; docs/gpu.md). A call whose plan has an operator without a GPU kernel,
# or that runs on a cluster without GPU workers, stays on the CPU; the summary counts both.
# ------------------------------------------------------------------------------------------------
import os  # noqa: E402

_GPU_CALLS = {"gpu": 0, "cpu (no GPU kernel or worker)": 0}

if os.environ.get("FACTORFLOW_TEST_BACKEND") == "gpu":
    import functools
    import importlib

    import factorflow

    _compute_mod = importlib.import_module("factorflow.engine.compute")
    _device = importlib.import_module("factorflow.engine.device")
    GPUUnavailableError = _device.GPUUnavailableError

    _device.check_gpu()
    _cpu_compute = _compute_mod.compute

    @functools.wraps(_cpu_compute)
    def _gpu_compute(factors, panel, **kw):
        if "backend" not in kw:
            try:
                out = _cpu_compute(factors, panel, backend="gpu", **kw)
                _GPU_CALLS["gpu"] += 1
                return out
            except GPUUnavailableError:
                _GPU_CALLS["cpu (no GPU kernel or worker)"] += 1
        return _cpu_compute(factors, panel, **kw)

    _compute_mod.compute = _gpu_compute
    importlib.import_module("factorflow.engine").compute = _gpu_compute
    factorflow.compute = _gpu_compute

    def pytest_terminal_summary(terminalreporter):
        terminalreporter.write_line(f"FACTORFLOW_TEST_BACKEND=gpu: ff.compute calls {_GPU_CALLS}")
