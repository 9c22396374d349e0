"""The edge-weight rule of weight blocks, in one place, and the products that use it.

A weight block's matrix is ``M = combine(|W0|, |W1|) * col_scale[None, :]``, shape (r, c):
``W0``/``W1`` are model weights (fp32, bf16 or fp16), ``combine`` is ``'single'`` (W0 only),
``'sum'`` or ``'max'``, and ``col_scale`` an optional (c,) activation scale. The rule is
applied in float32, the edge list's dtype, so that every backend sees the same numbers: each
weight is converted to float32 (exact for bf16/fp16), its absolute value taken, the two
combined and the column scale (cast to float32) applied in float32. Only then are the
values widened to float64 for accumulation.

:func:`abs_rows` is the rule itself. :func:`abs_matmul` and :func:`abs_sums` are the
products the sweep needs; they use the fused kernels of :mod:`llmrank_graph._fused` (each
weight read once at its stored dtype, the rule applied in registers) when those run here,
and otherwise fall back to row chunks of :func:`abs_rows`, saying why at debug level.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

logger = logging.getLogger(__name__)

__all__ = ["abs_rows", "abs_matmul", "abs_sums", "CHUNK_ELEMS"]

#: Elements per row chunk of the fallback: a float64 chunk (2 MiB) stays in cache.
CHUNK_ELEMS = 1 << 18


def abs_rows(weights: Sequence[torch.Tensor], combine: str, col_scale: torch.Tensor | None, r0: int = 0,
             r1: int | None = None) -> torch.Tensor:
    """Rows ``r0:r1`` of ``M`` as a new float32 tensor, on the weights' device (the rule)."""
    w0 = weights[0]
    r1 = w0.shape[0] if r1 is None else r1
    with torch.no_grad():
        c = w0[r0:r1].to(torch.float32, copy=True).abs_()
        if combine == "sum":
            c += weights[1][r0:r1].to(torch.float32).abs()
        elif combine == "max":
            torch.maximum(c, weights[1][r0:r1].to(torch.float32).abs(), out=c)
        if col_scale is not None:
            c *= col_scale.to(device=c.device, dtype=torch.float32)
    return c


def _fast():
    """The fused kernels module when it can run here, else None (debug-logged once per reason)."""
    try:
        from . import _fused
    except ImportError as e:  # pragma: no cover - the module ships with the package
        _why(f"fused kernels unavailable ({e})")
        return None
    return _fused


_SEEN: set[str] = set()


def _why(reason: str) -> None:
    if reason not in _SEEN:
        _SEEN.add(reason)
        logger.debug("edge weights: %s; using the torch fallback", reason)


def _chunks(weights, combine, col_scale):
    rows, cols = weights[0].shape
    step = rows if weights[0].device.type == "cuda" else max(1, CHUNK_ELEMS // max(cols, 1))
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        yield r0, r1, abs_rows(weights, combine, col_scale, r0, r1).to(torch.float64)


def abs_matmul(weights: Sequence[torch.Tensor], combine: str, col_scale: torch.Tensor | None, v: torch.Tensor,
               transpose: bool = False) -> torch.Tensor:
    """``M @ v`` (v: (c, k) -> (r, k)) or ``M.T @ v`` (v: (r, k) -> (c, k)), accumulated in float64.

    Returns a float64 tensor on ``v``'s device.
    """
    fused = _fast()
    if fused is not None:
        reason = fused.unsupported(weights, combine, col_scale, v)
        if reason is None:
            return fused.abs_matmul(weights, combine, col_scale, v, transpose)
        _why(reason)
    v = v.to(torch.float64)
    rows, cols = weights[0].shape
    with torch.no_grad():
        if transpose:
            out = torch.zeros(cols, v.shape[1], dtype=torch.float64, device=v.device)
            for r0, r1, c in _chunks(weights, combine, col_scale):
                out.addmm_(c.t(), v[r0:r1])
        else:
            out = torch.empty(rows, v.shape[1], dtype=torch.float64, device=v.device)
            for r0, r1, c in _chunks(weights, combine, col_scale):
                torch.mm(c, v, out=out[r0:r1])
    return out


def abs_sums(weights: Sequence[torch.Tensor], combine: str,
             col_scale: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(column sums (c,), row sums (r,))`` of ``M`` in float64, reading the weights once."""
    fused = _fast()
    if fused is not None:
        reason = fused.unsupported(weights, combine, col_scale, None)
        if reason is None:
            return fused.abs_sums(weights, combine, col_scale)
        _why(reason)
    rows, cols = weights[0].shape
    dev = weights[0].device
    colsum = torch.zeros(cols, dtype=torch.float64, device=dev)
    rowsum = torch.empty(rows, dtype=torch.float64, device=dev)
    with torch.no_grad():
        for r0, r1, c in _chunks(weights, combine, col_scale):
            colsum += c.sum(0)
            torch.sum(c, dim=1, out=rowsum[r0:r1])
    return colsum, rowsum
