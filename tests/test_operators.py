"""Every registry operator, through ``ff.compute``, against its reference implementation.

The table is the registry itself: adding an operator adds it here. Each case runs on a panel
whose columns carry NaNs, leading NaNs, gaps, constant runs, 1e6 offsets, tiny values and ties
(``conftest.make_patterned``), and on several chunkings -- one block, many blocks, blocks shorter
than the window -- which must all agree with the reference (chunk invariance).
"""
from __future__ import annotations

import numpy as np
import pytest

import factorflow as ff
from factorflow.factors.registry import REGISTRY

from patterns import assert_close, make_patterned

T, N = 120, 9
X = make_patterned(T, N, seed=0)
Y = make_patterned(T, N, seed=1) * 0.5 + X * 0.5
POS = make_patterned(T, N, seed=2, positive=True)
GRP = np.random.default_rng(3).integers(0, 3, (T, N)).astype(float)
GRP[5, :4] = np.nan
GRP[:, -1] = 7.0  # a group of one symbol
PANEL = ff.Panel.from_numpy({"x": X, "y": Y, "pos": POS, "grp": GRP})

WINDOWS = (1, 3, 20)
CHUNKINGS = (None, {"time": 7, "symbol": 4}, {"time": 1, "symbol": 9}, {"time": 33, "symbol": 1})


def _inputs(op):
    """(formula args, reference arrays) for an operator's series inputs."""
    if op.name in ("log", "sqrt"):
        return ["pos"], [POS]
    if op.name in ("power", "pow"):
        return ["pos", "y / 10"], [POS, Y / 10]
    if op.name == "signed_power":
        return ["x", "2"], [X, 2.0]
    if op.name == "where":
        cond = np.where(np.isnan(X) | np.isnan(Y), np.nan, (X > Y).astype(float))
        return ["x > y", "x", "y"], [cond, X, Y]
    if op.name in ("and", "or"):
        a = np.where(np.isnan(X), np.nan, (X > 0).astype(float))
        b = np.where(np.isnan(Y), np.nan, (Y > 0).astype(float))
        return ["x > 0", "y > 0"], [a, b]
    if op.name == "mask":
        cond = np.where(np.isnan(Y), np.nan, (Y > 0).astype(float))
        return ["x", "y > 0"], [X, cond]
    if op.name == "not":
        a = np.where(np.isnan(X), np.nan, (X > 0).astype(float))
        return ["x > 0"], [a]
    if op.name == "cs_neutralize":
        return ["x", "grp"], [X, GRP]
    if len(op.inputs) == 2:
        return ["x", "y"], [X, Y]
    return ["x"], [X]


def _cases():
    for name, op in sorted(REGISTRY.items()):
        args, arrays = _inputs(op)
        if name == "ts_count":
            for w in WINDOWS:
                yield pytest.param(op, args, arrays, (w,), id=f"{name}-{w}")
        elif name == "ts_quantile":
            for w in WINDOWS:
                yield pytest.param(op, args, arrays, (w, 0.8, w), id=f"{name}-{w}")
            yield pytest.param(op, args, arrays, (10, 0.25, 1), id=f"{name}-10-q0.25-minp1")
            yield pytest.param(op, args, arrays, (7, 0.0, 3), id=f"{name}-7-q0-minp3")
        elif name == "ts_wma":
            for w in WINDOWS:
                yield pytest.param(op, args, arrays, (w, w, 0), id=f"{name}-{w}")
            yield pytest.param(op, args, arrays, (10, 1, 0), id=f"{name}-10-minp1")
            yield pytest.param(op, args, arrays, (10, 1, 1), id=f"{name}-10-minp1-compat")
        elif op.kind == "window" and op.params[0].check == "window":
            for w in WINDOWS:
                yield pytest.param(op, args, arrays, (w, w), id=f"{name}-{w}")
            yield pytest.param(op, args, arrays, (10, 1), id=f"{name}-10-minp1")
        elif op.kind == "window":
            for d in (1, 5):
                yield pytest.param(op, args, arrays, (d,), id=f"{name}-{d}")
        elif op.name in ("ema", "ewma"):
            for span in (1, 2.5, 12):
                yield pytest.param(op, args, arrays, (span,), id=f"{name}-{span}")
        elif op.name == "fill_nan":
            yield pytest.param(op, args, arrays, (0.0,), id=name)
            yield pytest.param(op, args, arrays, (-1.5,), id=f"{name}--1.5")
        elif op.name == "cs_scale":
            yield pytest.param(op, args, arrays, (1.0,), id=name)
            yield pytest.param(op, args, arrays, (2.5,), id=f"{name}-2.5")
        else:
            yield pytest.param(op, args, arrays, (), id=name)


def _formula(op, args, params):
    if op.symbol and len(args) == 2:
        return f"({args[0]}) {op.symbol} ({args[1]})"
    if op.symbol:
        return f"{op.symbol}({args[0]})"
    ps = [f"{p.name}={v}" if p.check in ("min_periods", "flag") else str(v) for p, v in zip(op.params, params)]
    return f"{op.name}({', '.join(args + ps)})"


@pytest.mark.parametrize("op,args,arrays,params", list(_cases()))
def test_operator_matches_reference(op, args, arrays, params):
    formula = _formula(op, args, params)
    want = op.reference_function(*arrays, *params)
    want = np.broadcast_to(np.asarray(want, dtype=np.float64), (T, N))
    for chunks in CHUNKINGS:
        got = ff.compute({"f": formula}, PANEL, chunks=chunks).to_numpy("f")
        assert_close(got, want, what=f"{formula} chunks={chunks}")


@pytest.mark.parametrize("op,args,arrays,params", list(_cases()))
def test_operator_beside_a_longer_halo(op, args, arrays, params):
    """The same, computed beside a factor with a longer lookback on another field, from Dask-backed
    fields stored in 6-row blocks: the stage's halo is then longer than this operator's inputs
    need, and the rows above what they need that lie in blocks the task does not otherwise read
    are NaN padding (engine/graph.py: _input_needs, Source.reach). Its values must not change."""
    import dask.array as da

    formula = _formula(op, args, params)
    want = op.reference_function(*arrays, *params)
    want = np.broadcast_to(np.asarray(want, dtype=np.float64), (T, N))
    fields = {"x": X, "y": Y, "pos": POS, "grp": GRP, "z": make_patterned(T, N, seed=5)}
    panel = ff.Panel.from_numpy({k: da.from_array(v, chunks=(6, N)) for k, v in fields.items()})
    for chunks in ({"time": 7, "symbol": 4}, {"time": 33, "symbol": -1}):
        out = ff.compute({"f": formula, "long": "ts_sum(z, 40)"}, panel, chunks=chunks)
        assert_close(out.to_numpy("f"), want, what=f"{formula} beside ts_sum(z, 40), chunks={chunks}")


@pytest.mark.parametrize("name", ["ts_mean", "ts_std", "ts_corr", "ema", "cs_rank", "ts_rank", "decay_linear"])
def test_float32_panel(name):
    op = REGISTRY[name]
    args, arrays = _inputs(op)
    params = (12, 12) if op.kind == "window" else ((12,) if op.kind == "recursive" else ())
    formula = _formula(op, args, params)
    p32 = ff.Panel.from_numpy({"x": X.astype(np.float32), "y": Y.astype(np.float32)})
    got = ff.compute({"f": formula}, p32, chunks={"time": 25, "symbol": 4}).to_numpy("f")
    assert got.dtype == np.float32
    want = op.reference_function(*[a.astype(np.float32).astype(np.float64) for a in arrays], *params)
    keep = np.arange(N) % 9 != 5  # the 1e6 + 1e-3 column is below float32 resolution
    g, w = got[:, keep].astype(np.float64), want[:, keep]
    assert (np.isnan(g) == np.isnan(w)).all()
    ok = ~np.isnan(w)
    np.testing.assert_allclose(g[ok], w[ok], rtol=2e-4, atol=1e-4 * np.nanmax(np.abs(w)))


def test_every_operator_is_covered():
    covered = {p.values[0].name for p in _cases()}
    assert covered == set(REGISTRY)
