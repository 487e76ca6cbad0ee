"""The CUDA tests run where CUDA kernels can run: under the Numba CUDA simulator (``make test`` runs
``NUMBA_ENABLE_CUDASIM=1 pytest tests/gpu``; the variable must be set before numba is imported,
hence the separate invocation) or on a machine with a GPU. Elsewhere they skip with the reason."""
from __future__ import annotations

import pytest
from factorflow.engine.device import gpu_status

CUDA_OK, CUDA_WHY = gpu_status()


def pytest_configure(config):
    # the simulator computes with NumPy scalars, which warn where a device silently gives inf/NaN
    config.addinivalue_line("filterwarnings", "ignore::RuntimeWarning:factorflow.kernels.cuda")
    config.addinivalue_line("filterwarnings", "ignore::RuntimeWarning:numba.cuda.simulator")


def pytest_collection_modifyitems(config, items):
    if CUDA_OK:
        return
    skip = pytest.mark.skip(reason=f"no CUDA in this process ({CUDA_WHY}); "
                                   "run NUMBA_ENABLE_CUDASIM=1 pytest tests/gpu (make test does)")
    for item in items:
        if "/tests/gpu/" in str(item.path):
            item.add_marker(skip)
