"""The fused |W| kernels against a dense float64 numpy reference built with the float32 rule.

The rule: each weight converted to float32 (exact for bf16/fp16), abs in float32, 'sum' and
'max' in float32, times ``col_scale`` cast to float32 in float32; then widened to float64.
Products accumulate in float64, so the kernel and the reference differ only by the order of
accumulation (rtol 1e-12); with a one-hot ``v`` nothing is accumulated and they agree bit for
bit. Every case runs on the kernel when it is available here and on the torch path.
"""

from __future__ import annotations

import logging
import sys
import threading

import numpy as np
import pytest
import torch

import llmrank_graph.kernels as kernels
from llmrank_graph.errors import InvalidArgumentError, InvalidArgumentTypeError, MissingDependencyError, WorkFailedError

KERNEL = kernels.fused_available() is None
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
SHAPES = [(7, 5), (1, 1), (37, 130), (157, 450)]  # the last one runs on two threads or more
RTOL = 1e-12


@pytest.fixture(params=["kernel", "torch"])
def path(request, caplog):
    """Run the test on the fused kernel (when available) and on the forced torch path."""
    if request.param == "kernel" and not KERNEL:
        pytest.skip(f"fused kernel not available: {kernels.fused_available()}")
    caplog.set_level(logging.DEBUG, logger=kernels.__name__)
    with kernels.options(kernel="auto" if request.param == "kernel" else "torch"):
        yield request.param
    if request.param == "kernel":  # it really ran on the kernel
        assert not [r for r in caplog.records if "torch path" in r.getMessage()]


def make_weights(shape, dtype, combine, transposed, seed=0):
    """Weights with a spread of magnitudes; ``transposed``: ``.t()`` views, as GPT-2's Conv1D."""
    g = torch.Generator().manual_seed(seed)
    n = 1 if combine == "single" else 2
    r, c = shape
    out = []
    for _ in range(n):
        w = torch.randn(c, r, generator=g).t() if transposed else torch.randn(r, c, generator=g)
        w = w * torch.exp(2 * torch.randn(w.shape, generator=g))  # several orders of magnitude
        out.append(w.to(dtype))
    return out


def reference(weights, combine, col_scale) -> np.ndarray:
    """M in float64 from the float32 rule, numpy only after the exact conversion to float32."""
    e = np.abs(weights[0].to(torch.float32).numpy())
    if combine == "sum":
        e = e + np.abs(weights[1].to(torch.float32).numpy())
    elif combine == "max":
        e = np.maximum(e, np.abs(weights[1].to(torch.float32).numpy()))
    if col_scale is not None:
        e = e * col_scale.to(torch.float32).numpy()
    assert e.dtype == np.float32
    return e.astype(np.float64)


def scale_for(shape, with_scale, seed=1):
    if not with_scale:
        return None
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape[1], generator=g, dtype=torch.float64) * 3 + 0.1


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("combine", kernels.COMBINES)
@pytest.mark.parametrize("with_scale", [False, True], ids=["noscale", "scale"])
@pytest.mark.parametrize("transposed", [False, True], ids=["rowmajor", "tview"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_matmul_and_sums_match_reference(path, dtype, combine, with_scale, transposed, shape):
    ws = make_weights(shape, dtype, combine, transposed)
    cs = scale_for(shape, with_scale)
    m = reference(ws, combine, cs)
    r, c = shape
    g = torch.Generator().manual_seed(2)
    for k in (1, 2):
        v = torch.rand(c, k, generator=g, dtype=torch.float64)
        u = torch.rand(r, k, generator=g, dtype=torch.float64)
        got = kernels.abs_matmul(ws, combine, cs, v)
        assert got.dtype == torch.float64 and got.shape == (r, k) and got.is_contiguous()
        np.testing.assert_allclose(got.numpy(), m @ v.numpy(), rtol=RTOL, atol=0)
        got_t = kernels.abs_matmul(ws, combine, cs, u, transpose=True)
        assert got_t.dtype == torch.float64 and got_t.shape == (c, k) and got_t.is_contiguous()
        np.testing.assert_allclose(got_t.numpy(), m.T @ u.numpy(), rtol=RTOL, atol=0)
    colsum, rowsum = kernels.abs_sums(ws, combine, cs)
    assert colsum.dtype == rowsum.dtype == torch.float64
    assert colsum.shape == (c,) and rowsum.shape == (r,)
    np.testing.assert_allclose(colsum.numpy(), m.sum(0), rtol=RTOL, atol=0)
    np.testing.assert_allclose(rowsum.numpy(), m.sum(1), rtol=RTOL, atol=0)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("combine", kernels.COMBINES)
@pytest.mark.parametrize("with_scale", [False, True], ids=["noscale", "scale"])
@pytest.mark.parametrize("transposed", [False, True], ids=["rowmajor", "tview"])
@pytest.mark.parametrize("shape", SHAPES[1:], ids=lambda s: f"{s[0]}x{s[1]}")
def test_prepared_products_match_reference(path, dtype, combine, with_scale, transposed, shape):
    """prepare_matmul: out += alpha * (M @ v) into a strided view, vectors as rows, numpy or torch."""
    ws = make_weights(shape, dtype, combine, transposed)
    cs = scale_for(shape, with_scale)
    m = reference(ws, combine, cs)
    rng = np.random.default_rng(4)
    for transpose, mm in ((False, m), (True, m.T)):
        add = kernels.prepare_matmul(ws, combine, cs, transpose)
        for k in (1, 2):
            vt = rng.uniform(size=(k, mm.shape[1]))
            y = rng.uniform(size=(k, mm.shape[0] + 2))
            want = y.copy()
            want[:, 2:] += 0.5 * (mm @ vt.T).T
            got = y.copy()
            add(vt, got[:, 2:], 0.5)  # numpy, as the sweep runs on the CPU
            np.testing.assert_allclose(got, want, rtol=RTOL, atol=0)
            got_t = torch.from_numpy(y.copy())
            add(torch.from_numpy(vt), got_t[:, 2:], 0.5)
            np.testing.assert_allclose(got_t.numpy(), want, rtol=RTOL, atol=0)


@pytest.mark.skipif(not KERNEL, reason="needs the fused kernel")
def test_prepared_product_keeps_its_options_and_survives_a_failing_kernel(monkeypatch, caplog):
    from llmrank_graph.kernels import numba_cpu

    ws = make_weights((40, 30), torch.bfloat16, "sum", False)
    m = reference(ws, "sum", None)
    vt = np.random.default_rng(0).uniform(size=(1, 30))
    add = kernels.prepare_matmul(ws, "sum", None)
    with kernels.options(kernel="torch"):
        add_torch = kernels.prepare_matmul(ws, "sum", None)
    calls = []
    real_run = numba_cpu.run
    monkeypatch.setattr(numba_cpu, "run", lambda *a: calls.append(1) or real_run(*a))
    out = np.zeros((1, 40))
    add(vt, out, 1.0)
    assert calls == [1]
    out2 = np.zeros((1, 40))
    add_torch(vt, out2, 1.0)  # prepared under kernel='torch': the torch path, whatever is in effect now
    assert calls == [1]
    np.testing.assert_allclose(out2, out, rtol=RTOL)
    with kernels.options(kernel="torch"):  # options set after the set-up do not change a product
        add(vt, np.zeros((1, 40)), 1.0)
    assert calls == [1, 1]

    def boom(*a):
        raise RuntimeError("no luck")

    monkeypatch.setattr(numba_cpu, "run", boom)
    caplog.set_level(logging.WARNING, logger=kernels.__name__)
    out3 = np.zeros((1, 40))
    add(vt, out3, 1.0)  # reported, and this call runs on the torch path
    np.testing.assert_allclose(out3[0], m @ vt[0], rtol=RTOL)
    assert "numba kernel failed for bfloat16" in caplog.text and "no luck" in caplog.text
    k3 = np.random.default_rng(1).uniform(size=(3, 30))  # k = 3: the kernel takes 1 or 2
    out4 = np.zeros((3, 40))
    add(k3, out4, 2.0)
    np.testing.assert_allclose(out4, 2.0 * (m @ k3.T).T, rtol=RTOL)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("combine", kernels.COMBINES)
@pytest.mark.parametrize("transposed", [False, True], ids=["rowmajor", "tview"])
def test_edge_weights_bit_for_bit(path, dtype, combine, transposed):
    """A one-hot v reads out one column (row) of M: no accumulation, so no rounding at all."""
    shape = (9, 6)
    ws = make_weights(shape, dtype, combine, transposed, seed=3)
    cs = scale_for(shape, True, seed=4)
    m = reference(ws, combine, cs)
    for j in range(shape[1]):
        v = torch.zeros(shape[1], 2, dtype=torch.float64)
        v[j, 0] = 1.0
        v[j, 1] = 0.5  # a power of two: still exact
        got = kernels.abs_matmul(ws, combine, cs, v).numpy()
        np.testing.assert_array_equal(got[:, 0], m[:, j])
        np.testing.assert_array_equal(got[:, 1], m[:, j] * 0.5)
    for i in range(shape[0]):
        u = torch.zeros(shape[0], 1, dtype=torch.float64)
        u[i, 0] = 1.0
        np.testing.assert_array_equal(kernels.abs_matmul(ws, combine, cs, u, transpose=True).numpy()[:, 0], m[i])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
def test_special_values(path, dtype):
    """Signed zeros, subnormals of each dtype and large values follow the rule exactly; NaN propagates."""
    tiny = torch.finfo(dtype).tiny
    big = float(torch.finfo(dtype).max) / 4  # 'sum' of two stays finite: inf * 0 would be NaN below
    vals = [0.0, -0.0, tiny, -tiny / 4, 1.0, -2.5, big, -big]
    w0 = torch.tensor([vals, vals[::-1], vals[2:] + vals[:2]], dtype=torch.float32).to(dtype)
    w1 = torch.tensor([vals[::-1], vals, vals[3:] + vals[:3]], dtype=torch.float32).to(dtype)
    cs = torch.tensor([1.0, 2.0, 0.5, 3.0, 1e-3, 0.1, 0.25, 1.5], dtype=torch.float64)
    for combine, ws in (("single", [w0]), ("sum", [w0, w1]), ("max", [w0, w1])):
        for scale in (None, cs):
            m = reference(ws, combine, scale)
            for j in range(w0.shape[1]):  # one-hot: each column of M, exactly
                v = torch.zeros(w0.shape[1], 1, dtype=torch.float64)
                v[j] = 1.0
                np.testing.assert_array_equal(kernels.abs_matmul(ws, combine, scale, v).numpy()[:, 0], m[:, j])
            colsum, rowsum = kernels.abs_sums(ws, combine, scale)
            np.testing.assert_allclose(colsum.numpy(), m.sum(0), rtol=RTOL)
            np.testing.assert_allclose(rowsum.numpy(), m.sum(1), rtol=RTOL)
    # A NaN weight: 'max' propagates it like torch.maximum, 'sum' like +.
    w_nan = w0.clone()
    w_nan[0, 1] = float("nan")
    for combine in ("sum", "max"):
        for ws in ([w_nan, w1], [w1, w_nan]):
            colsum, rowsum = kernels.abs_sums(ws, combine, None)
            colsum, rowsum = colsum.numpy(), rowsum.numpy()
            assert np.isnan(colsum[1]) and np.isnan(rowsum[0])
            assert not np.isnan(np.delete(colsum, 1)).any() and not np.isnan(rowsum[1:]).any()


def test_one_dimensional_v_and_empty_blocks(path):
    w = make_weights((5, 3), torch.float32, "single", False)
    m = reference(w, "single", None)
    v = torch.rand(3, dtype=torch.float64)
    got = kernels.abs_matmul(w, "single", None, v)
    assert got.shape == (5,)
    np.testing.assert_allclose(got.numpy(), m @ v.numpy(), rtol=RTOL)
    for shape in ((0, 4), (4, 0)):
        ws = [torch.zeros(shape)]
        assert torch.equal(kernels.abs_matmul(ws, "single", None, torch.ones(shape[1], 2, dtype=torch.float64)),
                           torch.zeros(shape[0], 2, dtype=torch.float64))
        assert torch.equal(kernels.abs_matmul(ws, "single", None, torch.ones(shape[0], 1, dtype=torch.float64),
                                             transpose=True), torch.zeros(shape[1], 1, dtype=torch.float64))
        colsum, rowsum = kernels.abs_sums(ws, "single", None)
        assert torch.equal(colsum, torch.zeros(shape[1], dtype=torch.float64))
        assert torch.equal(rowsum, torch.zeros(shape[0], dtype=torch.float64))


def test_other_layouts(path):
    """Strided views that are neither row- nor column-major, and two weights of two layouts."""
    g = torch.Generator().manual_seed(5)
    base = torch.randn(40, 90, generator=g)
    strided = base[::2, 1::3]  # (20, 30), no unit stride
    other = torch.randn(30, 20, generator=g).t()  # column-major
    cs = scale_for((20, 30), True)
    for ws, combine in (([strided], "single"), ([strided, other], "sum"), ([other, strided.contiguous()], "max")):
        m = reference(ws, combine, cs)
        v = torch.rand(30, 2, dtype=torch.float64)
        u = torch.rand(20, 1, dtype=torch.float64)
        np.testing.assert_allclose(kernels.abs_matmul(ws, combine, cs, v).numpy(), m @ v.numpy(), rtol=RTOL)
        np.testing.assert_allclose(kernels.abs_matmul(ws, combine, cs, u, True).numpy(), m.T @ u.numpy(), rtol=RTOL)
        colsum, rowsum = kernels.abs_sums(ws, combine, cs)
        np.testing.assert_allclose(colsum.numpy(), m.sum(0), rtol=RTOL)
        np.testing.assert_allclose(rowsum.numpy(), m.sum(1), rtol=RTOL)


@pytest.mark.parametrize("combine, dtype, transposed", [("max", torch.bfloat16, False), ("single", torch.float32, True),
                                                       ("single", torch.float16, False)])
def test_thread_counts(path, monkeypatch, combine, dtype, transposed):
    """Rows handed out in small chunks to more workers than cores; rows not divisible by 4."""
    if path == "kernel":
        from llmrank_graph.kernels import numba_cpu

        monkeypatch.setattr(numba_cpu, "_JOB_CHUNK_ELEMS", 2000)  # many chunks per worker
    shape = (1023, 517)
    ws = make_weights(shape, dtype, combine, transposed)
    cs = scale_for(shape, True)
    m = reference(ws, combine, cs)
    v = torch.rand(517, 2, dtype=torch.float64)
    u = torch.rand(1023, 2, dtype=torch.float64)
    before = torch.get_num_threads()
    for nt in (1, 3, 5):
        with kernels.options(threads=nt):
            np.testing.assert_allclose(kernels.abs_matmul(ws, combine, cs, v).numpy(), m @ v.numpy(), rtol=RTOL)
            np.testing.assert_allclose(kernels.abs_matmul(ws, combine, cs, u, True).numpy(), m.T @ u.numpy(),
                                       rtol=RTOL)
            colsum, rowsum = kernels.abs_sums(ws, combine, cs)
            np.testing.assert_allclose(colsum.numpy(), m.sum(0), rtol=RTOL)
            np.testing.assert_allclose(rowsum.numpy(), m.sum(1), rtol=RTOL)
        np.testing.assert_allclose(kernels.abs_matmul(ws, combine, cs, v, threads=nt).numpy(), m @ v.numpy(),
                                   rtol=RTOL)
    assert torch.get_num_threads() == before  # the library never changes torch's setting


def test_concurrent_callers(path):
    """Two Python threads calling at once get their own, right answers."""
    ws = make_weights((400, 300), torch.float32, "sum", True)
    m = reference(ws, "sum", None)
    vs = [torch.rand(300, 1, dtype=torch.float64) for _ in range(4)]
    results: dict[int, torch.Tensor] = {}

    def work(i):
        for _ in range(5):
            results[i] = kernels.abs_matmul(ws, "sum", None, vs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, v in enumerate(vs):
        np.testing.assert_allclose(results[i].numpy(), m @ v.numpy(), rtol=RTOL)


# ---------------------------------------------------------------------------------------------
# What the kernel does not take falls back; what neither path takes raises.
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float64, torch.int32, torch.int8])
def test_other_weight_dtypes_use_the_torch_path(dtype, caplog):
    caplog.set_level(logging.DEBUG, logger=kernels.__name__)
    w = (torch.randn(6, 4) * 50).to(dtype)
    cs = scale_for((6, 4), True)
    m = reference([w], "single", cs)  # the rule converts to float32 first, float64 included
    assert kernels.unsupported([w], "single", cs, torch.ones(4, 1, dtype=torch.float64)) is not None
    v = torch.rand(4, 2, dtype=torch.float64)
    np.testing.assert_allclose(kernels.abs_matmul([w], "single", cs, v).numpy(), m @ v.numpy(), rtol=RTOL)
    colsum, rowsum = kernels.abs_sums([w], "single", cs)
    np.testing.assert_allclose(colsum.numpy(), m.sum(0), rtol=RTOL)
    np.testing.assert_allclose(rowsum.numpy(), m.sum(1), rtol=RTOL)
    assert any("torch path" in r.getMessage() for r in caplog.records)


def test_other_v_fall_back():
    ws = make_weights((8, 6), torch.float32, "single", False)
    m = reference(ws, "single", None)
    v32 = torch.rand(6, 2)
    assert "float64" in kernels.unsupported(ws, "single", None, v32)
    got = kernels.abs_matmul(ws, "single", None, v32)
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), m @ v32.double().numpy(), rtol=1e-5)
    v3 = torch.rand(6, 3, dtype=torch.float64)  # k = 3: the kernel takes 1 or 2
    assert kernels.unsupported(ws, "single", None, v3) is not None
    np.testing.assert_allclose(kernels.abs_matmul(ws, "single", None, v3).numpy(), m @ v3.numpy(), rtol=RTOL)


def test_switch_and_availability():
    assert kernels.fused_available("cuda") is None or isinstance(kernels.fused_available("cuda"), str)
    ws = make_weights((8, 6), torch.float32, "single", False)
    v = torch.rand(6, 1, dtype=torch.float64)
    if KERNEL:
        assert kernels.unsupported(ws, "single", None, v) is None
        assert kernels.unsupported(ws, "single", None) is None
    with kernels.options(kernel="torch"):
        assert "'torch'" in kernels.fused_available()
        assert "'torch'" in kernels.unsupported(ws, "single", None, v)
    assert "'torch'" in kernels.unsupported(ws, "single", None, v, kernel="torch")
    assert "cuda" in kernels.fused_available(kernel="triton")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("use_kernel", [True, False], ids=["triton", "torch"])
def test_cuda(use_kernel):
    """On CUDA: the Triton kernel when triton imports, else (and when switched off) the torch path."""
    with kernels.options(kernel="auto" if use_kernel else "torch"):
        _check_cuda_products()
    if use_kernel and kernels.fused_available("cuda") is None:
        ws = [torch.ones(3, 2, dtype=torch.bfloat16, device="cuda")]
        assert kernels.unsupported(ws, "max", None, torch.ones(2, 1, dtype=torch.float64, device="cuda")) is None
        with kernels.options(kernel="triton"):  # named: the kernel or an error, never the torch path
            _check_cuda_products()


def _check_cuda_products():
    for transposed in (False, True):
        ws = [w.cuda() for w in make_weights((300, 170), torch.bfloat16, "max", transposed)]
        cs = scale_for((300, 170), True).cuda()
        m = reference([w.cpu() for w in ws], "max", cs.cpu())
        for k in (1, 2):
            v = torch.rand(170, k, dtype=torch.float64, device="cuda")
            u = torch.rand(300, k, dtype=torch.float64, device="cuda")
            got = kernels.abs_matmul(ws, "max", cs, v)
            assert got.device.type == "cuda" and got.shape == (300, k)
            np.testing.assert_allclose(got.cpu().numpy(), m @ v.cpu().numpy(), rtol=RTOL)
            got_t = kernels.abs_matmul(ws, "max", cs, u, transpose=True)
            np.testing.assert_allclose(got_t.cpu().numpy(), m.T @ u.cpu().numpy(), rtol=RTOL)
        colsum, rowsum = kernels.abs_sums(ws, "max", cs)
        np.testing.assert_allclose(colsum.cpu().numpy(), m.sum(0), rtol=RTOL)
        np.testing.assert_allclose(rowsum.cpu().numpy(), m.sum(1), rtol=RTOL)
        for transpose, mm in ((False, m), (True, m.T)):
            vt = torch.rand(2, mm.shape[1], dtype=torch.float64, device="cuda")
            out = torch.zeros(2, mm.shape[0] + 1, dtype=torch.float64, device="cuda")
            kernels.prepare_matmul(ws, "max", cs, transpose)(vt, out[:, 1:], 0.5)
            np.testing.assert_allclose(out[:, 1:].cpu().numpy(), 0.5 * (mm @ vt.cpu().numpy().T).T, rtol=RTOL)


_TRITON_CHECK = r"""
import sys
import numpy as np
import torch
sys.path.insert(0, sys.argv[1])
from llmrank_graph.kernels import triton_cuda
from test_fused import make_weights, reference, scale_for
for dtype, combine, transposed, shape, with_scale in [
        (torch.float32, "single", False, (7, 5), False), (torch.bfloat16, "sum", True, (37, 13), True),
        (torch.float16, "max", False, (20, 33), True), (torch.bfloat16, "max", True, (1, 1), False)]:
    ws = make_weights(shape, dtype, combine, transposed)
    cs = scale_for(shape, with_scale)
    m = reference(ws, combine, cs)
    for k in (1, 2):
        v = torch.rand(shape[1], k, dtype=torch.float64)
        u = torch.rand(shape[0], k, dtype=torch.float64)
        np.testing.assert_allclose(triton_cuda.matmul(ws, combine, cs, v, False).numpy(), m @ v.numpy(), rtol=1e-12)
        np.testing.assert_allclose(triton_cuda.matmul(ws, combine, cs, u, True).numpy(), m.T @ u.numpy(), rtol=1e-12)
    for transpose, mm in ((False, m), (True, m.T)):
        vt = torch.rand(2, mm.shape[1], dtype=torch.float64)
        out = torch.zeros(2, mm.shape[0], dtype=torch.float64)
        assert triton_cuda.prepare(ws, combine, cs, transpose)(vt, out, 0.5)
        np.testing.assert_allclose(out.numpy(), 0.5 * (mm @ vt.numpy().T).T, rtol=1e-12)
    colsum, rowsum = triton_cuda.sums(ws, combine, cs)
    np.testing.assert_allclose(colsum.numpy(), m.sum(0), rtol=1e-12)
    np.testing.assert_allclose(rowsum.numpy(), m.sum(1), rtol=1e-12)
print("ok")
"""


@pytest.mark.slow
def test_triton_kernels_in_the_interpreter():
    """The Triton kernels' arithmetic, run on the CPU by Triton's interpreter (no GPU needed)."""
    pytest.importorskip("triton")
    import os
    import subprocess
    from pathlib import Path
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    res = subprocess.run([sys.executable, "-c", _TRITON_CHECK, str(Path(__file__).parent)], env=env,
                         capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-3000:]


def test_bad_arguments():
    w = torch.randn(4, 3)
    v = torch.rand(3, 1, dtype=torch.float64)
    with pytest.raises(InvalidArgumentError, match="combine"):
        kernels.abs_matmul([w], "mean", None, v)
    with pytest.raises(InvalidArgumentTypeError, match="combine"):
        kernels.abs_matmul([w], None, None, v)
    with pytest.raises(InvalidArgumentError, match="2 tensor"):
        kernels.abs_matmul([w], "sum", None, v)
    with pytest.raises(InvalidArgumentError, match="1 tensor"):
        kernels.abs_matmul([w, w], "single", None, v)
    with pytest.raises(InvalidArgumentTypeError, match="sequence"):
        kernels.abs_matmul(w, "single", None, v)
    with pytest.raises(InvalidArgumentError, match="one shape"):
        kernels.abs_matmul([w, torch.randn(3, 4)], "max", None, v)
    with pytest.raises(InvalidArgumentError, match="2-D"):
        kernels.abs_sums([torch.randn(4)], "single", None)
    with pytest.raises(InvalidArgumentTypeError, match="real"):
        kernels.abs_sums([w.to(torch.complex64)], "single", None)
    with pytest.raises(InvalidArgumentTypeError, match="real"):
        kernels.abs_sums([w > 0], "single", None)
    with pytest.raises(InvalidArgumentError, match="col_scale"):
        kernels.abs_matmul([w], "single", torch.ones(4), v)
    with pytest.raises(InvalidArgumentError, match=r"\(3, k\)"):
        kernels.abs_matmul([w], "single", None, torch.ones(4, 1, dtype=torch.float64))
    with pytest.raises(InvalidArgumentError, match=r"\(4, k\)"):
        kernels.abs_matmul([w], "single", None, v, transpose=True)
    with pytest.raises(InvalidArgumentTypeError, match="floating"):
        kernels.abs_matmul([w], "single", None, torch.ones(3, 1, dtype=torch.int64))


def test_unsupported_does_not_check_the_length_of_v():
    """Callers ask once for either direction: a v of the transpose's length is fine."""
    ws = make_weights((8, 6), torch.float32, "single", False)
    u = torch.rand(8, 1, dtype=torch.float64)
    assert kernels.unsupported(ws, "single", None, u) == (None if KERNEL else kernels.fused_available())
    with pytest.raises(InvalidArgumentTypeError, match="floating"):
        kernels.unsupported(ws, "single", None, torch.ones(8, 1, dtype=torch.int64))


# ---------------------------------------------------------------------------------------------
# The options: scoped to a block and a thread; a named kernel runs or raises; nothing is remembered.
# ---------------------------------------------------------------------------------------------

def test_options_are_scoped_to_the_block_and_the_thread():
    assert kernels.current_options() == kernels.KernelOptions("auto", None)
    seen = {}

    def other_thread():
        seen["options"] = kernels.current_options()

    with kernels.options(kernel="torch", threads=3) as opts:
        assert opts == kernels.current_options() == kernels.KernelOptions("torch", 3)
        with kernels.options(threads=1):  # None keeps the enclosing block's choice
            assert kernels.current_options() == kernels.KernelOptions("torch", 1)
        assert kernels.current_options() == kernels.KernelOptions("torch", 3)
        t = threading.Thread(target=other_thread)
        t.start()
        t.join()
    assert seen["options"] == kernels.KernelOptions("auto", None)  # not visible from another thread
    assert kernels.current_options() == kernels.KernelOptions("auto", None)  # restored after the block
    with pytest.raises(ValueError), kernels.options(kernel="numba"):  # restored when the block raises too
        raise ValueError("inside")
    assert kernels.current_options() == kernels.KernelOptions("auto", None)


def test_bad_options():
    w = [torch.ones(2, 2)]
    with pytest.raises(InvalidArgumentError, match="`kernel` must be one of 'auto', 'numba', 'triton', 'torch'"):
        kernels.options(kernel="cuda").__enter__()
    with pytest.raises(InvalidArgumentTypeError, match="`threads` must be a positive int"):
        kernels.abs_sums(w, "single", None, threads=1.5)
    with pytest.raises(InvalidArgumentError, match="`threads` must be a positive int"):
        kernels.prepare_matmul(w, "single", None, threads=0)
    assert kernels.current_options() == kernels.KernelOptions("auto", None)


def test_a_named_kernel_that_cannot_take_the_call_raises():
    w64 = [torch.ones(3, 2, dtype=torch.float64)]
    v = torch.ones(2, 1, dtype=torch.float64)
    with pytest.raises(InvalidArgumentError, match="`kernel` is 'triton'.*runs on cuda tensors"):
        kernels.abs_matmul([torch.ones(3, 2)], "single", None, v, kernel="triton")
    if not KERNEL:
        return
    with pytest.raises(InvalidArgumentError, match="`kernel` is 'numba'.*dtype torch.float64"):
        kernels.abs_sums(w64, "single", None, kernel="numba")
    with kernels.options(kernel="numba"):
        add = kernels.prepare_matmul([torch.ones(3, 2)], "single", None)
        with pytest.raises(InvalidArgumentError, match="`kernel` is 'numba'.*k = 3"):
            add(np.ones((3, 2)), np.zeros((3, 3)), 1.0)
        with pytest.raises(InvalidArgumentError, match="`kernel` is 'numba'.*float32"):
            kernels.abs_matmul([torch.ones(3, 2)], "single", None, v.float())
    # 'auto' takes the torch path for the same calls
    np.testing.assert_allclose(kernels.abs_sums(w64, "single", None)[0].numpy(), [3.0, 3.0])


def test_numba_named_where_it_is_not_installed(monkeypatch, caplog):
    """A missing numba: a clear error when the numba kernel is named, the torch path under 'auto'."""
    for name in ("llmrank_graph.kernels.numba_cpu", "llmrank_graph.kernels.numba_jit"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.delattr(kernels, "numba_cpu", raising=False)
    monkeypatch.delattr(kernels, "numba_jit", raising=False)
    monkeypatch.setitem(sys.modules, "numba", None)  # `import numba` now fails, as where it is not installed
    w = [torch.tensor([[1.0, -2.0]])]
    with pytest.raises(MissingDependencyError,
                       match=r"`kernel` is 'numba', but numba is not installed .*reinstall llmrank_graph"):
        kernels.abs_sums(w, "single", None, kernel="numba")
    with kernels.options(kernel="numba"), pytest.raises(MissingDependencyError, match="numba is not installed"):
        kernels.prepare_matmul(w, "single", None)
    assert "numba is not installed" in kernels.fused_available()
    caplog.set_level(logging.DEBUG, logger=kernels.__name__)
    colsum, rowsum = kernels.abs_sums(w, "single", None)
    assert colsum.tolist() == [1.0, 2.0] and rowsum.tolist() == [3.0]
    assert "torch path: numba is not installed" in caplog.text


@pytest.mark.skipif(not KERNEL, reason="needs the fused kernel")
def test_a_failing_kernel_is_reported_where_it_fails_and_not_remembered(monkeypatch, caplog):
    from llmrank_graph.kernels import numba_cpu

    ws = make_weights((40, 30), torch.float32, "single", False)
    m = reference(ws, "single", None)
    v = torch.rand(30, 1, dtype=torch.float64)
    real_run = numba_cpu.run
    calls = []

    def boom(*a):
        calls.append("boom")
        raise RuntimeError("no luck")

    monkeypatch.setattr(numba_cpu, "run", boom)
    with pytest.raises(WorkFailedError, match=r"the numba kernel failed for float32 weights \(RuntimeError: no luck\)"):
        kernels.abs_matmul(ws, "single", None, v, kernel="numba")
    with pytest.raises(WorkFailedError, match="the numba kernel failed"):
        kernels.abs_sums(ws, "single", None, kernel="numba")
    caplog.set_level(logging.WARNING, logger=kernels.__name__)
    np.testing.assert_allclose(kernels.abs_matmul(ws, "single", None, v).numpy(), m @ v.numpy(), rtol=RTOL)
    assert "numba kernel failed for float32 weights" in caplog.text and "torch path" in caplog.text
    assert calls == ["boom"] * 3
    monkeypatch.setattr(numba_cpu, "run", lambda *a: calls.append("run") or real_run(*a))
    caplog.clear()
    np.testing.assert_allclose(kernels.abs_matmul(ws, "single", None, v).numpy(), m @ v.numpy(), rtol=RTOL)
    colsum, _ = kernels.abs_sums(ws, "single", None)
    np.testing.assert_allclose(colsum.numpy(), m.sum(0), rtol=RTOL)
    assert calls[3:] == ["run", "run"] and not caplog.records  # the next calls ran on the kernel again
    assert kernels.fused_available() is None
