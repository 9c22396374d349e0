"""How scores agree: top neurons, rank correlations, and the overlap of the neurons they would prune.

Rank statistics use the intermediate neurons only: the hidden nodes have no pruning baseline
(docs/design.md section 7). Across layers, each layer's scores are first divided by their mean
absolute value (:func:`normalise`), the per-layer normalisation of global allocation, so that
layers of different scale compare. :func:`normalise` and :func:`rank_corr` are also what the
experiments' report computes on saved scores.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from ..base.checks import check_choice, fail, fail_type, format_allowed
from ..base.params import Check, Interval, OneOf, validated
from ..errors import InvalidArgumentError
from ..graph.meta import KINDS
from ..graph.mlpgraph import MLPGraph
from ..pruning import allocate, check_amount, prune_model
from .common import GRAPH
from .scores import intermediate_by_layer, layer_values, score_table

__all__ = ["CORRELATIONS", "TOP_K", "DEFAULT_AMOUNT", "AMOUNT", "normalise", "rank_corr", "top_neurons",
           "correlations", "overlap", "rank_top", "compute_correlations", "compute_overlap", "pair_matrix"]

#: Rank correlations of :func:`correlations`.
CORRELATIONS: tuple[str, ...] = ("spearman", "kendall")
#: Neurons per layer in :func:`top_neurons`.
TOP_K = 10
#: Fraction pruned in :func:`overlap`: the default of :func:`llmrank_graph.prune_model`.
DEFAULT_AMOUNT: float = float(inspect.signature(prune_model).parameters["amount"].default)
#: The ``amount`` constraint: pruning's own check (:func:`llmrank_graph.pruning.check_amount`).
AMOUNT = Check(lambda _arg, value: check_amount(value), "a float in [0, 1)")


def normalise(v: np.ndarray) -> np.ndarray:
    """A layer's scores divided by their mean absolute value, as global allocation does.

    The per-layer normalisation of :func:`llmrank_graph.allocate` (``'global'``): NaNs are
    ignored in the mean, and a layer whose scores are all zero (or all NaN) becomes zeros.

    >>> normalise(np.array([1.0, -3.0, 2.0]))
    array([ 0.5, -1.5,  1. ])
    >>> normalise(np.zeros(2))
    array([0., 0.])
    """
    scale = np.nanmean(np.abs(v)) if np.isfinite(v).any() else 0.0
    return v / scale if scale > 0 else np.zeros_like(v)


def rank_corr(a: np.ndarray, b: np.ndarray, methods: Sequence[str] = CORRELATIONS) -> dict:
    """Rank correlations of two scores of the same neurons, over the neurons where both are finite.

    Parameters
    ----------
    a, b : numpy.ndarray
        Scores of the same neurons, in the same order.
    methods : sequence of {'spearman', 'kendall'}
        ``scipy.stats.spearmanr`` and ``kendalltau`` (tau-b).

    Returns
    -------
    dict
        ``n`` (the neurons compared) and one float per method; NaN where it is undefined
        (fewer than 2 neurons, or a constant score).

    >>> r = rank_corr(np.array([1.0, 2.0, 3.0, np.nan]), np.array([2.0, 4.0, 5.0, 1.0]))
    >>> r["n"], round(r["spearman"], 6), round(r["kendall"], 6)
    (3, 1.0, 1.0)
    """
    from scipy import stats  # scipy.stats takes a while to import; only the rank statistics need it

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


# ---------------------------------------------------------------------------- top neurons
@validated({"graph": GRAPH, "k": Interval(int, 1), "kind": OneOf(*KINDS)})
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
    >>> import llmrank_graph as lg
    >>> g = lg.graph.toy_graph()             # H0 -> I0 (2 neurons) -> H1
    >>> top_neurons(g, {"in": lg.strength(g)}, k=1)[["partition", "index", "value"]].values.tolist()
    [['I0', 1, 2.0]]
    """
    return rank_top(graph, score_table(graph, scores), k, kind)


def rank_top(graph: MLPGraph, table: dict[str, np.ndarray], k: int, kind: str = "intermediate") -> pd.DataFrame:
    """:func:`top_neurons` on checked arguments and a score table."""
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


# ---------------------------------------------------------------------------- correlations
def _check_methods(arg: str, methods) -> tuple[str, ...]:
    if isinstance(methods, str):
        methods = (methods,)
    if not isinstance(methods, Iterable):
        raise fail_type(arg, f"a sequence of {format_allowed(CORRELATIONS)}", methods)
    methods = tuple(methods)
    if not methods:
        raise fail(arg, f"a non-empty sequence of {format_allowed(CORRELATIONS)}", methods)
    for m in methods:
        check_choice(arg, m, CORRELATIONS)
    return methods


@validated({"graph": GRAPH, "methods": Check(_check_methods, f"a sequence of {format_allowed(CORRELATIONS)}")})
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
    >>> import pandas as pd
    >>> import llmrank_graph as lg
    >>> nodes = pd.DataFrame({"vertex": range(5), "layer": [0, 0, 0, 0, 1],
    ...                       "kind": ["hidden", "intermediate", "intermediate", "intermediate", "hidden"]})
    >>> g = lg.MLPGraph.from_edgelist(nodes, pd.DataFrame({"src": [0, 0, 0, 1, 2, 3], "dst": [1, 2, 3, 4, 4, 4],
    ...                                                    "weight": [1.0, 2.0, 3.0, 3.0, 2.0, 1.0]}))
    >>> c = correlations(g, {"in": lg.strength(g, "in"), "out": lg.strength(g, "out")}, methods="spearman")
    >>> c[["scope", "a", "b", "n", "spearman"]].values.tolist()
    [['layer', 'in', 'out', 3, -1.0], ['all', 'in', 'out', 3, -1.0]]
    """
    return compute_correlations(graph, score_table(graph, scores), methods)


def compute_correlations(graph: MLPGraph, table: dict[str, np.ndarray], methods: Sequence[str] = CORRELATIONS
                         ) -> pd.DataFrame:
    """:func:`correlations` on checked arguments and a score table."""
    names = list(table)
    per_layer = layer_values(graph, table)
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            for layer, vals in per_layer.items():
                rows.append({"scope": "layer", "layer": layer, "a": a, "b": b, **rank_corr(vals[a], vals[b], methods)})
            xa = np.concatenate([normalise(v[a]) for v in per_layer.values()]) if per_layer else np.zeros(0)
            xb = np.concatenate([normalise(v[b]) for v in per_layer.values()]) if per_layer else np.zeros(0)
            rows.append({"scope": "all", "layer": None, "a": a, "b": b, **rank_corr(xa, xb, methods)})
    df = pd.DataFrame(rows, columns=["scope", "layer", "a", "b", "n", *methods])
    df["layer"] = df["layer"].astype("Int64")
    return df


# ---------------------------------------------------------------------------- overlap
def _pruned_sets(graph: MLPGraph, table: dict[str, np.ndarray], amount: float) -> dict[str, dict[int, set]]:
    out = {}
    for name, v in table.items():
        per = {}
        for layer, p in sorted(intermediate_by_layer(graph).items()):
            x = v[p.offset:p.stop]
            if not np.isfinite(x).all():
                raise InvalidArgumentError(f"`scores[{name!r}]` has NaN or inf for intermediate neurons of layer "
                                           f"{layer}; the pruned set is undefined")
            per[layer] = torch.tensor(x)  # a copy: stored columns may be read-only arrays
        mask = allocate(per, amount, "local")
        out[name] = {layer: set(mask.pruned_indices(layer).tolist()) for layer in per}
    return out


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if (a or b) else 1.0


@validated({"graph": GRAPH, "amount": AMOUNT})
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
    >>> import pandas as pd
    >>> import llmrank_graph as lg
    >>> nodes = pd.DataFrame({"vertex": range(5), "layer": [0, 0, 0, 0, 1],
    ...                       "kind": ["hidden", "intermediate", "intermediate", "intermediate", "hidden"]})
    >>> g = lg.MLPGraph.from_edgelist(nodes, pd.DataFrame({"src": [0, 0, 0, 1, 2, 3], "dst": [1, 2, 3, 4, 4, 4],
    ...                                                    "weight": [1.0, 2.0, 3.0, 3.0, 2.0, 1.0]}))
    >>> o = overlap(g, {"in": lg.strength(g, "in"), "out": lg.strength(g, "out")}, amount=0.34)
    >>> o[["scope", "n_pruned", "jaccard"]].values.tolist()
    [['layer', 1, 0.0], ['all', 1, 0.0]]
    """
    return compute_overlap(graph, score_table(graph, scores), amount)


def compute_overlap(graph: MLPGraph, table: dict[str, np.ndarray], amount: float) -> pd.DataFrame:
    """:func:`overlap` on checked arguments and a score table."""
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


def pair_matrix(df: pd.DataFrame, names: list[str], value: str, diag: float = 1.0) -> pd.DataFrame:
    """A square, symmetric matrix of ``value`` from the pairs ``a, b`` of :func:`correlations` or :func:`overlap`.

    >>> pairs = pd.DataFrame({"a": ["x"], "b": ["y"], "jaccard": [0.25]})
    >>> pair_matrix(pairs, ["x", "y"], "jaccard").values.tolist()
    [[1.0, 0.25], [0.25, 1.0]]
    """
    m = pd.DataFrame(np.nan, index=names, columns=names)
    for r in df.itertuples(index=False):
        v = getattr(r, value)
        m.loc[r.a, r.b] = m.loc[r.b, r.a] = v
    for nm in names:
        m.loc[nm, nm] = diag
    return m
