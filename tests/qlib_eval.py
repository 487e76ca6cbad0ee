"""Evaluate Qlib expressions on an in-memory daily panel (run with the Qlib venv's python).

This is a standalone script for the ``.venv-qlib`` interpreter (``make qlib-venv``); it
imports neither factorflow nor pytest. ``tests/qlib_harness.py`` drives it from the
main virtualenv through a subprocess.

Usage
-----
Evaluate every expression for every instrument and date::

    .venv-qlib/bin/python tests/qlib_eval.py IN.npz OUT.npz [--storage-dtype float32]

Time Qlib's engine per instrument-feature (for ``benchmarks/bench_libraries.py``)::

    .venv-qlib/bin/python tests/qlib_eval.py --time-per-instrument IN.npz OUT.json \\
        [--instruments 20] [--repeats 3] [--alpha158]

Input (``IN.npz``)
------------------
``fields``
    1-D string array of field names, e.g. ``["open", "high", "low", "close", "volume",
    "vwap"]``; expressions refer to them as ``$close`` etc.
one array per field name
    ``(T, N)`` float64 (any float dtype), rows = dates, columns = instruments, NaN =
    missing.
``times``
    ``(T,)`` ``datetime64[D]``, strictly increasing: the daily calendar.
``exprs``
    1-D string array of Qlib expression strings (``"Mean($close, 5)/$close"``,
    ``"Ref($close, -2)"``, ``"IdxMax($high, 10)"``). Optional in timing mode with
    ``--alpha158``.
``symbols`` (optional)
    ``(N,)`` instrument names; default ``S0000``, ``S0001``, ...

Output (``OUT.npz``, evaluation mode)
-------------------------------------
``values``
    ``(E, T, N)`` float64: Qlib's result for expression ``e``, date ``t``, instrument
    ``n`` (Qlib returns float32; it is widened losslessly). All NaN for a rejected
    expression.
``errors``
    ``(E,)`` strings, ``""`` where Qlib evaluated the expression, otherwise
    ``"ExceptionType: message"`` from the first instrument that failed (one bad
    expression does not stop the run).
``exprs``, ``symbols``, ``qlib_version``, ``storage_dtype``
    Echo of what was evaluated and how.

How Qlib is driven, alignment and dtype
---------------------------------------
Qlib is initialised with three in-memory providers defined in this module and registered
through ``qlib.init(calendar_provider=..., instrument_provider=..., feature_provider=...)``
as ``{"class": ..., "module_path": <this module>}`` dicts; ``provider_uri`` is an empty
temporary directory, ``expression_cache=None`` and ``dataset_cache=None`` (no disk or
redis cache), the MLflow experiment manager points into the temporary directory, and
nothing is read from or written to ``~/.qlib``. There is no network access.

Evaluation goes through Qlib's own expression engine: ``ExpressionD.expression(inst,
expr, times[0], times[-1])`` (the call ``D.features`` makes per instrument and field),
which parses the text into ``qlib.data.ops`` objects and loads the leaves from the
feature provider.

* Alignment: every instrument's series spans the whole calendar, NaN inside, exactly as a
  Qlib bin file whose start index is 0. Qlib indexes a series by calendar position, so a
  window of ``N`` means the last ``N`` calendar days including the current one, whether
  or not they are NaN; rolling operators use ``min_periods=1`` (pandas skips NaN, so a
  window is computed from its non-NaN values, and at the start of the calendar from the
  truncated window). ``Ref($x, -k)`` reads ``k`` days past the end, which Qlib clips,
  so the last ``k`` rows are NaN. The result is re-indexed onto ``0..T-1``.
* Dtype: Qlib stores features as little-endian float32 (its ``.bin`` format), so by
  default (``--storage-dtype float32``) the provider hands Qlib float32 series: inputs are
  rounded to float32. Element-wise operators (``+ - * /``, ``Log``, ``Abs``,
  ``Greater``, comparisons) on float32 operands compute in float32 (NumPy keeps float32
  with Python scalars, so ``$volume+1e-12`` is ``$volume``); pandas rolling operators
  (``Mean``, ``Std``, ``Corr``, ``Quantile``, ``Rank``...; pandas also turns +-inf into
  NaN first) and the Cython ``Slope``/``Rsquare``/``Resi`` compute in and return float64,
  so element-wise operators applied to their results run in float64; the final result
  is cast to float32 by ``LocalExpressionProvider.expression``. With
  ``--storage-dtype float64`` the provider hands float64 series instead, which isolates
  operator semantics from input rounding (only the final float32 cast remains); this is
  not what a real Qlib data directory does. For a parity test, round the panel to float32
  first and feed the same values to both sides.

Timing mode
-----------
Times ``D.features(instruments[:K], exprs, times[0], times[-1])`` with ``kernels=1``
(single process, the in-process joblib path), i.e. Qlib's complete per-instrument path:
expression evaluation with its in-memory sub-expression cache, the per-instrument
DataFrame and the final concat. Qlib's memory cache is cleared before every repeat. The
result is seconds per instrument-feature = wall time / (K * E), median over repeats;
``ExpressionD.expression`` alone (no DataFrame assembly) is timed the same way. The
in-memory feature provider costs less than reading bin files, so this is a lower bound
on Qlib's cost with real data.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import qlib
from qlib.data.data import CalendarProvider, FeatureProvider, InstrumentProvider

# The panel the providers serve. Module-level because Qlib instantiates the provider
# classes itself from {"class", "module_path"} dicts.
_PANEL: dict = {
    "calendar": None,  # list[pd.Timestamp]
    "series": {},  # field -> (N, T) C-contiguous array in the storage dtype
    "column": {},  # instrument -> column index
}


class ArrayCalendarProvider(CalendarProvider):
    """Calendar provider serving the in-memory daily calendar."""

    def load_calendar(self, freq, future):
        """Return the calendar as a list of ``pd.Timestamp`` (``freq``/``future`` ignored)."""
        return list(_PANEL["calendar"])


class ArrayInstrumentProvider(InstrumentProvider):
    """Instrument provider: every instrument spans the whole calendar."""

    def list_instruments(self, instruments, start_time=None, end_time=None, freq="day", as_list=False):
        """List all instruments (market and filters are ignored), each with one full-calendar span."""
        names = list(_PANEL["column"])
        if as_list:
            return names
        cal = _PANEL["calendar"]
        start = pd.Timestamp(start_time or cal[0])
        end = pd.Timestamp(end_time or cal[-1])
        return {name: [(max(start, cal[0]), min(end, cal[-1]))] for name in names}


class ArrayFeatureProvider(FeatureProvider):
    """Feature provider: slices of the in-memory ``(N, T)`` arrays, indexed by calendar position.

    Mirrors ``FileFeatureStorage.__getitem__``: the returned ``pd.Series`` has a
    ``RangeIndex`` of calendar positions, clipped to ``[0, T-1]``.
    """

    def feature(self, instrument, field, start_index, end_index, freq):
        """Return ``$field`` of ``instrument`` for calendar positions ``start_index..end_index``."""
        name = str(field)[1:]
        try:
            data = _PANEL["series"][name]
        except KeyError:
            raise KeyError(f"unknown field ${name}; the panel has {sorted(_PANEL['series'])}") from None
        row = data[_PANEL["column"][instrument]]
        si = max(int(start_index), 0)
        ei = min(int(end_index), row.shape[0] - 1)
        if si > ei:
            return pd.Series(dtype=row.dtype)
        return pd.Series(row[si : ei + 1], index=pd.RangeIndex(si, ei + 1))


def load_panel(arrays: dict, times, symbols=None, storage_dtype: str = "float32") -> list[str]:
    """Install a panel for the providers.

    Parameters
    ----------
    arrays : dict of str to ndarray
        Field name -> ``(T, N)`` float array, NaN = missing.
    times : array-like of datetime64
        ``(T,)`` strictly increasing daily calendar.
    symbols : sequence of str, optional
        ``(N,)`` instrument names; default ``S0000``...
    storage_dtype : {"float32", "float64"}
        Dtype Qlib reads the features in; ``"float32"`` is Qlib's bin format.

    Returns
    -------
    list of str
        The instrument names, in column order.
    """
    if storage_dtype not in ("float32", "float64"):
        raise ValueError(f"storage_dtype must be 'float32' or 'float64', got {storage_dtype!r}")
    cal = pd.DatetimeIndex(np.asarray(times, dtype="datetime64[ns]"))
    if cal.size == 0 or not cal.is_monotonic_increasing or not cal.is_unique:
        raise ValueError("times must be a non-empty, strictly increasing calendar")
    shapes = {k: np.shape(v) for k, v in arrays.items()}
    if not arrays or len(set(shapes.values())) != 1:
        raise ValueError(f"fields must be (T, N) arrays of one shape, got {shapes}")
    T, N = next(iter(shapes.values()))
    if T != cal.size:
        raise ValueError(f"fields have {T} rows but times has {cal.size} dates")
    names = [f"S{i:04d}" for i in range(N)] if symbols is None else [str(s) for s in symbols]
    if len(names) != N or len(set(names)) != N:
        raise ValueError(f"need {N} distinct symbols, got {len(names)} ({len(set(names))} distinct)")
    _PANEL["calendar"] = list(cal)
    _PANEL["series"] = {
        str(k): np.ascontiguousarray(np.asarray(v, dtype=np.float64).T.astype(storage_dtype))
        for k, v in arrays.items()
    }
    _PANEL["column"] = {name: i for i, name in enumerate(names)}
    return names


def init_qlib(workdir: str) -> None:
    """Initialise Qlib on the in-memory providers, with every cache off and no ``~/.qlib``.

    Parameters
    ----------
    workdir : str
        Empty temporary directory used as ``provider_uri`` and MLflow root.
    """
    module = sys.modules[__name__]
    qlib.init(
        provider_uri=workdir,
        calendar_provider={"class": "ArrayCalendarProvider", "module_path": module},
        instrument_provider={"class": "ArrayInstrumentProvider", "module_path": module},
        feature_provider={"class": "ArrayFeatureProvider", "module_path": module},
        expression_provider="LocalExpressionProvider",
        dataset_provider="LocalDatasetProvider",
        expression_cache=None,
        dataset_cache=None,
        calendar_cache=None,
        local_cache_path=str(Path(workdir) / "simple_cache"),
        kernels=1,
        joblib_backend="sequential",
        logging_level=logging.WARNING,
        exp_manager={
            "class": "MLflowExpManager",
            "module_path": "qlib.workflow.expm",
            "kwargs": {"uri": "file:" + str(Path(workdir) / "mlruns"), "default_exp_name": "unused"},
        },
    )


def evaluate(exprs: list[str], names: list[str], T: int) -> tuple[np.ndarray, list[str]]:
    """Evaluate expressions with ``ExpressionD.expression`` for every instrument.

    Parameters
    ----------
    exprs : list of str
        Qlib expression strings.
    names : list of str
        Instruments, in output column order.
    T : int
        Calendar length.

    Returns
    -------
    values : ndarray
        ``(E, T, N)`` float64 (Qlib's float32 widened); NaN where Qlib has no value.
    errors : list of str
        Per expression, ``""`` or the first error Qlib raised for it.
    """
    from qlib.data.data import ExpressionD

    cal = _PANEL["calendar"]
    values = np.full((len(exprs), T, len(names)), np.nan)
    errors = [""] * len(exprs)
    for e, expr in enumerate(exprs):
        for n, inst in enumerate(names):
            try:
                s = ExpressionD.expression(inst, expr, cal[0], cal[-1], "day")
            except Exception as exc:  # Qlib raises NameError/SyntaxError/ValueError/...
                errors[e] = f"{type(exc).__name__}: {exc}".strip()
                break
            s = pd.Series(np.asarray(s, dtype=np.float64), index=np.asarray(s.index, dtype=np.int64))
            values[e, :, n] = s.reindex(np.arange(T)).to_numpy()
    return values, errors


def time_per_instrument(exprs: list[str], names: list[str], instruments: int, repeats: int) -> dict:
    """Time Qlib computing ``exprs`` for the first ``instruments`` instruments.

    Parameters
    ----------
    exprs : list of str
        Qlib expression strings.
    names : list of str
        All instruments of the panel.
    instruments : int
        ``K``, how many instruments to compute.
    repeats : int
        Timed runs; Qlib's memory cache is cleared before each.

    Returns
    -------
    dict
        Sizes, per-run wall times, and the medians in seconds per instrument-feature for
        ``D.features`` (``sec_per_instrument_feature``) and for bare
        ``ExpressionD.expression`` calls (``expression_sec_per_instrument_feature``).
    """
    from qlib.data import D
    from qlib.data.cache import H
    from qlib.data.data import ExpressionD

    cal = _PANEL["calendar"]
    insts = names[:instruments]
    K, E = len(insts), len(exprs)
    # Parse once outside the timed region (Qlib caches parsed expressions per process).
    for expr in exprs:
        ExpressionD.get_expression_instance(expr)
    feat_runs, expr_runs = [], []
    shape = None
    for _ in range(repeats):
        H.clear()
        t0 = time.perf_counter()
        df = D.features(insts, exprs, cal[0], cal[-1], freq="day")
        feat_runs.append(time.perf_counter() - t0)
        shape = list(df.shape)
        del df
        H.clear()
        t0 = time.perf_counter()
        for inst in insts:
            for expr in exprs:
                ExpressionD.expression(inst, expr, cal[0], cal[-1], "day")
        expr_runs.append(time.perf_counter() - t0)
    return {
        "qlib_version": qlib.__version__,
        "T": len(cal),
        "instruments": K,
        "features": E,
        "repeats": repeats,
        "storage_dtype": str(next(iter(_PANEL["series"].values())).dtype),
        "features_frame_shape": shape,
        "features_run_s": feat_runs,
        "expression_run_s": expr_runs,
        "sec_per_instrument_feature": statistics.median(feat_runs) / (K * E),
        "expression_sec_per_instrument_feature": statistics.median(expr_runs) / (K * E),
        "method": "D.features, kernels=1 (single process), in-memory providers, caches off; "
        "median wall time / (instruments * features)",
    }


def alpha158_exprs() -> tuple[list[str], list[str]]:
    """Return Qlib's own Alpha158 ``(fields, names)`` from ``Alpha158DL.get_feature_config()``."""
    from qlib.contrib.data.loader import Alpha158DL

    fields, names = Alpha158DL.get_feature_config()
    return list(fields), list(names)


def _read_input(path: str) -> tuple[dict, np.ndarray, list[str] | None, list[str] | None]:
    with np.load(path, allow_pickle=False) as z:
        if "fields" not in z.files or "times" not in z.files:
            raise ValueError(f"{path}: needs 'fields' and 'times' arrays, has {z.files}")
        fields = [str(f) for f in z["fields"]]
        missing = [f for f in fields if f not in z.files]
        if missing:
            raise ValueError(f"{path}: fields {missing} listed but no array for them")
        arrays = {f: z[f] for f in fields}
        times = z["times"]
        exprs = [str(x) for x in z["exprs"]] if "exprs" in z.files else None
        symbols = [str(x) for x in z["symbols"]] if "symbols" in z.files else None
    return arrays, times, exprs, symbols


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("input", help="IN.npz: fields, one (T, N) array per field, times, exprs[, symbols]")
    p.add_argument("output", help="OUT.npz (evaluation) or OUT.json (timing)")
    p.add_argument("--storage-dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--time-per-instrument", action="store_true", help="time Qlib instead of evaluating")
    p.add_argument("--instruments", type=int, default=20, help="timing: instruments K")
    p.add_argument("--repeats", type=int, default=3, help="timing: repeats (median reported)")
    p.add_argument("--alpha158", action="store_true", help="use Qlib's Alpha158DL expressions")
    args = p.parse_args(argv)

    arrays, times, exprs, symbols = _read_input(args.input)
    if args.alpha158:
        exprs = alpha158_exprs()[0]
    if not exprs:
        p.error("no expressions: put 'exprs' in the input or pass --alpha158")
    names = load_panel(arrays, times, symbols, args.storage_dtype)
    with tempfile.TemporaryDirectory(prefix="qlib_eval_") as workdir:
        init_qlib(workdir)
        if args.time_per_instrument:
            if args.instruments < 1 or args.instruments > len(names) or args.repeats < 1:
                p.error(f"--instruments must be in 1..{len(names)} and --repeats >= 1")
            result = time_per_instrument(exprs, names, args.instruments, args.repeats)
            Path(args.output).write_text(json.dumps(result, indent=2))
            print(json.dumps(result))
        else:
            values, errors = evaluate(exprs, names, len(times))
            np.savez(
                args.output,
                values=values,
                errors=np.array(errors, dtype=str),
                exprs=np.array(exprs, dtype=str),
                symbols=np.array(names, dtype=str),
                qlib_version=np.array(qlib.__version__),
                storage_dtype=np.array(args.storage_dtype),
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
