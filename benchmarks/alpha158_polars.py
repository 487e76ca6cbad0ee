"""Alpha158 as a hand-written Polars lazy query, with Qlib's semantics (benchmark peer).

``alpha158_polars(lf)`` turns a long daily frame (``time, symbol, open, high, low, close,
volume, vwap``) into ``time, symbol`` + the 158 Alpha158 columns named as Qlib names them
(``KMID`` ... ``VSUMD60``), written the way a Polars user would: expressions only, every
time-series operator a native ``rolling_*``/``shift`` evaluated ``.over("symbol")``, no
Python callbacks. It is the "hand-written Polars" peer of ``benchmarks/bench_libraries.py``
and is checked against Qlib's own engine by ``verify`` below (run this file with
``--verify``).

``alpha158_qlib_exprs()`` returns the 158 Qlib expression strings, generated exactly as
``qlib.contrib.data.loader.Alpha158DL.get_feature_config()`` does with its default config
(Qlib 0.9.7), so library texts can be cross-checked against it without importing Qlib.

Input contract
--------------
A full panel: one row per (symbol, calendar day), missing values as null or NaN (both are
treated as missing), like Qlib's per-instrument series that span the whole calendar. A
window of ``d`` means the last ``d`` rows of the symbol, as in Qlib it means the last ``d``
calendar days. Rows are sorted by ``(symbol, time)`` inside the query unless
``presorted=True``. Everything is computed in float64.

Qlib semantics reproduced
-------------------------
* Rolling operators use ``min_samples=1`` (pandas ``min_periods=1``): a window is computed
  from its non-missing values, truncated windows at the start of a symbol included;
  ``Std`` (ddof=1) of a single value is missing. pandas turns +-inf into NaN before a
  rolling aggregation, so non-finite derived inputs (``Log($volume/Ref($volume, 1)+1)``
  after a zero-volume day) are missing here.
* ``Ref($x, d)`` is a per-symbol shift; ``Greater(a, 0)`` is ``np.maximum`` (missing
  propagates); ``Abs`` keeps missing.
* Comparisons (``$close>Ref($close, 1)``) are NumPy comparisons: missing -> False, so
  ``CNTP/CNTN/CNTD`` count missing days as 0 in the mean.
* ``Corr`` is pandas' pairwise-complete rolling correlation, set missing where the rolling
  std (``min_periods=1``) of either input is within 2e-5 of 0 (``np.isclose(std, 0,
  atol=2e-5)``); ``Rsquare`` likewise with the std of ``$close``.
* ``Slope``/``Rsquare``/``Resi`` are OLS of the value on its position in the window,
  skipping missing values (Qlib's Cython ``rolling_slope``/``rolling_rsquare``/
  ``rolling_resi``); written as rolling cov/var/corr of ``(position, value)`` pairs. Slope
  and R² exist when the current value is missing (Qlib's do too); ``Resi`` does not.
* ``IdxMax``/``IdxMin`` are 1-based positions from the window start of the first maximum/
  minimum (``x.argmax() + 1`` over the raw pandas window): a missing value inside the
  window wins, as ``np.argmax`` returns the first NaN; missing when the window has no
  value. Built without a per-window search: one per-symbol ordinal rank of the value
  (missing ranked first, ties broken by earlier row), packed with the row position into
  an int64 key whose ``rolling_min`` is the winning row.
* ``Rank`` is pandas' rolling ``rank(pct=True)`` (average ties, divided by the number of
  non-missing values; missing when the current value is): Polars ``rolling_rank`` divided
  by the rolling count.
* ``Quantile`` is pandas' linear interpolation: ``rolling_quantile(q, "linear")``.

Differences from Qlib, measured by ``verify`` (300 days x 20 symbols with gaps, a flat
stretch and zero-volume days): no cell is missing on one side only. Qlib reads float32 and
does element-wise arithmetic in float32 (rolling in float64), this module is float64
throughout; against Qlib fed float32 (its bin format) 143 features agree to float32
rounding (relative <= 6e-8) and ``CORR``/``CORD``/``WVMA`` differ by up to ~4e-5
absolute (relative ~1e-3 on correlations near 1e-3), the float32 rounding of
``Log($volume+1)`` and of returns ``$close/Ref($close,1)`` formed before the rolling op.
Against Qlib fed float64 (``--storage-dtype float64``) all 158 agree within Qlib's final
float32 cast (relative <= 2**-24). Infinite *input* prices/volumes are not modelled.
No operator uses a slow path.
"""

from __future__ import annotations

import argparse
import sys

import polars as pl

WINDOWS = (5, 10, 20, 30, 60)
_POS_BITS = 32  # row position within a symbol packed in the low bits of the IdxMax key
_STD_EPS = 2e-5  # Qlib: np.isclose(rolling std, 0, atol=2e-05) -> NaN for Corr / Rsquare

__all__ = ["alpha158_polars", "alpha158_qlib_exprs", "alpha158_names", "WINDOWS"]


def alpha158_qlib_exprs() -> dict[str, str]:
    """Qlib's Alpha158 expressions, name -> expression text, in Qlib's column order.

    Generated exactly as ``Alpha158DL.get_feature_config()`` does with its default config
    (``kbar``, ``price`` with windows ``[0]`` and features ``OPEN HIGH LOW VWAP``, and
    ``rolling`` with windows ``5 10 20 30 60`` and every operator), Qlib 0.9.7.

    Returns
    -------
    dict of str to str
        158 entries, ``"KMID": "($close-$open)/$open"`` ... ``"VSUMD60": ...``.
    """
    fields: list[str] = []
    names: list[str] = []
    fields += [
        "($close-$open)/$open",
        "($high-$low)/$open",
        "($close-$open)/($high-$low+1e-12)",
        "($high-Greater($open, $close))/$open",
        "($high-Greater($open, $close))/($high-$low+1e-12)",
        "(Less($open, $close)-$low)/$open",
        "(Less($open, $close)-$low)/($high-$low+1e-12)",
        "(2*$close-$high-$low)/$open",
        "(2*$close-$high-$low)/($high-$low+1e-12)",
    ]
    names += ["KMID", "KLEN", "KMID2", "KUP", "KUP2", "KLOW", "KLOW2", "KSFT", "KSFT2"]
    for field in ["OPEN", "HIGH", "LOW", "VWAP"]:
        field = field.lower()
        fields += ["Ref($%s, %d)/$close" % (field, d) if d != 0 else "$%s/$close" % field for d in [0]]
        names += [field.upper() + str(d) for d in [0]]
    ws = WINDOWS
    fields += ["Ref($close, %d)/$close" % d for d in ws]
    names += ["ROC%d" % d for d in ws]
    fields += ["Mean($close, %d)/$close" % d for d in ws]
    names += ["MA%d" % d for d in ws]
    fields += ["Std($close, %d)/$close" % d for d in ws]
    names += ["STD%d" % d for d in ws]
    fields += ["Slope($close, %d)/$close" % d for d in ws]
    names += ["BETA%d" % d for d in ws]
    fields += ["Rsquare($close, %d)" % d for d in ws]
    names += ["RSQR%d" % d for d in ws]
    fields += ["Resi($close, %d)/$close" % d for d in ws]
    names += ["RESI%d" % d for d in ws]
    fields += ["Max($high, %d)/$close" % d for d in ws]
    names += ["MAX%d" % d for d in ws]
    fields += ["Min($low, %d)/$close" % d for d in ws]
    names += ["MIN%d" % d for d in ws]
    fields += ["Quantile($close, %d, 0.8)/$close" % d for d in ws]
    names += ["QTLU%d" % d for d in ws]
    fields += ["Quantile($close, %d, 0.2)/$close" % d for d in ws]
    names += ["QTLD%d" % d for d in ws]
    fields += ["Rank($close, %d)" % d for d in ws]
    names += ["RANK%d" % d for d in ws]
    fields += ["($close-Min($low, %d))/(Max($high, %d)-Min($low, %d)+1e-12)" % (d, d, d) for d in ws]
    names += ["RSV%d" % d for d in ws]
    fields += ["IdxMax($high, %d)/%d" % (d, d) for d in ws]
    names += ["IMAX%d" % d for d in ws]
    fields += ["IdxMin($low, %d)/%d" % (d, d) for d in ws]
    names += ["IMIN%d" % d for d in ws]
    fields += ["(IdxMax($high, %d)-IdxMin($low, %d))/%d" % (d, d, d) for d in ws]
    names += ["IMXD%d" % d for d in ws]
    fields += ["Corr($close, Log($volume+1), %d)" % d for d in ws]
    names += ["CORR%d" % d for d in ws]
    fields += ["Corr($close/Ref($close,1), Log($volume/Ref($volume, 1)+1), %d)" % d for d in ws]
    names += ["CORD%d" % d for d in ws]
    fields += ["Mean($close>Ref($close, 1), %d)" % d for d in ws]
    names += ["CNTP%d" % d for d in ws]
    fields += ["Mean($close<Ref($close, 1), %d)" % d for d in ws]
    names += ["CNTN%d" % d for d in ws]
    fields += ["Mean($close>Ref($close, 1), %d)-Mean($close<Ref($close, 1), %d)" % (d, d) for d in ws]
    names += ["CNTD%d" % d for d in ws]
    fields += ["Sum(Greater($close-Ref($close, 1), 0), %d)/(Sum(Abs($close-Ref($close, 1)), %d)+1e-12)" % (d, d) for d in ws]
    names += ["SUMP%d" % d for d in ws]
    fields += ["Sum(Greater(Ref($close, 1)-$close, 0), %d)/(Sum(Abs($close-Ref($close, 1)), %d)+1e-12)" % (d, d) for d in ws]
    names += ["SUMN%d" % d for d in ws]
    fields += [
        "(Sum(Greater($close-Ref($close, 1), 0), %d)-Sum(Greater(Ref($close, 1)-$close, 0), %d))"
        "/(Sum(Abs($close-Ref($close, 1)), %d)+1e-12)" % (d, d, d)
        for d in ws
    ]
    names += ["SUMD%d" % d for d in ws]
    fields += ["Mean($volume, %d)/($volume+1e-12)" % d for d in ws]
    names += ["VMA%d" % d for d in ws]
    fields += ["Std($volume, %d)/($volume+1e-12)" % d for d in ws]
    names += ["VSTD%d" % d for d in ws]
    fields += [
        "Std(Abs($close/Ref($close, 1)-1)*$volume, %d)/(Mean(Abs($close/Ref($close, 1)-1)*$volume, %d)+1e-12)" % (d, d)
        for d in ws
    ]
    names += ["WVMA%d" % d for d in ws]
    fields += ["Sum(Greater($volume-Ref($volume, 1), 0), %d)/(Sum(Abs($volume-Ref($volume, 1)), %d)+1e-12)" % (d, d) for d in ws]
    names += ["VSUMP%d" % d for d in ws]
    fields += ["Sum(Greater(Ref($volume, 1)-$volume, 0), %d)/(Sum(Abs($volume-Ref($volume, 1)), %d)+1e-12)" % (d, d) for d in ws]
    names += ["VSUMN%d" % d for d in ws]
    fields += [
        "(Sum(Greater($volume-Ref($volume, 1), 0), %d)-Sum(Greater(Ref($volume, 1)-$volume, 0), %d))"
        "/(Sum(Abs($volume-Ref($volume, 1)), %d)+1e-12)" % (d, d, d)
        for d in ws
    ]
    names += ["VSUMD%d" % d for d in ws]
    assert len(fields) == len(names) == 158
    return dict(zip(names, fields))


def alpha158_names() -> list[str]:
    """The 158 Alpha158 column names in Qlib's order."""
    return list(alpha158_qlib_exprs())


# --------------------------------------------------------------------------- helpers
S = "symbol"
c, o, h, lo, v, vw = (pl.col(n) for n in ("close", "open", "high", "low", "volume", "vwap"))
t = pl.col("_t")  # row position within the symbol, 0-based


def _over(e: pl.Expr) -> pl.Expr:
    return e.over(S)


def _mean(e: pl.Expr, d: int) -> pl.Expr:
    return _over(e.rolling_mean(d, min_samples=1))


def _sum(e: pl.Expr, d: int) -> pl.Expr:
    return _over(e.rolling_sum(d, min_samples=1))


def _std(e: pl.Expr, d: int) -> pl.Expr:
    return _over(e.rolling_std(d, min_samples=1))


def _max(e: pl.Expr, d: int) -> pl.Expr:
    return _over(e.rolling_max(d, min_samples=1))


def _min(e: pl.Expr, d: int) -> pl.Expr:
    return _over(e.rolling_min(d, min_samples=1))


def _count(e: pl.Expr, d: int) -> pl.Expr:
    return _over(e.is_not_null().cast(pl.Float64).rolling_sum(d, min_samples=1))


def _finite(e: pl.Expr) -> pl.Expr:
    """``e`` with NaN and +-inf as missing (pandas' rolling ops treat inf as NaN)."""
    return pl.when(e.is_finite()).then(e)


def _greater(a: pl.Expr, b: pl.Expr) -> pl.Expr:
    """``np.maximum``: missing if either side is missing."""
    return pl.when(a.is_not_null() & b.is_not_null()).then(pl.max_horizontal(a, b))


def _less(a: pl.Expr, b: pl.Expr) -> pl.Expr:
    """``np.minimum``: missing if either side is missing."""
    return pl.when(a.is_not_null() & b.is_not_null()).then(pl.min_horizontal(a, b))


def _not_flat(std: pl.Expr) -> pl.Expr:
    """False where Qlib's ``np.isclose(rolling std, 0, atol=2e-5)`` holds (std missing -> True)."""
    return std.fill_null(1.0) > _STD_EPS


def _corr(a: pl.Expr, b: pl.Expr, d: int, std_a: pl.Expr | None = None) -> pl.Expr:
    """Qlib ``Corr(a, b, d)``: pairwise-complete rolling correlation with the flat-std guard."""
    r = _over(pl.rolling_corr(a, b, window_size=d, min_samples=1))
    std_a = _std(a, d) if std_a is None else std_a
    return pl.when(_not_flat(std_a) & _not_flat(_std(b, d))).then(r)


def _idx(key: str, d: int) -> pl.Expr:
    """1-based position, from the window start, of the row whose packed key is the window minimum."""
    win = _over(pl.col(key).rolling_min(d, min_samples=1))
    pos = win % (1 << _POS_BITS)
    start = pl.max_horizontal(t - (d - 1), pl.lit(0, pl.Int64))
    return (pos - start + 1).cast(pl.Float64)


# --------------------------------------------------------------------------- query
def alpha158_polars(lf: pl.LazyFrame, *, presorted: bool = False) -> pl.LazyFrame:
    """Alpha158 features with Qlib semantics, as one lazy Polars query.

    Parameters
    ----------
    lf : polars.LazyFrame
        Columns ``time, symbol, open, high, low, close, volume, vwap`` (others ignored),
        one row per (symbol, calendar day); missing values as null or NaN.
    presorted : bool
        Skip the ``(symbol, time)`` sort when the frame is already sorted that way.

    Returns
    -------
    polars.LazyFrame
        ``time, symbol`` + 158 float64 columns ``KMID`` ... ``VSUMD60`` in Qlib's order,
        sorted by ``(symbol, time)``; missing results are null.

    Notes
    -----
    Four ``with_columns``/``select`` stages: (1) per-symbol lags, row position and the
    IdxMax/IdxMin keys; (2) per-row inputs of the rolling operators; (3) every windowed
    aggregate that more than one feature uses, once per window (Polars' common
    subexpression elimination does not merge ``.over()`` window expressions, so shared
    aggregates are materialised explicitly); (4) the 158 features.
    """
    prices = ["open", "high", "low", "close", "volume", "vwap"]
    base = lf.select(
        "time",
        "symbol",
        *[pl.col(p).cast(pl.Float64).fill_nan(None) for p in prices],
    )
    if not presorted:
        base = base.sort("symbol", "time")

    inf = float("inf")
    pos = pl.int_range(pl.len(), dtype=pl.Int64)
    # Stage 1: lags, row position, IdxMax($high)/IdxMin($low) keys: ordinal rank (missing
    # first, ties -> earlier row) in the high bits, row position in the low bits, so the
    # window minimum of the key is the winning row.
    stage1 = base.with_columns(
        _t=_over(pos),
        _pc=_over(c.shift(1)),  # Ref($close, 1)
        _pv=_over(v.shift(1)),  # Ref($volume, 1)
        _kmax=_over((-h.fill_null(inf)).rank("ordinal").cast(pl.Int64) * (1 << _POS_BITS) + pos),
        _kmin=_over(lo.fill_null(-inf).rank("ordinal").cast(pl.Int64) * (1 << _POS_BITS) + pos),
    )
    # Stage 2: per-row inputs of the rolling operators. Non-finite values (NaN from 0/0 or
    # log(<0), inf from x/0) become missing: pandas' rolling aggregations turn +-inf into NaN
    # and skip NaN (a zero volume makes Log($volume/Ref($volume, 1)+1) inf the next day).
    pc, pv = pl.col("_pc"), pl.col("_pv")
    ret = c / pc
    stage2 = stage1.with_columns(
        _dc=c - pc,  # $close-Ref($close, 1)
        _dv=v - pv,  # $volume-Ref($volume, 1)
        _ret=_finite(ret),  # $close/Ref($close,1)
        _lvol=_finite((v + 1).log()),  # Log($volume+1)
        _lvr=_finite((v / pv + 1).log()),  # Log($volume/Ref($volume, 1)+1)
        _up=(c > pc).fill_null(False).cast(pl.Float64),  # $close>Ref($close, 1), NaN -> False
        _dn=(c < pc).fill_null(False).cast(pl.Float64),  # $close<Ref($close, 1)
        _wv=_finite((ret - 1).abs() * v),  # Abs($close/Ref($close, 1)-1)*$volume
        _x=pl.when(c.is_not_null()).then(t.cast(pl.Float64)),  # regression abscissa paired with $close
    )
    dc, dv, x = pl.col("_dc"), pl.col("_dv"), pl.col("_x")

    # Stage 3: shared windowed aggregates, one column per window.
    shared: dict[str, pl.Expr] = {}
    for d in WINDOWS:
        shared[f"_maxh{d}"] = _max(h, d)
        shared[f"_minl{d}"] = _min(lo, d)
        shared[f"_meanc{d}"] = _mean(c, d)
        shared[f"_stdc{d}"] = _std(c, d)
        shared[f"_slope{d}"] = _over(pl.rolling_cov(x, c, window_size=d, min_samples=1)) / _over(
            x.rolling_var(d, min_samples=1)
        )
        shared[f"_imax{d}"] = _idx("_kmax", d)
        shared[f"_imin{d}"] = _idx("_kmin", d)
        shared[f"_up{d}"] = _mean(pl.col("_up"), d)
        shared[f"_dn{d}"] = _mean(pl.col("_dn"), d)
        for tag, e in (("c", dc), ("v", dv)):
            shared[f"_pos{tag}{d}"] = _sum(e.clip(lower_bound=0.0), d)  # Sum(Greater(diff, 0), d)
            shared[f"_neg{tag}{d}"] = _sum((-e).clip(lower_bound=0.0), d)  # Sum(Greater(-diff, 0), d)
            shared[f"_abs{tag}{d}"] = _sum(e.abs(), d) + 1e-12  # Sum(Abs(diff), d)+1e-12
    stage3 = stage2.with_columns(**shared)

    def col(name: str, d: int) -> pl.Expr:
        return pl.col(f"_{name}{d}")

    hl = h - lo + 1e-12
    feats: dict[str, pl.Expr] = {
        "KMID": (c - o) / o,
        "KLEN": (h - lo) / o,
        "KMID2": (c - o) / hl,
        "KUP": (h - _greater(o, c)) / o,
        "KUP2": (h - _greater(o, c)) / hl,
        "KLOW": (_less(o, c) - lo) / o,
        "KLOW2": (_less(o, c) - lo) / hl,
        "KSFT": (2 * c - h - lo) / o,
        "KSFT2": (2 * c - h - lo) / hl,
        "OPEN0": o / c,
        "HIGH0": h / c,
        "LOW0": lo / c,
        "VWAP0": vw / c,
    }
    for d in WINDOWS:
        feats[f"ROC{d}"] = _over(c.shift(d)) / c
        feats[f"MA{d}"] = col("meanc", d) / c
        feats[f"STD{d}"] = col("stdc", d) / c
        feats[f"BETA{d}"] = col("slope", d) / c
        r = _over(pl.rolling_corr(x, c, window_size=d, min_samples=1))
        feats[f"RSQR{d}"] = pl.when(_not_flat(col("stdc", d))).then(r * r)
        resid = (c - col("meanc", d)) - col("slope", d) * (t.cast(pl.Float64) - _mean(x, d))
        feats[f"RESI{d}"] = resid / c
        feats[f"MAX{d}"] = col("maxh", d) / c
        feats[f"MIN{d}"] = col("minl", d) / c
        feats[f"QTLU{d}"] = _over(c.rolling_quantile(0.8, "linear", d, min_samples=1)) / c
        feats[f"QTLD{d}"] = _over(c.rolling_quantile(0.2, "linear", d, min_samples=1)) / c
        feats[f"RANK{d}"] = _over(c.rolling_rank(d, "average", min_samples=1)) / _count(c, d)
        feats[f"RSV{d}"] = (c - col("minl", d)) / (col("maxh", d) - col("minl", d) + 1e-12)
        imax = pl.when(col("maxh", d).is_not_null()).then(col("imax", d))  # missing if no value in window
        imin = pl.when(col("minl", d).is_not_null()).then(col("imin", d))
        feats[f"IMAX{d}"] = imax / d
        feats[f"IMIN{d}"] = imin / d
        feats[f"IMXD{d}"] = (imax - imin) / d
        feats[f"CORR{d}"] = _corr(c, pl.col("_lvol"), d, col("stdc", d))
        feats[f"CORD{d}"] = _corr(pl.col("_ret"), pl.col("_lvr"), d)
        feats[f"CNTP{d}"] = col("up", d)
        feats[f"CNTN{d}"] = col("dn", d)
        feats[f"CNTD{d}"] = col("up", d) - col("dn", d)
        for tag, pre in (("c", ""), ("v", "V")):
            feats[f"{pre}SUMP{d}"] = col(f"pos{tag}", d) / col(f"abs{tag}", d)
            feats[f"{pre}SUMN{d}"] = col(f"neg{tag}", d) / col(f"abs{tag}", d)
            feats[f"{pre}SUMD{d}"] = (col(f"pos{tag}", d) - col(f"neg{tag}", d)) / col(f"abs{tag}", d)
        feats[f"VMA{d}"] = _mean(v, d) / (v + 1e-12)
        feats[f"VSTD{d}"] = _std(v, d) / (v + 1e-12)
        wv = pl.col("_wv")
        feats[f"WVMA{d}"] = _std(wv, d) / (_mean(wv, d) + 1e-12)

    names = alpha158_names()
    assert sorted(feats) == sorted(names), set(feats) ^ set(names)
    # 0/0 (e.g. a zero open) gives NaN in Qlib and here; report it as missing, like inputs.
    return stage3.select("time", "symbol", *[feats[n].fill_nan(None).alias(n) for n in names])


# --------------------------------------------------------------------------- verification
def synthetic_panel(T: int = 300, N: int = 20, seed: int = 0) -> tuple[dict, "object"]:
    """Synthetic daily OHLCV panel with NaN gaps, rounded to float32 (what Qlib stores).

    Gaps: ~3% scattered missing days, symbol 0 starts 15 days late, symbol 1 is suspended
    for 40 days, symbol 2 stops 5 days early; symbol 3 has a 15-day flat stretch (constant
    prices) to exercise the 2e-5 std guard of ``Corr``/``Rsquare``; symbol 4 trades zero
    volume for 3 days (``0/0`` and ``x/0`` inside ``CORD``).

    Returns
    -------
    arrays : dict of str to ndarray
        ``open high low close volume vwap`` -> ``(T, N)`` float64 holding float32 values.
    times : ndarray
        ``(T,)`` ``datetime64[D]`` consecutive days.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.02, (T, N)), 0)) * rng.uniform(0.5, 2, N)
    openp = close * np.exp(rng.normal(0, 0.01, (T, N)))
    high = np.maximum(openp, close) * np.exp(np.abs(rng.normal(0, 0.01, (T, N))))
    low = np.minimum(openp, close) * np.exp(-np.abs(rng.normal(0, 0.01, (T, N))))
    volume = np.round(rng.lognormal(12, 0.5, (T, N)))
    arrays = dict(open=openp, high=high, low=low, close=close, volume=volume, vwap=(high + low + close) / 3)
    if T < 60 or N < 5:
        raise ValueError(f"synthetic_panel needs T >= 60 and N >= 5, got T={T}, N={N}")
    miss = rng.random((T, N)) < 0.03
    miss[:15, 0] = True
    miss[T // 3 : T // 3 + 40, 1] = True
    miss[-5:, 2] = True
    for k in arrays:
        arrays[k] = np.where(miss, np.nan, arrays[k]).astype(np.float32).astype(np.float64)
    for k in ("open", "high", "low", "close", "vwap"):
        arrays[k][2 * T // 3 : 2 * T // 3 + 15, 3] = 40.0
    arrays["volume"][T // 2 : T // 2 + 3, 4] = 0.0  # zero volume: Log(0/0+1) and x/0 in CORD
    times = (np.datetime64("2020-01-01", "D") + np.arange(T)).astype("datetime64[D]")
    return arrays, times


def _to_long(arrays: dict, times) -> pl.LazyFrame:
    import numpy as np

    T, N = arrays["close"].shape
    return pl.DataFrame(
        {
            "time": np.tile(times, N),
            "symbol": np.repeat([f"S{i:04d}" for i in range(N)], T),
            **{k: np.asarray(a).T.ravel() for k, a in arrays.items()},
        }
    ).lazy()


def verify(T: int = 300, N: int = 20, storage_dtype: str = "float32") -> list[dict]:
    """Compare ``alpha158_polars`` with Qlib's engine on ``synthetic_panel(T, N)``.

    Runs Qlib through ``tests/qlib_harness.py`` (needs ``make qlib-venv``), after checking
    that ``alpha158_qlib_exprs()`` equals Qlib's ``Alpha158DL.get_feature_config()``.

    Returns
    -------
    list of dict
        Per feature: ``name``, ``nan_mismatch`` (cells missing on one side only),
        ``max_abs``, ``max_rel`` (``|polars - qlib| / |qlib|`` over cells with
        ``|qlib| >= 1e-3``), ``scale`` (max ``|qlib|``), ``cells`` (both present).
    """
    import json
    import subprocess
    from pathlib import Path

    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import qlib_harness

    py = qlib_harness.qlib_python()
    if py is None:
        raise RuntimeError(qlib_harness.why_unavailable())
    ours = alpha158_qlib_exprs()
    code = (
        "import json; from qlib.contrib.data.loader import Alpha158DL as A; "
        "f, n = A.get_feature_config(); print(json.dumps(dict(zip(n, f))))"
    )
    theirs = json.loads(subprocess.run([py, "-c", code], capture_output=True, text=True, check=True).stdout)
    if list(theirs.items()) != list(ours.items()):
        bad = [k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k)]
        raise AssertionError(f"alpha158_qlib_exprs() differs from Qlib's Alpha158DL for {sorted(bad)}")

    arrays, times = synthetic_panel(T, N)
    values, errors = qlib_harness.qlib_eval(arrays, times, list(ours.values()), storage_dtype=storage_dtype)
    if errors:
        raise RuntimeError(f"Qlib rejected expressions: {errors}")
    out = alpha158_polars(_to_long(arrays, times)).collect()
    rows = []
    for e, name in enumerate(ours):
        p = out[name].to_numpy().reshape(N, T).T.astype(np.float64)  # (T, N), symbols sorted = column order
        q = values[e]
        pn, qn = np.isnan(p), np.isnan(q)
        both = ~pn & ~qn
        diff = np.abs(p[both] - q[both])
        big = np.abs(q[both]) >= 1e-3
        rows.append(
            dict(
                name=name,
                nan_mismatch=int((pn ^ qn).sum()),
                max_abs=float(diff.max()) if diff.size else 0.0,
                max_rel=float((diff[big] / np.abs(q[both][big])).max()) if big.any() else 0.0,
                scale=float(np.abs(q[both]).max()) if both.any() else 0.0,
                cells=int(both.sum()),
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    """``python benchmarks/alpha158_polars.py --verify [--T 300 --N 20]``: print the comparison table."""
    ap = argparse.ArgumentParser(description="Check the Polars Alpha158 against Qlib's engine.")
    ap.add_argument("--verify", action="store_true", required=True)
    ap.add_argument("--T", type=int, default=300)
    ap.add_argument("--N", type=int, default=20)
    ap.add_argument("--storage-dtype", choices=("float32", "float64"), default="float32")
    args = ap.parse_args(argv)
    rows = verify(args.T, args.N, args.storage_dtype)
    print(f"Polars Alpha158 vs Qlib {args.T} days x {args.N} symbols, Qlib storage {args.storage_dtype}")
    print(f"{'feature':<9}{'nan_mismatch':>13}{'max_abs':>11}{'max_rel':>11}{'scale':>10}{'cells':>7}")
    for r in rows:
        print(
            f"{r['name']:<9}{r['nan_mismatch']:>13}{r['max_abs']:>11.2e}{r['max_rel']:>11.2e}"
            f"{r['scale']:>10.3g}{r['cells']:>7}"
        )
    worst = max(rows, key=lambda r: r["max_rel"])
    print(f"worst max_rel: {worst['name']} {worst['max_rel']:.2e}; "
          f"features with NaN-pattern mismatches: {[r['name'] for r in rows if r['nan_mismatch']]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
