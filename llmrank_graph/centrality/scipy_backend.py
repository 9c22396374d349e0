"""CPU reference backend: power iteration on a scipy CSR matrix, as ``networkx.pagerank``."""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp

from ._result import CentralityResult
from .backends import Backend, register_backend

logger = logging.getLogger(__name__)


class ConvergenceError(RuntimeError):
    """A power iteration did not reach its tolerance within ``max_iter`` iterations."""


def transition_matrix(src: np.ndarray, dst: np.ndarray, weight: np.ndarray, n: int):
    """Column-stochastic ``P^T`` (CSR, float64) and the out-strength vector of an edge list."""
    A = sp.csr_matrix((weight.astype(np.float64), (src, dst)), shape=(n, n))  # duplicates summed
    s = np.asarray(A.sum(axis=1)).ravel()
    inv = np.divide(1.0, s, out=np.zeros_like(s), where=s != 0)
    PT = (sp.diags(inv) @ A).T.tocsr()
    return PT, s


def pagerank_power(PT, s: np.ndarray, alpha: float, p: np.ndarray, q: np.ndarray, tol: float,
                   max_iter: int, nstart: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Power iteration ``x <- alpha (P^T x + (d.x) q) + (1 - alpha) p`` (networkx semantics).

    Stops when the L1 change is below ``n * tol`` (networkx's criterion); raises
    ConvergenceError otherwise.
    """
    n = len(p)
    x = np.full(n, 1.0 / n) if nstart is None else nstart / nstart.sum()
    dangling = s == 0
    for it in range(1, max_iter + 1):
        xlast = x
        x = alpha * (PT @ x + x[dangling].sum() * q) + (1 - alpha) * p
        err = np.abs(x - xlast).sum()
        if err < n * tol:
            return x / x.sum(), it
    raise ConvergenceError(f"PageRank power iteration did not converge in `max_iter`={max_iter} iterations "
                           f"(last L1 change {err:.3g}, needed < n * tol = {n * tol:.3g}); raise max_iter or tol")


class ScipyBackend(Backend):
    name = "scipy"
    algorithms = ("pagerank",)
    description = "CPU reference: power iteration on scipy CSR (matches networkx)"

    def pagerank(self, graph, *, alpha, personalization, dangling, direction, tol, max_iter, nstart, **_):
        key = ("scipy_csr", direction)
        cache = graph.__dict__.setdefault("_kernel_cache", {})
        if key not in cache:
            e = graph.edges
            src, dst = e["src"].to_numpy(), e["dst"].to_numpy()
            if direction == "reverse":
                src, dst = dst, src
            cache[key] = transition_matrix(src, dst, e["weight"].to_numpy(), graph.n_nodes)
        PT, s = cache[key]
        x, it = pagerank_power(PT, s, alpha, personalization, dangling, tol, max_iter, nstart)
        return CentralityResult(x, True, it, self.name)


register_backend(ScipyBackend())
