"""The products of weight blocks, imported lazily from :mod:`llmrank_graph.kernels.fused`.

A weight block's matrix is ``M = combine(|W0|, |W1|) * col_scale[None, :]``. The rule that
defines those numbers (float32 absolute values, the gate combination, the column scale, then
widened for float64 accumulation) and every product that uses it live in one place,
:mod:`llmrank_graph.kernels.fused`: numba kernels that read each weight once at its stored dtype,
and a torch path with the same numbers where the kernels do not run (no numba, another
dtype, a GPU without Triton), chosen per call and logged at debug level.

This module only defers importing ``_fused`` (and numba with it, about 0.3 s) until a block
is first multiplied, so commands that never touch weights do not pay for it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["abs_rows", "abs_matmul", "abs_sums", "prepare_matmul", "CHUNK_ELEMS"]

#: Elements per row chunk when a block is materialised in pieces (a float64 chunk is 2 MiB).
CHUNK_ELEMS = 1 << 18


def _fused():
    from . import fused as _fused

    return _fused


def abs_rows(weights: Sequence[torch.Tensor], combine: str, col_scale: torch.Tensor | None, r0: int = 0,
             r1: int | None = None) -> torch.Tensor:
    """Rows ``r0:r1`` of ``M`` as a new float32 tensor (see :func:`llmrank_graph.kernels.fused.abs_rows`)."""
    return _fused().abs_rows(weights, combine, col_scale, r0, r1)


def abs_matmul(weights: Sequence[torch.Tensor], combine: str, col_scale: torch.Tensor | None, v: torch.Tensor,
               transpose: bool = False) -> torch.Tensor:
    """``M @ v`` or ``M.T @ v`` accumulated in float64 (see :func:`llmrank_graph.kernels.fused.abs_matmul`)."""
    return _fused().abs_matmul(weights, combine, col_scale, v.to(torch.float64), transpose)


def prepare_matmul(weights: Sequence[torch.Tensor], combine: str, col_scale: torch.Tensor | None,
                   transpose: bool = False):
    """``add(vt, out, alpha)``: ``out += alpha * (M @ v)``, set up once (see :func:`llmrank_graph.kernels.fused.prepare_matmul`)."""
    return _fused().prepare_matmul(weights, combine, col_scale, transpose)


def abs_sums(weights: Sequence[torch.Tensor], combine: str,
             col_scale: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(column sums, row sums)`` of ``M`` in float64, one read (see :func:`llmrank_graph.kernels.fused.abs_sums`)."""
    return _fused().abs_sums(weights, combine, col_scale)
