"""Planner, graph and Panel: CSE, stages, halos, chunking, task counts, I/O, errors."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import polars as pl
import pyarrow.parquet as pq
import pytest

import factorflow as ff
from factorflow.engine.plan import choose_chunks, halo_balanced, make_plan

from patterns import assert_close, make_patterned

T, N = 200, 12
X = make_patterned(T, N, seed=3)
V = np.abs(make_patterned(T, N, seed=4)) + 1.0
PANEL = ff.Panel.from_numpy({"close": X, "volume": V}, times=np.arange(T), symbols=[f"S{j:02d}" for j in range(N)])


def _plan(factors, **kw):
    return make_plan(factors, PANEL.shape, PANEL.fields, chunks=kw.pop("chunks", {"time": 50, "symbol": 6}), **kw)


# -- planning ------------------------------------------------------------------------------------
def test_cse_shares_subexpressions_across_factors():
    p = _plan({"a": "ts_mean(close, 20) / close", "b": "ts_mean(close, 20) - ts_std(close, 20)",
               "c": "close + volume", "d": "volume + close"})
    texts = [n.text for n in p.nodes if n.kind not in ("field", "const")]
    assert texts.count("ts_mean(close, 20)") == 1
    assert len(texts) == len(set(texts))
    assert p.n_factor_nodes == 7 and len(texts) == 5  # c and d are one node


def test_local_ops_fuse_into_one_stage_with_the_summed_halo():
    p = _plan({"a": "ts_mean(delta(close, 5), 20) / ts_std(volume, 30)", "b": "delay(close, 3)"})
    assert len(p.stages) == 1
    (stage,) = p.stages
    assert stage.final and stage.halo == 29
    nt, ns = p.grid
    assert p.n_tasks == nt * ns  # one task per block for the whole factor set


def test_barriers_cut_stages():
    p = _plan({"macd": "ema(close, 12) - ema(close, 26)", "r": "cs_rank(ts_mean(close, 5))",
               "x": "ts_mean(cs_rank(close), 3)"})
    kinds = [s.kind for s in p.stages]
    assert kinds == ["local", "recursive", "cross_section", "local"]
    rec = p.stages[1]
    assert sorted(p.nodes[n].text for n in rec.nodes) == ["ema(close, 12)", "ema(close, 26)"]
    cs = p.stages[2]
    assert len(cs.nodes) == 2  # cs_rank(close) and cs_rank(ts_mean(close, 5)) in one stage
    nt, ns = p.grid
    assert p.stage_tasks(cs) == nt  # cross-sections: one task per time block
    assert p.final_stage.halo == 2


def test_node_needed_in_two_stages_is_materialised_once():
    p = _plan({"a": "cs_rank(ts_mean(close, 10))", "b": "ts_mean(close, 10) * 2"})
    node = next(n for n in p.nodes if n.text == "ts_mean(close, 10)")
    assert node.materialized and node.stage == 0
    final = p.final_stage
    assert node.id in final.inputs and node.id not in final.nodes


def test_explain_text_and_counts():
    plan = ff.explain({"macd": "ema(close, 12) - ema(close, 26)", "z": "cs_zscore(volume)"}, PANEL,
                      chunks={"time": 50, "symbol": 6})
    text = str(plan)
    assert "2 factors over 200 times x 12 symbols" in text
    assert "chunks: time=50 (4 chunks) x symbol=6 (2 chunks) -> 4 x 2 = 8 blocks" in text
    assert "recursive" in text and "cross_section" in text and "tasks" in text
    assert plan.n_tasks == 8 + 4 + 8  # scan, cross-section, final
    assert plan.summary()["distinct_operator_nodes"] == 4


def test_chunk_choice_rules():
    # small data: one block
    p = _plan({"a": "ts_mean(close, 5)"}, chunks=None, nthreads=2)
    assert p.grid == (1, 1)
    # large, no cross-section: split symbols first, blocks >= 64 wide, enough blocks for 2 threads
    plan = make_plan({"a": "ts_mean(close, 20)"}, (4000, 5000), ["close"], nthreads=2)
    assert plan.grid[0] == 1 and plan.grid[1] >= 4 and min(plan.schunks) >= 64
    assert max(plan.tchunks) * max(plan.schunks) <= 4_000_000
    # with a cross-section: split time, keep blocks >= 4 x halo
    plan = make_plan({"a": "cs_rank(ts_mean(close, 50))"}, (4000, 5000), ["close"], nthreads=2)
    assert plan.grid[1] == 1 and plan.grid[0] >= 4 and min(plan.tchunks[:-1]) >= 4 * 49
    # ... into one block per thread when there is a halo, the first longer by the halo rows the
    # others recompute (bench_cluster's job: 20 days of 1min bars, 239-row halo)
    plan = make_plan({"a": "cs_rank(ts_rank(close, 240))"}, (7800, 500), ["close"], nthreads=2)
    assert plan.tchunks == (4020, 3780) and plan.schunks == (500,)
    assert make_plan({"a": "cs_rank(ts_rank(close, 240))"}, (7800, 500), ["close"], nthreads=1).tchunks == (7800,)
    assert make_plan({"a": "cs_rank(close)"}, (7800, 500), ["close"], nthreads=2).grid == (4, 1)  # no halo
    # split_time (a batch job writing dates from several workers): time blocks as with a cross-section
    lib = make_plan({"a": "ts_mean(close, 61)", "b": "ts_std(volume, 20)"}, (7800, 500), ["close", "volume"],
                    nthreads=2)
    assert lib.grid == (1, 4)  # Alpha158's job, planned for compute
    assert choose_chunks(lib.shape, lib.stages, lib.nodes, nthreads=2, split_time=True) == ((3930, 3870), (500,))
    assert choose_chunks(lib.shape, lib.stages, lib.nodes, nthreads=1, split_time=True) == ((7800,), (500,))
    big = make_plan({"a": "ts_mean(close, 20)"}, (4000, 5000), ["close"], nthreads=2)
    tch, sch = choose_chunks(big.shape, big.stages, big.nodes, nthreads=2, split_time=True)
    # ~4 M cells a block; the first block is longer by the 19-row halo the others recompute
    assert sch == (5000,) and len(tch) >= 4 and max(tch) * 5000 <= 4_000_000 + 19 * 5000
    # too few rows to cut time (an incremental one-day run: 60 rows of history + 390): symbols split
    short = make_plan({"a": "ts_mean(close, 61)"}, (450, 5000), ["close"], nthreads=2)
    tch, sch = choose_chunks(short.shape, short.stages, short.nodes, nthreads=2, split_time=True)
    assert tch == (450,) and len(sch) >= 2 and min(sch) >= 64
    # tiny series with a huge window: never blocks shorter than 4 x halo
    plan = make_plan({"a": "ts_mean(close, 500)"}, (3000, 8), ["close"], nthreads=8)
    assert min(plan.tchunks[:-1] or plan.tchunks) >= min(3000, 4 * 499)


def test_stage_inputs_take_only_the_halo_rows_their_outputs_need():
    """A local stage's input that only element-wise operators read takes no rows of the block
    above (NaN padding stands in for them), and a scan block reads only the previous block's
    states: on a cluster, neither the previous scan block nor its rows travel to the next."""
    from factorflow.engine.graph import build_graph, carry_keys

    factors = {"m": "ema(close, 5) - close", "w": "ts_mean(close, 20)", "d": "ts_sum(ema(close, 5), 3)"}
    p = ff.explain(factors, PANEL, chunks={"time": 50, "symbol": -1})
    graph, name, *_ = build_graph(p, PANEL)
    dsk = dict(graph)
    rec = next(k[0] for k in dsk if isinstance(k, tuple) and "recursive" in k[0] and not k[0].endswith("-carry"))
    final = dsk[(name, 0, 1, 0)]  # (run_local, program, layouts, (skip, tail), rows, cols, dtype, *args)
    layouts, (skip, _), args = final[2], final[3], final[7:]
    assert skip == 19
    # close: a NumPy array of this process, read as a view; ema(close, 5): ts_sum needs 2 rows of
    # the scan block above, which then gives all 19 (it is read anyway)
    assert [lay.pad for lay in layouts] == [0, 0]
    assert (rec, 0, 0, 0) in args
    scan = dsk[(rec, 0, 1, 0)]  # (run_recursive, program, layouts, rows, cols, dtype, prev, *args)
    assert scan[6] == (rec + "-carry", 0, 0) and dsk[scan[6]][1] == (rec, 0, 0, 0)
    assert sorted(carry_keys(dsk)) == [(rec + "-carry", i, 0) for i in range(3)]
    p2 = ff.explain({"m": factors["m"], "w": factors["w"]}, PANEL, chunks={"time": 50, "symbol": -1})
    graph2, name2, *_ = build_graph(p2, PANEL)
    final2 = dict(graph2)[(name2, 0, 1, 0)]
    assert sorted(lay.pad for lay in final2[2]) == [0, 19]  # the EMA: no row of the block above
    assert [a[2] for a in final2[7:] if isinstance(a, tuple) and "recursive" in a[0]] == [1]  # its own block
    whole = ff.compute(factors, PANEL, chunks={"time": -1, "symbol": -1})
    for chunks in ({"time": 50, "symbol": -1}, {"time": 23, "symbol": 5}):
        got = ff.compute(factors, PANEL, chunks=chunks)
        for k in factors:
            assert_close(got.to_numpy(k), whole.to_numpy(k), rtol=1e-12, what=f"{k} {chunks}")


def test_stage_programs_tokenize_by_content():
    """Dask tokenizes every graph a distributed client submits; stage programs give it the hash
    of their pickle (``__dask_tokenize__``): equal programs built twice tokenize equal, programs
    differing in one parameter or one kernel do not, and Dask never walks their instructions."""
    from dask.base import tokenize

    from factorflow.engine.execute import BarrierProgram, LocalProgram
    from factorflow.engine.graph import build_graph

    def programs(factors):  # every stage program of the plan's graph, by stage key
        p = ff.explain(factors, PANEL, chunks={"time": 50, "symbol": -1})
        graph, *_ = build_graph(p, PANEL)
        found = {}
        for key, task in dict(graph).items():
            if isinstance(task, tuple):
                for a in task:
                    if isinstance(a, (LocalProgram, BarrierProgram)):
                        found.setdefault(key[0].rsplit("-", 1)[0], a)
        return found

    base = {"a": "ts_mean(close, 20) / ts_std(volume, 30)", "e": "cs_rank(ema(close, 5))"}
    one, two = programs(base), programs(dict(base))
    assert {type(x).__name__ for x in one.values()} == {"BarrierProgram", "LocalProgram"}
    assert sorted(one) == sorted(two)
    for stage in one:
        assert one[stage] is not two[stage] and one[stage] == two[stage]
        assert tokenize(one[stage]) == tokenize(two[stage])
    seen = {tokenize(x) for x in one.values()}
    for changed in ({"a": "ts_mean(close, 21) / ts_std(volume, 30)", "e": "cs_rank(ema(close, 6))"},  # parameters
                    {"a": "ts_sum(close, 20) / ts_std(volume, 30)", "e": "cs_zscore(ema(close, 5))"}):  # kernels
        other = programs(changed)
        assert sorted(other) == sorted(one)
        for stage, prog in other.items():
            if prog != one[stage]:
                assert tokenize(prog) not in seen
        assert sum(prog != one[stage] for stage, prog in other.items()) >= 2
        seen |= {tokenize(x) for x in other.values()}

    import dask.tokenize as dt

    walked = []
    real = dt._normalize_dataclass
    try:
        dt._normalize_dataclass = lambda o: walked.append(type(o).__name__) or real(o)
        tokenize(next(x for x in one.values() if isinstance(x, LocalProgram)))
    finally:
        dt._normalize_dataclass = real
    assert "Instruction" not in walked


def test_canonical_text_is_printed_once_per_node():
    f = ff.factor("ts_mean(close, 20) / ts_std(volume + 1, 30)")
    from factorflow.factors.printer import to_text

    assert f.canonical == to_text(f) == str(f)
    assert f.canonical is f.canonical  # cached on the (immutable) node
    assert f._canonical == to_text(f)
    import pickle

    g = pickle.loads(pickle.dumps(f))
    assert g._canonical is None and g.canonical == f.canonical and g.equals(f)


def test_halo_balanced_blocks_are_of_equal_work():
    for T in range(0, 160):
        for nt in range(1, 7):
            for halo in (0, 1, 7, 30):
                got = halo_balanced(T, nt, halo)
                assert sum(got) == T and len(got) == min(nt, T) and all(r >= 1 for r in got), (T, nt, halo, got)
                if len(got) > 1 and T - halo >= nt:  # rows + the halo each block recomputes
                    work = [got[0]] + [r + halo for r in got[1:]]
                    assert max(work) - min(work) <= 1, (T, nt, halo, got)


def test_user_chunks_validated():
    with pytest.raises(ValueError, match="chunks keys"):
        ff.explain({"a": "close"}, PANEL, chunks={"rows": 5})
    with pytest.raises(ValueError, match="positive integer"):
        ff.explain({"a": "close"}, PANEL, chunks={"time": 0})
    p = ff.explain({"a": "close"}, PANEL, chunks={"time": -1, "symbol": 5})
    assert p.tchunks == (200,) and p.schunks == (5, 5, 2)


# -- compute ------------------------------------------------------------------------------------
COMPOSITES = {
    "macd": "ema(close, 12) - ema(close, 26)",
    "z": "(close - ts_mean(close, 20)) / ts_std(close, 20)",
    "rank_mom": "cs_rank(close / delay(close, 5))",
    "smooth_rank": "ts_mean(cs_rank(volume), 4) + ewma(cs_zscore(close), 3)",
    "pv": "ts_corr(close, log(volume), 10)",
    "nested": "ts_rank(decay_linear(delta(close, 2), 6), 7)",
    "const": "2.5",
    "field": "volume",
    "cond": "close > ts_max(close, 5)",
}


def _pandas_reference():
    c, v = pd.DataFrame(X), pd.DataFrame(V)
    from factorflow.factors import references as R

    out = {
        "macd": (c.ewm(span=12, adjust=False).mean() - c.ewm(span=26, adjust=False).mean()).to_numpy(),
        "rank_mom": (c / c.shift(5)).rank(axis=1, pct=True).to_numpy(),
        "pv": c.rolling(10).corr(np.log(v)).to_numpy(),
        "const": np.full((T, N), 2.5),
        "field": V,
    }
    # pandas' rolling std is inexact on the 1e6-offset column and not exactly 0 on constant
    # runs: the exact reference decides there (0 / 0 = NaN)
    with np.errstate(all="ignore"):
        out["z"] = (X - R.ts_mean(X, 20, 20)) / R.ts_std(X, 20, 20)
    out["smooth_rank"] = R.ts_mean(R.cs_rank(V), 4, 4) + R.ewma(R.cs_zscore(X), 3)
    out["nested"] = R.ts_rank(R.decay_linear(R.delta(X, 2), 6, 6), 7, 7)
    out["cond"] = R.gt(X, R.ts_max(X, 5, 5))
    return out


@pytest.mark.parametrize("chunks", [None, {"time": 200, "symbol": 12}, {"time": 13, "symbol": 5},
                                    {"time": 3, "symbol": 1}, {"time": 64, "symbol": -1}])
def test_composite_factors_are_chunk_invariant(chunks):
    _check_composites(ff.compute(COMPOSITES, PANEL, chunks=chunks), chunks)


def test_result_faulted_in_first_is_fully_overwritten(monkeypatch):
    """A result split into symbol blocks is faulted in from several threads before the tasks write
    it in place (engine/memory.py: touch_pages, for results of TOUCH_MIN_BYTES or more); with the
    threshold at 0 every such result here takes that path, and every cell must still come from
    the tasks."""
    import importlib

    memory = importlib.import_module("factorflow.engine.memory")
    materialize = importlib.import_module("factorflow.engine.materialize")
    used = []
    real = memory.touch_pages

    def spy(a, threads=None):
        n = real(a, threads=3)  # more pieces than this machine may have cores
        used.append((a.shape, n))
        return n

    monkeypatch.setattr(memory, "TOUCH_MIN_BYTES", 0)
    monkeypatch.setattr(materialize, "touch_pages", spy)
    _check_composites(ff.compute(COMPOSITES, PANEL, chunks={"time": 13, "symbol": 5}), "touched, threaded")
    with ff.cluster.local(n_workers=2, threads_per_worker=1, dashboard_address=None):
        _check_composites(ff.compute(COMPOSITES, PANEL, chunks={"time": 64, "symbol": 6}), "touched, embedded cluster")
    assert len(used) >= 2 and all(n == 3 for _, n in used), used
    # full-width blocks write whole rows (contiguous memory): not touched
    before = len(used)
    _check_composites(ff.compute(COMPOSITES, PANEL, chunks={"time": 50, "symbol": -1}), "full-width blocks")
    # blocks gathered from a worker process: touching first would only make the worker wait
    with ff.cluster.local(processes=True, n_workers=1, threads_per_worker=1, dashboard_address=None):
        _check_composites(ff.compute(COMPOSITES, PANEL, chunks={"time": 64, "symbol": 6}), "worker process")
    assert len(used) == before


def _check_composites(out, chunks):
    want = _pandas_reference()
    for name in COMPOSITES:
        got, ref = out.to_numpy(name), want[name]
        if name == "z":
            # close - ts_mean(close) on the 1e6 + 1e-3 noise column (pattern 5) loses 9 digits to
            # cancellation in any float64 implementation: 1 ulp of 1e6 (1.2e-10) / std (1e-3) is
            # ~1e-7 in z, so that column is checked to 1e-6 absolute
            np.testing.assert_allclose(got[:, 5::9], ref[:, 5::9], rtol=0, atol=1e-6, equal_nan=True)
            keep = np.arange(N) % 9 != 5
            got, ref = got[:, keep], ref[:, keep]
        if name == "macd":
            # the difference of two EMAs of the 1e6 + 1e-3 noise column (pattern 5) cancels 9
            # digits: an ulp of the EMAs (1.2e-10) is 1e-6 of the result. The CPU scan rounds as
            # pandas does (bit-equal); the GPU's parallel scan carries differ by ulps of 1e6
            # (docs/gpu.md), so that column is checked to 1e-9 absolute (1e-15 of the operands)
            np.testing.assert_allclose(got[:, 5::9], ref[:, 5::9], rtol=0, atol=1e-9, equal_nan=True)
            keep = np.arange(N) % 9 != 5
            got, ref = got[:, keep], ref[:, keep]
        if name == "nested":
            # integer data (pattern 7): decay_linear of different windows can be equal in exact
            # arithmetic and differ by 1 ulp in float64 (the reference rounds exactly), which
            # flips ts_rank's tie handling; ranks of tie-free data are checked in full
            keep = np.arange(N) % 9 != 7
            got, ref = got[:, keep], ref[:, keep]
        assert_close(got, ref, rtol=1e-9, what=f"{name} {chunks}")


def test_unknown_field_raises_before_computing_with_caret():
    with pytest.raises(ff.FactorTypeError) as info:
        ff.compute({"ok": "close", "bad": "ts_mean(clsoe, 5) / close"}, PANEL)
    e = info.value
    assert e.name == "bad" and (e.line, e.column) == (1, 9)
    text = str(e)
    assert text.startswith("factor 'bad': unknown field 'clsoe'")
    assert "did you mean 'close'? the panel has: close, volume" in text
    assert "            ^^^^^" in text


def test_syntax_errors_name_the_factor():
    with pytest.raises(ff.FactorSyntaxError, match="factor 'm': unexpected end of formula"):
        ff.compute({"m": "ema(close, 12) -"}, PANEL)


def test_gpu_backend_says_what_is_missing():
    from factorflow.engine.device import GPUUnavailableError, gpu_status

    if not gpu_status()[0]:  # this machine: no CUDA driver (tests/gpu runs the GPU path)
        with pytest.raises(GPUUnavailableError, match="backend='gpu' needs a GPU"):
            ff.compute({"a": "close"}, PANEL, backend="gpu")
    with pytest.raises(ValueError, match="backend must be one of"):
        ff.compute({"a": "close"}, PANEL, backend="tpu")


def test_result_is_lazy_and_computed_once():
    out = ff.compute({"a": "ts_mean(close, 3)", "b": "close * 2"}, PANEL)
    assert out.is_lazy
    a = out.to_numpy("a")
    assert not out.is_lazy
    assert out.to_numpy("a") is not None and np.shares_memory(out.to_numpy("a"), a)


def test_float32_stays_float32():
    p = ff.Panel.from_numpy({"close": X.astype(np.float32)})
    out = ff.compute({"a": "ts_mean(close, 5) * 2 + 1", "b": "ema(close, 4)"}, p)
    assert out.dtype == np.float32 and out.to_numpy("a").dtype == np.float32


# -- Panel ----------------------------------------------------------------------------------------
def test_from_numpy_is_zero_copy_and_validates():
    p = ff.Panel.from_numpy({"close": X})
    assert np.shares_memory(p.to_numpy("close"), X)
    with pytest.raises(ValueError, match="differ in shape"):
        ff.Panel.from_numpy({"a": X, "b": X[:10]})
    with pytest.raises(ValueError, match="must be 2-D"):
        ff.Panel.from_numpy({"a": X[0]})
    with pytest.raises(ValueError, match="identifiers"):
        ff.Panel.from_numpy({"bad name": X})
    with pytest.raises(ValueError, match="reserved"):
        ff.Panel.from_numpy({"time": X})
    with pytest.raises(KeyError, match="no field 'nope'"):
        p.to_numpy("nope")


def test_polars_round_trip():
    df = PANEL.to_polars()
    assert df.columns == ["time", "symbol", "close", "volume"] and df.height == T * N
    back = ff.Panel.from_polars(df.sample(fraction=1.0, shuffle=True, seed=1))
    np.testing.assert_array_equal(back.to_numpy("close"), X)
    np.testing.assert_array_equal(back.symbols, PANEL.symbols)
    missing = df.filter(~((pl.col("time") == 5) & (pl.col("symbol") == "S03")))
    assert np.isnan(ff.Panel.from_polars(missing).to_numpy("volume")[5, 3])
    dup = pl.concat([df, df.head(1)])
    with pytest.raises(ValueError, match="duplicate"):
        ff.Panel.from_polars(dup)


def test_to_parquet_partitions_by_date_atomically(tmp_path):
    times = np.datetime64("2024-01-02T09:30", "ns") + np.arange(T) * np.timedelta64(30, "m")
    p = ff.Panel.from_numpy({"close": X, "volume": V}, times=times)
    out = ff.compute({"m": "ts_mean(close, 3)", "v": "volume"}, p, chunks={"time": 37, "symbol": 5})
    files = out.to_parquet(tmp_path / "out")
    days = sorted({str(t)[:10] for t in times.astype("datetime64[D]")})
    assert sorted(os.path.basename(os.path.dirname(f)) for f in files) == [f"date={d}" for d in days]
    table = pq.read_table(tmp_path / "out").to_pandas()
    assert len(table) == T * N
    back = pl.read_parquet(tmp_path / "out" / "**" / "*.parquet", hive_partitioning=True).sort("time", "symbol")
    np.testing.assert_allclose(back["m"].to_numpy().reshape(T, N), out.to_numpy("m"), equal_nan=True)
    assert not [f for f in (tmp_path / "out").rglob("*") if f.name.endswith(".tmp")]
    # rewriting replaces the partition (no stale file left beside it)
    stale = tmp_path / "out" / f"date={days[0]}" / "part-9.parquet"
    stale.write_bytes(b"old")
    out.to_parquet(tmp_path / "out")
    assert not stale.exists()


@pytest.mark.parametrize("codec", ["zstd", "lz4", "snappy", "gzip", "brotli", "none", "ZSTD", None])
def test_to_parquet_codecs(tmp_path, codec):
    import pyarrow as pa

    if codec not in (None, "none") and not pa.Codec.is_available(codec.lower()):
        pytest.skip(f"this pyarrow build has no {codec} codec")
    times = np.datetime64("2024-01-02T09:30", "ns") + np.arange(T) * np.timedelta64(30, "m")
    out = ff.compute({"m": "ts_mean(close, 3)"}, ff.Panel.from_numpy({"close": X}, times=times),
                     chunks={"time": 37, "symbol": 5})
    files = out.to_parquet(tmp_path, compression=codec)
    meta = pq.ParquetFile(files[0]).metadata
    assert meta.row_group(0).column(2).compression == ("UNCOMPRESSED" if codec in (None, "none") else codec.upper())
    back = pl.read_parquet(tmp_path / "**" / "*.parquet", hive_partitioning=True).sort("time", "symbol")
    np.testing.assert_array_equal(back["m"].to_numpy().reshape(T, N), out.to_numpy("m"))


def test_to_parquet_refuses_an_unknown_codec_before_any_work(tmp_path, monkeypatch):
    times = np.datetime64("2024-01-02T09:30", "ns") + np.arange(T) * np.timedelta64(30, "m")
    out = ff.compute({"m": "ts_mean(close, 3)"}, ff.Panel.from_numpy({"close": X}, times=times))
    import dask

    def no_compute(*a, **k):
        raise AssertionError("computed before the codec was checked")

    monkeypatch.setattr(dask, "compute", no_compute)
    with pytest.raises(ValueError, match=r"compression 'lzz' is not a Parquet codec; use one of zstd, .* \(did you mean 'lz4'\?\)"):
        out.to_parquet(tmp_path / "out", compression="lzz")
    assert not (tmp_path / "out").exists()


def test_to_parquet_failure_keeps_the_old_partition(tmp_path, monkeypatch):
    import pyarrow.parquet as pq_mod

    times = np.datetime64("2024-01-02", "ns") + np.arange(4) * np.timedelta64(1, "D")
    p = ff.Panel.from_numpy({"x": np.ones((4, 3))}, times=times)
    p.to_parquet(tmp_path)
    before = {f: f.read_bytes() for f in tmp_path.rglob("*.parquet")}
    real = pq_mod.write_table

    def crash(table, where, **kw):
        real(table.slice(0, 1), where, **kw)  # a partial file lands under the temporary name
        raise OSError("disk full")

    monkeypatch.setattr(pq_mod, "write_table", crash)
    p2 = ff.Panel.from_numpy({"x": np.zeros((4, 3))}, times=times)
    with pytest.raises(OSError, match="disk full"):
        p2.to_parquet(tmp_path)
    after = {f: f.read_bytes() for f in tmp_path.rglob("*.parquet")}
    assert after == before
    assert not [f for f in tmp_path.rglob("*") if f.name.endswith(".tmp")]


def test_sample_panel_is_reproducible_and_consistent():
    a, b = ff.sample_panel(300, 40, seed=7), ff.sample_panel(300, 40, seed=7)
    for f in a.fields:
        np.testing.assert_array_equal(a.to_numpy(f), b.to_numpy(f))
    hi, lo, c = a.to_numpy("high"), a.to_numpy("low"), a.to_numpy("close")
    ok = ~np.isnan(c)
    assert (hi[ok] >= c[ok]).all() and (lo[ok] <= c[ok]).all()
    assert np.isnan(c).any()  # listings, halts, missing bars
    assert np.issubdtype(a.times.dtype, np.datetime64)


def test_lead_reads_ahead_across_stages_and_chunks():
    """``lead`` (a forward halo) after a scan, before and after a cross-section, on any chunking."""
    from factorflow.factors import references as R
    from patterns import assert_close, make_patterned

    x = make_patterned(80, 6, seed=5)
    panel = ff.Panel.from_numpy({"x": x})
    factors = {
        "a": "lead(ema(x, 5), 3) - delay(x, 2)",
        "b": "cs_rank(lead(x, 2))",
        "c": "lead(cs_demean(x), 1) + lead(ts_mean(x, 4), 2)",
    }
    want = {
        "a": R.delay(R.ema(x, 5), -3) - R.delay(x, 2),
        "b": R.cs_rank(R.delay(x, -2)),
        "c": R.delay(R.cs_demean(x), -1) + R.delay(R.ts_mean(x, 4), -2),
    }
    for chunks in (None, {"time": 7, "symbol": 6}, {"time": 2, "symbol": 3}, {"time": 79, "symbol": 1}):
        out = ff.compute(factors, panel, chunks=chunks)
        for k in factors:
            assert_close(out.to_numpy(k), want[k], what=f"{k} chunks={chunks}")
    plan = ff.explain(factors, panel, chunks={"time": 10, "symbol": 6})
    assert plan.lookahead == 3 and "ahead" in str(plan)


@pytest.mark.parametrize("min_cells", [1, 40, 10_000_000])
def test_cross_section_row_blocks_do_not_change_results(monkeypatch, min_cells):
    """Cross-sectional stages run on their own row blocks (``plan.split_rows``, driven by the
    worker-thread count and ``MIN_BLOCK_CELLS``); any split gives the reference result, also when
    the row blocks straddle the local stages' time blocks."""
    import importlib

    plan_mod = importlib.import_module("factorflow.engine.plan")
    from factorflow.factors import references as R
    from patterns import assert_close, make_patterned

    monkeypatch.setattr(plan_mod, "MIN_BLOCK_CELLS", min_cells)
    x = make_patterned(90, 7, seed=8)
    g = np.random.default_rng(9).integers(0, 3, (90, 7)).astype(float)
    panel = ff.Panel.from_numpy({"x": x, "g": g})
    factors = {"a": "cs_rank(ts_mean(x, 3)) - cs_demean(x)", "b": "ts_sum(cs_neutralize(x, g), 4)"}
    want = {"a": R.cs_rank(R.ts_mean(x, 3)) - R.cs_demean(x), "b": R.ts_sum(R.cs_neutralize(x, g), 4)}
    split = []
    for chunks in (None, {"time": 13, "symbol": 7}, {"time": 40, "symbol": 3}, {"time": 90, "symbol": 7}):
        plan = ff.explain(factors, panel, chunks=chunks)
        split.append(len(plan.cs_tchunks) > len(plan.tchunks))
        out = ff.compute(factors, panel, chunks=chunks)
        for k in factors:
            assert_close(out.to_numpy(k), want[k], what=f"{k} chunks={chunks} min_cells={min_cells}")
    if min_cells == 1:
        assert any(split)  # the finer split is exercised
    if min_cells == 10_000_000:
        assert not any(split)  # blocks too small to cut: one cross-section task per time block


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("chunks", [None, {"time": 50, "symbol": 6}, {"time": 37}])
def test_sibling_window_kernels_fused_give_the_same_results(chunks, dtype):
    """Two ts_quantile of one input and window run as one sorted window, and ts_slope/rsquare/
    resid of one input and window as one pass (engine/graph.py: _fuse_siblings): each output must
    equal the operator computed alone, bit for bit, and the independent reference
    (factors/references.py), with halos, NaNs, ties, constant runs, 1e6 offsets and tiny values."""
    from factorflow.engine.graph import _local_program
    from factorflow.factors import references as ref

    panel = PANEL if dtype == "float64" else ff.Panel.from_numpy(
        {"close": X.astype(np.float32), "volume": V.astype(np.float32)}, times=PANEL.times, symbols=PANEL.symbols)
    x, v = (panel.to_numpy(f).astype(np.float64) for f in ("close", "volume"))
    with np.errstate(divide="ignore", invalid="ignore"):  # b = slope / close: tiny and zero closes
        b_want = ref.ts_slope(x, 15) / x
    want = {
        "qu": ref.ts_quantile(x, 10, 0.8), "qd": ref.ts_quantile(x, 10, 0.2), "qm": ref.ts_quantile(x, 10, 0.5),
        "qw": ref.ts_quantile(x, 12, 0.2), "qp": ref.ts_quantile(x, 10, 0.3, 4),
        "b": b_want, "r": ref.ts_rsquare(x, 15), "e": ref.ts_resid(x, 15),
        "b2": ref.ts_slope(v, 7), "e2": ref.ts_resid(v, 7, 3), "r2": ref.ts_rsquare(v, 7, 3),
    }
    terms = [ref.ts_resid(v, 7, 3), ref.ts_quantile(v, 5, 0.9), ref.ts_quantile(v, 5, 0.1)]
    want["e3"] = terms[0] + terms[1] - terms[2]
    # e3 cancels (the 1e6-offset column): its error is relative to the terms, not to the result
    e3_scale = np.abs(terms[0]) + np.abs(terms[1]) + np.abs(terms[2])

    factors = {
        "qu": "ts_quantile(close, 10, 0.8)", "qd": "ts_quantile(close, 10, 0.2)",
        "qm": "ts_quantile(close, 10, 0.5)",  # a third one: stays a single instruction
        "qw": "ts_quantile(close, 12, 0.2)",  # another window: not a sibling
        "qp": "ts_quantile(close, 10, 0.3, 4)",  # another min_periods: not a sibling
        "b": "ts_slope(close, 15) / close", "r": "ts_rsquare(close, 15)", "e": "ts_resid(close, 15)",
        "b2": "ts_slope(volume, 7)", "e2": "ts_resid(volume, 7, 3)", "r2": "ts_rsquare(volume, 7, 3)",
        "e3": "ts_resid(volume, 7, 3) + ts_quantile(volume, 5, 0.9) - ts_quantile(volume, 5, 0.1)",
    }
    plan = make_plan(factors, PANEL.shape, PANEL.fields, chunks=chunks)
    kernels = [ins.kernel for st in plan.stages if st.kind == "local" for ins in _local_program(plan, st).instructions]
    assert kernels.count("rolling.ts_quantiles") == 2  # (qu, qd) and the two in e3
    assert kernels.count("rolling.ts_quantile") == 3  # qm, qw, qp
    assert kernels.count("regression.ts_regression") == 2  # (b, r, e) and (e2, r2); b2 has another min_periods
    together = ff.compute(factors, panel, chunks=chunks)
    for name, text in factors.items():
        alone = ff.compute({name: text}, panel, chunks=chunks).to_numpy(name)
        got = together.to_numpy(name)
        assert got.dtype == np.dtype(dtype)
        assert np.array_equal(np.isnan(got), np.isnan(alone)), name
        np.testing.assert_array_equal(got[~np.isnan(got)], alone[~np.isnan(alone)], err_msg=name)
        rtol = 1e-9 if dtype == "float64" else 2e-5  # float32: stored in float32 at every node
        if name == "e3":
            assert np.array_equal(np.isnan(got), np.isnan(want[name])), name
            ok = ~np.isnan(got)
            assert (np.abs(got[ok] - want[name][ok]) <= rtol * e3_scale[ok]).all(), name
        else:
            assert_close(got, want[name], rtol=rtol, what=name)
