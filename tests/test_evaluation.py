import math

import pytest
import torch
from _tiny import tiny_gpt2, tiny_llama
from torch import nn

from llmrank_graph.data.evaluation import compare_throughput, count_parameters, perplexity, tokens_per_second


def test_perplexity_matches_manual_loss():
    model = tiny_llama()
    ids = torch.randint(0, 64, (3, 10), generator=torch.Generator().manual_seed(0))
    ppl = perplexity(model, input_ids=ids, batch_size=2)
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    manual = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 64), ids[:, 1:].reshape(-1))
    assert ppl == pytest.approx(math.exp(float(manual)), rel=1e-5)


def test_perplexity_needs_tokenizer():
    with pytest.raises(ValueError, match="`tokenizer`"):
        perplexity(tiny_llama())


def test_count_parameters():
    model = tiny_llama(layers=3, d=8, m=12)
    c = count_parameters(model)
    assert c["mlp"] == 3 * 3 * 8 * 12
    assert c["total"] == sum(p.numel() for p in model.parameters())
    g = count_parameters(tiny_gpt2(layers=2, d=8))
    assert g["mlp"] == 2 * (8 * 32 + 32 + 32 * 8 + 8)


def test_throughput_reports_tokens():
    model = tiny_llama()
    ids = torch.randint(0, 64, (2, 8))
    t = tokens_per_second(model, ids, repeats=1)
    assert t.tokens == 16 and t.tokens_per_second > 0
    c = compare_throughput(model, model, ids, rounds=1)
    assert set(c) == {"dense_tokens_per_s", "pruned_tokens_per_s", "speedup"}


def test_lm_eval_adapter_calls_harness(monkeypatch):
    """The adapter wraps the model in lm-eval's HFLM and returns simple_evaluate's results."""
    import sys
    import types

    calls = {}

    class HFLM:
        def __init__(self, pretrained, tokenizer, batch_size):
            calls["hflm"] = (pretrained, tokenizer, batch_size)

    def simple_evaluate(model, tasks, num_fewshot, limit, **kw):
        calls["eval"] = (model, tasks, num_fewshot, limit)
        return {"results": {"piqa": {"acc,none": 0.5}}}

    root = types.ModuleType("lm_eval")
    root.simple_evaluate = simple_evaluate
    models = types.ModuleType("lm_eval.models")
    hf = types.ModuleType("lm_eval.models.huggingface")
    hf.HFLM = HFLM
    monkeypatch.setitem(sys.modules, "lm_eval", root)
    monkeypatch.setitem(sys.modules, "lm_eval.models", models)
    monkeypatch.setitem(sys.modules, "lm_eval.models.huggingface", hf)
    from llmrank_graph.data.evaluation import lm_eval

    model = tiny_llama()
    out = lm_eval(model, "tok", tasks=["piqa"], batch_size=2, limit=5)
    assert out == {"piqa": {"acc,none": 0.5}}
    assert calls["hflm"] == (model, "tok", 2)
    assert calls["eval"][1:] == (["piqa"], 0, 5)
    with pytest.raises(ValueError, match="`tasks`"):
        lm_eval(model, "tok", tasks=[])


def test_lm_eval_missing_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "lm_eval", None)
    from llmrank_graph.data.evaluation import lm_eval

    with pytest.raises(ImportError, match=r"llmrank-graph\[eval\]"):
        lm_eval(tiny_llama(), None, tasks=["piqa"])
