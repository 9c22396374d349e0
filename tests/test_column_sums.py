"""data.sums.column_sums: the hooks' per-column sums in one read, against float64 numpy."""
import numpy as np
import pytest
import torch

from llmrank_graph.data import sums


def _ref(x):
    a = x.double().numpy()
    return (a * a).sum(0), a.sum(0)


@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (256, 7), (257, 7), (600, 33), (2048, 96)])
@pytest.mark.parametrize("numba", [True, False])
def test_sums_match_float64(shape, numba, monkeypatch):
    if not numba:
        monkeypatch.setattr(sums, "_kernel", lambda: None)  # as where numba is not installed
    elif sums._kernel() is None:
        pytest.skip("numba is not installed")
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(shape[0])) * 3 + 1
    sq, lin = sums.column_sums(x)
    want_sq, want_lin = _ref(x)
    assert sq.dtype == lin.dtype == torch.float64
    np.testing.assert_allclose(sq.numpy(), want_sq, rtol=1e-6)
    np.testing.assert_allclose(lin.numpy(), want_lin, rtol=1e-5, atol=1e-4)
    sq2, none = sums.column_sums(x, linear=False)
    assert none is None
    np.testing.assert_array_equal(sq2.numpy(), sq.numpy())


def test_kernel_and_torch_paths_agree(monkeypatch):
    x = torch.randn(700, 50, generator=torch.Generator().manual_seed(1))
    a = sums.column_sums(x)
    monkeypatch.setattr(sums, "_kernel", lambda: None)
    b = sums.column_sums(x)
    for u, v in zip(a, b):
        np.testing.assert_allclose(u.numpy(), v.numpy(), rtol=1e-6, atol=1e-5)


def test_other_dtypes_and_layouts():
    x = torch.randn(40, 6, generator=torch.Generator().manual_seed(2))
    want_sq, want_lin = _ref(x.to(torch.bfloat16).float())
    sq, lin = sums.column_sums(x.to(torch.bfloat16))  # taken as float32, exactly
    np.testing.assert_allclose(sq.numpy(), want_sq, rtol=1e-6)
    t = torch.randn(6, 40, generator=torch.Generator().manual_seed(3)).T  # not contiguous
    np.testing.assert_allclose(sums.column_sums(t)[0].numpy(), _ref(t)[0], rtol=1e-6)
    d = x.double()  # float64 stays on the float64 torch path
    np.testing.assert_allclose(sums.column_sums(d)[0].numpy(), _ref(d)[0], rtol=1e-12)
    with torch.inference_mode():  # as inside calibration's forward pass
        y = torch.randn(9, 4, generator=torch.Generator().manual_seed(4))
        np.testing.assert_allclose(sums.column_sums(y)[1].numpy(), _ref(y)[1], rtol=1e-6, atol=1e-6)
