"""The numba kernel on the CPU: what it takes, the arguments it gets, and the threads that run it.

The kernels themselves are in :mod:`~llmrank_graph.kernels.numba_jit`; this module settles a
block's storage, scale and thread count once (:func:`prepare`, :func:`sums`) and runs
:func:`~llmrank_graph.kernels.numba_jit.job` on this thread and ``threads - 1`` daemon worker
threads. Importing it imports numba, so :mod:`~llmrank_graph.kernels.products` imports it
only when a CPU kernel is first used (a missing numba, a dependency of the package: ``ImportError``).

>>> import numpy as np, torch
>>> add = prepare([torch.tensor([[1.0, -2.0]])], "single", None, transpose=False, threads=1)
>>> out = np.zeros((1, 1))
>>> add(np.array([[1.0, 1.0]]), out, 0.5)
True
>>> out
array([[1.5]])
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable

import numpy as np
import torch

from .numba_jit import ROWS, job
from .rule import COMBINE_CODE, KERNEL_DTYPES, storage

__all__ = ["prepare", "run", "sums", "unsupported"]

# Below this many elements per thread a block uses fewer threads: waking one costs more.
_MIN_ELEMS_PER_THREAD = 1 << 16

# Rows are handed to the kernel's workers in chunks of about this many elements (a multiple of
# four rows): small enough to balance them, large enough that the counter and the prefetch
# break at chunk ends cost nothing (4K-element chunks ran 5-20% slower, 16K a few %).
_JOB_CHUNK_ELEMS = 1 << 16

# Placeholders for the arrays a job does not use: one signature per weight dtype, so each
# dtype compiles once.
_NO_OUT = np.zeros((1, 0), np.float64)
_NO_PART = np.zeros((1, 1, 0), np.float64)
_NO_V = np.zeros((1, 0), np.float64)
_NO_SCALE = np.zeros(0, np.float32)


def unsupported(ws: list[torch.Tensor], col_scale: torch.Tensor | None, v: torch.Tensor | None) -> str | None:
    """Why the numba kernel cannot take this call (None: it can). Checked arguments only."""
    for w in ws:
        if not w.is_cpu:
            return f"weights on {w.device.type}: the numba kernel runs on the CPU only"
        if w.dtype not in KERNEL_DTYPES:
            return f"weights of dtype {w.dtype}: the numba kernel reads float32, bfloat16 and float16"
    if len(ws) == 2 and ws[0].dtype != ws[1].dtype:
        return f"weights of two dtypes ({ws[0].dtype}, {ws[1].dtype})"
    if col_scale is not None and not col_scale.is_cpu:
        return f"col_scale on {col_scale.device.type}: the numba kernel runs on the CPU only"
    if v is not None:
        if not v.is_cpu:
            return f"v on {v.device.type}: the numba kernel runs on the CPU only"
        if v.dtype != torch.float64:
            return f"v of dtype {v.dtype}: the numba kernel accumulates float64 only"
        if v.shape[1] not in (1, 2):
            return f"v with {v.shape[1]} columns: the numba kernel takes 1 or 2"
    return None


def _as_numpy(w: torch.Tensor) -> np.ndarray:
    """A zero-copy numpy view of a contiguous CPU weight, bf16/fp16 as their raw bits."""
    if w.requires_grad:
        w = w.detach()
    if w.dtype == torch.float32:
        return w.numpy()
    return w.view(torch.int16).numpy().view(KERNEL_DTYPES[w.dtype])


def _threads(rows: int, cols: int, threads: int | None) -> int:
    """Threads for one block: the caller's count (None: torch's setting), fewer for small blocks."""
    most = torch.get_num_threads() if threads is None else threads
    return max(1, min(most, (rows * cols) // _MIN_ELEMS_PER_THREAD, rows))


def _scale_args(col_scale: torch.Tensor | None, flipped: bool) -> tuple[np.ndarray, int]:
    """The float32 scale and where it applies in storage: 0 nowhere, 1 per column, 2 per row."""
    if col_scale is None:
        return _NO_SCALE, 0
    s = col_scale.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()
    # M's columns are the storage's rows when the storage is W.T.
    return s, (2 if flipped else 1)


def _storage_args(ws: list[torch.Tensor], col_scale: torch.Tensor | None):
    """``(s0, s1, scale, smode, flipped)``: the weights' storage as numpy and the scale's place in it."""
    st, flipped = storage(ws)
    s0 = _as_numpy(st[0])
    s1 = _as_numpy(st[1]) if len(st) == 2 else s0
    scale, smode = _scale_args(col_scale, flipped)
    return s0, s1, scale, smode, flipped


def run(mode: int, nt: int, s0: np.ndarray, *args) -> None:
    """Run :func:`~llmrank_graph.kernels.numba_jit.job` on ``nt`` workers: this thread and ``nt - 1`` pool threads.

    Plain Python threads rather than numba's ``parallel=True``: the jobs release the GIL
    (``nogil``); a ``prange`` wrapper tripled the first compile (~12 s more per dtype), ran
    2.5x slower on a loaded machine (its workers spin), and numba's default workqueue pool
    aborts the process when two Python threads launch at once. A pool thread takes ~25-40 us
    to wake; rows are handed out in chunks at run time, so this thread does more meanwhile.
    """
    cols = s0.shape[1]
    counter = np.zeros(1, np.int64)
    chunk = max(ROWS, (_JOB_CHUNK_ELEMS // max(cols, 1)) // ROWS * ROWS)
    if nt == 1:
        job(mode, 0, counter, chunk, s0, *args)
        return
    done = _workers(nt - 1).submit([(mode, t, counter, chunk, s0) + args for t in range(1, nt)])
    try:
        job(mode, 0, counter, chunk, s0, *args)
    finally:
        errors = [e for e in (done.get() for _ in range(nt - 1)) if e is not None]
    if errors:
        raise errors[0]


class _Workers:
    """Daemon threads that run ``job`` calls handed over through C-level queues.

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
                job(*call)
            except BaseException as e:  # noqa: BLE001 - handed to the caller, which raises it
                done.put(e)
            else:
                done.put(None)


# The pool is a resource, like a file handle, not a setting: it only grows to the most
# threads asked for so far, and every call says how many of them it uses.
_lock = threading.Lock()
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


def prepare(ws: list[torch.Tensor], combine: str, col_scale: torch.Tensor | None, transpose: bool,
            threads: int | None) -> Callable[[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor, float], bool]:
    """``product(vt, out, alpha)``: ``out += alpha * (M @ v)``, everything but the vectors fixed now.

    The product returns False, having done nothing, for a ``vt`` the kernel does not take
    (not float64 on the CPU, or more than two rows).
    """
    s0, s1, scale, smode, flipped = _storage_args(ws, col_scale)
    rows, cols = s0.shape  # storage shape
    comb = COMBINE_CODE[combine]
    work = rows > 0 and cols > 0
    by_row = transpose == flipped  # M @ v on row-major storage, M.T @ v on W.T storage
    nt = _threads(rows, cols, threads)  # now, once: a torch call per product costs

    def product(vt, out, alpha):
        if isinstance(vt, torch.Tensor):
            if not vt.is_cpu:
                return False
            vt, out = vt.numpy(), out.numpy()  # views: the addition lands in the tensor
        if vt.dtype != np.float64 or vt.shape[0] > 2:
            return False
        vn = np.ascontiguousarray(vt)  # no copy: the sweep hands contiguous rows
        k = vn.shape[0]
        if not work:
            return True
        if by_row:
            # The kernel adds alpha * (M @ v) into out itself (out + alpha * dot, rounded as
            # numpy would): into the sweep's own rows when they are contiguous (and not v's),
            # else into a temporary of zeros (0 + x is exact) added after.
            if (out.dtype == np.float64 and out.flags.c_contiguous and out.flags.writeable
                    and not np.may_share_memory(out, vn)):
                run(0, nt, s0, s1, comb, scale, smode, vn, float(alpha), out, _NO_PART)
            else:
                res = np.zeros((k, rows), np.float64)
                run(0, nt, s0, s1, comb, scale, smode, vn, float(alpha), res, _NO_PART)
                out += res
            return True
        part = np.empty((nt, k, cols), np.float64)
        run(1, nt, s0, s1, comb, scale, smode, vn, 0.0, _NO_OUT, part)
        res = part.sum(axis=0) if nt > 1 else part[0]
        res *= alpha
        out += res
        return True

    return product


def sums(ws: list[torch.Tensor], combine: str, col_scale: torch.Tensor | None,
         threads: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(column sums (c,), row sums (r,))`` of ``M`` in float64, one read of the weights."""
    s0, s1, scale, smode, flipped = _storage_args(ws, col_scale)
    rows, cols = s0.shape
    work = rows > 0 and cols > 0
    nt = _threads(rows, cols, threads)
    rowsum = np.empty((1, rows), np.float64) if work else np.zeros((1, rows), np.float64)
    part = np.empty((nt, 1, cols), np.float64) if work else np.zeros((1, 1, cols), np.float64)
    if work:
        run(2, nt, s0, s1, COMBINE_CODE[combine], scale, smode, _NO_V, 0.0, rowsum, part)
    colsum = part.sum(axis=0)[0] if part.shape[0] > 1 else part[0, 0]
    colsum, rowsum = torch.from_numpy(colsum), torch.from_numpy(rowsum[0])
    # Storage rows are M's columns when the storage is W.T.
    return (rowsum, colsum) if flipped else (colsum, rowsum)
