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
    g = lg.export_graph(model, _stats(model), residual=0.25, weighting="abs")
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


# ----------------------------------------------------------------------------- damaged edges (issue 16)
def _rewrite_edges(path, change, *, declare_order=False, statistics=True):
    """Rewrite edges.parquet as another tool would: row group by row group, each through ``change(block, frame)``.

    The row groups stay as they were (so the block table still fits), the file loses its declared
    row order unless ``declare_order`` (and its footer statistics without ``statistics``), and
    meta.json's counts and sizes follow the new file.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    meta = json.loads((path / "meta.json").read_text())
    pf = pq.ParquetFile(path / "edges.parquet")
    schema = pf.schema_arrow
    frames = [pf.read_row_group(i).to_pandas() for i in range(pf.metadata.num_row_groups)]
    block_of = {rg: i for i, b in enumerate(meta["blocks"]) for rg in range(b[6], b[7])}
    order = [pq.SortingColumn(schema.get_field_index(c)) for c in ("dst", "src")] if declare_order else None
    tmp = path / "edges.rewritten"
    with pq.ParquetWriter(tmp, schema, sorting_columns=order, write_statistics=statistics) as writer:
        for rg, df in enumerate(frames):
            new = change(block_of[rg], df.copy())
            meta["blocks"][block_of[rg]][4] += len(new) - len(df)
            writer.write_table(pa.Table.from_pandas(new, schema=schema, preserve_index=False))
    tmp.replace(path / "edges.parquet")
    meta["n_edges"] = sum(b[4] for b in meta["blocks"])
    meta["files"]["edges.parquet"] = (path / "edges.parquet").stat().st_size
    (path / "meta.json").write_text(json.dumps(meta))
    return path


def _set(column, row, value):
    def change(df):
        df.loc[row, column] = value
        return df
    return change


def _in_block(block, change):
    return lambda i, df: change(df) if i == block else df


# Blocks of the `exported` graph, in file order: per layer H_l -> I_l (dense, 96 edges),
# H_l -> H_l+1 (residual, coo, 8 edges), I_l -> H_l+1 (dense, 96 edges).
DOWN0, RESIDUAL0 = 2, 1


@pytest.mark.parametrize("bad, what", [(np.nan, "1 NaN"), (np.inf, "1 inf"), (-0.5, "1 negative")])
@pytest.mark.parametrize("how", ["eager", "lazy", "rewritten"])
def test_weights_that_are_not_finite_and_non_negative_are_refused(exported, tmp_path, bad, what, how):
    g, _ = exported
    path = _rewrite_edges(g.to_parquet(tmp_path / "g"), _in_block(DOWN0, _set("weight", 5, bad)),
                          declare_order=how != "rewritten")  # rewritten: read by ids, not by position
    message = (rf"edges.parquet, block I0 -> H1 \(layer 0, down\): column 'weight' holds 1 bad value \({what}; "
               r"the first at row 109\); edge weights must be finite and non-negative")
    if how == "lazy":
        h = lg.read_graph(path, lazy=True)  # the footers only: each block is checked when it is read
        with pytest.raises(GraphFormatError, match=message):
            lg.pagerank(h)
    else:
        with pytest.raises(GraphFormatError, match=message):
            lg.read_graph(path, lazy=False)


@pytest.mark.parametrize("damage", ["nan", "inf", "negative", "duplicate", "outside"])
@pytest.mark.parametrize("block", [RESIDUAL0, DOWN0])
def test_from_edgelist_and_the_reader_refuse_the_same_edges(exported, tmp_path, damage, block):
    g, _ = exported
    row = 3
    change = {"nan": _set("weight", row, np.nan), "inf": _set("weight", row, np.inf),
              "negative": _set("weight", row, -1.0),
              "duplicate": lambda df: df.assign(src=np.where(df.index == row, df.src[row - 1], df.src),
                                                dst=np.where(df.index == row, df.dst[row - 1], df.dst)),
              "outside": _set("dst", row, g.n_nodes + 5)}[damage]
    # without the footer's statistics, which already show ids outside a block's partitions
    path = _rewrite_edges(g.to_parquet(tmp_path / "g"), _in_block(block, change), statistics=False)
    with pytest.raises(GraphFormatError) as from_file:
        lg.read_graph(path)
    first = {RESIDUAL0: 96, DOWN0: 104}[block]  # the block's first row in the file and in g.edges
    edges = g.edges.copy()
    edges.iloc[first:first + 8] = change(edges.iloc[first:first + 8].reset_index(drop=True)).to_numpy()
    with pytest.raises(InvalidArgumentError) as from_table:
        lg.MLPGraph.from_edgelist(g.nodes, edges)
    read, built = str(from_file.value), str(from_table.value)
    assert "edges.parquet, block " in read and built.startswith("`nodes`/`edges`: ")
    if damage == "outside":  # a block's ids must lie in its partitions, a table's in the graph
        assert "column 'dst' names vertices outside" in read and "column 'dst' names vertices outside" in built
        with pytest.raises(GraphFormatError, match=r"\(block I0 -> H1: row group 2 has dst ids outside partition H1\)"
                           if block == DOWN0 else "row group 1 has dst ids outside partition H1"):
            lg.read_graph(_rewrite_edges(g.to_parquet(tmp_path / "stats"), _in_block(block, change)))
    else:  # the same words, after the place
        assert read.split("): ", 1)[1] == built.split(": ", 1)[1]
        assert f"{first + row})" in read


@pytest.mark.parametrize("block", [0, RESIDUAL0, DOWN0])
@pytest.mark.parametrize("lazy", [False, True])
def test_rows_sorted_by_another_tool_are_read_by_their_ids(exported, tmp_path, block, lazy):
    g, _ = exported
    path = _rewrite_edges(g.to_parquet(tmp_path / "g"),
                          _in_block(block, lambda df: df.sort_values("weight", ignore_index=True)))
    h = lg.read_graph(path, lazy=lazy)
    assert not any(getattr(b, "row_order", False) for b in h.blocks)
    pd.testing.assert_frame_equal(h.edges.reset_index(drop=True), g.edges)
    for direction in ("forward", "reverse"):
        np.testing.assert_array_equal(lg.pagerank(h, direction=direction).scores,
                                      lg.pagerank(g, direction=direction).scores)


def test_a_file_rewritten_whole_is_refused_naming_a_block(exported, tmp_path):
    g, _ = exported
    path = g.to_parquet(tmp_path / "g")
    pd.read_parquet(path / "edges.parquet").sort_values("weight").to_parquet(path / "edges.parquet", index=False)
    meta = json.loads((path / "meta.json").read_text())
    meta["files"]["edges.parquet"] = (path / "edges.parquet").stat().st_size
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(GraphFormatError, match=r"does not match edges.parquet \(block H0 -> I0 has 600 edges in its "
                                               r"row groups, the block table says 96\)"):
        lg.read_graph(path)


def test_duplicate_pairs_are_refused_naming_the_block(exported, tmp_path):
    g, _ = exported
    twice = lambda df: pd.concat([df, df.iloc[[2]]], ignore_index=True)  # noqa: E731
    path = _rewrite_edges(g.to_parquet(tmp_path / "g"), _in_block(RESIDUAL0, twice))
    with pytest.raises(GraphFormatError, match=r"block H0 -> H1 \(layer 0, residual\): the edge 2 -> 22 is given "
                                               r"twice \(rows 98 and 104\); duplicate \(src, dst\) pairs are refused"):
        lg.read_graph(path)
    with pytest.raises(InvalidArgumentError, match="the edge 2 -> 22 is given twice"):
        lg.MLPGraph.from_edgelist(g.nodes, pd.concat([g.edges, g.edges.iloc[[98]]], ignore_index=True))


def test_written_files_declare_their_row_order(exported, tmp_path):
    import pyarrow.parquet as pq

    from llmrank_graph.graph.blocks import SparseBlock

    g, path = exported
    md = pq.ParquetFile(path / "edges.parquet").metadata
    assert all([(c.column_index, c.descending) for c in md.row_group(i).sorting_columns] == [(1, False), (0, False)]
               for i in range(md.num_row_groups))
    h = lg.read_graph(path, lazy=True)
    assert all(b.row_order for b in h.blocks)  # dense blocks are read from their weight column alone

    class Shuffled(SparseBlock):  # a block whose edges come out of row order: written in order all the same
        def coo(self):
            s, d, w = super().coo()
            return s[::-1], d[::-1], w[::-1]

    sparse = lg.MLPGraph.from_edgelist(g.nodes, g.edges)
    sparse.blocks = [Shuffled(b.src, b.dst, b.layer, b.role, b.csr.tocoo().row, b.csr.tocoo().col, b.csr.tocoo().data)
                     for b in sparse.blocks]
    again = lg.read_graph(sparse.to_parquet(tmp_path / "shuffled"))
    pd.testing.assert_frame_equal(again.edges.reset_index(drop=True), g.edges)


def test_an_empty_edge_table_gets_one_true_message(exported, tmp_path):
    g, _ = exported
    path = _rewrite_edges(g.to_parquet(tmp_path / "g"), lambda i, df: df.iloc[:0])
    meta = json.loads((path / "meta.json").read_text())
    assert meta["n_edges"] == 0 and all(b[4] == 0 for b in meta["blocks"])
    with pytest.raises(GraphFormatError, match=r"meta.json key 'blocks\[0\]' says that block H0 -> I0 is dense, but "
                                               r"it has 0 edges; a dense block has one per \(dst, src\) pair: "
                                               r"12 x 8 = 96$"):
        lg.read_graph(path)
    # a graph without edges is written, and read back, as it is
    empty = lg.MLPGraph.from_edgelist(g.nodes, g.edges.iloc[:0])
    h = lg.read_graph(empty.to_parquet(tmp_path / "empty"))
    assert (h.n_nodes, h.n_edges, h.blocks) == (g.n_nodes, 0, [])


# ----------------------------------------------------------------------------- meta.json's fields (issue 16)
@pytest.mark.parametrize("key, value, message", [
    ("has_stats", "yes", "meta.json key 'has_stats' must be a bool; got 'yes'"),
    ("n_nodes", "12", "meta.json key 'n_nodes' must be an int >= 0; got '12'"),
    ("layers", 3, "meta.json key 'layers' must be a list of layer numbers (ints >= 0); got 3"),
    ("residual", "0.25", "meta.json key 'residual' must be None or a finite float >= 0; got '0.25'"),
    ("nodes_file", "../outside.parquet", "meta.json key 'nodes_file' must be a file name inside the graph directory "
                                         "(no '/' or '..'); got '../outside.parquet'"),
    ("nodes_file", "ABSOLUTE", "meta.json key 'nodes_file' must be a file name inside the graph directory"),
    ("files", {"../outside.parquet": 1}, "meta.json key 'files['../outside.parquet']' must be a file name inside"),
    ("blocks", [[0, 1, 0, "up", "96", "dense", 0, 1]], "meta.json key 'blocks[0]' must be [src partition, dst "
                                                       "partition, layer, role, edges, 'dense' or 'coo', first row "
                                                       "group, end row group] with ints >= 0; got"),
])
def test_meta_fields_of_the_wrong_type_are_refused_naming_the_field(exported, tmp_path, key, value, message):
    g, _ = exported
    path = g.to_parquet(tmp_path / "g")
    outside = tmp_path / "outside.parquet"
    outside.write_bytes((path / "nodes.parquet").read_bytes())  # there to be read, were the name followed
    value = str(outside) if value == "ABSOLUTE" else value
    meta = json.loads((path / "meta.json").read_text())
    meta[key] = value
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(GraphFormatError) as info:
        lg.read_graph(path)
    assert message in str(info.value) and str(path) in str(info.value)


def test_graphs_in_memory_hold_what_meta_json_may_hold(exported, tmp_path):
    g, _ = exported
    with pytest.raises(TypeError, match=r"^`meta` key 'has_stats' must be a bool; got 'yes'$"):
        lg.MLPGraph.from_edgelist(g.nodes, g.edges, meta={"has_stats": "yes"})
    h = lg.MLPGraph.from_edgelist(g.nodes, g.edges, meta={"note": ["anything", 1]})  # other keys are kept as given
    h.meta["layers"] = "0,1"
    with pytest.raises(TypeError, match=r"^`graph.meta` key 'layers' must be a list of layer numbers"):
        h.to_parquet(tmp_path / "h")
    assert not (tmp_path / "h").exists()
    del h.meta["layers"]
    assert lg.read_graph(h.to_parquet(tmp_path / "h")).meta["note"] == ["anything", 1]
