"""The quantile sketch of layer_stats against numpy's exact quantiles; exact=True and `inspect --exact-quantiles`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from _tiny import tiny_llama
from numpy.testing import assert_array_equal

import llmrank_graph as lg
from llmrank_graph import analysis as A
from llmrank_graph.analysis.sketch import N_BUCKETS, RELATIVE_ERROR, QuantileSketch
from llmrank_graph.cli import main
from llmrank_graph.errors import InvalidArgumentTypeError

# every percentile, the extremes and the ones layer_stats reports
QS = tuple(sorted({*np.linspace(0, 1, 101).tolist(), 0.001, 0.005, 0.995, 0.999, *A.QUANTILES}))
SUBNORMAL_STEP = 2.0 ** -134  # the absolute bound below float32's smallest normal


def _numpy(v, qs=QS):
    return np.quantile(np.asarray(v, dtype=np.float32).astype(np.float64), qs)


def _assert_within_bound(got, want, slack=0.0):
    """Each sketch quantile within RELATIVE_ERROR of numpy's, relatively (plus `slack` absolutely)."""
    got, want = np.asarray(got), np.asarray(want)
    err = np.abs(got - want)
    bound = RELATIVE_ERROR * np.abs(want) * (1 + 1e-12) + slack
    bad = err > bound
    assert not bad.any(), f"{bad.sum()} quantiles out of bound, worst {np.max(err / np.maximum(np.abs(want), 1e-300))}"


def _cases():
    rng = np.random.default_rng(7)
    ties = rng.choice(np.array([0.5, 1.0, 1.25, 3.0], dtype=np.float32), 5001)
    zeros = np.abs(rng.standard_normal(20_000)).astype(np.float32)
    zeros[rng.random(20_000) < 0.9] = 0
    return {
        "normal |w| bf16": torch.from_numpy(np.abs(rng.standard_normal(40_000) * 0.02)).bfloat16().float().numpy(),
        "normal |w| float32": np.abs(rng.standard_normal(40_001) * 0.02).astype(np.float32),
        "lognormal, 60 octaves": np.exp(rng.standard_normal(30_000) * 7).astype(np.float32),
        "pareto heavy tail": (rng.pareto(0.5, 30_000) + 1e-6).astype(np.float32),
        "cauchy |x|": np.abs(rng.standard_cauchy(30_000)).astype(np.float32),
        "90% zeros": zeros,
        "all zeros": np.zeros(17, dtype=np.float32),
        "ties": ties,
        "a single value": np.array([0.3], dtype=np.float32),
        "one value repeated": np.full(1000, 7.1, dtype=np.float32),
        "two values": np.array([1e-20, 1e20], dtype=np.float32),
        "bucket edges": np.array([1.0, np.nextafter(np.float32(1.0078125), np.float32(0)), 1.0078125, 2.0, 1.5],
                                 dtype=np.float32),
        "all negative": -np.exp(rng.standard_normal(5000) * 3).astype(np.float32),
        "largest floats": np.array([3.0e38, 3.4e38, 1.0, 2.0e38], dtype=np.float32),
    }


CASES = _cases()


@pytest.mark.parametrize("name", list(CASES))
def test_sketch_quantiles_within_the_stated_bound(name):
    v = CASES[name]
    sk = QuantileSketch.of(v)
    _assert_within_bound(sk.quantiles(QS), _numpy(v))
    # what is exact: count, zeros, min, max, sum
    assert sk.count == v.size and sk.zeros == int((v == 0).sum()) and sk.nans == 0
    assert sk.minimum == v.min() and sk.maximum == v.max()
    assert sk.total == pytest.approx(float(v.astype(np.float64).sum()), rel=1e-12)
    assert sk.counts.sum() + sk.zeros == v.size


@pytest.mark.parametrize("name", list(CASES))
def test_exact_quantiles_equal_numpy_to_the_bit(name):
    v = CASES[name]
    sk = QuantileSketch.of(v)
    assert_array_equal(sk.exact_quantiles(v, QS), _numpy(v))


def test_the_bound_is_the_bucket_geometry():
    """Every bucket of normal floats is [a, b] with (b - a) / (b + a) <= 1/257, and some reach it: a tight bound."""
    mags = np.arange(1 << 7, 0xFF << 7, dtype=np.uint32)  # exponents 1..254
    a = (mags << 16).view(np.float32).astype(np.float64)
    b = (((mags + 1) << 16) - 1).view(np.float32).astype(np.float64)
    ratio = (b - a) / (b + a)
    assert ratio.max() <= RELATIVE_ERROR and ratio.max() > RELATIVE_ERROR * (1 - 1e-4)
    assert RELATIVE_ERROR == pytest.approx(1 / 257) and N_BUCKETS == 65536
    # the worst case is met: a bucket holding only its two ends
    x = np.array([a[0], b[0]], dtype=np.float32)
    x = np.r_[np.float32(0.5) * x[0], x, np.float32(4) * x[1]]  # min and max elsewhere (they are exact)
    est = QuantileSketch.of(x).quantiles([1 / 3])[0]
    want = _numpy(x, [1 / 3])[0]
    assert abs(est - want) / want == pytest.approx(ratio[0], rel=1e-3)


def test_subnormals_within_an_absolute_bound():
    rng = np.random.default_rng(3)
    v = (rng.random(3000) * 2.0 ** -127).astype(np.float32)  # below the smallest normal float32
    v = np.r_[v, np.float32(1e-3), np.float32(0.0)]
    _assert_within_bound(QuantileSketch.of(v).quantiles(QS), _numpy(v), slack=SUBNORMAL_STEP)


def test_nan_makes_every_quantile_nan_as_numpy():
    v = np.array([1.0, np.nan, 3.0, 0.0], dtype=np.float32)
    sk = QuantileSketch.of(v)
    assert np.isnan(sk.quantiles(QS)).all() and np.isnan(_numpy(v)).all()
    assert sk.nans == 1 and sk.minimum == 0.0 and sk.maximum == 3.0 and sk.counts.sum() == 2


@pytest.mark.parametrize("sizes", [(1,), (3, 1, 7), (997, 1, 4096, 13), (5000, 5001)])
def test_merged_chunks_equal_one_pass(sizes):
    rng = np.random.default_rng(sum(sizes))
    v = np.abs(rng.standard_cauchy(sum(sizes))).astype(np.float32)
    v[rng.random(v.size) < 0.3] = 0
    whole = QuantileSketch.of(v)
    merged, parts = QuantileSketch(), np.split(v, np.cumsum(sizes)[:-1])
    for part in parts:
        merged.merge(QuantileSketch.of(part))
    assert_array_equal(merged.counts, whole.counts)
    assert (merged.count, merged.zeros, merged.minimum, merged.maximum) == \
           (whole.count, whole.zeros, whole.minimum, whole.maximum)
    assert merged.total == pytest.approx(whole.total, rel=1e-12)
    assert_array_equal(merged.quantiles(QS), whole.quantiles(QS))
    # chunks added to one sketch (rows of a block): the same counters, and the row and column sums
    m = np.resize(v, (max(v.size // 7, 3), 7))  # (v repeated where it is short)
    by_rows, colsum, rowsum = QuantileSketch(), np.zeros(7), []
    for r0 in range(0, len(m), 5):
        rowsum.append(by_rows.add(m[r0:r0 + 5], colsum))
    one = QuantileSketch.of(m)
    assert_array_equal(by_rows.counts, one.counts) and by_rows.zeros == one.zeros
    np.testing.assert_allclose(np.concatenate(rowsum), m.astype(np.float64).sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(colsum, m.astype(np.float64).sum(axis=0), rtol=1e-12)


# ----------------------------------------------------------------------------- layer_stats on graphs
def _block_weights(g, of):
    e, part = g.edges, g.nodes.partition.to_numpy()
    a, b = of.split("->")
    pa = next(p.position for p in g.partitions if p.name == a)
    pb = next(p.position for p in g.partitions if p.name == b)
    return e.weight[(part[e.src] == pa) & (part[e.dst] == pb)].to_numpy()


@pytest.fixture(scope="module")
def graphs():
    model = tiny_llama(seed=5, layers=3, d=16, m=40)
    ids = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(1))
    stats = lg.calibrate(model, input_ids=ids, batch_size=2)
    return {"abs": lg.export_graph(model, stats, weighting="abs"),
            "activation_share + residual": lg.export_graph(model, stats, residual=0.3),
            "sparsified (coo blocks)": lg.export_graph(model, stats, weighting="abs_x_input", keep=0.3)}


@pytest.mark.parametrize("kind", ["abs", "activation_share + residual", "sparsified (coo blocks)"])
def test_layer_stats_sketch_and_exact_against_numpy(graphs, kind):
    g = graphs[kind]
    qs = list(A.QUANTILES)
    cols = [A.stats.quantile_column(q) for q in qs]
    sketch, exact = A.layer_stats(g), A.layer_stats(g, exact=True)
    assert list(sketch.columns) == list(exact.columns) and len(sketch) == len(exact)
    w_sk, w_ex = sketch[sketch.quantity == "weight"], exact[exact.quantity == "weight"]
    assert len(w_sk) == len(g.blocks)
    if kind.startswith("sparsified"):
        assert (w_sk["count"] == 0).any()  # the empty block is among the cases
    for (_, rs), (_, rx) in zip(w_sk.iterrows(), w_ex.iterrows()):
        w = _block_weights(g, rs["of"])
        if w.size == 0:  # a block that kept no edge
            for r in (rs, rx):
                assert r["count"] == 0 and r["sum"] == 0
                assert np.isnan(r[["mean", "min", "max", *cols]].to_numpy(float)).all()
            continue
        want = _numpy(w, qs)
        assert_array_equal(rx[cols].to_numpy(dtype=float), want)  # exact=True: numpy's, to the bit
        _assert_within_bound(rs[cols].to_numpy(dtype=float), want)
        for r in (rs, rx):  # exact either way
            assert r["count"] == w.size and r["min"] == w.min() and r["max"] == w.max()
            assert r["sum"] == pytest.approx(w.astype(np.float64).sum(), rel=1e-12)
            assert r["mean"] == pytest.approx(w.astype(np.float64).mean(), rel=1e-12)
        assert rs["quantile_error"] == RELATIVE_ERROR and rx["quantile_error"] == 0.0
    # strengths: exact in both, and the same
    e = g.edges
    s_in = np.bincount(e.dst, weights=e.weight.astype(np.float64), minlength=g.n_nodes)
    for df in (sketch, exact):
        rows = df[df.quantity == "in_strength"]
        for _, row in rows.iterrows():
            p = next(p for p in g.partitions if p.name == row["of"])
            np.testing.assert_allclose(row[cols].to_numpy(dtype=float), np.quantile(s_in[p.offset:p.stop], qs),
                                       rtol=1e-9)
            assert row["quantile_error"] == 0.0
    pd.testing.assert_frame_equal(sketch[sketch.quantity != "weight"].reset_index(drop=True),
                                  exact[exact.quantity != "weight"].reset_index(drop=True))


def test_layer_stats_on_a_streamed_graph_equals_the_model_graph(tmp_path):
    """A graph streamed from safetensors shards (chunks of a loaded block) gives the rows of the model's graph."""
    from safetensors.torch import save_model

    from llmrank_graph.graph.streaming import export_graph_from_safetensors

    model = tiny_llama(seed=2, layers=2, d=16, m=40)
    model.config.save_pretrained(tmp_path)
    save_model(model, str(tmp_path / "model.safetensors"))
    streamed = export_graph_from_safetensors(tmp_path)
    in_memory = lg.export_graph(model)
    for exact in (False, True):
        a, b = A.layer_stats(streamed, exact=exact), A.layer_stats(in_memory, exact=exact)
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-12)


def test_exact_is_validated(graphs):
    g = graphs["abs"]
    with pytest.raises(InvalidArgumentTypeError, match="`exact` must be a bool; got 'yes'"):
        A.layer_stats(g, exact="yes")
    with pytest.raises(InvalidArgumentTypeError, match="`exact_quantiles` must be a bool; got 1"):
        A.inspect_graph(g, exact_quantiles=1)


# ----------------------------------------------------------------------------- inspect
def test_inspect_exact_quantiles_option_reaches_the_api(graphs, tmp_path, capsys):
    g = graphs["abs"]
    d = g.to_parquet(tmp_path / "g")
    cols = [A.stats.quantile_column(q) for q in A.QUANTILES]
    for flag, exact in (([], False), (["--exact-quantiles"], True)):
        assert main(["inspect", "--graph", str(d), "--centralities", "strength", "--json", *flag]) == 0
        rep = json.loads(capsys.readouterr().out)
        got = pd.DataFrame(rep["layer_stats"])
        want = A.layer_stats(lg.read_graph(d), exact=exact)
        np.testing.assert_allclose(got[cols].to_numpy(float), want[cols].to_numpy(float), rtol=1e-9,
                                   atol=1e-15)  # JSON keeps 15 decimals
        weights = got[got.quantity == "weight"]
        np.testing.assert_allclose(weights.quantile_error, 0.0 if exact else RELATIVE_ERROR, rtol=1e-12)
        said = [n for n in rep["notes"] if "relative error" in n]
        assert said == ([] if exact else [f"edge-weight quantiles within {100 * RELATIVE_ERROR:.2f}% relative error "
                                          "(a log-bucket sketch; exact_quantiles=True, --exact-quantiles for exact "
                                          "ones)"])
    assert main(["inspect", "--graph", str(d), "--centralities", "strength"]) == 0
    assert "note: edge-weight quantiles within 0.39% relative error" in capsys.readouterr().out
