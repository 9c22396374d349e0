"""Everything ``llmrank-graph inspect`` reports, in one call: :func:`inspect_graph` and its :class:`InspectReport`."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..base.files import atomic_directory
from ..base.params import Boolean, Interval, Optional, validated
from ..centrality.registry import centrality_names
from ..errors import InvalidArgumentError
from ..graph.heads import head_scores
from ..graph.mlpgraph import MLPGraph
from ..graph.scores import jsonable, stored_scores
from .common import GRAPH, names_in
from .correlations import AMOUNT, CORRELATIONS, DEFAULT_AMOUNT, TOP_K, compute_correlations, compute_overlap, rank_top
from .mass import compute_mass, layer_means
from .paths import find_paths
from .plots import write_plots
from .scores import (
    BASELINES,
    DEFAULT_CENTRALITIES,
    baseline_reasons,
    baseline_unavailable,
    compute_centralities,
    describe_departures,
    graph_baselines,
    pagerank_departures,
    scores_from_model,
)
from .sketch import describe_error
from .stats import collect_info, compute_layer_stats, partition_table
from .text import fmt, render_text

__all__ = ["InspectReport", "inspect_graph", "INSPECT_CONSTRAINTS", "TOP_HEADS", "HEAD_COLUMNS", "rank_heads"]

#: Heads per layer in the ``top_heads`` table of :func:`inspect_graph` (``--top-heads``).
TOP_HEADS = 5
#: The columns of the ``top_heads`` table (:func:`rank_heads`).
HEAD_COLUMNS = ("score", "layer", "partition", "rank", "head", "kv_group", "vertex", "value", "share")


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
    #: The top heads per layer by each PageRank (:func:`rank_heads`); None for a graph without head nodes.
    top_heads: pd.DataFrame | None = None

    TABLES = ("partitions", "layer_stats", "top_neurons", "top_heads", "correlations", "overlap", "mass",
              "layer_means", "paths")

    def tables(self) -> dict[str, pd.DataFrame]:
        """The tables by name (``paths`` only when asked for, ``top_heads`` only for a graph with head nodes)."""
        return {k: getattr(self, k) for k in self.TABLES if getattr(self, k) is not None}

    def to_dict(self) -> dict:
        """The report as JSON-ready data (NaN -> null); ``top_heads`` is null for a graph without head nodes."""
        out = {"graph": jsonable(self.info), "scores": dict(self.sources), "amount": self.amount,
               "notes": list(self.notes)}
        for k, df in self.tables().items():
            out[k] = json.loads(df.to_json(orient="records", double_precision=15))
        if self.top_heads is None:
            out["top_heads"] = None
        return out

    def to_text(self, width: int = 100) -> str:
        """A readable summary (the default output of ``inspect``), the top heads per layer last."""
        return render_text(self, width) + "\n".join(["", *_head_lines(self)]).rstrip() + "\n"

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
            write_plots(self, tmp)
        return Path(out_dir)


# ---------------------------------------------------------------------------- top heads per layer
def _kv_groups(graph: MLPGraph) -> dict[int, np.ndarray]:
    """Layer -> the key/value group of each query head, from the head counts the export recorded.

    Query head ``h`` of a layer with ``n`` heads in ``kv`` groups reads group ``h // (n // kv)``
    (the heads of a group are consecutive, as :class:`~llmrank_graph.graph.heads.HeadBlock`
    repeats each group's value rows). A layer whose counts are not recorded, or do not match its
    head partition, is left out (its groups are unknown).
    """
    meta = graph.meta
    heads, kvs = meta.get("num_heads"), meta.get("num_key_value_heads")
    if not isinstance(heads, list) or not isinstance(kvs, list):
        return {}
    layers = meta.get("layers") or range(len(heads))  # a graph read with layers= keeps those layers' counts
    sizes = {p.layer: p.size for p in graph.head_partitions()}
    return {int(layer): np.arange(n) // (n // kv) for layer, n, kv in zip(layers, heads, kvs)
            if sizes.get(layer) == n and kv and n % kv == 0}


def rank_heads(graph: MLPGraph, table: dict[str, np.ndarray], k: int) -> pd.DataFrame | None:
    """The ``k`` highest-scoring heads of every layer, for each PageRank of ``table``; None without head nodes.

    Each score's head slices come from :func:`llmrank_graph.graph.heads.head_scores`; rank 1 is
    the highest (ties by lower head index), ``share`` is the head's fraction of the sum of the
    scores of all the layer's heads (its share of the layer's head mass: the shares of a layer
    sum to 1 when ``k`` covers its heads), and ``kv_group`` its key/value group (NA where the
    graph does not record the head counts).

    Returns
    -------
    pandas.DataFrame or None
        :data:`HEAD_COLUMNS`: ``score, layer, partition, rank, head, kv_group, vertex, value,
        share``; None for a graph without head nodes.
    """
    if not graph.has_heads:
        return None
    parts = {p.layer: p for p in graph.head_partitions()}
    groups = _kv_groups(graph)
    rows = []
    for name, v in table.items():
        for layer, s in head_scores(graph, v).items():
            x = s.numpy()
            total = float(np.nansum(x))
            order = np.lexsort((np.arange(x.size), -np.nan_to_num(x, nan=-np.inf)))
            order = [int(h) for h in order if np.isfinite(x[h])][:k]
            g = groups.get(layer)
            for r, h in enumerate(order, 1):
                rows.append({"score": name, "layer": layer, "partition": parts[layer].name, "rank": r, "head": h,
                             "kv_group": int(g[h]) if g is not None else None, "vertex": parts[layer].offset + h,
                             "value": float(x[h]), "share": float(x[h]) / total if total else np.nan})
    df = pd.DataFrame(rows, columns=list(HEAD_COLUMNS))
    df["kv_group"] = df["kv_group"].astype("Int64")
    return df


def _head_lines(rep: InspectReport) -> list[str]:
    """The text of the top heads: one table per PageRank, or the line that says why there is none."""
    th = rep.top_heads
    if th is None:
        return ["top heads per layer: the graph has no head nodes (export it with attention=True, or "
                "export/inspect --attention)"]
    if th.empty:
        return ["top heads per layer: no PageRank among the scores to rank the heads by (ask for the pagerank "
                "centrality)"]
    out = []
    for name, g in th.groupby("score", sort=False):
        out += [f"top {int(g['rank'].max())} heads per layer by {name} (share: fraction of the layer's head mass):",
                f"  {'layer':>5}  {'rank':>4}  {'head':>4}  {'kv group':>8}  {'score':>10}  {'share':>6}"]
        for r in g.sort_values(["layer", "rank"]).itertuples(index=False):
            group = "-" if pd.isna(r.kv_group) else str(r.kv_group)
            out.append(f"  {r.layer:>5}  {r.rank:>4}  {r.head:>4}  {group:>8}  {fmt(r.value):>10}  {r.share:>6.3f}")
        out.append("")
    return out


def _baselines(graph: MLPGraph, model, stats, baselines: list[str] | None, notes: list[str], progress: bool
               ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The baselines asked for (all available ones by default), from the model when given, else from the graph."""
    explicit = baselines is not None
    names = list(BASELINES) if baselines is None else baselines
    if model is not None:
        bs = scores_from_model(graph, model, stats, names, explicit, notes)
        return bs, {b: "baseline (model)" for b in bs}
    why = baseline_reasons(graph)
    for b in names:
        if why[b] is not None:
            if explicit:
                raise baseline_unavailable(b, why[b])
            notes.append(f"baseline {b!r} left out: {why[b]}")
    usable = [b for b in names if why[b] is None]
    bs = graph_baselines(graph, usable, why, progress) if usable else {}
    return bs, {b: "baseline (graph)" for b in bs}


def _report(graph: MLPGraph, table: dict[str, np.ndarray], sources: dict[str, str], stats_df: pd.DataFrame, k: int,
            k_heads: int, amount: float, paths: int | None, notes: list[str], progress: bool) -> InspectReport:
    """The report's tables, from the scores gathered and the layer statistics."""
    # PageRank's columns (storage names them pagerank_...) hold distributions, whose mass per layer is meaningful
    pagerank_cols = {c: v for c, v in table.items() if c.startswith("pagerank")}
    several = len(table) > 1
    return InspectReport(
        info=collect_info(graph), partitions=partition_table(graph), layer_stats=stats_df,
        top_neurons=rank_top(graph, table, k), top_heads=rank_heads(graph, pagerank_cols, k_heads),
        correlations=compute_correlations(graph, table) if several else
        pd.DataFrame(columns=["scope", "layer", "a", "b", "n", *CORRELATIONS]),
        overlap=compute_overlap(graph, table, amount) if several else
        pd.DataFrame(columns=["scope", "layer", "a", "b", "n_pruned", "jaccard"]),
        mass=compute_mass(graph, pagerank_cols) if pagerank_cols else pd.DataFrame(),
        layer_means=layer_means(graph, table),
        paths=find_paths(graph, paths, progress=progress) if paths is not None else None,
        sources=sources, amount=amount, notes=notes)


#: The parameters of :func:`inspect_graph` that are checked before anything is computed (the
#: command line checks the options it was given against it before it loads a model).
INSPECT_CONSTRAINTS = {
    "graph": GRAPH,
    "centralities": names_in(centrality_names),
    "baselines": Optional(names_in(lambda: BASELINES)),
    "k": Interval(int, 1),
    "k_heads": Interval(int, 1),
    "amount": AMOUNT,
    "paths": Optional(Interval(int, 1)),
    "exact_quantiles": Boolean(),
    "progress": Boolean(),
}


@validated(INSPECT_CONSTRAINTS)
def inspect_graph(graph: MLPGraph, *, centralities: Iterable[str] = DEFAULT_CENTRALITIES,
                  stored: Iterable[str] | None = None, baselines: Iterable[str] | None = None, model=None,
                  stats=None, k: int = TOP_K, k_heads: int = TOP_HEADS, amount: float = DEFAULT_AMOUNT,
                  paths: int | None = None, backend: str = "auto", exact_quantiles: bool = False,
                  progress: bool = False) -> InspectReport:
    """Everything ``llmrank-graph inspect`` reports, in one call.

    Parameters
    ----------
    graph : MLPGraph
    centralities : iterable of str
        Centralities of :data:`CENTRALITIES`, with the library's defaults; a stored column of
        the same name is used instead of computing it. PageRank's are the ``pagerank``
        scorer's: on a graph exported with calibration statistics and the scorer's options
        (``export_graph(model, stats)``) it equals :func:`llmrank_graph.score_neurons`'s
        ``pagerank`` on the intermediate nodes; elsewhere a note says what differs
        (:func:`~llmrank_graph.analysis.scores.pagerank_departures`).
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
    k_heads : int
        Top heads per layer, on a graph with head nodes (``export_graph(..., attention=True)``):
        the ``top_heads`` table ranks them by the PageRank computed here (each PageRank column
        of the scores, never another centrality), with their key/value group and share of the
        layer's head mass (:func:`rank_heads`). Without head nodes the table is None and the
        text says so in one line; without a PageRank among the scores it is empty.
    amount : float in [0, 1)
        Fraction pruned for :func:`overlap`.
    paths : int, optional
        Number of heaviest paths (none when None).
    backend : str
        Backend of the centralities.
    exact_quantiles : bool
        Exact quantiles of the edge weights in ``layer_stats``; by default they come from a
        sketch, each within 0.39% relative error (:func:`~llmrank_graph.analysis.layer_stats`),
        and a note says so.
    progress : bool
        Progress bars on the long steps.

    Returns
    -------
    InspectReport

    Raises
    ------
    InvalidArgumentError
        An unknown centrality or baseline, ``k``, ``k_heads`` or ``paths`` below 1, stored columns that are
        missing.

    Example
    -------
    >>> import torch, transformers
    >>> import llmrank_graph as lg
    >>> cfg = transformers.LlamaConfig(vocab_size=32, hidden_size=4, intermediate_size=6, num_hidden_layers=2,
    ...                                num_attention_heads=2, num_key_value_heads=2)
    >>> _ = torch.manual_seed(0)
    >>> rep = inspect_graph(lg.export_graph(transformers.LlamaForCausalLM(cfg)), paths=1, backend="scipy")
    >>> rep.sources
    {'pagerank_reverse_a0.85': 'computed (scipy)', 'katz_forward_a0.1': 'computed (scipy)',
     'strength_in': 'computed (scipy)', 'magnitude': 'baseline (graph)'}
    >>> print(rep.notes[0])
    edge-weight quantiles within 0.39% relative error (a log-bucket sketch; exact_quantiles=True, \
--exact-quantiles for exact ones)
    >>> rep.notes[1]
    "baseline 'activation' left out: the graph has no node activations (export it with calibration stats)"
    >>> print(rep.notes[-1])
    PageRank is not the pagerank scorer's here: no calibration statistics: the pagerank defaults weighting \
'activation_share' and personalization 'activation' need them; using weighting 'abs' and personalization \
'uniform' instead
    >>> print(rep.to_text().splitlines()[0])
    graph: LlamaForCausalLM (mode='chained', gate='up', residual=0.0, weighting='abs', keep=None)
    """
    notes: list[str] = []
    table: dict[str, np.ndarray] = {}
    sources: dict[str, str] = {}
    if stored is not None:
        for name, v in stored_scores(graph, list(stored)).items():
            table[name] = np.asarray(v, dtype=np.float64)
            sources[name] = "stored"
    stats_df = compute_layer_stats(graph, progress=progress, exact=exact_quantiles)
    if not exact_quantiles:
        notes.append(f"edge-weight {describe_error('exact_quantiles=True, --exact-quantiles')}")
    cs, cs_sources = compute_centralities(graph, centralities, backend, True, progress)
    bs, bs_sources = _baselines(graph, model, stats, baselines, notes, progress)
    departures = pagerank_departures(graph) if "pagerank" in centralities else {}
    if departures:  # PageRank by name is the pruning scorer's only on the scorer's graph
        notes.append(f"PageRank is not the pagerank scorer's here: {describe_departures(departures)}")
    table.update(cs)
    table.update(bs)
    sources.update(cs_sources)
    sources.update(bs_sources)
    if not table:
        raise InvalidArgumentError("`centralities`, `stored` and `baselines` left nothing to inspect; ask for at least "
                                   "one centrality")
    return _report(graph, table, sources, stats_df, k, k_heads, amount, paths, notes, progress)
