"""Progress display for ``ff.compute(..., progress=True)``.

With a distributed client (``ff.cluster.local()`` / ``ff.cluster.connect()``) the result is
persisted on the workers and ``distributed.progress`` follows it: the Dask progress widget in a
notebook (ipywidgets), a text bar in a terminal. Without one, Dask's local-scheduler
``ProgressBar`` prints a text bar while the result is computed.
"""
from __future__ import annotations

__all__ = ["compute_with_progress"]


def compute_with_progress(panel, *, minimum: float = 0.0):
    """Compute every lazy group of ``panel`` now, showing progress; returns ``panel``."""
    from .graph import _active_client

    client = _active_client()
    if client is None:
        from dask.diagnostics import ProgressBar

        with ProgressBar(minimum=minimum):
            panel.compute()
        return panel
    from distributed import progress, wait

    try:  # the widget needs ipywidgets; without it the text bar is shown in notebooks too
        import ipywidgets  # noqa: F401

        from ..cluster.display import in_notebook

        notebook = in_notebook()
    except ImportError:
        notebook = False
    for g in panel._groups:
        if g.is_dask and g._cache is None:
            persisted = client.persist(g.data)
            progress(persisted, notebook=notebook)
            wait(persisted)
            g.data = persisted
            g.origins = None  # blocks now live on the workers: gather them
    panel.compute()
    return panel
