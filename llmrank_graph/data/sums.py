"""Per-column sums of squares (and sums) of activations in one read: what calibration's hooks record.

Every MLP Linear's hook reduces a (tokens, features) float32 activation to per-column float64
sums. Done with torch, that is a squared copy, then a reduction of it, then a reduction of the
input: four passes over a tensor far larger than the caches (2048 tokens x 1536 features is
12.6 MB), about 15 ms on one core for SmolLM2's down_proj input, and nine tenths of
calibration's cost above the forward pass. :func:`column_sums` reads each value once in a numba
kernel (about 1.9 ms for the same tensor), with the same arithmetic: float32 partial sums over
chunks of :data:`CHUNK` rows, added to float64 totals.

The kernel is used for float32 tensors on the CPU when numba is installed (a dependency of the
package); everything else (CUDA tensors, float64, no numba) takes the torch path, which gives
the same sums up to float32 rounding. numba is imported, and the kernel compiled or loaded from
numba's on-disk cache, on first use.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

__all__ = ["CHUNK", "column_sums"]

#: Rows summed in float32 before each addition to the float64 totals.
CHUNK = 256


@functools.cache
def _kernel():
    """The jitted one-pass reduction, or None where numba is not installed."""
    try:
        from numba import njit
    except ImportError:
        return None

    @njit(nogil=True, cache=True, fastmath={"reassoc", "contract"}, boundscheck=False)
    def sums(x, sq, lin, chunk):  # pragma: no cover - runs compiled
        """Add the column sums of squares of ``x`` (rows, f) to ``sq`` and (if ``lin`` has f entries) its sums."""
        n, f = x.shape
        linear = lin.shape[0] == f
        aq = np.zeros(f, np.float32)
        al = np.zeros(f, np.float32)
        for r0 in range(0, n, chunk):
            aq[:] = 0
            al[:] = 0
            for i in range(r0, min(r0 + chunk, n)):
                if linear:
                    for j in range(f):
                        v = x[i, j]
                        aq[j] += v * v
                        al[j] += v
                else:
                    for j in range(f):
                        v = x[i, j]
                        aq[j] += v * v
            for j in range(f):
                sq[j] += aq[j]
            if linear:
                for j in range(f):
                    lin[j] += al[j]

    return sums


def _torch_sums(x: torch.Tensor, linear: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The torch path: float32 chunk sums (float64 for float64 input) added in float64."""
    n, f = x.shape
    full = n - n % CHUNK

    def total(t: torch.Tensor) -> torch.Tensor:
        out = t[:full].reshape(-1, CHUNK, f).sum(1).sum(0, dtype=torch.float64) if full else None
        if full < n:
            rest = t[full:].sum(0, dtype=torch.float64)
            out = rest if out is None else out + rest
        return out

    return total(x * x), total(x) if linear else None


def column_sums(x: torch.Tensor, linear: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-column sum of squares and (if ``linear``) sum of a (tokens, features) tensor, both float64.

    Tensors of other float dtypes (bfloat16, float16) are taken as float32, exactly. The sums
    are on ``x``'s device.

    Example
    -------
    >>> sq, lin = column_sums(torch.tensor([[1.0, -2.0], [3.0, 0.5]]))
    >>> sq.tolist(), lin.tolist(), sq.dtype
    ([10.0, 4.25], [4.0, -1.5], torch.float64)
    >>> column_sums(torch.ones(3, 2), linear=False)[1] is None
    True
    """
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    kernel = _kernel() if x.dtype == torch.float32 and x.device.type == "cpu" and x.numel() else None
    if kernel is None:
        return _torch_sums(x, linear)
    a = x.detach().contiguous().numpy()
    f = a.shape[1]
    sq = np.zeros(f)
    lin = np.zeros(f if linear else 0)
    kernel(a, sq, lin, CHUNK)
    return torch.from_numpy(sq), torch.from_numpy(lin) if linear else None
