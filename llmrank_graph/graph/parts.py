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

__all__ = ["GraphParts", "parts_from_tables", "check_weights", "check_edges"]

#: The letter of a partition's name, by node kind (``R{l}`` partitions read back from a table are ``H``).
_PREFIX = {"hidden": "H", "intermediate": "I", "head": "A"}
#: Float32 bit patterns at or above this (as uint32) are inf, NaN or carry the sign bit.
_FINITE_NONNEGATIVE_BITS = 0x7F800000


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
        name = f"{_PREFIX[kind]}{layer}"
        parts.append(Partition(pos, name, layer, kind, int(a), int(b - a)))
    if len({p.name for p in parts}) != len(parts):  # isolated-style graphs repeat H_l: name them by position
        parts = [Partition(p.position, f"{p.name}_{p.position}", p.layer, p.kind, p.offset, p.size) for p in parts]
    return parts


# ---------------------------------------------------------------------------- the one check of edges
def check_weights(weight: np.ndarray, where: str, error, first_row: int = 0) -> None:
    """Refuse NaN, inf and negative edge weights, naming the column and the first bad row.

    One pass over the float32 bits when every weight is sound (the common case, on every block
    read from Parquet): a finite non-negative float32 has its sign bit clear and an exponent
    below all ones, so its bits as a uint32 are below ``0x7F800000``. Only when that fails are
    the bad values counted (``-0.0`` fails the fast test and is accepted there).

    Parameters
    ----------
    weight : numpy.ndarray, float32
    where : str
        What holds the weights, for the message (a table, a block of a file).
    error : type
        The exception to raise.
    first_row : int
        The row of ``weight[0]`` (messages name rows: of a file, of a table).

    Example
    -------
    >>> from llmrank_graph.errors import InvalidArgumentError
    >>> check_weights(np.array([0.5, 0.0, -0.0], np.float32), "`edges`", InvalidArgumentError)
    >>> check_weights(np.array([0.5, np.nan, -1.0], np.float32), "`edges`", InvalidArgumentError)
    Traceback (most recent call last):
    ...
    llmrank_graph.errors.InvalidArgumentError: `edges`: column 'weight' holds 2 bad values (1 NaN, 1 negative; the \
first at row 1); edge weights must be finite and non-negative
    """
    w = np.ascontiguousarray(weight, dtype=np.float32)
    if not w.size or w.view(np.uint32).max() < _FINITE_NONNEGATIVE_BITS:
        return
    kinds = {"NaN": np.isnan(w), "inf": np.isinf(w), "negative": w < 0}
    bad = kinds["NaN"] | kinds["inf"] | kinds["negative"]
    if not bad.any():  # only -0.0
        return
    counts = [f"{int(m.sum())} {name}" for name, m in kinds.items() if m.any()]
    i = int(np.flatnonzero(bad)[0])
    n_bad = int(bad.sum())
    raise error(f"{where}: column 'weight' holds {n_bad} bad value{'s' if n_bad > 1 else ''} ({', '.join(counts)}; "
                f"the first at row {first_row + i}); edge weights must be finite and non-negative")


def check_edges(src: np.ndarray, dst: np.ndarray, weight: np.ndarray, shape: tuple[int, int], where: str, error, *,
                offsets: tuple[int, int] = (0, 0), first_row: int = 0) -> tuple[np.ndarray, bool]:
    """The one check of a set of edges, for :meth:`~llmrank_graph.MLPGraph.from_edgelist` and the Parquet reader.

    Refuses weights that are NaN, inf or negative (:func:`check_weights`), ids outside the
    ``(rows, cols)`` block, and a ``(src, dst)`` pair given twice.

    Parameters
    ----------
    src, dst : numpy.ndarray, int64
        Positions inside the block: columns (``0 <= src < cols``) and rows (``0 <= dst < rows``).
    weight : numpy.ndarray, float32
    shape : (int, int)
        ``(rows, cols)``: the sizes of the destination and source partitions.
    where, error
        What the edges are, for messages, and the exception to raise.
    offsets : (int, int)
        The vertex ids of position 0 in the source and destination partitions (messages name
        vertex ids).
    first_row : int
        The row of the first edge, for messages, as in :func:`check_weights`.

    Returns
    -------
    (numpy.ndarray, bool)
        The row-major position ``dst * cols + src`` of every edge, and whether they already
        increase (edges in ``(dst, src)`` order, as llmrank_graph writes them).

    Example
    -------
    >>> from llmrank_graph.errors import InvalidArgumentError
    >>> src, dst = np.array([0, 1, 0]), np.array([0, 0, 1])
    >>> check_edges(src, dst, np.ones(3, np.float32), (2, 2), "`edges`", InvalidArgumentError)
    (array([0, 1, 2]), True)
    >>> check_edges(src, np.array([1, 0, 1]), np.ones(3, np.float32), (2, 2), "`edges`", InvalidArgumentError)
    Traceback (most recent call last):
    ...
    llmrank_graph.errors.InvalidArgumentError: `edges`: the edge 0 -> 1 is given twice (rows 0 and 2); duplicate \
(src, dst) pairs are refused: sum their weights first
    """
    check_weights(weight, where, error, first_row)
    n_rows, n_cols = shape
    for name, ids, size, off in (("src", src, n_cols, offsets[0]), ("dst", dst, n_rows, offsets[1])):
        if len(ids) and (ids.min() < 0 or ids.max() >= size):
            i = int(np.flatnonzero((ids < 0) | (ids >= size))[0])
            raise error(f"{where}: column '{name}' names vertices outside {off}..{off + size - 1} (first: "
                        f"{int(ids[i]) + off} at row {first_row + i})")
    pos = dst.astype(np.int64, copy=False) * n_cols + src
    ordered = bool((pos[1:] > pos[:-1]).all())
    if not ordered:
        order = np.argsort(pos, kind="stable")
        twice = np.flatnonzero(pos[order[1:]] == pos[order[:-1]])
        if twice.size:
            a, b = int(order[twice[0]]), int(order[twice[0] + 1])
            raise error(f"{where}: the edge {int(src[a]) + offsets[0]} -> {int(dst[a]) + offsets[1]} is given twice "
                        f"(rows {first_row + a} and {first_row + b}); duplicate (src, dst) pairs are refused: sum "
                        "their weights first")
    return pos, ordered


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
        layer = a.layer  # H_l -> I_l, I_l -> H_{l+1} and H_l -> H_{l+1} all belong to MLP l (R_l -> A_l to layer l)
        role = ("value" if b.kind == "head" else "output" if a.kind == "head" else "up" if b.kind == "intermediate"
                else "down" if a.kind == "intermediate" else "residual")
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
    w = edges["weight"].to_numpy(np.float32)
    check_edges(src, dst, w, (n, n), where, error)  # what the Parquet reader checks in every block
    blocks = _blocks_from_edges(parts, src, dst, w)
    act = nodes["activation"].to_numpy(np.float64) if "activation" in nodes.columns else np.full(n, np.nan)
    meta = dict(meta)
    meta.setdefault("n_layers", len({p.layer for p in parts if p.kind == "intermediate"}))
    return GraphParts(parts, blocks, act, meta)
