"""Element-wise CUDA kernels: the twins of ``kernels/cpu/elementwise.py`` (same names, same
``f(*operands, out)`` calls, where an operand is a device array or a Python number).

One thread per cell (2-D grid, ``_jit.launch2d``). Arithmetic (``add`` .. ``pow``, ``neg``,
``abs``, ``minimum``, ``maximum``) and the comparisons run in the operands' dtype, as NumPy's
ufuncs do on the CPU path (float32 stays float32, so results match NumPy's to the last bit for
``+ - * /``); ``log``, ``sqrt``, ``exp`` use CUDA's libm (within 1 ulp of glibc's); ``sign``,
``signed_power`` and the NaN-aware logic compute in float64 like the CPU kernels.

NaN rules (docs/semantics.md): every kernel gives NaN where an operand is NaN (``where``: where
``cond`` is NaN); truth values are 1.0 / 0.0 and any nonzero non-NaN value is true. The domain
edges of ``log``, ``sqrt`` and ``exp`` are spelled out (NaN below 0, -inf at 0, inf on overflow):
a device gives them by itself, the simulator's Python ``math`` would raise instead.
"""
from __future__ import annotations

import math

from ._jit import at, cuda, device, launch2d, operand

__all__ = [
    "LT", "LE", "GT", "GE", "EQ", "NE",
    "add", "sub", "mul", "div", "pow", "neg", "abs", "log", "sqrt", "exp", "minimum", "maximum",
    "lt", "le", "gt", "ge", "eq", "ne", "compare", "logical_and", "logical_or", "logical_not",
    "where", "sign", "signed_power", "mask", "fill_nan",
]

# compare() op codes, as in kernels/cpu/elementwise.py
LT, LE, GT, GE, EQ, NE = 0, 1, 2, 3, 4, 5
# binary arithmetic op codes (internal)
_ADD, _SUB, _MUL, _DIV, _POW, _MIN, _MAX = 0, 1, 2, 3, 4, 5, 6
# unary op codes (internal)
_NEG, _ABS, _LOG, _SQRT, _EXP, _SIGN = 0, 1, 2, 3, 4, 5

_NAN = math.nan
_INF = math.inf
_EXP_MAX = 709.782712893384  # exp overflows float64 above this


@device
def _arith(op, v, w):
    if op == 0:
        return v + w
    if op == 1:
        return v - w
    if op == 2:
        return v * w
    if op == 3:
        return v / w
    if op == 4:
        return v ** w
    nan = v != v or w != w
    if op == 5:
        r = v if v < w else w
    else:
        r = v if v > w else w
    return v + w if nan else r  # NaN of the operand's type where either is NaN


@cuda.jit
def _binary_kernel(x, y, op, out):
    j, t = cuda.grid(2)
    if t < out.shape[0] and j < out.shape[1]:
        out[t, j] = _arith(op, at(x, t, j), at(y, t, j))


@device
def _cmp(op, v, w):
    if op == 0:
        r = v < w
    elif op == 1:
        r = v <= w
    elif op == 2:
        r = v > w
    elif op == 3:
        r = v >= w
    elif op == 4:
        r = v == w
    else:
        r = v != w
    if v != v or w != w:
        return _NAN
    return 1.0 if r else 0.0


@cuda.jit
def _compare_kernel(x, y, op, out):
    j, t = cuda.grid(2)
    if t < out.shape[0] and j < out.shape[1]:
        out[t, j] = _cmp(op, at(x, t, j), at(y, t, j))


@device
def _unary(op, v):
    if op == 0:
        return -v
    if op == 1:
        return math.fabs(v)
    if op == 2:
        if v > 0:
            return math.log(v)
        return -_INF if v == 0 else _NAN  # NaN stays NaN (v == 0 is false)
    if op == 3:
        if v >= 0:
            return math.sqrt(v)
        return _NAN
    if op == 4:
        if v > _EXP_MAX:
            return _INF
        return math.exp(v) if v == v else v
    f = float(v)  # sign
    if f != f:
        return f
    return 1.0 if f > 0.0 else (-1.0 if f < 0.0 else 0.0)


@cuda.jit
def _unary_kernel(x, op, out):
    j, t = cuda.grid(2)
    if t < out.shape[0] and j < out.shape[1]:
        out[t, j] = _unary(op, at(x, t, j))


@cuda.jit
def _logic_kernel(x, y, op, out):
    """op 0: and, 1: or, 2: not (``y`` unused)."""
    j, t = cuda.grid(2)
    if t < out.shape[0] and j < out.shape[1]:
        v = float(at(x, t, j))
        w = float(at(y, t, j)) if op != 2 else 0.0
        if op == 0:
            r = 1.0 if (v != 0.0 and w != 0.0) else 0.0
        elif op == 1:
            r = 1.0 if (v != 0.0 or w != 0.0) else 0.0
        else:
            r = 1.0 if v == 0.0 else 0.0
        out[t, j] = r if (v == v and w == w) else _NAN


@cuda.jit
def _where_kernel(c, a, b, out):
    j, t = cuda.grid(2)
    if t < out.shape[0] and j < out.shape[1]:
        cv = float(at(c, t, j))
        if cv != cv:
            out[t, j] = _NAN
        elif cv != 0.0:
            out[t, j] = at(a, t, j)
        else:
            out[t, j] = at(b, t, j)


@cuda.jit
def _mask_kernel(x, c, out):
    j, t = cuda.grid(2)
    if t < out.shape[0] and j < out.shape[1]:
        cv = float(at(c, t, j))
        out[t, j] = at(x, t, j) if cv == 0.0 else _NAN


@cuda.jit
def _fill_nan_kernel(x, value, out):
    j, t = cuda.grid(2)
    if t < out.shape[0] and j < out.shape[1]:
        v = at(x, t, j)
        out[t, j] = v if v == v else value


@cuda.jit
def _signed_power_kernel(x, a, out):
    j, t = cuda.grid(2)
    if t < out.shape[0] and j < out.shape[1]:
        v = float(at(x, t, j))
        e = float(at(a, t, j))
        if v != v or e != e:
            out[t, j] = _NAN
        elif v == 0.0:
            # NumPy: sign(0) * 0 ** e = 0 for e > 0, 0 * 1 = 0 for e == 0, 0 * inf = NaN for e < 0
            out[t, j] = 0.0 if e >= 0.0 else _NAN
        else:
            s = 1.0 if v > 0.0 else -1.0
            out[t, j] = s * math.fabs(v) ** e


# ------------------------------------------------------------------------------------------------
# Entry points (registry names)
# ------------------------------------------------------------------------------------------------
def _binary(op):
    def fn(x, y, out):
        launch2d(_binary_kernel, out.shape[0], out.shape[1], operand(x, out), operand(y, out), op, out)

    return fn


def _unary_fn(op):
    def fn(x, out):
        launch2d(_unary_kernel, out.shape[0], out.shape[1], operand(x, out), op, out)

    return fn


def _comparison(op):
    def fn(x, y, out):
        compare(x, y, op, out)

    return fn


def compare(x, y, op, out):
    """1.0 / 0.0 for ``x OP y``, NaN where either is NaN (``op``: ``LT`` .. ``NE``)."""
    if not 0 <= op <= 5:
        raise ValueError("compare: op must be 0..5")
    launch2d(_compare_kernel, out.shape[0], out.shape[1], operand(x, out), operand(y, out), op, out)


add, sub, mul, div, pow, minimum, maximum = (_binary(c) for c in (_ADD, _SUB, _MUL, _DIV, _POW, _MIN, _MAX))  # noqa: A001
neg, abs, log, sqrt, exp, sign = (_unary_fn(c) for c in (_NEG, _ABS, _LOG, _SQRT, _EXP, _SIGN))  # noqa: A001
lt, le, gt, ge, eq, ne = (_comparison(c) for c in (LT, LE, GT, GE, EQ, NE))
for _f, _n in zip((add, sub, mul, div, pow, minimum, maximum, neg, abs, log, sqrt, exp, sign, lt, le, gt, ge, eq, ne),
                  ("add", "sub", "mul", "div", "pow", "minimum", "maximum", "neg", "abs", "log", "sqrt", "exp",
                   "sign", "lt", "le", "gt", "ge", "eq", "ne")):
    _f.__name__ = _f.__qualname__ = _n


def logical_and(x, y, out):
    """1.0 where both are nonzero, else 0.0; NaN where either is NaN."""
    launch2d(_logic_kernel, out.shape[0], out.shape[1], operand(x, out), operand(y, out), 0, out)


def logical_or(x, y, out):
    """1.0 where either is nonzero, else 0.0; NaN where either is NaN."""
    launch2d(_logic_kernel, out.shape[0], out.shape[1], operand(x, out), operand(y, out), 1, out)


def logical_not(x, out):
    """1.0 where ``x`` is 0, 0.0 where nonzero, NaN where NaN."""
    xo = operand(x, out)
    launch2d(_logic_kernel, out.shape[0], out.shape[1], xo, xo, 2, out)


def where(cond, a, b, out):
    """``a`` where ``cond`` is nonzero, ``b`` where it is 0, NaN where ``cond`` is NaN."""
    launch2d(_where_kernel, out.shape[0], out.shape[1], operand(cond, out), operand(a, out), operand(b, out), out)


def mask(x, cond, out):
    """``x`` where ``cond`` is 0, NaN where it is nonzero or NaN."""
    launch2d(_mask_kernel, out.shape[0], out.shape[1], operand(x, out), operand(cond, out), out)


def fill_nan(x, value, out):
    """``x`` with NaN replaced by the constant ``value``."""
    launch2d(_fill_nan_kernel, out.shape[0], out.shape[1], operand(x, out), float(value), out)


def signed_power(x, a, out):
    """``sign(x) * |x| ** a``, NaN where ``x`` or ``a`` is NaN (see the CPU kernel)."""
    launch2d(_signed_power_kernel, out.shape[0], out.shape[1], operand(x, out), operand(a, out), out)
