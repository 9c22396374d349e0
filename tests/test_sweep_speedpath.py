"""The sweep's fast path on the CPU: the numba kernel by default, adding ``alpha * (M @ v)`` in place.

The forward product adds straight into the sweep's rows (no temporary): the result must be
``out + alpha * dot`` rounded exactly as numpy rounds it, whether ``out`` is contiguous (added
in the kernel) or not (a temporary added after), and whether ``out`` overlaps ``v``. The
prefetching loops run over chunks of 64 columns and claim the next chunk of rows early: shapes
with columns not a multiple of 64 and rows not a multiple of 4, on several threads with many
chunks, check both against the dense reference.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _tiny import tiny_llama

import llmrank_graph as lg
import llmrank_graph.kernels as kernels

pytestmark = pytest.mark.skipif(kernels.fused_available() is not None, reason="numba kernel not available")


def _weights(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * 0.05).to(dtype)


def _dense(w, scale):
    m = w.float().abs()
    if scale is not None:
        m = m * scale.float()
    return m.double().numpy()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("scaled", [False, True])
@pytest.mark.parametrize("k", [1, 2])
def test_forward_adds_in_place(monkeypatch, dtype, scaled, k):
    from llmrank_graph.kernels import numba_cpu

    monkeypatch.setattr(numba_cpu, "_JOB_CHUNK_ELEMS", 3000)  # many chunks: the early claim of the next one
    r, c = 203, 150  # rows not a multiple of 4, columns not a multiple of 64
    w = _weights((r, c), dtype)
    scale = torch.rand(c, dtype=torch.float64) + 0.5 if scaled else None
    m = _dense(w, scale)
    rng = np.random.default_rng(1)
    vt = rng.random((k, c))
    for threads in (1, 3):
        add = kernels.prepare_matmul([w], "single", scale, threads=threads)
        # The sweep's layout: rows of one (k, n) array, contiguous only for k = 1.
        y = rng.random((k, r + 40))
        before = y[:, 10:10 + r].copy()
        add(vt, y[:, 10:10 + r], 0.85)
        ref = vt @ m.T
        np.testing.assert_allclose(y[:, 10:10 + r], before + 0.85 * ref, rtol=1e-12)
        # Bit for bit what out + alpha * (the kernel's own product) gives in numpy.
        prod = np.zeros((k, r))
        add(vt, prod, 1.0)
        np.testing.assert_array_equal(y[:, 10:10 + r], before + 0.85 * prod)
        # A contiguous out and a strided one get the same numbers.
        out_c = before.copy()
        out_f = np.asfortranarray(before)
        add(vt, out_c, 0.85)
        add(vt, out_f, 0.85)
        np.testing.assert_array_equal(out_c, out_f)
        np.testing.assert_array_equal(out_c, y[:, 10:10 + r])


def test_out_overlapping_v_reads_v_before_writing():
    """A product whose out overlaps its vector: v is read whole before out changes."""
    n = 96
    w = _weights((n, n), torch.float32, seed=3)
    m = _dense(w, None)
    y = np.random.default_rng(2).random((1, n))
    v = y.copy()
    kernels.prepare_matmul([w], "single", None, threads=2)(y, y, 0.5)
    np.testing.assert_allclose(y, v + 0.5 * (v @ m.T), rtol=1e-12)


def test_default_cpu_sweep_runs_on_numba(monkeypatch):
    """With no option set, the sweep's products run on the numba kernel (numba is a dependency)."""
    from llmrank_graph.kernels import numba_cpu

    calls = []
    real = numba_cpu.run
    monkeypatch.setattr(numba_cpu, "run", lambda *a: calls.append(a[0]) or real(*a))
    model = tiny_llama()
    graph = lg.export_graph(model)
    x = lg.pagerank(graph, backend="sweep", device="cpu").scores
    assert 0 in calls and 2 in calls  # the forward products (mode 0) and the out-strengths (mode 2)
    ref = lg.pagerank(graph, backend="scipy", tol=1e-13).scores
    np.testing.assert_allclose(x, ref, atol=1e-10)
