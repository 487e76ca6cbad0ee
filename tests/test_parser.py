"""The DSL: parsing, canonical text, the Python operator API and error messages."""
from __future__ import annotations

import pickle

import pytest

import factorflow as ff
from factorflow.factors.registry import REGISTRY


@pytest.mark.parametrize(
    "text, canonical",
    [
        ("ema(close,12)-ema(close,26)", "ema(close, 12) - ema(close, 26)"),
        ("a + b * c", "a + b * c"),
        ("(a + b) * c", "(a + b) * c"),
        ("a - (b - c)", "a - (b - c)"),
        ("a - b - c", "a - b - c"),
        ("a / (b * c)", "a / (b * c)"),
        ("-a ** 2", "-a ** 2"),
        ("(-a) ** 2", "(-a) ** 2"),
        ("a ** b ** c", "a ** b ** c"),
        ("(a ** b) ** c", "(a ** b) ** c"),
        ("a ** -b", "a ** (-b)"),
        ("a > b & c < d", "(a > b) & (c < d)"),
        ("~(a > b) | c == d", "~(a > b) | (c == d)"),
        ("((a > b) | (c > d)) & (e > f)", "((a > b) | (c > d)) & (e > f)"),
        ("ts_mean(close, 20, min_periods=20)", "ts_mean(close, 20)"),
        ("ts_mean(close, 20, min_periods=5)", "ts_mean(close, 20, min_periods=5)"),
        ("ts_mean(close, 20.0)", "ts_mean(close, 20)"),
        ("cs_scale(x)", "cs_scale(x)"),
        ("cs_scale(x, 2)", "cs_scale(x, 2)"),
        ("1.5e-3 * x", "0.0015 * x"),
        ("-2 ** 2 + x", "-4 + x"),
        ("x  # a comment\n + 1", "x + 1"),
        ("\n  where(x > 0,\n        x,\n        0)\n", "where(x > 0, x, 0)"),
    ],
)
def test_canonical_text_round_trips(text, canonical):
    f = ff.factor(text)
    assert f.canonical == canonical
    g = ff.factor(f.canonical)
    assert g.equals(f) and g.canonical == canonical


def test_python_api_builds_the_same_nodes():
    c, o, v = ff.field("close"), ff.field("open"), ff.field("volume")
    pairs = [
        (c.ema(12) - c.ema(26), "ema(close, 12) - ema(close, 26)"),
        (c.ts_mean(20), "ts_mean(close, 20)"),
        ((c - o) / (c + o), "(close - open) / (close + open)"),
        (2 * c + 1, "2 * close + 1"),
        (1 - c, "1 - close"),
        (c.ts_corr(v, 10), "ts_corr(close, volume, 10)"),
        (((c > o) & (v > 0)).where(c, o), "where((close > open) & (volume > 0), close, open)"),
        (-c, "-close"),
        (abs(c), "abs(close)"),
        (c ** 2, "close ** 2"),
        (~(c > o), "~(close > open)"),
        (c.ts_mean(20, min_periods=5), "ts_mean(close, 20, min_periods=5)"),
        (c.cs_rank(), "cs_rank(close)"),
    ]
    for built, text in pairs:
        assert built.equals(ff.factor(text)), (built, text)
        assert built.canonical == text


def test_commutative_operators_share_a_key():
    assert ff.factor("close + open").key == ff.factor("open + close").key
    assert ff.factor("close * 2").key == ff.factor("2 * close").key
    assert ff.factor("close - open").key != ff.factor("open - close").key
    assert ff.factor("min(a, b)").key == ff.factor("min(b, a)").key


def test_factor_metadata():
    f = ff.factor("ts_mean(delta(close, 5), 20) / ts_std(volume, 60)")
    assert f.fields == ("close", "volume")
    assert f.lookback == 59  # max(5 + 19, 59)
    assert ff.factor("delay(ts_sum(x, 10), 3)").lookback == 12
    assert ff.factor("ema(x, 10)").lookback == 0


def test_factor_is_immutable_and_picklable():
    f = ff.factor("ema(close, 12) - ema(close, 26)")
    g = pickle.loads(pickle.dumps(f))
    assert g.equals(f)
    with pytest.raises(TypeError, match="truth value"):
        bool(f)
    with pytest.raises(AttributeError, match="immutable"):
        f.op = "x"  # type: ignore[misc]


def test_dir_lists_operators():
    names = dir(ff.field("close"))
    assert "ts_mean" in names and "ema" in names and "cs_rank" in names


def _err(text, cls):
    with pytest.raises(cls) as info:
        ff.factor(text)
    return info.value


def test_syntax_error_has_line_column_and_caret():
    e = _err("ema(close, 12) -", ff.FactorSyntaxError)
    assert (e.line, e.column) == (1, 17)
    assert str(e).splitlines() == [
        "unexpected end of formula",
        "  line 1, column 17:",
        "    ema(close, 12) -",
        "                    ^",
        "  hint: an operand is missing",
    ]


def test_unknown_function_suggests():
    e = _err("ts_maen(close, 5)", ff.FactorSyntaxError)
    assert e.message == "unknown function 'ts_maen'"
    assert e.hint == "did you mean 'ts_mean'?"
    assert "    ^^^^^^^" in str(e)
    assert (e.line, e.column) == (1, 1)


def test_error_on_second_line_points_there():
    e = _err("close\n  + ts_std(open, 0)", ff.FactorTypeError)
    assert (e.line, e.column) == (2, 18)
    lines = str(e).splitlines()
    assert lines[2] == "      + ts_std(open, 0)"
    assert lines[3] == "                     ^"


@pytest.mark.parametrize(
    "text, cls, message",
    [
        ("ts_mean(close, 2.5)", ff.FactorTypeError, "ts_mean() window must be a positive integer, got 2.5"),
        ("ts_mean(close, 0)", ff.FactorTypeError, "ts_mean() window must be a positive integer, got 0"),
        ("ts_mean(close, -3)", ff.FactorTypeError, "ts_mean() window must be a positive integer, got -3"),
        ("ts_mean(close, close)", ff.FactorTypeError, "parameter 'window' must be a constant number"),
        ("ts_mean(close)", ff.FactorTypeError, "ts_mean() is missing parameter 'window'"),
        ("ts_mean(close, 5, 3, 2)", ff.FactorTypeError, "takes at most 3 arguments"),
        ("ts_corr(close, 5)", ff.FactorTypeError, "ts_corr() is missing parameter 'window'"),
        ("abs()", ff.FactorTypeError, "abs() needs 1 series argument"),
        ("ts_mean(close, 5, min_period=3)", ff.FactorTypeError, "has no parameter 'min_period'"),
        ("ts_mean(close, 5, min_periods=9)", ff.FactorTypeError, "min_periods=9 exceeds the window 5"),
        ("ema(close, 0.5)", ff.FactorTypeError, "ema() span must be a number >= 1"),
        ("delay(close, 0)", ff.FactorTypeError, "delay() periods must be a positive integer"),
        ("ts_mean(close > open, 5)", ff.FactorTypeError, "must be a number, got a boolean"),
        ("(close > open) + 1", ff.FactorTypeError, "operator '+' needs numbers, got a boolean"),
        ("where(close, 1, 2)", ff.FactorTypeError, "argument 'cond' must be a condition"),
        ("close & open", ff.FactorTypeError, "operator '&' needs conditions, got a number"),
        ("a < b < c", ff.FactorSyntaxError, "comparisons cannot be chained"),
        ("(close + 1", ff.FactorSyntaxError, "expected ')'"),
        ("close + 1)", ff.FactorSyntaxError, "unmatched ')'"),
        ("close open", ff.FactorSyntaxError, "unexpected 'open'"),
        ("", ff.FactorSyntaxError, "empty formula"),
        ("()", ff.FactorSyntaxError, "empty parentheses"),
        ("3x", ff.FactorSyntaxError, "invalid number '3x'"),
        ("close @ open", ff.FactorSyntaxError, "unexpected character '@'"),
        ("ts_mean(close, 5, min_periods=1, min_periods=2)", ff.FactorSyntaxError, "given twice"),
        ("ts_mean(close, window=5, 3)", ff.FactorSyntaxError, "positional argument after a keyword"),
    ],
)
def test_error_messages(text, cls, message):
    e = _err(text, cls)
    assert message in str(e)
    assert e.formula == text
    if text:
        assert e.line is not None and e.column is not None


@pytest.mark.parametrize(
    "text, hint",
    [
        ("$close / Ref($close, 1)", "dialect='qlib'"),
        ("Mean(close, 5)", "'Mean' is a Qlib operator"),
        ("rank(close)", "native: cs_rank"),
        ("close > 0 ? 1 : 0", "dialect='wq'"),
        ("close ^ 2", "use ** for powers"),
    ],
)
def test_dialect_mixups_give_hints(text, hint):
    with pytest.raises(ff.FactorSyntaxError) as info:
        ff.factor(text)
    assert hint in info.value.hint


@pytest.mark.parametrize(
    "hostile",
    [
        "__import__('os').system('echo pwned')",
        "close.__class__.__bases__",
        "exec('1')",
        "eval('close')",
        "lambda: 1",
        "[x for x in close]",
        "open('/etc/passwd')",
        "close; import os",
    ],
)
def test_formulas_never_execute_code(hostile, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ff.FactorError):
        ff.factor(hostile)


def test_every_registry_operator_parses_from_its_example():
    for name, op in REGISTRY.items():
        f = ff.factor(op.example)
        assert f.canonical, name


def test_errors_are_picklable():
    e = _err("ts_mean(close, 0)", ff.FactorTypeError)
    e2 = pickle.loads(pickle.dumps(e))
    assert str(e2) == str(e) and type(e2) is type(e)
