"""Katz, HITS, eigenvector, strength and degree: hand formulas, dense numpy, networkx, errors.

(The comparison of every backend with networkx is the shared test in test_backends.py.)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal

import llmrank_graph as lg
from llmrank_graph import centrality as C
from llmrank_graph import export_graph
from llmrank_graph.models.architectures import mlp_layers


def dense_adjacency(graph) -> np.ndarray:
    e = graph.edges
    A = np.zeros((graph.n_nodes, graph.n_nodes))
    np.add.at(A, (e["src"].to_numpy(), e["dst"].to_numpy()), e["weight"].to_numpy().astype(np.float64))
    return A


@pytest.fixture
def g(tiny_llama):
    return export_graph(tiny_llama, residual=0.3)


@pytest.mark.parametrize("backend", ["sweep", "scipy"])
@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_katz_is_the_linear_solve(g, backend, direction):
    A = dense_adjacency(g)
    A = A if direction == "forward" else A.T
    beta = np.random.default_rng(0).uniform(0.5, 2.0, g.n_nodes)
    want = np.linalg.solve(np.eye(g.n_nodes) - 0.4 * A.T, beta)  # x = alpha A^T x + beta
    got = C.katz(g, alpha=0.4, beta=beta, direction=direction, backend=backend, normalized=False, tol=1e-14)
    assert_allclose(got.scores, want, rtol=1e-10)
    normed = C.katz(g, alpha=0.4, beta=beta, direction=direction, backend=backend, tol=1e-14)
    assert_allclose(normed.scores, want / np.linalg.norm(want), rtol=1e-10)
    assert normed.algorithm == "katz" and normed.params["alpha"] == 0.4


@pytest.mark.parametrize("backend", ["sweep", "scipy"])
def test_inputs_are_not_written(g, backend):
    """The solvers work on copies: beta and the teleport vector come back as they went in."""
    beta = np.random.default_rng(1).uniform(0.5, 2.0, g.n_nodes)
    tele = np.random.default_rng(2).uniform(0.5, 2.0, g.n_nodes)
    kept = beta.copy(), tele.copy()
    C.katz(g, alpha=0.4, beta=beta, backend=backend)
    C.pagerank(g, personalization=tele, backend=backend)
    assert_array_equal(beta, kept[0])
    assert_array_equal(tele, kept[1])


def test_katz_sweep_is_exact_in_one_pass_power_iteration_needs_depth(g):
    s = C.katz(g, alpha=0.5, backend="sweep")
    p = C.katz(g, alpha=0.5, backend="scipy", tol=1e-15)
    assert s.exact and s.iterations == 0 and s.converged  # exact: no iteration happened
    # power iteration from 0 on a nilpotent A^T is exact after (longest path + 1) steps, then 1 more to see it
    assert p.iterations == g.n_layers * 2 + 2
    assert_allclose(s.scores, p.scores, rtol=1e-12)


def test_katz_on_hand_values(tiny_llama):
    g = export_graph(tiny_llama)
    m = mlp_layers(tiny_llama)[0]
    x = C.katz(g, alpha=0.1, beta=1.0, normalized=False, backend="sweep").scores
    H0, I0 = g.partitions[0], g.partitions[1]
    assert_allclose(x[H0.offset:H0.stop], 1.0)  # no in-edges
    up = m.weight("up").detach().double().abs().numpy()
    assert_allclose(x[I0.offset:I0.stop], 1.0 + 0.1 * up.sum(1), rtol=1e-12)


@pytest.mark.parametrize("backend", ["sweep", "scipy"])
def test_pagerank_with_separate_dangling_vector(g, backend):
    """Two sweeps and one scalar (sweep) / the power iteration (scipy) against networkx's `dangling`."""
    nx = pytest.importorskip("networkx")
    n = g.n_nodes
    rng = np.random.default_rng(1)
    p, q = rng.uniform(0.1, 1, n), rng.uniform(0.1, 1, n)
    G = nx.DiGraph()
    G.add_nodes_from(range(n))
    e = g.edges
    G.add_weighted_edges_from(zip(e["src"].tolist(), e["dst"].tolist(), e["weight"].astype(float).tolist()))
    ref = nx.pagerank(G, personalization=dict(enumerate(p)), dangling=dict(enumerate(q)), tol=1e-14, max_iter=5000)
    got = C.pagerank(g, personalization=p, dangling=q, backend=backend, tol=1e-14, max_iter=5000)
    assert_allclose(got.scores, [ref[i] for i in range(n)], rtol=1e-8)
    assert got.scores.sum() == pytest.approx(1.0)


def test_hits_pair_and_which(g):
    hubs, auth = C.hits_pair(g, tol=1e-14, max_iter=100000)
    assert (hubs.algorithm, auth.algorithm) == ("hubs", "authorities")
    assert hubs.scores.sum() == pytest.approx(1) and auth.scores.sum() == pytest.approx(1)
    assert_allclose(C.hits(g, tol=1e-14, max_iter=100000).scores, auth.scores)
    assert_allclose(C.hits(g, which="hubs", tol=1e-14, max_iter=100000).scores, hubs.scores)
    # authorities are the principal right singular vector of A; hubs = A a (networkx.hits)
    A = dense_adjacency(g)
    u, s, vt = np.linalg.svd(A)
    a = np.abs(vt[0])
    assert_allclose(auth.scores, a / a.sum(), atol=1e-9)
    h = A @ a
    assert_allclose(hubs.scores, h / h.sum(), atol=1e-9)
    assert auth.scores[g.partitions[0].offset:g.partitions[0].stop].max() == 0  # H_0 has no in-edges
    with pytest.raises(ValueError, match="`which` must be one of 'authorities', 'hubs'; got 'both'"):
        C.hits(g, which="both")


def test_eigenvector_is_the_principal_eigenvector_of_the_undirected_graph(tiny_llama):
    g = export_graph(tiny_llama)
    A = dense_adjacency(g)
    w, v = np.linalg.eigh(A + A.T)
    want = np.abs(v[:, -1])
    got = C.eigenvector(g, tol=1e-12, max_iter=20000)
    assert_allclose(got.scores, want, atol=1e-8)
    assert np.linalg.norm(got.scores) == pytest.approx(1.0)
    # Lanczos converges on this graph in one restart; its non-convergence: tests/test_eigenvector.py


@pytest.mark.parametrize("backend", ["sweep", "scipy"])
def test_strength_and_degree_by_hand(tiny_llama, backend):
    g = export_graph(tiny_llama, residual=0.5)
    m0 = mlp_layers(tiny_llama)[0]
    H0, I0, H1 = g.partitions[:3]
    up = m0.weight("up").detach().double().abs().numpy()
    down = m0.weight("down").detach().double().abs().numpy()
    sin = C.strength(g, "in", backend=backend).scores
    sout = C.strength(g, "out", backend=backend).scores
    assert_allclose(sin[I0.offset:I0.stop], up.sum(1), rtol=1e-6)  # L1 of the up rows
    assert_allclose(sout[I0.offset:I0.stop], down.sum(0), rtol=1e-6)  # L1 of the down columns
    assert_allclose(sout[H0.offset:H0.stop], up.sum(0) + 0.5, rtol=1e-6)  # + residual edge
    assert_allclose(C.strength(g, "total", backend=backend).scores, sin + sout)
    din = C.degree(g, "in", backend=backend).scores
    assert (din[I0.offset:I0.stop] == H0.size).all() and (din[H1.offset:H1.stop] == I0.size + 1).all()
    assert (din[H0.offset:H0.stop] == 0).all()
    assert C.degree(g, "total", backend=backend).algorithm == "total_degree"


def test_degree_counts_kept_edges_of_a_sparsified_graph(tiny_llama):
    g = export_graph(tiny_llama, keep=5)
    I0 = g.partitions[1]
    for backend in ("sweep", "scipy"):
        din = C.degree(g, "in", backend=backend).scores
        assert (din[I0.offset:I0.stop] == 5).all()
    assert_allclose(C.degree(g, "out", backend="sweep").scores, C.degree(g, "out", backend="scipy").scores)


def test_registry_lists_centralities_and_backends():
    names = [c["name"] for c in C.centralities()]
    assert names == ["pagerank", "katz", "hits", "eigenvector", "strength", "degree"]
    info = {c["name"]: c for c in C.centralities()}
    assert info["katz"]["function"] is C.katz and info["pagerank"]["function"] is C.pagerank
    assert "sweep" in info["katz"]["backends"] and "sweep" not in info["hits"]["backends"]
    assert "cugraph" not in info["hits"]["backends"]  # cuGraph's HITS ignores weights
    with pytest.raises(ValueError, match="`name` must be one of 'pagerank', 'katz', 'hits'.*got 'closeness'"):
        C.get_centrality("closeness")


@pytest.mark.parametrize("call,match", [
    (lambda g: C.katz(g, alpha=0), "`alpha` must be a positive finite float; got 0"),
    (lambda g: C.katz(g, alpha=float("nan")), "`alpha` must be a positive finite float; got nan"),
    (lambda g: C.katz(g, beta=np.ones(3)), "`beta` must have one value per node: length 136; got length 3"),
    (lambda g: C.katz(g, beta=-1.0), "`beta` must be a positive finite float; got -1.0"),
    (lambda g: C.katz(g, nstart=-np.ones(136)), "`nstart` must be non-negative"),
    (lambda g: C.katz(g, direction="up"), "`direction` must be one of 'forward', 'reverse'; got 'up'"),
    (lambda g: C.katz(g, tol=0), "`tol` must be a positive finite float; got 0"),
    (lambda g: C.eigenvector(g, max_iter=0), "`max_iter` must be a positive int; got 0"),
    (lambda g: C.hits(g, nstart=np.zeros(136)), "`nstart` must not be all zero"),
    (lambda g: C.strength(g, "both"), "`direction` must be one of 'in', 'out', 'total'; got 'both'"),
    (lambda g: C.degree(g, "in", backend="nope"), "`backend` must be one of 'auto', 'scipy'"),
])
def test_validation_messages(tiny_llama, call, match):
    g = export_graph(tiny_llama)
    assert g.n_nodes == 136
    with pytest.raises(ValueError, match=match):
        call(g)


def test_wrong_types_raise_type_error(tiny_llama):
    g = export_graph(tiny_llama)
    with pytest.raises(TypeError, match="`normalized` must be a bool; got 'yes'"):
        C.katz(g, normalized="yes")


def test_katz_power_iteration_divergence_raises(tiny_llama, monkeypatch):
    g = export_graph(tiny_llama)
    # A non-DAG (edges both ways) with a large alpha diverges: power iteration must say so.
    e = g.edges
    import pandas as pd

    g = lg.MLPGraph.from_edgelist(g.nodes, pd.concat([e, e.rename(columns={"src": "dst", "dst": "src"})]),
                                  meta=g.meta)
    assert not g.is_dag_by_partition()
    with pytest.raises(C.ConvergenceError, match="Katz power iteration did not converge in `max_iter`=50"):
        C.katz(g, alpha=5.0, max_iter=50)
    with pytest.raises(ValueError, match="needs a DAG"):
        C.katz(g, backend="sweep")


def test_results_are_float64_numpy(g):
    for res in (C.katz(g), C.hits(g), C.eigenvector(g), C.strength(g), C.degree(g)):
        assert isinstance(res.scores, np.ndarray) and res.scores.dtype == np.float64
        assert res.scores.shape == (g.n_nodes,) and np.isfinite(res.scores).all()
    assert torch.is_tensor(g.blocks[0].weights[0])  # the model's weights are untouched views


def test_registry_entries_name_the_columns_their_results_are_stored_under(tiny_llama):
    from llmrank_graph.centrality.registry import centrality_entries, centrality_entry
    from llmrank_graph.graph.scores import score_column_name

    stats = lg.calibrate(tiny_llama, input_ids=torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0)))
    for graph in (export_graph(tiny_llama), export_graph(tiny_llama, stats)):
        for entry in centrality_entries():
            res = entry.function(graph, **entry.arguments(graph.has_activation))
            assert score_column_name(res) == entry.column(graph.has_activation), entry.name
            col, values, source = entry.scores(graph)
            assert col == entry.column(graph.has_activation) and source.startswith("computed")
            assert_allclose(values, res.scores, rtol=1e-12)
    # PageRank by name means the pagerank scorer's defaults; without activations, a uniform teleport
    pr = centrality_entry("pagerank")
    assert dict(pr.defaults) == {"direction": "reverse", "personalization": "activation", "alpha": 0.85}
    assert pr.columns == ("pagerank_reverse_a0.85_activation", "pagerank_reverse_a0.85")
    assert centrality_entry("katz").columns == ("katz_forward_a0.1",)
    assert {e.name: e.function for e in centrality_entries()} == {c["name"]: c["function"] for c in C.centralities()}
    assert "sweep" in centrality_entry("katz").backends and "cugraph" not in centrality_entry("hits").backends
    with pytest.raises(TypeError):
        pr.defaults["alpha"] = 0.5  # read-only: whoever reads the defaults cannot change them
    with pytest.raises(ValueError, match="`name` must be one of 'pagerank', 'katz'.*got 'closeness'"):
        centrality_entry("closeness")


def test_a_stored_column_of_the_default_name_is_reused(g):
    from llmrank_graph.centrality.registry import centrality_entry

    entry = centrality_entry("strength")
    g.add_scores(entry.column(), np.arange(g.n_nodes, dtype=np.float64))
    col, values, source = entry.scores(g)
    assert (col, source) == ("strength_in", "stored") and (values == np.arange(g.n_nodes)).all()
    assert entry.scores(g, use_stored=False)[2].startswith("computed")


@pytest.mark.parametrize("function", ["pagerank", "katz", "hits", "hits_pair", "eigenvector", "strength", "degree"])
@pytest.mark.parametrize("graph", ["dir", None, "model"])
def test_every_centrality_refuses_what_is_not_an_mlpgraph(tiny_llama, function, graph):
    from llmrank_graph.centrality.registry import GRAPH
    from llmrank_graph.errors import InvalidArgumentTypeError

    f = getattr(lg, function)
    assert f.parameter_constraints["graph"] is GRAPH  # declared in its table, one constraint for all
    graph = tiny_llama if graph == "model" else graph
    with pytest.raises(TypeError, match=r"`graph` must be an MLPGraph \(lg\.export_graph\(model\) or "
                                        r"lg\.read_graph\(directory\)\); got ") as e:
        f(graph)
    assert isinstance(e.value, InvalidArgumentTypeError)
