"""Compensation after removal (bias, ridge least squares, structured OBS), the flap and obs
scorers, the standardised allocation, second-moment statistics and the sequential mode.

Every check compares with a closed-form numpy reference or with brute force, on tiny random
models built from a config.
"""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch
from _tiny import save_tiny_model, write_corpus

import llmrank_graph as lg
from llmrank_graph.compensation.algebra import (
    DEFAULT_RIDGE,
    TOKEN_RIDGE,
    check_compensation,
    obs_greedy,
    relative_damp,
    ridge_refit,
)
from llmrank_graph.models.architectures import mlp_layers
from llmrank_graph.pruning.masks import NeuronMask, allocate
from llmrank_graph.pruning.surgery import apply_mask, intermediate_sizes, prune_model, save_pruned

VOCAB = 64


def _llama(mlp_bias=False, layers=3, m=24, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=m, num_hidden_layers=layers,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                         mlp_bias=mlp_bias)
    return LlamaForCausalLM(config).eval()


def _gpt2(seed=0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=2, n_head=2, n_positions=64,
                                      n_inner=20)).eval()


def _mistral():
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    config = MistralConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    return MistralForCausalLM(config).eval()


def _ids(n=6, seq=12, seed=1):
    return torch.randint(0, VOCAB, (n, seq), generator=torch.Generator().manual_seed(seed))


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_state(model, before) -> bool:
    after = model.state_dict()
    return set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)


def _down_inputs(model, ids) -> dict[int, torch.Tensor]:
    """The input of every layer's down projection on ``ids``, (tokens, m) float64, by a hook of its own."""
    got: dict[int, list] = {}
    handles = []
    for mlp in mlp_layers(model):
        def hook(mod, inp, out, _l=mlp.layer):
            got.setdefault(_l, []).append(inp[0].reshape(-1, inp[0].shape[-1]).double())
        handles.append(mlp.down.register_forward_hook(hook))
    try:
        with torch.no_grad():
            for b in ids.split(2):
                model(input_ids=b, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return {l: torch.cat(v) for l, v in got.items()}


def _random_mask(model, fraction=0.4, seed=0) -> NeuronMask:
    g = torch.Generator().manual_seed(seed)
    keep = {}
    for mlp in mlp_layers(model):
        m = mlp.intermediate_size
        k = torch.ones(m, dtype=torch.bool)
        k[torch.randperm(m, generator=g)[: int(fraction * m)]] = False
        keep[mlp.layer] = k
    return NeuronMask(keep)


# ----------------------------------------------------------------------------- statistics
@pytest.mark.parametrize("make", [_llama, _gpt2])
def test_second_moments_match_manual_and_round_trip(make, tmp_path):
    model = make()
    ids = _ids()
    stats = lg.calibrate(model, input_ids=ids, batch_size=2, second_moments=True)
    h = _down_inputs(model, ids)
    for mlp in mlp_layers(model):
        s = stats[mlp.down_name]
        x = h[mlp.layer]
        torch.testing.assert_close(s.input_gram, x.T @ x)
        torch.testing.assert_close(s.input_sum, x.sum(0))
        torch.testing.assert_close(s.input_mean, x.mean(0))
        torch.testing.assert_close(s.input_variance, x.var(0, unbiased=False))
        assert stats[mlp.up_name].input_gram is None  # only down projections carry one
    assert stats.has_second_moments([m.down_name for m in mlp_layers(model)])
    back = lg.ActivationStats.load(stats.save(tmp_path / "stats.safetensors"))
    for name in stats:
        for field in ("input_sum", "input_gram"):
            a, b = getattr(stats[name], field), getattr(back[name], field)
            assert (a is None) == (b is None)
            if a is not None:
                torch.testing.assert_close(a, b)
    plain = lg.calibrate(model, input_ids=ids, batch_size=2)
    assert not plain.has_second_moments()
    for name in plain:  # the other statistics do not depend on the option
        torch.testing.assert_close(plain[name].input_sumsq, stats[name].input_sumsq)


def test_calibration_stops_after_the_last_mlp():
    model = _llama()
    calls = []
    handles = [model.lm_head.register_forward_hook(lambda *a: calls.append("lm_head")),
               model.model.norm.register_forward_hook(lambda *a: calls.append("norm"))]
    try:
        stats = lg.calibrate(model, input_ids=_ids(), batch_size=3)
    finally:
        for h in handles:
            h.remove()
    assert calls == []
    assert stats[mlp_layers(model)[-1].down_name].n_batches == 2
    assert all(not mod._forward_hooks for mod in model.modules())


# ----------------------------------------------------------------------------- bias
def _make_constant(model, layer_neurons: dict[int, list[int]]) -> None:
    """Make the listed neurons' activation a non-zero constant: zero weights into them, constant biases."""
    with torch.no_grad():
        for mlp in mlp_layers(model):
            js = layer_neurons.get(mlp.layer, [])
            for mod, value in ((mlp.gate, 0.7), (mlp.up, 1.3)):
                if mod is None:
                    continue
                if mlp.conv1d:
                    mod.weight[:, js] = 0
                else:
                    mod.weight[js] = 0
                mod.bias[js] = value


@pytest.mark.parametrize("make", [lambda: _llama(mlp_bias=True), _gpt2])
@pytest.mark.parametrize("how", ["remove", "zero"])
def test_bias_of_constant_neurons_gives_the_dense_outputs(make, how):
    model = make()
    constant = {0: [1, 4, 7], 1: [0, 2, 3, 9]}
    _make_constant(model, constant)
    ids = _ids()
    stats = lg.calibrate(model, input_ids=ids, batch_size=2)
    dense = _logits(model, ids)
    keep = {}
    for mlp in mlp_layers(model):
        k = torch.ones(mlp.intermediate_size, dtype=torch.bool)
        k[constant.get(mlp.layer, [])] = False
        keep[mlp.layer] = k
    plain = apply_mask(copy.deepcopy(model), NeuronMask(keep), how)
    assert not torch.allclose(_logits(plain, ids), dense, atol=1e-4)  # the neurons did matter
    pruned = apply_mask(model, NeuronMask(keep), how, compensate="bias", stats=stats)
    torch.testing.assert_close(_logits(pruned, ids), dense, atol=1e-5, rtol=1e-5)


def test_bias_on_llama_turns_on_mlp_bias_and_reloads_in_plain_transformers(tmp_path):
    from transformers import AutoModelForCausalLM

    model = _llama()
    ids = _ids()
    stats = lg.calibrate(model, input_ids=ids, batch_size=2)
    result = prune_model(model, stats, "activation", 0.25, compensate="bias")
    assert model.config.mlp_bias is True
    assert len(set(intermediate_sizes(model))) == 1
    for mlp in mlp_layers(model):
        assert mlp.down.bias is not None and mlp.down.bias.abs().sum() > 0
        assert torch.equal(mlp.gate.bias, torch.zeros_like(mlp.gate.bias))
    out = save_pruned(model, None, tmp_path / "pruned", mask=result.masks)
    plain = AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    torch.testing.assert_close(_logits(plain, ids), _logits(model, ids))


def test_nonuniform_sizes_with_a_bias_round_trip_through_load_model(tmp_path):
    model = _llama()
    ids = _ids()
    stats = lg.calibrate(model, input_ids=ids, batch_size=2, second_moments=True)
    prune_model(model, stats, "activation", 0.4, allocation="global", compensate="lstsq+bias")
    sizes = intermediate_sizes(model)
    assert len(set(sizes)) > 1
    out = save_pruned(model, None, tmp_path / "pruned")
    back, _ = lg.load_model(out)
    assert intermediate_sizes(back) == sizes and back.config.mlp_bias is True
    torch.testing.assert_close(_logits(back, ids), _logits(model, ids))


# ----------------------------------------------------------------------------- least squares
def _numpy_refit(w, h, keep, ridge, with_bias):
    """Closed-form ridge refit of down_proj's kept columns, in numpy (docs/design.md section 6)."""
    w, h, keep = w.numpy(), h.numpy(), keep.numpy()
    n = h.shape[0]
    mu = h.mean(0)
    a = h.T @ h / n
    if with_bias:
        a = a - np.outer(mu, mu)
    kk = a[np.ix_(keep, keep)]
    lam = (ridge + TOKEN_RIDGE * keep.sum() / n) * np.mean(np.diag(kk))  # token_ridge: the base + k / n
    rk = a[np.ix_(~keep, keep)]
    w_keep = w[:, keep] + w[:, ~keep] @ rk @ np.linalg.inv(kk + lam * np.eye(kk.shape[0]))
    bias = w @ mu - w_keep @ mu[keep] if with_bias else None
    return w_keep, bias


@pytest.mark.parametrize("compensate", ["lstsq", "lstsq+bias"])
@pytest.mark.parametrize("ridge", [1e-3, 0.1])
def test_lstsq_equals_numpy_and_lowers_the_mlp_output_error(compensate, ridge):
    model = _llama(mlp_bias=True)  # a bias of its own, so that lstsq+bias adds to it
    ids = _ids()
    stats = lg.calibrate(model, input_ids=ids, batch_size=2, second_moments=True)
    h = _down_inputs(model, ids)
    dense_w = {m.layer: m.weight("down").detach().double().clone() for m in mlp_layers(model)}
    dense_b = {m.layer: m.down.bias.detach().double().clone() for m in mlp_layers(model)}
    mask = _random_mask(model)
    apply_mask(model, mask, "remove", compensate=compensate, stats=stats, ridge=ridge)
    for mlp in mlp_layers(model):
        keep = mask.intermediate[mlp.layer]
        w_ref, b_ref = _numpy_refit(dense_w[mlp.layer], h[mlp.layer], keep, ridge, compensate == "lstsq+bias")
        got_w = mlp.weight("down").detach().double()
        np.testing.assert_allclose(got_w.numpy(), w_ref, rtol=1e-4, atol=1e-5)
        got_b = mlp.down.bias.detach().double() - dense_b[mlp.layer]
        if b_ref is None:
            np.testing.assert_allclose(got_b.numpy(), 0, atol=0)
        else:
            np.testing.assert_allclose(got_b.numpy(), b_ref, rtol=1e-4, atol=1e-5)
        # MLP output error on the calibration data, against no compensation
        x = h[mlp.layer]
        y = x @ dense_w[mlp.layer].T
        plain = x[:, keep] @ dense_w[mlp.layer][:, keep].T
        fitted = x[:, keep] @ got_w.T + got_b
        assert (y - fitted).square().sum() < (y - plain).square().sum()


@pytest.mark.parametrize("make", [_llama, _gpt2])
def test_lstsq_with_how_zero_equals_remove(make):
    ids = _ids()
    a, b = make(), make()
    stats = lg.calibrate(a, input_ids=ids, batch_size=2, second_moments=True)
    mask = _random_mask(a)
    apply_mask(a, mask, "remove", compensate="lstsq", stats=stats)
    apply_mask(b, mask, "zero", compensate="lstsq", stats=stats)
    torch.testing.assert_close(_logits(a, ids), _logits(b, ids), atol=1e-5, rtol=1e-5)


def test_ridge_refit_kernel_closed_form():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(5, 9, generator=g, dtype=torch.float64)
    x = torch.randn(40, 9, generator=g, dtype=torch.float64)
    moment = x.T @ x / 40
    keep = torch.tensor([1, 0, 1, 1, 0, 1, 1, 0, 1], dtype=torch.bool)
    got = ridge_refit(w, moment, keep, 0.05)
    # the normal equations W'_K (G_KK + lambda I) = W G_{:,K}, at the ridge's own optimum
    lhs = got @ (moment[keep][:, keep] + 0.05 * torch.eye(int(keep.sum()), dtype=torch.float64))
    rhs = w @ moment[:, keep] + 0.05 * w[:, keep]
    torch.testing.assert_close(lhs, rhs)


# ----------------------------------------------------------------------------- OBS
def _obs_brute_force_first(w: np.ndarray, h: np.ndarray) -> tuple[int, list[float]]:
    """For each j: the smallest ``tr((W - W') H (W - W')^T)`` with column j of W' zero, by least squares."""
    m = w.shape[1]
    costs = []
    for j in range(m):
        keep = np.arange(m) != j
        # minimise over W'_K: (W - W') H (W - W')^T with W'_j = 0 -> solve H_KK X = H_K: W^T
        x = np.linalg.solve(h[np.ix_(keep, keep)], h[keep] @ w.T)  # (k, d)
        delta = w.copy()
        delta[:, keep] -= x.T
        delta[:, j] = w[:, j]
        costs.append(float(np.trace(delta @ h @ delta.T)))
    return int(np.argmin(costs)), costs


def test_obs_first_choice_and_costs_equal_brute_force():
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(4, 7, generator=g, dtype=torch.float64)
        x = torch.randn(30, 7, generator=g, dtype=torch.float64) * torch.rand(7, generator=g, dtype=torch.float64)
        moment = x.T @ x / 30
        damp = relative_damp(moment, 1e-2)
        res = obs_greedy(w, moment, damp, n_remove=1)
        h = (moment + damp * torch.eye(7, dtype=torch.float64)).numpy()
        best, costs = _obs_brute_force_first(w.numpy(), h)
        assert int(res.order[0]) == best
        np.testing.assert_allclose(float(res.costs[0]), costs[best], rtol=1e-9)


def test_obs_greedy_refit_is_the_lstsq_refit():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(6, 40, generator=g, dtype=torch.float64)
    x = torch.randn(200, 40, generator=g, dtype=torch.float64) @ torch.randn(40, 40, generator=g, dtype=torch.float64)
    moment = x.T @ x / 200
    damp = relative_damp(moment, 1e-2)
    res = obs_greedy(w, moment, damp, n_remove=35)  # past the compaction threshold
    keep = torch.ones(40, dtype=torch.bool)
    keep[res.order] = False
    assert torch.equal(res.weight[:, ~keep], torch.zeros(6, 35, dtype=torch.float64))
    torch.testing.assert_close(res.weight[:, keep], ridge_refit(w, moment, keep, damp))
    # the costs add up to the final error tr(dW H dW^T)
    hmat = moment + damp * torch.eye(40, dtype=torch.float64)
    delta = w - res.weight
    torch.testing.assert_close(res.costs.sum(), torch.trace(delta @ hmat @ delta.T))


def test_obs_scorer_removes_the_brute_force_neuron_with_k_1():
    model = _llama(m=12)
    ids = _ids()
    stats = lg.calibrate(model, input_ids=ids, batch_size=2, second_moments=True)
    result = prune_model(copy.deepcopy(model), stats, "obs", 1 / 12, compensate="lstsq")
    for mlp in mlp_layers(model):
        s = stats[mlp.down_name]
        moment = s.input_second_moment
        damp = relative_damp(moment, DEFAULT_RIDGE)
        h = (moment + damp * torch.eye(12, dtype=torch.float64)).numpy()
        best, _ = _obs_brute_force_first(mlp.weight("down").detach().double().numpy(), h)
        assert result.masks.pruned_indices(mlp.layer).tolist() == [best]


def test_flap_scores_and_standardized_allocation():
    model = _llama()
    ids = _ids()
    stats = lg.calibrate(model, input_ids=ids, batch_size=2)
    scores = lg.score_neurons(model, stats, "flap")
    h = _down_inputs(model, ids)
    for mlp in mlp_layers(model):
        w = mlp.weight("down").detach().double()
        torch.testing.assert_close(scores.intermediate[mlp.layer], h[mlp.layer].var(0, unbiased=False)
                                   * w.square().sum(0))
    mask = allocate(scores, 0.3, "standardized")
    # reference: standardise per layer, one pooled threshold (no floor binds at 30%)
    z = np.concatenate([((v - v.mean()) / v.std()).numpy() for v in scores.intermediate.values()])
    k = round(0.3 * z.size)
    pruned = np.zeros(z.size, dtype=bool)
    pruned[np.argsort(z, kind="stable")[:k]] = True
    got = ~torch.cat([mask.intermediate[l] for l in mask.layers]).numpy()
    assert np.array_equal(got, pruned)


# ----------------------------------------------------------------------------- sequential
def test_sequential_collects_each_layer_on_the_pruned_inputs():
    model = _llama()
    dense = copy.deepcopy(model)
    ids = _ids()
    seen: dict[int, list] = {}
    handles = []
    for mlp in mlp_layers(model):
        def hook(mod, inp, out, _l=mlp.layer):
            seen.setdefault(_l, []).append(inp[0].reshape(-1, inp[0].shape[-1]).double().clone())
        handles.append(mlp.up.register_forward_hook(hook))
    try:
        result = prune_model(model, None, "activation", 0.4, compensate="lstsq", sequential=True, input_ids=ids)
    finally:
        for h in handles:
            h.remove()
    n_batches = len(ids.split(4))
    final_inputs = _inputs_of(model, ids, "up")
    dense_inputs = _inputs_of(dense, ids, "up")
    for mlp in mlp_layers(model):
        # each layer runs twice per batch: once for its statistics (before its own pruning), once
        # for its outputs (layer 0 once more, to learn what a layer returns); the statistics pass
        # saw exactly what the final pruned model feeds it
        first = torch.cat(seen[mlp.layer][-2 * n_batches:-n_batches])
        assert len(seen[mlp.layer]) == 2 * n_batches + (mlp.layer == 0)
        torch.testing.assert_close(first, final_inputs[mlp.layer], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(result.stats[mlp.up_name].input_sumsq, first.square().sum(0), rtol=1e-6, atol=1e-6)
        if mlp.layer > 0:
            assert not torch.allclose(first, dense_inputs[mlp.layer], atol=1e-4)


def _inputs_of(model, ids, which: str) -> dict[int, torch.Tensor]:
    got: dict[int, list] = {}
    handles = []
    for mlp in mlp_layers(model):
        def hook(mod, inp, out, _l=mlp.layer):
            got.setdefault(_l, []).append(inp[0].reshape(-1, inp[0].shape[-1]).double())
        handles.append(getattr(mlp, which).register_forward_hook(hook))
    try:
        with torch.no_grad():
            for b in ids.split(4):
                model(input_ids=b, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return {l: torch.cat(v) for l, v in got.items()}


def test_sequential_first_layer_equals_one_shot():
    # Layer 0 sees the same inputs in both modes: same neurons, same refit.
    ids = _ids()
    a, b = _llama(), _llama()
    stats = lg.calibrate(a, input_ids=ids, batch_size=4, second_moments=True)
    one = prune_model(a, stats, "wanda-sp", 0.3, compensate="lstsq")
    seq = prune_model(b, None, "wanda-sp", 0.3, compensate="lstsq", sequential=True, input_ids=ids)
    assert torch.equal(one.masks.intermediate[0], seq.masks.intermediate[0])
    torch.testing.assert_close(mlp_layers(a)[0].down.weight, mlp_layers(b)[0].down.weight)


@pytest.mark.parametrize("method", ["pagerank", "obs"])
def test_sequential_global_budgets_come_from_the_dense_pass(method):
    ids = _ids()
    model = _llama()
    stats = lg.calibrate(model, input_ids=ids, batch_size=4, second_moments=True)
    dense = allocate(lg.score_neurons(model, stats, method), 0.4, "global")
    result = prune_model(model, None, method, 0.4, allocation="global", compensate="lstsq", sequential=True,
                         input_ids=ids)
    assert result.masks.sizes() == dense.sizes()
    assert intermediate_sizes(model) == dense.sizes()
    if method == "pagerank":  # a whole-model scorer: the dense choice itself
        assert result.masks.intermediate.keys() == dense.intermediate.keys()
        assert all(torch.equal(result.masks.intermediate[l], dense.intermediate[l]) for l in dense.layers)


def test_sequential_gpt2_and_zero_mode_run():
    ids = _ids()
    model = _gpt2()
    result = prune_model(model, None, "flap", 0.3, how="zero", compensate="bias", sequential=True, input_ids=ids)
    assert intermediate_sizes(model) == [20, 20]
    assert result.masks.n_pruned() == 12
    assert torch.isfinite(_logits(model, ids)).all()


# ----------------------------------------------------------------------------- bad input
def test_bad_input_is_refused_before_any_weight_changes():
    model = _llama()
    ids = _ids()
    plain = lg.calibrate(model, input_ids=ids, batch_size=2)
    full = lg.calibrate(model, input_ids=ids, batch_size=2, second_moments=True)
    before = _state(model)
    mask = _random_mask(model)
    with pytest.raises(ValueError, match=r"second moments .*second_moments=True"):
        prune_model(model, plain, "activation", 0.3, compensate="lstsq")
    with pytest.raises(ValueError, match=r"second moments .*second_moments=True"):
        apply_mask(model, mask, compensate="lstsq+bias", stats=plain)
    with pytest.raises(ValueError, match=r"second moments .*second_moments=True"):
        prune_model(model, plain, "obs", 0.3)
    with pytest.raises(ValueError, match="needs calibration statistics"):
        apply_mask(model, mask, compensate="bias")
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"^`ridge` must be a positive finite float; got "):
            prune_model(model, full, "activation", 0.3, compensate="lstsq", ridge=bad)
    with pytest.raises(TypeError, match="`ridge` must be a positive finite float; got '1'"):
        apply_mask(model, mask, compensate="lstsq", stats=full, ridge="1")
    with pytest.raises(ValueError, match="`compensate` must be one of 'none', 'bias', 'lstsq', 'lstsq\\+bias'"):
        prune_model(model, full, "activation", 0.3, compensate="obs")
    with pytest.raises(ValueError, match="paper mode"):
        prune_model(model, full, "wpr", 0.3, how="zero", prune_hidden=True, sequential=True, input_ids=ids)
    with pytest.raises(ValueError, match="needs the calibration tokens"):
        prune_model(model, None, "activation", 0.3, sequential=True)
    with pytest.raises(ValueError, match="sequential mode only"):
        prune_model(model, full, "activation", 0.3, input_ids=ids)
    with pytest.raises(ValueError, match="would keep 0 of 24"):
        prune_model(model, None, "activation", 0.99, sequential=True, input_ids=ids)
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        prune_model(model, None, "activation", 0.3, sequential=True, input_ids=ids + VOCAB)
    with pytest.raises(ValueError, match="second moments"):
        prune_model(model, plain, "obs", 0.3, allocation="global", sequential=True, input_ids=ids)
    # the paper mode's zeroed down_proj rows and a refit: refused by prune_model as by apply_mask
    for comp in ("lstsq", "bias", "lstsq+bias"):
        with pytest.raises(ValueError, match=f"compensate='{comp.replace('+', '[+]')}' refits down_proj .* "
                                             "use compensate='none' with prune_hidden"):
            prune_model(model, full, "wpr", 0.3, how="zero", prune_hidden=True, compensate=comp)
    assert _same_state(model, before)
    assert intermediate_sizes(model) == [24, 24, 24] and not model.config.mlp_bias


def test_bias_on_a_family_without_mlp_bias_suggests_lstsq():
    model = _mistral()
    ids = _ids()
    stats = lg.calibrate(model, input_ids=ids, batch_size=2, second_moments=True)
    before = _state(model)
    for compensate in ("bias", "lstsq+bias"):
        with pytest.raises(ValueError, match=r"family 'mistral' has no bias there and no MLP-bias option .*"
                                             r"use compensate='lstsq'"):
            prune_model(model, stats, "activation", 0.3, compensate=compensate)
        with pytest.raises(ValueError, match="compensate='lstsq'"):
            prune_model(model, None, "activation", 0.3, compensate=compensate, sequential=True, input_ids=ids)
    assert _same_state(model, before)
    prune_model(model, stats, "activation", 0.3, compensate="lstsq")  # what the message suggests works
    assert intermediate_sizes(model) == [17, 17]


def test_check_compensation_accepts_what_it_should():
    model = _llama()
    stats = lg.calibrate(model, input_ids=_ids(), batch_size=2, second_moments=True)
    for compensate, ridge in itertools.product(lg.pruning.surgery.COMPENSATIONS, (1e-4, 1.0)):
        check_compensation(model, stats, compensate, ridge)


# ----------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny Llama with a WordLevel tokenizer saved as a Hugging Face directory (as test_cli's)."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model", m=16)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    """A corpus of the tokenizer's words (as test_cli's)."""
    return write_corpus(tmp_path_factory.mktemp("text") / "corpus.txt")


def _prune_args(model_dir, text_file, out, *extra):
    return ["prune", "--model", str(model_dir), "--out", str(out), "--amount", "0.25", "--texts", str(text_file),
            "--eval-texts", str(text_file), "--n-samples", "4", "--seq-len", "16", "--eval-samples", "2", *extra]


@pytest.mark.parametrize("extra", [("--compensate", "lstsq", "--method", "obs"),
                                   ("--compensate", "lstsq", "--sequential", "--method", "activation"),
                                   ("--compensate", "lstsq+bias", "--sequential", "--allocation", "global")])
def test_cli_prune_compensates(model_dir, text_file, tmp_path, capsys, extra):
    from llmrank_graph.cli import main

    out = tmp_path / "pruned"
    assert main(_prune_args(model_dir, text_file, out, *extra)) == 0
    text = capsys.readouterr().out
    assert f"compensate={extra[1]}" in text and ("sequential" in text) == ("--sequential" in extra)
    model, _ = lg.load_model(out)
    assert sum(intermediate_sizes(model)) == 36
    assert bool(getattr(model.config, "mlp_bias", False)) == extra[1].endswith("bias")


def test_cli_bias_model_loads_in_plain_transformers(model_dir, text_file, tmp_path):
    from transformers import AutoModelForCausalLM

    from llmrank_graph.cli import main

    out = tmp_path / "pruned"
    assert main(_prune_args(model_dir, text_file, out, "--compensate", "bias", "--method", "flap")) == 0
    ours, _ = lg.load_model(out)
    plain = AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    ids = torch.randint(0, 16, (2, 8))
    torch.testing.assert_close(_logits(plain, ids), _logits(ours, ids))


def test_cli_refuses_a_bad_ridge_before_loading(model_dir, text_file, tmp_path, capsys):
    from llmrank_graph.cli import main

    assert main(_prune_args(model_dir, text_file, tmp_path / "p", "--compensate", "lstsq", "--ridge", "0")) == 2
    assert "`--ridge` must be a positive finite float; got 0.0" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_cli_defaults_are_the_library_defaults():
    import argparse
    import inspect

    from llmrank_graph.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["prune"]
    opts = {o: a for a in sub._actions for o in a.option_strings}
    sig = inspect.signature(prune_model).parameters
    # The CLI refits by default (the measured best); the library collects no Gram matrices unasked.
    assert opts["--compensate"].default == lg.compensation.algebra.RECOMMENDED_COMPENSATION == "lstsq"
    assert sig["compensate"].default == "none"
    assert tuple(opts["--compensate"].choices) == lg.pruning.surgery.COMPENSATIONS
    assert opts["--ridge"].default == sig["ridge"].default == DEFAULT_RIDGE
    assert opts["--sequential"].default is sig["sequential"].default is False


def test_sequential_device_argument_on_the_same_device():
    ids = _ids()
    a, b = _llama(), _llama()
    prune_model(a, None, "activation", 0.3, compensate="lstsq", sequential=True, input_ids=ids)
    prune_model(b, None, "activation", 0.3, compensate="lstsq", sequential=True, input_ids=ids, device="cpu")
    torch.testing.assert_close(_logits(a, ids), _logits(b, ids))


@pytest.mark.gpu
def test_sequential_on_the_gpu_with_the_model_in_cpu_memory():
    # Each layer visits the GPU in turn; the model stays in CPU memory and ends there.
    ids = _ids()
    a, b = _llama(), _llama()
    prune_model(a, None, "activation", 0.3, compensate="lstsq", sequential=True, input_ids=ids)
    prune_model(b, None, "activation", 0.3, compensate="lstsq", sequential=True, input_ids=ids, device="cuda")
    assert all(p.device.type == "cpu" for p in b.parameters())
    assert intermediate_sizes(a) == intermediate_sizes(b)
    torch.testing.assert_close(_logits(a, ids), _logits(b, ids), atol=1e-4, rtol=1e-4)


def test_stats_without_means_are_refused_with_a_hint():
    model = _llama()
    norms = {name: (torch.rand(mod.in_features), torch.rand(mod.out_features))
             for m in mlp_layers(model) for name, mod in m.named_modules().items()}
    stats = lg.ActivationStats.from_norms(norms)
    with pytest.raises(ValueError, match="scorer 'flap' needs the mean of the down_proj inputs"):
        lg.score_neurons(model, stats, "flap")
    with pytest.raises(ValueError, match=r"compensate='bias' needs the mean .*second_moments=True"):
        prune_model(model, stats, "activation", 0.3, compensate="bias")
    assert intermediate_sizes(model) == [24, 24, 24]
