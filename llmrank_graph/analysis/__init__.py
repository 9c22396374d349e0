"""Analysis of a graph: statistics, correlations and overlaps, PageRank mass, heaviest paths,
plots and text. Imports `pruning`, `scoring`, `centrality`, `graph` and below.
"""
from .core import (summary, graph_info, layer_stats, top_neurons, correlations, overlap, mass_by_layer, heaviest_paths, baseline_scores, available_baselines, centrality_scores, inspect_graph, InspectReport, CENTRALITIES, DEFAULT_CENTRALITIES, BASELINES, CORRELATIONS, QUANTILES, PATH_WEIGHTS, TOP_K, DEFAULT_AMOUNT)

__all__ = ['summary', 'graph_info', 'layer_stats', 'top_neurons', 'correlations', 'overlap', 'mass_by_layer', 'heaviest_paths', 'baseline_scores', 'available_baselines', 'centrality_scores', 'inspect_graph', 'InspectReport', 'CENTRALITIES', 'DEFAULT_CENTRALITIES', 'BASELINES', 'CORRELATIONS', 'QUANTILES', 'PATH_WEIGHTS', 'TOP_K', 'DEFAULT_AMOUNT']
