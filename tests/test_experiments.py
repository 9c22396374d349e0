"""Sweeps: a tiny grid on a tiny model, resumed, extended, interrupted and damaged; bad grids."""

import io
import json
import os
import pty
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pandas as pd
import pytest
import torch
from _tiny import save_tiny_model, write_corpus

import llmrank_graph.experiments.claims as claims
import llmrank_graph.experiments.runner as ex
from llmrank_graph.cli import main
from llmrank_graph.errors import MissingDependencyError
from llmrank_graph.experiments.runner import Grid, load_grid, read_results, run_sweep

D, M, LAYERS = 16, 24, 3


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny Llama (3 layers, d=16, m=24) with a WordLevel tokenizer, saved as a Hugging Face directory."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model", layers=LAYERS, d=D, m=M)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("text") / "corpus.txt")


def tiny_grid(model_dir, text_file, **kw):
    base = dict(models=[str(model_dir)], methods=["activation", "random", "magnitude"], amounts=[0.25, 0.5],
                allocations=["local", "global"], compensates=["none"], params={"seed": [0, 1]},
                calibration={"texts": str(text_file), "n_samples": 2, "seq_len": 16},
                evaluation={"texts": str(text_file), "n_samples": 2, "seq_len": 16, "throughput_rounds": 1},
                save_scores=True, save_masks=True)
    base.update(kw)
    if "random" not in base["methods"] and "params" not in kw:
        base["params"] = {}
    return Grid(**base)


class Counter:
    """Wraps a function and counts its calls."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *a, **k):
        self.calls += 1
        return self.fn(*a, **k)


def count_work(monkeypatch) -> dict:
    counters = {name: Counter(getattr(ex, name)) for name in
                ("_load_model", "calibrate", "prune_model", "perplexity", "compare_throughput")}
    for name, c in counters.items():
        monkeypatch.setattr(ex, name, c)
    return counters


@pytest.fixture(scope="module")
def swept(model_dir, text_file, tmp_path_factory):
    """A tiny grid run once: (grid, directory, summary)."""
    grid = tiny_grid(model_dir, text_file)
    out = tmp_path_factory.mktemp("sweep") / "results"
    return grid, out, run_sweep(grid, out)


# ---------------------------------------------------------------------------- the grid
def test_grid_expands_params_only_for_methods_that_have_them(model_dir, text_file):
    grid = tiny_grid(model_dir, text_file)
    runs = grid.runs()
    # random has `seed` (2 values); activation and magnitude do not: 4 x (2 + 1 + 1) runs
    assert len(runs) == 2 * 2 * 4
    assert len({r.run_id for r in runs}) == len(runs)
    assert {dict(r.params).get("seed") for r in runs if r.method == "random"} == {0, 1}
    assert all(r.params == () for r in runs if r.method != "random")


def test_run_id_is_stable_and_covers_settings(model_dir, text_file):
    a = tiny_grid(model_dir, text_file).runs()[0]
    b = tiny_grid(model_dir, text_file).runs()[0]
    assert a.run_id == b.run_id and ex.RunConfig.from_dict(a.to_dict()) == a
    c = tiny_grid(model_dir, text_file, calibration={"texts": str(text_file), "n_samples": 3, "seq_len": 16}).runs()[0]
    assert c.run_id != a.run_id


def test_toml_grid(tmp_path):
    f = tmp_path / "grid.toml"
    f.write_text(textwrap.dedent("""
        methods = ["pagerank", "random"]
        amounts = [0.1, 0.3]
        how = "remove"
        [params]
        seed = [0, 1, 2]
        [params.pagerank]
        alpha = [0.5, 0.85]
        [evaluation]
        n_samples = 4
        tasks = ["wikipedia_lastword"]
    """))
    grid = load_grid(f)
    assert grid.method_params == {"pagerank": {"alpha": (0.5, 0.85)}}
    assert grid.evaluation.tasks == ("wikipedia_lastword",) and grid.evaluation.n_samples == 4
    assert len(grid.runs()) == 2 * 2 + 3 * 2
    assert Grid.from_dict(grid.to_dict()) == grid


@pytest.mark.parametrize("kw, exc, match", [
    (dict(methods=["pagerank", "nope"]), ValueError, r"`methods` must be one of .*'pagerank'"),
    (dict(methods=["activation"], params={"alpha": [0.5]}), TypeError,
     r"no method of the grid .* 'alpha'.*parameters are"),
    (dict(methods=["pagerank"], method_params={"pagerank": {"nope": [1]}}), TypeError,
     r"'nope'; its parameters are .*'alpha'"),
    (dict(amounts=[0.3, 1.5]), ValueError, r"`amount` must be a float in \[0, 1\); got 1.5"),
    (dict(amounts=["0.3"]), TypeError, r"`amount` must be a float"),
    (dict(methods=["pagerank"], params={"alpha": [0.5, 2.0]}), ValueError, r"`alpha`"),
    (dict(allocations=["everywhere"]), ValueError, r"`allocations` must be one of 'local', 'global'"),
    (dict(methods=["wpr"], params={"prune_hidden": [True]}), ValueError, r"prune_hidden=True needs how='zero'"),
    (dict(methods=["wpr"], params={"prune_hidden": [True]}, hows=["zero"]), ValueError,
     r"prune_hidden=True zeroes down_proj rows, which a refit contradicts: it needs compensate 'none'"),
    (dict(params={"mode": ["isolated"]}), ValueError, r"axis of the grid \(use modes\)"),
    (dict(evaluation={"n_samples": 0}), ValueError, r"`evaluation.n_samples` must be a positive int"),
    (dict(calibration={"n_sample": 4}), ValueError, r"unknown `calibration` key\(s\) 'n_sample'"),
])
def test_bad_grids_are_refused(kw, exc, match):
    with pytest.raises(exc, match=match):
        Grid(**kw) if "calibration" not in kw else Grid.from_dict(kw)


def test_bad_toml_is_refused(tmp_path):
    f = tmp_path / "g.toml"
    f.write_text("methods = ['pagerank']\nammounts = [0.1]\n")
    with pytest.raises(ValueError, match=r"unknown grid key\(s\) 'ammounts'; allowed: .*'amounts'"):
        load_grid(f)
    f.write_text("methods = [pagerank\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_grid(f)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_grid(tmp_path / "missing.toml")


# ---------------------------------------------------------------------------- a tiny sweep
def test_tiny_sweep_writes_the_expected_files(swept):
    grid, out, summary = swept
    runs = grid.runs()
    assert summary.computed == [r.run_id for r in runs] and summary.failed == [] and summary.skipped == []
    assert (out / "grid.json").is_file() and (out / "results.csv").stat().st_size > 0
    assert (out / "results.parquet").stat().st_size > 0
    assert len(list((out / "calibration").glob("*.safetensors"))) == 1      # once per model and setting
    assert len(list((out / "dense").glob("*.json"))) == 1
    assert sorted(p.name for p in (out / "runs").glob("*.json")) == sorted(f"{r.stem}.json" for r in runs)
    assert len(list((out / "runs").glob("*.mask.safetensors"))) == len(runs)
    # one score file per scorer configuration: activation, magnitude, random seed 0 and 1
    assert len(list((out / "scores").glob("*.safetensors"))) == 4
    assert not [p for p in out.rglob(".*")]  # no temporary left behind


def test_each_run_json_holds_everything(swept):
    grid, out, _ = swept
    for run in grid.runs():
        rec = json.loads((out / "runs" / f"{run.stem}.json").read_text())
        assert rec["status"] == "complete" and rec["config"] == run.to_dict() and rec["run_id"] == run.run_id
        kept = rec["neurons"]["layer_kept"]
        assert rec["neurons"]["layer_total"] == [M] * LAYERS
        assert sum(kept) == LAYERS * M - rec["neurons"]["pruned"]
        if run.allocation == "local":
            assert kept == [round(M * (1 - run.amount))] * LAYERS
        # removing a neuron removes one row of gate and up and one column of down
        assert rec["parameters"]["dense"]["mlp"] == 3 * D * M * LAYERS
        assert rec["parameters"]["pruned"]["mlp"] == 3 * D * sum(kept)
        assert (rec["parameters"]["dense"]["total"] - rec["parameters"]["pruned"]["total"]
                == 3 * D * rec["neurons"]["pruned"])
        assert np.isfinite(rec["perplexity"]) and np.isfinite(rec["dense_perplexity"])
        tp = rec["throughput"]
        assert tp["dense_tokens_per_s"] > 0 and tp["pruned_tokens_per_s"] > 0
        assert tp["speedup"] == pytest.approx(tp["pruned_tokens_per_s"] / tp["dense_tokens_per_s"])
        assert set(rec["times"]) == {"prune", "perplexity", "tasks", "throughput", "save"}
        assert set(rec["shared_times"]) == {"load", "calibrate", "dense_evaluation"}
        env = rec["environment"]
        assert env["torch"] == torch.__version__ and {"llmrank_graph", "transformers"} <= set(env)
        assert rec["seed"] == grid.seed
        assert len(rec["score_quantiles"]["layers"]) == LAYERS
        assert (out / rec["files"]["scores"]).is_file() and (out / rec["files"]["mask"]).is_file()


def test_saved_masks_and_scores_match_the_run(swept):
    from safetensors.torch import load_file

    from llmrank_graph.pruning.masks import NeuronMask, allocate

    grid, out, _ = swept
    run = next(r for r in grid.runs() if r.allocation == "global" and r.method == "activation")
    rec = json.loads((out / "runs" / f"{run.stem}.json").read_text())
    mask = NeuronMask.load(out / rec["files"]["mask"])
    assert mask.sizes() == rec["neurons"]["layer_kept"]
    scores = load_file(str(out / rec["files"]["scores"]))
    again = allocate({l: scores[f"intermediate.{l}"] for l in range(LAYERS)}, run.amount, run.allocation)
    assert again.intermediate.keys() == mask.intermediate.keys()
    assert all(torch.equal(again.intermediate[l], mask.intermediate[l]) for l in range(LAYERS))


def test_csv_and_parquet_match_the_json_files(swept):
    grid, out, _ = swept
    df = pd.read_csv(out / "results.csv")
    pq = pd.read_parquet(out / "results.parquet")
    assert len(df) == len(pq) == len(grid.runs())
    assert list(df["run_id"]) == list(pq["run_id"])
    for path in (out / "runs").glob("*.json"):
        rec = json.loads(path.read_text())
        row = df[df["run_id"] == rec["run_id"]]
        assert len(row) == 1
        row = row.iloc[0]
        cfg = rec["config"]
        assert (row["method"], row["allocation"], row["how"], row["mode"]) == (
            cfg["method"], cfg["allocation"], cfg["how"], cfg["mode"])
        assert row["amount"] == cfg["amount"] and row["model"] == cfg["model"]
        assert row["perplexity"] == pytest.approx(rec["perplexity"], rel=1e-12)
        assert row["dense_perplexity"] == pytest.approx(rec["dense_perplexity"], rel=1e-12)
        assert row["params_mlp_pruned"] == rec["parameters"]["pruned"]["mlp"]
        assert row["params_total_dense"] == rec["parameters"]["dense"]["total"]
        assert row["neurons_pruned"] == rec["neurons"]["pruned"]
        assert row["pruned_tokens_per_s"] == pytest.approx(rec["throughput"]["pruned_tokens_per_s"], rel=1e-12)
        assert row["time.perplexity"] == pytest.approx(rec["times"]["perplexity"], rel=1e-12)
        assert json.loads(row["params"]) == cfg["params"]
        if cfg["method"] == "random":
            assert row["param.seed"] == cfg["params"]["seed"]
        prow = pq[pq["run_id"] == rec["run_id"]].iloc[0]
        assert prow["perplexity"] == row["perplexity"] and prow["params_mlp_pruned"] == row["params_mlp_pruned"]


def test_resume_recomputes_nothing(swept, monkeypatch):
    grid, out, _ = swept
    before = {p.name: p.read_bytes() for p in (out / "runs").glob("*.json")}
    counters = count_work(monkeypatch)
    summary = run_sweep(grid, out)
    assert summary.computed == [] and len(summary.skipped) == len(grid.runs())
    assert {name: c.calls for name, c in counters.items()} == dict.fromkeys(counters, 0)
    assert {p.name: p.read_bytes() for p in (out / "runs").glob("*.json")} == before


def test_damaged_result_is_named_and_redone(model_dir, text_file, tmp_path, monkeypatch, caplog):
    grid = tiny_grid(model_dir, text_file, methods=["activation"], allocations=["local"])
    out = tmp_path / "r"
    run_sweep(grid, out)
    victim = out / "runs" / f"{grid.runs()[1].stem}.json"
    victim.write_text(victim.read_text()[:50])  # truncated
    counters = count_work(monkeypatch)
    with caplog.at_level("WARNING", logger="llmrank_graph"):
        summary = run_sweep(grid, out)
    assert str(victim) in caplog.text and "damaged or truncated" in caplog.text
    assert summary.computed == [grid.runs()[1].run_id]
    assert counters["prune_model"].calls == 1 and counters["calibrate"].calls == 0  # statistics read back
    assert json.loads(victim.read_text())["status"] == "complete"


def test_interrupted_sweep_leaves_no_partial_result_and_rerun_completes(model_dir, text_file, tmp_path, monkeypatch):
    grid = tiny_grid(model_dir, text_file, methods=["activation"])
    out = tmp_path / "r"
    real = ex.compare_throughput
    calls = []

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the third run
        return real(*a, **k)

    monkeypatch.setattr(ex, "compare_throughput", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(grid, out)
    results = list((out / "runs").glob("*.json"))
    assert len(results) == 2 and all(json.loads(p.read_text())["status"] == "complete" for p in results)
    assert not [p for p in out.rglob(".*")]
    monkeypatch.setattr(ex, "compare_throughput", real)
    counters = count_work(monkeypatch)
    summary = run_sweep(grid, out)
    assert len(summary.computed) == len(grid.runs()) - 2 == counters["prune_model"].calls
    assert counters["calibrate"].calls == 0
    assert len(read_results(out)) == len(grid.runs())


KILL_SCRIPT = """
import os, signal, sys
import llmrank_graph.base.files as io
import llmrank_graph.experiments.runner as ex
from llmrank_graph.experiments.runner import Grid, run_sweep
grid = Grid.from_dict({grid!r})
writes = []
real = io._fsync
def fsync(path, directory=False):
    # kill -9 on the third run's JSON: written to its temporary, not yet renamed into place
    if not directory and "runs" in str(path) and str(path).endswith(".json") is False and ".json.tmp" in str(path):
        writes.append(path)
        if len(writes) == 3:
            os.kill(os.getpid(), signal.SIGKILL)
    return real(path, directory)
io._fsync = fsync
run_sweep(grid, {out!r})
"""


def test_killed_sweep_leaves_no_partial_json_and_rerun_completes(model_dir, text_file, tmp_path, monkeypatch):
    """A real kill -9 in the middle of writing a result: nothing half-written, the rerun finishes the grid."""
    grid = tiny_grid(model_dir, text_file, methods=["activation"], save_scores=False, save_masks=False)
    out = tmp_path / "r"
    script = KILL_SCRIPT.format(grid=grid.to_dict(), out=str(out))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    results = list((out / "runs").glob("*.json"))
    assert len(results) == 2 and all(json.loads(p.read_text())["status"] == "complete" for p in results)
    leftovers = [p for p in (out / "runs").iterdir() if p.name.startswith(".")]
    assert leftovers  # the killed writer's temporary: never mistaken for a result
    counters = count_work(monkeypatch)
    summary = run_sweep(grid, out)
    assert len(summary.computed) == len(grid.runs()) - 2 == counters["prune_model"].calls
    assert len(read_results(out)) == len(grid.runs()) and not summary.damaged
    assert not [p for p in (out / "runs").iterdir() if p.name.startswith(".")]  # swept by the rerun's writes


def test_different_grid_is_refused_unless_extend(swept, model_dir, text_file, monkeypatch):
    grid, out, _ = swept
    other = tiny_grid(model_dir, text_file, methods=["activation"], amounts=[0.125])
    counters = count_work(monkeypatch)
    with pytest.raises(ValueError, match=r"different grid .*amounts: \[0.125\] here, \[0.25, 0.5\] there.*--extend"):
        run_sweep(other, out)
    assert counters["_load_model"].calls == 0
    summary = run_sweep(other, out, extend=True)
    assert len(summary.computed) == 2 and counters["calibrate"].calls == 0  # same calibration setting: reused
    assert len(json.loads((out / "grid.json").read_text())["grids"]) == 2
    assert len(read_results(out)) == len(grid.runs()) + 2
    assert run_sweep(grid, out).computed == []  # the first grid still resumes


def test_non_sweep_directory_is_refused(tmp_path, model_dir, text_file):
    (tmp_path / "x.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a sweep results directory"):
        run_sweep(tiny_grid(model_dir, text_file), tmp_path)


def test_failed_runs_are_recorded_not_fatal(model_dir, text_file, tmp_path, monkeypatch):
    # min_keep=20 of 24 neurons: removing 25% locally would go below the floor, the library refuses
    grid = tiny_grid(model_dir, text_file, methods=["activation"], allocations=["local"], amounts=[0.1, 0.25],
                     params={"min_keep": [20]})
    summary = run_sweep(grid, tmp_path / "r")
    df = read_results(tmp_path / "r")
    assert list(df["status"]) == ["complete", "failed"] and len(summary.failed) == 1
    assert "min_keep" in df["error"].iloc[1]
    assert run_sweep(grid, tmp_path / "r").computed == []
    assert run_sweep(grid, tmp_path / "r", retry_failed=True).computed == summary.failed


def test_missing_model_and_texts_before_any_work(model_dir, text_file, tmp_path, monkeypatch):
    counters = count_work(monkeypatch)
    with pytest.raises(FileNotFoundError, match="model .*nope.* does not exist"):
        run_sweep(tiny_grid(tmp_path / "nope", text_file), tmp_path / "r")
    with pytest.raises(FileNotFoundError):
        run_sweep(tiny_grid(model_dir, text_file, calibration={"texts": str(tmp_path / "none.txt")}), tmp_path / "r")
    assert counters["_load_model"].calls == 0 and not (tmp_path / "r").exists()


def test_tasks_without_lm_eval_say_so_before_any_work(model_dir, text_file, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    monkeypatch.setitem(sys.modules, "lm_eval.tasks", None)
    counters = count_work(monkeypatch)
    grid = tiny_grid(model_dir, text_file, evaluation={"texts": str(text_file), "n_samples": 2, "seq_len": 16,
                                                       "tasks": ["wikipedia_lastword"]})
    with pytest.raises(MissingDependencyError,
                       match=r"'wikipedia_lastword' need lm-evaluation-harness.*llmrank-graph\[eval\]"):
        run_sweep(grid, tmp_path / "r")
    assert counters["_load_model"].calls == 0 and not (tmp_path / "r" / "grid.json").exists()


# ---------------------------------------------------------------------------- the CLI
def test_cli_sweep_then_report(model_dir, text_file, tmp_path, capsys):
    out = tmp_path / "res"
    argv = ["sweep", "--out", str(out), "--model", str(model_dir), "--methods", "activation", "random",
            "--amounts", "0.25", "0.5", "--allocations", "local", "global", "--param", "random.seed=0,3",
            "--texts", str(text_file), "--eval-texts", str(text_file), "--n-samples", "2", "--seq-len", "16",
            "--eval-samples", "2", "--throughput-rounds", "1", "--save-scores", "--compensate", "none"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "12 runs: 12 computed now, 0 already done, 0 failed" in text and "random seed=3" in text
    df = read_results(out)
    assert sorted(df["label"].unique()) == ["activation", "random seed=0", "random seed=3"]
    assert main(argv) == 0
    assert "12 runs: 0 computed now, 12 already done" in capsys.readouterr().out
    assert main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0
    names = {p.name for p in (tmp_path / "rep").iterdir()}
    assert {"report.html", "quality.png", "layers.png", "scores.png", "correlations.png"} <= names
    assert all((tmp_path / "rep" / n).stat().st_size > 1000 for n in names)


def test_cli_sweep_from_toml_with_overrides(model_dir, text_file, tmp_path, capsys):
    grid = tmp_path / "g.toml"
    grid.write_text(textwrap.dedent(f"""
        models = [{json.dumps(str(model_dir))}]
        methods = ["activation", "magnitude"]
        amounts = [0.25, 0.5]
        [calibration]
        texts = {json.dumps(str(text_file))}
        n_samples = 2
        seq_len = 16
        [evaluation]
        texts = {json.dumps(str(text_file))}
        n_samples = 2
        seq_len = 16
        throughput_rounds = 1
    """))
    out = tmp_path / "res"
    assert main(["sweep", "--grid", str(grid), "--out", str(out), "--amounts", "0.5"]) == 0
    df = read_results(out)
    assert sorted(df["method"]) == ["activation", "magnitude"] and set(df["amount"]) == {0.5}


@pytest.mark.parametrize("extra, message", [
    (["--methods", "nope"], "invalid choice: 'nope'"),
    (["--amounts", "1.5"], r"`amount` must be a float in [0, 1); got 1.5"),
    (["--param", "alpha=0.5"], "no method of the grid ('activation') has the parameter(s) 'alpha'"),
    (["--param", "alpha"], "`--param` must be KEY=V1,V2"),
    (["--param", "nope.alpha=1"], "names the method 'nope'"),
])
def test_cli_bad_grid_is_refused_before_any_work(model_dir, tmp_path, capsys, extra, message):
    argv = ["sweep", "--out", str(tmp_path / "res"), "--model", str(model_dir), "--methods", "activation"]
    assert main(argv + extra) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "res").exists()


def test_cli_report_of_a_non_sweep_directory(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a sweep results directory" in capsys.readouterr().err


def test_prune_model_options_are_axes_too(model_dir, text_file, tmp_path):
    declined = {"texts": str(text_file), "n_samples": 2, "seq_len": 16, "second_moments": False}
    with pytest.raises(ValueError, match=r"compensate='lstsq' needs the Gram matrices.*--second-moments"):
        tiny_grid(model_dir, text_file, methods=["activation"], params={"compensate": ["none", "lstsq"]},
                  calibration=declined)
    with pytest.raises(ValueError, match=r"`compensate` must be one of 'none', 'bias'"):
        tiny_grid(model_dir, text_file, methods=["activation"], params={"compensate": ["refit"]})
    cal = {"texts": str(text_file), "n_samples": 2, "seq_len": 16, "second_moments": True}
    grid = tiny_grid(model_dir, text_file, methods=["activation"], allocations=["local"], amounts=[0.5],
                     params={"compensate": ["none", "lstsq"], "sequential": [False, True]}, calibration=cal)
    assert len(grid.runs()) == 4
    run_sweep(grid, tmp_path / "r")
    df = read_results(tmp_path / "r")
    assert list(df["status"]) == ["complete"] * 4, df["error"].tolist()
    assert sorted(zip(df["param.compensate"], df["param.sequential"])) == [
        ("lstsq", False), ("lstsq", True), ("none", False), ("none", True)]
    # compensation changes the model, so its perplexity differs from plain removal
    plain = df[(df["param.compensate"] == "none") & ~df["param.sequential"]]["perplexity"].iloc[0]
    refit = df[(df["param.compensate"] == "lstsq") & ~df["param.sequential"]]["perplexity"].iloc[0]
    assert plain != refit


# ---------------------------------------------------------------------------- failed runs, large grids, claims
PY_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
SUMMARY = re.compile(r"(\d+) runs: (\d+) computed now, (\d+) already done, (\d+) failed")


def cli_argv(model_dir, text_file, out, *extra):
    return ["sweep", "--out", str(out), "--model", str(model_dir), "--texts", str(text_file), "--eval-texts",
            str(text_file), "--n-samples", "2", "--seq-len", "16", "--eval-samples", "2", "--throughput-rounds", "1",
            "--compensate", "none", *extra]


def run_cli(argv, **kw):
    return subprocess.run([sys.executable, "-m", "llmrank_graph", *argv], capture_output=True, text=True,
                          timeout=300, env=PY_ENV, **kw)


def test_cli_sweep_with_failed_runs_exits_1_and_keeps_the_good_ones(model_dir, text_file, tmp_path):
    # min_keep=20 of 24 neurons: 0.1 locally keeps 22 (complete), 0.25 would keep 18 (refused: failed)
    out = tmp_path / "res"
    proc = run_cli(cli_argv(model_dir, text_file, out, "--methods", "activation", "--allocations", "local",
                            "--amounts", "0.1", "0.25", "--param", "min_keep=20"))
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "2 runs: 2 computed now, 0 already done, 1 failed" in proc.stdout
    assert f"error: 1 of 2 runs failed; see {out / 'runs'}/*.json" in proc.stderr
    assert "This is a bug" not in proc.stderr
    df = read_results(out)
    assert sorted(df["status"]) == ["complete", "failed"] and len(list((out / "runs").glob("*.json"))) == 2
    assert not list((out / "runs").glob("*.claim")) and not [p for p in out.rglob(".*")]


def big_grid(model_dir, text_file, out, *extra, n=1001):
    """``n`` runs: one random scorer per seed."""
    seeds = ",".join(str(s) for s in range(n))
    return cli_argv(model_dir, text_file, out, "--methods", "random", "--param", f"random.seed={seeds}",
                    "--amounts", "0.5", "--allocations", "local", *extra)


def test_large_grid_is_refused_without_yes_when_stdin_is_not_a_terminal(model_dir, text_file, tmp_path):
    out = tmp_path / "res"
    proc = run_cli(big_grid(model_dir, text_file, out), stdin=subprocess.DEVNULL)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "grid: 1001 runs" in proc.stdout
    assert "this grid has 1,001 runs to compute (0 already done), more than 1,000; ETA unknown" in proc.stdout
    assert "starts only with --yes when stdin is not a terminal" in proc.stderr
    assert not out.exists()


def test_large_grid_eta_is_measured_on_the_finished_runs(swept, model_dir, text_file, monkeypatch, capsys):
    _, out, _ = swept
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # not a terminal
    # seeds 0 and 1 at 0.5, local, are runs of the swept grid too: done, so 1,001 are left of 1,003
    assert main(big_grid(model_dir, text_file, out, n=1003)) == 2
    text = capsys.readouterr().out
    times = [sum(json.loads(p.read_text())["times"].values()) for p in (out / "runs").glob("*.json")]
    assert "this grid has 1,001 runs to compute (2 already done)" in text
    assert f"1,001 x {np.mean(times):.1f} s, the mean of the {len(times)} finished run(s) in {out}" in text


def test_large_grid_asks_on_a_terminal(model_dir, text_file, tmp_path):
    out = tmp_path / "res"
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "llmrank_graph", *big_grid(model_dir, text_file, out)],
                                stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=PY_ENV)
        os.write(master, b"n\n")
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        os.close(slave)
        os.close(master)
    assert proc.returncode == 1, stderr[-2000:]
    assert "start 1,001 runs? [y/N]" in stdout and "not started" in stdout
    assert not out.exists()


def test_large_grid_with_yes_goes_on_to_the_next_check(text_file, tmp_path, capsys):
    assert main(big_grid(tmp_path / "no-model", text_file, tmp_path / "res", "--yes")) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "--yes" not in err  # the size was accepted; the missing model was not


# A sweep process with its imports done (transformers' Llama included), that starts when told to.
WARM_MAIN = """
import sys
import transformers.models.llama.modeling_llama
from llmrank_graph.cli import main
print("ready", flush=True)
sys.stdin.readline()
sys.exit(main(sys.argv[1:]))
"""


def test_two_sweeps_on_one_directory_compute_each_run_once(model_dir, text_file, tmp_path):
    """Sweep A starts; once it holds its first claim, sweep B starts on the same directory."""
    out = tmp_path / "res"
    argv = cli_argv(model_dir, text_file, out, "--methods", "activation", "random", "magnitude", "--param",
                    "random.seed=0,1", "--amounts", "0.25", "0.5", "--allocations", "local", "global",
                    "--throughput-rounds", "3")
    # B is imported and ready before A starts, so that it joins while A has most of the grid left.
    logs = {name: (open(tmp_path / f"{name}.out", "w+"), open(tmp_path / f"{name}.err", "w+")) for name in "ab"}
    b = subprocess.Popen([sys.executable, "-c", WARM_MAIN, *argv], stdin=subprocess.PIPE, stdout=logs["b"][0],
                         stderr=logs["b"][1], text=True, env=PY_ENV)
    deadline = time.monotonic() + 240
    while not (tmp_path / "b.out").read_text().startswith("ready"):
        assert b.poll() is None and time.monotonic() < deadline, "sweep B did not start"
        time.sleep(0.05)
    a = subprocess.Popen([sys.executable, "-m", "llmrank_graph", *argv], stdout=logs["a"][0], stderr=logs["a"][1],
                         text=True, env=PY_ENV)
    try:
        while not list((out / "runs").glob("*.claim")):
            assert a.poll() is None and time.monotonic() < deadline, "sweep A made no claim"
            time.sleep(0.01)
        b.communicate("go\n", timeout=300)
        a.wait(timeout=300)
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()
                p.wait()
    (a_out, a_err), (b_out, b_err) = [[(f.seek(0), f.read(), f.close())[1] for f in logs[n]] for n in "ab"]
    assert a.returncode == 0 and b.returncode == 0, (a_err[-2000:], b_err[-2000:])
    n = 4 * 2 * 2
    counts = {name: [int(x) for x in SUMMARY.search(text).groups()] for name, text in (("a", a_out), ("b", b_out))}
    assert counts["a"][0] == counts["b"][0] == n
    assert counts["a"][1] + counts["b"][1] == n  # computed now, by A or by B: each run once
    records = [json.loads(p.read_text()) for p in (out / "runs").glob("*.json")]
    assert len(records) == n and all(r["status"] == "complete" for r in records)
    by = [r["computed_by"]["pid"] for r in records]
    assert by.count(a.pid) == counts["a"][1] and by.count(b.pid) == counts["b"][1]
    assert counts["a"][1] > 0 and counts["b"][1] > 0  # they did overlap
    # each met the other's claims, named them, and left those runs to it
    claimed = re.findall(r"(\d+) runs? claimed by \S+:(\d+), skipped", a_out + b_out)
    assert claimed and {int(pid) for _, pid in claimed} <= {a.pid, b.pid}
    assert "completed meanwhile" not in a_err + b_err
    assert not list((out / "runs").glob("*.claim")) and not [p for p in out.rglob(".*")]
    assert len(read_results(out)) == n


def write_claim(path, host="elsewhere", pid=4242, age=0.0):
    """A claim file as another host's sweep leaves it, its heartbeat ``age`` seconds old."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"format": claims.CLAIM_FORMAT, "host": host, "machine": f"{host}/boot/ns",
                                "pid": pid, "started_at": "2024-01-01T00:00:00+00:00", "token": "f" * 16}))
    t = time.time() - age
    os.utime(path, (t, t))


def test_a_live_claim_of_another_host_is_left_to_it_and_a_stale_one_taken_over(model_dir, text_file, tmp_path):
    grid = tiny_grid(model_dir, text_file, methods=["activation"], allocations=["local"], save_masks=False)
    out = tmp_path / "r"
    first, second = grid.runs()
    run_sweep(grid, out)
    (out / "runs" / f"{first.stem}.json").unlink()
    claim = out / "runs" / f"{first.stem}{claims.CLAIM_SUFFIX}"
    write_claim(claim, age=claims.LEASE_SECONDS - 60)  # a heartbeat within the lease
    summary = run_sweep(grid, out)
    assert summary.claimed == {first.run_id: "elsewhere:4242"} and summary.computed == []
    assert claim.is_file() and not (out / "runs" / f"{first.stem}.json").exists()
    os.utime(claim, (time.time() - claims.LEASE_SECONDS - 1,) * 2)  # its heartbeat stopped
    summary = run_sweep(grid, out)
    assert summary.computed == [first.run_id] and summary.claimed == {}
    assert json.loads((out / "runs" / f"{first.stem}.json").read_text())["computed_by"]["pid"] == os.getpid()
    assert not claim.exists() and not [p for p in out.rglob(".*")]


HOLD_CLAIM = """
import sys, time
from llmrank_graph.experiments.claims import RunClaim
claim = RunClaim(sys.argv[1])
assert claim.acquire() is None
print("held", flush=True)
time.sleep(600)
"""


def test_wait_takes_over_the_run_of_a_sweep_that_died(model_dir, text_file, tmp_path):
    """A real holder process keeps a run; killed (-9), its claim is stale and a waiting sweep takes the run."""
    grid = tiny_grid(model_dir, text_file, methods=["activation"], allocations=["local"], save_masks=False)
    out = tmp_path / "r"
    first, _ = grid.runs()
    run_sweep(grid, out)
    (out / "runs" / f"{first.stem}.json").unlink()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_CLAIM, str(out / "runs" / f"{first.stem}.claim")],
                              stdout=subprocess.PIPE, text=True, env=PY_ENV)
    try:
        assert holder.stdout.readline().strip() == "held"
        summary = run_sweep(grid, out)  # the holder is alive: its run is left to it
        assert summary.claimed == {first.run_id: f"{socket.gethostname()}:{holder.pid}"} and not summary.computed

        def die():
            holder.kill()
            holder.wait()  # reaped: a zombie's pid would still answer

        killer = threading.Timer(1.0, die)
        killer.start()
        t = time.monotonic()
        summary = run_sweep(grid, out, wait=True)
        killer.join()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert summary.computed == [first.run_id] and summary.claimed == {}
    assert time.monotonic() - t >= 1.0  # it waited for the holder
    assert not list((out / "runs").glob("*.claim")) and not [p for p in out.rglob(".*")]


def test_one_taker_wins_a_stale_claim(tmp_path):
    """Four takers race for one stale claim, fifty times: each time exactly one holds it after."""
    path = tmp_path / "run.claim"
    for _ in range(50):
        write_claim(path, age=claims.LEASE_SECONDS + 1)
        takers = [claims.RunClaim(path) for _ in range(4)]
        barrier = threading.Barrier(len(takers))
        found = [None] * len(takers)

        def take(i, takers=takers, barrier=barrier, found=found):
            barrier.wait()
            found[i] = takers[i].acquire()

        threads = [threading.Thread(target=take, args=(i,)) for i in range(len(takers))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [c for c, h in zip(takers, found) if h is None]
        assert len(winners) == 1
        assert json.loads(path.read_text())["token"] == winners[0].token
        assert all(h.live for h in found if h is not None)
        winners[0].release()
        assert not path.exists() and not list(tmp_path.glob(".*"))


def test_claim_heartbeat_and_release(tmp_path):
    path = tmp_path / "run.claim"
    claim = claims.RunClaim(path, heartbeat=0.05)
    assert claim.acquire() is None
    holder = json.loads(path.read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname() and holder["started_at"]
    with claim.held():
        os.utime(path, (0, 0))
        time.sleep(0.5)
        assert time.time() - path.stat().st_mtime < 0.5  # refreshed by the heartbeat
    assert not path.exists()
    with pytest.raises(ValueError, match=r"`lease` must be a positive"):
        claims.RunClaim(path, lease=0)


def test_sweep_progress_shows_calibration_and_dense_evaluation(model_dir, text_file, tmp_path, monkeypatch):
    """With ``progress``, the calibration and the dense evaluation, which run while the sweep's bar
    still reads 0 runs, draw bars of their own that count every batch; a sweep that reuses both
    (another run of the same model in the same directory) draws neither."""
    import tqdm.auto
    import tqdm.std

    opened = []

    class Recording(tqdm.std.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "file": io.StringIO()})
            self.sweep_at_open = [b.n for b in opened if b.desc == "sweep"]  # the sweep's count when this opens
            opened.append(self)

    monkeypatch.setattr(tqdm.auto, "tqdm", Recording)  # the library imports it when it draws a bar
    settings = dict(methods=["activation"], allocations=["local"],
                    calibration={"texts": str(text_file), "n_samples": 3, "seq_len": 16, "batch_size": 1},
                    evaluation={"texts": str(text_file), "n_samples": 2, "seq_len": 16, "batch_size": 1,
                                "throughput_rounds": 1})
    grid = tiny_grid(model_dir, text_file, amounts=[0.25], **settings)
    ours = {"sweep", "calibrating", "perplexity"}  # not transformers' own bars (loading weights)
    run_sweep(grid, tmp_path / "results", progress=True)
    assert [(b.desc, b.total, b.n, b.sweep_at_open) for b in opened if b.desc in ours] == [
        ("sweep", 1, 1, []), ("calibrating", 3, 3, [0]), ("perplexity", 2, 2, [0])]
    opened.clear()
    summary = run_sweep(tiny_grid(model_dir, text_file, amounts=[0.5], **settings), tmp_path / "results",
                        extend=True, progress=True)
    assert len(summary.computed) == 1
    assert [b.desc for b in opened if b.desc in ours] == ["sweep"]


# ---------------------------------------------------------------------------- compensation: prune's default, an axis
def test_sweep_default_run_is_prunes_default(model_dir, text_file, tmp_path, monkeypatch):
    """The default run of a sweep prunes the model as `llmrank-graph prune` with its defaults does:
    the same kept neurons and the same refitted down_proj weights."""
    from llmrank_graph import NeuronMask, load_model
    from llmrank_graph.compensation import RECOMMENDED_COMPENSATION
    from llmrank_graph.models.saved_format import MASK_FILE

    pruned = []
    real = ex.prune_model
    monkeypatch.setattr(ex, "prune_model", lambda *a, **k: pruned.append(real(*a, **k)) or pruned[-1])
    small = {"texts": str(text_file), "n_samples": 2, "seq_len": 16}
    grid = Grid(models=[str(model_dir)], calibration=small, evaluation={**small, "throughput_rounds": 1},
                save_masks=True)
    [run] = grid.runs()
    assert (run.compensate, run.calibration.second_moments) == (RECOMMENDED_COMPENSATION, True)
    run_sweep(grid, tmp_path / "sweep")
    proc = run_cli(["prune", "--model", str(model_dir), "--texts", str(text_file), "--eval-texts", str(text_file),
                    "--n-samples", "2", "--seq-len", "16", "--eval-samples", "2", "--out", str(tmp_path / "pruned")])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"compensate={RECOMMENDED_COMPENSATION}" in proc.stdout
    [mask_file] = (tmp_path / "sweep" / "runs").glob("*.mask.safetensors")
    swept, cli = NeuronMask.load(mask_file), NeuronMask.load(tmp_path / "pruned" / MASK_FILE)
    assert swept.layers == cli.layers
    for layer in swept.layers:
        assert torch.equal(swept.intermediate[layer], cli.intermediate[layer])
    model, _ = load_model(tmp_path / "pruned")
    for ours, theirs in zip(pruned[0].model.model.layers, model.model.layers):
        torch.testing.assert_close(ours.mlp.down_proj.weight, theirs.mlp.down_proj.weight, rtol=1e-5, atol=1e-6)


def test_grid_collects_second_moments_only_when_a_run_needs_them(model_dir, text_file):
    def moments(**kw):
        runs = Grid(amounts=[0.25, 0.5], **kw).runs()
        assert len({r.calibration for r in runs}) == 1  # one calibration per model, shared by every run
        return runs[0].calibration.second_moments

    assert moments() is True  # prune's default: the lstsq refit
    assert moments(compensates=["none"]) is False
    assert moments(compensates=["bias"]) is False
    assert moments(compensates=["none", "lstsq+bias"]) is True
    assert moments(methods=["obs"], compensates=["none"]) is True
    assert moments(params={"sequential": [True]}) is False  # the sequential refit collects its own, layer by layer
    assert moments(compensates=["none"], calibration={"second_moments": True}) is True  # asked for: kept
    with pytest.raises(ValueError, match=r"compensate='lstsq' needs the Gram matrices.*--second-moments"):
        Grid(calibration={"second_moments": False})


def test_compensation_axis_from_toml_and_cli(model_dir, text_file, tmp_path):
    from llmrank_graph.cli import build_parser
    from llmrank_graph.cli.sweep import grid_from_args

    path = tmp_path / "g.toml"
    path.write_text('methods = ["activation"]\ncompensate = ["none", "lstsq"]\n')
    grid = load_grid(path)
    assert grid.compensates == ("none", "lstsq")
    assert [r.label for r in grid.runs()] == ["activation", "activation compensate=lstsq"]
    assert Grid.from_dict(grid.to_dict()) == grid
    args = build_parser().parse_args(["sweep", "--out", str(tmp_path / "r"), "--grid", str(path),
                                      "--compensate", "none"])
    # The option replaces the file's axis, and the Gram matrices follow the runs left.
    assert grid_from_args(args).runs()[0].calibration.second_moments is False
    with pytest.raises(ValueError, match=r"`compensates` must be one of 'none', 'bias'"):
        Grid(compensates=["refit"])


def test_a_run_without_compensation_keeps_the_id_it_had_before_the_axis():
    small = {"texts": "corpus.txt", "n_samples": 2, "seq_len": 16}
    [run] = Grid(models=["model"], methods=["activation"], amounts=[0.5], compensates=["none"], calibration=small,
                 evaluation={**small, "throughput_rounds": 1}).runs()
    assert run.params == () and run.compensate == "none"
    assert run.run_id == "9d33bd185e73"  # the id a sweep gave this run before `compensates` existed


def test_directory_of_a_sweep_before_the_axis_resumes(model_dir, text_file, tmp_path):
    out = tmp_path / "res"
    old = tiny_grid(model_dir, text_file, methods=["activation"], amounts=[0.5], allocations=["local"])
    run_sweep(old, out)
    stored = json.loads((out / "grid.json").read_text())
    for entry in stored["grids"]:  # as written before `compensates` existed
        del entry["grid"]["compensates"]
    (out / "grid.json").write_text(json.dumps(stored))
    summary = run_sweep(old, out)  # its runs did not compensate: `compensates=["none"]` resumes them
    assert (summary.computed, summary.damaged) == ([], [])
    new = tiny_grid(model_dir, text_file, methods=["activation"], amounts=[0.5], allocations=["local"],
                    compensates=["lstsq"])
    with pytest.raises(ValueError, match=r"compensates: \['lstsq'\] here, \['none'\] there \(its grid predates "):
        run_sweep(new, out)
    summary = run_sweep(new, out, extend=True)
    assert len(summary.computed) == 1
    df = read_results(out)
    assert sorted(df["label"]) == ["activation", "activation compensate=lstsq"]
    assert df["perplexity"].notna().all()
