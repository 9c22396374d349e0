"""The k heaviest input-to-output paths of neurons, by one sweep in the (max, x) semiring.

docs/design.md section 7 gives the recurrence; the sweep reads one partition's out-blocks at a
time, like the PageRank sweep, and keeps for every node the k best log-scores of the paths
ending there, with a pointer to the predecessor and its rank, from which the paths are traced
back at the end.
"""

from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from collections.abc import Iterable

import numpy as np
import pandas as pd
import torch

from ..base.checks import fail, fail_type
from ..base.params import Boolean, Interval, OneOf, validated
from ..centrality.sweep import resolve_device
from ..errors import InvalidArgumentError
from ..graph.mlpgraph import MLPGraph
from .common import GRAPH, progress_bar

__all__ = ["PATH_WEIGHTS", "heaviest_paths", "find_paths", "node_ids"]

#: Path scores of :func:`heaviest_paths`: the product of normalised weights, or its logarithm.
PATH_WEIGHTS: tuple[str, ...] = ("product", "log")

#: Spread of log-scores within a partition up to which candidates are ranked by products
#: ``w * exp(base - max)`` (no underflow: e^-300 times the smallest float32 weight is a normal
#: float64) instead of by ``log w + base`` over the whole block.
_LINEAR_SPREAD = 300.0


def _node_id(graph: MLPGraph, item, arg: str, what: str) -> int:
    if isinstance(item, (int, np.integer)) and not isinstance(item, (bool, np.bool_)):
        v = int(item)
        if not 0 <= v < graph.n_nodes:
            raise fail(arg, f"vertex ids in 0..{graph.n_nodes - 1}", item)
        return v
    if not isinstance(item, tuple) or len(item) not in (2, 3):
        raise fail_type(arg, what, item)
    if len(item) == 2:
        parts = [p for p in graph.partitions if p.name == item[0]]
    else:
        parts = [p for p in graph.partitions if p.layer == item[0] and p.kind == item[1]]
    if len(parts) != 1:
        names = ", ".join(p.name for p in graph.partitions)
        raise fail(arg, f"a node of exactly one partition (partitions: {names})", item)
    p, idx = parts[0], item[-1]
    if isinstance(idx, bool) or not isinstance(idx, (int, np.integer)) or not 0 <= idx < p.size:
        raise fail(arg, f"an index in 0..{p.size - 1} of partition {p.name}", item)
    return p.offset + int(idx)


def node_ids(graph: MLPGraph, value, arg: str) -> np.ndarray:
    """Vertex ids from an id, a ``(layer, kind, index)`` or ``(partition name, index)`` tuple, or a list of them.

    Errors name the argument ``arg``; the ids come back sorted, without repeats.

    >>> import llmrank_graph as lg
    >>> g = lg.graph.toy_graph()             # H0 -> I0 (2 neurons) -> H1
    >>> node_ids(g, [(0, "intermediate", 1), ("H1", 0), 0], "source").tolist()
    [0, 2, 3]
    """
    what = "a vertex id, a (layer, kind, index) or (partition name, index) tuple, or a list of them"
    if isinstance(value, tuple) or isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise fail_type(arg, what, value)
    out = [_node_id(graph, item, arg, what) for item in value]
    if not out:
        raise fail(arg, "at least one node", value)
    return np.unique(np.asarray(out, dtype=np.int64))


def _relax(block, Tu: torch.Tensor, logs: torch.Tensor, k: int, device) -> tuple[torch.Tensor, ...]:
    """Top-k candidates ``(score, predecessor, its rank)`` for each destination node of one block.

    ``Tu`` (src, k) holds the k best log-scores of paths ending at each source node, sorted;
    the candidate through edge ``u -> v`` at rank r is ``Tu[u, r] + log w_uv - log s_u``.
    For each v the k best of all (u, r) come from the k best u by their rank-0 candidate,
    since each u's candidates decrease with r: a k x k merge per node, never an enumeration.
    The k best u are found on ``w_uv * exp(base_u - max)`` (one product per edge; the same
    order as the logarithms) when the base scores are close enough not to underflow, and on
    the logarithms otherwise; the scores themselves are always computed in log space.
    """
    base = Tu[:, 0] - logs  # (src,): best log-score at u minus log s_u
    finite = torch.isfinite(base)
    top = float(base[finite].max())
    linear = float(top - base[finite].min()) <= _LINEAR_SPREAD
    scale = torch.exp(base - top) if linear else None  # 0 where no path reaches u
    vals, preds, ranks = [], [], []
    for _r0, _r1, chunk in block.chunks(torch.float64, device):
        kk = min(k, chunk.shape[1])
        if linear:
            prod, iu = torch.topk(chunk * scale, kk, dim=1)  # (rows, kk)
            lw = torch.log(chunk.gather(1, iu))
            lw = torch.where(prod > 0, lw, torch.full_like(lw, -math.inf))  # no edge, or no path to u
        else:
            _, iu = torch.topk(torch.log(chunk) + base, kk, dim=1)
            lw = torch.log(chunk.gather(1, iu))
        if k == 1:
            vals.append(lw + base[iu])
            preds.append(iu)
            ranks.append(torch.zeros_like(iu))
            continue
        cand = (lw - logs[iu]).unsqueeze(2) + Tu[iu]  # (rows, kk, k)
        v, flat = torch.topk(cand.reshape(cand.shape[0], kk * k), k, dim=1)
        vals.append(v)
        preds.append(iu.gather(1, torch.div(flat, k, rounding_mode="floor")))
        ranks.append(flat % k)
    return torch.cat(vals), torch.cat(preds), torch.cat(ranks)


def _endpoints(graph: MLPGraph, source, target) -> tuple[np.ndarray, np.ndarray]:
    """Start and end vertices: those given, else the partitions no edge enters, and those no edge leaves."""
    entered = {b.dst.position for b in graph.blocks}
    left = {b.src.position for b in graph.blocks}

    def every_node_but(exclude):
        ids = [np.arange(p.offset, p.stop) for p in graph.partitions if p.position not in exclude]
        return np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)

    starts = every_node_but(entered) if source is None else node_ids(graph, source, "source")
    ends = every_node_but(left) if target is None else node_ids(graph, target, "target")
    return starts, ends


def _log_strength(loaded: list, size: int, normalized: bool, dev) -> torch.Tensor:
    """``log s_u`` (0 where ``s_u = 0``, and everywhere without ``normalized``) of one partition's nodes."""
    if not normalized:
        return torch.zeros(size, dtype=torch.float64, device=dev)
    s = sum(b.out_strength(torch.float64, dev) for b in loaded)
    return torch.where(s > 0, torch.log(torch.where(s > 0, s, torch.ones_like(s))), torch.zeros_like(s))


def _sweep(graph: MLPGraph, starts: np.ndarray, k: int, normalized: bool, dev, progress: bool):
    """``(T, P, R)`` (n, k): the k best log-scores of paths ending at each node, predecessors and their ranks."""
    n = graph.n_nodes
    T = torch.full((n, k), -math.inf, dtype=torch.float64, device=dev)  # k best log-scores per node
    P = torch.full((n, k), -1, dtype=torch.int64, device=dev)  # predecessor vertex (-1: the path starts here)
    R = torch.zeros((n, k), dtype=torch.int64, device=dev)  # rank of the predecessor's entry
    T[torch.as_tensor(starts, device=dev), 0] = 0.0
    out_blocks = defaultdict(list)
    for b in graph.blocks:
        out_blocks[b.src.position].append(b)
    for part in progress_bar(graph.partitions, progress, "heaviest paths", unit="partition"):
        blocks = out_blocks.get(part.position)
        Tu = T[part.offset:part.stop]
        if not blocks or not torch.isfinite(Tu[:, 0]).any():
            continue  # no path reaches this partition: its blocks need not be read
        with contextlib.ExitStack() as stack:
            loaded = [stack.enter_context(b.loaded(dev)) for b in blocks]  # one partition's out-blocks
            logs = _log_strength(loaded, part.size, normalized, dev)
            for b in loaded:
                v, u, r = _relax(b, Tu, logs, k, dev)
                d = slice(b.dst.offset, b.dst.stop)
                allv = torch.cat([T[d], v], dim=1)
                allp = torch.cat([P[d], u + b.src.offset], dim=1)
                allr = torch.cat([R[d], r], dim=1)
                top, idx = torch.topk(allv, k, dim=1)
                T[d], P[d], R[d] = top, allp.gather(1, idx), allr.gather(1, idx)
    return T.cpu().numpy(), P.cpu().numpy(), R.cpu().numpy()


def _trace(graph: MLPGraph, T: np.ndarray, P: np.ndarray, R: np.ndarray, ends: np.ndarray, k: int,
           weight: str) -> pd.DataFrame:
    """The k best paths ending at ``ends``, traced back through the predecessor pointers."""
    flat = T[ends].reshape(-1)  # (E * k,)
    order = np.argsort(-flat, kind="stable")[:k]
    offsets = np.array([p.offset for p in graph.partitions])
    rows = []
    for rank, f in enumerate(order, 1):
        if not np.isfinite(flat[f]):
            break
        v, r = int(ends[f // k]), int(f % k)
        score = float(flat[f])
        verts = [v]
        while P[v, r] >= 0:
            v, r = int(P[v, r]), int(R[v, r])
            verts.append(v)
        verts.reverse()
        path = []
        for x in verts:
            p = graph.partitions[int(np.searchsorted(offsets, x, side="right") - 1)]
            path.append((p.layer, p.kind, x - p.offset))
        rows.append({"rank": rank, "score": score if weight == "log" else math.exp(score), "length": len(verts) - 1,
                     "path": path, "vertices": verts})
    return pd.DataFrame(rows, columns=["rank", "score", "length", "path", "vertices"])


@validated({"graph": GRAPH, "k": Interval(int, 1), "weight": OneOf(*PATH_WEIGHTS), "normalized": Boolean(),
            "progress": Boolean()})
def heaviest_paths(graph: MLPGraph, k: int = 1, source=None, target=None, weight: str = "product", *,
                   normalized: bool = True, device=None, progress: bool = False) -> pd.DataFrame:
    """The k heaviest paths through the DAG, by one sweep in the (max, x) semiring (docs/design.md section 7).

    The score of a path is the product of its normalised edge weights ``w(u, v) / s(u)``
    (``s`` the out-strength: the probability that a random walk from the path's first node
    follows it), or of the raw weights with ``normalized=False``. The sweep visits the
    partitions in topological order and keeps, for every node, the k best scores of paths
    ending there with a pointer to the predecessor and its rank:
    ``best_r(v) = r-th max over u -> v, r' of best_r'(u) * w(u, v) / s(u)``. That is one pass
    over the blocks, one block in memory (like the PageRank sweep), and k x k work per edge
    neighbourhood, not an enumeration of paths. Scores are kept as logarithms, so products
    of hundreds of small factors do not underflow. Edges of weight 0 carry no path.

    Parameters
    ----------
    graph : MLPGraph
        A DAG whose edges go from earlier to later partitions.
    k : int >= 1
        Number of paths.
    source, target : optional
        Where paths start and end: a vertex id, a ``(layer, kind, index)`` or
        ``(partition name, index)`` tuple, or a list of them. Default: every node of the
        partitions no edge enters (``H_0``; each ``H_l_in`` in isolated mode), and every node
        of the partitions no edge leaves.
    weight : {'product', 'log'}
        Report the product of the weights, or its natural logarithm (the same order).
    normalized : bool
        Divide each weight by its source's out-strength.
    device : torch device, optional
        Where the sweep runs (default: CUDA when torch sees a GPU).
    progress : bool
        Show a progress bar over the partitions.

    Returns
    -------
    pandas.DataFrame
        ``rank, score, length, path, vertices``: ``path`` is the list of
        ``(layer, kind, index)`` of its nodes, ``vertices`` their ids, ``length`` the number of
        edges. Fewer than k rows when fewer paths exist.

    Raises
    ------
    InvalidArgumentError
        ``k < 1``, an unknown ``weight``, nodes that are not in the graph, or a graph that is
        not a partition-ordered DAG.

    Example
    -------
    >>> import pandas as pd
    >>> import llmrank_graph as lg
    >>> nodes = pd.DataFrame({"vertex": range(4), "layer": [0, 0, 0, 1],
    ...                       "kind": ["hidden", "intermediate", "intermediate", "hidden"]})
    >>> g = lg.MLPGraph.from_edgelist(nodes, pd.DataFrame({"src": [0, 0, 1, 2], "dst": [1, 2, 3, 3],
    ...                                                    "weight": [1.0, 3.0, 1.0, 1.0]}))
    >>> p = heaviest_paths(g, k=2, device="cpu")
    >>> p.score.round(12).tolist(), p.length.tolist()
    ([0.75, 0.25], [2, 2])
    >>> p.path[0]
    [(0, 'hidden', 0), (0, 'intermediate', 1), (1, 'hidden', 0)]
    """
    return find_paths(graph, k, source, target, weight, normalized=normalized, device=device, progress=progress)


def find_paths(graph: MLPGraph, k: int, source=None, target=None, weight: str = "product", *, normalized: bool = True,
               device=None, progress: bool = False) -> pd.DataFrame:
    """:func:`heaviest_paths` on checked arguments."""
    if not graph.is_dag_by_partition():
        raise InvalidArgumentError("`graph` must be a DAG whose edges go from earlier to later partitions for "
                                   "heaviest_paths (a path sweep in topological order)")
    dev = resolve_device(device)
    starts, ends = _endpoints(graph, source, target)
    T, P, R = _sweep(graph, starts, k, normalized, dev, progress)
    return _trace(graph, T, P, R, ends, k, weight)
