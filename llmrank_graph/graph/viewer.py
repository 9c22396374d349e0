"""A thresholded subgraph for graph viewers (Gephi, Cytoscape): networkx, GraphML, GEXF.

The whole-MLP graph of a real model has tens of millions of edges; a viewer shows a few
thousand nodes and tens of thousands of edges. :func:`to_networkx` keeps:

1. the ``top_nodes`` highest-scoring nodes of every partition, by a stored score column, a
   centrality computed here, an array, or (default) the node's total strength;
2. among the edges between kept nodes, those of weight at least ``min_weight`` and at least
   the ``min_quantile`` quantile of their weights;
3. then the ``top_edges`` heaviest in-edges of every kept node from each block; with the
   default ``"auto"`` as many per node as keep the total within :data:`VIEW_EDGE_BUDGET`.

The defaults (:data:`VIEW_TOP_NODES` per partition, the budget) keep a tiny test model whole
and cut the SmolLM2-135M graph (63,936 nodes, 53M edges) to 3,904 nodes and 49,920 edges.
Asking for more than :data:`VIEW_EDGE_LIMIT` edges is refused unless ``force=True``, with a
message that says how to threshold.

Nodes carry ``layer, kind, index, partition, label``, the ``activation`` when the graph has
one, and every stored score; edges carry ``weight``. Node ids are the graph's vertex ids.
Parquet (:meth:`~llmrank_graph.MLPGraph.to_parquet`) stays the full-fidelity format. This is
the only analysis that builds an edge list, of the kept edges only.

Named scores come from the stages above this one without an import upward: a stage that can
compute scores by name registers a :class:`ScoreSource` with :func:`register_score_source`
when it is imported, as the backends register themselves. :mod:`llmrank_graph.centrality`
registers its centralities, so ``score="pagerank"`` ranks the nodes by PageRank with the
library's defaults (:mod:`llmrank_graph.centrality.registry`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..base.checks import check_choice, check_positive_int, fail, fail_type, format_allowed
from ..base.files import atomic_file
from ..base.optional import has_module
from ..base.params import Boolean, Check, InstanceOf, Interval, Optional, validated
from ..base.result import CentralityResult
from ..errors import InvalidArgumentError, MissingDependencyError

logger = logging.getLogger(__name__)

__all__ = ["to_networkx", "select", "write_viewer", "ScoreSource", "register_score_source", "VIEW_FORMATS",
           "VIEW_TOP_NODES", "VIEW_EDGE_BUDGET", "VIEW_EDGE_LIMIT", "VIEW_EXTRA"]

#: File formats for viewers.
VIEW_FORMATS: tuple[str, ...] = ("graphml", "gexf")
#: Nodes kept per partition by default.
VIEW_TOP_NODES = 64
#: With ``top_edges="auto"``, in-edges per node are cut to keep at most this many edges.
VIEW_EDGE_BUDGET = 50_000
#: More edges than this are refused unless ``force=True``.
VIEW_EDGE_LIMIT = 1_000_000
#: The pip extra that provides networkx.
VIEW_EXTRA = "viewer"
_HOW = ("threshold it: fewer nodes per partition (top_nodes / --top-nodes), fewer in-edges per node "
        "(top_edges / --top-edges), a weight quantile (min_quantile / --min-quantile) or a minimum weight "
        "(min_weight / --min-weight)")


def _networkx():
    if not has_module("networkx"):
        raise MissingDependencyError(f"the viewer export needs networkx; install it with "
                                     f"`pip install llmrank-graph[{VIEW_EXTRA}]`")
    import networkx

    return networkx


@dataclass(frozen=True)
class ScoreSource:
    """Node scores that :func:`to_networkx` can rank by name, offered by a stage above the graph.

    Attributes
    ----------
    what : str
        What the names are, for messages (``'a centrality'``).
    names : callable
        ``names() -> iterable of str``: the names it answers, read at each call.
    compute : callable
        ``compute(graph, name) -> array (n_nodes,)``: the scores of one name.
    """

    what: str
    names: Callable[[], Iterable[str]]
    compute: Callable[[object, str], np.ndarray]


_SOURCES: dict[str, ScoreSource] = {}


@validated({"source": InstanceOf(ScoreSource, "a ScoreSource")})
def register_score_source(source: ScoreSource) -> ScoreSource:
    """Let ``score=<name>`` of :func:`to_networkx` use ``source`` (replacing one with the same ``what``).

    The graph stage sits below the ones that compute scores, so they register here when they
    are imported; :mod:`llmrank_graph.centrality` registers its centralities.
    """
    _SOURCES[source.what] = source
    return source


def _node_score(graph, score) -> np.ndarray:
    n = graph.n_nodes
    if score is None:
        return (graph.strength("forward") + graph.strength("reverse")).numpy()
    if isinstance(score, str):
        if score in graph.scores:
            return np.asarray(graph.scores[score], dtype=np.float64)
        for source in _SOURCES.values():
            if score in tuple(source.names()):
                return np.asarray(source.compute(graph, score), dtype=np.float64)
        have = ", ".join(map(repr, graph.scores)) or "none stored"
        named = "".join(f", {s.what} ({format_allowed(s.names())})" for s in _SOURCES.values())
        raise fail("score", f"a stored score column ({have}){named} or an array of {n} values", score)
    arr = np.asarray(score.scores if isinstance(score, CentralityResult) else score, dtype=np.float64)
    if arr.shape != (n,):
        raise InvalidArgumentError(f"`score` must have one value per node: length {n}; got shape {arr.shape}")
    return arr


def _check_top_edges(arg: str, top_edges):
    if top_edges is None or top_edges == "auto":
        return top_edges
    if isinstance(top_edges, str):
        raise fail(arg, "'auto', None (every edge) or a positive int", top_edges)
    return check_positive_int(arg, top_edges)


#: The thresholds of :func:`select` (and so of :func:`to_networkx` and :func:`write_viewer`).
SELECT_CONSTRAINTS = {
    "top_nodes": Optional(Interval(int, 1)),
    "top_edges": Check(_check_top_edges, "'auto', None (every edge) or a positive int"),
    "min_quantile": Optional(Interval(float, 0, 1, closed="left")),
    "min_weight": Optional(Interval(float, 0)),
    "max_edges": Interval(int, 1),
    "force": Boolean(),
}


def _candidates(block, rows: np.ndarray, cols: np.ndarray):
    """``(dst local, src local, weight)`` of the block's edges between the kept rows and columns."""
    r, c = block.shape
    if block.nnz == r * c:  # dense: every entry of the submatrix is an edge
        with block.loaded() as b:
            chunks = [(r0, r1, ch) for r0, r1, ch in b.chunks(torch.float32, "cpu")]
        pos = np.empty(r, dtype=np.int64)
        pos[:] = -1
        pos[rows] = np.arange(rows.size)
        sub = np.empty((rows.size, cols.size), dtype=np.float32)
        for r0, r1, ch in chunks:
            sel = rows[(rows >= r0) & (rows < r1)]
            if sel.size:
                sub[pos[sel]] = ch.numpy()[sel - r0][:, cols]
        d = np.repeat(rows, cols.size)
        s = np.tile(cols, rows.size)
        return d, s, sub.reshape(-1)
    s, d, w = block.coo()
    s, d = s - block.src.offset, d - block.dst.offset
    keep_r = np.zeros(r, dtype=bool)
    keep_r[rows] = True
    keep_c = np.zeros(c, dtype=bool)
    keep_c[cols] = True
    m = keep_r[d] & keep_c[s]
    return d[m], s[m], w[m]


def _top_per_node(d: np.ndarray, w: np.ndarray, e: int) -> np.ndarray:
    """Mask of the ``e`` heaviest edges of each destination (ties by position)."""
    order = np.lexsort((-w, d))  # by destination, heaviest first
    ds = d[order]
    first = np.r_[0, np.flatnonzero(ds[1:] != ds[:-1]) + 1] if ds.size else np.zeros(0, dtype=np.int64)
    rank = np.arange(ds.size) - np.repeat(first, np.diff(np.r_[first, ds.size]))
    keep = np.zeros(d.size, dtype=bool)
    keep[order[rank < e]] = True
    return keep


def _auto_edges(degrees: list[np.ndarray], budget: int) -> int | None:
    """Largest e >= 1 with sum(min(e, deg)) <= budget; None when every edge fits."""
    deg = np.concatenate(degrees) if degrees else np.zeros(0, dtype=np.int64)
    if deg.sum() <= budget:
        return None
    lo, hi = 1, int(deg.max())
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if np.minimum(deg, mid).sum() <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


@validated(SELECT_CONSTRAINTS)
def select(graph, *, top_nodes: int | None = VIEW_TOP_NODES, top_edges: int | str | None = "auto",
           min_quantile: float | None = None, min_weight: float | None = None, score=None,
           max_edges: int = VIEW_EDGE_LIMIT, force: bool = False):
    """The kept nodes and edges of :func:`to_networkx`, as arrays.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, numpy.ndarray, numpy.ndarray)
        Kept vertex ids, and the ``src, dst, weight`` of the kept edges.

    Raises
    ------
    InvalidArgumentError
        Bad thresholds, thresholds that keep no edge, or more than ``max_edges`` edges without
        ``force`` (the message says how to threshold).
    """
    values = _node_score(graph, score) if top_nodes is not None else None
    kept_local = {}
    for p in graph.partitions:
        if top_nodes is None or top_nodes >= p.size:
            kept_local[p.position] = np.arange(p.size)
        else:
            v = np.nan_to_num(values[p.offset:p.stop], nan=-np.inf)
            kept_local[p.position] = np.sort(np.lexsort((np.arange(p.size), -v))[:top_nodes])
    reducing = top_edges is not None or min_quantile is not None or min_weight is not None
    bound = sum(kept_local[b.dst.position].size * kept_local[b.src.position].size if b.nnz == b.shape[0] * b.shape[1]
                else b.nnz for b in graph.blocks)
    if not reducing and bound > max_edges and not force:
        raise InvalidArgumentError(f"the viewer export would hold up to {bound:,} edges, more than `max_edges`="
                                   f"{max_edges:,}; {_HOW}; or pass force=True (--force)")
    parts = []
    for b in graph.blocks:
        d, s, w = _candidates(b, kept_local[b.dst.position], kept_local[b.src.position])
        parts.append((b, d, s, w))
    allw = np.concatenate([w for *_, w in parts]) if parts else np.zeros(0, np.float32)
    cut = -np.inf
    if min_quantile is not None and allw.size:
        cut = max(cut, float(np.quantile(allw.astype(np.float64), min_quantile)))
    if min_weight is not None:
        cut = max(cut, min_weight)
    parts = [(b, d[w >= cut], s[w >= cut], w[w >= cut]) for b, d, s, w in parts]
    per_node = top_edges
    if top_edges == "auto":
        per_node = _auto_edges([np.bincount(d, minlength=b.shape[0]) for b, d, _, _ in parts], VIEW_EDGE_BUDGET)
    if per_node is not None:
        parts = [(b, d[m], s[m], w[m]) for b, d, s, w in parts for m in [_top_per_node(d, w, per_node)]]
    n_edges = sum(d.size for _, d, _, _ in parts)
    if n_edges == 0:
        largest = float(allw.max()) if allw.size else float("nan")
        raise InvalidArgumentError(f"the thresholds keep no edge (min_weight={min_weight!r}, min_quantile="
                                   f"{min_quantile!r}, top_nodes={top_nodes!r}; the largest weight among the kept "
                                   f"nodes is {largest:.4g}); lower min_weight below it or min_quantile below 1")
    if n_edges > max_edges and not force:
        raise InvalidArgumentError(f"the viewer export would hold {n_edges:,} edges, more than `max_edges`="
                                   f"{max_edges:,}; {_HOW}; or pass force=True (--force)")
    nodes = np.concatenate([kept_local[p.position] + p.offset for p in graph.partitions])
    src = np.concatenate([s + b.src.offset for b, _, s, _ in parts])
    dst = np.concatenate([d + b.dst.offset for b, d, _, _ in parts])
    w = np.concatenate([w for *_, w in parts])
    logger.info("viewer subgraph: %d nodes, %d edges (of %d, %d)", nodes.size, n_edges, graph.n_nodes, graph.n_edges)
    return nodes, src, dst, w


def to_networkx(graph, *, top_nodes: int | None = VIEW_TOP_NODES, top_edges: int | str | None = "auto",
                min_quantile: float | None = None, min_weight: float | None = None, score=None,
                max_edges: int = VIEW_EDGE_LIMIT, force: bool = False):
    """A thresholded subgraph of ``graph`` as a ``networkx.DiGraph`` (see the module docstring).

    Parameters
    ----------
    graph : MLPGraph
    top_nodes : int or None
        Nodes kept per partition (None: all).
    top_edges : int, 'auto' or None
        Heaviest in-edges kept per node and block; 'auto' fits :data:`VIEW_EDGE_BUDGET`;
        None keeps every edge that passes the weight thresholds.
    min_quantile : float in [0, 1), optional
        Keep the edges at or above this quantile of the weights between kept nodes.
    min_weight : float >= 0, optional
        Keep the edges of at least this weight.
    score : str, array or CentralityResult, optional
        Ranks the nodes for ``top_nodes``: a stored score column, a centrality name
        (computed with its defaults), or one value per node. Default: total strength.
    max_edges : int
        Refuse more edges than this unless ``force``.
    force : bool

    Returns
    -------
    networkx.DiGraph
        Node attributes ``layer, kind, index, partition, label``, ``activation`` (when the
        graph has one) and the stored scores; edge attribute ``weight``.

    Raises
    ------
    InvalidArgumentError
        Thresholds that keep nothing, or too many edges without ``force``.
    MissingDependencyError
        networkx is not installed (extra ``viewer``).

    Example
    -------
    >>> import llmrank_graph as lg
    >>> g = lg.graph.toy_graph()             # H0 -> I0 (2 neurons) -> H1
    >>> G = to_networkx(g, top_nodes=1, score="pagerank")  # a centrality, through register_score_source
    >>> sorted(G.nodes), list(G.edges(data="weight"))
    ([0, 1, 3], [(0, 1, 1.0), (1, 3, 1.0)])
    >>> G.nodes[1]["label"]
    'I0:0'
    """
    nx = _networkx()
    nodes, src, dst, w = select(graph, top_nodes=top_nodes, top_edges=top_edges, min_quantile=min_quantile,
                                min_weight=min_weight, score=score, max_edges=max_edges, force=force)
    G = nx.DiGraph(model=str(graph.meta.get("model", "")), mode=str(graph.meta.get("mode", "")))
    offsets = np.array([p.offset for p in graph.partitions])
    where = np.searchsorted(offsets, nodes, side="right") - 1
    act = graph.activation
    for v, pi in zip(nodes.tolist(), where.tolist()):
        p = graph.partitions[pi]
        attrs = {"layer": int(p.layer), "kind": p.kind, "index": int(v - p.offset), "partition": p.name,
                 "label": f"{p.name}:{v - p.offset}"}
        if np.isfinite(act[v]):
            attrs["activation"] = float(act[v])
        for name, col in graph.scores.items():
            x = col[v]
            if np.isfinite(x):
                attrs[name] = float(x)
        G.add_node(int(v), **attrs)
    G.add_weighted_edges_from(zip(src.tolist(), dst.tolist(), w.astype(np.float64).tolist()))
    return G


def write_viewer(graph, path: str | os.PathLike, format: str | None = None, *, overwrite: bool = False,
                 **thresholds) -> Path:
    """Write the thresholded subgraph of :func:`to_networkx` as GraphML or GEXF, atomically.

    Parameters
    ----------
    path : str or path-like
    format : {'graphml', 'gexf'}, optional
        Default: from the file's suffix.
    overwrite : bool
    **thresholds
        The keyword arguments of :func:`to_networkx`.

    Returns
    -------
    pathlib.Path

    Example
    -------
    >>> import tempfile
    >>> import networkx
    >>> import llmrank_graph as lg
    >>> g = lg.graph.toy_graph()             # H0 -> I0 (2 neurons) -> H1
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = write_viewer(g, f"{d}/g.gexf", top_nodes=1, score="strength")
    ...     sorted(networkx.read_gexf(path).nodes)
    ['0', '2', '3']
    """
    if not isinstance(path, (str, os.PathLike)):
        raise fail_type("path", "a str or a path", path)
    if format is None:
        suffix = Path(path).suffix.lower().lstrip(".")
        if suffix not in VIEW_FORMATS:
            raise fail("format", f"one of {', '.join(map(repr, VIEW_FORMATS))} (or a path ending in .graphml or "
                                 ".gexf)", format)
        format = suffix
    check_choice("format", format, VIEW_FORMATS)
    nx = _networkx()
    G = to_networkx(graph, **thresholds)
    with atomic_file(path, overwrite=overwrite, arg="out") as tmp:
        if format == "graphml":
            nx.write_graphml(G, tmp)
        else:
            nx.write_gexf(G, tmp)
    return Path(path)
