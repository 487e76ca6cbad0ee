"""Bar aggregation: ticks sorted by (symbol, time) -> dense OHLCV blocks.

One pass over the ticks, no hashing: the ticks of one symbol form one *run* (consecutive rows),
and inside a run the times only increase, so the ticks of one (symbol, bar) pair are consecutive
too. A frame may be fed in consecutive pieces (e.g. its Arrow chunks, zero-copy): a bar whose
ticks continue from the previous piece is merged into (open kept, high/low combined, close and
quotes replaced, sums added), so pieces must come in (symbol, time) order. The kernel keeps the running open/high/low/close/volume/amount/count/last quote of the
current bar in scalars and writes them to the output when the bar changes (measured on 9.7 M
ticks, 500 symbols, 1min bars: 47 ms, against 200-550 ms for a Polars ``group_by`` on the integer
(symbol, bar) keys and 430-520 ms for ``group_by_dynamic``).

Layout of ``out`` ``(9, n_bars, n_symbols)``, rows in :data:`STATS` order; the caller fills it
with NaN (open, high, low, close, bid, ask) and 0 (volume, amount, trades) first, so bars without
ticks keep those values.
"""
from __future__ import annotations

import numpy as np

from ._jit import kernel

__all__ = ["STATS", "aggregate_runs"]

STATS = ("open", "high", "low", "close", "volume", "amount", "trades", "bid", "ask")


@kernel(inline="always")
def _flush(out, b, j, o, h, lo, c, vol, amt, cnt, lb, la):
    """Write a finished bar part; merge it into the bar if an earlier part is there already."""
    if out[6, b, j] > 0:  # the bar's first ticks came in an earlier call (an earlier chunk)
        if h > out[1, b, j]:
            out[1, b, j] = h
        if lo < out[2, b, j]:
            out[2, b, j] = lo
        out[3, b, j] = c
        out[4, b, j] += vol
        out[5, b, j] += amt
        out[6, b, j] += cnt
        if lb == lb:
            out[7, b, j] = lb
        if la == la:
            out[8, b, j] = la
    else:
        out[0, b, j] = o
        out[1, b, j] = h
        out[2, b, j] = lo
        out[3, b, j] = c
        out[4, b, j] = vol
        out[5, b, j] = amt
        out[6, b, j] = cnt
        out[7, b, j] = lb
        out[8, b, j] = la


@kernel
def aggregate_runs(time, run_len, run_col, price, size, bid, ask, starts, ends, offsets, step, use_price,
                   use_size, use_quotes, out):
    """Aggregate ticks into ``out`` (see the module docstring); returns -1, or the index of the
    first row whose time is earlier than the previous row of the same run (unsorted input).

    ``run_len[r]`` rows starting after the previous run belong to output column ``run_col[r]``
    (-1: skip them). A tick at time ``t`` inside session interval ``k`` (``starts[k] <= t <
    ends[k]``, intervals sorted and disjoint) belongs to bar ``offsets[k] + (t - starts[k]) //
    step``; ticks outside every interval belong to no bar. ``use_*``: whether ``price``/``size``/
    ``bid`` and ``ask`` hold data (an unused one may be an empty array).
    """
    n_int = starts.shape[0]
    i = 0
    for r in range(run_len.shape[0]):
        stop = i + run_len[r]
        j = run_col[r]
        if j < 0:
            i = stop
            continue
        k = 0
        cur = -1
        prev_t = time[i] if stop > i else 0
        o = h = lo = c = 0.0
        vol = amt = 0.0
        cnt = 0
        lb = la = np.nan
        for ii in range(i, stop):
            t = time[ii]
            if t < prev_t:
                return ii
            prev_t = t
            while k < n_int and t >= ends[k]:
                k += 1
            if k == n_int or t < starts[k]:
                continue
            b = offsets[k] + (t - starts[k]) // step
            if b != cur:
                if cur >= 0:
                    _flush(out, cur, j, o, h, lo, c, vol, amt, cnt, lb, la)
                cur = b
                vol = amt = 0.0
                cnt = 0
                lb = la = np.nan
                if use_price:
                    o = h = lo = price[ii]
            cnt += 1
            if use_price:
                p = price[ii]
                if p > h:
                    h = p
                if p < lo:
                    lo = p
                c = p
                if use_size:
                    v = size[ii]
                    vol += v
                    amt += p * v
            elif use_size:
                vol += size[ii]
            if use_quotes:
                q = bid[ii]
                if q == q:
                    lb = q
                q = ask[ii]
                if q == q:
                    la = q
        if cur >= 0:
            _flush(out, cur, j, o, h, lo, c, vol, amt, cnt, lb, la)
        i = stop
    return -1
