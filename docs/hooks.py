"""mkdocs hook: the Python API page is generated from the public docstrings at build time.

``docs/api.md`` holds the marker ``<!-- api -->``; it is replaced by one section per public name
of ``factorflow`` (signature and numpydoc docstring, whose Examples run as doctests in
tests/test_docs.py), so the page cannot drift from the code.
"""
from __future__ import annotations

import inspect

API = [
    "factor", "field", "compute", "explain", "evaluate", "Evaluation", "Panel", "Factor", "TickStore",
    "generate_ticks", "sample_panel", "operators", "cluster.local", "cluster.connect", "cluster.Cluster",
]
METHODS = {
    "Evaluation": ["summary", "show", "save", "figures", "turnover_at"],
    "Panel": ["from_numpy", "from_polars", "to_numpy", "to_polars", "to_parquet", "compute", "persist", "select", "plot"],
}


def _section(title: str, obj, level: int = 2) -> str:
    try:
        sig = str(inspect.signature(obj))
    except (TypeError, ValueError):
        sig = ""
    doc = inspect.cleandoc(obj.__doc__ or "(no docstring)")
    kind = "class" if inspect.isclass(obj) else "def"
    return f"{'#' * level} `{title}`\n\n```python\n{kind} {title.rsplit('.', 1)[-1]}{sig}\n```\n\n```text\n{doc}\n```\n"


def render() -> str:
    import factorflow as ff

    parts = []
    for name in API:
        obj = ff
        for attr in name.split("."):
            obj = getattr(obj, attr)
        parts.append(_section(f"ff.{name}", obj))
        for m in METHODS.get(name, []):
            parts.append(_section(f"ff.{name}.{m}", getattr(obj, m), level=3))
    return "\n".join(parts)


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri == "api.md":
        return markdown.replace("<!-- api -->", render())
    return markdown
