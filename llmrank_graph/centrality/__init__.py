"""Centrality algorithms on an :class:`~llmrank_graph.MLPGraph`, over pluggable backends.

Backends (see :func:`llmrank_graph.backends`): ``scipy`` (CPU reference), ``sweep`` (exact DAG
solver in torch, CPU or CUDA), ``cupy`` (GPU power iteration), ``cugraph`` and
``cugraph-dask`` (RAPIDS). One dispatcher (:func:`.backends.select_backend`) picks among
them. GPU libraries are imported only inside the backend that needs them.

Submodules: ``registry`` (one :class:`~.registry.Centrality` entry per centrality: function,
stored column, the library's defaults, backends; everyone who takes a centrality by name reads
it), ``backends`` (backend registry and dispatcher), ``pagerank_alg`` (PageRank),
``algorithms`` (the other centralities), ``sweep``, ``scipy_backend``, ``cupy_backend``,
``cugraph_backend`` (the backends), ``_kernels`` (power iterations on plain arrays). No
function shadows a submodule of the same name.

Importing this package also registers the centralities with the viewer of the graph stage
(:func:`llmrank_graph.graph.viewer.register_score_source`), so that
``MLPGraph.to_networkx(score="pagerank")`` works without the graph stage importing this one.

Imports ``graph``, ``kernels``, ``base`` and below; never ``scoring`` or a stage above it.
"""

# The backends register themselves when imported; the order of these imports is the order
# in which llmrank_graph.backends() lists them.
# isort: off
from . import backends
from . import scipy_backend as _scipy_backend  # noqa: F401  (registers 'scipy')
from . import sweep as _sweep  # noqa: F401  (registers 'sweep')
from . import cupy_backend as _cupy_backend  # noqa: F401  (registers 'cupy')
from . import cugraph_backend as _cugraph_backend  # noqa: F401  (registers 'cugraph', 'cugraph-dask')
# isort: on
from ..base.result import CentralityResult
from ..graph.viewer import ScoreSource, register_score_source
from ._kernels import ConvergenceError
from .algorithms import (
    HITS_VECTORS,
    STRENGTH_DIRECTIONS,
    centralities,
    degree,
    eigenvector,
    get_centrality,
    hits,
    hits_pair,
    influence,
    katz,
    strength,
)
from .backends import (
    BackendUnavailableError,
    NoBackendError,
    backend_names,
    get_backend,
    register_backend,
    select_backend,
)
from .cugraph_backend import GPUMemoryError
from .pagerank_alg import DIRECTIONS, TELEPORTS, pagerank
from .registry import (
    Centrality,
    centrality_entries,
    centrality_entry,
    centrality_names,
    node_scores,
    register_centrality,
)

list_backends = backends.backends

# score="<centrality>" in the viewer: the graph stage asks through this hook instead of importing us
register_score_source(ScoreSource("a centrality", centrality_names, node_scores))

__all__ = ["CentralityResult", "pagerank", "katz", "hits", "hits_pair", "eigenvector", "strength", "degree",
           "influence", "centralities", "get_centrality", "list_backends", "get_backend", "register_backend",
           "select_backend", "backend_names", "BackendUnavailableError", "NoBackendError", "ConvergenceError",
           "GPUMemoryError", "DIRECTIONS", "TELEPORTS", "STRENGTH_DIRECTIONS", "HITS_VECTORS", "Centrality",
           "centrality_entry", "centrality_entries", "centrality_names", "register_centrality"]
