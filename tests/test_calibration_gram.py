"""The second moments of calibration: float32 upper-triangle blocks flushed to a float64 total.

Reference: the float64 product ``X^T X`` of the down projections' inputs, captured by hooks
independent of the library.
"""
import pytest
import torch
from _tiny import tiny_gpt2, tiny_llama

import llmrank_graph as lg
from llmrank_graph.data import calibration as cal
from llmrank_graph.models.architectures import mlp_layers


def _down_inputs(model, ids, batch_size=2):
    """The float64 inputs of every down projection, captured by an independent hook."""
    got = {}
    hooks = []
    for mlp in mlp_layers(model):
        def f(mod, inp, out, key=mlp.layer):
            got.setdefault(key, []).append(inp[0].reshape(-1, inp[0].shape[-1]).double())
        hooks.append(mlp.down.register_forward_hook(f))
    try:
        with torch.no_grad():
            for b in ids.split(batch_size):
                model(input_ids=b)
    finally:
        for h in hooks:
            h.remove()
    return {k: torch.cat(v) for k, v in got.items()}


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2])
def test_second_moments_match_a_float64_product(make):
    model = make()
    ids = torch.randint(0, 64, (6, 10), generator=torch.Generator().manual_seed(1))
    stats = lg.calibrate(model, input_ids=ids, batch_size=2, second_moments=True)
    ref = _down_inputs(model, ids)
    for mlp in mlp_layers(model):
        s = stats[mlp.down_name]
        h = ref[mlp.layer]
        g = s.input_second_moment * s.n_tokens  # the mean back to the sum
        want = h.T @ h
        assert g.dtype == torch.float64
        assert torch.equal(g, g.T)  # mirrored exactly
        assert _rel(g, want) < 1e-6


@pytest.mark.parametrize("rows,m", [(5, 7), (300, 130), (1000, 64)])
def test_gram_blocks_cover_the_whole_matrix(rows, m):
    x = torch.randn(rows, m, generator=torch.Generator().manual_seed(m))
    gram = cal._Gram(m, torch.device("cpu"), {})
    assert gram.blocks[0][0] == 0 and gram.blocks[-1][1] == m
    assert all(a[1] == b[0] for a, b in zip(gram.blocks, gram.blocks[1:]))
    gram.add(x[: rows // 2])
    gram.add(x[rows // 2:])  # two calls: accumulates
    want = x.double().T @ x.double()
    got = gram.full()
    assert torch.equal(got, got.T)
    assert _rel(got, want) < 1e-6


def test_chunks_of_rows_are_flushed_to_float64(monkeypatch):
    """More rows than one float32 product takes: each chunk is added to the float64 total."""
    monkeypatch.setattr(cal, "_GRAM_ROWS", 16)
    x = torch.randn(100, 40, generator=torch.Generator().manual_seed(3)) * 100 + 1e4
    gram = cal._Gram(40, torch.device("cpu"), {})
    gram.add(x)
    want = x.double().T @ x.double()
    assert _rel(gram.full(), want) < 1e-6


def test_float64_and_bfloat16_inputs():
    x = torch.randn(50, 20, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    g64 = cal._Gram(20, torch.device("cpu"), {})
    g64.add(x)
    assert torch.allclose(g64.full(), x.T @ x, rtol=1e-12, atol=1e-12)  # float64 stays float64
    xb = x.to(torch.bfloat16)
    gb = cal._Gram(20, torch.device("cpu"), {})
    gb.add(xb)
    exact = xb.double()  # bfloat16 -> float32 is exact: only the float32 products round
    assert _rel(gb.full(), exact.T @ exact) < 1e-6


def test_scratch_is_shared_and_totals_are_not():
    scratch = {}
    a, b = cal._Gram(12, torch.device("cpu"), scratch), cal._Gram(12, torch.device("cpu"), scratch)
    xa = torch.randn(30, 12, generator=torch.Generator().manual_seed(5))
    xb = torch.randn(30, 12, generator=torch.Generator().manual_seed(6))
    a.add(xa)
    b.add(xb)
    assert len(scratch) == 1
    assert _rel(a.full(), xa.double().T @ xa.double()) < 1e-6
    assert _rel(b.full(), xb.double().T @ xb.double()) < 1e-6


@pytest.mark.parametrize("precision", ["high", "medium"])
def test_full_precision_whatever_the_matmul_setting(precision):
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        x = torch.randn(64, 48, generator=torch.Generator().manual_seed(7))
        g = cal._Gram(48, torch.device("cpu"), {})
        g.add(x)
        assert torch.get_float32_matmul_precision() == precision  # restored
        assert _rel(g.full(), x.double().T @ x.double()) < 1e-6
    finally:
        torch.set_float32_matmul_precision(before)


def test_column_sums_match_a_float64_reference():
    x = torch.randn(600, 9, generator=torch.Generator().manual_seed(8))  # two full chunks of 256 and a rest
    sq, lin = cal.column_sums(x)
    assert torch.allclose(sq, x.double().square().sum(0), rtol=1e-6)
    assert torch.allclose(lin, x.double().sum(0), rtol=1e-5, atol=1e-5)
    sq2, none = cal.column_sums(x, linear=False)
    assert none is None and torch.equal(sq, sq2)
