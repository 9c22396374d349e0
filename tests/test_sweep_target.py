"""Sweeps over the target axis: MLP neurons, attention heads, or both, on a tiny grouped-query Llama.

References: the runs of MLP neurons keep the ids they had before the axis; a run of heads gives
the head mask, scores and perplexity that `prune_model` gives on the same calibration; the
parameters it says it removed are those the pruned model lacks; zeroing heads gives the
perplexity of removing them.
"""

import copy
import dataclasses
import json

import pytest
import torch
from _tiny import word_tokenizer, write_corpus
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

import llmrank_graph.experiments.runner as ex
import llmrank_graph.models.architectures as arch
from llmrank_graph import ActivationStats, load_model, prune_model
from llmrank_graph.cli import build_parser, main
from llmrank_graph.cli.sweep import grid_from_args
from llmrank_graph.data.evaluation import perplexity
from llmrank_graph.data.texts import load_texts, token_blocks
from llmrank_graph.experiments import CalibrationSetting, Grid, load_grid, perplexity_table, read_results, run_sweep
from llmrank_graph.experiments.figures import _quality_figure
from llmrank_graph.experiments.report import write_report
from llmrank_graph.models.attention import attention_layers
from llmrank_graph.pruning.heads import HeadMask
from llmrank_graph.pruning.masks import NeuronMask
from llmrank_graph.scoring.heads import head_scorers, score_heads
from llmrank_graph.scoring.registry import scorers

D, M, LAYERS, HEADS, KV = 16, 24, 3, 4, 2


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny Llama with grouped-query attention (4 query heads in 2 key/value groups) and a word tokenizer."""
    directory = tmp_path_factory.mktemp("gqa") / "model"
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=D, intermediate_size=M, num_hidden_layers=LAYERS,
                                 num_attention_heads=HEADS, num_key_value_heads=KV,
                                 max_position_embeddings=64)).save_pretrained(directory)
    word_tokenizer().save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("text") / "corpus.txt")


def small(text_file) -> dict:
    s = {"texts": str(text_file), "n_samples": 2, "seq_len": 16}
    return {"calibration": s, "evaluation": {**s, "throughput_rounds": 1}}


def target_grid(model_dir, text_file, **kw):
    base = dict(models=[str(model_dir)], methods=["activation", "magnitude"], amounts=[0.5],
                allocations=["local", "global"], compensates=["none", "lstsq"], targets=["mlp", "attention", "both"],
                save_scores=True, save_masks=True, **small(text_file))
    return Grid(**{**base, **kw})


@pytest.fixture(scope="module")
def swept(model_dir, text_file, tmp_path_factory):
    grid = target_grid(model_dir, text_file)
    out = tmp_path_factory.mktemp("sweep") / "results"
    return grid, out, run_sweep(grid, out)


def record(out, run) -> dict:
    return json.loads((out / "runs" / f"{run.stem}.json").read_text())


# ---------------------------------------------------------------------------- the grid
def test_runs_of_mlp_keep_the_ids_they_had_before_the_axis():
    s = {"texts": "corpus.txt", "n_samples": 2, "seq_len": 16}
    kw = dict(models=["model"], methods=["activation"], amounts=[0.5], compensates=["none"], calibration=s,
              evaluation={**s, "throughput_rounds": 1})
    [run] = Grid(targets=["mlp"], **kw).runs()
    assert run.params == () and run.target == "mlp" and run.calibration.attention is False
    assert run.run_id == "9d33bd185e73"  # the id a sweep gave this run before `compensates` and `targets`
    assert [r.run_id for r in Grid(**kw).runs()] == [run.run_id]
    assert "attention" not in run.to_dict()["calibration"] and "attention" not in Grid(**kw).to_dict()["calibration"]
    # the key of a calibration without attention statistics is the one it had before the field
    old = {"texts": None, "n_samples": 32, "seq_len": 512, "batch_size": 4, "second_moments": None}
    assert CalibrationSetting().key == ex._hash(old)[:10]


def test_targets_are_an_axis_of_every_method_with_one_calibration():
    grid = Grid(methods=["activation", "random"], targets=["mlp", "attention", "both"], compensates=["none"],
                params={"seed": [0, 1]}, amounts=[0.3])
    runs = grid.runs()
    assert [r.label for r in runs] == [
        "activation", "activation target=attention", "activation target=both",
        "random seed=0", "random seed=1", "random seed=0 target=attention", "random seed=1 target=attention",
        "random seed=0 target=both", "random seed=1 target=both"]
    assert [r.target for r in runs[:3]] == ["mlp", "attention", "both"]
    assert len({r.run_id for r in runs}) == len(runs)
    assert len({r.calibration for r in runs}) == 1 and runs[0].calibration.attention is True
    assert Grid(targets=["mlp"]).runs()[0].calibration.attention is False
    assert Grid.from_dict(grid.to_dict()) == grid
    # a run's identity: the same configuration read back, the same id
    assert all(ex.RunConfig.from_dict(r.to_dict()).run_id == r.run_id for r in runs)
    # the scores of heads are not those of the MLP runs of the same method
    assert len({r.scorer_id for r in runs[:3]}) == 3


def test_parameter_axes_follow_the_scorers_of_each_target():
    grid = Grid(methods=["magnitude"], targets=["mlp", "attention"], compensates=["none"],
                method_params={"magnitude": {"which": ["down", "up"]}})
    # `which` is the neuron scorer's only: the run of heads runs once
    assert [r.label for r in grid.runs()] == ["magnitude which=down", "magnitude which=up",
                                              "magnitude target=attention"]
    grid = Grid(methods=["magnitude"], targets=["attention"], compensates=["none"], params={"ord": [1, 2]})
    assert [dict(r.params) for r in grid.runs()] == [{"ord": 1, "target": "attention"},
                                                      {"ord": 2, "target": "attention"}]


def _without_head_scorer() -> str:
    return next(m for m in scorers() if m not in head_scorers())


@pytest.mark.parametrize("kw, match", [
    ({"targets": ["heads"]}, r"`targets` must be one of 'mlp', 'attention', 'both'; got 'heads'"),
    ({"targets": ["mlp", "both"], "methods": ["activation", None]}, r"have no head scorer; heads can be scored by "
                                                                    r"'magnitude', 'activation'"),
    ({"params": {"target": ["attention"]}}, r"must not set 'target': it is an axis of the grid \(use targets\)"),
    ({"targets": ["attention"], "methods": ["activation"], "params": {"sequential": [True]}},
     r"`sequential=True` prunes MLP neurons layer by layer and cannot prune attention heads"),
    ({"targets": ["both"], "methods": ["activation"], "params": {"prune_hidden": [True]}, "hows": ["zero"]},
     r"`prune_hidden=True` .* cannot be combined with target='both'"),
    ({"targets": ["attention"], "methods": ["magnitude"], "method_params": {"magnitude": {"which": ["up"]}}},
     r"method 'magnitude' under the target\(s\) 'attention' has no parameter\(s\) 'which'; its parameters are "
     r"'ord'"),
    ({"targets": ["attention"], "methods": ["magnitude"], "params": {"ord": [3]}}, r"`ord` must be one of 1, 2"),
    ({"targets": ["attention"], "methods": ["activation"], "calibration": {"attention": False}},
     r"calibration.attention must not be false"),
])
def test_bad_grids_of_heads_are_refused(kw, match):
    if kw.get("methods") and None in kw["methods"]:
        kw = {**kw, "methods": [m or _without_head_scorer() for m in kw["methods"]]}
    with pytest.raises((ValueError, TypeError), match=match):
        Grid(**kw)


# ---------------------------------------------------------------------------- the sweep
def test_sweep_of_targets_completes_with_the_attention_statistics(swept, model_dir):
    grid, out, summary = swept
    assert summary.failed == [] and len(summary.computed) == len(grid.runs()) == 24
    [cal] = (out / "calibration").glob("*.safetensors")
    model, _ = load_model(model_dir)
    ActivationStats.load(cal).check_attention(attention_layers(model), means=True, second_moments=True)
    df = read_results(out)
    assert sorted(df["target"].unique()) == ["attention", "both", "mlp"]
    mlp = df[df["target"] == "mlp"]
    assert mlp["heads_total"].isna().all() and mlp["fraction_pruned"].notna().all()
    att = df[df["target"] == "attention"]
    assert att["fraction_pruned"].isna().all() and att["neurons_pruned"].isna().all()
    assert (att["fraction_heads_pruned"] == att["heads_pruned"] / att["heads_total"]).all()
    assert (att["heads_total"] == LAYERS * HEADS).all()


def test_parameters_removed_are_those_the_pruned_model_lacks(swept):
    grid, out, _ = swept
    df = read_results(out)
    removed = df["params_total_dense"] - df["params_total_pruned"]  # counted on the models (how='remove')
    att, both = df[df["target"] == "attention"], df[df["target"] == "both"]
    assert (removed[att.index] == att["params_attention_removed"]).all()
    assert (removed[both.index] == both["params_mlp_attention_removed"]).all()
    assert (both["fraction_mlp_attention_pruned"]
            == both["params_mlp_attention_removed"] / both["params_mlp_attention_total"]).all()
    # the MLP + attention parameters: every MLP Linear and attention projection (no biases in Llama)
    per_layer = 3 * D * M + 2 * D * D + 2 * D * (D // HEADS) * KV
    assert (both["params_mlp_attention_total"] == LAYERS * per_layer).all()
    for run in grid.runs():
        if run.target != "mlp":
            costs = record(out, run)["heads"]["head_cost"]
            assert costs == {"query_head": [2 * D * (D // HEADS)] * LAYERS, "kv_group": [2 * D * (D // HEADS)] * LAYERS}


@pytest.mark.parametrize("target", ["attention", "both"])
def test_a_run_of_heads_is_what_prune_model_gives(swept, model_dir, text_file, target):
    grid, out, _ = swept
    run = next(r for r in grid.runs() if r.target == target and r.method == "activation"
               and r.allocation == "global" and r.compensate == "lstsq")
    rec = record(out, run)
    model, tok = load_model(model_dir)
    [cal] = (out / "calibration").glob("*.safetensors")
    stats = ActivationStats.load(cal)
    res = prune_model(copy.deepcopy(model), stats, "activation", run.amount, "global", compensate="lstsq",
                      target=target)
    saved = HeadMask.load(out / rec["files"]["head_mask"])
    assert saved.heads.keys() == res.head_mask.heads.keys()
    assert all(torch.equal(saved.heads[l], res.head_mask.heads[l]) for l in saved.heads)
    assert saved.sizes() == rec["heads"]["layer_kept"] and rec["heads"]["fraction"] == res.head_mask.fraction
    scores = load_file(str(out / rec["files"]["scores"]))
    reference = score_heads(model, stats, "activation").heads
    assert all(torch.equal(scores[f"heads.{l}"], reference[l]) for l in reference)
    if target == "attention":
        assert rec["files"]["mask"] is None and not [k for k in scores if not k.startswith("heads.")]
        assert rec["neurons"] is None and rec["score_quantiles"] is None
    else:
        neurons = NeuronMask.load(out / rec["files"]["mask"])
        assert all(torch.equal(neurons.intermediate[l], res.masks.intermediate[l]) for l in neurons.layers)
        assert rec["heads"]["parameters"] == res.head_mask.meta["parameters"]
    ev = run.evaluation
    ids = token_blocks(tok, load_texts(str(text_file), split="evaluation"), ev.n_samples, ev.seq_len)
    assert rec["perplexity"] == pytest.approx(perplexity(res.model, input_ids=ids, batch_size=ev.batch_size),
                                              rel=1e-6)


def test_zeroed_heads_give_the_perplexity_of_removed_ones(model_dir, text_file, tmp_path):
    grid = target_grid(model_dir, text_file, methods=["activation"], targets=["attention"], hows=["remove", "zero"],
                       compensates=["none"], allocations=["local"])
    run_sweep(grid, tmp_path / "r")
    df = read_results(tmp_path / "r").set_index("how")
    assert df.loc["zero", "perplexity"] == pytest.approx(df.loc["remove", "perplexity"], rel=1e-5)
    assert df.loc["zero", "fraction_heads_pruned"] == df.loc["remove", "fraction_heads_pruned"] == 0.5
    assert df.loc["zero", "params_total_pruned"] == df.loc["zero", "params_total_dense"]
    assert df.loc["remove", "params_total_pruned"] < df.loc["remove", "params_total_dense"]


def test_report_plots_heads_against_their_own_axes(swept, tmp_path):
    _, out, _ = swept
    write_report(out, tmp_path / "rep")
    names = {p.name for p in (tmp_path / "rep").iterdir()}
    assert {"quality.png", "layers.png", "layers-heads.png", "report.html"} <= names
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "A query head holds 128 parameters" in html and "<th>heads removed</th>" in html
    df = read_results(out)
    fig = _quality_figure(df, "perplexity", "dense_perplexity", "perplexity",
                          {label: "red" for label in df["label"]}, "t")
    labels = {ax.get_title(): ax.get_xlabel() for ax in fig.axes}
    assert labels["global allocation, remove, chained"] == "intermediate neurons removed (%)"
    assert labels["global allocation, remove, chained, target attention"].startswith("attention heads removed (%")
    assert labels["global allocation, remove, chained, target both"] == "MLP + attention parameters removed (%, exact)"
    # the points of `both` sit at the exact fraction of the MLP + attention parameters removed
    both = df[(df["target"] == "both") & (df["allocation"] == "global")]
    ax = next(a for a in fig.axes if a.get_title().endswith("target both"))
    xs = sorted(x for line in ax.get_lines() if line.get_label() != "dense" for x in line.get_xdata())
    assert xs == pytest.approx(sorted(both["fraction_mlp_attention_pruned"] * 100))
    titles = [t for t, _ in perplexity_table(out)]
    assert any("target attention" in t and "fraction of the query heads asked" in t for t in titles)


# ---------------------------------------------------------------------------- files, the CLI, bad input
def test_directory_of_a_sweep_before_the_axis_resumes(model_dir, text_file, tmp_path):
    out = tmp_path / "res"
    old = target_grid(model_dir, text_file, methods=["activation"], targets=["mlp"], compensates=["none"],
                      allocations=["local"])
    run_sweep(old, out)
    stored = json.loads((out / "grid.json").read_text())
    for entry in stored["grids"]:  # as written before `targets` existed
        del entry["grid"]["targets"]
    (out / "grid.json").write_text(json.dumps(stored))
    assert run_sweep(old, out).computed == []
    new = target_grid(model_dir, text_file, methods=["activation"], compensates=["none"], allocations=["local"])
    with pytest.raises(ValueError, match=r"targets: \['mlp', 'attention', 'both'\] here, \['mlp'\] there \(its "
                                         r"grid predates `targets`\)"):
        run_sweep(new, out)
    assert len(run_sweep(new, out, extend=True).computed) == 3
    df = read_results(out).set_index("run_id")
    # recording the attention statistics does not change the MLP's: the MLP run of either grid prunes alike
    [a, b] = df[df["target"] == "mlp"]["perplexity"]
    assert a == pytest.approx(b, rel=1e-9)


def test_targets_from_toml_and_cli(model_dir, text_file, tmp_path, capsys):
    path = tmp_path / "g.toml"
    path.write_text('methods = ["activation"]\ntarget = ["attention", "both"]\n')
    assert load_grid(path).targets == ("attention", "both")
    args = build_parser().parse_args(["sweep", "--out", str(tmp_path / "x"), "--grid", str(path), "--target", "mlp"])
    assert grid_from_args(args).targets == ("mlp",)
    argv = ["sweep", "--out", str(tmp_path / "r"), "--model", str(model_dir), "--methods", "activation",
            "--target", "attention", "both", "--amounts", "0.5", "--allocations", "local", "--compensate", "none",
            "--texts", str(text_file), "--eval-texts", str(text_file), "--n-samples", "2", "--seq-len", "16",
            "--eval-samples", "2", "--throughput-rounds", "1", "--save-masks"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "x 2 target(s))" in text and "activation target=attention" in text and "2 runs: 2 computed now" in text
    assert len(list((tmp_path / "r" / "runs").glob("*.heads.safetensors"))) == 2
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sweep", "--out", "x", "--target", "heads"])


def test_a_family_without_heads_is_refused_before_any_work(model_dir, text_file, tmp_path, monkeypatch):
    loads = []
    monkeypatch.setattr(ex, "_load_model", lambda *a, **k: loads.append(a) or pytest.fail("loaded the model"))
    spec = arch.get_architecture("llama")
    monkeypatch.setitem(arch._REGISTRY, "llama", dataclasses.replace(spec, attention=None))
    grid = target_grid(model_dir, text_file, methods=["activation"], targets=["mlp", "attention"])
    with pytest.raises(arch.UnsupportedArchitectureError,
                       match=r"target\(s\) 'attention' prune attention heads of model .* no attention-head support"):
        run_sweep(grid, tmp_path / "r")
    assert loads == [] and not (tmp_path / "r").exists()
