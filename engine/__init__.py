"""The engine: planner and graph builder (expressions -> stages -> Dask graph), Panel and I/O."""
from __future__ import annotations

from .memory import configure_numpy_hugepages

configure_numpy_hugepages()  # before the first large allocation; see engine/memory.py

from .compute import compute, explain, plan  # noqa: E402
from .panel import Panel  # noqa: E402
from .sample import sample_panel  # noqa: E402
from .tickgen import generate_ticks  # noqa: E402
from .ticks import TickDataError, TickStore  # noqa: E402

__all__ = ["Panel", "TickDataError", "TickStore", "compute", "explain", "generate_ticks", "plan", "sample_panel"]
