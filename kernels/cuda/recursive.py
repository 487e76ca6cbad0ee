"""Recursive CUDA kernels (``ema``, ``ewma``, ``cumsum``): twins of ``kernels/cpu/recursive.py``
with the same calls and the same carried ``state`` layout (float64 ``(3, N)`` for ewm, ``(1, N)``
for cumsum; here a device array), so a scan can continue on either backend.

Parallel scan along time, in three launches per call (docs/gpu.md, "Scans"):

1. **reduce**: the block's rows are cut into ``P`` segments of ``L`` rows; one thread per
   (segment, symbol) walks its segment and summarises it as a map of the carried state;
2. **scan the carries**: one thread per symbol walks the ``P`` summaries in order, starting from
   ``state``, and stores each segment's carry-in (then the new ``state``). Beyond ``WALK_MAX``
   segments this takes two levels: one thread per (group, symbol) composes a group of summaries
   into one (summaries are closed under concatenation), one thread per symbol walks the groups,
   and one thread per (group, symbol) walks its group from the group's carry-in; no thread walks
   more than ``WALK_MAX`` summaries;
3. **apply**: one thread per (segment, symbol) runs the CPU kernel's exact row update from its
   carry-in, writing the outputs.

``P * N`` threads work in phases 1 and 3, so a single long series is spread over the GPU as well
as a wide panel (:func:`segment_rows` picks ``L`` from the shape: about ``TARGET_THREADS``
threads, at least ``MIN_SEGMENT_ROWS`` rows each). The summaries:

* ``cumsum``: the segment's sum of valid values.
* ``ewma`` (adjust=True): with ``S`` the decayed sum of valid values and ``W`` the decayed count
  (``S_t = d S_{t-1} + v_t``, ``W_t = d W_{t-1} + 1`` on valid rows, both times ``d = 1 - alpha``
  on every row) the average is ``S / W`` and pandas' ``old_wt`` is ``W``: an affine scan with the
  constant pair ``(d, [v, 1])``. The segment keeps ``(S, W)`` at its last valid row, so ``W >= 1``
  and the carry never divides by an underflowed weight.
* ``ema`` (adjust=False): a valid row after a gap of ``g`` rows is the affine map
  ``y -> a y + b`` with ``w = d^g``, ``a = w / (w + alpha)``, ``b = alpha v / (w + alpha)``
  (composition ``(A1, B1) then (A2, B2) = (A2 A1, A2 B1 + B2)``, DESIGN.md). Every valid row of a
  segment but its first has its gap inside the segment, so the segment keeps its first valid
  value and offset and the composed pair ``(A, B)`` of the others; phase 2 resolves the first
  row's gap (and the not-yet-started case, ``y = v``) from the carry.

Phase 3 repeats the CPU update row by row (including the ``avg == x`` shortcut), so a segment's
outputs are bit-for-bit the CPU kernel's given its carry-in; the carries differ from the CPU's
sequential ones by rounding only (a few ulps), so results match the CPU backend to ~1e-15
relative and stay exact across chunk boundaries.
"""
from __future__ import annotations

import math

import numpy as np

from ..cpu.recursive import cumsum_init_state, ewm_init_state  # host arrays: the same state as on the CPU
from ._jit import BLOCK, cuda, device_array

__all__ = ["ewm_init_state", "ewm_mean", "cumsum_init_state", "cumsum", "segment_rows"]

_NAN = math.nan
TARGET_THREADS = 1 << 18  # threads wanted in phases 1 and 3
MIN_SEGMENT_ROWS = 32
WALK_MAX = 1024  # most summaries one thread composes or walks in phase 2
MAX_SEGMENTS = WALK_MAX * WALK_MAX  # phase 2 has two levels at most


def segment_rows(rows: int, cols: int) -> int:
    """Rows per scan segment for a ``rows x cols`` block: enough segments for about
    ``TARGET_THREADS`` threads, at least ``MIN_SEGMENT_ROWS`` rows each.

    Examples
    --------
    >>> segment_rows(20_000, 5_000), segment_rows(100_000_000, 1)
    (385, 382)
    """
    if rows <= 0:
        return 1
    want = max(1, TARGET_THREADS // max(cols, 1))
    seg = max(MIN_SEGMENT_ROWS, -(-rows // min(want, MAX_SEGMENTS)))
    return min(seg, rows)


def _grid(n, cols):
    """Launch configuration of one thread per (summary group ``n``, symbol)."""
    return ((cols + BLOCK[0] - 1) // BLOCK[0], (n + BLOCK[1] - 1) // BLOCK[1]), BLOCK


def _launch_config(rows, cols, seg):
    nseg = -(-rows // seg)
    return nseg, ((cols + BLOCK[0] - 1) // BLOCK[0], (nseg + BLOCK[1] - 1) // BLOCK[1]), BLOCK


# ------------------------------------------------------------------------------------------------
# cumsum
# ------------------------------------------------------------------------------------------------
@cuda.jit
def _cumsum_reduce(x, seg, part):
    j, p = cuda.grid(2)
    if p >= part.shape[0] or j >= x.shape[1]:
        return
    s = 0.0
    for r in range(p * seg, min(x.shape[0], (p + 1) * seg)):
        v = float(x[r, j])
        if v == v:
            s += v
    part[p, j] = s


@cuda.jit
def _sum_groups(part, group, out):
    j, g = cuda.grid(2)
    if g >= out.shape[0] or j >= part.shape[1]:
        return
    s = 0.0
    for p in range(g * group, min(part.shape[0], (g + 1) * group)):
        s += part[p, j]
    out[g, j] = s


@cuda.jit
def _cumsum_walk(part, group, start, state, top):
    """Turn ``part`` into exclusive prefix sums within each group of ``group`` rows, from the
    group's carry-in: ``state`` at the top level (which also receives the total), else ``start``."""
    j, g = cuda.grid(2)
    if j >= part.shape[1] or g * group >= part.shape[0]:
        return
    c = state[0, j] if top else start[g, j]
    for p in range(g * group, min(part.shape[0], (g + 1) * group)):
        s = part[p, j]
        part[p, j] = c
        c += s


@cuda.jit
def _cumsum_apply(x, seg, part, state, out):
    j, p = cuda.grid(2)
    if p >= part.shape[0] or j >= x.shape[1]:
        return
    acc = part[p, j]
    for r in range(p * seg, min(x.shape[0], (p + 1) * seg)):
        v = float(x[r, j])
        if v == v:
            acc += v
            out[r, j] = acc
        else:
            out[r, j] = _NAN
    if p == part.shape[0] - 1:
        state[0, j] = acc


def cumsum(x, state, out, *, seg=None):
    """Running sum of the valid values along axis 0 with carried ``state`` (device ``(1, N)``);
    NaN rows give NaN. ``seg``: rows per scan segment (default :func:`segment_rows`)."""
    rows, cols = x.shape
    if rows == 0 or cols == 0:
        return
    seg = seg or segment_rows(rows, cols)
    nseg, grid, block = _launch_config(rows, cols, seg)
    part = device_array((nseg, cols), dtype=np.float64)
    _cumsum_reduce[grid, block](x, seg, part)
    if nseg <= WALK_MAX:
        _cumsum_walk[_grid(1, cols)](part, nseg, part, state, True)
    else:  # two levels: group sums, walk the groups, walk each group from its carry-in
        group = -(-nseg // WALK_MAX)
        ngroups = -(-nseg // group)
        gsum = device_array((ngroups, cols), dtype=np.float64)
        _sum_groups[_grid(ngroups, cols)](part, group, gsum)
        _cumsum_walk[_grid(1, cols)](gsum, ngroups, gsum, state, True)
        _cumsum_walk[_grid(ngroups, cols)](part, group, gsum, state, False)
    _cumsum_apply[grid, block](x, seg, part, state, out)


# ------------------------------------------------------------------------------------------------
# ewm: summaries
# ------------------------------------------------------------------------------------------------
# summary rows of the ``summ`` array (nseg, 7, N):
_F, _VF, _A, _B, _TRAIL, _NV, _LEN = 0, 1, 2, 3, 4, 5, 6
# ewma: _F = first valid offset (-1: none), _VF = S at the last valid row, _A = W there,
# _B = offset of the last valid row


@cuda.jit
def _ema_reduce(x, seg, alpha, decay, summ):
    j, p = cuda.grid(2)
    if p >= summ.shape[0] or j >= x.shape[1]:
        return
    r0 = p * seg
    r1 = min(x.shape[0], r0 + seg)
    f = -1
    vf = 0.0
    A = 1.0
    B = 0.0
    wt = 1.0
    nv = 0
    for r in range(r0, r1):
        v = float(x[r, j])
        wt *= decay
        if v != v:
            continue
        nv += 1
        if f < 0:
            f = r - r0
            vf = v
        else:
            a = wt / (wt + alpha)
            b = alpha * v / (wt + alpha)
            B = a * B + b
            A = a * A
        wt = 1.0
    summ[p, _F, j] = f
    summ[p, _VF, j] = vf
    summ[p, _A, j] = A
    summ[p, _B, j] = B
    summ[p, _TRAIL, j] = wt  # decay ** (rows after the last valid one)
    summ[p, _NV, j] = nv
    summ[p, _LEN, j] = r1 - r0


@cuda.jit
def _ewma_reduce(x, seg, decay, summ):
    j, p = cuda.grid(2)
    if p >= summ.shape[0] or j >= x.shape[1]:
        return
    r0 = p * seg
    r1 = min(x.shape[0], r0 + seg)
    f = -1
    S = 0.0
    W = 0.0
    Slv = 0.0
    Wlv = 0.0
    lv = -1
    trail = 1.0
    nv = 0
    for r in range(r0, r1):
        v = float(x[r, j])
        S *= decay
        W *= decay
        trail *= decay
        if v != v:
            continue
        nv += 1
        S += v
        W += 1.0
        if f < 0:
            f = r - r0
        Slv = S
        Wlv = W
        lv = r - r0
        trail = 1.0
    summ[p, _F, j] = f
    summ[p, _VF, j] = Slv
    summ[p, _A, j] = Wlv
    summ[p, _B, j] = lv
    summ[p, _TRAIL, j] = trail
    summ[p, _NV, j] = nv
    summ[p, _LEN, j] = r1 - r0


@cuda.jit
def _ewm_compose(summ, group, alpha, decay, adjust, out):
    """Summaries of ``group`` consecutive segments composed into one (the summaries of the module
    docstring are closed under concatenation)."""
    j, g = cuda.grid(2)
    if g >= out.shape[0] or j >= summ.shape[2]:
        return
    f = -1.0
    vf = 0.0  # ema: first valid value; ewma: S at the last valid row
    A = 1.0  # ema: composed slope; ewma: W at the last valid row
    B = 0.0  # ema: composed intercept; ewma: offset of the last valid row
    trail = 1.0
    nv = 0.0
    length = 0.0
    for p in range(g * group, min(summ.shape[0], (g + 1) * group)):
        f2 = summ[p, _F, j]
        t2 = summ[p, _TRAIL, j]
        if f2 < 0:
            trail *= t2
        elif f < 0:
            f = length + f2
            vf = summ[p, _VF, j]
            A = summ[p, _A, j]
            B = length + summ[p, _B, j] if adjust else summ[p, _B, j]
            trail = t2
        elif adjust:
            k = trail * decay ** (summ[p, _B, j] + 1.0)
            vf = k * vf + summ[p, _VF, j]
            A = k * A + summ[p, _A, j]
            B = length + summ[p, _B, j]
            trail = t2
        else:
            w = trail * decay ** (f2 + 1.0)
            a = w / (w + alpha)
            b = alpha * summ[p, _VF, j] / (w + alpha)
            A2 = summ[p, _A, j]
            B = A2 * (a * B + b) + summ[p, _B, j]
            A = A2 * a * A
            trail = t2
        nv += summ[p, _NV, j]
        length += summ[p, _LEN, j]
    out[g, _F, j] = f
    out[g, _VF, j] = vf
    out[g, _A, j] = A
    out[g, _B, j] = B
    out[g, _TRAIL, j] = trail
    out[g, _NV, j] = nv
    out[g, _LEN, j] = length


@cuda.jit
def _ewm_walk(summ, group, alpha, decay, adjust, start, state, top, carry):
    """Walk the summaries of each group of ``group`` in order from the group's carry-in (``state``
    at the top level, else ``start[g]``), storing each summary's carry-in ``(avg, old_wt)`` in
    ``carry``; the top level also adds the valid counts to ``state``'s ``nobs`` row."""
    j, g = cuda.grid(2)
    if j >= summ.shape[2] or g * group >= summ.shape[0]:
        return
    if top:
        y = state[0, j]
        wt = state[1, j]
    else:
        y = start[g, 0, j]
        wt = start[g, 1, j]
    nobs = 0.0
    for p in range(g * group, min(summ.shape[0], (g + 1) * group)):
        carry[p, 0, j] = y
        carry[p, 1, j] = wt
        f = summ[p, _F, j]
        nobs += summ[p, _NV, j]
        if f < 0:
            wt = wt * summ[p, _TRAIL, j]
            continue
        started = wt == wt
        if adjust:
            lv = summ[p, _B, j]
            s_lv = summ[p, _VF, j]
            w_lv = summ[p, _A, j]
            if started:
                k = decay ** (lv + 1.0)
                W = k * wt + w_lv
                y = (k * wt * y + s_lv) / W
            else:
                W = w_lv
                y = s_lv / W
            wt = W * summ[p, _TRAIL, j]
        else:
            vf = summ[p, _VF, j]
            if started:
                w = wt * decay ** (f + 1.0)
                yf = y if y == vf else (w * y + alpha * vf) / (w + alpha)
            else:
                yf = vf
            y = summ[p, _A, j] * yf + summ[p, _B, j]
            wt = summ[p, _TRAIL, j]
    if top:
        state[2, j] += nobs


@cuda.jit
def _ewm_apply(x, seg, alpha, decay, adjust, carry, state, out):
    """The CPU kernel's row update (``kernels/cpu/recursive.py``) from each segment's carry-in."""
    j, p = cuda.grid(2)
    if p >= carry.shape[0] or j >= x.shape[1]:
        return
    a = carry[p, 0, j]
    wt = carry[p, 1, j]
    for r in range(p * seg, min(x.shape[0], (p + 1) * seg)):
        v = float(x[r, j])
        w = wt * decay
        started = w == w
        if v == v:
            if started:
                if a != v:
                    a = (w * a + v) / (w + 1.0) if adjust else (w * a + alpha * v) / (w + alpha)
                wt = w + 1.0 if adjust else 1.0
            else:
                a = v
                wt = 1.0
        else:
            wt = w
        out[r, j] = a
    if p == carry.shape[0] - 1:
        state[0, j] = a
        state[1, j] = wt


def ewm_mean(x, alpha, adjust, state, out, *, seg=None):
    """Exponentially weighted mean along axis 0 with carried ``state`` (device ``(3, N)``, see
    the CPU kernel): ``adjust=False`` is ``ema``, ``adjust=True`` is ``ewma``. ``seg``: rows per
    scan segment (default :func:`segment_rows`)."""
    rows, cols = x.shape
    if rows == 0 or cols == 0:
        return
    alpha = float(alpha)
    decay = 1.0 - alpha
    adjust = bool(adjust)
    seg = seg or segment_rows(rows, cols)
    nseg, grid, block = _launch_config(rows, cols, seg)
    summ = device_array((nseg, 7, cols), dtype=np.float64)
    carry = device_array((nseg, 2, cols), dtype=np.float64)
    if adjust:
        _ewma_reduce[grid, block](x, seg, decay, summ)
    else:
        _ema_reduce[grid, block](x, seg, alpha, decay, summ)
    if nseg <= WALK_MAX:
        _ewm_walk[_grid(1, cols)](summ, nseg, alpha, decay, adjust, carry, state, True, carry)
    else:  # two levels: compose groups of summaries, walk the groups, walk inside each group
        group = -(-nseg // WALK_MAX)
        ngroups = -(-nseg // group)
        gsumm = device_array((ngroups, 7, cols), dtype=np.float64)
        gcarry = device_array((ngroups, 2, cols), dtype=np.float64)
        _ewm_compose[_grid(ngroups, cols)](summ, group, alpha, decay, adjust, gsumm)
        _ewm_walk[_grid(1, cols)](gsumm, ngroups, alpha, decay, adjust, gcarry, state, True, gcarry)
        _ewm_walk[_grid(ngroups, cols)](summ, group, alpha, decay, adjust, gcarry, state, False, carry)
    _ewm_apply[grid, block](x, seg, alpha, decay, adjust, carry, state, out)
