"""GPU backend for machines without RAPIDS: the scipy reference kernels on ``cupyx.scipy.sparse``.

The CSR matrices are built once on the CPU (the same ones the scipy backend uses), copied to
the GPU, and cached on the graph; every iteration then runs on the GPU. Same semantics and
stopping rule as the scipy backend (networkx's ``n * tol`` on the L1 change).
"""

from __future__ import annotations

import logging

from ..base.optional import GPU_EXTRA, cupy_available
from ..base.result import iterated_result
from ._kernels import hits_power, katz_power, pagerank_power, perron_vector
from .backends import Backend, register_backend
from .scipy_backend import cached_matrix

logger = logging.getLogger(__name__)


def _modules():
    import cupy
    import cupyx.scipy.sparse as cusparse

    return cupy, cusparse


def _gpu_matrix(graph, kind: str, direction: str = "forward"):
    """The scipy matrix of :func:`cached_matrix` as a cupyx CSR matrix (cached by the graph)."""

    def build():
        cp, cusparse = _modules()
        m = cached_matrix(graph, kind, direction)
        if kind == "PT":
            PT, s = m
            return cusparse.csr_matrix(PT), cp.asarray(s)
        return cusparse.csr_matrix(m)

    return graph.cached(("cupy", kind, direction), build)


class CupyBackend(Backend):
    """Power iterations on the GPU with CuPy sparse matrices."""

    name = "cupy"
    algorithms = ("pagerank", "katz", "hits", "eigenvector")
    description = "GPU power iteration on cupyx.scipy.sparse CSR (no RAPIDS needed)"
    extra = GPU_EXTRA

    def unavailable_reason(self):
        return cupy_available()

    def pagerank(self, graph, *, alpha, personalization, dangling, direction, tol, max_iter, nstart):
        cp, _s = _modules()
        PT, s = _gpu_matrix(graph, "PT", direction)
        x0 = None if nstart is None else cp.asarray(nstart)
        x, it = pagerank_power(PT, s, alpha, cp.asarray(personalization), cp.asarray(dangling), tol, max_iter, x0,
                               xp=cp)
        return iterated_result(cp.asnumpy(x), it, self.name, "pagerank")

    def katz(self, graph, *, alpha, beta, direction, tol, max_iter, nstart, normalized):
        cp, _s = _modules()
        AT = _gpu_matrix(graph, "AT", direction)
        x0 = None if nstart is None else cp.asarray(nstart)
        x, it = katz_power(AT, alpha, cp.asarray(beta), tol, max_iter, x0, normalized, xp=cp)
        return iterated_result(cp.asnumpy(x), it, self.name, "katz")

    def hits(self, graph, *, tol, max_iter, nstart, normalized):
        cp, _s = _modules()
        A, AT = _gpu_matrix(graph, "A"), _gpu_matrix(graph, "AT")
        x0 = None if nstart is None else cp.asarray(nstart)
        h, a, it = hits_power(A, AT, tol, max_iter, x0, normalized, xp=cp)
        return (iterated_result(cp.asnumpy(h), it, self.name, "hubs"),
                iterated_result(cp.asnumpy(a), it, self.name, "authorities"))

    def eigenvector(self, graph, *, tol, max_iter, nstart):
        # CuPy's Lanczos (cupyx.scipy.sparse.linalg.eigsh, which='LA') on A + A^T.
        cp, _s = _modules()
        x0 = None if nstart is None else cp.asarray(nstart)
        x = perron_vector(_gpu_matrix(graph, "S"), tol, max_iter, x0, xp=cp)
        return iterated_result(cp.asnumpy(x), None, self.name, "eigenvector")


register_backend(CupyBackend())
