"""Centrality algorithms on an :class:`~llmrank_graph.MLPGraph`, over pluggable backends.

Backends (see :func:`llmrank_graph.backends`): ``scipy`` (CPU reference), ``sweep`` (exact DAG
solver in torch, CPU or CUDA), ``cupy`` (GPU power iteration), ``cugraph`` and
``cugraph-dask`` (RAPIDS). One dispatcher (:func:`.backends.select_backend`) picks among
them. GPU libraries are imported only inside the backend that needs them.

Submodules: ``backends`` (registry and dispatcher), ``pagerank_alg`` (PageRank),
``algorithms`` (the other centralities and their registry), ``sweep``, ``scipy_backend``,
``cupy_backend``, ``cugraph_backend`` (the backends), ``_kernels`` (power iterations on
plain arrays). No function shadows a submodule of the same name.
"""

from . import backends
from . import scipy_backend as _scipy_backend  # noqa: F401  (registers 'scipy')
from . import sweep as _sweep  # noqa: F401  (registers 'sweep')
from . import cupy_backend as _cupy_backend  # noqa: F401  (registers 'cupy')
from . import cugraph_backend as _cugraph_backend  # noqa: F401  (registers 'cugraph', 'cugraph-dask')
from ._kernels import ConvergenceError
from ..base.result import CentralityResult
from .algorithms import HITS_VECTORS, STRENGTH_DIRECTIONS, centralities, degree, eigenvector, get_centrality, hits, hits_pair, katz, strength
from .backends import (BackendUnavailableError, NoBackendError, backend_names, get_backend, register_backend,
                       select_backend)
from .cugraph_backend import GPUMemoryError
from .pagerank_alg import DIRECTIONS, TELEPORTS, pagerank

list_backends = backends.backends

__all__ = ["CentralityResult", "pagerank", "katz", "hits", "hits_pair", "eigenvector", "strength", "degree",
           "centralities", "get_centrality", "list_backends", "get_backend", "register_backend", "select_backend",
           "backend_names", "BackendUnavailableError", "NoBackendError", "ConvergenceError", "GPUMemoryError",
           "DIRECTIONS", "TELEPORTS", "STRENGTH_DIRECTIONS", "HITS_VECTORS"]
