"""Chunk kernels: numbers only.

``kernels`` imports nothing from ``factors``, ``engine`` or ``cluster`` and never imports
dask. Each family lives in one module per backend (``cpu/rolling.py``, ``cuda/rolling.py``...)
and a kernel is looked up by its registry name ``"family.function"`` through :func:`resolve`.
"""
from __future__ import annotations

import importlib

if __name__ != "factorflow.kernels":  # pragma: no cover - guard, see below
    # Numba's on-disk cache records the module name of each kernel; importing these files as a
    # top-level ``kernels`` package (repo root on sys.path) writes cache entries that fail to
    # load under the installed name, and vice versa. Refuse the second name outright.
    raise ImportError(f"import the kernels as 'factorflow.kernels', not {__name__!r} "
                      "(pip install -e . maps the repository's kernels/ folder there)")

__all__ = ["resolve"]

_BACKEND_PACKAGES = {"cpu": "factorflow.kernels.cpu", "gpu": "factorflow.kernels.cuda"}


def resolve(name: str, backend: str = "cpu"):
    """Return the kernel function registered as ``"family.function"`` for ``backend``.

    Examples
    --------
    >>> from factorflow.kernels import resolve
    >>> resolve("rolling.ts_mean").__name__
    'ts_mean'
    """
    try:
        package = _BACKEND_PACKAGES[backend]
    except KeyError:
        raise ValueError(f"unknown backend {backend!r}; expected one of {sorted(_BACKEND_PACKAGES)}") from None
    family, _, func = name.partition(".")
    if not func:
        raise ValueError(f"kernel name {name!r} must look like 'family.function'")
    module = importlib.import_module(f"{package}.{family}")
    try:
        return getattr(module, func)
    except AttributeError:
        raise LookupError(f"backend {backend!r} has no kernel {name!r}") from None
