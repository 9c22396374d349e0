"""The Triton kernels for CUDA tensors: the same rule, each weight read once, float64 sums.

Same rule and storage handling as the numba kernel. A program of the row kernel owns BR
storage rows and walks their columns in BC-wide tiles, loading each weight once at its dtype
(BR shrinks for matrices with few rows, so that there are still enough programs); the column
kernel (the transposed product) owns BC columns and a slice of RS rows, and adds its partial
sums into the output with float64 atomics so that short, wide matrices still fill the GPU.

Importing this module imports triton when installed (torch's dependency on CUDA builds), which
costs time a CPU run should not pay: :mod:`~llmrank_graph.kernels.products` imports it on the
first CUDA call only; :data:`MISSING` says why the kernels are not there. The kernels also
run on the CPU under ``TRITON_INTERPRET=1`` (the tests check their arithmetic that way); the
block sizes are reasoned, not tuned on a GPU.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .rule import COMBINE_CODE, KERNEL_DTYPES, storage

try:
    import triton
    import triton.language as tl
except ImportError as e:
    triton = tl = None
    #: None when triton imports here, else why not.
    MISSING: str | None = f"triton is not installed ({e}); it ships with CUDA builds of torch"
else:
    MISSING = None

__all__ = ["MISSING", "matmul", "prepare", "sums", "unsupported"]

_TILE = 2048  # elements per tile (BR x BC): 16 float64 accumulators per thread at 4 warps
_TBR, _TBC, _TRS = 16, 128, 512  # column kernel: rows per tile, columns per program, rows per program
_MIN_PROGRAMS = 1024  # enough programs for a large GPU to keep many loads in flight


def unsupported(ws: list[torch.Tensor], col_scale: torch.Tensor | None, v: torch.Tensor | None) -> str | None:
    """Why the Triton kernel cannot take this call (None: it can). Checked arguments only."""
    dev = ws[0].device
    if dev.type != "cuda":
        return f"weights on {dev.type}: the triton kernel runs on CUDA only"
    for w in ws:
        if w.device != dev:
            return f"weights on two devices ({ws[0].device}, {w.device})"
        if w.dtype not in KERNEL_DTYPES:
            return f"weights of dtype {w.dtype}: the triton kernel reads float32, bfloat16 and float16"
    if len(ws) == 2 and ws[0].dtype != ws[1].dtype:
        return f"weights of two dtypes ({ws[0].dtype}, {ws[1].dtype})"
    if col_scale is not None and col_scale.device != dev:
        return f"col_scale on {col_scale.device}, weights on {dev}"
    if v is not None:
        if v.device != dev:
            return f"v on {v.device}, weights on {dev}"
        if v.dtype != torch.float64:
            return f"v of dtype {v.dtype}: the triton kernel accumulates float64 only"
        if v.shape[1] not in (1, 2):
            return f"v with {v.shape[1]} columns: the triton kernel takes 1 or 2"
    return None


# Defined only where triton imports, so that the module itself imports anywhere (the
# package's doctests, documentation tools); products asks MISSING before using it.
if MISSING is None:
    @triton.jit
    def _edges(s0, s1, scale, off, m, rows, rmask, cols, cmask, COMB: tl.constexpr, SMODE: tl.constexpr):
        # The rule in float32, exactly as the CPU kernel and the torch path apply it.
        e = tl.abs(tl.load(s0 + off, mask=m, other=0.0).to(tl.float32))
        if COMB == 1:
            e = e + tl.abs(tl.load(s1 + off, mask=m, other=0.0).to(tl.float32))
        if COMB == 2:
            f = tl.abs(tl.load(s1 + off, mask=m, other=0.0).to(tl.float32))
            e = tl.where((e >= f) | (e != e), e, f)  # torch.maximum: NaN wins
        if SMODE == 1:
            e = e * tl.load(scale + cols, mask=cmask, other=0.0)[None, :]
        if SMODE == 2:
            e = e * tl.load(scale + rows, mask=rmask, other=0.0)[:, None]
        return e.to(tl.float64)


    @triton.jit
    def _rows_kernel(s0, s1, scale, vt, out, colsum, R, C, stride, COMB: tl.constexpr, SMODE: tl.constexpr,
                     K: tl.constexpr, SUMS: tl.constexpr, BR: tl.constexpr, BC: tl.constexpr):
        # out[kk, i] = E[i] @ vt[kk] for this program's BR rows; with SUMS, out[0, i] = row
        # sums and colsum += column sums of the tile (atomics).
        # Tile-shaped float64 accumulators, reduced once at the end: no shuffles per tile.
        rows = tl.program_id(0) * BR + tl.arange(0, BR)
        rmask = rows < R
        rbase = rows.to(tl.int64) * stride
        acc0 = tl.zeros([BR, BC], dtype=tl.float64)
        acc1 = tl.zeros([BR, BC], dtype=tl.float64)
        for c0 in range(0, C, BC):
            cols = c0 + tl.arange(0, BC)
            cmask = cols < C
            m = rmask[:, None] & cmask[None, :]
            e = _edges(s0, s1, scale, rbase[:, None] + cols[None, :], m, rows, rmask, cols, cmask, COMB, SMODE)
            if SUMS:
                acc0 += e
                tl.atomic_add(colsum + cols, tl.sum(e, axis=0), mask=cmask)
            else:
                acc0 += e * tl.load(vt + cols, mask=cmask, other=0.0)[None, :]
                if K == 2:
                    acc1 += e * tl.load(vt + C + cols, mask=cmask, other=0.0)[None, :]
        tl.store(out + rows, tl.sum(acc0, axis=1), mask=rmask)
        if K == 2:
            tl.store(out + R + rows, tl.sum(acc1, axis=1), mask=rmask)


    @triton.jit
    def _cols_kernel(s0, s1, scale, vt, out, R, C, stride, RS, COMB: tl.constexpr, SMODE: tl.constexpr,
                     K: tl.constexpr, BR: tl.constexpr, BC: tl.constexpr):
        # out[kk, j] += sum over this program's RS rows i of vt[kk, i] * E[i, j] (out zeroed).
        cols = tl.program_id(0) * BC + tl.arange(0, BC)
        cmask = cols < C
        r_start = tl.program_id(1) * RS
        acc0 = tl.zeros([BR, BC], dtype=tl.float64)
        acc1 = tl.zeros([BR, BC], dtype=tl.float64)
        for r0 in range(r_start, r_start + RS, BR):
            rows = r0 + tl.arange(0, BR)
            rmask = rows < R
            m = rmask[:, None] & cmask[None, :]
            off = rows.to(tl.int64)[:, None] * stride + cols[None, :]
            e = _edges(s0, s1, scale, off, m, rows, rmask, cols, cmask, COMB, SMODE)
            acc0 += e * tl.load(vt + rows, mask=rmask, other=0.0)[:, None]
            if K == 2:
                acc1 += e * tl.load(vt + R + rows, mask=rmask, other=0.0)[:, None]
        tl.atomic_add(out + cols, tl.sum(acc0, axis=0), mask=cmask)
        if K == 2:
            tl.atomic_add(out + C + cols, tl.sum(acc1, axis=0), mask=cmask)


def _row_blocks(rows: int) -> tuple[int, int]:
    """(BR, BC) of the row kernel: fewer rows per program when rows are few, tile kept."""
    br = 16
    while br > 1 and -(-rows // br) < _MIN_PROGRAMS:
        br //= 2
    return br, _TILE // br


def _args(ws, combine, col_scale):
    """``(s0, s1, scale, smode, flipped)``: the weights' storage and the float32 scale's place in it."""
    st, flipped = storage(ws)
    dev = st[0].device
    if col_scale is None:
        scale, smode = torch.zeros(1, dtype=torch.float32, device=dev), 0
    else:
        scale, smode = col_scale.detach().to(device=dev, dtype=torch.float32).contiguous(), (2 if flipped else 1)
    s0 = st[0].detach()
    s1 = st[1].detach() if len(st) == 2 else s0
    return s0, s1, scale, smode, flipped


def _product(ws, combine, col_scale, transpose) -> Callable[[torch.Tensor], torch.Tensor]:
    """``product(vt) -> (k, r)`` (``(k, c)`` when ``transpose``) float64 on the Triton kernels."""
    s0, s1, scale, smode, flipped = _args(ws, combine, col_scale)
    rows, cols = s0.shape
    comb = COMBINE_CODE[combine]
    stride = s0.stride(0)
    if transpose != flipped:
        grid = (triton.cdiv(cols, _TBC), triton.cdiv(rows, _TRS))

        def product(vt):
            k = vt.shape[0]
            out = torch.zeros(k, cols, dtype=torch.float64, device=vt.device)
            if rows and cols:
                _cols_kernel[grid](s0, s1, scale, vt, out, rows, cols, stride, _TRS, COMB=comb, SMODE=smode, K=k,
                                   BR=_TBR, BC=_TBC)
            return out
    else:
        br, bc = _row_blocks(rows)
        grid = (triton.cdiv(rows, br),)

        def product(vt):
            k = vt.shape[0]
            out = torch.zeros(k, rows, dtype=torch.float64, device=vt.device)
            if rows and cols:
                _rows_kernel[grid](s0, s1, scale, vt, out, out, rows, cols, stride, COMB=comb, SMODE=smode, K=k,
                                   SUMS=False, BR=br, BC=bc)
            return out
    return product


def prepare(ws: list[torch.Tensor], combine: str, col_scale: torch.Tensor | None, transpose: bool,
            threads: int | None = None) -> Callable[[torch.Tensor, torch.Tensor, float], bool]:
    """``product(vt, out, alpha)``: ``out += alpha * (M @ v)`` on the Triton kernels.

    The product returns False, having done nothing, for a ``vt`` the kernels do not take (not
    a float64 tensor on the weights' device, or more than two rows). ``threads`` is not used:
    the GPU runs the programs.
    """
    product = _product(ws, combine, col_scale, transpose)
    device = ws[0].device

    def add(vt, out, alpha):
        if not isinstance(vt, torch.Tensor) or vt.dtype != torch.float64 or vt.device != device or vt.shape[0] > 2:
            return False
        out.add_(product(vt), alpha=alpha)
        return True

    return add


def matmul(ws: list[torch.Tensor], combine: str, col_scale: torch.Tensor | None, v: torch.Tensor,
           transpose: bool) -> torch.Tensor:
    """``M @ v`` (``M.T @ v``) for a float64 ``v`` (n, k <= 2) on the Triton kernels, (r, k) -- (c, k)."""
    vt = v.detach().t().contiguous()  # (k, n)
    return _product(ws, combine, col_scale, transpose)(vt).t().contiguous()


def sums(ws: list[torch.Tensor], combine: str, col_scale: torch.Tensor | None,
         threads: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(column sums, row sums)`` on the Triton row kernel: row sums in registers, column sums by atomics."""
    s0, s1, scale, smode, flipped = _args(ws, combine, col_scale)
    rows, cols = s0.shape
    rowsum = torch.zeros(rows, dtype=torch.float64, device=s0.device)
    colsum = torch.zeros(cols, dtype=torch.float64, device=s0.device)
    if rows and cols:
        br, bc = _row_blocks(rows)
        _rows_kernel[(triton.cdiv(rows, br),)](s0, s1, scale, rowsum, rowsum, colsum, rows, cols, s0.stride(0),
                                               COMB=COMBINE_CODE[combine], SMODE=smode, K=1, SUMS=True,
                                               BR=br, BC=bc)
    return (rowsum, colsum) if flipped else (colsum, rowsum)
