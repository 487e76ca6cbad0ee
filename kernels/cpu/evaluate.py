"""Factor evaluation kernels: per-date IC, rank IC, quantiles, turnover, rank autocorrelation.

One call evaluates a block of consecutive rows (dates) of several factors against one price
array, all symbols at once; ``engine/evaluate.py`` runs one call per time chunk. The
conventions are alphalens' (``get_clean_factor_and_forward_returns`` with
``filter_zscore=None``, ``factor_information_coefficient``, ``mean_return_by_quantile``,
``quantile_turnover``, ``factor_rank_autocorrelation``), read from its source:

* **forward returns**: ``p`` rows ahead on forward-filled prices,
  ``fwd[t] = P[t + p] / P[t] - 1`` (``prices.ffill().pct_change(p).shift(-p)``); NaN where the
  price row ``t + p`` is past the end of the panel or no price has been seen yet;
* **sample**: a (date, symbol) cell enters the evaluation of a factor when the factor value is
  finite, *every* requested horizon has a forward return (so all horizons use one sample, and
  IC decay compares like with like) and, with groups, the symbol has a group;
* **quantiles**: per date, edges at levels ``levels`` of the sample's factor values with linear
  interpolation (NumPy's ``quantile``, as pandas ``qcut`` calls it), quantile ``k`` holds
  ``edges[k-1] < x <= edges[k]``, the smallest value in quantile 1; a date whose edges are not
  all distinct (too few distinct values) is dropped from the factor's sample altogether, as
  ``qcut`` raises and alphalens drops the date;
* **IC**: Pearson correlation of factor and forward return over the sample; **rank IC**:
  Pearson correlation of their average ranks (Spearman);
* **quantile returns**: mean forward return of the quantile's symbols, demeaned by the date's
  sample mean when ``demean`` (alphalens' ``demeaned=True``);
* **turnover** at lag ``L``: share of the quantile's symbols at ``t`` that were not in it at
  ``t - L`` (NaN when the quantile is empty at either date);
* **rank autocorrelation** at lag ``L``: Pearson correlation between the factor's average ranks
  (1..n over the date's sample) at ``t`` and ``t - L``, over the symbols in both samples.

Sums are accumulated in float64; correlations are computed two-pass (centred sums).
"""
from __future__ import annotations

import numpy as np

from ._jit import kernel
from .cross_section import _NB, _NPASS, _SMALL, _insertion_argsort, _radix_argsort

__all__ = ["evaluate_rows", "last_valid"]


@kernel
def last_valid(x, carry, out):
    """Per column, the last non-NaN value of ``x`` (rows in time order), else ``carry``."""
    for j in range(x.shape[1]):
        out[j] = carry[j]
    for t in range(x.shape[0]):
        for j in range(x.shape[1]):
            v = x[t, j]
            if v == v:
                out[j] = v


@kernel(inline="always")
def _argsort(vals, idx, n, idx2, keys, keys2, hist):
    """Ascending order of ``vals[:n]`` as the ``idx`` values carried along (no NaN)."""
    if n <= _SMALL:
        _insertion_argsort(vals, idx, n)
        return idx
    return _radix_argsort(vals, idx, n, keys, keys2, idx2, hist)


@kernel(inline="always")
def _average_ranks(src, order, n, out):
    """``out[order[k]]`` = 1-based rank of ``src[order[k]]`` among the ``n`` sorted values, ties
    averaged (``(first + last) / 2`` of the tie group's positions)."""
    k = 0
    while k < n:
        v = src[order[k]]
        e = k + 1
        while e < n and src[order[e]] == v:
            e += 1
        r = 0.5 * (k + 1 + e)
        for m in range(k, e):
            out[order[m]] = r
        k = e


@kernel(inline="always")
def _pearson(a, b, n):
    """Pearson correlation of ``a[:n]`` and ``b[:n]`` (two-pass); NaN for n < 2 or no spread."""
    if n < 2:
        return np.nan
    sa = 0.0
    sb = 0.0
    for m in range(n):
        sa += a[m]
        sb += b[m]
    ma = sa / n
    mb = sb / n
    sab = 0.0
    saa = 0.0
    sbb = 0.0
    for m in range(n):
        da = a[m] - ma
        db = b[m] - mb
        sab += da * db
        saa += da * da
        sbb += db * db
    return sab / np.sqrt(saa * sbb)


@kernel
def evaluate_rows(fac, price, carry, group, n_groups, periods, levels, lags, halo, demean,
                  nfinite, nvalid, ic, ric, qmean, qcount, turnover, autocorr, ic_gn, ric_gn, qmean_gn):
    """Evaluate ``F`` factors on a block of rows.

    Parameters
    ----------
    fac : float64 (F, Rh, N)
        Factor values of rows ``[s, r1)``: the first ``halo`` rows only feed the lagged
        turnover and rank autocorrelation of the rows after them.
    price : float64 (Rp, N)
        Prices of rows ``[s, s + Rp)``, ``Rp >= Rh`` (up to ``max(periods)`` rows past ``r1``,
        fewer at the end of the panel); NaN = missing, forward-filled from ``carry``.
    carry : float64 (N,)
        Last valid price of each symbol before row ``s`` (NaN if none).
    group : int64 (Rh, N)
        Group code ``0..n_groups-1`` per row and symbol, -1 = no group (the cell leaves the
        sample when ``n_groups > 0``).
    periods : int64 (P,)
        Forward-return horizons in rows.
    levels : float64 (Q + 1,)
        Quantile levels of the bin edges, ``0 .. 1``.
    lags : int64 (K,)
        Lags of turnover and rank autocorrelation, each ``<= halo`` unless the block starts
        the panel.
    halo : int
    demean : bool
        Demean forward returns by the date's sample mean for the quantile returns.

    Outputs (``R = Rh - halo`` rows each, every cell written): ``nfinite``, ``nvalid`` int64
    (F, R); ``ic``, ``ric`` (F, P, R); ``qmean`` (F, P, R, Q); ``qcount`` int64 (F, R, Q);
    ``turnover`` (F, K, R, Q); ``autocorr`` (F, K, R); group-neutral ``ic_gn``, ``ric_gn``
    (F, P, R) and ``qmean_gn`` (F, P, R, Q), NaN when ``n_groups == 0``.
    """
    F, Rh, N = fac.shape
    Rp = price.shape[0]
    P = periods.shape[0]
    Q = levels.shape[0] - 1
    K = lags.shape[0]
    W = 1
    for kk in range(K):
        W = max(W, lags[kk] + 1)

    # forward-filled prices of the block
    pff = np.empty((Rp, N))
    last = carry.copy()
    for t in range(Rp):
        for j in range(N):
            v = price[t, j]
            if v == v:
                last[j] = v
            pff[t, j] = last[j]

    labs = np.full((F, W, N), -1, dtype=np.int16)  # ring buffer over the last W rows
    rks = np.full((F, W, N), np.nan)
    fw = np.empty((P, N))
    retok = np.empty(N, dtype=np.bool_)
    retrank = np.empty((P, N))
    vals = np.empty(N)
    idx = np.empty(N, dtype=np.int32)
    idx2 = np.empty(N, dtype=np.int32)
    svals = np.empty(N)  # scratch of the sub-sorts (the factor's order stays in idx / idx2)
    sidx = np.empty(N, dtype=np.int32)
    sidx2 = np.empty(N, dtype=np.int32)
    keys = np.empty(N, dtype=np.uint64)
    keys2 = np.empty(N, dtype=np.uint64)
    hist = np.empty((_NPASS, _NB), dtype=np.int32)
    fv = np.empty(N)
    frk = np.empty(N)
    rv = np.empty(N)
    rr = np.empty(N)
    dv = np.empty(N)
    ta = np.empty(N)
    tb = np.empty(N)
    edges = np.empty(Q + 1)
    qs = np.empty(Q)
    qc = np.empty(Q, dtype=np.int64)
    cnt_t = np.empty(Q + 1, dtype=np.int64)
    cnt_p = np.empty(Q + 1, dtype=np.int64)
    new = np.empty(Q + 1, dtype=np.int64)
    gs = np.empty(max(n_groups, 1))
    gc = np.empty(max(n_groups, 1), dtype=np.int64)

    for lr in range(Rh):
        slot = lr % W
        stats = lr >= halo
        o = lr - halo
        # -- forward returns and the symbols that have all of them -------------------------------
        for j in range(N):
            retok[j] = n_groups == 0 or group[lr, j] >= 0
        for p in range(P):
            ahead = lr + periods[p]
            for j in range(N):
                r = pff[ahead, j] / pff[lr, j] - 1.0 if ahead < Rp else np.nan
                fw[p, j] = r
                if r != r:
                    retok[j] = False
        nret = 0
        for j in range(N):
            nret += 1 if retok[j] else 0
        if stats:
            for p in range(P):
                m = 0
                for j in range(N):
                    if retok[j]:
                        vals[m] = fw[p, j]
                        idx[m] = j
                        m += 1
                order = _argsort(vals, idx, m, idx2, keys, keys2, hist)
                _average_ranks(fw[p], order, m, retrank[p])

        for f in range(F):
            x = fac[f, lr]
            lab = labs[f, slot]
            rkf = rks[f, slot]
            lab[:] = -1
            rkf[:] = np.nan
            n = 0
            nfin = 0
            for j in range(N):
                v = x[j]
                if v - v == 0.0:  # finite
                    nfin += 1
                    if retok[j]:
                        vals[n] = v
                        idx[n] = j
                        n += 1
            order = idx
            if n > 0:
                order = _argsort(vals, idx, n, idx2, keys, keys2, hist)
                for k in range(Q + 1):
                    virt = (n - 1) * levels[k]
                    if virt >= n - 1:
                        e = x[order[n - 1]]
                    else:
                        prev = np.floor(virt)
                        g = virt - prev
                        a = x[order[int(prev)]]
                        b = x[order[int(prev) + 1]]
                        d = b - a
                        e = b - d * (1.0 - g) if g >= 0.5 else a + d * g
                    edges[k] = e
                for k in range(1, Q + 1):
                    if edges[k] == edges[k - 1]:
                        n = 0  # qcut: bin edges must be unique -> the date is dropped
                        break
            if n > 0:
                _average_ranks(x, order, n, rkf)
                c = 0
                for m in range(n):
                    j = order[m]
                    v = x[j]
                    while c <= Q and edges[c] < v:
                        c += 1
                    lab[j] = max(c, 1)
            if not stats:
                continue

            nfinite[f, o] = nfin
            nvalid[f, o] = n
            for m in range(n):
                j = order[m]
                fv[m] = x[j]
                frk[m] = rkf[j]
            for p in range(P):
                for m in range(n):
                    rv[m] = fw[p, order[m]]
                ic[f, p, o] = _pearson(fv, rv, n)
                if n == nret:  # the factor's sample is the returns' sample: ranks known
                    for m in range(n):
                        rr[m] = retrank[p, order[m]]
                else:
                    for m in range(n):
                        svals[m] = rv[m]
                        sidx[m] = m
                    sub = _argsort(svals, sidx, n, sidx2, keys, keys2, hist)
                    _average_ranks(rv, sub, n, rr)
                ric[f, p, o] = _pearson(frk, rr, n)
                # quantile means of (demeaned) forward returns
                mean = 0.0
                if demean and n > 0:
                    s = 0.0
                    for m in range(n):
                        s += rv[m]
                    mean = s / n
                qs[:] = 0.0
                qc[:] = 0
                for m in range(n):
                    q = lab[order[m]] - 1
                    qs[q] += rv[m] - mean
                    qc[q] += 1
                for q in range(Q):
                    qmean[f, p, o, q] = qs[q] / qc[q] if qc[q] > 0 else np.nan
                # group-neutral: returns demeaned within each group
                if n_groups > 0 and n > 0:
                    gs[:] = 0.0
                    gc[:] = 0
                    for m in range(n):
                        gg = group[lr, order[m]]
                        gs[gg] += rv[m]
                        gc[gg] += 1
                    for gg in range(n_groups):
                        gs[gg] = gs[gg] / gc[gg] if gc[gg] > 0 else 0.0
                    for m in range(n):
                        dv[m] = rv[m] - gs[group[lr, order[m]]]
                    ic_gn[f, p, o] = _pearson(fv, dv, n)
                    for m in range(n):
                        svals[m] = dv[m]
                        sidx[m] = m
                    sub = _argsort(svals, sidx, n, sidx2, keys, keys2, hist)
                    _average_ranks(dv, sub, n, rr)
                    ric_gn[f, p, o] = _pearson(frk, rr, n)
                    qs[:] = 0.0
                    for m in range(n):
                        qs[lab[order[m]] - 1] += dv[m]
                    for q in range(Q):
                        qmean_gn[f, p, o, q] = qs[q] / qc[q] if qc[q] > 0 else np.nan
                else:
                    ic_gn[f, p, o] = np.nan
                    ric_gn[f, p, o] = np.nan
                    for q in range(Q):
                        qmean_gn[f, p, o, q] = np.nan
            for q in range(Q):
                qcount[f, o, q] = qc[q] if n > 0 else 0

            # -- turnover and rank autocorrelation against earlier rows ---------------------------
            for kk in range(K):
                L = lags[kk]
                if lr - L < 0:
                    for q in range(Q):
                        turnover[f, kk, o, q] = np.nan
                    autocorr[f, kk, o] = np.nan
                    continue
                plab = labs[f, (lr - L) % W]
                prk = rks[f, (lr - L) % W]
                cnt_t[:] = 0
                cnt_p[:] = 0
                new[:] = 0
                m = 0
                for j in range(N):
                    a = lab[j]
                    b = plab[j]
                    if a > 0:
                        cnt_t[a] += 1
                        if b != a:
                            new[a] += 1
                    if b > 0:
                        cnt_p[b] += 1
                    if a > 0 and b > 0:
                        ta[m] = rkf[j]
                        tb[m] = prk[j]
                        m += 1
                for q in range(Q):
                    ok = cnt_t[q + 1] > 0 and cnt_p[q + 1] > 0
                    turnover[f, kk, o, q] = new[q + 1] / cnt_t[q + 1] if ok else np.nan
                autocorr[f, kk, o] = _pearson(ta, tb, m)
