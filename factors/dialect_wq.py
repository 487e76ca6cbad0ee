"""The ``wq`` dialect: the syntax of Kakushadze's "101 Formulaic Alphas" (2016).

The paper's formulas parse as printed, mapped onto registry operators with the paper's
definitions (its Appendix A.1):

* ``rank`` is cross-sectional (``cs_rank``); ``ts_rank``, ``ts_min``, ``ts_max``,
  ``ts_argmax``, ``ts_argmin``, ``sum``, ``product``, ``stddev``, ``correlation``,
  ``covariance``, ``delay``, ``delta``, ``decay_linear`` are time-series operators over the past
  ``d`` days; a non-integer ``d`` is floored (``ts_rank(x, 5.50322)`` is ``ts_rank(x, 5)``);
* ``min(x, d)`` / ``max(x, d)`` with a number ``d`` are ``ts_min`` / ``ts_max``; with two series
  they are element-wise;
* ``scale(x, a=1)`` rescales so that ``sum(abs(x)) = a``; ``signedpower(x, a)`` is
  ``sign(x) * abs(x)^a``; ``indneutralize(x, IndClass.g)`` demeans ``x`` within the groups of the
  panel field ``g`` (``cs_neutralize``);
* ``x ^ y`` is a power (binding tightest), ``c ? a : b`` a conditional (loosest), ``||`` and
  ``&&`` logical; a comparison used as a number is 1 or 0 (NaN where an operand is NaN), a
  number used as a condition is true when nonzero;
* names are case-insensitive (``Ts_Rank``, ``SignedPower``, ``IndNeutralize``), and the Unicode
  minus of the paper's PDF (``−``) reads as ``-``;
* inputs: ``open close high low volume vwap cap`` are panel fields, ``returns`` is
  ``close / delay(close, 1) - 1``, ``adv{d}`` is the average daily dollar volume
  ``ts_mean(volume * vwap, d)``, ``IndClass.sector|industry|subindustry`` is the panel field of
  that name holding group codes.

Windows need ``d`` full days of valid values (the native ``min_periods = window``).

Examples
--------
>>> import factorflow as ff
>>> ff.factor("rank(delta(log(volume), 2))", dialect="wq")
<Factor cs_rank(delta(log(volume), 2))>
>>> ff.factor("Ts_Rank(close, 5.50322)", dialect="wq")
<Factor ts_rank(close, 5)>
>>> ff.factor("(adv20 < volume) ? 1 : -1", dialect="wq")
<Factor where(ts_mean(volume * vwap, 20) < volume, 1, -1)>
"""
from __future__ import annotations

import math
import re

from .dialects import Dialect, register_dialect
from .errors import FactorSyntaxError, FactorTypeError
from .expr import Factor, Source, lit
from .registry import REGISTRY, get_operator

__all__ = ["WQDialect", "WQ_FUNCTIONS"]

_NAME = re.compile(r"IndClass\.[A-Za-z_][A-Za-z_0-9]*|[A-Za-z_][A-Za-z_0-9]*")
_ADV = re.compile(r"adv(\d+)")

# paper name (lower case) -> (registry operator, series arguments, window argument index or None)
_SIMPLE = {
    "rank": ("cs_rank", 1, None),
    "abs": ("abs", 1, None),
    "log": ("log", 1, None),
    "sign": ("sign", 1, None),
    "delay": ("delay", 1, 1),
    "delta": ("delta", 1, 1),
    "correlation": ("ts_corr", 2, 2),
    "covariance": ("ts_cov", 2, 2),
    "decay_linear": ("decay_linear", 1, 1),
    "ts_min": ("ts_min", 1, 1),
    "ts_max": ("ts_max", 1, 1),
    "ts_argmax": ("ts_argmax", 1, 1),
    "ts_argmin": ("ts_argmin", 1, 1),
    "ts_rank": ("ts_rank", 1, 1),
    "sum": ("ts_sum", 1, 1),
    "product": ("ts_prod", 1, 1),
    "stddev": ("ts_std", 1, 1),
    "signedpower": ("signed_power", 2, None),
    "indneutralize": ("cs_neutralize", 2, None),
}
WQ_FUNCTIONS = tuple(sorted(list(_SIMPLE) + ["scale", "min", "max"]))
_GROUPS = ("sector", "industry", "subindustry")


def spellings() -> dict[str, list[str]]:
    """Native operator name -> its WorldQuant 101 spellings (for the operator reference)."""
    out: dict[str, list[str]] = {}
    for w, (native, n_series, win) in _SIMPLE.items():
        args = ", ".join(["x", "y"][:n_series] + (["d"] if win is not None else []))
        if native == "cs_neutralize":
            args = "x, IndClass.g"
        elif native == "signed_power":
            args = "x, a"
        out.setdefault(native, []).append(f"{w}({args})")
    for native, w in {"ts_min": "min(x, d)", "ts_max": "max(x, d)", "min": "min(x, y)", "max": "max(x, y)",
                      "cs_scale": "scale(x, a=1)", "pow": "x ^ y", "where": "c ? x : y", "and": "a && b",
                      "or": "a || b"}.items():
        out.setdefault(native, []).append(w)
    return out


class WQDialect(Dialect):
    """WorldQuant 101 alphas syntax and semantics (see the module docstring)."""

    name = "wq"
    binary_levels = (
        (("?",), "ternary"),
        (("||",), "left"),
        (("&&",), "left"),
        (("<", "<=", ">", ">=", "==", "!="), "none"),
        (("+", "-", "\u2212"), "left"),
        (("*", "/"), "left"),
    )
    unary_ops = ("-", "+", "\u2212")
    power_ops = ("^",)
    operator_tokens = ("||", "&&", "<=", ">=", "==", "!=", "<", ">", "+", "-", "\u2212", "*", "/", "^", "?", ":",
                       "(", ")", ",")
    name_pattern = _NAME
    and_symbol = "&&"
    binary_names = {"+": "add", "-": "sub", "\u2212": "sub", "*": "mul", "/": "div", "^": "pow", "<": "lt",
                    "<=": "le", ">": "gt", ">=": "ge", "==": "eq", "!=": "ne", "&&": "and", "||": "or"}
    unary_names = {"-": "neg", "\u2212": "neg"}

    def function_names(self) -> list[str]:
        return list(WQ_FUNCTIONS)

    # -- type coercion: comparisons are numbers where numbers are needed, and vice versa ----------
    def _coerce(self, x: Factor, want: str, span, source) -> Factor:
        if not isinstance(x, Factor) or x.type == want:
            return x
        if want == "num":  # condition -> 1 / 0 (NaN stays NaN)
            return get_operator("where").build((x, lit(1, span, source), lit(0, span, source)), {}, span, source)
        return get_operator("ne").build((x, lit(0, span, source)), {}, span, source)

    def _build(self, name, args, at, source, arg_spans=None, **params) -> Factor:
        op = get_operator(name)
        args = tuple(self._coerce(a, t, at, source) for a, t in zip(args, op.types()))
        return op.build(args, params, at, source, arg_spans)

    # -- leaves -----------------------------------------------------------------------------------
    def field_node(self, tok, source: Source) -> Factor:
        text = tok.text
        span = tok.span
        if text.startswith("IndClass."):
            group = text.split(".", 1)[1].lower()
            if group not in _GROUPS:
                raise FactorSyntaxError(f"unknown industry classification {text!r}", source.text, span,
                                        f"use IndClass.{', IndClass.'.join(_GROUPS)}")
            return Factor("field", (), (group,), "num", span, source)
        low = text.lower()
        if low == "returns":
            close = Factor("field", (), ("close",), "num", span, source)
            prev = self._build("delay", (close,), span, source, periods=1)
            return self._build("sub", (self._build("div", (close, prev), span, source), lit(1, span, source)),
                               span, source)
        m = _ADV.fullmatch(low)
        if m:
            d = int(m.group(1))
            if d < 1:
                raise FactorSyntaxError(f"{text}: the averaging window must be >= 1 day", source.text, span)
            dollar = self._build("mul", (Factor("field", (), ("volume",), "num", span, source),
                                         Factor("field", (), ("vwap",), "num", span, source)), span, source)
            return self._build("ts_mean", (dollar,), span, source, window=d)
        return Factor("field", (), (text,), "num", span, source)

    # -- operators ---------------------------------------------------------------------------------
    def binary(self, op_text, left, right, span, source, tok=None) -> Factor:
        return self._build(self.binary_names[op_text], (left, right), span, source, (left.span, right.span))

    def unary(self, op_text, operand, span, source) -> Factor:
        if op_text == "+":
            return operand
        return self._build("neg", (operand,), span, source, (operand.span,))

    def ternary(self, parser, level):
        cond, cspan = parser.binary_level(level + 1)
        if not parser.at("?"):
            return cond, cspan
        parser.advance()
        a, _ = parser.binary_level(level)
        parser.expect(":")
        b, bspan = parser.binary_level(level)
        sp = cspan.join(bspan)
        return self._build("where", (cond, a, b), sp, parser.source), sp

    # -- calls -------------------------------------------------------------------------------------
    def call(self, name_tok, args, kwargs, span, arg_spans, source) -> Factor:
        name = name_tok.text.lower()
        text = source.text

        def err(msg, where=None, hint=None):
            return FactorTypeError(msg, text, where if where is not None else span, hint)

        if kwargs:
            k = next(iter(kwargs))
            raise err(f"{name_tok.text}() takes no keyword arguments", kwargs[k].span)
        if name not in WQ_FUNCTIONS:
            raise self.unknown_function(name_tok, source)

        def days(i):
            a = args[i]
            if not isinstance(a, Factor) or a.op != "const":
                raise err(f"{name_tok.text}() number of days must be a constant, got {a}", arg_spans[i])
            v = a.value
            if not math.isfinite(v) or math.floor(v) < 1:
                raise err(f"{name_tok.text}() number of days must be >= 1 (non-integers are floored), got {a}",
                          arg_spans[i])
            return int(math.floor(v))

        if name in ("min", "max"):
            if len(args) != 2:
                raise err(f"{name_tok.text}() takes (x, d) or (x, y), got {len(args)} arguments")
            if isinstance(args[1], Factor) and args[1].op == "const":  # paper: min(x, d) = ts_min(x, d)
                return self._build(f"ts_{name}", args[:1], span, source, arg_spans[:1], window=days(1))
            return self._build(name, args, span, source, arg_spans)
        if name == "scale":
            if not 1 <= len(args) <= 2:
                raise err(f"scale() takes (x) or (x, a), got {len(args)} arguments")
            params = {}
            if len(args) == 2:
                a = args[1]
                if not isinstance(a, Factor) or a.op != "const":
                    raise err(f"scale() a must be a constant, got {a}", arg_spans[1])
                params["scale"] = a.value
            return self._build("cs_scale", args[:1], span, source, arg_spans[:1], **params)
        native, n_series, win = _SIMPLE[name]
        n_total = n_series + (1 if win is not None else 0)
        if len(args) != n_total:
            op = get_operator(native)
            sig = ", ".join(list(op.inputs) + (["d"] if win is not None else []))
            raise err(f"{name_tok.text}() takes ({sig}), got {len(args)} argument{'s' if len(args) != 1 else ''}")
        if win is None:
            return self._build(native, args, span, source, arg_spans)
        op = get_operator(native)
        key = op.params[0].name
        return self._build(native, args[:n_series], span, source, arg_spans[:n_series], **{key: days(win)})

    def dialect_hint(self, name: str) -> str | None:
        if name in REGISTRY and name.lower() not in WQ_FUNCTIONS:
            return f"{name!r} is a native factorflow operator: use dialect='native'"
        return None


register_dialect(WQDialect())
