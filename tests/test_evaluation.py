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
    assert set(c) == {"dense_tokens_per_s", "pruned_tokens_per_s", "speedup", "ratios"}
    assert len(c["ratios"]) == 1 and c["ratios"][0] > 0


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


# ---------------------------------------------------------------------------- progress of the main job's stages
@pytest.fixture
def bars(monkeypatch):
    """Every tqdm bar the library opens with ``progress=True``, drawn into a buffer, kept after it closes."""
    import io

    import tqdm.auto
    import tqdm.std

    opened = []

    class Recording(tqdm.std.tqdm):
        def __init__(self, *args, **kwargs):
            self.postfixes = []
            super().__init__(*args, **{**kwargs, "file": io.StringIO()})
            opened.append(self)

        def set_postfix_str(self, s="", refresh=True):
            self.postfixes.append(s)
            super().set_postfix_str(s, refresh)

    monkeypatch.setattr(tqdm.auto, "tqdm", Recording)  # the library imports it when it draws a bar
    return opened


def test_tokens_per_second_progress_counts_every_pass(bars):
    tokens_per_second(tiny_llama(), torch.zeros(1, 8, dtype=torch.long), repeats=2, warmup=1, progress=True)
    assert [(b.desc, b.total, b.n) for b in bars] == [("tokens/s", 3, 3)]


def test_compare_throughput_progress_counts_every_pass(bars):
    """A warm-up pass of each model, then two timed passes a round (one of each); no bar without ``progress``."""
    model, ids = tiny_llama(), torch.zeros(1, 8, dtype=torch.long)
    compare_throughput(model, model, ids, rounds=2)
    assert bars == []
    compare_throughput(model, model, ids, rounds=3, progress=True)
    assert [(b.desc, b.total, b.n) for b in bars] == [("tokens/s", 8, 8)]


def test_prune_model_progress_counts_its_steps(bars):
    """Checking, scoring, allocating and pruning (with the refit) each advance the bar, which names the running
    step; an error leaves the bar at the failed step."""
    import llmrank_graph as lg

    model = tiny_llama(m=16)
    stats = lg.calibrate(model, input_ids=torch.randint(0, 64, (2, 8)), second_moments=True)
    lg.prune_model(model, stats, "pagerank", 0.25, compensate="lstsq", progress=True)
    (bar,) = bars
    assert (bar.desc, bar.total, bar.n) == ("score + prune", 4, 4)
    assert bar.postfixes == ["checking", "scoring", "allocating", "pruning, compensate=lstsq"]
    bars.clear()
    without_moments = lg.calibrate(model, input_ids=torch.randint(0, 64, (2, 8)))
    with pytest.raises(ValueError, match="second moments"):
        lg.prune_model(model, without_moments, "pagerank", 0.25, compensate="lstsq", progress=True)
    assert [(b.n, b.postfixes) for b in bars] == [(0, ["checking"])]


def test_prune_model_sequential_progress_counts_layers(bars):
    """The sequential mode's bar counts layers; a global allocation's dense pass has its own bar."""
    import llmrank_graph as lg

    model = tiny_llama(layers=3, m=16)
    lg.prune_model(model, None, "activation", 0.25, allocation="global", sequential=True,
                   input_ids=torch.randint(0, 64, (2, 8)), progress=True)
    assert [(b.desc, b.total, b.n) for b in bars] == [("dense pass", 3, 3), ("pruning layer by layer", 3, 3)]


def test_prune_command_shows_progress_of_every_long_stage(tmp_path):
    """`llmrank-graph prune` (a process, stderr a pipe as in a log file): calibration, score + prune,
    perplexity and tokens/s each draw a bar on stderr, and stdout holds the table alone."""
    import subprocess
    import sys

    from _tiny import WORDS, save_tiny_model

    model = save_tiny_model(tmp_path / "model", m=16)
    text = tmp_path / "corpus.txt"
    text.write_text(" ".join(WORDS * 200))
    proc = subprocess.run([sys.executable, "-m", "llmrank_graph", "prune", "--model", str(model), "--texts", str(text),
                           "--eval-texts", str(text), "--n-samples", "2", "--seq-len", "16", "--eval-samples", "2",
                           "--amount", "0.25", "--out", str(tmp_path / "pruned")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for desc in ("calibrating", "score + prune", "perplexity", "tokens/s"):
        assert f"{desc}: 100%" in proc.stderr, desc
    assert "100%" not in proc.stdout
