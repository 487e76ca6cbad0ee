"""HTML views of factors for Jupyter (``Factor._repr_html_``).

Plain HTML tables, no JavaScript, everything escaped: they render in any notebook front end and
in static exports.
"""
from __future__ import annotations

import html

__all__ = ["factor_html", "table_html"]

_STYLE = "border-collapse:collapse;font-size:12px;text-align:left"
_CELL = "padding:2px 10px;border-bottom:1px solid #ddd;vertical-align:top"


def table_html(title: str, rows) -> str:
    """A two-column key/value table with a caption; values are escaped.

    Examples
    --------
    >>> table_html("t", [("a", "<b>")])
    "<table style=...<td ...>&lt;b&gt;</td></tr></table>"
    """
    body = "".join(
        f"<tr><th style='{_CELL};font-weight:600'>{html.escape(str(k))}</th>"
        f"<td style='{_CELL}'>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return (f"<table style='{_STYLE}'><caption style='text-align:left;font-weight:600;padding:2px 0'>"
            f"{html.escape(title)}</caption>{body}</table>")


def factor_html(f) -> str:
    """Formula, canonical form, dialect, lookback, fields and operators of a factor.

    Examples
    --------
    >>> import factorflow as ff
    >>> text = ff.factor("ts_mean(close, 5)  /  close")._repr_html_()
    >>> "ts_mean(close, 5) / close" in text and "lookback" in text
    True
    """
    ops = {}
    for n in f.walk():
        if n.op not in ("field", "const"):
            ops.setdefault(n.operator.kind, set()).add(n.op)
    rows = [
        ("formula", f.formula),
        ("canonical", f.canonical),
        ("dialect", f.source.dialect if f.source is not None else "native (Python API)"),
        ("lookback", f"{f.lookback} rows before the current one"),
        ("fields", ", ".join(f.fields) or "(none)"),
        ("operators", "; ".join(f"{kind}: {', '.join(sorted(names))}" for kind, names in sorted(ops.items()))
         or "(none)"),
    ]
    return table_html("Factor", rows)
