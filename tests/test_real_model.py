"""Slow tests on the embedded SmolLM2-135M-Instruct (run with --run-slow; loaded once per run)."""

import copy

import numpy as np
import pytest
import torch

import llmrank_graph as lg
from llmrank_graph.models.architectures import mlp_layers

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_stats(real_model):
    model, tok = real_model
    return lg.calibrate(model, tok, n_samples=2, seq_len=128, batch_size=2)


def test_real_graph_and_pagerank(real_model, real_stats):
    model, _ = real_model
    g = lg.export_graph(model, real_stats, weighting="abs")
    assert (g.n_nodes, g.n_edges) == (63_936, 53_084_160)
    sweep = lg.pagerank(g, backend="sweep", personalization="activation", direction="reverse")
    scipy = lg.pagerank(g, backend="scipy", personalization="activation", direction="reverse", tol=1e-13)
    assert np.abs(sweep.scores - scipy.scores).sum() < 1e-6
    # one edge checked against the weights through the node table
    e, n = g.edges, g.nodes
    row = e.iloc[12_345_678]
    s, d = n.loc[row.src], n.loc[row.dst]
    if d.kind == "intermediate":  # H_l -> I_l: |W_up[j, i]|
        w = mlp_layers(model)[int(d.layer)].weight("up").detach()[int(d["index"]), int(s["index"])]
    else:  # I_l -> H_l+1: |W_down[i, j]|
        w = mlp_layers(model)[int(s.layer)].weight("down").detach()[int(d["index"]), int(s["index"])]
    assert row.weight == pytest.approx(abs(float(w)))


def test_real_prune_remove_equals_zero(real_model, real_stats):
    model, tok = real_model
    ids = tok("The quick brown fox jumps over the lazy dog. " * 4, return_tensors="pt").input_ids
    removed = lg.prune_model(copy.deepcopy(model), real_stats, amount=0.3, how="remove")
    zeroed = lg.prune_model(copy.deepcopy(model), real_stats, amount=0.3, how="zero")
    for layer in range(30):
        assert torch.equal(removed.masks.intermediate[layer], zeroed.masks.intermediate[layer])
    assert [m.intermediate_size for m in mlp_layers(removed.model)] == [1075] * 30
    with torch.no_grad():
        a = removed.model(input_ids=ids).logits
        b = zeroed.model(input_ids=ids).logits
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
