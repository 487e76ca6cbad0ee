"""Dialects: surface syntax and names mapped onto registry operators.

A dialect decides the tokens, the operator precedences, how a bare name or a call is turned into
a node, and any policy differences (written down in ``docs/dialects.md``). The native dialect
spells every operator by its registry name. Other dialects (``qlib``, ``wq``) register
themselves with :func:`register_dialect`.
"""
from __future__ import annotations

import difflib
import re

from .errors import FactorSyntaxError
from .expr import Factor, Source, lit
from .parser import _NAME, Parser, Token
from .registry import REGISTRY, get_operator, operator_names

__all__ = ["Dialect", "NativeDialect", "get_dialect", "register_dialect", "parse"]


class Dialect:
    """Base dialect; subclasses override the tables and hooks."""

    name = "base"
    binary_levels: tuple = ()
    unary_ops: tuple[str, ...] = ()
    power_ops: tuple[str, ...] = ()
    operator_tokens: tuple[str, ...] = ()
    name_pattern: re.Pattern = _NAME
    and_symbol = "&"
    binary_names: dict[str, str] = {}
    unary_names: dict[str, str] = {}

    def function_names(self) -> list[str]:
        raise NotImplementedError

    def number(self, tok: Token, source: Source) -> Factor:
        text = tok.text
        if re.fullmatch(r"\d+", text):
            value: int | float = int(text)
        else:
            value = float(text)
        return lit(value, tok.span, source)

    def field_node(self, tok: Token, source: Source) -> Factor:
        return Factor("field", (), (tok.text,), "num", tok.span, source)

    def binary(self, op_text: str, left: Factor, right: Factor, span, source, tok=None) -> Factor:
        op = get_operator(self.binary_names[op_text])
        return op.build((left, right), {}, span, source, (left.span, right.span))

    def unary(self, op_text: str, operand: Factor, span, source) -> Factor:
        if op_text == "+":
            return operand
        op = get_operator(self.unary_names[op_text])
        return op.build((operand,), {}, span, source, (operand.span,))

    def call(self, name_tok: Token, args, kwargs, span, arg_spans, source) -> Factor:
        raise NotImplementedError

    def unknown_function(self, name_tok: Token, source: Source) -> FactorSyntaxError:
        names = self.function_names()
        scored = sorted(((difflib.SequenceMatcher(None, name_tok.text, n).ratio(), n) for n in names), reverse=True)
        # the best match, and any within 0.05 of it (a clear winner is named alone)
        close = [n for r, n in scored[:3] if r >= 0.6 and r >= scored[0][0] - 0.05] if scored else []
        if not close:
            close = [n for n in names if n.lower() == name_tok.text.lower()]
        hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else "ff.operators() lists the operators"
        hint = self.dialect_hint(name_tok.text) or hint
        return FactorSyntaxError(f"unknown function {name_tok.text!r}", source.text, name_tok.span, hint)

    def dialect_hint(self, name: str) -> str | None:
        return None

    def parse(self, text: str) -> Factor:
        if not isinstance(text, str):
            raise TypeError(f"a formula must be a string, got {type(text).__name__}")
        return Parser(text, self).parse()


_QLIB_NAMES = {"Mean", "Ref", "Std", "Sum", "Corr", "EMA", "WMA", "Rank", "Delta", "Max", "Min", "IdxMax",
               "IdxMin", "Slope", "Rsquare", "Resi", "Quantile", "Med", "Mad", "Kurt", "Skew", "Var", "Cov",
               "Greater", "Less", "If", "Log", "Abs", "Sign", "Power", "Count"}
_WQ_NAMES = {"rank", "correlation", "covariance", "stddev", "scale", "signedpower", "indneutralize", "product",
             "sum", "ts_argmax", "decay_linear", "adv20"}


class NativeDialect(Dialect):
    """factorflow's own spelling: registry names, Python-like operators."""

    name = "native"
    binary_levels = (
        (("|",), "left"),
        (("&",), "left"),
        (("~",), "prefix"),
        (("<", "<=", ">", ">=", "==", "!="), "none"),
        (("+", "-"), "left"),
        (("*", "/"), "left"),
    )
    unary_ops = ("-", "+")
    power_ops = ("**",)
    operator_tokens = ("**", "<=", ">=", "==", "!=", "<", ">", "+", "-", "*", "/", "&", "|", "~",
                       "(", ")", ",", "=")
    binary_names = {"+": "add", "-": "sub", "*": "mul", "/": "div", "**": "pow", "<": "lt", "<=": "le",
                    ">": "gt", ">=": "ge", "==": "eq", "!=": "ne", "&": "and", "|": "or"}
    unary_names = {"-": "neg", "~": "not"}

    def function_names(self) -> list[str]:
        return operator_names()

    def call(self, name_tok: Token, args, kwargs, span, arg_spans, source) -> Factor:
        name = name_tok.text
        if name not in REGISTRY or name in ("add", "sub", "mul", "div", "pow", "neg", "lt", "le", "gt", "ge",
                                            "eq", "ne", "and", "or", "not"):
            raise self.unknown_function(name_tok, source)
        return get_operator(name).build(args, kwargs, span, source, arg_spans)

    def dialect_hint(self, name: str) -> str | None:
        if name in _QLIB_NAMES and name.lower() not in REGISTRY:
            return f"{name!r} is a Qlib operator: use ff.factor(..., dialect='qlib')"
        if name in _WQ_NAMES and name not in REGISTRY:
            extra = " (native: cs_rank)" if name == "rank" else ""
            return f"{name!r} is a WorldQuant 101 operator: use dialect='wq'{extra}"
        return None


_DIALECTS: dict[str, Dialect] = {}


def register_dialect(dialect: Dialect) -> None:
    """Make ``dialect`` available to ``ff.factor(..., dialect=dialect.name)``."""
    _DIALECTS[dialect.name] = dialect


def get_dialect(name: str) -> Dialect:
    try:
        return _DIALECTS[name]
    except KeyError:
        raise ValueError(f"unknown dialect {name!r}; available: {', '.join(sorted(_DIALECTS))}") from None


register_dialect(NativeDialect())


def parse(text: str, dialect: str = "native") -> Factor:
    """Parse ``text`` in ``dialect`` into a validated :class:`Factor`.

    Examples
    --------
    >>> from factorflow.factors.dialects import parse
    >>> parse("ema(close, 12) - ema(close, 26)")
    <Factor ema(close, 12) - ema(close, 26)>
    >>> parse("ts_mean(close, 0)")
    Traceback (most recent call last):
    ...
    factorflow.factors.errors.FactorTypeError: ts_mean() window must be a positive integer, got 0
      line 1, column 16:
        ts_mean(close, 0)
                       ^
      hint: windows count rows: use a whole number >= 1
    """
    return get_dialect(dialect).parse(text)

