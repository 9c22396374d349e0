"""apply_mask (remove / zero), save_pruned / load_pruned round trips, and prune_model."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import torch
from _tiny import tiny_gpt2, tiny_llama

from llmrank_graph.data.calibration import ActivationStats
from llmrank_graph.models.architectures import mlp_layers
from llmrank_graph.pruning.masks import NeuronMask, allocate
from llmrank_graph.pruning.surgery import (
    PRUNED_CONFIG_KEY,
    PruneResult,
    apply_mask,
    intermediate_sizes,
    load_pruned,
    prune_model,
    save_pruned,
)
from llmrank_graph.scoring.registry import NeuronScores


# ----------------------------------------------------------------------------- fixtures
def _llama(mlp_bias=False):
    return tiny_llama(seed=0, layers=3, d=16, m=24, vocab=64, mlp_bias=mlp_bias)


def _gpt2():
    return tiny_gpt2(seed=0, layers=2, d=16, vocab=64, n_inner=20)


def _opt():
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(0)
    config = OPTConfig(vocab_size=64, hidden_size=16, ffn_dim=24, num_hidden_layers=2, num_attention_heads=2,
                       max_position_embeddings=64, word_embed_proj_dim=16)
    model = OPTForCausalLM(config).eval()
    with torch.no_grad():  # random non-zero biases, so that slicing them is tested
        for mlp in mlp_layers(model):
            mlp.up.bias.normal_()
            mlp.down.bias.normal_()
    return model


BUILDERS = {"llama": _llama, "llama-bias": lambda: _llama(mlp_bias=True), "gpt2": _gpt2, "opt": _opt}


@pytest.fixture(params=list(BUILDERS))
def model(request):
    return BUILDERS[request.param]()


def _tokens(seed=1):
    return torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(seed))


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def _nonuniform_mask(model, seed=0) -> NeuronMask:
    g = torch.Generator().manual_seed(seed)
    keep = {}
    for mlp in mlp_layers(model):
        m = mlp.intermediate_size
        k = torch.ones(m, dtype=torch.bool)
        k[torch.randperm(m, generator=g)[: 3 + 2 * mlp.layer]] = False
        keep[mlp.layer] = k
    return NeuronMask(keep)


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(63)}
    vocab["[UNK]"] = 63
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


# ----------------------------------------------------------------------------- apply_mask
def test_remove_and_zero_give_the_same_logits(model):
    ids = _tokens()
    dense = _logits(model, ids)
    mask = _nonuniform_mask(model)
    zeroed = apply_mask(copy.deepcopy(model), mask, how="zero")
    removed = apply_mask(copy.deepcopy(model), mask, how="remove")
    a, b = _logits(zeroed, ids), _logits(removed, ids)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(a, dense, atol=1e-4)  # pruning did something
    assert intermediate_sizes(removed) == mask.sizes()
    assert intermediate_sizes(zeroed) == [k.numel() for k in mask.intermediate.values()]


def test_remove_keeps_exactly_the_masked_rows(model):
    mask = _nonuniform_mask(model)
    before = {m.layer: {w: m.weight(w).detach().clone() for w in ("up", "down")} for m in mlp_layers(model)}
    biases = {m.layer: m.up.bias.detach().clone() for m in mlp_layers(model) if m.up.bias is not None}
    apply_mask(model, mask, how="remove")
    for mlp in mlp_layers(model):
        idx = mask.kept_indices(mlp.layer)
        assert torch.equal(mlp.weight("up"), before[mlp.layer]["up"][idx])
        assert torch.equal(mlp.weight("down"), before[mlp.layer]["down"][:, idx])
        if mlp.layer in biases:
            assert torch.equal(mlp.up.bias, biases[mlp.layer][idx])
        if mlp.conv1d:
            assert (mlp.up.nf, mlp.down.nx) == (len(idx), len(idx))
        else:
            assert (mlp.up.out_features, mlp.down.in_features) == (len(idx), len(idx))
        assert mlp.up.weight.dtype == torch.float32 and mlp.up.weight.is_leaf


def test_remove_updates_config_uniform_and_nonuniform():
    model = _llama()
    uniform = NeuronMask({l: torch.arange(24) % 4 != 0 for l in range(3)})
    apply_mask(model, uniform)
    assert model.config.intermediate_size == 18
    assert model.model.layers[0].mlp.intermediate_size == 18
    assert getattr(model.config, PRUNED_CONFIG_KEY)["intermediate_sizes"] == [18, 18, 18]

    nonuni = _nonuniform_mask(model)
    apply_mask(model, nonuni)
    sizes = nonuni.sizes()
    assert len(set(sizes)) > 1
    meta = getattr(model.config, PRUNED_CONFIG_KEY)
    assert meta["intermediate_sizes"] == sizes
    assert meta["original_intermediate_size"] == 24
    assert model.config.intermediate_size == max(sizes)
    assert [l.mlp.intermediate_size for l in model.model.layers] == sizes


def test_gpt2_config_n_inner_updated():
    model = _gpt2()
    apply_mask(model, NeuronMask({l: torch.arange(20) >= 5 for l in range(2)}))
    assert model.config.n_inner == 15
    assert _logits(model, _tokens()).shape == (2, 9, 64)


def test_zero_paper_mode_zeroes_down_rows():
    model = _llama()
    keep = {l: torch.arange(24) % 3 != 0 for l in range(3)}
    hidden = {l: torch.arange(16) % 4 != 1 for l in range(3)}
    mask = NeuronMask(keep, hidden=hidden)
    ref = copy.deepcopy(model)
    apply_mask(model, mask, how="zero")
    for mlp, rmlp in zip(mlp_layers(model), mlp_layers(ref)):
        down = mlp.weight("down")
        assert (down[~hidden[mlp.layer]] == 0).all()
        assert (down[:, ~keep[mlp.layer]] == 0).all()
        both = hidden[mlp.layer].nonzero().flatten()
        cols = keep[mlp.layer].nonzero().flatten()
        assert torch.equal(down[both][:, cols], rmlp.weight("down")[both][:, cols])
        assert (mlp.weight("up")[~keep[mlp.layer]] == 0).all()


def test_zero_paper_mode_gpt2_conv1d():
    model = _gpt2()
    hidden = {l: torch.arange(16) % 4 != 1 for l in range(2)}
    mask = NeuronMask({l: torch.ones(20, dtype=torch.bool) for l in range(2)}, hidden=hidden)
    apply_mask(model, mask, how="zero")
    for mlp in mlp_layers(model):
        assert (mlp.weight("down")[~hidden[mlp.layer]] == 0).all()
        assert (mlp.weight("down")[hidden[mlp.layer]] != 0).all()


def test_apply_mask_errors_leave_model_untouched():
    model = _llama()
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=r"`how` must be one of 'remove', 'zero'; got 'slice'"):
        apply_mask(model, _nonuniform_mask(model), how="slice")
    bad = NeuronMask({0: torch.ones(24, dtype=torch.bool), 1: torch.ones(24, dtype=torch.bool),
                      2: torch.ones(23, dtype=torch.bool)})
    with pytest.raises(ValueError, match="layer 2 .* 24 intermediate neurons in the model but 23 in the mask"):
        apply_mask(model, bad)
    hidden = NeuronMask({l: torch.arange(24) > 2 for l in range(3)},
                        hidden={l: torch.arange(16) > 0 for l in range(3)})
    with pytest.raises(ValueError, match="how='remove' cannot prune hidden channels.*use how='zero'"):
        apply_mask(model, hidden, how="remove")
    with pytest.raises(TypeError, match="NeuronMask"):
        apply_mask(model, {0: torch.ones(24, dtype=torch.bool)})
    after = model.state_dict()
    assert all(torch.equal(state[k], after[k]) for k in state)
    assert intermediate_sizes(model) == [24, 24, 24]


# ----------------------------------------------------------------------------- save / load
def test_save_load_roundtrip_nonuniform(model, tmp_path):
    from llmrank_graph.models.loading import load_model

    ids = _tokens()
    apply_mask(model, _nonuniform_mask(model), how="remove")
    sizes = intermediate_sizes(model)
    assert len(set(sizes)) > 1
    expect = _logits(model, ids)
    out = save_pruned(model, None, tmp_path / "pruned")
    assert out == tmp_path / "pruned"
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's 0700
    config = json.loads((out / "config.json").read_text())
    assert config[PRUNED_CONFIG_KEY]["intermediate_sizes"] == sizes

    loaded, tok = load_pruned(out)
    assert tok is None and not loaded.training
    assert intermediate_sizes(loaded) == sizes
    assert torch.equal(_logits(loaded, ids), expect)

    via_load_model, tok = load_model(out)
    assert tok is None
    assert intermediate_sizes(via_load_model) == sizes
    assert torch.equal(_logits(via_load_model, ids), expect)
    # a pruned model can be pruned again and saved over the old copy
    apply_mask(loaded, NeuronMask({l: torch.arange(s) > 0 for l, s in enumerate(sizes)}))
    save_pruned(loaded, None, out, overwrite=True)
    assert intermediate_sizes(load_pruned(out)[0]) == [s - 1 for s in sizes]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pruned"]


def test_save_load_with_tokenizer_and_dtype(tmp_path):
    model = _llama()
    apply_mask(model, _nonuniform_mask(model))
    tokenizer = _tokenizer()
    save_pruned(model, tokenizer, tmp_path / "m")
    loaded, tok = load_pruned(tmp_path / "m", dtype="bfloat16")
    assert tok is not None and tok("w1 w5 w7")["input_ids"] == tokenizer("w1 w5 w7")["input_ids"]
    assert loaded.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    assert intermediate_sizes(loaded) == intermediate_sizes(model)


def test_plain_from_pretrained_uniform_works(tmp_path):
    from transformers import AutoModelForCausalLM

    model = _llama()
    apply_mask(model, NeuronMask({l: torch.arange(24) % 4 != 0 for l in range(3)}))
    save_pruned(model, None, tmp_path / "u")
    assert json.loads((tmp_path / "u" / "config.json").read_text())["intermediate_size"] == 18
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "u").eval()
    assert intermediate_sizes(plain) == [18, 18, 18]
    ids = _tokens()
    assert torch.equal(_logits(plain, ids), _logits(model, ids))


@pytest.mark.parametrize("builder", ["llama", "gpt2", "opt"])
def test_plain_from_pretrained_nonuniform_fails_with_hint(builder, tmp_path):
    from transformers import AutoModelForCausalLM

    model = BUILDERS[builder]()
    apply_mask(model, _nonuniform_mask(model))
    save_pruned(model, None, tmp_path / "n")
    with pytest.raises(Exception, match=r"load this directory with llmrank_graph\.load_model\(dir\)"):
        AutoModelForCausalLM.from_pretrained(tmp_path / "n")


def test_save_refuses_existing_dir(tmp_path):
    model = _llama()
    (tmp_path / "exists").mkdir()
    (tmp_path / "exists" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="already exists; pass overwrite=True"):
        save_pruned(model, None, tmp_path / "exists")
    assert (tmp_path / "exists" / "keep.txt").read_text() == "x"
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="is not a directory"):
        save_pruned(model, None, tmp_path / "file", overwrite=True)
    # --overwrite replaces only a directory that save_pruned wrote; anything else needs force
    with pytest.raises(ValueError, match="was not written by save_pruned"):
        save_pruned(model, None, tmp_path / "exists", overwrite=True)
    assert (tmp_path / "exists" / "keep.txt").read_text() == "x"
    save_pruned(model, None, tmp_path / "exists", overwrite=True, force=True)
    assert not (tmp_path / "exists" / "keep.txt").exists()
    assert (tmp_path / "exists" / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists", "file"]


def test_interrupted_save_leaves_nothing(tmp_path, monkeypatch):
    model = _llama()
    real = type(model).save_pretrained

    def half_save(self, directory, *args, **kwargs):
        real(self, directory, *args, **kwargs)  # files written, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(type(model), "save_pretrained", half_save)
    with pytest.raises(KeyboardInterrupt):
        save_pruned(model, None, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []

    # an interrupted overwrite keeps the old directory
    monkeypatch.undo()
    save_pruned(model, None, tmp_path / "out")
    monkeypatch.setattr(type(model), "save_pretrained", half_save)
    with pytest.raises(KeyboardInterrupt):
        save_pruned(model, None, tmp_path / "out", overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert load_pruned(tmp_path / "out")[0] is not None


def test_load_pruned_errors(tmp_path):
    model = _llama()
    apply_mask(model, _nonuniform_mask(model))
    out = save_pruned(model, None, tmp_path / "m")
    config_file = out / "config.json"
    good = json.loads(config_file.read_text())

    def write(cfg):
        config_file.write_text(json.dumps(cfg))

    cfg = copy.deepcopy(good)
    cfg[PRUNED_CONFIG_KEY]["intermediate_sizes"] = good[PRUNED_CONFIG_KEY]["intermediate_sizes"][:2]
    write(cfg)
    with pytest.raises(ValueError, match="has 2 intermediate sizes but the config has 3 layers"):
        load_pruned(out)

    cfg = copy.deepcopy(good)
    sizes = list(good[PRUNED_CONFIG_KEY]["intermediate_sizes"])
    sizes[1] += 1
    cfg[PRUNED_CONFIG_KEY]["intermediate_sizes"] = sizes
    write(cfg)
    with pytest.raises(ValueError, match=r"'model\.layers\.1\.mlp\.(gate|up|down)_proj\.weight' has shape"):
        load_pruned(out)

    cfg = copy.deepcopy(good)
    cfg[PRUNED_CONFIG_KEY] = {"intermediate_sizes": "x"}
    write(cfg)
    with pytest.raises(ValueError, match="no valid 'llmrank_graph' entry"):
        load_pruned(out)

    write(good)
    for f in out.glob("*.safetensors"):
        f.unlink()
    with pytest.raises(FileNotFoundError, match="no .safetensors"):
        load_pruned(out)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_pruned(tmp_path / "nowhere")


# ----------------------------------------------------------------------------- prune_model
def _fake_scorer(calls, hidden=False):
    def score_neurons(model, stats, method, *, mode="chained", prune_hidden=False, check_input=True, **params):
        calls.append(dict(method=method, mode=mode, prune_hidden=prune_hidden, params=params))
        g = torch.Generator().manual_seed(7)
        inter = {m.layer: torch.rand(m.intermediate_size, generator=g, dtype=torch.float64)
                 for m in mlp_layers(model)}
        hid = ({m.layer: torch.rand(m.hidden_size, generator=g, dtype=torch.float64) for m in mlp_layers(model)}
               if prune_hidden else None)
        return NeuronScores(inter, hid, method, params)

    return score_neurons


def test_prune_model_pipeline_with_fake_scorer(monkeypatch):
    import llmrank_graph.scoring.registry as scoring

    calls = []
    monkeypatch.setattr(scoring, "score_neurons", _fake_scorer(calls))
    model = _llama()
    ids = _tokens()
    reference = copy.deepcopy(model)
    result = prune_model(model, None, "pagerank", amount=0.3, allocation="global", mode="isolated", alpha=0.7)
    assert isinstance(result, PruneResult) and result.model is model
    assert calls == [dict(method="pagerank", mode="isolated", prune_hidden=False, params={"alpha": 0.7})]
    assert result.masks.n_pruned() == round(0.3 * 72)
    expect = allocate(result.scores, 0.3, "global")
    assert result.masks.intermediate.keys() == expect.intermediate.keys()
    assert all(torch.equal(result.masks.intermediate[l], expect.intermediate[l]) for l in range(3))
    assert intermediate_sizes(model) == result.masks.sizes()
    torch.testing.assert_close(_logits(model, ids), _logits(apply_mask(reference, expect, "zero"), ids),
                               rtol=1e-5, atol=1e-5)


def test_prune_model_reference_rounding_and_paper_mode(monkeypatch):
    import llmrank_graph.scoring.registry as scoring

    monkeypatch.setattr(scoring, "score_neurons", _fake_scorer([]))
    # 0.31 * 72 = 22.32: the reference's ceil gives 23, "round" 22.
    ref = prune_model(_llama(), None, "wpr", amount=0.31, allocation="global")
    assert ref.masks.n_pruned() == 23 and ref.masks.meta["rounding"] == "reference"
    ours = prune_model(_llama(), None, "magnitude", amount=0.31, allocation="global")
    assert ours.masks.n_pruned() == 22 and ours.masks.meta["rounding"] == "round"

    paper = prune_model(_llama(), None, "mpr", amount=0.25, how="zero", prune_hidden=True)
    assert paper.masks.hidden is not None
    assert paper.masks.n_hidden_pruned() == 3 * round(0.25 * 16)
    for mlp in mlp_layers(paper.model):
        assert (mlp.weight("down")[~paper.masks.hidden[mlp.layer]] == 0).all()


def test_prune_model_real_scorer():
    model = _llama()
    result = prune_model(model, None, "magnitude", amount=0.25)
    assert intermediate_sizes(model) == [18, 18, 18]
    assert result.scores.method == "magnitude"
    for l, s in result.scores.intermediate.items():
        lowest = set(torch.argsort(s, stable=True)[:6].tolist())
        assert set(result.masks.pruned_indices(l).tolist()) == lowest


def test_prune_model_errors_leave_model_untouched(monkeypatch):
    import llmrank_graph.scoring.registry as scoring

    model = _llama()
    state = copy.deepcopy(model.state_dict())

    with pytest.raises(ValueError, match=r"^`amount` must be a float in \[0, 1\); got 1.0$"):
        prune_model(model, None, "magnitude", amount=1.0)
    with pytest.raises(ValueError, match=r"`allocation` must be one of 'local', 'global', 'standardized'; got 'all'"):
        prune_model(model, None, "magnitude", allocation="all")
    with pytest.raises(ValueError, match=r"`how` must be one of 'remove', 'zero'"):
        prune_model(model, None, "magnitude", how="cut")
    with pytest.raises(ValueError, match="prune_hidden=True.*how='zero'"):
        prune_model(model, None, "wpr", prune_hidden=True, how="remove")
    with pytest.raises(ValueError, match="`method` must be one of .*'pagerank'.*got 'nope'"):
        prune_model(model, None, "nope")

    # stats of a different model: names the module and both shapes
    norms = {}
    for mlp in mlp_layers(model):
        for name, mod in mlp.named_modules().items():
            out_f, in_f = mod.weight.shape
            norms[name] = (torch.ones(in_f + (1 if "down" in name else 0)), torch.ones(out_f))
    with pytest.raises(ValueError, match=r"module 'model\.layers\.0\.mlp\.down_proj' has \(in, out\) features "
                                         r"\(24, 16\) in the model but \(25, 16\) in the stats"):
        prune_model(model, ActivationStats.from_norms(norms), "activation")
    with pytest.raises(ValueError, match="`stats` do not match the model"):
        prune_model(model, ActivationStats.from_norms({"x": (torch.ones(2), torch.ones(2))}), "activation")

    # an allocation that would empty a layer fails before surgery
    monkeypatch.setattr(scoring, "score_neurons", _fake_scorer([]))
    with pytest.raises(ValueError, match="below min_keep=20"):
        prune_model(model, None, "pagerank", amount=0.3, min_keep=20)

    after = model.state_dict()
    assert all(torch.equal(state[k], after[k]) for k in state)
    assert intermediate_sizes(model) == [24, 24, 24]

    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or inf in model\.layers\.1\.mlp\.down_proj\.weight"):
        prune_model(model, None, "pagerank")
    assert intermediate_sizes(model) == [24, 24, 24]


@pytest.mark.slow  # a fresh interpreter importing transformers: ~7 s; test_io covers the mechanism fast
@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_sigterm_during_a_real_save_leaves_nothing(tmp_path):
    # A scheduler's SIGTERM in the middle of save_pruned of a small model: the temporary
    # directory is removed, as after Ctrl-C, and the process exits with 128 + 15.
    import signal
    import subprocess
    import sys
    import textwrap
    import time

    code = textwrap.dedent("""
        import sys, time
        from pathlib import Path
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM
        from llmrank_graph.pruning.surgery import save_pruned

        out, ready = Path(sys.argv[1]), Path(sys.argv[2])
        model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                                             num_attention_heads=2, num_key_value_heads=2))
        real = type(model).save_pretrained

        def slow_save(self, directory, *args, **kwargs):
            real(self, directory, *args, **kwargs)
            ready.write_text(str(directory))
            time.sleep(120)

        type(model).save_pretrained = slow_save
        save_pruned(model, None, out)
    """)
    out_dir, ready = tmp_path / "outputs", tmp_path / "ready"
    out_dir.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", code, str(out_dir / "model"), str(ready)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the save never started"
        time.sleep(0.02)
    assert any(Path(ready.read_text()).glob("*.safetensors"))  # weights were being written
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert list(out_dir.iterdir()) == []


# ----------------------------------------------------------------------------- validation once
def _count_checks(monkeypatch):
    """Count the one finite-weight scan and the statistics check, wherever the package calls them."""
    import sys

    from llmrank_graph.models import architectures

    calls = {"weight scans": 0, "stats checks": 0}
    scan, check_model = architectures.check_finite_weights, ActivationStats.check_model

    def counting_scan(*args, **kwargs):
        calls["weight scans"] += 1
        return scan(*args, **kwargs)

    def counting_check(self, model):
        calls["stats checks"] += 1
        return check_model(self, model)

    # Modules bind the function when they import it: patch every binding in the package.
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("llmrank_graph") and \
                getattr(module, "check_finite_weights", None) is scan:
            monkeypatch.setattr(module, "check_finite_weights", counting_scan)
    monkeypatch.setattr(ActivationStats, "check_model", counting_check)
    return calls


@pytest.mark.parametrize("method, options", [
    ("activation", {"compensate": "lstsq"}),
    ("pagerank", {"compensate": "lstsq", "allocation": "global"}),
    ("activation", {"compensate": "lstsq", "sequential": True}),
    ("flap", {"compensate": "bias", "allocation": "global", "how": "zero", "sequential": True}),
], ids=["activation", "pagerank", "sequential", "sequential-global"])
def test_prune_model_checks_stats_and_scans_weights_once(monkeypatch, method, options):
    from llmrank_graph.data.calibration import calibrate

    model = _llama()
    ids = torch.randint(0, 64, (4, 9), generator=torch.Generator().manual_seed(3))
    stats = calibrate(model, input_ids=ids, batch_size=2, second_moments=True)
    calls = _count_checks(monkeypatch)
    extra = {"input_ids": ids} if options.get("sequential") else {}
    result = prune_model(model, stats, method, 0.25, **options, **extra)
    assert result.masks.n_pruned() > 0
    assert calls == {"weight scans": 1, "stats checks": 1}


# ----------------------------------------------------------------------------- the model argument
def _entries_taking_a_model():
    """Entry point -> (a call with a tiny mask or input, a getter of its declared constraints)."""
    import llmrank_graph as lg
    from llmrank_graph.pruning.prune import PRUNE_CONSTRAINTS
    from llmrank_graph.pruning.surgery import APPLY_CONSTRAINTS

    mask = allocate({0: torch.arange(24.0), 1: torch.arange(24.0), 2: torch.arange(24.0)}, 0.25)
    ids = torch.zeros(1, 4, dtype=torch.long)
    return {"export_graph": (lambda model: lg.export_graph(model), lambda: lg.export_graph.parameter_constraints),
            "apply_mask": (lambda model: lg.apply_mask(model, mask), lambda: APPLY_CONSTRAINTS),
            "prune_model": (lambda model: lg.prune_model(model, None, "magnitude"), lambda: PRUNE_CONSTRAINTS),
            "score_neurons": (lambda model: lg.score_neurons(model, None, "magnitude"),
                              lambda: lg.score_neurons.parameter_constraints),
            "calibrate": (lambda model: lg.calibrate(model, input_ids=ids),
                          lambda: lg.calibrate.parameter_constraints)}


@pytest.mark.parametrize("entry", ["export_graph", "apply_mask", "prune_model", "score_neurons", "calibrate"])
def test_a_model_name_is_a_type_error_and_another_family_unsupported(entry):
    from llmrank_graph.errors import InvalidArgumentTypeError
    from llmrank_graph.models.architectures import MODEL, UnsupportedArchitectureError

    call, constraints = _entries_taking_a_model()[entry]
    assert constraints()["model"] is MODEL  # declared in its table: one constraint for every entry
    with pytest.raises(TypeError, match=r"`model` must be a torch.nn.Module \(a causal language model of a supported "
                                        r"family; load one with llmrank_graph.load_model\); got 'name'") as e:
        call("name")
    assert isinstance(e.value, InvalidArgumentTypeError)
    with pytest.raises(UnsupportedArchitectureError, match="`model` has an unsupported architecture"):
        call(torch.nn.Linear(2, 2))
    call(_llama())  # a model of a supported family goes through
