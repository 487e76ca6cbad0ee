"""GPU benchmark: CUDA kernels against the device's copy bandwidth, and the GPU backend against
the CPU backend on the same factor set.

Method
------
* Roofline: a device-to-device copy of the input (CuPy's ``copy`` when CuPy is installed, else
  Numba's ``copy_to_device``) moves ``2 * 8`` bytes per float64 cell; every kernel row reports its
  effective bandwidth as ``2 * 8 * cells / time`` (one read, one write: the least any of them must
  move) and that as a percentage of the copy bandwidth measured in the same run. Target for the
  EMA scan: >= 60 %.
* Kernels (data already on the device, output preallocated, ``cuda.synchronize()`` inside the
  timing): ``ema`` (span 20, the three-phase scan of ``kernels/cuda/recursive.py``) on a single
  series of ``--series`` cells and on a ``--panel`` T x N panel; ``ts_mean(20)`` on the panel.
* Factor set: the demo's 10 factors (``factorflow.demo.DEMO_FACTORS``: EMAs, delays, rolling
  moments, min/max, correlation, ``cs_zscore``, ``cs_rank``, ``ts_rank``) with ``ff.compute`` on a
  ``--factor-panel`` panel held in host memory, result gathered to host memory:
  ``backend="gpu"`` (one GPU worker, transfers included) against ``backend="cpu"`` on Dask's
  threaded scheduler with 2 threads (the 2-core figure of the target, >= 20x) and with all cores.
  GPU results are checked against the CPU ones (rtol 1e-9).
* Timing: one warm-up call (compilation), then the median of ``--repeat`` calls; the load average
  is printed with the figures (GPU rows are not CPU-bound, the CPU rows are).

``--simulate`` runs everything under the Numba CUDA simulator at toy sizes: it checks that the
script works on a machine without a GPU. Its timings are meaningless and labelled so.

Run: ``python benchmarks/bench_gpu.py`` (on a GPU machine; ``pip install -e '.[gpu]'``).
"""
from __future__ import annotations

import argparse
import os
import sys

if "--simulate" in sys.argv:  # before numba is imported anywhere
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import environment, measure  # noqa: E402

import factorflow as ff  # noqa: E402
from factorflow.demo import DEMO_FACTORS  # noqa: E402


def _shape(text: str) -> tuple[int, int]:
    t, _, n = text.lower().partition("x")
    return int(t), int(n or 1)


def _sync():
    from numba import cuda

    cuda.synchronize()


def _walk(rng, shape, dtype=np.float64):
    x = 100 + np.cumsum(rng.standard_normal(shape), axis=0)
    x[rng.random(shape) < 0.01] = np.nan
    return x.astype(dtype)


def copy_bandwidth(d, repeat):
    """Device-to-device copy of ``d``: bytes moved per second (read + write)."""
    try:
        import cupy

        src = cupy.asarray(d)
        dst = cupy.empty_like(src)

        def run():
            dst[...] = src
            cupy.cuda.runtime.deviceSynchronize()
        how = "cupy"
    except ImportError:
        from numba import cuda

        dst = cuda.device_array_like(d)

        def run():
            dst.copy_to_device(d)
            _sync()
        how = "numba"
    _, t = measure(run, repeat=repeat)
    return 2 * d.size * d.dtype.itemsize / t.median_s, t, how


def kernel_rows(series, panel, repeat, rng):
    from factorflow.kernels.cuda import recursive, rolling
    from numba import cuda

    rows = []
    x1 = cuda.to_device(_walk(rng, (series, 1)))
    xp = cuda.to_device(_walk(rng, panel))
    bw, tcopy, how = copy_bandwidth(xp, repeat)
    rows.append((f"D2D copy {panel[0]}x{panel[1]} ({how})", xp.size, tcopy, 1.0))

    def ema(x):
        out = cuda.device_array_like(x)

        def run():
            state = cuda.to_device(recursive.ewm_init_state(x.shape[1]))
            recursive.ewm_mean(x, 2 / 21, False, state, out)
            _sync()
        return run

    def ts_mean(x):
        out = cuda.device_array_like(x)

        def run():
            rolling.ts_mean(x, 20, 20, out)
            _sync()
        return run

    for label, x, fn in ((f"ema(20) scan, 1 series x {series}", x1, ema),
                         (f"ema(20) scan, panel {panel[0]}x{panel[1]}", xp, ema),
                         (f"ts_mean(20), panel {panel[0]}x{panel[1]}", xp, ts_mean)):
        _, t = measure(fn(x), repeat=repeat)
        rows.append((label, x.size, t, None))
    out = []
    for label, cells, t, _ in rows:
        gbs = 2 * 8 * cells / t.median_s / 1e9
        out.append((label, cells, t.median_s, gbs, 100 * gbs * 1e9 / bw))
    return out


def factor_rows(shape, repeat, rng):
    import dask

    T, N = shape
    close = _walk(rng, shape)
    panel = ff.Panel.from_numpy({
        "close": close, "high": close + 0.5, "low": close - 0.5, "vwap": close + 0.1,
        "volume": np.abs(_walk(rng, shape)) * 1e3})
    cells = T * N * len(DEMO_FACTORS)
    results = {}

    def run(backend, threads):
        def go():
            with dask.config.set(scheduler="threads", num_workers=threads):
                out = ff.compute(DEMO_FACTORS, panel, backend=backend)
                return {k: out.to_numpy(k) for k in DEMO_FACTORS}
        return go

    rows = []
    for label, backend, threads in (("cpu backend, 2 threads", "cpu", 2),
                                    (f"cpu backend, {os.cpu_count()} threads", "cpu", os.cpu_count()),
                                    ("gpu backend (1 GPU)", "gpu", 2)):
        res, t = measure(run(backend, threads), repeat=repeat)
        results[label] = res
        rows.append((label, t.median_s))
    want = results["cpu backend, 2 threads"]
    got = results["gpu backend (1 GPU)"]
    worst = 0.0
    for k in DEMO_FACTORS:
        a, b = want[k], got[k]
        ok = np.isfinite(a) & np.isfinite(b)
        if not np.array_equal(np.isnan(a), np.isnan(b)):
            raise SystemExit(f"bench_gpu: NaN pattern of {k} differs between backends")
        if ok.any():
            worst = max(worst, float(np.max(np.abs(a[ok] - b[ok]) / np.maximum(np.abs(a[ok]), 1e-300))))
    return rows, cells, worst


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--series", type=int, default=100_000_000, help="cells of the single series")
    ap.add_argument("--panel", type=_shape, default=(20_000, 5_000), help="T x N of the kernel panel")
    ap.add_argument("--factor-panel", type=_shape, default=(5_000, 2_000), help="T x N of the factor set panel")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--simulate", action="store_true",
                    help="Numba CUDA simulator at toy sizes: checks the script runs; timings meaningless")
    args = ap.parse_args(argv)
    from factorflow.engine.device import check_gpu, gpu_status

    if args.simulate:
        args.series, args.panel, args.factor_panel, args.repeat = 512, (64, 8), (40, 6), 1
    check_gpu()
    rng = np.random.default_rng(0)
    print(f"bench_gpu: {gpu_status()[1]}")
    if args.simulate:
        print("*** SIMULATOR RUN: every figure below is meaningless for performance ***")
    print(environment())
    print(f"load average before: {os.getloadavg()}")
    print()
    print(f"{'kernel (float64, data on device)':<44} {'cells':>12} {'median ms':>10} {'GB/s':>8} {'% copy':>7}")
    for label, cells, s, gbs, pct in kernel_rows(args.series, args.panel, args.repeat, rng):
        print(f"{label:<44} {cells:>12,} {s * 1e3:>10.3f} {gbs:>8.1f} {pct:>6.0f}%")
    print()
    rows, cells, worst = factor_rows(args.factor_panel, args.repeat, rng)
    T, N = args.factor_panel
    print(f"10-factor set (DEMO_FACTORS) on {T}x{N} float64, host in -> host out; GPU vs CPU max rel diff {worst:.1e}")
    base = rows[0][1]
    print(f"{'path':<32} {'median s':>9} {'Mcells/s':>9} {'speedup vs 2 threads':>21}")
    for label, s in rows:
        print(f"{label:<32} {s:>9.3f} {cells / s / 1e6:>9.1f} {base / s:>20.1f}x")
    print(f"load average after: {os.getloadavg()}")
    if args.simulate:
        print("*** SIMULATOR RUN: timings meaningless ***")


if __name__ == "__main__":
    main()
