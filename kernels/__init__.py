"""Chunk kernels: numbers only.

``kernels`` imports nothing from ``factors``, ``engine`` or ``cluster`` and never imports
dask. Each family lives in one module per backend (``cpu/rolling.py``, ``cuda/rolling.py``...)
and a kernel is looked up by its registry name ``"family.function"`` through :func:`resolve`.
"""
from __future__ import annotations

import importlib

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
