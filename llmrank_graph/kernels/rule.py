"""The one edge-weight rule, the argument checks every product shares, and the storage layout.

A weight block's matrix is ``M = combine(|W0|, |W1|) * col_scale[None, :]`` (shape (r, c)).
The rule, bit for bit the one every path uses: each weight is converted to float32 (exact for
bf16/fp16), its absolute value taken in float32; ``'sum'`` adds the two in float32, ``'max'``
takes their maximum in float32 (NaN propagates, as ``torch.maximum``); the result is
multiplied by ``col_scale.to(float32)`` in float32. Only then is it widened to float64 and
accumulated. :func:`edges` is that rule written in torch; the kernels
(:mod:`~llmrank_graph.kernels.numba_jit`, :mod:`~llmrank_graph.kernels.triton_cuda`)
reproduce it.

>>> import torch
>>> w = torch.tensor([[1.0, -2.0], [-3.0, 4.0]])
>>> abs_rows([w, -w / 2], "max", torch.tensor([1.0, 0.5]))
tensor([[1., 1.],
        [3., 2.]])
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from ..errors import InvalidArgumentError, InvalidArgumentTypeError

__all__ = ["COMBINES", "COMBINE_CODE", "CHUNK_ELEMS", "KERNEL_DTYPES", "abs_rows", "check_weights", "check_v",
           "edges", "storage"]

logger = logging.getLogger(__name__)

#: The gate combinations the rule knows.
COMBINES = ("single", "sum", "max")
_N_WEIGHTS = {"single": 1, "sum": 2, "max": 2}
#: The combinations as the kernels take them.
COMBINE_CODE = {"single": 0, "sum": 1, "max": 2}

#: Elements per row chunk when a block is materialised in pieces on the CPU: a float64 chunk
#: (2 MiB) stays in cache. On CUDA a block is one chunk (launches cost more than memory there).
CHUNK_ELEMS = 1 << 18

#: The storage dtypes the kernels read, keyed by torch dtype: the numpy dtype the tensor is
#: viewed as. bf16 and fp16 travel as raw 16-bit patterns, told apart by their numpy type
#: (uint16: bf16, int16: fp16) so numba compiles one specialisation for each.
KERNEL_DTYPES = {torch.float32: np.float32, torch.bfloat16: np.uint16, torch.float16: np.int16}


def check_weights(weights: Sequence[torch.Tensor], combine: str, col_scale: torch.Tensor | None) -> list[torch.Tensor]:
    """The weights as a list, after checking their number, shapes and dtypes against ``combine``.

    Raises
    ------
    InvalidArgumentError, InvalidArgumentTypeError
        For a wrong ``combine``, number of weights, shape or dtype, or a ``col_scale`` that does
        not match the columns.
    """
    if not isinstance(combine, str):
        raise InvalidArgumentTypeError(f"`combine` must be one of {', '.join(map(repr, COMBINES))}; got {combine!r}")
    if combine not in _N_WEIGHTS:
        raise InvalidArgumentError(f"`combine` must be one of {', '.join(map(repr, COMBINES))}; got {combine!r}")
    if not isinstance(weights, (list, tuple)) and (isinstance(weights, torch.Tensor)
                                                   or not isinstance(weights, Sequence)):
        raise InvalidArgumentTypeError("`weights` must be a sequence of 2-D tensors (wrap a single one: [w]); "
                                       f"got {type(weights).__name__}")
    ws = list(weights)
    if len(ws) != _N_WEIGHTS[combine]:
        raise InvalidArgumentError(f"`weights` must hold {_N_WEIGHTS[combine]} tensor(s) for combine={combine!r}; "
                                   f"got {len(ws)}")
    for w in ws:
        if not isinstance(w, torch.Tensor):
            raise InvalidArgumentTypeError(f"`weights` must be a sequence of 2-D tensors; got a {type(w).__name__}")
        if w.dim() != 2:
            raise InvalidArgumentError(f"`weights` must be 2-D tensors; got shape {tuple(w.shape)}")
        # The rule converts to float32: any real dtype converts; complex and bool make no edge weight.
        if w.dtype.is_complex or w.dtype == torch.bool:
            raise InvalidArgumentTypeError(f"`weights` must be real numbers; got dtype {w.dtype}")
    if len(ws) == 2 and ws[0].shape != ws[1].shape:
        raise InvalidArgumentError(f"`weights` must have one shape; got {tuple(ws[0].shape)} and {tuple(ws[1].shape)}")
    if col_scale is not None:
        if not isinstance(col_scale, torch.Tensor):
            raise InvalidArgumentTypeError(f"`col_scale` must be a tensor or None; got a {type(col_scale).__name__}")
        if tuple(col_scale.shape) != (ws[0].shape[1],):
            raise InvalidArgumentError(f"`col_scale` must have shape ({ws[0].shape[1]},); got {tuple(col_scale.shape)}")
    return ws


def check_v(v: torch.Tensor, n: int | None, transpose: bool) -> torch.Tensor:
    """``v`` as (n, k), after checking its type and length (``n=None``: any length)."""
    if not isinstance(v, torch.Tensor):
        raise InvalidArgumentTypeError(f"`v` must be a tensor; got a {type(v).__name__}")
    if not v.dtype.is_floating_point:
        raise InvalidArgumentTypeError(f"`v` must be a floating-point tensor (float64 for exact sums); got {v.dtype}")
    if v.dim() not in (1, 2) or (n is not None and v.shape[0] != n):
        what = "rows of M" if transpose else "columns of M"
        raise InvalidArgumentError(f"`v` must have shape ({n}, k) or ({n},), one entry per {what}; "
                                   f"got {tuple(v.shape)}")
    return v if v.dim() == 2 else v[:, None]


def edges(ws: list[torch.Tensor], combine: str, scale: torch.Tensor | None, r0: int, r1: int,
          device: torch.device) -> torch.Tensor:
    """Rows r0:r1 of M as a new float32 tensor on ``device``: the rule, op for op.

    ``scale`` is the column scale already in float32 on ``device`` (or None).
    """
    w0 = ws[0][r0:r1]
    e = w0.to(device=device, dtype=torch.float32)
    # .abs() rather than abs_() when .to() returned the model's own tensor.
    e = e.abs() if e is w0 else e.abs_()
    if combine == "sum":
        e += ws[1][r0:r1].to(device=device, dtype=torch.float32).abs()
    elif combine == "max":
        torch.maximum(e, ws[1][r0:r1].to(device=device, dtype=torch.float32).abs(), out=e)
    if scale is not None:
        e *= scale
    return e


def abs_rows(weights: Sequence[torch.Tensor], combine: str, col_scale: torch.Tensor | None, r0: int = 0,
             r1: int | None = None) -> torch.Tensor:
    """Rows ``r0:r1`` of ``M`` as a new float32 tensor on the weights' device: the edge-weight rule.

    This is the one definition of an edge's weight; the kernels reproduce it bit for bit.

    Parameters
    ----------
    weights : sequence of torch.Tensor
        One (``'single'``) or two (``'sum'``, ``'max'``) real tensors of shape (r, c).
    combine : {'single', 'sum', 'max'}
        How two weights make one edge weight.
    col_scale : torch.Tensor or None
        (c,) scale of the columns of ``M``, applied in float32.
    r0, r1 : int
        The rows to return (``r1=None``: to the end).

    Returns
    -------
    torch.Tensor
        (r1 - r0, c) float32.

    Examples
    --------
    >>> import torch
    >>> abs_rows([torch.tensor([[1.0, -2.0], [3.0, -4.0]])], "single", None, 1)
    tensor([[3., 4.]])
    """
    ws = check_weights(weights, combine, col_scale)
    r1 = ws[0].shape[0] if r1 is None else r1
    device = ws[0].device
    scale = None if col_scale is None else col_scale.detach().to(device=device, dtype=torch.float32)
    with torch.no_grad():
        return edges(ws, combine, scale, r0, r1, device)


def storage(ws: list[torch.Tensor]) -> tuple[list[torch.Tensor], bool]:
    """Row-major storage of the weights and whether it is ``W.T`` (then rows and columns swap).

    GPT-2's Conv1D weights arrive as ``.t()`` views of a contiguous (c, r) tensor: a kernel
    then reads that tensor row by row and swaps the roles of the two products, so no copy is
    made. Any other layout (or two weights of different layouts) is copied once.
    """
    if all(w.is_contiguous() for w in ws):
        return ws, False
    if all(w.t().is_contiguous() for w in ws):
        return [w.t() for w in ws], True
    logger.debug("weights with strides %s are not all row-major nor all column-major: "
                 "the non-row-major ones copied once", [tuple(w.stride()) for w in ws])
    return [w.contiguous() for w in ws], False
