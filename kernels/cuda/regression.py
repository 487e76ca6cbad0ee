"""Rolling least-squares CUDA kernels: twins of ``kernels/cpu/regression.py`` (``ts_slope``,
``ts_rsquare``, ``ts_resid``).

The regression of the window's valid values on their row positions (a value keeps its row's
position; NaN rows are skipped), one thread per output cell walking its window twice: the means
of the positions and of ``d = (v - K) / |K|`` (``K`` the newest finite value of the window: no
cancellation on offset data, no underflow of squared tiny values), then the
centred sums ``Sxx``, ``Sxy``, ``Syy``. ``ts_slope = Sxy / Sxx``, ``ts_rsquare = Sxy^2 / (Sxx
Syy)`` (NaN for a constant window), ``ts_resid`` the current row's residual (NaN when the current
value is NaN). NaN while fewer than ``min_periods`` valid values, with fewer than two, or with
±inf in the window.
"""
from __future__ import annotations

import math

from ._jit import cuda, launch2d
from .rolling import window_anchor

__all__ = ["ts_slope", "ts_rsquare", "ts_resid"]

_NAN = math.nan


@cuda.jit
def _ols_kernel(x, window, mp, what, out):
    j, t = cuda.grid(2)
    if t >= out.shape[0] or j >= out.shape[1]:
        return
    start = max(0, t - window + 1)
    n, bad, k = window_anchor(x, j, start, t)
    cur = float(x[t, j])
    if n < mp or n < 2 or bad or (what == 2 and cur != cur):
        out[t, j] = _NAN
        return
    scale = abs(k) if k != 0.0 else 1.0  # d = (v - K) / |K|: tiny values do not underflow squared
    sp = 0.0
    sd = 0.0
    for r in range(start, t + 1):
        v = float(x[r, j])
        if v == v:
            sp += r - t
            sd += (v - k) / scale
    mp_ = sp / n
    md = sd / n
    sxx = 0.0
    sxy = 0.0
    syy = 0.0
    for r in range(start, t + 1):
        v = float(x[r, j])
        if v == v:
            dp = (r - t) - mp_
            dd = (v - k) / scale - md
            sxx += dp * dp
            sxy += dp * dd
            syy += dd * dd
    slope = sxy / sxx
    if what == 0:
        out[t, j] = slope * scale
    elif what == 1:
        out[t, j] = sxy * sxy / (sxx * syy) if syy != 0.0 else _NAN
    else:
        out[t, j] = (((cur - k) / scale - md) + slope * mp_) * scale


def ts_slope(x, window, min_periods, out):
    """Slope of the least-squares line of the window's valid values on their row positions."""
    launch2d(_ols_kernel, out.shape[0], out.shape[1], x, int(window), int(min_periods), 0, out)


def ts_rsquare(x, window, min_periods, out):
    """R^2 of that line; NaN for a constant window."""
    launch2d(_ols_kernel, out.shape[0], out.shape[1], x, int(window), int(min_periods), 1, out)


def ts_resid(x, window, min_periods, out):
    """Residual of the current row from that line; NaN where the current value is NaN."""
    launch2d(_ols_kernel, out.shape[0], out.shape[1], x, int(window), int(min_periods), 2, out)
