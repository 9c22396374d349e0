"""The products with ``|W|`` that the exact DAG sweep needs, each weight read once.

A weight block's matrix is ``M = combine(|W0|, |W1|) * col_scale[None, :]`` (shape (r, c), the
rule of :mod:`~llmrank_graph.kernels.rule`). The sweep needs ``M @ v``, ``M.T @ v`` (``v``
float64 with k = 1 or 2 columns) and the row and column sums of ``M``. Copying ``|W|`` to
float64 for a BLAS product reads and writes every weight several times; the kernels read each
weight once, apply the rule on the way and accumulate in float64. Only the order of the
float64 accumulation differs from a dense reference, so results agree to rounding (and
exactly when nothing is accumulated).

Three paths, one semantics, chosen per call by the ``kernel`` option
(:mod:`~llmrank_graph.kernels.choice`):

* ``'numba'``: CPU tensors, on a few Python threads (:mod:`~llmrank_graph.kernels.numba_cpu`;
  numba is a dependency of the package, so a default install takes this path), imported on
  first use;
* ``'triton'``: CUDA tensors, when triton imports (:mod:`~llmrank_graph.kernels.triton_cuda`);
* ``'torch'``: anything, on any device (:mod:`~llmrank_graph.kernels.torch_path`).

With ``kernel='auto'`` (the default) a call the kernel of its device does not take -- numba or
triton missing, weights that are not fp32/bf16/fp16, ``v`` not float64, k > 2, tensors on two
devices -- runs on the torch path, the reason logged at DEBUG level; a kernel that fails is
logged at WARNING and that call runs on the torch path; nothing is remembered, so the next
call tries the kernel again (pass ``kernel='torch'`` to stop trying). A kernel asked for by
name never falls back: it raises (:class:`~llmrank_graph.errors.MissingDependencyError` when
not installed, :class:`~llmrank_graph.errors.InvalidArgumentError` for a call it does not
take, :class:`~llmrank_graph.errors.WorkFailedError` when it fails), the message naming it.

>>> import torch
>>> w = torch.tensor([[1.0, -2.0], [0.5, 0.0]])
>>> abs_matmul([w], "single", None, torch.tensor([1.0, 1.0], dtype=torch.float64))
tensor([3.0000, 0.5000], dtype=torch.float64)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from types import ModuleType

import numpy as np
import torch

from ..errors import InvalidArgumentError, MissingDependencyError, WorkFailedError
from . import torch_path
from .choice import KernelOptions, resolve
from .rule import check_v, check_weights

__all__ = ["abs_matmul", "abs_sums", "fused_available", "prepare_matmul", "unsupported"]

logger = logging.getLogger(__name__)

#: ``add(vt, out, alpha)``: adds ``alpha * (M @ v)`` to ``out`` in place (see :func:`prepare_matmul`).
Product = Callable[[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor, float], None]

_RUNS_ON = {"numba": "cpu", "triton": "cuda"}
_TORCH_CHOSEN = "the kernel option is 'torch' (llmrank_graph.kernels.options)"


def _backend(name: str) -> tuple[ModuleType | None, str | None]:
    """``(module, None)`` for the kernel ``name`` when it imports here, else ``(None, why not)``.

    Imported here, on first use, and not at the package's import: numba costs about 0.3 s,
    triton more. Python keeps a module once imported; a failed import of numba is simply tried
    again next time.
    """
    if name == "triton":
        from . import triton_cuda

        return (None, triton_cuda.MISSING) if triton_cuda.MISSING else (triton_cuda, None)
    try:
        from . import numba_cpu
    except ImportError as e:
        return None, f"numba is not installed ({e}); reinstall llmrank_graph, which depends on it"
    return numba_cpu, None


def _route(ws: list[torch.Tensor], col_scale: torch.Tensor | None, v: torch.Tensor | None, opts: KernelOptions,
           strict: bool = True) -> tuple[str | None, ModuleType | None, str | None]:
    """``(kernel name, its module, None)`` when a kernel takes the call, else ``(None, None, why not)``.

    With ``strict``, a kernel named by the options that cannot take the call raises instead.
    """
    if opts.kernel == "torch":
        return None, None, _TORCH_CHOSEN
    name = "triton" if ws[0].is_cuda else "numba"
    named = opts.kernel != "auto"
    if named and opts.kernel != name:
        why = f"the {opts.kernel} kernel runs on {_RUNS_ON[opts.kernel]} tensors; the weights are on {ws[0].device}"
        if strict:
            raise InvalidArgumentError(f"`kernel` is {opts.kernel!r}, which cannot take this call: {why}")
        return None, None, why
    module, missing = _backend(name)
    if missing is not None:
        if strict and named:
            raise MissingDependencyError(f"`kernel` is {name!r}, but {missing}")
        return None, None, missing
    why = module.unsupported(ws, col_scale, v)
    if why is not None:
        if strict and named:
            raise InvalidArgumentError(f"`kernel` is {name!r}, which cannot take this call: {why}")
        return None, None, why
    return name, module, None


def _failed(name: str, ws: list[torch.Tensor], error: Exception, named: bool) -> None:
    """Report a kernel that failed: raise when it was asked for by name, else log it for this call."""
    what = (f"the {name} kernel failed for {str(ws[0].dtype).replace('torch.', '')} weights "
            f"({type(error).__name__}: {error})")
    if named:
        raise WorkFailedError(what) from error
    logger.warning("%s; this call runs on the torch path", what)


def fused_available(device: str | torch.device = "cpu", *, kernel: str | None = None) -> str | None:
    """None when a fused kernel runs on ``device`` under the kernel options, else why not.

    Parameters
    ----------
    device : str or torch.device
        ``'cpu'`` (the numba kernel) or a CUDA device (the Triton kernel).
    kernel : {'auto', 'numba', 'triton', 'torch'}, optional
        The kernel option to answer for (None: the one in effect, see :func:`options`).

    Returns
    -------
    str or None
        The reason (numba or triton missing, the option set to 'torch' or to the other
        device's kernel), or None.

    Examples
    --------
    >>> fused_available(kernel="torch")
    "the kernel option is 'torch' (llmrank_graph.kernels.options)"
    """
    opts = resolve(kernel, None)
    gpu = torch.device(device).type == "cuda"
    if opts.kernel == "torch":
        return _TORCH_CHOSEN
    name = "triton" if gpu else "numba"
    if opts.kernel not in ("auto", name):
        return f"the {opts.kernel} kernel runs on {_RUNS_ON[opts.kernel]} tensors, not on {torch.device(device)}"
    return _backend(name)[1]


def unsupported(weights: Sequence[torch.Tensor], combine: str, col_scale: torch.Tensor | None,
                v: torch.Tensor | None = None, *, kernel: str | None = None) -> str | None:
    """Why :func:`abs_matmul` (``v`` given) or :func:`abs_sums` (``v=None``) would not use a kernel.

    Parameters
    ----------
    weights, combine, col_scale
        As for :func:`abs_matmul`.
    v : torch.Tensor or None
        The vector(s) of the product, either direction (its length is not checked here), or
        None to ask about :func:`abs_sums`.
    kernel : {'auto', 'numba', 'triton', 'torch'}, optional
        The kernel option to answer for (None: the one in effect).

    Returns
    -------
    str or None
        None when a kernel takes the call, else the reason it does not (with a kernel named by
        the option, the call would raise with that reason).

    Raises
    ------
    InvalidArgumentError, InvalidArgumentTypeError
        For weights, ``combine`` or ``col_scale`` that no path accepts, or a ``v`` that is
        not a 1-D or 2-D floating-point tensor.

    Examples
    --------
    >>> import torch
    >>> unsupported([torch.ones(2, 2)], "single", None, torch.ones(2, 3, dtype=torch.float64), kernel="numba")
    'v with 3 columns: the numba kernel takes 1 or 2'
    """
    ws = check_weights(weights, combine, col_scale)
    if v is not None:
        v = check_v(v, None, False)
    return _route(ws, col_scale, v, resolve(kernel, None), strict=False)[2]


def abs_matmul(weights: Sequence[torch.Tensor], combine: str, col_scale: torch.Tensor | None, v: torch.Tensor,
               transpose: bool = False, *, kernel: str | None = None, threads: int | None = None) -> torch.Tensor:
    """``M @ v``, or ``M.T @ v`` when ``transpose``, with ``M = combine(|W0|, |W1|) * col_scale``.

    Parameters
    ----------
    weights : sequence of torch.Tensor
        One (``'single'``) or two (``'sum'``, ``'max'``) tensors of shape (r, c): fp32, bf16 or
        fp16 for the kernels (any real dtype on the torch path). Views are fine, ``.t()``
        views of a contiguous tensor included.
    combine : {'single', 'sum', 'max'}
        How two weights make one edge weight.
    col_scale : torch.Tensor or None
        (c,) scale of the columns of ``M``, applied in float32.
    v : torch.Tensor
        (c, k) -- or (r, k) when ``transpose`` -- float64 for the kernels (k = 1 or 2). A 1-D
        ``v`` gives a 1-D result.
    transpose : bool
        Compute ``M.T @ v`` instead of ``M @ v``.
    kernel : {'auto', 'numba', 'triton', 'torch'}, optional
        Which path (None: the option in effect, see :func:`options`).
    threads : int >= 1, optional
        At most this many threads for the numba kernel (None: the option in effect).

    Returns
    -------
    torch.Tensor
        (r, k) -- or (c, k) -- in ``v``'s dtype, on ``v``'s device, contiguous.

    Raises
    ------
    InvalidArgumentError, InvalidArgumentTypeError
        For a wrong ``combine``, number of weights, shape or dtype, or a kernel named by
        ``kernel`` that does not take the call.
    MissingDependencyError
        For a kernel named by ``kernel`` that is not installed.
    WorkFailedError
        For a kernel named by ``kernel`` that fails.

    Examples
    --------
    >>> import torch
    >>> w = torch.tensor([[1.0, -2.0], [0.5, 0.0]])
    >>> abs_matmul([w], "single", None, torch.ones(2, 1, dtype=torch.float64), transpose=True, kernel="torch")
    tensor([[1.5000],
            [2.0000]], dtype=torch.float64)
    """
    opts = resolve(kernel, threads)
    ws = check_weights(weights, combine, col_scale)
    r, c = ws[0].shape
    v2 = check_v(v, r if transpose else c, transpose)
    # One product, set up and run once: the same paths as the sweep's (adding to zeros is exact).
    out = torch.zeros(v2.shape[1], c if transpose else r, dtype=v2.dtype, device=v2.device)
    _prepare(ws, combine, col_scale, transpose, opts)(v2.detach().t().contiguous(), out, 1.0)
    out = out.t().contiguous()
    return out if v.dim() == 2 else out[:, 0]


def prepare_matmul(weights: Sequence[torch.Tensor], combine: str, col_scale: torch.Tensor | None,
                   transpose: bool = False, *, kernel: str | None = None, threads: int | None = None) -> Product:
    """:func:`abs_matmul` prepared once, for a sweep that multiplies every block in turn.

    Returns ``add(vt, out, alpha)``, which adds ``alpha * (M @ v)`` (``M.T @ v`` when
    ``transpose``) to ``out`` in place. Vectors travel as rows: ``vt`` is ``v.T``, (k, c) --
    (k, r) when ``transpose`` -- float64 and contiguous, and ``out`` a (k, r) -- (k, c) --
    float64 view to add into: numpy arrays on the CPU (tensors work too), torch tensors on
    the weights' GPU. The argument checks, the kernel options, the choice of path, the
    storage layout and the number of threads are settled here, once: between two blocks the
    sweep then runs only the kernel call and one addition, with caches the previous block
    has just flushed. Options set after this call do not change the product.

    The path is the one :func:`abs_matmul` would take for a float64 ``v`` of k <= 2 on the
    weights' device. With ``kernel='auto'``, a ``vt`` outside that takes the torch path, and
    a kernel that fails is logged and that call runs on the torch path; with a kernel named,
    both raise.

    Parameters
    ----------
    weights, combine, col_scale, transpose, kernel, threads
        As for :func:`abs_matmul`.

    Examples
    --------
    >>> import numpy as np, torch
    >>> add = prepare_matmul([torch.tensor([[1.0, -2.0]])], "single", None)
    >>> out = np.zeros((1, 1))
    >>> add(np.array([[1.0, 1.0]]), out, 0.5)
    >>> out
    array([[1.5]])
    """
    opts = resolve(kernel, threads)
    return _prepare(check_weights(weights, combine, col_scale), combine, col_scale, transpose, opts)


def _prepare(ws: list[torch.Tensor], combine: str, col_scale: torch.Tensor | None, transpose: bool,
             opts: KernelOptions) -> Product:
    """:func:`prepare_matmul` on checked weights and resolved options."""
    on_torch = torch_path.prepare(ws, combine, col_scale, transpose)
    name, module, reason = _route(ws, col_scale, None, opts)
    if name is None:
        logger.debug("prepared product on the torch path: %s", reason)
        return on_torch
    named = opts.kernel != "auto"
    try:
        product = module.prepare(ws, combine, col_scale, transpose, opts.threads)
    except Exception as e:  # noqa: BLE001 - a kernel that fails: raised when named, else this product uses torch
        _failed(name, ws, e, named)
        return on_torch

    def add(vt, out, alpha):
        try:
            if product(vt, out, alpha):
                return
        except Exception as e:  # noqa: BLE001 - as above, for this call only
            _failed(name, ws, e, named)
        else:
            why = (f"the {name} kernel takes float64 vectors, k <= 2, on the weights' device; got "
                   f"{type(vt).__name__} of {vt.dtype}, k = {vt.shape[0]}")
            if named:
                raise InvalidArgumentError(f"`kernel` is {name!r}, which cannot take this call: {why}")
            logger.debug("a product on the torch path: %s", why)
        on_torch(vt, out, alpha)

    return add


def abs_sums(weights: Sequence[torch.Tensor], combine: str, col_scale: torch.Tensor | None, *,
             kernel: str | None = None, threads: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Column sums (c,) and row sums (r,) of ``M``, float64, reading the weights once.

    Parameters
    ----------
    weights, combine, col_scale, kernel, threads
        As for :func:`abs_matmul`.

    Returns
    -------
    tuple of torch.Tensor
        ``(M.sum(0), M.sum(1))`` in float64, on the weights' device.

    Raises
    ------
    InvalidArgumentError, InvalidArgumentTypeError, MissingDependencyError, WorkFailedError
        As for :func:`abs_matmul`.

    Examples
    --------
    >>> import torch
    >>> abs_sums([torch.tensor([[1.0, -2.0], [0.5, 0.0]])], "single", torch.tensor([2.0, 1.0]))
    (tensor([3., 2.], dtype=torch.float64), tensor([4., 1.], dtype=torch.float64))
    """
    opts = resolve(kernel, threads)
    ws = check_weights(weights, combine, col_scale)
    name, module, reason = _route(ws, col_scale, None, opts)
    if name is not None:
        try:
            return module.sums(ws, combine, col_scale, opts.threads)
        except Exception as e:  # noqa: BLE001 - as in _prepare
            _failed(name, ws, e, opts.kernel != "auto")
    else:
        logger.debug("abs_sums on the torch path: %s", reason)
    return torch_path.sums(ws, combine, col_scale)
