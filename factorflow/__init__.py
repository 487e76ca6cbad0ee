"""factorflow: factor formulas compiled to Dask graphs of Numba kernels.

Examples
--------
>>> import numpy as np, factorflow as ff
>>> close = np.cumsum(np.random.default_rng(0).standard_normal((300, 4)), axis=0) + 100
>>> panel = ff.Panel.from_numpy({"close": close})
>>> out = ff.compute({"macd": "ema(close, 12) - ema(close, 26)"}, panel)
>>> out.to_numpy("macd").shape
(300, 4)
"""
from __future__ import annotations

from . import cluster
from .factors import (
    Factor,
    FactorError,
    FactorSyntaxError,
    FactorTypeError,
    factor,
    field,
    libraries,
    library,
    operators,
)
from .engine import Panel, TickDataError, TickStore, compute, explain, generate_ticks, sample_panel
from .engine.evaluate import Evaluation, evaluate

__version__ = "0.1.0"

__all__ = [
    "Evaluation", "Factor", "FactorError", "FactorSyntaxError", "FactorTypeError", "Panel", "TickDataError", "TickStore",
    "cluster", "compute", "evaluate", "explain", "factor", "field", "generate_ticks", "libraries", "library", "operators",
    "sample_panel", "__version__",
]
