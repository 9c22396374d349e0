"""CPU reference backend: power iterations on scipy CSR matrices, with networkx semantics."""

from __future__ import annotations

import logging

import numpy as np

from ..base.result import exact_result, iterated_result
from ._kernels import (
    ConvergenceError,
    adjacency,
    directed_perron_vector,
    hits_power,
    katz_power,
    pagerank_power,
    perron_vector,
    transition_matrix,
)
from .backends import Backend, register_backend

logger = logging.getLogger(__name__)

__all__ = ["ScipyBackend", "ConvergenceError", "transition_matrix", "pagerank_power", "cached_matrix"]


def cached_matrix(graph, kind: str, direction: str = "forward"):
    """CSR matrices of ``graph``'s edge list, built once and cached by the graph (see ``MLPGraph.cached``).

    ``kind``: ``'PT'`` -> (P^T, out-strength) for PageRank; ``'A'`` -> adjacency (rows are
    sources); ``'AT'`` -> its transpose; ``'S'`` -> ``A + A^T`` (the undirected graph).
    ``direction='reverse'`` reverses every edge first.
    """
    return graph.cached(("scipy", kind, direction), lambda: _build(graph, kind, direction))


def _build(graph, kind: str, direction: str):
    e = graph.edges
    src, dst, w = e["src"].to_numpy(), e["dst"].to_numpy(), e["weight"].to_numpy()
    if direction == "reverse":
        src, dst = dst, src
    n = graph.n_nodes
    if kind == "PT":
        return transition_matrix(src, dst, w, n)
    if kind == "A":
        return adjacency(src, dst, w, n)
    if kind == "AT":
        return cached_matrix(graph, "A", direction).T.tocsr()
    if kind == "S":
        A = cached_matrix(graph, "A", "forward")
        return (A + A.T).tocsr()
    raise AssertionError(f"unknown matrix kind {kind!r}")  # internal


class ScipyBackend(Backend):
    """Reference implementation of every centrality on a scipy CSR edge list (CPU)."""

    name = "scipy"
    algorithms = ("pagerank", "katz", "hits", "eigenvector", "strength", "degree")
    description = "CPU reference: power iterations on scipy CSR (networkx semantics)"

    def pagerank(self, graph, *, alpha, personalization, dangling, direction, tol, max_iter, nstart):
        PT, s = cached_matrix(graph, "PT", direction)
        x, it = pagerank_power(PT, s, alpha, personalization, dangling, tol, max_iter, nstart)
        return iterated_result(x, it, self.name, "pagerank")

    def katz(self, graph, *, alpha, beta, direction, tol, max_iter, nstart, normalized):
        AT = cached_matrix(graph, "AT", direction)
        x, it = katz_power(AT, alpha, beta, tol, max_iter, nstart, normalized)
        return iterated_result(x, it, self.name, "katz")

    def hits(self, graph, *, tol, max_iter, nstart, normalized):
        A, AT = cached_matrix(graph, "A"), cached_matrix(graph, "AT")
        h, a, it = hits_power(A, AT, tol, max_iter, nstart, normalized)
        return iterated_result(h, it, self.name, "hubs"), iterated_result(a, it, self.name, "authorities")

    def eigenvector(self, graph, *, tol, max_iter, nstart, directed=False):
        # Lanczos on A + A^T (ARPACK reports no iteration count); Arnoldi on A^T when directed.
        if directed:
            x = directed_perron_vector(cached_matrix(graph, "A"), tol, max_iter, nstart)
        else:
            x = perron_vector(cached_matrix(graph, "S"), tol, max_iter, nstart)
        return iterated_result(x, None, self.name, "eigenvector")

    def strength(self, graph, *, direction):
        A = cached_matrix(graph, "A")
        x = np.asarray(A.sum(axis=1 if direction == "out" else 0), dtype=np.float64).ravel()
        return exact_result(x, self.name, f"{direction}_strength")

    def degree(self, graph, *, direction):
        # Structural degree: every edge of the edge list counts, whatever its weight (networkx).
        e = graph.edges
        col = e["src" if direction == "out" else "dst"].to_numpy()
        x = np.bincount(col, minlength=graph.n_nodes).astype(np.float64)
        return exact_result(x, self.name, f"{direction}_degree")


register_backend(ScipyBackend())
