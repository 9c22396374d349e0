"""Whole-network analysis of an :class:`~llmrank_graph.MLPGraph`, as pandas DataFrames.

The questions of people who study the graph rather than prune with it, one module per job:

- ``stats``: :func:`summary` (partition sizes, edge counts, density, the export options),
  :func:`graph_info` and :func:`layer_stats` (per layer, quantiles of edge weights and of
  node in-/out-strength);
- ``scores``: scores as arrays over the nodes, the pruning baselines computed from the
  graph (:func:`baseline_scores`) and the centralities by name (:func:`centrality_scores`);
- ``correlations``: :func:`top_neurons`, :func:`correlations` (Spearman and Kendall, per layer
  and overall), :func:`overlap` (Jaccard overlap of the neurons each score would prune), and
  the statistics they share with the experiments' report (:func:`normalise`, :func:`rank_corr`);
- ``mass``: :func:`mass_by_layer`, how a score's mass (PageRank) is spread over the partitions;
- ``paths``: :func:`heaviest_paths`, the k heaviest input-to-output chains of neurons
  (docs/design.md section 7);
- ``inspect``: :func:`inspect_graph` runs them all (what ``llmrank-graph inspect`` prints) and
  returns an :class:`InspectReport`, rendered by ``text`` and ``plots`` as text, JSON, CSV and PNG.

Everything reads the graph through its blocks, one block (one weight matrix) at a time
(:mod:`llmrank_graph.graph.blocks`), and never builds the edge list, so it runs on a graph
streamed from safetensors shards (:func:`llmrank_graph.export_graph_from_safetensors`) or read
lazily from Parquet (:func:`llmrank_graph.read_graph`) with about one layer in memory.

Scores are given as a mapping ``name -> values`` where the values are an array with one
number per node, a :class:`~llmrank_graph.CentralityResult`, or
:class:`~llmrank_graph.NeuronScores` (intermediate neurons only); or as a list of names of
score columns stored with the graph (``llmrank-graph rank --add-to-graph``). Rank statistics
use the intermediate neurons only: the hidden nodes have no pruning baseline (docs/design.md
section 7). Public functions check their parameters once, at the entry
(:mod:`llmrank_graph.base.params`).

Imports ``pruning``, ``scoring``, ``centrality``, ``graph`` and the stages below them; never
``experiments`` or ``cli``.
"""

from .correlations import CORRELATIONS, DEFAULT_AMOUNT, TOP_K, correlations, normalise, overlap, rank_corr, top_neurons
from .inspect import InspectReport, inspect_graph
from .mass import mass_by_layer
from .paths import PATH_WEIGHTS, heaviest_paths
from .scores import (
    BASELINES,
    CENTRALITIES,
    DEFAULT_CENTRALITIES,
    available_baselines,
    baseline_scores,
    centrality_scores,
)
from .stats import QUANTILES, graph_info, layer_stats, summary

__all__ = ["summary", "graph_info", "layer_stats", "top_neurons", "correlations", "overlap", "mass_by_layer",
           "heaviest_paths", "baseline_scores", "available_baselines", "centrality_scores", "inspect_graph",
           "InspectReport", "CENTRALITIES", "DEFAULT_CENTRALITIES", "BASELINES", "CORRELATIONS", "QUANTILES",
           "PATH_WEIGHTS", "TOP_K", "DEFAULT_AMOUNT", "normalise", "rank_corr"]
