import json

import numpy as np
import pandas as pd
import pytest
import torch
from _tiny import tiny_gpt2, tiny_llama

import llmrank_graph as lg
from llmrank_graph.graph.mlpgraph import GraphFormatError
from llmrank_graph.models.architectures import mlp_layers


def _stats(model, seed=0):
    return lg.calibrate(model, input_ids=torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(seed)),
                        batch_size=2)


def _block_weights(graph, src_part, dst_part):
    """Dense (dst, src) matrix of the edges between two partitions, from the edge list."""
    e = graph.edges
    a, b = graph.partitions[src_part], graph.partitions[dst_part]
    sel = e[(e.src >= a.offset) & (e.src < a.stop) & (e.dst >= b.offset) & (e.dst < b.stop)]
    out = np.zeros((b.size, a.size), dtype=np.float32)
    out[sel.dst.to_numpy() - b.offset, sel.src.to_numpy() - a.offset] = sel.weight.to_numpy()
    return out, len(sel)


def test_chained_structure_and_node_table():
    model = tiny_llama(layers=3, d=8, m=12)
    g = lg.export_graph(model)
    assert g.n_nodes == 3 * (8 + 12) + 8
    assert g.n_edges == 3 * 2 * 8 * 12 == len(g.edges)
    n = g.nodes
    assert list(n.columns[:5]) == ["vertex", "layer", "kind", "index", "activation"]
    assert np.array_equal(n.vertex, np.arange(g.n_nodes))
    # H_0, I_0, H_1, ... in topological order; the last hidden partition has layer=L
    kinds = n.groupby("partition", sort=True).agg(kind=("kind", "first"), layer=("layer", "first"),
                                                  size=("vertex", "size"))
    assert list(kinds.kind) == ["hidden", "intermediate"] * 3 + ["hidden"]
    assert list(kinds.layer) == [0, 0, 1, 1, 2, 2, 3]
    assert list(kinds["size"]) == [8, 12] * 3 + [8]
    assert n.activation.isna().all()
    e = g.edges
    assert e.dtypes.to_dict() == {"src": np.int64, "dst": np.int64, "weight": np.float32}
    # every edge goes forward in topological order (a DAG)
    assert (n.partition.to_numpy()[e.src] < n.partition.to_numpy()[e.dst]).all()


@pytest.mark.parametrize("mode", ["chained", "isolated"])
def test_edge_weights_are_abs_weights_at_node_positions(mode):
    model = tiny_llama(seed=1)
    g = lg.export_graph(model, mode=mode)
    per = 2 if mode == "chained" else 3
    for l, mlp in enumerate(mlp_layers(model)):
        up, k = _block_weights(g, per * l, per * l + 1)
        assert k == up.size
        np.testing.assert_array_equal(up, mlp.weight("up").detach().abs().numpy())
        down, _ = _block_weights(g, per * l + 1, per * l + 2)
        np.testing.assert_array_equal(down, mlp.weight("down").detach().abs().numpy())
    # the node table names the same positions: take one edge and look both ends up
    e, n = g.edges, g.nodes
    row = e.iloc[len(e) // 3]
    s, d = n.loc[row.src], n.loc[row.dst]
    if s.kind == "hidden":
        w = mlp_layers(model)[d.layer].weight("up").detach()[d["index"], s["index"]]
    else:
        w = mlp_layers(model)[s.layer].weight("down").detach()[d["index"], s["index"]]
    assert row.weight == pytest.approx(abs(float(w)))


def test_isolated_has_disconnected_components():
    g = lg.export_graph(tiny_llama(), mode="isolated")
    assert len(g.partitions) == 9 and g.n_nodes == 3 * (8 + 12 + 8)
    lay = g.nodes.layer.to_numpy()
    e = g.edges
    assert (lay[e.src] == lay[e.dst]).all()


@pytest.mark.parametrize("gate", ["gate", "sum", "max"])
def test_gate_choices(gate):
    model = tiny_llama(seed=2)
    g = lg.export_graph(model, gate=gate)
    mlp = mlp_layers(model)[1]
    up, gt = mlp.weight("up").detach().abs().numpy(), mlp.weight("gate").detach().abs().numpy()
    want = {"gate": gt, "sum": up + gt, "max": np.maximum(up, gt)}[gate]
    got, _ = _block_weights(g, 2, 3)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_residual_and_activation_weighting():
    model = tiny_llama(seed=3)
    stats = _stats(model)
    g = lg.export_graph(model, stats, residual=0.25, weighting="abs_x_input")
    assert g.n_edges == 3 * 2 * 8 * 12 + 3 * 8
    mlp = mlp_layers(model)[0]
    a_in = stats.input_norm(mlp.up_name).numpy()
    a_mid = stats.input_norm(mlp.down_name).numpy()
    up, _ = _block_weights(g, 0, 1)
    np.testing.assert_allclose(up, mlp.weight("up").detach().abs().numpy() * a_in[None, :], rtol=1e-6)
    down, _ = _block_weights(g, 1, 2)
    np.testing.assert_allclose(down, mlp.weight("down").detach().abs().numpy() * a_mid[None, :], rtol=1e-6)
    res, k = _block_weights(g, 0, 2)
    assert k == 8
    np.testing.assert_allclose(np.diag(res), 0.25 * a_in, rtol=1e-6)
    # node activations: H_l = input norm of up_l, I_l = input norm of down_l, H_L = output of down_{L-1}
    n = g.nodes
    np.testing.assert_allclose(n.activation[n.partition == 0], a_in)
    np.testing.assert_allclose(n.activation[n.partition == 1], a_mid)
    last = mlp_layers(model)[-1]
    np.testing.assert_allclose(n.activation[n.partition == 6], stats.output_norm(last.down_name).numpy())


def test_keep_topk_and_quantile():
    model = tiny_llama(seed=4)
    g = lg.export_graph(model, keep=3)
    assert g.n_edges == 3 * (12 * 3 + 8 * 3)
    up, _ = _block_weights(g, 0, 1)
    full = mlp_layers(model)[0].weight("up").detach().abs().numpy()
    for j in range(12):
        kept = np.flatnonzero(up[j])
        assert set(kept) == set(np.argsort(-full[j])[:3])
    gq = lg.export_graph(model, keep=0.25)
    allw = lg.export_graph(model).edges.weight.to_numpy()
    assert gq.n_edges == pytest.approx(0.25 * len(allw), abs=2)
    assert gq.edges.weight.min() >= np.quantile(allw, 0.75) - 1e-7


def test_gpt2_non_gated():
    model = tiny_gpt2()
    g = lg.export_graph(model)
    mlp = mlp_layers(model)[0]
    assert mlp.intermediate_size == 32 and mlp.hidden_size == 8
    up, _ = _block_weights(g, 0, 1)
    np.testing.assert_array_equal(up, mlp.up.weight.detach().abs().numpy().T)


@pytest.mark.parametrize("kw, arg", [({"mode": "stacked"}, "mode"), ({"gate": "both"}, "gate"),
                                     ({"weighting": "wanda"}, "weighting"), ({"residual": -1.0}, "residual"),
                                     ({"keep": 0}, "keep"), ({"keep": 1.5}, "keep")])
def test_export_bad_options(kw, arg):
    with pytest.raises(ValueError, match=f"`{arg}`"):
        lg.export_graph(tiny_llama(), **kw)


def test_unknown_mode_lists_allowed():
    with pytest.raises(ValueError, match="'chained', 'isolated'; got 'stacked'"):
        lg.export_graph(tiny_llama(), mode="stacked")


def test_abs_x_input_needs_stats():
    with pytest.raises(ValueError, match="stats"):
        lg.export_graph(tiny_llama(), weighting="abs_x_input")


def test_stats_from_other_model_rejected():
    stats = _stats(tiny_llama(m=12))
    with pytest.raises(ValueError, match=r"gate_proj.*\(8, 16\).*\(8, 12\)"):
        lg.export_graph(tiny_llama(m=16), stats)


def test_graph_model_mismatch():
    g = lg.export_graph(tiny_llama(m=12))
    g.check_model(tiny_llama(m=12))
    with pytest.raises(ValueError, match="does not match `model`"):
        g.check_model(tiny_llama(m=16))


def test_nan_weights_rejected():
    model = tiny_llama()
    with torch.no_grad():
        mlp_layers(model)[1].down.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf.*down weight of layer 1"):
        lg.export_graph(model)


def test_unsupported_architecture():
    from transformers import BertConfig, BertLMHeadModel

    model = BertLMHeadModel(BertConfig(vocab_size=32, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=12, is_decoder=True))
    with pytest.raises(lg.UnsupportedArchitectureError, match="bert.*Supported families: llama"):
        lg.export_graph(model)


# ------------------------------------------------------------------ parquet
def test_parquet_round_trip_same_pagerank(tmp_path):
    model = tiny_llama(seed=5)
    g = lg.export_graph(model, _stats(model), residual=0.1)
    out = g.to_parquet(tmp_path / "g")
    assert sorted(p.name for p in out.iterdir()) == ["edges.parquet", "meta.json", "nodes.parquet"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["mode"] == "chained" and meta["library_version"] == lg.__version__ and meta["n_edges"] == g.n_edges
    h = lg.read_graph(out)
    pd.testing.assert_frame_equal(h.nodes, g.nodes)
    pd.testing.assert_frame_equal(h.edges.reset_index(drop=True), g.edges)
    for backend in ["scipy", "sweep"]:
        for direction in ["forward", "reverse"]:
            a = lg.pagerank(g, backend=backend, direction=direction, personalization="activation", tol=1e-13)
            b = lg.pagerank(h, backend=backend, direction=direction, personalization="activation", tol=1e-13)
            assert np.abs(a.scores - b.scores).sum() < 1e-10


def test_parquet_refuses_existing_dir(tmp_path):
    g = lg.export_graph(tiny_llama())
    g.to_parquet(tmp_path / "g")
    with pytest.raises(FileExistsError, match="overwrite"):
        g.to_parquet(tmp_path / "g")
    g.to_parquet(tmp_path / "g", overwrite=True)
    assert lg.read_graph(tmp_path / "g").n_edges == g.n_edges


def test_interrupted_export_leaves_nothing(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    g = lg.export_graph(tiny_llama())

    def fail_on_edges(self, table, *a, **kw):  # edges are written block by block
        raise KeyboardInterrupt

    monkeypatch.setattr(pq.ParquetWriter, "write_table", fail_on_edges)
    with pytest.raises(KeyboardInterrupt):
        g.to_parquet(tmp_path / "g")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", ["no_meta", "no_edges", "truncated_edges", "bad_json", "wrong_count", "bad_vertex"])
def test_damaged_directory_refused(tmp_path, damage):
    g = lg.export_graph(tiny_llama())
    d = g.to_parquet(tmp_path / "g")
    meta = json.loads((d / "meta.json").read_text())
    if damage == "no_meta":
        (d / "meta.json").unlink()
    elif damage == "no_edges":
        (d / "edges.parquet").unlink()
    elif damage == "truncated_edges":
        data = (d / "edges.parquet").read_bytes()
        (d / "edges.parquet").write_bytes(data[: len(data) // 2])
    elif damage == "bad_json":
        (d / "meta.json").write_text("{not json")
    elif damage == "wrong_count":
        meta["n_edges"] += 1
        (d / "meta.json").write_text(json.dumps(meta))
    elif damage == "bad_vertex":
        import pyarrow as pa
        import pyarrow.parquet as pq

        e = g.edge_table(layer=True)
        e.loc[0, "dst"] = 10_000
        pq.write_table(pa.Table.from_pandas(e, preserve_index=False), d / "edges.parquet")
        meta["files"]["edges.parquet"] = (d / "edges.parquet").stat().st_size
        (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(GraphFormatError, match="`path`"):
        lg.read_graph(d)


def test_read_missing_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="`path`"):
        lg.read_graph(tmp_path / "nope")


def test_activation_share_weighting():
    """Each node sends exactly its activation norm, split over its out-edges by |W|."""
    model = tiny_llama(seed=6)
    stats = _stats(model)
    g = lg.export_graph(model, stats, weighting="activation_share")
    mlp = mlp_layers(model)[1]
    for src, dst, which, a in ((2, 3, "up", stats.input_norm(mlp.up_name)),
                               (3, 4, "down", stats.input_norm(mlp.down_name))):
        W = mlp.weight(which).detach().abs().double().numpy()
        got, _ = _block_weights(g, src, dst)
        np.testing.assert_allclose(got, W * (a.numpy() / W.sum(0))[None, :], rtol=1e-5)
        np.testing.assert_allclose(got.sum(0), a.numpy(), rtol=1e-5)
    with pytest.raises(ValueError, match="activation_share.*stats"):
        lg.export_graph(model, weighting="activation_share")


def test_default_weighting_is_the_pagerank_scorers_with_stats():
    """With calibration statistics the default graph is the pagerank scorer's (one place: CALIBRATED_EXPORT)."""
    from llmrank_graph.graph.export import CALIBRATED_EXPORT, DEFAULT_EXPORT
    from llmrank_graph.scoring import PAGERANK_EXPORT

    assert PAGERANK_EXPORT == CALIBRATED_EXPORT and CALIBRATED_EXPORT.weighting == "activation_share"
    model = tiny_llama(seed=6)
    stats = _stats(model)
    calibrated = lg.export_graph(model, stats)
    assert calibrated.meta["weighting"] == "activation_share" and calibrated.has_activation
    assert calibrated.edges.equals(lg.export_graph(model, stats, weighting="activation_share").edges)
    assert lg.export_graph(model).meta["weighting"] == DEFAULT_EXPORT.weighting == "abs"  # needs no stats
    assert lg.export_graph(model, stats, mode="isolated").meta["weighting"] == "activation_share"
    assert lg.export_graph(model, stats, options=DEFAULT_EXPORT).meta["weighting"] == "abs"


def test_overwrite_replaces_only_graph_directories(tmp_path):
    g = lg.export_graph(tiny_llama())
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a directory"):
        g.to_parquet(tmp_path / "file", overwrite=True)
    assert (tmp_path / "file").read_text() == "x"
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a graph written by llmrank_graph"):
        g.to_parquet(other, overwrite=True)
    assert (other / "keep.txt").read_text() == "mine"
    g.to_parquet(other, overwrite=True, force=True)
    assert lg.read_graph(other).n_edges == g.n_edges
