"""HTML views for Jupyter: ``Panel._repr_html_``, ``Plan._repr_html_`` (``ff.explain``) and
``Evaluation._repr_html_``. Plain escaped HTML tables, no JavaScript."""
from __future__ import annotations

import html

import numpy as np

from ..factors.html import _CELL, _STYLE, table_html

__all__ = ["panel_html", "plan_html", "evaluation_html"]


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""  # pragma: no cover


def _chunks(chunks) -> str:
    sizes = sorted(set(chunks))
    if len(sizes) == 1:
        return f"{len(chunks)} x {sizes[0]}"
    return f"{len(chunks)} blocks of {min(sizes)}..{max(sizes)}"


def panel_html(panel) -> str:
    """Shape, fields, time range, dtype, bytes, chunking and lazy/in-memory state of a panel.

    Examples
    --------
    >>> import numpy as np, factorflow as ff
    >>> text = ff.Panel.from_numpy({"close": np.ones((3, 2))})._repr_html_()
    >>> "3 times x 2 symbols" in text and "in memory" in text
    True
    """
    T, N = panel.shape
    times = panel.times
    trange = f"{times[0]} .. {times[-1]}" if len(times) else "(empty)"
    groups = []
    for g in panel._groups:
        names = ", ".join(g.names[:6]) + (", ..." if len(g.names) > 6 else "")
        if g.is_dask and g._cache is None:
            state = (f"lazy (dask): time {_chunks(g.data.chunks[1])} x symbol {_chunks(g.data.chunks[2])}, "
                     f"{len(g.data.__dask_graph__())} graph keys")
        elif g.is_dask:
            state = "computed, in memory"
        else:
            state = "in memory (NumPy)"
        groups.append((names, state))
    rows = [
        ("shape", f"{T} times x {N} symbols"),
        ("fields", f"{len(panel.fields)}: " + ", ".join(panel.fields[:20]) + (", ..." if len(panel.fields) > 20 else "")),
        ("time range", trange),
        ("symbols", ", ".join(map(str, panel.symbols[:8].tolist())) + (", ..." if N > 8 else "")),
        ("dtype", str(panel.dtype)),
        ("size", _bytes(T * N * len(panel.fields) * np.dtype(panel.dtype).itemsize)),
        ("state", "lazy: computed on first access" if panel.is_lazy else "in memory"),
    ]
    rows += [(f"group {i}: {names}", state) for i, (names, state) in enumerate(groups)]
    return table_html("Panel", rows)


def plan_html(plan) -> str:
    """Summary and one table row per stage (kind, level, fused operators, halo, tasks).

    Examples
    --------
    >>> import numpy as np, factorflow as ff
    >>> p = ff.Panel.from_numpy({"close": np.ones((100, 5))})
    >>> text = ff.explain({"m": "ts_mean(close, 5) - ema(close, 3)"}, p)._repr_html_()
    >>> "ts_mean(close, 5)" in text and "tasks" in text
    True
    """
    s = plan.summary()
    T, N = plan.shape
    fields = sorted(n.params[0] for n in plan.nodes if n.kind == "field")
    head = table_html("factorflow plan", [
        ("factors", f"{s['factors']}: " + ", ".join(plan.names[:12]) + (", ..." if len(plan.names) > 12 else "")),
        ("panel", f"{T} times x {N} symbols ({plan.dtype}), backend {plan.backend}"),
        ("fields read", ", ".join(fields) or "(none)"),
        ("operators", f"{s['nodes_before_cse']} in the formulas, {s['distinct_operator_nodes']} distinct after CSE"),
        ("chunks", f"time {s['chunks']['time']} x symbol {s['chunks']['symbol']} -> grid {s['grid'][0]} x {s['grid'][1]}"),
        ("lookback", f"{s['lookback']} rows"),
        ("stages / tasks", f"{s['stages']} / {s['tasks']}"),
    ])
    th = "".join(f"<th style='{_CELL}'>{h}</th>" for h in ("#", "stage", "level", "operators (fused)", "halo", "tasks"))
    body = []
    for i, st in enumerate(plan.stages):
        kind = ("final local" if st.final else "local") if st.kind == "local" else st.kind
        ops = [plan.nodes[nid].text for nid in st.nodes]
        shown = "<br>".join(html.escape(o) for o in ops[:12]) + (f"<br>... {len(ops) - 12} more" if len(ops) > 12 else "")
        halo = f"{st.halo} rows" if st.kind == "local" else ("scan carry" if st.kind == "recursive" else "whole rows")
        cells = [str(i), kind, str(st.level), f"{len(ops)}<br>{shown}", halo, str(plan.stage_tasks(st))]
        body.append("<tr>" + "".join(f"<td style='{_CELL}'>{c if j == 3 else html.escape(c)}</td>"
                                     for j, c in enumerate(cells)) + "</tr>")
    return head + f"<table style='{_STYLE};margin-top:6px'><tr>{th}</tr>{''.join(body)}</table>"


def evaluation_html(ev) -> str:
    """The evaluation's summary as an HTML table (``Evaluation.show()`` draws the plots)."""
    s = ev.summary()
    cols = ["factor", "period", "n_dates", "ic_mean", "ic_ir", "rank_ic_mean", "rank_ic_ir", "spread",
            "turnover_top", "rank_autocorr", "coverage"]
    th = "".join(f"<th style='{_CELL}'>{c}</th>" for c in cols)
    body = []
    for row in s.select(cols).iter_rows():
        cells = []
        for v in row:
            if isinstance(v, float):
                cells.append(f"{v:.4f}")
            else:
                cells.append(html.escape("–" if v is None else str(v)))
        body.append("<tr>" + "".join(f"<td style='{_CELL};text-align:right'>{c}</td>" for c in cells) + "</tr>")
    cap = html.escape(repr(ev))
    return (f"<table style='{_STYLE}'><caption style='text-align:left;font-weight:600'>{cap}</caption>"
            f"<tr>{th}</tr>{''.join(body)}</table>")
