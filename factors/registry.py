"""The operator registry: every operator is defined here and nowhere else.

An :class:`Operator` entry holds the operator's name, its shape (``kind``), its series inputs and
their types, its constant parameters and their checks, how far back it reads (``lookback``), the
name of its chunk kernel, the name of its reference implementation (``factors/references.py``,
the test oracle) and its documentation. The parser, the Python operator API, the planner, the
docs page (``docs/operators.md``) and the parametrised tests all read this table.

Kinds (they decide how the planner schedules an operator, see ``engine/plan.py``):

``elementwise``
    row by row, no history: fused into any stage.
``window``
    reads ``lookback`` earlier rows: fused into a stage whose chunks carry that many halo rows.
``recursive``
    a scan over time (EMA, cumulative sum): state carried from one time chunk to the next.
``cross_section``
    needs every symbol at one time: runs on chunks spanning the whole symbol axis.
"""
from __future__ import annotations

import difflib
import math
import operator as _pyop
from dataclasses import dataclass
from typing import Any, Callable

from .errors import FactorTypeError, Span
from .expr import Factor, Source, lit

__all__ = ["Param", "Operator", "REGISTRY", "get_operator", "find_operator", "operator_names", "operators"]

_REQUIRED = object()


@dataclass(frozen=True)
class Param:
    """A constant parameter of an operator.

    ``check`` is one of ``"window"`` (integer >= 1), ``"periods"`` (integer >= 1), ``"span"``
    (number >= 1), ``"number"`` (any finite number), ``"fraction"`` (0 <= number <= 1),
    ``"flag"`` (0 or 1) and ``"min_periods"`` (integer between 1 and the window; ``None`` means
    equal to the window).
    """

    name: str
    check: str
    default: Any = _REQUIRED

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED


@dataclass(frozen=True)
class Operator:
    """One registry entry. See the module docstring."""

    name: str
    kind: str
    inputs: tuple[str, ...]
    params: tuple[Param, ...]
    kernel: str | None
    reference: str
    doc: str
    example: str
    input_types: tuple[str, ...] = ()
    returns: str = "num"
    symbol: str | None = None
    precedence: int = 0
    assoc: str = "left"
    commutative: bool = False
    fold: Callable | None = None
    kernel_args: Callable[[tuple], tuple] | None = None
    state: str | None = None
    reads_ahead: bool = False  # window operator reading later rows (lead) instead of earlier ones

    # -- shape ------------------------------------------------------------------------------
    def lookback_of(self, params: tuple) -> int:
        """Rows of history this operator reads beyond the current row."""
        if self.kind != "window" or self.reads_ahead:
            return 0
        first = self.params[0]
        if first.check == "window":
            return int(params[0]) - 1
        return int(params[0])  # periods

    def lookahead_of(self, params: tuple) -> int:
        """Rows *after* the current one this operator reads (``lead``); 0 for all others."""
        return int(params[0]) if self.reads_ahead else 0

    def kernel_params(self, params: tuple) -> tuple:
        """Arguments passed to the kernel after the series inputs (before ``out``)."""
        return self.kernel_args(params) if self.kernel_args else tuple(params)

    def types(self) -> tuple[str, ...]:
        return self.input_types or ("num",) * len(self.inputs)

    @property
    def signature(self) -> str:
        parts = list(self.inputs)
        for p in self.params:
            if p.check == "min_periods":
                parts.append(f"{p.name}=window")
            elif p.required:
                parts.append(p.name)
            else:
                parts.append(f"{p.name}={_fmt(p.default)}")
        return f"{self.name}({', '.join(parts)})"

    def format_params(self, params: tuple) -> list[str]:
        out = []
        keyword = False  # once a parameter is skipped or named, the following ones are named
        for p, v in zip(self.params, params):
            if p.check == "min_periods":
                if v != params[0]:
                    out.append(f"min_periods={_fmt(v)}")
                keyword = True
            elif not p.required and v == p.default:
                keyword = True
            else:
                out.append(f"{p.name}={_fmt(v)}" if keyword else _fmt(v))
        return out

    @property
    def reference_function(self) -> Callable:
        from . import references

        return getattr(references, self.reference)

    # -- construction ---------------------------------------------------------------------------
    def build(self, args: tuple, kwargs: dict, span: Span | None = None, source: Source | None = None,
              arg_spans: tuple | None = None) -> Factor:
        """Validate arguments and return the call node (errors name the argument)."""
        formula = source.text if source is not None else None

        def err(msg, where=None, hint=None):
            return FactorTypeError(msg, formula, where if where is not None else span, hint)

        n_in, n_par = len(self.inputs), len(self.params)
        if len(args) > n_in + n_par:
            raise err(f"{self.name}() takes at most {n_in + n_par} arguments ({self.signature}), got {len(args)}")
        if len(args) < n_in:
            raise err(f"{self.name}() needs {n_in} series argument{'s' if n_in > 1 else ''} ({self.signature}), got {len(args)}")
        series = []
        types = self.types()
        for i, (a, want) in enumerate(zip(args[:n_in], types)):
            a_span = arg_spans[i] if arg_spans else None
            if not isinstance(a, Factor):
                a = lit(a, a_span, source)
            got = a.type
            if got != want:
                where = a.span if a.source is source and a.span is not None else a_span
                if self.symbol:
                    what = f"operator {self.symbol!r} needs " + ("numbers" if want == "num" else "conditions")
                    got_text = "a boolean" if want == "num" else "a number"
                    hint = ("turn a condition into a number with where(cond, 1, 0)" if want == "num"
                            else "compare it, e.g. x > 0")
                    raise err(f"{what}, got {got_text} ({a})", where, hint)
                if want == "num":
                    raise err(f"{self.name}() argument {self.inputs[i]!r} must be a number, got a boolean ({a})",
                              where, "turn a condition into a number with where(cond, 1, 0)")
                raise err(f"{self.name}() argument {self.inputs[i]!r} must be a condition (a comparison or & | ~), got a number ({a})",
                          where, "compare it, e.g. x > 0")
            series.append(a)

        given: dict[str, tuple[Any, Span | None]] = {}
        for j, a in enumerate(args[n_in:]):
            given[self.params[j].name] = (a, arg_spans[n_in + j] if arg_spans else None)
        for k, v in kwargs.items():
            v_span = v.span if isinstance(v, Factor) else None
            names = [p.name for p in self.params]
            if k not in names:
                close = difflib.get_close_matches(k, names, 1)
                raise err(f"{self.name}() has no parameter {k!r} ({self.signature})", v_span,
                          f"did you mean {close[0]!r}?" if close else None)
            if k in given:
                raise err(f"{self.name}() got parameter {k!r} twice", v_span)
            given[k] = (v, v_span)

        params = []
        for p in self.params:
            if p.name not in given:
                if p.check == "min_periods":
                    params.append(params[0])
                    continue
                if p.required:
                    raise err(f"{self.name}() is missing parameter {p.name!r} ({self.signature})")
                params.append(p.default)
                continue
            v, v_span = given[p.name]
            params.append(self._check_param(p, v, v_span, params, err))

        node = Factor(self.name, tuple(series), tuple(params), self.returns, span, source)
        if self.fold is not None and all(a.op == "const" for a in series):
            return lit(_fold(self.fold, [a.value for a in series]), span, source)
        return node

    def _check_param(self, p: Param, v: Any, v_span, done: list, err) -> Any:
        if isinstance(v, Factor):
            where = v.span if v.span is not None else v_span
            if v.op != "const":
                raise err(f"{self.name}() parameter {p.name!r} must be a constant number, got the series {v}",
                          where)
            v = v.value
        else:
            where = v_span
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise err(f"{self.name}() parameter {p.name!r} must be a number, got {v!r}", where)
        if p.check in ("window", "periods", "min_periods"):
            what = {"window": "window", "periods": "periods", "min_periods": "min_periods"}[p.check]
            if not (math.isfinite(v) and v == int(v) and v >= 1):
                raise err(f"{self.name}() {what} must be a positive integer, got {_fmt(v)}", where,
                          "windows count rows: use a whole number >= 1")
            v = int(v)
            if p.check == "min_periods" and v > done[0]:
                raise err(f"{self.name}() min_periods={v} exceeds the window {done[0]}", where)
            return v
        if p.check == "span":
            if not (math.isfinite(v) and v >= 1):
                raise err(f"{self.name}() span must be a number >= 1, got {_fmt(v)}", where)
            return v
        if p.check == "fraction":
            if not (math.isfinite(v) and 0.0 <= v <= 1.0):
                raise err(f"{self.name}() parameter {p.name!r} must be between 0 and 1, got {_fmt(v)}", where)
            return v
        if p.check == "flag":
            if v not in (0, 1):
                raise err(f"{self.name}() parameter {p.name!r} must be 0 or 1, got {_fmt(v)}", where)
            return int(v)
        if p.check == "number":
            if not math.isfinite(v):
                raise err(f"{self.name}() parameter {p.name!r} must be finite, got {v!r}", where)
            return v
        raise AssertionError(p.check)


def _fmt(v) -> str:
    from .expr import _format_number

    return _format_number(v) if isinstance(v, (int, float)) else repr(v)


def _fold(fn, values):
    import numpy as np

    with np.errstate(all="ignore"):
        out = fn(*[np.float64(v) for v in values])
    out = float(out)
    return int(out) if out.is_integer() and abs(out) < 2**53 and all(isinstance(v, int) for v in values) else out


# ----------------------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------------------
REGISTRY: dict[str, Operator] = {}


def _register(op: Operator) -> Operator:
    assert op.name not in REGISTRY, op.name
    REGISTRY[op.name] = op
    return op


_X = ("x",)
_WINDOW = (Param("window", "window"), Param("min_periods", "min_periods", None))


def _infix(name, symbol, prec, doc, example, fold=None, returns="num", types=("num", "num"),
           commutative=False, assoc="left", kernel=None, reference=None):
    _register(Operator(name, "elementwise", ("x", "y"), (), kernel or f"elementwise.{name}", reference or name,
                       doc, example, input_types=types, returns=returns, symbol=symbol, precedence=prec,
                       assoc=assoc, commutative=commutative, fold=fold))


# Element-wise arithmetic ------------------------------------------------------------------------
_infix("add", "+", 50, "Sum ``x + y`` (NumPy semantics).", "close + open", _pyop.add, commutative=True)
_infix("sub", "-", 50, "Difference ``x - y``.", "close - open", _pyop.sub)
_infix("mul", "*", 60, "Product ``x * y``.", "close * volume", _pyop.mul, commutative=True)
_infix("div", "/", 60, "Quotient ``x / y``; division by zero gives ±inf or NaN as NumPy does, never an error.",
       "close / open", _pyop.truediv)
_infix("pow", "**", 80, "Power ``x ** y`` (NumPy ``power``; right-associative).", "close ** 2", _pyop.pow,
       assoc="right", reference="power")
_register(Operator("neg", "elementwise", _X, (), "elementwise.neg", "neg", "Negation ``-x``.", "-close",
                   symbol="-", precedence=70, fold=_pyop.neg))

# Comparisons and logic: 1.0 true, 0.0 false, NaN where an operand is NaN ------------------------
for _name, _sym, _doc in (("lt", "<", "less than"), ("le", "<=", "less than or equal"),
                          ("gt", ">", "greater than"), ("ge", ">=", "greater than or equal"),
                          ("eq", "==", "equal"), ("ne", "!=", "not equal")):
    _infix(_name, _sym, 40, f"Comparison ``x {_sym} y`` ({_doc}): a condition, NaN where x or y is NaN.",
           f"close {_sym} open", returns="bool", commutative=_name in ("eq", "ne"), assoc="none")
_infix("and", "&", 20, "Logical and of two conditions (NaN if either is NaN).", "(close > open) & (volume > 0)",
       returns="bool", types=("bool", "bool"), commutative=True, reference="and_", kernel="elementwise.logical_and")
_infix("or", "|", 10, "Logical or of two conditions (NaN if either is NaN).", "(close > open) | (volume > 0)",
       returns="bool", types=("bool", "bool"), commutative=True, reference="or_", kernel="elementwise.logical_or")
_register(Operator("not", "elementwise", _X, (), "elementwise.logical_not", "not_",
                   "Logical not of a condition (NaN stays NaN).", "~(close > open)",
                   input_types=("bool",), returns="bool", symbol="~", precedence=30))

# Element-wise functions -----------------------------------------------------------------------------
for _name, _doc in (("abs", "Absolute value."), ("log", "Natural logarithm (NaN for x < 0, -inf at 0)."),
                    ("sqrt", "Square root (NaN for x < 0)."), ("exp", "Exponential."),
                    ("sign", "Sign: -1, 0 or 1 (NaN stays NaN).")):
    _register(Operator(_name, "elementwise", _X, (), f"elementwise.{_name}", _name, _doc, f"{_name}(close)"))
_register(Operator("power", "elementwise", ("x", "a"), (), "elementwise.pow", "power",
                   "``x`` to the power ``a`` (a number or a series).", "power(close, 2)"))
_register(Operator("signed_power", "elementwise", ("x", "a"), (), "elementwise.signed_power", "signed_power",
                   "``sign(x) * abs(x) ** a``.", "signed_power(returns, 2)"))
_register(Operator("min", "elementwise", ("x", "y"), (), "elementwise.minimum", "min",
                   "Element-wise minimum of two series (NaN if either is NaN).", "min(open, close)",
                   commutative=True))
_register(Operator("max", "elementwise", ("x", "y"), (), "elementwise.maximum", "max",
                   "Element-wise maximum of two series (NaN if either is NaN).", "max(open, close)",
                   commutative=True))
_register(Operator("where", "elementwise", ("cond", "a", "b"), (), "elementwise.where", "where",
                   "``a`` where ``cond`` holds, else ``b``; NaN where ``cond`` is NaN.",
                   "where(close > open, close, open)", input_types=("bool", "num", "num")))

# Time-series window operators ----------------------------------------------------------------------
_WINDOW_DOCS = {
    "ts_sum": "Sum of the last ``window`` rows.",
    "ts_mean": "Mean of the last ``window`` rows.",
    "ts_std": "Standard deviation (ddof=1) of the last ``window`` rows.",
    "ts_var": "Variance (ddof=1) of the last ``window`` rows.",
    "ts_min": "Minimum of the last ``window`` rows.",
    "ts_max": "Maximum of the last ``window`` rows.",
    "ts_argmin": "1-based position of the minimum, counted from the oldest row of the window (ties: oldest).",
    "ts_argmax": "1-based position of the maximum, counted from the oldest row of the window (ties: oldest).",
    "ts_rank": "Percentile rank of the current value within its window, ties averaged (pandas ``rolling.rank(pct=True)``).",
    "ts_median": "Median of the last ``window`` rows.",
    "ts_prod": "Product of the last ``window`` rows.",
    "ts_skew": "Bias-corrected sample skewness of the last ``window`` rows (pandas ``rolling.skew``).",
    "ts_kurt": "Bias-corrected excess kurtosis of the last ``window`` rows (pandas ``rolling.kurt``).",
    "decay_linear": "Linearly decaying weighted mean: weights ``1..window`` from oldest to newest row, normalised.",
}
for _name, _doc in _WINDOW_DOCS.items():
    _register(Operator(_name, "window", _X, _WINDOW, f"rolling.{_name}", _name,
                       _doc + " NaN values are skipped; NaN while fewer than ``min_periods`` (default: window) valid values.",
                       f"{_name}(close, 20)"))
for _name, _doc in (("ts_corr", "Pearson correlation of ``x`` and ``y`` over the last ``window`` rows (pairwise complete)."),
                    ("ts_cov", "Covariance (ddof=1) of ``x`` and ``y`` over the last ``window`` rows (pairwise complete).")):
    _register(Operator(_name, "window", ("x", "y"), _WINDOW, f"rolling.{_name}", _name,
                       _doc + " NaN while fewer than ``min_periods`` (default: window) complete pairs.",
                       f"{_name}(close, volume, 20)"))
_register(Operator("delay", "window", _X, (Param("periods", "periods"),), "rolling.delay", "delay",
                   "Value ``periods`` rows earlier (NaN for the first rows).", "delay(close, 1)"))
_register(Operator("delta", "window", _X, (Param("periods", "periods"),), "rolling.delta", "delta",
                   "``x - delay(x, periods)``.", "delta(close, 1)"))

_register(Operator("lead", "window", _X, (Param("periods", "periods"),), "rolling.delay", "lead",
                   "Value ``periods`` rows *later* (NaN for the last rows): reads the future, for labels "
                   "such as forward returns (Qlib ``Ref(x, -n)``).", "lead(close, 1) / close - 1",
                   kernel_args=lambda p: (-p[0],), reads_ahead=True))
_register(Operator("ts_count", "window", _X, (Param("window", "window"),), "rolling.ts_count", "ts_count",
                   "Number of valid (non-NaN) values among the last ``window`` rows; rows before the start of "
                   "the series count as missing, so it is 0, 1, ... there and never NaN.", "ts_count(close, 20)"))
_register(Operator("ts_quantile", "window", _X,
                   (Param("window", "window"), Param("q", "fraction"), Param("min_periods", "min_periods", None)),
                   "rolling.ts_quantile", "ts_quantile",
                   "``q`` quantile of the last ``window`` rows, linear interpolation between order statistics "
                   "(pandas ``rolling.quantile(q)``). NaN values are skipped; NaN while fewer than "
                   "``min_periods`` (default: window) valid values.", "ts_quantile(close, 20, 0.8)"))
_register(Operator("ts_mad", "window", _X, _WINDOW, "rolling.ts_mad", "ts_mad",
                   "Mean absolute deviation about the window mean, ``mean(|x - mean(x)|)`` of the last ``window`` "
                   "rows. NaN values are skipped; NaN while fewer than ``min_periods`` (default: window) valid values.",
                   "ts_mad(close, 20)"))
_register(Operator("ts_wma", "window", _X, _WINDOW + (Param("compat", "flag", 0),), "rolling.ts_wma", "ts_wma",
                   "Weighted mean with weights ``1..n`` over the ``n`` rows the window has (``n = window`` once the "
                   "series is long enough), newest heaviest (Qlib ``WMA``; equals ``decay_linear`` on full windows). "
                   "NaN values are skipped and the weights renormalised; ``compat=1`` reproduces Qlib 0.9's "
                   "normalisation bug (microsoft/qlib#1993).", "ts_wma(close, 20)",
                   kernel_args=lambda p: (p[0], p[1], bool(p[2]))))
for _name, _doc in (("ts_slope", "Slope of the least-squares line of the last ``window`` rows against their row "
                                 "positions (Qlib ``Slope``)."),
                    ("ts_rsquare", "R² of the least-squares line of the last ``window`` rows against their row "
                                   "positions (Qlib ``Rsquare``); NaN for a constant window."),
                    ("ts_resid", "Residual of the current row from the least-squares line of the last ``window`` "
                                 "rows against their row positions (Qlib ``Resi``).")):
    _register(Operator(_name, "window", _X, _WINDOW, f"regression.{_name}", _name,
                       _doc + " NaN values are skipped (a value keeps its row's position); NaN while fewer than "
                       "``min_periods`` (default: window) valid values, and with fewer than two.",
                       f"{_name}(close, 20)"))
_register(Operator("mask", "elementwise", ("x", "cond"), (), "elementwise.mask", "mask",
                   "``x`` where ``cond`` is false, NaN where it holds or is NaN (pandas ``Series.mask``).",
                   "mask(ts_corr(close, volume, 20), ts_std(volume, 20) <= 1e-5)", input_types=("num", "bool")))
_register(Operator("fill_nan", "elementwise", ("x",), (Param("value", "number"),), "elementwise.fill_nan", "fill_nan",
                   "``x`` with NaN replaced by the constant ``value``.", "fill_nan(volume, 0)"))

# Recursive operators ---------------------------------------------------------------------------------
_register(Operator("ema", "recursive", _X, (Param("span", "span"),), "recursive.ewm_mean", "ema",
                   "Exponential moving average, alpha = 2/(span+1), y0 = first valid value "
                   "(pandas ``ewm(span, adjust=False).mean()``); exact across chunks.",
                   "ema(close, 12)", kernel_args=lambda p: (2.0 / (p[0] + 1.0), False), state="recursive.ewm_init_state"))
_register(Operator("ewma", "recursive", _X, (Param("span", "span"),), "recursive.ewm_mean", "ewma",
                   "Exponentially weighted mean with adjusted weights (pandas ``ewm(span, adjust=True).mean()``).",
                   "ewma(close, 12)", kernel_args=lambda p: (2.0 / (p[0] + 1.0), True), state="recursive.ewm_init_state"))
_register(Operator("cumsum", "recursive", _X, (), "recursive.cumsum", "cumsum",
                   "Cumulative sum of valid values; NaN rows stay NaN (pandas ``cumsum``).", "cumsum(volume)",
                   state="recursive.cumsum_init_state"))

# Cross-sectional operators ---------------------------------------------------------------------------
_register(Operator("cs_rank", "cross_section", _X, (), "cross_section.cs_rank", "cs_rank",
                   "Percentile rank across symbols at each time, in (0, 1], ties averaged, NaN excluded.",
                   "cs_rank(close / open)"))
_register(Operator("cs_zscore", "cross_section", _X, (), "cross_section.cs_zscore", "cs_zscore",
                   "``(x - mean) / std`` across symbols at each time (ddof=1).", "cs_zscore(volume)"))
_register(Operator("cs_demean", "cross_section", _X, (), "cross_section.cs_demean", "cs_demean",
                   "``x - mean`` across symbols at each time.", "cs_demean(close / open)"))
_register(Operator("cs_scale", "cross_section", _X, (Param("scale", "number", 1.0),), "cross_section.cs_scale",
                   "cs_scale", "``x * scale / sum(abs(x))`` across symbols at each time.", "cs_scale(close - open)"))
_register(Operator("cs_neutralize", "cross_section", ("x", "group"), (), "cross_section.cs_neutralize",
                   "cs_neutralize",
                   "``x`` minus its mean over the symbols of the same group at each time (group codes: any numbers, "
                   "e.g. an ``industry`` field); NaN where ``x`` or the group code is NaN (WorldQuant ``indneutralize``).",
                   "cs_neutralize(close / delay(close, 1) - 1, industry)"))


# ----------------------------------------------------------------------------------------------
# Lookup
# ----------------------------------------------------------------------------------------------
_INTERNAL = {"add", "sub", "mul", "div", "pow", "neg", "lt", "le", "gt", "ge", "eq", "ne", "and", "or", "not"}


def get_operator(name: str) -> Operator:
    """The registry entry called ``name`` (KeyError if none)."""
    return REGISTRY[name]


def find_operator(name: str) -> Operator | None:
    """The registry entry for a method/function name, or None."""
    return REGISTRY.get(name)


def operator_names(include_infix: bool = False) -> list[str]:
    """Names of the operators callable as functions (and, optionally, the infix ones)."""
    return sorted(n for n in REGISTRY if include_infix or n not in _INTERNAL)


def operators() -> dict[str, Operator]:
    """A copy of the registry: name -> :class:`Operator`.

    Examples
    --------
    >>> import factorflow as ff
    >>> op = ff.operators()["ts_mean"]
    >>> op.kind, op.signature, op.lookback_of((20, 20))
    ('window', 'ts_mean(x, window, min_periods=window)', 19)
    """
    return dict(REGISTRY)
