"""Telling the user where the Dask dashboard is when a cluster starts.

In a Jupyter kernel the link is displayed as HTML (clickable); elsewhere one line goes to
stderr. ``Cluster._repr_html_`` shows the same in a notebook cell.
"""
from __future__ import annotations

import html
import sys

__all__ = ["announce", "cluster_html", "in_notebook"]


def in_notebook() -> bool:
    """True inside a Jupyter (IPython kernel) session."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    ip = get_ipython()
    return ip is not None and "IPKernelApp" in getattr(ip, "config", {})


def cluster_html(cluster) -> str:
    """Scheduler, workers, threads and a link to the dashboard."""
    link = cluster.dashboard_link
    dash = (f"<a href='{html.escape(link)}' target='_blank'>{html.escape(link)}</a>" if link else "(disabled)")
    kind = "embedded local cluster" if cluster.cluster is not None else "connected cluster"
    return (f"<div style='font-size:12px'><b>factorflow {kind}</b>: scheduler "
            f"<code>{html.escape(str(cluster.scheduler_address))}</code>, {cluster.n_workers} workers, "
            f"{cluster.nthreads} threads; dashboard {dash}</div>")


def announce(cluster) -> None:
    """Show the dashboard link of a cluster that just started."""
    link = cluster.dashboard_link
    if not link:
        return
    if in_notebook():
        from IPython.display import HTML, display

        display(HTML(cluster_html(cluster)))
    else:
        print(f"factorflow: Dask dashboard at {link}", file=sys.stderr)
