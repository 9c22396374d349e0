"""Where a score sits: its mass per partition (PageRank mass per layer) and its mean per layer."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..base.params import validated
from ..graph.mlpgraph import MLPGraph
from .common import GRAPH
from .scores import layer_values, score_table

__all__ = ["mass_by_layer", "compute_mass", "layer_means"]


@validated({"graph": GRAPH})
def mass_by_layer(graph: MLPGraph, scores) -> pd.DataFrame:
    """How each score's total is spread over the partitions (PageRank mass per layer).

    Returns
    -------
    pandas.DataFrame
        ``score, partition, name, layer, kind, size, mass, share, node_share, ratio``:
        ``share`` is the partition's fraction of the total, ``node_share`` its fraction of the
        nodes, and ``ratio = share / node_share`` (above 1: the score concentrates there).

    Example
    -------
    >>> import llmrank_graph as lg
    >>> g = lg.graph.toy_graph()             # H0 -> I0 (2 neurons) -> H1
    >>> m = mass_by_layer(g, {"in": lg.strength(g)})
    >>> m[["name", "mass", "share", "ratio"]].values.tolist()
    [['H0', 0.0, 0.0, 0.0], ['I0', 3.0, 0.6, 1.2], ['H1', 2.0, 0.4, 1.6]]
    """
    return compute_mass(graph, score_table(graph, scores))


def compute_mass(graph: MLPGraph, table: dict[str, np.ndarray]) -> pd.DataFrame:
    """:func:`mass_by_layer` of a checked graph and a score table."""
    n = graph.n_nodes
    rows = []
    for name, v in table.items():
        total = float(np.nansum(v))
        for p in graph.partitions:
            mass = float(np.nansum(v[p.offset:p.stop]))
            share = mass / total if total else np.nan
            node_share = p.size / n
            rows.append({"score": name, "partition": p.position, "name": p.name, "layer": p.layer, "kind": p.kind,
                         "size": p.size, "mass": mass, "share": share, "node_share": node_share,
                         "ratio": share / node_share if node_share else np.nan})
    return pd.DataFrame(rows)


def layer_means(graph: MLPGraph, table: dict[str, np.ndarray]) -> pd.DataFrame:
    """Mean score of each layer's intermediate neurons, and relative to the mean over all layers.

    Returns
    -------
    pandas.DataFrame
        ``score, layer, mean, relative`` (``relative``: the layer's mean over the mean of all
        layers' intermediate neurons; NaN where that mean is 0 or undefined).
    """
    rows = []
    per = layer_values(graph, table)
    for name in table:
        allv = np.concatenate([v[name] for v in per.values()]) if per else np.zeros(0)
        overall = float(np.nanmean(allv)) if np.isfinite(allv).any() else np.nan
        for layer, v in per.items():
            m = float(np.nanmean(v[name])) if np.isfinite(v[name]).any() else np.nan
            rows.append({"score": name, "layer": layer, "mean": m,
                         "relative": m / overall if overall and np.isfinite(overall) else np.nan})
    return pd.DataFrame(rows, columns=["score", "layer", "mean", "relative"])
