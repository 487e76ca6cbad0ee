"""Factor libraries: named sets of published formulas, kept as text in ``factors/formulas/``.

======================  =======  =========  ==============================================
library                 dialect  factors    source
======================  =======  =========  ==============================================
``alpha158``            qlib     158        Qlib 0.9 ``Alpha158`` handler (default config)
``alpha360``            qlib     360        Qlib 0.9 ``Alpha360`` handler
``alpha101``            wq       101        Kakushadze, "101 Formulaic Alphas" (2016)
======================  =======  =========  ==============================================

Each file holds one ``NAME: formula`` per line in the library's dialect, exactly as published;
:func:`library` parses it into :class:`~factorflow.factors.expr.Factor` objects. Inputs the
formulas need: Alpha158/Alpha360 read ``open high low close volume vwap`` (daily bars);
Alpha101 reads ``open high low close volume vwap``, ``cap`` (alpha056) and the group fields
``sector industry subindustry`` (``IndClass.*``), and derives ``returns`` and ``adv{d}`` (see
``docs/dialects.md``).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from .dialects import parse
from .errors import FactorError
from .expr import Factor

__all__ = ["library", "libraries", "library_text"]

_DIR = Path(__file__).with_name("formulas")
_LIBRARIES = {"alpha158": "qlib", "alpha360": "qlib", "alpha101": "wq"}


def libraries() -> list[str]:
    """Names of the built-in factor libraries.

    Examples
    --------
    >>> import factorflow as ff
    >>> ff.libraries()
    ['alpha101', 'alpha158', 'alpha360']
    """
    return sorted(_LIBRARIES)


def library_text(name: str) -> dict[str, str]:
    """The formulas of library ``name`` as published: name -> formula text (in the library's dialect)."""
    _check(name)
    out: dict[str, str] = {}
    path = _DIR / f"{name}.txt"
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, formula = line.partition(":")
        if not sep or not key.strip() or not formula.strip():
            raise ValueError(f"{path}:{lineno}: expected 'NAME: formula', got {line!r}")
        key = key.strip()
        if key in out:
            raise ValueError(f"{path}:{lineno}: factor {key!r} defined twice")
        out[key] = formula.strip()
    return out


def library(name: str, compat: bool = False) -> dict[str, Factor]:
    """The factors of a built-in library: a dict name -> :class:`Factor`, in published order.

    Parameters
    ----------
    name : str
        One of :func:`libraries`: ``"alpha158"``, ``"alpha360"`` (Qlib), ``"alpha101"``
        (WorldQuant 101).
    compat : bool
        Qlib libraries only: parse with the ``qlib-compat`` dialect, which reproduces Qlib 0.9's
        known defects instead of correct math (``WMA``; ``IdxMax``/``IdxMin`` on windows holding
        NaN, which Alpha158's IMAX/IMIN/IMXD features use).

    Examples
    --------
    >>> import factorflow as ff
    >>> lib = ff.library("alpha158")
    >>> len(lib), lib["MA5"]
    (158, <Factor ts_mean(close, 5, min_periods=1) / close>)
    >>> len(ff.library("alpha101")), ff.library("alpha101")["alpha101"]
    (101, <Factor (close - open) / (high - low + 0.001)>)
    """
    _check(name)
    dialect = _LIBRARIES[name]
    if compat and dialect == "qlib":
        dialect = "qlib-compat"
    return dict(_parsed(name, dialect))


@lru_cache(maxsize=None)
def _parsed(name: str, dialect: str) -> tuple:
    out = []
    for key, text in library_text(name).items():
        try:
            out.append((key, parse(text, dialect)))
        except FactorError as e:  # a packaging defect: say which formula of which file
            raise e.with_name(f"{name}:{key}") from None
    return tuple(out)


def _check(name: str) -> None:
    if name not in _LIBRARIES:
        import difflib

        close = difflib.get_close_matches(str(name), list(_LIBRARIES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown factor library {name!r}{hint} available: {', '.join(libraries())}")
