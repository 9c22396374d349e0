"""RAPIDS cuGraph backends: one GPU (``cugraph``) and several GPUs through Dask (``cugraph-dask``).

Thin by design: the edge list becomes a cuDF frame (``src, dst, weight``), cuGraph builds the
graph with ``renumber=False`` (our vertex ids are contiguous from 0) and runs its algorithm;
this module only translates conventions and errors.

Convention translations (checked against cuGraph's source, ``cpp/src/link_analysis`` and
``cpp/src/centrality``):

- **Tolerances.** We follow networkx: stop when the L1 change is below ``n * tol``. cuGraph's
  PageRank and Katz stop when the L1 change is below ``tol`` itself, so they get
  ``n * tol``. Its eigenvector centrality already uses ``n * tol``, so ``tol`` is passed as is.
- **Dangling nodes.** With a personalization vector cuGraph sends dangling mass along it
  (networkx's default); it has no separate ``dangling`` vector, so asking for one raises
  instead of being ignored.
- **Katz direction.** cuGraph's docstring says it computes out-edge Katz on directed graphs,
  the opposite of networkx. Its implementation, however, sums over *incoming* edges
  (``per_v_transform_reduce_incoming_e`` on the transposed graph) and cuGraph's own test
  compares it with ``networkx.katz_centrality`` on the same DiGraph without reversing it.
  We follow the implementation (:data:`CUGRAPH_KATZ_USES_IN_EDGES`); if a cuGraph release
  really counts out-edges, flip that constant and the edges are reversed before the call.
  The GPU test ``test_backend_matches_reference[cugraph-katz-...]`` catches either case.
- **HITS** in cuGraph ignores edge weights, so it is not offered here (weighted HITS runs on
  ``scipy`` or ``cupy``).
- **Precision.** Weights are sent as float64 so that cuGraph iterates in double precision,
  like the scipy reference (float32 cannot reach ``n * tol`` on small graphs).

None of this could be run on the project's GPU machine (RAPIDS cannot be installed there);
the calls are tested with stand-in ``cudf``/``cugraph`` modules (tests/test_backends.py).
"""

from __future__ import annotations

import logging
import os

import numpy as np

from ..base import optional
from ..base.optional import GPU_EXTRA, cuda_available
from ..base.result import exact_result, iterated_result
from ..errors import WorkFailedError
from . import backends as _backends
from ._kernels import ConvergenceError
from .backends import Backend, register_backend

logger = logging.getLogger(__name__)

__all__ = ["CugraphBackend", "CugraphDaskBackend", "GPUMemoryError", "CUGRAPH_KATZ_USES_IN_EDGES"]

#: cuGraph's Katz sums over incoming edges (as networkx) despite its docstring; see module doc.
CUGRAPH_KATZ_USES_IN_EDGES = True


class GPUMemoryError(WorkFailedError, MemoryError):
    """cuGraph ran out of GPU memory."""


#: cuGraph on one GPU declines (``can_run``) when the edge list would take more than this
#: fraction of the GPU's free memory (``BYTES_PER_EDGE`` per edge: int32 ids and float64
#: weights in the cuDF frame, plus cuGraph's own CSC copy); ``auto`` then moves on to
#: ``cugraph-dask``.
DASK_SWITCH_FRACTION = 0.5
BYTES_PER_EDGE = 48


def too_big_for_one_gpu(graph) -> str | None:
    """Why the edge list of ``graph`` does not fit on this GPU, or None."""
    free = _backends.cuda_free_memory()
    need = graph.n_edges * BYTES_PER_EDGE
    if free is not None and need > DASK_SWITCH_FRACTION * free:
        return (f"edge list needs ~{need / 2**30:.1f} GiB, more than {DASK_SWITCH_FRACTION:.0%} of the "
                f"{free / 2**30:.1f} GiB free on the GPU")
    return None


def _same_vector(a, b) -> bool:
    return a is b or np.array_equal(a, b)


def _cugraph_reason(*modules: str) -> str | None:
    missing = [m for m in modules if not optional.has_module(m)]
    if missing:
        return f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed"
    if not cuda_available():
        # `import cudf` works without a GPU; building a frame then fails, so check first.
        return "no CUDA GPU is visible"
    return None


def _map_error(exc: BaseException, algorithm: str, backend: str) -> BaseException:
    """Our exception for a cuGraph one, recognised by class; others pass through unchanged.

    - ``cugraph.exceptions.FailedToConvergeError``, which cuGraph's algorithms raise when the
      power iteration stops at ``max_iter``, becomes :class:`ConvergenceError`;
    - ``MemoryError``, which RMM raises when a GPU allocation fails (its ``rmm::out_of_memory``
      derives from ``std::bad_alloc``, which Python bindings turn into ``MemoryError``), becomes
      :class:`GPUMemoryError` with the ways out.

    One case has no class of its own: ``katz_centrality`` and ``eigenvector_centrality`` call
    pylibcugraph directly, whose C API reports every failure, non-convergence included, as a
    ``RuntimeError`` carrying libcugraph's message. That one is recognised by its message, here
    and nowhere else.
    """
    from cugraph.exceptions import FailedToConvergeError  # only reached after cuGraph ran

    c_api_no_convergence = type(exc) is RuntimeError and "failed to converge" in str(exc).lower()
    if isinstance(exc, FailedToConvergeError) or c_api_no_convergence:
        return ConvergenceError(f"{algorithm} on backend {backend!r} did not converge ({exc or 'no message'}); "
                                "raise `max_iter` or `tol`")
    if isinstance(exc, MemoryError):
        return GPUMemoryError(f"{algorithm} on backend {backend!r} ran out of GPU memory ({exc}); use "
                              "backend='cugraph-dask' (several GPUs), 'sweep' (PageRank/Katz, one layer at a time) "
                              "or a sparsified graph (export_graph(..., keep=...))")
    return exc


def edge_arrays(graph, direction: str = "forward"):
    """``(src, dst, weight)`` numpy arrays for cuGraph: int32 ids when they fit, float64 weights.

    ``direction='reverse'`` swaps sources and destinations. When the highest vertex id has no
    edge (a sparsified graph), a zero-weight self-loop on it is added so that cuGraph, which
    sizes the graph from the largest id with ``renumber=False``, sees every vertex; a node
    with only zero-weight out-edges is dangling for cuGraph and networkx alike.
    """
    e = graph.edges
    n = graph.n_nodes
    vt = np.int32 if n < 2**31 else np.int64
    src, dst = e["src"].to_numpy().astype(vt), e["dst"].to_numpy().astype(vt)
    w = e["weight"].to_numpy().astype(np.float64)
    if direction == "reverse":
        src, dst = dst, src
    if n and (len(src) == 0 or max(int(src.max()), int(dst.max())) < n - 1):
        src, dst = np.append(src, vt(n - 1)), np.append(dst, vt(n - 1))
        w = np.append(w, 0.0)
    return src, dst, w


def _scatter(df, column: str, n: int) -> np.ndarray:
    """Scores of a cuDF result frame (``vertex``, ``column``) as a dense float64 array."""
    v = np.asarray(df["vertex"].to_numpy(), dtype=np.int64)
    x = np.zeros(n)
    x[v] = np.asarray(df[column].to_numpy(), dtype=np.float64)
    return x


def _vertex_frame(cudf, values: np.ndarray, vertex_dtype):
    return cudf.DataFrame({"vertex": np.arange(len(values), dtype=vertex_dtype),
                           "values": np.asarray(values, dtype=np.float64)})


class CugraphBackend(Backend):
    """cuGraph on one GPU: PageRank, Katz, eigenvector centrality, degree."""

    name = "cugraph"
    algorithms = ("pagerank", "katz", "eigenvector", "degree")
    description = "RAPIDS cuGraph on one GPU (cuDF edge list, renumber=False)"
    extra = GPU_EXTRA

    def unavailable_reason(self):
        return _cugraph_reason("cudf", "cugraph")

    def can_run(self, graph, algorithm, **params):
        """Refuses what cuGraph cannot honour, and graphs whose edge list outgrows the GPU."""
        why = super().can_run(graph, algorithm, **params)
        if why is not None:
            return why
        if algorithm == "pagerank" and not _same_vector(params.get("dangling"), params.get("personalization")):
            return ("it sends dangling mass along the personalization and has no separate `dangling` vector; "
                    "use backend='sweep' or 'scipy' for `dangling`")
        if algorithm == "katz":
            if params.get("normalized") is False:
                return ("it always normalises Katz scores (its `normalized` is documented as not supported); "
                        "use backend='sweep' or 'scipy' for normalized=False")
            if params.get("nstart") is not None:
                return ("it does not forward `nstart` for Katz (cuGraph hands it to the solver as per-vertex "
                        "betas); use backend='scipy'")
            beta = np.asarray(params.get("beta", 1.0), dtype=np.float64).reshape(-1)
            if beta.size and not np.all(beta == beta[0]):
                return "it takes one scalar `beta` for Katz; use backend='sweep' or 'scipy' for a per-node beta"
        if algorithm == "eigenvector" and params.get("nstart") is not None:
            return "it takes no `nstart` for eigenvector centrality; use backend='scipy'"
        return too_big_for_one_gpu(graph)

    @staticmethod
    def _modules():
        import cudf
        import cugraph

        return cudf, cugraph

    def _graph(self, graph, direction: str = "forward", directed: bool = True):
        cudf, cugraph = self._modules()
        src, dst, w = edge_arrays(graph, direction)
        df = cudf.DataFrame({"src": src, "dst": dst, "weight": w})
        G = cugraph.Graph(directed=directed)
        G.from_cudf_edgelist(df, source="src", destination="dst", edge_attr="weight",
                             store_transposed=True, renumber=False)
        return G, src.dtype

    def pagerank(self, graph, *, alpha, personalization, dangling, direction, tol, max_iter, nstart):
        # `dangling` equals the personalization here: can_run refused anything else.
        cudf, cugraph = self._modules()
        n = graph.n_nodes
        try:
            G, vt = self._graph(graph, direction)
            pers = _vertex_frame(cudf, personalization, vt)
            start = None if nstart is None else _vertex_frame(cudf, nstart, vt)
            df, converged = cugraph.pagerank(G, alpha=alpha, personalization=pers, max_iter=max_iter, tol=n * tol,
                                             nstart=start, fail_on_nonconvergence=False)
        except Exception as e:
            raise _map_error(e, "PageRank", self.name) from e
        if not converged:
            raise ConvergenceError(f"PageRank on backend {self.name!r} did not converge in `max_iter`={max_iter} "
                                   f"iterations (L1 change >= n * tol = {n * tol:.3g}); raise `max_iter` or `tol`")
        x = _scatter(df, "pagerank", n)
        return iterated_result(x / x.sum(), None, self.name, "pagerank")  # cuGraph reports no iteration count

    def katz(self, graph, *, alpha, beta, direction, tol, max_iter, nstart, normalized):
        # normalized=True, nstart=None and a constant beta: can_run refused anything else.
        beta = np.asarray(beta, dtype=np.float64)
        if not CUGRAPH_KATZ_USES_IN_EDGES:  # pragma: no cover - see module docstring
            direction = "reverse" if direction == "forward" else "forward"
        _, cugraph = self._modules()
        n = graph.n_nodes
        try:
            G, _vt = self._graph(graph, direction)
            df = cugraph.katz_centrality(G, alpha=alpha, beta=float(beta[0]), max_iter=max_iter, tol=n * tol,
                                         nstart=None, normalized=True)
        except Exception as e:
            raise _map_error(e, "Katz", self.name) from e
        x = _scatter(df, "katz_centrality", n)
        norm = np.linalg.norm(x)  # idempotent when cuGraph already normalised
        return iterated_result(x / norm if norm > 0 else x, None, self.name, "katz")

    def eigenvector(self, graph, *, tol, max_iter, nstart):
        _, cugraph = self._modules()
        n = graph.n_nodes
        try:
            G, _vt = self._graph(graph, "forward", directed=False)
            # cuGraph already stops at L1 change < n * tol, as networkx.
            df = cugraph.eigenvector_centrality(G, max_iter=max_iter, tol=tol)
        except Exception as e:
            raise _map_error(e, "eigenvector centrality", self.name) from e
        return iterated_result(_scatter(df, "eigenvector_centrality", n), None, self.name, "eigenvector")

    def degree(self, graph, *, direction):
        try:
            G, _vt = self._graph(graph, "forward")
            df = G.in_degree() if direction == "in" else G.out_degree()
        except Exception as e:
            raise _map_error(e, "degree", self.name) from e
        x = _scatter(df, "degree", graph.n_nodes)
        e = graph.edges
        n = graph.n_nodes
        if n and (len(e) == 0 or max(int(e["src"].max()), int(e["dst"].max())) < n - 1):
            x[n - 1] = 0.0  # the zero-weight self-loop added by edge_arrays is not an edge
        return exact_result(x, self.name, f"{direction}_degree")


class CugraphDaskBackend(Backend):
    """cuGraph on several GPUs through Dask (``cugraph.dask``), for graphs one GPU cannot hold.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:8786``). Default: the environment
        variable ``LLMRANK_GRAPH_DASK_SCHEDULER``; else an existing default client; else a
        ``dask_cuda.LocalCUDACluster`` over the GPUs of this machine, started on first use.

    Example
    -------
    The last two lines need several GPUs and a Dask scheduler, so they are skipped as tests:

    >>> from llmrank_graph.centrality import register_backend
    >>> from llmrank_graph.centrality.cugraph_backend import CugraphDaskBackend
    >>> register_backend(CugraphDaskBackend(scheduler="tcp://scheduler:8786"))  # doctest: +SKIP
    >>> pagerank(graph, backend="cugraph-dask")                                 # doctest: +SKIP
    """

    name = "cugraph-dask"
    algorithms = ("pagerank",)
    description = "RAPIDS cuGraph on several GPUs (dask_cudf edge list, LocalCUDACluster or a scheduler)"
    extra = GPU_EXTRA

    def __init__(self, scheduler: str | None = None):
        self.scheduler = scheduler
        self._client = None
        self._cluster = None

    def unavailable_reason(self):
        return _cugraph_reason("cudf", "cugraph", "dask_cudf", "dask_cuda")

    def can_run(self, graph, algorithm, **params):
        why = super().can_run(graph, algorithm, **params)
        if why is None and not _same_vector(params.get("dangling"), params.get("personalization")):
            return ("it sends dangling mass along the personalization and has no separate `dangling` vector; "
                    "use backend='sweep' or 'scipy' for `dangling`")
        return why

    def should_run(self, graph, algorithm, **params):
        # A Dask cluster pays off only when one GPU cannot hold the edge list.
        if too_big_for_one_gpu(graph) is None:
            return "the edge list fits on one GPU (backend 'cugraph' is faster there)"
        return None

    def client(self):
        """The Dask client (created once) with cuGraph's communicator initialised."""
        if self._client is None:
            from dask.distributed import Client, default_client

            address = self.scheduler or os.environ.get("LLMRANK_GRAPH_DASK_SCHEDULER")
            if address:
                self._client = Client(address)
            else:
                try:
                    self._client = default_client()
                except ValueError:  # no client yet
                    from dask_cuda import LocalCUDACluster

                    self._cluster = LocalCUDACluster()
                    self._client = Client(self._cluster)
            from cugraph.dask.comms import comms as Comms

            Comms.initialize(p2p=True)
            logger.debug("cugraph-dask: client %r", self._client)
        return self._client

    def pagerank(self, graph, *, alpha, personalization, dangling, direction, tol, max_iter, nstart):
        import cudf
        import cugraph
        import cugraph.dask as dcg
        import dask.dataframe as dd

        n = graph.n_nodes
        try:
            client = self.client()
            n_workers = max(1, len(client.scheduler_info().get("workers", {})))
            src, dst, w = edge_arrays(graph, direction)
            import pandas as pd

            ddf = dd.from_pandas(pd.DataFrame({"src": src, "dst": dst, "weight": w}),
                                 npartitions=n_workers).to_backend("cudf")
            G = cugraph.Graph(directed=True)
            G.from_dask_cudf_edgelist(ddf, source="src", destination="dst", edge_attr="weight",
                                      store_transposed=True, renumber=False)
            pers = _vertex_frame(cudf, personalization, src.dtype)
            start = None if nstart is None else _vertex_frame(cudf, nstart, src.dtype)
            res = dcg.pagerank(G, alpha=alpha, personalization=pers, max_iter=max_iter, tol=n * tol, nstart=start)
            df = res.compute()
        except Exception as e:
            raise _map_error(e, "PageRank", self.name) from e
        x = _scatter(df, "pagerank", n)
        return iterated_result(x / x.sum(), None, self.name, "pagerank")


register_backend(CugraphBackend())
register_backend(CugraphDaskBackend())
