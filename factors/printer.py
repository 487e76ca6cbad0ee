"""Canonical text of an expression (native dialect).

Binary operators are printed infix with the fewest parentheses that parse back to the same tree
(precedences come from the registry), calls as ``name(args, params)``, ``min_periods`` only when
it differs from the window. The canonical text parses back to an equal node.
"""
from __future__ import annotations

from .expr import Factor, _format_number

ATOM = 100
_LOGICAL = ("and", "or")


def _plain(node: Factor, parent: str) -> bool:
    """True if ``node`` reads unambiguously without parentheses under a logical operator."""
    return _prec(node) == ATOM or node.op in ("not", parent)


def _prec(node: Factor) -> int:
    if node.op == "const":
        return ATOM if node.params[0] >= 0 or node.params[0] != node.params[0] else 70
    if node.op == "field":
        return ATOM
    op = node.operator
    return op.precedence if op.symbol else ATOM


def to_text(node: Factor) -> str:
    memo: dict[int, str] = {}

    def text(n: Factor) -> str:
        got = memo.get(id(n))
        if got is not None:
            return got
        if n.op == "field":
            s = n.params[0]
        elif n.op == "const":
            s = _format_number(n.params[0])
        else:
            op = n.operator
            if op.symbol and len(n.args) == 2:
                p = op.precedence
                left, right = n.args
                lt, rt = text(left), text(right)
                lp, rp = _prec(left), _prec(right)
                if op.assoc == "right":
                    lneed, rneed = lp <= p, rp < p
                elif op.assoc == "left":
                    lneed, rneed = lp < p, rp <= p
                else:
                    lneed, rneed = lp <= p, rp <= p
                if op.name in _LOGICAL:
                    # (a > b) & (c < d): spell out what & and | combine
                    lneed = lneed or not _plain(left, op.name)
                    rneed = rneed or not _plain(right, op.name)
                if lneed:
                    lt = f"({lt})"
                if rneed:
                    rt = f"({rt})"
                s = f"{lt} {op.symbol} {rt}"
            elif op.symbol and len(n.args) == 1:
                inner = text(n.args[0])
                if _prec(n.args[0]) < op.precedence or (op.name == "not" and not _plain(n.args[0], "not")):
                    inner = f"({inner})"
                s = f"{op.symbol}{inner}"
            else:
                parts = [text(a) for a in n.args]
                parts += op.format_params(n.params)
                s = f"{op.name}({', '.join(parts)})"
        memo[id(n)] = s
        return s

    return text(node)
