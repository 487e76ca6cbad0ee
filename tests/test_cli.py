"""The command line (entry point and ``python -m factorflow``)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from factorflow.cli import main


def test_list_factors(capsys):
    assert main(["list-factors"]) == 0
    out = capsys.readouterr().out
    assert "ts_mean(x, window, min_periods=window)" in out and "cross_section:" in out


def test_validate_ok_and_invalid(capsys):
    assert main(["validate", "macd=ema(close, 12) - ema(close, 26)"]) == 0
    assert "macd: ok  ema(close, 12) - ema(close, 26)" in capsys.readouterr().out
    assert main(["validate", "bad=ts_mean(close, 0)", "good=close"]) == 1
    captured = capsys.readouterr()
    assert "bad: INVALID" in captured.err and "^" in captured.err and "good: ok" in captured.out


def test_explain(capsys):
    assert main(["explain", "--shape", "500", "40", "--chunks", "100,20", "z=cs_rank(ts_mean(close, 5))"]) == 0
    out = capsys.readouterr().out
    assert "500 times x 40 symbols" in out and "cross_section" in out


def test_usage_errors(capsys):
    assert main([]) == 2
    assert main(["validate"]) == 2


def test_demo_refuses_a_bad_dashboard_address_before_any_work(tmp_path, capsys):
    assert main(["demo", "--data", str(tmp_path / "ticks"), "--out", str(tmp_path / "out"),
                 "--dashboard-address", "nonsense"]) == 1
    assert "dashboard address 'nonsense' is not HOST:PORT or PORT" in capsys.readouterr().err
    assert not (tmp_path / "ticks").exists() and not (tmp_path / "out").exists()


def test_python_dash_m():
    r = subprocess.run([sys.executable, "-m", "factorflow", "validate", "ts_mean(close, 3)"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout


@pytest.mark.slow
def test_demo_runs(tmp_path):
    r = subprocess.run([sys.executable, "-m", "factorflow", "demo", "--symbols", "12", "--days", "3",
                        "--data", str(tmp_path / "ticks"), "--out", str(tmp_path / "out"),
                        "--dashboard-address", "127.0.0.1:0"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "dashboard: http://127.0.0.1:" in r.stdout
    assert "ticks -> 1min bars -> 10 factors" in r.stdout and "ticks -> 1d bars -> 10 factors" in r.stdout
    assert len(list((tmp_path / "out" / "1min").glob("date=*/part-0.parquet"))) == 3
    assert len(list((tmp_path / "out" / "1d").glob("date=*/part-0.parquet"))) == 3


def test_list_factors_shows_libraries_and_their_formulas(capsys):
    from factorflow.cli import main

    assert main(["list-factors", "--libraries"]) == 0
    out = capsys.readouterr().out
    assert "alpha158    158 factors" in out and "alpha101    101 factors" in out
    assert main(["list-factors", "--library", "alpha158", "--canonical"]) == 0
    out = capsys.readouterr().out
    assert "MA5      Mean($close, 5)/$close" in out and "= ts_mean(close, 5, min_periods=1) / close" in out
    assert main(["list-factors", "--library", "alpha159"]) == 2
    assert "unknown library 'alpha159'" in capsys.readouterr().err
