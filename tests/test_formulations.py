"""The graph formulations of issue 19, each against networkx or a dense numpy reference.

- output seeds: ``pagerank(output_seed=...)`` (teleport only on the last hidden partition);
- path influence: ``centrality.influence`` and the ``influence`` scorer, ``(I - P^T)^{-1} seed``;
- measured skip edges: ``calibrate(residual=True)`` and ``residual='measured'``;
- the algebra of docs/design.md section 2 (why the default PageRank ranks as activation does).
"""

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import torch
from _tiny import tiny_gpt2, tiny_llama

import llmrank_graph as lg
from llmrank_graph.centrality import influence
from llmrank_graph.graph.export import DEFAULT_EXPORT, ExportOptions, export_options
from llmrank_graph.models.architectures import mlp_layers
from llmrank_graph.scoring import get_scorer, output_seed_vector, score_neurons

VOCAB = 64


@pytest.fixture(scope="module")
def llama():
    model = tiny_llama(seed=3, layers=3, d=8, m=12, vocab=VOCAB)
    ids = torch.randint(0, VOCAB, (4, 10), generator=torch.Generator().manual_seed(1))
    return model, lg.calibrate(model, input_ids=ids, batch_size=2, gradients=True, residual=True), ids


# ----------------------------------------------------------------------------- references
def _dense(graph) -> np.ndarray:
    """The weighted adjacency, ``A[u, v] = w_uv``, from the edge list."""
    a = np.zeros((graph.n_nodes, graph.n_nodes))
    e = graph.edges
    np.add.at(a, (e.src.to_numpy(), e.dst.to_numpy()), e.weight.to_numpy(dtype=np.float64))
    return a


def _influence_reference(graph, seed, direction) -> np.ndarray:
    """``(I - M)^{-1} seed`` by a dense solve: M shares each node's mass over its out-edges (forward) or
    its in-edges (reverse, where ``y_u = seed_u + sum_v w_uv / s_in(v) y_v``)."""
    a = _dense(graph)
    if direction == "forward":
        s = a.sum(1)
        m = np.divide(a, s[:, None], out=np.zeros_like(a), where=s[:, None] > 0).T  # M[v, u] = w_uv / s_u
    else:
        s = a.sum(0)
        m = np.divide(a, s[None, :], out=np.zeros_like(a), where=s[None, :] > 0)  # M[u, v] = w_uv / s_in(v)
    return np.linalg.solve(np.eye(graph.n_nodes) - m, seed)


def _nx_reverse_pagerank(graph, teleport, alpha=0.85) -> np.ndarray:
    e = graph.edges
    g = nx.DiGraph()
    g.add_nodes_from(range(graph.n_nodes))
    g.add_weighted_edges_from(zip(e.dst.tolist(), e.src.tolist(), e.weight.astype(float).tolist()))
    r = nx.pagerank(g, alpha=alpha, personalization=dict(enumerate(teleport)), tol=1e-15, max_iter=100_000)
    return np.array([r[i] for i in range(graph.n_nodes)])


def _slices(graph, x) -> dict:
    return {p.layer: x[p.offset:p.stop] for p in graph.intermediate_partitions()}


def _unembedding_seed(model, graph) -> np.ndarray:
    """Column norms of the LM head on the last partition, computed here from the weight."""
    w = model.get_output_embeddings().weight.detach().double().numpy()
    seed = np.zeros(graph.n_nodes)
    last = graph.partitions[-1]
    seed[last.offset:last.stop] = np.sqrt((w ** 2).sum(0))
    return seed


# ----------------------------------------------------------------------------- path influence
INFLUENCE_GRAPHS = {
    "toy": lambda: lg.graph.toy_graph(),
    "llama-residual": lambda: lg.export_graph(tiny_llama(seed=2, layers=3, d=6, m=7), gate="sum", residual=0.4),
    "gpt2-isolated": lambda: lg.export_graph(tiny_gpt2(seed=4), mode="isolated"),
}


@pytest.mark.parametrize("name", list(INFLUENCE_GRAPHS))
@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_influence_matches_a_dense_solve(name, direction):
    graph = INFLUENCE_GRAPHS[name]()
    seed = np.random.default_rng(5).random(graph.n_nodes)
    seed[::3] = 0.0
    res = influence(graph, seed, direction, device="cpu")
    assert res.exact and res.backend == "sweep" and res.algorithm == "influence"
    np.testing.assert_allclose(res.scores, _influence_reference(graph, seed, direction), rtol=1e-10, atol=1e-12)


def test_influence_of_an_output_seed_conserves_the_mass_per_layer():
    graph = INFLUENCE_GRAPHS["llama-residual"]()
    seed = np.zeros(graph.n_nodes)
    last = graph.partitions[-1]
    seed[last.offset:last.stop] = 1.0
    x = influence(graph, seed).scores
    # without skip edges every partition would carry the whole seed; with them, each H partition
    # still does: every path back from the output passes through every H_l
    for p in graph.partitions:
        if p.kind == "hidden":
            assert x[p.offset:p.stop].sum() == pytest.approx(last.size, rel=1e-12)


def test_influence_refuses_a_graph_that_is_not_a_dag_and_bad_seeds():
    nodes = pd.DataFrame({"vertex": [0, 1, 2], "layer": [0, 0, 1], "kind": ["hidden", "intermediate", "hidden"]})
    cyclic = lg.MLPGraph.from_edgelist(nodes, pd.DataFrame({"src": [0, 1, 2], "dst": [1, 2, 0],
                                                            "weight": [1.0, 1.0, 1.0]}))
    with pytest.raises(ValueError, match="needs a DAG whose edges go from earlier to later partitions"):
        influence(cyclic, np.ones(3))
    g = lg.graph.toy_graph()
    with pytest.raises(ValueError, match="`seed` must have one value per node"):
        influence(g, np.ones(3))
    with pytest.raises(ValueError, match="`seed` must be non-negative"):
        influence(g, -np.ones(4))
    with pytest.raises(ValueError, match="`direction` must be one of"):
        influence(g, np.ones(4), "sideways")


@pytest.mark.parametrize("seed", ["unembedding", "uniform", "gradient"])
def test_influence_scorer_is_the_reverse_influence_of_the_output_seed(llama, seed):
    model, stats, _ = llama
    graph = lg.export_graph(model, stats, weighting="abs_x_input")
    if seed == "unembedding":
        s = _unembedding_seed(model, graph)
    else:
        last = graph.partitions[-1]
        s = np.zeros(graph.n_nodes)
        s[last.offset:last.stop] = (1.0 if seed == "uniform" else
                                    stats[mlp_layers(model)[-1].down_name].output_grad_sumsq.sqrt().numpy())
    want = _slices(graph, _influence_reference(graph, s, "reverse"))
    res = score_neurons(model, stats, "influence", output_seed=seed)
    for layer, w in want.items():
        np.testing.assert_allclose(res.intermediate[layer].numpy(), w, rtol=1e-9)


def test_influence_scorer_refuses_the_isolated_mode_and_a_gradient_seed_without_gradients(llama):
    model, _, ids = llama
    with pytest.raises(ValueError, match="`mode` must be one of 'chained'"):
        get_scorer("influence", mode="isolated")
    plain = lg.calibrate(model, input_ids=ids)
    with pytest.raises(ValueError, match=r"'gradient' weights need the loss gradients.*gradients=True"):
        score_neurons(model, plain, "influence", output_seed="gradient")


# ----------------------------------------------------------------------------- output-seeded pagerank
@pytest.mark.parametrize("weighting", ["activation_share", "abs_x_input"])
def test_pagerank_seeded_by_the_unembedding_matches_networkx(llama, weighting):
    model, stats, _ = llama
    graph = lg.export_graph(model, stats, weighting=weighting)
    seed = _unembedding_seed(model, graph)
    want = _slices(graph, _nx_reverse_pagerank(graph, seed / seed.sum()))
    res = score_neurons(model, stats, "pagerank", weighting=weighting, output_seed="unembedding")
    for layer, w in want.items():
        np.testing.assert_allclose(res.intermediate[layer].numpy(), w, rtol=1e-8)
    # the seed replaces the activation teleport: the ranking differs from the default's
    default = score_neurons(model, stats, "pagerank", weighting=weighting)
    assert not np.allclose(default.intermediate[0].numpy(), res.intermediate[0].numpy())


def test_pagerank_seeded_by_the_gradient_matches_networkx(llama):
    model, stats, _ = llama
    graph = lg.export_graph(model, stats)
    seed = output_seed_vector(model, stats, graph, "gradient")
    last = graph.partitions[-1]
    want_seed = stats[mlp_layers(model)[-1].down_name].output_grad_sumsq.sqrt().numpy()
    np.testing.assert_allclose(seed[last.offset:last.stop], want_seed)
    assert seed[:last.offset].sum() == 0
    want = _slices(graph, _nx_reverse_pagerank(graph, seed / seed.sum()))
    res = score_neurons(model, stats, "pagerank", output_seed="gradient")
    for layer, w in want.items():
        np.testing.assert_allclose(res.intermediate[layer].numpy(), w, rtol=1e-8)


def test_output_seeded_pagerank_and_influence_rank_each_layer_alike_without_skip_edges(llama):
    model, stats, _ = llama
    pr = score_neurons(model, stats, "pagerank", output_seed="unembedding")
    inf = score_neurons(model, stats, "influence", output_seed="unembedding", weighting="activation_share")
    for layer in pr.intermediate:
        ratio = pr.intermediate[layer].numpy() / inf.intermediate[layer].numpy()
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-9)  # every path to the output has one length
    # skip edges make path lengths differ: damping then weighs them differently
    pr = score_neurons(model, stats, "pagerank", output_seed="unembedding", residual=0.5)
    inf = score_neurons(model, stats, "influence", output_seed="unembedding", weighting="activation_share",
                        residual=0.5)
    ratio = pr.intermediate[0].numpy() / inf.intermediate[0].numpy()
    assert ratio.max() / ratio.min() > 1 + 1e-6


@pytest.mark.parametrize("params, match", [
    ({"output_seed": "unembedding", "direction": "forward"}, "needs direction='reverse', mode='chained'"),
    ({"output_seed": "gradient", "mode": "isolated"}, "needs direction='reverse', mode='chained'"),
    ({"output_seed": "unembedding", "personalization": np.ones(3)}, "no personalization array"),
    ({"output_seed": "output"}, "`output_seed` must be one of None, 'uniform', 'unembedding', 'gradient'"),
])
def test_pagerank_seed_refusals_are_checked_before_any_model_work(params, match):
    with pytest.raises(ValueError, match=match):
        get_scorer("pagerank", **params)


def test_pagerank_seed_defaults_change_nothing(llama):
    model, stats, _ = llama
    assert get_scorer("pagerank").output_seed is None
    a = score_neurons(model, stats, "pagerank")
    b = score_neurons(model, stats, "pagerank", output_seed=None)
    for layer in a.intermediate:
        torch.testing.assert_close(a.intermediate[layer], b.intermediate[layer])


# ----------------------------------------------------------------------------- the algebra (design.md section 2)
def test_reverse_pagerank_is_activation_times_a_constant_plus_a_downstream_mean(llama):
    """x_j = a_j (c + alpha sum_k pi_jk x_k / S_k), c = (1 - alpha + alpha delta) / sum(a): activation_share edges."""
    model, stats, _ = llama
    graph = lg.export_graph(model, stats)
    alpha = 0.85
    x = lg.pagerank(graph, alpha=alpha, personalization="activation", direction="reverse").scores
    a = graph.activation
    dense = _dense(graph)
    s_in = dense.sum(0)  # S_k: the in-strength of each node (its out-strength once reversed)
    delta = x[s_in == 0].sum()  # the dangling mass of the reversed graph (H0, which nothing feeds)
    c = (1 - alpha + alpha * delta) / a.sum()
    for p in graph.intermediate_partitions():
        aj = a[p.offset:p.stop]
        pi = dense[p.offset:p.stop] / aj[:, None]  # w_jk = a_j pi_jk, each row of pi sums to one
        np.testing.assert_allclose(pi.sum(1), 1.0, rtol=1e-6)
        mean = pi @ np.divide(x, s_in, out=np.zeros_like(x), where=s_in > 0)
        np.testing.assert_allclose(x[p.offset:p.stop], aj * (c + alpha * mean), rtol=1e-9)
        # the correction varies little with j: x / a is nearly constant within a layer
        ratio = x[p.offset:p.stop] / aj
        assert ratio.std() < ratio.mean()


# ----------------------------------------------------------------------------- measured skip edges
def test_calibrate_records_the_residual_stream_entering_each_mlp(llama):
    model, stats, ids = llama
    mlps = mlp_layers(model)
    mlp_out = {}
    hooks = [m.block.register_forward_hook(lambda mod, i, o, layer=m.layer: mlp_out.__setitem__(layer, o))
             for m in mlps]
    try:
        with torch.no_grad():
            want = [torch.zeros(8, dtype=torch.float64) for _ in mlps]
            for i in range(0, ids.shape[0], 2):
                hs = model(input_ids=ids[i:i + 2], output_hidden_states=True, use_cache=False).hidden_states
                for layer in range(len(mlps) - 1):  # the last entry of hidden_states is after the final norm
                    stream = (hs[layer + 1] - mlp_out[layer]).double()  # the layer's output minus its MLP's
                    want[layer] += stream.square().reshape(-1, 8).sum(0)
    finally:
        for h in hooks:
            h.remove()
    got = stats.residual_norms(model)
    assert len(got) == len(mlps)
    for layer in range(len(mlps) - 1):
        np.testing.assert_allclose(got[layer].numpy(), want[layer].sqrt().numpy(), rtol=1e-5)
    assert list(lg.data.stats.residual_modules(model))[0] == "model.layers.0.post_attention_layernorm"


def test_gpt2_residual_modules_and_stats_without_them():
    model = tiny_gpt2(seed=1)
    assert list(lg.data.stats.residual_modules(model)) == ["transformer.h.0.ln_2", "transformer.h.1.ln_2"]
    stats = lg.calibrate(model, input_ids=torch.randint(0, VOCAB, (2, 6)))
    assert "transformer.h.0.ln_2" not in stats
    with pytest.raises(ValueError, match=r"lack \('transformer.h.0.ln_2'\); calibrate .*residual=True"):
        stats.residual_norms(model)
    with pytest.raises(ValueError, match=r"residual=True"):
        lg.export_graph(model, stats, residual="measured")


def test_measured_options_are_validated_and_recorded_only_when_used():
    opts = ExportOptions(residual="measured")
    assert (opts.residual, opts.residual_weights, opts.needs_stats) == (1.0, "measured", True)
    assert ExportOptions(residual=0.3, residual_weights="measured").residual == pytest.approx(0.3)
    assert "residual_weights" not in DEFAULT_EXPORT.as_dict() and DEFAULT_EXPORT.residual_weights == "constant"
    with pytest.raises(ValueError, match="needs residual > 0 and attention=False"):
        ExportOptions(residual_weights="measured")
    with pytest.raises(ValueError, match="needs residual > 0 and attention=False"):
        ExportOptions(residual="measured", attention=True)
    with pytest.raises(ValueError, match="`residual_weights` must be one of 'constant', 'measured'"):
        ExportOptions(residual=1.0, residual_weights="rms")
    with pytest.raises(ValueError, match="'measured'"):
        get_scorer("pagerank", residual="rms")


@pytest.mark.parametrize("weighting", ["abs", "activation_share"])
def test_measured_skip_edges_weigh_the_stream_norms(llama, weighting, tmp_path):
    model, stats, _ = llama
    graph = lg.export_graph(model, stats, residual=2.0, weighting=weighting, options=ExportOptions(
        residual="measured"))
    assert graph.meta["residual_weights"] == "measured"
    rho = stats.residual_norms(model)
    e = graph.edges
    dense = _dense(graph)
    hidden = [p for p in graph.partitions if p.kind == "hidden"]
    for layer, (src, dst) in enumerate(zip(hidden, hidden[1:])):
        diag = np.diag(dense[src.offset:src.stop, dst.offset:dst.stop])
        np.testing.assert_allclose(diag, 2.0 * rho[layer].numpy(), rtol=1e-6)
    assert len(e) == 2 * sum(graph.meta["intermediate_sizes"]) * 8 + 3 * 8
    back = lg.read_graph(graph.to_parquet(tmp_path / "g"))
    assert export_options(back).residual_weights == "measured"


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_pagerank_on_measured_skip_edges_matches_networkx(llama, direction):
    model, stats, _ = llama
    graph = lg.export_graph(model, stats, residual="measured")
    a = graph.activation
    e = graph.edges
    g = nx.DiGraph()
    g.add_nodes_from(range(graph.n_nodes))
    s, d = (e.src, e.dst) if direction == "forward" else (e.dst, e.src)
    g.add_weighted_edges_from(zip(s.tolist(), d.tolist(), e.weight.astype(float).tolist()))
    r = nx.pagerank(g, alpha=0.85, personalization=dict(enumerate(a / a.sum())), tol=1e-15, max_iter=100_000)
    want = _slices(graph, np.array([r[i] for i in range(graph.n_nodes)]))
    res = score_neurons(model, stats, "pagerank", residual="measured", direction=direction)
    for layer, w in want.items():
        np.testing.assert_allclose(res.intermediate[layer].numpy(), w, rtol=1e-8)
    const = score_neurons(model, stats, "pagerank", residual=1.0, direction=direction)
    assert not np.allclose(const.intermediate[0].numpy(), res.intermediate[0].numpy())


def test_a_ready_graph_must_have_the_scorer_s_residual_weights(llama):
    model, stats, _ = llama
    measured = lg.export_graph(model, stats, residual="measured")
    with pytest.raises(ValueError, match="residual_weights='measured'"):
        score_neurons(model, stats, "pagerank", residual=1.0, graph=measured)
    constant = lg.export_graph(model, stats, residual=1.0)
    with pytest.raises(ValueError, match="residual_weights"):
        score_neurons(model, stats, "pagerank", residual="measured", graph=constant)
    got = score_neurons(model, stats, "pagerank", residual="measured", graph=measured)
    want = score_neurons(model, stats, "pagerank", residual="measured")
    torch.testing.assert_close(got.intermediate[1], want.intermediate[1])
