"""The ``qlib`` dialect: Qlib 0.9 expression syntax with Qlib's semantics.

Formulas are written as in Qlib's ``Alpha158``/``Alpha360`` handlers (``Mean($close, 5)/$close``,
``Corr($close, Log($volume+1), 20)``) and mean what Qlib computes, mapped onto registry operators:

* fields are ``$name``; operators and precedence are Python's (Qlib builds expressions with
  Python operator overloading): comparisons bind loosest, then ``|``, ``&``, ``+ -``, ``* /``,
  unary minus, ``**``;
* every rolling operator uses ``min_periods=1`` (a result as soon as one valid value is in the
  window; ``Std``/``Var``/``Corr``/``Cov`` need two, ``Skew`` three, ``Kurt`` four);
* comparisons are numbers: 1 where true, 0 where false *and where an operand is NaN* (NumPy
  compares NaN as false, so ``NaN != x`` is 1), so ``Mean($close>Ref($close,1), 5)`` counts up
  days;
* ``Corr`` and ``Rsquare`` are NaN where a rolling standard deviation of an input is within
  2e-5 of 0 (Qlib masks them there);
* ``EMA(x, N)``: pandas ``ewm(span=N)`` (adjusted) for ``N >= 1``, ``ewm(alpha=N)`` for
  ``0 < N < 1``;
* ``Ref(x, -N)`` reads N rows ahead (``lead``), for labels.

The dialect ``qlib-compat`` is the same except where Qlib 0.9 has known defects, which it
reproduces: ``WMA``'s normalisation (microsoft/qlib#1993) and ``IdxMax``/``IdxMin`` on a window
holding NaN (``np.argmax`` returns the first NaN's position). The ``qlib`` dialect computes the
correct weighted mean and skips NaN. ``docs/dialects.md`` lists every difference from the native dialect.

Examples
--------
>>> import factorflow as ff
>>> ff.factor("Mean($close, 5)/$close", dialect="qlib")
<Factor ts_mean(close, 5, min_periods=1) / close>
>>> ff.factor("Ref($close, -2)/Ref($close, -1) - 1", dialect="qlib").lookahead
2
"""
from __future__ import annotations

import math
import re

from .dialects import Dialect, register_dialect
from .errors import FactorSyntaxError, FactorTypeError
from .expr import Factor, Source, lit
from .registry import REGISTRY, get_operator

__all__ = ["QlibDialect", "QLIB_OPERATORS"]

_NAME = re.compile(r"\$?[A-Za-z_][A-Za-z_0-9]*")

# Qlib's default tolerance for "this rolling std is zero" in Corr and Rsquare (np.isclose atol)
STD_ZERO_ATOL = 2e-5

# Qlib operator -> (min number of arguments, max, description used in errors)
_ROLLING = {"Mean": "ts_mean", "Sum": "ts_sum", "Std": "ts_std", "Var": "ts_var", "Skew": "ts_skew",
            "Kurt": "ts_kurt", "Max": "ts_max", "Min": "ts_min", "Med": "ts_median", "Mad": "ts_mad",
            "Rank": "ts_rank", "IdxMax": "ts_argmax", "IdxMin": "ts_argmin", "Slope": "ts_slope",
            "Rsquare": "ts_rsquare", "Resi": "ts_resid"}
_PAIR_ROLLING = {"Corr": "ts_corr", "Cov": "ts_cov"}
_ELEM = {"Abs": "abs", "Log": "log", "Sign": "sign"}
_CMP = {"Gt": ">", "Ge": ">=", "Lt": "<", "Le": "<=", "Eq": "==", "Ne": "!="}
_CMP_NAMES = {">": "gt", ">=": "ge", "<": "lt", "<=": "le", "==": "eq", "!=": "ne"}
_MIN_WINDOW = {"Skew": 3, "Kurt": 5}  # Qlib raises below these
_UNSUPPORTED = {
    "Mask": "Mask reads another instrument's series, which a (time x symbol) panel formula cannot",
    "ChangeInstrument": "ChangeInstrument reads another instrument's series, which a panel formula cannot",
    "TResample": "TResample changes the time axis; build the panel at the frequency you need (store.bars)",
}

QLIB_OPERATORS = tuple(sorted(
    list(_ROLLING) + list(_PAIR_ROLLING) + list(_ELEM) + list(_CMP)
    + ["Ref", "Delta", "Count", "Quantile", "WMA", "EMA", "Greater", "Less", "And", "Or", "Not", "If",
       "Power", "Add", "Sub", "Mul", "Div"]
))


def spellings() -> dict[str, list[str]]:
    """Native operator name -> its Qlib spellings (for the operator reference)."""
    out: dict[str, list[str]] = {}
    for q, native in {**_ROLLING, **_PAIR_ROLLING}.items():
        out.setdefault(native, []).append(f"{q}(..., N)")
    for q, native in _ELEM.items():
        out.setdefault(native, []).append(f"{q}(x)")
    extra = {"delay": "Ref(x, N)", "lead": "Ref(x, -N)", "delta": "Delta(x, N)", "ts_count": "Count(x, N)",
             "ts_quantile": "Quantile(x, N, q)", "ts_wma": "WMA(x, N)", "ewma": "EMA(x, N)", "max": "Greater(x, y)",
             "min": "Less(x, y)", "where": "If(c, x, y)", "pow": "Power(x, y)", "gt": "Gt(x, y)", "ge": "Ge(x, y)",
             "lt": "Lt(x, y)", "le": "Le(x, y)", "eq": "Eq(x, y)", "ne": "Ne(x, y)", "and": "And(x, y)",
             "or": "Or(x, y)", "not": "Not(x)", "add": "Add(x, y)", "sub": "Sub(x, y)", "mul": "Mul(x, y)",
             "div": "Div(x, y)"}
    for native, q in extra.items():
        out.setdefault(native, []).append(q)
    return out


class QlibDialect(Dialect):
    """Qlib expression syntax and semantics (see the module docstring)."""

    binary_levels = (
        (("<", "<=", ">", ">=", "==", "!="), "none"),
        (("|",), "left"),
        (("&",), "left"),
        (("+", "-"), "left"),
        (("*", "/"), "left"),
    )
    unary_ops = ("-", "+")
    power_ops = ("**",)
    operator_tokens = ("**", "<=", ">=", "==", "!=", "<", ">", "+", "-", "*", "/", "&", "|", "(", ")", ",")
    name_pattern = _NAME
    and_symbol = "&"
    binary_names = {"+": "add", "-": "sub", "*": "mul", "/": "div", "**": "pow"}
    unary_names = {"-": "neg"}

    def __init__(self, compat: bool = False):
        self.compat = compat
        self.name = "qlib-compat" if compat else "qlib"

    def function_names(self) -> list[str]:
        return list(QLIB_OPERATORS)

    # -- leaves -----------------------------------------------------------------------------------
    def field_node(self, tok, source: Source) -> Factor:
        text = tok.text
        if not text.startswith("$"):
            hint = f"fields are written ${text} in the qlib dialect"
            if text in REGISTRY or text.lower() in ("nan", "inf"):
                hint = f"{text!r} is not a Qlib name; " + hint
            raise FactorSyntaxError(f"unknown name {text!r}", source.text, tok.span, hint)
        return Factor("field", (), (text[1:],), "num", tok.span, source)

    # -- operators ---------------------------------------------------------------------------------
    def binary(self, op_text, left, right, span, source, tok=None) -> Factor:
        if op_text in _CMP_NAMES:
            return self._compare(op_text, left, right, span, source)
        if op_text in ("&", "|"):
            return self._logic(op_text, left, right, span, source)
        return super().binary(op_text, left, right, span, source, tok)

    def _build(self, name, args, at, source, arg_spans=None, **params) -> Factor:
        return get_operator(name).build(tuple(args), params, at, source, arg_spans)

    def _as_number(self, cond: Factor, span, source, nan_is=0) -> Factor:
        """A condition as Qlib has it: 1.0 / 0.0, a NaN operand giving ``nan_is``."""
        n = self._build("where", (cond, lit(1, span, source), lit(0, span, source)), span, source)
        return self._build("fill_nan", (n,), span, source, value=nan_is)

    def _compare(self, op_text, left, right, span, source) -> Factor:
        c = self._build(_CMP_NAMES[op_text], (left, right), span, source)
        # NumPy/pandas: every comparison with NaN is false, so NaN != x is true
        return self._as_number(c, span, source, nan_is=1 if op_text == "!=" else 0)

    def _fill(self, x: Factor, value, span, source) -> Factor:
        """``fill_nan(x, value)``, skipped when ``x`` is already NaN-free (a filled comparison)."""
        if isinstance(x, Factor) and x.op == "fill_nan":
            return x
        return self._build("fill_nan", (x,), span, source, value=value)

    def _truthy(self, x: Factor, span, source) -> Factor:
        """``x != 0`` with NaN counted as false (Qlib's operands here are 0/1 comparisons)."""
        return self._build("ne", (self._fill(x, 0, span, source), lit(0, span, source)), span, source)

    def _logic(self, op_text, left, right, span, source) -> Factor:
        c = self._build("and" if op_text == "&" else "or",
                        (self._truthy(left, span, source), self._truthy(right, span, source)), span, source)
        return self._as_number(c, span, source)

    # -- calls -------------------------------------------------------------------------------------
    def call(self, name_tok, args, kwargs, span, arg_spans, source) -> Factor:
        name = name_tok.text
        text = source.text

        def err(msg, where=None, hint=None):
            return FactorTypeError(msg, text, where if where is not None else span, hint)

        if kwargs:
            k = next(iter(kwargs))
            raise err(f"{name}() takes no keyword arguments (Qlib operators are positional)", kwargs[k].span)
        if name in _UNSUPPORTED:
            raise err(f"{name} is not supported", name_tok.span, _UNSUPPORTED[name])
        if name not in QLIB_OPERATORS:
            raise self.unknown_function(name_tok, source)

        def need(n_min, n_max, sig):
            if not n_min <= len(args) <= n_max:
                raise err(f"{name}() takes {sig}, got {len(args)} argument{'s' if len(args) != 1 else ''}")

        def window(i, minimum=1):
            a = args[i]
            w = arg_spans[i]
            if not isinstance(a, Factor) or a.op != "const":
                raise err(f"{name}() window N must be a constant integer, got {a}", w)
            v = a.value
            if v == 0:
                raise err(f"{name}() with N=0 (Qlib's expanding window) is not supported", w,
                          "give a window length; a window covering the whole panel with min_periods=1 is the same")
            if not (math.isfinite(v) and v == int(v) and v >= minimum):
                what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
                raise err(f"{name}() window N must be {what}, got {a}", w,
                          "Qlib raises here too" if minimum > 1 else None)
            return int(v)

        if name in _ROLLING:
            need(2, 2, "(feature, N)")
            n = window(1, _MIN_WINDOW.get(name, 1))
            if self.compat and name in ("IdxMax", "IdxMin"):
                return self._argext_compat(_ROLLING[name], args[0], n, span, source)
            node = self._build(_ROLLING[name], (args[0],), span, source, arg_spans[:1], window=n, min_periods=1)
            if name == "Rsquare":
                node = self._mask_flat(node, (args[0],), n, span, source)
            return node
        if name in _PAIR_ROLLING:
            need(3, 3, "(feature_left, feature_right, N)")
            n = window(2)
            node = self._build(_PAIR_ROLLING[name], args[:2], span, source, arg_spans[:2], window=n, min_periods=1)
            if name == "Corr":
                node = self._mask_flat(node, args[:2], n, span, source)
            return node
        if name in _ELEM:
            need(1, 1, "(feature)")
            return self._build(_ELEM[name], args, span, source, arg_spans)
        if name in _CMP:
            need(2, 2, "(feature_left, feature_right)")
            return self._compare(_CMP[name], args[0], args[1], span, source)
        if name == "Ref":
            need(2, 2, "(feature, N)")
            a = args[1]
            if not isinstance(a, Factor) or a.op != "const" or a.value != int(a.value):
                raise err(f"Ref() N must be a constant integer, got {a}", arg_spans[1])
            n = int(a.value)
            if n == 0:
                raise err("Ref(x, 0) (Qlib: the first value of the series, repeated) is not supported",
                          arg_spans[1], "use the field itself for the current value")
            if n > 0:
                return self._build("delay", (args[0],), span, source, arg_spans[:1], periods=n)
            return self._build("lead", (args[0],), span, source, arg_spans[:1], periods=-n)
        if name == "Delta":
            need(2, 2, "(feature, N)")
            return self._build("delta", (args[0],), span, source, arg_spans[:1], periods=window(1))
        if name == "Count":
            need(2, 2, "(feature, N)")
            return self._build("ts_count", (args[0],), span, source, arg_spans[:1], window=window(1))
        if name == "Quantile":
            need(3, 3, "(feature, N, qscore)")
            q = args[2]
            if not isinstance(q, Factor) or q.op != "const":
                raise err(f"Quantile() qscore must be a constant, got {q}", arg_spans[2])
            return self._build("ts_quantile", (args[0],), span, source, arg_spans[:1], window=window(1),
                               q=q.value, min_periods=1)
        if name == "WMA":
            need(2, 2, "(feature, N)")
            return self._build("ts_wma", (args[0],), span, source, arg_spans[:1], window=window(1), min_periods=1,
                               compat=int(self.compat))
        if name == "EMA":
            need(2, 2, "(feature, N)")
            a = args[1]
            if not isinstance(a, Factor) or a.op != "const" or not math.isfinite(a.value) or a.value <= 0:
                raise err(f"EMA() N must be a positive number (a span N >= 1 or an alpha 0 < N < 1), got {a}",
                          arg_spans[1], "N=0 (Qlib's expanding EMA) is not supported" if getattr(a, "value", 1) == 0
                          else None)
            v = a.value
            if v < 1:
                span_value = 2.0 / v - 1.0  # alpha = 2 / (span + 1)
            else:
                span_value = v
            return self._build("ewma", (args[0],), span, source, arg_spans[:1], span=span_value)
        if name in ("Greater", "Less"):
            need(2, 2, "(feature_left, feature_right)")
            return self._build("max" if name == "Greater" else "min", args, span, source, arg_spans)
        if name in ("Add", "Sub", "Mul", "Div", "Power"):
            need(2, 2, "(feature_left, feature_right)")
            native = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Power": "pow"}[name]
            return self._build(native, args, span, source, arg_spans)
        if name in ("And", "Or"):
            need(2, 2, "(feature_left, feature_right)")
            return self._logic("&" if name == "And" else "|", args[0], args[1], span, source)
        if name == "Not":
            need(1, 1, "(feature)")
            c = self._build("not", (self._truthy(args[0], span, source),), span, source)
            return self._as_number(c, span, source)
        if name == "If":
            need(3, 3, "(condition, feature_left, feature_right)")
            # np.where(cond, a, b): a where cond is nonzero -- NaN counts as true there
            cond = self._build("ne", (self._fill(args[0], 1, span, source), lit(0, span, source)), span, source)
            return self._build("where", (cond, args[1], args[2]), span, source)
        raise AssertionError(name)  # pragma: no cover - every name of QLIB_OPERATORS is handled

    def _argext_compat(self, native: str, x: Factor, n: int, span, source) -> Factor:
        """Qlib 0.9's ``IdxMax``/``IdxMin`` as they are: ``np.argmax`` over the raw window returns the
        position of the first NaN when the window holds one (NaN for a window without values)."""
        one, zero = lit(1, span, source), lit(0, span, source)
        valid = self._build("eq", (x, x), span, source)                      # NaN where x is NaN
        hole = self._fill(self._build("where", (valid, zero, one), span, source), 1, span, source)
        any_hole = self._build("gt", (self._build("ts_max", (hole,), span, source, window=n, min_periods=1), zero),
                               span, source)
        first_hole = self._build("ts_argmax", (hole,), span, source, window=n, min_periods=1)
        pos = self._build(native, (x,), span, source, window=n, min_periods=1)
        node = self._build("where", (any_hole, first_hole, pos), span, source)
        empty = self._build("eq", (self._build("ts_count", (x,), span, source, window=n), zero), span, source)
        return self._build("mask", (node, empty), span, source)

    def _mask_flat(self, node: Factor, inputs, n: int, span, source) -> Factor:
        """NaN where the rolling std of any input is within ``STD_ZERO_ATOL`` of 0 (Qlib)."""
        flat = None
        for x in inputs:
            std = self._build("ts_std", (x,), span, source, window=n, min_periods=1)
            c = self._build("le", (std, lit(STD_ZERO_ATOL, span, source)), span, source)
            flat = c if flat is None else self._build("or", (flat, c), span, source)
        return self._build("mask", (node, flat), span, source)

    def dialect_hint(self, name: str) -> str | None:
        if name in REGISTRY:
            return f"{name!r} is a native factorflow operator: use dialect='native'"
        for q in QLIB_OPERATORS:
            if q.lower() == name.lower():
                return f"Qlib operators are case-sensitive: {q!r}"
        return None


register_dialect(QlibDialect())
register_dialect(QlibDialect(compat=True))
