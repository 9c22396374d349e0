"""Viewer export: thresholded subgraphs as networkx, GraphML and GEXF, read back with networkx."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _tiny import tiny_llama

import llmrank_graph as lg
from llmrank_graph.errors import InvalidArgumentError
from llmrank_graph.graph import viewer

nx = pytest.importorskip("networkx")


@pytest.fixture(scope="module")
def graph():
    model = tiny_llama(seed=11)  # d=8, m=12, 3 layers
    ids = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(0))
    g = lg.export_graph(model, lg.calibrate(model, input_ids=ids, batch_size=2))
    g.add_scores("pagerank_reverse_a0.85", lg.pagerank(g, direction="reverse"))
    return g


@pytest.mark.parametrize("fmt", ["graphml", "gexf"])
def test_files_open_in_networkx_with_attributes(graph, tmp_path, fmt):
    path = viewer.write_viewer(graph, tmp_path / f"g.{fmt}")
    G = nx.read_graphml(path) if fmt == "graphml" else nx.read_gexf(path)
    # the default threshold keeps a tiny model whole
    assert G.number_of_nodes() == graph.n_nodes and G.number_of_edges() == graph.n_edges
    nodes = graph.nodes
    for v in (0, 9, graph.n_nodes - 1):
        a = G.nodes[str(v)]
        assert int(a["layer"]) == nodes.layer[v] and a["kind"] == nodes.kind[v] and int(a["index"]) == nodes["index"][v]
        assert float(a["activation"]) == pytest.approx(nodes.activation[v])
        assert float(a["pagerank_reverse_a0.85"]) == pytest.approx(graph.scores["pagerank_reverse_a0.85"][v])
    e = graph.edges.iloc[17]
    assert float(G.edges[str(int(e.src)), str(int(e.dst))]["weight"]) == pytest.approx(float(e.weight))


def test_thresholds(graph):
    score = graph.scores["pagerank_reverse_a0.85"]
    G = graph.to_networkx(top_nodes=3, score="pagerank_reverse_a0.85", top_edges=None)
    for p in graph.partitions:
        want = set((np.argsort(-score[p.offset:p.stop], kind="stable")[:3] + p.offset).tolist())
        assert {v for v in G if p.offset <= v < p.stop} == want
    assert G.number_of_edges() == 6 * 3 * 3  # dense blocks between the kept nodes
    # top edges per node: the 2 heaviest in-edges of every node
    G2 = graph.to_networkx(top_nodes=None, top_edges=2)
    e = graph.edges
    for v in (9, 30):
        ins = e[e.dst == v].sort_values("weight", ascending=False)
        assert set(G2.predecessors(v)) == set(ins.src[:2].tolist())
    # a weight quantile over the kept edges
    G3 = graph.to_networkx(top_nodes=None, top_edges=None, min_quantile=0.9)
    cut = np.quantile(e.weight.to_numpy().astype(np.float64), 0.9)
    assert G3.number_of_edges() == int((e.weight >= cut).sum())


def test_auto_edges_fit_the_budget(graph, monkeypatch):
    monkeypatch.setattr(viewer, "VIEW_EDGE_BUDGET", 300)
    G = graph.to_networkx()
    # 36 intermediate nodes with 8 in-edges, 24 hidden ones with 12: 5 per node is the most that fits 300
    assert G.number_of_edges() == 300
    assert {d for v, d in G.in_degree() if v >= graph.partitions[1].offset} == {5}


def test_refusals_say_how_to_threshold(graph):
    with pytest.raises(InvalidArgumentError, match=r"the thresholds keep no edge \(min_weight=10.0.*largest weight "
                                                   "among the kept nodes is"):
        graph.to_networkx(min_weight=10.0)
    with pytest.raises(InvalidArgumentError, match=r"would hold up to 576 edges, more than `max_edges`=100; "
                                                   r"threshold it: fewer nodes per partition \(top_nodes / "
                                                   r"--top-nodes\).*--force"):
        graph.to_networkx(top_nodes=None, top_edges=None, max_edges=100)
    with pytest.raises(InvalidArgumentError, match="would hold 288 edges, more than `max_edges`=100"):
        graph.to_networkx(top_nodes=None, min_quantile=0.5, top_edges=None, max_edges=100)
    G = graph.to_networkx(top_nodes=None, top_edges=None, max_edges=100, force=True)
    assert G.number_of_edges() == graph.n_edges
    with pytest.raises(InvalidArgumentError, match="`top_nodes` must be a positive int; got 0"):
        graph.to_networkx(top_nodes=0)
    with pytest.raises(InvalidArgumentError, match="`min_quantile` must be a float in \\[0, 1\\); got 1"):
        graph.to_networkx(min_quantile=1)
    with pytest.raises(InvalidArgumentError, match="`score` must be a stored score column"):
        graph.to_networkx(score="nope")
    with pytest.raises(InvalidArgumentError, match="`format` must be one of 'graphml', 'gexf'"):
        viewer.write_viewer(graph, "g.txt")


def test_a_centrality_name_ranks_by_the_centrality_with_the_library_defaults(graph):
    # the graph stage knows no centrality: llmrank_graph.centrality registers them with the viewer
    pr = lg.pagerank(graph, direction="reverse", personalization="activation").scores
    G = graph.to_networkx(top_nodes=3, score="pagerank", top_edges=None)
    for p in graph.partitions:
        want = set((np.argsort(-pr[p.offset:p.stop], kind="stable")[:3] + p.offset).tolist())
        assert {v for v in G if p.offset <= v < p.stop} == want
    katz = lg.katz(graph).scores
    G = graph.to_networkx(top_nodes=2, score="katz", top_edges=None)
    p = graph.partitions[1]
    assert {v for v in G if p.offset <= v < p.stop} == set(
        (np.argsort(-katz[p.offset:p.stop], kind="stable")[:2] + p.offset).tolist())
    with pytest.raises(InvalidArgumentError, match=r"`score` must be a stored score column \('pagerank_reverse_a0.85'"
                                                   r"\), a centrality \('pagerank', 'katz', 'hits', 'eigenvector', "
                                                   r"'strength', 'degree'\) or an array of 68 values; got 'nope'"):
        graph.to_networkx(score="nope")


def test_the_viewer_hook_is_registered_by_importing_the_package():
    import subprocess
    import sys

    code = ("import pandas as pd, llmrank_graph as lg; "
            "nodes = pd.DataFrame({'vertex': range(4), 'layer': [0, 0, 0, 1], "
            "'kind': ['hidden', 'intermediate', 'intermediate', 'hidden']}); "
            "g = lg.MLPGraph.from_edgelist(nodes, pd.DataFrame({'src': [0, 0, 1, 2], 'dst': [1, 2, 3, 3], "
            "'weight': [1.0, 2.0, 1.0, 1.0]})); "
            "print(sorted(g.to_networkx(top_nodes=1, score='strength').nodes))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[0, 2, 3]"


def test_register_score_source_adds_names(graph, monkeypatch):
    monkeypatch.setattr(viewer, "_SOURCES", dict(viewer._SOURCES))
    viewer.register_score_source(viewer.ScoreSource("a test score", lambda: ("last",),
                                                    lambda g, name: np.arange(g.n_nodes, dtype=float)))
    G = graph.to_networkx(top_nodes=1, score="last", top_edges=None)
    assert sorted(G) == [p.stop - 1 for p in graph.partitions]
    with pytest.raises(InvalidArgumentError, match=r"a centrality \(.*\), a test score \('last'\) or an array"):
        graph.to_networkx(score="nope")
    with pytest.raises(TypeError, match="`source` must be a ScoreSource; got 'last'"):
        viewer.register_score_source("last")
