"""GPU backend for machines without RAPIDS: the scipy reference kernels on ``cupyx.scipy.sparse``.

The CSR matrices are built once on the CPU (the same ones the scipy backend uses), copied to
the GPU, and cached on the graph; every iteration then runs on the GPU. Same semantics and
stopping rule as the scipy backend (networkx's ``n * tol`` on the L1 change).
"""

from __future__ import annotations

import logging

import numpy as np

from ._kernels import eigenvector_power, hits_power, katz_power, pagerank_power
from ._result import CentralityResult
from .backends import GPU_EXTRA, Backend, cupy_available, register_backend
from .scipy_backend import cached_matrix

logger = logging.getLogger(__name__)


def _modules():
    import cupy
    import cupyx.scipy.sparse as cusparse

    return cupy, cusparse


def _gpu_matrix(graph, kind: str, direction: str = "forward"):
    """The scipy matrix of :func:`cached_matrix` as a cupyx CSR matrix (cached on the graph)."""
    cache = graph.__dict__.setdefault("_kernel_cache", {})
    key = ("cupy", kind, direction)
    if key not in cache:
        cp, cusparse = _modules()
        m = cached_matrix(graph, kind, direction)
        if kind == "PT":
            PT, s = m
            cache[key] = (cusparse.csr_matrix(PT), cp.asarray(s))
        else:
            cache[key] = cusparse.csr_matrix(m)
    return cache[key]


class CupyBackend(Backend):
    """Power iterations on the GPU with CuPy sparse matrices."""

    name = "cupy"
    algorithms = ("pagerank", "katz", "hits", "eigenvector")
    description = "GPU power iteration on cupyx.scipy.sparse CSR (no RAPIDS needed)"
    extra = GPU_EXTRA

    def unavailable_reason(self):
        return cupy_available()

    def pagerank(self, graph, *, alpha, personalization, dangling, direction, tol, max_iter, nstart, **_):
        cp, _s = _modules()
        PT, s = _gpu_matrix(graph, "PT", direction)
        x0 = None if nstart is None else cp.asarray(nstart)
        x, it = pagerank_power(PT, s, alpha, cp.asarray(personalization), cp.asarray(dangling), tol, max_iter, x0, xp=cp)
        return CentralityResult(np.asarray(cp.asnumpy(x), dtype=np.float64), True, it, self.name)

    def katz(self, graph, *, alpha, beta, direction, tol, max_iter, nstart, normalized, **_):
        cp, _s = _modules()
        AT = _gpu_matrix(graph, "AT", direction)
        x0 = None if nstart is None else cp.asarray(nstart)
        x, it = katz_power(AT, alpha, cp.asarray(beta), tol, max_iter, x0, normalized, xp=cp)
        return CentralityResult(np.asarray(cp.asnumpy(x), dtype=np.float64), True, it, self.name, "katz")

    def hits(self, graph, *, tol, max_iter, nstart, normalized, **_):
        cp, _s = _modules()
        A, AT = _gpu_matrix(graph, "A"), _gpu_matrix(graph, "AT")
        x0 = None if nstart is None else cp.asarray(nstart)
        h, a, it = hits_power(A, AT, tol, max_iter, x0, normalized, xp=cp)
        return (CentralityResult(np.asarray(cp.asnumpy(h), dtype=np.float64), True, it, self.name, "hubs"),
                CentralityResult(np.asarray(cp.asnumpy(a), dtype=np.float64), True, it, self.name, "authorities"))

    def eigenvector(self, graph, *, tol, max_iter, nstart, **_):
        cp, _s = _modules()
        x0 = None if nstart is None else cp.asarray(nstart)
        x, it = eigenvector_power(_gpu_matrix(graph, "S"), tol, max_iter, x0, xp=cp)
        return CentralityResult(np.asarray(cp.asnumpy(x), dtype=np.float64), True, it, self.name, "eigenvector")


register_backend(CupyBackend())
