"""Fused products with ``|W|``: each weight read once, at its stored dtype.

A weight block's matrix is ``M = combine(|W0|, |W1|) * col_scale[None, :]`` (shape (r, c)).
The exact DAG sweep needs ``M @ v``, ``M.T @ v`` (``v`` float64 with k = 1 or 2 columns) and
the row and column sums of ``M``. Copying ``|W|`` to float64 for a BLAS product reads and
writes every weight several times; the kernels here read each weight once, apply the
edge-weight rule on the way and accumulate in float64.

The edge-weight rule, bit for bit the one every backend uses: each weight is converted to
float32 (exact for bf16/fp16), its absolute value taken in float32; ``'sum'`` adds the two in
float32, ``'max'`` takes their maximum in float32 (NaN propagates, as ``torch.maximum``);
the result is multiplied by ``col_scale.to(float32)`` in float32. Only then is it widened to
float64 and accumulated. Only the order of the float64 accumulation differs from a dense
reference, so results agree to rounding (and exactly when nothing is accumulated).

Three paths, one semantics:

* CPU: numba ``@njit(nogil=True, cache=True)`` kernels run on a few Python threads (the
  optional extra ``fast = ["numba>=0.60"]``);
* CUDA: Triton kernels, when triton imports (it ships with CUDA builds of torch);
* anything else -- no numba, weights that are not fp32/bf16/fp16, ``v`` not float64, k > 2,
  tensors on two devices -- a pure torch path (row chunks of ``M`` in float32, widened), the
  reason logged at DEBUG level. ``use_kernel = False`` forces it.

``unsupported(...)`` says which calls the kernels take; ``fused_available(device)`` whether
they run here at all. A kernel that fails to compile or run is reported once (WARNING) and
the torch path used from then on.

This module imports nothing from the package except :mod:`llmrank_graph.errors`. Importing it
imports numba when installed (about 0.3 s). The first call for each weight dtype in a fresh
process loads the compiled kernels from numba's on-disk cache (``__pycache__`` beside this
file, or ``NUMBA_CACHE_DIR``), well under a second; with no cache they compile, about 7 s of
CPU per dtype, once per machine and version of this file.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import threading
from collections.abc import Callable, Sequence

import numpy as np
import torch

from llmrank_graph.errors import InvalidArgumentError, InvalidArgumentTypeError

__all__ = ["COMBINES", "abs_matmul", "abs_sums", "fused_available", "prepare_matmul", "unsupported", "use_kernel"]

logger = logging.getLogger(__name__)

#: The gate combinations the rule knows.
COMBINES = ("single", "sum", "max")
_N_WEIGHTS = {"single": 1, "sum": 2, "max": 2}
_COMBINE_CODE = {"single": 0, "sum": 1, "max": 2}

#: Set to False to force the pure torch path (tests, debugging, comparing the two).
use_kernel: bool = True
_SWITCHED_OFF = "the fused kernel is switched off (llmrank_graph.kernels.fused.use_kernel = False)"

#: Elements per row chunk of the torch fallback on the CPU: a float64 chunk (2 MiB) stays in
#: cache; on CUDA a block is one chunk (launches cost more than memory there).
_CHUNK_ELEMS = 1 << 18

# Below this many elements per thread a block uses fewer threads: waking one costs more.
_MIN_ELEMS_PER_THREAD = 1 << 16

# Rows are handed to the kernel's workers in chunks of about this many elements (a multiple of
# four rows): small enough to balance them, large enough that the counter and the prefetch
# break at chunk ends cost nothing (4K-element chunks ran 5-20% slower, 16K a few %).
_JOB_CHUNK_ELEMS = 1 << 16

# The storage dtypes the kernels read, keyed by torch dtype: the numpy dtype the tensor is
# viewed as. bf16 and fp16 travel as raw 16-bit patterns, told apart by their numpy type
# (uint16: bf16, int16: fp16) so numba compiles one specialisation for each.
_KERNEL_DTYPES = {torch.float32: np.float32, torch.bfloat16: np.uint16, torch.float16: np.int16}

# Guards the lazy creation of the worker threads.
_lock = threading.Lock()

# Kernels that failed to compile or run here, with the reason (then the torch path is used).
_broken: dict[str, str] = {}

try:  # the optional extra
    import numba as _nb
except ImportError as e:  # pragma: no cover - depends on the environment
    _nb = None
    _NUMBA_MISSING = f"numba is not installed ({e}); install the 'fast' extra"
else:
    _NUMBA_MISSING = None


# --------------------------------------------------------------------------------------------
# Argument checks and the storage layout
# --------------------------------------------------------------------------------------------

def _check(weights: Sequence[torch.Tensor], combine: str, col_scale: torch.Tensor | None) -> list[torch.Tensor]:
    """The weights as a list, after checking their number, shapes and dtypes against ``combine``."""
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


def _check_v(v: torch.Tensor, n: int | None, transpose: bool) -> torch.Tensor:
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


def _reason(ws: list[torch.Tensor], col_scale: torch.Tensor | None, v: torch.Tensor | None) -> str | None:
    """Why the kernel cannot take this call (None: it can). Checked arguments only."""
    if _NUMBA_MISSING is not None:
        return _NUMBA_MISSING
    for w in ws:
        if not w.is_cpu:
            return f"weights on {w.device.type}: the fused kernel runs on the CPU only"
        if w.dtype not in _KERNEL_DTYPES:
            return f"weights of dtype {w.dtype}: the fused kernel reads float32, bfloat16 and float16"
    if len(ws) == 2 and ws[0].dtype != ws[1].dtype:
        return f"weights of two dtypes ({ws[0].dtype}, {ws[1].dtype})"
    if col_scale is not None and not col_scale.is_cpu:
        return f"col_scale on {col_scale.device.type}: the fused kernel runs on the CPU only"
    if v is not None:
        if not v.is_cpu:
            return f"v on {v.device.type}: the fused kernel runs on the CPU only"
        if v.dtype != torch.float64:
            return f"v of dtype {v.dtype}: the fused kernel accumulates float64 only"
        if v.shape[1] not in (1, 2):
            return f"v with {v.shape[1]} columns: the fused kernel takes 1 or 2"
    return _broken.get(_kernel_key("numba", ws[0].dtype))


def _triton_reason(ws: list[torch.Tensor], col_scale: torch.Tensor | None, v: torch.Tensor | None) -> str | None:
    """Why the Triton kernel cannot take this call of CUDA tensors (None: it can)."""
    missing = _triton_missing()
    if missing is not None:
        return missing
    dev = ws[0].device
    for w in ws:
        if w.device != dev:
            return f"weights on two devices ({ws[0].device}, {w.device})"
        if w.dtype not in _KERNEL_DTYPES:
            return f"weights of dtype {w.dtype}: the fused kernel reads float32, bfloat16 and float16"
    if len(ws) == 2 and ws[0].dtype != ws[1].dtype:
        return f"weights of two dtypes ({ws[0].dtype}, {ws[1].dtype})"
    if col_scale is not None and col_scale.device != dev:
        return f"col_scale on {col_scale.device}, weights on {dev}"
    if v is not None:
        if v.device != dev:
            return f"v on {v.device}, weights on {dev}"
        if v.dtype != torch.float64:
            return f"v of dtype {v.dtype}: the fused kernel accumulates float64 only"
        if v.shape[1] not in (1, 2):
            return f"v with {v.shape[1]} columns: the fused kernel takes 1 or 2"
    return _broken.get(_kernel_key("triton", ws[0].dtype))


def _route(ws: list[torch.Tensor], col_scale: torch.Tensor | None,
           v: torch.Tensor | None) -> tuple[str | None, str | None]:
    """``('numba' | 'triton', None)`` when a kernel takes the call, else ``(None, why not)``."""
    if not use_kernel:
        return None, _SWITCHED_OFF
    if ws[0].is_cuda:
        kind, reason = "triton", _triton_reason(ws, col_scale, v)
    else:
        kind, reason = "numba", _reason(ws, col_scale, v)
    return (kind, None) if reason is None else (None, reason)


@functools.cache
def _kernel_key(kind: str, dtype: torch.dtype) -> str:
    """``'numba:bfloat16'``: the key of a kernel in ``_broken`` (cached: it is on the hot path)."""
    return f"{kind}:{str(dtype).replace('torch.', '')}"


def _storage(ws: list[torch.Tensor]) -> tuple[list[torch.Tensor], bool]:
    """Row-major storage of the weights and whether it is ``W.T`` (then rows and columns swap).

    GPT-2's Conv1D weights arrive as ``.t()`` views of a contiguous (c, r) tensor: the
    kernel then reads that tensor row by row and swaps the roles of the two products, so no
    copy is made. Any other layout (or two weights of different layouts) is copied once.
    """
    if all(w.is_contiguous() for w in ws):
        return ws, False
    if all(w.t().is_contiguous() for w in ws):
        return [w.t() for w in ws], True
    logger.debug("weights with strides %s are not all row-major nor all column-major: "
                 "the non-row-major ones copied once", [tuple(w.stride()) for w in ws])
    return [w.contiguous() for w in ws], False


def _as_numpy(w: torch.Tensor) -> np.ndarray:
    """A zero-copy numpy view of a contiguous CPU weight, bf16/fp16 as their raw bits."""
    if w.requires_grad:
        w = w.detach()
    if w.dtype == torch.float32:
        return w.numpy()
    return w.view(torch.int16).numpy().view(_KERNEL_DTYPES[w.dtype])


def _threads(rows: int, cols: int) -> int:
    """Threads for one block: torch's setting, fewer for small blocks."""
    return max(1, min(torch.get_num_threads(), (rows * cols) // _MIN_ELEMS_PER_THREAD, rows))


_NO_SCALE = np.zeros(0, np.float32)


def _scale_args(col_scale: torch.Tensor | None, flipped: bool) -> tuple[np.ndarray, int]:
    """The float32 scale and where it applies in storage: 0 nowhere, 1 per column, 2 per row."""
    if col_scale is None:
        return _NO_SCALE, 0
    s = col_scale.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()
    # M's columns are the storage's rows when the storage is W.T.
    return s, (2 if flipped else 1)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------

def fused_available(device: str | torch.device = "cpu") -> str | None:
    """None when the fused kernel runs here, else why it does not.

    Parameters
    ----------
    device : str or torch.device
        ``'cpu'`` (the numba kernel) or a CUDA device (the Triton kernel).

    Returns
    -------
    str or None
        The reason (numba or triton missing, switched off, a kernel that failed), or None.
    """
    if not use_kernel:
        return _SWITCHED_OFF
    gpu = torch.device(device).type == "cuda"
    missing = _triton_missing() if gpu else _NUMBA_MISSING
    if missing is not None:
        return missing
    broken = [f"{k}: {r}" for k, r in _broken.items() if k.startswith("triton") == gpu]
    return "; ".join(broken) if broken else None


def unsupported(weights: Sequence[torch.Tensor], combine: str, col_scale: torch.Tensor | None,
                v: torch.Tensor | None = None) -> str | None:
    """Why :func:`abs_matmul` (``v`` given) or :func:`abs_sums` (``v=None``) would use the torch path.

    Parameters
    ----------
    weights, combine, col_scale
        As for :func:`abs_matmul`.
    v : torch.Tensor or None
        The vector(s) of the product, either direction (its length is not checked here), or
        None to ask about :func:`abs_sums`.

    Returns
    -------
    str or None
        None when the fused kernel takes the call, else the reason it does not.

    Raises
    ------
    InvalidArgumentError, InvalidArgumentTypeError
        For weights, ``combine`` or ``col_scale`` that neither path accepts, or a ``v`` that is
        not a 1-D or 2-D floating-point tensor.
    """
    ws = _check(weights, combine, col_scale)
    if v is not None:
        v = _check_v(v, None, False)
    return _route(ws, col_scale, v)[1]


def abs_matmul(weights: Sequence[torch.Tensor], combine: str, col_scale: torch.Tensor | None, v: torch.Tensor,
               transpose: bool = False) -> torch.Tensor:
    """``M @ v``, or ``M.T @ v`` when ``transpose``, with ``M = combine(|W0|, |W1|) * col_scale``.

    Parameters
    ----------
    weights : sequence of torch.Tensor
        One (``'single'``) or two (``'sum'``, ``'max'``) tensors of shape (r, c): fp32, bf16 or
        fp16 for the fused kernel (any real dtype on the torch path). Views are fine,
        ``.t()`` views of a contiguous tensor included.
    combine : {'single', 'sum', 'max'}
        How two weights make one edge weight.
    col_scale : torch.Tensor or None
        (c,) scale of the columns of ``M``, applied in float32.
    v : torch.Tensor
        (c, k) -- or (r, k) when ``transpose`` -- float64 for the fused kernel (k = 1 or 2). A
        1-D ``v`` gives a 1-D result.
    transpose : bool
        Compute ``M.T @ v`` instead of ``M @ v``.

    Returns
    -------
    torch.Tensor
        (r, k) -- or (c, k) -- in ``v``'s dtype, on ``v``'s device, contiguous.

    Raises
    ------
    InvalidArgumentError, InvalidArgumentTypeError
        For a wrong ``combine``, number of weights, shape or dtype.
    """
    ws = _check(weights, combine, col_scale)
    r, c = ws[0].shape
    v2 = _check_v(v, r if transpose else c, transpose)
    # One product, set up and run once: the same paths as the sweep's (adding to zeros is exact).
    out = torch.zeros(v2.shape[1], c if transpose else r, dtype=v2.dtype, device=v2.device)
    prepare_matmul(ws, combine, col_scale, transpose)(v2.detach().t().contiguous(), out, 1.0)
    out = out.t().contiguous()
    return out if v.dim() == 2 else out[:, 0]


def prepare_matmul(weights: Sequence[torch.Tensor], combine: str, col_scale: torch.Tensor | None,
                   transpose: bool = False) -> Callable[[torch.Tensor, torch.Tensor, float], None]:
    """:func:`abs_matmul` prepared once, for a sweep that multiplies every block in turn.

    Returns ``add(vt, out, alpha)``, which adds ``alpha * (M @ v)`` (``M.T @ v`` when
    ``transpose``) to ``out`` in place. Vectors travel as rows: ``vt`` is ``v.T``, (k, c) --
    (k, r) when ``transpose`` -- float64 and contiguous, and ``out`` a (k, r) -- (k, c) --
    float64 view to add into: numpy arrays on the CPU (tensors work too), torch tensors on
    the weights' GPU. The argument checks, the choice of path, the storage layout and the
    number of threads (torch's setting now) are settled here, once: between two blocks the
    sweep then runs only the kernel call and one addition, with caches the previous block
    has just flushed.

    The path is the one :func:`abs_matmul` would take for a float64 ``v`` of k <= 2 on the
    weights' device (a ``vt`` outside that takes the torch path, call by call); a kernel that
    fails is reported once, as there, and the torch path used from then on.

    Parameters
    ----------
    weights, combine, col_scale, transpose
        As for :func:`abs_matmul`.
    """
    ws = _check(weights, combine, col_scale)
    kind, reason = _route(ws, col_scale, None)

    def on_torch(vt, out, alpha):
        if isinstance(vt, np.ndarray):
            out += alpha * _torch_matmul(ws, combine, col_scale, torch.from_numpy(vt).t(), transpose).numpy().T
        else:
            out.add_(_torch_matmul(ws, combine, col_scale, vt.t(), transpose).t(), alpha=alpha)

    if kind is None:
        logger.debug("prepared product on the torch path: %s", reason)
        return on_torch
    key = _kernel_key(kind, ws[0].dtype)
    product = (_numba_add if kind == "numba" else _triton_add)(ws, combine, col_scale, transpose)

    def add(vt, out, alpha):
        if use_kernel and key not in _broken:  # read per call: switching the kernel off takes effect at once
            try:
                if product(vt, out, alpha):
                    return
                logger.debug("a product on the torch path: the %s kernel takes float64 vectors, k <= 2, on the "
                             "weights' device; got %s, k = %d", kind, vt.dtype, vt.shape[0])
            except Exception as e:  # noqa: BLE001 - as _kernel_call: a failed optional kernel means torch
                _broken[key] = f"the {kind} kernel failed for {key.split(':')[1]} weights ({type(e).__name__}: {e})"
                logger.warning("%s; using the torch path from now on", _broken[key])
        on_torch(vt, out, alpha)

    return add


def abs_sums(weights: Sequence[torch.Tensor], combine: str,
             col_scale: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Column sums (c,) and row sums (r,) of ``M``, float64, reading the weights once.

    Parameters
    ----------
    weights, combine, col_scale
        As for :func:`abs_matmul`.

    Returns
    -------
    tuple of torch.Tensor
        ``(M.sum(0), M.sum(1))`` in float64, on the weights' device.
    """
    ws = _check(weights, combine, col_scale)
    kind, reason = _route(ws, col_scale, None)
    out = None
    if kind is not None:
        fn = _kernel_sums if kind == "numba" else _triton_sums
        out = _kernel_call(kind, fn, ws, combine, col_scale)
        if out is None:
            reason = _broken[_kernel_key(kind, ws[0].dtype)]
    if out is None:
        logger.debug("abs_sums on the torch path: %s", reason)
        out = _torch_sums(ws, combine, col_scale)
    return out


# --------------------------------------------------------------------------------------------
# The torch path (any device, any real dtype, any k): row chunks of M in float32, widened.
# --------------------------------------------------------------------------------------------

def _torch_edges(ws: list[torch.Tensor], combine: str, scale: torch.Tensor | None, r0: int, r1: int,
                 device: torch.device) -> torch.Tensor:
    """Rows r0:r1 of M as a new float32 tensor on ``device``: the rule, op for op."""
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
    """
    ws = _check(weights, combine, col_scale)
    r1 = ws[0].shape[0] if r1 is None else r1
    device = ws[0].device
    scale = None if col_scale is None else col_scale.detach().to(device=device, dtype=torch.float32)
    with torch.no_grad():
        return _torch_edges(ws, combine, scale, r0, r1, device)


def _torch_chunks(ws, combine, col_scale, device, dtype):
    rows, cols = ws[0].shape
    step = max(1, _CHUNK_ELEMS // max(cols, 1)) if device.type == "cpu" else max(rows, 1)
    scale = None if col_scale is None else col_scale.detach().to(device=device, dtype=torch.float32)
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        yield r0, r1, _torch_edges(ws, combine, scale, r0, r1, device).to(dtype)


def _torch_matmul(ws, combine, col_scale, v, transpose):
    rows, cols = ws[0].shape
    k = v.shape[1]
    with torch.no_grad():
        if transpose:
            out = torch.zeros(cols, k, dtype=v.dtype, device=v.device)
            for r0, r1, e in _torch_chunks(ws, combine, col_scale, v.device, v.dtype):
                out.addmm_(e.t(), v[r0:r1])
        else:
            out = torch.empty(rows, k, dtype=v.dtype, device=v.device)
            for r0, r1, e in _torch_chunks(ws, combine, col_scale, v.device, v.dtype):
                torch.mm(e, v, out=out[r0:r1])
    return out


def _torch_sums(ws, combine, col_scale):
    rows, cols = ws[0].shape
    dev = ws[0].device
    colsum = torch.zeros(cols, dtype=torch.float64, device=dev)
    rowsum = torch.empty(rows, dtype=torch.float64, device=dev)
    with torch.no_grad():
        for r0, r1, e in _torch_chunks(ws, combine, col_scale, dev, torch.float64):
            colsum += e.sum(0)
            torch.sum(e, dim=1, out=rowsum[r0:r1])
    return colsum, rowsum


# --------------------------------------------------------------------------------------------
# The kernel path: argument marshalling
# --------------------------------------------------------------------------------------------

def _kernel_call(kind, fn, ws, *args):
    """Run ``fn``; on a compile or run failure, remember why and return None."""
    try:
        return fn(ws, *args)
    except Exception as e:  # noqa: BLE001 - any failure of the optional kernel means: use torch
        key = _kernel_key(kind, ws[0].dtype)
        _broken[key] = f"the {kind} kernel failed for {key} weights ({type(e).__name__}: {e})"
        logger.warning("%s; using the torch path from now on", _broken[key])
        return None


# Placeholders for the arrays a job does not use: one signature per weight dtype, so each
# dtype compiles once.
_NO_OUT = np.zeros((1, 0), np.float64)
_NO_PART = np.zeros((1, 1, 0), np.float64)
_NO_V = np.zeros((1, 0), np.float64)


def _run(mode, nt, s0, *args):
    """Run ``_job`` on ``nt`` workers: this thread and ``nt - 1`` pool threads.

    Plain Python threads rather than numba's ``parallel=True``: the jobs release the GIL
    (``nogil``); a ``prange`` wrapper tripled the first compile (~12 s more per dtype), ran
    2.5x slower on a loaded machine (its workers spin), and numba's default workqueue pool
    aborts the process when two Python threads launch at once. A pool thread takes ~25-40 us
    to wake; rows are handed out in chunks at run time, so this thread does more meanwhile.
    """
    cols = s0.shape[1]
    counter = np.zeros(1, np.int64)
    chunk = max(_ROWS, (_JOB_CHUNK_ELEMS // max(cols, 1)) // _ROWS * _ROWS)
    if nt == 1:
        _job(mode, 0, counter, chunk, s0, *args)
        return
    done = _workers(nt - 1).submit([(mode, t, counter, chunk, s0) + args for t in range(1, nt)])
    try:
        _job(mode, 0, counter, chunk, s0, *args)
    finally:
        errors = [e for e in (done.get() for _ in range(nt - 1)) if e is not None]
    if errors:
        raise errors[0]


class _Workers:
    """Daemon threads that run ``_job`` calls handed over through C-level queues.

    Leaner than a ThreadPoolExecutor (no Future, Condition or work item per call): the Python
    run between two blocks runs with caches the kernel has just flushed, so every object
    touched there costs. Each call gets its own completion queue, so concurrent callers do
    not mix their results; a caller whose job waits behind another's simply does the rows
    itself (the work counter), and the late job then finds none left.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.threads: list[threading.Thread] = []

    def grow(self, n: int) -> _Workers:
        while len(self.threads) < n:
            t = threading.Thread(target=self._serve, name=f"llmrank-fused-{len(self.threads)}", daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def submit(self, calls: list[tuple]) -> queue.SimpleQueue:
        done: queue.SimpleQueue = queue.SimpleQueue()
        for call in calls:
            self.jobs.put((done, call))
        return done

    def _serve(self) -> None:
        jobs = self.jobs
        while True:
            done, call = jobs.get()
            try:
                _job(*call)
            except BaseException as e:  # noqa: BLE001 - handed to the caller, which raises it
                done.put(e)
            else:
                done.put(None)


_WORKERS: _Workers | None = None


def _workers(n: int) -> _Workers:
    """At least ``n`` worker threads, created on first use (anew in a forked child: it has none)."""
    global _WORKERS
    w = _WORKERS
    if w is None or w.pid != os.getpid() or len(w.threads) < n:
        with _lock:
            if _WORKERS is None or _WORKERS.pid != os.getpid():
                _WORKERS = _Workers()
            w = _WORKERS.grow(n)
    return w


def _numba_add(ws, combine, col_scale, transpose):
    """``add(vt, out, alpha)`` on the numba kernels, everything but the vectors fixed once."""
    st, flipped = _storage(ws)
    rows, cols = st[0].shape  # storage shape
    s0 = _as_numpy(st[0])
    s1 = _as_numpy(st[1]) if len(st) == 2 else s0
    scale, smode = _scale_args(col_scale, flipped)
    comb = _COMBINE_CODE[combine]
    work = rows > 0 and cols > 0
    by_row = transpose == flipped  # M @ v on row-major storage, M.T @ v on W.T storage
    nt = _threads(rows, cols)  # torch's setting now: a torch call per product costs (see the docstring)

    def product(vt, out, alpha):
        """``out += alpha * product``; False (nothing done) for a ``vt`` the kernel does not take."""
        if isinstance(vt, torch.Tensor):
            if not vt.is_cpu:
                return False
            vt, out = vt.numpy(), out.numpy()  # views: the addition lands in the tensor
        if vt.dtype != np.float64 or vt.shape[0] > 2:
            return False
        vn = np.ascontiguousarray(vt)  # no copy: the sweep hands contiguous rows
        on = out
        k = vn.shape[0]
        if not work:
            return True
        if by_row:
            res = np.empty((k, rows), np.float64)
            _run(0, nt, s0, s1, comb, scale, smode, vn, res, _NO_PART)
        else:
            part = np.empty((nt, k, cols), np.float64)
            _run(1, nt, s0, s1, comb, scale, smode, vn, _NO_OUT, part)
            res = part.sum(axis=0) if nt > 1 else part[0]
        res *= alpha
        on += res
        return True

    return product


def _kernel_sums(ws, combine, col_scale):
    st, flipped = _storage(ws)
    rows, cols = st[0].shape
    s0 = _as_numpy(st[0])
    s1 = _as_numpy(st[1]) if len(st) == 2 else s0
    scale, smode = _scale_args(col_scale, flipped)
    work = rows > 0 and cols > 0
    nt = _threads(rows, cols)
    rowsum = np.empty((1, rows), np.float64) if work else np.zeros((1, rows), np.float64)
    part = np.empty((nt, 1, cols), np.float64) if work else np.zeros((1, 1, cols), np.float64)
    if work:
        _run(2, nt, s0, s1, _COMBINE_CODE[combine], scale, smode, _NO_V, rowsum, part)
    colsum = part.sum(axis=0)[0] if part.shape[0] > 1 else part[0, 0]
    colsum, rowsum = torch.from_numpy(colsum), torch.from_numpy(rowsum[0])
    # Storage rows are M's columns when the storage is W.T.
    return (rowsum, colsum) if flipped else (colsum, rowsum)


# --------------------------------------------------------------------------------------------
# The numba kernels
# --------------------------------------------------------------------------------------------
# Rows of the storage are handed out in chunks to ``nt`` workers (this thread and pool
# threads, see _run), so the thread count follows torch's setting without touching numba's
# global one. A worker processes four rows at a time, so that one load of v (forward) or of
# the partial sums (transpose) serves four rows, and prefetches the next four in software (the
# hardware prefetcher alone left much of the bandwidth unused in measurements). Two ways:
#
# * fused (one weight, any scale): the rule is applied inside the float64 accumulation loop
#   (_sdot4, _sdot4x2, _saxpy4, _ssums4 below; no scale is a scale of ones, exact in float32),
#   the weights read straight from their storage;
# * general ('sum', 'max', and a last partial block of < 4 rows): the rule is applied
#   into a float32 buffer of four rows that stays in L1 (_decode), one tight pass per step,
#   then the buffer is accumulated (_dot4, _dot4x2, _axpy4, _rowsum4/_colsum4).
#
# Edge weights are computed in functions without fastmath flags (_decode, _edge). The float64
# accumulation carries 'reassoc' (a reduction cannot be vectorised without it) and 'contract'
# (FMA): both change only the rounding of the accumulation. Numba compiles each function with
# its own flags and LLVM keeps them per instruction when it inlines; ``inline='always'``
# (numba-level inlining) would drop them, so it is not used.

_ROWS = 4  # rows decoded per block

# Flags of the float64 accumulation: 'reassoc' lets a reduction vectorise, 'contract' lets
# multiply-add become one FMA (one rounding instead of two). Neither reaches an edge weight:
# those are computed in functions without flags (_decode, _edge), and LLVM keeps each
# instruction's own flags when it inlines.
_ACCUMULATE = {"reassoc", "contract"}

if _nb is not None:
    from llvmlite import binding as _llvm
    from llvmlite import ir as _ir
    from numba import njit as _njit
    from numba import types as _types
    from numba.core import cgutils as _cgutils
    from numba.extending import intrinsic as _intrinsic

    # The prefetch intrinsic is overloaded on the pointer type: "p0" since LLVM's opaque
    # pointers (15), "p0i8" before.
    _PREFETCH_NAME = "llvm.prefetch.p0" if _llvm.llvm_version_info >= (15,) else "llvm.prefetch.p0i8"

    @_intrinsic
    def _absf(typingctx, x):
        """|x| as float32 from a float32, a bf16 bit pattern (uint16) or an fp16 one (int16).

        Clearing the sign bit is exactly float32 ``abs`` (NaN included); bf16 -> fp32 is a
        16-bit shift, fp16 -> fp32 an exact ``fpext`` (one vcvtph2ps with F16C).
        """
        f32 = _ir.FloatType()
        if x == _types.float32:
            def codegen(context, builder, sig, args):
                fabs = builder.module.declare_intrinsic("llvm.fabs", [f32])
                return builder.call(fabs, [args[0]])
        elif x == _types.uint16:
            def codegen(context, builder, sig, args):
                i32 = _ir.IntType(32)
                bits = builder.zext(builder.and_(args[0], _ir.Constant(args[0].type, 0x7FFF)), i32)
                return builder.bitcast(builder.shl(bits, _ir.Constant(i32, 16)), f32)
        elif x == _types.int16:
            def codegen(context, builder, sig, args):
                bits = builder.and_(args[0], _ir.Constant(args[0].type, 0x7FFF))
                return builder.fpext(builder.bitcast(bits, _ir.HalfType()), f32)
        else:
            return None
        return _types.float32(x), codegen

    @_intrinsic
    def _wide_vectors(typingctx):
        """Let LLVM use 512-bit vectors in the calling function (a hint, moot without AVX-512).

        LLVM's tuning for recent Intel CPUs prefers 256-bit vectors; these loops ran about 10%
        faster with 512 (Sapphire Rapids, fp32 and bf16). llvmlite has no API for string
        function attributes, so they go into its attribute set directly; should that ever
        fail, the hint is skipped.
        """
        def codegen(context, builder, sig, args):
            try:
                attrs = builder.function.attributes
                set.add(attrs, '"prefer-vector-width"="512"')
                set.add(attrs, '"min-legal-vector-width"="512"')
            except Exception:  # noqa: BLE001, S110 - a performance hint only
                pass
            return context.get_dummy_value()
        return _types.void(), codegen

    @_intrinsic
    def _prefetch(typingctx, arr, i, j):
        """Prefetch the cache line of ``arr[i, j]`` into all cache levels (a hint, never faults)."""
        sig = _types.void(arr, _types.intp, _types.intp)

        def codegen(context, builder, sig, args):
            aryty = sig.args[0]
            ary = context.make_array(aryty)(context, builder, args[0])
            ptr = _cgutils.get_item_pointer(context, builder, aryty, ary, [args[1], args[2]], wraparound=False)
            i32 = _ir.IntType(32)
            ptr = builder.bitcast(ptr, _ir.IntType(8).as_pointer())  # a no-op with opaque pointers
            fn = _cgutils.get_or_insert_function(
                builder.module, _ir.FunctionType(_ir.VoidType(), [ptr.type, i32, i32, i32]), _PREFETCH_NAME)
            builder.call(fn, [ptr, _ir.Constant(i32, 0), _ir.Constant(i32, 3), _ir.Constant(i32, 1)])
            return context.get_dummy_value()
        return sig, codegen

    @_intrinsic
    def _fetch_add(typingctx, arr, val):
        """Atomically add ``val`` to ``arr[0]`` (int64) and return the value before: a work counter."""
        sig = _types.int64(arr, _types.int64)

        def codegen(context, builder, sig, args):
            aryty = sig.args[0]
            ary = context.make_array(aryty)(context, builder, args[0])
            ptr = _cgutils.get_item_pointer(context, builder, aryty, ary, [context.get_constant(_types.intp, 0)],
                                            wraparound=False)
            # Monotonic is enough: the counter only hands out disjoint rows; the results are
            # published by the futures' join.
            return builder.atomic_rmw("add", ptr, args[1], "monotonic")
        return sig, codegen

    @_njit(cache=True, nogil=True, boundscheck=False)
    def _decode(s0, s1, i, comb, scale, smode, b):
        """Row ``i`` of the edge matrix into ``b`` (float32): the rule, one pass per step."""
        _wide_vectors()
        r0 = s0[i]
        n = b.shape[0]
        if comb == 0:
            for j in range(n):
                b[j] = _absf(r0[j])
        elif comb == 1:
            r1 = s1[i]
            for j in range(n):
                b[j] = _absf(r0[j]) + _absf(r1[j])
        else:
            r1 = s1[i]
            for j in range(n):
                x = _absf(r0[j])
                y = _absf(r1[j])
                # torch.maximum: NaN wins.
                b[j] = x if (x >= y or x != x) else y  # noqa: PLR0124 - x != x: NaN
        if smode == 1:
            for j in range(n):
                b[j] = b[j] * scale[j]
        elif smode == 2:
            s = scale[i]
            for j in range(n):
                b[j] = b[j] * s

    @_njit(cache=True, nogil=True, boundscheck=False)
    def _decode_block(s0, s1, i, nrows, comb, scale, smode, buf):
        """Rows i:i+nrows into buf[:nrows], zeros below (a partial last block adds nothing)."""
        for q in range(nrows):
            _decode(s0, s1, i + q, comb, scale, smode, buf[q])
        for q in range(nrows, _ROWS):
            for j in range(buf.shape[1]):
                buf[q, j] = 0.0

    @_njit(cache=True, nogil=True, boundscheck=False)
    def _prefetch_block(s0, s1, i, i1, comb):
        """Prefetch rows i:i+4 (those below i1) of the weights for the next block."""
        step = 64 // s0.itemsize
        n = s0.shape[1]
        for q in range(i, min(i + _ROWS, i1)):
            for j in range(0, n, step):
                _prefetch(s0, q, j)
            if comb != 0:
                for j in range(0, n, step):
                    _prefetch(s1, q, j)

    @_njit(fastmath=_ACCUMULATE, cache=True, nogil=True, boundscheck=False)
    def _dot4(buf, v, acc):
        """acc[q] = sum_j float64(buf[q, j]) * v[j] for the four rows of the block."""
        _wide_vectors()
        b0, b1, b2, b3 = buf[0], buf[1], buf[2], buf[3]
        a0 = 0.0
        a1 = 0.0
        a2 = 0.0
        a3 = 0.0
        for j in range(v.shape[0]):
            x = v[j]
            a0 += np.float64(b0[j]) * x
            a1 += np.float64(b1[j]) * x
            a2 += np.float64(b2[j]) * x
            a3 += np.float64(b3[j]) * x
        acc[0] = a0
        acc[1] = a1
        acc[2] = a2
        acc[3] = a3

    @_njit(fastmath=_ACCUMULATE, cache=True, nogil=True, boundscheck=False)
    def _dot4x2(buf, v, w, acc):
        """As _dot4 for two vectors: acc[q] with v, acc[4 + q] with w, one read of the block."""
        _wide_vectors()
        b0, b1, b2, b3 = buf[0], buf[1], buf[2], buf[3]
        a0 = 0.0
        a1 = 0.0
        a2 = 0.0
        a3 = 0.0
        c0 = 0.0
        c1 = 0.0
        c2 = 0.0
        c3 = 0.0
        for j in range(v.shape[0]):
            x = v[j]
            y = w[j]
            e0 = np.float64(b0[j])
            e1 = np.float64(b1[j])
            e2 = np.float64(b2[j])
            e3 = np.float64(b3[j])
            a0 += e0 * x
            a1 += e1 * x
            a2 += e2 * x
            a3 += e3 * x
            c0 += e0 * y
            c1 += e1 * y
            c2 += e2 * y
            c3 += e3 * y
        acc[0] = a0
        acc[1] = a1
        acc[2] = a2
        acc[3] = a3
        acc[4] = c0
        acc[5] = c1
        acc[6] = c2
        acc[7] = c3

    @_njit(fastmath=_ACCUMULATE, cache=True, nogil=True, boundscheck=False)
    def _axpy4(p, buf, a0, a1, a2, a3):
        """p[j] += sum_q float64(buf[q, j]) * a_q: elementwise, vectorised without fastmath."""
        _wide_vectors()
        b0, b1, b2, b3 = buf[0], buf[1], buf[2], buf[3]
        for j in range(p.shape[0]):
            p[j] += (np.float64(b0[j]) * a0 + np.float64(b1[j]) * a1) + (np.float64(b2[j]) * a2 + np.float64(b3[j]) * a3)

    @_njit(fastmath=_ACCUMULATE, cache=True, nogil=True, boundscheck=False)
    def _rowsum4(buf, acc):
        _wide_vectors()
        b0, b1, b2, b3 = buf[0], buf[1], buf[2], buf[3]
        a0 = 0.0
        a1 = 0.0
        a2 = 0.0
        a3 = 0.0
        for j in range(b0.shape[0]):
            a0 += np.float64(b0[j])
            a1 += np.float64(b1[j])
            a2 += np.float64(b2[j])
            a3 += np.float64(b3[j])
        acc[0] = a0
        acc[1] = a1
        acc[2] = a2
        acc[3] = a3

    @_njit(fastmath=_ACCUMULATE, cache=True, nogil=True, boundscheck=False)
    def _colsum4(p, buf):
        _wide_vectors()
        b0, b1, b2, b3 = buf[0], buf[1], buf[2], buf[3]
        for j in range(p.shape[0]):
            p[j] += (np.float64(b0[j]) + np.float64(b1[j])) + (np.float64(b2[j]) + np.float64(b3[j]))

    # Fused variants for single-weight blocks: the rule is applied inside the accumulation
    # loop, the weights read straight from their storage, saving the store to and reload from
    # the L1 buffer of the general path (which ran 1.5-2x slower). Two sets: plain (no scale,
    # the export default) and scaled, e = (|w| * cs[j]) * c_q with a column scale cs (ones
    # when the scale is per row) and a per-row c_q (1.0 when it is per column). Multiplying
    # by 1.0 is exact, so one scaled set covers both kinds of scale bit for bit; a plain set
    # of its own because those two multiplies cost 10-18% where no scale is needed.

    @_njit(cache=True, nogil=True, boundscheck=False)
    def _edge(x, s, c):
        """One scaled edge weight in float32, then widened: no fastmath flags here."""
        return np.float64((_absf(x) * s) * c)

    @_njit(fastmath=_ACCUMULATE, cache=True, nogil=True, boundscheck=False)
    def _sdot4(w0, w1, w2, w3, cs, c0, c1, c2, c3, v, acc):
        _wide_vectors()
        a0 = 0.0
        a1 = 0.0
        a2 = 0.0
        a3 = 0.0
        for j in range(v.shape[0]):
            x = v[j]
            s = cs[j]
            a0 += _edge(w0[j], s, c0) * x
            a1 += _edge(w1[j], s, c1) * x
            a2 += _edge(w2[j], s, c2) * x
            a3 += _edge(w3[j], s, c3) * x
        acc[0] = a0
        acc[1] = a1
        acc[2] = a2
        acc[3] = a3

    @_njit(fastmath=_ACCUMULATE, cache=True, nogil=True, boundscheck=False)
    def _sdot4x2(w0, w1, w2, w3, cs, c0, c1, c2, c3, v, w, acc):
        _wide_vectors()
        a0 = 0.0
        a1 = 0.0
        a2 = 0.0
        a3 = 0.0
        b0 = 0.0
        b1 = 0.0
        b2 = 0.0
        b3 = 0.0
        for j in range(v.shape[0]):
            x = v[j]
            y = w[j]
            s = cs[j]
            e0 = _edge(w0[j], s, c0)
            e1 = _edge(w1[j], s, c1)
            e2 = _edge(w2[j], s, c2)
            e3 = _edge(w3[j], s, c3)
            a0 += e0 * x
            a1 += e1 * x
            a2 += e2 * x
            a3 += e3 * x
            b0 += e0 * y
            b1 += e1 * y
            b2 += e2 * y
            b3 += e3 * y
        acc[0] = a0
        acc[1] = a1
        acc[2] = a2
        acc[3] = a3
        acc[4] = b0
        acc[5] = b1
        acc[6] = b2
        acc[7] = b3

    @_njit(fastmath=_ACCUMULATE, cache=True, nogil=True, boundscheck=False)
    def _saxpy4(p, w0, w1, w2, w3, cs, c0, c1, c2, c3, a0, a1, a2, a3):
        _wide_vectors()
        for j in range(p.shape[0]):
            s = cs[j]
            p[j] += ((_edge(w0[j], s, c0) * a0 + _edge(w1[j], s, c1) * a1)
                     + (_edge(w2[j], s, c2) * a2 + _edge(w3[j], s, c3) * a3))

    @_njit(fastmath=_ACCUMULATE, cache=True, nogil=True, boundscheck=False)
    def _ssums4(p, w0, w1, w2, w3, cs, c0, c1, c2, c3, acc):
        """Row sums into acc[:4], column sums added to p; the plain case passes ones (sums are
        a once-per-graph cost, not worth a set of their own)."""
        _wide_vectors()
        a0 = 0.0
        a1 = 0.0
        a2 = 0.0
        a3 = 0.0
        for j in range(p.shape[0]):
            s = cs[j]
            e0 = _edge(w0[j], s, c0)
            e1 = _edge(w1[j], s, c1)
            e2 = _edge(w2[j], s, c2)
            e3 = _edge(w3[j], s, c3)
            a0 += e0
            a1 += e1
            a2 += e2
            a3 += e3
            p[j] += (e0 + e1) + (e2 + e3)
        acc[0] = a0
        acc[1] = a1
        acc[2] = a2
        acc[3] = a3

    @_njit(cache=True, nogil=True, boundscheck=False)
    def _job(mode, t, counter, chunk, s0, s1, comb, scale, smode, vt, out, part):
        """Worker ``t``: takes chunks of ``chunk`` storage rows off ``counter`` until none is left.

        mode 0, forward: out[:, i] = E[i] @ v (vt: (k, cols), out: (k, rows)).
        mode 1, transpose: part[t] = sum over the rows i this worker took of v[i] * E[i]
        (vt: (k, rows), part: (nt, k, cols); the caller sums over t).
        mode 2, sums: out[0, i] = sum_j E[i, j]; part[t, 0] = column sums of the rows taken.
        Chunks are handed out at run time, so a worker that starts late (a pool thread takes
        tens of microseconds to wake) or runs slow simply takes fewer: no thread waits on a
        straggler. ``chunk`` is a multiple of four. One function for the three jobs: numba
        links and optimises each jitted caller once, so one caller keeps the first compile short.
        """
        _wide_vectors()
        rows, cols = s0.shape
        k = vt.shape[0]
        acc = np.empty(2 * _ROWS, np.float64)
        buf = np.empty((_ROWS, cols), np.float32)
        p = part[min(t, part.shape[0] - 1)]  # the forward job gets a 1-row placeholder
        if mode != 0:
            for kk in range(p.shape[0]):
                for j in range(cols):
                    p[kk, j] = 0.0
        fused = comb == 0
        one = np.float32(1.0)
        # The scaled set's column scale: the scale itself, or ones when it is per row (or none).
        cs = scale if smode == 1 else np.ones(cols, np.float32)
        while True:
            i = _fetch_add(counter, chunk)
            if i >= rows:
                return
            i1 = min(rows, i + chunk)
            if fused:
                # The fused loops over whole blocks of four rows; a last partial block goes below.
                c0 = c1 = c2 = c3 = one
                while i + _ROWS <= i1:
                    _prefetch_block(s0, s1, i + _ROWS, i1, comb)
                    w0, w1, w2, w3 = s0[i], s0[i + 1], s0[i + 2], s0[i + 3]
                    if smode == 2:
                        c0, c1, c2, c3 = scale[i], scale[i + 1], scale[i + 2], scale[i + 3]
                    if mode == 0:
                        if k == 1:
                            _sdot4(w0, w1, w2, w3, cs, c0, c1, c2, c3, vt[0], acc)
                        else:
                            _sdot4x2(w0, w1, w2, w3, cs, c0, c1, c2, c3, vt[0], vt[1], acc)
                        for q in range(_ROWS):
                            out[0, i + q] = acc[q]
                            if k == 2:
                                out[1, i + q] = acc[_ROWS + q]
                    elif mode == 1:
                        for kk in range(k):
                            vk = vt[kk]
                            _saxpy4(p[kk], w0, w1, w2, w3, cs, c0, c1, c2, c3, vk[i], vk[i + 1], vk[i + 2], vk[i + 3])
                    else:
                        _ssums4(p[0], w0, w1, w2, w3, cs, c0, c1, c2, c3, acc)
                        for q in range(_ROWS):
                            out[0, i + q] = acc[q]
                    i += _ROWS
            # The general path: the rule into an L1 buffer of four rows, then float64 from there.
            while i < i1:
                n = min(_ROWS, i1 - i)
                _decode_block(s0, s1, i, n, comb, scale, smode, buf)
                _prefetch_block(s0, s1, i + _ROWS, i1, comb)
                if mode == 0:
                    if k == 1:
                        _dot4(buf, vt[0], acc)
                        for q in range(n):
                            out[0, i + q] = acc[q]
                    else:
                        _dot4x2(buf, vt[0], vt[1], acc)
                        for q in range(n):
                            out[0, i + q] = acc[q]
                            out[1, i + q] = acc[_ROWS + q]
                elif mode == 1:
                    for kk in range(k):
                        vk = vt[kk]
                        # Rows past the end are zeros in buf; their coefficient is 0 too.
                        for q in range(_ROWS):
                            acc[q] = vk[i + q] if q < n else 0.0
                        _axpy4(p[kk], buf, acc[0], acc[1], acc[2], acc[3])
                else:
                    _rowsum4(buf, acc)
                    for q in range(n):
                        out[0, i + q] = acc[q]
                    _colsum4(p[0], buf)
                i += _ROWS


# --------------------------------------------------------------------------------------------
# The Triton kernels (CUDA tensors)
# --------------------------------------------------------------------------------------------
# Same rule, same storage handling. A program of the row kernel owns BR storage rows and
# walks their columns in BC-wide tiles, loading each weight once at its dtype (BR shrinks for
# matrices with few rows, so that there are still enough programs); the column
# kernel (the transposed product) owns BC columns and a slice of RS rows, and adds its partial
# sums into the output with float64 atomics so that short, wide matrices still fill the GPU.
# Triton is imported on the first CUDA call only (it is torch's dependency on CUDA builds, but
# importing it costs time a CPU run should not pay). Checked on the CPU with TRITON_INTERPRET=1;
# the block sizes are reasoned, not tuned: no GPU was at hand when this was written.

_TRITON = None  # the compiled-on-demand kernels, once built
_tt_edges = None  # the rule as a Triton device function, once built
_TRITON_MISSING: str | None = None
_TRITON_CHECKED = False
tl = None  # triton.language, bound on first use: Triton resolves names in the module's globals

_TILE = 2048  # elements per tile (BR x BC): 16 float64 accumulators per thread at 4 warps
_TBR, _TBC, _TRS = 16, 128, 512  # column kernel: rows per tile, columns per program, rows per program
_MIN_PROGRAMS = 1024  # enough programs for a large GPU to keep many loads in flight


def _row_blocks(rows: int) -> tuple[int, int]:
    """(BR, BC) of the row kernel: fewer rows per program when rows are few, tile kept."""
    br = 16
    while br > 1 and -(-rows // br) < _MIN_PROGRAMS:
        br //= 2
    return br, _TILE // br


def _triton_missing() -> str | None:
    """None when triton imports here, else why not (checked once)."""
    global _TRITON_MISSING, _TRITON_CHECKED
    if not _TRITON_CHECKED:
        try:
            import triton  # noqa: F401
        except ImportError as e:
            _TRITON_MISSING = f"triton is not installed ({e})"
        _TRITON_CHECKED = True
    return _TRITON_MISSING


def _triton_kernels():
    """Define the Triton kernels on first use; returns a namespace with ``rows`` and ``cols``."""
    # Module globals, not closure variables: Triton resolves the names a kernel uses (tl, the
    # helper it calls) in the defining module's globals.
    global _TRITON, tl, _tt_edges
    if _TRITON is not None:
        return _TRITON
    import triton
    import triton.language as _tl
    tl = _tl

    @triton.jit
    def _tt_edges(s0, s1, scale, off, m, rows, rmask, cols, cmask, COMB: tl.constexpr, SMODE: tl.constexpr):
        # The rule in float32, exactly as the CPU kernel and the torch path apply it.
        e = tl.abs(tl.load(s0 + off, mask=m, other=0.0).to(tl.float32))
        if COMB == 1:
            e = e + tl.abs(tl.load(s1 + off, mask=m, other=0.0).to(tl.float32))
        if COMB == 2:
            f = tl.abs(tl.load(s1 + off, mask=m, other=0.0).to(tl.float32))
            e = tl.where((e >= f) | (e != e), e, f)  # noqa: PLR0124 - torch.maximum: NaN wins
        if SMODE == 1:
            e = e * tl.load(scale + cols, mask=cmask, other=0.0)[None, :]
        if SMODE == 2:
            e = e * tl.load(scale + rows, mask=rmask, other=0.0)[:, None]
        return e.to(tl.float64)

    @triton.jit
    def rows_kernel(s0, s1, scale, vt, out, colsum, R, C, stride, COMB: tl.constexpr, SMODE: tl.constexpr,
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
            e = _tt_edges(s0, s1, scale, rbase[:, None] + cols[None, :], m, rows, rmask, cols, cmask, COMB, SMODE)
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
    def cols_kernel(s0, s1, scale, vt, out, R, C, stride, RS, COMB: tl.constexpr, SMODE: tl.constexpr,
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
            e = _tt_edges(s0, s1, scale, off, m, rows, rmask, cols, cmask, COMB, SMODE)
            acc0 += e * tl.load(vt + rows, mask=rmask, other=0.0)[:, None]
            if K == 2:
                acc1 += e * tl.load(vt + R + rows, mask=rmask, other=0.0)[:, None]
        tl.atomic_add(out + cols, tl.sum(acc0, axis=0), mask=cmask)
        if K == 2:
            tl.atomic_add(out + C + cols, tl.sum(acc1, axis=0), mask=cmask)

    from types import SimpleNamespace
    _TRITON = SimpleNamespace(rows=rows_kernel, cols=cols_kernel, cdiv=triton.cdiv)
    return _TRITON


def _triton_args(ws, combine, col_scale):
    st, flipped = _storage(ws)
    dev = st[0].device
    if col_scale is None:
        scale, smode = torch.zeros(1, dtype=torch.float32, device=dev), 0
    else:
        scale, smode = col_scale.detach().to(device=dev, dtype=torch.float32).contiguous(), (2 if flipped else 1)
    s0 = st[0].detach()
    s1 = st[1].detach() if len(st) == 2 else s0
    return s0, s1, scale, smode, flipped


def _triton_product(ws, combine, col_scale, transpose):
    """``product(vt) -> (k, r)`` (``(k, c)`` when ``transpose``) float64 on the Triton kernels."""
    kern = _triton_kernels()
    s0, s1, scale, smode, flipped = _triton_args(ws, combine, col_scale)
    rows, cols = s0.shape
    comb = _COMBINE_CODE[combine]
    stride = s0.stride(0)
    if transpose != flipped:
        grid = (kern.cdiv(cols, _TBC), kern.cdiv(rows, _TRS))

        def product(vt):
            k = vt.shape[0]
            out = torch.zeros(k, cols, dtype=torch.float64, device=vt.device)
            if rows and cols:
                kern.cols[grid](s0, s1, scale, vt, out, rows, cols, stride, _TRS, COMB=comb, SMODE=smode, K=k,
                                BR=_TBR, BC=_TBC)
            return out
    else:
        br, bc = _row_blocks(rows)
        grid = (kern.cdiv(rows, br),)

        def product(vt):
            k = vt.shape[0]
            out = torch.zeros(k, rows, dtype=torch.float64, device=vt.device)
            if rows and cols:
                kern.rows[grid](s0, s1, scale, vt, out, out, rows, cols, stride, COMB=comb, SMODE=smode, K=k,
                                SUMS=False, BR=br, BC=bc)
            return out
    return product


def _triton_add(ws, combine, col_scale, transpose):
    """``add(vt, out, alpha)`` on the Triton kernels; False for a ``vt`` they do not take."""
    product = _triton_product(ws, combine, col_scale, transpose)
    device = ws[0].device

    def add(vt, out, alpha):
        if not isinstance(vt, torch.Tensor) or vt.dtype != torch.float64 or vt.device != device or vt.shape[0] > 2:
            return False
        out.add_(product(vt), alpha=alpha)
        return True

    return add


def _triton_matmul(ws, combine, col_scale, v, transpose):
    """abs_matmul on the Triton kernels (CUDA, or the CPU under TRITON_INTERPRET=1)."""
    vt = v.detach().t().contiguous()  # (k, n)
    return _triton_product(ws, combine, col_scale, transpose)(vt).t().contiguous()


def _triton_sums(ws, combine, col_scale):
    """abs_sums on the Triton row kernel: row sums in registers, column sums by atomics."""
    kern = _triton_kernels()
    s0, s1, scale, smode, flipped = _triton_args(ws, combine, col_scale)
    rows, cols = s0.shape
    rowsum = torch.zeros(rows, dtype=torch.float64, device=s0.device)
    colsum = torch.zeros(cols, dtype=torch.float64, device=s0.device)
    if rows and cols:
        br, bc = _row_blocks(rows)
        kern.rows[(kern.cdiv(rows, br),)](s0, s1, scale, rowsum, rowsum, colsum, rows, cols, s0.stride(0),
                                          COMB=_COMBINE_CODE[combine], SMODE=smode, K=1, SUMS=True, BR=br, BC=bc)
    return (rowsum, colsum) if flipped else (colsum, rowsum)
