"""A safe hand-written parser for factor formulas.

The text is tokenised and parsed by recursive descent into registry-validated
:class:`~factorflow.factors.expr.Factor` nodes; nothing of the user's text is ever passed to
``eval`` or ``exec``. Every node keeps its source span, so later errors (unknown field, bad
window) point at the formula with a caret.

Grammar of the native dialect, loosest binding first::

    expr    := or
    or      := and ('|' and)*
    and     := not ('&' not)*
    not     := '~' not | cmp
    cmp     := sum (('<' | '<=' | '>' | '>=' | '==' | '!=') sum)?     # not chained
    sum     := product (('+' | '-') product)*
    product := unary (('*' | '/') unary)*
    unary   := ('-' | '+') unary | power
    power   := atom ('**' unary)?                                     # right-associative
    atom    := NUMBER | NAME | NAME '(' [arg (',' arg)* [',']] ')' | '(' expr ')'
    arg     := expr | NAME '=' expr

Unlike Python, ``&`` and ``|`` bind looser than comparisons, so ``a > b & c < d`` means
``(a > b) & (c < d)``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import FactorSyntaxError, Span
from .expr import Factor, Source

__all__ = ["Token", "tokenize", "Parser"]


@dataclass(frozen=True)
class Token:
    kind: str  # NUMBER NAME OP EOF
    text: str
    start: int
    end: int

    @property
    def span(self) -> Span:
        return Span(self.start, self.end)


_NUMBER = re.compile(r"(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")
_SPACE = re.compile(r"\s+|#[^\n]*")


def tokenize(text: str, operators: tuple[str, ...], name_pattern: re.Pattern = _NAME) -> list[Token]:
    """Split ``text`` into tokens; ``operators`` are tried longest first."""
    ops = sorted(operators, key=len, reverse=True)
    out: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        m = _SPACE.match(text, i)
        if m:
            i = m.end()
            continue
        m = _NUMBER.match(text, i)
        if m:
            end = m.end()
            if end < n and (text[end].isalpha() or text[end] == "_"):
                j = end
                while j < n and (text[j].isalnum() or text[j] == "_"):
                    j += 1
                raise FactorSyntaxError(f"invalid number {text[i:j]!r}", text, Span(i, j))
            out.append(Token("NUMBER", m.group(), i, end))
            i = end
            continue
        m = name_pattern.match(text, i)
        if m:
            out.append(Token("NAME", m.group(), i, m.end()))
            i = m.end()
            continue
        for op in ops:
            if text.startswith(op, i):
                out.append(Token("OP", op, i, i + len(op)))
                i += len(op)
                break
        else:
            ch = text[i]
            hint = None
            if ch == "$":
                hint = "'$field' is Qlib syntax: use ff.factor(..., dialect='qlib')"
            elif ch == "?":
                hint = "'cond ? a : b' is WorldQuant syntax: use dialect='wq', or where(cond, a, b)"
            elif ch in "\"'":
                hint = "formulas have no strings: fields are bare names such as close"
            elif ch == "^":
                hint = "use ** for powers (or dialect='wq', where ^ is a power)"
            raise FactorSyntaxError(f"unexpected character {ch!r}", text, Span(i, i + 1), hint)
    out.append(Token("EOF", "", n, n))
    return out


class Parser:
    """Recursive-descent parser parameterised by a dialect (see ``factors/dialects.py``).

    The dialect supplies the token set and builds nodes: ``dialect.field_node(tok, source)``,
    ``dialect.call(name_tok, args, kwargs, span, arg_spans, source)``,
    ``dialect.binary(op_text, left, right, span, source)`` and
    ``dialect.unary(op_text, operand, span, source)``.
    """

    def __init__(self, text: str, dialect):
        self.text = text
        self.dialect = dialect
        self.source = Source(text, dialect.name)
        self.tokens = tokenize(text, dialect.operator_tokens, dialect.name_pattern)
        self.pos = 0

    # -- token helpers --------------------------------------------------------------------------
    @property
    def tok(self) -> Token:
        return self.tokens[self.pos]

    def advance(self) -> Token:
        t = self.tokens[self.pos]
        self.pos += 1
        return t

    def at(self, *ops: str) -> bool:
        t = self.tok
        return t.kind == "OP" and t.text in ops

    def error(self, msg: str, tok: Token | None = None, hint: str | None = None) -> FactorSyntaxError:
        tok = tok or self.tok
        span = tok.span if tok.kind != "EOF" else Span(len(self.text), len(self.text) + 1)
        return FactorSyntaxError(msg, self.text, span, hint)

    def expect(self, op: str, opener: Token | None = None) -> Token:
        if self.at(op):
            return self.advance()
        t = self.tok
        what = "end of formula" if t.kind == "EOF" else repr(t.text)
        hint = None
        if opener is not None and op == ")":
            hint = f"the '(' at column {opener.start + 1} is not closed"
        raise self.error(f"expected {op!r}, found {what}", hint=hint)

    # -- grammar ----------------------------------------------------------------------------------
    def parse(self) -> Factor:
        if self.tok.kind == "EOF":
            raise FactorSyntaxError("empty formula", self.text, Span(0, 1))
        node, _ = self.expr()
        if self.tok.kind != "EOF":
            t = self.tok
            hint = None
            if t.kind in ("NAME", "NUMBER") or t.text == "(":
                hint = "missing an operator between two terms?"
            if t.text == ")":
                raise self.error("unmatched ')'")
            raise self.error(f"unexpected {t.text!r}", hint=hint)
        return node

    def expr(self):
        return self.binary_level(0)

    def binary_level(self, level: int):
        levels = self.dialect.binary_levels
        if level == len(levels):
            return self.unary()
        ops, assoc = levels[level]
        if assoc == "prefix":
            # a prefix operator level (native '~'): op operand | next level
            if self.at(*ops):
                t = self.advance()
                operand, span = self.binary_level(level)
                sp = t.span.join(span)
                return self.dialect.unary(t.text, operand, sp, self.source), sp
            return self.binary_level(level + 1)
        if assoc == "ternary":
            return self.dialect.ternary(self, level)
        left, lspan = self.binary_level(level + 1)
        if assoc == "right":
            if self.at(*ops):
                t = self.advance()
                right, rspan = self.binary_level(level)
                sp = lspan.join(rspan)
                return self.dialect.binary(t.text, left, right, sp, self.source, t), sp
            return left, lspan
        while self.at(*ops):
            t = self.advance()
            right, rspan = self.binary_level(level + 1)
            sp = lspan.join(rspan)
            left = self.dialect.binary(t.text, left, right, sp, self.source, t)
            lspan = sp
            if assoc == "none" and self.at(*ops):
                raise self.error(f"comparisons cannot be chained; combine them with {self.dialect.and_symbol}",
                                 hint="write (a < b) & (b < c)")
        return left, lspan

    def unary(self):
        if self.at(*self.dialect.unary_ops):
            t = self.advance()
            operand, span = self.unary()
            sp = t.span.join(span)
            return self.dialect.unary(t.text, operand, sp, self.source), sp
        return self.power()

    def power(self):
        base, bspan = self.atom()
        if self.at(*self.dialect.power_ops):
            t = self.advance()
            exp, espan = self.unary()
            sp = bspan.join(espan)
            return self.dialect.binary(t.text, base, exp, sp, self.source, t), sp
        return base, bspan

    def atom(self):
        t = self.tok
        if t.kind == "NUMBER":
            self.advance()
            return self.dialect.number(t, self.source), t.span
        if t.kind == "NAME":
            self.advance()
            if self.at("("):
                return self.call(t)
            return self.dialect.field_node(t, self.source), t.span
        if self.at("("):
            opener = self.advance()
            if self.at(")"):
                raise self.error("empty parentheses")
            node, _ = self.expr()
            close = self.expect(")", opener)
            return node, Span(opener.start, close.end)
        if t.kind == "EOF":
            raise self.error("unexpected end of formula", hint="an operand is missing")
        raise self.error(f"unexpected {t.text!r}", hint="an operand is missing" if t.kind == "OP" else None)

    def call(self, name_tok: Token):
        opener = self.advance()  # '('
        args, arg_spans, kwargs = [], [], {}
        while not self.at(")"):
            if self.tok.kind == "EOF":
                raise self.error("unexpected end of formula", hint=f"the '(' at column {opener.start + 1} is not closed")
            if self.tok.kind == "NAME" and self.tokens[self.pos + 1].kind == "OP" and self.tokens[self.pos + 1].text == "=":
                key = self.advance()
                self.advance()
                value, vspan = self.expr()
                if key.text in kwargs:
                    raise self.error(f"parameter {key.text!r} given twice", key)
                kwargs[key.text] = _with_span(value, vspan, self.source)
            else:
                if kwargs:
                    raise self.error("positional argument after a keyword argument")
                value, vspan = self.expr()
                args.append(value)
                arg_spans.append(vspan)
            if self.at(","):
                self.advance()
                continue
            if not self.at(")"):
                t = self.tok
                what = "end of formula" if t.kind == "EOF" else repr(t.text)
                raise self.error(f"expected ',' or ')' in the arguments of {name_tok.text}(), found {what}",
                                 hint=f"the '(' at column {opener.start + 1} is not closed" if t.kind == "EOF" else None)
        close = self.advance()
        span = Span(name_tok.start, close.end)
        node = self.dialect.call(name_tok, tuple(args), kwargs, span, tuple(arg_spans), self.source)
        return node, span


def _with_span(node: Factor, span: Span, source: Source) -> Factor:
    if node.span == span:
        return node
    return Factor(node.op, node.args, node.params, node.type, span, source)
