"""Backends and the one dispatcher.

A backend is a small object with a name, the algorithms it implements (methods of that name
with explicit keyword-only signatures) and :meth:`Backend.can_run`, which answers None or
the reason it cannot run an algorithm on a graph with given parameters, and
:meth:`Backend.should_run`, whether ``'auto'`` should pick it, as networkx's backends do.
:func:`select_backend` is the only place that chooses: an explicit name must be able to run
(else an error naming what is missing or which parameter it cannot honour);
``'auto'`` walks :data:`AUTO_ORDER`, takes the first backend whose ``can_run`` says yes, and
debug-logs the reasons of the others. No backend is special-cased by name here.

GPU libraries (cupy, cudf, cugraph) are imported only inside the backend that needs them.
"""

from __future__ import annotations

import inspect
import logging

from ..base.checks import fail, fail_type
from ..base.optional import (
    GPU_EXTRA,
    BackendUnavailableError,
    cuda_available,
    cuda_free_memory,
    cupy_available,
    require_cudf,
)
from ..errors import InvalidArgumentError, LLMRankGraphError

logger = logging.getLogger(__name__)

__all__ = ["Backend", "register_backend", "get_backend", "backends", "backend_names", "select_backend",
           "BackendUnavailableError", "NoBackendError", "AUTO_ORDER", "cuda_available", "cuda_free_memory",
           "cupy_available", "require_cudf", "GPU_EXTRA"]

class NoBackendError(LLMRankGraphError, RuntimeError):
    """No registered backend can run an algorithm here (the message gives each one's reason)."""


#: Preference of ``backend='auto'`` per algorithm: the first backend that can run wins. Exact
#: sweeps first (on CUDA when present), then GPU edge-list backends (cuGraph on one GPU, then
#: on several when the edge list outgrows one: cuGraph's own ``can_run`` says so), then the
#: CPU reference. Backends not listed are tried after these. Only backends that implement the
#: algorithm are listed (cuGraph's HITS is unweighted, so its backend does not offer HITS;
#: tests/test_backends.py checks every entry against the backend's ``algorithms``).
AUTO_ORDER: dict[str, tuple[str, ...]] = {
    "pagerank": ("sweep", "cugraph", "cugraph-dask", "cupy", "scipy"),
    "katz": ("sweep", "cugraph", "cupy", "scipy"),
    "hits": ("cupy", "scipy"),
    "eigenvector": ("cugraph", "cupy", "sweep", "scipy"),  # sweep only for graphs not in memory
    "strength": ("sweep", "scipy"),
    "degree": ("sweep", "cugraph", "scipy"),
}


class Backend:
    """Base class of the backends.

    Subclasses set ``name``, ``algorithms``, ``description`` and ``extra`` (the pip extra
    that provides them), implement one method per algorithm with explicit keyword-only
    parameters, and may refine :meth:`unavailable_reason` and :meth:`can_run`.
    """

    name: str = ""
    algorithms: tuple[str, ...] = ()
    description: str = ""
    extra: str | None = None  # pip extra that provides it

    def unavailable_reason(self) -> str | None:
        """None when the backend can run here at all, else why not."""
        return None

    @property
    def available(self) -> bool:
        return self.unavailable_reason() is None

    def implements(self, algorithm: str) -> bool:
        return algorithm in self.algorithms

    def parameters(self, algorithm: str) -> tuple[str, ...]:
        """Names of the keyword parameters this backend's ``algorithm`` takes."""
        sig = inspect.signature(getattr(self, algorithm))
        return tuple(p.name for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY)

    def can_run(self, graph, algorithm: str, **params) -> str | None:
        """None when this backend can run ``algorithm`` on ``graph`` with ``params``, else why not.

        The base class checks that the algorithm is implemented, that the backend is
        available, and that every parameter is one the method takes. Subclasses add what
        they cannot honour (a value, a graph too large for the device).
        """
        if not self.implements(algorithm):
            return f"does not implement {algorithm}"
        why = self.unavailable_reason()
        if why is not None:
            return why
        takes = self.parameters(algorithm)
        for k in params:
            if k not in takes:
                others = [b.name for b in _REGISTRY.values()
                          if b.implements(algorithm) and k in b.parameters(algorithm)]
                return (f"`{k}` applies only to backends that take it ({', '.join(map(repr, others))}); "
                        f"got {k}={params[k]!r} with backend={self.name!r}")
        return None

    def should_run(self, graph, algorithm: str, **params) -> str | None:
        """None when ``'auto'`` should pick this backend (once :meth:`can_run` said yes), else why not.

        For backends that can run but are a poor default, such as a multi-GPU cluster for a
        graph that fits on one GPU. An explicit request does not ask this.
        """
        return None

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
        raise fail_type("backend", "a named Backend instance", backend)
    _REGISTRY[backend.name] = backend
    return backend


def get_backend(name: str) -> Backend:
    """The registered backend called ``name``; ValueError listing the registered names otherwise."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise fail("backend", f"one of {', '.join(map(repr, ['auto', *_REGISTRY]))}", name)
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
    >>> [b["name"] for b in llmrank_graph.backends()]
    ['scipy', 'sweep', 'cupy', 'cugraph', 'cugraph-dask']

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


def select_backend(graph, algorithm: str, requested: str = "auto", **params) -> Backend:
    """The backend that runs ``algorithm`` on ``graph`` with ``params``: the one dispatcher.

    Parameters
    ----------
    graph : MLPGraph
    algorithm : str
    requested : str
        ``'auto'`` or a registered backend name.
    **params
        The parameters the algorithm will be called with (backends refuse those they cannot honour).

    Raises
    ------
    ValueError
        Unknown name, a backend that does not implement the algorithm, or one that cannot
        honour a parameter (the message names it).
    BackendUnavailableError
        The requested backend cannot run here (the message names the extra to install).
    NoBackendError
        ``'auto'`` found no backend; the message gives each one's reason.
    """
    if not isinstance(requested, str):
        raise fail_type("backend", "a backend name (str)", requested)
    if requested != "auto":
        b = get_backend(requested)
        if not b.implements(algorithm):
            have = [n for n, x in _REGISTRY.items() if x.implements(algorithm)]
            raise InvalidArgumentError(f"`backend` {requested!r} does not implement {algorithm}; use one of "
                                       f"{', '.join(map(repr, ['auto', *have]))}")
        b.require()
        why = b.can_run(graph, algorithm, **params)
        if why is not None:
            raise InvalidArgumentError(f"backend {requested!r} cannot run {algorithm}: {why}")
        return b
    reasons = []
    order = AUTO_ORDER.get(algorithm, ())
    for name in list(order) + [n for n in _REGISTRY if n not in order]:
        b = _REGISTRY.get(name)
        if b is None or not b.implements(algorithm):
            continue
        why = b.can_run(graph, algorithm, **params) or b.should_run(graph, algorithm, **params)
        if why is None:
            logger.debug("%s: auto chose backend %r (%s)", algorithm, name,
                         "; ".join(reasons) if reasons else "first preference")
            return b
        reasons.append(f"{name}: {why}")
    raise NoBackendError(f"no backend can run {algorithm}: " + "; ".join(reasons))


def run(graph, algorithm: str, backend: str, **params):
    """Select a backend (see :func:`select_backend`) and run ``algorithm`` with ``params``."""
    b = select_backend(graph, algorithm, backend, **params)
    logger.debug("%s on %r with backend %r", algorithm, graph, b.name)
    return getattr(b, algorithm)(graph, **params)
