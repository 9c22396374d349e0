"""The products with |W|: one edge-weight rule, and kernels that read each weight once.

A weight block's matrix is ``M = combine(|W0|, |W1|) * col_scale``. The sweep's products
(:func:`prepare_matmul`, :func:`abs_matmul`, :func:`abs_sums`) run on one of three paths
with one semantics, one module each: ``numba_cpu`` (with ``numba_jit``, its kernels) on the
CPU, ``triton_cuda`` on CUDA, ``torch_path`` anywhere; ``products`` chooses per call by the
``kernel`` option and ``rule`` holds the edge-weight rule and the argument checks. Which
kernel and how many threads are options (:func:`options`, ``kernel=``/``threads=``
arguments; ``choice``), never process-wide state. numba and triton are imported on the first
product that uses them, not with the package.

Imports only ``base`` and ``errors``.

>>> import torch
>>> from llmrank_graph.kernels import abs_sums, options
>>> w = torch.tensor([[1.0, -2.0], [3.0, -4.0]], dtype=torch.bfloat16)
>>> with options(kernel="torch"):
...     abs_sums([w], "single", None)
(tensor([4., 6.], dtype=torch.float64), tensor([3., 7.], dtype=torch.float64))
"""

from .choice import KERNELS, KernelOptions, current_options, options
from .products import Product, abs_matmul, abs_sums, fused_available, prepare_matmul, unsupported
from .rule import CHUNK_ELEMS, COMBINES, abs_rows

__all__ = ["abs_rows", "abs_matmul", "abs_sums", "prepare_matmul", "CHUNK_ELEMS", "COMBINES", "KERNELS",
           "KernelOptions", "Product", "current_options", "fused_available", "options", "unsupported"]
