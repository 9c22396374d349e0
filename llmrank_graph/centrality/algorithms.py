"""Centralities other than PageRank; each registers its entry in :mod:`.registry`.

Each public function validates its input, picks a backend (``'auto'`` or a name from
:func:`llmrank_graph.backends`) and returns a :class:`CentralityResult`. Semantics follow
networkx (weighted, with the edge weights ``|W|``); where a backend's own convention differs,
the backend translates (see :mod:`llmrank_graph.centrality.cugraph_backend`).

=============  ===========================================================
name           definition (networkx)
=============  ===========================================================
pagerank       see :func:`llmrank_graph.centrality.pagerank`
katz           ``x = alpha A^T x + beta``, L2-normalised (katz_centrality)
hits           hubs/authorities: principal singular vectors of A (hits)
eigenvector    principal eigenvector of ``A + A^T`` (undirected graph)
strength       sum of in-/out-edge weights (``in_degree(weight=...)``)
degree         number of in-/out-edges (``in_degree()``)
=============  ===========================================================

The backends that run each one are the registry's to say (:func:`centralities`, or an entry's
``backends``); the ``sweep`` backend solves PageRank and Katz exactly on a DAG.
:func:`influence` (path influence from a seed, ``(I - P^T)^{-1} seed``) is defined on a DAG
only and computed by the sweep alone; it has no default seed that every graph could take, so
it is not in the registry of centralities by name: the ``influence`` scorer seeds it.
Eigenvector centrality is computed on the undirected graph because the adjacency of a DAG is
nilpotent (its only eigenvalue is 0): ``directed=True`` on a DAG is an error that says so.
cuGraph's HITS ignores edge weights, so it is not offered for HITS.

>>> import llmrank_graph as lg
>>> g = lg.graph.toy_graph()             # H0 -> I0 (2 neurons) -> H1
>>> {c["name"]: "sweep" in c["backends"] for c in centralities()}
{'pagerank': True, 'katz': True, 'hits': False, 'eigenvector': True, 'strength': True, 'degree': True}
"""

from __future__ import annotations

import logging

import numpy as np

from ..base.params import Boolean, Interval, OneOf, validated
from ..base.result import CentralityResult, exact_result
from ..errors import InvalidArgumentError
from .backends import run
from .pagerank_alg import DIRECTIONS, node_vector
from .registry import GRAPH, Centrality, centralities, get_centrality, register_centrality, signature_defaults
from .sweep import influence_sweep, resolve_device

logger = logging.getLogger(__name__)

__all__ = ["katz", "hits", "hits_pair", "eigenvector", "strength", "degree", "influence", "centralities",
           "get_centrality", "STRENGTH_DIRECTIONS", "HITS_VECTORS"]

STRENGTH_DIRECTIONS = ("in", "out", "total")
HITS_VECTORS = ("authorities", "hubs")


# The parameter constraints, declared once and checked at each public function's entry.
_POSITIVE = Interval(float, 0, closed="neither")
_ITERATION = {"tol": _POSITIVE, "max_iter": Interval(int, 1)}


@validated({"graph": GRAPH, "alpha": _POSITIVE, "direction": OneOf(*DIRECTIONS), **_ITERATION,
            "normalized": Boolean()})
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
    >>> import llmrank_graph as lg
    >>> g = lg.graph.toy_graph()             # H0 -> I0 (2 neurons) -> H1
    >>> res = katz(g, alpha=0.05)
    >>> res.scores.round(3), round(float((res.scores ** 2).sum()), 12)
    (array([0.469, 0.493, 0.516, 0.52 ]), 1.0)
    """
    if np.ndim(beta) == 0 and not isinstance(beta, (str, dict)):
        b = np.full(graph.n_nodes, _POSITIVE.check("beta", beta))
    else:
        b = node_vector(graph, beta, "beta")
    x0 = None if nstart is None else node_vector(graph, nstart, "nstart", positive_sum=False)
    extra = {"device": device} if device is not None else {}
    res = run(graph, "katz", backend, alpha=alpha, beta=b, direction=direction, tol=tol, max_iter=max_iter,
              nstart=x0, normalized=normalized, **extra)
    params = {"alpha": alpha, "beta": "array" if np.ndim(beta) else float(beta), "direction": direction,
              "tol": tol, "max_iter": max_iter, "normalized": normalized}
    return res.with_meta("katz", params)


@validated({"graph": GRAPH, **_ITERATION, "normalized": Boolean()})
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
    >>> import llmrank_graph as lg
    >>> g = lg.graph.toy_graph()             # H0 -> I0 (2 neurons) -> H1
    >>> hubs, auth = hits_pair(g)
    >>> hubs.scores.round(3), auth.scores.round(3)
    (array([1., 0., 0., 0.]), array([0.   , 0.333, 0.667, 0.   ]))
    """
    return _hits_pair(graph, backend, tol, max_iter, nstart, normalized)


def _hits_pair(graph, backend: str, tol: float, max_iter: int, nstart, normalized: bool
               ) -> tuple[CentralityResult, CentralityResult]:
    x0 = None if nstart is None else node_vector(graph, nstart, "nstart")
    h, a = run(graph, "hits", backend, tol=tol, max_iter=max_iter, nstart=x0, normalized=normalized)
    params = {"tol": tol, "max_iter": max_iter, "normalized": normalized}
    return h.with_meta("hubs", params), a.with_meta("authorities", params)


@validated({"graph": GRAPH, "which": OneOf(*HITS_VECTORS), **_ITERATION, "normalized": Boolean()})
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
    >>> import llmrank_graph as lg
    >>> g = lg.graph.toy_graph()             # H0 -> I0 (2 neurons) -> H1
    >>> hits(g, "hubs").scores.round(3)
    array([1., 0., 0., 0.])
    """
    hubs, auth = _hits_pair(graph, backend, tol, max_iter, nstart, normalized)
    return auth if which == "authorities" else hubs


@validated({"graph": GRAPH, **_ITERATION, "directed": Boolean()})
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
    >>> import llmrank_graph as lg
    >>> g = lg.graph.toy_graph()             # H0 -> I0 (2 neurons) -> H1
    >>> eigenvector(g).scores.round(3)
    array([0.602, 0.372, 0.602, 0.372])
    >>> eigenvector(g, directed=True)
    Traceback (most recent call last):
    ...
    llmrank_graph.errors.InvalidArgumentError: `directed=True` eigenvector centrality is undefined on a DAG: ...
    """
    if directed and graph.is_dag_by_partition():
        raise InvalidArgumentError(
            "`directed=True` eigenvector centrality is undefined on a DAG: every edge of this graph goes from an "
            "earlier partition to a later one, so its adjacency matrix is nilpotent and every eigenvalue is 0 (no "
            "solver can converge to a principal eigenvector); use directed=False (the undirected graph, well "
            "defined), or pagerank / katz, which are defined on a DAG")
    x0 = None if nstart is None else node_vector(graph, nstart, "nstart")
    extra = {"directed": True} if directed else {}  # only the backends that take it can honour it
    res = run(graph, "eigenvector", backend, tol=tol, max_iter=max_iter, nstart=x0, **extra)
    return res.with_meta("eigenvector", {"tol": tol, "max_iter": max_iter, "directed": directed})


def _in_out(graph, algorithm: str, direction: str, backend: str, device=None) -> CentralityResult:
    dirs = ("in", "out") if direction == "total" else (direction,)
    extra = {"device": device} if device is not None else {}
    parts = [run(graph, algorithm, backend, direction=d, **extra) for d in dirs]
    x = parts[0].scores if len(parts) == 1 else parts[0].scores + parts[1].scores
    return CentralityResult(np.asarray(x, dtype=np.float64), True, 0, parts[0].backend, f"{direction}_{algorithm}",
                            {"direction": direction}, exact=True)


@validated({"graph": GRAPH, "direction": OneOf(*STRENGTH_DIRECTIONS)})
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
    >>> import llmrank_graph as lg
    >>> g = lg.graph.toy_graph()             # H0 -> I0 (2 neurons) -> H1
    >>> strength(g, "total").scores
    array([3., 2., 3., 2.])
    """
    return _in_out(graph, "strength", direction, backend, device)


@validated({"graph": GRAPH, "direction": OneOf(*STRENGTH_DIRECTIONS)})
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
    >>> import llmrank_graph as lg
    >>> g = lg.graph.toy_graph()             # H0 -> I0 (2 neurons) -> H1
    >>> degree(g, "in").scores
    array([0., 1., 1., 2.])
    """
    return _in_out(graph, "degree", direction, backend)


@validated({"graph": GRAPH, "direction": OneOf(*DIRECTIONS)})
def influence(graph, seed, direction: str = "reverse", device=None) -> CentralityResult:
    """Path influence from a seed: ``y = (I - P^T)^{-1} seed`` on a normalised adjacency, exact on a DAG.

    ``'reverse'`` (the default): ``y_u = seed_u + sum_{u -> v} (w_uv / s_in(v)) y_v``. Every
    node shares its influence among its in-edges in proportion to their weights (the shares
    sum to one), so ``y_u`` is the seed's mass that reaches ``u`` backwards over all paths: with
    the seed on the outputs, how much of them ``u`` accounts for, as attribution-graph pruning
    computes it. ``'forward'``: the same on the graph as exported, out-edges sharing each node's
    mass (``P_uv = w_uv / s_u``), seeded at the inputs. Nodes without edges in that direction
    pass nothing on. It is PageRank's sweep with ``alpha = 1`` and no restart: on a DAG the sum
    over paths is finite, ``(P^T)^K = 0`` for K partitions (docs/design.md section 2).

    Parameters
    ----------
    graph : MLPGraph
        A partition-ordered DAG (every export is one).
    seed : array (n_nodes,)
        Non-negative, not all zero; not normalised (the result scales with it).
    direction : {'forward', 'reverse'}
    device : torch device, optional
        Where the sweep multiplies the weights (default: CUDA when available).

    Returns
    -------
    CentralityResult
        ``algorithm='influence'``, ``backend='sweep'``, exact.

    Raises
    ------
    InvalidArgumentError
        A graph that is not a partition-ordered DAG, or a bad ``seed``.

    Example
    -------
    >>> import numpy as np, llmrank_graph as lg
    >>> g = lg.graph.toy_graph()             # H0 -> I0 (2 neurons) -> H1
    >>> influence(g, np.array([0.0, 0.0, 0.0, 1.0])).scores   # H1's two in-edges weigh alike
    array([1. , 0.5, 0.5, 1. ])
    >>> influence(g, np.array([1.0, 0.0, 0.0, 0.0]), "forward").scores.round(3)   # H0 sends 1/3 and 2/3
    array([1.   , 0.333, 0.667, 1.   ])
    """
    s = node_vector(graph, seed, "seed")
    x = influence_sweep(graph, s, direction, device=resolve_device(device))
    return exact_result(x, "sweep", "influence").with_meta("influence", {"direction": direction})


# One registry entry per centrality (PageRank's is in .pagerank_alg, imported above, so it comes first).
register_centrality(Centrality("katz", katz, "Katz centrality x = alpha A^T x + beta; exact sweep on a DAG", "katz",
                               signature_defaults(katz, "direction", "alpha")))
register_centrality(Centrality("hits", hits, "HITS authorities (or hubs with which='hubs')", "{which}",
                               signature_defaults(hits, "which")))
register_centrality(Centrality("eigenvector", eigenvector, "eigenvector centrality of the undirected graph",
                               "eigenvector", signature_defaults(eigenvector, "directed")))
register_centrality(Centrality("strength", strength, "weighted in/out/total degree", "{direction}_strength",
                               signature_defaults(strength, "direction")))
register_centrality(Centrality("degree", degree, "in/out/total edge count", "{direction}_degree",
                               signature_defaults(degree, "direction")))
