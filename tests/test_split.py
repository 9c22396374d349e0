"""prune_model(target='both', split='measured'): the head fraction of the lowest perplexity on the given tokens."""
import copy

import pytest
import torch
from test_prune_target import MODELS, _ids, _logits

import llmrank_graph as lg
from llmrank_graph.data.evaluation import perplexity
from llmrank_graph.errors import InvalidArgumentError
from llmrank_graph.pruning import MEASURED_HEAD_FRACTIONS


def _n(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def calibrated():
    model = MODELS["llama-gqa"]()
    ids = _ids(batch=8, length=16)
    return model, ids, lg.calibrate(model, input_ids=ids, batch_size=4, attention=True, second_moments=True)


@pytest.mark.parametrize("allocation", ["local", "global"])
def test_measured_split_keeps_the_trial_of_the_lowest_perplexity(calibrated, allocation):
    """The pruned model's perplexity on the tokens is the lowest of the trials; the head fraction 0 is the MLP
    pruned alone (prune_model(target='mlp') at the MLP fraction it leaves); the accounting is the parameters
    that really went."""
    model, ids, stats = calibrated
    pruned = copy.deepcopy(model)
    res = lg.prune_model(pruned, stats, "pagerank", 0.3, allocation, target="both", split="measured", input_ids=ids,
                         compensate="lstsq")
    trials = res.head_mask.meta["split"]["trials"]
    assert res.masks.meta["split"] == res.head_mask.meta["split"]
    assert [t["heads_removed"] for t in trials] == sorted({t["heads_removed"] for t in trials})  # each count once
    assert len(trials) >= 2 and trials[0]["head_fraction"] == 0.0
    best = min(trials, key=lambda t: t["perplexity"])
    assert res.head_mask.n_pruned() == best["heads_removed"]
    assert perplexity(pruned, input_ids=ids) == pytest.approx(best["perplexity"], rel=1e-6)
    acc = res.head_mask.meta["parameters"]
    assert _n(model) - _n(pruned) == acc["removed"]
    assert acc["fraction"] == pytest.approx(0.3, abs=0.05)
    # the trial without heads: the MLP alone, at the fraction of its parameters that makes the budget
    mlp = sum(p.numel() for m in lg.models.architectures.mlp_layers(model) for mod in m.named_modules().values()
              for p in mod.parameters())
    alone = lg.prune_model(copy.deepcopy(model), stats, "pagerank", 0.3 * acc["total_parameters"] / mlp, allocation,
                           compensate="lstsq")
    assert perplexity(alone.model, input_ids=ids) == pytest.approx(trials[0]["perplexity"], rel=1e-6)


def test_measured_split_zero_gives_the_logits_of_remove(calibrated):
    model, ids, stats = calibrated
    kw = dict(target="both", split="measured", input_ids=ids, compensate="lstsq")
    removed = lg.prune_model(copy.deepcopy(model), stats, "activation", 0.3, "global", **kw)
    zeroed = lg.prune_model(copy.deepcopy(model), stats, "activation", 0.3, "global", how="zero", **kw)
    assert zeroed.head_mask.n_pruned() == removed.head_mask.n_pruned()
    torch.testing.assert_close(_logits(removed.model, _ids(seed=5)), _logits(zeroed.model, _ids(seed=5)),
                               rtol=1e-4, atol=1e-5)


def test_measured_split_tries_the_documented_fractions(calibrated, monkeypatch):
    """Every fraction of MEASURED_HEAD_FRACTIONS is built, in order; the head counts tried are distinct."""
    import llmrank_graph.pruning.prune as P

    model, ids, stats = calibrated
    asked = []
    real = P.masks_at

    def spy(*a):
        asked.append(a[-1])
        return real(*a)

    monkeypatch.setattr(P, "masks_at", spy)
    lg.prune_model(copy.deepcopy(model), stats, "magnitude", 0.3, "global", target="both", split="measured",
                   input_ids=ids)
    assert asked == list(MEASURED_HEAD_FRACTIONS)


@pytest.mark.parametrize("kwargs, message", [
    ({"target": "both", "split": "measured"}, "needs target='both', input_ids and sequential=False"),
    ({"target": "mlp", "split": "measured", "input_ids": True}, "got target='mlp'"),
    ({"target": "attention", "split": "measured", "input_ids": True}, "got target='attention'"),
    ({"target": "both", "split": "search"}, "`split` must be one of 'scores', 'measured'"),
])
def test_bad_splits_are_refused_before_anything_changes(calibrated, kwargs, message):
    model, ids, stats = calibrated
    kwargs = {k: (ids if v is True else v) for k, v in kwargs.items()}
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(InvalidArgumentError, match=message):
        lg.prune_model(model, stats, "pagerank", 0.3, **kwargs)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
