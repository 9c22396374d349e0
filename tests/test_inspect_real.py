"""Slow: `inspect` and the viewer export on the embedded SmolLM2-135M-Instruct (run with --run-slow)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import llmrank_graph as lg
from llmrank_graph import analysis as A
from llmrank_graph.errors import InvalidArgumentError
from llmrank_graph.graph import viewer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_graph(real_model):
    model, tok = real_model
    stats = lg.calibrate(model, tok, n_samples=2, seq_len=128, batch_size=2)
    return model, stats, lg.export_graph(model, stats, weighting="abs")


def test_inspect_real_model(real_graph, tmp_path):
    model, stats, g = real_graph
    rep = A.inspect_graph(g, model=model, stats=stats, paths=3)
    assert rep.info["n_edges"] == 53_084_160 and rep.info["n_layers"] == 30
    assert set(rep.sources) == {"pagerank_reverse_a0.85_activation", "katz_forward_a0.1", "strength_in",
                                "magnitude", "activation", "wanda-sp"}
    # the model's baselines: what the graph gives for activation equals score_neurons
    act = A.baseline_scores(g, ["activation"])["activation"]
    p = g.intermediate_partitions()[7]
    np.testing.assert_allclose(act[p.offset:p.stop], stats.input_norm("model.layers.7.mlp.down_proj").numpy(),
                               rtol=1e-6)
    c = rep.correlations
    overall = c[c.scope == "all"].set_index(["a", "b"])
    # in-strength is the L1 norm of the up row, magnitude its L2 norm: strongly correlated
    assert overall.loc[("strength_in", "magnitude"), "spearman"] > 0.8
    assert np.isfinite(c.spearman).all() and c.spearman.between(-1, 1).all()
    mass = rep.mass
    assert mass.share.sum() == pytest.approx(1.0)
    paths = rep.paths
    assert len(paths) == 3 and (paths.length == 60).all() and paths.score.is_monotonic_decreasing
    out = rep.write(tmp_path / "report")
    assert json.loads((out / "report.json").read_text())["graph"]["n_nodes"] == 63_936
    assert (out / "mass.png").stat().st_size > 10_000


def test_viewer_default_keeps_smollm2_viewable(real_graph):
    pytest.importorskip("networkx")
    _, _, g = real_graph
    G = g.to_networkx()
    assert G.number_of_nodes() == 61 * viewer.VIEW_TOP_NODES  # 3,904 nodes
    assert 10_000 < G.number_of_edges() <= viewer.VIEW_EDGE_BUDGET
    with pytest.raises(InvalidArgumentError, match="more than `max_edges`=1,000,000"):
        g.to_networkx(top_nodes=None, top_edges=None)
