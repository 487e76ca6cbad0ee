"""Rolling least-squares kernels: ``ts_slope``, ``ts_rsquare``, ``ts_resid``.

The regression of the window's valid values on their row positions (Qlib's ``Slope``,
``Rsquare``, ``Resi``: OLS on positions ``1..window``; any evenly spaced positions give the same
results). NaN rows are skipped (the position of a valid value is still its row), and the result
is NaN while fewer than ``min_periods`` valid values are in the window. With ``n`` valid values
at positions ``p`` (``p = 0`` for the current row, ``-1`` for the row before...):

* ``ts_slope = Sxy / Sxx``;
* ``ts_rsquare = Sxy^2 / (Sxx Syy)`` (NaN for a constant window: 0 / 0);
* ``ts_resid = y_t - (mean(y) + slope (0 - mean(p)))``, the residual of the current row (NaN
  when the current value is NaN);

with centred sums ``Sxx = sum((p - mean p)^2)`` etc. Two exact passes per window over column tiles
(the accumulators stay in L1): the means of ``p`` and of ``d = y - K`` (``K`` the newest finite
value of the symbol, so 1e6-offset data lose nothing), then the centred sums (a two-pass
computation: no cancellation), with the deviations of ``y`` divided by their largest magnitude so
that squares of tiny values do not underflow. Fewer than two valid values give NaN (0 / 0).
"""
from __future__ import annotations

import numpy as np

from ._jit import kernel

__all__ = ["ts_slope", "ts_rsquare", "ts_resid"]

_TILE = 512


@kernel(inline="always")
def _ols(x, window, min_periods, out, what):
    T, N = x.shape
    sp = np.empty(_TILE)
    spp = np.empty(_TILE)
    sd = np.empty(_TILE)
    sdd = np.empty(_TILE)
    spd = np.empty(_TILE)
    n = np.empty(_TILE)
    amax = np.empty(_TILE)
    anchor = np.zeros(N)
    mp = float(max(1, min_periods))
    for t in range(T):
        t0 = max(0, t - window + 1)
        xt = x[t]
        for j in range(N):
            v = np.float64(xt[j])
            anchor[j] = v if v - v == 0.0 else anchor[j]
        for j0 in range(0, N, _TILE):
            j1 = min(N, j0 + _TILE)
            nb = j1 - j0
            kk = anchor[j0:j1]
            for j in range(nb):
                sp[j] = 0.0
                spp[j] = 0.0
                sd[j] = 0.0
                sdd[j] = 0.0
                spd[j] = 0.0
                n[j] = 0.0
                amax[j] = 0.0
            for k in range(t0, t + 1):          # pass 1: count and means
                xk = x[k, j0:j1]
                p = float(k - t)
                for j in range(nb):
                    v = np.float64(xk[j])
                    ok = v == v
                    n[j] += 1.0 if ok else 0.0
                    sp[j] += p if ok else 0.0
                    d = (v - kk[j]) if ok else 0.0
                    sd[j] += d
                    amax[j] = max(amax[j], np.abs(d))
            for j in range(nb):
                sp[j] = sp[j] / n[j]             # mean position
                sd[j] = sd[j] / n[j]             # mean of d
                amax[j] = amax[j] if amax[j] > 0.0 else 1.0
            for k in range(t0, t + 1):          # pass 2: centred sums
                xk = x[k, j0:j1]
                p = float(k - t)
                for j in range(nb):
                    v = np.float64(xk[j])
                    ok = v == v
                    dp = (p - sp[j]) if ok else 0.0
                    dd = (((v - kk[j]) - sd[j]) / amax[j]) if ok else 0.0   # scaled: no underflow
                    spp[j] += dp * dp
                    spd[j] += dp * dd
                    sdd[j] += dd * dd
            o = out[t, j0:j1]
            for j in range(nb):
                sxx = spp[j]
                sxy = spd[j]
                if what == 0:
                    r = (sxy / sxx) * amax[j]
                elif what == 1:
                    r = (sxy / sxx) * (sxy / sdd[j])
                else:
                    v = np.float64(xt[j0 + j])
                    r = (v - kk[j]) - (sd[j] - (sxy / sxx) * amax[j] * sp[j])
                o[j] = r if n[j] >= mp else np.nan


@kernel
def ts_slope(x, window, min_periods, out):
    """Slope of the least-squares line through the window's valid values against row position."""
    _ols(x, window, min_periods, out, 0)


@kernel
def ts_rsquare(x, window, min_periods, out):
    """Coefficient of determination R^2 of that line (NaN for a constant window)."""
    _ols(x, window, min_periods, out, 1)


@kernel
def ts_resid(x, window, min_periods, out):
    """Residual of the current row from that line (NaN where the current value is NaN)."""
    _ols(x, window, min_periods, out, 2)
