"""Run Qlib's expression engine from the main virtualenv, through a subprocess.

Qlib (``pyqlib``) lives in its own virtualenv ``.venv-qlib`` at the repository root
(``make qlib-venv``), never in the main ``.venv``: its dependencies (pyarrow pin, mlflow,
jupyter, cvxpy) conflict with ours. This module finds that interpreter and runs
``tests/qlib_eval.py`` with it; see that script for how Qlib is initialised on in-memory
providers, how it aligns series and which dtype it computes in.

Typical use in a test::

    from qlib_harness import qlib_eval, qlib_python, why_unavailable

    if qlib_python() is None:
        pytest.skip(why_unavailable())
    values, errors = qlib_eval({"close": close, ...}, times, ["Mean($close, 5)"])

Set ``FACTORFLOW_QLIB_PYTHON`` to use another interpreter that has ``qlib`` installed.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
QLIB_VENV = REPO_ROOT / ".venv-qlib"
EVAL_SCRIPT = Path(__file__).resolve().with_name("qlib_eval.py")
ENV_VAR = "FACTORFLOW_QLIB_PYTHON"
_PROBE = "import qlib, qlib.data.ops; print(qlib.__version__)"


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _clean_env() -> dict[str, str]:
    """Environment for the Qlib interpreter: no PYTHONPATH/PYTHONHOME leaking in from ours."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.setdefault("PYTHONWARNINGS", "ignore")
    return env


@functools.lru_cache(maxsize=1)
def _probe() -> tuple[str | None, str]:
    """Locate a Python that imports qlib: ``(path, "")`` or ``(None, reason)``."""
    override = os.environ.get(ENV_VAR)
    if override:
        candidate = Path(override)
        origin = f"${ENV_VAR}={override}"
    else:
        candidate = QLIB_VENV / "bin" / "python"
        origin = str(candidate)
        failed_log = QLIB_VENV / "install-failed.log"
        if failed_log.exists():
            return None, (
                f"pyqlib did not install into {QLIB_VENV} (make qlib-venv); "
                f"rm -rf {QLIB_VENV.name} and run make qlib-venv to retry. Log tail:\n"
                + _tail(failed_log.read_text(errors="replace"), 10)
            )
    if not candidate.exists():
        return None, f"no Qlib interpreter at {origin}; run `make qlib-venv` to build {QLIB_VENV.name}"
    try:
        proc = subprocess.run(
            [str(candidate), "-c", _PROBE],
            capture_output=True,
            text=True,
            timeout=180,
            env=_clean_env(),
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{origin} could not run `import qlib`: {exc}"
    if proc.returncode != 0:
        return None, f"{origin} cannot import qlib:\n{_tail(proc.stderr, 10)}"
    return str(candidate), ""


def qlib_python() -> str | None:
    """Path of the Python interpreter with Qlib, or ``None`` (see :func:`why_unavailable`).

    Returns
    -------
    str or None
        ``.venv-qlib/bin/python`` (or ``$FACTORFLOW_QLIB_PYTHON``) if it exists and imports
        ``qlib``; otherwise ``None``. The probe runs once per process.
    """
    return _probe()[0]


def why_unavailable() -> str:
    """Why :func:`qlib_python` is ``None`` (``""`` when Qlib is available), for ``pytest.skip``."""
    return _probe()[1]


def _require_python() -> str:
    py = qlib_python()
    if py is None:
        raise RuntimeError(f"Qlib is not available: {why_unavailable()}")
    return py


def _write_input(path: Path, arrays: dict, times, exprs: list[str] | None, symbols) -> None:
    if not arrays:
        raise ValueError("arrays is empty: need at least one (T, N) field")
    reserved = {"fields", "times", "exprs", "symbols"} & set(arrays)
    if reserved:
        raise ValueError(f"field names {sorted(reserved)} are reserved by the npz format")
    payload = {str(k): np.asarray(v, dtype=np.float64) for k, v in arrays.items()}
    for k, v in payload.items():
        if v.ndim != 2:
            raise ValueError(f"field {k!r} must be a (T, N) array, got shape {v.shape}")
    extra = {}
    if exprs is not None:
        extra["exprs"] = np.array([str(e) for e in exprs], dtype=str)
    if symbols is not None:
        extra["symbols"] = np.array([str(s) for s in symbols], dtype=str)
    np.savez(
        path,
        fields=np.array(list(payload), dtype=str),
        times=np.asarray(times).astype("datetime64[D]"),
        **extra,
        **payload,
    )


def _run(args: list[str], workdir: str, timeout: float) -> subprocess.CompletedProcess:
    cmd = [_require_python(), str(EVAL_SCRIPT), *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=workdir, env=_clean_env())
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        raise RuntimeError(f"Qlib evaluation timed out after {timeout:.0f}s: {' '.join(cmd)}\n{_tail(err)}") from None
    if proc.returncode != 0:
        raise RuntimeError(
            f"Qlib evaluation failed (exit {proc.returncode}): {' '.join(cmd)}\n"
            f"--- Qlib stderr (tail) ---\n{_tail(proc.stderr)}"
        )
    return proc


def qlib_eval(
    arrays: dict[str, np.ndarray],
    times,
    exprs: list[str],
    *,
    symbols=None,
    storage_dtype: str = "float32",
    timeout: float = 900.0,
) -> tuple[np.ndarray, dict[str, str]]:
    """Evaluate Qlib expressions on a daily panel with Qlib's own engine.

    Parameters
    ----------
    arrays : dict of str to ndarray
        Field name (``"close"`` for ``$close``) -> ``(T, N)`` float array, NaN = missing.
    times : array-like of datetime64
        ``(T,)`` strictly increasing daily calendar.
    exprs : list of str
        Qlib expression strings, e.g. ``"Corr($close, Log($volume+1), 10)"``.
    symbols : sequence of str, optional
        Instrument names for the ``N`` columns.
    storage_dtype : {"float32", "float64"}
        Dtype Qlib reads the fields in; ``"float32"`` is what Qlib's bin files hold.
    timeout : float
        Seconds before the subprocess is killed.

    Returns
    -------
    values : ndarray
        ``(E, T, N)`` float64, Qlib's float32 results widened; all NaN for rejected
        expressions.
    errors : dict of str to str
        Expression -> Qlib's error message, only for expressions Qlib rejected.

    Raises
    ------
    RuntimeError
        Qlib is unavailable, or the subprocess failed or timed out (message carries the
        tail of Qlib's stderr).
    """
    exprs = [str(e) for e in exprs]
    with tempfile.TemporaryDirectory(prefix="ff_qlib_") as tmp:
        src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        _write_input(src, arrays, times, exprs, symbols)
        _run([str(src), str(dst), "--storage-dtype", storage_dtype], tmp, timeout)
        with np.load(dst, allow_pickle=False) as z:
            values = z["values"]
            errs = [str(e) for e in z["errors"]]
    T, N = next(iter(arrays.values())).shape
    if values.shape != (len(exprs), T, N):
        raise RuntimeError(f"Qlib returned values of shape {values.shape}, expected {(len(exprs), T, N)}")
    return values, {expr: msg for expr, msg in zip(exprs, errs) if msg}


def qlib_time_per_instrument(
    arrays: dict[str, np.ndarray],
    times,
    exprs: list[str] | None = None,
    *,
    instruments: int = 20,
    repeats: int = 3,
    storage_dtype: str = "float32",
    timeout: float = 900.0,
) -> dict:
    """Time Qlib computing ``exprs`` for the first ``instruments`` columns of the panel.

    Parameters
    ----------
    arrays, times, storage_dtype, timeout
        As for :func:`qlib_eval`; only the first ``instruments`` columns are computed.
    exprs : list of str, optional
        Expressions to time; ``None`` uses Qlib's own ``Alpha158DL`` feature config.
    instruments : int
        ``K`` instruments computed per run.
    repeats : int
        Runs; the median is reported.

    Returns
    -------
    dict
        See ``qlib_eval.time_per_instrument``; the headline figure is
        ``sec_per_instrument_feature`` (``D.features`` with ``kernels=1``, median wall
        time / (K * E)).
    """
    with tempfile.TemporaryDirectory(prefix="ff_qlib_") as tmp:
        src, dst = Path(tmp) / "in.npz", Path(tmp) / "timing.json"
        _write_input(src, arrays, times, exprs, None)
        args = [str(src), str(dst), "--time-per-instrument", "--instruments", str(instruments)]
        args += ["--repeats", str(repeats), "--storage-dtype", storage_dtype]
        if exprs is None:
            args.append("--alpha158")
        _run(args, tmp, timeout)
        return json.loads(dst.read_text())
