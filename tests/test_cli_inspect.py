"""`inspect`, `rank --add-to-graph` and `export --format graphml|gexf` on a tiny model directory."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import pytest
from _tiny import save_tiny_model, write_corpus

import llmrank_graph as lg
from llmrank_graph import analysis as A
from llmrank_graph.cli import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny Llama (3 layers, d=8, m=16) with a WordLevel tokenizer, saved as a Hugging Face directory."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model", m=16)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("text") / "corpus.txt", 2000)


@pytest.fixture(scope="module")
def graph_dir(model_dir, text_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("graph") / "g"
    assert main(["export", "--model", str(model_dir), "--out", str(out), "--calibrate", "--texts", str(text_file),
                 "--n-samples", "2", "--seq-len", "16"]) == 0
    return out


def test_inspect_json_equals_the_api(graph_dir, capsys):
    assert main(["inspect", "--graph", str(graph_dir), "--json", "--paths", "2", "--top", "3"]) == 0
    rep = json.loads(capsys.readouterr().out)
    g = lg.read_graph(graph_dir)
    api = A.inspect_graph(g, paths=2, k=3)
    assert rep["scores"] == api.sources
    # the calibrated export has the pagerank scorer's activation-share edges: no weight-only baselines from it
    assert set(rep["scores"]) == {"pagerank_reverse_a0.85_activation", "katz_forward_a0.1", "strength_in",
                                  "activation"}
    assert any("'magnitude' left out" in n for n in rep["notes"])
    got = pd.DataFrame(rep["correlations"])
    np.testing.assert_allclose(got.spearman.to_numpy(float), api.correlations.spearman.to_numpy(float), rtol=1e-12)
    assert [r["vertices"] for r in rep["paths"]] == [list(v) for v in api.paths.vertices]
    assert len(rep["top_neurons"]) == len(api.top_neurons) == 4 * 3 * 3  # 4 scores, 3 layers, top 3


def test_inspect_text_and_out_dir(graph_dir, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["inspect", "--graph", str(graph_dir), "--out", str(out), "--centralities", "pagerank,eigenvector",
                 "--paths", "1", "--amount", "0.25"]) == 0
    text = capsys.readouterr().out
    assert "spearman rank correlation" in text and "amount=0.25" in text and "heaviest paths" in text
    files = {p.name for p in out.iterdir()}
    assert {"report.json", "strength.png", "centrality_heatmap.png", "correlations.png", "mass.png",
            "overlap.csv", "top_neurons.csv"} <= files
    assert json.loads((out / "report.json").read_text())["amount"] == 0.25
    assert main(["inspect", "--graph", str(graph_dir), "--out", str(out), "--centralities", "strength"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_inspect_a_model_and_a_subset(model_dir, text_file, graph_dir, capsys):
    assert main(["inspect", "--model", str(model_dir), "--calibrate", "--texts", str(text_file), "--n-samples", "2",
                 "--seq-len", "16", "--centralities", "strength", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["scores"]["wanda-sp"] == "baseline (model)"
    assert main(["inspect", "--graph", str(graph_dir), "--layers", "1", "--centralities", "strength", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["graph"]["layers"] == [1] and rep["graph"]["n_nodes"] == 8 + 16 + 8


def test_inspect_pagerank_is_the_scorers(model_dir, text_file, graph_dir, capsys, caplog):
    """`inspect --calibrate` and `inspect --graph` of a calibrated export: PageRank is score_neurons' pagerank."""
    model, tok = lg.load_model(model_dir)
    stats = lg.calibrate(model, tok, texts=str(text_file), n_samples=2, seq_len=16)
    want = lg.score_neurons(model, stats, "pagerank")
    for source in (["--model", str(model_dir), "--calibrate", "--texts", str(text_file), "--n-samples", "2",
                    "--seq-len", "16"], ["--graph", str(graph_dir)]):
        with caplog.at_level("WARNING", logger="llmrank_graph.cli"):
            assert main(["inspect", *source, "--centralities", "pagerank", "--top", "16", "--json"]) == 0
        assert "pagerank scorer" not in caplog.text
        rep = json.loads(capsys.readouterr().out)
        top = pd.DataFrame(rep["top_neurons"])
        top = top[top.score == "pagerank_reverse_a0.85_activation"]
        for layer, s in want.intermediate.items():
            got = top[top.layer == layer].sort_values("index").value.to_numpy()
            np.testing.assert_allclose(got, s.numpy(), rtol=1e-5)


def test_inspect_without_stats_says_its_pagerank_is_not_the_scorers(model_dir, capsys, caplog):
    with caplog.at_level("WARNING", logger="llmrank_graph.cli"):
        assert main(["inspect", "--model", str(model_dir), "--centralities", "pagerank", "--json"]) == 0
    assert ("no calibration statistics: the pagerank defaults weighting 'activation_share' and personalization "
            "'activation' need them; using weighting 'abs' and personalization 'uniform' instead (pass --calibrate"
            ) in caplog.text
    rep = json.loads(capsys.readouterr().out)
    assert any(n.startswith("PageRank is not the pagerank scorer's here") for n in rep["notes"])


def test_rank_add_to_graph_then_inspect_uses_it(graph_dir, tmp_path, capsys):
    g = tmp_path / "g"
    lg.read_graph(graph_dir).to_parquet(g)
    assert main(["rank", "--graph", str(g), "--add-to-graph", "--backend", "scipy"]) == 0
    assert "stored column 'pagerank_reverse_a0.85_activation'" in capsys.readouterr().out
    h = lg.read_graph(g)
    ref = lg.pagerank(h, direction="reverse", personalization="activation", backend="scipy")
    np.testing.assert_allclose(h.scores["pagerank_reverse_a0.85_activation"], ref.scores, rtol=1e-12)
    meta = json.loads((g / "meta.json").read_text())
    assert meta["scores"]["pagerank_reverse_a0.85_activation"]["backend"] == "scipy"
    assert main(["rank", "--graph", str(g), "--add-to-graph"]) == 2
    assert "already stores 'pagerank_reverse_a0.85_activation'; pass --overwrite" in capsys.readouterr().err
    assert main(["rank", "--graph", str(g), "--add-to-graph", "--direction", "forward", "--alpha", "0.5"]) == 0
    capsys.readouterr()
    assert main(["inspect", "--graph", str(g), "--centralities", "pagerank", "--stored",
                 "pagerank_forward_a0.5_activation", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["scores"]["pagerank_reverse_a0.85_activation"] == "stored"
    assert rep["scores"]["pagerank_forward_a0.5_activation"] == "stored"


@pytest.mark.parametrize("fmt", ["graphml", "gexf"])
def test_export_for_viewers(graph_dir, model_dir, tmp_path, fmt, capsys):
    nx = pytest.importorskip("networkx")
    out = tmp_path / f"g.{fmt}"
    assert main(["export", "--graph", str(graph_dir), "--format", fmt, "--out", str(out), "--top-nodes", "4",
                 "--top-edges", "2"]) == 0
    G = nx.read_graphml(out) if fmt == "graphml" else nx.read_gexf(out)
    assert G.number_of_nodes() == 7 * 4 and G.number_of_edges() == 6 * 4 * 2
    v = next(iter(G.nodes))
    assert {"layer", "kind", "index", "activation"} <= set(G.nodes[v])
    out2 = tmp_path / f"m.{fmt}"
    assert main(["export", "--model", str(model_dir), "--format", fmt, "--out", str(out2)]) == 0
    G2 = nx.read_graphml(out2) if fmt == "graphml" else nx.read_gexf(out2)
    assert G2.number_of_edges() == 3 * 2 * 8 * 16  # the default keeps a tiny model whole


def test_bad_input_names_the_option(graph_dir, tmp_path, capsys, monkeypatch):
    cases = [
        (["inspect", "--graph", str(graph_dir), "--centralities", "pagerank,closeness"],
         "`--centralities` must be one of 'pagerank', 'katz', 'hits', 'eigenvector', 'strength', 'degree'; "
         "got 'closeness'"),
        (["inspect", "--graph", str(graph_dir), "--paths", "0"], "`--paths` must be a positive int; got 0"),
        (["inspect", "--graph", str(graph_dir), "--stored", "katz_forward_a0.1"],
         "`--stored` 'katz_forward_a0.1' is not a score stored with this graph (stored: none)"),
        (["export", "--graph", str(graph_dir), "--format", "graphml", "--out", str(tmp_path / "x.graphml"),
          "--min-weight", "100"], "the thresholds keep no edge"),
        (["export", "--graph", str(graph_dir), "--out", str(tmp_path / "x"), "--top-nodes", "3"],
         "--top-nodes applies to --format graphml or gexf only"),
        (["rank", "--model", "x"], "`--out` is required"),
        (["rank", "--out", str(tmp_path / "s.csv"), "--add-to-graph"], "`--add-to-graph` needs --graph DIR"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err, argv
    from llmrank_graph.graph import viewer

    monkeypatch.setattr(viewer, "VIEW_EDGE_LIMIT", 100)
    monkeypatch.setattr(viewer.to_networkx, "__kwdefaults__", {**viewer.to_networkx.__kwdefaults__, "max_edges": 100})
    out = tmp_path / "big.graphml"
    assert main(["export", "--graph", str(graph_dir), "--format", "graphml", "--out", str(out), "--top-edges",
                 "all"]) == 2
    err = capsys.readouterr().err
    assert "more than `max_edges`=100" in err and "--top-nodes" in err and "--force" in err
    assert main(["export", "--graph", str(graph_dir), "--format", "graphml", "--out", str(out), "--top-edges", "all",
                 "--force"]) == 0


def _options(parser, command):
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {a.option_strings[-1]: a for a in sub.choices[command]._actions if a.option_strings}


def test_defaults_are_the_library_constants():
    from llmrank_graph.cli import COMMANDS, build_parser, inspect
    from llmrank_graph.graph.mlpgraph import EXPORT_FORMATS
    from llmrank_graph.graph.viewer import VIEW_TOP_NODES

    assert inspect in COMMANDS
    parser = build_parser()
    opts = _options(parser, "inspect")
    assert opts["--centralities"].default == list(A.DEFAULT_CENTRALITIES)
    assert opts["--top"].default == A.TOP_K and opts["--amount"].default == A.DEFAULT_AMOUNT
    assert A.DEFAULT_AMOUNT == pytest.approx(0.3)
    export = _options(parser, "export")
    assert tuple(export["--format"].choices) == EXPORT_FORMATS and export["--format"].default == "parquet"
    assert str(VIEW_TOP_NODES) in export["--top-nodes"].help
    rank = _options(parser, "rank")
    assert rank["--out"].default is None and "--add-to-graph" in rank
