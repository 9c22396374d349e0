"""Backend registry: each backend has a name, an availability check and its algorithms.

GPU libraries (cupy, cudf, cugraph) are imported only inside the backend that needs them.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from dataclasses import dataclass

logger = logging.getLogger(__name__)

__all__ = ["Backend", "register_backend", "get_backend", "backends", "BackendUnavailableError",
           "cuda_available", "require_cudf"]


class BackendUnavailableError(ImportError):
    """A backend was asked for but cannot run here."""


class Backend:
    """Base class. Subclasses set ``name``, ``algorithms``, ``extra`` and implement methods
    named after the algorithms (``pagerank(graph, **params) -> CentralityResult``)."""

    name: str = ""
    algorithms: tuple[str, ...] = ()
    description: str = ""
    extra: str | None = None  # pip extra that provides it

    def unavailable_reason(self) -> str | None:
        """None when the backend can run here, else why not."""
        return None

    @property
    def available(self) -> bool:
        return self.unavailable_reason() is None

    def require(self) -> None:
        reason = self.unavailable_reason()
        if reason is not None:
            hint = f"; install it with `pip install llmrank-graph[{self.extra}]`" if self.extra else ""
            raise BackendUnavailableError(f"backend {self.name!r} is not available: {reason}{hint}")

    def __repr__(self) -> str:
        return f"<backend {self.name}>"


_REGISTRY: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    _REGISTRY[backend.name] = backend
    return backend


def get_backend(name: str) -> Backend:
    if name not in _REGISTRY:
        raise ValueError(f"`backend` must be one of {', '.join(map(repr, ['auto', *_REGISTRY]))}; got {name!r}")
    return _REGISTRY[name]


def registered() -> dict[str, Backend]:
    return dict(_REGISTRY)


def backends() -> list[dict]:
    """Every registered backend: name, algorithms, availability and why not.

    Example
    -------
    >>> import llmrank_graph
    >>> [b["name"] for b in llmrank_graph.backends()]          # doctest: +SKIP
    ['scipy', 'sweep', 'cupy', 'cugraph']
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


def require_cudf():
    """Import cudf after checking for a GPU (``import cudf`` succeeds without one)."""
    if not _has_module("cudf"):
        raise BackendUnavailableError("cuDF is not installed; install it with `pip install llmrank-graph[gpu]`")
    if not cuda_available():
        raise BackendUnavailableError("cuDF needs a CUDA GPU and none is visible")
    import cudf

    return cudf
