"""Pinning a batch job's graph to workers (engine/placement.py: pin_to_workers) and the worker
process settings (engine/memory.py: configure_worker_process)."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from operator import add

import dask
import pytest

from factorflow.engine.placement import pin_to_workers

W = {"tcp://127.0.0.1:2": 1, "tcp://127.0.0.1:1": 1}  # sorted: ...:1 is worker 0


def job_graph(days=8, per_block=2, halo=False):
    """The shape of a `factorflow run` graph: bars per date (roots) -> stage blocks of
    ``per_block`` dates -> a scan whose carry crosses blocks -> one commit per date, plus a
    state task reading every block. ``halo``: each final block also reads the previous scan
    block (the halo rows of a window stage over the scan's output)."""
    dsk = {}
    for d in range(days):
        dsk[("bars", d)] = (add, d, 0)
    blocks = days // per_block
    for b in range(blocks):
        dsk[("local", b)] = (sum, [("bars", d) for d in range(b * per_block, (b + 1) * per_block)])
        dsk[("scan", b)] = (add, ("local", b), ("scan", b - 1)) if b else (add, ("local", b), 0)
        dsk[("final", b)] = (add, ("scan", b), ("local", b))
        if halo and b:
            dsk[("final", b)] = (sum, [("scan", b), ("local", b), ("scan", b - 1)])
        for d in range(b * per_block, (b + 1) * per_block):
            dsk[("commit", d)] = (add, ("final", b), d)
    dsk["state"] = (sum, [("scan", b) for b in range(blocks)])
    return dsk, [("commit", d) for d in range(days)]


def _annotations(hlg):
    out = {}
    for layer in hlg.layers.values():
        for k in layer:
            out[k] = layer.annotations or {}
    return out


def test_partitions_are_dealt_in_contiguous_runs_and_upstream_follows():
    dsk, commits = job_graph()
    hlg = pin_to_workers(dsk, commits, W)
    ann = _annotations(hlg)
    assert set(ann) == set(dsk)  # nothing lost, nothing added
    first, second = "tcp://127.0.0.1:1", "tcp://127.0.0.1:2"
    for d in range(8):
        want = [first] if d < 4 else [second]
        assert ann[("commit", d)]["workers"] == want
        assert ann[("bars", d)]["workers"] == want  # the bars of a date go where its block is
        assert ann[("commit", d)]["allow_other_workers"] is True  # loose: a dead worker is no dead end
    for b in range(4):
        assert ann[("final", b)]["workers"] == ([first] if b < 2 else [second])
    assert "workers" not in ann["state"]  # no partition needs it: left to the scheduler


def test_what_another_worker_waits_for_runs_first():
    dsk, commits = job_graph()
    ann = _annotations(pin_to_workers(dsk, commits, W))
    # the scan carry of block 1 (worker 0) feeds block 2 (worker 1): it and its ancestors on
    # worker 0 get priority; worker 0's commits and final blocks do not
    for k in [("scan", 1), ("scan", 0), ("local", 1), ("local", 0), ("bars", 0), ("bars", 3)]:
        assert ann[k].get("priority") == 1, k
    for k in [("final", 0), ("final", 1), ("commit", 0), ("scan", 2), ("bars", 5)]:
        assert "priority" not in ann[k], k


def test_halo_and_carry_stay_with_the_block_they_come_from():
    """A scan block read by the next block twice (its carry and its halo rows) and by its own
    block once stays on its own worker: moved to the next one, it would pull its inputs (every
    bars block of its dates) across."""
    dsk, commits = job_graph(halo=True)
    ann = _annotations(pin_to_workers(dsk, commits, W))
    first, second = "tcp://127.0.0.1:1", "tcp://127.0.0.1:2"
    for b in range(4):
        want = [first] if b < 2 else [second]
        assert ann[("scan", b)]["workers"] == want and ann[("local", b)]["workers"] == want, b
    assert ann[("scan", 1)].get("priority") == 1  # the next worker waits for it


def test_free_row_slices_run_first_where_the_scheduler_puts_them():
    """A partition straddling two blocks reads row slices of both (``free``): unpinned, and run
    before the other commits of the worker that holds the block."""
    dsk, commits = job_graph()
    dsk[("rows", 0)] = (add, ("final", 1), 0)  # a partition of worker 1 reading rows of block 1
    dsk[commits[4]] = (add, ("final", 2), ("rows", 0))
    ann = _annotations(pin_to_workers(dsk, commits, W, free=[("rows", 0)]))
    assert "workers" not in ann[("rows", 0)] and ann[("rows", 0)]["priority"] == 1
    assert "priority" not in ann[commits[2]]
    assert ann[("final", 1)]["workers"] == ["tcp://127.0.0.1:1"]


def test_thread_shares_and_extra_annotations():
    dsk, commits = job_graph(days=9, per_block=3)
    ann = _annotations(pin_to_workers(dsk, commits, {"tcp://a": 2, "tcp://b": 1}, {"resources": {"GPU": 1}}))
    assert [ann[c]["workers"][0] for c in commits] == ["tcp://a"] * 6 + ["tcp://b"] * 3
    assert all(a.get("resources") == {"GPU": 1} for a in ann.values())


def test_nothing_to_pin():
    dsk, commits = job_graph()
    assert pin_to_workers(dsk, commits, {"tcp://a": 4}) is None
    assert pin_to_workers(dsk, commits[:1], W) is None


def test_pinned_graph_computes_the_same():
    dsk, commits = job_graph()
    hlg = pin_to_workers(dsk, commits, W)
    keys = commits + ["state"]
    assert dask.get(dict(hlg), keys) == dask.get(dsk, keys)


@pytest.mark.skipif(not (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"), reason="glibc only")
def test_configure_worker_process_in_a_fresh_process():
    code = (
        "import os, sys\n"
        "from factorflow.engine.memory import configure_worker_process, MMAP_THRESHOLD\n"
        "os.environ.pop('POLARS_MAX_THREADS', None)\n"
        "got = configure_worker_process(3)\n"
        "assert got == {'mmap_threshold': MMAP_THRESHOLD, 'polars_threads': 3}, got\n"
        "import polars\n"
        "assert polars.thread_pool_size() == 3, polars.thread_pool_size()\n"
        "os.environ['FACTORFLOW_MALLOC_MMAP_THRESHOLD'] = '0'\n"
        "got = configure_worker_process(3)\n"  # polars already imported: its pool is left alone
        "assert got == {'mmap_threshold': None, 'polars_threads': None}, got\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("POLARS_MAX_THREADS", "FACTORFLOW_MALLOC_MMAP_THRESHOLD")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_empty_buffers_are_resident_from_the_threshold_up():
    """engine/memory.py: empty() faults a large buffer in at once (madvise), leaves small ones
    to fault in where they are written, and hands out ordinary writable arrays either way. In a
    fresh process, so that no other thread's allocations or frees move the RSS meanwhile."""
    code = (
        "import sys, numpy as np, psutil\n"
        "from factorflow.engine import memory\n"
        "if not memory._libc_madvise():\n"
        "    print('skip'); sys.exit(0)\n"
        "rss = lambda: psutil.Process().memory_info().rss\n"
        "before = rss()\n"
        "big = memory.empty((4, 1000, 4000))\n"  # 128 MB
        "grown = rss() - before\n"
        "assert grown > 0.95 * big.nbytes, (grown, big.nbytes)\n"
        "small = memory.empty((100, 1000), np.float32)\n"  # 400 kB, under POPULATE_MIN_BYTES
        "assert small.shape == (100, 1000) and small.dtype == np.float32\n"
        "for a in (big, small):\n"
        "    a[...] = 2.0\n"
        "    assert a.sum() == 2.0 * a.size\n"
        "before = rss()\n"
        "lazy = np.empty((4, 1000, 4000))\n"  # what empty() avoids: nothing resident until written
        "assert rss() - before < 0.5 * lazy.nbytes\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    if r.stdout.strip() == "skip":
        pytest.skip("no madvise(MADV_POPULATE_WRITE) here (Linux >= 5.14): empty() is np.empty")
    assert r.stdout.strip() == "ok", r.stdout


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("populate", [True, False], ids=["madvise", "zeroing"])
def test_touch_pages_faults_in_parallel_also_in_a_forked_child(populate):
    """engine/memory.py: touch_pages faults a fresh result in from several threads (by
    ``MADV_POPULATE_WRITE`` where the kernel has it, else by zeroing): afterwards the whole array
    is resident, also in a process forked after it ran (Dask's and users' multiprocessing may fork
    a process that used it)."""
    code = (
        "import os, numpy as np, psutil\n"
        "from factorflow.engine import memory\n"
        f"if not {populate}: memory._madvise = False\n"
        "def check():\n"
        "    a = np.empty((3, 1000, 5000))\n"
        "    before = psutil.Process().memory_info().rss\n"
        "    n = memory.touch_pages(a, threads=3)\n"
        "    grown = psutil.Process().memory_info().rss - before\n"
        "    a[...] = 1.0\n"  # and still an ordinary writable array
        "    return n == 3 and grown > 0.95 * a.nbytes and a.sum() == a.size\n"
        "assert check()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os._exit(0 if check() else 1)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "assert os.waitstatus_to_exitcode(status) == 0, status\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
