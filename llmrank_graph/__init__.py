"""llmrank_graph: whole-MLP graphs of decoder LLMs, global centrality, and structured pruning."""

from ._version import __version__
from .architectures import ArchitectureSpec, UnsupportedArchitectureError, register_architecture
from .calibration import ActivationStats, calibrate
from .centrality import (CentralityResult, ConvergenceError, GPUMemoryError, centralities, degree, eigenvector, hits,
                         hits_pair, katz, pagerank, strength)
from .centrality.backends import backends
from .errors import LLMRankGraphError
from .graph import DEFAULT_EXPORT, ExportOptions, GraphFormatError, MLPGraph, export_graph, read_graph
from .masks import NeuronMask, allocate
from .pruning import PruneResult, apply_mask, load_pruned, prune_model, save_pruned
from .scoring import NeuronScores, score_neurons, scorers

__all__ = [
    "__version__", "ArchitectureSpec", "UnsupportedArchitectureError", "register_architecture",
    "ActivationStats", "calibrate", "CentralityResult", "ConvergenceError", "backends", "pagerank",
    "GraphFormatError", "LLMRankGraphError", "ExportOptions", "DEFAULT_EXPORT", "MLPGraph", "export_graph", "read_graph", "load_model", "NeuronMask", "allocate",
    "PruneResult", "apply_mask", "load_pruned", "prune_model", "save_pruned", "NeuronScores", "score_neurons",
    "scorers", "perplexity", "count_parameters", "GPUMemoryError", "centralities", "degree", "eigenvector",
    "hits", "hits_pair", "katz", "strength", "export_graph_from_safetensors",
]


def __getattr__(name):
    # models.py pulls in transformers; import it only when asked.
    if name == "load_model":
        from .models import load_model

        return load_model
    if name == "export_graph_from_safetensors":
        from .streaming import export_graph_from_safetensors

        return export_graph_from_safetensors
    if name in ("perplexity", "count_parameters"):
        from . import evaluation

        return getattr(evaluation, name)
    raise AttributeError(f"module 'llmrank_graph' has no attribute {name!r}")
