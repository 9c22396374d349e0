"""Public PageRank: validation, personalization, backend choice."""

from __future__ import annotations

import logging

import numpy as np

from ._result import CentralityResult
from .backends import get_backend, registered

logger = logging.getLogger(__name__)

DIRECTIONS = ("forward", "reverse")


def _choice(arg, value, allowed):
    if value not in allowed:
        raise ValueError(f"`{arg}` must be one of {', '.join(map(repr, allowed))}; got {value!r}")


def _check_alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) or not 0 < float(alpha) < 1:
        raise ValueError(f"`alpha` must be a float in (0, 1); got {alpha!r}")
    return float(alpha)


def teleport_vector(graph, value, arg: str = "personalization") -> np.ndarray:
    """Normalised teleport vector from "uniform", "activation" or an array of length n_nodes."""
    n = graph.n_nodes
    if isinstance(value, str):
        if value == "uniform":
            return np.full(n, 1.0 / n)
        if value != "activation":
            raise ValueError(f"`{arg}` must be 'uniform', 'activation' or an array of {n} non-negative "
                             f"values; got {value!r}")
        if not graph.has_activation:
            raise ValueError(f"`{arg}='activation'` needs a graph exported with calibration stats "
                             "(export_graph(model, stats))")
        value = graph.activation
    elif isinstance(value, dict):
        raise ValueError(f"`{arg}` must be 'uniform', 'activation' or an array of length {n}; got a dict")
    v = node_vector(graph, value, arg)
    return v / v.sum()


def node_vector(graph, value, arg: str, positive_sum: bool = True) -> np.ndarray:
    """A finite, non-negative float64 array with one value per node (errors name ``arg``)."""
    n = graph.n_nodes
    if isinstance(value, (str, dict)):
        raise ValueError(f"`{arg}` must be an array of {n} non-negative values; got a {type(value).__name__}")
    v = np.asarray(value, dtype=np.float64).reshape(-1)
    if v.shape != (n,):
        raise ValueError(f"`{arg}` must have one value per node: length {n}; got length {v.size}")
    if not np.isfinite(v).all():
        raise ValueError(f"`{arg}` must be finite; got NaN or inf")
    if (v < 0).any():
        raise ValueError(f"`{arg}` must be non-negative; got a minimum of {v.min():.3g}")
    if positive_sum and v.sum() <= 0:
        raise ValueError(f"`{arg}` must not be all zero")
    return v


#: Preference of ``backend='auto'`` per algorithm (first available wins). Exact sweeps first
#: (on CUDA when present), then GPU edge-list backends, then the CPU reference.
AUTO_ORDER = {
    "pagerank": ("sweep", "cugraph", "cupy", "scipy"),
    "katz": ("sweep", "cugraph", "cupy", "scipy"),
    "hits": ("cugraph", "cupy", "scipy"),
    "eigenvector": ("cugraph", "cupy", "scipy"),
    "strength": ("sweep", "scipy"),
    "degree": ("sweep", "cugraph", "scipy"),
}
#: ``auto`` moves from ``cugraph`` to ``cugraph-dask`` when the edge list would take more than
#: this fraction of the GPU's free memory (``BYTES_PER_EDGE`` per edge: int32 ids and float64
#: weights in the cuDF frame, plus cuGraph's own CSC copy).
DASK_SWITCH_FRACTION = 0.5
BYTES_PER_EDGE = 48


def _too_big_for_one_gpu(graph) -> str | None:
    from .backends import cuda_free_memory

    free = cuda_free_memory()
    need = graph.n_edges * BYTES_PER_EDGE
    if free is not None and need > DASK_SWITCH_FRACTION * free:
        return (f"edge list needs ~{need / 2**30:.1f} GiB, more than {DASK_SWITCH_FRACTION:.0%} of the "
                f"{free / 2**30:.1f} GiB free on the GPU")
    return None


def select_backend(graph, algorithm: str, requested: str, device=None):
    """The backend to run ``algorithm`` with.

    An explicit name must implement the algorithm and be available (else
    ``BackendUnavailableError`` naming the extra to install). ``'auto'`` walks
    :data:`AUTO_ORDER`, skips the sweep on graphs that are not partition-ordered DAGs, moves
    to ``cugraph-dask`` when the edge list outgrows one GPU, and debug-logs why the others
    were passed over. ``device`` (a torch device) is only meaningful for the sweep.
    """
    if not isinstance(requested, str):
        raise ValueError(f"`backend` must be a backend name (str); got {requested!r}")
    if requested != "auto":
        b = get_backend(requested)
        if not b.implements(algorithm):
            have = [n for n, x in registered().items() if x.implements(algorithm)]
            raise ValueError(f"`backend` {requested!r} does not implement {algorithm}; use one of "
                             f"{', '.join(map(repr, ['auto', *have]))}")
        if device is not None and not getattr(b, "accepts_device", False):
            raise ValueError(f"`device` applies to torch backends ('sweep') only; got device={device!r} with "
                             f"backend={requested!r}")
        b.require()
        return b
    reasons = []
    order = AUTO_ORDER.get(algorithm, ("scipy",))
    for name in list(order) + [n for n in registered() if n not in order and n != "cugraph-dask"]:
        b = registered().get(name)
        if b is None or not b.implements(algorithm):
            continue
        if device is not None and not getattr(b, "accepts_device", False):
            reasons.append(f"{name}: `device` given, which only torch backends take")
            continue
        if name == "sweep" and not graph.is_dag_by_partition():
            reasons.append("sweep: graph is not a partition-ordered DAG")
            continue
        why = b.unavailable_reason()
        if why is None and name == "cugraph":
            big = _too_big_for_one_gpu(graph)
            if big:
                dask = registered().get("cugraph-dask")
                dwhy = None if dask is None or not dask.implements(algorithm) else dask.unavailable_reason()
                if dask is not None and dask.implements(algorithm) and dwhy is None:
                    logger.debug("%s: auto chose backend 'cugraph-dask' (%s)", algorithm, big)
                    return dask
                reasons.append(f"cugraph: {big}; cugraph-dask: {dwhy or 'does not implement ' + algorithm}")
                continue
        if why is None:
            logger.debug("%s: auto chose backend %r (%s)", algorithm, name,
                         "; ".join(reasons) if reasons else "first preference")
            return b
        reasons.append(f"{name}: {why}")
    raise RuntimeError(f"no backend can run {algorithm}: " + "; ".join(reasons))


def pagerank(graph, alpha: float = 0.85, personalization="uniform", direction: str = "forward",
             backend: str = "auto", tol: float = 1e-10, max_iter: int = 1000, dangling=None,
             nstart=None, device=None) -> CentralityResult:
    """PageRank of an :class:`~llmrank_graph.MLPGraph`, with ``networkx.pagerank`` semantics.

    Out-strength ``s_u = sum_v w_uv``, transition ``P_uv = w_uv / s_u``, teleport ``p``;
    dangling nodes (s_u = 0) send their mass along ``dangling`` (default ``p``). The fixed
    point is ``x = alpha P^T x + (alpha d(x) + 1 - alpha) p`` with ``sum(x) = 1``.

    Parameters
    ----------
    graph : MLPGraph
    alpha : float in (0, 1)
        Damping factor.
    personalization : 'uniform', 'activation' or array (n_nodes,)
        Teleport distribution (normalised here). 'activation' uses the calibration norms.
    direction : {'forward', 'reverse'}
        'forward': inputs feed outputs (the paper). 'reverse': every edge reversed, so a
        neuron matters if it feeds important neurons.
    backend : str
        'auto', or a registered backend name (see :func:`llmrank_graph.backends`).
    tol : float
        Power-iteration backends stop when the L1 change is below ``n_nodes * tol``
        (networkx's criterion). Exact backends (``sweep``) need no tolerance.
    max_iter : int
        Iteration limit of power-iteration backends; exceeding it raises ConvergenceError.
    dangling : None, 'uniform' or array
        Where dangling mass goes (default: the personalization, as networkx).
    nstart : array, optional
        Starting vector of power-iteration backends.
    device : torch device, optional
        Where the ``sweep`` backend multiplies the weights (default: CUDA when available).
        Giving it with another backend raises ValueError; with ``backend='auto'`` it selects
        the sweep.

    Returns
    -------
    CentralityResult
        ``scores`` indexed by vertex, summing to 1.

    Raises
    ------
    ValueError
        Bad ``alpha``, ``direction``, ``tol``, ``max_iter``, vectors, ``backend`` or ``device``.
    BackendUnavailableError
        The requested backend cannot run here (the message names the extra to install).
    ConvergenceError
        A power-iteration backend did not converge within ``max_iter``.

    Example
    -------
    >>> res = pagerank(export_graph(model), direction="reverse")     # doctest: +SKIP
    >>> res.scores.sum()                                               # doctest: +SKIP
    1.0
    """
    alpha = _check_alpha(alpha)
    _choice("direction", direction, DIRECTIONS)
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol > 0:
        raise ValueError(f"`tol` must be a positive float; got {tol!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise ValueError(f"`max_iter` must be a positive int; got {max_iter!r}")
    p = teleport_vector(graph, personalization, "personalization")
    q = p if dangling is None else teleport_vector(graph, dangling, "dangling")
    x0 = None if nstart is None else teleport_vector(graph, nstart, "nstart")
    b = select_backend(graph, "pagerank", backend, device)
    logger.debug("pagerank on %r with backend %r", graph, b.name)
    extra = {"device": device} if device is not None else {}
    res = b.pagerank(graph, alpha=alpha, personalization=p, dangling=q, direction=direction, tol=float(tol),
                     max_iter=int(max_iter), nstart=x0, **extra)
    params = {"alpha": alpha, "direction": direction, "tol": tol, "max_iter": max_iter,
              "personalization": personalization if isinstance(personalization, str) else "array"}
    return CentralityResult(res.scores, res.converged, res.iterations, res.backend, "pagerank", params)
