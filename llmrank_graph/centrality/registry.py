"""One entry per centrality: its function, stored column, the library's defaults and its backends.

Every part of the library that takes a centrality by name (``inspect`` and the other analyses,
the viewer's ``score=``, the command line, the experiments) reads its :class:`Centrality` entry
here instead of branching on the name. The modules that define the centralities register
their entries when they are imported (:mod:`.pagerank_alg`, then :mod:`.algorithms`), as the
backends register themselves, so the order of :func:`centrality_names` is the order of
definition.

An entry records what a centrality asked for by name means:

- ``defaults``: the keyword arguments with which the library computes it. They are the
  function's own defaults, except PageRank's, which are the measured defaults of the
  ``pagerank`` scorer (reverse direction, activation teleport; docs/design.md section 4). The
  scorers sit above this stage and read them from here.
- ``without_stats``: what replaces a default that needs node activations on a graph exported
  without calibration statistics (PageRank's teleport becomes uniform).
- ``result``: the ``algorithm`` label of the :class:`~llmrank_graph.CentralityResult` its
  function returns, as a format string over the arguments (``'{direction}_strength'``); with
  the arguments it gives the column name under which the result is stored in a graph
  (:func:`llmrank_graph.graph.storage.column_name`).

>>> from llmrank_graph.centrality.registry import centrality_entry
>>> pr = centrality_entry("pagerank")
>>> dict(pr.defaults)
{'direction': 'reverse', 'personalization': 'activation', 'alpha': 0.85}
>>> pr.columns
('pagerank_reverse_a0.85_activation', 'pagerank_reverse_a0.85')
>>> centrality_entry("strength").column()
'strength_in'
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from ..base.checks import check_choice
from ..base.params import InstanceOf, validated
from ..base.result import CentralityResult
from ..graph.mlpgraph import MLPGraph
from ..graph.storage import column_name
from .backends import registered

__all__ = ["Centrality", "register_centrality", "centrality_entry", "centrality_entries", "centrality_names",
           "get_centrality", "centralities", "node_scores", "signature_defaults"]

#: The constraint on the ``graph`` argument of every centrality function, declared in each
#: one's table (a name, a path or a model is refused with a TypeError that says how to get a graph).
GRAPH = InstanceOf(MLPGraph, "an MLPGraph (lg.export_graph(model) or lg.read_graph(directory))")


def _frozen(mapping: Mapping | None) -> Mapping:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class Centrality:
    """What a centrality asked for by name means: its function, defaults, stored column and backends.

    Attributes
    ----------
    name : str
        The name users type (``'pagerank'``), also the algorithm the backends implement.
    function : callable
        The public function, ``function(graph, backend=..., **arguments) -> CentralityResult``.
    description : str
        One line, for listings.
    result : str
        The ``algorithm`` label of the result, a format string over the arguments
        (``'{which}'`` for HITS: ``'authorities'`` or ``'hubs'``).
    defaults : mapping
        The keyword arguments with which the library computes it (read-only).
    without_stats : mapping
        Replacements for the defaults that need node activations, on a graph without them.
    """

    name: str
    function: Callable[..., CentralityResult]
    description: str
    result: str
    defaults: Mapping[str, object] = field(default_factory=dict)
    without_stats: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self):
        # read-only views, so that an entry cannot be changed by whoever reads its defaults
        object.__setattr__(self, "defaults", _frozen(self.defaults))
        object.__setattr__(self, "without_stats", _frozen(self.without_stats))

    def arguments(self, has_activation: bool = True) -> dict:
        """The keyword arguments for a graph with (or without) node activations."""
        return {**self.defaults, **({} if has_activation else self.without_stats)}

    def column(self, has_activation: bool = True) -> str:
        """The name of the stored column of a result computed with :meth:`arguments`."""
        args = self.arguments(has_activation)
        return column_name(self.result.format(**args), args)

    @property
    def columns(self) -> tuple[str, ...]:
        """The stored column names of the defaults: with node activations, then without (when different)."""
        return tuple(dict.fromkeys((self.column(True), self.column(False))))

    @property
    def backends(self) -> tuple[str, ...]:
        """The registered backends that implement it (available here or not)."""
        return tuple(b.name for b in registered().values() if b.implements(self.name))

    def scores(self, graph, *, backend: str = "auto", use_stored: bool = True) -> tuple[str, np.ndarray, str]:
        """``(column, scores (n_nodes,), source)`` with the library's defaults for this graph.

        A column of the same name stored with the graph is taken instead of computing it when
        ``use_stored`` (``source='stored'``); otherwise ``source`` is ``'computed (backend)'``.
        """
        col = self.column(graph.has_activation)
        if use_stored and col in graph.scores:
            return col, np.asarray(graph.scores[col], dtype=np.float64), "stored"
        res = self.function(graph, backend=backend, **self.arguments(graph.has_activation))
        return col, res.scores, f"computed ({res.backend})"


_REGISTRY: dict[str, Centrality] = {}


@validated({"entry": InstanceOf(Centrality, "a Centrality")})
def register_centrality(entry: Centrality) -> Centrality:
    """Add (or replace) a centrality's entry and return it."""
    _REGISTRY[entry.name] = entry
    return entry


def signature_defaults(function: Callable, *names: str) -> Mapping[str, object]:
    """The defaults of the parameters ``names`` of ``function``, read from its signature (read-only)."""
    params = inspect.signature(function).parameters
    return _frozen({n: params[n].default for n in names})


def centrality_names() -> tuple[str, ...]:
    """The registered centralities, in the order they were defined."""
    return tuple(_REGISTRY)


def centrality_entry(name: str, arg: str = "name") -> Centrality:
    """The entry of centrality ``name``; an unknown name is an error that lists the known ones (named ``arg``)."""
    check_choice(arg, name, tuple(_REGISTRY))
    return _REGISTRY[name]


def centrality_entries() -> tuple[Centrality, ...]:
    """Every entry, in the order of :func:`centrality_names`."""
    return tuple(_REGISTRY.values())


def get_centrality(name: str) -> Callable[..., CentralityResult]:
    """The public function of the centrality ``name``; ValueError listing the known names.

    >>> get_centrality("katz").__name__
    'katz'
    """
    return centrality_entry(name).function


def centralities() -> list[dict]:
    """Every centrality: name, description, and the backends implementing it (available or not).

    Example
    -------
    >>> [c["name"] for c in centralities()]
    ['pagerank', 'katz', 'hits', 'eigenvector', 'strength', 'degree']
    """
    return [{"name": e.name, "description": e.description, "backends": list(e.backends), "function": e.function}
            for e in _REGISTRY.values()]


def node_scores(graph, name: str) -> np.ndarray:
    """Scores of centrality ``name`` for every node, with the library's defaults (a stored column is reused).

    What the viewer ranks nodes by when given a centrality's name (``to_networkx(score='pagerank')``):
    :mod:`llmrank_graph.centrality` registers it with :func:`llmrank_graph.graph.viewer.register_score_source`.
    """
    return centrality_entry(name, "score").scores(graph)[1]
