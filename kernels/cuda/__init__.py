"""CUDA kernels (GPU backend, issue 5)."""
