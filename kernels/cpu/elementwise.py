"""Element-wise kernels that NumPy does not give directly with factorflow's NaN rules.

Semantics: docs/semantics.md, "Element-wise operators". All operands are 2-D arrays of the
output's shape (the engine broadcasts scalars before calling these, or uses NumPy for plain
arithmetic); any dtype mix of float32 / float64, computed in float64 and stored in ``out``'s dtype.

NaN propagates: every kernel gives NaN where any operand is NaN (for ``where``: where ``cond`` is
NaN, or where the selected branch is NaN). Truth values are 1.0 / 0.0; as inputs any nonzero
non-NaN value is true (so ±inf are true).

The loops are branch-free selects over row views so LLVM vectorises them (except ``signed_power``,
whose ``pow`` call is scalar).
"""
from __future__ import annotations

import numpy as np

from ._jit import kernel

__all__ = [
    "LT", "LE", "GT", "GE", "EQ", "NE",
    "sign", "signed_power", "compare", "logical_and", "logical_or", "logical_not", "where", "fill_nan", "mask",
]

# compare() op codes
LT, LE, GT, GE, EQ, NE = 0, 1, 2, 3, 4, 5


@kernel
def sign(x, out):
    """-1.0 / 0.0 / 1.0 by the sign of ``x`` (NumPy ``sign``): NaN -> NaN, ±0 -> 0.0."""
    for t in range(x.shape[0]):
        xt = x[t]
        o = out[t]
        for j in range(xt.shape[0]):
            v = np.float64(xt[j])
            s = 1.0 if v > 0.0 else (-1.0 if v < 0.0 else 0.0)
            o[j] = s if v == v else v


@kernel
def signed_power(x, a, out):
    """``sign(x) * |x| ** a`` (element-wise exponent ``a``), NaN where ``x`` or ``a`` is NaN.

    Otherwise exactly the NumPy expression ``np.sign(x) * np.abs(x) ** a``: ``x = 0`` gives 0 for
    ``a >= 0`` and 0 * inf = NaN for ``a < 0``. NaN propagation for ``a`` differs from that
    expression only at ``|x| = 1``, where ``pow(1, NaN)`` would give 1.
    """
    for t in range(x.shape[0]):
        xt = x[t]
        at = a[t]
        o = out[t]
        for j in range(xt.shape[0]):
            v = np.float64(xt[j])
            e = np.float64(at[j])
            s = 1.0 if v > 0.0 else (-1.0 if v < 0.0 else 0.0)
            r = s * np.abs(v) ** e
            o[j] = r if (v == v and e == e) else np.nan


@kernel(inline="always")
def _cmp_row(xt, yt, o, op):
    nan = np.nan
    n = xt.shape[0]
    if op == 0:
        for j in range(n):
            v = np.float64(xt[j])
            w = np.float64(yt[j])
            r = 1.0 if v < w else 0.0
            o[j] = r if (v == v and w == w) else nan
    elif op == 1:
        for j in range(n):
            v = np.float64(xt[j])
            w = np.float64(yt[j])
            r = 1.0 if v <= w else 0.0
            o[j] = r if (v == v and w == w) else nan
    elif op == 2:
        for j in range(n):
            v = np.float64(xt[j])
            w = np.float64(yt[j])
            r = 1.0 if v > w else 0.0
            o[j] = r if (v == v and w == w) else nan
    elif op == 3:
        for j in range(n):
            v = np.float64(xt[j])
            w = np.float64(yt[j])
            r = 1.0 if v >= w else 0.0
            o[j] = r if (v == v and w == w) else nan
    elif op == 4:
        for j in range(n):
            v = np.float64(xt[j])
            w = np.float64(yt[j])
            r = 1.0 if v == w else 0.0
            o[j] = r if (v == v and w == w) else nan
    else:
        for j in range(n):
            v = np.float64(xt[j])
            w = np.float64(yt[j])
            r = 1.0 if v != w else 0.0
            o[j] = r if (v == v and w == w) else nan


@kernel
def compare(x, y, op, out):
    """1.0 / 0.0 for ``x OP y``, NaN where either is NaN. ``op``: 0 ``<``, 1 ``<=``, 2 ``>``,
    3 ``>=``, 4 ``==``, 5 ``!=`` (the module constants ``LT`` .. ``NE``)."""
    if op < 0 or op > 5:
        raise ValueError("compare: op must be 0..5")
    for t in range(x.shape[0]):
        _cmp_row(x[t], y[t], out[t], op)


@kernel
def logical_and(x, y, out):
    """1.0 where both are nonzero, else 0.0; NaN where either is NaN."""
    for t in range(x.shape[0]):
        xt = x[t]
        yt = y[t]
        o = out[t]
        for j in range(xt.shape[0]):
            v = np.float64(xt[j])
            w = np.float64(yt[j])
            r = 1.0 if (v != 0.0 and w != 0.0) else 0.0
            o[j] = r if (v == v and w == w) else np.nan


@kernel
def logical_or(x, y, out):
    """1.0 where either is nonzero, else 0.0; NaN where either is NaN."""
    for t in range(x.shape[0]):
        xt = x[t]
        yt = y[t]
        o = out[t]
        for j in range(xt.shape[0]):
            v = np.float64(xt[j])
            w = np.float64(yt[j])
            r = 1.0 if (v != 0.0 or w != 0.0) else 0.0
            o[j] = r if (v == v and w == w) else np.nan


@kernel
def logical_not(x, out):
    """1.0 where ``x`` is 0, 0.0 where nonzero, NaN where NaN."""
    for t in range(x.shape[0]):
        xt = x[t]
        o = out[t]
        for j in range(xt.shape[0]):
            v = np.float64(xt[j])
            r = 1.0 if v == 0.0 else 0.0
            o[j] = r if v == v else v


@kernel
def where(cond, a, b, out):
    """``a`` where ``cond`` is nonzero, ``b`` where it is 0, NaN where ``cond`` is NaN."""
    for t in range(cond.shape[0]):
        ct = cond[t]
        at = a[t]
        bt = b[t]
        o = out[t]
        for j in range(ct.shape[0]):
            c = np.float64(ct[j])
            r = np.float64(at[j]) if c != 0.0 else np.float64(bt[j])
            o[j] = r if c == c else np.nan


@kernel
def _mask(x, cond, out):
    for t in range(x.shape[0]):
        xt = x[t]
        ct = cond[t]
        o = out[t]
        for j in range(xt.shape[0]):
            c = np.float64(ct[j])
            o[j] = xt[j] if c == 0.0 else np.nan


@kernel
def _fill_nan(x, value, out):
    for t in range(x.shape[0]):
        xt = x[t]
        o = out[t]
        for j in range(xt.shape[0]):
            v = xt[j]
            o[j] = v if v == v else value


# ------------------------------------------------------------------------------------------------
# Engine entry points: ``f(*operands, out)`` where an operand may be a Python scalar (a constant
# of the formula). Plain arithmetic and math functions are NumPy ufuncs writing into ``out`` (one
# pass, no temporaries, NumPy's IEEE semantics); the NaN-aware logic above gets scalars
# broadcast to read-only stride-0 views (no allocation).
# ------------------------------------------------------------------------------------------------
def _full(v, out):
    if isinstance(v, np.ndarray):
        return v
    return np.broadcast_to(np.asarray(v, dtype=out.dtype), out.shape)


def add(x, y, out):
    np.add(x, y, out=out)


def sub(x, y, out):
    np.subtract(x, y, out=out)


def mul(x, y, out):
    np.multiply(x, y, out=out)


def div(x, y, out):
    np.divide(x, y, out=out)


def pow(x, y, out):  # noqa: A001 - the registry's name for ``**`` and power()
    np.power(x, y, out=out)


def neg(x, out):
    np.negative(x, out=out)


def abs(x, out):  # noqa: A001
    np.abs(x, out=out)


def log(x, out):
    np.log(x, out=out)


def sqrt(x, out):
    np.sqrt(x, out=out)


def exp(x, out):
    np.exp(x, out=out)


def minimum(x, y, out):
    np.minimum(x, y, out=out)


def maximum(x, y, out):
    np.maximum(x, y, out=out)


def _comparison(code):
    def fn(x, y, out):
        compare(_full(x, out), _full(y, out), code, out)

    return fn


lt, le, gt, ge, eq, ne = (_comparison(c) for c in (LT, LE, GT, GE, EQ, NE))
for _f, _n in zip((lt, le, gt, ge, eq, ne), ("lt", "le", "gt", "ge", "eq", "ne")):
    _f.__name__ = _f.__qualname__ = _n

_sign_kernel = sign
_signed_power_kernel = signed_power
_where_kernel = where


def sign(x, out):  # noqa: F811 - scalar-tolerant wrapper of the kernel above
    _sign_kernel(_full(x, out), out)


def signed_power(x, a, out):  # noqa: F811
    _signed_power_kernel(_full(x, out), _full(a, out), out)


def where(cond, a, b, out):  # noqa: F811
    _where_kernel(_full(cond, out), _full(a, out), _full(b, out), out)


def mask(x, cond, out):
    """``x`` where ``cond`` is 0, NaN where it is nonzero or NaN."""
    _mask(_full(x, out), _full(cond, out), out)


def fill_nan(x, value, out):
    """``x`` with NaN replaced by the constant ``value``."""
    if isinstance(x, np.ndarray):
        _fill_nan(x, value, out)
    else:
        out[...] = value if x != x else x
