"""Every CUDA kernel against its CPU twin on the patterned data (NaN, gaps, constant runs, 1e6
offsets, tiny values, ties, all-NaN), float64 and float32. Small sizes: under the simulator every
GPU thread is a Python thread."""
from __future__ import annotations

import numpy as np
import pytest
from factorflow.kernels import resolve
from patterns import assert_close, make_patterned

X = make_patterned(64, 9, seed=1)
Y = make_patterned(64, 9, seed=2)
XP = make_patterned(64, 9, seed=3, positive=True)
RTOL = {np.float64: 1e-9, np.float32: 2e-6}


def _run(name, args, params, dtype, rows=None):
    from numba import cuda

    args = [a[:rows] if isinstance(a, np.ndarray) and rows else a for a in args]
    host = [a.astype(dtype) if isinstance(a, np.ndarray) else a for a in args]
    shape = next(a for a in host if isinstance(a, np.ndarray)).shape
    want = np.empty(shape, dtype)
    with np.errstate(all="ignore"):
        resolve(name, "cpu")(*host, *params, want)
        dev = [cuda.to_device(a) if isinstance(a, np.ndarray) else a for a in host]
        out = cuda.device_array(shape, dtype)
        resolve(name, "gpu")(*dev, *params, out)
    assert_close(out.copy_to_host(), want, rtol=RTOL[dtype], what=f"{name}{params} {np.dtype(dtype).name}")


DTYPES = [np.float64, np.float32]
BINARY = ["add", "sub", "mul", "div", "minimum", "maximum", "lt", "le", "gt", "ge", "eq", "ne"]
UNARY = ["neg", "abs", "log", "sqrt", "exp", "sign"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", BINARY + ["pow"])
def test_binary(name, dtype):
    y = XP[:, ::-1].copy() * 0.1 if name == "pow" else Y
    _run(f"elementwise.{name}", (XP if name == "pow" else X, y), (), dtype, rows=16)
    _run(f"elementwise.{name}", (X, 2.5), (), dtype, rows=16)  # a constant operand


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", UNARY)
def test_unary(name, dtype):
    _run(f"elementwise.{name}", (X * 300 if name == "exp" else X,), (), dtype, rows=24)


@pytest.mark.parametrize("dtype", DTYPES)
def test_logic_where_mask_fill(dtype):
    a, b = (X > 0).astype(float), (Y > 0).astype(float)
    a[np.isnan(X)] = np.nan
    for name in ("logical_and", "logical_or"):
        _run(f"elementwise.{name}", (a, b), (), dtype, rows=16)
    _run("elementwise.logical_not", (a,), (), dtype, rows=16)
    _run("elementwise.where", (a, X, Y), (), dtype, rows=16)
    _run("elementwise.where", (a, 1.0, 0.0), (), dtype, rows=16)
    _run("elementwise.mask", (X, a), (), dtype, rows=16)
    _run("elementwise.fill_nan", (X,), (0.5,), dtype, rows=16)
    _run("elementwise.signed_power", (X, 2.0), (), dtype, rows=16)
    # element-wise exponents; no 1e-300 base here: the simulator's Python pow raises on overflow
    _run("elementwise.signed_power", (X[:, :6], np.tanh(Y[:, :6]) * 3), (), dtype, rows=16)


WINDOW = ["ts_sum", "ts_mean", "ts_std", "ts_var", "ts_min", "ts_max", "ts_argmin", "ts_argmax", "ts_rank",
          "ts_prod", "decay_linear", "ts_skew", "ts_kurt", "ts_mad", "ts_median"]


@pytest.mark.parametrize("name", WINDOW)
def test_window_float64(name):
    for window, mp in ((5, 5), (12, 3)):
        _run(f"rolling.{name}", (X,), (window, mp), np.float64)


@pytest.mark.parametrize("name", WINDOW)
def test_window_float32(name):
    _run(f"rolling.{name}", (X,), (7, 4), np.float32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["ts_slope", "ts_rsquare", "ts_resid"])
def test_regression(name, dtype):
    for window, mp in ((6, 6), (11, 2)):
        _run(f"regression.{name}", (X,), (window, mp), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_pairs_shifts_counts(dtype):
    for name in ("ts_corr", "ts_cov"):
        _run(f"rolling.{name}", (X, Y), (8, 8), dtype)
        _run(f"rolling.{name}", (X, X * 2 + 1), (6, 3), dtype)
    for periods in (1, 3, -2):  # -2: lead
        _run("rolling.delay", (X,), (periods,), dtype)
    _run("rolling.delta", (X,), (2,), dtype)
    _run("rolling.ts_count", (X,), (6,), dtype)
    for compat in (False, True):
        _run("rolling.ts_wma", (X,), (9, 4, compat), dtype)
    for q in (0.0, 0.2, 0.8, 1.0):
        _run("rolling.ts_quantile", (X,), (8, q, 3), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["cs_rank", "cs_zscore", "cs_demean"])
def test_cross_section(name, dtype):
    _run(f"cross_section.{name}", (X,), (), dtype, rows=12)


def test_cs_scale():
    _run("cross_section.cs_scale", (X,), (2.0,), np.float64, rows=12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cs_neutralize(dtype):
    """Group codes with NaN codes, singleton groups, constant groups; rows wider than a block."""
    rng = np.random.default_rng(9)
    x = np.cumsum(rng.standard_normal((5, 40)), axis=1) + 1e6 * (rng.random((5, 40)) < 0.3)
    x[rng.random(x.shape) < 0.1] = np.nan
    g = rng.integers(0, 5, x.shape).astype(float)
    g[rng.random(x.shape) < 0.1] = np.nan
    g[0, 0] = 17.0  # a singleton group
    x[1, g[1] == 2] = 3.25  # a constant group: exactly 0
    _run("cross_section.cs_neutralize", (x, g), (), dtype)


def _scan(kind, x, seg, state_cpu=None, state_gpu=None, dtype=np.float64):
    from factorflow.kernels.cpu import recursive as C
    from factorflow.kernels.cuda import recursive as G
    from numba import cuda

    x = x.astype(dtype)
    n = x.shape[1]
    if kind == "cumsum":
        sc = C.cumsum_init_state(n) if state_cpu is None else state_cpu
        sg = cuda.to_device(G.cumsum_init_state(n) if state_gpu is None else state_gpu)
        want = np.empty_like(x)
        C.cumsum(x, sc, want)
        out = cuda.device_array(x.shape, dtype)
        G.cumsum(cuda.to_device(x), sg, out, seg=seg)
    else:
        adjust = kind == "ewma"
        sc = C.ewm_init_state(n) if state_cpu is None else state_cpu
        sg = cuda.to_device(G.ewm_init_state(n) if state_gpu is None else state_gpu)
        want = np.empty_like(x)
        C.ewm_mean(x, 2 / 13, adjust, sc, want)
        out = cuda.device_array(x.shape, dtype)
        G.ewm_mean(cuda.to_device(x), 2 / 13, adjust, sg, out, seg=seg)
    return out.copy_to_host(), want, sg.copy_to_host(), sc


@pytest.mark.parametrize("kind", ["ema", "ewma", "cumsum"])
@pytest.mark.parametrize("seg", [1, 5, 16, 64])
def test_scan_segments(kind, seg):
    """Every segment length, from one row per thread to the whole block in one segment: output
    and carried state equal the sequential CPU kernel's."""
    got, want, gs, cs = _scan(kind, X, seg)
    assert_close(got, want, what=f"{kind} seg={seg}")
    assert_close(gs, cs, what=f"{kind} state seg={seg}")


@pytest.mark.parametrize("kind", ["ema", "ewma", "cumsum"])
def test_scan_carries_state_and_float32(kind):
    """A scan continued from a carried state (second half of the series) equals the CPU's; float32."""
    _, _, gs, cs = _scan(kind, X[:30], 7)
    got, want, _, _ = _scan(kind, X[30:], 4, state_cpu=cs, state_gpu=gs)
    assert_close(got, want, what=f"{kind} continued")
    got, want, _, _ = _scan(kind, X, 5, dtype=np.float32)
    assert_close(got, want, rtol=2e-6, what=f"{kind} float32")


@pytest.mark.parametrize("kind", ["ema", "ewma", "cumsum"])
@pytest.mark.parametrize("walk_max", [2, 4])
def test_scan_two_level_carries(kind, walk_max, monkeypatch):
    """More segments than one thread walks: summaries composed in groups, groups walked, then
    segments within each group (``WALK_MAX`` lowered so a tiny block takes that path)."""
    from factorflow.kernels.cuda import recursive as G

    monkeypatch.setattr(G, "WALK_MAX", walk_max)
    for seg in (1, 3):
        got, want, gs, cs = _scan(kind, X, seg)
        assert_close(got, want, what=f"{kind} seg={seg} walk_max={walk_max}")
        assert_close(gs, cs, what=f"{kind} state")


def test_scan_long_gap_single_series():
    """One long series with long NaN gaps crossing many segments (the first valid value of a
    segment takes its gap from the carry)."""
    rng = np.random.default_rng(5)
    x = np.cumsum(rng.standard_normal((400, 1)), axis=0) + 50
    x[rng.random(400) < 0.3] = np.nan
    x[100:230] = np.nan
    for kind in ("ema", "ewma", "cumsum"):
        for seg in (9, None):  # None: segment_rows (one segment: 400 rows < 2 x MIN_SEGMENT_ROWS x ...)
            got, want, gs, cs = _scan(kind, x, seg)
            assert_close(got, want, what=kind)
            assert_close(gs, cs, what=f"{kind} state")


def test_segment_rows_uses_the_gpu():
    from factorflow.kernels.cuda.recursive import MAX_SEGMENTS, segment_rows

    for rows, cols in ((100_000_000, 1), (20_000, 5_000), (64, 9), (10, 1)):
        seg = segment_rows(rows, cols)
        nseg = -(-rows // seg)
        assert 1 <= seg <= rows and nseg <= MAX_SEGMENTS
        if rows >= 10_000:
            assert nseg * cols >= 8_000  # thousands of threads, also for a single series


def test_resolve_same_names():
    from factorflow.kernels.cuda import rolling

    assert resolve("rolling.ts_mean", "gpu") is rolling.ts_mean
    with pytest.raises(LookupError, match="no kernel"):
        resolve("cross_section.cs_nothing", "gpu")


@pytest.mark.parametrize("module", ["_jit", "elementwise", "rolling", "recursive", "cross_section", "regression"])
def test_docstring_examples(module):
    """tests/test_docs.py leaves out kernels/cuda (it would import numba.cuda without CUDA)."""
    import doctest
    import importlib

    mod = importlib.import_module(f"factorflow.kernels.cuda.{module}")
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for t in doctest.DocTestFinder(exclude_empty=True).find(mod, mod.__name__):
        runner.run(t)
    assert runner.summarize(verbose=False).failed == 0


@pytest.mark.parametrize("name", ["cs_rank", "cs_zscore", "cs_demean"])
def test_cross_section_wide_rows(name):
    """Rows wider than a thread block (several strides, padding in the sort), with ties, ±0,
    ±inf (rank only: they are valid values) and NaN."""
    rng = np.random.default_rng(7)
    x = rng.integers(0, 7, (6, 45)).astype(float) - 3.0
    x[rng.random(x.shape) < 0.15] = np.nan
    x[1, :] = np.nan
    x[2, 5] = -0.0
    if name == "cs_rank":
        x[3, 2] = np.inf
        x[3, 9] = -np.inf
        x[4, 3:6] = np.inf
    _run(f"cross_section.{name}", (x,), (), np.float64)
