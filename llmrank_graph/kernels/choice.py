"""Which kernel the products use and on how many threads: options, never process-wide state.

Every product (:func:`~llmrank_graph.kernels.products.prepare_matmul`, ``abs_matmul``,
``abs_sums``) takes ``kernel=`` and ``threads=``; when an argument is None it reads the
options that :func:`options` set for the enclosing ``with`` block. The options live in a
:class:`contextvars.ContextVar`, so a block affects only the thread (or asyncio task) that
runs it, and ends with it: nothing a test or a benchmark sets leaks into another.

``kernel``
    ``'auto'`` (the default): the numba kernel for CPU tensors, the Triton kernel for CUDA
    ones, where the call fits them (fp32/bf16/fp16 weights, float64 vectors, k <= 2), else
    the torch path, the reason logged at DEBUG level. A kernel that fails is logged at
    WARNING and that call alone runs on the torch path; the next call tries the kernel again.
    ``'numba'`` or ``'triton'``: that kernel or an error: an error when it is not installed,
    when the call does not fit it, and when it fails (nothing falls back).
    ``'torch'``: the torch path.
``threads``
    At most this many threads for the numba kernel (fewer for small blocks); None: torch's
    intra-op setting (``torch.get_num_threads()``) when the product is set up. The torch path
    runs on torch's own threads and the Triton kernel on the GPU: neither takes a count. The
    library never changes torch's setting.

>>> from llmrank_graph.kernels import current_options, options
>>> with options(kernel="torch", threads=2):
...     current_options()
KernelOptions(kernel='torch', threads=2)
>>> current_options()
KernelOptions(kernel='auto', threads=None)
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass

from ..base.params import Interval, OneOf, Optional, validate

__all__ = ["KERNELS", "KernelOptions", "OPTION_CONSTRAINTS", "current_options", "options", "resolve"]

#: The values of ``kernel``.
KERNELS = ("auto", "numba", "triton", "torch")

#: The constraints of the two options, as every product declares them.
OPTION_CONSTRAINTS = {"kernel": Optional(OneOf(*KERNELS)), "threads": Optional(Interval(int, 1))}


@dataclass(frozen=True)
class KernelOptions:
    """The kernel options in effect: ``kernel`` (one of :data:`KERNELS`) and ``threads`` (None: torch's)."""

    kernel: str = "auto"
    threads: int | None = None


# KernelOptions is frozen: one shared default is safe.
_CURRENT: contextvars.ContextVar[KernelOptions] = contextvars.ContextVar(
    "llmrank_graph_kernel_options", default=KernelOptions())  # noqa: B039


def current_options() -> KernelOptions:
    """The options in effect here: those of the innermost :func:`options` block, else the defaults."""
    return _CURRENT.get()


@contextlib.contextmanager
def options(kernel: str | None = None, threads: int | None = None) -> Iterator[KernelOptions]:
    """Set the kernel options for the products run inside the ``with`` block, in this thread or task.

    Parameters
    ----------
    kernel : {'auto', 'numba', 'triton', 'torch'}, optional
        Which path the products take (see the module docstring); None keeps the enclosing
        block's choice ('auto' outside every block).
    threads : int >= 1, optional
        At most this many threads for the numba kernel; None keeps the enclosing block's
        (torch's intra-op setting outside every block).

    Yields
    ------
    KernelOptions
        The options in effect inside the block.

    Raises
    ------
    InvalidArgumentError, InvalidArgumentTypeError
        For a ``kernel`` not in :data:`KERNELS` or a ``threads`` that is not a positive int.

    Examples
    --------
    >>> import torch
    >>> from llmrank_graph.kernels import abs_sums, options
    >>> with options(kernel="torch"):
    ...     abs_sums([torch.tensor([[1.0, -2.0]])], "single", None)
    (tensor([1., 2.], dtype=torch.float64), tensor([3.], dtype=torch.float64))
    """
    token = _CURRENT.set(resolve(kernel, threads))
    try:
        yield _CURRENT.get()
    finally:
        _CURRENT.reset(token)


def resolve(kernel: str | None = None, threads: int | None = None) -> KernelOptions:
    """The options a call runs with: its arguments, checked, where given, else those in effect."""
    if kernel is None and threads is None:
        return _CURRENT.get()
    checked = validate(OPTION_CONSTRAINTS, {"kernel": kernel, "threads": threads})
    now = _CURRENT.get()
    return KernelOptions(now.kernel if checked["kernel"] is None else checked["kernel"],
                         now.threads if checked["threads"] is None else checked["threads"])
