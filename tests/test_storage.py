"""Graph directories: block-by-block Parquet, lazy and partial reads, stored scores, to_cudf's partitioned path."""

from __future__ import annotations

import importlib.machinery
import json
import sys
import threading
import types

import numpy as np
import pandas as pd
import pytest
import torch
from _tiny import tiny_llama
from numpy.testing import assert_allclose

import llmrank_graph as lg
from llmrank_graph.errors import InvalidArgumentError
from llmrank_graph.graph import storage
from llmrank_graph.graph.mlpgraph import GraphFormatError


def _stats(model, seed=0):
    ids = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(seed))
    return lg.calibrate(model, input_ids=ids, batch_size=2)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = tiny_llama(seed=7)
    g = lg.export_graph(model, _stats(model), residual=0.25)
    path = g.to_parquet(tmp_path_factory.mktemp("g") / "graph")
    return g, path


def test_lazy_read_loads_blocks_on_demand(exported):
    g, path = exported
    h = lg.read_graph(path, lazy=True)
    assert not h.resident and all(isinstance(b, storage.ParquetBlock) for b in h.blocks)
    assert [b.layout for b in h.blocks] == ["dense", "coo", "dense"] * 3  # up, residual, down per layer
    pd.testing.assert_frame_equal(h.nodes, g.nodes)
    pd.testing.assert_frame_equal(h.edges.reset_index(drop=True), g.edges)
    for direction in ("forward", "reverse"):
        a = lg.pagerank(g, backend="sweep", direction=direction, personalization="activation")
        b = lg.pagerank(h, backend="sweep", direction=direction, personalization="activation")
        assert_allclose(b.scores, a.scores, rtol=1e-12)
    e = lg.read_graph(path, lazy=False)
    assert e.resident and not any(isinstance(b, storage.ParquetBlock) for b in e.blocks)
    pd.testing.assert_frame_equal(e.edges.reset_index(drop=True), g.edges)


def test_blocks_span_several_row_groups(exported, tmp_path, monkeypatch):
    g, _ = exported
    monkeypatch.setattr(storage, "ROW_GROUP_ROWS", 17)  # every weight block in 6 row groups
    path = g.to_parquet(tmp_path / "g")
    meta = json.loads((path / "meta.json").read_text())
    assert [r1 - r0 for *_, r0, r1 in meta["blocks"]][:3] == [6, 1, 6]
    import pyarrow.parquet as pq

    md = pq.ParquetFile(path / "edges.parquet").metadata
    assert md.num_row_groups == sum(r1 - r0 for *_, r0, r1 in meta["blocks"])
    h = lg.read_graph(path, lazy=True)
    pd.testing.assert_frame_equal(h.edges.reset_index(drop=True), g.edges)


def test_read_a_subset_of_layers(exported):
    g, path = exported
    sub = lg.read_graph(path, layers=[1, 2])
    names = [p.name for p in sub.partitions]
    assert names == ["H1", "I1", "H2", "I2", "H3"]
    old = np.concatenate([np.arange(p.offset, p.stop) for p in g.partitions if p.name in names])
    full = g.nodes.iloc[old].reset_index(drop=True)
    assert_allclose(sub.nodes.activation, full.activation)
    assert (sub.nodes[["layer", "index"]].to_numpy() == full[["layer", "index"]].to_numpy()).all()
    # the subgraph's edges are the full graph's edges of layers 1 and 2, renumbered
    e = g.edge_table(layer=True)
    e = e[e.layer.isin([1, 2])]
    new_id = np.full(g.n_nodes, -1)
    new_id[old] = np.arange(old.size)
    want = pd.DataFrame({"src": new_id[e.src], "dst": new_id[e.dst], "weight": e.weight.to_numpy()})
    got = sub.edges
    key = ["src", "dst"]
    pd.testing.assert_frame_equal(got.sort_values(key).reset_index(drop=True),
                                  want.sort_values(key).reset_index(drop=True), check_dtype=False)
    assert sub.meta["layers"] == [1, 2] and sub.n_layers == 2
    # PageRank of the subset = PageRank of the same edges built from a table
    ref = lg.MLPGraph.from_edgelist(sub.nodes, want, meta=sub.meta)
    assert_allclose(lg.pagerank(sub).scores, lg.pagerank(ref).scores, rtol=1e-10)
    with pytest.raises(InvalidArgumentError, match=r"`layers` must be layer numbers of this graph \(0..2\); got 5"):
        lg.read_graph(path, layers=[5])


def test_damaged_block_table_is_refused(exported, tmp_path):
    g, _ = exported
    path = g.to_parquet(tmp_path / "g")
    meta = json.loads((path / "meta.json").read_text())
    meta["blocks"][0][4] += 1  # an edge count that the row groups do not have
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(GraphFormatError, match="block table of meta.json does not match edges.parquet"):
        lg.read_graph(path)


def test_old_single_file_graphs_still_read(exported, tmp_path):
    """A directory written before the block table (no 'blocks' in meta.json) is read whole, as before."""
    g, path = exported
    meta = json.loads((path / "meta.json").read_text())
    old = tmp_path / "old"
    old.mkdir()
    for f in ("nodes.parquet", "edges.parquet"):
        (old / f).write_bytes((path / f).read_bytes())
    for k in ("blocks", "nodes_file", "format_version", "row_group_rows", "scores"):
        meta.pop(k)
    (old / "meta.json").write_text(json.dumps(meta))
    h = lg.read_graph(old)
    pd.testing.assert_frame_equal(h.edges.reset_index(drop=True), g.edges)
    with pytest.raises(InvalidArgumentError, match="`layers` needs a graph directory with a block table"):
        lg.read_graph(old, layers=[0])


# ----------------------------------------------------------------------------- stored scores
def test_score_columns_round_trip(exported, tmp_path):
    g, _ = exported
    path = g.to_parquet(tmp_path / "g")
    pr = lg.pagerank(g, direction="reverse")
    name = storage.score_column_name(pr)
    assert name == "pagerank_reverse_a0.85"
    ranks = np.argsort(np.argsort(-pr.scores)).astype(np.int64)
    half = pr.scores.astype(np.float32)
    storage.add_scores(path, {name: pr})
    storage.add_scores(path, {"pr_rank": ranks, "pr_f32": half}, {"pr_rank": {"note": "rank, 0 = best"}})
    meta = json.loads((path / "meta.json").read_text())
    assert meta["nodes_file"] == "nodes.2.parquet"
    assert sorted(p.name for p in path.iterdir() if p.suffix == ".parquet") == ["edges.parquet", "nodes.2.parquet"]
    info = meta["scores"]
    assert info[name]["algorithm"] == "pagerank" and info[name]["params"]["direction"] == "reverse"
    assert info[name]["dtype"] == "float64" and info["pr_rank"]["dtype"] == "int64"
    assert info["pr_f32"]["dtype"] == "float32" and info["pr_rank"]["note"] == "rank, 0 = best"
    h = lg.read_graph(path)
    assert list(h.scores) == [name, "pr_rank", "pr_f32"]
    assert h.scores[name].dtype == np.float64 and h.scores["pr_rank"].dtype == np.int64
    assert h.scores["pr_f32"].dtype == np.float32
    assert_allclose(h.nodes[name], pr.scores, rtol=0)
    assert (h.nodes["pr_rank"].to_numpy() == ranks).all()
    # written again (block by block, scores in the node table) they survive
    again = h.to_parquet(tmp_path / "again")
    assert lg.read_graph(again).score_info["pr_rank"]["note"] == "rank, 0 = best"
    assert (lg.read_graph(again).scores["pr_rank"] == ranks).all()
    # a subset slices them
    sub = lg.read_graph(path, layers=[2])
    H2 = g.partitions[4]
    assert_allclose(sub.scores[name][:H2.size], pr.scores[H2.offset:H2.stop])


def test_score_columns_refused(exported, tmp_path):
    g, _ = exported
    path = g.to_parquet(tmp_path / "g")
    storage.add_scores(path, {"a": np.ones(g.n_nodes)})
    with pytest.raises(InvalidArgumentError, match="`scores` 'a' is already stored in .*pass overwrite=True"):
        storage.add_scores(path, {"a": np.zeros(g.n_nodes)})
    storage.add_scores(path, {"a": np.zeros(g.n_nodes)}, overwrite=True)
    assert (lg.read_graph(path).scores["a"] == 0).all()
    with pytest.raises(InvalidArgumentError, match="must have one value per node: length 68; got length 3"):
        storage.add_scores(path, {"b": np.ones(3)})
    with pytest.raises(InvalidArgumentError, match="`name` must be a column name of letters"):
        storage.add_scores(path, {"activation": np.ones(g.n_nodes)})
    with pytest.raises(InvalidArgumentError, match="`name` must be a column name"):
        storage.add_scores(path, {"two words": np.ones(g.n_nodes)})
    with pytest.raises(TypeError, match="a 1-D array of 68 numbers"):
        storage.add_scores(path, {"s": np.array(["x"] * g.n_nodes)})
    meta = json.loads((path / "meta.json").read_text())
    meta["scores"]["ghost"] = {"dtype": "float64"}
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(GraphFormatError, match="lists the stored score 'ghost' but the node table has no such column"):
        lg.read_graph(path)


def test_concurrent_score_writers_both_land(exported, tmp_path):
    g, _ = exported
    path = g.to_parquet(tmp_path / "g")
    errors = []

    def add(name):
        try:
            storage.add_scores(path, {name: np.full(g.n_nodes, float(len(name)))})
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=add, args=(f"s{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(lg.read_graph(path).scores) == [f"s{i}" for i in range(6)]
    assert len([p for p in path.iterdir() if p.name.startswith("nodes")]) == 1


# ----------------------------------------------------------------------------- streamed graphs and cuDF
def test_streamed_graph_to_parquet_and_back(tmp_path):
    model = tiny_llama(seed=9)
    model.save_pretrained(tmp_path / "model")
    streamed = lg.export_graph_from_safetensors(tmp_path / "model")
    path = streamed.to_parquet(tmp_path / "g")
    h = lg.read_graph(path, lazy=True)
    pd.testing.assert_frame_equal(h.edges.reset_index(drop=True), lg.export_graph(model).edges)


def _module(name, **attrs):
    m = types.ModuleType(name)
    m.__spec__ = importlib.machinery.ModuleSpec(name, None)
    m.__dict__.update(attrs)
    return m


def test_to_cudf_partitioned_reads_parquet_with_dask_cudf(exported, monkeypatch):
    """The partitioned path hands edges.parquet to ``dask_cudf.read_parquet(path, columns=...)``.

    Stand-ins follow the documented calls: ``cudf.from_pandas`` and ``dask_cudf.read_parquet``
    (https://github.com/rapidsai/cudf/blob/main/python/dask_cudf/README.md: "df =
    dask_cudf.read_parquet(...)"; arguments as dask.dataframe.read_parquet,
    https://docs.dask.org/en/stable/generated/dask.dataframe.read_parquet.html: path, columns).
    """
    g, path = exported
    calls = []

    def read_parquet(p, columns=None, **kw):
        calls.append((p, columns, kw))
        return pd.read_parquet(p, columns=columns)

    monkeypatch.setitem(sys.modules, "cudf", _module("cudf", from_pandas=lambda df: df.copy()))
    monkeypatch.setitem(sys.modules, "dask_cudf", _module("dask_cudf", read_parquet=read_parquet))
    import llmrank_graph.base.optional as opt

    monkeypatch.setattr(opt, "cuda_available", lambda: True)
    h = lg.read_graph(path)
    nodes, edges = h.to_cudf(partitioned=True)
    assert calls == [(str(path / "edges.parquet"), ["src", "dst", "weight"], {})]
    pd.testing.assert_frame_equal(edges.reset_index(drop=True), g.edges)
    assert (nodes.kind == g.nodes.kind.astype(str)).all()
    with pytest.raises(InvalidArgumentError, match="`partitioned=True` reads edges.parquet"):
        g.to_cudf(partitioned=True)  # not read from a directory
    with pytest.raises(InvalidArgumentError, match="`partitioned=True`"):
        lg.read_graph(path, layers=[0]).to_cudf(partitioned=True)
    monkeypatch.delitem(sys.modules, "dask_cudf")
    monkeypatch.setattr(opt, "has_module", lambda name: name != "dask_cudf")
    with pytest.raises(ImportError, match=r"dask_cudf is not installed; install it with `pip install "
                                          r"llmrank-graph\[gpu\]`"):
        h.to_cudf(partitioned=True)
