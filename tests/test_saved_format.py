"""The saved format of pruned models (models/saved_format.py), the loader's checks, and saving."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _tiny import tiny_gpt2, tiny_llama

import llmrank_graph
from llmrank_graph.errors import FileFormatError, LLMRankGraphError, MissingInputError
from llmrank_graph.models.loading import load_model, load_pruned
from llmrank_graph.models.saved_format import (
    FORMAT_VERSION,
    MASK_FILE,
    PRUNED_CONFIG_KEY,
    TOKENIZER_FILES,
    PrunedEntry,
    disk_config,
    has_tokenizer,
    is_pruned,
    nonuniform_hint,
    read_config,
)
from llmrank_graph.pruning.masks import NeuronMask
from llmrank_graph.pruning.surgery import apply_mask, intermediate_sizes, save_pruned

PACKAGE = Path(llmrank_graph.__file__).parent


def _entry_config(**entry):
    base = {"format": 1, "version": "0.1.0", "architecture": "llama", "intermediate_attr": "intermediate_size",
            "intermediate_sizes": [8, 6, 12], "original_intermediate_size": 12}
    base.update(entry)
    return {"model_type": "llama", PRUNED_CONFIG_KEY: base}


def _pruned(tmp_path, model=None):
    model = model or tiny_llama()
    keep = {l: torch.arange(12) % (l + 2) != 0 for l in range(3)}  # non-uniform sizes
    apply_mask(model, NeuronMask(keep))
    return model, save_pruned(model, None, tmp_path / "m")


# ----------------------------------------------------------------------------- the entry
def test_entry_round_trip():
    entry = PrunedEntry.from_config(_entry_config(), "c.json")
    assert entry.intermediate_sizes == (8, 6, 12) and entry.original_intermediate_size == 12
    assert not entry.uniform and entry.format == FORMAT_VERSION
    assert PrunedEntry.from_config({PRUNED_CONFIG_KEY: entry.to_dict()}) == entry
    # older hand-written entries: only the sizes; the original size defaults to the largest
    minimal = PrunedEntry.from_config({PRUNED_CONFIG_KEY: {"intermediate_sizes": [4, 4]}})
    assert minimal.original_intermediate_size == 4 and minimal.uniform


@pytest.mark.parametrize("field, value, message", [
    ("intermediate_sizes", "x", "'llmrank_graph.intermediate_sizes' must be a non-empty list of positive ints"),
    ("intermediate_sizes", [], "'llmrank_graph.intermediate_sizes' must be"),
    ("intermediate_sizes", [4, 0], "'llmrank_graph.intermediate_sizes' must be"),
    ("intermediate_sizes", [4, True], "'llmrank_graph.intermediate_sizes' must be"),
    ("original_intermediate_size", "12", r"'llmrank_graph.original_intermediate_size' must be an int >= the largest "
                                         r"layer size \(12\); got '12'"),
    ("original_intermediate_size", 11, "'llmrank_graph.original_intermediate_size' must be an int >= .*got 11"),
    ("original_intermediate_size", True, "'llmrank_graph.original_intermediate_size'"),
    ("format", "1", "'llmrank_graph.format' must be a positive int"),
    ("architecture", 3, "'llmrank_graph.architecture' must be a str"),
])
def test_bad_entry_fields_name_the_file_and_the_field(field, value, message):
    with pytest.raises(FileFormatError, match=r"^'/x/config.json' has no valid 'llmrank_graph' entry: .*" + message):
        PrunedEntry.from_config(_entry_config(**{field: value}), "/x/config.json")


def test_missing_entry_and_newer_format():
    with pytest.raises(FileFormatError, match="'c.json' has no valid 'llmrank_graph' entry: it must be an object"):
        PrunedEntry.from_config({"model_type": "llama"}, "c.json")
    with pytest.raises(FileFormatError, match="written by a newer llmrank_graph.*upgrade"):
        PrunedEntry.from_config(_entry_config(format=FORMAT_VERSION + 1), "c.json")


def test_disk_config_and_hint():
    entry = PrunedEntry.from_config(_entry_config())
    out = disk_config({"model_type": "llama", "intermediate_size": 12}, entry, "intermediate_size")
    assert out["intermediate_size"] == nonuniform_hint([8, 6, 12])
    assert "load this directory with llmrank_graph.load_model(dir)" in out["intermediate_size"]
    assert out[PRUNED_CONFIG_KEY] == entry.to_dict() and is_pruned(out)
    uniform = PrunedEntry.from_config(_entry_config(intermediate_sizes=[6, 6, 6]))
    assert disk_config({}, uniform, "n_inner")["n_inner"] == 6
    assert not is_pruned({"model_type": "llama"})


def test_read_config_names_the_file(tmp_path):
    f = tmp_path / "config.json"
    f.write_bytes(b"\xff\xfe{")
    with pytest.raises(FileFormatError, match=r"config.json' is not UTF-8 text \(byte 0\)"):
        read_config(f)
    f.write_text('{"model_type": "llama",')
    with pytest.raises(FileFormatError, match="config.json' is not valid JSON"):
        read_config(f)
    f.write_text("[1, 2]")
    with pytest.raises(FileFormatError, match="config.json' must hold a JSON object; got list"):
        read_config(f)


def test_tokenizer_files(tmp_path):
    assert not has_tokenizer(tmp_path)
    (tmp_path / TOKENIZER_FILES[0]).write_text("{}")
    assert has_tokenizer(tmp_path)


# ----------------------------------------------------------------------------- loading
def test_load_pruned_is_the_loaders(tmp_path):
    import llmrank_graph.pruning.surgery as pruning

    assert pruning.load_pruned is load_pruned and llmrank_graph.load_pruned is load_pruned
    model, out = _pruned(tmp_path)
    loaded, tok = load_pruned(out)
    assert tok is None and intermediate_sizes(loaded) == intermediate_sizes(model)
    ids = torch.randint(0, 64, (1, 7))
    torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)


def test_bad_original_size_on_disk_names_file_and_field(tmp_path):
    _, out = _pruned(tmp_path)
    cfg = json.loads((out / "config.json").read_text())
    cfg[PRUNED_CONFIG_KEY]["original_intermediate_size"] = "big"
    (out / "config.json").write_text(json.dumps(cfg))
    bad_original = r"config.json' has no valid .* 'llmrank_graph.original_intermediate_size'"
    with pytest.raises(FileFormatError, match=bad_original):
        load_model(out)


def test_broken_config_json_names_the_file(tmp_path):
    _, out = _pruned(tmp_path)
    (out / "config.json").write_text("{not json")
    with pytest.raises(FileFormatError, match="config.json' is not valid JSON"):
        load_model(out)


@pytest.mark.parametrize("pruned", [True, False])
def test_truncated_weights_name_the_file(tmp_path, pruned):
    if pruned:
        _, out = _pruned(tmp_path)
    else:
        out = tmp_path / "plain"
        tiny_llama().save_pretrained(out)
    weights = next(out.glob("*.safetensors"))
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(FileFormatError, match=rf"{weights.name}' is not a readable safetensors file"):
        load_model(out)


def test_pickled_weights_are_refused_not_unpickled(tmp_path):
    model = tiny_gpt2()
    model.config.save_pretrained(tmp_path)
    # Not a pickle at all: if the loader tried to unpickle it, the error would differ.
    (tmp_path / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(FileFormatError, match="pytorch_model.bin.*never unpickles"):
        load_model(tmp_path)
    (tmp_path / "pytorch_model.bin").unlink()
    with pytest.raises(MissingInputError, match="holds no .safetensors weights"):
        load_model(tmp_path)


def _edit_weights(directory, edit):
    from safetensors.torch import load_file, save_file

    state = load_file(directory / "model.safetensors")
    edit(state)
    save_file(state, directory / "model.safetensors", metadata={"format": "pt"})


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_the_saved_per_layer_sizes_are_the_expected_shapes(tmp_path, family):
    # GPT-2's Conv1D keeps its MLP transposed (in x out); its saved sizes are checked in that layout.
    model = tiny_llama() if family == "llama" else tiny_gpt2(layers=3)
    m = intermediate_sizes(model)[0]
    keep = {l: torch.arange(m) % (l + 2) != 0 for l in range(3)}
    apply_mask(model, NeuronMask(keep))
    out = save_pruned(model, None, tmp_path / "m")
    sizes = intermediate_sizes(model)
    assert len(set(sizes)) == 3 and intermediate_sizes(load_model(out)[0]) == sizes

    cfg = json.loads((out / "config.json").read_text())
    cfg[PRUNED_CONFIG_KEY]["intermediate_sizes"][1] -= 1
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(FileFormatError, match=rf"\(the \w+ \w+ of layer 1\), but .*'llmrank_graph.intermediate_sizes'"
                                              rf"\[1\]={sizes[1] - 1}\) makes it"):
        load_model(out)


@pytest.mark.parametrize("damage, message", [
    ("transposed-down", r"'model.layers.0.mlp.down_proj.weight' has shape \((\d+), 8\) .*makes it \(8, \1\); it is "
                        "transposed"),
    ("missing-up", "lack 'model.layers.2.mlp.up_proj.weight' .*never fills a missing tensor with random values"),
    ("int8-gate", "'model.layers.0.mlp.gate_proj.weight' is stored as I8"),
])
def test_a_damaged_pruned_model_is_refused_before_it_is_built(tmp_path, monkeypatch, damage, message):
    import llmrank_graph.models.loading as loading

    _, out = _pruned(tmp_path)
    if damage == "transposed-down":
        key = "model.layers.0.mlp.down_proj.weight"  # (8, 6): layer 0 keeps 6 of 12 neurons
        _edit_weights(out, lambda t: t.__setitem__(key, t[key].t().contiguous()))
    elif damage == "missing-up":
        _edit_weights(out, lambda t: t.pop("model.layers.2.mlp.up_proj.weight"))
    else:
        key = "model.layers.0.mlp.gate_proj.weight"
        _edit_weights(out, lambda t: t.__setitem__(key, t[key].to(torch.int8)))
    monkeypatch.setattr(loading, "_build_pruned", lambda *a: pytest.fail("a model was built"))
    for load in (load_model, load_pruned):
        with pytest.raises(FileFormatError, match=message):
            load(out)


# ----------------------------------------------------------------------------- saving
def test_save_pruned_writes_the_mask_inside(tmp_path):
    model = tiny_llama()
    mask = NeuronMask({l: torch.arange(12) % 3 != 0 for l in range(3)}, meta={"method": "test"})
    apply_mask(model, mask)
    out = save_pruned(model, None, tmp_path / "m", mask=mask)
    assert NeuronMask.load(out / MASK_FILE) == mask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    assert load_model(out)[0] is not None  # the mask beside the weights does not confuse the loader


def test_save_pruned_does_not_replace_a_directory_that_appears(tmp_path, monkeypatch):
    model = tiny_llama()
    target = tmp_path / "m"
    real = type(model).save_pretrained

    def racing_save(self, directory, *args, **kwargs):
        real(self, directory, *args, **kwargs)
        target.mkdir()  # another process saved there meanwhile
        (target / "theirs.txt").write_text("theirs")

    monkeypatch.setattr(type(model), "save_pretrained", racing_save)
    with pytest.raises(FileExistsError, match="created while this write was in progress") as err:
        save_pruned(model, None, target)
    assert isinstance(err.value, LLMRankGraphError)
    assert sorted(p.name for p in target.iterdir()) == ["theirs.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_save_pruned_argument_types(tmp_path):
    model = tiny_llama()
    with pytest.raises(TypeError, match="`directory` must be a str or a path"):
        save_pruned(model, None, 3)
    with pytest.raises(TypeError, match="`overwrite` must be a bool"):
        save_pruned(model, None, tmp_path / "m", overwrite="yes")
    with pytest.raises(TypeError, match="`mask` must be a NeuronMask or None"):
        save_pruned(model, None, tmp_path / "m", mask={0: [True]})
    assert list(tmp_path.iterdir()) == []


def test_names_moved_down_a_stage_are_still_found_where_they_were():
    from llmrank_graph import errors
    from llmrank_graph.graph import meta, storage
    from llmrank_graph.graph import mlpgraph as graph
    from llmrank_graph.pruning import core as _prune_core
    from llmrank_graph.pruning import surgery as pruning

    assert graph.GraphFormatError is errors.GraphFormatError is llmrank_graph.GraphFormatError
    assert issubclass(graph.GraphFormatError, errors.FileFormatError) and "GraphFormatError" in graph.__all__
    for name in ("KINDS", "NODE_COLUMNS", "EDGE_COLUMNS"):
        assert getattr(storage, name) is getattr(meta, name), name
    assert graph.KINDS is meta.KINDS
    assert pruning.HOWS is _prune_core.HOWS and pruning.PruneResult is _prune_core.PruneResult
    assert llmrank_graph.PruneResult is pruning.PruneResult and llmrank_graph.read_graph is graph.read_graph
