"""`inspect`'s top heads per layer on graphs exported with `--attention`, against networkx's PageRank."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from _tiny import word_tokenizer, write_corpus
from transformers import LlamaConfig, LlamaForCausalLM

import llmrank_graph as lg
from llmrank_graph import analysis as A
from llmrank_graph.analysis.inspect import HEAD_COLUMNS, TOP_HEADS
from llmrank_graph.cli import main
from llmrank_graph.errors import InvalidArgumentError, InvalidArgumentTypeError
from llmrank_graph.graph.heads import head_scores

nx = pytest.importorskip("networkx")

HEADS, KV = 4, 2  # grouped-query attention: heads 0, 1 read key/value group 0, heads 2, 3 group 1


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny Llama with grouped-query attention (3 layers, d=16, m=12, 4 heads in 2 KV groups) and a tokenizer."""
    torch.manual_seed(5)
    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=12, num_hidden_layers=3,
                      num_attention_heads=HEADS, num_key_value_heads=KV, max_position_embeddings=64)
    out = tmp_path_factory.mktemp("gqa") / "model"
    LlamaForCausalLM(cfg).eval().save_pretrained(out)
    word_tokenizer().save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("text") / "corpus.txt", 2000)


def _export(model_dir, out, *extra):
    assert main(["export", "--model", str(model_dir), "--out", str(out), *extra]) == 0
    return out


@pytest.fixture(scope="module")
def graphs(model_dir, text_file, tmp_path_factory):
    """Graph directories: with heads (plain |W| edges; calibrated, the pagerank scorer's edges) and without."""
    root = tmp_path_factory.mktemp("graphs")
    calibration = ["--calibrate", "--texts", str(text_file), "--n-samples", "2", "--seq-len", "16"]
    return {"heads": _export(model_dir, root / "heads", "--attention"),
            "calibrated": _export(model_dir, root / "calibrated", "--attention", *calibration),
            "plain": _export(model_dir, root / "plain")}


def networkx_pagerank(graph) -> np.ndarray:
    """The PageRank inspect documents, from networkx: reverse edges, alpha 0.85, teleport by activation if any."""
    e = graph.edges
    G = nx.DiGraph()
    G.add_nodes_from(range(graph.n_nodes))
    G.add_weighted_edges_from(zip(e.dst.tolist(), e.src.tolist(), e.weight.astype(float).tolist()))
    p = None
    if graph.has_activation:
        p = dict(enumerate(graph.activation / graph.activation.sum()))
    pr = nx.pagerank(G, alpha=0.85, personalization=p, tol=1e-13, max_iter=2000)
    return np.array([pr[i] for i in range(graph.n_nodes)])


def inspect_json(capsys, *argv) -> dict:
    assert main(["inspect", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("which,column", [("heads", "pagerank_reverse_a0.85"),
                                          ("calibrated", "pagerank_reverse_a0.85_activation")])
def test_top_heads_rank_networkx_pagerank(graphs, which, column, capsys):
    rep = inspect_json(capsys, "--graph", str(graphs[which]), "--top-heads", str(HEADS))
    heads = pd.DataFrame(rep["top_heads"])
    assert list(heads.columns) == list(HEAD_COLUMNS)
    assert set(heads.score) == {column}  # the one PageRank inspect computed, named as its neurons' column
    g = lg.read_graph(graphs[which])
    want = head_scores(g, networkx_pagerank(g))
    assert sorted(heads.layer.unique()) == sorted(want) == [0, 1, 2]
    for layer, s in want.items():
        got = heads[heads.layer == layer].sort_values("rank")
        s = s.numpy()
        order = sorted(range(HEADS), key=lambda h: (-s[h], h))
        assert got["head"].tolist() == order, layer
        assert got["rank"].tolist() == list(range(1, HEADS + 1))
        np.testing.assert_allclose(got.value.to_numpy(), s[order], rtol=1e-6)
        np.testing.assert_allclose(got.share.to_numpy(), s[order] / s.sum(), rtol=1e-6)
        assert got.share.sum() == pytest.approx(1.0, abs=1e-12)
        assert got.partition.unique().tolist() == [f"A{layer}"]
        part = next(p for p in g.head_partitions() if p.layer == layer)
        assert got.vertex.tolist() == [part.offset + h for h in order]
    # the neurons' table ranks the same PageRank vector: networkx's on an intermediate layer too
    top = pd.DataFrame(rep["top_neurons"])
    top = top[(top.score == column) & (top.layer == 0)].sort_values("rank")
    ref = networkx_pagerank(g)[g.intermediate_partitions()[0].offset + top["index"].to_numpy()]
    np.testing.assert_allclose(top.value.to_numpy(), ref, rtol=1e-6)


def test_kv_groups_are_the_heads_sharing_value_rows(graphs, capsys):
    """A head's KV group: heads of one group have the same in-edges (the group's value rows), other groups differ."""
    rep = inspect_json(capsys, "--graph", str(graphs["heads"]), "--top-heads", "10")
    heads = pd.DataFrame(rep["top_heads"])
    g = lg.read_graph(graphs["heads"])
    e = g.edges
    for part in g.head_partitions():
        rows = heads[heads.layer == part.layer].set_index("head").kv_group
        cols = {}
        for h in range(part.size):
            into = e[e.dst == part.offset + h].sort_values("src")
            cols[h] = into.weight.to_numpy(float)
        for a in range(part.size):
            for b in range(part.size):
                assert (rows[a] == rows[b]) == np.array_equal(cols[a], cols[b]), (part.layer, a, b)
        assert sorted(rows.unique()) == list(range(KV))


def test_fewer_heads_than_the_layer_has_and_the_text(graphs, capsys):
    g = lg.read_graph(graphs["heads"])
    full = A.inspect_graph(g, centralities=["pagerank"], k_heads=HEADS).top_heads
    rep = A.inspect_graph(g, centralities=["pagerank"], k_heads=2)
    assert (rep.top_heads.groupby("layer").size() == 2).all()
    pd.testing.assert_frame_equal(rep.top_heads.reset_index(drop=True),
                                  full[full["rank"] <= 2].reset_index(drop=True))
    assert (rep.top_heads.groupby("layer").share.sum() < 1).all()  # shares of the whole layer's head mass
    assert main(["inspect", "--graph", str(graphs["heads"]), "--top-heads", "2"]) == 0
    text = capsys.readouterr().out
    header = "top 2 heads per layer by pagerank_reverse_a0.85 (share: fraction of the layer's head mass):"
    assert header in text
    lines = text.splitlines()
    at = lines.index(header)
    rows = [line.split() for line in lines[at + 2:at + 2 + 6]]
    want = rep.top_heads.sort_values(["layer", "rank"])
    assert [[int(r[0]), int(r[1]), int(r[2]), int(r[3])] for r in rows] == \
        want[["layer", "rank", "head", "kv_group"]].to_numpy().tolist()
    np.testing.assert_allclose([float(r[5]) for r in rows], want.share, atol=5e-4)
    assert "has no head nodes" not in text


def test_json_csv_and_layers_subset(graphs, tmp_path, capsys):
    out = tmp_path / "report"
    rep = inspect_json(capsys, "--graph", str(graphs["heads"]), "--layers", "2", "--centralities", "pagerank",
                       "--out", str(out))
    g = lg.read_graph(graphs["heads"], [2])
    api = A.inspect_graph(g, centralities=["pagerank"])
    got = pd.DataFrame(rep["top_heads"])
    assert got.layer.unique().tolist() == [2] and len(got) == min(TOP_HEADS, HEADS)
    assert got.kv_group.tolist() == api.top_heads.kv_group.tolist()
    assert got["head"].tolist() == api.top_heads["head"].tolist()
    assert sorted(zip(got["head"], got.kv_group)) == [(h, h // (HEADS // KV)) for h in range(HEADS)]
    csv = pd.read_csv(out / "top_heads.csv")
    np.testing.assert_allclose(csv.value, api.top_heads.value, rtol=1e-12)


def test_a_graph_without_heads_says_so_in_one_line(graphs, capsys):
    assert main(["inspect", "--graph", str(graphs["plain"])]) == 0
    text = capsys.readouterr().out
    said = [line for line in text.splitlines() if "head" in line and "heads per layer" in line]
    assert said == ["top heads per layer: the graph has no head nodes (export it with attention=True, or "
                    "export/inspect --attention)"]
    assert "kv group" not in text
    rep = inspect_json(capsys, "--graph", str(graphs["plain"]))
    assert rep["top_heads"] is None
    assert A.inspect_graph(lg.read_graph(graphs["plain"]), centralities=["pagerank"]).top_heads is None


def test_heads_without_a_pagerank_say_why(graphs, capsys):
    assert main(["inspect", "--graph", str(graphs["heads"]), "--centralities", "strength"]) == 0
    text = capsys.readouterr().out
    assert "top heads per layer: no PageRank among the scores to rank the heads by" in text
    rep = inspect_json(capsys, "--graph", str(graphs["heads"]), "--centralities", "strength")
    assert rep["top_heads"] == []


@pytest.mark.parametrize("value,message", [
    ("0", "`--top-heads` must be a positive int; got 0"),
    ("-2", "`--top-heads` must be a positive int; got -2"),
    ("two", "argument --top-heads: invalid int value: 'two'"),
])
def test_bad_top_heads_names_the_option(graphs, value, message, capsys):
    assert main(["inspect", "--graph", str(graphs["heads"]), "--top-heads", value]) == 2
    assert message in capsys.readouterr().err


def test_bad_k_heads_names_the_parameter(graphs):
    g = lg.read_graph(graphs["heads"])
    with pytest.raises(InvalidArgumentError, match="`k_heads` must be a positive int; got 0"):
        A.inspect_graph(g, k_heads=0)
    with pytest.raises(InvalidArgumentTypeError, match="`k_heads` must be a positive int; got 1.5"):
        A.inspect_graph(g, k_heads=1.5)


def test_top_heads_default_is_the_library_constant():
    from test_cli_inspect import _options

    from llmrank_graph.cli import build_parser

    assert _options(build_parser(), "inspect")["--top-heads"].default == TOP_HEADS
