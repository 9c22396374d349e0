import networkx as nx
import numpy as np
import pytest
import torch
from _tiny import tiny_gpt2, tiny_llama

import llmrank_graph as lg

BACKENDS = ["scipy", "sweep"]


def nx_pagerank(graph, direction="forward", personalization=None, alpha=0.85, dangling=None):
    e = graph.edges
    G = nx.DiGraph()
    G.add_nodes_from(range(graph.n_nodes))
    s, d = (e.src, e.dst) if direction == "forward" else (e.dst, e.src)
    G.add_weighted_edges_from(zip(s.tolist(), d.tolist(), e.weight.astype(float).tolist()))
    kw = {}
    if personalization is not None:
        kw["personalization"] = dict(enumerate(personalization))
    if dangling is not None:
        kw["dangling"] = dict(enumerate(dangling))
    r = nx.pagerank(G, alpha=alpha, tol=1e-15, max_iter=100_000, **kw)
    return np.array([r[i] for i in range(graph.n_nodes)])


GRAPHS = {
    "llama-chained": lambda: lg.export_graph(tiny_llama(seed=0)),
    "llama-isolated": lambda: lg.export_graph(tiny_llama(seed=1, layers=2, d=6, m=10), mode="isolated"),
    "llama-residual-sum": lambda: lg.export_graph(tiny_llama(seed=2, layers=4, d=4, m=7), gate="sum", residual=0.3),
    "gpt2": lambda: lg.export_graph(tiny_gpt2(seed=3)),
}


@pytest.fixture(scope="module", params=list(GRAPHS))
def graph(request):
    return GRAPHS[request.param]()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("direction", ["forward", "reverse"])
@pytest.mark.parametrize("pers", ["uniform", "custom"])
def test_matches_networkx(graph, backend, direction, pers):
    p = None
    if pers == "custom":
        p = np.random.default_rng(7).random(graph.n_nodes)
        p[::5] = 0.0
    ref = nx_pagerank(graph, direction, p, alpha=0.85)
    res = lg.pagerank(graph, personalization="uniform" if p is None else p, direction=direction,
                      backend=backend, tol=1e-14)
    assert res.backend == backend and res.converged
    assert res.scores.shape == (graph.n_nodes,)
    assert res.scores.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.abs(res.scores - ref).sum() < 1e-8


@pytest.mark.parametrize("backend", BACKENDS)
def test_alpha_and_dangling_vector(backend):
    g = GRAPHS["llama-chained"]()
    rng = np.random.default_rng(1)
    p, q = rng.random(g.n_nodes), rng.random(g.n_nodes)
    ref = nx_pagerank(g, "reverse", p, alpha=0.5, dangling=q)
    res = lg.pagerank(g, alpha=0.5, personalization=p, dangling=q, direction="reverse", backend=backend, tol=1e-14)
    assert np.abs(res.scores - ref).sum() < 1e-8


def test_activation_personalization():
    model = tiny_llama(seed=4)
    stats = lg.calibrate(model, input_ids=torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0)))
    g = lg.export_graph(model, stats, weighting="abs_x_input")
    a = g.nodes.activation.to_numpy()
    ref = nx_pagerank(g, "reverse", a)
    for backend in BACKENDS:
        res = lg.pagerank(g, personalization="activation", direction="reverse", backend=backend, tol=1e-14)
        assert np.abs(res.scores - ref).sum() < 1e-8


def test_auto_picks_sweep_and_logs(caplog):
    g = GRAPHS["llama-chained"]()
    with caplog.at_level("DEBUG", logger="llmrank_graph"):
        res = lg.pagerank(g)
    assert res.backend == "sweep"
    assert any("auto chose backend 'sweep'" in r.getMessage() for r in caplog.records)


def test_result_frame_and_top():
    g = GRAPHS["llama-chained"]()
    res = lg.pagerank(g)
    df = res.to_frame(g)
    assert list(df.columns[-1:]) == ["pagerank"] and len(df) == g.n_nodes
    assert res.scores[res.top(1)[0]] == res.scores.max()


def test_scipy_nonconvergence_raises():
    g = GRAPHS["llama-chained"]()
    with pytest.raises(lg.ConvergenceError, match="max_iter"):
        lg.pagerank(g, backend="scipy", max_iter=2)


@pytest.mark.parametrize("alpha", [0, 1, 1.2, -0.1, "0.5", True])
def test_bad_alpha(alpha):
    g = GRAPHS["llama-chained"]()
    # The one rule: a wrong type is a TypeError, a wrong value a ValueError.
    expected = TypeError if isinstance(alpha, (str, bool)) else ValueError
    with pytest.raises(expected, match=r"`alpha` must be a float in \(0, 1\); got"):
        lg.pagerank(g, alpha=alpha)


@pytest.mark.parametrize("value, msg", [
    (np.ones(3), "length"),
    ("activation", "calibration stats"),
    ("lazy", "'uniform', 'activation'"),
    ("neg", "non-negative"),
    ("zero", "all zero"),
    ("nan", "finite"),
])
def test_bad_personalization(value, msg):
    g = GRAPHS["llama-chained"]()
    if isinstance(value, str) and value in ("neg", "zero", "nan"):
        v = np.ones(g.n_nodes)
        if value == "neg":
            v[3] = -1
        elif value == "zero":
            v[:] = 0
        else:
            v[2] = np.nan
        value = v
    with pytest.raises(ValueError, match=f"`personalization.*{msg}|{msg}.*`personalization`"):
        lg.pagerank(g, personalization=value)


def test_bad_backend_and_direction():
    g = GRAPHS["llama-chained"]()
    with pytest.raises(ValueError, match="`backend` must be one of 'auto', 'scipy', 'sweep'.*got 'networkx'"):
        lg.pagerank(g, backend="networkx")
    with pytest.raises(ValueError, match="`direction` must be one of 'forward', 'reverse'; got 'up'"):
        lg.pagerank(g, direction="up")


@pytest.mark.parametrize("graph", ["dir", None, "model"])
def test_a_graph_that_is_not_an_mlpgraph_is_a_type_error(graph):
    from llmrank_graph.errors import InvalidArgumentTypeError

    graph = tiny_llama() if graph == "model" else graph
    with pytest.raises(TypeError, match=r"`graph` must be an MLPGraph \(lg\.export_graph\(model\) or "
                                        r"lg\.read_graph\(directory\)\); got ") as e:
        lg.pagerank(graph)
    assert isinstance(e.value, InvalidArgumentTypeError)
