"""Every kind of block implements the one protocol: checked against a dense numpy reference.

Each kind (weights of a model, weights streamed from safetensors, sparse edges, residual
diagonals) is built with known numbers, and every protocol operation is compared with the
same operation on the dense matrix ``B`` (dst x src) computed here by hand in numpy.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal
from safetensors.torch import save_file

import llmrank_graph as lg
from llmrank_graph.graph.blocks import Block, DiagonalBlock, Partition, SparseBlock, WeightBlock
from llmrank_graph.graph.streaming import SafetensorsBlock

SRC = Partition(0, "H0", 0, "hidden", 0, 5)
DST = Partition(1, "I0", 0, "intermediate", 5, 7)


def _weights(seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(7, 5, generator=g).to(dtype)


def _rule(ws, combine, scale):
    """The edge-weight rule written out in numpy float32, then widened (docs/design.md section 1)."""
    a = np.abs(ws[0].to(torch.float32).numpy())
    if combine == "sum":
        a = a + np.abs(ws[1].to(torch.float32).numpy())
    elif combine == "max":
        a = np.maximum(a, np.abs(ws[1].to(torch.float32).numpy()))
    if scale is not None:
        a = a * scale.numpy().astype(np.float32)[None, :]
    return a.astype(np.float64)


def _weight_block(combine="single", scaled=False, dtype=torch.float32):
    ws = [_weights(0, dtype)] + ([_weights(1, dtype)] if combine != "single" else [])
    scale = torch.linspace(0.5, 2.0, 5, dtype=torch.float64) if scaled else None
    return WeightBlock(SRC, DST, 0, "up", ws, combine, scale), _rule(ws, combine, scale)


def _safetensors_block(tmp_path, combine="single", transpose=False):
    w0, w1 = _weights(0), _weights(1)
    stored = {"w0": (w0.t() if transpose else w0).contiguous(), "w1": (w1.t() if transpose else w1).contiguous()}
    f = tmp_path / "m.safetensors"
    save_file(stored, str(f))
    entries = [(f, "w0", transpose)] + ([(f, "w1", transpose)] if combine != "single" else [])
    return SafetensorsBlock(SRC, DST, 0, "up", entries, combine), _rule([w0, w1], combine, None)


def _sparse_block():
    rng = np.random.default_rng(0)
    rows = np.array([0, 0, 2, 3, 6, 6, 6])
    cols = np.array([1, 4, 0, 2, 1, 1, 3])  # (6, 1) twice: duplicates are summed
    vals = rng.uniform(0.1, 1.0, len(rows)).astype(np.float32)
    dense = np.zeros((7, 5))
    np.add.at(dense, (rows, cols), vals.astype(np.float64))
    return SparseBlock(SRC, DST, 0, "up", rows, cols, vals), dense


def _diagonal_block():
    a, b = Partition(0, "H0", 0, "hidden", 0, 5), Partition(2, "H1", 1, "hidden", 12, 5)
    scale = torch.tensor([1.0, 2.0, 0.0, 0.5, 3.0], dtype=torch.float64)
    dense = np.diag((np.float32(0.25) * scale.numpy().astype(np.float32)).astype(np.float64))
    return DiagonalBlock(a, b, 0, 0.25, scale), dense


KINDS = {
    "weight": lambda tmp: _weight_block(),
    "weight-sum-scaled": lambda tmp: _weight_block("sum", scaled=True),
    "weight-max-bf16": lambda tmp: _weight_block("max", dtype=torch.bfloat16),
    "weight-fp16": lambda tmp: _weight_block(dtype=torch.float16),
    "safetensors": lambda tmp: _safetensors_block(tmp),
    "safetensors-sum-conv1d": lambda tmp: _safetensors_block(tmp, "sum", transpose=True),
    "sparse": lambda tmp: _sparse_block(),
    "diagonal": lambda tmp: _diagonal_block(),
}


@pytest.fixture(params=list(KINDS))
def block(request, tmp_path):
    return KINDS[request.param](tmp_path)


def test_protocol_against_dense_reference(block):
    b, B = block
    assert isinstance(b, Block)
    rows, cols = B.shape
    assert b.shape == (rows, cols)
    assert_allclose(b.dense().numpy(), B, rtol=0, atol=0)
    assert_allclose(b.out_strength().numpy(), B.sum(0), rtol=1e-14)
    assert_allclose(b.in_strength().numpy(), B.sum(1), rtol=1e-14)
    for k in (1, 2):
        v = torch.from_numpy(np.random.default_rng(k).uniform(size=(cols, k)))
        assert_allclose(b.matmul(v).numpy(), B @ v.numpy(), rtol=1e-13)
        u = torch.from_numpy(np.random.default_rng(k + 5).uniform(size=(rows, k)))
        assert_allclose(b.rmatmul(u).numpy(), B.T @ u.numpy(), rtol=1e-13)
    chunks = list(b.chunks(torch.float64))
    assert chunks[0][0] == 0 and chunks[-1][1] == rows
    assert_allclose(torch.cat([c for *_, c in chunks]).numpy(), B, rtol=0, atol=0)
    src, dst, w = b.coo()
    assert w.dtype == np.float32 and src.dtype == dst.dtype == np.int64
    got = np.zeros_like(B)
    np.add.at(got, (dst - b.dst.offset, src - b.src.offset), w.astype(np.float64))
    assert_allclose(got, B, rtol=0, atol=0)
    stored = b.nnz
    assert len(src) == stored
    assert_array_equal(b.out_degree(), np.bincount(src - b.src.offset, minlength=cols))
    assert_array_equal(b.in_degree(), np.bincount(dst - b.dst.offset, minlength=rows))
    with b.loaded() as m:  # one read for several operations, same numbers
        assert_allclose(m.dense().numpy(), B, rtol=0, atol=0)


@pytest.mark.parametrize("as_numpy", [True, False], ids=["numpy", "torch"])
def test_prepared_product_against_dense_reference(block, as_numpy):
    """``product(forward)`` adds ``alpha * B @ v`` (``B.T @ v`` backward) into a view, vectors as rows."""
    b, B = block
    prepared = {f: b.product(f, "cpu") for f in (True, False)}
    if not b.resident:  # streamed: nothing in memory until loaded
        assert prepared == {True: None, False: None}
        with b.loaded("cpu") as m:
            prepared = {f: m.product(f, "cpu") for f in (True, False)}
    rng = np.random.default_rng(3)
    for k in (1, 2):
        for forward, M in ((True, B), (False, B.T)):
            vt = rng.uniform(size=(k, M.shape[1]))
            y = rng.uniform(size=(k, M.shape[0] + 3))  # the product adds into a strided view of it
            want = y.copy()
            want[:, 1:-2] += 0.85 * (M @ vt.T).T
            if as_numpy:
                prepared[forward](vt, y[:, 1:-2], 0.85)
            else:
                yt = torch.from_numpy(y)
                prepared[forward](torch.from_numpy(vt), yt[:, 1:-2], 0.85)
            assert_allclose(y, want, rtol=1e-13)


def test_weight_block_product_is_none_for_weights_on_another_device():
    b, _ = _weight_block()
    assert b.product(True, "meta") is None  # loaded(device) moves them first
    assert b.product(True, None) is not None  # None: where the weights are


def test_weight_block_sees_in_place_changes_through_its_version():
    b, _ = _weight_block()
    v0 = b.version()
    with torch.no_grad():
        b.weights[0][2] = 0.0
    assert b.version() != v0


def test_streamed_block_reads_nothing_until_asked(tmp_path, monkeypatch):
    b, B = _safetensors_block(tmp_path)
    reads = []
    orig = SafetensorsBlock.raw_weights
    monkeypatch.setattr(SafetensorsBlock, "raw_weights",
                        lambda self, device=None: reads.append(1) or orig(self, device))
    with b.loaded() as m:
        m.out_strength(), m.matmul(torch.ones(5, 1, dtype=torch.float64))
    assert len(reads) == 1 and not b.resident


# ----------------------------------------------------------------------------- graph caches
def test_caches_are_recomputed_after_the_weights_change(tiny_llama):
    """A graph used after apply_mask(how='zero') sees the new weights, not stale strengths or CSR."""
    g = lg.export_graph(tiny_llama)
    before = {b: lg.pagerank(g, backend=b, tol=1e-13).scores for b in ("sweep", "scipy")}
    s_before = g.strength("forward").clone()
    scores = lg.score_neurons(tiny_llama, None, "magnitude")
    lg.apply_mask(tiny_llama, lg.allocate(scores, 0.5), how="zero")
    fresh = lg.export_graph(tiny_llama)
    for b in ("sweep", "scipy"):
        got = lg.pagerank(g, backend=b, tol=1e-13).scores
        assert np.abs(got - before[b]).sum() > 1e-3  # the zeroed neurons changed the answer
        assert_allclose(got, lg.pagerank(fresh, backend=b, tol=1e-13).scores, rtol=1e-9, atol=1e-15)
    assert not torch.equal(g.strength("forward"), s_before)
    assert_allclose(g.edges["weight"].to_numpy(), fresh.edges["weight"].to_numpy())


def test_from_edgelist_equals_the_exported_graph(tiny_llama):
    g = lg.export_graph(tiny_llama, residual=0.3)
    h = lg.MLPGraph.from_edgelist(g.nodes, g.edges, meta=g.meta)
    assert [p.size for p in h.partitions] == [p.size for p in g.partitions]
    assert h.n_edges == g.n_edges and h.is_dag_by_partition()
    for direction in ("forward", "reverse"):
        assert_allclose(lg.pagerank(h, direction=direction).scores, lg.pagerank(g, direction=direction).scores,
                        rtol=1e-12)


def test_from_edgelist_without_partition_column_groups_runs_of_layer_and_kind(tiny_llama):
    g = lg.export_graph(tiny_llama)
    h = lg.MLPGraph.from_edgelist(g.nodes.drop(columns=["partition", "activation"]), g.edges)
    assert [(p.layer, p.kind, p.size) for p in h.partitions] == [(p.layer, p.kind, p.size) for p in g.partitions]
    assert not h.has_activation


@pytest.mark.parametrize("change, match", [
    (lambda n, e: (n, e.drop(columns=["weight"])), "lacks columns"),
    (lambda n, e: (n, e.assign(weight=-e["weight"])), "non-negative"),
    (lambda n, e: (n, e.assign(dst=e["dst"] + 10_000)), "outside"),
    (lambda n, e: (n.iloc[1:], e), "contiguous"),
])
def test_from_edgelist_refuses_bad_tables(tiny_llama, change, match):
    g = lg.export_graph(tiny_llama)
    with pytest.raises(ValueError, match=match):
        lg.MLPGraph.from_edgelist(*change(g.nodes, g.edges))
