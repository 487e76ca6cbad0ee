"""The engine: planner and graph builder (expressions -> stages -> Dask graph), Panel and I/O."""
from __future__ import annotations

from .compute import compute, explain, plan
from .panel import Panel
from .sample import sample_panel

__all__ = ["Panel", "compute", "explain", "plan", "sample_panel"]
