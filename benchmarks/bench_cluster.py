"""A production job on real `dask scheduler` + `dask worker` processes: 1 vs 2 workers, task overhead.

Questions:

* **Scaling.** Multi-day jobs (ticks -> 1min bars -> factors -> committed Parquet partitions,
  exactly what ``factorflow run --scheduler-file`` does) on 1 worker process vs 2 (1 thread each):
  how much faster with 2? The target on the 2-core machine is >= 1.7x. Two jobs (``--jobs``):
  ``window``, 14 window-heavy factors (``ts_rank`` 240, ``ts_median`` 120, ...; ~3 s a run on one
  worker, so Dask's fixed costs weigh), and ``alpha158``, Qlib's Alpha158 library, the nightly job
  of the field (158 factors, ~30 s a run on one worker, most of it writing 616 M cells).
* **Per-task scheduler overhead.** Wall time per task of a graph of trivial tasks on the same
  2-worker cluster (the floor a factorflow task must carry tens of milliseconds of work above).

* **Where the 2-worker time goes.** From Dask's task stream of every timed run: the task time
  (seconds the tasks computed, all workers together: the same job on 2 workers should not take
  more of it than on 1), and how busy the workers were over the compute+write wall time
  (``busy``) with the gap between the first and the last worker to finish (``tail``).
* **The CPU account.** CPU seconds per run of every thread of the cluster's processes and of this
  (client) process, from the job's plan line to its end (psutil, per thread, named by Python's
  ``threading``): the workers' task threads against Dask's own work (worker event loops, other
  worker threads such as Arrow's and Polars' pools, nannies, scheduler, client). On 1 worker
  Dask's own work runs on the otherwise idle second core; on 2 workers it shares the two cores
  with the tasks, so a 2-worker run cannot take less than (task CPU + Dask's CPU) / 2, and the
  ratio cannot exceed the 1-worker time over that (printed as the *CPU bound*).

Method: ``--rounds`` rounds, each starting a 1-worker cluster and then a 2-worker cluster; on each,
``common.measure`` (one warm-up run, then ``--repeat`` timed runs, with the CPU load of this process
tree and of the rest of the machine). The medians are over all timed runs of all rounds:
interleaving keeps a slow phase of the shared host from landing on one side only (the 2-worker
runs of one cluster start vary by up to 30% between phases). Each timed job run recomputes every
partition (``force``) into the same output folder; only the compute+write phase is timed (the
cluster is already up and its kernels warm). The scheduler and workers are started and stopped
here, on 127.0.0.1.

    .venv/bin/python benchmarks/bench_cluster.py                  # ~15 minutes (window ~5, alpha158 ~10)
    .venv/bin/python benchmarks/bench_cluster.py --jobs window    # ~5 minutes
    .venv/bin/python benchmarks/bench_cluster.py --days 4 --symbols 100 --rounds 1 --repeat 2   # quick look
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))

from common import environment, measure, wait_quiet  # noqa: E402

FACTORS = {  # window-heavy: ts_rank and ts_median cost O(window) per cell
    "rank240": "ts_rank(close, 240)",
    "rank240v": "ts_rank(volume, 240)",
    "rank240h": "ts_rank(high, 240)",
    "rank240l": "ts_rank(low, 240)",
    "med120": "ts_median(close, 120) / close",
    "med120v": "ts_median(volume, 120)",
    "corr60": "ts_corr(close, log(volume + 1), 60)",
    "skew60": "ts_skew(close / delay(close, 1) - 1, 60)",
    "kurt60": "ts_kurt(close / delay(close, 1) - 1, 60)",
    "decay60": "decay_linear(close, 60) / close",
    "argmax120": "ts_argmax(high, 120)",
    "std120": "ts_std(close, 120)",
    "macd": "ema(close, 12) - ema(close, 26)",
    "cs": "cs_rank(ts_mean(volume, 30))",
}


def _thread_names() -> dict:
    """``{native thread id: name}`` of the calling process (run in the workers and the scheduler)."""
    import threading

    return {t.native_id: t.name for t in threading.enumerate()}


class CpuAccount:
    """CPU seconds of every thread of a :class:`Cluster`'s processes and of this process, by role.

    ``start()`` before a run and ``stop()`` after it return nothing and add one run's seconds per
    role to ``runs``: ``tasks`` (the workers' ``Dask-Default-Threads``), ``worker loops`` (their
    main threads: the event loop), ``other worker threads``, ``nannies``, ``scheduler`` and
    ``client`` (this process).
    """

    ROLES = ("tasks", "worker loops", "other worker threads", "nannies", "scheduler", "client")

    def __init__(self, cluster: "Cluster"):
        import psutil

        client = cluster.client
        self.procs = []  # (kind, psutil.Process, names)
        worker_pids = client.run(os.getpid)
        for pid in worker_pids.values():
            self.procs.append(("worker", psutil.Process(pid), {}))
        self.procs.append(("scheduler", psutil.Process(client.run_on_scheduler(os.getpid)), {}))
        for p in cluster.procs[1:]:  # `dask worker` processes: the nannies (the workers are their children)
            self.procs.append(("nanny", psutil.Process(p.pid), {}))
        self.procs.append(("client", psutil.Process(), {}))
        self.client = client
        self.worker_pids = worker_pids
        self.runs: list[dict] = []
        self._t0 = None

    def _names(self) -> None:  # threads start lazily (the task thread on the first task): ask again
        by_pid = {self.worker_pids[a]: names for a, names in self.client.run(_thread_names).items()}
        for kind, proc, names in self.procs:
            if kind == "worker":
                names.update(by_pid.get(proc.pid, {}))

    def _role(self, kind: str, names: dict, tid: int) -> str:
        if kind != "worker":
            return {"nanny": "nannies"}.get(kind, kind)
        name = names.get(tid, "")
        if name.startswith("Dask-Default-Threads"):
            return "tasks"
        return "worker loops" if name == "MainThread" else "other worker threads"

    def _snapshot(self) -> dict:
        out = {}
        for kind, proc, names in self.procs:
            for t in proc.threads():
                out[(kind, proc.pid, t.id)] = t.user_time + t.system_time
        return out

    def start(self) -> None:
        self._names()
        self._t0 = self._snapshot()

    def stop(self) -> None:
        t1 = self._snapshot()
        names = {proc.pid: names for _, proc, names in self.procs}
        run = dict.fromkeys(self.ROLES, 0.0)
        for (kind, pid, tid), cpu in t1.items():
            run[self._role(kind, names[pid], tid)] += cpu - self._t0.get((kind, pid, tid), 0.0)
        self.runs.append(run)


def cpu_line(runs: list[dict]) -> tuple[str, float, float]:
    """``(text, task CPU, Dask's CPU)``: medians per run over ``runs`` (CpuAccount.runs)."""
    med = {r: statistics.median(x[r] for x in runs) for r in CpuAccount.ROLES}
    own = sum(v for r, v in med.items() if r != "tasks")
    parts = ", ".join(f"{r} {med[r]:.2f}" for r in CpuAccount.ROLES[1:])
    return f"task threads {med['tasks']:.2f} CPU-s, Dask's own {own:.2f} ({parts})", med["tasks"], own


class Cluster:
    def __init__(self, tmp: str, n_workers: int):
        self.file = os.path.join(tmp, f"scheduler-{n_workers}.json")
        if os.path.exists(self.file):
            os.remove(self.file)
        self.log = open(os.path.join(tmp, f"cluster-{n_workers}.log"), "w")
        dask = [sys.executable, "-m", "dask"]
        self.procs = [self._start(dask + ["scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address",
                                          "127.0.0.1:0", "--scheduler-file", self.file])]
        t0 = time.time()
        while not os.path.exists(self.file):
            if time.time() - t0 > 120:
                raise RuntimeError("scheduler did not start")
            time.sleep(0.1)
        for _ in range(n_workers):
            self.procs.append(self._start(dask + ["worker", "--scheduler-file", self.file, "--host", "127.0.0.1",
                                                  "--nthreads", "1", "--dashboard-address", "127.0.0.1:0",
                                                  "--preload", "factorflow.cluster.preload"]))
        from distributed import Client

        self.client = Client(scheduler_file=self.file, set_as_default=False)
        self.client.wait_for_workers(n_workers, timeout=180)

    def _start(self, cmd):
        return subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self):
        self.client.close()
        for p in self.procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        self.log.close()


def task_overhead(client, n: int) -> float:
    """Seconds of wall time per trivial task (``n`` independent tasks + one gather)."""
    import dask

    def graph():
        return [dask.delayed(int, pure=False)(i) for i in range(n)]

    def run():
        futures = client.compute(graph())
        client.gather(futures)

    _, t = measure(run, repeat=3)
    return t.median_s / n


def stream_stats(records, n_workers: int, wall: float) -> dict:
    """Task time, busy fraction and tail of one run from ``get_task_stream`` records."""
    per_worker: dict = {}
    for r in records:
        for x in r.get("startstops", ()):
            if x.get("action") == "compute":
                busy, last = per_worker.get(r["worker"], (0.0, 0.0))
                per_worker[r["worker"]] = (busy + x["stop"] - x["start"], max(last, x["stop"]))
    task = sum(b for b, _ in per_worker.values())
    lasts = [last for _, last in per_worker.values()]
    return {"task_s": task, "busy": task / (n_workers * wall) if wall > 0 else float("nan"),
            "tail_s": max(lasts) - min(lasts) if len(lasts) > 1 else 0.0}


def _stream_line(stats: list, n_workers: int) -> str:
    def each(key, fmt):
        return ", ".join(format(x[key], fmt) for x in stats)

    line = f"task time {each('task_s', '.2f')} s, workers busy {each('busy', '.0%')}"
    return line + (f", tail {each('tail_s', '.2f')} s" if n_workers > 1 else "")


JOBS = {  # name -> (description, JobSpec factor options)
    "window": (f"{len(FACTORS)} window-heavy factors", {"factor": [f"{k}={v}" for k, v in FACTORS.items()]}),
    "alpha158": ("Qlib's Alpha158 library (158 factors)", {"library": ["alpha158"]}),
}


def scaling(job: str, ticks: str, tmp: str, args, overhead: bool) -> dict:
    """One job's rounds of 1-worker and 2-worker clusters; prints its report, returns the medians."""
    from distributed import get_task_stream

    from factorflow.engine.job import JobSpec, run_job

    what, options = JOBS[job]
    print(f"\n== job {job!r}: {what}", flush=True)
    runs = {1: [], 2: []}  # timed compute+write seconds, all rounds
    whole = {1: [], 2: []}
    cpu = {1: [], 2: []}
    streams = {1: [], 2: []}  # stream_stats of every timed run
    plans = {}  # the job's plan line per worker count (stages, tasks, block grid, lookback)
    accounts = {1: [], 2: []}  # CpuAccount.runs of every timed run
    per_task, summary = None, None
    for r in range(args.rounds):
        for n in (1, 2):
            cluster = Cluster(tmp, n)
            try:
                out = os.path.join(tmp, f"out-{job}-{n}")
                spec = JobSpec(ticks=ticks, out=out, freq="1min", scheduler_file=cluster.file, force=True,
                               chunks=args.chunks, **options)
                wait_quiet(args.quiet_wait)
                phases, stats = [], []
                account = CpuAccount(cluster)

                def run(spec=spec, phases=phases, stats=stats, n=n, client=cluster.client, account=account):
                    def echo(line, n=n):  # keep the planner's line: "plan: ... grid ..."
                        if line.startswith("plan:"):
                            plans[n] = line[len("plan:"):].strip()
                            account.start()  # the compute+write phase follows the plan line

                    with get_task_stream(client=client) as ts:
                        s = run_job(spec, echo=echo)
                        account.stop()
                    phases.append(s["compute_seconds"])
                    stats.append(stream_stats(ts.data, n, s["compute_seconds"]))
                    return s

                summary, t = measure(run, repeat=args.repeat)
                runs[n] += phases[1:]  # the first call is measure's warm-up
                streams[n] += stats[1:]
                accounts[n] += account.runs[1:]
                whole[n] += list(t.all_s)
                cpu[n].append(t.cpu_ratio or float("nan"))
                print(f"round {r + 1}, {n} worker(s): compute+write {', '.join(f'{x:.2f}' for x in phases[1:])} s; "
                      f"cpu/wall {t.cpu_ratio or float('nan'):.2f}, other load "
                      f"{t.other_load if t.other_load is not None else float('nan'):.2f}, "
                      f"loadavg {os.getloadavg()[0]:.2f}; {_stream_line(stats[1:], n)}; "
                      f"{cpu_line(account.runs[1:])[0]}", flush=True)
                if overhead and n == 2 and r == args.rounds - 1:
                    wait_quiet(args.quiet_wait)
                    per_task = task_overhead(cluster.client, args.tasks)
            finally:
                cluster.stop()
    med = {n: statistics.median(v) for n, v in runs.items()}
    print(f"\njob {job!r}: {what}, 1min bars, {args.symbols} symbols x {args.days} days "
          f"({summary['rows']:,} rows, {summary['cells']:,} cells, {summary['written']} partitions)")
    for n in (1, 2):
        print(f"{n} worker(s): plan {plans.get(n, '?')}")
    for n in (1, 2):
        print(f"{n} worker(s): compute+write median {med[n]:.2f} s of {len(runs[n])} "
              f"({args.rounds} rounds x {args.repeat}; whole run incl. planning {statistics.median(whole[n]):.2f} s), "
              f"{summary['cells'] / med[n] / 1e6:.1f} Mcells/s; cpu/wall {statistics.median(cpu[n]):.2f}")
    task = {n: statistics.median(x["task_s"] for x in v) for n, v in streams.items()}
    print(f"task time per run (all workers): 1 worker {task[1]:.2f} s, 2 workers {task[2]:.2f} s "
          f"({task[2] / task[1] - 1:+.0%}); 2 workers busy "
          f"{statistics.median(x['busy'] for x in streams[2]):.0%} of the compute+write wall, tail "
          f"{statistics.median(x['tail_s'] for x in streams[2]):.2f} s (medians)")
    for n in (1, 2):
        print(f"CPU per run, {n} worker(s) (medians): {cpu_line(accounts[n])[0]}")
    _, tasks2, own2 = cpu_line(accounts[2])
    print(f"CPU bound on 2 cores: a 2-worker run needs {tasks2 + own2:.2f} CPU-s, so it takes at least "
          f"{(tasks2 + own2) / 2:.2f} s and the ratio is at most {med[1] / ((tasks2 + own2) / 2):.2f}x "
          f"at the 1-worker median; measured {med[1] / med[2]:.2f}x")
    if per_task is not None:
        print(f"per-task scheduler overhead: {per_task * 1e3:.2f} ms per trivial task ({args.tasks} tasks, 2 workers; "
              "median of 3)")
    print(f"scaling 1 -> 2 workers, job {job!r}: {med[1] / med[2]:.2f}x (target >= 1.7x); "
          f"{summary['cells'] / med[1] / 1e6:.1f} -> {summary['cells'] / med[2] / 1e6:.1f} Mcells/s", flush=True)
    return {"job": job, 1: med[1], 2: med[2], "ratio": med[1] / med[2]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", default="window,alpha158", help=f"comma-separated, of: {', '.join(JOBS)}")
    ap.add_argument("--symbols", type=int, default=500)
    ap.add_argument("--days", type=int, default=20)
    ap.add_argument("--ticks-per-day", type=float, default=300.0)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per cluster start")
    ap.add_argument("--rounds", type=int, default=3,
                    help="1-worker and 2-worker clusters started in turn this many times (the host's slow "
                         "phases then fall on both sides)")
    ap.add_argument("--chunks", default=None, help="TIME[,SYMBOL] blocks of the job (default: planned)")
    ap.add_argument("--tasks", type=int, default=2000, help="trivial tasks for the overhead measurement")
    ap.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "factorflow-bench-cluster"))
    ap.add_argument("--quiet-wait", type=float, default=20.0)
    args = ap.parse_args()
    jobs = [j.strip() for j in args.jobs.split(",") if j.strip()]
    unknown = [j for j in jobs if j not in JOBS]
    if unknown or not jobs:
        ap.error(f"--jobs: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(JOBS)}")

    import factorflow as ff

    print(environment())
    ticks = os.path.join(args.data_dir, f"ticks-{args.symbols}x{args.days}-{args.ticks_per_day:g}")
    if not os.path.isdir(ticks):
        info = ff.generate_ticks(ticks, symbols=args.symbols, days=args.days, seed=0, ticks_per_day=args.ticks_per_day)
        print(f"generated {info['ticks']:,} ticks into {ticks}", file=sys.stderr)
    tmp = tempfile.mkdtemp(prefix="ff-bench-cluster-")
    try:
        results = [scaling(job, ticks, tmp, args, overhead=k == 0) for k, job in enumerate(jobs)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    for r in results:
        print(f"scaling 1 -> 2 workers, job {r['job']!r}: {r[1]:.2f} s -> {r[2]:.2f} s, {r['ratio']:.2f}x "
              "(target >= 1.7x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
