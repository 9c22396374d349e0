"""Power-iteration kernels shared by the scipy (numpy) and cupy backends.

Every kernel takes plain arrays and an array module ``xp`` (numpy or cupy): the sparse
matrices only need ``@``. Tolerances follow networkx: stop when the L1 change between two
iterates is below ``n * tol``. Each kernel returns ``(values, iterations)`` or raises
:class:`ConvergenceError`.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..errors import InvalidArgumentError, WorkFailedError


class ConvergenceError(WorkFailedError, RuntimeError):
    """A power iteration did not reach its tolerance within ``max_iter`` iterations."""


def _fail(name: str, max_iter: int, err: float, n: int, tol: float):
    raise ConvergenceError(f"{name} power iteration did not converge in `max_iter`={max_iter} iterations "
                           f"(last L1 change {err:.3g}, needed < n * tol = {n * tol:.3g}); raise `max_iter` or `tol`")


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
            raise InvalidArgumentError("HITS is undefined on a graph without edges of positive weight")
        h = h / hmax
        a = a / amax
        err = float(xp.abs(h - hlast).sum())
        if err < n * tol:
            if normalized:
                h, a = h / h.sum(), a / a.sum()
            return h, a, it
    _fail("HITS", max_iter, err, n, tol)


def perron_vector(S, tol: float, max_iter: int, nstart=None, xp=np):
    """Principal eigenvector of a symmetric non-negative operator ``S`` by Lanczos (``which='LA'``).

    ``S`` is a sparse matrix or a LinearOperator (scipy, or cupyx with ``xp=cupy``). A nearly
    bipartite ``S`` (the undirected multipartite chain) has eigenvalues ``lambda`` and
    ``-lambda``; the largest *algebraic* one is the Perron root, which Lanczos finds without the
    oscillation of plain power iteration. The vector is returned non-negative with unit
    Euclidean norm (networkx's normalisation). ``tol`` is the solver's relative residual
    tolerance, ``max_iter`` its limit on restarts, ``nstart`` its start (default all ones,
    which no Perron vector is orthogonal to).

    Raises
    ------
    ConvergenceError
        The solver did not converge within ``max_iter`` restarts.
    InvalidArgumentError
        The largest eigenvalue is not positive (no edge of positive weight).
    """
    n = S.shape[0]
    v0 = xp.ones(n) if nstart is None else xp.asarray(nstart, dtype=xp.float64)
    if n == 0 or not float((S @ xp.ones(n)).max()) > 0:  # S >= 0: S @ 1 = 0 only when S = 0
        raise InvalidArgumentError("eigenvector centrality is undefined on a graph without edges of positive weight")
    if n < 3:  # Lanczos needs k < n - 1: a 2 x 2 eigenproblem is solved directly
        dense = xp.stack([S @ col for col in xp.eye(n)], axis=1) if n else xp.zeros((0, 0))
        w, v = xp.linalg.eigh(dense)
        lam, x = (float(w[-1]), v[:, -1]) if n else (0.0, xp.zeros(0))
    elif xp is np:
        from scipy.sparse.linalg import ArpackNoConvergence, eigsh

        try:
            w, v = eigsh(S, k=1, which="LA", tol=tol, maxiter=max_iter, v0=v0)
        except ArpackNoConvergence as e:
            raise ConvergenceError(f"eigenvector centrality (Lanczos, scipy eigsh) did not converge in `max_iter`="
                                   f"{max_iter} iterations ({e}); raise `max_iter` or `tol`") from None
        lam, x = float(w[0]), v[:, 0]
    else:
        import cupyx.scipy.sparse.linalg as csl

        w, v = csl.eigsh(S, k=1, which="LA", tol=tol, maxiter=max_iter, v0=v0)
        lam, x = float(w[0]), v[:, 0]
    if not lam > 0:
        raise InvalidArgumentError("eigenvector centrality is undefined on a graph without edges of positive weight "
                                   f"(largest eigenvalue {lam:.3g})")
    x = x if float(x.sum()) >= 0 else -x
    x = xp.abs(x)
    return x / float(xp.sqrt((x * x).sum()))


def directed_perron_vector(A, tol: float, max_iter: int, nstart=None):
    """Left Perron vector of a directed graph with cycles (in-edge eigenvector centrality, networkx's).

    ``A`` is the weighted adjacency (CSR, rows are sources). A graph whose edges of positive
    weight form no cycle has a nilpotent adjacency, every eigenvalue 0, and no eigenvector
    centrality: that is checked on the structure (strongly connected components), not on a
    computed eigenvalue, which rounding would make a small non-zero number. Otherwise Arnoldi
    (``scipy.sparse.linalg.eigs``, largest real part) on ``A^T``.
    """
    from scipy.sparse.csgraph import connected_components
    from scipy.sparse.linalg import ArpackNoConvergence, eigs

    n = A.shape[0]
    P = sp.csr_matrix(A, copy=True)
    P.eliminate_zeros()
    n_strong, _ = connected_components(P, directed=True, connection="strong")
    if n_strong == n and not P.diagonal().any():
        raise InvalidArgumentError("`directed=True` eigenvector centrality is undefined on this graph: it has no cycle "
                                   "of edges with positive weight, so its adjacency matrix is nilpotent and every "
                                   "eigenvalue is 0; use directed=False (the undirected graph)")
    AT = P.T.tocsr()
    v0 = np.ones(n) if nstart is None else np.asarray(nstart, dtype=np.float64)
    try:
        if n < 3:
            w, v = np.linalg.eig(AT.toarray())
            i = int(np.argmax(w.real))
            w, v = w[i:i + 1], v[:, i:i + 1]
        else:
            w, v = eigs(AT, k=1, which="LR", tol=tol, maxiter=max_iter, v0=v0)
    except ArpackNoConvergence as e:
        raise ConvergenceError(f"directed eigenvector centrality (Arnoldi, scipy eigs) did not converge in "
                               f"`max_iter`={max_iter} iterations ({e}); raise `max_iter` or `tol`") from None
    x = v[:, 0].real
    x = x if x.sum() >= 0 else -x
    x = np.abs(x)
    return x / np.linalg.norm(x)
