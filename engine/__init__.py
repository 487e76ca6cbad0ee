"""The engine: planner and graph builder (expressions -> stages -> Dask graph), Panel and I/O."""
from __future__ import annotations

from .compute import compute, explain, plan
from .panel import Panel
from .sample import sample_panel
from .tickgen import generate_ticks
from .ticks import TickDataError, TickStore

__all__ = ["Panel", "TickDataError", "TickStore", "compute", "explain", "generate_ticks", "plan", "sample_panel"]
