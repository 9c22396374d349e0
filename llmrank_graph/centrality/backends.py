"""Backend registry: each backend has a name, an availability check and its algorithms.

GPU libraries (cupy, cudf, cugraph) are imported only inside the backend that needs them.
"""

from __future__ import annotations

import functools
import importlib.util
import logging

logger = logging.getLogger(__name__)

__all__ = ["Backend", "register_backend", "get_backend", "backends", "BackendUnavailableError",
           "cuda_available", "cupy_available", "require_cudf", "GPU_EXTRA"]

GPU_EXTRA = "gpu"  # `pip install llmrank-graph[gpu]` provides cupy, cudf, cugraph, dask-cudf, dask-cuda


class BackendUnavailableError(ImportError):
    """A backend was asked for but cannot run here."""


class Backend:
    """Base class. Subclasses set ``name``, ``algorithms``, ``extra`` and implement methods
    named after the algorithms (``pagerank(graph, **params) -> CentralityResult``)."""

    name: str = ""
    algorithms: tuple[str, ...] = ()
    description: str = ""
    extra: str | None = None  # pip extra that provides it
    accepts_device: bool = False  # takes a torch `device` (the sweep)

    def unavailable_reason(self) -> str | None:
        """None when the backend can run here, else why not."""
        return None

    @property
    def available(self) -> bool:
        return self.unavailable_reason() is None

    def implements(self, algorithm: str) -> bool:
        return algorithm in self.algorithms

    def require(self) -> None:
        """Raise :class:`BackendUnavailableError` (naming the extra to install) unless available."""
        reason = self.unavailable_reason()
        if reason is not None:
            hint = f"; install it with `pip install llmrank-graph[{self.extra}]`" if self.extra else ""
            raise BackendUnavailableError(f"backend {self.name!r} is not available: {reason}{hint}")

    def __repr__(self) -> str:
        return f"<backend {self.name}>"


_REGISTRY: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    """Add (or replace) a backend in the registry and return it."""
    if not isinstance(backend, Backend) or not backend.name:
        raise TypeError(f"`backend` must be a named Backend instance; got {backend!r}")
    _REGISTRY[backend.name] = backend
    return backend


def get_backend(name: str) -> Backend:
    """The registered backend called ``name``; ValueError listing the registered names otherwise."""
    if name not in _REGISTRY:
        raise ValueError(f"`backend` must be one of {', '.join(map(repr, ['auto', *_REGISTRY]))}; got {name!r}")
    return _REGISTRY[name]


def backend_names() -> list[str]:
    """Names of the registered backends, in registration order (``'auto'`` not included)."""
    return list(_REGISTRY)


def registered() -> dict[str, Backend]:
    return dict(_REGISTRY)


def backends() -> list[dict]:
    """Every registered backend: name, algorithms, availability and why not.

    Example
    -------
    >>> import llmrank_graph
    >>> [b["name"] for b in llmrank_graph.backends()]          # doctest: +SKIP
    ['scipy', 'sweep', 'cupy', 'cugraph', 'cugraph-dask']
    >>> [b["reason"] for b in llmrank_graph.backends() if not b["available"]]   # doctest: +SKIP
    ['CuPy is not installed', 'cuGraph is not installed', ...]

    Returns
    -------
    list of dict
        One dict per backend: ``name``, ``available``, ``reason`` (None when available),
        ``algorithms``, ``extra`` (pip extra that provides it) and ``description``.
    """
    out = []
    for b in _REGISTRY.values():
        reason = b.unavailable_reason()
        out.append({"name": b.name, "available": reason is None, "reason": reason,
                    "algorithms": list(b.algorithms), "extra": b.extra, "description": b.description})
    return out


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


@functools.lru_cache(maxsize=None)
def cuda_available() -> bool:
    """True when torch sees a CUDA GPU (never raises)."""
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # pragma: no cover - broken CUDA installs
        return False


@functools.lru_cache(maxsize=None)
def cupy_available() -> str | None:
    """None when CuPy is installed and sees a GPU, else why not (never raises)."""
    if not _has_module("cupy"):
        return "CuPy is not installed"
    try:
        import cupy

        # Documented to return False (not raise) on a machine without a GPU or driver.
        if not cupy.cuda.is_available():
            return "CuPy is installed but sees no CUDA GPU"
    except Exception as e:  # pragma: no cover - broken CUDA installs
        return f"CuPy is installed but failed to initialise ({type(e).__name__}: {e})"
    return None


def cuda_free_memory() -> int | None:
    """Free bytes on the current CUDA device, None without one."""
    if not cuda_available():
        return None
    try:
        import torch

        return int(torch.cuda.mem_get_info()[0])
    except Exception:  # pragma: no cover
        return None


def require_cudf():
    """Import cudf after checking for a GPU (``import cudf`` succeeds without one)."""
    if not _has_module("cudf"):
        raise BackendUnavailableError(f"cuDF is not installed; install it with `pip install llmrank-graph[{GPU_EXTRA}]`")
    if not cuda_available():
        raise BackendUnavailableError("cuDF needs a CUDA GPU and none is visible")
    import cudf

    return cudf
