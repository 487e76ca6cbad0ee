"""Recursive (state-carrying) time-series kernels: ``ema``, ``ewma``, ``cumsum``.

Semantics: docs/semantics.md, "Recursive operators". Every kernel takes a float64 ``state`` array
that it updates in place; calling a kernel on consecutive time blocks with the same state array
gives bit-for-bit the same output as one call on the concatenated block (the per-element update
depends only on the carried state and the current value, and the state holds everything).

State layouts (float64, one column per symbol):

``ewm`` -- shape ``(3, N)`` from :func:`ewm_init_state`:

* row 0 ``avg``: the running weighted average (the output of the last row); NaN before the first
  valid value;
* row 1 ``old_wt``: pandas' ``old_wt``, the weight of the past relative to a new value, already
  decayed up to the last row processed. NaN before the first valid value (this is the "started"
  flag: ``old_wt == old_wt``), 1 at the first valid value; then on every later row (valid or NaN)
  ``old_wt *= 1 - alpha`` and on a valid row, after the average update, ``old_wt = 1``
  (``ema``, so ``old_wt = (1 - alpha) ** g`` with ``g`` rows since the last valid value) or
  ``old_wt += 1`` (``ewma``);
* row 2 ``nobs``: number of valid values seen so far (not needed for the output; kept so that a
  caller can apply a ``min_periods`` rule without another pass).

``cumsum`` -- shape ``(1, N)`` from :func:`cumsum_init_state`: row 0 is the running sum of the
valid values, initialised to ``-0.0`` (the additive identity for every float, including ``-0.0``).

Infinities: ±inf are valid values (docs/semantics.md data model: a missing bar is NaN), as in the
``ts_*`` operators. pandas' ``ewm`` differs here: it silently turns ±inf into NaN before computing.
With factorflow an ``inf`` makes the average ``inf`` from then on, and ``+inf`` meeting ``-inf``
makes it NaN from then on (the series has started; NaN does not restart it, like ``cumsum``). On
finite data the result is pandas' ``ewm(...).mean()`` (``ignore_na=False``, ``min_periods=0``)
operation for operation, including the ``avg == x`` shortcut (no update when the new value equals
the average, so constant series stay exact), which applies to both ``ema`` and ``ewma``; except
that pandas 3 special-cases alpha == 0.5 (span 3) with ``adjust=False`` on rows after a gap, which
factorflow does not (the ``w = (1 - alpha) ** g`` rule holds for every alpha).

No transfer/compose pair for a parallel scan across chunks is provided: the ewm chunk map is not
affine in the carried ``old_wt`` (and has the ``avg == x`` and not-started branches), and even the
affine ``cumsum`` one would not reproduce the sequential rounding, losing the bit-for-bit chunk
invariance above.

Layout of the loops: time outside, symbols inside over row views, with branch-free selects so
LLVM vectorises the inner loop (four arrays in it: input row, output row, ``avg`` and ``old_wt``
rows; ``nobs`` is updated in a separate short loop to keep the alias checks under LLVM's limit).
"""
from __future__ import annotations

import numpy as np

from ._jit import kernel

__all__ = [
    "ewm_init_state",
    "ewm_mean",
    "cumsum_init_state",
    "cumsum",
]


def ewm_init_state(n: int) -> np.ndarray:
    """Fresh ewm state for ``n`` symbols: rows ``[avg=NaN, old_wt=NaN, nobs=0]``."""
    state = np.empty((3, n), dtype=np.float64)
    state[0] = np.nan
    state[1] = np.nan
    state[2] = 0.0
    return state


def cumsum_init_state(n: int) -> np.ndarray:
    """Fresh cumsum state for ``n`` symbols: running sum ``-0.0``."""
    return np.full((1, n), -0.0, dtype=np.float64)


@kernel(inline="always")
def _ema_row(xt, o, avg, wt, alpha, decay):
    """One time row of ``ema`` (adjust=False): pandas ``new_wt = alpha``, ``old_wt = 1`` after a
    valid value. ``wt`` is NaN until the first valid value."""
    for j in range(xt.shape[0]):
        v = np.float64(xt[j])
        a = avg[j]
        w = wt[j] * decay
        started = w == w
        valid = v == v
        upd = (w * a + alpha * v) / (w + alpha)
        upd = a if a == v else upd
        r = upd if started else v  # not started: v (NaN on a NaN row, like a)
        r = r if valid else a
        avg[j] = r
        wt[j] = 1.0 if valid else w
        o[j] = r


@kernel(inline="always")
def _ewma_row(xt, o, avg, wt, decay):
    """One time row of ``ewma`` (adjust=True): pandas ``new_wt = 1``, ``old_wt += 1`` after a valid
    value. ``wt`` is NaN until the first valid value."""
    for j in range(xt.shape[0]):
        v = np.float64(xt[j])
        a = avg[j]
        w = wt[j] * decay
        started = w == w
        valid = v == v
        upd = (w * a + v) / (w + 1.0)
        upd = a if a == v else upd
        r = upd if started else v
        r = r if valid else a
        avg[j] = r
        wn = w + 1.0 if started else 1.0
        wt[j] = wn if valid else w
        o[j] = r


@kernel(inline="always")
def _count_row(xt, nobs):
    for j in range(xt.shape[0]):
        v = xt[j]
        nobs[j] += 1.0 if v == v else 0.0


@kernel
def ewm_mean(x, alpha, adjust, state, out):
    """Exponentially weighted mean along axis 0 with carried ``state`` (see module docstring).

    ``adjust=False`` is the native ``ema`` (``y = (w y_prev + alpha x) / (w + alpha)``,
    ``w = (1 - alpha) ** g``), ``adjust=True`` is ``ewma`` (pandas ``adjust=True``). On NaN rows
    the output is the carried average; NaN before the first valid value.
    """
    alpha = np.float64(alpha)
    decay = 1.0 - alpha
    avg = state[0]
    wt = state[1]
    nobs = state[2]
    T = x.shape[0]
    if adjust:
        for t in range(T):
            xt = x[t]
            _ewma_row(xt, out[t], avg, wt, decay)
            _count_row(xt, nobs)
    else:
        for t in range(T):
            xt = x[t]
            _ema_row(xt, out[t], avg, wt, alpha, decay)
            _count_row(xt, nobs)


@kernel
def cumsum(x, state, out):
    """Running sum of the valid values along axis 0 with carried ``state``; NaN rows give NaN
    (pandas ``cumsum(skipna=True)``: a NaN contributes 0 to the sum)."""
    s = state[0]
    nan = np.nan
    for t in range(x.shape[0]):
        xt = x[t]
        o = out[t]
        for j in range(xt.shape[0]):
            v = np.float64(xt[j])
            valid = v == v
            acc = s[j] + (v if valid else 0.0)
            s[j] = acc
            o[j] = acc if valid else nan
