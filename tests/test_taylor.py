"""The loss-gradient statistics of ``calibrate(..., gradients=True)`` and the ``taylor`` scorer.

References are computed independently of the hooks: plain autograd on the model's own loss
(``labels=input_ids``, parameter gradients, then the vector-wise Taylor sum of each down_proj
column), central finite differences of the loss when a neuron is scaled, and the gradient at
the final norm's input taken by autograd.
"""

import copy

import numpy as np
import pytest
import torch
from _tiny import tiny_gpt2, tiny_llama

import llmrank_graph as lg
from llmrank_graph.data.gradients import output_weights
from llmrank_graph.data.stats import ActivationStats
from llmrank_graph.models.architectures import mlp_layers
from llmrank_graph.scoring import get_scorer, score_neurons, scorer_class

VOCAB = 64


def _models():
    return {"llama": tiny_llama(seed=1, layers=3, d=8, m=12, vocab=VOCAB).double(),
            "gpt2": tiny_gpt2(seed=2, layers=2, d=8, vocab=VOCAB).double()}


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, VOCAB, (5, 9), generator=torch.Generator().manual_seed(0))


def _summed_loss(model, batch, own: bool = False) -> torch.Tensor:
    """The summed next-token cross-entropy of ``batch``, in the model's float64.

    ``own``: the model's own mean loss (``labels=batch``, which transformers computes in
    float32) times the number of predicted tokens instead.
    """
    if own:
        return model(input_ids=batch, labels=batch, use_cache=False).loss * (batch.shape[0] * (batch.shape[1] - 1))
    logits = model(input_ids=batch, use_cache=False).logits
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), batch[:, 1:].flatten(), reduction="sum")


def _taylor_by_weight_gradients(model, ids, batch_size, own: bool = False):
    """``sum_i W_down[i, j] dL/dW_down[i, j]`` per layer: parameter gradients of the summed loss."""
    model = copy.deepcopy(model).requires_grad_(True)
    model.zero_grad()
    for i in range(0, ids.shape[0], batch_size):
        _summed_loss(model, ids[i:i + batch_size], own).backward()
    out = {}
    for m in mlp_layers(model):
        w, g = m.down.weight, m.down.weight.grad
        out[m.layer] = (w * g).sum(1 if m.conv1d else 0).detach()  # Conv1D stores down as (m, d)
    return out


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_input_taylor_equals_the_taylor_sum_of_the_down_column(family, ids):
    model = _models()[family]
    stats = lg.calibrate(model, input_ids=ids, batch_size=2, gradients=True)
    want = _taylor_by_weight_gradients(model, ids, 2)
    for m in mlp_layers(model):
        got = stats[m.down_name].input_taylor
        assert got.dtype == torch.float64 and got.shape == (m.intermediate_size,)
        np.testing.assert_allclose(got.numpy(), want[m.layer].numpy(), rtol=1e-9, atol=1e-12)
        assert got.abs().max() > 0
    # the loss is the model's own (transformers' labels), to its float32 precision
    own = _taylor_by_weight_gradients(model, ids, 2, own=True)
    for m in mlp_layers(model):
        np.testing.assert_allclose(stats[m.down_name].input_taylor.numpy(), own[m.layer].numpy(), rtol=1e-4,
                                   atol=1e-7)


def test_input_taylor_is_the_derivative_of_the_loss_in_the_neuron_scale(ids):
    model = _models()["llama"]
    stats = lg.calibrate(model, input_ids=ids, batch_size=5, gradients=True)
    mlp = mlp_layers(model)[1]
    eps = 1e-2  # Llama's RMSNorm computes in float32: a central difference needs a wide step (error O(eps^2))

    def loss_with_scale(j, scale):
        m2 = copy.deepcopy(model)
        with torch.no_grad():
            mlp_layers(m2)[1].down.weight[:, j] *= scale
            return float(_summed_loss(m2, ids))

    taylor = stats[mlp.down_name].input_taylor
    scale = float(taylor.abs().max())
    for j in (0, 5, 11, int(taylor.abs().argmax())):
        fd = (loss_with_scale(j, 1 + eps) - loss_with_scale(j, 1 - eps)) / (2 * eps)
        assert taylor[j].item() == pytest.approx(fd, rel=2e-3, abs=2e-3 * scale)


def test_output_gradient_of_the_last_layer_is_the_gradient_at_the_final_norm(ids):
    model = _models()["llama"]
    stats = lg.calibrate(model, input_ids=ids, batch_size=2, gradients=True)
    want = torch.zeros(8, dtype=torch.float64)
    leaf = {}

    def pre(module, args):  # the final norm's input as a leaf: the loss's gradient there
        leaf["h"] = args[0].detach().requires_grad_()
        return (leaf["h"],)

    handle = model.model.norm.register_forward_pre_hook(pre)
    try:
        for i in range(0, ids.shape[0], 2):
            with torch.enable_grad():
                (g,) = torch.autograd.grad(_summed_loss(model, ids[i:i + 2]), leaf["h"])
            want += g.square().reshape(-1, 8).sum(0)
    finally:
        handle.remove()
    got = stats[mlp_layers(model)[-1].down_name].output_grad_sumsq
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-9)
    w = output_weights(model, stats, "gradient")
    np.testing.assert_allclose(w.numpy(), want.sqrt().numpy(), rtol=1e-9)


def test_totals_do_not_depend_on_the_batching_and_the_model_is_untouched(ids):
    model = _models()["llama"]
    flags = [p.requires_grad for p in model.parameters()]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a = lg.calibrate(model, input_ids=ids, batch_size=1, gradients=True)
    with torch.no_grad():  # the caller's grad mode does not matter
        b = lg.calibrate(model, input_ids=ids, batch_size=5, gradients=True)
    for m in mlp_layers(model):
        for field in ("input_taylor", "output_grad_sumsq"):
            np.testing.assert_allclose(getattr(a[m.down_name], field).numpy(),
                                       getattr(b[m.down_name], field).numpy(), rtol=1e-9, atol=1e-14)
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_frozen_parameters_and_inference_mode_give_the_same_statistics(ids):
    model = _models()["llama"]
    want = lg.calibrate(model, input_ids=ids, batch_size=2, gradients=True)
    frozen = copy.deepcopy(model).requires_grad_(False)
    with torch.inference_mode():
        got = lg.calibrate(frozen, input_ids=ids, batch_size=2, gradients=True)
    name = mlp_layers(model)[0].down_name
    np.testing.assert_allclose(got[name].input_taylor.numpy(), want[name].input_taylor.numpy(), rtol=1e-9)
    assert all(not p.requires_grad for p in frozen.parameters())


def test_forward_statistics_are_those_of_the_plain_calibration(ids):
    model = _models()["gpt2"]
    plain = lg.calibrate(model, input_ids=ids, batch_size=2, second_moments=True)
    with_grads = lg.calibrate(model, input_ids=ids, batch_size=2, second_moments=True, gradients=True)
    assert list(plain) == list(with_grads)
    for name in plain:
        for field in ("input_sumsq", "output_sumsq", "input_sum"):
            torch.testing.assert_close(getattr(with_grads[name], field), getattr(plain[name], field))
        assert plain[name].input_taylor is None and plain[name].output_grad_sumsq is None
    assert with_grads.meta["gradients"] is True and "gradients" not in plain.meta


def test_gradients_survive_save_and_load_and_add(ids, tmp_path):
    model = _models()["llama"]
    stats = lg.calibrate(model, input_ids=ids, batch_size=2, gradients=True)
    back = ActivationStats.load(stats.save(tmp_path / "s.safetensors"))
    name = mlp_layers(model)[2].down_name
    torch.testing.assert_close(back[name].input_taylor, stats[name].input_taylor)
    torch.testing.assert_close(back[name].output_grad_sumsq, stats[name].output_grad_sumsq)
    assert back[mlp_layers(model)[2].up_name].input_taylor is None
    first = lg.calibrate(model, input_ids=ids[:2], gradients=True)
    first[name].add(lg.calibrate(model, input_ids=ids[2:], gradients=True)[name])
    torch.testing.assert_close(first[name].input_taylor, stats[name].input_taylor)


# ----------------------------------------------------------------------------- the scorer
def test_taylor_scores_are_the_absolute_first_order_terms(ids):
    model = _models()["llama"]
    stats = lg.calibrate(model, input_ids=ids, batch_size=2, gradients=True)
    want = _taylor_by_weight_gradients(model, ids, 2)
    res = score_neurons(model, stats, "taylor")
    assert res.method == "taylor" and res.sizes() == {0: 12, 1: 12, 2: 12}
    for layer, w in want.items():
        np.testing.assert_allclose(res.intermediate[layer].numpy(), w.abs().numpy(), rtol=1e-9, atol=1e-12)
    assert not scorer_class("taylor").layerwise and get_scorer("taylor").needs_stats()


def test_taylor_without_gradients_says_how_to_get_them(ids):
    model = _models()["llama"]
    with pytest.raises(ValueError, match=r"scorer 'taylor' needs the loss gradients.*gradients=True"):
        score_neurons(model, lg.calibrate(model, input_ids=ids), "taylor")
    with pytest.raises(ValueError, match="`stats` are required by scorer 'taylor'"):
        score_neurons(model, None, "taylor")


def test_prune_with_taylor_removes_the_lowest_neurons(ids):
    model = _models()["llama"].float()
    stats = lg.calibrate(model, input_ids=ids, batch_size=2, gradients=True)
    scores = score_neurons(model, stats, "taylor")
    res = lg.prune_model(model, stats, "taylor", amount=0.25)
    for layer, s in scores.intermediate.items():
        kept = res.masks.intermediate[layer]
        assert int(kept.sum()) == 9
        assert s[~kept].max() <= s[kept].min()


def test_the_sequential_mode_uses_the_dense_gradients(ids):
    model = _models()["llama"].float()
    stats = lg.calibrate(model, input_ids=ids, batch_size=2, gradients=True)
    want = score_neurons(model, stats, "taylor")
    res = lg.prune_model(copy.deepcopy(model), stats, "taylor", amount=0.25, sequential=True, input_ids=ids)
    for layer, s in want.intermediate.items():
        torch.testing.assert_close(res.scores.intermediate[layer], s)
