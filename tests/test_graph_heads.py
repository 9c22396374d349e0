"""Attention heads as nodes of the graph: weights against a dense construction, the DAG, every
backend against networkx, storage, streaming, viewers, paths and head scores."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from _tiny import tiny_gpt2, tiny_llama
from numpy.testing import assert_allclose
from test_backends import ALGORITHMS, DIRECTED, fake_cugraph, fake_cupy, reference  # noqa: F401 (fixtures)
from test_backends import run as run_centrality
from transformers import LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM

import llmrank_graph as lg
from llmrank_graph import centrality as C
from llmrank_graph.centrality import backends as B
from llmrank_graph.data.stats import ActivationStats
from llmrank_graph.errors import InvalidArgumentError
from llmrank_graph.graph.heads import HeadBlock, head_scores
from llmrank_graph.models.architectures import mlp_layers
from llmrank_graph.models.attention import attention_layers

try:
    import networkx as nx
except ImportError:  # pragma: no cover
    nx = None


# ----------------------------------------------------------------------------- models
def gqa_llama(seed=0, layers=3, d=16, m=12, heads=4, kv=2):
    """A random Llama with grouped-query attention (4 query heads in 2 key/value groups)."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, hidden_size=d, intermediate_size=m, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def tiny_opt(seed=0):
    torch.manual_seed(seed)
    cfg = OPTConfig(vocab_size=64, hidden_size=16, ffn_dim=12, num_hidden_layers=2, num_attention_heads=4,
                    word_embed_proj_dim=16, max_position_embeddings=64)
    return OPTForCausalLM(cfg).eval()


MODELS = {"llama-gqa": gqa_llama, "gpt2": lambda: tiny_gpt2(seed=3, layers=2, d=16), "opt": tiny_opt}


def raw_weights(model, l):
    """(W_V, W_O, W_up, W_down) of layer ``l`` in (out, in) layout, read straight from the modules."""
    t = model.config.model_type
    if t == "gpt2":
        blk = model.transformer.h[l]
        d = model.config.n_embd
        return (blk.attn.c_attn.weight[:, 2 * d:].T, blk.attn.c_proj.weight.T, blk.mlp.c_fc.weight.T,
                blk.mlp.c_proj.weight.T)
    if t == "opt":
        blk = model.model.decoder.layers[l]
        return blk.self_attn.v_proj.weight, blk.self_attn.out_proj.weight, blk.fc1.weight, blk.fc2.weight
    blk = model.model.layers[l]
    return blk.self_attn.v_proj.weight, blk.self_attn.o_proj.weight, blk.mlp.up_proj.weight, blk.mlp.down_proj.weight


def head_layout(model):
    c = model.config
    n = getattr(c, "num_attention_heads", None) or c.n_head
    kv = getattr(c, "num_key_value_heads", None) or n
    d = getattr(c, "hidden_size", None) or c.n_embd
    return n, kv, getattr(c, "head_dim", None) or d // n  # Gemma states head_dim apart from hidden // heads


def dense_reference(model, residual=0.0, act=None, weighting="abs"):
    """The whole adjacency (src, dst) of the head graph, built from the weights in float64 numpy.

    ``act``: per layer (a_R, a_A, a_H, a_I) and the last partition's, for the activation weightings.
    """
    n, kv, hd = head_layout(model)
    L = len(mlp_layers(model))
    ws = [[np.abs(w.detach().double().numpy()) for w in raw_weights(model, l)] for l in range(L)]
    d, m = ws[0][0].shape[1], ws[0][2].shape[0]
    size = L * (2 * d + n + m) + d
    A = np.zeros((size, size))
    blocks = []  # (source slice, destination slice, matrix (src, dst), source activation, is a skip block)
    for l, (wv, wo, up, down) in enumerate(ws):
        r, a, h, i, nxt = (l * (2 * d + n + m) + off for off in (0, d, d + n, 2 * d + n, 2 * d + n + m))
        group = n // kv
        value = np.stack([wv[(hh // group) * hd:(hh // group + 1) * hd].sum(0) for hh in range(n)], axis=1)
        output = np.stack([wo[:, hh * hd:(hh + 1) * hd].sum(1) for hh in range(n)], axis=0)
        a_r, a_a, a_h, a_i = act[l] if act is not None else (None,) * 4
        blocks += [(slice(r, r + d), slice(a, a + n), value, a_r, False),
                   (slice(a, a + n), slice(h, h + d), output, a_a, False),
                   (slice(h, h + d), slice(i, i + m), up.T, a_h, False),
                   (slice(i, i + m), slice(nxt, nxt + d), down.T, a_i, False)]
        if residual:
            blocks += [(slice(r, r + d), slice(h, h + d), residual * np.eye(d), a_r, True),
                       (slice(h, h + d), slice(nxt, nxt + d), residual * np.eye(d), a_h, True)]
    for s, t, M, a_src, skip in blocks:
        if weighting == "activation_share" and not skip:  # each source sends its activation, split by |W|
            tot = M.sum(1, keepdims=True)
            M = np.divide(M, tot, out=np.zeros_like(M), where=tot > 0) * a_src[:, None]
        elif weighting != "abs":  # abs_x_input, and the skip edges of either: r * a_i
            M = M * a_src[:, None]
        A[s, t] += M
    return A


def as_dense(graph):
    e = graph.edges
    A = np.zeros((graph.n_nodes, graph.n_nodes))
    A[e.src.to_numpy(), e.dst.to_numpy()] = e.weight.to_numpy()
    return A


def fake_stats(model, seed=0):
    """ActivationStats with random positive norms for every MLP module and each layer's v/qkv and o."""
    g = torch.Generator().manual_seed(seed)
    norms = {}

    def rand(k):
        return torch.rand(k, generator=g, dtype=torch.float64) + 0.1

    for mlp in mlp_layers(model):
        for name, role in ((mlp.gate_name, "gate"), (mlp.up_name, "up"), (mlp.down_name, "down")):
            if name is not None:
                out_f, in_f = mlp.weight(role).shape
                norms[name] = (rand(in_f), rand(out_f))
    for att in attention_layers(model):
        d = att.hidden_size
        kv_out = att.num_key_value_heads * att.head_dim
        if "qkv" in att.names:
            norms[att.names["qkv"]] = (rand(d), rand(att.num_heads * att.head_dim + 2 * kv_out))
        else:
            norms[att.names["v"]] = (rand(d), rand(kv_out))
        norms[att.names["o"]] = (rand(att.num_heads * att.head_dim), rand(d))
    return ActivationStats.from_norms(norms, n_tokens=10)


def reference_activations(model, stats):
    """Per layer (a_R, a_A, a_H, a_I) from ``stats``, and the last partition's (down_proj's output)."""
    out = []
    for mlp, att in zip(mlp_layers(model), attention_layers(model)):
        qkv = att.names.get("qkv", att.names.get("v"))
        o_in = stats[att.names["o"]].input_sumsq.numpy()
        a_heads = np.sqrt(o_in.reshape(att.num_heads, att.head_dim).sum(1))
        out.append((stats.input_norm(qkv).numpy(), a_heads, stats.input_norm(mlp.up_name).numpy(),
                    stats.input_norm(mlp.down_name).numpy()))
    last = stats.output_norm(mlp_layers(model)[-1].down_name).numpy()
    return out, last


# ----------------------------------------------------------------------------- layout and weights
def test_partitions_and_dag():
    model = gqa_llama()
    g = lg.export_graph(model, attention=True, residual=0.3)
    assert [p.name for p in g.partitions] == ["R0", "A0", "H0", "I0", "R1", "A1", "H1", "I1", "R2", "A2", "H2", "I2",
                                              "R3"]
    assert [p.kind for p in g.partitions[:4]] == ["hidden", "head", "hidden", "intermediate"]
    assert g.has_heads and [p.size for p in g.head_partitions()] == [4, 4, 4]
    assert g.is_dag_by_partition()
    assert g.n_nodes == 3 * (16 + 4 + 16 + 12) + 16
    assert g.meta["attention"] is True and g.meta["num_heads"] == [4] * 3 and g.meta["num_key_value_heads"] == [2] * 3
    assert g.meta["head_dim"] == 4
    roles = sorted({(b.src.name[0], b.dst.name[0], b.role) for b in g.blocks})
    assert roles == [("A", "H", "output"), ("H", "I", "up"), ("H", "R", "residual"), ("I", "R", "down"),
                     ("R", "A", "value"), ("R", "H", "residual")]
    # the edge list is acyclic: networkx agrees
    if nx is not None:
        G = nx.DiGraph(list(zip(g.edges.src, g.edges.dst)))
        assert nx.is_directed_acyclic_graph(G)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("residual", [0.0, 0.5])
def test_edge_weights_match_a_dense_construction(name, residual):
    model = MODELS[name]()
    g = lg.export_graph(model, attention=True, residual=residual)
    assert_allclose(as_dense(g), dense_reference(model, residual), rtol=2e-6, atol=1e-7)
    n, kv, _ = head_layout(model)
    if kv < n:  # GQA: the heads of one group share their in-edges, not their out-edges
        value = as_dense(g)[g.partitions[0].offset:g.partitions[0].stop, g.partitions[1].offset:g.partitions[1].stop]
        assert_allclose(value[:, 0], value[:, 1])
        assert not np.allclose(value[:, 0], value[:, 2])
        output = as_dense(g)[g.partitions[1].offset:g.partitions[1].stop, g.partitions[2].offset:g.partitions[2].stop]
        assert not np.allclose(output[0], output[1])


@pytest.mark.parametrize("weighting", ["abs_x_input", "activation_share"])
def test_activation_weightings_and_node_activations(weighting):
    model = gqa_llama(seed=2)
    stats = fake_stats(model)
    g = lg.export_graph(model, stats, attention=True, weighting=weighting, residual=0.2)
    per_layer, last = reference_activations(model, stats)
    want_act = np.concatenate([x for layer in per_layer for x in layer] + [last])
    assert_allclose(g.activation, want_act, rtol=1e-12)
    assert g.has_activation
    assert_allclose(as_dense(g), dense_reference(model, 0.2, per_layer, weighting), rtol=2e-6, atol=1e-7)
    if weighting == "activation_share":  # every head sends exactly its output norm into H_l
        out = g.strength("forward").numpy()
        for p, (_, a_heads, _, _) in zip(g.head_partitions(), per_layer):
            assert_allclose(out[p.offset:p.stop], a_heads, rtol=1e-6)


def test_stats_without_attention_entries_are_refused():
    model = gqa_llama()
    stats = fake_stats(model)
    mlp_only = ActivationStats({k: stats[k] for k in stats if "self_attn" not in k})
    with pytest.raises(InvalidArgumentError, match=r"weighting='activation_share'.*o_proj.*attention=True"):
        lg.export_graph(model, mlp_only, attention=True)
    no_input = ActivationStats({k: stats[k] for k in stats if "v_proj" not in k})
    with pytest.raises(InvalidArgumentError, match=r"v_proj.*the attention input's norm"):
        lg.export_graph(model, no_input, attention=True, weighting="abs_x_input")
    assert not lg.export_graph(model, mlp_only).has_heads  # the MLP graph needs none of them


def test_isolated_mode_and_bad_values_are_refused():
    with pytest.raises(InvalidArgumentError, match=r"`attention=True` needs mode='chained'"):
        lg.ExportOptions(mode="isolated", attention=True)
    with pytest.raises(TypeError, match="`attention` must be a bool"):
        lg.ExportOptions(attention="yes")
    with pytest.raises(InvalidArgumentError, match="mode='chained'"):
        lg.export_graph(gqa_llama(), mode="isolated", attention=True)


def test_non_finite_attention_weights_are_refused():
    model = gqa_llama()
    with torch.no_grad():
        model.model.layers[1].self_attn.o_proj.weight[0, 0] = float("nan")
    with pytest.raises(InvalidArgumentError, match=r"NaN or inf in model.layers.1.self_attn.o_proj.weight"):
        lg.export_graph(model, attention=True)
    lg.export_graph(model)  # the MLP graph does not read the attention


def test_without_attention_the_graph_is_unchanged():
    model = tiny_llama(seed=1)
    g = lg.export_graph(model, residual=0.25)
    h = lg.export_graph(model, residual=0.25, attention=False)
    assert [p.name for p in g.partitions] == ["H0", "I0", "H1", "I1", "H2", "I2", "H3"]
    assert not g.has_heads and "attention" not in g.meta and "num_heads" not in g.meta
    assert list(g.nodes.kind.cat.categories) == ["hidden", "intermediate"]
    pd.testing.assert_frame_equal(g.edges, h.edges)
    assert lg.graph.export.export_options(g) == lg.ExportOptions(residual=0.25)
    assert lg.graph.export.export_options(lg.export_graph(model, attention=True)).attention


def test_head_blocks_follow_in_place_changes():
    """Zeroing a head's o_proj columns (as head zeroing does) changes the graph and drops its caches."""
    model = gqa_llama()
    g = lg.export_graph(model, attention=True)
    before = lg.pagerank(g, direction="reverse").scores
    att = attention_layers(model)[1]
    att.zero_heads(torch.tensor([True, False, True, False]))  # one head of each key/value group
    p = g.head_partitions()[1]
    assert g.strength("forward")[p.offset + 1] == 0
    after = lg.pagerank(g, direction="reverse").scores
    assert not np.allclose(before, after)
    assert_allclose(after, lg.pagerank(lg.export_graph(model, attention=True), direction="reverse").scores)


def test_sparsified_head_graph_keeps_the_heaviest_edges():
    model = gqa_llama()
    full = lg.export_graph(model, attention=True)
    g = lg.export_graph(model, attention=True, keep=2)
    assert g.is_dag_by_partition() and g.has_heads
    dense = as_dense(full)
    for b in g.blocks:
        s, d, w = b.coo()
        want = np.sort(dense[b.src.offset:b.src.stop, b.dst.offset:b.dst.stop], axis=0)[-2:].T
        got = np.zeros((b.dst.size, 2))
        for j in range(b.dst.size):
            got[j] = np.sort(w[d == b.dst.offset + j])
        assert_allclose(got, want, rtol=1e-6)


# ----------------------------------------------------------------------------- centralities
@pytest.fixture(scope="module", params=["abs", "residual", "share", "gpt2"])
def head_graph(request):
    if request.param == "gpt2":
        return lg.export_graph(tiny_gpt2(seed=3, layers=2, d=16), attention=True)
    model = gqa_llama(seed=5)
    if request.param == "share":
        return lg.export_graph(model, fake_stats(model), attention=True, residual=0.3)
    return lg.export_graph(model, attention=True, residual=0.5 if request.param == "residual" else 0.0)


CASES = [(name, algo, d) for name, b in B.registered().items() for algo in ALGORITHMS if b.implements(algo)
         for d in (("forward", "reverse") if algo in DIRECTED else ("forward",))]


@pytest.mark.parametrize("backend,algorithm,direction", CASES, ids=["-".join(c) for c in CASES])
def test_every_backend_matches_networkx_on_head_graphs(backend, algorithm, direction, head_graph):
    reason = B.get_backend(backend).unavailable_reason()
    if reason is not None:
        pytest.skip(f"backend {backend!r} unavailable: {reason}")
    if nx is None:  # pragma: no cover
        pytest.skip("networkx is not installed")
    got = run_centrality(head_graph, algorithm, backend, direction)
    want = reference(head_graph, algorithm, direction)
    # HITS: we iterate to tol=1e-12 (L1), networkx uses ARPACK; on these 13 partitions the
    # iteration leaves a few 1e-10 on hubs that are exactly ~0, hence 1e-8 of the largest value.
    atol = (1e-8 if algorithm == "hits" else 1e-10) * np.abs(want).max()
    assert_allclose(got, want, rtol=1e-6, atol=atol)


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_sweep_pagerank_with_activation_teleport_matches_networkx(direction):
    model = gqa_llama(seed=4)
    g = lg.export_graph(model, fake_stats(model), attention=True)
    got = C.pagerank(g, direction=direction, personalization="activation", backend="sweep").scores
    e = g.edges
    G = nx.DiGraph()
    G.add_nodes_from(range(g.n_nodes))
    src, dst = (e.src, e.dst) if direction == "forward" else (e.dst, e.src)
    G.add_weighted_edges_from(zip(src.tolist(), dst.tolist(), e.weight.astype(float).tolist()))
    p = dict(enumerate(g.activation / g.activation.sum()))
    want = nx.pagerank(G, alpha=0.85, personalization=p, tol=1e-13, max_iter=2000)
    assert_allclose(got, [want[i] for i in range(g.n_nodes)], rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("algorithm,direction", [("pagerank", "forward"), ("pagerank", "reverse"), ("katz", "forward"),
                                                  ("katz", "reverse"), ("eigenvector", "forward")])
def test_cupy_backend_code_on_head_graphs(fake_cupy, algorithm, direction):  # noqa: F811 (fixture)
    g = lg.export_graph(gqa_llama(seed=6), attention=True, residual=0.3)
    got = run_centrality(g, algorithm, "cupy", direction)
    assert_allclose(got, run_centrality(g, algorithm, "scipy", direction), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_cugraph_backend_code_on_head_graphs(fake_cugraph, direction):  # noqa: F811 (fixture)
    g = lg.export_graph(gqa_llama(seed=6), attention=True, residual=0.2)
    res = C.pagerank(g, backend="cugraph", direction=direction, tol=1e-12)
    assert_allclose(res.scores, C.pagerank(g, backend="scipy", direction=direction, tol=1e-12).scores, rtol=1e-8)
    k = C.katz(g, alpha=0.3, direction=direction, backend="cugraph", tol=1e-12)
    assert_allclose(k.scores, C.katz(g, alpha=0.3, direction=direction, backend="scipy", tol=1e-12).scores, rtol=1e-9)


def test_head_scores_slice_the_head_partitions():
    model = gqa_llama()
    g = lg.export_graph(model, attention=True)
    res = lg.pagerank(g, direction="reverse")
    hs = head_scores(g, res)
    assert list(hs) == [0, 1, 2]
    for p in g.head_partitions():
        assert hs[p.layer].dtype == torch.float64 and hs[p.layer].shape == (4,)
        assert_allclose(hs[p.layer].numpy(), res.scores[p.offset:p.stop])
    assert_allclose(head_scores(g, torch.from_numpy(res.scores))[1].numpy(), hs[1].numpy())
    with pytest.raises(InvalidArgumentError, match="has no head nodes"):
        head_scores(lg.export_graph(model), np.zeros(lg.export_graph(model).n_nodes))
    with pytest.raises(InvalidArgumentError, match="one value per node"):
        head_scores(g, np.zeros(3))


# ----------------------------------------------------------------------------- storage, streaming, viewers, paths
@pytest.mark.parametrize("lazy", [True, False])
def test_storage_round_trip(tmp_path, lazy):
    model = gqa_llama(seed=8)
    g = lg.export_graph(model, fake_stats(model), attention=True, residual=0.25)
    g.add_scores("pagerank_reverse_a0.85", lg.pagerank(g, direction="reverse"))
    h = lg.read_graph(g.to_parquet(tmp_path / "g"), lazy=lazy)
    assert h.has_heads and [p.name for p in h.partitions] == [p.name for p in g.partitions]
    assert [(p.kind, p.offset, p.size) for p in h.partitions] == [(p.kind, p.offset, p.size) for p in g.partitions]
    pd.testing.assert_frame_equal(h.nodes, g.nodes)
    pd.testing.assert_frame_equal(h.edges.reset_index(drop=True), g.edges)
    assert [b.role for b in h.blocks] == [b.role for b in g.blocks]
    assert h.meta["num_heads"] == [4] * 3 and h.meta["attention"] is True
    for direction in ("forward", "reverse"):
        assert_allclose(lg.pagerank(h, direction=direction).scores, lg.pagerank(g, direction=direction).scores,
                        rtol=1e-12)
    sub = lg.read_graph(tmp_path / "g", layers=[1])
    assert [p.name for p in sub.partitions] == ["R1", "A1", "H1", "I1", "R2"]
    assert sub.meta["num_heads"] == [4] and sub.has_heads
    assert_allclose(head_scores(h, h.scores["pagerank_reverse_a0.85"])[2].numpy(),
                    head_scores(g, g.scores["pagerank_reverse_a0.85"])[2].numpy())


def test_edge_list_graph_with_heads_round_trips(tmp_path):
    g = lg.export_graph(gqa_llama(), attention=True)
    h = lg.MLPGraph.from_edgelist(g.nodes, g.edges, meta=g.meta)
    assert h.has_heads and [b.role for b in h.blocks] == [b.role for b in g.blocks]
    assert_allclose(lg.pagerank(h).scores, lg.pagerank(g).scores, rtol=1e-10)


def test_graph_directory_written_before_heads_reads_without_heads(tmp_path):
    """A directory as written before heads existed: no attention keys, two node kinds."""
    model = tiny_llama(seed=7)
    g = lg.export_graph(model, residual=0.25)
    path = g.to_parquet(tmp_path / "old")
    meta = json.loads((path / "meta.json").read_text())
    assert not {"attention", "num_heads", "num_key_value_heads", "head_dim"} & set(meta)
    meta["library_version"] = "0.0.1"
    (path / "meta.json").write_text(json.dumps(meta))
    h = lg.read_graph(path)
    assert not h.has_heads and h.head_partitions() == []
    assert lg.graph.export.export_options(h) == lg.ExportOptions(residual=0.25)
    pd.testing.assert_frame_equal(h.edges.reset_index(drop=True), g.edges)


def save_model(model, path):
    model.save_pretrained(path)
    return path


@pytest.mark.parametrize("name", ["llama-gqa", "gpt2", "opt"])
def test_streamed_head_graph_equals_exported(name, tmp_path):
    from llmrank_graph.graph.streaming import SafetensorsHeadBlock, export_graph_from_safetensors

    model = MODELS[name]()
    path = save_model(model, tmp_path / name)
    got = export_graph_from_safetensors(path, residual=0.3, attention=True)
    want = lg.export_graph(model, residual=0.3, attention=True)
    assert not got.resident and any(isinstance(b, SafetensorsHeadBlock) for b in got.blocks)
    assert [(p.name, p.size) for p in got.partitions] == [(p.name, p.size) for p in want.partitions]
    assert got.meta["num_heads"] == want.meta["num_heads"]
    assert got.meta["num_key_value_heads"] == want.meta["num_key_value_heads"]
    assert got.edges.equals(want.edges)
    for direction in ("forward", "reverse"):
        assert_allclose(C.pagerank(got, backend="sweep", direction=direction).scores,
                        C.pagerank(want, backend="sweep", direction=direction).scores, rtol=1e-12)


def test_viewer_and_heaviest_paths_include_heads(tmp_path):
    g = lg.export_graph(gqa_llama(seed=9), attention=True)
    G = g.to_networkx(top_nodes=None, top_edges=None)
    assert G.number_of_nodes() == g.n_nodes and G.number_of_edges() == g.n_edges
    heads = [v for v, a in G.nodes(data=True) if a["kind"] == "head"]
    assert len(heads) == 12 and G.nodes[heads[0]]["label"] == "A0:0"
    if nx is not None:
        path = lg.graph.write_viewer(g, tmp_path / "g.graphml")
        assert sum(a["kind"] == "head" for _, a in nx.read_graphml(path).nodes(data=True)) == 12
    from llmrank_graph.analysis.paths import heaviest_paths

    p = heaviest_paths(g, k=3, device="cpu")
    kinds = [k for _, k, _ in p.path[0]]
    assert kinds == ["hidden", "head", "hidden", "intermediate"] * 3 + ["hidden"]
    # the best path by brute force over the DAG (networkx), with normalised weights
    if nx is not None:
        s = g.strength("forward").numpy()
        e = g.edges
        G = nx.DiGraph()
        G.add_weighted_edges_from((u, v, -np.log(w / s[u])) for u, v, w in zip(e.src, e.dst, e.weight) if w > 0)
        G.add_edges_from(("s", v, {"weight": 0.0}) for v in range(g.partitions[0].size))
        G.add_edges_from((v, "t", {"weight": 0.0}) for v in range(g.partitions[-1].offset, g.n_nodes))
        best = nx.shortest_path(G, "s", "t", weight="weight")[1:-1]
        assert p.vertices[0] == best


def test_cli_export_attention(tmp_path, capsys):
    from _tiny import save_tiny_model

    from llmrank_graph.cli import main

    model_dir = save_tiny_model(tmp_path / "m")
    out = tmp_path / "g"
    assert main(["export", "--model", str(model_dir), "--out", str(out), "--attention"]) == 0
    g = lg.read_graph(out)
    assert g.has_heads and g.meta["weighting"] == "abs"
    assert main(["export", "--model", str(model_dir), "--out", str(tmp_path / "h"), "--attention",
                 "--mode", "isolated"]) == 2
    assert "--attention" in capsys.readouterr().err and not (tmp_path / "h").exists()
    assert main(["export", "--graph", str(out), "--out", str(tmp_path / "v.graphml"), "--format", "graphml",
                 "--attention"]) == 2
    assert "--attention" in capsys.readouterr().err


# ----------------------------------------------------------------------------- with the real calibration
def test_calibrated_head_activations_are_the_heads_output_norms():
    model = gqa_llama(seed=10)
    ids = torch.randint(0, 64, (4, 12), generator=torch.Generator().manual_seed(1))
    stats = lg.calibrate(model, input_ids=ids, batch_size=2, attention=True)
    seen = {}

    def keep(name):
        def hook(mod, inputs, output):
            for what, t in (("in", inputs[0]), ("out", output)):
                x = t.detach().double().reshape(-1, t.shape[-1])
                seen[name, what] = seen.get((name, what), 0) + (x ** 2).sum(0)
        return hook

    atts = attention_layers(model)
    handles = [m.register_forward_hook(keep((r, a.layer))) for a in atts for r, m in (("o", a.o), ("v", a.v))]
    with torch.no_grad():
        model(ids)
    for h in handles:
        h.remove()
    assert all(a.names["v"] in stats for a in atts)  # the attention's input: the residual nodes before the heads
    g = lg.export_graph(model, stats, attention=True)
    for att, p in zip(atts, g.head_partitions()):
        want = seen[("o", att.layer), "in"].reshape(att.num_heads, att.head_dim).sum(1).sqrt().numpy()
        assert_allclose(g.activation[p.offset:p.stop], want, rtol=1e-5)
        r = g.partitions[p.position - 1]
        assert_allclose(g.activation[r.offset:r.stop], seen[("v", att.layer), "in"].sqrt().numpy(), rtol=1e-5)
    assert g.has_activation and g.is_dag_by_partition()


def test_head_block_protocol_agrees_with_its_dense_matrix():
    model = gqa_llama()
    g = lg.export_graph(model, attention=True)
    b = next(b for b in g.blocks if isinstance(b, HeadBlock) and b.role == "value")
    M = b.dense()
    v = torch.rand(b.src.size, 2, dtype=torch.float64)
    assert_allclose(b.matmul(v), M @ v, rtol=1e-12)
    assert_allclose(b.rmatmul(torch.ones(b.dst.size, 1, dtype=torch.float64)).ravel(), M.sum(0), rtol=1e-12)
    assert_allclose(b.out_strength(), M.sum(0), rtol=1e-12)
    assert_allclose(b.in_strength(), M.sum(1), rtol=1e-12)
    out = np.zeros((1, b.dst.size))
    b.product(True)(np.ones((1, b.src.size)), out, 0.5)
    assert_allclose(out[0], 0.5 * M.sum(1).numpy(), rtol=1e-12)
    assert M.dtype == torch.float64 and (b.out_degree() == b.dst.size).all()


def test_inspect_text_names_the_heads():
    from llmrank_graph.analysis.inspect import inspect_graph
    from llmrank_graph.analysis.text import render_text

    model = gqa_llama(seed=12)
    g = lg.export_graph(model, fake_stats(model), attention=True)
    text = render_text(inspect_graph(g, paths=1))
    assert "attention=True" in text and "3 head of 4" in text
    assert "(intermediate / head / hidden partitions)" in text
    mass = lg.pagerank(g, direction="reverse", personalization="activation").scores
    share = sum(mass[p.offset:p.stop].sum() for p in g.head_partitions()) / mass.sum()
    assert f"head {share:.3f}" in text
    hops = next(line for line in text.splitlines() if line.startswith("  #1 ")).split(": ", 1)[1].split(" -> ")
    assert [h.split(":")[0] for h in hops] == [f"{x}{l}" for l in range(3) for x in "RAHI"] + ["R3"]
