import argparse
import inspect
import logging

import pandas as pd
import pytest
import torch
from _tiny import save_tiny_model, write_corpus

import llmrank_graph as lg
from llmrank_graph.cli import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny Llama with a WordLevel tokenizer saved as a Hugging Face directory."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model", m=16)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("text") / "corpus.txt")


def test_export_then_rank(model_dir, tmp_path, capsys):
    out = tmp_path / "graph"
    assert main(["export", "--model", str(model_dir), "--out", str(out)]) == 0
    g = lg.read_graph(out)
    assert g.n_edges == 3 * 2 * 8 * 16
    scores = tmp_path / "scores.parquet"
    assert main(["rank", "--graph", str(out), "--out", str(scores), "--direction", "reverse",
                 "--backend", "scipy"]) == 0
    df = pd.read_parquet(scores)
    ref = lg.pagerank(g, direction="reverse", backend="scipy")
    assert list(df.columns[:5]) == ["vertex", "layer", "kind", "index", "activation"]
    assert df["pagerank"].to_numpy() == pytest.approx(ref.scores, abs=1e-12)
    assert "backend=scipy" in capsys.readouterr().out


def test_rank_from_model_to_csv_with_calibration(model_dir, text_file, tmp_path):
    out = tmp_path / "scores.csv"
    rc = main(["rank", "--model", str(model_dir), "--out", str(out), "--personalization", "activation",
               "--weighting", "abs_x_input", "--texts", str(text_file), "--n-samples", "2", "--seq-len", "16"])
    assert rc == 0
    df = pd.read_csv(out)
    assert df["activation"].notna().all() and df["pagerank"].sum() == pytest.approx(1.0)


def test_refuses_existing_out(model_dir, tmp_path, capsys):
    out = tmp_path / "graph"
    out.mkdir()
    assert main(["export", "--model", str(model_dir), "--out", str(out)]) == 2
    assert "pass --overwrite" in capsys.readouterr().err


def test_bad_rank_suffix(model_dir, tmp_path, capsys):
    assert main(["rank", "--model", str(model_dir), "--out", str(tmp_path / "scores.txt")]) == 2
    assert ".parquet or .csv" in capsys.readouterr().err


def test_missing_model_is_a_clear_error(tmp_path, capsys):
    assert main(["export", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "g")]) == 2
    assert "`--model`" in capsys.readouterr().err


def test_prune_end_to_end(model_dir, text_file, tmp_path, capsys):
    out = tmp_path / "pruned"
    args = ["prune", "--model", str(model_dir), "--out", str(out), "--amount", "0.25", "--texts", str(text_file),
            "--eval-texts", str(text_file), "--n-samples", "2", "--seq-len", "16", "--eval-samples", "2",
            "--method", "wanda-sp"]
    assert main(args) == 0
    text = capsys.readouterr().out
    for row in ("MLP parameters", "total parameters", "perplexity", "tokens/s", "stage times"):
        assert row in text
    model, tok = lg.load_model(out)
    assert tok is not None
    assert [m.intermediate_size for m in lg.models.architectures.mlp_layers(model)] == [12, 12, 12]
    mask = lg.NeuronMask.load(out / "llmrank_graph" / "neuron_mask.safetensors")
    assert mask.n_pruned() == 12
    capsys.readouterr()
    assert main(args) == 2
    assert "pass --overwrite" in capsys.readouterr().err


def _spy_calibrate(monkeypatch) -> list[bool]:
    """Record the ``second_moments`` that each CLI calibration asks for."""
    import functools

    import llmrank_graph.cli._common as common

    asked, real = [], common.calibrate

    @functools.wraps(real)  # the parser reads calibrate's defaults from its signature
    def spy(*args, **kwargs):
        asked.append(kwargs["second_moments"])
        return real(*args, **kwargs)

    monkeypatch.setattr(common, "calibrate", spy)
    return asked


def test_prune_default_refits_down_proj_and_none_only_removes(model_dir, text_file, tmp_path, capsys, caplog,
                                                               monkeypatch):
    """The command's default is the library's RECOMMENDED_COMPENSATION (lstsq): calibrated with the second
    moments, down_proj refitted as prune_model(compensate='lstsq') does; `--compensate none` only removes."""
    from llmrank_graph.compensation.algebra import RECOMMENDED_COMPENSATION
    from llmrank_graph.models.architectures import mlp_layers

    assert RECOMMENDED_COMPENSATION == "lstsq"
    asked = _spy_calibrate(monkeypatch)
    common = ["prune", "--model", str(model_dir), "--amount", "0.25", "--texts", str(text_file),
              "--eval-texts", str(text_file), "--eval-samples", "1", *CALIB]
    with caplog.at_level(logging.INFO, logger="llmrank_graph.cli"):
        assert main([*common, "--out", str(tmp_path / "default")]) == 0
    assert "compensate=lstsq" in capsys.readouterr().out
    assert "--compensate lstsq needs the second moments of the down_proj inputs: 3 Gram matrices" in caplog.text
    assert "6 kB in memory in all; --compensate none skips them" in caplog.text  # 3 layers x 16^2 x 8 bytes
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="llmrank_graph.cli"):
        assert main([*common, "--out", str(tmp_path / "none"), "--compensate", "none"]) == 0
    assert "compensate=none" in capsys.readouterr().out
    assert "second moments" not in caplog.text
    assert asked == [True, False]

    dense, tok = lg.load_model(model_dir)
    stats = lg.calibrate(dense, tok, texts=str(text_file), n_samples=2, seq_len=16, second_moments=True)
    want = lg.prune_model(dense, stats, "pagerank", 0.25, compensate="lstsq").model
    refit, _ = lg.load_model(tmp_path / "default")
    plain, _ = lg.load_model(tmp_path / "none")
    mask = lg.NeuronMask.load(tmp_path / "none" / "llmrank_graph" / "neuron_mask.safetensors")
    assert torch.equal(mask.intermediate[0], lg.NeuronMask.load(
        tmp_path / "default" / "llmrank_graph" / "neuron_mask.safetensors").intermediate[0])
    original, _ = lg.load_model(model_dir)
    for d, r, p, w in zip(*(mlp_layers(m) for m in (original, refit, plain, want))):
        kept = mask.intermediate[d.layer]
        torch.testing.assert_close(p.weight("down"), d.weight("down")[:, kept], rtol=0, atol=0)
        torch.testing.assert_close(r.weight("down"), w.weight("down"))
        assert not torch.allclose(r.weight("down"), p.weight("down"))
        assert r.down.bias is None  # lstsq keeps the stock architecture


def test_prune_unknown_method_lists_registry(model_dir, text_file, tmp_path, capsys):
    rc = main(["prune", "--model", str(model_dir), "--out", str(tmp_path / "p"), "--method", "nope",
               "--texts", str(text_file), "--n-samples", "1", "--seq-len", "8"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "pagerank" in err and "wanda-sp" in err
    assert not (tmp_path / "p").exists()


def test_backends_command(capsys):
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    assert "sweep" in out and "scipy" in out and "cugraph" in out


# ----------------------------------------------------------------------------- the CLI and the library agree
CALIB = ["--n-samples", "2", "--seq-len", "16"]


def _rank_scores(path) -> dict[int, torch.Tensor]:
    """Layer -> intermediate scores, in neuron order, from a table written by `rank`."""
    df = pd.read_parquet(path)
    inter = df[df["kind"] == "intermediate"]
    return {int(layer): torch.tensor(g.sort_values("index")["pagerank"].to_numpy())
            for layer, g in inter.groupby("layer")}


def test_rank_calibrated_ranks_as_prune_pagerank(model_dir, text_file, tmp_path):
    """`rank --calibrate` and `prune --method pagerank` use the same defaults: same scores, same neurons."""
    from llmrank_graph.scoring.graph import PageRankScorer

    scores = tmp_path / "scores.parquet"
    assert main(["rank", "--model", str(model_dir), "--calibrate", "--out", str(scores), "--texts", str(text_file),
                 *CALIB]) == 0
    pruned = tmp_path / "pruned"
    assert main(["prune", "--model", str(model_dir), "--method", "pagerank", "--amount", "0.25", "--out", str(pruned),
                 "--texts", str(text_file), "--eval-texts", str(text_file), "--eval-samples", "1", *CALIB]) == 0
    got = _rank_scores(scores)

    model, tok = lg.load_model(model_dir)
    stats = lg.calibrate(model, tok, texts=str(text_file), n_samples=2, seq_len=16)
    want = lg.score_neurons(model, stats, "pagerank")
    assert sorted(got) == want.layers
    for layer, s in want.intermediate.items():
        torch.testing.assert_close(got[layer], s, rtol=1e-12, atol=0)

    mask = lg.NeuronMask.load(pruned / "llmrank_graph" / "neuron_mask.safetensors")
    from_rank = lg.allocate(got, 0.25, "local", rounding=PageRankScorer.rounding)
    for layer in want.layers:
        assert torch.equal(from_rank.pruned_indices(layer), mask.pruned_indices(layer))
    assert mask.n_pruned() == 12


def test_rank_graph_of_a_calibrated_export_ranks_as_rank_calibrate(model_dir, text_file, tmp_path, caplog):
    """`export --calibrate` writes the pagerank scorer's graph: `rank --graph` of it is `rank --calibrate`."""
    g = tmp_path / "graph"
    assert main(["export", "--model", str(model_dir), "--calibrate", "--out", str(g), "--texts", str(text_file),
                 *CALIB]) == 0
    from_graph, from_model = tmp_path / "g.parquet", tmp_path / "m.parquet"
    with caplog.at_level(logging.WARNING, logger="llmrank_graph.cli"):
        assert main(["rank", "--graph", str(g), "--out", str(from_graph)]) == 0
    assert "pagerank" not in caplog.text  # nothing replaced: the graph gives every default
    assert main(["rank", "--model", str(model_dir), "--calibrate", "--out", str(from_model), "--texts",
                 str(text_file), *CALIB]) == 0
    got, want = _rank_scores(from_graph), _rank_scores(from_model)
    assert sorted(got) == sorted(want)
    for layer in want:
        torch.testing.assert_close(got[layer], want[layer], rtol=1e-5, atol=0)  # Parquet keeps float32 weights
        assert torch.equal(torch.argsort(got[layer], descending=True, stable=True),
                           torch.argsort(want[layer], descending=True, stable=True))


def test_rank_graph_with_other_options_says_so(model_dir, text_file, tmp_path, caplog):
    g = tmp_path / "graph"
    assert main(["export", "--model", str(model_dir), "--calibrate", "--weighting", "abs", "--out", str(g),
                 "--texts", str(text_file), *CALIB]) == 0
    with caplog.at_level(logging.WARNING, logger="llmrank_graph.cli"):
        assert main(["rank", "--graph", str(g), "--out", str(tmp_path / "s.parquet")]) == 0
    assert ("the graph was exported with weighting 'abs', not the pagerank scorer's 'activation_share'; ranking it "
            "as exported (export the graph with --calibrate and the default graph options") in caplog.text
    ref = lg.pagerank(lg.read_graph(g), direction="reverse", personalization="activation")
    assert pd.read_parquet(tmp_path / "s.parquet")["pagerank"].to_numpy() == pytest.approx(ref.scores, abs=1e-12)


def test_rank_without_stats_says_what_it_uses(model_dir, tmp_path, caplog):
    from llmrank_graph.scoring.graph import PAGERANK_WITHOUT_STATS

    out = tmp_path / "scores.parquet"
    with caplog.at_level(logging.WARNING, logger="llmrank_graph.cli"):
        assert main(["rank", "--model", str(model_dir), "--out", str(out)]) == 0
    warning = caplog.text
    assert "weighting 'activation_share' and personalization 'activation' need them" in warning
    assert "using weighting 'abs' and personalization 'uniform' instead" in warning
    assert "--calibrate" in warning
    model, _ = lg.load_model(model_dir)
    want = lg.score_neurons(model, None, "pagerank", **PAGERANK_WITHOUT_STATS)
    got = _rank_scores(out)
    for layer, s in want.intermediate.items():
        torch.testing.assert_close(got[layer], s, rtol=1e-12, atol=0)


def test_rank_graph_without_activations_falls_back_and_refuses_graph_options(model_dir, tmp_path, caplog, capsys):
    g = tmp_path / "graph"
    assert main(["export", "--model", str(model_dir), "--out", str(g)]) == 0
    out = tmp_path / "scores.parquet"
    with caplog.at_level(logging.WARNING, logger="llmrank_graph.cli"):
        assert main(["rank", "--graph", str(g), "--out", str(out)]) == 0
    assert ("weighting 'activation_share' and personalization 'activation' need them; using weighting 'abs' and "
            "personalization 'uniform' instead (export the graph with --calibrate") in caplog.text
    ref = lg.pagerank(lg.read_graph(g), direction="reverse", personalization="uniform")
    assert pd.read_parquet(out)["pagerank"].to_numpy() == pytest.approx(ref.scores, abs=1e-12)
    assert main(["rank", "--graph", str(g), "--out", str(tmp_path / "s2.parquet"), "--weighting", "abs"]) == 2
    assert "--weighting applies to --model only" in capsys.readouterr().err


def _options(parser: argparse.ArgumentParser, command: str) -> dict[str, argparse.Action]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {a.option_strings[-1]: a for a in sub.choices[command]._actions if a.option_strings}


def test_defaults_and_choices_are_the_library_constants():
    from llmrank_graph.centrality import DIRECTIONS, backend_names
    from llmrank_graph.cli import build_parser
    from llmrank_graph.compensation.algebra import COMPENSATIONS, DEFAULT_RIDGE, RECOMMENDED_COMPENSATION
    from llmrank_graph.data.calibration import calibrate
    from llmrank_graph.graph.mlpgraph import DEFAULT_EXPORT, GATES, MODES, WEIGHTINGS
    from llmrank_graph.pruning.masks import ALLOCATIONS
    from llmrank_graph.pruning.surgery import HOWS
    from llmrank_graph.scoring.graph import PAGERANK_CENTRALITY, PAGERANK_DEFAULTS, PERSONALIZATIONS, PageRankScorer

    parser = build_parser()
    export, rank, prune = (_options(parser, c) for c in ("export", "rank", "prune"))
    for opts in (export, rank):
        assert tuple(opts["--mode"].choices) == MODES
        assert tuple(opts["--gate"].choices) == GATES
        assert tuple(opts["--weighting"].choices) == WEIGHTINGS
    # --weighting's default depends on --calibrate (llmrank_graph.graph.export.default_export)
    assert {k: export[f"--{k}"].default for k in DEFAULT_EXPORT.as_dict()} == {**DEFAULT_EXPORT.as_dict(),
                                                                               "weighting": None}
    for k in ("direction", "alpha", "backend"):
        assert rank[f"--{k}"].default == PAGERANK_CENTRALITY[k] == PAGERANK_DEFAULTS[k]
    assert tuple(rank["--direction"].choices) == DIRECTIONS
    assert list(rank["--backend"].choices) == ["auto", *backend_names()]
    assert tuple(rank["--personalization"].choices) == PERSONALIZATIONS
    assert (rank["--tol"].default, rank["--max-iter"].default) == (PageRankScorer().tol, PageRankScorer().max_iter)
    assert list(prune["--method"].choices) == lg.scorers()
    assert prune["--method"].default == "pagerank"
    assert tuple(prune["--allocation"].choices) == ALLOCATIONS
    assert tuple(prune["--how"].choices) == HOWS
    assert tuple(prune["--mode"].choices) == MODES
    assert prune["--n-samples"].default == inspect.signature(calibrate).parameters["n_samples"].default
    # prune's one default that is not prune_model's: the configuration measured best (lstsq).
    assert tuple(prune["--compensate"].choices) == COMPENSATIONS
    assert prune["--compensate"].default == RECOMMENDED_COMPENSATION
    assert inspect.signature(lg.prune_model).parameters["compensate"].default == "none"
    assert prune["--ridge"].default == DEFAULT_RIDGE
    assert prune["--sequential"].default is False


# ----------------------------------------------------------------------------- before the work, in the options' words
def test_model_layout_reads_the_sizes_from_the_config(tmp_path):
    """The sizes `prune --amount` is checked against, before the load, are those of the loaded model."""
    from _tiny import tiny_gpt2, tiny_llama

    from llmrank_graph.cli._inputs import model_layout
    from llmrank_graph.models.architectures import mlp_layers
    from llmrank_graph.models.loading import check_model_path

    tiny_llama(m=12).save_pretrained(tmp_path / "llama")
    tiny_gpt2().save_pretrained(tmp_path / "gpt2")  # n_inner is None: the model class derives it
    model = tiny_llama(m=16)
    stats = lg.calibrate(model, input_ids=torch.randint(0, 64, (2, 8)))
    lg.save_pruned(lg.prune_model(model, stats, "magnitude", 0.3, allocation="global").model, None,
                   tmp_path / "pruned")
    for name in ("llama", "gpt2", "pruned"):
        loaded, _ = lg.load_model(tmp_path / name)
        layers = mlp_layers(loaded)
        want = ([m.intermediate_size for m in layers], [m.hidden_size for m in layers])
        assert model_layout(check_model_path(tmp_path / name)) == want, name
    assert len(set(model_layout(check_model_path(tmp_path / "pruned"))[0])) > 1  # per-layer sizes


def test_too_little_evaluation_text_is_refused_before_calibrating(model_dir, text_file, tmp_path, capsys,
                                                                   monkeypatch):
    import functools

    import llmrank_graph.cli._common as common

    @functools.wraps(common.calibrate)  # the parser reads calibrate's defaults from its signature
    def forbidden(*args, **kwargs):
        raise AssertionError("calibrated before the evaluation text was cut")

    monkeypatch.setattr(common, "calibrate", forbidden)
    assert main(["prune", "--model", str(model_dir), "--out", str(tmp_path / "p"), "--texts", str(text_file),
                 "--eval-texts", str(text_file), "--eval-samples", "10000", *CALIB]) == 2
    err = capsys.readouterr().err
    assert "error: `--eval-texts` must hold at least --eval-samples * --seq-len = 10000 * 16" in err, err
    assert not (tmp_path / "p").exists()


def test_an_out_that_appears_during_the_work_is_named_as_the_option(model_dir, text_file, tmp_path, capsys,
                                                                    monkeypatch):
    import functools

    import llmrank_graph.cli.prune as prune_command

    out, real = tmp_path / "p", prune_command.prune_model

    @functools.wraps(real)  # the parser reads prune_model's defaults from its signature
    def another_process_writes_out(*args, **kwargs):
        out.mkdir()
        return real(*args, **kwargs)

    monkeypatch.setattr(prune_command, "prune_model", another_process_writes_out)
    assert main(["prune", "--model", str(model_dir), "--out", str(out), "--texts", str(text_file),
                 "--eval-texts", str(text_file), "--eval-samples", "1", "--method", "magnitude", *CALIB]) == 2
    err = capsys.readouterr().err
    assert f"error: `--out` '{out}' already exists; pass --overwrite to replace it" in err, err
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("text, options, want", [
    ("`path` exists; pass overwrite=True", {"path": "--out", "overwrite": "--overwrite"},
     "`--out` exists; pass --overwrite"),
    ("`prune_hidden=True` needs", {"prune_hidden": "--prune-hidden"}, "`--prune-hidden` needs"),
    ("use directed=False, not `directed=True`", {"directed": "--param directed"},
     "use --param directed=False, not `--param directed=true`"),
    ("`max_iter`=5 iterations; raise max_iter", {"max_iter": "--max-iter"},
     "`--max-iter`=5 iterations; raise --max-iter"),
    ("n_samples * seq_len = 2 * 8", {"n_samples": "--eval-samples", "seq_len": "--seq-len"},
     "--eval-samples * --seq-len = 2 * 8"),
    ("allocation='global' (rounding='reference'); lower `amount` or raise `min_keep`",
     {"allocation": "--allocation", "amount": "--amount", "min_keep": None},
     "--allocation global (rounding='reference'); lower `--amount` (`min_keep` is not an option of this command: "
     "it keeps the library's default)"),
    ("a graph directory written by export; `directory_name` stays", {"directory": "--out"},
     "a graph directory written by export; `directory_name` stays"),
], ids=["flag", "backticked-flag", "param", "bare-code-name", "product", "no-such-option", "prose-untouched"])
def test_in_options_rewords_parameters_as_options(text, options, want):
    from llmrank_graph.cli._words import in_options

    assert in_options(text, options) == want
