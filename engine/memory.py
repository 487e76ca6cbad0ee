"""Process-wide memory policy: NumPy's transparent-huge-page advice.

NumPy asks the kernel for transparent huge pages (``madvise(MADV_HUGEPAGE)``) on every allocation
of 4 MiB or more. Where the kernel's THP ``defrag`` policy is ``madvise`` or ``always`` (the
bracketed word of ``/sys/kernel/mm/transparent_hugepage/defrag``), such a region is faulted in by
*direct compaction*: the faulting thread stops to defragment memory. factorflow allocates large
blocks all the time (stage outputs, scratch buffers, results), from several threads of one process
(the embedded cluster), and there the stalls serialise the threads. Measured on the 2-core
reference VM (defrag ``madvise``), embedded cluster, 1000 x 2000 panel: Alpha101 56-77 s with the
advice, 7.4-9.0 s without; Alpha158 1.8-5.2 s with, 2.3-3.0 s without; worker *processes* were not
affected (each has its own address space).

So on import, :func:`configure_numpy_hugepages` turns NumPy's advice off when the defrag policy
would stall, and leaves it on otherwise (``defer``, ``defer+madvise``, ``never``: no stall, and
huge pages still help the kernels' TLB reach). ``FACTORFLOW_NUMPY_HUGEPAGE=1`` keeps NumPy's
advice whatever the policy, ``=0`` turns it off whatever the policy.
"""
from __future__ import annotations

import os

__all__ = ["configure_numpy_hugepages"]

_DEFRAG = "/sys/kernel/mm/transparent_hugepage/defrag"


def _stalling_defrag() -> bool:
    try:
        with open(_DEFRAG) as f:
            text = f.read()
    except OSError:  # not Linux, or no THP: nothing to decide
        return False
    chosen = text[text.find("[") + 1:text.find("]")] if "[" in text else text.strip()
    return chosen in ("madvise", "always")


def configure_numpy_hugepages() -> bool | None:
    """Apply the policy above; returns NumPy's resulting setting (None if NumPy cannot tell).

    Examples
    --------
    >>> from factorflow.engine.memory import configure_numpy_hugepages
    >>> configure_numpy_hugepages() in (True, False, None)
    True
    """
    import numpy as np

    try:
        setter = np._core.multiarray._set_madvise_hugepage
    except AttributeError:  # NumPy < 2: np.core
        try:
            setter = np.core.multiarray._set_madvise_hugepage
        except AttributeError:
            return None
    forced = os.environ.get("FACTORFLOW_NUMPY_HUGEPAGE")
    if forced in ("0", "1"):
        enable = forced == "1"
    else:
        enable = not _stalling_defrag()
    setter(enable)  # returns the previous value
    return enable
