"""Centrality algorithms on an :class:`~llmrank_graph.MLPGraph`, over pluggable backends."""

from ._result import CentralityResult
from .backends import BackendUnavailableError, backends, get_backend, register_backend
from . import scipy_backend as _scipy_backend  # noqa: F401  (registers 'scipy')
from . import sweep as _sweep  # noqa: F401  (registers 'sweep')
from .pagerank import pagerank
from .scipy_backend import ConvergenceError

__all__ = ["CentralityResult", "pagerank", "backends", "get_backend", "register_backend",
           "BackendUnavailableError", "ConvergenceError"]
