"""The pieces an :class:`~llmrank_graph.MLPGraph` is built from, and building them from tables.

Every way of making a graph ends in a :class:`GraphParts`: a model exported
(:mod:`llmrank_graph.graph.export`), a graph directory read
(:mod:`llmrank_graph.graph.storage`), or a node table and an edge list made elsewhere
(:func:`parts_from_tables`, behind :meth:`~llmrank_graph.MLPGraph.from_edgelist` and the
reader of directories written before the block table). The graph itself is built from the
parts by :meth:`~llmrank_graph.MLPGraph.from_parts`, one stage up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .blocks import Block, Partition, SparseBlock
from .meta import EDGE_COLUMNS, KINDS

__all__ = ["GraphParts", "parts_from_tables"]


@dataclass(frozen=True)
class GraphParts:
    """The pieces of an :class:`~llmrank_graph.MLPGraph`, as read from a graph directory or an edge list.

    :func:`llmrank_graph.read_graph` and :meth:`~llmrank_graph.MLPGraph.from_edgelist` build the
    graph from them (``MLPGraph(partitions, blocks, activation, meta, scores=..., score_info=...)``
    with ``source`` set).

    Attributes
    ----------
    partitions : list of Partition, in topological order.
    blocks : list of Block
    activation : numpy.ndarray (n_nodes,), float64; NaN without calibration statistics.
    meta : dict
    scores : dict of str -> numpy.ndarray (n_nodes,), the stored score columns.
    score_info : dict of str -> dict, what produced each stored score.
    source : Path or None, the graph directory read.
    """

    partitions: list[Partition]
    blocks: list[Block]
    activation: np.ndarray
    meta: dict
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    score_info: dict[str, dict] = field(default_factory=dict)
    source: Path | None = None


def _partitions_from_nodes(nodes: pd.DataFrame, where: str, error) -> list[Partition]:
    """Partitions as runs of equal ``partition`` ids (or of equal ``(layer, kind)``)."""
    if "partition" in nodes.columns:
        key = nodes["partition"].to_numpy(np.int64)
    else:
        lk = nodes["layer"].astype(np.int64).astype(str) + "/" + nodes["kind"].astype(str)
        key = pd.factorize(lk)[0]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else np.zeros(0, dtype=np.int64)
    stops = np.r_[starts[1:], len(key)]
    parts = []
    for pos, (a, b) in enumerate(zip(starts, stops)):
        layer, kind = int(nodes["layer"].iat[a]), str(nodes["kind"].iat[a])
        if kind not in KINDS:
            raise error(f"{where}: node kind must be one of {', '.join(map(repr, KINDS))}; got {kind!r}")
        name = f"{'H' if kind == 'hidden' else 'I'}{layer}"
        parts.append(Partition(pos, name, layer, kind, int(a), int(b - a)))
    if len({p.name for p in parts}) != len(parts):  # isolated-style graphs repeat H_l: name them by position
        parts = [Partition(p.position, f"{p.name}_{p.position}", p.layer, p.kind, p.offset, p.size) for p in parts]
    return parts


def _check_tables(nodes: pd.DataFrame, edges: pd.DataFrame, where: str, error) -> None:
    for name, df, cols in (("nodes", nodes, ("vertex", "layer", "kind")), ("edges", edges, EDGE_COLUMNS)):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise error(f"{where}: the {name} table lacks columns {missing}")
    if not np.array_equal(nodes["vertex"].to_numpy(), np.arange(len(nodes))):
        raise error(f"{where}: vertex ids are not contiguous from 0")


def _blocks_from_edges(parts: list[Partition], src: np.ndarray, dst: np.ndarray, w: np.ndarray) -> list[Block]:
    """One sparse block per (source partition, destination partition) pair that has edges."""
    offsets = np.array([p.offset for p in parts])
    ps = np.searchsorted(offsets, src, side="right") - 1
    pd_ = np.searchsorted(offsets, dst, side="right") - 1
    key = ps * len(parts) + pd_
    order = np.argsort(key, kind="stable")
    bounds = np.flatnonzero(np.diff(key[order])) + 1
    blocks: list[Block] = []
    for grp in np.split(order, bounds) if len(order) else []:
        a, b = parts[ps[grp[0]]], parts[pd_[grp[0]]]
        layer = a.layer  # H_l -> I_l, I_l -> H_{l+1} and H_l -> H_{l+1} all belong to MLP l
        role = "up" if b.kind == "intermediate" else ("down" if a.kind == "intermediate" else "residual")
        blocks.append(SparseBlock(a, b, layer, role, dst[grp] - b.offset, src[grp] - a.offset, w[grp]))
    return blocks


def parts_from_tables(nodes: pd.DataFrame, edges: pd.DataFrame, meta: dict, where: str, error,
                      parts: list[Partition] | None = None) -> GraphParts:
    """The parts of a graph given as a node table and an edge list, checked.

    Parameters
    ----------
    nodes, edges : pandas.DataFrame
        As :meth:`~llmrank_graph.MLPGraph.from_edgelist` documents them (the caller has
        checked that they are DataFrames).
    meta : dict
        Facts to record; ``n_layers`` is added when missing.
    where : str
        What the tables are, for messages (``"`nodes`/`edges`"``, a directory).
    error : type
        The exception raised on a problem: GraphFormatError when reading a directory,
        InvalidArgumentError for tables a user gave.
    parts : list of Partition, optional
        The partitions, when known (from ``meta.json``); else runs of the node table.

    Example
    -------
    >>> from llmrank_graph.errors import InvalidArgumentError
    >>> nodes = pd.DataFrame({"vertex": [0, 1, 2], "layer": [0, 0, 1],
    ...                       "kind": ["hidden", "intermediate", "hidden"]})
    >>> edges = pd.DataFrame({"src": [0, 1], "dst": [1, 2], "weight": [0.5, 2.0]})
    >>> p = parts_from_tables(nodes, edges, {}, "tables", InvalidArgumentError)
    >>> [b.role for b in p.blocks], p.meta
    (['up', 'down'], {'n_layers': 1})
    """
    _check_tables(nodes, edges, where, error)
    n = len(nodes)
    if parts is None:
        parts = _partitions_from_nodes(nodes, where, error)
    if (parts[-1].stop if parts else 0) != n or any(p.offset != (parts[i - 1].stop if i else 0)
                                                     for i, p in enumerate(parts)):
        raise error(f"{where}: partitions are not contiguous or do not cover the {n} nodes")
    src = edges["src"].to_numpy(np.int64)
    dst = edges["dst"].to_numpy(np.int64)
    if len(src) and (src.min() < 0 or dst.min() < 0 or src.max() >= n or dst.max() >= n):
        raise error(f"{where}: edges name vertices outside 0..{n - 1}")
    w = edges["weight"].to_numpy(np.float32)
    if not np.isfinite(w).all() or (w < 0).any():
        raise error(f"{where}: edge weights must be finite and non-negative")
    blocks = _blocks_from_edges(parts, src, dst, w)
    act = nodes["activation"].to_numpy(np.float64) if "activation" in nodes.columns else np.full(n, np.nan)
    meta = dict(meta)
    meta.setdefault("n_layers", len({p.layer for p in parts if p.kind == "intermediate"}))
    return GraphParts(parts, blocks, act, meta)
