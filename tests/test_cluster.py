"""Running on real clusters: the embedded one, worker processes, and `dask scheduler`/`dask worker`.

Everything listens on 127.0.0.1 only; processes started here are stopped here.
"""
from __future__ import annotations

import sys
import time

import numpy as np
import pytest

import factorflow as ff

from patterns import assert_close, make_patterned
from run_helpers import start_process, stop_processes

pytestmark = pytest.mark.cluster

T, N = 400, 150
X = make_patterned(T, N, seed=11)
V = np.abs(make_patterned(T, N, seed=12)) + 1
PANEL = ff.Panel.from_numpy({"close": X, "volume": V})
FACTORS = {
    "macd": "ema(close, 12) - ema(close, 26)",
    "z": "(close - ts_mean(close, 20)) / ts_std(close, 20)",
    "r": "cs_rank(delta(close, 3))",
    "pv": "ts_corr(close, log(volume), 10)",
}
CHUNKS = {"time": 90, "symbol": 40}


@pytest.fixture(scope="module")
def expected():
    import dask

    with dask.config.set(scheduler="threads"):
        return ff.compute(FACTORS, PANEL, chunks=CHUNKS).to_numpy()


def _check(out, expected, rtol=1e-12):
    """Same chunks: equal to 1e-12; another chunking: equal up to rounding (1e-9)."""
    for name, want in expected.items():
        assert_close(out.to_numpy(name), want, rtol=rtol, what=name)


def test_embedded_local_cluster_threads(expected):
    with ff.cluster.local(n_workers=1, threads_per_worker=2, dashboard_address="127.0.0.1:0") as c:
        assert c.scheduler_address.startswith("inproc://")  # no network listener for task traffic
        assert c.dashboard_link.startswith("http://127.0.0.1:")
        assert c.nthreads == 2
        _check(ff.compute(FACTORS, PANEL, chunks=CHUNKS), expected)
        # planned chunking uses the cluster's thread count
        assert ff.explain(FACTORS, PANEL).grid[0] * ff.explain(FACTORS, PANEL).grid[1] >= 1
    from distributed import default_client

    with pytest.raises(ValueError):
        default_client()  # closed with the context


def test_two_worker_processes(expected):
    with ff.cluster.local(processes=True, n_workers=2, threads_per_worker=1, dashboard_address=None) as c:
        assert c.nthreads == 2
        out = ff.compute(FACTORS, PANEL, chunks=CHUNKS)
        _check(out, expected)
        # the panel was scattered block by block: both workers hold input blocks
        holders = {w for ws in c.client.who_has().values() for w in ws}
        assert len(holders) == 2
        # a persisted panel is computed where it lives
        resident = PANEL.persist()
        _check(ff.compute(FACTORS, resident, chunks=CHUNKS), expected)
        _check(ff.compute(FACTORS, resident), expected, rtol=1e-9)  # the stored grid is adopted


def test_real_dask_scheduler_and_workers(tmp_path, expected):
    sched_file = tmp_path / "scheduler.json"
    log = open(tmp_path / "cluster.log", "w")
    dask_cli = [sys.executable, "-m", "dask"]
    procs = [start_process(dask_cli + ["scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address",
                                "127.0.0.1:0", "--scheduler-file", str(sched_file)], log)]
    try:
        deadline = time.time() + 60
        while not sched_file.exists():
            assert procs[0].poll() is None, (tmp_path / "cluster.log").read_text()
            assert time.time() < deadline, "scheduler did not start"
            time.sleep(0.2)
        for _ in range(2):
            procs.append(start_process(dask_cli + ["worker", "--scheduler-file", str(sched_file), "--host", "127.0.0.1",
                                            "--nthreads", "1", "--dashboard-address", "127.0.0.1:0",
                                            "--memory-limit", "2GiB"], log))
        with ff.cluster.connect(scheduler_file=str(sched_file)) as c:
            c.client.wait_for_workers(2, timeout=90)
            assert c.cluster is None and c.nthreads == 2
            assert c.scheduler_address.startswith("tcp://127.0.0.1:")
            out = ff.compute(FACTORS, PANEL, chunks=CHUNKS)
            _check(out, expected)
            addrs = list(c.client.scheduler_info()["workers"])
            assert all(a.startswith("tcp://127.0.0.1:") for a in addrs)
    finally:
        stop_processes(procs)
        log.close()


@pytest.mark.parametrize("address", ["nonsense", "127.0.0.1:99999", "127.0.0.1:", "[::1]:0", "8787x", "::1", ":"])
def test_local_refuses_a_bad_dashboard_address_before_starting(address, monkeypatch):
    import distributed

    def no_cluster(*a, **k):
        raise AssertionError("a cluster started before the address was checked")

    monkeypatch.setattr(distributed, "LocalCluster", no_cluster)
    with pytest.raises(ValueError, match=r"dashboard address .* is not HOST:PORT or PORT"):
        ff.cluster.local(dashboard_address=address)


def test_dashboard_address_forms():
    check = ff.cluster.check_dashboard_address
    assert check(None) is None
    assert check(0) == "127.0.0.1:0" and check(" 8787 ") == "127.0.0.1:8787"  # a bare port: the loopback
    assert check("127.0.0.1:8787") == "127.0.0.1:8787" and check("localhost:0") == "localhost:0"
    assert check(":8787") == "127.0.0.1:8787"  # Dask's spelling of a port alone: still the loopback
    assert check("0.0.0.0:8787") == "0.0.0.0:8787"  # every interface only where it is named


def test_connect_errors(tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        ff.cluster.connect()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ff.cluster.connect(scheduler_file=str(tmp_path / "missing.json"))
