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

with centred sums ``Sxx = sum((p - mean p)^2)`` etc. One pass per window over column tiles (the
accumulators stay in L1) collects ``n``, the sums of ``p``, ``p^2``, ``d``, ``d^2`` and ``p d``,
with positions measured from the middle of the full window (so ``sum p`` is ~0) and
``d = (y - K) / |K|``, ``K`` the symbol's newest finite value: a member of the window, so the
centred ``Syy = sum d^2 - (sum d)^2 / n`` loses at most ``log10(n)`` digits to cancellation
(``(K - mean)^2 <= (n - 1) / n * Syy`` for any member ``K``), 1e6-offset data lose nothing, and
tiny values do not underflow when squared. Results agree with an exact rational computation to
~1e-14 of the data's scale (``tests/test_operators.py``).
"""
from __future__ import annotations

import numpy as np

from ._jit import kernel

__all__ = ["ts_slope", "ts_rsquare", "ts_resid", "ts_regression"]

_TILE = 512


@kernel(inline="always")
def _ols(x, window, min_periods, out_slope, out_rsquare, out_resid, what):
    T, N = x.shape
    sp = np.empty(_TILE)
    spp = np.empty(_TILE)
    sd = np.empty(_TILE)
    sdd = np.empty(_TILE)
    spd = np.empty(_TILE)
    n = np.empty(_TILE)
    anchor = np.zeros(N)
    scale = np.ones(N)
    mp = float(max(1, min_periods))
    mid = 0.5 * (window - 1)
    for t in range(T):
        t0 = max(0, t - window + 1)
        xt = x[t]
        for j in range(N):
            v = np.float64(xt[j])
            fin = v - v == 0.0
            anchor[j] = v if fin else anchor[j]
            a = np.abs(v)
            scale[j] = (1.0 / a if a > 0.0 else 1.0) if fin else scale[j]
        for j0 in range(0, N, _TILE):
            j1 = min(N, j0 + _TILE)
            nb = j1 - j0
            kk = anchor[j0:j1]
            sc = scale[j0:j1]
            for j in range(nb):
                sp[j] = 0.0
                spp[j] = 0.0
                sd[j] = 0.0
                sdd[j] = 0.0
                spd[j] = 0.0
                n[j] = 0.0
            for k in range(t0, t + 1):
                xk = x[k, j0:j1]
                p = float(k - t) + mid          # positions centred on the full window's middle
                for j in range(nb):
                    v = np.float64(xk[j])
                    ok = v == v
                    d = ((v - kk[j]) * sc[j]) if ok else 0.0
                    q = p if ok else 0.0
                    n[j] += 1.0 if ok else 0.0
                    sp[j] += q
                    spp[j] += q * q
                    sd[j] += d
                    sdd[j] += d * d
                    spd[j] += q * d
            o1 = out_slope[t, j0:j1]
            o2 = out_rsquare[t, j0:j1]
            o3 = out_resid[t, j0:j1]
            xj = xt[j0:j1]
            for j in range(nb):
                c = n[j]
                mpos = sp[j] / c
                md = sd[j] / c
                sxx = spp[j] - sp[j] * mpos
                sxy = spd[j] - sp[j] * md
                if what & 1:
                    r = (sxy / sxx) / sc[j]
                    o1[j] = r if c >= mp else np.nan
                if what & 2:
                    syy = max(sdd[j] - sd[j] * md, 0.0)
                    r = (sxy / sxx) * (sxy / syy)
                    o2[j] = r if c >= mp else np.nan
                if what & 4:
                    v = np.float64(xj[j])
                    r = (v - kk[j]) - (md - (sxy / sxx) * (mpos - mid)) / sc[j]
                    o3[j] = r if c >= mp else np.nan


@kernel
def ts_slope(x, window, min_periods, out):
    """Slope of the least-squares line through the window's valid values against row position."""
    _ols(x, window, min_periods, out, out, out, 1)


@kernel
def ts_rsquare(x, window, min_periods, out):
    """Coefficient of determination R^2 of that line (NaN for a constant window)."""
    _ols(x, window, min_periods, out, out, out, 2)


@kernel
def ts_resid(x, window, min_periods, out):
    """Residual of the current row from that line (NaN where the current value is NaN)."""
    _ols(x, window, min_periods, out, out, out, 4)


@kernel
def ts_regression(x, window, min_periods, what, out_slope, out_rsquare, out_resid):
    """Several of the three from one pass over the windows: ``what`` is a bit mask (1 slope,
    2 rsquare, 4 resid) of the outputs written. Not an operator: the engine's instruction for
    sibling ``ts_slope``/``ts_rsquare``/``ts_resid`` nodes on one input and window
    (``engine/graph.py: _fuse_siblings``); an output not in the mask is left untouched."""
    _ols(x, window, min_periods, out_slope, out_rsquare, out_resid, what)
