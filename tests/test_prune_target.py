"""prune_model(target='attention' | 'both') against zeroing, reloading and a numpy refit; and `prune --target`."""

import copy
import dataclasses

import numpy as np
import pytest
import torch
from _tiny import save_tiny_model, write_corpus
from transformers import CONFIG_MAPPING, AutoModelForCausalLM

import llmrank_graph as lg
from llmrank_graph.cli import main
from llmrank_graph.compensation.algebra import TOKEN_RIDGE
from llmrank_graph.errors import InvalidArgumentError
from llmrank_graph.models import architectures as arch
from llmrank_graph.models.architectures import mlp_layers
from llmrank_graph.models.attention import attention_layers, head_counts
from llmrank_graph.pruning import HeadMask

VOCAB = 64
GQA = dict(vocab_size=VOCAB, hidden_size=24, intermediate_size=16, num_hidden_layers=3, num_attention_heads=6,
           num_key_value_heads=2, head_dim=4, max_position_embeddings=64)


def _model(model_type="llama", seed=0, attn="eager", **extra):
    torch.manual_seed(seed)
    kwargs = {**GQA, **extra}
    return AutoModelForCausalLM.from_config(CONFIG_MAPPING[model_type](**kwargs), attn_implementation=attn).eval()


def _gpt2_model():
    torch.manual_seed(0)
    cfg = CONFIG_MAPPING["gpt2"](vocab_size=VOCAB, n_embd=16, n_layer=2, n_head=4, n_positions=64)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()


MODELS = {"llama-gqa": _model, "gpt2": _gpt2_model,
          "opt": lambda: _model("opt", hidden_size=16, ffn_dim=12, num_attention_heads=4, word_embed_proj_dim=16)}


def _ids(seed=1, batch=4, length=12):
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.fixture(scope="module")
def calibrated():
    out = {}
    for name, make in MODELS.items():
        model = make()
        out[name] = (model, lg.calibrate(model, input_ids=_ids(), batch_size=2, attention=True, second_moments=True))
    return out


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("compensate", ["none", "lstsq"])
@pytest.mark.parametrize("target", ["attention", "both"])
def test_remove_gives_the_logits_of_zero(calibrated, name, compensate, target):
    dense, stats = calibrated[name]
    ids = _ids(5)
    results = {}
    for how in ("remove", "zero"):
        model = copy.deepcopy(dense)
        res = lg.prune_model(model, stats, "flap", 0.4, allocation="global", how=how, target=target,
                             compensate=compensate)
        results[how] = (res, _logits(model, ids))
    removed, zeroed = results["remove"], results["zero"]
    kept, zero_kept = removed[0].head_mask.heads, zeroed[0].head_mask.heads
    assert all(torch.equal(kept[layer], zero_kept[layer]) for layer in kept)
    assert removed[0].head_mask.n_pruned() > 0
    torch.testing.assert_close(removed[1], zeroed[1], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(removed[1], _logits(dense, ids), atol=1e-4)
    assert (removed[0].masks is None) == (target == "attention")
    assert [n for n, _ in head_counts(removed[0].model)] == removed[0].head_mask.sizes()


@pytest.mark.parametrize("name", ["llama-gqa", "gpt2"])
def test_save_and_load_round_trip(calibrated, name, tmp_path):
    dense, stats = calibrated[name]
    model = copy.deepcopy(dense)
    res = lg.prune_model(model, stats, "activation", 0.5, allocation="global", target="both")
    path = lg.save_pruned(model, None, tmp_path / "pruned", mask=res.masks, head_mask=res.head_mask)
    loaded, _ = lg.load_model(path)
    ids = _ids(6)
    torch.testing.assert_close(_logits(loaded, ids), _logits(model, ids), rtol=1e-5, atol=1e-5)
    assert head_counts(loaded) == head_counts(model)
    assert HeadMask.load(path / "llmrank_graph" / "head_mask.safetensors") == res.head_mask


def _o(att):
    w = att.o.weight.detach().double().numpy()
    return w.T if att.conv1d else w


@pytest.mark.parametrize("name", ["llama-gqa", "gpt2"])
def test_o_proj_refit_is_the_numpy_ridge(calibrated, name):
    dense, stats = calibrated[name]
    model = copy.deepcopy(dense)
    ridge = 0.05
    res = lg.prune_model(model, stats, "magnitude", 0.5, target="attention", compensate="lstsq", ridge=ridge,
                         min_keep=1)
    for before, after in zip(attention_layers(dense), attention_layers(model)):
        keep = res.head_mask.heads[before.layer].numpy().repeat(before.head_dim)
        w = _o(before)
        s = stats[before.names["o"]]
        g = s.input_gram.numpy() / s.n_tokens
        gkk, grk = g[np.ix_(keep, keep)], g[np.ix_(~keep, keep)]
        lam = (ridge + TOKEN_RIDGE * keep.sum() / s.n_tokens) * np.diag(gkk).mean()
        want = w[:, keep] + w[:, ~keep] @ grk @ np.linalg.inv(gkk + lam * np.eye(keep.sum()))
        if keep.all():
            want = w
        np.testing.assert_allclose(_o(after), want, rtol=1e-4, atol=1e-6)


def test_bias_compensation_stores_flap_bias_in_o_proj(calibrated, tmp_path):
    dense, stats = calibrated["llama-gqa"]
    model = copy.deepcopy(dense)
    res = lg.prune_model(model, stats, "flap", 0.5, target="attention", compensate="bias")
    assert model.config.attention_bias is True
    for before, after in zip(attention_layers(dense), attention_layers(model)):
        keep = res.head_mask.heads[before.layer].numpy().repeat(before.head_dim)
        mean = stats[before.names["o"]].input_mean.numpy()
        np.testing.assert_allclose(after.o.bias.detach().double().numpy(), _o(before)[:, ~keep] @ mean[~keep],
                                   rtol=1e-4, atol=1e-7)
        assert not after.q.bias.any()  # zero biases where the flag adds them
    path = lg.save_pruned(model, None, tmp_path / "biased", head_mask=res.head_mask)
    loaded, _ = lg.load_model(path)
    torch.testing.assert_close(_logits(loaded, _ids()), _logits(model, _ids()), rtol=1e-5, atol=1e-5)


def test_bias_is_refused_where_o_proj_cannot_hold_one():
    model = _model("mistral")
    stats = lg.calibrate(model, input_ids=_ids(), attention=True)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(InvalidArgumentError, match="'mistral' has none there.*compensate='lstsq'"):
        lg.prune_model(model, stats, "flap", 0.5, target="attention", compensate="bias")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def _module_parameters(model):
    mlp = sum(p.numel() for m in mlp_layers(model) for mod in m.named_modules().values() for p in mod.parameters())
    att = 0
    for a in attention_layers(model):
        att += sum(p.numel() for m in {id(x): x for x in (a.q, a.k, a.v, a.qkv, a.o) if x is not None}.values()
                   for p in m.parameters())
    return mlp, att


@pytest.mark.parametrize("allocation", ["local", "global", "standardized"])
@pytest.mark.parametrize("name", list(MODELS))
def test_both_removes_the_amount_of_mlp_and_attention_parameters(calibrated, name, allocation):
    dense, stats = calibrated[name]
    model = copy.deepcopy(dense)
    amount = 0.3
    res = lg.prune_model(model, stats, "activation", amount, allocation=allocation, target="both")
    (m0, a0), (m1, a1) = _module_parameters(dense), _module_parameters(model)
    acct = res.head_mask.meta["parameters"]
    assert acct == res.masks.meta["parameters"]
    assert acct["total_parameters"] == m0 + a0
    assert (acct["mlp_removed"], acct["attention_removed"]) == (m0 - m1, a0 - a1)
    assert acct["fraction"] == pytest.approx((m0 + a0 - m1 - a1) / (m0 + a0))
    neuron = 3 * mlp_layers(dense)[0].hidden_size + 2  # the largest cost of one neuron
    slack = neuron * (len(mlp_layers(dense)) if allocation == "local" else 1)
    assert abs(acct["removed"] - amount * (m0 + a0)) <= slack
    assert res.masks.meta["target"] == "both" and res.head_mask.meta["target"] == "both"


def test_both_splits_parameters_by_name_and_refuses_unknown_ones(calibrated):
    dense, stats = calibrated["llama-gqa"]
    a = lg.prune_model(copy.deepcopy(dense), stats, "random", 0.3, allocation="global", target="both", seed=3)
    b = lg.prune_model(copy.deepcopy(dense), stats, "random", 0.3, allocation="global", target="both", seed=4)
    assert a.head_scores.params == {"seed": 3} and a.scores.params["seed"] == 3
    assert not torch.equal(a.head_scores.heads[0], b.head_scores.heads[0])
    with pytest.raises(TypeError, match="unknown parameter.*'nope'"):
        lg.prune_model(copy.deepcopy(dense), stats, "random", 0.3, target="both", nope=1)
    res = lg.prune_model(copy.deepcopy(dense), stats, "magnitude", 0.3, target="both", which="down", ord=1)
    assert res.scores.params["which"] == "down" and res.head_scores.params == {"ord": 1}


@pytest.mark.parametrize("kwargs, message", [
    (dict(target="nope"), "`target` must be one of 'mlp', 'attention', 'both'"),
    (dict(target="attention", method="wanda-sp"), "'wanda-sp' has no head scorer"),
    (dict(target="attention", sequential=True, input_ids=torch.zeros(1, 4, dtype=torch.long)),
     "`sequential=True` .* cannot prune attention heads"),
    (dict(target="both", prune_hidden=True, how="zero"), "`prune_hidden=True`.*target='both'"),
    (dict(target="attention", compensate="lstsq", stats="plain"), r"second_moments=True"),
    (dict(target="attention", method="activation", stats="plain"), r"attention=True"),
    (dict(target="attention", amount=0.99, allocation="local"), "would remove all 6 heads"),
])
def test_refusals_leave_the_model_unchanged(calibrated, kwargs, message):
    dense, stats = calibrated["llama-gqa"]
    model = copy.deepcopy(dense)
    kwargs = {"method": "flap", "amount": 0.5, **kwargs}
    if kwargs.get("stats") == "plain":
        kwargs["stats"] = lg.calibrate(model, input_ids=_ids())
    stats = kwargs.pop("stats", stats)
    with pytest.raises(InvalidArgumentError, match=message):
        lg.prune_model(model, stats, **kwargs)
    assert all(torch.equal(dense.state_dict()[k], v) for k, v in model.state_dict().items())


def test_target_mlp_is_unchanged_and_has_no_head_mask(calibrated):
    dense, stats = calibrated["llama-gqa"]
    a = lg.prune_model(copy.deepcopy(dense), stats, "wanda-sp", 0.25)
    b = lg.prune_model(copy.deepcopy(dense), stats, "wanda-sp", 0.25, target="mlp")
    assert a.head_mask is None and a.masks == b.masks
    assert head_counts(a.model) == head_counts(dense)


# ---------------------------------------------------------------------------- command line
CALIB = ["--n-samples", "2", "--seq-len", "16"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model", m=16)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("text") / "corpus.txt")


def _prune(model_dir, text_file, out, *extra):
    return main(["prune", "--model", str(model_dir), "--out", str(out), "--texts", str(text_file),
                 "--eval-texts", str(text_file), "--eval-samples", "1", *CALIB, *extra])


@pytest.mark.parametrize("target", ["attention", "both"])
def test_cli_target_prunes_saves_and_summarises(model_dir, text_file, tmp_path, capsys, target):
    out = tmp_path / target
    assert _prune(model_dir, text_file, out, "--target", target, "--method", "activation", "--amount", "0.5",
                  "--allocation", "global") == 0
    text = capsys.readouterr().out
    mask = HeadMask.load(out / "llmrank_graph" / "head_mask.safetensors")
    assert f"removed {mask.n_pruned()} of {mask.n_total()} attention heads ({mask.fraction:.1%})" in text
    assert "attention parameters" in text
    model, _ = lg.load_model(out)
    assert [n for n, _ in head_counts(model)] == mask.sizes()
    neuron_file = out / "llmrank_graph" / "neuron_mask.safetensors"
    assert neuron_file.exists() == (target == "both")
    if target == "both":
        acct = mask.meta["parameters"]
        assert f"{acct['removed']} of the {acct['total_parameters']} MLP + attention parameters" in text


def test_cli_split_measured_keeps_the_best_trial_on_the_calibration_tokens(model_dir, text_file, tmp_path, capsys):
    out = tmp_path / "split"
    assert _prune(model_dir, text_file, out, "--target", "both", "--split", "measured", "--method", "activation",
                  "--amount", "0.3", "--allocation", "global") == 0
    mask = HeadMask.load(out / "llmrank_graph" / "head_mask.safetensors")
    trials = mask.meta["split"]["trials"]
    assert mask.meta["split"]["rule"] == "measured" and trials[0]["heads_removed"] == 0
    assert mask.n_pruned() == min(trials, key=lambda t: t["perplexity"])["heads_removed"]


def test_cli_target_mlp_is_the_default(model_dir, text_file, tmp_path, capsys):
    assert _prune(model_dir, text_file, tmp_path / "mlp", "--method", "wanda-sp", "--amount", "0.25") == 0
    assert "attention heads" not in capsys.readouterr().out
    assert not (tmp_path / "mlp" / "llmrank_graph" / "head_mask.safetensors").exists()


@pytest.mark.parametrize("extra, message", [
    (["--target", "nope"], "invalid choice: 'nope'"),
    (["--target", "attention", "--method", "katz"], "`--method` 'katz' has no head scorer"),
    (["--target", "attention", "--method", "flap", "--sequential"], "`--sequential`"),
    (["--target", "attention", "--method", "flap", "--prune-hidden", "--how", "zero"], "`--prune-hidden`"),
    (["--target", "attention", "--method", "magnitude", "--param", "which=up"], "`--param` 'which'"),
    (["--target", "attention", "--method", "flap", "--amount", "0.99", "--allocation", "local"],
     "would remove all 2 heads"),
    (["--split", "measured"], "`--split measured` chooses how many heads go with --target both"),
    (["--target", "both", "--split", "nope"], "invalid choice: 'nope'"),
])
def test_cli_errors_come_before_loading(model_dir, text_file, tmp_path, capsys, monkeypatch, extra, message):
    import llmrank_graph.cli.prune as command

    def no_load(*a, **k):
        raise AssertionError("loaded the model")

    monkeypatch.setattr(command, "_load", no_load)
    assert _prune(model_dir, text_file, tmp_path / "p", *extra) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_cli_refuses_a_family_without_heads_before_loading(model_dir, text_file, tmp_path, capsys, monkeypatch):
    import llmrank_graph.cli.prune as command

    monkeypatch.setattr(command, "_load", lambda *a, **k: pytest.fail("loaded the model"))
    spec = arch.get_architecture("llama")
    monkeypatch.setitem(arch._REGISTRY, "llama", dataclasses.replace(spec, attention=None))
    assert _prune(model_dir, text_file, tmp_path / "p", "--target", "attention", "--method", "flap") == 2
    assert "no attention-head support" in capsys.readouterr().err


def test_cli_min_keep_is_each_layers_floor_of_heads_and_neurons(model_dir, text_file, tmp_path, capsys):
    # Without a floor the local allocation refuses to empty the layers (above); with one it keeps it.
    assert _prune(model_dir, text_file, tmp_path / "h", "--target", "attention", "--method", "flap", "--amount",
                  "0.99", "--allocation", "local", "--min-keep", "1") == 0
    mask = HeadMask.load(tmp_path / "h" / "llmrank_graph" / "head_mask.safetensors")
    assert min(mask.sizes()) >= 1 and mask.n_pruned() > 0
    capsys.readouterr()
    assert _prune(model_dir, text_file, tmp_path / "n", "--method", "activation", "--amount", "0.4",
                  "--allocation", "global", "--min-keep", "0.5") == 0
    neurons = lg.pruning.NeuronMask.load(tmp_path / "n" / "llmrank_graph" / "neuron_mask.safetensors")
    assert all(neurons.n_kept(layer) >= 0.5 * neurons.n_total(layer) for layer in neurons.layers)


@pytest.mark.parametrize("value, message", [("-1", "`--min-keep` must be None, an int >= 0 or a float in [0, 1)"),
                                            ("1.5", "`--min-keep` must be None, an int >= 0 or a float in [0, 1)"),
                                            ("lots", "expected an int >= 0 or a float in [0, 1)")])
def test_cli_min_keep_refuses_bad_values(model_dir, text_file, tmp_path, capsys, value, message):
    assert _prune(model_dir, text_file, tmp_path / "p", "--min-keep", value) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("extra", [["--method", "taylor"], ["--param", "output_seed=gradient"],
                                   ["--param", "residual=measured"], ["--method", "influence"]])
def test_cli_calibrates_what_the_scorer_reads(model_dir, text_file, tmp_path, capsys, extra):
    """The loss gradients (taylor, output_seed='gradient') and the residual stream (residual='measured')."""
    assert _prune(model_dir, text_file, tmp_path / "p", "--amount", "0.25", "--compensate", "none", *extra) == 0
    mask = lg.pruning.NeuronMask.load(tmp_path / "p" / "llmrank_graph" / "neuron_mask.safetensors")
    assert mask.n_pruned() > 0
