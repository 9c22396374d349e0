"""llmrank_graph: whole-MLP graphs of decoder LLMs, global centrality, and structured pruning.

The package is laid out by stage, each importing only the stages below it:
``base`` -> ``models`` -> ``data`` -> ``compensation`` -> ``kernels`` -> ``graph`` ->
``centrality`` -> ``scoring`` -> ``pruning`` -> ``analysis`` -> ``experiments`` -> ``cli``.
"""

import importlib

from ._version import __version__
from .centrality import (
    CentralityResult,
    ConvergenceError,
    GPUMemoryError,
    centralities,
    degree,
    eigenvector,
    hits,
    hits_pair,
    katz,
    pagerank,
    strength,
)
from .centrality.backends import backends
from .data import ActivationStats, calibrate, count_parameters, perplexity
from .errors import LLMRankGraphError
from .graph import (
    DEFAULT_EXPORT,
    ExportOptions,
    GraphFormatError,
    MLPGraph,
    export_graph,
    export_graph_from_safetensors,
    read_graph,
)
from .models import ArchitectureSpec, UnsupportedArchitectureError, load_model, register_architecture
from .pruning import (
    HeadMask,
    NeuronMask,
    PruneResult,
    allocate,
    apply_mask,
    load_pruned,
    prune_model,
    remove_heads,
    save_pruned,
)
from .scoring import NeuronScores, score_neurons, scorers

__all__ = [
    "__version__", "ArchitectureSpec", "UnsupportedArchitectureError", "register_architecture",
    "ActivationStats", "calibrate", "CentralityResult", "ConvergenceError", "backends", "pagerank",
    "GraphFormatError", "LLMRankGraphError", "ExportOptions", "DEFAULT_EXPORT", "MLPGraph", "export_graph",
    "read_graph", "load_model", "NeuronMask", "allocate", "PruneResult", "apply_mask", "load_pruned", "prune_model",
    "save_pruned", "NeuronScores", "score_neurons", "scorers", "perplexity", "count_parameters", "GPUMemoryError",
    "centralities", "degree", "eigenvector", "hits", "hits_pair", "katz", "strength", "export_graph_from_safetensors",
    "HeadMask", "remove_heads",
]

# Modules that moved into the stage subpackages: ``lg.calibration`` and the like still resolve,
# through the deprecated re-export modules, for one release.
_MOVED = ("architectures", "saved_format", "calibration", "evaluation", "blocks", "storage", "streaming", "viewer",
          "masks", "sequential", "report")


def __getattr__(name):
    if name in _MOVED:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'llmrank_graph' has no attribute {name!r}")
