"""Centralities other than PageRank, and the centrality registry.

Each public function validates its input, picks a backend (``'auto'`` or a name from
:func:`llmrank_graph.backends`) and returns a :class:`CentralityResult`. Semantics follow
networkx (weighted, with the edge weights ``|W|``); where a backend's own convention differs,
the backend translates (see :mod:`llmrank_graph.centrality.cugraph_backend`).

=============  ===========================================================  =====================
name           definition (networkx)                                        backends
=============  ===========================================================  =====================
pagerank       see :func:`llmrank_graph.centrality.pagerank`                 sweep, scipy, cupy, cugraph, cugraph-dask
katz           ``x = alpha A^T x + beta``, L2-normalised (katz_centrality)   sweep (exact on a DAG), scipy, cupy, cugraph
hits           hubs/authorities: principal singular vectors of A (hits)     scipy, cupy
eigenvector    principal eigenvector of ``A + A^T`` (undirected graph)      sweep, scipy, cupy, cugraph
strength       sum of in-/out-edge weights (``in_degree(weight=...)``)       sweep, scipy
degree         number of in-/out-edges (``in_degree()``)                     sweep, scipy, cugraph
=============  ===========================================================  =====================

Eigenvector centrality is computed on the undirected graph because the adjacency of a DAG is
nilpotent (its only eigenvalue is 0): ``directed=True`` on a DAG is an error that says so.
cuGraph's HITS ignores edge weights, so it is not offered for HITS.
"""

from __future__ import annotations

import logging

import numpy as np

from ..base.checks import check_bool, check_choice, check_float, check_positive_int
from ..errors import InvalidArgumentError
from ..base.result import CentralityResult
from .backends import registered, run
from .pagerank_alg import DIRECTIONS, node_vector as _node_vector

logger = logging.getLogger(__name__)

__all__ = ["katz", "hits", "hits_pair", "eigenvector", "strength", "degree", "centralities", "get_centrality",
           "STRENGTH_DIRECTIONS", "HITS_VECTORS"]

STRENGTH_DIRECTIONS = ("in", "out", "total")
HITS_VECTORS = ("authorities", "hubs")


def _positive(arg: str, value) -> float:
    return check_float(arg, value, 0.0, min_open=True)


def _iters(tol, max_iter) -> tuple[float, int]:
    return _positive("tol", tol), check_positive_int("max_iter", max_iter)


def katz(graph, alpha: float = 0.1, beta=1.0, direction: str = "forward", backend: str = "auto",
         tol: float = 1e-6, max_iter: int = 1000, nstart=None, normalized: bool = True,
         device=None) -> CentralityResult:
    """Katz centrality ``x = alpha A^T x + beta`` (``networkx.katz_centrality`` with weights).

    On a partition-ordered DAG the ``sweep`` backend solves it exactly in one pass (no
    iteration, any ``alpha``); power-iteration backends stop when the L1 change is below
    ``n_nodes * tol``.

    Parameters
    ----------
    graph : MLPGraph
    alpha : float > 0
        Attenuation factor. Power iterations converge only for ``alpha < 1 / lambda_max``
        (any alpha on a DAG).
    beta : float > 0 or array (n_nodes,)
        Exogenous term (a scalar or one non-negative value per node).
    direction : {'forward', 'reverse'}
        'forward': in-edge Katz, as networkx. 'reverse': every edge reversed (out-edge Katz).
    backend : str
        'auto' or a registered backend name.
    tol, max_iter : float, int
        Power-iteration tolerance (networkx convention) and iteration limit.
    nstart : array (n_nodes,), optional
        Starting vector of power iterations (default zeros, as networkx).
    normalized : bool
        Divide by the Euclidean norm (networkx).
    device : torch device, optional
        Device of the ``sweep`` backend.

    Returns
    -------
    CentralityResult
        ``algorithm='katz'``.

    Raises
    ------
    ValueError
        Invalid parameters, or options a backend cannot honour (e.g. cuGraph with a per-node beta).
    ConvergenceError
        A power iteration did not converge.

    Example
    -------
    >>> res = katz(export_graph(model), alpha=0.05)        # doctest: +SKIP
    >>> float((res.scores ** 2).sum())                     # doctest: +SKIP
    1.0
    """
    alpha = _positive("alpha", alpha)
    check_choice("direction", direction, DIRECTIONS)
    tol, max_iter = _iters(tol, max_iter)
    normalized = check_bool("normalized", normalized)
    if np.ndim(beta) == 0 and not isinstance(beta, (str, dict)):
        b = np.full(graph.n_nodes, _positive("beta", beta))
    else:
        b = _node_vector(graph, beta, "beta")
    x0 = None if nstart is None else _node_vector(graph, nstart, "nstart", positive_sum=False)
    extra = {"device": device} if device is not None else {}
    res = run(graph, "katz", backend, alpha=alpha, beta=b, direction=direction, tol=tol, max_iter=max_iter,
              nstart=x0, normalized=normalized, **extra)
    params = {"alpha": alpha, "beta": "array" if np.ndim(beta) else float(beta), "direction": direction,
              "tol": tol, "max_iter": max_iter, "normalized": normalized}
    return res.with_meta("katz", params)


def hits_pair(graph, backend: str = "auto", tol: float = 1e-8, max_iter: int = 1000, nstart=None,
              normalized: bool = True) -> tuple[CentralityResult, CentralityResult]:
    """HITS hubs and authorities (``networkx.hits`` with weights), as two results.

    Authorities are the principal right singular vector of the weighted adjacency ``A``
    (``A[u, v] = w_uv``), hubs ``A @ authorities``; both sum to 1 when ``normalized``.
    Power iteration from ``nstart`` (default uniform hubs), stopping when the L1 change of
    the hubs is below ``n_nodes * tol``.

    Returns
    -------
    (CentralityResult, CentralityResult)
        ``(hubs, authorities)``, with ``algorithm`` 'hubs' and 'authorities'.

    Example
    -------
    >>> hubs, auth = hits_pair(export_graph(model))        # doctest: +SKIP
    """
    tol, max_iter = _iters(tol, max_iter)
    x0 = None if nstart is None else _node_vector(graph, nstart, "nstart")
    normalized = check_bool("normalized", normalized)
    h, a = run(graph, "hits", backend, tol=tol, max_iter=max_iter, nstart=x0, normalized=normalized)
    params = {"tol": tol, "max_iter": max_iter, "normalized": normalized}
    return h.with_meta("hubs", params), a.with_meta("authorities", params)


def hits(graph, which: str = "authorities", backend: str = "auto", tol: float = 1e-8, max_iter: int = 1000,
         nstart=None, normalized: bool = True) -> CentralityResult:
    """One HITS vector: ``which='authorities'`` (fed by good hubs) or ``'hubs'``.

    See :func:`hits_pair` for the definition and parameters; both vectors are computed.

    Returns
    -------
    CentralityResult
        ``algorithm`` is ``which``.

    Example
    -------
    >>> auth = hits(export_graph(model))                   # doctest: +SKIP
    """
    check_choice("which", which, HITS_VECTORS)
    hubs, auth = hits_pair(graph, backend, tol, max_iter, nstart, normalized)
    return auth if which == "authorities" else hubs


def eigenvector(graph, backend: str = "auto", tol: float = 1e-6, max_iter: int = 1000, nstart=None, *,
                directed: bool = False) -> CentralityResult:
    """Eigenvector centrality, by default of the undirected graph (``networkx.eigenvector_centrality``).

    The whole-MLP graph is a DAG: its adjacency matrix ``A`` is nilpotent (``A^L = 0``), so
    every eigenvalue is 0 and *directed* eigenvector centrality is undefined; asking for it
    raises an error that says so. On the undirected graph, ``S = A + A^T`` is symmetric and
    non-negative, and its Perron vector is well defined. A multipartite chain is nearly
    bipartite (``lambda`` and ``-lambda`` are both eigenvalues, which makes plain power
    iteration oscillate), so it is computed with a Lanczos solver for the largest *algebraic*
    eigenvalue (``scipy.sparse.linalg.eigsh(which='LA')``, CuPy's on the GPU, or matrix-free
    over the blocks with the ``sweep`` backend), and returned non-negative with unit norm,
    like networkx.

    Parameters
    ----------
    graph : MLPGraph
    backend : str
        'auto' or a registered backend name.
    tol : float > 0
        Lanczos tolerance: the relative residual ``||S x - lambda x|| / |lambda|`` (ARPACK's;
        cuGraph, which iterates, gets it as its own tolerance).
    max_iter : int >= 1
        Limit on the solver's restarts (iterations for cuGraph).
    nstart : array (n_nodes,), optional
        Starting vector (default all ones).
    directed : bool
        In-edge eigenvector centrality of the directed graph (networkx on a ``DiGraph``).
        Refused on a DAG, where it is undefined; offered (``scipy`` backend, Arnoldi) on
        graphs with cycles built with :meth:`~llmrank_graph.MLPGraph.from_edgelist`.

    Returns
    -------
    CentralityResult
        ``algorithm='eigenvector'``, unit Euclidean norm, ``params['directed']``.

    Raises
    ------
    InvalidArgumentError
        ``directed=True`` on a DAG, or a graph without edges of positive weight.
    ConvergenceError
        The solver did not converge within ``max_iter`` restarts.

    Example
    -------
    >>> res = eigenvector(export_graph(model))             # doctest: +SKIP
    >>> eigenvector(export_graph(model), directed=True)    # doctest: +SKIP
    Traceback (most recent call last):
    InvalidArgumentError: `directed=True` eigenvector centrality is undefined on a DAG ...
    """
    tol, max_iter = _iters(tol, max_iter)
    directed = check_bool("directed", directed)
    if directed and graph.is_dag_by_partition():
        raise InvalidArgumentError(
            "`directed=True` eigenvector centrality is undefined on a DAG: every edge of this graph goes from an "
            "earlier partition to a later one, so its adjacency matrix is nilpotent and every eigenvalue is 0 (no "
            "solver can converge to a principal eigenvector); use directed=False (the undirected graph, well "
            "defined), or pagerank / katz, which are defined on a DAG")
    x0 = None if nstart is None else _node_vector(graph, nstart, "nstart")
    extra = {"directed": True} if directed else {}  # only the backends that take it can honour it
    res = run(graph, "eigenvector", backend, tol=tol, max_iter=max_iter, nstart=x0, **extra)
    return res.with_meta("eigenvector", {"tol": tol, "max_iter": max_iter, "directed": directed})


def _in_out(graph, algorithm: str, direction: str, backend: str, device=None) -> CentralityResult:
    check_choice("direction", direction, STRENGTH_DIRECTIONS)
    dirs = ("in", "out") if direction == "total" else (direction,)
    extra = {"device": device} if device is not None else {}
    parts = [run(graph, algorithm, backend, direction=d, **extra) for d in dirs]
    x = parts[0].scores if len(parts) == 1 else parts[0].scores + parts[1].scores
    return CentralityResult(np.asarray(x, dtype=np.float64), True, 0, parts[0].backend, f"{direction}_{algorithm}",
                            {"direction": direction}, exact=True)


def strength(graph, direction: str = "in", backend: str = "auto", device=None) -> CentralityResult:
    """Weighted degree: sum of the weights of each node's in-edges, out-edges, or both.

    For an intermediate neuron, in-strength is the L1 norm of its ``up`` row and out-strength
    that of its ``down`` column. Same as networkx ``G.in_degree(weight='weight')``.

    Parameters
    ----------
    direction : {'in', 'out', 'total'}

    Returns
    -------
    CentralityResult
        ``algorithm`` is ``'{direction}_strength'``.

    Example
    -------
    >>> strength(export_graph(model), "total").scores      # doctest: +SKIP
    """
    return _in_out(graph, "strength", direction, backend, device)


def degree(graph, direction: str = "in", backend: str = "auto") -> CentralityResult:
    """Number of in-edges, out-edges, or both, of each node (networkx ``G.in_degree()``).

    Every stored edge counts, whatever its weight; on a dense export this is the layer
    layout, on a sparsified one (``keep=...``) it counts the kept edges.

    Returns
    -------
    CentralityResult
        ``algorithm`` is ``'{direction}_degree'``.

    Example
    -------
    >>> degree(export_graph(model, keep=8), "in").scores   # doctest: +SKIP
    """
    return _in_out(graph, "degree", direction, backend)


_CENTRALITIES = {
    "pagerank": ("pagerank", "PageRank with networkx semantics; exact sweep on a DAG"),
    "katz": ("katz", "Katz centrality x = alpha A^T x + beta; exact sweep on a DAG"),
    "hits": ("hits", "HITS authorities (or hubs with which='hubs')"),
    "eigenvector": ("eigenvector", "eigenvector centrality of the undirected graph"),
    "strength": ("strength", "weighted in/out/total degree"),
    "degree": ("degree", "in/out/total edge count"),
}


def get_centrality(name: str):
    """The public function of the centrality ``name``; ValueError listing the known names."""
    check_choice("name", name, tuple(_CENTRALITIES))
    if name == "pagerank":
        from .pagerank_alg import pagerank

        return pagerank
    return globals()[_CENTRALITIES[name][0]]


def centralities() -> list[dict]:
    """Every centrality: name, description, and the backends implementing it (available or not).

    Example
    -------
    >>> [c["name"] for c in centralities()]
    ['pagerank', 'katz', 'hits', 'eigenvector', 'strength', 'degree']
    """
    out = []
    for name, (_fn, desc) in _CENTRALITIES.items():
        algo = name
        backs = [b.name for b in registered().values() if b.implements(algo)]
        out.append({"name": name, "description": desc, "backends": backs, "function": get_centrality(name)})
    return out
