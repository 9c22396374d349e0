"""Attention-head pruning on Gemma, Gemma2 and Gemma3 (text), each against an independent reference.

The tiny configs are as the released Gemmas are laid out: ``head_dim`` set apart from
``hidden_size // num_attention_heads`` (6 against 16 // 4), one key/value group (multi-query) or
two; Gemma2 with its own attention scaling (``query_pre_attn_scalar``) and its logit softcaps,
Gemma2 and Gemma3 with sliding-window layers between full ones (a window of 4 tokens, shorter
than the sequences). A config class that the installed transformers lacks is skipped.

Covered: a single key/value group loses only query heads (its key/value projections keep their
size, the allocation never removes it, an amount that would empty a layer is refused unless
``min_keep`` keeps some); ``remove`` against ``zero`` against the model with the dropped output
columns zeroed by hand; save -> ``load_model`` (logits, ``generate`` with the KV cache past the
window); ``prune_model(target='attention')`` for every head scorer against numpy, a float64 hook,
the seeded generator or networkx, and ``target='both'`` once; the graph with head nodes against
the dense construction and networkx's PageRank.
"""

import copy
import itertools
import json

import numpy as np
import pytest
import torch
import transformers
from numpy.testing import assert_allclose
from test_backends import reference as centrality_reference
from test_backends import run as run_centrality
from test_backends import to_nx
from test_graph_heads import as_dense, dense_reference, reference_activations
from test_head_scoring import _reference as o_proj_reference
from test_head_scoring import _valid_masks
from test_heads_removal import _mask, _zero_columns_by_hand

import llmrank_graph as lg
from llmrank_graph import load_model, save_pruned
from llmrank_graph.errors import InvalidArgumentError
from llmrank_graph.models.attention import attention_layers, head_counts
from llmrank_graph.pruning import HeadMask, intermediate_sizes, remove_heads, removed_parameters
from llmrank_graph.pruning.allocation import _by_mean_abs, _standardise
from llmrank_graph.pruning.head_allocation import allocate_heads

try:
    import networkx as nx
except ImportError:  # pragma: no cover
    nx = None

VOCAB, WINDOW, HEAD_DIM = 64, 4, 6
LAYER_TYPES = ["sliding_attention", "full_attention", "sliding_attention"]
COMMON = dict(vocab_size=VOCAB, hidden_size=16, intermediate_size=12, num_hidden_layers=3, num_attention_heads=4,
              head_dim=HEAD_DIM, max_position_embeddings=64, initializer_range=0.1)  # 0.02: scores too small to cap
CONFIGS = {
    "gemma": ("GemmaConfig", {}),
    # scaling query_pre_attn_scalar ** -0.5, not head_dim ** -0.5; softcaps small enough to bend the logits
    "gemma2": ("Gemma2Config", dict(sliding_window=WINDOW, layer_types=LAYER_TYPES, query_pre_attn_scalar=2,
                                    attn_logit_softcapping=0.5, final_logit_softcapping=3.0)),
    "gemma3_text": ("Gemma3TextConfig", dict(sliding_window=WINDOW, layer_types=LAYER_TYPES)),  # + q_norm/k_norm
}
FAMILIES = list(CONFIGS)
SLIDING = ["gemma2", "gemma3_text"]


def _config(family, kv, **extra):
    name, kwargs = CONFIGS[family]
    cls = getattr(transformers, name, None)
    if cls is None:
        pytest.skip(f"transformers {transformers.__version__} has no {name}")
    return cls(**{**COMMON, "num_key_value_heads": kv, **kwargs, **extra})


def _model(family, kv=1, seed=0, attn="eager", **extra):
    """A random Gemma of ``family`` with ``kv`` key/value groups of 4 query heads (eager: Gemma2's softcap)."""
    config = _config(family, kv, **extra)
    torch.manual_seed(seed)
    return transformers.AutoModelForCausalLM.from_config(config, attn_implementation=attn).eval()


def _ids(seed=1, batch=4, length=10):
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _kv_weights(model):
    return [(a.k.weight.detach().clone(), a.v.weight.detach().clone()) for a in attention_layers(model)]


def _assert_kv_untouched(model, before):
    for att, (k, v) in zip(attention_layers(model), before):
        assert att.k.weight.shape == (HEAD_DIM, 16) and torch.equal(att.k.weight, k) and torch.equal(att.v.weight, v)


def _scores(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {a.layer: torch.rand(a.num_heads, generator=g, dtype=torch.float64) * (a.layer + 1)
            for a in attention_layers(model)}


# ----------------------------------------------------------------------------- the tiny configs bite
def test_the_configs_exercise_the_scaling_the_softcaps_and_the_sliding_window():
    """The Gemma-specific features change the logits of these tiny models, so the tests below exercise them."""
    ids = _ids()
    gemma2 = _logits(_model("gemma2", kv=2), ids)
    for change in (dict(attn_logit_softcapping=None), dict(final_logit_softcapping=None),
                   dict(query_pre_attn_scalar=HEAD_DIM), dict(sliding_window=64)):
        assert not torch.allclose(_logits(_model("gemma2", kv=2, **change), ids), gemma2, atol=1e-2), change
    gemma3 = _logits(_model("gemma3_text", kv=2), ids)
    assert not torch.allclose(_logits(_model("gemma3_text", kv=2, sliding_window=64), ids), gemma3, atol=1e-2)
    assert [a.block.sliding_window for a in attention_layers(_model("gemma3_text"))] == [WINDOW, None, WINDOW]


# ----------------------------------------------------------------------------- one key/value group
@pytest.mark.parametrize("family", FAMILIES)
def test_a_single_key_value_group_loses_only_query_heads(family):
    model = _model(family, kv=1)
    before, kv = _weights(model), _kv_weights(model)
    keep = {0: torch.tensor([True, False, True, False]), 1: torch.tensor([False, True, True, True]),
            2: torch.ones(4, dtype=torch.bool)}
    mask = HeadMask(keep)
    d, hd = 16, HEAD_DIM
    removed = removed_parameters(model, mask)
    assert removed == 3 * 2 * d * hd  # three query heads, no key/value group
    n_before = sum(p.numel() for p in model.parameters())
    remove_heads(model, mask)
    assert n_before - sum(p.numel() for p in model.parameters()) == removed
    assert head_counts(model) == [(2, 1), (3, 1), (4, 1)]
    _assert_kv_untouched(model, kv)
    for att in attention_layers(model):
        heads = keep[att.layer].nonzero().flatten().tolist()
        rows = [h * hd + j for h in heads for j in range(hd)]
        prefix = att.names["q"].rsplit(".", 1)[0]
        assert torch.equal(att.q.weight, before[f"{prefix}.q_proj.weight"][rows])
        assert torch.equal(att.o.weight, before[f"{prefix}.o_proj.weight"][:, rows])
        assert att.block.num_key_value_groups == len(heads) and att.block.head_dim == hd
    with pytest.raises(InvalidArgumentError, match=r"keeps no head of layer 1 \(model.layers.1.self_attn.o_proj\)"):
        attention_layers(model)[1].plan(torch.zeros(3, dtype=torch.bool))


@pytest.mark.parametrize("amount", [0.25, 0.5, 0.7])
def test_local_allocation_keeps_the_single_group_and_the_best_heads(amount):
    model = _model("gemma", kv=1)
    scores = _scores(model)
    mask = allocate_heads(scores, model, amount)
    valid = _valid_masks(4, 1)  # every non-empty mask: the single group always stays
    want = min(range(4), key=lambda r: (abs(r - amount * 4), r))
    for att in attention_layers(model):
        assert mask.n_pruned(att.layer) == want
        s = scores[att.layer].numpy()
        best = max(s[k].sum() for k in valid if 4 - k.sum() == want)
        assert s[mask.heads[att.layer].numpy()].sum() == pytest.approx(best)
    kv = _kv_weights(model)
    remove_heads(model, mask)
    _assert_kv_untouched(model, kv)


@pytest.mark.parametrize("allocation, amount", [("global", 0.3), ("global", 0.6), ("standardized", 0.5)])
def test_global_allocation_keeps_the_single_group_with_the_smallest_normalised_loss(allocation, amount):
    model = _model("gemma", kv=1)
    scores = _scores(model, seed=2)
    mask = allocate_heads(scores, model, amount, allocation)
    normalise = _standardise if allocation == "standardized" else _by_mean_abs
    norm = {l: normalise(s.numpy()) for l, s in scores.items()}
    valid = _valid_masks(4, 1)
    best = {}
    for combo in itertools.product(valid, repeat=3):
        removed = sum(4 - int(k.sum()) for k in combo)
        best[removed] = min(best.get(removed, np.inf), sum(norm[l][~k].sum() for l, k in enumerate(combo)))
    total = min(best, key=lambda r: (abs(r - round(amount * 12)), r))
    assert mask.n_pruned() == total and min(mask.sizes()) >= 1
    assert sum(norm[l][~mask.heads[l].numpy()].sum() for l in range(3)) == pytest.approx(best[total])


@pytest.mark.parametrize("family", FAMILIES)
def test_an_amount_that_would_empty_a_layer_is_refused_unless_min_keep_keeps_some(family):
    """As the Llama test of the floors: a local 90% of 4 heads is all 4 (refused); min_keep keeps 1 or 2."""
    model = _model(family, kv=1)
    scores = _scores(model)
    with pytest.raises(InvalidArgumentError, match=r"would remove all 4 heads of layer 0.*`min_keep`"):
        allocate_heads(scores, model, 0.9)
    assert allocate_heads(scores, model, 0.9, min_keep=1).sizes() == [1, 1, 1]
    assert allocate_heads(scores, model, 0.9, min_keep=0.5).sizes() == [2, 2, 2]
    with pytest.raises(InvalidArgumentError, match=r"must remove 11 of 12 heads.*leaves only 9 removable"):
        allocate_heads(scores, model, 0.9, "global")
    # through prune_model: refused before any weight changes; with min_keep, the group stays whole
    state, kv = _weights(model), _kv_weights(model)
    with pytest.raises(InvalidArgumentError, match=r"would remove all 4 heads of layer 0"):
        lg.prune_model(model, None, method="magnitude", amount=0.9, target="attention")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    result = lg.prune_model(model, None, method="magnitude", amount=0.9, target="attention", min_keep=1)
    assert head_counts(model) == [(1, 1)] * 3 and result.head_mask.fraction == 0.75
    _assert_kv_untouched(model, kv)


# ----------------------------------------------------------------------------- remove against zero
@pytest.mark.parametrize("kv", [1, 2])
@pytest.mark.parametrize("family", FAMILIES)
def test_remove_gives_the_logits_of_zero_and_of_the_hand_made_reference(family, kv):
    """The removed model computes what the unpruned one does with the dropped output columns zeroed: Gemma2's
    scaling (query_pre_attn_scalar) and softcap, and Gemma3's q/k norms, do not depend on the head counts."""
    model, ids = _model(family, kv), _ids()
    mask = _mask(model)
    dense = _logits(model, ids)
    reference = _logits(_zero_columns_by_hand(copy.deepcopy(model), mask), ids)
    zeroed = remove_heads(copy.deepcopy(model), mask, how="zero")
    removed = remove_heads(copy.deepcopy(model), mask)
    assert not torch.allclose(reference, dense, atol=1e-3)
    torch.testing.assert_close(_logits(zeroed, ids), reference, atol=1e-6, rtol=0)
    torch.testing.assert_close(_logits(removed, ids), reference, atol=1e-5, rtol=1e-5)
    assert head_counts(removed) == ([(1, 1), (2, 2), (4, 2)] if kv == 2 else [(3, 1), (3, 1), (4, 1)])
    for a, b in zip(attention_layers(model), attention_layers(removed)):
        for name in ("head_dim", "scaling", "attn_logit_softcapping", "sliding_window"):
            assert getattr(a.block, name, None) == getattr(b.block, name, None)


@pytest.mark.parametrize("family", FAMILIES)
def test_removing_nothing_is_the_original_model(family):
    model, ids = _model(family, kv=1), _ids()
    dense = _logits(model, ids)
    for how in ("remove", "zero"):
        pruned = remove_heads(copy.deepcopy(model), HeadMask.keep_all(model), how=how)
        assert all(torch.equal(v, pruned.state_dict()[k]) for k, v in model.state_dict().items())
        torch.testing.assert_close(_logits(pruned, ids), dense, atol=0, rtol=0)


# ----------------------------------------------------------------------------- save -> load_model, generate
def _generate(model, prompt, **kwargs):
    with torch.no_grad():
        return model.generate(prompt, max_new_tokens=8, do_sample=False, pad_token_id=0, output_logits=True,
                              return_dict_in_generate=True, **kwargs)


@pytest.mark.parametrize("family, kv, attn", [(f, kv, "eager") for f in FAMILIES for kv in (1, 2)]
                         + [("gemma", 1, "sdpa"), ("gemma3_text", 2, "sdpa")])  # SDPA refuses Gemma2's softcap
def test_save_and_load_model_round_trip_with_generate(tmp_path, family, kv, attn):
    """The loaded model's logits, and ``generate`` with the KV cache past the sliding window (5 + 8 tokens over a
    window of 4), against the pruned model without a cache."""
    model, ids = _model(family, kv, attn=attn), _ids()
    mask = _mask(model)
    remove_heads(model, mask)
    path = save_pruned(model, None, tmp_path / "pruned", head_mask=mask)
    config = json.loads((path / "config.json").read_text())
    assert config["head_dim"] == HEAD_DIM and config["llmrank_graph"]["attention"]["num_heads"] == [
        n for n, _ in head_counts(model)]
    loaded, _ = load_model(path)
    loaded.set_attn_implementation(attn)
    assert head_counts(loaded) == head_counts(model)
    windows = [getattr(a.block, "sliding_window", None) for a in attention_layers(model)]
    assert [getattr(a.block, "sliding_window", None) for a in attention_layers(loaded)] == windows
    assert windows == ([WINDOW, None, WINDOW] if family in SLIDING else [None] * 3)
    torch.testing.assert_close(_logits(loaded, ids), _logits(model, ids), atol=1e-5, rtol=1e-5)
    prompt = ids[:1, :5]
    cached, plain = _generate(loaded, prompt), _generate(model, prompt, use_cache=False)
    assert cached.sequences.shape[1] == 13 > WINDOW
    assert torch.equal(cached.sequences, plain.sequences)
    torch.testing.assert_close(torch.stack(cached.logits), torch.stack(plain.logits), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_uniform_heads_load_with_plain_transformers(tmp_path, family):
    """Gemma's config states head_dim apart from the head count: uniform counts need no special loader."""
    model, ids = _model(family, kv=1), _ids()
    remove_heads(model, HeadMask({i: torch.tensor([True, False, True, False]) for i in range(3)}))
    path = save_pruned(model, None, tmp_path / "pruned")
    config = json.loads((path / "config.json").read_text())
    assert (config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]) == (2, 1, HEAD_DIM)
    plain = transformers.AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    torch.testing.assert_close(_logits(plain, ids), _logits(model, ids), atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- prune_model with calibration
def _want_scores(model, method, ids, stats):
    """Each scorer's head scores from an independent reference: numpy on o_proj, a float64 hook, the generator,
    networkx's PageRank of the graph with head nodes (reverse, activation teleport: the scorer's defaults)."""
    if method == "random":
        g = torch.Generator().manual_seed(0)
        return {l: torch.rand(4, generator=g, dtype=torch.float64).numpy() for l in range(3)}
    if method == "pagerank":
        return _networkx_head_pagerank(model, stats)
    ref, out = o_proj_reference(model, ids), {}
    for att in attention_layers(model):
        w = att.o.weight.detach().double().numpy()
        n, hd = att.num_heads, att.head_dim
        sumsq, total, _, _, t = ref[att.layer]
        if method == "magnitude":
            out[att.layer] = np.array([np.linalg.norm(w[:, h * hd:(h + 1) * hd]) for h in range(n)])
        elif method == "activation":
            out[att.layer] = np.sqrt(sumsq.reshape(n, hd).sum(1))
        else:  # flap
            var = sumsq / t - (total / t) ** 2
            out[att.layer] = (var * (w ** 2).sum(0)).reshape(n, hd).sum(1)
    return out


def _networkx_head_pagerank(model, stats):
    g = lg.export_graph(model, stats, attention=True, weighting="activation_share", gate="up", residual=0.0)
    act = np.asarray(g.activation, dtype=float)
    pr = nx.pagerank(to_nx(g, "reverse"), alpha=0.85, personalization=dict(enumerate(act / act.sum())), tol=1e-13,
                     max_iter=1000)
    want = np.array([pr[i] for i in range(g.n_nodes)])
    return {p.layer: want[p.offset:p.stop] for p in g.head_partitions()}


@pytest.mark.parametrize("method", ["magnitude", "activation", "flap", "pagerank", "random"])
@pytest.mark.parametrize("family, kv", [("gemma", 1), ("gemma2", 2), ("gemma3_text", 1)])
def test_prune_model_prunes_the_heads_its_scorer_ranks_lowest(family, kv, method):
    if method == "pagerank" and nx is None:  # pragma: no cover
        pytest.skip("networkx is not installed")
    model, ids = _model(family, kv), _ids()
    stats = lg.calibrate(model, input_ids=ids, batch_size=2, attention=True)
    want = _want_scores(model, method, ids, stats)
    kv_before = _kv_weights(model) if kv == 1 else None
    zero = lg.prune_model(copy.deepcopy(model), stats, method=method, amount=0.5, target="attention", how="zero")
    result = lg.prune_model(model, stats, method=method, amount=0.5, target="attention")
    for layer, s in result.head_scores.heads.items():
        assert_allclose(s.numpy(), want[layer], rtol=1e-6 if method in ("activation", "pagerank") else 1e-4,
                        atol=1e-12)
    assert result.masks is None and result.head_mask.meta["fraction"] == 0.5
    assert all(torch.equal(k, zero.head_mask.heads[l]) for l, k in result.head_mask.heads.items())
    # half of each layer: the two lowest-scored heads of one group, or one head of each of two groups
    for layer, keep in result.head_mask.heads.items():
        s = want[layer]
        best = max(s[k].sum() for k in _valid_masks(4, kv) if k.sum() == 2)
        assert s[keep.numpy()].sum() == pytest.approx(best, rel=1e-9)
    assert head_counts(model) == [(2, int(k.view(kv, -1).any(1).sum())) for k in result.head_mask.heads.values()]
    if kv_before is not None:
        _assert_kv_untouched(model, kv_before)
    torch.testing.assert_close(_logits(model, ids), _logits(zero.model, ids), atol=1e-5, rtol=1e-5)


def test_both_on_gemma2_removes_the_parameters_it_accounts_and_round_trips(tmp_path):
    """``target='both'`` with ``pagerank``, global: neurons and heads ranked on one graph; the parameters removed
    are the accounted ones (here a whole key/value group too); remove gives the logits of zero; save -> load_model
    keeps them. (A local 30% removes no head here: a layer's budget fits one head, and its steps are two.)"""
    model, ids = _model("gemma2", kv=2), _ids()
    stats = lg.calibrate(model, input_ids=ids, batch_size=2, attention=True)
    whole = lg.score_neurons(model, stats, "pagerank", attention=True)
    options = dict(method="pagerank", amount=0.3, allocation="global", target="both")
    zero = lg.prune_model(copy.deepcopy(model), stats, how="zero", **options)
    n_before = sum(p.numel() for p in model.parameters())
    result = lg.prune_model(model, stats, **options)
    accounting = result.head_mask.meta["parameters"]
    assert n_before - sum(p.numel() for p in model.parameters()) == accounting["removed"]
    assert accounting["attention_removed"] > 0 and accounting["mlp_removed"] > 0
    assert any(kv < 2 for _, kv in head_counts(model))
    assert abs(accounting["removed"] - 0.3 * accounting["total_parameters"]) <= 3 * 16  # within one neuron
    for layer in whole.layers:
        torch.testing.assert_close(result.scores.intermediate[layer], whole.intermediate[layer])
    assert intermediate_sizes(model) == result.masks.sizes()
    assert [n for n, _ in head_counts(model)] == result.head_mask.sizes()
    torch.testing.assert_close(_logits(model, ids), _logits(zero.model, ids), atol=1e-5, rtol=1e-5)
    loaded, _ = load_model(save_pruned(model, None, tmp_path / "both", mask=result.masks,
                                       head_mask=result.head_mask))
    loaded.set_attn_implementation("eager")
    assert intermediate_sizes(loaded) == intermediate_sizes(model) and head_counts(loaded) == head_counts(model)
    torch.testing.assert_close(_logits(loaded, ids), _logits(model, ids), atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- the graph with head nodes
@pytest.mark.parametrize("weighting, residual", [("abs", 0.0), ("abs", 0.5), ("abs_x_input", 0.2),
                                                 ("activation_share", 0.3)])
@pytest.mark.parametrize("family", FAMILIES)
def test_head_graph_edges_match_the_dense_construction(family, weighting, residual):
    model = _model(family, kv=2 if family == "gemma2" else 1)
    stats = lg.calibrate(model, input_ids=_ids(), batch_size=2, attention=True)
    g = lg.export_graph(model, stats, attention=True, weighting=weighting, residual=residual)
    act = reference_activations(model, stats)[0] if weighting != "abs" else None
    assert g.meta["head_dim"] == HEAD_DIM and [p.size for p in g.head_partitions()] == [4, 4, 4]
    assert_allclose(as_dense(g), dense_reference(model, residual, act, weighting), rtol=2e-6, atol=1e-7)


@pytest.mark.skipif(nx is None, reason="networkx is not installed")
@pytest.mark.parametrize("direction", ["forward", "reverse"])
@pytest.mark.parametrize("family", FAMILIES)
def test_head_graph_pagerank_is_networkx_pagerank(family, direction):
    model = _model(family, kv=1, seed=3)
    stats = lg.calibrate(model, input_ids=_ids(), batch_size=2, attention=True)
    g = lg.export_graph(model, stats, attention=True, residual=0.3)
    assert g.is_dag_by_partition()
    want = centrality_reference(g, "pagerank", direction)
    for backend in ("scipy", "sweep"):
        assert_allclose(run_centrality(g, "pagerank", backend, direction), want, rtol=1e-6, atol=1e-10 * want.max())
    # one key/value group: every head of a layer reads the same values, so shares its in-edges
    value = as_dense(g)[g.partitions[0].offset:g.partitions[0].stop, g.partitions[1].offset:g.partitions[1].stop]
    assert_allclose(value, np.repeat(value[:, :1], 4, axis=1))
