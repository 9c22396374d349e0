"""Every registered backend against the scipy reference and networkx, backend selection, and
the GPU backends' code exercised on CPU through stand-in ``cupy``/``cudf``/``cugraph`` modules."""

from __future__ import annotations

import importlib
import importlib.machinery
import logging
import sys
import types

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from numpy.testing import assert_allclose

import llmrank_graph
from llmrank_graph import centrality as C
from llmrank_graph import export_graph
from llmrank_graph.base import optional as opt
from llmrank_graph.centrality import backends as B  # the registry and the one dispatcher
from llmrank_graph.centrality import cugraph_backend as CG
from llmrank_graph.centrality import cupy_backend as CP
from llmrank_graph.centrality.backends import BackendUnavailableError, select_backend

try:  # the GPU machine may lack networkx: then the shared test compares with scipy only
    import networkx as nx
except ImportError:  # pragma: no cover
    nx = None


# ----------------------------------------------------------------------------- graphs and references
@pytest.fixture(params=[("chained", 0.0), ("isolated", 0.0), ("chained", 0.5)], ids=["chained", "isolated", "residual"])
def graph(request, tiny_llama):
    mode, residual = request.param
    return export_graph(tiny_llama, mode=mode, residual=residual)


def to_nx(graph, direction="forward"):
    e = graph.edges
    G = nx.DiGraph()
    G.add_nodes_from(range(graph.n_nodes))
    src, dst = e["src"].tolist(), e["dst"].tolist()
    if direction == "reverse":
        src, dst = dst, src
    G.add_weighted_edges_from(zip(src, dst, e["weight"].astype(float).tolist()))
    return G


def vec(d, n):
    return np.array([d[i] for i in range(n)])


def reference(graph, algorithm, direction):
    """networkx's answer for each algorithm of the shared test."""
    n = graph.n_nodes
    G = to_nx(graph, direction)
    if algorithm == "pagerank":
        return vec(nx.pagerank(G, alpha=0.85, tol=1e-13, max_iter=2000), n)
    if algorithm == "katz":
        return vec(nx.katz_centrality(G, alpha=0.2, beta=1.0, weight="weight", tol=1e-13), n)
    if algorithm == "hits":
        h, a = nx.hits(G, tol=1e-12)
        return np.concatenate([vec(h, n), vec(a, n)])
    if algorithm == "eigenvector":
        # tol=1e-14: the backends solve with Lanczos (exact to rounding); networkx's power iteration
        # stopped at tol=1e-12 is still 2e-10 away on the isolated graph's smaller components.
        return vec(nx.eigenvector_centrality(G.to_undirected(), weight="weight", tol=1e-14, max_iter=100000), n)
    if algorithm == "strength":
        return vec(dict(G.in_degree(weight="weight")), n)
    if algorithm == "degree":
        return vec(dict(G.in_degree()), n)
    raise AssertionError(algorithm)


def run(graph, algorithm, backend, direction, **kw):
    if algorithm == "pagerank":
        return C.pagerank(graph, direction=direction, backend=backend, tol=1e-13, max_iter=2000, **kw).scores
    if algorithm == "katz":
        return C.katz(graph, alpha=0.2, direction=direction, backend=backend, tol=1e-13, **kw).scores
    if algorithm == "hits":
        h, a = C.hits_pair(graph, backend=backend, tol=1e-12, max_iter=20000)
        return np.concatenate([h.scores, a.scores])
    if algorithm == "eigenvector":
        return C.eigenvector(graph, backend=backend, tol=1e-12, max_iter=20000).scores
    if algorithm == "strength":
        return C.strength(graph, "in", backend=backend, **kw).scores
    if algorithm == "degree":
        return C.degree(graph, "in", backend=backend).scores
    raise AssertionError(algorithm)


ALGORITHMS = ("pagerank", "katz", "hits", "eigenvector", "strength", "degree")
DIRECTED = ("pagerank", "katz")  # the ones with a `direction`
# Every (backend, algorithm) pair the registry offers, so a new backend is tested automatically.
CASES = [(name, algo, d) for name, b in B.registered().items() for algo in ALGORITHMS if b.implements(algo)
         for d in (("forward", "reverse") if algo in DIRECTED else ("forward",))]


@pytest.mark.parametrize("backend,algorithm,direction", CASES, ids=["-".join(c) for c in CASES])
def test_backend_matches_reference(backend, algorithm, direction, graph):
    """One shared test: every registered backend, every algorithm it implements, both
    directions, against networkx and the scipy reference on the same graphs."""
    reason = B.get_backend(backend).unavailable_reason()
    if reason is not None:
        pytest.skip(f"backend {backend!r} unavailable: {reason}")
    got = run(graph, algorithm, backend, direction)
    ref = run(graph, algorithm, "scipy", direction)
    want = reference(graph, algorithm, direction) if nx is not None else ref
    # HITS: networkx uses ARPACK (svds), we iterate; both are exact to ~1e-9 of the largest value.
    atol = 1e-9 * np.abs(want).max() if algorithm == "hits" else 1e-10 * np.abs(want).max()
    assert_allclose(got, want, rtol=1e-6, atol=atol)
    assert_allclose(got, ref, rtol=1e-6, atol=atol)
    k = 10
    assert set(np.argsort(-got)[:k]) == set(np.argsort(-want)[:k])


@pytest.mark.gpu
@pytest.mark.parametrize("algorithm", ["pagerank", "katz", "strength"])
def test_sweep_on_cuda_matches_cpu(tiny_llama, algorithm):
    g = export_graph(tiny_llama, residual=0.25)
    kw = {"device": "cuda"}
    got = run(g, algorithm, "sweep", "forward", **kw)
    assert_allclose(got, run(g, algorithm, "scipy", "forward"), rtol=1e-8, atol=1e-14)


@pytest.mark.gpu
def test_sweep_uses_weights_already_on_cuda(tiny_llama):
    model = tiny_llama.to("cuda")
    g = export_graph(model)
    assert g.blocks[0].weights[0].is_cuda
    got = C.pagerank(g, backend="sweep", device="cuda").scores
    ref = C.pagerank(export_graph(model.to("cpu")), backend="scipy", tol=1e-13).scores
    assert_allclose(got, ref, rtol=1e-8)


# ----------------------------------------------------------------------------- selection and errors
def test_backends_lists_every_backend_with_reason():
    info = {b["name"]: b for b in llmrank_graph.backends()}
    assert {"scipy", "sweep", "cupy", "cugraph", "cugraph-dask"} <= set(info)
    for b in info.values():
        assert b["available"] == (b["reason"] is None)
        assert b["reason"] == B.get_backend(b["name"]).unavailable_reason()
    assert info["scipy"]["available"] and info["sweep"]["available"]
    assert info["cugraph"]["extra"] == "gpu" and info["cupy"]["extra"] == "gpu"


def test_unknown_backend_lists_registered_names(tiny_llama):
    g = export_graph(tiny_llama)
    with pytest.raises(ValueError, match=r"`backend` must be one of 'auto', 'scipy', 'sweep'.*got 'nope'"):
        C.pagerank(g, backend="nope")


def test_backend_without_the_algorithm(tiny_llama):
    g = export_graph(tiny_llama)
    with pytest.raises(ValueError, match="'sweep' does not implement hits; use one of 'auto', 'scipy', 'cupy'"):
        C.hits(g, backend="sweep")


@pytest.mark.parametrize("name", ["cupy", "cugraph", "cugraph-dask"])
def test_unavailable_backend_names_the_extra(name, tiny_llama, monkeypatch):
    b = B.get_backend(name)
    monkeypatch.setattr(type(b), "unavailable_reason", lambda self: "no CUDA GPU is visible")
    with pytest.raises(BackendUnavailableError, match=r"not available: no CUDA GPU is visible; install it with "
                                                      r"`pip install llmrank-graph\[gpu\]`"):
        C.pagerank(export_graph(tiny_llama), backend=name)


def test_device_only_for_sweep(tiny_llama):
    g = export_graph(tiny_llama)
    with pytest.raises(ValueError,
                       match=r"`device` applies only to backends that take it \('sweep'\).* backend='scipy'"):
        C.pagerank(g, backend="scipy", device="cpu")
    with pytest.raises(ValueError, match="`device` must be None, 'cpu', 'cuda'"):
        C.pagerank(g, backend="sweep", device="tpu:7")
    assert C.pagerank(g, device="cpu").backend == "sweep"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_cuda_device_without_gpu(tiny_llama):
    with pytest.raises(ValueError, match="`device` is 'cuda' but torch sees no CUDA GPU"):
        C.pagerank(export_graph(tiny_llama), backend="sweep", device="cuda")


def test_auto_choices_on_this_machine(tiny_llama, caplog):
    g = export_graph(tiny_llama)
    with caplog.at_level(logging.DEBUG, logger="llmrank_graph.centrality.backends"):
        assert C.pagerank(g).backend == "sweep"
        assert C.katz(g).backend == "sweep"
        assert C.strength(g).backend == "sweep"
    assert "pagerank: auto chose backend 'sweep' (first preference)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="llmrank_graph.centrality.backends"):
        h = C.hits(g)
    # cuGraph's HITS is unweighted, so it is not offered: cupy on a GPU, else scipy
    assert h.backend == ("cupy" if B.get_backend("cupy").available else "scipy")
    if h.backend == "scipy":
        assert f"hits: auto chose backend 'scipy' (cupy: {B.cupy_available()})" in caplog.text


def test_auto_skips_sweep_on_non_dag(tiny_llama, monkeypatch, caplog):
    g = export_graph(tiny_llama)
    monkeypatch.setattr(g, "is_dag_by_partition", lambda: False)
    with caplog.at_level(logging.DEBUG, logger="llmrank_graph.centrality.backends"):
        b = select_backend(g, "pagerank", "auto")
    assert b.name in ("cugraph", "cugraph-dask", "cupy", "scipy") and b.available
    assert "sweep: graph is not a partition-ordered DAG" in caplog.text
    with pytest.raises(ValueError, match="needs a DAG"):
        C.pagerank(g, backend="sweep")


# ----------------------------------------------------------------------------- stand-in GPU modules
def _module(name, **attrs):
    m = types.ModuleType(name)
    m.__spec__ = importlib.machinery.ModuleSpec(name, None)
    m.__dict__.update(attrs)
    return m


@pytest.fixture
def fake_cupy(monkeypatch):
    """``cupy``/``cupyx.scipy.sparse`` backed by numpy/scipy, so the cupy backend runs on CPU."""
    calls = {"csr": 0}

    def csr_matrix(m):
        calls["csr"] += 1
        assert sp.issparse(m)  # the backend copies the cached scipy CSR to the GPU
        return sp.csr_matrix(m)

    def eigsh(a, k=6, *, which="LM", v0=None, ncv=None, maxiter=None, tol=0, return_eigenvectors=True):
        # CuPy's signature and meaning, https://docs.cupy.dev/en/stable/reference/generated/
        # cupyx.scipy.sparse.linalg.eigsh.html: which is 'LM', 'LA' or 'SA'; tol=0 means machine precision.
        from scipy.sparse.linalg import eigsh as scipy_eigsh

        assert which in ("LM", "LA", "SA")
        calls["eigsh"] = calls.get("eigsh", 0) + 1
        return scipy_eigsh(a, k=k, which=which, v0=v0, ncv=ncv, maxiter=maxiter, tol=tol,
                           return_eigenvectors=return_eigenvectors)

    cupy = _module("cupy", asarray=np.asarray, asnumpy=np.asarray, full=np.full, zeros=np.zeros, ones=np.ones,
                   abs=np.abs, sqrt=np.sqrt, float64=np.float64, cuda=types.SimpleNamespace(is_available=lambda: True))
    cupyx = _module("cupyx")
    cupyx_scipy = _module("cupyx.scipy")
    cusparse = _module("cupyx.scipy.sparse", csr_matrix=csr_matrix)
    cusparse_linalg = _module("cupyx.scipy.sparse.linalg", eigsh=eigsh)
    cupyx.scipy, cupyx_scipy.sparse, cusparse.linalg = cupyx_scipy, cusparse, cusparse_linalg
    for name, mod in [("cupy", cupy), ("cupyx", cupyx), ("cupyx.scipy", cupyx_scipy), ("cupyx.scipy.sparse", cusparse),
                      ("cupyx.scipy.sparse.linalg", cusparse_linalg)]:
        monkeypatch.setitem(sys.modules, name, mod)
    B.cupy_available.cache_clear()
    yield calls
    B.cupy_available.cache_clear()


def test_cupy_availability_checks_for_a_gpu(fake_cupy, monkeypatch):
    assert B.cupy_available() is None
    monkeypatch.setattr(sys.modules["cupy"], "cuda", types.SimpleNamespace(is_available=lambda: False))
    B.cupy_available.cache_clear()
    assert B.cupy_available() == "CuPy is installed but sees no CUDA GPU"


@pytest.mark.parametrize("algorithm,direction", [("pagerank", "forward"), ("pagerank", "reverse"), ("katz", "forward"),
                                                  ("katz", "reverse"), ("hits", "forward"), ("eigenvector", "forward")])
def test_cupy_backend_code_on_cpu(fake_cupy, algorithm, direction, tiny_llama):
    g = export_graph(tiny_llama, mode="isolated", residual=0.3)
    got = run(g, algorithm, "cupy", direction)
    assert_allclose(got, run(g, algorithm, "scipy", direction), rtol=1e-12, atol=1e-15)
    assert fake_cupy["csr"] >= 1
    n_before = fake_cupy["csr"]
    run(g, algorithm, "cupy", direction)
    assert fake_cupy["csr"] == n_before  # GPU matrices are cached on the graph


def test_auto_prefers_cupy_for_edge_list_algorithms(fake_cupy, tiny_llama, monkeypatch):
    monkeypatch.setattr(CG.CugraphBackend, "unavailable_reason", lambda self: "not installed")
    g = export_graph(tiny_llama)
    assert C.eigenvector(g).backend == "cupy"
    assert C.hits(g).backend == "cupy"
    assert C.pagerank(g).backend == "sweep"  # exact sweep still first for PageRank


class FakeCugraph:
    """Stand-ins for ``cudf`` and ``cugraph`` that record every call and compute with cuGraph's
    documented conventions (absolute L1 tolerance, dangling mass along the personalization).

    Their signatures were compared with the RAPIDS 26.10 documentation, one page per call, listed
    in docs/gpu.md ("RAPIDS release targeted"); none of the keywords used here changed."""

    def __init__(self):
        self.calls = []
        self.converge = True
        self.raise_in = {}
        fake = self

        class Graph:
            def __init__(self, directed=False):
                fake.calls.append(("Graph", {"directed": directed}))
                self.directed = directed

            def from_cudf_edgelist(self, df, **kw):
                fake.calls.append(("from_cudf_edgelist", kw))
                self.df = fake.last_edges = df

            def from_dask_cudf_edgelist(self, ddf, **kw):
                fake.calls.append(("from_dask_cudf_edgelist", kw))
                self.df = ddf.df

            def _adj(self):
                d = self.df
                n = int(max(d["src"].max(), d["dst"].max())) + 1
                A = sp.csr_matrix((d["weight"].to_numpy(), (d["src"].to_numpy(), d["dst"].to_numpy())), shape=(n, n))
                return (A + A.T).tocsr() if not self.directed else A

            def in_degree(self):
                A = self._adj()
                return pd.DataFrame({"vertex": np.arange(A.shape[0]), "degree": A.getnnz(axis=0)})

            def out_degree(self):
                A = self._adj()
                return pd.DataFrame({"vertex": np.arange(A.shape[0]), "degree": A.getnnz(axis=1)})

        def pagerank(G, alpha=0.85, personalization=None, max_iter=100, tol=1e-5, nstart=None,
                     fail_on_nonconvergence=True, **kw):
            fake.calls.append(("pagerank", dict(alpha=alpha, personalization=personalization, max_iter=max_iter,
                                                tol=tol, nstart=nstart, fail_on_nonconvergence=fail_on_nonconvergence,
                                                **kw)))
            if "pagerank" in fake.raise_in:
                raise fake.raise_in["pagerank"]
            A = G._adj()
            n = A.shape[0]
            s = np.asarray(A.sum(1)).ravel()
            p = np.zeros(n)
            p[personalization["vertex"].to_numpy()] = personalization["values"].to_numpy()
            p /= p.sum()
            x = np.full(n, 1.0 / n) if nstart is None else nstart["values"].to_numpy() / nstart["values"].sum()
            PT = (sp.diags(np.divide(1.0, s, out=np.zeros(n), where=s > 0)) @ A).T
            for _ in range(max_iter):
                xl = x
                x = alpha * (PT @ x) + (alpha * x[s == 0].sum() + 1 - alpha) * p
                if np.abs(x - xl).sum() < tol:  # cuGraph: absolute L1 change
                    break
            df = pd.DataFrame({"vertex": np.arange(n)[::-1], "pagerank": x[::-1]})  # any order
            return (df, fake.converge) if not fail_on_nonconvergence else df

        def katz_centrality(G, alpha=None, beta=1.0, max_iter=100, tol=1e-6, nstart=None, normalized=True):
            fake.calls.append(("katz_centrality", dict(alpha=alpha, beta=beta, max_iter=max_iter, tol=tol,
                                                       nstart=nstart, normalized=normalized)))
            if "katz" in fake.raise_in:
                raise fake.raise_in["katz"]
            AT = G._adj().T.tocsr()  # in-edges, as cuGraph's implementation
            x = np.zeros(AT.shape[0])
            for _ in range(max_iter):
                xl, x = x, alpha * (AT @ x) + beta
                if np.abs(x - xl).sum() < tol:
                    break
            return pd.DataFrame({"vertex": np.arange(len(x)), "katz_centrality": x / np.linalg.norm(x)})

        def eigenvector_centrality(G, max_iter=100, tol=1e-6):
            fake.calls.append(("eigenvector_centrality", dict(max_iter=max_iter, tol=tol)))
            S = G._adj()
            x = np.full(S.shape[0], 1.0 / S.shape[0])
            for _ in range(max_iter):
                xl = x
                x = xl + S @ xl
                x /= np.linalg.norm(x)
                if np.abs(x - xl).sum() < S.shape[0] * tol:
                    break
            return pd.DataFrame({"vertex": np.arange(len(x)), "eigenvector_centrality": x})

        def DataFrame(data):
            fake.calls.append(("cudf.DataFrame", {k: np.asarray(v).dtype for k, v in data.items()}))
            return pd.DataFrame(data)

        self.cudf = _module("cudf", DataFrame=DataFrame)
        # cuGraph raises cugraph.exceptions.FailedToConvergeError when an algorithm stops at
        # max_iter (python/cugraph/cugraph/exceptions.py in rapidsai/cugraph; its pagerank.py
        # imports it from there).
        self.exceptions = _module("cugraph.exceptions",
                                  FailedToConvergeError=type("FailedToConvergeError", (Exception,), {}))
        self.cugraph = _module("cugraph", Graph=Graph, pagerank=pagerank, katz_centrality=katz_centrality,
                               eigenvector_centrality=eigenvector_centrality, exceptions=self.exceptions)

    def named(self, name):
        return [kw for n, kw in self.calls if n == name]


@pytest.fixture
def fake_cugraph(monkeypatch):
    f = FakeCugraph()
    monkeypatch.setitem(sys.modules, "cudf", f.cudf)
    monkeypatch.setitem(sys.modules, "cugraph", f.cugraph)
    monkeypatch.setitem(sys.modules, "cugraph.exceptions", f.exceptions)
    monkeypatch.setattr(CG, "cuda_available", lambda: True)
    return f


def test_cugraph_availability_detects_gpu_first(fake_cugraph, monkeypatch):
    assert CG.CugraphBackend().unavailable_reason() is None
    monkeypatch.setattr(CG, "cuda_available", lambda: False)
    assert CG.CugraphBackend().unavailable_reason() == "no CUDA GPU is visible"
    monkeypatch.delitem(sys.modules, "cugraph")
    monkeypatch.setattr(opt, "has_module", lambda name: name != "cugraph")  # the one place modules are looked up
    assert CG.CugraphBackend().unavailable_reason() == "cugraph is not installed"


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_cugraph_pagerank_calls(fake_cugraph, direction, tiny_llama):
    g = export_graph(tiny_llama, residual=0.2)
    n = g.n_nodes
    pers = np.linspace(1, 2, n)
    x0 = np.ones(n)
    res = C.pagerank(g, backend="cugraph", direction=direction, personalization=pers, tol=1e-12, max_iter=500,
                     nstart=x0, alpha=0.8)
    assert res.backend == "cugraph" and res.iterations is None  # cuGraph does not report it
    ref = C.pagerank(g, backend="scipy", direction=direction, personalization=pers, tol=1e-12, alpha=0.8)
    assert_allclose(res.scores, ref.scores, rtol=1e-8)
    assert fake_cugraph.named("Graph") == [{"directed": True}]
    assert fake_cugraph.named("from_cudf_edgelist") == [dict(source="src", destination="dst", edge_attr="weight",
                                                             store_transposed=True, renumber=False)]
    assert fake_cugraph.named("cudf.DataFrame")[0] == {"src": np.int32, "dst": np.int32, "weight": np.float64}
    (kw,) = fake_cugraph.named("pagerank")
    assert kw["tol"] == pytest.approx(n * 1e-12)  # networkx's n * tol -> cuGraph's absolute L1
    assert kw["alpha"] == 0.8 and kw["max_iter"] == 500 and kw["fail_on_nonconvergence"] is False
    assert list(kw["personalization"].columns) == ["vertex", "values"]
    assert_allclose(kw["personalization"]["values"], pers / pers.sum())
    assert_allclose(kw["nstart"]["values"], np.full(n, 1 / n))
    e, sent = g.edges, fake_cugraph.last_edges
    src, dst = ("src", "dst") if direction == "forward" else ("dst", "src")  # reverse swaps the columns
    assert np.array_equal(sent["src"], e[src]) and np.array_equal(sent["dst"], e[dst])
    assert np.array_equal(sent["weight"], e["weight"].astype(np.float64))


def test_cugraph_pagerank_errors(fake_cugraph, tiny_llama):
    g = export_graph(tiny_llama)
    with pytest.raises(ValueError, match="no separate `dangling` vector"):
        C.pagerank(g, backend="cugraph", dangling=np.arange(g.n_nodes) + 1.0)
    fake_cugraph.converge = False
    with pytest.raises(C.ConvergenceError, match="did not converge in `max_iter`=7"):
        C.pagerank(g, backend="cugraph", max_iter=7)
    fake_cugraph.converge = True
    # RMM's out_of_memory derives from std::bad_alloc, which reaches Python as MemoryError
    # (https://docs.rapids.ai/api/librmm/stable/classrmm_1_1out__of__memory).
    fake_cugraph.raise_in["pagerank"] = MemoryError("std::bad_alloc: out_of_memory: CUDA error: out of memory")
    with pytest.raises(C.GPUMemoryError, match="backend='cugraph-dask'") as ei:
        C.pagerank(g, backend="cugraph")
    assert isinstance(ei.value.__cause__, MemoryError)
    fake_cugraph.raise_in["pagerank"] = fake_cugraph.exceptions.FailedToConvergeError("")
    with pytest.raises(C.ConvergenceError):
        C.pagerank(g, backend="cugraph")
    # recognised by class, never by name or message: a look-alike passes through unchanged
    fake_cugraph.raise_in["pagerank"] = type("FailedToConvergeError", (Exception,), {})("out of memory")
    with pytest.raises(Exception, match="out of memory") as ei:
        C.pagerank(g, backend="cugraph")
    assert not isinstance(ei.value, (C.ConvergenceError, C.GPUMemoryError))
    fake_cugraph.raise_in["pagerank"] = KeyError("something else")
    with pytest.raises(KeyError):  # unknown errors pass through unchanged
        C.pagerank(g, backend="cugraph")


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_cugraph_katz_and_eigenvector(fake_cugraph, direction, tiny_llama):
    g = export_graph(tiny_llama, mode="isolated")
    n = g.n_nodes
    res = C.katz(g, alpha=0.3, beta=2.0, direction=direction, backend="cugraph", tol=1e-12)
    assert_allclose(res.scores, C.katz(g, alpha=0.3, beta=2.0, direction=direction, backend="scipy", tol=1e-12).scores,
                    rtol=1e-9)
    (kw,) = fake_cugraph.named("katz_centrality")
    assert kw == dict(alpha=0.3, beta=2.0, max_iter=1000, tol=pytest.approx(n * 1e-12), nstart=None, normalized=True)
    ev = C.eigenvector(g, backend="cugraph", tol=1e-10, max_iter=20000)
    # The scipy reference is Lanczos (exact); cuGraph's power iteration stops at an L1 change of
    # n * tol, which leaves a few times that on the components it converges away from.
    assert_allclose(ev.scores, C.eigenvector(g, backend="scipy", tol=1e-10, max_iter=20000).scores, rtol=1e-7,
                    atol=10 * n * 1e-10)
    assert fake_cugraph.named("Graph")[-1] == {"directed": False}
    assert fake_cugraph.named("eigenvector_centrality")[-1]["tol"] == 1e-10  # already n * tol in cuGraph


def test_cugraph_katz_refuses_what_it_cannot_do(fake_cugraph, tiny_llama):
    g = export_graph(tiny_llama)
    with pytest.raises(ValueError, match="one scalar `beta`"):
        C.katz(g, beta=np.arange(g.n_nodes) + 1.0, backend="cugraph")
    with pytest.raises(ValueError, match="normalized=False"):
        C.katz(g, normalized=False, backend="cugraph")
    with pytest.raises(ValueError, match="does not forward `nstart`"):
        C.katz(g, nstart=np.ones(g.n_nodes), backend="cugraph")
    fake_cugraph.raise_in["katz"] = RuntimeError("cugraph failure: Katz Centrality failed to converge.")
    with pytest.raises(C.ConvergenceError, match="Katz on backend 'cugraph' did not converge"):
        C.katz(g, backend="cugraph")


@pytest.mark.parametrize("direction", ["in", "out", "total"])
def test_cugraph_degree_with_isolated_last_vertex(fake_cugraph, tiny_llama, direction):
    g = export_graph(tiny_llama, keep=3)
    e = g.edges
    g = llmrank_graph.MLPGraph.from_edgelist(g.nodes, e[e["dst"] != g.n_nodes - 1], meta=g.meta)  # last vertex isolated
    got = C.degree(g, direction, backend="cugraph").scores
    assert_allclose(got, C.degree(g, direction, backend="scipy").scores)
    assert got[-1] == 0
    # the sentinel self-loop keeps PageRank's vector full length and the isolated node dangling
    pr = C.pagerank(g, backend="cugraph", tol=1e-13)
    assert_allclose(pr.scores, C.pagerank(g, backend="scipy", tol=1e-13).scores, rtol=1e-8)


@pytest.fixture
def fake_dask(fake_cugraph, monkeypatch):
    rec = {"clients": [], "clusters": 0, "initialize": [], "npartitions": None, "to_backend": None}

    class Client:
        def __init__(self, address):
            rec["clients"].append(address)

        def scheduler_info(self):
            return {"workers": {"w0": {}, "w1": {}}}

    def default_client():
        raise ValueError("No clients found")

    class LocalCUDACluster:
        def __init__(self):
            rec["clusters"] += 1

    class DDF:
        def __init__(self, df):
            self.df = df

        def to_backend(self, name):
            rec["to_backend"] = name
            return self

    def from_pandas(df, npartitions):
        rec["npartitions"] = npartitions
        return DDF(df)

    class Result:
        def __init__(self, df):
            self.df = df

        def compute(self):
            return self.df

    def dask_pagerank(G, **kw):
        df = fake_cugraph.cugraph.pagerank(G, fail_on_nonconvergence=True, **kw)
        return Result(df)

    comms = _module("cugraph.dask.comms.comms", initialize=lambda p2p: rec["initialize"].append(p2p))
    mods = {
        "dask": _module("dask"), "dask.distributed": _module("dask.distributed", Client=Client,
                                                               default_client=default_client),
        "dask.dataframe": _module("dask.dataframe", from_pandas=from_pandas),
        "dask_cuda": _module("dask_cuda", LocalCUDACluster=LocalCUDACluster), "dask_cudf": _module("dask_cudf"),
        "cugraph.dask": _module("cugraph.dask", pagerank=dask_pagerank),
        "cugraph.dask.comms": _module("cugraph.dask.comms", comms=comms), "cugraph.dask.comms.comms": comms,
    }
    mods["dask"].dataframe = mods["dask.dataframe"]
    mods["dask"].distributed = mods["dask.distributed"]
    fake_cugraph.cugraph.dask = mods["cugraph.dask"]
    for k, v in mods.items():
        monkeypatch.setitem(sys.modules, k, v)
    monkeypatch.delenv("LLMRANK_GRAPH_DASK_SCHEDULER", raising=False)
    backend = CG.CugraphDaskBackend()
    monkeypatch.setitem(B._REGISTRY, "cugraph-dask", backend)
    return rec


def test_cugraph_dask_pagerank(fake_dask, fake_cugraph, tiny_llama):
    g = export_graph(tiny_llama)
    res = C.pagerank(g, backend="cugraph-dask", direction="reverse", tol=1e-12)
    assert res.backend == "cugraph-dask"
    assert_allclose(res.scores, C.pagerank(g, backend="scipy", direction="reverse", tol=1e-12).scores, rtol=1e-8)
    assert fake_dask["clusters"] == 1 and fake_dask["initialize"] == [True]  # LocalCUDACluster, comms p2p
    assert fake_dask["npartitions"] == 2 and fake_dask["to_backend"] == "cudf"  # one partition per worker
    assert fake_cugraph.named("from_dask_cudf_edgelist") == [dict(source="src", destination="dst",
                                                                  edge_attr="weight", store_transposed=True,
                                                                  renumber=False)]
    assert fake_cugraph.named("pagerank")[-1]["tol"] == pytest.approx(g.n_nodes * 1e-12)
    C.pagerank(g, backend="cugraph-dask")
    assert fake_dask["clusters"] == 1  # client reused


def test_cugraph_dask_scheduler_address(fake_dask, tiny_llama, monkeypatch):
    monkeypatch.setenv("LLMRANK_GRAPH_DASK_SCHEDULER", "tcp://10.0.0.1:8786")
    C.pagerank(export_graph(tiny_llama), backend="cugraph-dask")
    assert fake_dask["clients"] == ["tcp://10.0.0.1:8786"] and fake_dask["clusters"] == 0


def test_auto_switches_to_dask_when_edges_outgrow_the_gpu(fake_dask, tiny_llama, monkeypatch, caplog):
    g = export_graph(tiny_llama)
    monkeypatch.setattr(g, "is_dag_by_partition", lambda: False)  # so that the sweep is not first
    monkeypatch.setattr(B, "cuda_free_memory", lambda: 10**12)
    assert select_backend(g, "pagerank", "auto").name == "cugraph"
    monkeypatch.setattr(B, "cuda_free_memory", lambda: 1000)
    with caplog.at_level(logging.DEBUG, logger="llmrank_graph.centrality.backends"):
        assert select_backend(g, "pagerank", "auto").name == "cugraph-dask"
    # cuGraph's own can_run declines on memory; the log gives every reason passed over
    assert "auto chose backend 'cugraph-dask' (" in caplog.text and "cugraph: edge list needs" in caplog.text
    # eigenvector has no multi-GPU version: too big for cuGraph -> next preference
    monkeypatch.setattr(CP.CupyBackend, "unavailable_reason", lambda self: "not installed")
    assert select_backend(g, "eigenvector", "auto").name == "scipy"


def test_auto_order_lists_only_backends_that_implement_the_algorithm():
    names = set(B.backend_names())
    for algorithm, order in B.AUTO_ORDER.items():
        for name in order:
            assert name in names, f"AUTO_ORDER[{algorithm!r}] names unknown backend {name!r}"
            assert algorithm in B.get_backend(name).algorithms, f"{name} does not implement {algorithm}"
