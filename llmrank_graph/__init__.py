"""llmrank_graph: whole-MLP graphs of decoder LLMs, global centrality, and structured pruning."""

from ._version import __version__
from .architectures import ArchitectureSpec, UnsupportedArchitectureError, register_architecture
from .calibration import ActivationStats, calibrate
from .centrality import CentralityResult, ConvergenceError, backends, pagerank
from .graph import GraphFormatError, MLPGraph, export_graph, read_graph

__all__ = [
    "__version__", "ArchitectureSpec", "UnsupportedArchitectureError", "register_architecture",
    "ActivationStats", "calibrate", "CentralityResult", "ConvergenceError", "backends", "pagerank",
    "GraphFormatError", "MLPGraph", "export_graph", "read_graph", "load_model",
]


def __getattr__(name):
    # models.py pulls in transformers; import it only when asked.
    if name == "load_model":
        from .models import load_model

        return load_model
    raise AttributeError(f"module 'llmrank_graph' has no attribute {name!r}")
