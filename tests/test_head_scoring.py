"""Head statistics, head scorers and the head allocation, each against an independent reference:
a float64 forward hook for the calibration, numpy for the scorers, brute force for the allocator."""

import dataclasses
import itertools

import numpy as np
import pytest
import torch
from transformers import CONFIG_MAPPING, AutoModelForCausalLM

import llmrank_graph as lg
from llmrank_graph.data.stats import ActivationStats, head_norms
from llmrank_graph.errors import InvalidArgumentError
from llmrank_graph.models import architectures as arch
from llmrank_graph.models.architectures import UnsupportedArchitectureError
from llmrank_graph.models.attention import attention_layers
from llmrank_graph.pruning.allocation import _by_mean_abs
from llmrank_graph.pruning.head_allocation import allocate_heads
from llmrank_graph.scoring.heads import HeadScores, get_head_scorer, head_scorers, score_heads

VOCAB = 64
CONFIGS = {
    # 2 key/value groups of 3 query heads
    "llama": ("llama", dict(vocab_size=VOCAB, hidden_size=24, intermediate_size=12, num_hidden_layers=3,
                            num_attention_heads=6, num_key_value_heads=2, head_dim=4, max_position_embeddings=64)),
    "gpt2": ("gpt2", dict(vocab_size=VOCAB, n_embd=16, n_layer=2, n_head=4, n_positions=64)),
    "opt": ("opt", dict(vocab_size=VOCAB, hidden_size=16, ffn_dim=12, num_hidden_layers=2, num_attention_heads=4,
                        word_embed_proj_dim=16, max_position_embeddings=64)),
}


def _model(family, seed=0, **extra):
    model_type, kwargs = CONFIGS[family]
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(CONFIG_MAPPING[model_type](**{**kwargs, **extra}),
                                            attn_implementation="eager").eval()


def _ids(seed=1, batch=4, length=12):
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def _reference(model, ids):
    """Per layer, float64 sums over all tokens of the output projection's input x and output y:
    (sum x^2, sum x, X^T X, sum y^2, tokens)."""
    seen = {}
    handles = []
    for att in attention_layers(model):
        def hook(mod, inputs, output, layer=att.layer):
            x = inputs[0].detach().double().reshape(-1, inputs[0].shape[-1]).numpy()
            y = output.detach().double().reshape(-1, output.shape[-1]).numpy()
            seen.setdefault(layer, []).append((x, y))
        handles.append(att.o.register_forward_hook(hook))
    try:
        with torch.no_grad():
            for b in ids.split(2):
                model(input_ids=b, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    out = {}
    for layer, parts in seen.items():
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        out[layer] = ((x * x).sum(0), x.sum(0), x.T @ x, (y * y).sum(0), x.shape[0])
    return out


@pytest.mark.parametrize("family", list(CONFIGS))
def test_calibration_records_the_output_projection_as_an_independent_float64_hook(family, tmp_path):
    model, ids = _model(family), _ids()
    stats = lg.calibrate(model, input_ids=ids, batch_size=2, attention=True, second_moments=True)
    plain = lg.calibrate(model, input_ids=ids, batch_size=2)
    ref = _reference(model, ids)
    for att in attention_layers(model):
        s = stats[att.names["o"]]
        sumsq, total, gram, out_sumsq, n = ref[att.layer]
        assert s.n_tokens == n == ids.numel()
        np.testing.assert_allclose(s.input_sumsq.numpy(), sumsq, rtol=1e-5)
        np.testing.assert_allclose(s.input_sum.numpy(), total, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(s.output_sumsq.numpy(), out_sumsq, rtol=1e-5)
        np.testing.assert_allclose(s.input_gram.numpy(), gram, rtol=1e-5, atol=1e-6)
        assert s.input_sumsq.shape == (att.num_heads * att.head_dim,)
        # head h owns columns h*hd:(h+1)*hd; its norm is over all tokens, not divided by them
        want = np.sqrt(sumsq.reshape(att.num_heads, att.head_dim).sum(1))
        np.testing.assert_allclose(head_norms(stats, att).numpy(), want, rtol=1e-6)
    # the MLP statistics are those of a calibration without attention (one pass, nothing else changed)
    for name in plain:
        assert torch.equal(stats[name].input_sumsq, plain[name].input_sumsq)
    added = {a.names[k] for a in attention_layers(model) for k in ("o", "v" if a.v is not None else "qkv")}
    assert set(stats) - set(plain) == added  # o_proj, and the value projection (the attention's input)
    # save/load round trip, the Gram matrices included
    loaded = ActivationStats.load(stats.save(tmp_path / "stats.safetensors"))
    for att in attention_layers(model):
        a, b = stats[att.names["o"]], loaded[att.names["o"]]
        for field in ("input_sumsq", "output_sumsq", "input_sum", "input_gram", "input_batch_norm_sum"):
            assert torch.equal(getattr(a, field), getattr(b, field))
        assert (a.n_tokens, a.n_batches) == (b.n_tokens, b.n_batches)
    assert loaded.meta["attention"] is True


def test_calibration_without_heads_support_is_refused_before_any_forward(monkeypatch):
    model = _model("llama")
    calls = []
    model.register_forward_pre_hook(lambda *a: calls.append(1))
    spec = arch.get_architecture("llama")
    monkeypatch.setitem(arch._REGISTRY, "llama", dataclasses.replace(spec, attention=None))
    with pytest.raises(UnsupportedArchitectureError, match="no attention-head support"):
        lg.calibrate(model, input_ids=_ids(), attention=True)
    assert calls == []


def test_stats_without_attention_are_refused_with_the_way_to_collect_them():
    model = _model("llama")
    stats = lg.calibrate(model, input_ids=_ids())
    with pytest.raises(InvalidArgumentError, match=r"attention=True"):
        score_heads(model, stats, "activation")
    with pytest.raises(InvalidArgumentError, match=r"attention=True"):
        head_norms(stats, attention_layers(model)[0])


# ---------------------------------------------------------------------------- scorers
@pytest.mark.parametrize("family", list(CONFIGS))
def test_scorers_match_numpy(family):
    model, ids = _model(family), _ids()
    stats = lg.calibrate(model, input_ids=ids, batch_size=2, attention=True)
    ref = _reference(model, ids)
    mag1, mag2 = score_heads(model, None, "magnitude", ord=1), score_heads(model, None, "magnitude")
    act, flap = score_heads(model, stats, "activation"), score_heads(model, stats, "flap")
    for att in attention_layers(model):
        w = att.o.weight.detach().double().numpy()
        w = w.T if att.conv1d else w  # (hidden, heads * head_dim)
        n, hd = att.num_heads, att.head_dim
        blocks = [w[:, h * hd:(h + 1) * hd] for h in range(n)]
        np.testing.assert_allclose(mag1.heads[att.layer].numpy(), [np.abs(b).sum() for b in blocks], rtol=1e-12)
        np.testing.assert_allclose(mag2.heads[att.layer].numpy(), [np.linalg.norm(b) for b in blocks], rtol=1e-12)
        sumsq, total, _, _, t = ref[att.layer]
        np.testing.assert_allclose(act.heads[att.layer].numpy(), np.sqrt(sumsq.reshape(n, hd).sum(1)), rtol=1e-6)
        var = sumsq / t - (total / t) ** 2
        want = (var * (w ** 2).sum(0)).reshape(n, hd).sum(1)
        np.testing.assert_allclose(flap.heads[att.layer].numpy(), want, rtol=1e-4, atol=1e-12)
    assert mag2.method == "magnitude" and mag1.params == {"ord": 1}


def test_random_scorer_is_one_seeded_generator_over_the_layers():
    model = _model("llama")
    g = torch.Generator().manual_seed(7)
    want = [torch.rand(6, generator=g, dtype=torch.float64) for _ in range(3)]
    got = score_heads(model, None, "random", seed=7)
    for layer in range(3):
        assert torch.equal(got.heads[layer], want[layer])
    assert not torch.equal(score_heads(model, None, "random", seed=8).heads[0], got.heads[0])


def test_head_registry_and_parameter_checks():
    assert head_scorers()[:4] == ["magnitude", "activation", "flap", "random"]
    with pytest.raises(InvalidArgumentError, match="'katz' has no head scorer.*'magnitude'"):
        get_head_scorer("katz")
    with pytest.raises(InvalidArgumentError, match="`ord` must be one of 1, 2"):
        get_head_scorer("magnitude", ord=3)
    with pytest.raises(TypeError, match="unknown parameter"):
        get_head_scorer("magnitude", which="up")
    with pytest.raises(InvalidArgumentError, match="`stats` are required"):
        score_heads(_model("llama"), None, "flap")


# ---------------------------------------------------------------------------- allocation
def _valid_masks(n, kv, floor=1):
    """Every keep-mask of one layer that the grouped-query rule allows, by brute force."""
    g = n // kv
    out = []
    for bits in itertools.product([False, True], repeat=n):
        keep = np.array(bits).reshape(kv, g)
        per = keep.sum(1)
        kept = per[per > 0]
        if keep.sum() >= floor and kept.size and (kept == kept[0]).all():
            out.append(keep.reshape(-1))
    return out


def _scores(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {a.layer: torch.rand(a.num_heads, generator=g, dtype=torch.float64) * (a.layer + 1)
            for a in attention_layers(model)}


@pytest.mark.parametrize("amount", [0.1, 0.2, 0.3, 0.5, 0.7])
@pytest.mark.parametrize("seed", [0, 1])
def test_local_allocation_is_the_nearest_count_and_the_best_heads(amount, seed):
    model = _model("llama")
    scores = _scores(model, seed)
    mask = allocate_heads(scores, model, amount, "local")
    for att in attention_layers(model):
        att.plan(mask.heads[att.layer])  # the rule holds
        valid = _valid_masks(6, 2)
        counts = sorted({6 - int(k.sum()) for k in valid})
        want = min(counts, key=lambda r: (abs(r - amount * 6), r))
        assert mask.n_pruned(att.layer) == want
        s = scores[att.layer].numpy()
        best = max(s[k].sum() for k in valid if 6 - k.sum() == want)
        assert s[mask.heads[att.layer].numpy()].sum() == pytest.approx(best)
    assert mask.meta["fraction"] == mask.fraction == mask.n_pruned() / 18
    assert mask.meta["heads_removed"] == mask.n_pruned()


@pytest.mark.parametrize("amount", [0.1, 0.25, 0.4, 0.55, 0.65])
def test_global_allocation_is_the_nearest_total_with_the_smallest_normalised_loss(amount):
    model = _model("llama")
    scores = _scores(model, 3)
    mask = allocate_heads(scores, model, amount, "global", min_keep=2)
    valid = _valid_masks(6, 2, floor=2)
    norm = {l: _by_mean_abs(s.numpy()) for l, s in scores.items()}
    best = {}
    for combo in itertools.product(valid, repeat=3):
        removed = sum(6 - int(k.sum()) for k in combo)
        loss = sum(norm[l][~k].sum() for l, k in enumerate(combo))
        best[removed] = min(best.get(removed, np.inf), loss)
    k = round(amount * 18)
    total = min(best, key=lambda r: (abs(r - k), r))
    assert mask.n_pruned() == total
    got = sum(norm[l][~mask.heads[l].numpy()].sum() for l in range(3))
    assert got == pytest.approx(best[total])
    assert min(mask.sizes()) >= 2
    mask.check_model(model)


def test_steps_of_a_smollm2_layout_and_the_exact_fraction():
    """9 query heads in 3 groups: a layer keeps 9, 6, 4, 3, 2 or 1; 10% local removes nothing, global hits it."""
    model = _model("llama", hidden_size=36, num_attention_heads=9, num_key_value_heads=3, num_hidden_layers=10)
    scores = _scores(model)
    assert allocate_heads(scores, model, 0.1).n_pruned() == 0
    mask = allocate_heads(scores, model, 0.1, "global")
    assert mask.n_pruned() == 9 and mask.meta["fraction"] == 0.1
    assert set(mask.sizes()) <= {9, 6, 4, 3, 2, 1}
    st = allocate_heads(HeadScores(scores, "random"), model, 0.3, "standardized")
    assert st.n_pruned() == 27 and st.meta["method"] == "random"


def test_floors_and_refusals():
    model = _model("llama")
    scores = _scores(model)
    with pytest.raises(InvalidArgumentError, match="would remove all 6 heads of layer 0.*`min_keep`"):
        allocate_heads(scores, model, 0.95)
    kept = allocate_heads(scores, model, 0.95, min_keep=2)
    assert kept.sizes() == [2, 2, 2]
    assert allocate_heads(scores, model, 0.95, min_keep=0.5).sizes() == [3, 3, 3]
    with pytest.raises(InvalidArgumentError, match="per-layer floor"):
        allocate_heads(scores, model, 0.9, "global", min_keep=3)
    with pytest.raises(InvalidArgumentError, match="larger than layer 0"):
        allocate_heads(scores, model, 0.5, "global", min_keep=7)
    with pytest.raises(InvalidArgumentError, match="do not match the model"):
        allocate_heads({0: torch.ones(6)}, model, 0.5)
    with pytest.raises(InvalidArgumentError, match="NaN"):
        allocate_heads({**scores, 1: torch.full((6,), float("nan"))}, model, 0.5)
    with pytest.raises(InvalidArgumentError, match="`allocation` must be one of"):
        allocate_heads(scores, model, 0.5, "nope")


# ----------------------------------------------------------------------------- pagerank over head nodes
def _networkx_reverse_pagerank(nx, g) -> np.ndarray:
    """networkx's PageRank of ``g``'s edge list transposed (the reverse direction), activation teleport."""
    e = g.edges
    G = nx.DiGraph()
    G.add_nodes_from(range(g.n_nodes))
    G.add_weighted_edges_from(zip(e.dst.to_numpy(), e.src.to_numpy(), e.weight.to_numpy().astype(float)))
    act = np.asarray(g.activation, dtype=float)
    pr = nx.pagerank(G, alpha=0.85, personalization=dict(enumerate(act / act.sum())), tol=1e-13, max_iter=1000)
    return np.array([pr[i] for i in range(g.n_nodes)])


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_pagerank_head_scores_are_networkx_pagerank_of_the_head_nodes(family):
    """The scorer's head scores against networkx's PageRank of the whole network's edge list (reverse:
    the transposed graph), with the activation teleport, read at the head nodes."""
    nx = pytest.importorskip("networkx")
    model = _model(family, seed=3)
    stats = lg.calibrate(model, input_ids=_ids(), batch_size=2, attention=True)
    got = score_heads(model, stats, "pagerank")
    g = lg.export_graph(model, stats, attention=True, weighting="activation_share", gate="up", residual=0.0)
    want = _networkx_reverse_pagerank(nx, g)
    parts = g.head_partitions()
    assert got.layers == [p.layer for p in parts]
    for p in parts:
        np.testing.assert_allclose(got.heads[p.layer].numpy(), want[p.offset:p.stop], rtol=1e-6, atol=1e-12)


def test_pagerank_heads_prune_and_need_the_attention_statistics():
    model = _model("llama", seed=4)
    plain = lg.calibrate(model, input_ids=_ids(), batch_size=2)
    with pytest.raises(InvalidArgumentError, match="attention=True"):
        score_heads(model, plain, "pagerank")
    stats = lg.calibrate(model, input_ids=_ids(), batch_size=2, attention=True)
    zero = lg.prune_model(_model("llama", seed=4), stats, method="pagerank", amount=0.5, target="attention", how="zero")
    removed = lg.prune_model(_model("llama", seed=4), stats, method="pagerank", amount=0.5, target="attention")
    assert removed.head_mask.meta["fraction"] == 0.5
    ids = _ids(seed=9)
    with torch.no_grad():
        torch.testing.assert_close(removed.model(ids).logits, zero.model(ids).logits, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- one graph for neurons and heads
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_neurons_ranked_on_the_whole_network_graph_are_networkx_pagerank(family):
    """``PageRankScorer(attention=True)``: the neurons' scores against networkx's PageRank of the graph with
    head nodes; and they are not the MLP-only graph's (the heads change the downstream mass)."""
    nx = pytest.importorskip("networkx")
    model = _model(family, seed=3)
    stats = lg.calibrate(model, input_ids=_ids(), batch_size=2, attention=True)
    got = lg.score_neurons(model, stats, "pagerank", attention=True)
    g = lg.export_graph(model, stats, attention=True, weighting="activation_share")
    want = _networkx_reverse_pagerank(nx, g)
    mlp_only = lg.score_neurons(model, stats, "pagerank")
    for p in g.intermediate_partitions():
        np.testing.assert_allclose(got.intermediate[p.layer].numpy(), want[p.offset:p.stop], rtol=1e-6, atol=1e-12)
        assert not np.allclose(mlp_only.intermediate[p.layer].numpy(), want[p.offset:p.stop], rtol=1e-6)


def test_both_with_pagerank_ranks_neurons_and_heads_on_one_graph():
    """``target='both'``, ``pagerank``: the neuron scores are the whole network graph's (attention=True), the
    head scores the same graph's, and a given graph with head nodes is used as it is."""
    model = _model("llama", seed=5)
    stats = lg.calibrate(model, input_ids=_ids(), batch_size=2, attention=True)
    res = lg.prune_model(_model("llama", seed=5), stats, method="pagerank", amount=0.3, target="both")
    whole = lg.score_neurons(model, stats, "pagerank", attention=True)
    heads = score_heads(model, stats, "pagerank")
    for layer in whole.layers:
        torch.testing.assert_close(res.scores.intermediate[layer], whole.intermediate[layer])
        torch.testing.assert_close(res.head_scores.heads[layer], heads.heads[layer])
    assert res.scores.params["attention"] is True
    g = lg.export_graph(model, stats, attention=True, weighting="activation_share")
    given = lg.prune_model(_model("llama", seed=5), None, method="pagerank", amount=0.3, target="both",
                           compensate="none", graph=g)
    for layer in whole.layers:
        torch.testing.assert_close(given.scores.intermediate[layer], whole.intermediate[layer])
    for layer, keep in res.head_mask.heads.items():
        assert torch.equal(given.head_mask.heads[layer], keep)


def test_attention_graph_options_that_exclude_each_other_are_refused_before_scoring():
    with pytest.raises(InvalidArgumentError, match="attention=True.*mode='chained'"):
        lg.scoring.PageRankScorer.check_params(attention=True, mode="isolated")
    with pytest.raises(InvalidArgumentError, match="residual_weights='measured'"):
        lg.scoring.KatzScorer.check_params(attention=True, residual="measured")
    with pytest.raises(TypeError, match="`attention` must be a bool"):
        lg.scoring.PageRankScorer.check_params(attention="yes")
    with pytest.raises(InvalidArgumentError, match="`graph` was exported with"):
        model = _model("llama", seed=5)
        score_heads(model, None, "pagerank", graph=lg.export_graph(model))
