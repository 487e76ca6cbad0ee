"""`factorflow run` on the embedded cluster: jobs, manifests, skip/--force, incremental, errors.

Runs against real clusters (dask scheduler / workers, kills, TLS) are in tests/test_run_cluster.py.
"""
from __future__ import annotations

import json
import os
import re
import shutil

import pytest

from factorflow.cli import main

from run_helpers import (
    FACTORS,
    FREQ,
    assert_frames_close,
    factor_flags,
    file_bytes,
    make_store,
    read_output,
    reference,
)

COMMON = ["--freq", FREQ, "--dashboard-address", "127.0.0.1:0", "--no-progress"]


@pytest.fixture(scope="module")
def ticks(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("run") / "ticks", days=20)


@pytest.fixture(scope="module")
def full_run(ticks, tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "out"
    assert main(["run", "--ticks", ticks, "--out", str(out), *COMMON, *factor_flags()]) == 0
    return out


def test_run_matches_compute(ticks, full_run):
    got, want = read_output(full_run), reference(ticks)
    assert sorted(got) == sorted(want) and len(got) == 20
    for d in want:
        assert_frames_close(got[d], want[d], rtol=1e-12, what=d)
    m = json.loads((full_run / f"date={min(got)}" / "_manifest.json").read_text())
    assert m["factors"]["macd"]["formula"] == "ema(close, 12) - ema(close, 26)"
    assert len(m["factors"]["macd"]["hash"]) == 64 and m["code_version"]
    assert m["input"]["freq"] == FREQ and m["input"]["n_symbols"] == got[min(got)]["symbol"].n_unique()


def test_rerun_skips_committed_and_force_recomputes(ticks, full_run, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(full_run, out)
    before = {p: os.stat(out / p).st_mtime_ns for p in file_bytes(out)}
    assert main(["run", "--ticks", ticks, "--out", str(out), *COMMON, *factor_flags()]) == 0
    assert "20 partitions already committed, 0 to compute" in capsys.readouterr().out
    assert {p: os.stat(out / p).st_mtime_ns for p in file_bytes(out)} == before
    # a partition without a valid manifest is uncommitted: recomputed, the others untouched
    victim = sorted(before)[5]
    (out / victim).write_bytes(b"garbage")  # data no longer matches the manifest's size/checksum
    os.remove(out / sorted(before)[7].replace("part-0.parquet", "_manifest.json"))
    assert main(["run", "--ticks", ticks, "--out", str(out), *COMMON, *factor_flags()]) == 0
    assert "18 partitions already committed, 2 to compute" in capsys.readouterr().out
    assert file_bytes(out) == file_bytes(full_run)
    # a changed formula changes the manifest: everything is recomputed
    changed = dict(FACTORS, macd="ema(close, 12) - ema(close, 27)")
    assert main(["run", "--ticks", ticks, "--out", str(out), *COMMON, *factor_flags(changed)]) == 0
    assert "0 partitions already committed, 20 to compute" in capsys.readouterr().out
    assert main(["run", "--ticks", ticks, "--out", str(out), *COMMON, *factor_flags(changed), "--force"]) == 0
    assert "20 to compute" in capsys.readouterr().out


def test_job_file_and_factors_files(ticks, full_run, tmp_path, capsys):
    (tmp_path / "native.toml").write_text(
        "[factors]\n" + "\n".join(f'{k} = "{v}"' for k, v in FACTORS.items() if k != "rank") + "\n")
    from factorflow.factors import get_dialect

    try:  # the wq dialect (rank = cs_rank) comes with the dialects branch; native otherwise
        get_dialect("wq")
        (tmp_path / "wq.toml").write_text('dialect = "wq"\n[factors]\nrank = "rank(delta(volume, 2))"\n')
    except ValueError:
        (tmp_path / "wq.toml").write_text('dialect = "native"\n[factors]\nrank = "cs_rank(delta(volume, 2))"\n')
    (tmp_path / "bad_dialect.toml").write_text('dialect = "klingon"\n[factors]\nx = "close"\n')
    (tmp_path / "job.toml").write_text(
        f'ticks = "{ticks}"\nout = "out"\nfreq = "1d"\nfactors-file = ["native.toml", "wq.toml"]\n'
        'dashboard_address = "127.0.0.1:0"\nstart = "2024-01-02"\nend = "2024-01-08"\ncompression = "lz4"\n')
    # flags override the file: 15min bars instead of 1d, a shorter range
    assert main(["run", str(tmp_path / "job.toml"), "--freq", FREQ, "--end", "2024-01-05", "--no-progress"]) == 0
    got = read_output(tmp_path / "out")
    want = reference(ticks, dict(FACTORS, rank="cs_rank(delta(volume, 2))"), start="2024-01-02", end="2024-01-05")
    assert sorted(got) == sorted(want) == ["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"]
    for d in want:
        assert_frames_close(got[d], want[d], rtol=1e-12, what=d)
    import pyarrow.parquet as pq  # the file's codec is the job's

    def codecs():
        meta = pq.ParquetFile(tmp_path / "out" / "date=2024-01-02" / "part-0.parquet").metadata
        return {meta.row_group(0).column(i).compression for i in range(meta.num_columns)}

    assert codecs() == {"LZ4"}
    # the codec is not part of a partition's identity: another one keeps the committed files, --force rewrites
    again = ["run", str(tmp_path / "job.toml"), "--freq", FREQ, "--end", "2024-01-05", "--no-progress",
             "--compression", "zstd"]
    assert main(again) == 0 and codecs() == {"LZ4"}
    assert main([*again, "--force"]) == 0 and codecs() == {"ZSTD"}
    # validate checks the whole job without computing (nothing written)
    capsys.readouterr()
    assert main(["validate", str(tmp_path / "job.toml"), "--out", str(tmp_path / "v")]) == 0
    assert "job ok: 6 factors, 1d bars" in capsys.readouterr().out and not (tmp_path / "v").exists()
    assert main(["validate", str(tmp_path / "job.toml"), "--factors-file", str(tmp_path / "bad_dialect.toml")]) == 1
    assert "bad_dialect.toml: unknown dialect 'klingon'" in capsys.readouterr().err


def test_library_option(ticks, tmp_path):
    try:
        from factorflow.factors import libraries, library  # noqa: F401
    except ImportError:
        pytest.skip("factor libraries (factorflow.factors.library) are not in this build yet")
    out = tmp_path / "out"
    assert main(["run", "--ticks", ticks, "--out", str(out), "--freq", "1d", "--library", "alpha158",
                 "--end", "2024-01-10", "--dashboard-address", "127.0.0.1:0", "--no-progress"]) == 0
    assert len(read_output(out)) == 7
    assert main(["run", "--ticks", ticks, "--out", str(out), "--library", "alpha159"]) == 1


@pytest.mark.parametrize("days_first", [19, 17])
def test_incremental_equals_full(ticks, full_run, tmp_path, capsys, days_first):
    """20 days in one run vs `days_first` days, then --incremental runs of the rest."""
    from factorflow import TickStore

    dates = TickStore(ticks).dates()
    out = tmp_path / "out"
    assert main(["run", "--ticks", ticks, "--out", str(out), "--end", dates[days_first - 1], *COMMON,
                 *factor_flags()]) == 0
    if days_first == 17:  # two incremental steps: 17 -> 19 -> 20
        assert main(["run", "--ticks", ticks, "--out", str(out), "--end", dates[18], "--incremental", *COMMON,
                     *factor_flags()]) == 0
    capsys.readouterr()
    assert main(["run", "--ticks", ticks, "--out", str(out), "--incremental", *COMMON, *factor_flags()]) == 0
    text = capsys.readouterr().out
    assert "1 dates 2024-01-29 .. 2024-01-29 (+2 dates of history)" in text  # ts_mean(close, 40): 2 days
    got, full = read_output(out), read_output(full_run)
    for d in dates[days_first:]:
        assert_frames_close(got[d], full[d], rtol=1e-9, what=f"incremental {d}")
    assert json.loads((out / f"date={dates[-1]}" / "_manifest.json").read_text())["mode"] == "incremental"
    # nothing new: exit 0, nothing written
    assert main(["run", "--ticks", ticks, "--out", str(out), "--incremental", *COMMON, *factor_flags()]) == 0
    assert "up to date" in capsys.readouterr().out
    # the incremental partitions record the inputs a full run over the 20 days records (same tick
    # files, first date, universe), so a full rerun skips them
    for d in dates[days_first:]:
        inc = json.loads((out / f"date={d}" / "_manifest.json").read_text())
        ref = json.loads((full_run / f"date={d}" / "_manifest.json").read_text())
        assert inc["input"] == ref["input"] and inc["factors"] == ref["factors"]
    assert main(["run", "--ticks", ticks, "--out", str(out), *COMMON, *factor_flags()]) == 0
    committed = int(re.search(r"(\d+) partitions already committed", capsys.readouterr().out).group(1))
    assert committed >= 20 - days_first  # the earlier dates too, unless the universe grew after them


def test_incremental_state_is_versioned_with_the_formulas(ticks, full_run, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(full_run, out)
    changed = dict(FACTORS, z="(close - ts_mean(close, 10)) / ts_std(close, 10)")
    assert main(["run", "--ticks", ticks, "--out", str(out), "--incremental", *COMMON, *factor_flags(changed)]) == 1
    err = capsys.readouterr().err
    assert "saved state was computed for other formulas" in err and "changed: z" in err
    assert "rerun without --incremental" in err
    assert main(["run", "--ticks", ticks, "--out", str(tmp_path / "none"), "--incremental", *COMMON,
                 *factor_flags()]) == 1
    assert "no saved state" in capsys.readouterr().err


def test_invalid_jobs_exit_1_before_any_work(ticks, tmp_path, capsys):
    out = tmp_path / "out"
    cases = [
        (["--factor", "x=ts_mean(clse, 3)"], "unknown field 'clse'"),
        (["--factor", "x=ts_mean(close, 0)"], "factor 'x'"),
        (["--factor", "x"], "expected NAME=FORMULA"),
        (["--factor", "x=close", "--factor", "x=open"], "defined twice"),
        (["--factor", "x=close", "--start", "2030-01-01"], "no tick data"),
        (["--factor", "x=close", "--freq", "7min"], "7min"),
        (["--factor", "x=close", "--symbols", "NOPE"], "NOPE"),
        (["--factor", "x=close", "--tls-ca-file", "ca.pem"], "all three"),
        (["--factor", "x=close", "--backend", "gpu"], "backend='gpu' needs"),
        (["--factor", "x=close", "--compression", "lzz"], "compression 'lzz' is not a Parquet codec"),
        (["--factor", "x=close", "--dashboard-address", "nonsense"], "dashboard address 'nonsense' is not HOST:PORT"),
        (["--factor", "x=close", "--chunks", "0"], "the time block size must be a positive number of rows"),
        (["--factor", "x=close", "--chunks", "390,-2"], "the symbol block size must be a positive number of symbols"),
        (["--factor", "x=close", "--chunks", "abc"], "expected TIME[,SYMBOL] block sizes"),
        (["--factor", "x=close", "--scheduler-address", "nonsense"], "--scheduler-address 'nonsense': missing port"),
        (["--factors-file", str(tmp_path / "missing.toml")], "does not exist"),
        ([], "no factors"),
    ]
    for extra, message in cases:
        assert main(["run", "--ticks", ticks, "--out", str(out), "--no-progress", *extra]) == 1, extra
        err = capsys.readouterr().err
        assert message in err, (extra, err)
    assert not out.exists()
    (tmp_path / "bad.toml").write_text("tiks = 'x'\n")
    assert main(["run", str(tmp_path / "bad.toml")]) == 1
    assert "unknown key 'tiks' (did you mean 'ticks'?)" in capsys.readouterr().err



@pytest.mark.parametrize("line, message", [
    ("factor = 3", "factor must be a string or a list of strings, got int 3"),
    ("symbols = 5", "symbols must be a string or a list of strings, got int 5"),
    ('force = "no"', "force must be true or false, got str 'no'"),
    ('worker_timeout = "abc"', "worker_timeout must be a positive number of seconds"),
    ("freq = 5", "freq must be a string, got int 5"),
    ("start = 5", "start must be a date"),
    ("[factors]\nm = true", "[factors] m must be a formula string, got bool True"),
])
def test_job_file_values_have_their_types(ticks, tmp_path, capsys, line, message):
    factors = "" if line.startswith(("factor", "[factors]")) else 'factor = ["x=close"]\n'
    (tmp_path / "job.toml").write_text(f'ticks = "{ticks}"\nout = "out"\n{factors}{line}\n')
    assert main(["run", str(tmp_path / "job.toml"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"job file {tmp_path / 'job.toml'}: {message}" in err, err
    assert not (tmp_path / "out").exists()
    # the types TOML offers for dates and block sizes are taken as they are
    (tmp_path / "ok.toml").write_text(f'ticks = "{ticks}"\nout = "out"\nfactor = ["x=close"]\nstart = 2024-01-02\n'
                                      'end = 2024-01-03\nchunks = 100\nforce = true\nworker_timeout = 5\n')
    assert main(["validate", str(tmp_path / "ok.toml")]) == 0

HOSTILE = [
    "__import__('os').system('touch PWNED')",
    "close.__class__.__bases__",
    "eval('1+1')",
    "exec('import os')",
    "open('/etc/passwd')",
    "(lambda: 1)()",
    "[c for c in ().__class__.__base__.__subclasses__()]",
    "close; import os",
    "getattr(close, '__dict__')",
    "f'{close}'",
]


@pytest.mark.parametrize("formula", HOSTILE)
def test_hostile_formulas_are_rejected_not_run(formula, ticks, tmp_path, capsys, monkeypatch):
    """The formula language is parsed, never evaluated: code in a formula is a syntax error."""
    import factorflow as ff

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ff.FactorError):
        ff.factor(formula)
    assert main(["run", "--ticks", ticks, "--out", "out", "--no-progress", "--factor", f"x={formula}"]) == 1
    assert "invalid job" in capsys.readouterr().err
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "out").exists()


def test_progress_bar(ticks, tmp_path, capsys):
    from factorflow.engine.job import JobSpec, run_job

    spec = JobSpec(ticks=ticks, out=str(tmp_path / "out"), freq=FREQ, end="2024-01-05",
                   factor=[f"{k}={v}" for k, v in FACTORS.items()], dashboard_address="127.0.0.1:0")
    summary = run_job(spec, progress=True)
    assert summary["written"] == 4
    err = capsys.readouterr().err
    assert "partitions 4/4" in err and "bars " in err and "scan " in err


def test_failures_name_the_partition_and_suggest_smaller_chunks():
    """How task failures are reported (a real out-of-memory kill: tests/test_run_cluster.py)."""
    import numpy as np
    from distributed import KilledWorker

    import factorflow as ff
    from factorflow.engine.job import ComputeError, _classify

    class Client:
        status = "running"

    times = np.array(["2024-01-02T15:00", "2024-01-03T15:00", "2024-01-04T15:00"], dtype="datetime64[ns]")
    result = ff.compute({"m": "ts_mean(close, 2)"}, ff.Panel.from_numpy({"close": np.ones((3, 4))}, times=times),
                        chunks={"time": 2})
    key = result._groups[0].data.__dask_keys__()[0][1][0]  # second time block: rows 2..3
    err = _classify(KilledWorker(key, "tcp://127.0.0.1:1", 3), Client(), [], result)
    assert isinstance(err, ComputeError)
    assert "partition date=2024-01-04" in str(err)
    assert "smaller chunks (this run's blocks were up to 2 rows x 4 symbols (8e-06 M cells per field); " \
           "e.g. --chunks 1,4)" in str(err)
    to_write = [("2024-01-02", 0, 1, "d", {}), ("2024-01-03", 1, 2, "d", {})]
    err = _classify(MemoryError(), Client(), to_write, result)
    assert "out of memory" in str(err)
    err = _classify(KilledWorker("ff-commit-abc-1", "tcp://127.0.0.1:1", 3), Client(), to_write, result)
    assert "partition date=2024-01-03" in str(err)
    err = _classify(ValueError("boom"), Client(), to_write, result)
    assert "a task failed" in str(err) and "boom" in str(err)
    # a bars task (blocks of whole dates: here dates 1-2, then date 3) names its dates
    from types import SimpleNamespace

    bars = SimpleNamespace(_groups=[SimpleNamespace(data=SimpleNamespace(chunks=((5,), (2, 1), (4,))))])
    err = _classify(KilledWorker(("ff-bars-1min-abc-0", 0, 1, 0), "tcp://127.0.0.1:1", 3), Client(), to_write,
                    result, bars)
    assert "task ff-bars-1min-abc-0 (partition date=2024-01-04)" in str(err)
    err = _classify(KilledWorker(("ff-bars-1min-abc-0", 0, 0, 0), "tcp://127.0.0.1:1", 3), Client(), to_write,
                    result, bars)
    assert "(partition date=2024-01-02 .. 2024-01-03)" in str(err)


def test_lookahead_factors(ticks, tmp_path, capsys):
    """lead() reads later rows: no --incremental, and a partition is recomputed when later dates
    it reads arrive (skips only while everything it read is unchanged)."""
    from factorflow.factors.registry import operators

    if "lead" not in operators():
        pytest.skip("the lead operator is not in this build yet")
    from factorflow import TickStore

    dates = TickStore(ticks).dates()
    out = tmp_path / "out"
    flags = ["--factor", "fwd=lead(close, 3) / close - 1", *COMMON]
    assert main(["run", "--ticks", ticks, "--out", str(out), "--end", dates[-2], *flags]) == 0
    assert main(["run", "--ticks", ticks, "--out", str(out), "--incremental", *flags]) == 1
    assert "look ahead (lead)" in capsys.readouterr().err
    assert main(["run", "--ticks", ticks, "--out", str(out), *flags]) == 0
    text = capsys.readouterr().out
    m = re.search(r"(\d+) partitions already committed, (\d+) to compute", text)
    assert int(m.group(2)) >= 2  # the new date, and the one before it whose last rows read it
    got, want = read_output(out), reference(ticks, {"fwd": "lead(close, 3) / close - 1"})
    for d in dates[-2:]:
        assert_frames_close(got[d], want[d], rtol=1e-12, what=d)


def test_incremental_with_an_explicit_universe(ticks, tmp_path):
    from factorflow import TickStore

    store = TickStore(ticks)
    dates = store.dates()
    syms = list(reversed(store.symbols()))[:7]  # an order of the user's, not sorted
    flags = ["--symbols", *syms, *COMMON, *factor_flags({k: FACTORS[k] for k in ("macd", "nested", "rank")})]
    full, inc = tmp_path / "full", tmp_path / "inc"
    assert main(["run", "--ticks", ticks, "--out", str(full), *flags]) == 0
    assert main(["run", "--ticks", ticks, "--out", str(inc), "--end", dates[-2], *flags]) == 0
    assert main(["run", "--ticks", ticks, "--out", str(inc), "--incremental", *flags]) == 0
    got, want = read_output(inc)[dates[-1]], read_output(full)[dates[-1]]
    assert got["symbol"].to_list()[:7] == syms
    assert_frames_close(got, want, rtol=1e-9, what="explicit universe")


@pytest.mark.parametrize("workers", [1, 2])
def test_partitions_straddling_blocks_and_symbol_blocks(ticks, full_run, tmp_path, capsys, workers):
    """Chunks that cut days in the middle and split symbols: commits assemble a partition from
    row slices of two time blocks and several symbol blocks (engine/job.py), same files on the
    embedded cluster and on two workers, where the graph is pinned (engine/placement.py) and a
    partition straddling the two workers' date ranges reads rows from both."""
    out = tmp_path / "out"
    args = ["run", "--ticks", ticks, "--out", str(out), *COMMON, "--chunks", "37,3", *factor_flags()]
    if workers == 1:
        assert main(args) == 0
        text = capsys.readouterr().out
    else:
        from distributed import Client, LocalCluster, get_task_stream

        with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp", host="127.0.0.1",
                          dashboard_address=None) as lc, Client(lc) as client:
            with get_task_stream(client=client) as stream:
                assert main(args + ["--scheduler-address", lc.scheduler_address]) == 0
            text = capsys.readouterr().out
            commits = [t for t in stream.data if "ff-commit-" in str(t["key"])]
            # the dates were dealt to both workers in two runs of consecutive dates
            by_worker = {}
            for t in commits:
                by_worker.setdefault(t["worker"], []).append(int(str(t["key"]).rsplit("-", 1)[1]))
            assert len(by_worker) == 2, by_worker
            runs = sorted(sorted(v) for v in by_worker.values())
            assert runs[0][-1] < runs[1][0], runs
    grid = re.search(r"grid (\d+) x (\d+) blocks", text)
    assert grid and int(grid.group(1)) > 2 and int(grid.group(2)) > 1, text  # time and symbol blocks
    got, want = read_output(out), read_output(full_run)
    assert sorted(got) == sorted(want)
    for d in want:
        assert_frames_close(got[d], want[d], rtol=1e-12, what=d)


def test_manifest_checksums_the_file_written_and_detects_damage(tmp_path):
    """The manifest's sha256 and size are taken while the file is written (not read back): they
    must equal the file's, and a damaged or truncated file makes the partition uncommitted."""
    import hashlib

    import numpy as np
    import pyarrow.parquet as pq

    from factorflow.engine.manifest import MANIFEST, commit_partition, read_manifest

    T, N = 26, 7
    times = (np.datetime64("2024-01-02T14:30", "ns") + np.arange(T) * np.timedelta64(15, "m"))
    symbols = np.array([f"S{i}" for i in range(N)])
    values = np.random.default_rng(1).standard_normal((2, T, N))
    d = tmp_path / "date=2024-01-02"
    info = commit_partition(str(d), times, symbols, ["a", "b"], "zstd", {"date": "2024-01-02"}, values)
    data = (d / "part-0.parquet").read_bytes()
    m = read_manifest(str(d))
    assert m is not None and m["sha256"] == hashlib.sha256(data).hexdigest() and m["bytes"] == len(data)
    assert info["bytes"] == len(data) and (d / MANIFEST).exists()
    t = pq.read_table(d / "part-0.parquet")
    assert t.column_names == ["time", "symbol", "a", "b"] and t.num_rows == T * N
    np.testing.assert_array_equal(t.column("b").to_numpy().reshape(T, N), values[1])
    damaged = bytearray(data)
    damaged[len(data) // 2] ^= 0xFF
    (d / "part-0.parquet").write_bytes(bytes(damaged))
    assert read_manifest(str(d)) is None  # same size, other bytes
    (d / "part-0.parquet").write_bytes(data[:-1])
    assert read_manifest(str(d)) is None  # truncated
    (d / "part-0.parquet").write_bytes(data)
    assert read_manifest(str(d)) is not None


def test_plan_line_names_the_block_sizes():
    from factorflow.engine.job import _runs

    assert _runs((4020, 3780)) == "4020, 3780"
    assert _runs((6030, 5790, 5790, 5790)) == "6030, 3 x 5790"
    assert _runs((500,)) == "500"
