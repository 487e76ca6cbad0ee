"""Numba's on-disk cache under several worker processes (numba/numba#4807).

Two processes compile the same kernels into one empty cache directory at the same time; both must
succeed, and a third process must then load them from the cache without compiling.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import sys, numpy as np
    from factorflow.kernels.cpu import recursive, rolling
    x = np.random.default_rng(0).standard_normal((64, 8))
    out = np.empty_like(x)
    rolling.ts_mean(x, 5, 5, out)
    recursive.ewm_mean(x, 0.1, False, recursive.ewm_init_state(8), out)
    print(sorted(len(f.stats.cache_hits) for f in (rolling.ts_mean, recursive.ewm_mean)))
    print("compiled", sum(len(f.stats.cache_misses) for f in (rolling.ts_mean, recursive.ewm_mean)))
    """
)


def test_concurrent_processes_share_the_cache(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
    assert any((tmp_path / "cache").rglob("*.nbi"))
    r = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "compiled 0" in r.stdout  # everything came from the cache
