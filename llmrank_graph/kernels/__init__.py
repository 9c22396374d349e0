"""The products with |W|: one edge-weight rule and the fused kernels (numba on CPU, Triton on
CUDA, torch elsewhere) behind one `prepare_matmul`. Imports only `base` and `errors`.
"""
from .lazy import (abs_rows, abs_matmul, abs_sums, prepare_matmul, CHUNK_ELEMS)

__all__ = ['abs_rows', 'abs_matmul', 'abs_sums', 'prepare_matmul', 'CHUNK_ELEMS']
