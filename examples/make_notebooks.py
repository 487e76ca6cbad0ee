"""Write the example notebooks (without outputs) from the cells below.

Run ``python examples/make_notebooks.py`` after editing; tests/test_examples.py executes every
notebook and checks that the committed files carry no outputs.
"""
from __future__ import annotations

import pathlib

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = pathlib.Path(__file__).resolve().parent

NOTEBOOKS = {
    "01_quickstart": [
        ("md", """# factorflow quickstart

Factor formulas in a small DSL, compiled into one Dask graph of Numba kernels. This notebook
uses a generated daily panel (no data to download) and runs in seconds."""),
        ("code", """import numpy as np
import factorflow as ff

panel = ff.sample_panel(750, 300, seed=0)   # 750 days x 300 symbols of OHLCV
panel"""),
        ("md", "A factor is parsed and validated before anything runs; its HTML view shows the canonical form, the lookback and the fields it reads."),
        ("code", """macd = ff.factor("ema(close, 12) - ema(close, 26)")
macd"""),
        ("code", """factors = {
    "macd": macd,
    "zscore": "(close - ts_mean(close, 20)) / ts_std(close, 20)",
    "rank_mom": "cs_rank(close / delay(close, 10))",
}
ff.explain(factors, panel)   # stages, fused operators, halos, tasks"""),
        ("code", """out = ff.compute(factors, panel)   # lazy: nothing has run yet
out"""),
        ("code", """z = out.to_numpy("zscore")          # computes the whole result once
print(z.shape, np.nanmean(z))
out.to_polars().head()"""),
        ("md", "Errors name the factor, the position and a fix:"),
        ("code", """try:
    ff.compute({"bad": "ts_mean(clsoe, 5)"}, panel)
except ff.FactorTypeError as e:
    print(e)"""),
        ("md", "Plot a factor for a few symbols (bokeh, inline resources: works offline)."),
        ("code", """from bokeh.io import output_notebook, show
from bokeh.resources import INLINE

output_notebook(INLINE, hide_banner=True)
show(out.plot("macd", symbols=list(panel.symbols[:4])))"""),
    ],
    "02_ticks_to_factors": [
        ("md", """# From ticks to factors

Generate a small hive-partitioned Parquet tick store, turn it into 5-minute bars (read inside
the Dask tasks), compute factors and write them back as partitioned Parquet."""),
        ("code", """import pathlib, tempfile
import factorflow as ff

root = pathlib.Path(tempfile.mkdtemp(prefix="ff-ticks-"))
info = ff.generate_ticks(root / "ticks", symbols=40, days=3, seed=0, ticks_per_day=500)
sorted(p.name for p in (root / "ticks").iterdir())"""),
        ("code", """store = ff.TickStore(root / "ticks")
bars = store.bars("5min")   # lazy, dask-backed Panel
bars"""),
        ("code", """factors = {
    "ret_1": "close / delay(close, 1) - 1",
    "vwap_gap": "close / vwap - 1",
    "vol_rank": "cs_rank(ts_mean(volume, 6))",
}
out = ff.compute(factors, bars)
out.to_polars().drop_nans().head()"""),
        ("code", """written = out.to_parquet(root / "factors")   # one atomic file per date partition
[str(pathlib.Path(p).relative_to(root)) for p in written]"""),
        ("code", """import polars as pl
pl.read_parquet(root / "factors", hive_partitioning=True).head()"""),
    ],
    "03_factor_research": [
        ("md", """# Factor research: does it predict returns?

`ff.evaluate` computes forward returns, IC and rank IC per date, quantile returns, turnover and
rank autocorrelation on Dask (never collecting the panel into pandas); the numbers agree with
alphalens-reloaded to 1e-9. `Evaluation.show()` draws the bokeh report."""),
        ("code", """import factorflow as ff
import polars as pl

panel = ff.sample_panel(750, 400, seed=1)
factors = {
    "rev_5": "-(close / delay(close, 5) - 1)",
    "mom_20": "close / delay(close, 20) - 1",
    "vwap_gap": "cs_zscore(close / vwap - 1)",
    "vol_20": "ts_std(close / delay(close, 1) - 1, 20)",
}
ev = ff.evaluate(factors, panel, prices="close", periods=(1, 5, 10), quantiles=5)
ev"""),
        ("code", "ev.summary()"),
        ("code", """ev.ic.filter(pl.col("factor") == "rev_5").head()"""),
        ("code", """ev.quantile_returns.filter(pl.col("period") == 5).pivot(on="quantile", index="factor", values="mean_return")"""),
        ("code", "ev.show(\"rev_5\", period=1)"),
        ("md", "A standalone report (JavaScript inline: opens offline, no server):"),
        ("code", """import tempfile, os
path = ev.save(os.path.join(tempfile.mkdtemp(), "report.html"))
print(path, os.path.getsize(path) // 1024, "KiB")"""),
        ("md", "Group-neutral variants: forward returns demeaned within each group (e.g. an industry map)."),
        ("code", """groups = {s: f"g{i % 5}" for i, s in enumerate(panel.symbols)}
ev_g = ff.evaluate({"rev_5": factors["rev_5"]}, panel, periods=(1, 5), groups=groups)
ev_g.summary().select("factor", "period", "ic_mean", "ic_group_neutral_mean", "rank_ic_group_neutral_mean")"""),
    ],
    "04_cluster_and_dashboard": [
        ("md", """# The embedded cluster and the Dask dashboard

`ff.cluster.local()` starts a LocalCluster in this process (threads; the Numba kernels release
the GIL) with its dashboard on 127.0.0.1 and shows the link. `progress=True` shows Dask's
progress bar while a result is computed."""),
        ("code", """import factorflow as ff

cluster = ff.cluster.local(dashboard_address="127.0.0.1:0")   # any free port
cluster"""),
        ("code", """panel = ff.sample_panel(1000, 500, seed=2)
factors = {
    "macd": "ema(close, 12) - ema(close, 26)",
    "pv_corr": "ts_corr(close, log(volume), 10)",
    "rank_mom": "cs_rank(close / delay(close, 10))",
}
plan = ff.explain(factors, panel)
plan"""),
        ("code", """out = ff.compute(factors, panel, progress=True)   # computed now, with a progress bar
out"""),
        ("code", """ev = ff.evaluate(out, panel, periods=(1, 5))   # evaluate the computed factors on the cluster
ev.summary().select("factor", "period", "rank_ic_mean", "rank_ic_ir", "turnover_top")"""),
        ("code", "cluster.close()"),
        ("md", """For a real deployment: `dask scheduler --scheduler-file s.json`, `dask worker
--scheduler-file s.json` on each machine, then `ff.cluster.connect(scheduler_file="s.json")`
(see docs/deployment.md)."""),
    ],
}


def build(name: str, cells) -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, (kind, src) in enumerate(cells):
        cell = new_markdown_cell(src) if kind == "md" else new_code_cell(src)
        cell["id"] = f"{name[:2]}-{i:02d}"
        nb.cells.append(cell)
    return nb


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        nbformat.write(build(name, cells), HERE / f"{name}.ipynb")


if __name__ == "__main__":
    main()
