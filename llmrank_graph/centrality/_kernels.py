"""Power-iteration kernels shared by the scipy (numpy) and cupy backends.

Every kernel takes plain arrays and an array module ``xp`` (numpy or cupy): the sparse
matrices only need ``@``. Tolerances follow networkx: stop when the L1 change between two
iterates is below ``n * tol``. Each kernel returns ``(values, iterations)`` or raises
:class:`ConvergenceError`.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..errors import LLMRankGraphError


class ConvergenceError(LLMRankGraphError, RuntimeError):
    """A power iteration did not reach its tolerance within ``max_iter`` iterations."""


def _fail(name: str, max_iter: int, err: float, n: int, tol: float):
    raise ConvergenceError(f"{name} power iteration did not converge in `max_iter`={max_iter} iterations "
                           f"(last L1 change {err:.3g}, needed < n * tol = {n * tol:.3g}); raise max_iter or tol")


def adjacency(src: np.ndarray, dst: np.ndarray, weight: np.ndarray, n: int) -> sp.csr_matrix:
    """Weighted adjacency ``A[u, v] = w_uv`` (CSR, float64; duplicate edges summed)."""
    return sp.csr_matrix((np.asarray(weight, dtype=np.float64), (src, dst)), shape=(n, n))


def transition_matrix(src: np.ndarray, dst: np.ndarray, weight: np.ndarray, n: int):
    """Column-stochastic ``P^T`` (CSR, float64) and the out-strength vector of an edge list."""
    A = adjacency(src, dst, weight, n)
    s = np.asarray(A.sum(axis=1)).ravel()
    inv = np.divide(1.0, s, out=np.zeros_like(s), where=s != 0)
    PT = (sp.diags(inv) @ A).T.tocsr()
    return PT, s


def pagerank_power(PT, s, alpha: float, p, q, tol: float, max_iter: int, nstart=None, xp=np):
    """Power iteration ``x <- alpha (P^T x + (d.x) q) + (1 - alpha) p`` (networkx semantics)."""
    n = len(p)
    x = xp.full(n, 1.0 / n) if nstart is None else nstart / nstart.sum()
    dangling = s == 0
    err = float("inf")
    for it in range(1, max_iter + 1):
        xlast = x
        x = alpha * (PT @ x + x[dangling].sum() * q) + (1 - alpha) * p
        err = float(xp.abs(x - xlast).sum())
        if err < n * tol:
            return x / x.sum(), it
    _fail("PageRank", max_iter, err, n, tol)


def katz_power(AT, alpha: float, beta, tol: float, max_iter: int, nstart=None, normalized: bool = True, xp=np):
    """``x <- alpha A^T x + beta`` from ``nstart`` (default 0), as ``networkx.katz_centrality``.

    ``normalized`` divides by the Euclidean norm, as networkx does.
    """
    n = AT.shape[0]
    x = xp.zeros(n) if nstart is None else nstart.astype(xp.float64)
    err = float("inf")
    for it in range(1, max_iter + 1):
        xlast = x
        x = alpha * (AT @ xlast) + beta
        err = float(xp.abs(x - xlast).sum())
        if err < n * tol:
            if normalized:
                norm = float(xp.sqrt((x * x).sum()))
                x = x / norm if norm > 0 else x
            return x, it
    _fail("Katz", max_iter, err, n, tol)


def hits_power(A, AT, tol: float, max_iter: int, nstart=None, normalized: bool = True, xp=np):
    """Hubs and authorities by power iteration (``a <- A^T h``, ``h <- A a``, max-normalised).

    The fixed point is the principal left/right singular pair of ``A`` that ``networkx.hits``
    computes with ``svds``; ``normalized`` divides each vector by its sum, as networkx does.
    Convergence: L1 change of the hubs below ``n * tol``.
    """
    n = A.shape[0]
    h = xp.full(n, 1.0 / n) if nstart is None else nstart / nstart.sum()
    a = AT @ h
    err = float("inf")
    for it in range(1, max_iter + 1):
        hlast = h
        a = AT @ hlast
        h = A @ a
        hmax, amax = float(h.max()), float(a.max())
        if hmax <= 0 or amax <= 0:
            raise ValueError("HITS is undefined on a graph without edges of positive weight")
        h = h / hmax
        a = a / amax
        err = float(xp.abs(h - hlast).sum())
        if err < n * tol:
            if normalized:
                h, a = h / h.sum(), a / a.sum()
            return h, a, it
    _fail("HITS", max_iter, err, n, tol)


def eigenvector_power(S, tol: float, max_iter: int, nstart=None, xp=np):
    """Principal eigenvector of the symmetric ``S`` by iterating ``(S + I)``, L2-normalised.

    Same iteration, start (``nstart`` or all ones, divided by its sum) and stopping rule as
    ``networkx.eigenvector_centrality``.
    """
    n = S.shape[0]
    x = xp.full(n, 1.0 / n) if nstart is None else nstart / nstart.sum()
    err = float("inf")
    for it in range(1, max_iter + 1):
        xlast = x
        x = xlast + S @ xlast
        norm = float(xp.sqrt((x * x).sum())) or 1.0
        x = x / norm
        err = float(xp.abs(x - xlast).sum())
        if err < n * tol:
            return x, it
    _fail("Eigenvector", max_iter, err, n, tol)
