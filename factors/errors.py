"""Errors raised for bad formulas, before any computation starts.

Every error carries the formula text, the 1-based line and column of the offending part and
prints the line with a caret underneath, in the manner of lark's ``UnexpectedInput.get_context``::

    factorflow.factors.errors.FactorSyntaxError: unknown function 'emaa'
      line 1, column 1:
        emaa(close, 12) - ema(close, 26)
        ^^^^
      hint: did you mean 'ema'?
"""
from __future__ import annotations

__all__ = ["FactorError", "FactorSyntaxError", "FactorTypeError", "Span"]


class Span(tuple):
    """``(start, end)`` character offsets of a piece of formula text."""

    __slots__ = ()

    def __new__(cls, start: int, end: int):
        return super().__new__(cls, (start, end))

    def __getnewargs__(self):
        return (self[0], self[1])

    @property
    def start(self) -> int:
        return self[0]

    @property
    def end(self) -> int:
        return self[1]

    def join(self, other: "Span | None") -> "Span":
        if other is None:
            return self
        return Span(min(self[0], other[0]), max(self[1], other[1]))


class FactorError(ValueError):
    """Base class of formula errors.

    Attributes
    ----------
    message : str
        What is wrong, without location.
    formula : str or None
        The formula text the error points into.
    line, column : int or None
        1-based position of the offending part (None when the factor was built in Python).
    hint : str or None
        A suggestion ("did you mean ...", "use dialect='qlib'").
    name : str or None
        The factor's name in the ``compute`` mapping, when known.
    """

    def __init__(self, message: str, formula: str | None = None, span: Span | None = None,
                 hint: str | None = None, name: str | None = None):
        self.message = message
        self.formula = formula
        self.span = span
        self.hint = hint
        self.name = name
        self.line = self.column = None
        if formula is not None and span is not None:
            start = min(span[0], len(formula))
            self.line = formula.count("\n", 0, start) + 1
            self.column = start - (formula.rfind("\n", 0, start) + 1) + 1
        super().__init__(self._render())

    def with_name(self, name: str) -> "FactorError":
        """Return a copy of this error that names the factor it occurred in."""
        return type(self)(self.message, self.formula, self.span, self.hint, name)

    def _render(self) -> str:
        parts = []
        head = self.message if self.name is None else f"factor {self.name!r}: {self.message}"
        parts.append(head)
        if self.formula is not None:
            if self.line is not None:
                lines = self.formula.split("\n")
                text = lines[self.line - 1]
                start = self.column - 1
                end = self.span[1] - self.span[0]
                width = max(1, min(end, len(text) - start))
                parts.append(f"  line {self.line}, column {self.column}:")
                parts.append(f"    {text}")
                parts.append("    " + " " * start + "^" * width)
            else:
                parts.append(f"  in: {self.formula}")
        if self.hint:
            parts.append(f"  hint: {self.hint}")
        return "\n".join(parts)

    def __reduce__(self):  # keep errors picklable across Dask workers
        return (type(self), (self.message, self.formula, self.span, self.hint, self.name))


class FactorSyntaxError(FactorError):
    """The formula text cannot be parsed, or names a function that does not exist."""


class FactorTypeError(FactorError):
    """The formula parses but is not valid: wrong arguments, bad window, unknown field, a
    boolean where a number is needed (or the reverse)."""
