"""The least-squares refit's ridge grows with the unknowns per calibration token (issue 17).

``compensate='lstsq'`` refits the k kept down_proj columns from the Gram matrix of n
calibration tokens; with n below k that matrix is singular, and the base ridge alone let the
refit fit the calibration tokens' noise and worsen the model. :func:`token_ridge` adds
``TOKEN_RIDGE * k / n``. Checked against a numpy reference, and on held-out text against no
refit: on a tiny random model (the old fixed ridge worsens it there, so the check can fail) and,
marked slow, on SmolLM2-135M at 512 calibration tokens.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from _tiny import tiny_llama

import llmrank_graph as lg
from llmrank_graph.compensation.algebra import (
    DEFAULT_RIDGE,
    TOKEN_RIDGE,
    DownUpdate,
    apply_updates,
    relative_damp,
    ridge_refit,
    token_ridge,
)
from llmrank_graph.models.architectures import mlp_layers
from llmrank_graph.pruning.masks import NeuronMask
from llmrank_graph.pruning.surgery import apply_mask, prune_model

VOCAB, M = 64, 96


def test_token_ridge_is_the_base_plus_kept_per_token():
    for ridge, n, k in [(1e-2, 512, 1075), (1e-2, 16384, 1075), (0.3, 100, 7), (1e-4, 1, 1)]:
        assert token_ridge(ridge, n, k) == pytest.approx(ridge + TOKEN_RIDGE * k / n, rel=1e-15)
    assert token_ridge(0.05, 0, 10) == 0.05  # stats without a token count: the base ridge
    assert token_ridge(1e-2, 64, 32) < token_ridge(1e-2, 32, 32) < token_ridge(1e-2, 32, 64)


def _model(seed=0):
    # weights large enough that the MLPs matter to the logits (the default init makes them ~0)
    return tiny_llama(seed=seed, layers=2, d=16, m=M, vocab=VOCAB, initializer_range=0.3, mlp_bias=True)


def _ids(n, seq, seed):
    return torch.randint(0, VOCAB, (n, seq), generator=torch.Generator().manual_seed(seed))


def _mask(model, drop: int, seed: int) -> NeuronMask:
    g = torch.Generator().manual_seed(seed)
    keep = {}
    for mlp in mlp_layers(model):
        k = torch.ones(mlp.intermediate_size, dtype=torch.bool)
        k[torch.randperm(mlp.intermediate_size, generator=g)[:drop]] = False
        keep[mlp.layer] = k
    return NeuronMask(keep)


def _down_inputs(model, ids) -> dict[int, np.ndarray]:
    """Every layer's down_proj input on ``ids``, (tokens, m), by a hook of the test's own."""
    got: dict[int, list] = {}
    handles = [mlp.down.register_forward_hook(
        lambda mod, inp, out, _l=mlp.layer: got.setdefault(_l, []).append(inp[0].reshape(-1, M).double()))
        for mlp in mlp_layers(model)]
    try:
        with torch.no_grad():
            model(input_ids=ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return {l: torch.cat(v).numpy() for l, v in got.items()}


@pytest.mark.parametrize("compensate", ["lstsq", "lstsq+bias"])
def test_refit_with_fewer_tokens_than_neurons_equals_numpy(compensate):
    model = _model()
    ids = _ids(2, 16, seed=1)  # 32 tokens against 66 kept neurons: G_KK is singular
    stats = lg.calibrate(model, input_ids=ids, batch_size=2, second_moments=True)
    h = _down_inputs(model, ids)
    dense = {m.layer: (m.weight("down").detach().double().numpy().copy(), m.down.bias.detach().double().numpy().copy())
             for m in mlp_layers(model)}
    mask = _mask(model, 30, seed=2)
    apply_mask(model, mask, "remove", compensate=compensate, stats=stats)
    for mlp in mlp_layers(model):
        keep = mask.intermediate[mlp.layer].numpy()
        x, (w, b) = h[mlp.layer], dense[mlp.layer]
        n, k = x.shape[0], int(keep.sum())
        assert (n, k) == (32, 66)
        a = x.T @ x / n
        if compensate == "lstsq+bias":
            a = a - np.outer(x.mean(0), x.mean(0))
        kk = a[np.ix_(keep, keep)]
        lam = (DEFAULT_RIDGE + TOKEN_RIDGE * k / n) * np.mean(np.diag(kk))
        w_ref = w[:, keep] + w[:, ~keep] @ a[np.ix_(~keep, keep)] @ np.linalg.inv(kk + lam * np.eye(k))
        np.testing.assert_allclose(mlp.weight("down").detach().double().numpy(), w_ref, rtol=1e-4, atol=1e-5)
        if compensate == "lstsq+bias":
            mu = x.mean(0)
            np.testing.assert_allclose(mlp.down.bias.detach().double().numpy() - b, w @ mu - w_ref @ mu[keep],
                                       rtol=1e-4, atol=1e-5)


def _held_out_loss(dense, pruned, ids) -> float:
    """Mean KL divergence from the dense model's next-token distribution to the pruned one's."""
    with torch.no_grad():
        p = dense(input_ids=ids, use_cache=False).logits.log_softmax(-1)
        q = pruned(input_ids=ids, use_cache=False).logits.log_softmax(-1)
    return float((p.exp() * (p - q)).sum(-1).mean())


def _fixed_ridge_refit(model, mask, stats, ridge):
    """The refit before issue 17: the base ridge whatever the token count, with the library's kernels."""
    updates = {}
    for mlp in mlp_layers(model):
        keep, g = mask.intermediate[mlp.layer], stats[mlp.down_name].input_second_moment
        w = mlp.weight("down").detach().double()
        updates[mlp.layer] = DownUpdate(mlp.layer, ridge_refit(w, g, keep, relative_damp(g[keep][:, keep], ridge)),
                                        None)
    pruned = apply_mask(copy.deepcopy(model), mask, "remove")
    apply_updates(pruned, updates)
    return pruned


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_refit_from_few_tokens_does_not_worsen_held_out_loss(seed):
    model = _model(seed)
    stats = lg.calibrate(model, input_ids=_ids(2, 16, seed=100 + seed), batch_size=2, second_moments=True)
    assert stats.n_tokens < M
    held = _ids(16, 32, seed=200 + seed)  # never seen by the calibration
    mask = _mask(model, 29, seed=300 + seed)
    none = _held_out_loss(model, apply_mask(copy.deepcopy(model), mask, "remove"), held)
    old = _held_out_loss(model, _fixed_ridge_refit(model, mask, stats, DEFAULT_RIDGE), held)
    new = _held_out_loss(model, apply_mask(copy.deepcopy(model), mask, "remove", compensate="lstsq", stats=stats),
                         held)
    assert old > none  # the problem: the fixed ridge fits the calibration tokens' noise
    assert new <= none
    # with many tokens the term vanishes and the refit repairs most of the damage
    many = lg.calibrate(model, input_ids=_ids(64, 32, seed=400 + seed), batch_size=8, second_moments=True)
    rich = _held_out_loss(model, apply_mask(copy.deepcopy(model), mask, "remove", compensate="lstsq", stats=many),
                          held)
    assert rich < new


@pytest.mark.slow
def test_smollm2_refit_at_512_tokens_does_not_worsen_perplexity(real_model):
    from llmrank_graph.data.evaluation import perplexity
    from llmrank_graph.data.texts import load_texts, token_blocks

    model, tok = real_model
    calib = token_blocks(tok, load_texts(None, split="calibration"), 4, 128)  # 512 tokens, m = 1536
    held = token_blocks(tok, load_texts(None, split="evaluation"), 4, 512)
    stats = lg.calibrate(model, input_ids=calib, batch_size=4, second_moments=True)
    assert stats.n_tokens == 512
    ppl = {}
    for compensate in ("none", "lstsq"):
        res = prune_model(copy.deepcopy(model), stats, "pagerank", 0.3, "local", compensate=compensate)
        ppl[compensate] = perplexity(res.model, input_ids=held, batch_size=4)
    assert ppl["lstsq"] <= ppl["none"], ppl
