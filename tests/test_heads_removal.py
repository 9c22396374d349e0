"""Attention heads removed for real: remove against zero against a hand-made reference, the GQA rule,
the parameter cost, and the save -> load_model round trip (eager and SDPA, generate with the KV cache)."""

import copy
import dataclasses
import json

import pytest
import torch
from transformers import CONFIG_MAPPING, AutoModelForCausalLM

from llmrank_graph import load_model, save_pruned
from llmrank_graph.errors import FileFormatError, InvalidArgumentError
from llmrank_graph.models import architectures as arch
from llmrank_graph.models.architectures import UnsupportedArchitectureError
from llmrank_graph.models.attention import attention_layers, attention_spec, head_counts
from llmrank_graph.models.loading import check_model_path
from llmrank_graph.models.saved_format import HEAD_MASK_FILE, PRUNED_CONFIG_KEY, HeadEntry, PrunedEntry
from llmrank_graph.pruning import HeadMask, NeuronMask, apply_mask, intermediate_sizes, remove_heads, removed_parameters

VOCAB = 64
GQA = dict(hidden_size=24, num_attention_heads=6, num_key_value_heads=2, head_dim=4)  # 2 groups of 3 query heads
COMMON = dict(vocab_size=VOCAB, intermediate_size=12, num_hidden_layers=3, max_position_embeddings=64)
CONFIGS = {
    "llama": ("llama", dict(COMMON, **GQA)),
    "llama-bias": ("llama", dict(COMMON, **GQA, attention_bias=True)),
    "mistral": ("mistral", dict(COMMON, **GQA)),
    "qwen2": ("qwen2", dict(COMMON, **GQA)),  # q/k/v biases
    "qwen3": ("qwen3", dict(COMMON, **GQA)),  # q_norm / k_norm over head_dim
    "gemma": ("gemma", dict(COMMON, hidden_size=16, num_attention_heads=4, num_key_value_heads=1, head_dim=4)),
    "gemma2": ("gemma2", dict(COMMON, hidden_size=16, num_attention_heads=4, num_key_value_heads=2, head_dim=4,
                              attn_logit_softcapping=None)),  # SDPA refuses a softcap
    "gemma3_text": ("gemma3_text", dict(COMMON, hidden_size=16, num_attention_heads=4, num_key_value_heads=2,
                                        head_dim=4)),
    "gpt2": ("gpt2", dict(vocab_size=VOCAB, n_embd=16, n_layer=3, n_head=4, n_positions=64)),
    "opt": ("opt", dict(vocab_size=VOCAB, hidden_size=16, ffn_dim=12, num_hidden_layers=3, num_attention_heads=4,
                        word_embed_proj_dim=16, max_position_embeddings=64)),
}
FAMILIES = list(CONFIGS)
# (bias of the query rows, bias of the key + value rows) per head, in units of head_dim
BIASES = {"llama-bias": (1, 2), "qwen2": (1, 2), "gpt2": (1, 2), "opt": (1, 2)}


def _model(family, attn="eager", seed=0):
    model_type, kwargs = CONFIGS[family]
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(CONFIG_MAPPING[model_type](**kwargs), attn_implementation=attn)
    return model.eval()


def _ids(seed=1, batch=2, length=10):
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def _mask(model):
    """A valid mask that removes whole groups and heads within groups wherever the layout allows.

    Layer 0 loses its first key/value group and, where groups have more than one head, the first
    head of every other group; layer 1 loses the last head of every group (with one head per group,
    heads 0 and 2); layer 2 keeps everything (Gemma's single group: only head 1 goes in layer 0).
    """
    heads = {}
    for att in attention_layers(model):
        kv, g = att.num_key_value_heads, att.group_size
        keep = torch.ones(kv, g, dtype=torch.bool)
        if att.layer == 0 and kv > 1:
            keep[0] = False
            if g > 1:
                keep[1:, 0] = False
        elif att.layer == 0:
            keep[0, 1] = False
        elif att.layer == 1 and g > 1:
            keep[:, g - 1] = False
        elif att.layer == 1:
            keep[[0, 2], 0] = False
        heads[att.layer] = keep.flatten()
    return HeadMask(heads, meta={"test": "mask"})


def _zero_columns_by_hand(model, mask):
    """The reference: the unpruned model with the dropped heads' output columns set to zero, indexed by hand."""
    spec, att = attention_spec(model)
    layers = arch._resolve(model, spec.layers, "test")
    with torch.no_grad():
        for i, layer in enumerate(layers):
            o = arch._resolve(arch._resolve(layer, att.module, "test"), att.o, "test")
            hd = attention_layers(model)[i].head_dim
            for h in mask.pruned_indices(i).tolist():
                if att.conv1d:
                    o.weight[h * hd:(h + 1) * hd, :] = 0
                else:
                    o.weight[:, h * hd:(h + 1) * hd] = 0
    return model


def _n_params(model):
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- remove against zero and a reference
@pytest.mark.parametrize("family", FAMILIES)
def test_remove_gives_the_logits_of_zero_and_of_the_hand_made_reference(family):
    model, ids = _model(family), _ids()
    mask = _mask(model)
    dense = _logits(model, ids)
    reference = _logits(_zero_columns_by_hand(copy.deepcopy(model), mask), ids)
    zeroed = remove_heads(copy.deepcopy(model), mask, how="zero")
    removed = remove_heads(copy.deepcopy(model), mask, how="remove")
    assert not torch.allclose(reference, dense, atol=1e-3)  # the mask does change the model
    torch.testing.assert_close(_logits(zeroed, ids), reference, atol=1e-6, rtol=0)
    torch.testing.assert_close(_logits(removed, ids), reference, atol=1e-5, rtol=1e-5)
    assert head_counts(zeroed) == head_counts(model)  # zero keeps the shapes
    before = head_counts(model)
    expected = []
    for (n, kv), keep in zip(before, mask.heads.values()):
        groups = keep.view(kv, n // kv).any(1)
        expected.append((int(keep.sum()), int(groups.sum())))
    assert head_counts(removed) == expected and expected != before


@pytest.mark.parametrize("family", FAMILIES)
def test_removing_nothing_is_the_identity(family):
    model, ids = _model(family), _ids()
    pruned = remove_heads(copy.deepcopy(model), HeadMask.keep_all(model))
    state, again = model.state_dict(), pruned.state_dict()
    assert list(state) == list(again) and all(torch.equal(state[k], again[k]) for k in state)
    torch.testing.assert_close(_logits(pruned, ids), _logits(model, ids), atol=0, rtol=0)
    assert "attention" not in getattr(pruned.config, PRUNED_CONFIG_KEY)


@pytest.mark.parametrize("family", ["llama", "gemma", "gpt2"])
def test_removing_one_head_matches_the_unpruned_model_without_its_output_columns(family):
    model, ids = _model(family), _ids()
    att = attention_layers(model)[1]
    keep = torch.ones(att.num_heads, dtype=torch.bool)
    if att.group_size == 1 or att.num_key_value_heads == 1:
        keep[1] = False  # one head alone: allowed with one head per group, or one group
    else:
        keep.view(att.num_key_value_heads, -1)[:, 1] = False  # the same head of every group
    mask = HeadMask({a.layer: keep if a.layer == 1 else torch.ones(a.num_heads, dtype=torch.bool)
                     for a in attention_layers(model)})
    reference = _logits(_zero_columns_by_hand(copy.deepcopy(model), mask), ids)
    torch.testing.assert_close(_logits(remove_heads(copy.deepcopy(model), mask), ids), reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_parameter_count_drops_by_the_stated_cost(family):
    model = _model(family)
    mask = _mask(model)
    d = attention_layers(model)[0].hidden_size
    hd = attention_layers(model)[0].head_dim
    q_bias, kv_bias = BIASES.get(family, (0, 0))
    by_hand = 0
    for (n, kv), keep in zip(head_counts(model), mask.heads.values()):
        groups_removed = int((~keep.view(kv, n // kv).any(1)).sum())
        by_hand += int((~keep).sum()) * (2 * d * hd + q_bias * hd) + groups_removed * (2 * d * hd + kv_bias * hd)
    before = _n_params(model)
    assert removed_parameters(model, mask) == by_hand > 0
    remove_heads(model, mask)
    assert before - _n_params(model) == by_hand


# ----------------------------------------------------------------------------- the rule and bad masks
def test_uneven_masks_are_refused_with_the_rule_and_leave_the_model_alone():
    model = _model("llama")  # 6 query heads in 2 groups of 3
    state = copy.deepcopy(model.state_dict())
    full = torch.ones(6, dtype=torch.bool)
    uneven = HeadMask({0: full, 1: torch.tensor([True, True, True, True, False, False]), 2: full})
    with pytest.raises(InvalidArgumentError, match=r"uneven in layer 1 \(model.layers.1.self_attn.o_proj\).*"
                                                   r"keep \[3, 1\].*same number of query heads in every group"):
        remove_heads(model, uneven)
    with pytest.raises(InvalidArgumentError, match="uneven in layer 1"):
        remove_heads(model, uneven, how="zero")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    # the same count in every kept group, and a group removed whole beside it: allowed
    remove_heads(model, HeadMask({0: torch.tensor([False] * 3 + [True, True, False]), 1: full, 2: full}))
    assert head_counts(model)[0] == (2, 1)


def test_masks_that_do_not_fit_or_empty_a_layer_are_refused():
    model = _model("gemma")  # one key/value group: only query heads can go
    full = torch.ones(4, dtype=torch.bool)
    with pytest.raises(InvalidArgumentError, match=r"layer 1 .* has 4 query heads in the model but 3 in the mask"):
        remove_heads(model, HeadMask({0: full, 1: full[:3], 2: full}))
    with pytest.raises(InvalidArgumentError, match=r"it has layers \[0, 1\] but the model has 3"):
        remove_heads(model, HeadMask({0: full, 1: full}))
    with pytest.raises(InvalidArgumentError, match=r"keeps no head of layer 2"):
        HeadMask({0: full, 1: full, 2: torch.zeros(4, dtype=torch.bool)})
    att = attention_layers(model)[2]
    with pytest.raises(InvalidArgumentError, match="keeps no head of layer 2"):
        att.plan(torch.zeros(4, dtype=torch.bool))
    with pytest.raises(InvalidArgumentError, match=r"must be in \[0, 4\)"):
        att.keep_heads([0, 4])
    with pytest.raises(ValueError, match="`how` must be one of"):
        remove_heads(model, HeadMask.keep_all(model), how="drop")
    with pytest.raises(TypeError, match="`mask` must be a HeadMask"):
        remove_heads(model, NeuronMask({0: full}))


def test_a_family_without_attention_support_is_refused_by_name(monkeypatch):
    model = _model("llama")
    spec = arch.get_architecture("llama")
    monkeypatch.setitem(arch._REGISTRY, "llama", dataclasses.replace(spec, attention=None))
    with pytest.raises(UnsupportedArchitectureError, match=r"'llama' family \(llama\) has no attention-head support.*"
                                                           r"mistral \(mistral\).*gpt2 \(gpt2\).*opt \(opt\)"):
        remove_heads(model, HeadMask({0: torch.ones(6, dtype=torch.bool)}))


# ----------------------------------------------------------------------------- the mask as data
def test_head_mask_round_trips_through_json_and_safetensors(tmp_path):
    mask = _mask(_model("llama"))
    assert HeadMask.from_dict(json.loads(json.dumps(mask.to_dict()))) == mask
    assert HeadMask.load(mask.save(tmp_path / "m.safetensors")) == mask
    assert mask.n_pruned() == 4 + 2 and repr(mask).startswith("HeadMask(3 layers, kept 12/18")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(FileFormatError, match="not a readable HeadMask file"):
        HeadMask.load(tmp_path / "bad.safetensors")
    NeuronMask({0: torch.ones(3, dtype=torch.bool)}).save(tmp_path / "neurons.safetensors")
    with pytest.raises(FileFormatError, match="is not an llmrank_graph HeadMask file"):
        HeadMask.load(tmp_path / "neurons.safetensors")


@pytest.mark.parametrize("field, value, message", [
    ("num_heads", [4, 4], r"'llmrank_graph.attention.num_heads' must be a list of 3 positive ints"),
    ("num_key_value_heads", [2, 2, 0], r"'llmrank_graph.attention.num_key_value_heads' must be a list of 3"),
    ("head_dim", "4", r"'llmrank_graph.attention.head_dim' must be a positive int"),
    ("num_heads", [4, 5, 6], r"'llmrank_graph.attention.num_heads' must be per-layer counts reachable .*layer 1 has "
                             r"5 query heads in 2 groups"),
    ("original_num_key_value_heads", 4, r"'llmrank_graph.attention.original_num_key_value_heads' must be a divisor"),
])
def test_the_attention_entry_is_validated(field, value, message):
    data = {"num_heads": [4, 6, 6], "num_key_value_heads": [2, 2, 2], "head_dim": 4, "original_num_heads": 6,
            "original_num_key_value_heads": 2}
    entry = {"intermediate_sizes": [12, 12, 12], "attention": dict(data, **{field: value})}
    with pytest.raises(FileFormatError, match=message):
        PrunedEntry.from_config({PRUNED_CONFIG_KEY: entry}, "c.json")
    good = PrunedEntry.from_config({PRUNED_CONFIG_KEY: dict(entry, attention=data)}, "c.json")
    assert good.heads == HeadEntry((4, 6, 6), (2, 2, 2), 4, 6, 2) and good.to_dict()["attention"] == data


# ----------------------------------------------------------------------------- save -> load_model
def _generate(model, ids, **kwargs):
    with torch.no_grad():
        return model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0, **kwargs)


@pytest.mark.parametrize("family, attn", [(f, a) for f in FAMILIES for a in ("eager", "sdpa")
                                          if (f, a) != ("gemma2", "sdpa")])  # transformers has no SDPA Gemma2
def test_save_and_load_model_round_trip(tmp_path, family, attn):
    model, ids = _model(family, attn), _ids()
    mask = _mask(model)
    remove_heads(model, mask)
    path = save_pruned(model, None, tmp_path / "pruned", head_mask=mask)
    config = json.loads((path / "config.json").read_text())
    assert config["head_dim"] == attention_layers(model)[0].head_dim
    assert config[PRUNED_CONFIG_KEY]["attention"]["num_heads"] == [n for n, _ in head_counts(model)]
    assert HeadMask.load(path / HEAD_MASK_FILE) == mask
    assert check_model_path(path).kind == "pruned"

    loaded, tokenizer = load_model(path)
    loaded.set_attn_implementation(attn)
    assert tokenizer is None and head_counts(loaded) == head_counts(model)
    torch.testing.assert_close(_logits(loaded, ids), _logits(model, ids), atol=1e-5, rtol=1e-5)
    prompt = ids[:1, :5]
    tokens = _generate(model, prompt)
    assert torch.equal(_generate(loaded, prompt), tokens)  # with the KV cache (the default)
    assert torch.equal(_generate(model, prompt, use_cache=False), tokens)  # and the cache agrees with no cache
    assert getattr(loaded.config, PRUNED_CONFIG_KEY)["attention"] == config[PRUNED_CONFIG_KEY]["attention"]


@pytest.mark.parametrize("family", ["llama", "gpt2", "opt", "gemma"])
def test_plain_transformers_refuses_per_layer_heads_and_points_to_load_model(tmp_path, family):
    model = _model(family)
    path = save_pruned(remove_heads(model, _mask(model)), None, tmp_path / "pruned")
    with pytest.raises(Exception, match=r"per-layer attention heads \[.*\].*llmrank_graph.load_model\(dir\)"):
        AutoModelForCausalLM.from_pretrained(path)


def test_uniform_heads_load_with_plain_transformers_where_the_config_can_say_so(tmp_path):
    model, ids = _model("llama"), _ids()
    keep = torch.tensor([True, True, False] * 2)  # 4 heads in 2 groups in every layer: hidden 24 % 4 == 0
    remove_heads(model, HeadMask({i: keep for i in range(3)}))
    path = save_pruned(model, None, tmp_path / "pruned")
    config = json.loads((path / "config.json").read_text())
    assert (config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]) == (4, 2, 4)
    plain = AutoModelForCausalLM.from_pretrained(path).eval()
    torch.testing.assert_close(_logits(plain, ids), _logits(model, ids), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(_logits(load_model(path)[0], ids), _logits(model, ids), atol=1e-5, rtol=1e-5)
    # GPT-2 derives head_dim from n_embd // n_head: even uniform counts need the project's loader
    gpt2 = _model("gpt2")
    remove_heads(gpt2, HeadMask({i: torch.tensor([True, False, True, True]) for i in range(3)}))
    config = json.loads((save_pruned(gpt2, None, tmp_path / "gpt2") / "config.json").read_text())
    assert "llmrank_graph.load_model(dir)" in config["n_head"] and config["head_dim"] == 4


@pytest.mark.parametrize("heads_first", [True, False])
def test_heads_and_mlp_neurons_pruned_together_round_trip(tmp_path, heads_first):
    model, ids = _model("qwen2"), _ids()
    neurons = NeuronMask({l: torch.arange(12) % (l + 2) != 0 for l in range(3)})
    steps = [lambda: remove_heads(model, _mask(model)), lambda: apply_mask(model, neurons)]
    for step in steps if heads_first else steps[::-1]:
        step()
    entry = getattr(model.config, PRUNED_CONFIG_KEY)
    assert entry["attention"]["original_num_heads"] == 6 and entry["intermediate_sizes"] == neurons.sizes()
    loaded, _ = load_model(save_pruned(model, None, tmp_path / "pruned"))
    assert intermediate_sizes(loaded) == neurons.sizes() and head_counts(loaded) == head_counts(model)
    torch.testing.assert_close(_logits(loaded, ids), _logits(model, ids), atol=1e-5, rtol=1e-5)


def test_heads_pruned_twice_keep_the_original_counts(tmp_path):
    model, ids = _model("opt"), _ids()
    remove_heads(model, _mask(model))
    remove_heads(model, HeadMask({a.layer: torch.arange(a.num_heads) != 0 for a in attention_layers(model)}))
    assert head_counts(model) == [(2, 2), (1, 1), (3, 3)]
    entry = getattr(model.config, PRUNED_CONFIG_KEY)["attention"]
    assert (entry["original_num_heads"], entry["original_num_key_value_heads"]) == (4, 4)
    loaded, _ = load_model(save_pruned(model, None, tmp_path / "pruned"))
    torch.testing.assert_close(_logits(loaded, ids), _logits(model, ids), atol=1e-5, rtol=1e-5)


def test_weights_that_contradict_the_saved_heads_are_refused_before_loading(tmp_path):
    from safetensors.torch import load_file, save_file

    model = _model("llama")
    path = save_pruned(remove_heads(model, _mask(model)), None, tmp_path / "pruned")
    state = load_file(path / "model.safetensors")
    state["model.layers.1.self_attn.q_proj.weight"] = torch.zeros(24, 24)  # the 6 heads it had before pruning
    save_file(state, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(FileFormatError, match=r"'model.layers.1.self_attn.q_proj.weight' has shape \(24, 24\) .* "
                                              r"makes it \(16, 24\)"):
        check_model_path(path)
