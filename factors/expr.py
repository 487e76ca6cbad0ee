"""Immutable expression nodes.

A :class:`Factor` is a node of the expression DAG: a field, a constant or an operator call.
Nodes are immutable; operator methods and Python operators return new nodes. Two nodes with the
same canonical ``key`` are the same computation, which is what common-subexpression elimination
in the planner relies on. Source positions (``span``) ride along for error messages but are not
part of the identity.

Because ``==`` builds a comparison node (as in Polars), use ``a.equals(b)`` or ``a.key == b.key``
to test identity, and ``a.key`` as a dictionary key.
"""
from __future__ import annotations

import math
from typing import Any

from .errors import FactorTypeError, Span

__all__ = ["Factor", "Source", "field", "lit"]


class Source:
    """The formula text a node was parsed from (shared by all nodes of one parse)."""

    __slots__ = ("text", "dialect")

    def __init__(self, text: str, dialect: str):
        self.text = text
        self.dialect = dialect

    def __repr__(self):
        return f"Source({self.text!r}, dialect={self.dialect!r})"


def _format_number(v: float) -> str:
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, int):
        return str(v)
    if math.isfinite(v) and v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(float(v))


class Factor:
    """A factor expression: a node of the expression DAG.

    Build factors from text with :func:`factorflow.factor`, or from Python with
    :func:`factorflow.field` and the operator methods, which read the operator registry::

        >>> import factorflow as ff
        >>> c = ff.field("close")
        >>> macd = c.ema(12) - c.ema(26)
        >>> macd
        <Factor ema(close, 12) - ema(close, 26)>
        >>> macd.equals(ff.factor("ema(close,12) - ema(close, 26)"))
        True
        >>> c.ts_mean(20).lookback
        19

    Every operator of the registry is a method (``c.ts_mean(20)``, ``c.ts_corr(v, 10)``,
    ``c.cs_rank()``); ``dir(c)`` lists them and ``ff.operators()`` documents them.
    """

    __slots__ = ("op", "args", "params", "type", "span", "source", "_key", "_hash", "_lookback", "_canonical")

    def __init__(self, op: str, args: tuple = (), params: tuple = (), type: str = "num",
                 span: Span | None = None, source: Source | None = None):
        init = object.__setattr__
        init(self, "op", op)
        init(self, "args", tuple(args))
        init(self, "params", tuple(params))
        init(self, "type", type)
        init(self, "span", span)
        init(self, "source", source)
        init(self, "_key", None)
        init(self, "_hash", None)
        init(self, "_lookback", None)
        init(self, "_canonical", None)

    def __setattr__(self, name, value):
        raise AttributeError(f"Factor is immutable: cannot set {name!r}; build a new node instead")

    # -- identity ---------------------------------------------------------------------------
    @property
    def key(self) -> tuple:
        """Canonical structural key (hashable): equal keys mean the same computation."""
        k = self._key
        if k is None:
            arg_keys = tuple(a.key for a in self.args)
            if len(arg_keys) > 1 and self.op not in ("field", "const") and self.operator.commutative:
                # x + y and y + x are one computation (IEEE addition and multiplication commute)
                arg_keys = tuple(sorted(arg_keys, key=hash))
            k = (self.op, self.params, arg_keys)
            object.__setattr__(self, "_key", k)
        return k

    def __hash__(self):
        h = self._hash
        if h is None:
            h = hash(self.key)
            object.__setattr__(self, "_hash", h)
        return h

    def equals(self, other: "Factor") -> bool:
        """True when ``other`` is the same computation (canonical key equality)."""
        return isinstance(other, Factor) and self.key == other.key

    def __bool__(self):
        raise TypeError(
            "the truth value of a Factor is undefined; combine conditions with & | ~ and "
            "compare factors with .equals()"
        )

    # -- structure ----------------------------------------------------------------------------
    @property
    def is_field(self) -> bool:
        return self.op == "field"

    @property
    def is_const(self) -> bool:
        return self.op == "const"

    @property
    def name(self) -> str:
        """Field name of a field node."""
        if self.op != "field":
            raise AttributeError("only field nodes have a name")
        return self.params[0]

    @property
    def value(self) -> float:
        """Value of a constant node."""
        if self.op != "const":
            raise AttributeError("only constant nodes have a value")
        return self.params[0]

    @property
    def operator(self):
        """The registry :class:`~factorflow.factors.registry.Operator` of a call node."""
        from .registry import get_operator

        return get_operator(self.op)

    def walk(self):
        """Yield every distinct node of the DAG below (and including) this one, inputs first."""
        seen = set()
        stack = [(self, False)]
        while stack:
            node, expanded = stack.pop()
            k = node.key
            if expanded:
                if k not in seen:
                    seen.add(k)
                    yield node
                continue
            if k in seen:
                continue
            stack.append((node, True))
            for a in reversed(node.args):
                if a.key not in seen:
                    stack.append((a, False))

    @property
    def fields(self) -> tuple[str, ...]:
        """Sorted names of the fields this factor reads."""
        return tuple(sorted({n.params[0] for n in self.walk() if n.op == "field"}))

    @property
    def lookback(self) -> int:
        """Rows of history (before the current row) this factor reads, along its longest path."""
        lb = self._lookback
        if lb is None:
            if self.op in ("field", "const"):
                lb = 0
            else:
                own = self.operator.lookback_of(self.params)
                lb = own + max((a.lookback for a in self.args), default=0)
            object.__setattr__(self, "_lookback", lb)
        return lb

    @property
    def lookahead(self) -> int:
        """Rows *after* the current row this factor reads (``lead``; 0 for most factors)."""
        if self.op in ("field", "const"):
            return 0
        return self.operator.lookahead_of(self.params) + max((a.lookahead for a in self.args), default=0)

    # -- text ---------------------------------------------------------------------------------
    @property
    def canonical(self) -> str:
        """Canonical formula text (native dialect); equal for equal keys. Printed once per node
        (a plan names its ~400 distinct Alpha158 nodes by their text on every ``ff.compute``)."""
        text = self._canonical
        if text is None:
            from .printer import to_text

            text = to_text(self)
            object.__setattr__(self, "_canonical", text)
        return text

    def __str__(self):
        return self.canonical

    def __repr__(self):
        return f"<Factor {self.canonical}>"

    def _repr_html_(self):  # Jupyter
        from .html import factor_html

        return factor_html(self)

    @property
    def formula(self) -> str:
        """The text this factor was parsed from, or its canonical text if built in Python."""
        if self.source is not None:
            return self.source.text
        return self.canonical

    # -- operator API ---------------------------------------------------------------------------
    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        from .registry import find_operator

        op = find_operator(name)
        if op is None:
            raise AttributeError(f"{type(self).__name__!s} has no attribute or operator {name!r}")

        def method(*args: Any, **kwargs: Any) -> "Factor":
            return op.build((self, *args), kwargs)

        method.__name__ = name
        method.__doc__ = op.doc
        return method

    def __dir__(self):
        from .registry import operator_names

        return sorted(set(super().__dir__()) | set(operator_names()))

    def _binary(self, op: str, other: Any, reflected: bool = False) -> "Factor":
        from .registry import get_operator

        args = (other, self) if reflected else (self, other)
        return get_operator(op).build(args, {})

    def __add__(self, o): return self._binary("add", o)
    def __radd__(self, o): return self._binary("add", o, True)
    def __sub__(self, o): return self._binary("sub", o)
    def __rsub__(self, o): return self._binary("sub", o, True)
    def __mul__(self, o): return self._binary("mul", o)
    def __rmul__(self, o): return self._binary("mul", o, True)
    def __truediv__(self, o): return self._binary("div", o)
    def __rtruediv__(self, o): return self._binary("div", o, True)
    def __pow__(self, o): return self._binary("pow", o)
    def __rpow__(self, o): return self._binary("pow", o, True)
    def __lt__(self, o): return self._binary("lt", o)
    def __le__(self, o): return self._binary("le", o)
    def __gt__(self, o): return self._binary("gt", o)
    def __ge__(self, o): return self._binary("ge", o)
    def __eq__(self, o): return self._binary("eq", o)  # type: ignore[override]
    def __ne__(self, o): return self._binary("ne", o)  # type: ignore[override]
    def __and__(self, o): return self._binary("and", o)
    def __rand__(self, o): return self._binary("and", o, True)
    def __or__(self, o): return self._binary("or", o)
    def __ror__(self, o): return self._binary("or", o, True)

    def __neg__(self):
        from .registry import get_operator

        return get_operator("neg").build((self,), {})

    def __pos__(self):
        return self

    def __abs__(self):
        from .registry import get_operator

        return get_operator("abs").build((self,), {})

    def __invert__(self):
        from .registry import get_operator

        return get_operator("not").build((self,), {})

    def __reduce__(self):
        return (_rebuild, (self.op, self.args, self.params, self.type))


def _rebuild(op, args, params, type):
    return Factor(op, args, params, type)


def field(name: str) -> Factor:
    """A panel field (``close``, ``volume``...) as a factor.

    Examples
    --------
    >>> import factorflow as ff
    >>> (ff.field("close") / ff.field("open") - 1).canonical
    'close / open - 1'
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise FactorTypeError(f"field name must be an identifier, got {name!r}")
    return Factor("field", (), (name,), "num")


def lit(value: float, span: Span | None = None, source: Source | None = None) -> Factor:
    """A numeric constant node."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            import numpy as np

            if isinstance(value, np.generic) and np.issubdtype(type(value), np.number):
                value = value.item()
            else:
                raise TypeError
        except TypeError:
            raise FactorTypeError(f"expected a number or a factor, got {type(value).__name__} {value!r}") from None
    return Factor("const", (), (value,), "num", span, source)
