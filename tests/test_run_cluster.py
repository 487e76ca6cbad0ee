"""`factorflow run` against real `dask scheduler` / `dask worker` processes on 127.0.0.1, with faults.

Every process started here is stopped here (fixtures with finalisers). Faults are real: SIGKILL of
a worker, of the scheduler, of the CLI. To kill a process *mid-run* without racing a fast run, the
processes that commit partitions get ``FACTORFLOW_TEST_COMMIT_DELAY`` (a sleep after each commit,
engine/manifest.py), and the test polls for committed manifests instead of sleeping.
"""
from __future__ import annotations

import os
import platform
import re
import signal
import subprocess
import sys
import time

import pytest

from factorflow.engine.manifest import read_manifest
from factorflow.engine.memory import MMAP_THRESHOLD

from run_helpers import (
    FACTORS,
    FREQ,
    assert_frames_close,
    factor_flags,
    file_bytes,
    make_store,
    make_tls_files,
    read_output,
    reference,
)

pytestmark = pytest.mark.cluster

DASK = [sys.executable, "-m", "dask"]
CLI = [sys.executable, "-m", "factorflow", "run", "--freq", FREQ, "--no-progress"]
DEADLINE = 240  # seconds; generous for a loaded 2-core machine


@pytest.fixture(scope="module")
def ticks(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("cl") / "ticks", days=12)


@pytest.fixture(scope="module")
def expected(ticks):
    return reference(ticks)


class DaskCluster:
    """``dask scheduler`` + ``dask worker`` processes on 127.0.0.1 (stopped by :meth:`stop`)."""

    def __init__(self, tmp, n_workers=2, env=None, tls=None, preload=True, memory_limit="2GiB"):
        self.tmp = tmp
        self.file = str(tmp / "scheduler.json")
        self.log = open(tmp / "cluster.log", "a")
        self.env = dict(os.environ, **(env or {}))
        self.tls = []
        if tls:
            self.tls = ["--tls-ca-file", tls["ca"], "--tls-cert", tls["cert"], "--tls-key", tls["key"]]
        self.procs = []
        if os.path.exists(self.file):
            os.remove(self.file)
        self.scheduler = self._start(DASK + ["scheduler", "--host", "127.0.0.1", "--port", "0",
                                             "--dashboard-address", "127.0.0.1:0", "--scheduler-file", self.file]
                                     + (["--protocol", "tls"] if tls else []) + self.tls)
        deadline = time.time() + DEADLINE
        while not os.path.exists(self.file):
            assert self.scheduler.poll() is None, self.logs()
            assert time.time() < deadline, "scheduler did not start\n" + self.logs()
            time.sleep(0.1)
        for _ in range(n_workers):
            self._start(DASK + ["worker", "--scheduler-file", self.file, "--host", "127.0.0.1", "--nthreads", "1",
                                "--dashboard-address", "127.0.0.1:0", "--memory-limit", memory_limit]
                        + (["--preload", "factorflow.cluster.preload"] if preload else []) + self.tls)
        self.client = self._client()
        self.client.wait_for_workers(n_workers, timeout=DEADLINE)

    def _start(self, cmd):
        p = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.procs.append(p)
        return p

    def _client(self):
        from distributed import Client
        from distributed.security import Security

        sec = None
        if self.tls:
            sec = Security(tls_ca_file=self.tls[1], tls_client_cert=self.tls[3], tls_client_key=self.tls[5],
                           require_encryption=True)
        return Client(scheduler_file=self.file, security=sec, timeout="60s", set_as_default=False)

    def worker_pids(self) -> dict:
        return self.client.run(os.getpid)

    def logs(self) -> str:
        self.log.flush()
        return (self.tmp / "cluster.log").read_text()[-4000:]

    def stop(self):
        try:
            self.client.close(timeout=10)
        except Exception:
            pass
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.log.close()


@pytest.fixture
def clusters(tmp_path):
    started = []

    def start(**kw):
        c = DaskCluster(tmp_path, **kw)
        started.append(c)
        return c

    yield start
    for c in started:
        c.stop()


@pytest.fixture
def procs():
    """CLI subprocesses, killed at teardown if still running."""
    started = []

    def start(args, env=None, **kw):
        p = subprocess.Popen(CLI + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, **(env or {})), start_new_session=True, **kw)
        started.append(p)
        return p

    yield start
    for p in started:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def _committed(out) -> list[str]:
    return sorted(d for d in (os.listdir(out) if os.path.isdir(out) else []) if d.startswith("date=")
                  and read_manifest(os.path.join(out, d), verify=False) is not None)


def _wait_for_commits(out, n, proc):
    deadline = time.time() + DEADLINE
    while len(_committed(out)) < n:
        if proc.poll() is not None:
            pytest.fail(f"the run ended before {n} commits: rc={proc.returncode}\n{proc.stderr.read()[-3000:]}")
        assert time.time() < deadline, f"fewer than {n} partitions committed in {DEADLINE} s"
        time.sleep(0.05)


def _finish(proc):
    out, err = proc.communicate(timeout=DEADLINE)
    return proc.returncode, out, err


def _check(out, expected, rtol=1e-12):
    got = read_output(out)
    assert sorted(got) == sorted(expected)
    for d in expected:
        assert_frames_close(got[d], expected[d], rtol=rtol, what=d)


def test_run_on_scheduler_and_two_workers(ticks, expected, clusters, procs, tmp_path):
    c = clusters(n_workers=2)
    out, report = tmp_path / "out", tmp_path / "report.html"
    p = procs(["--ticks", ticks, "--out", str(out), "--scheduler-file", c.file, "--performance-report", str(report),
               *factor_flags()])
    rc, stdout, stderr = _finish(p)
    assert rc == 0, stderr[-3000:]
    assert re.search(r"cluster: scheduler tcp://127\.0\.0\.1:\d+, 2 workers, 2 threads", stdout)
    assert re.search(r"dashboard: http://127\.0\.0\.1:\d+/status", stdout)
    assert "partitions   12 (12 written, 0 already committed)" in stdout
    _check(out, expected)
    assert report.stat().st_size > 10_000 and b"Dask Performance Report" in report.read_bytes()
    # the kernels were warmed on both workers at start (preload), and again by the run's plugin
    events = c.client.get_events("factorflow")
    assert len(events) == 4 and all(e[1]["operators"] > 20 for e in events), events
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        # worker processes raised malloc's mmap threshold (engine/memory.py)
        assert sum(e[1].get("mmap_threshold") == MMAP_THRESHOLD for e in events) >= 2, events
    # rerun: everything committed, nothing computed
    p = procs(["--ticks", ticks, "--out", str(out), "--scheduler-address", c.client.scheduler.address,
               *factor_flags()])
    rc, stdout, stderr = _finish(p)
    assert rc == 0 and "12 partitions already committed, 0 to compute" in stdout, stderr[-2000:]


def test_time_series_job_on_two_workers_splits_time_not_symbols(tmp_path_factory, clusters, procs, tmp_path):
    """Without a cross-section the planner splits symbols first (no halo); a job splits time
    instead, so each date is written where its rows are computed instead of gathering its symbol
    blocks from both workers (engine/job.py: _job_plan; engine/plan.py: choose_chunks)."""
    ticks = make_store(tmp_path_factory.mktemp("wide") / "ticks", days=9, symbols=160)
    factors = {k: v for k, v in FACTORS.items() if "cs_" not in v}
    c = clusters(n_workers=2)
    out = tmp_path / "out"
    rc, stdout, stderr = _finish(procs(["--ticks", ticks, "--out", str(out), "--scheduler-file", c.file,
                                        "--freq", "1min", *factor_flags(factors)]))
    assert rc == 0, stderr[-3000:]
    # 9 days x 390 rows x 160 symbols: for compute, 1 x 2 blocks of 80 symbols
    assert re.search(r"grid 2 x 1 blocks \(\d+, \d+ rows x 160 symbols\)", stdout), stdout
    # the reference runs one block per thread of this process: other chunks, rounding within 1e-9
    _check(out, reference(ticks, factors, freq="1min"), rtol=1e-9)


def test_cold_cache_workers_compile_once_per_host(ticks, expected, clusters, procs, tmp_path):
    """Two `dask worker --preload factorflow.cluster.preload` started together on an empty Numba
    cache (numba/numba#4807: processes compiling the same kernels race on the cache files): the
    per-host lock lets one compile and write the cache while the other waits, then loads it."""
    cache = tmp_path / "numba-cache"
    c = clusters(n_workers=2, env={"NUMBA_CACHE_DIR": str(cache)})
    deadline = time.time() + 30  # the preloads' events follow the workers' registration
    while len(events := [e[1] for e in c.client.get_events("factorflow")]) < 2 and time.time() < deadline:
        time.sleep(0.1)
    assert len(events) == 2 and all(e["action"] == "warm-kernels" for e in events), events
    first, second = sorted(events, key=lambda e: e["held"][0])
    assert first["held"][1] <= second["held"][0], f"the warm-ups overlapped: {events}"  # serialised
    compiled, loaded = (e["held"][1] - e["held"][0] for e in (first, second))
    assert loaded < compiled / 4, f"the second worker did not load the cache: {compiled:.1f} s vs {loaded:.1f} s"
    assert second["lock_wait_seconds"] > compiled / 2, events  # it waited for the first one's compile
    assert len(list(cache.rglob("*.nbi"))) > 20 and len(list(cache.rglob("*.nbc"))) > 20
    assert "Traceback" not in c.logs() and "NumbaWarning" not in c.logs(), c.logs()
    out = tmp_path / "out"
    rc, _, stderr = _finish(procs(["--ticks", ticks, "--out", str(out), "--scheduler-file", c.file, *factor_flags()]))
    assert rc == 0, stderr[-3000:]
    _check(out, expected)


def test_worker_killed_mid_run_still_completes(ticks, expected, clusters, procs, tmp_path):
    c = clusters(n_workers=2, env={"FACTORFLOW_TEST_COMMIT_DELAY": "0.5"}, preload=False)
    out = tmp_path / "out"
    p = procs(["--ticks", ticks, "--out", str(out), "--scheduler-file", c.file, *factor_flags()])
    _wait_for_commits(out, 1, p)
    victim = sorted(c.worker_pids().values())[0]
    os.kill(victim, signal.SIGKILL)  # its results in memory are lost; the nanny starts a new worker
    assert len(_committed(out)) < 12, "the run finished before the kill: nothing was tested"
    rc, stdout, stderr = _finish(p)
    assert rc == 0, stderr[-3000:]
    _check(out, expected)


def test_scheduler_killed_exits_nonzero_and_rerun_finishes(ticks, expected, clusters, procs, tmp_path):
    c = clusters(n_workers=2, env={"FACTORFLOW_TEST_COMMIT_DELAY": "0.5"}, preload=False)
    out = tmp_path / "out"
    p = procs(["--ticks", ticks, "--out", str(out), "--scheduler-file", c.file, *factor_flags()])
    _wait_for_commits(out, 2, p)
    c.scheduler.send_signal(signal.SIGKILL)
    rc, stdout, stderr = _finish(p)
    assert rc == 3, (rc, stderr[-3000:])
    assert "cluster error: lost the connection to the Dask scheduler" in stderr
    assert "Committed partitions are intact; rerun" in stderr
    done = _committed(out)
    assert 2 <= len(done) < 12
    for d in done:  # committed partitions verify (size and checksum) and hold the right numbers
        assert read_manifest(str(out / d)) is not None
        assert_frames_close(read_output(out)[d.removeprefix("date=")], expected[d.removeprefix("date=")],
                            rtol=1e-12, what=d)
    c.stop()
    c2 = clusters(n_workers=2, preload=False)
    p = procs(["--ticks", ticks, "--out", str(out), "--scheduler-file", c2.file, *factor_flags()])
    rc, stdout, stderr = _finish(p)
    assert rc == 0, stderr[-3000:]
    m = re.search(r"(\d+) partitions already committed, (\d+) to compute", stdout)
    assert int(m.group(1)) >= len(done) and int(m.group(1)) + int(m.group(2)) == 12
    _check(out, expected)


def test_cli_killed_mid_run_then_rerun_gives_the_same_files(ticks, procs, tmp_path):
    """Embedded cluster: the commits run in the CLI process, which is SIGKILLed after 3 of them."""
    clean = tmp_path / "clean"
    rc, _, err = _finish(procs(["--ticks", ticks, "--out", str(clean), "--dashboard-address", "127.0.0.1:0",
                                *factor_flags()]))
    assert rc == 0, err[-3000:]
    out = tmp_path / "out"
    p = procs(["--ticks", ticks, "--out", str(out), "--dashboard-address", "127.0.0.1:0", *factor_flags()],
              env={"FACTORFLOW_TEST_COMMIT_DELAY": "0.5"})
    _wait_for_commits(out, 3, p)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    done = _committed(out)
    assert 3 <= len(done) < 12
    rc, stdout, err = _finish(procs(["--ticks", ticks, "--out", str(out), "--dashboard-address", "127.0.0.1:0",
                                     *factor_flags()]))
    assert rc == 0, err[-3000:]
    assert f"{len(done)} partitions already committed, {12 - len(done)} to compute" in stdout
    assert file_bytes(out) == file_bytes(clean)
    leftovers = [f for f in os.listdir(out / done[0]) if f.startswith(".")]
    assert not leftovers


def test_out_of_memory_names_the_partition_and_hints(tmp_path_factory, clusters, procs, tmp_path):
    """A real out-of-memory kill: one block of 80 factors needs ~3 GB on a worker limited to 1 GiB.

    The nanny terminates the worker when its memory passes 95% of the limit; with
    ``allowed-failures=0`` the scheduler gives up on the task at once (by default it would retry it
    three times on fresh workers, each killed the same way) and the CLI reports it. Which task
    dies is the machine's business (on a cold Numba cache the bars tasks compile kernels and may
    cross the line first): the message must name its partition dates either way.
    """
    ticks = make_store(tmp_path_factory.mktemp("oom") / "ticks", days=2, symbols=100)
    c = clusters(n_workers=1, memory_limit="1GiB", preload=False,
                 env={"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"})
    out = tmp_path / "out"
    flags = []
    for k in range(2, 82):  # 80 outputs of 2 x 23400 x 100 float64 cells (37 MB each) in one task
        flags += ["--factor", f"m{k}=ts_mean(close, {k})"]
    p = subprocess.Popen([sys.executable, "-m", "factorflow", "run", "--freq", "1s", "--no-progress", "--ticks", ticks,
                          "--out", str(out), "--scheduler-file", c.file, "--chunks", "46800,100", *flags],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        rc, stdout, stderr = _finish(p)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert rc == 4, (rc, stdout[-2000:], stderr[-3000:])
    assert re.search(r"computation failed: KilledWorker while computing task ff-(local|bars)\S* "
                     r"\(partition date=2024-01-0[23]( \.\. 2024-01-03)?\)", stderr), stderr[-3000:]
    assert ("a worker died or ran out of memory. Hint: use smaller chunks (this run's blocks were up to 46,800 "
            "rows x 100 symbols (4.68 M cells per field); e.g. --chunks 11700,100)") in stderr, stderr[-3000:]
    # the nanny says why it killed the worker
    assert re.search(r"exceeded 95% memory budget", c.logs()), c.logs()[-3000:]
    # nothing committed, nothing half-written
    assert _committed(out) == []
    assert not [f for _, _, files in os.walk(out) for f in files if f.endswith(".parquet") or f.startswith(".")]


def test_tls_run(ticks, expected, clusters, procs, tmp_path):
    tls = make_tls_files(tmp_path)
    c = clusters(n_workers=2, tls=tls, preload=False)
    assert c.client.scheduler.address.startswith("tls://127.0.0.1:")
    out = tmp_path / "out"
    flags = ["--tls-ca-file", tls["ca"], "--tls-cert", tls["cert"], "--tls-key", tls["key"]]
    rc, stdout, stderr = _finish(procs(["--ticks", ticks, "--out", str(out), "--scheduler-file", c.file, *flags,
                                        *factor_flags()]))
    assert rc == 0, stderr[-3000:]
    assert "cluster: scheduler tls://127.0.0.1:" in stdout
    _check(out, expected)
    # the Python API takes a Security object instead of the three files
    from distributed.security import Security

    from factorflow.engine.job import JobSpec, run_job

    sec = Security(tls_ca_file=tls["ca"], tls_client_cert=tls["cert"], tls_client_key=tls["key"],
                   require_encryption=True)
    spec = JobSpec(ticks=ticks, out=str(tmp_path / "o3"), freq=FREQ, end="2024-01-04", scheduler_file=c.file,
                   security=sec, factor=[a for a in factor_flags() if a != "--factor"])
    assert run_job(spec, echo=lambda s: None)["written"] == 3
    # without the certificates the scheduler refuses the client: a cluster error, exit 3
    rc, _, stderr = _finish(procs(["--ticks", ticks, "--out", str(tmp_path / "o2"), "--scheduler-file", c.file,
                                   *factor_flags()]))
    assert rc == 3 and "cluster error" in stderr, stderr[-2000:]
