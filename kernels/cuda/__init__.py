"""Numba-CUDA chunk kernels: the GPU twins of ``kernels/cpu/``, under the same module and function
names (``resolve("rolling.ts_mean", "gpu")``).

Importing any module here imports ``numba.cuda`` (the ``numba-cuda`` package); nothing on the CPU
path imports this package. The kernels also run under the Numba CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``), which is how CI checks them against the CPU kernels.

Conventions (see ``_jit.py``):

* every array argument is a CUDA device array (anything with ``__cuda_array_interface__``: Numba
  device arrays, CuPy arrays), 2-D ``(time, symbol)`` and C-contiguous; element-wise operands may
  also be Python numbers; ``out`` is a device array of the input's shape and dtype;
* float32 and float64; accumulation in float64, one rounding on the store;
* kernels are launched on the current CUDA stream of Numba (the default stream) and return
  without synchronising; the engine synchronises when it copies a stage's output to the host.

Parallelism per family (docs/gpu.md):

* element-wise and window kernels: one thread per output cell, a 2-D grid over (time, symbol),
  so a single long series and a wide panel both fill the GPU;
* recursive kernels (``ema``, ``ewma``, ``cumsum``): a three-phase segmented scan along time
  (reduce segments, scan the carries, apply), the segment count chosen from the shape;
* cross-sectional kernels: one thread block per time row.
"""
