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
        if value == "activation":
            if not graph.has_activation:
                raise ValueError(f"`{arg}='activation'` needs a graph exported with calibration stats "
                                 "(export_graph(model, stats))")
            v = np.asarray(graph.activation, dtype=np.float64)
        else:
            raise ValueError(f"`{arg}` must be 'uniform', 'activation' or an array of {n} non-negative "
                             f"values; got {value!r}")
    else:
        v = np.asarray(value, dtype=np.float64).reshape(-1) if not isinstance(value, dict) else None
        if v is None:
            raise ValueError(f"`{arg}` must be 'uniform', 'activation' or an array of length {n}; got a dict")
        if v.shape != (n,):
            raise ValueError(f"`{arg}` must have one value per node: length {n}; got length {v.size}")
    if not np.isfinite(v).all():
        raise ValueError(f"`{arg}` must be finite; got NaN or inf")
    if (v < 0).any():
        raise ValueError(f"`{arg}` must be non-negative; got a minimum of {v.min():.3g}")
    total = v.sum()
    if total <= 0:
        raise ValueError(f"`{arg}` must not be all zero")
    return v / total


def select_backend(graph, algorithm: str, requested: str):
    """The backend to run ``algorithm`` with; ``auto`` prefers exact sweeps, then GPUs, then scipy."""
    if requested != "auto":
        b = get_backend(requested)
        if algorithm not in b.algorithms:
            have = [n for n, x in registered().items() if algorithm in x.algorithms]
            raise ValueError(f"`backend` {requested!r} does not implement {algorithm}; use one of "
                             f"{', '.join(map(repr, ['auto', *have]))}")
        b.require()
        return b
    reasons = []
    order = ["sweep", "cugraph", "cupy", "scipy"]
    for name in order + [n for n in registered() if n not in order]:
        b = registered().get(name)
        if b is None or algorithm not in b.algorithms:
            continue
        if name == "sweep" and not graph.is_dag_by_partition():
            reasons.append("sweep: graph is not a partition-ordered DAG")
            continue
        why = b.unavailable_reason()
        if why is None:
            logger.debug("%s: auto chose backend %r (%s)", algorithm, name,
                         "; ".join(reasons) if reasons else "first preference")
            return b
        reasons.append(f"{name}: {why}")
    raise RuntimeError(f"no backend can run {algorithm}: " + "; ".join(reasons))


def pagerank(graph, alpha: float = 0.85, personalization="uniform", direction: str = "forward",
             backend: str = "auto", tol: float = 1e-10, max_iter: int = 1000, dangling=None,
             nstart=None) -> CentralityResult:
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

    Returns
    -------
    CentralityResult
        ``scores`` indexed by vertex, summing to 1.

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
    b = select_backend(graph, "pagerank", backend)
    logger.debug("pagerank on %r with backend %r", graph, b.name)
    res = b.pagerank(graph, alpha=alpha, personalization=p, dangling=q, direction=direction, tol=float(tol),
                     max_iter=int(max_iter), nstart=x0)
    params = {"alpha": alpha, "direction": direction, "tol": tol, "max_iter": max_iter,
              "personalization": personalization if isinstance(personalization, str) else "array"}
    return CentralityResult(res.scores, res.converged, res.iterations, res.backend, "pagerank", params)
