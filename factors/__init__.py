"""The factor DSL: text -> validated expression nodes.

``factors`` imports nothing from ``engine``, ``cluster`` or ``kernels``; the registry refers to
kernels by name only.
"""
from __future__ import annotations

from .dialects import get_dialect, parse, register_dialect
from . import dialect_qlib, dialect_wq  # noqa: F401,E402 - register the qlib and wq dialects
from .errors import FactorError, FactorSyntaxError, FactorTypeError
from .expr import Factor, field, lit
from .libraries import libraries, library, library_text
from .registry import Operator, get_operator, operators

__all__ = [
    "Factor", "FactorError", "FactorSyntaxError", "FactorTypeError", "Operator", "factor", "field", "lit",
    "operators", "get_operator", "parse", "get_dialect", "register_dialect", "library", "libraries", "library_text",
]


def factor(formula: "str | Factor", dialect: str = "native") -> Factor:
    """Parse a factor formula.

    Parameters
    ----------
    formula : str or Factor
        Formula text such as ``"ema(close, 12) - ema(close, 26)"``; a :class:`Factor` is returned
        unchanged.
    dialect : {"native", ...}
        Surface syntax and semantics; see ``docs/dialects.md``.

    Returns
    -------
    Factor

    Raises
    ------
    FactorSyntaxError, FactorTypeError
        With the formula, line, column and a caret under the offending part.

    Examples
    --------
    >>> import factorflow as ff
    >>> f = ff.factor("ema(close, 12) - ema(close, 26)")
    >>> f.fields, f.lookback
    (('close',), 0)
    >>> ff.factor("ts_mean(close, 20) / close").lookback
    19
    >>> ff.factor("emaa(close, 12)")
    Traceback (most recent call last):
    ...
    factorflow.factors.errors.FactorSyntaxError: unknown function 'emaa'
      line 1, column 1:
        emaa(close, 12)
        ^^^^
      hint: did you mean 'ema'?
    """
    if isinstance(formula, Factor):
        return formula
    return parse(formula, dialect)
