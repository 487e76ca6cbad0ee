"""Bokeh plots: the evaluation report and factor values over time.

Everything here builds bokeh models only; showing them (``Evaluation.show``) or writing a
standalone HTML file (``Evaluation.save``) embeds BokehJS inline (``bokeh.resources.INLINE``),
so reports open without a server and without internet access.

The report for one factor and horizon holds six plots, each named (``model.name``) so tests and
tools can find them: ``ic_time`` (IC per date and its rolling mean), ``ic_hist`` (IC
distribution), ``ic_decay`` (mean IC and rank IC per horizon), ``quantile_returns`` (mean return
per quantile and horizon), ``cumulative_returns`` (growth of 1 per quantile) and ``turnover``
(top and bottom quantile turnover, rank autocorrelation).
"""
from __future__ import annotations

import html
import os
import tempfile

import numpy as np

__all__ = ["evaluation_report", "save_report", "plot_panel", "PLOT_NAMES"]

PLOT_NAMES = ("ic_time", "ic_hist", "ic_decay", "quantile_returns", "cumulative_returns", "turnover")
ROLLING = 22  # dates in the rolling mean of the IC plot (about a month of trading days)
WIDTH, HEIGHT = 560, 280


def _x(times):
    """(x values, axis type) for bokeh: datetimes as datetime64[ms], anything else as is."""
    t = np.asarray(times)
    if np.issubdtype(t.dtype, np.datetime64):
        return t.astype("datetime64[ms]"), "datetime"
    if t.dtype.kind in "iuf":
        return t, "linear"
    return np.arange(len(t)), "linear"


def _palette(n: int) -> list[str]:
    """``n`` colours from red (quantile 1, lowest factor values) to green (top quantile).

    Examples
    --------
    >>> _palette(3)
    ['#a50026', '#ffffbf', '#006837']
    >>> len(_palette(20)), len(set(_palette(20)))
    (20, 20)
    """
    from bokeh.palettes import RdYlGn11, Turbo256

    if n <= 11:
        pal = RdYlGn11[::-1]  # bokeh lists it green to red
        return [pal[int(round(i))] for i in np.linspace(0, 10, n)]
    return [Turbo256[int(round(i))] for i in np.linspace(0, 255, n)]


def _rolling_mean(x: np.ndarray, w: int) -> np.ndarray:
    """Mean of the last ``w`` non-NaN-skipping values (NaN until ``w // 2`` values are seen)."""
    ok = ~np.isnan(x)
    s = np.cumsum(np.where(ok, x, 0.0))
    c = np.cumsum(ok)
    s_w = s - np.concatenate([np.zeros(w), s[:-w]])[: len(s)]
    c_w = c - np.concatenate([np.zeros(w, dtype=c.dtype), c[:-w]])[: len(c)]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = s_w / c_w
    out[c_w < max(1, w // 2)] = np.nan
    return out


def evaluation_report(ev, factor: str, period: int):
    """A bokeh layout with the six plots of ``factor`` at horizon ``period``."""
    from bokeh.layouts import column, gridplot
    from bokeh.models import ColumnDataSource, Div, FactorRange, HoverTool, Legend, Span
    from bokeh.plotting import figure

    f = ev._fi(factor)
    p = ev._pi(period)
    r = ev._r
    ok = r["nvalid"][f] > 0
    x_all, xtype = _x(ev.times)
    x = x_all[ok]
    ic = r["ic"][f, p][ok]
    ric = r["ric"][f, p][ok]

    # 1. IC over time with its rolling mean
    fig1 = figure(name="ic_time", title=f"{factor}: IC per date, {period}-row forward return",
                  x_axis_type=xtype, width=WIDTH, height=HEIGHT, tools="pan,xwheel_zoom,box_zoom,reset,save")
    src = ColumnDataSource({"x": x, "ic": ic, "rank_ic": ric, "roll": _rolling_mean(ic, ROLLING),
                            "roll_rank": _rolling_mean(ric, ROLLING)})
    fig1.line("x", "ic", source=src, color="#9ecae1", legend_label="IC (Pearson)")
    fig1.line("x", "roll", source=src, color="#08519c", line_width=2, legend_label=f"{ROLLING}-date mean")
    fig1.line("x", "roll_rank", source=src, color="#e6550d", line_width=2, legend_label=f"rank IC, {ROLLING}-date mean")
    fig1.add_layout(Span(location=0, dimension="width", line_color="#555", line_dash="dashed"))
    fig1.legend.location = "top_left"
    fig1.legend.label_text_font_size = "8pt"
    fig1.add_tools(HoverTool(tooltips=[("IC", "@ic{0.000}"), ("rank IC", "@rank_ic{0.000}")]))

    # 2. IC histogram
    fig2 = figure(name="ic_hist", title=f"{factor}: IC distribution ({period} rows)", width=WIDTH, height=HEIGHT,
                  tools="pan,box_zoom,reset,save")
    vals = ic[~np.isnan(ic)]
    if len(vals):
        hist, edges = np.histogram(vals, bins=min(50, max(5, len(vals) // 10)))
        fig2.quad(top=hist, bottom=0, left=edges[:-1], right=edges[1:], fill_color="#6baed6", line_color="white")
        fig2.add_layout(Span(location=float(vals.mean()), dimension="height", line_color="#08519c", line_width=2))
    fig2.xaxis.axis_label = "IC"
    fig2.yaxis.axis_label = "dates"

    # 3. IC decay over horizons
    labels = [str(h) for h in ev.periods]
    m_ic = [_mean(r["ic"][f, k][ok]) for k in range(len(ev.periods))]
    m_ric = [_mean(r["ric"][f, k][ok]) for k in range(len(ev.periods))]
    fig3 = figure(name="ic_decay", title=f"{factor}: IC decay over horizons (rows)", x_range=labels, width=WIDTH,
                  height=HEIGHT, tools="save")
    dsrc = ColumnDataSource({"h": labels, "ic": m_ic, "rank_ic": m_ric})
    fig3.line("h", "ic", source=dsrc, color="#08519c", line_width=2, legend_label="mean IC")
    fig3.scatter("h", "ic", source=dsrc, color="#08519c", size=8)
    fig3.line("h", "rank_ic", source=dsrc, color="#e6550d", line_width=2, legend_label="mean rank IC")
    fig3.scatter("h", "rank_ic", source=dsrc, color="#e6550d", size=8)
    fig3.add_layout(Span(location=0, dimension="width", line_color="#555", line_dash="dashed"))
    fig3.legend.label_text_font_size = "8pt"

    # 4. mean return per quantile, grouped by horizon
    mean, _, _ = ev._quantile_stats("qmean")
    Q = ev.quantiles
    colors = _palette(Q)
    cats = [(str(h), f"Q{q + 1}") for h in ev.periods for q in range(Q)]
    qsrc = ColumnDataSource({"x": cats, "ret": [float(mean[f, k, q]) * 1e4 for k in range(len(ev.periods))
                                                   for q in range(Q)],
                             "color": colors * len(ev.periods)})
    fig4 = figure(name="quantile_returns", x_range=FactorRange(*cats), width=WIDTH, height=HEIGHT,
                  title=f"{factor}: mean {'demeaned ' if ev.demeaned else ''}forward return by quantile (bps)",
                  tools="save")
    fig4.vbar(x="x", top="ret", width=0.85, source=qsrc, fill_color="color", line_color=None)
    fig4.xaxis.major_label_orientation = 1.0
    fig4.xaxis.major_label_text_font_size = "7pt"
    fig4.add_tools(HoverTool(tooltips=[("quantile", "@x"), ("bps", "@ret{0.00}")]))

    # 5. cumulative quantile returns
    cum = ev._cum()[f]  # (T, Q)
    fig5 = figure(name="cumulative_returns", x_axis_type=xtype, width=WIDTH, height=HEIGHT,
                  title=f"{factor}: cumulative return by quantile ({ev.periods[0]}-row returns)",
                  tools="pan,xwheel_zoom,box_zoom,reset,save")
    items = []
    for q in range(Q):
        rend = fig5.line(x_all, cum[:, q], color=colors[q], line_width=1.5)
        items.append((f"Q{q + 1}", [rend]))
    fig5.add_layout(Legend(items=items, label_text_font_size="8pt"), "right")

    # 6. turnover of the top and bottom quantiles, rank autocorrelation
    fig6 = figure(name="turnover", x_axis_type=xtype, width=WIDTH, height=HEIGHT,
                  title=f"{factor}: quantile turnover and rank autocorrelation (lag {period})",
                  tools="pan,xwheel_zoom,box_zoom,reset,save")
    k = ev.lags.index(period)
    tv = r["turnover"][f, k]
    fig6.line(x_all, tv[:, -1], color=colors[-1], legend_label=f"Q{Q} turnover")
    fig6.line(x_all, tv[:, 0], color=colors[0], legend_label="Q1 turnover")
    fig6.line(x_all, r["autocorr"][f, k], color="#555", line_dash="dotted", legend_label="rank autocorrelation")
    fig6.legend.label_text_font_size = "8pt"
    fig6.legend.location = "bottom_left"

    summ = ev.summary()
    row = summ.row(summ["factor"].to_list().index(factor) + p, named=True)
    head = Div(name="summary", text=_summary_html(ev, factor, period, row), width=2 * WIDTH)
    return column(head, gridplot([[fig1, fig2], [fig3, fig4], [fig5, fig6]], toolbar_location="right"),
                  name=f"report-{factor}")


def _mean(x) -> float:
    x = np.asarray(x, dtype=np.float64)
    x = x[~np.isnan(x)]
    return float(x.mean()) if len(x) else float("nan")


def _fmt(v, spec=".4f") -> str:
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, spec)


def _summary_html(ev, factor, period, row) -> str:
    cells = [("dates", _fmt(row["n_dates"], "d")), ("IC mean", _fmt(row["ic_mean"])), ("IC IR", _fmt(row["ic_ir"], ".3f")),
             ("IC t", _fmt(row["ic_tstat"], ".2f")), ("rank IC mean", _fmt(row["rank_ic_mean"])),
             ("rank IC IR", _fmt(row["rank_ic_ir"], ".3f")),
             ("top − bottom (bps)", _fmt(None if row["spread"] is None else row["spread"] * 1e4, ".2f")),
             (f"Q{ev.quantiles} turnover", _fmt(row["turnover_top"], ".3f")), ("rank autocorr", _fmt(row["rank_autocorr"], ".3f")),
             ("coverage", _fmt(row["coverage"], ".1%"))]
    head = "".join(f"<th style='padding:2px 8px'>{html.escape(k)}</th>" for k, _ in cells)
    body = "".join(f"<td style='padding:2px 8px;text-align:right'>{v}</td>" for _, v in cells)
    return (f"<h3 style='margin:4px 0'>{html.escape(factor)} — {period}-row horizon, {ev.quantiles} quantiles</h3>"
            f"<table style='border-collapse:collapse;font-size:12px'><tr>{head}</tr><tr>{body}</tr></table>")


def save_report(ev, path, factor=None, title=None) -> str:
    """Standalone HTML (BokehJS inline) with one tab per factor (or only ``factor``), written
    to a temporary name and renamed into place."""
    from bokeh.embed import file_html
    from bokeh.models import TabPanel, Tabs
    from bokeh.resources import INLINE

    factors = ev.factors if factor is None else [factor]
    for f in factors:
        ev._fi(f)
    period = ev.periods[0]
    if len(factors) == 1:
        root = evaluation_report(ev, factors[0], period)
    else:
        root = Tabs(tabs=[TabPanel(child=evaluation_report(ev, f, period), title=f) for f in factors])
    text = file_html(root, INLINE, title=title or f"factorflow evaluation: {', '.join(factors)}")
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".html", dir=d)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def plot_panel(panel, field: str, symbols=None, *, max_symbols: int = 10, width: int = 800, height: int = 320):
    """A bokeh figure of ``field`` over time for some symbols (default: the first
    ``max_symbols``). Only those columns are computed and read."""
    from bokeh.models import HoverTool, Legend
    from bokeh.palettes import Category10_10
    from bokeh.plotting import figure

    if field not in panel.fields:
        raise KeyError(f"no field {field!r} in the panel (fields: {', '.join(panel.fields)})")
    all_syms = [str(s) for s in panel.symbols.tolist()]
    if symbols is None:
        cols = list(range(min(max_symbols, len(all_syms))))
    else:
        if isinstance(symbols, str):
            symbols = [symbols]
        pos = {s: j for j, s in enumerate(all_syms)}
        missing = [s for s in symbols if str(s) not in pos]
        if missing:
            raise KeyError(f"symbols not in the panel: {missing[:5]}")
        cols = [pos[str(s)] for s in symbols]
    g, k = panel._locate(field)
    if g.is_dask and g._cache is None:
        values = np.asarray(g.data[k][:, cols].compute())
    else:
        values = g.materialize()[k][:, cols]
    x, xtype = _x(panel.times)
    fig = figure(name=f"panel-{field}", title=f"{field}", x_axis_type=xtype, width=width, height=height,
                 tools="pan,xwheel_zoom,box_zoom,reset,save")
    items = []
    for i, j in enumerate(cols):
        rend = fig.line(x, values[:, i], color=Category10_10[i % 10], line_width=1.5)
        items.append((all_syms[j], [rend]))
    fig.add_layout(Legend(items=items, label_text_font_size="8pt"), "right")
    fig.add_tools(HoverTool(tooltips=[(field, "$y{0.0000}")]))
    return fig
