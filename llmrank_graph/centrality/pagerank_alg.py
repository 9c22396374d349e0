"""Public PageRank: validation, personalization, then the one dispatcher (:mod:`.backends`)."""

from __future__ import annotations

import logging

import numpy as np

from ..base.checks import check_choice, check_finite_array, fail, fail_type
from ..base.params import Interval, OneOf, validated
from ..base.result import CentralityResult
from .backends import run
from .registry import GRAPH, Centrality, register_centrality

logger = logging.getLogger(__name__)

__all__ = ["pagerank", "teleport_vector", "node_vector", "DIRECTIONS", "TELEPORTS"]

DIRECTIONS = ("forward", "reverse")
#: Named teleport (and dangling) distributions.
TELEPORTS = ("uniform", "activation")


def teleport_vector(graph, value, arg: str = "personalization") -> np.ndarray:
    """Normalised teleport vector from "uniform", "activation" or an array of length n_nodes."""
    n = graph.n_nodes
    if isinstance(value, str):
        check_choice(arg, value, TELEPORTS)
        if value == "uniform":
            return np.full(n, 1.0 / n)
        if not graph.has_activation:
            raise fail(arg, "'uniform' or an array: 'activation' needs a graph exported with calibration stats "
                            "(export_graph(model, stats))", value)
        value = graph.activation
    v = node_vector(graph, value, arg)
    return v / v.sum()


def node_vector(graph, value, arg: str, positive_sum: bool = True) -> np.ndarray:
    """A finite, non-negative float64 array with one value per node (errors name ``arg``)."""
    n = graph.n_nodes
    if isinstance(value, (str, dict)):
        raise fail_type(arg, f"'uniform', 'activation' or an array of {n} non-negative values", value)
    return check_finite_array(arg, value, n, nonnegative=True, positive_sum=positive_sum)


@validated({"graph": GRAPH, "alpha": Interval(float, 0, 1, closed="neither"), "direction": OneOf(*DIRECTIONS),
            "tol": Interval(float, 0, closed="neither"), "max_iter": Interval(int, 1)})
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
    InvalidArgumentTypeError
        ``graph`` is not an MLPGraph, or an argument has the wrong type (a TypeError).
    ValueError
        Bad ``alpha``, ``direction``, ``tol``, ``max_iter``, vectors, ``backend`` or ``device``.
    BackendUnavailableError
        The requested backend cannot run here (the message names the extra to install).
    ConvergenceError
        A power-iteration backend did not converge within ``max_iter``.

    Example
    -------
    >>> import llmrank_graph as lg
    >>> g = lg.graph.toy_graph()             # H0 -> I0 (2 neurons) -> H1
    >>> res = pagerank(g, direction="reverse")
    >>> res.scores.round(3), round(float(res.scores.sum()), 12)
    (array([0.471, 0.196, 0.196, 0.138]), 1.0)

    A graph's directory is read first:

    >>> pagerank("dir")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    llmrank_graph.errors.InvalidArgumentTypeError: `graph` must be an MLPGraph (...read_graph(directory)); got 'dir'
    """
    p = teleport_vector(graph, personalization, "personalization")
    q = p if dangling is None else teleport_vector(graph, dangling, "dangling")
    x0 = None if nstart is None else teleport_vector(graph, nstart, "nstart")
    extra = {"device": device} if device is not None else {}
    res = run(graph, "pagerank", backend, alpha=alpha, personalization=p, dangling=q, direction=direction, tol=tol,
              max_iter=max_iter, nstart=x0, **extra)
    params = {"alpha": alpha, "direction": direction, "tol": tol, "max_iter": max_iter,
              "personalization": personalization if isinstance(personalization, str) else "array"}
    return res.with_meta("pagerank", params)


# The library's PageRank, when asked for by name (inspect, the viewer, the scorers): the measured
# defaults of the ``pagerank`` scorer (docs/design.md section 4), not networkx's forward, uniform
# ones of the function; without node activations the teleport falls back to uniform.
register_centrality(Centrality("pagerank", pagerank, "PageRank with networkx semantics; exact sweep on a DAG",
                               "pagerank", {"direction": "reverse", "personalization": "activation", "alpha": 0.85},
                               without_stats={"personalization": "uniform"}))
