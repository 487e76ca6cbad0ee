"""A synthetic OHLCV panel for demos, tests and benchmarks.

Prices follow a geometric Brownian motion per symbol with a common market factor; open, high,
low are consistent with close (low <= open, close <= high); volume is log-normal with a
per-symbol level; ``vwap`` lies within [low, high]; ``amount = vwap * volume``. Realistic gaps:
symbols listed late or delisted early (NaN before/after), a few trading halts (NaN runs), and
isolated missing bars.
"""
from __future__ import annotations

import numpy as np

from .panel import Panel

__all__ = ["sample_panel"]


def sample_panel(n_times: int = 1000, n_symbols: int = 100, *, seed: int = 0, start: str = "2020-01-02",
                 freq: str = "1D", missing: float = 0.002, dtype="float64", groups: bool = False) -> Panel:
    """Generate a reproducible daily OHLCV panel.

    Parameters
    ----------
    n_times, n_symbols : int
        Panel shape.
    seed : int
        Same seed, same panel.
    start : str
        First timestamp; times step by ``freq`` over weekdays for ``"1D"``.
    freq : str
        A NumPy timedelta unit string (``"1D"``, ``"1m"`` for minutes, ``"1s"``).
    missing : float
        Fraction of isolated missing bars.
    groups : bool
        Also add ``cap`` (market capitalisation: close times a fixed share count) and the group
        fields ``sector``, ``industry``, ``subindustry`` (integer codes, nested: 3 subindustries
        per industry, 3 industries per sector; fixed over time, missing where the bar is), which
        WorldQuant's Alpha101 reads as ``cap`` and ``IndClass.*``.

    Examples
    --------
    >>> import numpy as np, factorflow as ff
    >>> p = ff.sample_panel(250, 20, seed=1)
    >>> p.fields
    ('open', 'high', 'low', 'close', 'volume', 'vwap', 'amount')
    >>> bool((p.to_numpy("high") >= p.to_numpy("low")).all(where=~np.isnan(p.to_numpy("low"))))
    True
    """
    rng = np.random.default_rng(seed)
    T, N = int(n_times), int(n_symbols)
    if T < 1 or N < 1:
        raise ValueError("n_times and n_symbols must be >= 1")
    vol = rng.uniform(0.01, 0.035, N)
    beta = rng.uniform(0.5, 1.5, N)
    market = rng.standard_normal(T) * 0.01
    eps = rng.standard_normal((T, N)) * vol
    logret = market[:, None] * beta + eps - 0.5 * vol**2
    close = rng.uniform(5, 200, N) * np.exp(np.cumsum(logret, axis=0))
    prev = np.vstack([close[:1], close[:-1]])
    open_ = prev * np.exp(rng.standard_normal((T, N)) * vol * 0.3)
    spread = np.abs(rng.standard_normal((T, N))) * vol * 0.5
    high = np.maximum(open_, close) * np.exp(spread)
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.standard_normal((T, N))) * vol * 0.5)
    w = rng.uniform(0.2, 0.8, (T, N))
    vwap = low + w * (high - low)
    volume = np.round(np.exp(rng.normal(13, 1, N) + rng.standard_normal((T, N)) * 0.5))
    amount = vwap * volume

    mask = rng.random((T, N)) < missing
    # late listings and early delistings for ~10% of symbols each
    for j in np.flatnonzero(rng.random(N) < 0.1):
        mask[: rng.integers(1, max(2, T // 2)), j] = True
    for j in np.flatnonzero(rng.random(N) < 0.1):
        mask[T - rng.integers(1, max(2, T // 3)):, j] = True
    # trading halts: a few runs of 1-20 bars
    for j in np.flatnonzero(rng.random(N) < 0.2):
        s = rng.integers(0, T)
        mask[s: s + rng.integers(1, 21), j] = True
    fields = {"open": open_, "high": high, "low": low, "close": close, "volume": volume, "vwap": vwap,
              "amount": amount}
    if groups:
        shares = np.round(np.exp(rng.normal(18, 1, N)))
        sub = rng.integers(0, max(1, N // 4) if N >= 8 else 1, N).astype(np.float64)
        fields["cap"] = close * shares
        fields["subindustry"] = np.broadcast_to(sub, (T, N)).copy()
        fields["industry"] = np.broadcast_to(sub // 3, (T, N)).copy()
        fields["sector"] = np.broadcast_to(sub // 9, (T, N)).copy()
    for a in fields.values():
        a[mask] = np.nan
    times = _times(start, freq, T)
    symbols = np.array([f"SYM{j:05d}" for j in range(N)])
    return Panel.from_numpy({k: v.astype(dtype, copy=False) for k, v in fields.items()}, times=times,
                            symbols=symbols)


def _times(start: str, freq: str, T: int) -> np.ndarray:
    step = np.timedelta64(int(freq[:-1] or 1), freq[-1])
    t0 = np.datetime64(start, "ns")
    if freq.upper().endswith("D"):
        days = np.busday_offset(np.datetime64(start, "D"), np.arange(T) * int(freq[:-1] or 1), roll="forward")
        return days.astype("datetime64[ns]")
    return t0 + np.arange(T) * step.astype("timedelta64[ns]")
