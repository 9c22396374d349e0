"""The torch path: any device, any real dtype, any number of vectors.

Row chunks of ``M`` are made by the rule (:func:`~llmrank_graph.kernels.rule.edges`) in
float32, widened to the vectors' dtype and multiplied with torch's own products: each weight
is read, converted and written again, so this path is several times slower than the kernels
on the CPU, but it runs everywhere. It uses torch's intra-op threads as they are set.

>>> import numpy as np, torch
>>> add = prepare([torch.tensor([[1.0, -2.0]])], "single", None, transpose=False)
>>> out = np.zeros((1, 1))
>>> add(np.array([[1.0, 1.0]]), out, 0.5)
>>> out
array([[1.5]])
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from .rule import CHUNK_ELEMS, edges

__all__ = ["chunks", "matmul", "prepare", "sums"]


def chunks(ws: list[torch.Tensor], combine: str, col_scale: torch.Tensor | None, device: torch.device,
           dtype: torch.dtype) -> Iterator[tuple[int, int, torch.Tensor]]:
    """``(r0, r1, rows r0:r1 of M)`` in ``dtype`` on ``device``: a few MiB at a time on the CPU, one piece on a GPU."""
    rows, cols = ws[0].shape
    step = max(1, CHUNK_ELEMS // max(cols, 1)) if device.type == "cpu" else max(rows, 1)
    scale = None if col_scale is None else col_scale.detach().to(device=device, dtype=torch.float32)
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        yield r0, r1, edges(ws, combine, scale, r0, r1, device).to(dtype)


def matmul(ws: list[torch.Tensor], combine: str, col_scale: torch.Tensor | None, v: torch.Tensor,
           transpose: bool) -> torch.Tensor:
    """``M @ v`` -- ``M.T @ v`` when ``transpose`` -- for ``v`` (c, k) -- (r, k) --, in ``v``'s dtype and device."""
    rows, cols = ws[0].shape
    k = v.shape[1]
    with torch.no_grad():
        if transpose:
            out = torch.zeros(cols, k, dtype=v.dtype, device=v.device)
            for r0, r1, e in chunks(ws, combine, col_scale, v.device, v.dtype):
                out.addmm_(e.t(), v[r0:r1])
        else:
            out = torch.empty(rows, k, dtype=v.dtype, device=v.device)
            for r0, r1, e in chunks(ws, combine, col_scale, v.device, v.dtype):
                torch.mm(e, v, out=out[r0:r1])
    return out


def sums(ws: list[torch.Tensor], combine: str, col_scale: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(column sums (c,), row sums (r,))`` of ``M`` in float64 on the weights' device."""
    rows, cols = ws[0].shape
    dev = ws[0].device
    colsum = torch.zeros(cols, dtype=torch.float64, device=dev)
    rowsum = torch.empty(rows, dtype=torch.float64, device=dev)
    with torch.no_grad():
        for r0, r1, e in chunks(ws, combine, col_scale, dev, torch.float64):
            colsum += e.sum(0)
            torch.sum(e, dim=1, out=rowsum[r0:r1])
    return colsum, rowsum


def prepare(ws: list[torch.Tensor], combine: str, col_scale: torch.Tensor | None,
            transpose: bool) -> Callable[[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor, float], None]:
    """``add(vt, out, alpha)``: ``out += alpha * (M @ v)`` (``M.T @ v``), vectors as rows, numpy or torch."""
    def add(vt, out, alpha):
        if isinstance(vt, np.ndarray):
            out += alpha * matmul(ws, combine, col_scale, torch.from_numpy(vt).t(), transpose).numpy().T
        else:
            out.add_(matmul(ws, combine, col_scale, vt.t(), transpose).t(), alpha=alpha)

    return add
