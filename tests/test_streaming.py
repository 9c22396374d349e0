"""Graphs read lazily from safetensors shards equal the ones exported from the built model."""

from __future__ import annotations

import json

import pytest
import torch
from numpy.testing import assert_allclose
from safetensors.torch import save_file

from llmrank_graph import UnsupportedArchitectureError, export_graph
from llmrank_graph import centrality as C
from llmrank_graph.graph.streaming import SafetensorsBlock, export_graph_from_safetensors, safetensors_index


def save_sharded(model, path, per_file: int = 7):
    """Write ``model`` as several safetensors shards plus the Hugging Face index file."""
    path.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(path)
    sd = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    names = sorted(sd)
    weight_map = {}
    for i in range(0, len(names), per_file):
        fname = f"model-{i // per_file:05d}.safetensors"
        save_file({k: sd[k] for k in names[i:i + per_file]}, str(path / fname))
        weight_map.update({k: fname for k in names[i:i + per_file]})
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return path


@pytest.fixture
def llama_dir(tiny_llama, tmp_path):
    return save_sharded(tiny_llama, tmp_path / "llama")


@pytest.mark.parametrize("mode", ["chained", "isolated"])
@pytest.mark.parametrize("gate,residual", [("up", 0.0), ("gate", 0.0), ("sum", 0.4), ("max", 0.0)])
def test_streamed_graph_equals_exported_graph(tiny_llama, llama_dir, mode, gate, residual):
    want = export_graph(tiny_llama, mode=mode, gate=gate, residual=residual)
    got = export_graph_from_safetensors(llama_dir, mode=mode, gate=gate, residual=residual)
    assert len({str(f) for f, *_ in [e for b in got.blocks if isinstance(b, SafetensorsBlock) for e in b.entries]}) > 1
    assert [(p.name, p.offset, p.size) for p in got.partitions] == [(p.name, p.offset, p.size) for p in want.partitions]
    assert got.meta["intermediate_sizes"] == want.meta["intermediate_sizes"]
    assert got.edges.equals(want.edges)
    for direction in ("forward", "reverse"):
        streamed = C.pagerank(got, backend="sweep", direction=direction, device="cpu").scores
        assert_allclose(streamed, C.pagerank(want, backend="sweep", direction=direction, device="cpu").scores,
                        rtol=1e-12)
        # the edge list stores float32 weights (|up| + |gate| rounds), hence 1e-6 against scipy
        assert_allclose(streamed, C.pagerank(want, backend="scipy", direction=direction, tol=1e-14).scores, rtol=1e-6)
    assert_allclose(C.katz(got, backend="sweep").scores, C.katz(want, backend="sweep").scores, rtol=1e-12)


def test_save_pretrained_single_file_and_gpt2_conv1d(tiny_llama, tiny_gpt2, tmp_path):
    tiny_llama.save_pretrained(tmp_path / "l")
    assert got_equals(export_graph_from_safetensors(tmp_path / "l"), export_graph(tiny_llama))
    tiny_gpt2.save_pretrained(tmp_path / "g")
    g = export_graph_from_safetensors(tmp_path / "g")
    assert g.meta["model_type"] == "gpt2" and got_equals(g, export_graph(tiny_gpt2))  # Conv1D is stored (in, out)


def got_equals(a, b) -> bool:
    return a.n_nodes == b.n_nodes and a.edges.equals(b.edges)


def test_bare_gpt2_names_without_transformer_prefix(tiny_gpt2, tmp_path):
    sd = {k.removeprefix("transformer."): v.detach().contiguous().clone() for k, v in tiny_gpt2.state_dict().items()
          if k.startswith("transformer.")}
    save_file(sd, str(tmp_path / "model.safetensors"))
    g = export_graph_from_safetensors(tmp_path / "model.safetensors", model_type="gpt2")
    assert got_equals(g, export_graph(tiny_gpt2))


def test_each_weight_is_read_once_per_sweep(llama_dir, monkeypatch):
    g = export_graph_from_safetensors(llama_dir, residual=0.2)
    reads = []
    orig = SafetensorsBlock.raw_weights

    def counting(self, device=None):
        reads.append((self.layer, self.role))
        return orig(self, device)

    monkeypatch.setattr(SafetensorsBlock, "raw_weights", counting)
    C.pagerank(g, backend="sweep", device="cpu")
    weight_blocks = [(b.layer, b.role) for b in g.blocks if isinstance(b, SafetensorsBlock)]
    assert sorted(reads) == sorted(weight_blocks)  # one read of every weight block, no more
    assert not any(hasattr(b, "weights") for b in g.blocks if isinstance(b, SafetensorsBlock))  # nothing kept


def test_index_lists_every_tensor(llama_dir, tiny_llama):
    idx = safetensors_index(llama_dir)
    assert set(idx) == set(tiny_llama.state_dict())


def test_errors(tmp_path, tiny_llama, llama_dir):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_graph_from_safetensors(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json; pass `model_type`"):
        export_graph_from_safetensors(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="holds no .safetensors file"):
        export_graph_from_safetensors(tmp_path / "empty", model_type="llama")
    with pytest.raises(UnsupportedArchitectureError, match="model_type='bert'"):
        export_graph_from_safetensors(llama_dir, model_type="bert")
    with pytest.raises(ValueError, match="`gate` must be one of 'up', 'gate', 'sum', 'max'; got 'min'"):
        export_graph_from_safetensors(llama_dir, gate="min")
    with pytest.raises(ValueError, match="`residual` must be a finite float >= 0; got -1"):
        export_graph_from_safetensors(llama_dir, residual=-1)
    # a missing tensor names the layer; a NaN is reported when the block is read
    sd = {k: v.detach().contiguous().clone() for k, v in tiny_llama.state_dict().items()}
    broken = tmp_path / "broken"
    broken.mkdir()
    tiny_llama.config.save_pretrained(broken)
    save_file({k: v for k, v in sd.items() if k != "model.layers.1.mlp.down_proj.weight"},
              str(broken / "model.safetensors"))
    with pytest.raises(ValueError, match=r"layer 1: tensor 'model.layers.1.mlp.down_proj.weight' is missing"):
        export_graph_from_safetensors(broken)
    sd["model.layers.2.mlp.up_proj.weight"][0, 0] = float("nan")
    save_file(sd, str(broken / "model.safetensors"))
    g = export_graph_from_safetensors(broken)
    with pytest.raises(ValueError, match=r"layer 2: tensor 'model.layers.2.mlp.up_proj.weight' .* has NaN or inf"):
        C.pagerank(g, backend="sweep", device="cpu")


@pytest.mark.gpu
def test_streamed_sweep_on_cuda(llama_dir, tiny_llama):
    g = export_graph_from_safetensors(llama_dir, residual=0.1)
    got = C.pagerank(g, backend="sweep", device="cuda").scores
    want = C.pagerank(export_graph(tiny_llama, residual=0.1), backend="scipy", tol=1e-14).scores
    assert_allclose(got, want, rtol=1e-9)
    assert isinstance(torch.cuda.max_memory_allocated(), int)
