"""llmrank_graph.analysis against references computed here: brute force, numpy, scipy.stats, sets by hand."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from _tiny import tiny_llama
from numpy.testing import assert_allclose
from scipy import stats as sps

import llmrank_graph as lg
from llmrank_graph import analysis as A
from llmrank_graph.analysis import scores as S
from llmrank_graph.errors import InvalidArgumentError


def _stats(model, seed=0):
    ids = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(seed))
    return lg.calibrate(model, input_ids=ids, batch_size=2)


@pytest.fixture(scope="module")
def small():
    """A 2-layer Llama (d=4, m=6) with calibration statistics, small enough to enumerate every path."""
    model = tiny_llama(seed=3, layers=2, d=4, m=6)
    return model, _stats(model)


# ----------------------------------------------------------------------------- heaviest paths
def _brute_force(graph, sources=None, targets=None, normalized=True):
    """Every source-to-sink path with its score, by depth-first enumeration of the edge list."""
    e = graph.edges
    s_out = np.bincount(e.src, weights=e.weight.astype(np.float64), minlength=graph.n_nodes)
    succ = {}
    for u, v, w in zip(e.src, e.dst, e.weight.astype(np.float64)):
        f = w / s_out[u] if normalized and s_out[u] > 0 else (w if not normalized else 0.0)
        if f > 0:
            succ.setdefault(int(u), []).append((int(v), f))
    has_in = set(e.dst.tolist())
    has_out = set(e.src.tolist())
    parts_in = {p.position for p in graph.partitions if p.offset in has_in or any(x in has_in for x in
                                                                                  range(p.offset, p.stop))}
    if sources is None:
        sources = [v for p in graph.partitions if p.position not in parts_in for v in range(p.offset, p.stop)]
    if targets is None:
        parts_out = {p.position for p in graph.partitions if any(x in has_out for x in range(p.offset, p.stop))}
        targets = {v for p in graph.partitions if p.position not in parts_out for v in range(p.offset, p.stop)}
    out = []

    def walk(path, score):
        v = path[-1]
        if v in targets:
            out.append((score, list(path)))
        for w, f in succ.get(v, ()):
            walk(path + [w], score * f)

    for s in sources:
        walk([s], 1.0)
    return sorted(out, key=lambda t: -t[0])


@pytest.mark.parametrize("mode,residual", [("chained", 0.0), ("chained", 0.3), ("isolated", 0.0)])
@pytest.mark.parametrize("k", [1, 4, 25])
def test_heaviest_paths_equal_brute_force(small, mode, residual, k):
    model, stats = small
    g = lg.export_graph(model, stats, mode=mode, residual=residual, weighting="abs_x_input")
    want = _brute_force(g)[:k]
    got = A.heaviest_paths(g, k=k)
    assert len(got) == len(want) == k
    assert_allclose(got.score.to_numpy(), [s for s, _ in want], rtol=1e-9)
    assert [list(v) for v in got.vertices] == [p for _, p in want]  # random weights: no ties
    # the path as (layer, kind, index) names the same nodes, and edges count hops
    nodes = g.nodes
    for path, verts, length in zip(got.path, got.vertices, got.length):
        assert path == [(int(nodes.layer[v]), str(nodes.kind[v]), int(nodes["index"][v])) for v in verts]
        assert length == len(verts) - 1


def test_heaviest_paths_log_raw_and_endpoints(small):
    model, stats = small
    g = lg.export_graph(model, stats)
    want = _brute_force(g)[:3]
    logp = A.heaviest_paths(g, k=3, weight="log")
    assert_allclose(logp.score, [math.log(s) for s, _ in want], rtol=1e-12)
    raw = A.heaviest_paths(g, k=5, normalized=False)
    ref = _brute_force(g, normalized=False)[:5]
    assert_allclose(raw.score, [s for s, _ in ref], rtol=1e-9)
    # from one hidden feature of layer 1 to two outputs
    src, tgt = (1, "hidden", 2), [(2, "hidden", 0), ("H2", 3)]
    H1, H2 = g.partitions[2], g.partitions[4]
    ref = _brute_force(g, sources=[H1.offset + 2], targets={H2.offset, H2.offset + 3})[:4]
    got = A.heaviest_paths(g, k=4, source=src, target=tgt)
    assert_allclose(got.score, [s for s, _ in ref], rtol=1e-9)
    assert [list(v) for v in got.vertices] == [p for _, p in ref]


def test_heaviest_paths_skip_zero_weight_edges_and_run_on_an_edge_list(small):
    model, stats = small
    g = lg.export_graph(model, stats, keep=2)  # sparsified: 2 in-edges per node
    e = g.edges.copy()
    e.loc[e.index[:5], "weight"] = 0.0  # zero weights carry no path
    h = lg.MLPGraph.from_edgelist(g.nodes, e, meta=g.meta)
    want = _brute_force(h)
    got = A.heaviest_paths(h, k=len(want) + 5)
    assert len(got) == len(want)  # no more paths than exist
    assert_allclose(got.score, [s for s, _ in want], rtol=1e-9)


def test_heaviest_paths_bad_input(small):
    model, _ = small
    g = lg.export_graph(model)
    with pytest.raises(InvalidArgumentError, match="`k` must be a positive int; got 0"):
        A.heaviest_paths(g, k=0)
    with pytest.raises(InvalidArgumentError, match="`weight` must be one of 'product', 'log'; got 'sum'"):
        A.heaviest_paths(g, weight="sum")
    with pytest.raises(InvalidArgumentError, match="`source` must be vertex ids in 0..23"):
        A.heaviest_paths(g, source=[10_000])
    with pytest.raises(InvalidArgumentError, match="`target` must be a node of exactly one partition"):
        A.heaviest_paths(g, target=(7, "hidden", 0))
    e = g.edges
    cyc = lg.MLPGraph.from_edgelist(g.nodes, pd.concat([e, e.rename(columns={"src": "dst", "dst": "src"})]))
    with pytest.raises(InvalidArgumentError, match="must be a DAG"):
        A.heaviest_paths(cyc)


# ----------------------------------------------------------------------------- statistics
def test_layer_stats_quantiles_equal_numpy(small):
    model, stats = small
    g = lg.export_graph(model, stats, residual=0.2, weighting="abs_x_input")
    st = A.layer_stats(g, exact=True)  # the sketch: tests/test_layer_stats_sketch.py
    e, n = g.edges, g.nodes
    part = n.partition.to_numpy()
    qs = list(A.QUANTILES)
    cols = [f"q{q:g}" for q in qs]
    for _, row in st[st.quantity == "weight"].iterrows():
        a, b = row["of"].split("->")
        pa = [p for p in g.partitions if p.name == a][0].position
        pb = [p for p in g.partitions if p.name == b][0].position
        w = e.weight[(part[e.src] == pa) & (part[e.dst] == pb)].to_numpy().astype(np.float64)
        assert row["count"] == w.size
        assert_allclose(row[cols].to_numpy(dtype=float), np.quantile(w, qs), rtol=1e-12)
        assert row["mean"] == pytest.approx(w.mean())
    s_in = np.bincount(e.dst, weights=e.weight.astype(np.float64), minlength=g.n_nodes)
    s_out = np.bincount(e.src, weights=e.weight.astype(np.float64), minlength=g.n_nodes)
    for quantity, s in (("in_strength", s_in), ("out_strength", s_out)):
        rows = st[st.quantity == quantity]
        assert len(rows) == len(g.partitions) - 1  # H_0 has no in-edges, H_L no out-edges
        for _, row in rows.iterrows():
            p = [p for p in g.partitions if p.name == row["of"]][0]
            assert_allclose(row[cols].to_numpy(dtype=float), np.quantile(s[p.offset:p.stop], qs), rtol=1e-9)


def test_summary_counts(small):
    model, _ = small
    g = lg.export_graph(model, residual=0.5)
    s = A.summary(g)
    assert list(s.name) == ["H0", "I0", "H1", "I1", "H2"]
    assert list(s["size"]) == [4, 6, 4, 6, 4]
    e, part = g.edges, g.nodes.partition.to_numpy()
    assert list(s.out_edges) == np.bincount(part[e.src], minlength=5).tolist()
    assert list(s.in_edges) == np.bincount(part[e.dst], minlength=5).tolist()
    info = s.attrs["graph"]
    assert info["n_edges"] == g.n_edges == 2 * 2 * 24 + 2 * 4
    assert info["density"] == pytest.approx(g.n_edges / (24 * 23))
    assert info["block_density"] == pytest.approx(g.n_edges / (2 * 2 * 24 + 2 * 16))
    assert info["residual"] == 0.5 and info["mode"] == "chained"


# ----------------------------------------------------------------------------- scores
@pytest.fixture(scope="module")
def scored(small):
    model, stats = small
    g = lg.export_graph(model, stats)
    rng = np.random.default_rng(0)
    scores = {"pagerank": lg.pagerank(g, direction="reverse", personalization="activation"),
              "random": rng.random(g.n_nodes),
              "magnitude": lg.score_neurons(model, None, "magnitude")}
    return g, scores


def _inter(g, v, layer):
    p = [p for p in g.intermediate_partitions() if p.layer == layer][0]
    return np.asarray(v)[p.offset:p.stop]


def test_correlations_equal_scipy(scored):
    g, scores = scored
    c = A.correlations(g, scores)
    table = S.score_table(g, scores)
    for a, b in (("pagerank", "random"), ("pagerank", "magnitude"), ("random", "magnitude")):
        xs, ys = [], []
        for layer in (0, 1):
            x, y = _inter(g, table[a], layer), _inter(g, table[b], layer)
            row = c[(c.scope == "layer") & (c.layer == layer) & (c.a == a) & (c.b == b)].iloc[0]
            assert row.spearman == pytest.approx(sps.spearmanr(x, y).statistic, abs=1e-12)
            assert row.kendall == pytest.approx(sps.kendalltau(x, y).statistic, abs=1e-12)
            assert row.n == 6
            xs.append(x / np.abs(x).mean())
            ys.append(y / np.abs(y).mean())
        row = c[(c.scope == "all") & (c.a == a) & (c.b == b)].iloc[0]
        assert pd.isna(row.layer)
        assert row.spearman == pytest.approx(sps.spearmanr(np.concatenate(xs), np.concatenate(ys)).statistic, abs=1e-12)
        assert row.kendall == pytest.approx(sps.kendalltau(np.concatenate(xs), np.concatenate(ys)).statistic, abs=1e-12)


def test_overlap_equals_sets_by_hand(scored):
    g, scores = scored
    amount = 0.5
    o = A.overlap(g, scores, amount=amount)
    table = S.score_table(g, scores)

    def pruned(name, layer):
        x = _inter(g, table[name], layer)
        return set(np.argsort(x, kind="stable")[:round(amount * x.size)].tolist())

    for a, b in (("pagerank", "random"), ("random", "magnitude")):
        union_a, union_b = set(), set()
        for layer in (0, 1):
            sa, sb = pruned(a, layer), pruned(b, layer)
            row = o[(o.scope == "layer") & (o.layer == layer) & (o.a == a) & (o.b == b)].iloc[0]
            assert row.jaccard == pytest.approx(len(sa & sb) / len(sa | sb))
            assert row.n_pruned == 3
            union_a |= {(layer, i) for i in sa}
            union_b |= {(layer, i) for i in sb}
        row = o[(o.scope == "all") & (o.a == a) & (o.b == b)].iloc[0]
        assert row.jaccard == pytest.approx(len(union_a & union_b) / len(union_a | union_b))
    with pytest.raises(InvalidArgumentError, match="`amount` must be a float in \\[0, 1\\); got 1.5"):
        A.overlap(g, scores, amount=1.5)


def test_top_neurons_and_mass(scored):
    g, scores = scored
    t = A.top_neurons(g, scores, k=2)
    table = S.score_table(g, scores)
    for name in scores:
        for layer in (0, 1):
            x = _inter(g, table[name], layer)
            got = t[(t.score == name) & (t.layer == layer)].sort_values("rank")
            assert got["index"].tolist() == np.argsort(-x, kind="stable")[:2].tolist()
            assert_allclose(got.value, np.sort(x)[::-1][:2])
    pr = scores["pagerank"].scores
    m = A.mass_by_layer(g, {"pagerank": pr})
    assert m.share.sum() == pytest.approx(1.0)
    for row in m.itertuples():
        p = g.partitions[row.partition]
        assert row.mass == pytest.approx(pr[p.offset:p.stop].sum())
        assert row.ratio == pytest.approx(row.share / (p.size / g.n_nodes))


def test_graph_baselines_equal_score_neurons(small):
    model, stats = small
    g = lg.export_graph(model, stats, weighting="abs")  # plain |W| edges keep the weight-only baselines
    got = A.baseline_scores(g)
    for name in A.BASELINES:
        want = lg.score_neurons(model, stats, name)
        for layer in (0, 1):
            assert_allclose(_inter(g, got[name], layer), want.intermediate[layer].numpy(), rtol=1e-5)
    # wanda-sp is also the down out-strength of an abs_x_input graph
    gx = lg.export_graph(model, stats, weighting="abs_x_input")
    assert_allclose(A.baseline_scores(gx, ["wanda-sp"])["wanda-sp"], got["wanda-sp"], rtol=1e-5)
    why = A.available_baselines(lg.export_graph(model, stats, weighting="activation_share"))
    assert why["activation"] is None and "activation_share" in why["wanda-sp"] and why["magnitude"]
    with pytest.raises(InvalidArgumentError, match="baseline 'activation' cannot be computed from this graph: the "
                                                   "graph has no node activations"):
        A.baseline_scores(lg.export_graph(model), ["activation"])


def test_stored_names_and_bad_scores(scored):
    g, scores = scored
    with pytest.raises(InvalidArgumentError, match="`stored` 'pagerank_reverse_a0.85' is not a score stored with this "
                                                   "graph \\(stored: none\\); add it with `llmrank-graph rank"):
        A.correlations(g, ["pagerank_reverse_a0.85"])
    with pytest.raises(InvalidArgumentError, match="`scores\\['x'\\]` must have one value per node: length 24"):
        A.top_neurons(g, {"x": np.ones(3)})
    with pytest.raises(InvalidArgumentError, match="`methods` must be one of 'spearman', 'kendall'; got 'pearson'"):
        A.correlations(g, scores, methods=["pearson"])


# ----------------------------------------------------------------------------- inspect
def test_inspect_report_text_json_and_files(small, tmp_path):
    model, stats = small
    g = lg.export_graph(model, stats, weighting="abs")  # plain |W| edges keep the weight-only baselines
    rep = A.inspect_graph(g, centralities=["pagerank", "katz", "strength", "eigenvector"], paths=3, k=2)
    assert set(rep.sources) == {"pagerank_reverse_a0.85_activation", "katz_forward_a0.1", "strength_in",
                                "eigenvector_undirected", "magnitude", "activation", "wanda-sp"}
    assert rep.sources["magnitude"] == "baseline (graph)"
    text = rep.to_text()
    for section in ("per layer (median", "spearman rank correlation", "Jaccard overlap", "share of the mass",
                    "heaviest paths"):
        assert section in text
    d = json.loads(json.dumps(rep.to_dict()))  # JSON all the way down
    assert len(d["paths"]) == 3 and d["graph"]["n_edges"] == g.n_edges
    # the JSON holds the same correlations as the API
    c = A.correlations(g, {k: v for k, v in S.score_table(g, {"magnitude": A.baseline_scores(g)["magnitude"],
                                                                "activation": A.baseline_scores(g)["activation"]}
                                                           ).items()})
    row = [r for r in d["correlations"] if r["a"] == "magnitude" and r["b"] == "activation" and r["scope"] == "all"]
    assert row[0]["spearman"] == pytest.approx(c[c.scope == "all"].spearman.iloc[0])
    out = rep.write(tmp_path / "rep")
    names = {p.name for p in out.iterdir()}
    assert {"report.json", "correlations.csv", "layer_stats.csv", "paths.csv", "strength.png", "correlations.png",
            "centrality_heatmap.png", "mass.png"} <= names
    assert pd.read_csv(out / "layer_stats.csv").shape[0] == len(rep.layer_stats)
    other = tmp_path / "mine"
    other.mkdir()
    with pytest.raises(InvalidArgumentError, match="not an inspect report"):
        rep.write(other, overwrite=True)
    rep.write(out, overwrite=True)  # a report replaces a report


def test_inspect_uses_stored_columns(small, monkeypatch):
    model, stats = small
    g = lg.export_graph(model, stats)
    pr = lg.pagerank(g, direction="reverse", personalization="activation")
    g.add_scores("pagerank_reverse_a0.85_activation", pr)

    def boom(*a, **k):
        raise AssertionError("recomputed a stored centrality")

    real = S.centrality_entry
    monkeypatch.setattr(S, "centrality_entry",
                        lambda name, *a: dataclasses.replace(real(name), function=boom) if name == "pagerank" else
                        real(name, *a))
    rep = A.inspect_graph(g, centralities=["pagerank", "strength"])
    assert rep.sources["pagerank_reverse_a0.85_activation"] == "stored"
    assert rep.sources["strength_in"].startswith("computed")


def test_inspect_bad_input(small):
    model, _ = small
    g = lg.export_graph(model)
    with pytest.raises(InvalidArgumentError, match="`centralities` must be one of 'pagerank', 'katz', 'hits', "
                                                   "'eigenvector', 'strength', 'degree'; got 'closeness'"):
        A.inspect_graph(g, centralities=["pagerank", "closeness"])
    with pytest.raises(InvalidArgumentError, match="`paths` must be a positive int; got 0"):
        A.inspect_graph(g, paths=0)
    with pytest.raises(InvalidArgumentError, match="`stored` 'katz_forward_a0.1' is not a score stored"):
        A.inspect_graph(g, stored=["katz_forward_a0.1"])
    with pytest.raises(InvalidArgumentError, match="baseline 'wanda-sp' cannot be computed"):
        A.inspect_graph(g, baselines=["wanda-sp"])
    rep = A.inspect_graph(g, centralities=["strength"])  # no stats: the activation baselines are left out
    assert set(rep.sources) == {"strength_in", "magnitude"}
    assert any("activation" in n for n in rep.notes)


def test_inspect_pagerank_is_the_scorers(small):
    """On a calibrated export, inspect's PageRank is `score_neurons(..., "pagerank")`; elsewhere a note says why not."""
    model, stats = small
    g = lg.export_graph(model, stats)
    rep = A.inspect_graph(g, centralities=["pagerank"], k=g.meta["intermediate_sizes"][0])
    want = lg.score_neurons(model, stats, "pagerank")
    top = rep.top_neurons[rep.top_neurons.score == "pagerank_reverse_a0.85_activation"]
    for layer, s in want.intermediate.items():
        got = top[top.layer == layer].sort_values("index").value.to_numpy()
        assert_allclose(got, s.numpy(), rtol=1e-10)
    assert not any("PageRank" in n for n in rep.notes) and S.pagerank_departures(g) == {}
    rep = A.inspect_graph(lg.export_graph(model, stats, weighting="abs"), centralities=["pagerank"])
    assert ("PageRank is not the pagerank scorer's here: the graph was exported with weighting 'abs', not the "
            "pagerank scorer's 'activation_share'; ranking it as exported") in rep.notes
