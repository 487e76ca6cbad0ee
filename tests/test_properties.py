"""Property-based checks over random formulas (hypothesis).

1. Printing a node and parsing the text back gives the same node, for random trees over every
   registry operator.
2. Chunk invariance of random compositions of well-conditioned operators: any chunking gives
   the one-block result up to rounding (ranks, comparisons and divisions are left out here: they
   turn rounding-level differences into different answers by design; the operator table tests
   them one by one on every chunking).
"""
from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import factorflow as ff
from factorflow.factors.registry import REGISTRY

from patterns import assert_close, make_patterned

FIELDS = ("a", "b")


def _params(op, draw):
    out = []
    for p in op.params:
        if p.check == "window":
            out.append(draw(st.integers(1, 12)))
        elif p.check == "min_periods":
            out.append(draw(st.integers(1, out[0])))
        elif p.check == "periods":
            out.append(draw(st.integers(1, 6)))
        elif p.check == "span":
            out.append(draw(st.sampled_from([1, 2, 3.5, 10])))
        elif p.check == "flag":
            out.append(draw(st.sampled_from([0, 1])))
        elif p.check == "fraction":
            out.append(draw(st.sampled_from([0.0, 0.25, 0.8, 1.0])))
        else:
            out.append(draw(st.sampled_from([0.5, 1.0, 2.0])))
    return out


@st.composite
def trees(draw, ops, depth=3, want="num"):
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        if want == "bool":
            return ff.field(draw(st.sampled_from(FIELDS))) > draw(st.sampled_from([0, 1.5]))
        if draw(st.booleans()):
            return ff.field(draw(st.sampled_from(FIELDS)))
        return ff.factor(str(draw(st.sampled_from([1, 2, 0.5, 3]))))
    candidates = [REGISTRY[n] for n in ops if REGISTRY[n].returns == want]
    op = draw(st.sampled_from(candidates))
    args = [draw(trees(ops, depth - 1, t)) for t in op.types()]
    return op.build(tuple(args) + tuple(_params(op, draw)), {})


@settings(max_examples=200, deadline=None, derandomize=True)
@given(trees(sorted(REGISTRY), depth=4))
def test_canonical_text_parses_back_to_the_same_node(f):
    g = ff.factor(f.canonical)
    assert g.equals(f), (f.canonical, g.canonical)
    assert g.canonical == f.canonical


T, N = 90, 9
PANEL = ff.Panel.from_numpy({"a": make_patterned(T, N, seed=21), "b": make_patterned(T, N, seed=22)})
STABLE = ["add", "sub", "mul", "neg", "abs", "min", "max", "ts_sum", "ts_mean", "ts_min", "ts_max", "delay", "delta",
          "ema", "ewma", "cumsum", "cs_demean", "decay_linear", "ts_median"]


@settings(max_examples=int(os.environ.get("FF_HYPOTHESIS_EXAMPLES", 100)), deadline=None, derandomize="FF_HYPOTHESIS_EXAMPLES" not in os.environ,
          suppress_health_check=[HealthCheck.too_slow])
@given(trees(STABLE, depth=3), st.integers(1, 40), st.integers(1, 9))
def test_random_factors_are_chunk_invariant(f, tc, sc):
    one = ff.compute({"f": f}, PANEL, chunks={"time": -1, "symbol": -1}).to_numpy("f")
    many = ff.compute({"f": f}, PANEL, chunks={"time": tc, "symbol": sc}).to_numpy("f")
    assert_close(many, one, rtol=1e-9, what=f.canonical)
