"""``ff.evaluate``: does a factor predict returns? IC, quantile returns, turnover, on Dask.

The evaluation is a cross-sectional computation per date, run as one Dask task per time chunk
(all symbols of the chunk's rows, every factor at once) by the Numba kernel
``kernels/cpu/evaluate.py:evaluate_rows``. A task reads its factor rows with a backward halo of
``max(lags)`` rows (turnover and rank autocorrelation compare each date with earlier ones) and
its price rows with a forward halo of ``max(periods)`` rows (forward returns); prices are
forward-filled across chunks by a chain of small tasks carrying each symbol's last valid price.
Only per-date statistics come back to the client (a few numbers per factor, horizon, date and
quantile): the panel is never gathered, and never turned into pandas.

The definitions are alphalens' (see the kernel module and docs/evaluation.md); the numbers
agree with alphalens-reloaded to 1e-9 (tests/test_evaluate.py).
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from .panel import Panel, _Group

__all__ = ["evaluate", "Evaluation"]

TARGET_TASK_CELLS = 8_000_000  # factor cells per task: ~50-150 ms of kernel time each


def _check_positive_ints(name, values) -> tuple[int, ...]:
    if isinstance(values, (int, np.integer)):
        values = (values,)
    try:
        vals = tuple(values)
    except TypeError:
        raise TypeError(f"{name} must be a positive integer or a sequence of them, got {values!r}") from None
    if not vals:
        raise ValueError(f"{name} must not be empty")
    for v in vals:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be positive integers (rows ahead), got {v!r} in {values!r}")
    if len(set(vals)) != len(vals):
        raise ValueError(f"{name} has duplicates: {values!r}")
    return tuple(sorted(int(v) for v in vals))


def quantile_levels(q: int) -> np.ndarray:
    """The bin-edge levels of ``q`` equal-count quantiles, exactly as pandas ``qcut`` builds them
    (``linspace(0, 1, q + 1)``, a level not representable in base 2 rounded up).

    Examples
    --------
    >>> quantile_levels(4).tolist()
    [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    levels = np.linspace(0, 1, q + 1)
    np.putmask(levels, q * levels != np.arange(q + 1), np.nextafter(levels, 1))
    return levels


def _group_codes(groups, symbols: np.ndarray) -> tuple[np.ndarray, list]:
    """Static group per symbol -> (int64 codes, -1 = none; sorted group labels)."""
    N = len(symbols)
    if isinstance(groups, Mapping):
        labels = [groups.get(s, groups.get(str(s))) for s in symbols.tolist()]
    else:
        labels = list(np.asarray(groups, dtype=object).reshape(-1))
        if len(labels) != N:
            raise ValueError(f"groups has {len(labels)} entries but the panel has {N} symbols; give one "
                             "group per symbol (in panel.symbols order) or a dict symbol -> group")

    def missing(v):
        return v is None or (isinstance(v, float) and math.isnan(v))

    uniq = sorted({v for v in labels if not missing(v)}, key=lambda v: (str(type(v)), v))
    if not uniq:
        raise ValueError("groups gives no symbol a group")
    code = {v: i for i, v in enumerate(uniq)}
    return np.array([-1 if missing(v) else code[v] for v in labels], dtype=np.int64), uniq


def _resolve_factors(factors, panel: Panel):
    """-> (names, panel holding them). Field names of ``panel`` are used as they are; formulas
    and Factor objects are computed (lazily) with ``ff.compute``."""
    from ..factors import Factor
    from .compute import compute

    if isinstance(factors, Panel):
        if factors.shape != panel.shape:
            raise ValueError(f"the factor panel's shape {factors.shape} differs from the price panel's {panel.shape}")
        if not (np.array_equal(factors.times, panel.times) and np.array_equal(factors.symbols, panel.symbols)):
            raise ValueError("the factor panel's times or symbols differ from the price panel's: evaluate factors "
                             "on the panel they were computed from")
        return list(factors.fields), factors
    if isinstance(factors, (str, Factor)):
        factors = [factors]
    if not isinstance(factors, Mapping):
        items = []
        for f in factors:
            if not isinstance(f, (str, Factor)):
                raise TypeError(f"factors must be formulas, Factor objects or field names, got {type(f).__name__}")
            items.append((f if isinstance(f, str) else f.formula, f))
        factors = dict(items)
    if not factors:
        raise ValueError("no factors to evaluate")
    names = list(factors)
    fields, formulas = {}, {}
    for name, f in factors.items():
        if not isinstance(name, str):
            raise TypeError(f"factor names must be strings, got {name!r}")
        if isinstance(f, str) and f in panel.fields:
            fields[name] = f
        elif isinstance(f, (str, Factor)):
            formulas[name] = f
        else:
            raise TypeError(f"factor {name!r}: expected a formula, a Factor or a field name, got {type(f).__name__}")
    groups = []
    for name, fld in fields.items():
        g, k = panel._locate(fld)
        groups.append(_Group((name,), g.data[k:k + 1]) if g._cache is None else _Group((name,), g._cache[k:k + 1]))
    if formulas:
        out = compute(formulas, panel)  # validates every formula before anything runs
        groups.extend(out._groups)
        keep = getattr(out, "_keep", None)
    else:
        keep = None
    by_name = {n: (gi, k) for gi, g in enumerate(groups) for k, n in enumerate(g.names)}
    src = Panel(groups, panel.times, panel.symbols)
    src._keep = keep
    return [n for n in names if n in by_name], src


def _time_chunks(T: int, F: int, N: int, halo: int, chunks) -> list[int]:
    from .plan import default_nthreads

    if chunks is not None:
        rows = chunks.get("time", chunks) if isinstance(chunks, Mapping) else chunks
        if isinstance(rows, bool) or not isinstance(rows, (int, np.integer)) or not (rows == -1 or rows >= 1):
            raise ValueError(f"chunks must be a positive number of rows per task (or -1), got {chunks!r}")
        rows = T if rows == -1 else int(rows)
    else:
        n = max(math.ceil(F * T * N / TARGET_TASK_CELLS), 1)
        nthreads = default_nthreads()
        n = max(n, min(2 * nthreads, T // max(4 * halo, 64)))  # keep every thread busy, halos small
        if n > nthreads:
            n = math.ceil(n / nthreads) * nthreads
        rows = math.ceil(T / n)
    return [min(rows, T - r) for r in range(0, T, rows)]


def _dask_rows(panel: Panel, name: str, tchunks, client):
    """A (T, N) dask array of one field, read where the tasks run."""
    import dask.array as da
    from dask.highlevelgraph import HighLevelGraph

    g, k = panel._locate(name)
    if g.is_dask and g._cache is None:
        return g.data[k]
    data = g.materialize()[k:k + 1]
    N = data.shape[2]
    if client is None:
        return da.from_array(data[0], chunks=(tchunks, (N,)), inline_array=True, asarray=False)
    from .placement import scatter_blocks

    key, futures = scatter_blocks(client, data, tchunks, (N,), token=f"eval-{name}")
    graph = HighLevelGraph.from_collections(key, dict(futures), dependencies=[])
    arr = da.Array(graph, key, chunks=((1,), tuple(tchunks), (N,)), dtype=data.dtype,
                   meta=np.empty((0, 0, 0), data.dtype))
    return arr[0]


def _carry_step(block, carry):
    from ..kernels.cpu.evaluate import last_valid

    block = np.ascontiguousarray(block, dtype=np.float64)
    out = np.empty(block.shape[1])
    last_valid(block, carry, out)
    return out


def _group_block(group_values, rows: int, N: int):
    """(rows, N) int64 codes and their count: static codes broadcast, or a block of a group
    field (finite values are labels, dense-coded per block; NaN = no group)."""
    if group_values is None:
        return np.full((rows, N), -1, np.int64), 0
    g = np.asarray(group_values)
    if g.ndim == 1:
        return np.ascontiguousarray(np.broadcast_to(g, (rows, N))), int(g.max()) + 1
    ok = np.isfinite(g)
    labels, codes = np.unique(g[ok], return_inverse=True)
    out = np.full(g.shape, -1, np.int64)
    out[ok] = codes
    return out, len(labels)


def _eval_task(params, price, carry, group_values, *factors):
    from ..kernels.cpu.evaluate import evaluate_rows

    periods, levels, lags, halo, demean = params
    fac = np.stack([np.asarray(f, dtype=np.float64) for f in factors])
    price = np.ascontiguousarray(price, dtype=np.float64)
    F, Rh, N = fac.shape
    group, n_groups = _group_block(group_values, Rh, N)
    R = Rh - halo
    P, Q, K = len(periods), len(levels) - 1, len(lags)
    out = {
        "nfinite": np.empty((F, R), np.int64), "nvalid": np.empty((F, R), np.int64),
        "ic": np.empty((F, P, R)), "ric": np.empty((F, P, R)), "qmean": np.empty((F, P, R, Q)),
        "qcount": np.empty((F, R, Q), np.int64), "turnover": np.empty((F, K, R, Q)),
        "autocorr": np.empty((F, K, R)), "ic_gn": np.empty((F, P, R)), "ric_gn": np.empty((F, P, R)),
        "qmean_gn": np.empty((F, P, R, Q)),
    }
    evaluate_rows(fac, price, carry, group, n_groups, periods, levels, lags, halo, demean,
                  out["nfinite"], out["nvalid"], out["ic"], out["ric"], out["qmean"], out["qcount"],
                  out["turnover"], out["autocorr"], out["ic_gn"], out["ric_gn"], out["qmean_gn"])
    return out


def evaluate(factors, panel: Panel, *, prices: str = "close", periods=(1, 5, 10), quantiles: int = 5,
             groups=None, demeaned: bool = True, chunks=None) -> Evaluation:
    """Evaluate factors against forward returns: IC, rank IC, quantile returns, turnover.

    Per date (cross-sectionally) and per horizon: the Pearson IC and the Spearman rank IC of the
    factor with the forward return, the mean forward return of each factor quantile, quantile
    turnover, the factor's rank autocorrelation and coverage; summarised per factor and
    horizon by :meth:`Evaluation.summary`. Definitions follow alphalens (forward returns on
    forward-filled prices, ``qcut`` quantiles per date, returns demeaned per date), and the
    numbers agree with alphalens-reloaded to 1e-9; see docs/evaluation.md.

    Parameters
    ----------
    factors : mapping of str to (str or Factor), sequence, str, Factor or Panel
        Name -> formula (native dialect), :class:`~factorflow.Factor`, or the name of a field of
        ``panel`` (a factor computed earlier). A list names factors by their formula text. A
        :class:`Panel` (e.g. the result of :func:`factorflow.compute`) evaluates all its fields.
        Formulas are computed with :func:`factorflow.compute` in the same Dask run.
    panel : Panel
        Holds the ``prices`` field (and the fields the formulas read).
    prices : str
        Field holding prices; missing prices are forward-filled.
    periods : sequence of int
        Forward-return horizons in rows (bars) of the panel.
    quantiles : int
        Number of equal-count quantiles per date, 1 = lowest factor values.
    groups : str, sequence or dict, optional
        Groups (e.g. industries) for the group-neutral variants (forward returns demeaned
        within each group on each date), which are added to the results. Either the name of a
        panel field holding group codes per date and symbol (any finite number is a group label,
        NaN = no group), or a static label per symbol (a sequence in ``panel.symbols`` order or
        a dict symbol -> label; None or NaN = no group). Cells without a group leave the sample.
    demeaned : bool
        Quantile returns relative to the date's mean forward return (alphalens' default).
    chunks : int, optional
        Rows (dates) per task; planned from the data size and the worker count when omitted.
        Results do not depend on it.

    Returns
    -------
    Evaluation

    Examples
    --------
    >>> import numpy as np, factorflow as ff
    >>> rng = np.random.default_rng(0)
    >>> close = 100 * np.exp(np.cumsum(0.01 * rng.standard_normal((250, 40)), axis=0))
    >>> panel = ff.Panel.from_numpy({"close": close})
    >>> ev = ff.evaluate({"rev": "-(close / delay(close, 5) - 1)"}, panel, periods=(1, 5))
    >>> ev.ic.columns
    ['time', 'factor', 'period', 'ic', 'rank_ic']
    >>> ev.summary().select("factor", "period", "n_dates").rows()
    [('rev', 1, 240), ('rev', 5, 240)]
    """
    import dask
    from dask import delayed

    from .graph import _active_client

    if not isinstance(panel, Panel):
        raise TypeError(f"panel must be a factorflow Panel, got {type(panel).__name__}")
    if not isinstance(prices, str) or prices not in panel.fields:
        raise KeyError(f"prices field {prices!r} is not in the panel (fields: {', '.join(panel.fields)})")
    periods = _check_positive_ints("periods", periods)
    if isinstance(quantiles, bool) or not isinstance(quantiles, (int, np.integer)) or quantiles < 2:
        raise ValueError(f"quantiles must be an integer >= 2, got {quantiles!r}")
    quantiles = int(quantiles)
    T, N = panel.shape
    if T <= periods[-1]:
        raise ValueError(f"the panel has {T} rows; the longest horizon ({periods[-1]}) needs more")
    if quantiles > 32767:
        raise ValueError("quantiles must be < 32768")
    group_field = None
    if isinstance(groups, str):
        if groups not in panel.fields:
            raise KeyError(f"groups field {groups!r} is not in the panel (fields: {', '.join(panel.fields)})")
        group_field, group, group_labels = groups, None, [groups]
    elif groups is not None:
        group, group_labels = _group_codes(groups, panel.symbols)
    else:
        group, group_labels = None, []
    names, src = _resolve_factors(factors, panel)
    if len(set(names)) != len(names):
        raise ValueError(f"factor names repeat: {names}")

    lags = tuple(sorted(set(periods) | {1}))
    halo = lags[-1]
    F = len(names)
    tchunks = _time_chunks(T, F, N, halo, chunks)
    client = _active_client()
    price = _dask_rows(panel, prices, tchunks, client)
    facs = [_dask_rows(src, n, tchunks, client) for n in names]
    gfield = _dask_rows(panel, group_field, tchunks, client) if group_field is not None else None
    params = (np.array(periods, np.int64), quantile_levels(quantiles), np.array(lags, np.int64), 0, bool(demeaned))

    starts = np.cumsum((0,) + tuple(tchunks[:-1])).tolist()
    tasks = []
    carry = np.full(N, np.nan)
    prev_s = 0
    for r0, n in zip(starts, tchunks):
        r1 = r0 + n
        s = max(0, r0 - halo)
        if s > prev_s:
            carry = delayed(_carry_step, pure=True)(price[prev_s:s], carry)
            prev_s = s
        e = min(T, r1 + periods[-1])
        p = params[:3] + (r0 - s,) + params[4:]
        g = gfield[s:r1] if gfield is not None else group
        tasks.append(delayed(_eval_task, pure=True)(p, price[s:e], carry, g, *[f[s:r1] for f in facs]))
    parts = dask.compute(*tasks)
    keys = parts[0].keys()
    res = {k: np.concatenate([pt[k] for pt in parts], axis=-2 if k in ("qmean", "qcount", "turnover", "qmean_gn")
                             else -1) for k in keys}
    return Evaluation(names, periods, quantiles, lags, panel.times, N, res, group_labels, bool(demeaned), prices)


class Evaluation:
    """The result of :func:`factorflow.evaluate`: per-date statistics and their summary.

    Frames (Polars): :attr:`ic`, :attr:`quantile_returns`, :attr:`quantile_returns_by_date`,
    :attr:`turnover` (and :meth:`turnover_at`), :attr:`rank_autocorrelation`, :attr:`coverage`,
    :attr:`cumulative_returns`, and :meth:`summary`. :meth:`show` displays the bokeh report in a
    notebook, :meth:`save` writes it as a standalone HTML file.

    Examples
    --------
    >>> import numpy as np, factorflow as ff
    >>> rng = np.random.default_rng(1)
    >>> ret = 0.01 * rng.standard_normal((120, 30))
    >>> close = 100 * np.exp(np.cumsum(ret, axis=0))
    >>> signal = np.roll(ret, -1, axis=0)  # knows tomorrow's return: a perfect rank IC at period 1
    >>> ev = ff.evaluate({"oracle": "signal"}, ff.Panel.from_numpy({"close": close, "signal": signal}),
    ...                  periods=(1,), quantiles=3)
    >>> s = ev.summary().row(0, named=True)
    >>> round(s["rank_ic_mean"], 12), s["n_dates"]
    (1.0, 119)
    >>> ev.quantile_returns["quantile"].to_list()
    [1, 2, 3]
    >>> bool(ev.quantile_returns["mean_return"][2] > 0 > ev.quantile_returns["mean_return"][0])
    True
    """

    def __init__(self, names, periods, quantiles, lags, times, n_symbols, res, group_labels, demeaned, prices):
        self.factors = list(names)
        self.periods = tuple(periods)
        self.quantiles = quantiles
        self.lags = tuple(lags)
        self.times = np.asarray(times)
        self.n_symbols = n_symbols
        self.groups = list(group_labels)
        self.demeaned = demeaned
        self.prices = prices
        self._r = res
        self._frames: dict = {}

    # -- helpers ----------------------------------------------------------------------------------
    def _fi(self, factor) -> int:
        try:
            return self.factors.index(factor)
        except ValueError:
            raise KeyError(f"no factor {factor!r} in this evaluation (factors: {', '.join(self.factors)})") from None

    def _pi(self, period) -> int:
        try:
            return self.periods.index(period)
        except ValueError:
            raise KeyError(f"no period {period!r} in this evaluation (periods: {self.periods})") from None

    def _cached(self, key, build):
        if key not in self._frames:
            self._frames[key] = build()
        return self._frames[key]

    @property
    def has_groups(self) -> bool:
        return bool(self.groups)

    # -- frames -----------------------------------------------------------------------------------
    @property
    def ic(self):
        """Per date: ``time, factor, period, ic, rank_ic`` (Pearson / Spearman), plus
        ``ic_group_neutral, rank_ic_group_neutral`` with groups. A row per date with a non-empty
        sample (IC is NaN where a side has no spread)."""
        def build():
            import polars as pl

            r = self._r
            F, P, T = r["ic"].shape
            ok = r["nvalid"] > 0  # (F, T)
            fi, pi, ti = np.nonzero(np.broadcast_to(ok[:, None, :], (F, P, T)))
            cols = {
                "time": pl.Series("time", self.times[ti]),
                "factor": pl.Series("factor", np.array(self.factors, dtype=object)[fi].astype(str)),
                "period": pl.Series("period", np.array(self.periods, np.int64)[pi]),
                "ic": r["ic"][fi, pi, ti], "rank_ic": r["ric"][fi, pi, ti],
            }
            if self.has_groups:
                cols["ic_group_neutral"] = r["ic_gn"][fi, pi, ti]
                cols["rank_ic_group_neutral"] = r["ric_gn"][fi, pi, ti]
            return pl.DataFrame(cols).with_columns(pl.col("ic", "rank_ic").fill_nan(None))
        return self._cached("ic", build)

    def _quantile_stats(self, key):
        """(mean over dates, std error, n dates) of per-date quantile means: (F, P, Q) each."""
        q = self._r[key]  # (F, P, T, Q)
        has = self._r["qcount"][:, None, :, :] > 0
        has = np.broadcast_to(has, q.shape) & ~np.isnan(q)
        n = has.sum(axis=2)
        vals = np.where(has, q, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = vals.sum(axis=2) / n
            dev = np.where(has, q - mean[:, :, None, :], 0.0)
            std = np.sqrt((dev * dev).sum(axis=2) / (n - 1))
            se = std / np.sqrt(n)
        return mean, se, n

    @property
    def quantile_returns(self):
        """``factor, period, quantile, mean_return, std_error, n_dates``: the mean over dates of
        each quantile's mean forward return on the date (demeaned by the date's sample mean
        unless ``demeaned=False``), its standard error across dates, and how many dates had the
        quantile (alphalens ``mean_return_by_quantile``). With groups, also
        ``mean_return_group_neutral`` (returns demeaned within groups)."""
        def build():
            import polars as pl

            mean, se, n = self._quantile_stats("qmean")
            F, P, Q = mean.shape
            fi, pi, qi = np.meshgrid(np.arange(F), np.arange(P), np.arange(Q), indexing="ij")
            fi, pi, qi = fi.ravel(), pi.ravel(), qi.ravel()
            cols = {
                "factor": pl.Series("factor", np.array(self.factors, dtype=object)[fi].astype(str)),
                "period": pl.Series("period", np.array(self.periods, np.int64)[pi]),
                "quantile": pl.Series("quantile", (qi + 1).astype(np.int64)),
                "mean_return": mean.ravel(), "std_error": se.ravel(), "n_dates": n.ravel().astype(np.int64),
            }
            if self.has_groups:
                cols["mean_return_group_neutral"] = self._quantile_stats("qmean_gn")[0].ravel()
            return pl.DataFrame(cols).with_columns(pl.col("mean_return", "std_error").fill_nan(None))
        return self._cached("quantile_returns", build)

    @property
    def quantile_returns_by_date(self):
        """``time, factor, period, quantile, mean_return``: each quantile's mean (demeaned)
        forward return per date, for dates where the quantile has symbols."""
        def build():
            import polars as pl

            q = self._r["qmean"]
            has = np.broadcast_to(self._r["qcount"][:, None, :, :] > 0, q.shape)
            fi, pi, ti, qi = np.nonzero(has)
            return pl.DataFrame({
                "time": pl.Series("time", self.times[ti]),
                "factor": pl.Series("factor", np.array(self.factors, dtype=object)[fi].astype(str)),
                "period": pl.Series("period", np.array(self.periods, np.int64)[pi]),
                "quantile": pl.Series("quantile", (qi + 1).astype(np.int64)),
                "mean_return": q[fi, pi, ti, qi],
            })
        return self._cached("qbd", build)

    def _lag_frame(self, lag: int):
        import polars as pl

        k = self.lags.index(lag)
        tv = self._r["turnover"][:, k]  # (F, T, Q)
        fi, ti, qi = np.nonzero(~np.isnan(tv))
        return pl.DataFrame({
            "time": pl.Series("time", self.times[ti]),
            "factor": pl.Series("factor", np.array(self.factors, dtype=object)[fi].astype(str)),
            "quantile": pl.Series("quantile", (qi + 1).astype(np.int64)),
            "turnover": tv[fi, ti, qi],
        })

    @property
    def turnover(self):
        """``time, factor, quantile, turnover``: share of the quantile's symbols on a date that
        were not in it on the previous date (alphalens ``quantile_turnover``, period 1); rows
        where both dates have the quantile. :meth:`turnover_at` gives other lags."""
        return self._cached("turnover", lambda: self._lag_frame(1))

    def turnover_at(self, lag: int):
        """Turnover against the date ``lag`` rows earlier (``lag`` in 1 and ``periods``)."""
        if lag not in self.lags:
            raise KeyError(f"turnover was computed at lags {self.lags}, not {lag!r}")
        return self._cached(("turnover", lag), lambda: self._lag_frame(lag))

    @property
    def rank_autocorrelation(self):
        """``time, factor, lag, rank_autocorr``: Pearson correlation of the factor's ranks on a
        date with its ranks ``lag`` rows earlier (alphalens ``factor_rank_autocorrelation``)."""
        def build():
            import polars as pl

            a = self._r["autocorr"]  # (F, K, T)
            ok = np.broadcast_to((self._r["nvalid"] > 0)[:, None, :], a.shape)
            fi, ki, ti = np.nonzero(ok)
            return pl.DataFrame({
                "time": pl.Series("time", self.times[ti]),
                "factor": pl.Series("factor", np.array(self.factors, dtype=object)[fi].astype(str)),
                "lag": pl.Series("lag", np.array(self.lags, np.int64)[ki]),
                "rank_autocorr": a[fi, ki, ti],
            }).with_columns(pl.col("rank_autocorr").fill_nan(None))
        return self._cached("autocorr", build)

    @property
    def coverage(self):
        """``time, factor, coverage, n_sample``: share of the panel's symbols with a finite
        factor value, and how many (date, symbol) cells entered the evaluation sample."""
        def build():
            import polars as pl

            nf, nv = self._r["nfinite"], self._r["nvalid"]
            F, T = nf.shape
            fi, ti = np.meshgrid(np.arange(F), np.arange(T), indexing="ij")
            fi, ti = fi.ravel(), ti.ravel()
            return pl.DataFrame({
                "time": pl.Series("time", self.times[ti]),
                "factor": pl.Series("factor", np.array(self.factors, dtype=object)[fi].astype(str)),
                "coverage": nf.ravel() / self.n_symbols,
                "n_sample": nv.ravel().astype(np.int64),
            })
        return self._cached("coverage", build)

    def _cum(self):
        """Cumulative quantile returns from the shortest horizon: (F, T, Q) and times."""
        p = self.periods[0]
        q = self._r["qmean"][:, 0]  # (F, T, Q)
        has = (self._r["qcount"] > 0) & ~np.isnan(q)
        with np.errstate(invalid="ignore"):
            rate = np.where(has, np.power(1.0 + np.where(has, q, 0.0), 1.0 / p) - 1.0, 0.0)
        return np.cumprod(1.0 + rate, axis=1)

    @property
    def cumulative_returns(self):
        """``time, factor, quantile, cumulative_return``: growth of 1 invested in each quantile
        (equal weight, rebalanced every row) from the shortest horizon's per-date quantile
        returns, compounded per row (``(1 + r) ** (1 / period)`` when that horizon is longer than
        one row); dates without the quantile add nothing."""
        def build():
            import polars as pl

            c = self._cum()
            F, T, Q = c.shape
            fi, ti, qi = np.meshgrid(np.arange(F), np.arange(T), np.arange(Q), indexing="ij")
            fi, ti, qi = fi.ravel(), ti.ravel(), qi.ravel()
            return pl.DataFrame({
                "time": pl.Series("time", self.times[ti]),
                "factor": pl.Series("factor", np.array(self.factors, dtype=object)[fi].astype(str)),
                "quantile": pl.Series("quantile", (qi + 1).astype(np.int64)),
                "cumulative_return": c.ravel(),
            })
        return self._cached("cum", build)

    def summary(self):
        """One row per factor and period.

        Columns: ``factor, period, n_dates`` (dates with a sample), ``ic_mean, ic_std, ic_ir,
        ic_tstat``, the same for ``rank_ic_*`` (std with ddof 1, IR = mean / std, t = IR *
        sqrt(n_dates), NaN ICs skipped), ``top_return, bottom_return, spread`` (mean return of
        the top and bottom quantile and top minus bottom), ``turnover_top, turnover_bottom``
        and ``rank_autocorr`` at a lag equal to the period, ``coverage`` (mean over all dates),
        plus ``ic_group_neutral_mean, rank_ic_group_neutral_mean`` with groups.
        """
        def build():
            import polars as pl

            r = self._r
            mean, _, _ = self._quantile_stats("qmean")
            rows = []
            for f, name in enumerate(self.factors):
                ok = r["nvalid"][f] > 0
                for p, per in enumerate(self.periods):
                    row = {"factor": name, "period": per, "n_dates": int(ok.sum())}
                    for key, col in (("ic", "ic"), ("ric", "rank_ic")):
                        x = r[key][f, p][ok]
                        x = x[~np.isnan(x)]
                        m = x.mean() if len(x) else np.nan
                        s = x.std(ddof=1) if len(x) > 1 else np.nan
                        row[f"{col}_mean"], row[f"{col}_std"] = m, s
                        row[f"{col}_ir"] = m / s if s else np.nan
                        row[f"{col}_tstat"] = m / s * math.sqrt(len(x)) if s else np.nan
                    row["top_return"] = mean[f, p, -1]
                    row["bottom_return"] = mean[f, p, 0]
                    row["spread"] = mean[f, p, -1] - mean[f, p, 0]
                    k = self.lags.index(per)
                    tv = r["turnover"][f, k]
                    row["turnover_top"] = _nanmean(tv[:, -1])
                    row["turnover_bottom"] = _nanmean(tv[:, 0])
                    row["rank_autocorr"] = _nanmean(r["autocorr"][f, k])
                    row["coverage"] = float(np.mean(r["nfinite"][f] / self.n_symbols))
                    if self.has_groups:
                        row["ic_group_neutral_mean"] = _nanmean(r["ic_gn"][f, p][ok])
                        row["rank_ic_group_neutral_mean"] = _nanmean(r["ric_gn"][f, p][ok])
                    rows.append(row)
            return pl.DataFrame(rows).with_columns(pl.col(pl.Float64).fill_nan(None))
        return self._cached("summary", build)

    # -- plots ------------------------------------------------------------------------------------
    def figures(self, factor=None, period=None):
        """The report's bokeh layout for one factor (default: the first) and horizon (default:
        the shortest)."""
        from .plots import evaluation_report

        return evaluation_report(self, self.factors[0] if factor is None else factor,
                                 self.periods[0] if period is None else period)

    def show(self, factor=None, period=None):
        """Display the report in Jupyter (bokeh, resources inline: no server, no internet)."""
        from bokeh.io import output_notebook, show
        from bokeh.resources import INLINE

        output_notebook(INLINE, hide_banner=True)
        show(self.figures(factor, period))

    def save(self, path, factor=None, title: str | None = None) -> str:
        """Write a standalone HTML report (bokeh, JavaScript inline: opens offline).

        ``factor=None`` puts every factor in the report, one tab each. Returns the path.
        """
        from .plots import save_report

        return save_report(self, path, factor=factor, title=title)

    def _repr_html_(self):
        from .html import evaluation_html

        return evaluation_html(self)

    def __repr__(self):
        T = len(self.times)
        return (f"<Evaluation {len(self.factors)} factors ({', '.join(self.factors[:5])}"
                f"{', ...' if len(self.factors) > 5 else ''}) x periods {self.periods}, {self.quantiles} quantiles, "
                f"{T} dates x {self.n_symbols} symbols>")


def _nanmean(x) -> float:
    x = np.asarray(x, dtype=np.float64)
    x = x[~np.isnan(x)]
    return float(x.mean()) if len(x) else float("nan")
