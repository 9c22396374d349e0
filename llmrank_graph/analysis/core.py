"""Whole-network analysis of an :class:`~llmrank_graph.MLPGraph`, as pandas DataFrames.

The questions of people who study the graph rather than prune with it:

=====================  ==================================================================
:func:`summary`        partition sizes, edge counts, density, the export options
:func:`layer_stats`    per layer, quantiles of edge weights and of node in-/out-strength
:func:`top_neurons`    the top-k neurons of each layer for each score
:func:`correlations`   Spearman and Kendall between scores, per layer and overall
:func:`overlap`        Jaccard overlap of the neurons each score would prune
:func:`mass_by_layer`  how a score's mass (PageRank) is spread over the partitions
:func:`heaviest_paths` the k heaviest input-to-output chains of neurons (DESIGN.md 7)
=====================  ==================================================================

:func:`inspect_graph` runs them all (what ``llmrank-graph inspect`` prints) and returns an
:class:`InspectReport`, which renders as text or JSON and writes CSV, JSON and PNG plots.

Scale: everything here reads the graph through its blocks, one block (one weight matrix) at a
time (:mod:`llmrank_graph.graph.blocks`), and never builds the edge list, so it runs on a graph
streamed from safetensors shards (:func:`llmrank_graph.export_graph_from_safetensors`) or read
lazily from Parquet (:func:`llmrank_graph.read_graph`) with about one layer in memory.

Scores are given as a mapping ``name -> values`` where the values are an array with one
number per node, a :class:`~llmrank_graph.CentralityResult`, or
:class:`~llmrank_graph.NeuronScores` (intermediate neurons only); or as a list of names of
score columns stored with the graph (``llmrank-graph rank --add-to-graph``). Rank statistics
use the intermediate neurons only: the hidden nodes have no pruning baseline (DESIGN.md 7).
"""

from __future__ import annotations

import contextlib
import inspect as _inspect
import json
import logging
import math
import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..base.checks import check_bool, check_choice, check_positive_int, fail, fail_type
from ..base.files import atomic_directory
from ..centrality import CentralityResult, get_centrality
from ..centrality.algorithms import _CENTRALITIES
from ..centrality.sweep import resolve_device
from ..errors import InvalidArgumentError
from ..graph.mlpgraph import KINDS, MLPGraph, export_options
from ..pruning.masks import allocate, check_amount
from ..pruning.surgery import prune_model
from ..scoring.registry import PAGERANK_CENTRALITY, PAGERANK_WITHOUT_STATS, score_neurons
from ..graph.storage import _jsonable, column_name, stored_scores

logger = logging.getLogger(__name__)

__all__ = ["summary", "graph_info", "layer_stats", "top_neurons", "correlations", "overlap", "mass_by_layer",
           "heaviest_paths", "baseline_scores", "available_baselines", "centrality_scores", "inspect_graph",
           "InspectReport", "CENTRALITIES", "DEFAULT_CENTRALITIES", "BASELINES", "CORRELATIONS", "QUANTILES",
           "PATH_WEIGHTS", "TOP_K", "DEFAULT_AMOUNT"]

#: Centralities :func:`inspect_graph` can compute (the registry of :mod:`llmrank_graph.centrality`).
CENTRALITIES: tuple[str, ...] = tuple(_CENTRALITIES)
#: Computed by ``inspect`` unless told otherwise: the ones that run block by block at any scale.
DEFAULT_CENTRALITIES: tuple[str, ...] = ("pagerank", "katz", "strength")
#: Pruning baselines compared with the centralities (:mod:`llmrank_graph.scoring.registry`).
BASELINES: tuple[str, ...] = ("magnitude", "activation", "wanda-sp")
#: Rank correlations of :func:`correlations`.
CORRELATIONS: tuple[str, ...] = ("spearman", "kendall")
#: Quantiles of :func:`layer_stats`.
QUANTILES: tuple[float, ...] = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)
#: Path scores of :func:`heaviest_paths`: the product of normalised weights, or its logarithm.
PATH_WEIGHTS: tuple[str, ...] = ("product", "log")
#: Neurons per layer in :func:`top_neurons`.
TOP_K = 10


#: Fraction pruned in :func:`overlap`: the default of :func:`llmrank_graph.prune_model`.
DEFAULT_AMOUNT: float = float(_inspect.signature(prune_model).parameters["amount"].default)


def _progress(items, progress: bool, desc: str, unit: str = "block", total: int | None = None):
    if not progress:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit=unit, total=total)


def _check_graph(graph) -> MLPGraph:
    if not isinstance(graph, MLPGraph):
        raise fail_type("graph", "an MLPGraph", graph)
    return graph


# ---------------------------------------------------------------------------- summary
def graph_info(graph: MLPGraph) -> dict:
    """Facts about the whole graph: model, export options, sizes, densities, stored scores.

    ``density`` is networkx's ``m / (n (n - 1))``; ``block_density`` is the fraction of the
    edges possible between the partitions that blocks join (1.0 for a dense export).

    Example
    -------
    >>> graph_info(export_graph(model))["block_density"]      # doctest: +SKIP
    1.0
    """
    _check_graph(graph)
    n, m = graph.n_nodes, graph.n_edges
    possible = sum(b.src.size * b.dst.size for b in graph.blocks)
    opts = export_options(graph)
    info = {"model": graph.meta.get("model"), "model_type": graph.meta.get("model_type"),
            **(opts.as_dict() if opts is not None else {}),
            "n_nodes": n, "n_edges": m, "n_partitions": len(graph.partitions), "n_blocks": len(graph.blocks),
            "n_layers": len({p.layer for p in graph.intermediate_partitions()}),
            "density": m / (n * (n - 1)) if n > 1 else 0.0,
            "block_density": m / possible if possible else 0.0,
            "has_activation": graph.has_activation, "stored_scores": list(graph.scores),
            "source": str(graph.source) if graph.source is not None else graph.meta.get("source"),
            "streamed": not graph.resident}
    if "layers" in graph.meta:
        info["layers"] = list(graph.meta["layers"])
    return info


def summary(graph: MLPGraph) -> pd.DataFrame:
    """One row per partition: size and the edges entering and leaving it.

    Returns
    -------
    pandas.DataFrame
        Columns ``partition, name, layer, kind, size, in_edges, out_edges, in_blocks,
        out_blocks``; ``attrs["graph"]`` holds :func:`graph_info`.

    Example
    -------
    >>> s = summary(export_graph(model))                      # doctest: +SKIP
    >>> s.attrs["graph"]["n_edges"] == s.out_edges.sum()      # doctest: +SKIP
    True
    """
    _check_graph(graph)
    ins, outs = defaultdict(int), defaultdict(int)
    inb, outb = defaultdict(int), defaultdict(int)
    for b in graph.blocks:
        ins[b.dst.position] += b.nnz
        outs[b.src.position] += b.nnz
        inb[b.dst.position] += 1
        outb[b.src.position] += 1
    df = pd.DataFrame([{"partition": p.position, "name": p.name, "layer": p.layer, "kind": p.kind, "size": p.size,
                        "in_edges": ins[p.position], "out_edges": outs[p.position],
                        "in_blocks": inb[p.position], "out_blocks": outb[p.position]} for p in graph.partitions])
    df.attrs["graph"] = graph_info(graph)
    return df


# ---------------------------------------------------------------------------- layer statistics
def _qname(q: float) -> str:
    return f"q{q:g}"


def _check_quantiles(quantiles) -> tuple[float, ...]:
    if isinstance(quantiles, (str, bytes)) or not isinstance(quantiles, Iterable):
        raise fail_type("quantiles", "a sequence of floats in [0, 1]", quantiles)
    qs = tuple(quantiles)
    if not qs or any(isinstance(q, bool) or not isinstance(q, (int, float, np.floating)) or not 0 <= q <= 1
                     for q in qs):
        raise fail("quantiles", "a non-empty sequence of floats in [0, 1]", quantiles)
    return tuple(float(q) for q in qs)


def _quantiles(v: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """``np.quantile(v.astype(float64), qs)`` (linear method) without a float64 copy; ``v`` is reordered.

    The order statistics are selected in place (``np.partition``) in ``v``'s own dtype, which
    keeps their values exact, and interpolated in float64 as numpy does (``_lerp``).
    """
    n = v.size
    pos = np.asarray(qs, dtype=np.float64) * (n - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    v.partition(np.unique(np.r_[lo, hi]))
    a, b = v[lo].astype(np.float64), v[hi].astype(np.float64)
    t = pos - lo
    diff = b - a
    out = np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)
    return out.tolist()


def _stats_row(values: np.ndarray, total: float, qs: tuple[float, ...]) -> dict:
    """count, mean (from an exact float64 ``total``) and quantiles; reorders ``values``."""
    if values.size == 0:
        return {"count": 0, "mean": np.nan, **{_qname(q): np.nan for q in qs}}
    return {"count": int(values.size), "mean": float(total) / values.size,
            **dict(zip(map(_qname, qs), _quantiles(values, qs)))}


def _block_values(block) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The weights of every stored edge of a loaded block (float32, a fresh array) and its strengths.

    Returns ``(values, out_strength (src,), in_strength (dst,))``, strengths in float64. A dense
    block is read once (its chunks); its strengths are sums of those float32 values.
    """
    rows, cols = block.shape
    if block.nnz == rows * cols:  # dense: the chunks hold exactly the edges
        out = np.empty((rows, cols), dtype=np.float32)
        for r0, r1, c in block.chunks(torch.float32, "cpu"):
            out[r0:r1] = c.numpy()
        return out.reshape(-1), out.sum(axis=0, dtype=np.float64), out.sum(axis=1, dtype=np.float64)
    return (np.array(block.coo()[2], dtype=np.float32), block.out_strength(torch.float64).cpu().numpy(),
            block.in_strength(torch.float64).cpu().numpy())


def layer_stats(graph: MLPGraph, quantiles: Sequence[float] = QUANTILES, *, progress: bool = False) -> pd.DataFrame:
    """Quantiles of the edge weights of every block and of the node strengths of every partition.

    One pass over the blocks, one block in memory at a time. Quantiles are numpy's
    (``np.quantile``, linear interpolation) of the float32 weights taken as float64; they are
    selected in place, without a float64 copy of the block.

    Parameters
    ----------
    graph : MLPGraph
    quantiles : sequence of float in [0, 1]
    progress : bool
        Show a progress bar over the blocks.

    Returns
    -------
    pandas.DataFrame
        One row per block (``quantity='weight'``, ``of`` = ``'H0->I0'``, ``role`` = its weight)
        and per partition with in-edges (``quantity='in_strength'``) or out-edges
        (``'out_strength'``), with ``layer, kind, count, mean`` and one column per
        quantile (``q0``, ``q0.5``, ``q1`` ...).

    Example
    -------
    >>> st = layer_stats(export_graph(model))                                   # doctest: +SKIP
    >>> st[(st.quantity == "weight") & (st.role == "up")][["layer", "q0.5"]]     # doctest: +SKIP
    """
    _check_graph(graph)
    qs = _check_quantiles(quantiles)
    check_bool("progress", progress)
    n = graph.n_nodes
    s_out, s_in = np.zeros(n), np.zeros(n)
    has_out, has_in = set(), set()
    rows = []
    for b in _progress(graph.blocks, progress, "layer statistics"):
        with b.loaded() as blk:
            values, so, si = _block_values(blk)
        s_out[b.src.offset:b.src.stop] += so
        s_in[b.dst.offset:b.dst.stop] += si
        has_out.add(b.src.position)
        has_in.add(b.dst.position)
        rows.append({"quantity": "weight", "layer": b.layer, "of": f"{b.src.name}->{b.dst.name}", "role": b.role,
                     "kind": None, **_stats_row(values, float(so.sum()), qs)})
        del values
    for p in graph.partitions:
        for quantity, s, have in (("in_strength", s_in, has_in), ("out_strength", s_out, has_out)):
            if p.position in have:
                x = s[p.offset:p.stop].copy()
                rows.append({"quantity": quantity, "layer": p.layer, "of": p.name, "role": None, "kind": p.kind,
                             **_stats_row(x, float(x.sum()), qs)})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------- scores
def _intermediate_by_layer(graph: MLPGraph) -> dict[int, Any]:
    return {p.layer: p for p in graph.intermediate_partitions()}


def _to_node_array(graph: MLPGraph, name: str, values) -> np.ndarray:
    n = graph.n_nodes
    if isinstance(values, CentralityResult):
        values = values.scores
    intermediate = getattr(values, "intermediate", None)
    if isinstance(intermediate, Mapping):  # NeuronScores: intermediate neurons only
        out = np.full(n, np.nan)
        parts = _intermediate_by_layer(graph)
        for layer, v in intermediate.items():
            p = parts.get(int(layer))
            t = np.asarray(torch.as_tensor(v).detach().cpu().double())
            if p is None or t.shape != (p.size,):
                raise InvalidArgumentError(f"`scores[{name!r}]` has {t.size} scores for layer {layer}, which the graph "
                                           f"has {'no' if p is None else p.size} intermediate neurons for")
            out[p.offset:p.stop] = t
        return out
    if torch.is_tensor(values):
        values = values.detach().cpu().numpy()
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise fail_type(f"scores[{name!r}]", f"an array of {n} numbers, a CentralityResult or NeuronScores",
                        values) from None
    if arr.shape != (n,):
        raise InvalidArgumentError(f"`scores[{name!r}]` must have one value per node: length {n}; got shape "
                                   f"{arr.shape}")
    return arr


def _score_table(graph: MLPGraph, scores) -> dict[str, np.ndarray]:
    """Scores as ``name -> float64 array (n_nodes,)``, from a mapping or names of stored columns."""
    if isinstance(scores, (str, bytes)):
        raise fail_type("scores", "a mapping of name -> scores, or a list of stored score names", scores)
    if isinstance(scores, Mapping):
        table = {str(k): _to_node_array(graph, str(k), v) for k, v in scores.items()}
    elif isinstance(scores, Iterable):
        table = {k: np.asarray(v, dtype=np.float64) for k, v in stored_scores(graph, list(scores)).items()}
    else:
        raise fail_type("scores", "a mapping of name -> scores, or a list of stored score names", scores)
    if not table:
        raise fail("scores", "at least one score", scores)
    return table


def _layer_values(graph: MLPGraph, table: dict[str, np.ndarray]) -> dict[int, dict[str, np.ndarray]]:
    """layer -> name -> scores of the layer's intermediate neurons."""
    return {layer: {k: v[p.offset:p.stop] for k, v in table.items()}
            for layer, p in sorted(_intermediate_by_layer(graph).items())}


def _normalise(v: np.ndarray) -> np.ndarray:
    """A layer's scores divided by their mean absolute value, as global allocation does (masks.allocate)."""
    scale = np.nanmean(np.abs(v)) if np.isfinite(v).any() else 0.0
    return v / scale if scale > 0 else np.zeros_like(v)


def top_neurons(graph: MLPGraph, scores, k: int = TOP_K, kind: str = "intermediate") -> pd.DataFrame:
    """The ``k`` highest-scoring neurons of every partition of a kind, for each score.

    Parameters
    ----------
    graph : MLPGraph
    scores : mapping of name -> scores, or list of stored score names
    k : int >= 1
    kind : {'intermediate', 'hidden'}

    Returns
    -------
    pandas.DataFrame
        ``score, layer, partition, rank, index, vertex, value`` (rank 1 is the highest;
        ties by lower index). Neurons whose score is NaN are left out.

    Example
    -------
    >>> top_neurons(g, {"pagerank": pagerank(g)}, k=3)          # doctest: +SKIP
    """
    _check_graph(graph)
    table = _score_table(graph, scores)
    k = check_positive_int("k", k)
    check_choice("kind", kind, KINDS)
    rows = []
    for name, v in table.items():
        for p in graph.partitions:
            if p.kind != kind:
                continue
            x = v[p.offset:p.stop]
            order = np.lexsort((np.arange(p.size), -np.nan_to_num(x, nan=-np.inf)))
            order = [i for i in order if np.isfinite(x[i])][:k]
            for r, i in enumerate(order, 1):
                rows.append({"score": name, "layer": p.layer, "partition": p.name, "rank": r, "index": int(i),
                             "vertex": p.offset + int(i), "value": float(x[i])})
    return pd.DataFrame(rows, columns=["score", "layer", "partition", "rank", "index", "vertex", "value"])


def _rank_corr(a: np.ndarray, b: np.ndarray, methods: tuple[str, ...]) -> dict:
    from scipy import stats

    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    out = {"n": int(a.size)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: the correlation is undefined, reported as NaN
        for m in methods:
            if a.size < 2:
                out[m] = np.nan
            elif m == "spearman":
                out[m] = float(stats.spearmanr(a, b).statistic)
            else:
                out[m] = float(stats.kendalltau(a, b).statistic)
    return out


def _check_methods(methods) -> tuple[str, ...]:
    if isinstance(methods, str):
        methods = (methods,)
    if not isinstance(methods, Iterable):
        raise fail_type("methods", f"a sequence of {', '.join(map(repr, CORRELATIONS))}", methods)
    methods = tuple(methods)
    if not methods:
        raise fail("methods", f"a non-empty sequence of {', '.join(map(repr, CORRELATIONS))}", methods)
    for m in methods:
        check_choice("methods", m, CORRELATIONS)
    return methods


def correlations(graph: MLPGraph, scores, methods: Sequence[str] = CORRELATIONS) -> pd.DataFrame:
    """Rank correlations between every pair of scores, per layer and overall.

    Over the intermediate neurons only. Per layer: ``scipy.stats.spearmanr`` and
    ``kendalltau`` (tau-b) of the two scores of the layer's neurons. Overall: the same over all
    layers' neurons, after dividing each layer's scores by their mean absolute value (the
    per-layer normalisation of global allocation, :func:`llmrank_graph.allocate`), so that
    layers of different scale compare. Neurons where either score is NaN are left out.

    Returns
    -------
    pandas.DataFrame
        ``scope ('layer' | 'all'), layer (Int64, NA for 'all'), a, b, n`` and one column per
        method.

    Example
    -------
    >>> c = correlations(g, {"pagerank": pr, "magnitude": mag})               # doctest: +SKIP
    >>> c[c.scope == "all"].spearman                                          # doctest: +SKIP
    """
    _check_graph(graph)
    table = _score_table(graph, scores)
    methods = _check_methods(methods)
    names = list(table)
    per_layer = _layer_values(graph, table)
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            for layer, vals in per_layer.items():
                rows.append({"scope": "layer", "layer": layer, "a": a, "b": b, **_rank_corr(vals[a], vals[b], methods)})
            xa = np.concatenate([_normalise(v[a]) for v in per_layer.values()]) if per_layer else np.zeros(0)
            xb = np.concatenate([_normalise(v[b]) for v in per_layer.values()]) if per_layer else np.zeros(0)
            rows.append({"scope": "all", "layer": None, "a": a, "b": b, **_rank_corr(xa, xb, methods)})
    df = pd.DataFrame(rows, columns=["scope", "layer", "a", "b", "n", *methods])
    df["layer"] = df["layer"].astype("Int64")
    return df


def _pruned_sets(graph: MLPGraph, table: dict[str, np.ndarray], amount: float) -> dict[str, dict[int, set]]:
    out = {}
    for name, v in table.items():
        per = {}
        for layer, p in sorted(_intermediate_by_layer(graph).items()):
            x = v[p.offset:p.stop]
            if not np.isfinite(x).all():
                raise InvalidArgumentError(f"`scores[{name!r}]` has NaN or inf for intermediate neurons of layer "
                                           f"{layer}; the pruned set is undefined")
            per[layer] = torch.tensor(x)  # a copy: stored columns may be read-only arrays
        mask = allocate(per, amount, "local")
        out[name] = {layer: set(mask.pruned_indices(layer).tolist()) for layer in per}
    return out


def overlap(graph: MLPGraph, scores, amount: float = DEFAULT_AMOUNT) -> pd.DataFrame:
    """Jaccard overlap of the neurons each score would prune at ``amount``, per layer and overall.

    The pruned set of a score is what :func:`llmrank_graph.allocate` chooses with local
    allocation: the ``round(amount * m_l)`` lowest-scored intermediate neurons of each layer
    (ties: lower index first). Overall, the sets are unions of ``(layer, index)`` pairs.

    Returns
    -------
    pandas.DataFrame
        ``scope, layer, a, b, n_pruned, jaccard`` (``n_pruned``: neurons each score prunes).

    Example
    -------
    >>> overlap(g, {"pagerank": pr, "wanda-sp": w}, amount=0.3)             # doctest: +SKIP
    """
    _check_graph(graph)
    table = _score_table(graph, scores)
    amount = check_amount(amount)
    sets = _pruned_sets(graph, table, amount)
    names = list(table)
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ua, ub = set(), set()
            for layer in sets[a]:
                sa, sb = sets[a][layer], sets[b][layer]
                rows.append({"scope": "layer", "layer": layer, "a": a, "b": b, "n_pruned": len(sa),
                             "jaccard": _jaccard(sa, sb)})
                ua |= {(layer, j) for j in sa}
                ub |= {(layer, j) for j in sb}
            rows.append({"scope": "all", "layer": None, "a": a, "b": b, "n_pruned": len(ua),
                         "jaccard": _jaccard(ua, ub)})
    df = pd.DataFrame(rows, columns=["scope", "layer", "a", "b", "n_pruned", "jaccard"])
    df["layer"] = df["layer"].astype("Int64")
    return df


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if (a or b) else 1.0


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
    >>> m = mass_by_layer(g, {"pagerank": pagerank(g)})                        # doctest: +SKIP
    >>> m.groupby("kind").share.sum()                                           # doctest: +SKIP
    """
    _check_graph(graph)
    table = _score_table(graph, scores)
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


# ---------------------------------------------------------------------------- heaviest paths
def _node_ids(graph: MLPGraph, value, arg: str) -> np.ndarray:
    """Vertex ids from an id, a ``(layer, kind, index)`` or ``(partition name, index)`` tuple, or a list of them."""
    what = ("a vertex id, a (layer, kind, index) or (partition name, index) tuple, or a list of them")
    if isinstance(value, tuple) or isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise fail_type(arg, what, value)
    out = []
    for item in value:
        if isinstance(item, (int, np.integer)) and not isinstance(item, (bool, np.bool_)):
            v = int(item)
            if not 0 <= v < graph.n_nodes:
                raise fail(arg, f"vertex ids in 0..{graph.n_nodes - 1}", item)
            out.append(v)
            continue
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
        out.append(p.offset + int(idx))
    if not out:
        raise fail(arg, "at least one node", value)
    return np.unique(np.asarray(out, dtype=np.int64))


#: Spread of log-scores within a partition up to which candidates are ranked by products
#: ``w * exp(base - max)`` (no underflow: e^-300 times the smallest float32 weight is a normal
#: float64) instead of by ``log w + base`` over the whole block.
_LINEAR_SPREAD = 300.0


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


def heaviest_paths(graph: MLPGraph, k: int = 1, source=None, target=None, weight: str = "product", *,
                   normalized: bool = True, device=None, progress: bool = False) -> pd.DataFrame:
    """The k heaviest paths through the DAG, by one sweep in the (max, x) semiring (DESIGN.md 7).

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
    >>> heaviest_paths(export_graph(model), k=3).path[0][:2]       # doctest: +SKIP
    [(0, 'hidden', 17), (0, 'intermediate', 402)]
    """
    _check_graph(graph)
    k = check_positive_int("k", k)
    check_choice("weight", weight, PATH_WEIGHTS)
    normalized = check_bool("normalized", normalized)
    check_bool("progress", progress)
    if not graph.is_dag_by_partition():
        raise InvalidArgumentError("`graph` must be a DAG whose edges go from earlier to later partitions for "
                                   "heaviest_paths (a path sweep in topological order)")
    dev = resolve_device(device)
    n = graph.n_nodes
    entered = {b.dst.position for b in graph.blocks}
    left = {b.src.position for b in graph.blocks}

    def default(exclude):
        ids = [np.arange(p.offset, p.stop) for p in graph.partitions if p.position not in exclude]
        return np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)

    starts = default(entered) if source is None else _node_ids(graph, source, "source")
    ends = default(left) if target is None else _node_ids(graph, target, "target")
    T = torch.full((n, k), -math.inf, dtype=torch.float64, device=dev)  # k best log-scores per node
    P = torch.full((n, k), -1, dtype=torch.int64, device=dev)  # predecessor vertex (-1: the path starts here)
    R = torch.zeros((n, k), dtype=torch.int64, device=dev)  # rank of the predecessor's entry
    T[torch.as_tensor(starts, device=dev), 0] = 0.0
    out_blocks = defaultdict(list)
    for b in graph.blocks:
        out_blocks[b.src.position].append(b)
    for part in _progress(graph.partitions, progress, "heaviest paths", unit="partition"):
        blocks = out_blocks.get(part.position)
        Tu = T[part.offset:part.stop]
        if not blocks or not torch.isfinite(Tu[:, 0]).any():
            continue  # no path reaches this partition: its blocks need not be read
        with contextlib.ExitStack() as stack:
            loaded = [stack.enter_context(b.loaded(dev)) for b in blocks]  # one partition's out-blocks
            if normalized:
                s = sum(b.out_strength(torch.float64, dev) for b in loaded)
                logs = torch.where(s > 0, torch.log(torch.where(s > 0, s, torch.ones_like(s))), torch.zeros_like(s))
            else:
                logs = torch.zeros(part.size, dtype=torch.float64, device=dev)
            for b in loaded:
                v, u, r = _relax(b, Tu, logs, k, dev)
                d = slice(b.dst.offset, b.dst.stop)
                allv = torch.cat([T[d], v], dim=1)
                allp = torch.cat([P[d], u + b.src.offset], dim=1)
                allr = torch.cat([R[d], r], dim=1)
                top, idx = torch.topk(allv, k, dim=1)
                T[d], P[d], R[d] = top, allp.gather(1, idx), allr.gather(1, idx)
    T, P, R = T.cpu().numpy(), P.cpu().numpy(), R.cpu().numpy()
    cand = T[ends]  # (E, k)
    flat = cand.reshape(-1)
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


# ---------------------------------------------------------------------------- baselines and centralities
def available_baselines(graph: MLPGraph) -> dict[str, str | None]:
    """Which baselines :func:`baseline_scores` can compute from this graph's blocks: name -> None or why not.

    ``activation`` needs node activations (a graph exported with calibration statistics);
    ``magnitude`` (L2 norm of the up row) needs plain ``|W|`` up edges (``weighting='abs'``,
    ``gate='up'``, no ``keep``); ``wanda-sp`` (``sum_i |W_down[i, j]| * ||x_j||``) needs the
    full down edges with ``weighting='abs'`` and activations, or ``weighting='abs_x_input'``.
    With the model at hand, :func:`inspect_graph` computes them with
    :func:`llmrank_graph.score_neurons` instead.
    """
    opts = export_options(graph)
    out: dict[str, str | None] = {}
    act = None if graph.has_activation else "the graph has no node activations (export it with calibration stats)"
    out["activation"] = act
    if opts is None:
        why = "the graph records no export options (it was not exported from a model)"
        out["magnitude"] = out["wanda-sp"] = why
        return out
    if opts.keep is not None:
        why = f"the graph is sparsified (keep={opts.keep!r}): its blocks no longer hold every weight"
        out["magnitude"] = out["wanda-sp"] = why
        return out
    roles = {b.role for b in graph.blocks}
    out["magnitude"] = (None if opts.weighting == "abs" and "up" in roles else
                        f"the up edges are not plain |W_up| (weighting={opts.weighting!r}, gate={opts.gate!r})")
    if opts.weighting == "abs_x_input":
        out["wanda-sp"] = None
    elif opts.weighting == "abs":
        out["wanda-sp"] = act
    else:
        out["wanda-sp"] = f"the down edges are not |W_down| times a column scale (weighting={opts.weighting!r})"
    return out


def baseline_scores(graph: MLPGraph, names: Iterable[str] = BASELINES, *, progress: bool = False
                    ) -> dict[str, np.ndarray]:
    """Pruning baselines computed from the graph's blocks, as arrays (n_nodes,) (NaN on hidden nodes).

    The same numbers as :func:`llmrank_graph.score_neurons` with ``magnitude`` (which='up',
    ord=2), ``activation`` and ``wanda-sp``, for graphs whose export options keep them (see
    :func:`available_baselines`).

    Raises
    ------
    InvalidArgumentError
        An unknown name, or a baseline this graph cannot give (the message says why).
    """
    _check_graph(graph)
    names = list(names)
    for name in names:
        check_choice("baselines", name, BASELINES)
    why = available_baselines(graph)
    for name in names:
        if why[name] is not None:
            raise InvalidArgumentError(f"baseline {name!r} cannot be computed from this graph: {why[name]}; inspect "
                                       "the model (--model) to compute it from the weights and calibration stats")
    n = graph.n_nodes
    out = {name: np.full(n, np.nan) for name in names}
    if "activation" in out:
        for p in graph.intermediate_partitions():
            out["activation"][p.offset:p.stop] = graph.activation[p.offset:p.stop]
    need = {"up"} if "magnitude" in out else set()
    need |= {"down"} if "wanda-sp" in out else set()
    opts = export_options(graph)
    for b in _progress([b for b in graph.blocks if b.role in need], progress, "baselines"):
        with b.loaded() as blk:
            if b.role == "up" and b.dst.kind == "intermediate":
                sq = np.zeros(b.dst.size)
                for r0, r1, c in blk.chunks(torch.float64, "cpu"):
                    sq[r0:r1] = (c * c).sum(1).numpy()
                out["magnitude"][b.dst.offset:b.dst.stop] = np.sqrt(sq)
            elif b.role == "down" and b.src.kind == "intermediate":
                s = blk.out_strength(torch.float64).cpu().numpy()
                if opts.weighting == "abs":
                    s = s * graph.activation[b.src.offset:b.src.stop]
                out["wanda-sp"][b.src.offset:b.src.stop] = s
    return out


def _defaults(fn) -> dict:
    return {k: p.default for k, p in _inspect.signature(fn).parameters.items() if p.default is not p.empty}


def _centrality_plan(graph: MLPGraph, name: str) -> tuple[str, dict]:
    """(stored column name, keyword arguments) of centrality ``name`` with the library's defaults.

    PageRank uses the pagerank scorer's defaults (:data:`llmrank_graph.scoring.registry.PAGERANK_CENTRALITY`),
    with a uniform teleport when the graph has no activations; the others their function's.
    """
    check_choice("centralities", name, CENTRALITIES)
    fn = get_centrality(name)
    d = _defaults(fn)
    if name == "pagerank":
        teleport = PAGERANK_CENTRALITY["personalization"]
        if teleport != "uniform" and not graph.has_activation:
            teleport = PAGERANK_WITHOUT_STATS["personalization"]
        kw = {"direction": PAGERANK_CENTRALITY["direction"], "alpha": PAGERANK_CENTRALITY["alpha"],
              "personalization": teleport}
        return column_name("pagerank", kw), kw
    if name == "katz":
        return column_name("katz", {"direction": d["direction"], "alpha": d["alpha"]}), {}
    if name == "hits":
        return column_name(d["which"], {}), {}
    if name == "eigenvector":
        return column_name("eigenvector", {"directed": d["directed"]}), {}
    return column_name(f"{d['direction']}_{name}", {}), {}


def centrality_scores(graph: MLPGraph, names: Iterable[str] = DEFAULT_CENTRALITIES, *, backend: str = "auto",
                      use_stored: bool = True, progress: bool = False) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Centralities with the library's defaults, named as stored columns; stored columns are reused.

    Parameters
    ----------
    names : iterable of str
        Centralities of :data:`CENTRALITIES`.
    backend : str
        Backend for the centralities computed here.
    use_stored : bool
        Take a centrality from the graph's stored columns when one of the same name
        (:func:`llmrank_graph.graph.storage.score_column_name`) is there, instead of computing it.

    Returns
    -------
    (dict, dict)
        ``column name -> scores (n_nodes,)`` and ``column name -> 'stored' | 'computed (backend)'``.

    Raises
    ------
    InvalidArgumentError
        An unknown centrality (the message lists the known ones).
    """
    _check_graph(graph)
    if isinstance(names, str) or not isinstance(names, Iterable):
        raise fail_type("centralities", f"a sequence of {', '.join(map(repr, CENTRALITIES))}", names)
    names = list(names)
    plans = [(name, *_centrality_plan(graph, name)) for name in names]
    check_bool("use_stored", use_stored)
    scores, sources = {}, {}
    for name, col, kw in _progress(plans, progress, "centralities", unit="centrality"):
        if use_stored and col in graph.scores:
            scores[col] = np.asarray(graph.scores[col], dtype=np.float64)
            sources[col] = "stored"
            continue
        res = get_centrality(name)(graph, backend=backend, **kw)
        scores[col] = res.scores
        sources[col] = f"computed ({res.backend})"
    return scores, sources


# ---------------------------------------------------------------------------- inspect
@dataclass
class InspectReport:
    """Everything ``llmrank-graph inspect`` shows, as DataFrames (see :func:`inspect_graph`).

    Render it with :meth:`to_text` or :meth:`to_dict` (JSON), or :meth:`write` it to a
    directory as CSV, JSON and PNG plots.
    """

    info: dict
    partitions: pd.DataFrame
    layer_stats: pd.DataFrame
    top_neurons: pd.DataFrame
    correlations: pd.DataFrame
    overlap: pd.DataFrame
    mass: pd.DataFrame
    layer_means: pd.DataFrame
    paths: pd.DataFrame | None
    sources: dict[str, str]
    amount: float
    notes: list[str] = field(default_factory=list)

    TABLES = ("partitions", "layer_stats", "top_neurons", "correlations", "overlap", "mass", "layer_means", "paths")

    def tables(self) -> dict[str, pd.DataFrame]:
        """The tables by name (``paths`` only when asked for)."""
        return {k: getattr(self, k) for k in self.TABLES if getattr(self, k) is not None}

    def to_dict(self) -> dict:
        """The report as JSON-ready data (NaN -> null)."""
        out = {"graph": _jsonable(self.info), "scores": dict(self.sources), "amount": self.amount,
               "notes": list(self.notes)}
        for k, df in self.tables().items():
            out[k] = json.loads(df.to_json(orient="records", double_precision=15))
        return out

    def to_text(self, width: int = 100) -> str:
        """A readable summary (the default output of ``inspect``)."""
        return _render_text(self, width)

    def write(self, out_dir, *, overwrite: bool = False) -> Path:
        """Write ``report.json``, one CSV per table and the PNG plots to a directory, atomically.

        Plots: ``strength.png`` (in/out-strength of the intermediate neurons per layer),
        ``centrality_heatmap.png`` (mean score per layer, relative), ``correlations.png``
        (overall Spearman matrix) and ``mass.png`` (share of each PageRank per layer). With
        ``overwrite`` only a previous report (a directory with ``report.json``) is replaced.
        """
        def only_reports(existing: Path) -> None:
            if not (existing / "report.json").is_file():
                raise InvalidArgumentError(f"`out` {str(existing)!r} exists and is not an inspect report (no "
                                           "report.json); refusing to replace it")

        with atomic_directory(out_dir, overwrite=overwrite, arg="out", check_existing=only_reports) as tmp:
            (tmp / "report.json").write_text(json.dumps(self.to_dict(), indent=1))
            for k, df in self.tables().items():
                df.to_csv(tmp / f"{k}.csv", index=False)
            _plots(self, tmp)
        return Path(out_dir)


def _scores_from_model(graph, model, stats, names, explicit: bool, notes: list) -> dict[str, np.ndarray]:
    out = {}
    for name in names:
        needs = name in ("activation", "wanda-sp")
        if needs and stats is None:
            msg = f"baseline {name!r} needs calibration statistics (--calibrate)"
            if explicit:
                raise InvalidArgumentError(msg)
            notes.append(f"{msg}: left out")
            continue
        out[name] = _to_node_array(graph, name, score_neurons(model, stats, name))
    return out


def inspect_graph(graph: MLPGraph, *, centralities: Iterable[str] = DEFAULT_CENTRALITIES,
                  stored: Iterable[str] | None = None, baselines: Iterable[str] | None = None, model=None,
                  stats=None, k: int = TOP_K, amount: float = DEFAULT_AMOUNT, paths: int | None = None,
                  backend: str = "auto", progress: bool = False) -> InspectReport:
    """Everything ``llmrank-graph inspect`` reports, in one call.

    Parameters
    ----------
    graph : MLPGraph
    centralities : iterable of str
        Centralities of :data:`CENTRALITIES`, with the library's defaults; a stored column of
        the same name is used instead of computing it.
    stored : iterable of str, optional
        Further stored score columns to include (an error names the ones stored).
    baselines : iterable of str, optional
        Of :data:`BASELINES`. Default: those available (from ``model`` and ``stats`` when
        given, else from the graph, see :func:`available_baselines`); named explicitly, an
        unavailable one is an error.
    model, stats : optional
        The model the graph was exported from and its calibration statistics, to compute the
        baselines with :func:`llmrank_graph.score_neurons`.
    k : int
        Top neurons per layer.
    amount : float in [0, 1)
        Fraction pruned for :func:`overlap`.
    paths : int, optional
        Number of heaviest paths (none when None).
    backend : str
        Backend of the centralities.
    progress : bool
        Progress bars on the long steps.

    Returns
    -------
    InspectReport

    Raises
    ------
    InvalidArgumentError
        An unknown centrality or baseline, ``paths < 1``, stored columns that are missing.
    """
    _check_graph(graph)
    k = check_positive_int("k", k)
    amount = check_amount(amount)
    if paths is not None:
        paths = check_positive_int("paths", paths)
    if isinstance(centralities, str) or not isinstance(centralities, Iterable):
        raise fail_type("centralities", f"a sequence of {', '.join(map(repr, CENTRALITIES))}", centralities)
    centralities = list(centralities)
    for c in centralities:
        check_choice("centralities", c, CENTRALITIES)
    explicit = baselines is not None
    base_names = list(BASELINES if baselines is None else baselines)
    for b in base_names:
        check_choice("baselines", b, BASELINES)
    notes: list[str] = []
    table: dict[str, np.ndarray] = {}
    sources: dict[str, str] = {}
    if stored is not None:
        for name, v in stored_scores(graph, list(stored)).items():
            table[name] = np.asarray(v, dtype=np.float64)
            sources[name] = "stored"
    stats_df = layer_stats(graph, progress=progress)
    cs, src = centrality_scores(graph, centralities, backend=backend, progress=progress)
    table.update(cs)
    sources.update(src)
    if model is not None:
        bs = _scores_from_model(graph, model, stats, base_names, explicit, notes)
        sources.update({b: "baseline (model)" for b in bs})
    else:
        why = available_baselines(graph)
        usable = [b for b in base_names if why[b] is None]
        for b in base_names:
            if why[b] is not None:
                if explicit:
                    baseline_scores(graph, [b])  # raises with the reason
                notes.append(f"baseline {b!r} left out: {why[b]}")
        bs = baseline_scores(graph, usable, progress=progress) if usable else {}
        sources.update({b: "baseline (graph)" for b in bs})
    table.update(bs)
    if not table:
        raise InvalidArgumentError("`centralities`, `stored` and `baselines` left nothing to inspect; ask for at least "
                                   "one centrality")
    pagerank_cols = {k_: v for k_, v in table.items() if k_.startswith("pagerank")}
    report = InspectReport(
        info=graph_info(graph), partitions=summary(graph), layer_stats=stats_df,
        top_neurons=top_neurons(graph, table, k), correlations=correlations(graph, table) if len(table) > 1 else
        pd.DataFrame(columns=["scope", "layer", "a", "b", "n", *CORRELATIONS]),
        overlap=overlap(graph, table, amount) if len(table) > 1 else
        pd.DataFrame(columns=["scope", "layer", "a", "b", "n_pruned", "jaccard"]),
        mass=mass_by_layer(graph, pagerank_cols) if pagerank_cols else pd.DataFrame(),
        layer_means=_layer_means_table(graph, table),
        paths=heaviest_paths(graph, paths, progress=progress) if paths is not None else None,
        sources=sources, amount=amount, notes=notes)
    return report


def _layer_means_table(graph: MLPGraph, table: dict[str, np.ndarray]) -> pd.DataFrame:
    """Mean score of each layer's intermediate neurons, and relative to the mean over all layers."""
    rows = []
    per = _layer_values(graph, table)
    for name in table:
        allv = np.concatenate([v[name] for v in per.values()]) if per else np.zeros(0)
        overall = float(np.nanmean(allv)) if np.isfinite(allv).any() else np.nan
        for layer, v in per.items():
            m = float(np.nanmean(v[name])) if np.isfinite(v[name]).any() else np.nan
            rows.append({"score": name, "layer": layer, "mean": m,
                         "relative": m / overall if overall and np.isfinite(overall) else np.nan})
    return pd.DataFrame(rows, columns=["score", "layer", "mean", "relative"])


# ---------------------------------------------------------------------------- text
def _fmt(x) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "nan"
    if isinstance(x, float):
        return f"{x:.3g}" if abs(x) < 1e4 else f"{x:.3e}"
    return str(x)


def _matrix(df: pd.DataFrame, names: list[str], value: str, diag: float = 1.0) -> pd.DataFrame:
    m = pd.DataFrame(np.nan, index=names, columns=names)
    for r in df.itertuples(index=False):
        v = getattr(r, value)
        m.loc[r.a, r.b] = m.loc[r.b, r.a] = v
    for nm in names:
        m.loc[nm, nm] = diag
    return m


def _render_text(rep: InspectReport, width: int) -> str:
    info = rep.info
    out = []
    opts = ", ".join(f"{k}={info[k]!r}" for k in ("mode", "gate", "residual", "weighting", "keep") if k in info)
    out.append(f"graph: {info.get('model')} ({opts or 'built from an edge list'})")
    out.append(f"  {info['n_nodes']:,} nodes, {info['n_edges']:,} edges, {info['n_partitions']} partitions, "
               f"{info['n_blocks']} blocks, {info['n_layers']} layers; block density {info['block_density']:.3g}, "
               f"density {info['density']:.3g}" + ("; streamed" if info.get("streamed") else ""))
    sizes = rep.partitions.groupby(["kind", "size"]).size()
    out.append("  partitions: " + "; ".join(f"{c} {kind} of {size:,}" for (kind, size), c in sizes.items()))
    if info.get("stored_scores"):
        out.append("  stored scores: " + ", ".join(info["stored_scores"]))
    out.append("")
    st = rep.layer_stats
    if len(st):
        out.append("per layer (median [5%, 95%]):")
        head = f"  {'layer':>5}  {'weight up':>26}  {'weight down':>26}  {'I in-strength':>26}  {'I out-strength':>26}"
        out.append(head)

        def cell(sel):
            if sel.empty:
                return ""
            r = sel.iloc[0]
            return f"{_fmt(r['q0.5'])} [{_fmt(r['q0.05'])}, {_fmt(r['q0.95'])}]" if "q0.5" in r else ""

        for layer in sorted(st.layer.unique()):
            s = st[st.layer == layer]
            w = s[s.quantity == "weight"]
            up = w[w.of.str.contains("->I")]
            down = w[w.of.str.startswith("I")]
            si = s[(s.quantity == "in_strength") & (s.kind == "intermediate")]
            so = s[(s.quantity == "out_strength") & (s.kind == "intermediate")]
            if up.empty and down.empty and si.empty:
                continue
            out.append(f"  {layer:>5}  {cell(up):>26}  {cell(down):>26}  {cell(si):>26}  {cell(so):>26}")
        out.append("")
    out.append("scores: " + ", ".join(f"{k} ({v})" for k, v in rep.sources.items()))
    for note in rep.notes:
        out.append(f"  note: {note}")
    out.append("")
    tn = rep.top_neurons
    tn = tn[~tn.score.map(lambda nm: rep.sources.get(nm, "").startswith("baseline"))]  # CSV/JSON have all
    if len(tn):
        kk = int(tn["rank"].max())
        out.append(f"top {kk} intermediate neurons per layer (index), per centrality:")
        for name, g in tn.groupby("score", sort=False):
            out.append(f"  {name}:")
            for layer, gl in g.groupby("layer"):
                out.append(f"    L{layer:<3} " + " ".join(str(i) for i in gl.sort_values("rank")["index"]))
        out.append("")
    names = list(rep.sources)
    short = {nm: f"[{i}]" for i, nm in enumerate(names, 1)}  # matrix labels; the key is printed once

    def matrix_text(m: pd.DataFrame) -> str:
        m = m.rename(index=short, columns=short)
        return _indent(m.to_string(float_format=lambda x: f"{x:.3f}"))

    corr = rep.correlations
    if len(corr) or len(rep.overlap):
        out.append("key: " + "; ".join(f"{short[nm]} {nm}" for nm in names))
        out.append("")
    if len(corr):
        for method in CORRELATIONS:
            if method not in corr.columns:
                continue
            m = _matrix(corr[corr.scope == "all"], names, method)
            out.append(f"{method} rank correlation, all layers (per-layer normalised scores):")
            out.append(matrix_text(m))
            out.append("")
        per = corr[corr.scope == "layer"]
        if len(per):
            out.append("spearman per layer: median [min, max] over layers")
            for (a, b), g in per.groupby(["a", "b"], sort=False):
                v = g["spearman"].to_numpy(dtype=float)
                out.append(f"  {a} ~ {b}: {_fmt(float(np.nanmedian(v)))} [{_fmt(float(np.nanmin(v)))}, "
                           f"{_fmt(float(np.nanmax(v)))}]" if np.isfinite(v).any() else f"  {a} ~ {b}: nan")
            out.append("")
    ov = rep.overlap
    if len(ov):
        m = _matrix(ov[ov.scope == "all"], names, "jaccard")
        out.append(f"Jaccard overlap of the neurons pruned at amount={rep.amount:g} (local allocation), all layers:")
        out.append(matrix_text(m))
        out.append("")
    mass = rep.mass
    if len(mass):
        for name, g in mass.groupby("score", sort=False):
            out.append(f"{name}: share of the mass per layer (intermediate / hidden partitions)")
            inter = g[g.kind == "intermediate"]
            hid = g[g.kind == "hidden"]
            out.append(f"  intermediate {inter.share.sum():.3f}, hidden {hid.share.sum():.3f} of the mass; "
                       f"top partitions: " + ", ".join(f"{r.name} {r.share:.3f}" for r in
                                                       g.sort_values("share", ascending=False).head(5).itertuples()))
            lines = []
            for layer, gl in g.groupby("layer"):
                i, h = gl[gl.kind == "intermediate"], gl[gl.kind == "hidden"]
                lines.append(f"L{layer} {f'{i.share.sum():.3f}' if len(i) else '-'}/"
                             f"{f'{h.share.sum():.3f}' if len(h) else '-'}")
            out.extend(_wrap(lines, width, "  "))
            out.append("")
    if rep.paths is not None:
        out.append("heaviest paths (product of w(u,v)/s(u)):")
        for r in rep.paths.itertuples(index=False):
            hops = " -> ".join(f"{'H' if kind == 'hidden' else 'I'}{layer}:{idx}" for layer, kind, idx in r.path)
            out.append(f"  #{r.rank} score {r.score:.4g} ({r.length} edges): {hops}")
        if rep.paths.empty:
            out.append("  (no path with a positive score)")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _indent(text: str, pad: str = "  ") -> str:
    return "\n".join(pad + line for line in text.splitlines())


def _wrap(items: list[str], width: int, pad: str) -> list[str]:
    lines, cur = [], pad
    for it in items:
        if len(cur) + len(it) + 2 > width and cur.strip():
            lines.append(cur.rstrip())
            cur = pad
        cur += it + "  "
    if cur.strip():
        lines.append(cur.rstrip())
    return lines


# ---------------------------------------------------------------------------- plots
def _plots(rep: InspectReport, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    written = []
    st = rep.layer_stats
    if len(st):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
        for ax, quantity in zip(axes, ("in_strength", "out_strength")):
            for kind, color in (("intermediate", "tab:blue"), ("hidden", "tab:orange")):
                s = st[(st.quantity == quantity) & (st.kind == kind)].sort_values("layer")
                if s.empty:
                    continue
                ax.plot(s.layer, s["q0.5"], color=color, label=f"{kind} median")
                ax.fill_between(s.layer, s["q0.05"], s["q0.95"], color=color, alpha=0.25, label=f"{kind} 5-95%")
            ax.set_title(quantity.replace("_", "-"))
            ax.set_xlabel("layer")
            ax.set_yscale("log")
            ax.legend(fontsize=8)
        fig.suptitle("node strength per layer")
        fig.tight_layout()
        written.append(_save(fig, out / "strength.png"))
    tn_names = list(rep.sources)
    if rep.top_neurons is not None and tn_names:
        layers = sorted({r.layer for r in rep.partitions.itertuples() if r.kind == "intermediate"})
        heat = _layer_means(rep, layers)
        if heat is not None:
            fig, ax = plt.subplots(figsize=(max(6, 0.25 * len(layers) + 3), 0.45 * len(heat) + 1.5))
            with np.errstate(divide="ignore", invalid="ignore"):
                # log2 of the ratio: one outlying layer (forward Katz grows with depth) keeps the others visible
                rel = np.log2(heat.to_numpy(dtype=float))
            rel[~np.isfinite(rel)] = np.nan
            lim = min(float(np.nanmax(np.abs(rel))), 3.0) if np.isfinite(rel).any() else 1.0
            im = ax.imshow(rel, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim)
            ax.set_yticks(range(len(heat)), heat.index)
            ax.set_xticks(range(len(layers)), layers, fontsize=7)
            ax.set_xlabel("layer")
            fig.colorbar(im, ax=ax, extend="both",
                         label="log2(layer mean / mean over all layers), clipped at +-3")
            ax.set_title("mean centrality per layer (intermediate neurons)")
            fig.tight_layout()
            written.append(_save(fig, out / "centrality_heatmap.png"))
    corr = rep.correlations
    if len(corr):
        m = _matrix(corr[corr.scope == "all"], tn_names, "spearman")
        fig, ax = plt.subplots(figsize=(1.1 * len(m) + 2, 1.0 * len(m) + 1.5))
        im = ax.imshow(m.to_numpy(dtype=float), vmin=-1, vmax=1, cmap="RdBu_r")
        ax.set_xticks(range(len(m)), m.columns, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(m)), m.index, fontsize=8)
        for i in range(len(m)):
            for j in range(len(m)):
                ax.text(j, i, f"{m.iat[i, j]:.2f}", ha="center", va="center", fontsize=7)
        fig.colorbar(im, ax=ax, label="Spearman")
        ax.set_title("rank correlation, all layers")
        fig.tight_layout()
        written.append(_save(fig, out / "correlations.png"))
    if len(rep.mass):
        fig, ax = plt.subplots(figsize=(10, 4))
        names = list(dict.fromkeys(rep.mass.score))
        width = 0.8 / max(len(names), 1)
        for i, name in enumerate(names):
            g = rep.mass[rep.mass.score == name]
            per = g.groupby(["layer", "kind"]).share.sum().unstack(fill_value=0.0)
            x = per.index.to_numpy() + i * width
            bottom = np.zeros(len(per))
            for kind in [c for c in ("intermediate", "hidden") if c in per.columns]:
                ax.bar(x, per[kind], width, bottom=bottom, label=f"{name}: {kind}")
                bottom += per[kind].to_numpy()
        ax.set_xlabel("layer")
        ax.set_ylabel("share of the mass")
        ax.set_title("PageRank mass per layer")
        ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(_save(fig, out / "mass.png"))
    return written


def _layer_means(rep: InspectReport, layers: list[int]) -> pd.DataFrame | None:
    lm = rep.layer_means
    if lm is None or lm.empty:
        return None
    return lm.pivot(index="score", columns="layer", values="relative").reindex(columns=layers)


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
