"""Optional dependencies (CuPy, cuDF, cuGraph, dask) and the GPU: found without importing them.

This module sits below ``graph`` and ``centrality`` so that both can ask what is installed;
the libraries themselves are imported only by the code that uses them.
"""

from __future__ import annotations

import functools
import importlib.util

from ..errors import LLMRankGraphError

__all__ = ["GPU_EXTRA", "BackendUnavailableError", "has_module", "cuda_available", "cupy_available",
           "cuda_free_memory", "require_cudf", "require_dask_cudf"]

GPU_EXTRA = "gpu"  # `pip install llmrank-graph[gpu]` provides cupy, cudf, cugraph, dask-cudf, dask-cuda


class BackendUnavailableError(LLMRankGraphError, ImportError):
    """A backend or optional library was asked for but cannot run here."""


def has_module(name: str) -> bool:
    """True when ``name`` can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


@functools.lru_cache(maxsize=None)
def cuda_available() -> bool:
    """True when torch sees a CUDA GPU (never raises)."""
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # pragma: no cover - broken CUDA installs
        return False


@functools.lru_cache(maxsize=None)
def cupy_available() -> str | None:
    """None when CuPy is installed and sees a GPU, else why not (never raises)."""
    if not has_module("cupy"):
        return "CuPy is not installed"
    try:
        import cupy

        # Documented to return False (not raise) on a machine without a GPU or driver.
        if not cupy.cuda.is_available():
            return "CuPy is installed but sees no CUDA GPU"
    except Exception as e:  # pragma: no cover - broken CUDA installs
        return f"CuPy is installed but failed to initialise ({type(e).__name__}: {e})"
    return None


def cuda_free_memory() -> int | None:
    """Free bytes on the current CUDA device, None without one."""
    if not cuda_available():
        return None
    try:
        import torch

        return int(torch.cuda.mem_get_info()[0])
    except Exception:  # pragma: no cover
        return None


def require_cudf():
    """Import cudf after checking for a GPU (``import cudf`` succeeds without one)."""
    if not has_module("cudf"):
        raise BackendUnavailableError(
            f"cuDF is not installed; install it with `pip install llmrank-graph[{GPU_EXTRA}]`")
    if not cuda_available():
        raise BackendUnavailableError("cuDF needs a CUDA GPU and none is visible")
    import cudf

    return cudf


def require_dask_cudf():
    """Import dask_cudf (after :func:`require_cudf`'s checks), naming the extra when it is missing."""
    require_cudf()
    if not has_module("dask_cudf"):
        raise BackendUnavailableError("dask_cudf is not installed; install it with "
                                      f"`pip install llmrank-graph[{GPU_EXTRA}]`")
    import dask_cudf

    return dask_cudf
