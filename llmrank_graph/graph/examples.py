"""A tiny graph for examples and doctests, as networkx's generators give small graphs to try things on.

>>> import llmrank_graph as lg
>>> g = lg.graph.toy_graph()
>>> g.n_nodes, g.n_edges, [p.name for p in g.partitions]
(4, 4, ['H0', 'I0', 'H1'])
"""

from __future__ import annotations

import pandas as pd

from .mlpgraph import MLPGraph

__all__ = ["toy_graph"]


def toy_graph() -> MLPGraph:
    """One MLP layer with one hidden feature and two neurons: ``H0 -> I0 (2 nodes) -> H1``.

    Vertex 0 is the input feature, 1 and 2 the intermediate neurons, 3 the output feature;
    the edges 0->1, 0->2, 1->3, 2->3 weigh 1, 2, 1, 1. Built with
    :meth:`MLPGraph.from_edgelist`, as a graph made elsewhere would be.

    Returns
    -------
    MLPGraph
    """
    nodes = pd.DataFrame({"vertex": range(4), "layer": [0, 0, 0, 1],
                          "kind": ["hidden", "intermediate", "intermediate", "hidden"]})
    edges = pd.DataFrame({"src": [0, 0, 1, 2], "dst": [1, 2, 3, 3], "weight": [1.0, 2.0, 1.0, 1.0]})
    return MLPGraph.from_edgelist(nodes, edges)
