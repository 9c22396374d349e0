"""Eigenvector centrality that means something: undefined (and said so) on a DAG, Lanczos on the undirected graph."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _tiny import tiny_llama
from numpy.testing import assert_allclose

import llmrank_graph as lg
from llmrank_graph import centrality as C
from llmrank_graph.centrality import backends as B
from llmrank_graph.errors import InvalidArgumentError

nx = pytest.importorskip("networkx")


def _nx_graph(graph, directed=False):
    e = graph.edges
    G = nx.DiGraph()
    G.add_nodes_from(range(graph.n_nodes))
    G.add_weighted_edges_from(zip(e.src.tolist(), e.dst.tolist(), e.weight.astype(float).tolist()))
    return G if directed else G.to_undirected()


def _vec(d, n):
    return np.array([d[i] for i in range(n)])


def test_directed_on_a_dag_is_refused_with_the_reason():
    g = lg.export_graph(tiny_llama())
    with pytest.raises(InvalidArgumentError, match="`directed=True` eigenvector centrality is undefined on a DAG: .*"
                                                   "nilpotent and every eigenvalue is 0.*use directed=False"):
        C.eigenvector(g, directed=True)
    # networkx's own power iteration cannot converge there: the error above says why instead
    with pytest.raises(nx.PowerIterationFailedConvergence):
        nx.eigenvector_centrality(_nx_graph(g, directed=True), weight="weight", max_iter=200)


@pytest.mark.parametrize("mode,residual", [("chained", 0.0), ("isolated", 0.0), ("chained", 0.4)])
def test_undirected_matches_networkx(mode, residual):
    g = lg.export_graph(tiny_llama(seed=2), mode=mode, residual=residual)
    want = _vec(nx.eigenvector_centrality(_nx_graph(g), weight="weight", tol=1e-14, max_iter=100_000), g.n_nodes)
    for backend in ("scipy", "sweep"):
        got = C.eigenvector(g, backend=backend, tol=1e-12)
        assert_allclose(got.scores, want, rtol=1e-6, atol=1e-10)
        assert got.params["directed"] is False and np.linalg.norm(got.scores) == pytest.approx(1.0)


def test_lanczos_does_not_oscillate_on_a_near_bipartite_spectrum():
    """A multipartite chain has eigenvalues lambda and -lambda: plain power iteration on S flips sign
    every step and never settles; the Lanczos answer is the Perron vector of numpy's eigh."""
    g = lg.export_graph(tiny_llama(seed=4))
    S = np.zeros((g.n_nodes, g.n_nodes))
    e = g.edges
    S[e.src, e.dst] = e.weight
    S = S + S.T
    w, v = np.linalg.eigh(S)
    assert w[0] == pytest.approx(-w[-1], rel=1e-9)  # bipartite: the spectrum is symmetric
    x = np.ones(g.n_nodes)
    steps = []
    for _ in range(200):
        y = S @ x
        y /= np.linalg.norm(y)
        steps.append(np.abs(y - x).sum())
        x = y
    assert min(steps[-20:]) > 1e-2  # no convergence without a shift
    assert_allclose(C.eigenvector(g, tol=1e-12).scores, np.abs(v[:, -1]), atol=1e-9)


def test_directed_on_a_graph_with_cycles_matches_networkx():
    g = lg.export_graph(tiny_llama(seed=5, layers=2))
    e = g.edges
    back = e[e.src < g.partitions[1].stop].rename(columns={"src": "dst", "dst": "src"})  # I_0 -> H_0 edges close cycles
    h = lg.MLPGraph.from_edgelist(g.nodes, pd.concat([e, back]), meta=g.meta)
    assert not h.is_dag_by_partition()
    want = _vec(nx.eigenvector_centrality(_nx_graph(h, directed=True), weight="weight", tol=1e-14,
                                          max_iter=100_000), h.n_nodes)
    got = C.eigenvector(h, directed=True, tol=1e-12)
    assert_allclose(got.scores, want, rtol=1e-6, atol=1e-9)
    assert got.backend == "scipy" and got.params["directed"] is True
    # only scipy takes `directed`: the others say so
    with pytest.raises(InvalidArgumentError, match="`directed` applies only to backends that take it \\('scipy'\\)"):
        C.eigenvector(h, directed=True, backend="sweep")


def test_directed_on_an_acyclic_graph_out_of_partition_order_is_refused():
    g = lg.export_graph(tiny_llama(seed=6, layers=2), keep=1)  # one in-edge per node: sparse reachability
    G = _nx_graph(g, directed=True)
    I0, H2 = g.partitions[1], g.partitions[4]
    # a backward edge H_2 -> I_0 from a node that I_0's target cannot reach: still no cycle
    u, v = next((u, v) for u in range(H2.offset, H2.stop) for v in range(I0.offset, I0.stop)
                if not nx.has_path(G, v, u))
    extra = pd.DataFrame({"src": [u], "dst": [v], "weight": np.float32([0.5])})
    h = lg.MLPGraph.from_edgelist(g.nodes, pd.concat([g.edges, extra]), meta=g.meta)
    assert not h.is_dag_by_partition() and nx.is_directed_acyclic_graph(_nx_graph(h, directed=True))
    with pytest.raises(InvalidArgumentError, match="undefined on this graph: it has no cycle"):
        C.eigenvector(h, directed=True)


def test_no_convergence_is_a_convergence_error(monkeypatch):
    from scipy.sparse import linalg as sla

    g = lg.export_graph(tiny_llama())

    def eigsh(*a, **k):
        raise sla.ArpackNoConvergence("ARPACK error -1: No convergence", np.zeros(0), np.zeros((0, 0)))

    monkeypatch.setattr(sla, "eigsh", eigsh)
    with pytest.raises(C.ConvergenceError, match=r"eigenvector centrality \(Lanczos, scipy eigsh\) did not converge in "
                                                 r"`max_iter`=7 iterations"):
        C.eigenvector(g, max_iter=7, backend="scipy")


def test_auto_uses_the_blocks_for_a_graph_read_lazily(tmp_path):
    g = lg.export_graph(tiny_llama(seed=8))
    h = lg.read_graph(g.to_parquet(tmp_path / "g"), lazy=True)
    assert B.select_backend(h, "eigenvector").name == "sweep"  # no edge list for a graph on disk
    assert B.select_backend(g, "eigenvector").name == "scipy"  # in memory, the cached CSR is faster
    assert_allclose(C.eigenvector(h).scores, C.eigenvector(g).scores, atol=1e-8)
    empty = lg.MLPGraph.from_edgelist(g.nodes, g.edges.assign(weight=0.0), meta=g.meta)
    with pytest.raises(InvalidArgumentError, match="undefined on a graph without edges of positive weight"):
        C.eigenvector(empty)
