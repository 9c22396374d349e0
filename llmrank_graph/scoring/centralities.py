"""The other centralities as neuron scorers: ``katz``, ``hits``, ``eigenvector``, ``strength`` and ``degree``.

Each ranks the intermediate nodes of the whole-MLP graph (or of the whole network's, with
``attention=True``) with one centrality of :mod:`llmrank_graph.centrality`, taking its parameters
with the function's own defaults, and the graph options every graph scorer shares
(:class:`~llmrank_graph.scoring.graph._GraphScorer`). By default their graph is the plain export
:data:`~llmrank_graph.graph.DEFAULT_EXPORT` (|W| edges), which needs no statistics.

>>> import torch, transformers
>>> cfg = transformers.LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=12, num_hidden_layers=2,
...                                num_attention_heads=2)
>>> model = transformers.LlamaForCausalLM(cfg).eval()
>>> KatzScorer(alpha=0.05, direction="reverse").score(model).sizes()   # |W| edges: no stats needed
{0: 12, 1: 12}
"""

from __future__ import annotations

from types import MappingProxyType

import numpy as np

from .. import centrality as _centrality
from ..base.checks import check_bool, check_float, fail
from ..base.params import Boolean, Check, Constraint, Interval, OneOf
from ..centrality import DIRECTIONS, HITS_VECTORS, STRENGTH_DIRECTIONS
from ..graph import DEFAULT_EXPORT, MLPGraph
from .graph import _DEVICE, _GRAPH_CONSTRAINTS, _POSITIVE, _backend_for, _defaults_of, _GraphScorer, _node_array

__all__ = ["KatzScorer", "HitsScorer", "EigenvectorScorer", "StrengthScorer", "DegreeScorer"]

_KATZ_FN = _defaults_of(_centrality.katz)
_HITS_FN = _defaults_of(_centrality.hits)
_EIGENVECTOR_FN = _defaults_of(_centrality.eigenvector)
_STRENGTH_FN = _defaults_of(_centrality.strength)
_DEGREE_FN = _defaults_of(_centrality.degree)


def _positive_or_per_node(arg: str, value):
    # As katz's beta: a positive scalar, or one positive value per node.
    if np.ndim(value) == 0 and not isinstance(value, (str, bytes, dict)):
        return check_float(arg, value, 0.0, min_open=True)
    return _node_array(arg, value, "a positive float or an array of one positive value per node", positive=True)


def _start_vector(arg: str, value):
    return None if value is None else _node_array(arg, value, "None or an array of one value per node")


def _undirected_only(arg: str, value) -> bool:
    if check_bool(arg, value):
        raise fail(arg, "False: the whole-MLP graph is a DAG, whose directed eigenvector centrality is undefined "
                        "(every eigenvalue of a nilpotent adjacency is 0)", value)
    return False


_START = Check(_start_vector, "None or an array of one value per node")
_ITERATIONS: dict[str, Constraint] = {"tol": _POSITIVE, "max_iter": Interval(int, 1), "nstart": _START}


class KatzScorer(_GraphScorer):
    """Katz centrality of the intermediate nodes on the whole-MLP graph.

    Parameters
    ----------
    mode, gate, residual, weighting, keep
        Graph options (:class:`~llmrank_graph.graph.ExportOptions`); by default the plain
        export :data:`~llmrank_graph.graph.DEFAULT_EXPORT` (|W| edges).
    alpha, beta, direction, backend, tol, max_iter, nstart, normalized, device
        Passed to :func:`llmrank_graph.centrality.katz`, with its defaults.
    graph : MLPGraph, optional
        A graph exported from the model with the scorer's graph options (see
        :class:`PageRankScorer`).
    prune_hidden : bool
        Must be False.

    Example
    -------
    >>> KatzScorer.check_params(alpha=-1.0)
    Traceback (most recent call last):
    ...
    llmrank_graph.errors.InvalidArgumentError: `alpha` must be a positive finite float; got -1.0
    """

    name = "katz"
    description = "katz centrality of the intermediate nodes of the whole-MLP graph"
    _parameter_constraints = MappingProxyType({
        **_GRAPH_CONSTRAINTS, **_ITERATIONS, "alpha": _POSITIVE, "backend": _backend_for("katz"),
        "beta": Check(_positive_or_per_node, "a positive float or an array of one value per node"),
        "direction": OneOf(*DIRECTIONS), "normalized": Boolean(), "device": _DEVICE})

    def __init__(self, *, mode: str = DEFAULT_EXPORT.mode, gate: str = DEFAULT_EXPORT.gate,
                 residual: float = DEFAULT_EXPORT.residual, weighting: str = DEFAULT_EXPORT.weighting,
                 keep: int | float | None = DEFAULT_EXPORT.keep, alpha: float = _KATZ_FN["alpha"],
                 beta=_KATZ_FN["beta"], direction: str = _KATZ_FN["direction"], backend: str = _KATZ_FN["backend"],
                 tol: float = _KATZ_FN["tol"], max_iter: int = _KATZ_FN["max_iter"], nstart=_KATZ_FN["nstart"],
                 normalized: bool = _KATZ_FN["normalized"], device=_KATZ_FN["device"],
                 graph: MLPGraph | None = None, prune_hidden: bool = False,
                 attention: bool = False):
        self.alpha = alpha
        self.beta = beta
        self.direction = direction
        self.tol = tol
        self.max_iter = max_iter
        self.nstart = nstart
        self.normalized = normalized
        self.device = device
        super().__init__(mode=mode, gate=gate, residual=residual, weighting=weighting, keep=keep, backend=backend,
                         graph=graph, prune_hidden=prune_hidden, attention=attention)

    def _centrality(self, graph):
        return _centrality.katz(graph, alpha=self.alpha, beta=self.beta, direction=self.direction,
                                backend=self.backend, tol=self.tol, max_iter=self.max_iter, nstart=self.nstart,
                                normalized=self.normalized, device=self.device)


class HitsScorer(_GraphScorer):
    """One HITS vector (authorities or hubs) of the intermediate nodes on the whole-MLP graph.

    Parameters
    ----------
    which, backend, tol, max_iter, nstart, normalized
        Passed to :func:`llmrank_graph.centrality.hits`, with its defaults: ``which`` is
        ``'authorities'`` (fed by good hubs) or ``'hubs'``.
    mode, gate, residual, weighting, keep, graph, prune_hidden
        As :class:`KatzScorer`.

    Example
    -------
    >>> HitsScorer(which="hubs").needs_stats()     # |W| edges by default
    False
    """

    name = "hits"
    description = "hits centrality of the intermediate nodes of the whole-MLP graph"
    _parameter_constraints = MappingProxyType({**_GRAPH_CONSTRAINTS, **_ITERATIONS, "backend": _backend_for("hits"),
                                               "which": OneOf(*HITS_VECTORS), "normalized": Boolean()})

    def __init__(self, *, mode: str = DEFAULT_EXPORT.mode, gate: str = DEFAULT_EXPORT.gate,
                 residual: float = DEFAULT_EXPORT.residual, weighting: str = DEFAULT_EXPORT.weighting,
                 keep: int | float | None = DEFAULT_EXPORT.keep, which: str = _HITS_FN["which"],
                 backend: str = _HITS_FN["backend"], tol: float = _HITS_FN["tol"],
                 max_iter: int = _HITS_FN["max_iter"], nstart=_HITS_FN["nstart"],
                 normalized: bool = _HITS_FN["normalized"], graph: MLPGraph | None = None,
                 prune_hidden: bool = False,
                 attention: bool = False):
        self.which = which
        self.tol = tol
        self.max_iter = max_iter
        self.nstart = nstart
        self.normalized = normalized
        super().__init__(mode=mode, gate=gate, residual=residual, weighting=weighting, keep=keep, backend=backend,
                         graph=graph, prune_hidden=prune_hidden, attention=attention)

    def _centrality(self, graph):
        return _centrality.hits(graph, which=self.which, backend=self.backend, tol=self.tol,
                                max_iter=self.max_iter, nstart=self.nstart, normalized=self.normalized)


class EigenvectorScorer(_GraphScorer):
    """Eigenvector centrality (of the undirected graph) of the intermediate nodes.

    Parameters
    ----------
    backend, tol, max_iter, nstart, directed
        Passed to :func:`llmrank_graph.centrality.eigenvector`, with its defaults
        (``directed=True`` is refused there: the whole-MLP graph is a DAG).
    mode, gate, residual, weighting, keep, graph, prune_hidden
        As :class:`KatzScorer`.

    Example
    -------
    >>> EigenvectorScorer().get_params()["directed"]
    False
    """

    name = "eigenvector"
    description = "eigenvector centrality of the intermediate nodes of the whole-MLP graph"
    _parameter_constraints = MappingProxyType({
        **_GRAPH_CONSTRAINTS, **_ITERATIONS, "backend": _backend_for("eigenvector"),
        "directed": Check(_undirected_only, "False (the whole-MLP graph is a DAG)")})

    def __init__(self, *, mode: str = DEFAULT_EXPORT.mode, gate: str = DEFAULT_EXPORT.gate,
                 residual: float = DEFAULT_EXPORT.residual, weighting: str = DEFAULT_EXPORT.weighting,
                 keep: int | float | None = DEFAULT_EXPORT.keep, backend: str = _EIGENVECTOR_FN["backend"],
                 tol: float = _EIGENVECTOR_FN["tol"], max_iter: int = _EIGENVECTOR_FN["max_iter"],
                 nstart=_EIGENVECTOR_FN["nstart"], directed: bool = _EIGENVECTOR_FN["directed"],
                 graph: MLPGraph | None = None, prune_hidden: bool = False,
                 attention: bool = False):
        self.tol = tol
        self.max_iter = max_iter
        self.nstart = nstart
        self.directed = directed
        super().__init__(mode=mode, gate=gate, residual=residual, weighting=weighting, keep=keep, backend=backend,
                         graph=graph, prune_hidden=prune_hidden, attention=attention)

    def _centrality(self, graph):
        return _centrality.eigenvector(graph, backend=self.backend, tol=self.tol, max_iter=self.max_iter,
                                       nstart=self.nstart, directed=self.directed)


class StrengthScorer(_GraphScorer):
    """Strength (sum of in-, out- or all edge weights) of the intermediate nodes.

    Parameters
    ----------
    direction, backend, device
        Passed to :func:`llmrank_graph.centrality.strength`, with its defaults (``direction``:
        ``'in'``, ``'out'`` or ``'total'``).
    mode, gate, residual, weighting, keep, graph, prune_hidden
        As :class:`KatzScorer`.

    Example
    -------
    >>> StrengthScorer(direction="out", weighting="abs_x_input").needs_stats()
    True
    """

    name = "strength"
    description = "strength centrality of the intermediate nodes of the whole-MLP graph"
    _parameter_constraints = MappingProxyType({
        **_GRAPH_CONSTRAINTS, "backend": _backend_for("strength"), "direction": OneOf(*STRENGTH_DIRECTIONS),
        "device": _DEVICE})

    def __init__(self, *, mode: str = DEFAULT_EXPORT.mode, gate: str = DEFAULT_EXPORT.gate,
                 residual: float = DEFAULT_EXPORT.residual, weighting: str = DEFAULT_EXPORT.weighting,
                 keep: int | float | None = DEFAULT_EXPORT.keep, direction: str = _STRENGTH_FN["direction"],
                 backend: str = _STRENGTH_FN["backend"], device=_STRENGTH_FN["device"],
                 graph: MLPGraph | None = None, prune_hidden: bool = False,
                 attention: bool = False):
        self.direction = direction
        self.device = device
        super().__init__(mode=mode, gate=gate, residual=residual, weighting=weighting, keep=keep, backend=backend,
                         graph=graph, prune_hidden=prune_hidden, attention=attention)

    def _centrality(self, graph):
        return _centrality.strength(graph, direction=self.direction, backend=self.backend, device=self.device)


class DegreeScorer(_GraphScorer):
    """Degree (number of in-, out- or all edges) of the intermediate nodes.

    Parameters
    ----------
    direction, backend
        Passed to :func:`llmrank_graph.centrality.degree`, with its defaults.
    mode, gate, residual, weighting, keep, graph, prune_hidden
        As :class:`KatzScorer`.

    Example
    -------
    >>> DegreeScorer(keep=3, direction="out").get_params()["direction"]
    'out'
    """

    name = "degree"
    description = "degree centrality of the intermediate nodes of the whole-MLP graph"
    _parameter_constraints = MappingProxyType({**_GRAPH_CONSTRAINTS, "backend": _backend_for("degree"),
                                               "direction": OneOf(*STRENGTH_DIRECTIONS)})

    def __init__(self, *, mode: str = DEFAULT_EXPORT.mode, gate: str = DEFAULT_EXPORT.gate,
                 residual: float = DEFAULT_EXPORT.residual, weighting: str = DEFAULT_EXPORT.weighting,
                 keep: int | float | None = DEFAULT_EXPORT.keep, direction: str = _DEGREE_FN["direction"],
                 backend: str = _DEGREE_FN["backend"], graph: MLPGraph | None = None, prune_hidden: bool = False,
                 attention: bool = False):
        self.direction = direction
        super().__init__(mode=mode, gate=gate, residual=residual, weighting=weighting, keep=keep, backend=backend,
                         graph=graph, prune_hidden=prune_hidden, attention=attention)

    def _centrality(self, graph):
        return _centrality.degree(graph, direction=self.direction, backend=self.backend)

