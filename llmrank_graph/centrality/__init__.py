"""Centrality algorithms on an :class:`~llmrank_graph.MLPGraph`, over pluggable backends.

Backends (see :func:`backends`): ``scipy`` (CPU reference), ``sweep`` (exact DAG solver in
torch, CPU or CUDA), ``cupy`` (GPU power iteration), ``cugraph`` and ``cugraph-dask``
(RAPIDS). GPU libraries are imported only inside the backend that needs them.
"""

from ._kernels import ConvergenceError
from ._result import CentralityResult
from .backends import BackendUnavailableError, backend_names, backends, get_backend, register_backend
from . import scipy_backend as _scipy_backend  # noqa: F401  (registers 'scipy')
from . import sweep as _sweep  # noqa: F401  (registers 'sweep')
from . import cupy_backend as _cupy_backend  # noqa: F401  (registers 'cupy')
from . import cugraph_backend as _cugraph_backend  # noqa: F401  (registers 'cugraph', 'cugraph-dask')
from .cugraph_backend import GPUMemoryError
from .pagerank import DIRECTIONS, pagerank
from .centralities import centralities, degree, eigenvector, get_centrality, hits, hits_pair, katz, strength

__all__ = ["CentralityResult", "pagerank", "katz", "hits", "hits_pair", "eigenvector", "strength", "degree",
           "centralities", "get_centrality", "backends", "get_backend", "register_backend",
           "BackendUnavailableError", "ConvergenceError", "GPUMemoryError", "DIRECTIONS", "backend_names"]
